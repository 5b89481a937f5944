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

/// `/openapi/v2`: the same paths and schemas as the v3 documents, in one
/// Swagger 2.0 document (JSON only), for clients that predate v3.
pub(super) fn v2(registry: &Registry) -> Value {
    let mut paths = serde_json::Map::new();
    let mut definitions = serde_json::Map::new();
    let mut seen = std::collections::BTreeSet::new();
    for resource in registry.all() {
        if !seen.insert((resource.group.clone(), resource.version.clone())) {
            continue;
        }
        let Some(mut doc) = group_version(registry, &resource.group, &resource.version) else {
            continue;
        };
        if let Some(Value::Object(schemas)) =
            doc.pointer_mut("/components/schemas").map(Value::take)
        {
            definitions.extend(schemas);
        }
        if let Some(Value::Object(found)) = doc.get_mut("paths").map(Value::take) {
            for (path, mut operations) in found {
                if let Some(operations) = operations.as_object_mut() {
                    operations.values_mut().for_each(operation_v2);
                }
                paths.insert(path, operations);
            }
        }
    }
    let mut doc = json!({
        "swagger": "2.0",
        "info": {"title": "Gantry", "version": format!("v1.{}", super::discovery::KUBERNETES_MINOR)},
        "paths": paths,
        "definitions": definitions,
    });
    rewrite_refs(&mut doc);
    doc
}

/// A v3 operation as v2 spells it: typed query parameters, the request body
/// as a `body` parameter, response schemas without media types.
fn operation_v2(operation: &mut Value) {
    let Some(operation) = operation.as_object_mut() else {
        return;
    };
    let mut parameters: Vec<Value> = operation
        .remove("parameters")
        .and_then(|p| p.as_array().cloned())
        .unwrap_or_default();
    for parameter in &mut parameters {
        if let Some(schema) = parameter.as_object_mut().and_then(|p| p.remove("schema")) {
            parameter["type"] = schema["type"].clone();
            parameter["uniqueItems"] = schema["uniqueItems"].clone();
        }
    }
    if let Some(body) = operation.remove("requestBody") {
        let schema = body.pointer("/content/application~1json/schema").cloned();
        parameters.push(json!({"name": "body", "in": "body", "required": true, "schema": schema}));
    }
    if !parameters.is_empty() {
        operation.insert("parameters".to_owned(), Value::Array(parameters));
    }
    if let Some(Value::Object(responses)) = operation.get_mut("responses") {
        for response in responses.values_mut() {
            if let Some(schema) = response
                .pointer("/content/application~1json/schema")
                .cloned()
            {
                *response = json!({"description": response["description"], "schema": schema});
            }
        }
    }
}

fn rewrite_refs(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                match value {
                    Value::String(target) if key == "$ref" => {
                        *target = target.replace("#/components/schemas/", "#/definitions/");
                    }
                    _ => rewrite_refs(value),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}
