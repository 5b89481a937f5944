//! `kubectl get` asks for a Table: columns, and a row per object. Custom
//! resources get their CRD's printer columns; the built-in kinds get
//! kube-apiserver's columns (`builtin`: its printers for the kinds that
//! have one, Name and Created At for those that do not, as its default
//! table convertor has it).

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

/// One column of a built-in kind's table: its name, type, priority (1:
/// only with `-o wide`) and how a cell is read from an object.
struct Column(&'static str, &'static str, i32, fn(&Value) -> Value);

fn text(object: &Value, pointer: &str) -> Value {
    object.pointer(pointer).cloned().unwrap_or(Value::Null)
}

fn count(object: &Value, pointers: &[&str]) -> Value {
    let n: usize = pointers
        .iter()
        .filter_map(|p| object.pointer(p).and_then(Value::as_object))
        .map(serde_json::Map::len)
        .sum();
    json!(n)
}

/// How long ago the timestamp at `pointer` was, as kube-apiserver prints
/// it (`<unknown>` without one).
fn since(object: &Value, pointer: &str) -> Value {
    let at = object
        .pointer(pointer)
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<Timestamp>().ok());
    json!(at.map_or_else(
        || "<unknown>".to_owned(),
        |t| human_duration(Timestamp::now().as_second() - t.as_second())
    ))
}

/// [`since`] the first of `pointers` the object has, else its creation.
fn first_since(object: &Value, pointers: &[&str]) -> Value {
    let at = pointers
        .iter()
        .find(|p| object.pointer(p).is_some_and(|v| !v.is_null()))
        .unwrap_or(&"/metadata/creationTimestamp");
    since(object, at)
}

fn age(object: &Value) -> Value {
    since(object, "/metadata/creationTimestamp")
}

/// A pod template's containers' `field`s (`name`, `image`), joined.
fn containers(object: &Value, field: &str) -> Value {
    let items: Vec<&str> = object
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get(field).and_then(Value::as_str))
        .collect();
    json!(items.join(","))
}

/// A label map (or a label selector's `matchLabels`) as `k=v,k=v`, or
/// `<none>`.
fn labels(object: &Value, pointer: &str) -> Value {
    let items: Vec<String> = object
        .pointer(pointer)
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    json!(if items.is_empty() {
        "<none>".to_owned()
    } else {
        items.join(",")
    })
}

/// The names of a binding's subjects of `kind`, joined; service accounts
/// as `namespace/name`.
fn subjects(object: &Value, kind: &str) -> Value {
    let items: Vec<String> = object
        .pointer("/subjects")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|s| s.get("kind").and_then(Value::as_str) == Some(kind))
        .filter_map(|s| {
            let name = s.get("name").and_then(Value::as_str)?;
            Some(match s.get("namespace").and_then(Value::as_str) {
                Some(ns) if kind == "ServiceAccount" => format!("{ns}/{name}"),
                _ => name.to_owned(),
            })
        })
        .collect();
    json!(items.join(", "))
}

