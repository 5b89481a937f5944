//! What kube-apiserver's registries do to built-in kinds on every write,
//! so that readers see what they would see there: a Secret's
//! `stringData` folded into `data`, a Namespace's name label, finalizer
//! and phase, a Service's defaults, a Deployment's and a DaemonSet's
//! (`workload_defaults.rs`); and an object that its kind's type cannot hold (a number
//! where a string goes, a required field missing, Secret data that is
//! not base64) refused, so typed clients can always read back a list.

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment},
    coordination::v1::Lease,
    core::v1::{ConfigMap, Event, Namespace, Secret, Service, ServiceAccount},
    discovery::v1::EndpointSlice,
    rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{
    meta::{meta, metadata_mut},
    workload_defaults,
};
use crate::{FieldError, FieldErrorKind, server::registry::Resource};

/// Prepare a built-in object for storing (`old` is the stored one, on an
/// update).
pub(super) fn prepare(resource: &Resource, object: &mut Value, old: Option<&Value>) {
    if resource.custom || !object.is_object() {
        return;
    }
    match (resource.group.as_str(), resource.plural.as_str()) {
        ("", "secrets") => fold_string_data(object),
        ("", "namespaces") => namespace(object, old.is_none()),
        ("", "services") => service_defaults(object),
        ("apps", "deployments") => workload_defaults::deployment(object),
        ("apps", "daemonsets") => workload_defaults::daemon_set(object),
        _ => {}
    }
}

/// A core Service's defaults, as kube-apiserver fills them: type
/// ClusterIP, no session affinity, and each port TCP to the same target
/// port.
fn service_defaults(service: &mut Value) {
    let Some(spec) = service.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    spec.entry("type").or_insert_with(|| json!("ClusterIP"));
    spec.entry("sessionAffinity")
        .or_insert_with(|| json!("None"));
    for port in spec
        .get_mut("ports")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
    {
        port.entry("protocol").or_insert_with(|| json!("TCP"));
        if let Some(number) = port.get("port").cloned() {
            port.entry("targetPort").or_insert(number);
        }
    }
}

/// Whether the object decodes as its kind's type; where not, the field
/// and why. Custom resources and CRDs have their own checks.
pub(super) fn check_type(resource: &Resource, object: &Value) -> Result<(), FieldError> {
    if resource.custom {
        return Ok(());
    }
    for field in required(resource) {
        let pointer = format!("/{}", field.replace('.', "/"));
        if object.pointer(&pointer).is_none_or(Value::is_null) {
            return Err(FieldError {
                field: (*field).to_owned(),
                kind: FieldErrorKind::Required,
                value: None,
                detail: "Required value".into(),
            });
        }
    }
    match (resource.group.as_str(), resource.plural.as_str()) {
        ("", "namespaces") => decodes::<Namespace>(object),
        ("", "configmaps") => decodes::<ConfigMap>(object),
        ("", "secrets") => decodes::<Secret>(object),
        ("", "serviceaccounts") => decodes::<ServiceAccount>(object),
        ("", "services") => decodes::<Service>(object),
        ("", "events") => decodes::<Event>(object),
        ("coordination.k8s.io", "leases") => decodes::<Lease>(object),
        ("apps", "deployments") => {
            decodes::<Deployment>(object)?;
            selects_its_template(object, "deployment")
        }
        ("apps", "daemonsets") => {
            decodes::<DaemonSet>(object)?;
            selects_its_template(object, "daemonset")
        }
        ("discovery.k8s.io", "endpointslices") => decodes::<EndpointSlice>(object),
        ("rbac.authorization.k8s.io", "roles") => decodes::<Role>(object),
        ("rbac.authorization.k8s.io", "rolebindings") => decodes::<RoleBinding>(object),
        ("rbac.authorization.k8s.io", "clusterroles") => decodes::<ClusterRole>(object),
        ("rbac.authorization.k8s.io", "clusterrolebindings") => {
            decodes::<ClusterRoleBinding>(object)
        }
        _ => Ok(()),
    }
}

/// Fields kube-apiserver's validation requires that the types' decoders
/// would default instead.
fn required(resource: &Resource) -> &'static [&'static str] {
    match (resource.group.as_str(), resource.plural.as_str()) {
        ("apps", "deployments" | "daemonsets") => &["spec", "spec.selector", "spec.template"],
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => &["roleRef"],
        ("discovery.k8s.io", "endpointslices") => &["addressType", "endpoints"],
        _ => &[],
    }
}

