//! Server-side apply: a field manager sends the fields it wants to own
//! (`PATCH` with `application/apply-patch+yaml`). The server merges them
//! into the object, records what each manager owns in
//! `metadata.managedFields` (FieldsV1), refuses to change a field another
//! manager owns unless forced, and removes fields a manager stopped
//! applying when nobody else owns them.
//!
//! Lists merge as their schema says: `x-kubernetes-list-type: map` by
//! key, `set` by value, anything else as one value. Only appliers own
//! fields here; plain updates record no ownership.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::status::ApiError;

/// One step of a path into an object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Step {
    /// A field of an object: `f:name`.
    Field(String),
    /// A list item by its keys: `k:{"name":"web"}`.
    Key(String),
    /// A set item by value: `v:"a"`.
    Value(String),
}

pub(super) type Path = Vec<Step>;
pub(super) type FieldSet = BTreeSet<Path>;

/// Metadata the server sets; an apply cannot change it.
const SERVER_SET: [&str; 7] = [
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
];

/// Metadata that identifies the object; kept, but never owned.
const IDENTITY: [&str; 2] = ["name", "namespace"];

/// Whether a metadata field is part of no field set.
fn never_owned(field: &str) -> bool {
    IDENTITY.contains(&field) || SERVER_SET.contains(&field)
}

fn child_schema<'a>(schema: &'a Value, field: &str) -> &'a Value {
    schema
        .get("properties")
        .and_then(|p| p.get(field))
        .or_else(|| schema.get("additionalProperties").filter(|s| s.is_object()))
        .unwrap_or(&Value::Null)
}

fn list_keys(schema: &Value) -> Option<Vec<String>> {
    if schema.get("x-kubernetes-list-type").and_then(Value::as_str) != Some("map") {
        return None;
    }
    schema
        .get("x-kubernetes-list-map-keys")
        .and_then(Value::as_array)
        .map(|keys| {
            keys.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
}

fn is_set(schema: &Value) -> bool {
    schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("set")
}

/// An element's identity in a map list: its key fields, a missing one
/// taken at its schema default, as kube-apiserver defaults list-map keys
/// before merging (so `{containerPort: 80}` applied is the stored
/// `{containerPort: 80, protocol: tcp}`).
fn key_of(item: &Value, keys: &[String], item_schema: &Value) -> String {
    let map: Map<String, Value> = keys
        .iter()
        .map(|k| {
            let value = item
                .get(k)
                .or_else(|| item_schema.pointer(&format!("/properties/{k}/default")))
                .cloned()
                .unwrap_or(Value::Null);
            (k.clone(), value)
        })
        .collect();
    Value::Object(map).to_string()
}

/// The fields `applied` sets. With `status_apart`, status is left out
/// (the main endpoint of a kind with a status subresource); with
/// `status_only`, only status counts.
pub(super) fn fields(
    applied: &Value,
    schema: &Value,
    status_only: bool,
    status_apart: bool,
) -> FieldSet {
    let mut set = FieldSet::new();
    let Some(map) = applied.as_object() else {
        return set;
    };
    for (name, value) in map {
        let path = vec![Step::Field(name.clone())];
        match name.as_str() {
            "apiVersion" | "kind" => {}
            "status" if !status_only && status_apart => {}
            "status" => collect(value, child_schema(schema, name), path, &mut set),
            _ if status_only => {}
            "metadata" => {
                for (field, value) in value.as_object().into_iter().flatten() {
                    if !never_owned(field) {
                        let mut path = path.clone();
                        path.push(Step::Field(field.clone()));
                        collect(value, &Value::Null, path, &mut set);
                    }
                }
            }
            _ => collect(value, child_schema(schema, name), path, &mut set),
        }
    }
    set
}

fn collect(value: &Value, schema: &Value, path: Path, set: &mut FieldSet) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (name, child) in map {
                let mut next = path.clone();
                next.push(Step::Field(name.clone()));
                collect(child, child_schema(schema, name), next, set);
            }
        }
        Value::Array(items) if list_keys(schema).is_some() => {
            let keys = list_keys(schema).expect("checked");
            let item_schema = schema.get("items").unwrap_or(&Value::Null);
            for item in items {
                let mut next = path.clone();
                next.push(Step::Key(key_of(item, &keys, item_schema)));
                set.insert(next.clone());
                collect(item, item_schema, next, set);
            }
        }
        Value::Array(items) if is_set(schema) => {
            for item in items {
                let mut next = path.clone();
                next.push(Step::Value(item.to_string()));
                set.insert(next);
            }
        }
        _ => {
            set.insert(path);
        }
    }
}

