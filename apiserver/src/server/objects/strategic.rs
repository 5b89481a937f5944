//! Strategic merge patch for built-in kinds, as kube-apiserver applies
//! it: maps merge as in a JSON merge patch, but lists the kind's schema
//! gives a merge key (a Deployment's containers by `name`, their env by
//! `name`, ports by `containerPort`, …) merge element by element, and the
//! directives kubectl writes are obeyed rather than stored:
//! `$patch: replace|delete|merge`, `$setElementOrder/<list>`,
//! `$deleteFromPrimitiveList/<list>` and `$retainKeys`. A list without a
//! merge key is replaced whole.
//!
//! The merge keys are those of the Kubernetes API's
//! `x-kubernetes-patch-merge-key` for the built-in kinds Gantry serves.

use serde_json::{Map, Value};

/// How a list of a kind merges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ListMerge {
    /// Objects merged by this key.
    Key(&'static str),
    /// Scalars, merged as a set (finalizers).
    Set,
}

/// Which lists of a kind merge, by the path of field names to them.
fn list_merge(kind: &str, path: &[&str]) -> Option<ListMerge> {
    match path {
        [.., "metadata", "finalizers"] => return Some(ListMerge::Set),
        [.., "metadata", "ownerReferences"] => return Some(ListMerge::Key("uid")),
        ["status", "conditions"] => return Some(ListMerge::Key("type")),
        _ => {}
    }
    match (kind, path) {
        ("Deployment" | "DaemonSet", ["spec", "template", "spec", rest @ ..]) => pod_list(rest),
        ("Service", ["spec", "ports"]) => Some(ListMerge::Key("port")),
        ("ServiceAccount", ["secrets" | "imagePullSecrets"]) => Some(ListMerge::Key("name")),
        _ => None,
    }
}

/// The merge lists of a PodSpec, by the path below it.
fn pod_list(path: &[&str]) -> Option<ListMerge> {
    let containers = |c: &str| matches!(c, "containers" | "initContainers" | "ephemeralContainers");
    Some(ListMerge::Key(match path {
        [c] if containers(c) => "name",
        ["volumes" | "imagePullSecrets" | "resourceClaims" | "schedulingGates"] => "name",
        ["hostAliases"] => "ip",
        ["topologySpreadConstraints"] => "topologyKey",
        [c, "env"] if containers(c) => "name",
        [c, "ports"] if containers(c) => "containerPort",
        [c, "volumeMounts"] if containers(c) => "mountPath",
        [c, "volumeDevices"] if containers(c) => "devicePath",
        _ => return None,
    }))
}