/// The object an Event is about, as `kind/name`.
fn about(event: &Value, pointer: &str) -> Value {
    let of = |f: &str| {
        event
            .pointer(&format!("{pointer}/{f}"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    json!(format!("{}/{}", of("kind").to_lowercase(), of("name")))
}

fn integer(object: &Value, pointer: &str) -> Value {
    json!(object.pointer(pointer).and_then(Value::as_i64).unwrap_or(0))
}

/// kube-apiserver's columns for the built-in kinds people list most.
fn builtin(resource: &Resource) -> Option<&'static [Column]> {
    const NAME: Column = Column("Name", "string", 0, |o| text(o, "/metadata/name"));
    const AGE: Column = Column("Age", "string", 0, age);
    // The default table convertor's: the timestamp itself, in UTC.
    const CREATED_AT: Column = Column("Created At", "date", 0, |o| {
        text(o, "/metadata/creationTimestamp")
    });
    const BINDING: &[Column] = &[
        NAME,
        Column("Role", "string", 0, |o| {
            let of = |f: &str| {
                o.pointer(&format!("/roleRef/{f}"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            json!(format!("{}/{}", of("kind"), of("name")))
        }),
        AGE,
        Column("Users", "string", 1, |o| subjects(o, "User")),
        Column("Groups", "string", 1, |o| subjects(o, "Group")),
        Column("ServiceAccounts", "string", 1, |o| {
            subjects(o, "ServiceAccount")
        }),
    ];
    Some(match (resource.group.as_str(), resource.plural.as_str()) {
        ("", "events") => &[
            Column("Last Seen", "string", 0, |o| {
                first_since(o, &["/lastTimestamp", "/eventTime"])
            }),
            Column("Type", "string", 0, |o| text(o, "/type")),
            Column("Reason", "string", 0, |o| text(o, "/reason")),
            Column("Object", "string", 0, |o| about(o, "/involvedObject")),
            Column("Message", "string", 0, |o| text(o, "/message")),
            Column("Name", "string", 1, |o| text(o, "/metadata/name")),
        ],
        // The same printer, over the fields of this group's view.
        ("events.k8s.io", "events") => &[
            Column("Last Seen", "string", 0, |o| {
                first_since(
                    o,
                    &[
                        "/deprecatedLastTimestamp",
                        "/series/lastObservedTime",
                        "/eventTime",
                    ],
                )
            }),
            Column("Type", "string", 0, |o| text(o, "/type")),
            Column("Reason", "string", 0, |o| text(o, "/reason")),
            Column("Object", "string", 0, |o| about(o, "/regarding")),
            Column("Message", "string", 0, |o| text(o, "/note")),
            Column("Name", "string", 1, |o| text(o, "/metadata/name")),
        ],
        ("", "namespaces") => &[
            NAME,
            Column("Status", "string", 0, |o| text(o, "/status/phase")),
            AGE,
        ],
        ("", "configmaps") => &[
            NAME,
            Column("Data", "integer", 0, |o| {
                count(o, &["/data", "/binaryData"])
            }),
            AGE,
        ],
        ("", "secrets") => &[
            NAME,
            Column("Type", "string", 0, |o| text(o, "/type")),
            Column("Data", "integer", 0, |o| count(o, &["/data"])),
            AGE,
        ],
        ("", "services") => &[
            NAME,
            Column("Type", "string", 0, |o| text(o, "/spec/type")),
            Column("Cluster-IP", "string", 0, |o| {
                o.pointer("/spec/clusterIP")
                    .cloned()
                    .unwrap_or(json!("<none>"))
            }),
            Column("Port(s)", "string", 0, |o| {
                let ports: Vec<String> = o
                    .pointer("/spec/ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        let protocol = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                        format!("{}/{protocol}", p.get("port").unwrap_or(&Value::Null))
                    })
                    .collect();
                json!(if ports.is_empty() {
                    "<none>".to_owned()
                } else {
                    ports.join(",")
                })
            }),
            AGE,
        ],
        ("apps", "deployments") => &[
            NAME,
            Column("Ready", "string", 0, |o| {
                let n = |p: &str| o.pointer(p).and_then(Value::as_i64).unwrap_or(0);
                json!(format!(
                    "{}/{}",
                    n("/status/readyReplicas"),
                    n("/spec/replicas")
                ))
            }),
            Column("Up-to-date", "integer", 0, |o| {
                o.pointer("/status/updatedReplicas")
                    .cloned()
                    .unwrap_or(json!(0))
            }),
            Column("Available", "integer", 0, |o| {
                o.pointer("/status/availableReplicas")
                    .cloned()
                    .unwrap_or(json!(0))
            }),
            AGE,
        ],
        ("discovery.k8s.io", "endpointslices") => &[
            NAME,
            Column("AddressType", "string", 0, |o| text(o, "/addressType")),
            Column("Ports", "string", 0, |o| {
                let ports: Vec<String> = o
                    .pointer("/ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p.get("port").map(ToString::to_string))
                    .collect();
                json!(if ports.is_empty() {
                    "<unset>".to_owned()
                } else {
                    ports.join(",")
                })
            }),
            Column("Endpoints", "string", 0, |o| {
                let addresses: Vec<&str> = o
                    .pointer("/endpoints")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e.pointer("/addresses/0").and_then(Value::as_str))
                    .collect();
                json!(if addresses.is_empty() {
                    "<unset>".to_owned()
                } else {
                    addresses.join(",")
                })
            }),
            AGE,
        ],
        ("coordination.k8s.io", "leases") => &[
            NAME,
            Column("Holder", "string", 0, |o| text(o, "/spec/holderIdentity")),
            AGE,
        ],
        ("", "serviceaccounts") => &[
            NAME,
            Column("Secrets", "integer", 0, |o| {
                json!(
                    o.pointer("/secrets")
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len)
                )
            }),
            AGE,
        ],
        ("apps", "daemonsets") => &[
            NAME,
            Column("Desired", "integer", 0, |o| {
                integer(o, "/status/desiredNumberScheduled")
            }),
            Column("Current", "integer", 0, |o| {
                integer(o, "/status/currentNumberScheduled")
            }),
            Column("Ready", "integer", 0, |o| integer(o, "/status/numberReady")),
            Column("Up-to-date", "integer", 0, |o| {
                integer(o, "/status/updatedNumberScheduled")
            }),
            Column("Available", "integer", 0, |o| {
                integer(o, "/status/numberAvailable")
            }),
            Column("Node Selector", "string", 0, |o| {
                labels(o, "/spec/template/spec/nodeSelector")
            }),
            AGE,
            Column("Containers", "string", 1, |o| containers(o, "name")),
            Column("Images", "string", 1, |o| containers(o, "image")),
            Column("Selector", "string", 1, |o| {
                labels(o, "/spec/selector/matchLabels")
            }),
        ],
        ("rbac.authorization.k8s.io", "rolebindings" | "clusterrolebindings") => BINDING,
        ("rbac.authorization.k8s.io", "roles" | "clusterroles")
        | ("apiextensions.k8s.io", "customresourcedefinitions") => &[NAME, CREATED_AT],
        _ => return None,
    })
}

fn columns(resource: &Resource) -> Vec<Value> {
    if resource.printer_columns.is_none()
        && let Some(builtin) = builtin(resource)
    {
        return builtin
            .iter()
            .map(|Column(name, type_, priority, _)| {
                let format = if *name == "Name" { "name" } else { "" };
                json!({"name": name, "type": type_, "format": format, "description": name, "priority": priority})
            })
            .collect();
    }
    let mut columns = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name of the object", "priority": 0}),
    ];
    match &resource.printer_columns {
        Some(custom) => columns.extend(custom.iter().map(|c| {
            json!({"name": c.name, "type": c.type_, "format": c.format.clone().unwrap_or_default(), "description": c.description.clone().unwrap_or_default(), "priority": c.priority.unwrap_or(0)})
        })),
        None => columns.push(json!({"name": "Age", "type": "string", "format": "", "description": "Time since creation", "priority": 0})),
    }
    columns
}

fn row(resource: &Resource, object: &Value) -> Value {
    let cells = match builtin(resource).filter(|_| resource.printer_columns.is_none()) {
        Some(builtin) => builtin
            .iter()
            .map(|Column(_, _, _, read)| read(object))
            .collect(),
        None => cells(resource, object),
    };
    json!({
        "cells": cells,
        "object": {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": object.get("metadata").cloned().unwrap_or(Value::Null),
        },
    })
}

/// The cells of a custom resource (its printer columns) or of another
/// kind (Name and Age).
fn cells(resource: &Resource, object: &Value) -> Vec<Value> {
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
        None => cells.push(age(object)),
    }
    cells
}

fn cell(type_: &str, value: Option<Value>) -> Value {
    match (type_, value.filter(|v| !v.is_null())) {
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

    fn served(group: &str, plural: &str) -> std::sync::Arc<Resource> {
        let registry = crate::server::Registry::with_builtins();
        registry.get(group, "v1", plural).expect("served")
    }

    #[test]
    fn built_in_kinds_print_kube_apiservers_columns() {
        let events = served("", "events");
        let event = json!({"metadata": {"name": "e1"}, "type": "Warning", "reason": "Unplaceable",
            "involvedObject": {"kind": "Service", "name": "web"}, "message": "no room"});
        let printed = table(&events, &[&event], "7", false);
        let names: Vec<_> = printed["columnDefinitions"]
            .as_array()
            .expect("columns")
            .iter()
            .map(|c| (c["name"].clone(), c["priority"].clone()))
            .collect();
        assert_eq!(
            names[..4],
            [
                (json!("Last Seen"), json!(0)),
                (json!("Type"), json!(0)),
                (json!("Reason"), json!(0)),
                (json!("Object"), json!(0))
            ]
        );
        assert_eq!(
            names.last(),
            Some(&(json!("Name"), json!(1))),
            "Name only with -o wide"
        );
        assert_eq!(
            printed["rows"][0]["cells"],
            json!([
                "<unknown>",
                "Warning",
                "Unplaceable",
                "service/web",
                "no room",
                "e1"
            ])
        );

        let services = served("", "services");
        let service = json!({"metadata": {"name": "web"}, "spec": {"type": "ClusterIP",
            "ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}});
        let printed = table(&services, &[&service], "7", true);
        let cells = printed["rows"][0]["cells"].as_array().expect("cells");
        assert_eq!(
            cells[..4],
            [
                json!("web"),
                json!("ClusterIP"),
                json!("<none>"),
                json!("80/TCP,53/UDP")
            ]
        );

        let deployments = served("apps", "deployments");
        let deployment = json!({"metadata": {"name": "d"}, "spec": {"replicas": 3}, "status": {"readyReplicas": 2}});
        let printed = table(&deployments, &[&deployment], "7", true);
        let cells = printed["rows"][0]["cells"].as_array().expect("cells");
        assert_eq!(cells[..4], [json!("d"), json!("2/3"), json!(0), json!(0)]);
    }

    fn header_and_cells(group: &str, plural: &str, object: &Value) -> (Vec<Value>, Value) {
        let printed = table(&served(group, plural), &[object], "7", false);
        let names = printed["columnDefinitions"]
            .as_array()
            .expect("columns")
            .iter()
            .map(|c| c["name"].clone())
            .collect();
        (names, printed["rows"][0]["cells"].clone())
    }

    #[test]
    fn the_other_built_in_kinds_print_kube_apiservers_columns_too() {
        let created = "2020-01-02T03:04:05Z";
        let daemon_set = json!({"metadata": {"name": "agent", "creationTimestamp": created},
            "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": {"spec": {
                "nodeSelector": {"disk": "ssd"},
                "containers": [{"name": "a", "image": "busybox:1"}, {"name": "b", "image": "pause:3"}]}}},
            "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                "updatedNumberScheduled": 1}});
        let (names, cells) = header_and_cells("apps", "daemonsets", &daemon_set);
        assert_eq!(
            names,
            [
                "Name",
                "Desired",
                "Current",
                "Ready",
                "Up-to-date",
                "Available",
                "Node Selector",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        let age = cells[7].as_str().expect("an age").to_owned();
        assert!(age.contains('y'), "{age}");
        assert_eq!(
            cells,
            json!([
                "agent",
                3,
                3,
                2,
                1,
                0,
                "disk=ssd",
                age,
                "a,b",
                "busybox:1,pause:3",
                "app=agent"
            ])
        );

        let binding = json!({"metadata": {"name": "reads"},
            "roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "ServiceAccount", "name": "robot", "namespace": "prod"},
                {"kind": "User", "name": "ann"}, {"kind": "User", "name": "bob"}]});
        for plural in ["rolebindings", "clusterrolebindings"] {
            let (names, cells) = header_and_cells("rbac.authorization.k8s.io", plural, &binding);
            assert_eq!(
                names,
                ["Name", "Role", "Age", "Users", "Groups", "ServiceAccounts"]
            );
            assert_eq!(
                cells,
                json!([
                    "reads",
                    "ClusterRole/view",
                    "<unknown>",
                    "ann, bob",
                    "",
                    "prod/robot"
                ])
            );
        }

        let role = json!({"metadata": {"name": "reader", "creationTimestamp": created}});
        for (group, plural) in [
            ("rbac.authorization.k8s.io", "roles"),
            ("rbac.authorization.k8s.io", "clusterroles"),
            ("apiextensions.k8s.io", "customresourcedefinitions"),
        ] {
            let (names, cells) = header_and_cells(group, plural, &role);
            assert_eq!(names, ["Name", "Created At"], "{plural}");
            assert_eq!(cells, json!(["reader", created]), "{plural}");
        }

        let account = json!({"metadata": {"name": "robot"}, "secrets": [{"name": "t"}]});
        let (names, cells) = header_and_cells("", "serviceaccounts", &account);
        assert_eq!(names, ["Name", "Secrets", "Age"]);
        assert_eq!(cells, json!(["robot", 1, "<unknown>"]));

        let event = json!({"metadata": {"name": "e2"}, "type": "Normal", "reason": "Started",
            "regarding": {"kind": "Task", "name": "t1"}, "note": "running"});
        let (names, cells) = header_and_cells("events.k8s.io", "events", &event);
        assert_eq!(
            names,
            ["Last Seen", "Type", "Reason", "Object", "Message", "Name"]
        );
        assert_eq!(
            cells,
            json!(["<unknown>", "Normal", "Started", "task/t1", "running", "e2"])
        );
    }

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