/// The value at `path`, if there is one.
fn get<'a>(value: &'a Value, path: &[Step]) -> Option<&'a Value> {
    let Some((step, rest)) = path.split_first() else {
        return Some(value);
    };
    let next = match step {
        Step::Field(name) => value.get(name)?,
        Step::Key(key) => {
            let key: Map<String, Value> = serde_json::from_str(key).ok()?;
            value.as_array()?.iter().find(|item| {
                key.iter()
                    .all(|(k, v)| item.get(k).unwrap_or(&Value::Null) == v)
            })?
        }
        Step::Value(text) => {
            let wanted: Value = serde_json::from_str(text).ok()?;
            value.as_array()?.iter().find(|item| **item == wanted)?
        }
    };
    get(next, rest)
}

/// Remove the field or list item at `path`.
fn remove(value: &mut Value, path: &[Step]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = value;
    for step in parents {
        let next = match step {
            Step::Field(name) => node.get_mut(name),
            Step::Key(key) => {
                let Ok(key) = serde_json::from_str::<Map<String, Value>>(key) else {
                    return;
                };
                node.as_array_mut().and_then(|items| {
                    items.iter_mut().find(|item| {
                        key.iter()
                            .all(|(k, v)| item.get(k).unwrap_or(&Value::Null) == v)
                    })
                })
            }
            Step::Value(_) => None,
        };
        match next {
            Some(next) => node = next,
            None => return,
        }
    }
    match last {
        Step::Field(name) => {
            if let Some(map) = node.as_object_mut() {
                map.remove(name);
            }
        }
        Step::Key(key) => {
            if let (Ok(key), Some(items)) = (
                serde_json::from_str::<Map<String, Value>>(key),
                node.as_array_mut(),
            ) {
                items.retain(|item| {
                    !key.iter()
                        .all(|(k, v)| item.get(k).unwrap_or(&Value::Null) == v)
                });
            }
        }
        Step::Value(text) => {
            if let (Ok(wanted), Some(items)) =
                (serde_json::from_str::<Value>(text), node.as_array_mut())
            {
                items.retain(|item| *item != wanted);
            }
        }
    }
}

/// `applied` merged into `current`, as the schema's list types say.
fn merge(current: &mut Value, applied: &Value, schema: &Value) {
    match (current, applied) {
        (Value::Object(current), Value::Object(applied)) => {
            for (name, value) in applied {
                let child = child_schema(schema, name);
                match current.get_mut(name) {
                    Some(existing) => merge(existing, value, child),
                    None => {
                        current.insert(name.clone(), value.clone());
                    }
                }
            }
        }
        (Value::Array(current), Value::Array(applied)) if list_keys(schema).is_some() => {
            let keys = list_keys(schema).expect("checked");
            let item_schema = schema.get("items").unwrap_or(&Value::Null);
            for item in applied {
                let key = key_of(item, &keys, item_schema);
                match current
                    .iter_mut()
                    .find(|c| key_of(c, &keys, item_schema) == key)
                {
                    Some(existing) => merge(existing, item, item_schema),
                    None => current.push(item.clone()),
                }
            }
        }
        (Value::Array(current), Value::Array(applied)) if is_set(schema) => {
            for item in applied {
                if !current.contains(item) {
                    current.push(item.clone());
                }
            }
        }
        (current, applied) => *current = applied.clone(),
    }
}