/// The lists server-side apply merges by key in a built-in kind, as a
/// schema fragment apply reads (`x-kubernetes-list-type: map` and its
/// keys, the Kubernetes API's `+listType=map` / `+listMapKey`), so that
/// two managers may own different containers of one Deployment. A
/// `protocol` key left out is `TCP`, as kube-apiserver defaults it before
/// merging. Lists not named here are atomic.
#[must_use]
pub(in crate::server) fn apply_schema(kind: &str) -> Value {
    const POD: &[(&str, &[&str])] = &[
        ("containers", &["name"]),
        ("initContainers", &["name"]),
        ("ephemeralContainers", &["name"]),
        ("volumes", &["name"]),
        ("imagePullSecrets", &["name"]),
        ("resourceClaims", &["name"]),
        ("schedulingGates", &["name"]),
        ("hostAliases", &["ip"]),
        (
            "topologySpreadConstraints",
            &["topologyKey", "whenUnsatisfiable"],
        ),
    ];
    const CONTAINER: &[(&str, &[&str])] = &[
        ("env", &["name"]),
        ("ports", &["containerPort", "protocol"]),
        ("volumeMounts", &["mountPath"]),
        ("volumeDevices", &["devicePath"]),
    ];
    let map_list = |keys: &[&str], items: Value| {
        serde_json::json!({
            "type": "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": keys,
            "items": items,
        })
    };
    let object = |fields: Vec<(&str, Value)>| {
        let properties: Map<String, Value> = fields
            .into_iter()
            .map(|(name, schema)| (name.to_owned(), schema))
            .collect();
        serde_json::json!({"type": "object", "properties": properties})
    };
    let with_protocol = |keys: &[&str]| {
        let mut item = serde_json::json!({"type": "object"});
        if keys.contains(&"protocol") {
            item["properties"] = serde_json::json!({"protocol": {"default": "TCP"}});
        }
        item
    };
    match kind {
        "Deployment" | "DaemonSet" => {
            let container = object(
                CONTAINER
                    .iter()
                    .map(|(name, keys)| (*name, map_list(keys, with_protocol(keys))))
                    .collect(),
            );
            let pod = object(
                POD.iter()
                    .map(|(name, keys)| {
                        let items = if name.ends_with("ontainers") {
                            container.clone()
                        } else {
                            serde_json::json!({"type": "object"})
                        };
                        (*name, map_list(keys, items))
                    })
                    .collect(),
            );
            let template = object(vec![("spec", pod)]);
            object(vec![("spec", object(vec![("template", template)]))])
        }
        "Service" => {
            let keys = ["port", "protocol"];
            let ports = map_list(&keys, with_protocol(&keys));
            object(vec![("spec", object(vec![("ports", ports)]))])
        }
        _ => Value::Null,
    }
}

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// Apply a strategic merge `patch` to the built-in object `original` of
/// `kind`; a malformed directive is an error saying which.
pub(super) fn patch(kind: &str, original: &Value, patch: &Value) -> Result<Value, String> {
    let Some(patch) = patch.as_object() else {
        return Err("a strategic merge patch is a JSON object".into());
    };
    let original = original.as_object().cloned().unwrap_or_default();
    merge_map(kind, &mut Vec::new(), original, patch).map(|m| Value::Object(m.unwrap_or_default()))
}

/// Merge a patch map into a map at `path`; `None` when the patch deletes
/// the map (`$patch: delete`).
fn merge_map<'p>(
    kind: &str,
    path: &mut Vec<&'p str>,
    mut original: Map<String, Value>,
    patch: &'p Map<String, Value>,
) -> Result<Option<Map<String, Value>>, String> {
    match patch.get(PATCH).map(|d| d.as_str()) {
        None | Some(Some("merge")) => {}
        Some(Some("replace")) => return Ok(Some(without_directives(patch))),
        Some(Some("delete")) => return Ok(None),
        Some(other) => return Err(format!("unknown $patch directive {other:?}")),
    }
    for (key, value) in patch {
        if key.starts_with('$') {
            continue;
        }
        if value.is_null() {
            original.remove(key);
            continue;
        }
        path.push(key);
        let merged = match (original.remove(key), value) {
            (Some(Value::Object(old)), Value::Object(new)) => {
                merge_map(kind, path, old, new)?.map(Value::Object)
            }
            (_, Value::Object(new)) => merge_map(kind, path, Map::new(), new)?.map(Value::Object),
            (old, Value::Array(new)) => {
                let old = match old {
                    Some(Value::Array(old)) => old,
                    _ => Vec::new(),
                };
                Some(Value::Array(merge_list(kind, path, old, new)?))
            }
            (_, other) => Some(other.clone()),
        };
        path.pop();
        if let Some(merged) = merged {
            original.insert(key.clone(), merged);
        }
    }
    for (key, value) in patch {
        if let Some(list) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            let gone = value
                .as_array()
                .ok_or_else(|| format!("{key} is not a list"))?;
            if let Some(Value::Array(items)) = original.get_mut(list) {
                items.retain(|item| !gone.contains(item));
            }
        }
    }
    for (key, value) in patch {
        if let Some(list) = key.strip_prefix(SET_ELEMENT_ORDER) {
            let order = value
                .as_array()
                .ok_or_else(|| format!("{key} is not a list"))?;
            path.push(list);
            let merge = list_merge(kind, path);
            path.pop();
            if let Some(Value::Array(items)) = original.get_mut(list) {
                reorder(items, order, merge);
            }
        }
    }
    if let Some(retained) = patch.get(RETAIN_KEYS) {
        let retained = retained.as_array().ok_or("$retainKeys is not a list")?;
        original.retain(|key, _| retained.iter().any(|r| r.as_str() == Some(key)));
    }
    Ok(Some(original))
}

