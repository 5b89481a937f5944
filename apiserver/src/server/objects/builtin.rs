//! What kube-apiserver's registries do to some built-in kinds on every
//! write, so that readers see what they would see there: a Secret's
//! `stringData` folded into `data`, a Namespace's name label, finalizer
//! and phase.

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use serde_json::{Value, json};

use super::meta::{meta, metadata_mut};
use crate::server::registry::Resource;

/// Prepare a built-in object for storing (`old` is the stored one, on an
/// update).
pub(super) fn prepare(resource: &Resource, object: &mut Value, old: Option<&Value>) {
    if !resource.group.is_empty() || resource.custom || !object.is_object() {
        return;
    }
    match resource.plural.as_str() {
        "secrets" => fold_string_data(object),
        "namespaces" => namespace(object, old.is_none()),
        _ => {}
    }
}

/// Every namespace carries the immutable label
/// `kubernetes.io/metadata.name` with its name (so selectors can name
/// namespaces); a new one is Active with the `kubernetes` finalizer.
fn namespace(object: &mut Value, created: bool) {
    let name = meta(object, "name").unwrap_or_default();
    let metadata = metadata_mut(object);
    let labels = metadata.entry("labels").or_insert_with(|| json!({}));
    if !labels.is_object() {
        *labels = json!({});
    }
    labels["kubernetes.io/metadata.name"] = Value::String(name);
    if !created {
        return;
    }
    if object.pointer("/spec/finalizers").is_none() {
        let spec = object["spec"].take();
        object["spec"] = match spec {
            Value::Object(mut spec) => {
                spec.insert("finalizers".into(), json!(["kubernetes"]));
                Value::Object(spec)
            }
            _ => json!({"finalizers": ["kubernetes"]}),
        };
    }
    if object.pointer("/status/phase").is_none() {
        object["status"] = json!({"phase": "Active"});
    }
}

/// A Secret's `stringData` goes into `data`, base64-encoded, over any
/// value of the same key, and is never stored: kube-apiserver does this
/// on every write, so no reader ever sees `stringData`.
pub(super) fn fold_string_data(secret: &mut Value) {
    let Some(map) = secret.as_object_mut() else {
        return;
    };
    let Some(Value::Object(strings)) = map.remove("stringData") else {
        return;
    };
    let data = map
        .entry("data")
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    if !data.is_object() {
        *data = Value::Object(serde_json::Map::new());
    }
    if let Some(data) = data.as_object_mut() {
        for (key, value) in strings {
            let text = match value {
                Value::String(s) => s,
                other => other.to_string(),
            };
            data.insert(key, Value::String(BASE64.encode(text)));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn string_data_is_folded_into_data_and_wins() {
        let mut secret = json!({
            "metadata": {"name": "s"},
            "data": {"kept": "a2VwdA==", "both": "b2xk"},
            "stringData": {"both": "new", "plain": "p@ss"},
        });
        fold_string_data(&mut secret);
        assert_eq!(
            secret,
            json!({
                "metadata": {"name": "s"},
                "data": {"kept": "a2VwdA==", "both": "bmV3", "plain": "cEBzcw=="},
            })
        );
        let mut none = json!({"metadata": {"name": "s"}});
        fold_string_data(&mut none);
        assert_eq!(none, json!({"metadata": {"name": "s"}}));
    }

    #[test]
    fn a_namespace_is_labelled_with_its_name_and_starts_active() {
        let mut created = json!({"metadata": {"name": "prod", "labels": {"team": "a"}}});
        namespace(&mut created, true);
        assert_eq!(
            created,
            json!({
                "metadata": {"name": "prod", "labels": {"team": "a", "kubernetes.io/metadata.name": "prod"}},
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            })
        );
        let mut updated =
            json!({"metadata": {"name": "prod", "labels": {"kubernetes.io/metadata.name": "x"}}});
        namespace(&mut updated, false);
        assert_eq!(
            updated,
            json!({"metadata": {"name": "prod", "labels": {"kubernetes.io/metadata.name": "prod"}}})
        );
    }
}