/// One manager's entry of `metadata.managedFields`.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub(super) manager: String,
    pub(super) operation: String,
    pub(super) subresource: String,
    pub(super) api_version: String,
    pub(super) time: String,
    pub(super) fields: FieldSet,
}

fn step_key(step: &Step) -> String {
    match step {
        Step::Field(name) => format!("f:{name}"),
        Step::Key(key) => format!("k:{key}"),
        Step::Value(value) => format!("v:{value}"),
    }
}

fn parse_step(key: &str) -> Option<Step> {
    let (kind, rest) = key.split_once(':')?;
    match kind {
        "f" => Some(Step::Field(rest.to_owned())),
        "k" => Some(Step::Key(
            serde_json::from_str::<Value>(rest).ok()?.to_string(),
        )),
        "v" => Some(Step::Value(
            serde_json::from_str::<Value>(rest).ok()?.to_string(),
        )),
        _ => None,
    }
}

/// A field set as FieldsV1: nested `f:`/`k:`/`v:` keys, `.` marking a
/// list item owned as a whole.
fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for step in path {
            node = node
                .entry(step_key(step))
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("built as objects");
        }
        if matches!(path.last(), Some(Step::Key(_))) {
            node.insert(".".into(), json!({}));
        }
    }
    Value::Object(root)
}

fn from_fields_v1(value: &Value, path: &mut Path, set: &mut FieldSet) {
    let Some(map) = value.as_object() else {
        return;
    };
    if map.is_empty() || map.contains_key(".") {
        set.insert(path.clone());
    }
    for (key, child) in map {
        if let Some(step) = parse_step(key) {
            path.push(step);
            from_fields_v1(child, path, set);
            path.pop();
        }
    }
}

/// The managers recorded on an object.
pub(super) fn managers(object: &Value) -> Vec<Entry> {
    object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| {
            let text = |k: &str| {
                e.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            let mut fields = FieldSet::new();
            if let Some(v1) = e.get("fieldsV1") {
                from_fields_v1(v1, &mut Vec::new(), &mut fields);
            }
            Entry {
                manager: text("manager"),
                operation: text("operation"),
                subresource: text("subresource"),
                api_version: text("apiVersion"),
                time: text("time"),
                fields,
            }
        })
        .collect()
}

fn to_json(entries: &[Entry]) -> Value {
    Value::Array(
        entries
            .iter()
            .map(|e| {
                let mut entry = json!({
                    "manager": e.manager,
                    "operation": e.operation,
                    "apiVersion": e.api_version,
                    "time": e.time,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": to_fields_v1(&e.fields),
                });
                if !e.subresource.is_empty() {
                    entry["subresource"] = Value::String(e.subresource.clone());
                }
                entry
            })
            .collect(),
    )
}

fn dotted(path: &Path) -> String {
    path.iter()
        .map(|step| match step {
            Step::Field(name) => format!(".{name}"),
            Step::Key(key) => format!("[{key}]"),
            Step::Value(value) => format!("[={value}]"),
        })
        .collect()
}

/// What one apply asks for.
pub(super) struct Apply<'a> {
    pub(super) manager: &'a str,
    pub(super) force: bool,
    pub(super) subresource: &'a str,
    pub(super) api_version: &'a str,
    pub(super) status_apart: bool,
    pub(super) schema: &'a Value,
    pub(super) now: String,
}

