//! The CEL `x-kubernetes-validations` rules of a schema, judged node by
//! node.
//!
//! kube-apiserver ratchets these rules on an update: a node whose value is
//! unchanged keeps its earlier judgement, unless one of its rules reads
//! `oldSelf` (it judges a change, so it always runs). kube-cel, asked to
//! validate a whole object, converts and evaluates every node below the
//! root, once per level above it; binding a Task, a one-field change to
//! its spec, ran the thirty rules of its unchanged task definition and
//! was most of what a placement cost the API server (docs/scale.md). So
//! each node with rules is compiled on its own, over its schema with the
//! rules below it taken out, and an update visits only the nodes that
//! changed or read `oldSelf`.
//!
//! List items are paired with the old list by index, as kube-cel pairs
//! them for `oldSelf`; an item is ratcheted only with its whole list, since
//! kube-apiserver correlates the items of most lists not at all.

use kube::core::cel::{self, CompiledSchema};
use serde_json::{Map, Value};

use super::{Error, FieldError, FieldErrorKind};

thread_local! {
    /// One CEL environment per thread: building one registers every
    /// Kubernetes CEL function, which cost more than most validations
    /// (docs/scale.md). It is `Send` but not `Sync`.
    static CEL: cel::Validator = cel::Validator::new();
}

/// What rules a node and its descendants hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Rules {
    None,
    Plain,
    /// Some rule reads `oldSelf`.
    Transition,
}

/// One schema node's rules, and the nodes below it that hold any.
pub(super) struct Node {
    /// This node's own rules, compiled over its schema without the rules
    /// below it (they are judged at their own nodes). Under `allOf`,
    /// `oneOf` or `anyOf` every rule of the subtree is compiled here and
    /// nothing below is visited.
    own: Option<CompiledSchema>,
    /// Whether an own rule reads `oldSelf`.
    own_rules: Rules,
    /// The strongest rule of this node and everything below it.
    rules: Rules,
    properties: Vec<(String, Node)>,
    items: Option<Box<Node>>,
    additional: Option<Box<Node>>,
}

impl Node {
    /// Compile the rules of `schema` node by node.
    ///
    /// # Errors
    /// When a rule does not compile.
    pub(super) fn new(schema: &Value) -> Result<Self, Error> {
        let composed = ["allOf", "oneOf", "anyOf"]
            .iter()
            .any(|k| schema.get(k).is_some());
        let (properties, items, additional) = if composed {
            (Vec::new(), None, None)
        } else {
            let child = |key: &str| {
                schema
                    .get(key)
                    .filter(|s| s.is_object())
                    .map(|s| Self::new(s).map(Box::new))
                    .transpose()
            };
            let properties = schema
                .get("properties")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(name, s)| Ok((name.clone(), Self::new(s)?)))
                .collect::<Result<Vec<_>, Error>>()?
                .into_iter()
                .filter(|(_, node)| node.rules != Rules::None)
                .collect();
            let preserve = schema
                .get("x-kubernetes-preserve-unknown-fields")
                .and_then(Value::as_bool)
                == Some(true);
            let additional = if preserve {
                None
            } else {
                child("additionalProperties")?
            };
            (properties, child("items")?, additional)
        };
        let compiled = cel::compile_schema(&if composed {
            schema.clone()
        } else {
            without_rules_below(schema)
        });
        if let Some(err) = compiled.compilation_errors().first() {
            return Err(Error::InvalidRule(err.to_string()));
        }
        let own_rules = rules_of(&compiled);
        let rules = properties
            .iter()
            .map(|(_, node)| node)
            .chain(items.as_deref())
            .chain(additional.as_deref())
            .map(|node| node.rules)
            .fold(own_rules, Ord::max);
        Ok(Self {
            own: (own_rules != Rules::None).then_some(compiled),
            own_rules,
            rules,
            properties,
            items: items.filter(|node| node.rules != Rules::None),
            additional: additional.filter(|node| node.rules != Rules::None),
        })
    }

    /// Whether any rule is held at or below this node.
    pub(super) fn has_rules(&self) -> bool {
        self.rules != Rules::None
    }

    /// Judge `value` (at `path`; an update of `old`, paired with it when
    /// `correlated`), both defaulted and without nulls, adding what fails.
    pub(super) fn judge(
        &self,
        value: &Value,
        old: Option<&Value>,
        correlated: bool,
        path: &str,
        errors: &mut Vec<FieldError>,
    ) {
        let unchanged = correlated && old == Some(value);
        if unchanged && self.rules == Rules::Plain {
            return;
        }
        if let Some(own) = &self.own
            && (!unchanged || self.own_rules == Rules::Transition)
            && let Err(failed) = CEL.with(|cel| cel.validate_compiled(own, value, old))
        {
            errors.extend(failed.into_vec().into_iter().map(|e| FieldError {
                field: under(path, &e.field_path),
                kind: FieldErrorKind::from_cel_reason(e.reason.as_deref()),
                value: None,
                detail: e.message,
            }));
        }
        match value {
            Value::Object(fields) => {
                for (name, node) in &self.properties {
                    if let Some(child) = fields.get(name) {
                        let old = old.and_then(|o| o.get(name));
                        node.judge(child, old, correlated, &under(path, name), errors);
                    }
                }
                if let Some(node) = &self.additional {
                    let declared = |k: &String| self.properties.iter().any(|(name, _)| name == k);
                    for (key, child) in fields.iter().filter(|(k, _)| !declared(k)) {
                        let old = old.and_then(|o| o.get(key));
                        node.judge(child, old, correlated, &under(path, key), errors);
                    }
                }
            }
            Value::Array(items) => {
                if let Some(node) = &self.items {
                    let old = old.and_then(Value::as_array);
                    for (i, item) in items.iter().enumerate() {
                        let old = old.and_then(|o| o.get(i));
                        node.judge(item, old, false, &format!("{path}[{i}]"), errors);
                    }
                }
            }
            _ => {}
        }
    }
}