/// A workload's selector must select its own pods, as kube-apiserver's
/// validation has it: not empty, and matching the template's labels.
fn selects_its_template(object: &Value, kind: &str) -> Result<(), FieldError> {
    let selector = object.pointer("/spec/selector").unwrap_or(&Value::Null);
    let labels = object
        .pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object);
    let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
    let match_labels = selector.get("matchLabels").and_then(Value::as_object);
    let expressions = selector.get("matchExpressions").and_then(Value::as_array);
    if match_labels.is_none_or(serde_json::Map::is_empty) && expressions.is_none_or(Vec::is_empty) {
        return Err(FieldError {
            field: "spec.selector".into(),
            kind: FieldErrorKind::Invalid,
            value: Some(selector.clone()),
            detail: format!("empty selector is invalid for {kind}"),
        });
    }
    let by_label = match_labels
        .into_iter()
        .flatten()
        .all(|(key, value)| label(key) == value.as_str());
    let by_expression = expressions.into_iter().flatten().all(|e| {
        let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        match e.get("operator").and_then(Value::as_str) {
            Some("In") => label(key).is_some_and(|v| values.contains(&v)),
            Some("NotIn") => label(key).is_none_or(|v| !values.contains(&v)),
            Some("Exists") => label(key).is_some(),
            Some("DoesNotExist") => label(key).is_none(),
            _ => false,
        }
    });
    if by_label && by_expression {
        return Ok(());
    }
    Err(FieldError {
        field: "spec.template.metadata.labels".into(),
        kind: FieldErrorKind::Invalid,
        value: labels.map(|l| Value::Object(l.clone())),
        detail: "`selector` does not match template `labels`".into(),
    })
}

/// Whether the object decodes as `T`; where not, the field and why. (The
/// k8s-openapi types default a missing required field rather than
/// refuse it, hence [`required`].)
fn decodes<T: DeserializeOwned>(object: &Value) -> Result<(), FieldError> {
    let Err(e) = serde_path_to_error::deserialize::<_, T>(object) else {
        return Ok(());
    };
    Err(FieldError {
        field: e.path().to_string(),
        kind: FieldErrorKind::TypeInvalid,
        value: None,
        detail: e.inner().to_string(),
    })
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

    fn builtin(group: &str, plural: &str) -> Resource {
        Resource {
            group: group.into(),
            version: "v1".into(),
            kind: String::new(),
            plural: plural.into(),
            singular: String::new(),
            namespaced: true,
            short_names: Vec::new(),
            categories: Vec::new(),
            status: false,
            scale: None,
            validator: None,
            printer_columns: None,
            custom: false,
        }
    }

    #[test]
    fn what_a_typed_client_could_not_read_back_is_refused_with_its_field() {
        let map = builtin("", "configmaps");
        let check = |resource: &Resource, object: Value| {
            check_type(resource, &object).map_err(|e| (e.field, e.kind, e.detail))
        };
        assert_eq!(
            check(&map, json!({"metadata": {"name": "a"}, "data": {"k": "v"}})),
            Ok(())
        );
        let (field, kind, detail) =
            check(&map, json!({"metadata": {"name": "a"}, "data": {"k": 1}}))
                .expect_err("a number");
        assert_eq!(
            (field.as_str(), kind),
            ("data.k", FieldErrorKind::TypeInvalid)
        );
        assert!(detail.contains("invalid type"), "{detail}");
        let secret = builtin("", "secrets");
        let (field, ..) = check(
            &secret,
            json!({"metadata": {"name": "s"}, "data": {"k": "not base64!"}}),
        )
        .expect_err("not base64");
        assert_eq!(field, "data.k");
        let deployments = builtin("apps", "deployments");
        let (field, kind, _) = check(
            &deployments,
            json!({"metadata": {"name": "d"}, "spec": {"template": {}}}),
        )
        .expect_err("no selector");
        assert_eq!(
            (field.as_str(), kind),
            ("spec.selector", FieldErrorKind::Required)
        );
        let selected = |selector: Value, labels: Value| {
            check(
                &deployments,
                json!({"metadata": {"name": "d"}, "spec": {"selector": selector,
                    "template": {"metadata": {"labels": labels}, "spec": {"containers": []}}}}),
            )
            .map_err(|e| (e.0, e.2))
        };
        assert_eq!(
            selected(
                json!({"matchLabels": {"app": "web"}, "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["a", "b"]},
                    {"key": "canary", "operator": "DoesNotExist"}]}),
                json!({"app": "web", "tier": "b", "team": "x"})
            ),
            Ok(())
        );
        assert_eq!(
            selected(
                json!({"matchLabels": {"app": "web"}}),
                json!({"app": "api"})
            ),
            Err((
                "spec.template.metadata.labels".into(),
                "`selector` does not match template `labels`".into()
            ))
        );
        assert_eq!(
            selected(json!({}), json!({"app": "web"})).map_err(|e| e.0),
            Err("spec.selector".to_owned())
        );
        let role_binding = builtin("rbac.authorization.k8s.io", "rolebindings");
        assert_eq!(
            check(&role_binding, json!({"metadata": {"name": "r"}})).map_err(|e| e.0),
            Err("roleRef".to_owned())
        );
    }

    #[test]
    fn a_service_gets_kube_apiservers_defaults() {
        let mut service = json!({"spec": {"selector": {"app": "web"}, "ports": [
            {"port": 80}, {"port": 53, "protocol": "UDP", "targetPort": "dns"}]}});
        prepare(&builtin("", "services"), &mut service, None);
        assert_eq!(
            service,
            json!({"spec": {"selector": {"app": "web"}, "type": "ClusterIP", "sessionAffinity": "None",
                "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80},
                          {"port": 53, "protocol": "UDP", "targetPort": "dns"}]}})
        );
        let mut headless = json!({"spec": {"type": "NodePort"}});
        prepare(&builtin("", "services"), &mut headless, None);
        assert_eq!(headless["spec"]["type"], "NodePort");
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