/// The patch's own fields, without its directives.
fn without_directives(patch: &Map<String, Value>) -> Map<String, Value> {
    patch
        .iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k.clone(), strip(v)))
        .collect()
}

fn strip(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(without_directives(map)),
        Value::Array(items) => Value::Array(items.iter().map(strip).collect()),
        other => other.clone(),
    }
}

/// Merge a patch list into a list at `path`.
fn merge_list<'p>(
    kind: &str,
    path: &mut Vec<&'p str>,
    mut original: Vec<Value>,
    patch: &'p [Value],
) -> Result<Vec<Value>, String> {
    let replace = patch
        .iter()
        .any(|item| item.get(PATCH).and_then(Value::as_str) == Some("replace"));
    let items = patch
        .iter()
        .filter(|item| item.get(PATCH).and_then(Value::as_str) != Some("replace"));
    match list_merge(kind, path) {
        _ if replace => Ok(items.map(strip).collect()),
        None => Ok(patch.iter().map(strip).collect()),
        Some(ListMerge::Set) => {
            for item in items {
                if !original.contains(item) {
                    original.push(item.clone());
                }
            }
            Ok(original)
        }
        Some(ListMerge::Key(key)) => {
            for item in items {
                let Some(fields) = item.as_object() else {
                    return Err(format!("an element of {} is not an object", path.join(".")));
                };
                let id = fields
                    .get(key)
                    .ok_or_else(|| format!("an element of {} has no {key}", path.join(".")))?;
                let at = original.iter().position(|o| o.get(key) == Some(id));
                let base = at
                    .map(|i| original.remove(i))
                    .and_then(|o| o.as_object().cloned())
                    .unwrap_or_default();
                if let Some(merged) = merge_map(kind, path, base, fields)? {
                    let at = at.unwrap_or(original.len());
                    original.insert(at, Value::Object(merged));
                }
            }
            Ok(original)
        }
    }
}

