//! `kubectl get` asks for a Table: columns, and a row per object. Custom
//! resources get their CRD's printer columns; other kinds Name and Age.

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::registry::Resource;

/// Whether the client asked for a Table (`Accept: ...;as=Table;...`).
pub(super) fn wanted(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',')
            .next()
            .is_some_and(|first| first.contains("as=Table"))
    })
}

fn columns(resource: &Resource) -> Vec<Value> {
    let mut columns = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name of the object", "priority": 0}),
    ];
    match &resource.printer_columns {
        Some(custom) => columns.extend(custom.iter().map(|c| {
            json!({"name": c.name, "type": c.type_, "format": c.format.clone().unwrap_or_default(), "description": c.description.clone().unwrap_or_default(), "priority": c.priority.unwrap_or(0)})
        })),
        None => columns.push(json!({"name": "Age", "type": "date", "format": "", "description": "Time since creation", "priority": 0})),
    }
    columns
}

fn row(resource: &Resource, object: &Value) -> Value {
    let mut cells = vec![
        object
            .pointer("/metadata/name")
            .cloned()
            .unwrap_or(Value::Null),
    ];
    match &resource.printer_columns {
        Some(custom) => cells.extend(
            custom
                .iter()
                .map(|c| cell(&c.type_, json_path(object, &c.json_path))),
        ),
        None => cells.push(cell(
            "date",
            object.pointer("/metadata/creationTimestamp").cloned(),
        )),
    }
    json!({
        "cells": cells,
        "object": {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": object.get("metadata").cloned().unwrap_or(Value::Null),
        },
    })
}

fn cell(type_: &str, value: Option<Value>) -> Value {
    match (type_, value) {
        ("date", Some(Value::String(s))) => s
            .parse::<Timestamp>()
            .map(|t| Value::String(human_duration(Timestamp::now().as_second() - t.as_second())))
            .unwrap_or(Value::String(s)),
        (_, Some(v)) => v,
        (_, None) => Value::Null,
    }
}

/// A Table of `objects` (with its column definitions unless `headless`).
pub(super) fn table(
    resource: &Resource,
    objects: &[&Value],
    revision: &str,
    headless: bool,
) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": revision},
        "columnDefinitions": if headless { vec![] } else { columns(resource) },
        "rows": objects.iter().map(|o| row(resource, o)).collect::<Vec<_>>(),
    })
}

/// kube-apiserver's short ages: 45s, 5m12s, 3h4m, 2d5h, 400d, 3y.
fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    let s = seconds.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86_400);
    match () {
        () if s < 120 => format!("{s}s"),
        () if m < 10 => format!("{m}m{}s", s % 60),
        () if m < 180 => format!("{m}m"),
        () if h < 8 => format!("{h}h{}m", m % 60),
        () if h < 48 => format!("{h}h"),
        () if h < 192 => format!("{d}d{}h", h % 24),
        () if d < 730 => format!("{d}d"),
        () if d < 2920 => format!("{}y{}d", d / 365, d % 365),
        () => format!("{}y", d / 365),
    }
}

/// The JSONPath of printer columns: `.a.b`, `.a[0]`, `.a[?(@.k=="v")].b`.
/// Several matches are joined with commas, as kube-apiserver prints them.
pub(super) fn json_path(object: &Value, path: &str) -> Option<Value> {
    let mut current: Vec<&Value> = vec![object];
    let mut rest = path
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim_start_matches('$');
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("[?(@.") {
            let end = after.find(")]")?;
            let (field, want) = after[..end].split_once("==")?;
            let want = want.trim().trim_matches('"').trim_matches('\'');
            current = current
                .into_iter()
                .flat_map(|v| v.as_array().into_iter().flatten())
                .filter(|item| item.get(field.trim()).and_then(Value::as_str) == Some(want))
                .collect();
            rest = &after[end + 2..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']')?;
            let index: usize = after[..end].parse().ok()?;
            current = current.into_iter().filter_map(|v| v.get(index)).collect();
            rest = &after[end + 1..];
        } else if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let field = after[..end].replace("\\.", ".");
            current = current
                .into_iter()
                .filter_map(|v| v.get(field.as_str()))
                .collect();
            rest = &after[end..];
        } else {
            return None;
        }
    }
    match current.as_slice() {
        [] => None,
        [one] => Some((*one).clone()),
        many => Some(Value::String(
            many.iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(","),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_paths_of_printer_columns() {
        let object = json!({"spec": {"n": 3, "list": [{"a": 1}, {"a": 2}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Degraded", "status": "False"}]}});
        assert_eq!(json_path(&object, ".spec.n"), Some(json!(3)));
        assert_eq!(json_path(&object, ".spec.list[1].a"), Some(json!(2)));
        assert_eq!(
            json_path(&object, ".status.conditions[?(@.type==\"Ready\")].status"),
            Some(json!("True"))
        );
        assert_eq!(json_path(&object, ".status.missing"), None);
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(human_duration(42), "42s");
        assert_eq!(human_duration(312), "5m12s");
        assert_eq!(human_duration(3 * 3600 + 240), "3h4m");
        assert_eq!(human_duration(2 * 86_400 + 5 * 3600), "2d5h");
        assert_eq!(human_duration(400 * 86_400), "400d");
    }
}