fn rules_of(compiled: &CompiledSchema) -> Rules {
    let here = compiled.validations.iter().flatten().map(|r| {
        if r.is_transition_rule {
            Rules::Transition
        } else {
            Rules::Plain
        }
    });
    let below = compiled
        .properties
        .values()
        .chain(compiled.items.as_deref())
        .chain(compiled.additional_properties.as_deref())
        .chain(&compiled.all_of)
        .chain(&compiled.one_of)
        .chain(&compiled.any_of)
        .map(rules_of);
    here.chain(below).max().unwrap_or(Rules::None)
}

/// `schema` with the rules of every node below its root removed; what
/// the root's rules need of it (types, formats, maps) stays. A subtree
/// that kube-cel would convert to the same CEL value without its schema
/// keeps only its type, so that kube-cel does not walk it: the object is
/// defaulted before the rules run.
fn without_rules_below(schema: &Value) -> Value {
    fn strip(schema: &Value) -> Value {
        if converts_plainly(schema) {
            let kept = schema.get("type").map(|t| ("type".to_owned(), t.clone()));
            return Value::Object(kept.into_iter().collect());
        }
        match schema {
            Value::Object(fields) => Value::Object(
                fields
                    .iter()
                    .filter(|(k, _)| *k != "x-kubernetes-validations")
                    .map(|(k, v)| (k.clone(), strip_children(k, v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    fn strip_children(key: &str, value: &Value) -> Value {
        match (key, value) {
            ("properties", Value::Object(properties)) => Value::Object(
                properties
                    .iter()
                    .map(|(k, v)| (k.clone(), strip(v)))
                    .collect::<Map<_, _>>(),
            ),
            ("items" | "additionalProperties", Value::Object(_)) => strip(value),
            ("allOf" | "oneOf" | "anyOf", Value::Array(branches)) => {
                Value::Array(branches.iter().map(strip).collect())
            }
            _ => value.clone(),
        }
    }
    match schema {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), strip_children(k, v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Whether kube-cel converts a value of `schema` as it converts one with no
/// schema at all: no string read as a time, duration or bytes, no map
/// whose keys it would leave unescaped, no embedded object.
fn converts_plainly(schema: &Value) -> bool {
    let special = [
        "x-kubernetes-int-or-string",
        "x-kubernetes-embedded-resource",
    ]
    .iter()
    .any(|k| schema.get(k).and_then(Value::as_bool) == Some(true))
        || schema
            .get("format")
            .and_then(Value::as_str)
            .is_some_and(|f| ["date-time", "duration", "byte"].contains(&f))
        || schema
            .get("additionalProperties")
            .is_some_and(Value::is_object)
        || ["allOf", "oneOf", "anyOf"]
            .iter()
            .any(|k| schema.get(k).is_some());
    !special
        && schema
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(_, s)| s)
            .chain(schema.get("items"))
            .all(converts_plainly)
}

/// kubectl's path of `relative` (as kube-cel reports it) below `path`.
fn under(path: &str, relative: &str) -> String {
    if path.is_empty() {
        relative.to_owned()
    } else if relative.is_empty() {
        path.to_owned()
    } else if relative.starts_with(['.', '[']) {
        format!("{path}{relative}")
    } else {
        format!("{path}.{relative}")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn judged(node: &Node, value: &Value, old: Option<&Value>) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        node.judge(value, old, true, "", &mut errors);
        let mut found: Vec<_> = errors.into_iter().map(|e| (e.field, e.detail)).collect();
        found.sort();
        found
    }

    #[test]
    fn a_create_is_judged_as_kube_cel_judges_the_whole_object() {
        let schema = json!({
            "type": "object",
            "x-kubernetes-validations": [{"rule": "!has(self.spec) || self.spec.size != 3"}],
            "properties": {
                "spec": {
                    "type": "object",
                    "x-kubernetes-validations": [
                        {"rule": "self.size < 10", "fieldPath": ".size"},
                        {"rule": "!has(self.items) || size(self.items) <= self.size"},
                    ],
                    "properties": {
                        "size": {"type": "integer", "default": 1},
                        "items": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "x-kubernetes-validations": [{"rule": "self.n < 5", "message": "small"}],
                                "properties": {"n": {"type": "integer"}},
                            },
                        },
                        "labels": {
                            "type": "object",
                            "additionalProperties": {
                                "type": "string",
                                "x-kubernetes-validations": [{"rule": "size(self) < 4"}],
                            },
                        },
                        "either": {
                            "type": "object",
                            "properties": {"a": {"type": "string"}},
                            "anyOf": [{"x-kubernetes-validations": [{"rule": "self.a != 'x'"}]}],
                        },
                    },
                },
            },
        });
        let node = Node::new(&schema).expect("compiles");
        let whole = cel::compile_schema(&schema);
        let objects = [
            json!({"spec": {"size": 2, "items": [{"n": 1}, {"n": 2}]}}),
            json!({"spec": {"size": 12, "items": [{"n": 1}, {"n": 9}, {"n": 7}]}}),
            json!({"spec": {"size": 3, "labels": {"a": "ok", "b": "too long"}}}),
            json!({"spec": {"either": {"a": "x"}, "items": [{"n": 6}]}}),
            json!({"metadata": {"name": "no-spec"}}),
        ];
        let mut failures = 0;
        for object in &objects {
            let object = apply(&schema, object);
            let mut expected: Vec<_> = cel::Validator::new()
                .validate_compiled(&whole, &object, None)
                .err()
                .map(|e| e.into_vec())
                .unwrap_or_default()
                .into_iter()
                .map(|e| (e.field_path, e.message))
                .collect();
            expected.sort();
            failures += expected.len();
            assert_eq!(judged(&node, &object, None), expected, "{object}");
        }
        assert!(failures >= 6, "the objects break rules at every level");
    }

    fn apply(schema: &Value, object: &Value) -> Value {
        cel::apply_defaults(schema, object)
    }

    fn bind_schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "x-kubernetes-validations": [
                        {"rule": "self.family == oldSelf.family", "message": "family is immutable"},
                    ],
                    "properties": {
                        "family": {"type": "string"},
                        "instance": {"type": "string"},
                        "definition": {
                            "type": "object",
                            "x-kubernetes-validations": [{"rule": "self.memory < 10", "message": "too much"}],
                            "properties": {"memory": {"type": "integer"}},
                        },
                        "ports": {
                            "type": "array",
                            "items": {
                                "type": "integer",
                                "x-kubernetes-validations": [{"rule": "self > 0", "message": "positive"}],
                            },
                        },
                    },
                },
            },
        })
    }

    #[test]
    fn an_unchanged_node_keeps_its_judgement_below_a_changed_parent() {
        let node = Node::new(&bind_schema()).expect("compiles");
        // Stored before its rule: binding it changes spec, not the
        // definition, which keeps passing; spec's rule on oldSelf runs.
        let old = json!({"spec": {"family": "web", "definition": {"memory": 12}, "ports": [0]}});
        let bound = json!({"spec": {"family": "web", "instance": "i-1", "definition": {"memory": 12}, "ports": [0]}});
        assert_eq!(judged(&node, &bound, Some(&old)), vec![]);
        let renamed = json!({"spec": {"family": "api", "instance": "i-1", "definition": {"memory": 12}, "ports": [0]}});
        assert_eq!(
            judged(&node, &renamed, Some(&old)),
            vec![("spec".to_owned(), "family is immutable".to_owned())]
        );
        // A changed node is judged, at its own path.
        let grown = json!({"spec": {"family": "web", "definition": {"memory": 13}, "ports": [0]}});
        assert_eq!(
            judged(&node, &grown, Some(&old)),
            vec![("spec.definition".to_owned(), "too much".to_owned())]
        );
        // A list's items are judged whenever the list changes, the old
        // ones too: most lists' items have no identity to keep.
        let more =
            json!({"spec": {"family": "web", "definition": {"memory": 12}, "ports": [0, 80]}});
        assert_eq!(
            judged(&node, &more, Some(&old)),
            vec![("spec.ports[0]".to_owned(), "positive".to_owned())]
        );
        // A create is judged whole.
        assert_eq!(judged(&node, &old, None).len(), 2);
    }
}