/// Order `items` as `$setElementOrder` lists them (by merge key, or by
/// value for a set); those it does not list keep their relative order,
/// after the listed ones.
fn reorder(items: &mut [Value], order: &[Value], merge: Option<ListMerge>) {
    let id = |item: &Value| match merge {
        Some(ListMerge::Key(key)) => item.get(key).cloned(),
        _ => Some(item.clone()),
    };
    items.sort_by_key(|item| {
        let item = id(item);
        order
            .iter()
            .position(|o| id(o) == item)
            .unwrap_or(usize::MAX)
    });
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn deployment() -> Value {
        json!({
            "metadata": {"name": "web", "finalizers": ["a"]},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "tolerations": [{"key": "a"}, {"key": "b"}],
                        "containers": [
                            {"name": "web", "image": "web:1",
                             "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                             "ports": [{"containerPort": 80}]},
                            {"name": "sidecar", "image": "side:1"},
                        ],
                    },
                },
            },
        })
    }

    fn containers(object: &Value) -> &Value {
        &object["spec"]["template"]["spec"]["containers"]
    }

    #[test]
    fn kubectl_set_image_and_set_env_change_one_container_by_name() {
        // kubectl set image deployment/web web=web:2
        let patched = patch(
            "Deployment",
            &deployment(),
            &json!({"spec": {"template": {"spec": {"containers": [{"image": "web:2", "name": "web"}]}}}}),
        )
        .expect("patched");
        let mut expected = deployment();
        expected["spec"]["template"]["spec"]["containers"][0]["image"] = json!("web:2");
        assert_eq!(patched, expected);

        // kubectl set env deployment/web C=3
        let patched = patch(
            "Deployment",
            &deployment(),
            &json!({"spec": {"template": {"spec": {"containers": [
                {"env": [{"name": "C", "value": "3"}], "name": "web"}]}}}}),
        )
        .expect("patched");
        assert_eq!(
            containers(&patched)[0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}, {"name": "C", "value": "3"}])
        );
        assert_eq!(
            containers(&patched)[1],
            json!({"name": "sidecar", "image": "side:1"})
        );
    }

    #[test]
    fn client_side_apply_directives_delete_order_and_retain() {
        // A second kubectl apply with env B removed, containers reordered
        // and the strategy switched to Recreate.
        let patched = patch(
            "Deployment",
            &deployment(),
            &json!({"spec": {
                "strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null},
                "template": {"spec": {
                    "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "web"}],
                    "containers": [{
                        "name": "web",
                        "$setElementOrder/env": [{"name": "A"}],
                        "env": [{"$patch": "delete", "name": "B"}],
                    }],
                }},
            }}),
        )
        .expect("patched");
        assert_eq!(patched["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(
            containers(&patched),
            &json!([
                {"name": "sidecar", "image": "side:1"},
                {"name": "web", "image": "web:1", "env": [{"name": "A", "value": "1"}],
                 "ports": [{"containerPort": 80}]},
            ])
        );
        assert!(
            !patched.to_string().contains('$'),
            "no directive is stored: {patched}"
        );
    }

    #[test]
    fn lists_without_a_merge_key_are_replaced_and_replace_directives_obeyed() {
        let patched = patch(
            "Deployment",
            &deployment(),
            &json!({"spec": {"template": {"spec": {
                "tolerations": [{"key": "c"}],
                "containers": [{"name": "only", "image": "x"}, {"$patch": "replace"}],
            }}}}),
        )
        .expect("patched");
        assert_eq!(
            patched["spec"]["template"]["spec"]["tolerations"],
            json!([{"key": "c"}])
        );
        assert_eq!(
            containers(&patched),
            &json!([{"name": "only", "image": "x"}])
        );
        let replaced = patch(
            "Deployment",
            &deployment(),
            &json!({"spec": {"selector": {"$patch": "replace", "matchLabels": {"tier": "x"}}}}),
        )
        .expect("patched");
        assert_eq!(
            replaced["spec"]["selector"],
            json!({"matchLabels": {"tier": "x"}})
        );
    }

    #[test]
    fn finalizers_merge_as_a_set_and_service_ports_by_port() {
        let patched = patch(
            "Deployment",
            &deployment(),
            &json!({"metadata": {"finalizers": ["b", "a"]}}),
        )
        .expect("patched");
        assert_eq!(patched["metadata"]["finalizers"], json!(["a", "b"]));
        let patched = patch(
            "Deployment",
            &patched,
            &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        )
        .expect("patched");
        assert_eq!(patched["metadata"]["finalizers"], json!(["b"]));

        let service = json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]}});
        let patched = patch(
            "Service",
            &service,
            &json!({"spec": {"ports": [{"port": 443, "targetPort": 8443}]}}),
        )
        .expect("patched");
        assert_eq!(
            patched["spec"]["ports"],
            json!([{"port": 80, "name": "http"}, {"port": 443, "name": "https", "targetPort": 8443}])
        );
    }

    #[test]
    fn malformed_directives_are_refused() {
        let refused = |p: Value| patch("Deployment", &deployment(), &p).expect_err("refused");
        assert!(refused(json!([1])).contains("JSON object"));
        assert!(refused(json!({"spec": {"$patch": "explode"}})).contains("$patch"));
        assert!(
            refused(json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}))
                .contains("has no name")
        );
        assert!(refused(json!({"metadata": {"$retainKeys": "name"}})).contains("$retainKeys"));
    }
}