/// The object after `applied` is applied to `current` (an empty object
/// for a create).
///
/// # Errors
/// `Conflict` (409) naming each field another manager owns with another
/// value, unless forced.
pub(super) fn apply(
    current: &Value,
    applied: &Value,
    request: &Apply<'_>,
) -> Result<Value, ApiError> {
    let status_only = request.subresource == "status";
    let wanted = fields(applied, request.schema, status_only, request.status_apart);
    let mut entries = managers(current);
    let mine = |e: &Entry| {
        e.manager == request.manager
            && e.operation == "Apply"
            && e.subresource == request.subresource
    };

    // Conflicts: fields others own, that this apply would change.
    let mut conflicts = Vec::new();
    for entry in entries.iter().filter(|e| !mine(e)) {
        for path in wanted.intersection(&entry.fields) {
            if get(current, path) != get(applied, path) {
                conflicts.push((entry.manager.clone(), path.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !request.force {
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(manager, path)| {
                json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{manager}\""), "field": dotted(path)})
            })
            .collect();
        return Err(ApiError::ApplyConflict {
            message: format!(
                "Apply failed with {} conflict{}: {}",
                conflicts.len(),
                if conflicts.len() == 1 { "" } else { "s" },
                conflicts
                    .iter()
                    .map(|(m, p)| format!("conflict with \"{m}\": {}", dotted(p)))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            causes,
        });
    }
    for (manager, path) in &conflicts {
        for entry in entries.iter_mut().filter(|e| &e.manager == manager) {
            entry.fields.remove(path);
        }
    }

    // Fields this manager applied before and no longer does go, unless
    // someone else owns them.
    let previous = entries
        .iter()
        .find(|e| mine(e))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let mut next = current.clone();
    for path in previous.difference(&wanted) {
        let owned_elsewhere = entries.iter().any(|e| !mine(e) && e.fields.contains(path));
        if !owned_elsewhere {
            remove(&mut next, path);
        }
    }
    let mut applied = applied.clone();
    if let Some(map) = applied.as_object_mut() {
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.retain(|k, _| !SERVER_SET.contains(&k.as_str()));
        }
        if status_only {
            map.retain(|k, _| matches!(k.as_str(), "status" | "apiVersion" | "kind"));
        } else if request.status_apart {
            map.remove("status");
        }
    }
    merge(&mut next, &applied, request.schema);

    entries.retain(|e| !mine(e) && !e.fields.is_empty());
    if !wanted.is_empty() {
        entries.push(Entry {
            manager: request.manager.to_owned(),
            operation: "Apply".into(),
            subresource: request.subresource.to_owned(),
            api_version: request.api_version.to_owned(),
            time: request.now.clone(),
            fields: wanted,
        });
    }
    if let Some(map) = next.as_object_mut() {
        let meta = map
            .entry("metadata")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("metadata is an object");
        meta.insert("managedFields".into(), to_json(&entries));
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Value {
        json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "replicas": {"type": "integer"},
            "image": {"type": "string"},
            "containers": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                "items": {"type": "object", "properties": {"name": {"type": "string"}, "image": {"type": "string"}}}},
            "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["port", "protocol"],
                "items": {"type": "object", "properties": {"port": {"type": "integer"}, "protocol": {"type": "string", "default": "tcp"}, "name": {"type": "string"}}}}
        }}}})
    }

    #[test]
    fn a_list_map_key_left_out_is_its_default() {
        // Stored as defaulted: protocol tcp.
        let stored = json!({"spec": {"ports": [{"port": 80, "protocol": "tcp", "name": "old"}]}});
        let next = apply(
            &stored,
            &json!({"spec": {"ports": [{"port": 80, "name": "new"}]}}),
            &request("alice", false),
        )
        .expect("applies");
        assert_eq!(
            next["spec"]["ports"],
            json!([{"port": 80, "protocol": "tcp", "name": "new"}]),
            "the same element, not a second one"
        );
        let udp = apply(
            &next,
            &json!({"spec": {"ports": [{"port": 80, "protocol": "udp"}]}}),
            &request("bob", false),
        )
        .expect("applies");
        assert_eq!(udp["spec"]["ports"].as_array().map(Vec::len), Some(2));
    }

    fn request(manager: &str, force: bool) -> Apply<'static> {
        Apply {
            manager: Box::leak(manager.to_owned().into_boxed_str()),
            force,
            subresource: "",
            api_version: "x/v1",
            status_apart: true,
            schema: Box::leak(Box::new(schema())),
            now: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn an_apply_records_what_it_owns_and_round_trips_fields_v1() {
        let applied = json!({"metadata": {"name": "a", "labels": {"app": "web"}}, "spec": {"replicas": 2, "containers": [{"name": "c", "image": "i"}], "tags": ["x"]}});
        let object = apply(&json!({}), &applied, &request("alice", false)).expect("applies");
        let entries = managers(&object);
        assert_eq!(entries.len(), 1);
        let fields_v1 = &object["metadata"]["managedFields"][0]["fieldsV1"];
        assert_eq!(
            fields_v1["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"]["."],
            json!({})
        );
        assert!(fields_v1["f:metadata"]["f:labels"]["f:app"].is_object());
        assert_eq!(entries[0].fields, fields(&applied, &schema(), false, true));
    }

    #[test]
    fn another_managers_field_is_a_conflict_unless_forced() {
        let object = apply(
            &json!({}),
            &json!({"spec": {"replicas": 2}}),
            &request("alice", false),
        )
        .expect("applies");
        let err = apply(
            &object,
            &json!({"spec": {"replicas": 3}}),
            &request("bob", false),
        )
        .expect_err("conflict");
        assert!(
            matches!(&err, ApiError::ApplyConflict { message, .. } if message.contains("conflict with \"alice\": .spec.replicas"))
        );
        // The same value is shared ownership, not a conflict.
        let shared = apply(
            &object,
            &json!({"spec": {"replicas": 2}}),
            &request("bob", false),
        )
        .expect("same value");
        assert_eq!(managers(&shared).len(), 2);
        let forced = apply(
            &object,
            &json!({"spec": {"replicas": 3}}),
            &request("bob", true),
        )
        .expect("forced");
        assert_eq!(forced["spec"]["replicas"], json!(3));
        let alice = managers(&forced).into_iter().find(|e| e.manager == "alice");
        assert!(alice.is_none(), "alice lost her only field");
    }

    #[test]
    fn fields_a_manager_stops_applying_are_removed_unless_owned_elsewhere() {
        let object = apply(
            &json!({}),
            &json!({"spec": {"replicas": 2, "image": "x", "containers": [{"name": "a"}, {"name": "b"}]}}),
            &request("alice", false),
        )
        .expect("applies");
        let object = apply(
            &object,
            &json!({"spec": {"image": "x"}}),
            &request("bob", false),
        )
        .expect("shared");
        let next = apply(
            &object,
            &json!({"spec": {"containers": [{"name": "a"}]}}),
            &request("alice", false),
        )
        .expect("applies");
        assert_eq!(next["spec"].get("replicas"), None, "only alice had it");
        assert_eq!(next["spec"]["image"], json!("x"), "bob still owns it");
        assert_eq!(
            next["spec"]["containers"],
            json!([{"name": "a"}]),
            "item b removed by key"
        );
    }

    #[test]
    fn lists_merge_by_their_list_type() {
        let object = apply(
            &json!({}),
            &json!({"spec": {"containers": [{"name": "a", "image": "1"}], "tags": ["x"]}}),
            &request("alice", false),
        )
        .expect("applies");
        let next = apply(
            &object,
            &json!({"spec": {"containers": [{"name": "b", "image": "2"}], "tags": ["y"]}}),
            &request("bob", false),
        )
        .expect("applies");
        assert_eq!(
            next["spec"]["containers"],
            json!([{"name": "a", "image": "1"}, {"name": "b", "image": "2"}])
        );
        assert_eq!(next["spec"]["tags"], json!(["x", "y"]));
    }
}
