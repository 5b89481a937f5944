//! OpenAPI v3, as much as clients need: an index of group versions, and per
//! group version the paths (tagged with their kind, with the query
//! parameters kubectl looks for) and each kind's schema.

use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::{Value, json};

use super::registry::{Registry, Resource};

fn path_of(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`.
pub(super) fn index(registry: &Registry) -> Value {
    let mut paths = serde_json::Map::new();
    for resource in registry.all() {
        let key = path_of(&resource.group, &resource.version);
        if paths.contains_key(&key) {
            continue;
        }
        if let Some(doc) = group_version(registry, &resource.group, &resource.version) {
            let mut hasher = DefaultHasher::new();
            doc.to_string().hash(&mut hasher);
            let url = format!("/openapi/v3/{key}?hash={:016X}", hasher.finish());
            paths.insert(key, json!({"serverRelativeURL": url}));
        }
    }
    json!({"paths": paths})
}

fn schema_name(resource: &Resource) -> String {
    let group: Vec<&str> = resource.group.split('.').rev().collect();
    let group = if resource.group.is_empty() {
        "io.k8s.api.core".to_owned()
    } else {
        group.join(".")
    };
    format!("{group}.{}.{}", resource.version, resource.kind)
}

fn gvk(resource: &Resource) -> Value {
    json!({"group": resource.group, "version": resource.version, "kind": resource.kind})
}

fn query(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

/// `/openapi/v3/api/v1` or `/openapi/v3/apis/{group}/{version}`.
pub(super) fn group_version(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let served = registry.in_group_version(group, version);
    if served.is_empty() {
        return None;
    }
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    for resource in &served {
        let base = format!("/{}", path_of(group, version));
        let collection = if resource.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", resource.plural)
        } else {
            format!("{base}/{}", resource.plural)
        };
        let name = schema_name(resource);
        let reference = json!({"$ref": format!("#/components/schemas/{name}")});
        let body = json!({"content": {"application/json": {"schema": reference}}});
        let ok = json!({"200": {"description": "OK", "content": {"application/json": {"schema": reference}}}});
        let write = |action: &str| {
            json!({
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk(resource),
                "parameters": [query("dryRun"), query("fieldManager"), query("fieldValidation")],
                "requestBody": body,
                "responses": ok,
            })
        };
        let read = |action: &str| json!({"x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk(resource), "responses": ok});
        paths.insert(
            collection.clone(),
            json!({"get": read("list"), "post": write("post")}),
        );
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({"get": read("get"), "put": write("put"), "patch": write("patch"), "delete": read("delete")}),
        );
        if resource.status {
            paths.insert(
                format!("{collection}/{{name}}/status"),
                json!({"get": read("get"), "put": write("put"), "patch": write("patch")}),
            );
        }
        let mut schema = resource
            .validator
            .as_ref()
            .map(|v| v.schema().clone())
            .unwrap_or_else(
                || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
            );
        schema["x-kubernetes-group-version-kind"] = json!([gvk(resource)]);
        schemas.insert(name, schema);
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Gantry", "version": format!("v1.{}", super::discovery::KUBERNETES_MINOR)},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}
