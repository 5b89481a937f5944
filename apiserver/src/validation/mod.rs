//! Validation of custom resources against their CRD's structural schema,
//! in kube-apiserver's order: schema defaults first, then the OpenAPI value
//! checks, `x-kubernetes-list-type` uniqueness, then the CEL
//! `x-kubernetes-validations` rules (with `oldSelf` on updates).
//!
//! On an update the CEL rules of unchanged fields keep their earlier
//! judgement, as kube-apiserver ratchets them ([`rules`]).
//!
//! Errors carry the field path and the reason in the form `kubectl` prints
//! for a 422 response, e.g.
//! `spec.desiredCount: Invalid value: -1: spec.desiredCount in body should be greater than or equal to 0`.

use std::fmt;

use jsonschema::{
    Draft, ValidationError as SchemaError, error::ValidationErrorKind, paths::LocationSegment,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Map, Value};

mod rules;

/// Why a schema could not be turned into a validator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("CustomResourceDefinition {crd} serves no version {version}")]
    NoSuchVersion { crd: String, version: String },
    #[error("CustomResourceDefinition {crd} version {version} has no openAPIV3Schema")]
    NoSchema { crd: String, version: String },
    #[error("invalid openAPIV3Schema: {0}")]
    InvalidSchema(String),
    #[error("invalid x-kubernetes-validations rule: {0}")]
    InvalidRule(String),
}

/// The kinds of field error kube-apiserver reports (`field.ErrorType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldErrorKind {
    Required,
    Invalid,
    TypeInvalid,
    NotSupported,
    Duplicate,
    TooLong,
    TooMany,
    Forbidden,
}

impl FieldErrorKind {
    /// The `reason` of a `StatusCause`.
    #[must_use]
    pub fn reason(self) -> &'static str {
        match self {
            Self::Required => "FieldValueRequired",
            Self::Invalid => "FieldValueInvalid",
            Self::TypeInvalid => "FieldValueTypeInvalid",
            Self::NotSupported => "FieldValueNotSupported",
            Self::Duplicate => "FieldValueDuplicate",
            Self::TooLong => "FieldValueTooLong",
            Self::TooMany => "FieldValueTooMany",
            Self::Forbidden => "FieldValueForbidden",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Required => "Required value",
            Self::Invalid | Self::TypeInvalid => "Invalid value",
            Self::NotSupported => "Unsupported value",
            Self::Duplicate => "Duplicate value",
            Self::TooLong => "Too long",
            Self::TooMany => "Too many",
            Self::Forbidden => "Forbidden",
        }
    }

    fn from_cel_reason(reason: Option<&str>) -> Self {
        match reason {
            Some("FieldValueRequired") => Self::Required,
            Some("FieldValueForbidden") => Self::Forbidden,
            Some("FieldValueDuplicate") => Self::Duplicate,
            _ => Self::Invalid,
        }
    }
}

/// One rejected field: where, what kind of problem, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    /// Path in kubectl's notation: `spec.containerDefinitions[0].name`.
    pub field: String,
    pub kind: FieldErrorKind,
    /// The offending value, where kube-apiserver would print one.
    pub value: Option<Value>,
    pub detail: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.kind.label())?;
        if let Some(value) = &self.value {
            write!(f, ": {}", render_value(value))?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// Every problem found in one object; never empty.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldErrors(pub Vec<FieldError>);

impl FieldErrors {
    /// Whether any error names exactly `field`.
    #[must_use]
    pub fn names(&self, field: &str) -> bool {
        self.0.iter().any(|e| e.field == field)
    }
}

impl fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        write!(f, "[{}]", parts.join(", "))
    }
}

impl std::error::Error for FieldErrors {}

/// A compiled validator for one version of one CRD.
pub struct SchemaValidator {
    schema: Value,
    structural: jsonschema::Validator,
    rules: rules::Node,
}

impl fmt::Debug for SchemaValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchemaValidator").finish_non_exhaustive()
    }
}

impl SchemaValidator {
    /// Compile the `openAPIV3Schema` of a CRD version.
    ///
    /// # Errors
    /// When the schema is not a valid JSON schema or a CEL rule does not
    /// compile.
    pub fn new(open_api_v3_schema: &Value) -> Result<Self, Error> {
        let structural = jsonschema::options()
            .with_draft(Draft::Draft4)
            .should_validate_formats(false)
            .build(&nullable_as_type(open_api_v3_schema))
            .map_err(|e| Error::InvalidSchema(e.to_string()))?;
        Ok(Self {
            schema: open_api_v3_schema.clone(),
            structural,
            rules: rules::Node::new(open_api_v3_schema)?,
        })
    }

    /// The validator for `version` of `crd`.
    ///
    /// # Errors
    /// When the CRD has no such version, no schema, or a bad one.
    pub fn for_crd(crd: &CustomResourceDefinition, version: &str) -> Result<Self, Error> {
        let crd_name = crd.metadata.name.clone().unwrap_or_default();
        let served = crd
            .spec
            .versions
            .iter()
            .find(|v| v.name == version)
            .ok_or_else(|| Error::NoSuchVersion {
                crd: crd_name.clone(),
                version: version.to_owned(),
            })?;
        let schema = served
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .ok_or_else(|| Error::NoSchema {
                crd: crd_name,
                version: version.to_owned(),
            })?;
        let schema =
            serde_json::to_value(schema).map_err(|e| Error::InvalidSchema(e.to_string()))?;
        Self::new(&schema)
    }

    /// The `openAPIV3Schema` this validator checks against.
    #[must_use]
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// Remove the fields the schema does not declare, as kube-apiserver
    /// prunes custom resources, and return their paths
    /// (`spec.containerDefinitions[0].colour`). `apiVersion`, `kind` and
    /// `metadata` at the root are always kept.
    pub fn prune(&self, object: &mut Value) -> Vec<String> {
        let mut pruned = Vec::new();
        prune(&self.schema, object, &mut String::new(), &mut pruned, true);
        pruned
    }

    /// `object` with the schema's defaults filled in, as the server stores it.
    #[must_use]
    pub fn default(&self, object: &Value) -> Value {
        with_defaults(&self.schema, object)
    }

    /// Validate `object` (a create, or an update of `old`), defaults
    /// applied first.
    ///
    /// # Errors
    /// Every field that breaks the schema, its list types or its CEL rules.
    pub fn validate(&self, object: &Value, old: Option<&Value>) -> Result<(), FieldErrors> {
        let defaulted = self.default(object);
        let mut errors: Vec<FieldError> = self
            .structural
            .iter_errors(&defaulted)
            .map(|e| from_schema_error(&e))
            .collect();
        check_list_types(&self.schema, &defaulted, &mut String::new(), &mut errors);
        // CEL rules assume a structurally valid object, as the server's do,
        // and see no null value (a structurally valid one is only left on a
        // nullable field, which is not defaulted). The stored object is
        // defaulted as kube-apiserver defaults what it reads from storage.
        if errors.is_empty() && self.rules.has_rules() {
            let old = old.map(|old| without_nulls(&self.default(old)));
            let object = without_nulls(&defaulted);
            self.rules
                .judge(&object, old.as_ref(), true, "", &mut errors);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(FieldErrors(errors))
        }
    }
}

/// The longest object name kube-apiserver accepts (a DNS-1123 subdomain).
const MAX_NAME_LEN: usize = 253;

/// The checks kube-apiserver makes on `metadata.name` of every object:
/// present (or `generateName` given) and a DNS-1123 subdomain.
#[must_use]
pub fn validate_object_name(object: &Value) -> Vec<FieldError> {
    let metadata = object.get("metadata");
    let name = metadata.and_then(|m| m.get("name")).and_then(Value::as_str);
    let generate_name = metadata
        .and_then(|m| m.get("generateName"))
        .and_then(Value::as_str);
    match name {
        None if generate_name.is_some() => vec![],
        None | Some("") => vec![FieldError {
            field: "metadata.name".into(),
            kind: FieldErrorKind::Required,
            value: None,
            detail: "name or generateName is required".into(),
        }],
        Some(name) if !is_dns1123_subdomain(name) => vec![FieldError {
            field: "metadata.name".into(),
            kind: FieldErrorKind::Invalid,
            value: Some(Value::from(name)),
            detail: "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
                     characters, '-' or '.', and must start and end with an alphanumeric character"
                .into(),
        }],
        Some(_) => vec![],
    }
}

fn is_dns1123_subdomain(name: &str) -> bool {
    name.len() <= MAX_NAME_LEN
        && name.split('.').all(|label| {
            let bytes = label.as_bytes();
            !bytes.is_empty()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
                && bytes[0] != b'-'
                && bytes[bytes.len() - 1] != b'-'
        })
}

fn prune(
    schema: &Value,
    value: &mut Value,
    path: &mut String,
    pruned: &mut Vec<String>,
    root: bool,
) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    match value {
        Value::Object(fields) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|s| s.is_object());
            if properties.is_none() && additional.is_none() {
                // An object without declared fields (metadata, maps of
                // anything) is kept as it is.
                return;
            }
            let names: Vec<String> = fields.keys().cloned().collect();
            for name in names {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&name);
                match properties.and_then(|p| p.get(&name)).or(additional) {
                    Some(child) => {
                        if let Some(field) = fields.get_mut(&name) {
                            prune(child, field, path, pruned, false);
                        }
                    }
                    None if root && matches!(name.as_str(), "apiVersion" | "kind" | "metadata") => {
                    }
                    None => {
                        fields.remove(&name);
                        pruned.push(path.clone());
                    }
                }
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            let item_schema = schema.get("items").unwrap_or(&Value::Null);
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                prune(item_schema, item, path, pruned, false);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// `value` with the `default` of each declared property it lacks, at every
/// level the schema declares (a present null is kept, and a default is
/// taken as it is written), in one pass: kube-cel's `apply_defaults`, with
/// the same rules, copies each subtree once per level above it, and
/// defaulting was a sixth of an update's cost (docs/scale.md).
fn with_defaults(schema: &Value, value: &Value) -> Value {
    match value {
        Value::Object(fields) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let preserve = schema
                .get("x-kubernetes-preserve-unknown-fields")
                .and_then(Value::as_bool)
                == Some(true);
            let additional = schema
                .get("additionalProperties")
                .filter(|a| a.is_object() && !preserve);
            if properties.is_none_or(Map::is_empty) && additional.is_none() {
                return value.clone();
            }
            let mut out: Map<String, Value> = fields
                .iter()
                .map(|(k, v)| {
                    let below = properties.and_then(|p| p.get(k)).or(additional);
                    let v = below.map_or_else(|| v.clone(), |s| with_defaults(s, v));
                    (k.clone(), v)
                })
                .collect();
            for (k, property) in properties.into_iter().flatten() {
                if let Some(default) = property.get("default")
                    && !out.contains_key(k)
                {
                    out.insert(k.clone(), default.clone());
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => match schema.get("items") {
            Some(below) => Value::Array(items.iter().map(|i| with_defaults(below, i)).collect()),
            None => value.clone(),
        },
        other => other.clone(),
    }
}

/// `value` without null-valued fields: kube-apiserver evaluates no rule on a
/// null value, and kube-cel would.
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// OpenAPI's `nullable: true` in JSON Schema terms: `null` joins the type.
fn nullable_as_type(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out: Map<String, Value> = map
                .iter()
                .map(|(k, v)| (k.clone(), nullable_as_type(v)))
                .collect();
            if map.get("nullable") == Some(&Value::Bool(true))
                && let Some(Value::String(ty)) = map.get("type")
            {
                out.insert("type".into(), serde_json::json!([ty, "null"]));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(nullable_as_type).collect()),
        other => other.clone(),
    }
}

/// `spec.containers[0].name` from a JSON pointer location.
fn field_path<'a>(segments: impl Iterator<Item = LocationSegment<'a>>) -> String {
    let mut path = String::new();
    for segment in segments {
        match segment {
            LocationSegment::Index(i) => path.push_str(&format!("[{i}]")),
            LocationSegment::Property(name) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&name);
            }
        }
    }
    path
}

fn from_schema_error(err: &SchemaError<'_>) -> FieldError {
    let path = field_path(err.instance_path().iter());
    let value = Some(err.instance().clone().into_owned());
    let in_body = |what: String| format!("{path} in body {what}");
    let (field, kind, value, detail) = match err.kind() {
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            let field = if path.is_empty() {
                name.to_owned()
            } else {
                format!("{path}.{name}")
            };
            (field, FieldErrorKind::Required, None, String::new())
        }
        ValidationErrorKind::Type { kind } => {
            let expected = format!("{kind:?}").to_lowercase();
            let actual = value.as_ref().map(json_type).unwrap_or("null");
            let detail = in_body(format!(
                "must be of type {}: \"{actual}\"",
                type_name(&expected)
            ));
            (path, FieldErrorKind::TypeInvalid, value, detail)
        }
        ValidationErrorKind::Enum { options } => {
            let supported: Vec<String> = options
                .as_array()
                .map(|o| o.iter().map(render_value).collect())
                .unwrap_or_default();
            let detail = format!("supported values: {}", supported.join(", "));
            (path, FieldErrorKind::NotSupported, value, detail)
        }
        ValidationErrorKind::Minimum { limit } => {
            let detail = in_body(format!(
                "should be greater than or equal to {}",
                number(limit)
            ));
            (path, FieldErrorKind::Invalid, value, detail)
        }
        ValidationErrorKind::Maximum { limit } => {
            let detail = in_body(format!("should be less than or equal to {}", number(limit)));
            (path, FieldErrorKind::Invalid, value, detail)
        }
        ValidationErrorKind::ExclusiveMinimum { limit } => {
            let detail = in_body(format!("should be greater than {}", number(limit)));
            (path, FieldErrorKind::Invalid, value, detail)
        }
        ValidationErrorKind::ExclusiveMaximum { limit } => {
            let detail = in_body(format!("should be less than {}", number(limit)));
            (path, FieldErrorKind::Invalid, value, detail)
        }
        ValidationErrorKind::MinLength { limit } => {
            let detail = in_body(format!("should be at least {limit} chars long"));
            (path, FieldErrorKind::Invalid, value, detail)
        }
        ValidationErrorKind::MaxLength { limit } => {
            let detail = format!("may not be more than {limit} bytes");
            (path, FieldErrorKind::TooLong, None, detail)
        }
        ValidationErrorKind::Pattern { pattern } => {
            let detail = in_body(format!("should match '{pattern}'"));
            (path, FieldErrorKind::Invalid, value, detail)
        }
        ValidationErrorKind::MinItems { limit } => {
            let detail = in_body(format!("should have at least {limit} items"));
            (path, FieldErrorKind::Invalid, None, detail)
        }
        ValidationErrorKind::MaxItems { limit } | ValidationErrorKind::MaxProperties { limit } => {
            let count = value.as_ref().map_or(0, |v| match v {
                Value::Array(a) => a.len(),
                Value::Object(o) => o.len(),
                _ => 0,
            });
            let detail = format!("must have at most {limit} items");
            (
                path,
                FieldErrorKind::TooMany,
                Some(Value::from(count)),
                detail,
            )
        }
        ValidationErrorKind::MinProperties { limit } => {
            let detail = in_body(format!("should have at least {limit} properties"));
            (path, FieldErrorKind::Invalid, None, detail)
        }
        _ => (path, FieldErrorKind::Invalid, value, err.to_string()),
    };
    FieldError {
        field,
        kind,
        value,
        detail,
    }
}

/// Uniqueness that `x-kubernetes-list-type: map | set` promises and JSON
/// Schema cannot express: map keys and set items may appear once.
fn check_list_types(
    schema: &Value,
    value: &Value,
    path: &mut String,
    errors: &mut Vec<FieldError>,
) {
    match value {
        Value::Object(fields) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|s| s.is_object());
            for (name, child) in fields {
                let Some(child_schema) = properties.and_then(|p| p.get(name)).or(additional) else {
                    continue;
                };
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(name);
                check_list_types(child_schema, child, path, errors);
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            let list_type = schema.get("x-kubernetes-list-type").and_then(Value::as_str);
            let keys: Vec<&str> = schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|k| k.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let identity = |item: &Value| -> Value {
                match list_type {
                    Some("map") => Value::Object(
                        keys.iter()
                            .map(|k| {
                                (
                                    (*k).to_owned(),
                                    item.get(*k).cloned().unwrap_or(Value::Null),
                                )
                            })
                            .collect(),
                    ),
                    _ => item.clone(),
                }
            };
            let item_schema = schema.get("items").unwrap_or(&Value::Null);
            let mut seen: Vec<Value> = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                if matches!(list_type, Some("map" | "set")) {
                    let id = identity(item);
                    if seen.contains(&id) {
                        errors.push(FieldError {
                            field: path.clone(),
                            kind: FieldErrorKind::Duplicate,
                            value: Some(id),
                            detail: String::new(),
                        });
                    } else {
                        seen.push(id);
                    }
                }
                check_list_types(item_schema, item, path, errors);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// jsonschema prints a type set as `Multiple(..)`; keep the first name.
fn type_name(debug: &str) -> &str {
    debug
        .trim_start_matches("single(")
        .trim_end_matches(')')
        .split(|c: char| !c.is_ascii_alphabetic())
        .find(|s| !s.is_empty() && *s != "multiple")
        .unwrap_or(debug)
}

/// `0` rather than `0.0` for the integral limits a schema carries.
fn number(limit: &Value) -> String {
    match limit.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        _ => limit.to_string(),
    }
}

/// A value as kube-apiserver quotes it in messages, cut to a readable size.
fn render_value(value: &Value) -> String {
    const MAX: usize = 120;
    let text = value.to_string();
    if text.len() <= MAX {
        return text;
    }
    let cut = (0..=MAX)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    format!("{}...", &text[..cut])
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn validator() -> SchemaValidator {
        SchemaValidator::new(&json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["items"],
                    "properties": {
                        "count": {"type": "integer", "minimum": 0, "maximum": 5},
                        "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
                        "note": {"type": "string", "nullable": true, "maxLength": 3},
                        "items": {
                            "type": "array",
                            "maxItems": 3,
                            "x-kubernetes-list-type": "map",
                            "x-kubernetes-list-map-keys": ["name"],
                            "items": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {"name": {"type": "string", "pattern": "^[a-z]+$"}}
                            }
                        }
                    },
                    "x-kubernetes-validations": [
                        {"rule": "self.mode != 'b' || has(self.count)", "message": "mode b needs count", "fieldPath": ".count"}
                    ]
                }
            }
        }))
        .expect("schema compiles")
    }

    fn errors(object: Value) -> Vec<String> {
        match validator().validate(&object, None) {
            Ok(()) => vec![],
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn accepts_a_valid_object_with_nulls_where_nullable() {
        assert!(errors(json!({"spec": {"items": [{"name": "x"}], "note": null}})).is_empty());
    }

    #[test]
    fn reports_kubectl_style_paths_and_reasons() {
        let errs = errors(
            json!({"spec": {"count": -1, "mode": "c", "items": [{"name": "X"}], "note": "long"}}),
        );
        assert!(errs.contains(&"spec.count: Invalid value: -1: spec.count in body should be greater than or equal to 0".to_owned()), "{errs:?}");
        assert!(
            errs.contains(
                &r#"spec.mode: Unsupported value: "c": supported values: "a", "b""#.to_owned()
            ),
            "{errs:?}"
        );
        assert!(errs.contains(&r#"spec.items[0].name: Invalid value: "X": spec.items[0].name in body should match '^[a-z]+$'"#.to_owned()), "{errs:?}");
        assert!(
            errs.contains(&"spec.note: Too long: may not be more than 3 bytes".to_owned()),
            "{errs:?}"
        );
    }

    #[test]
    fn evaluates_no_rule_on_a_null_value() {
        let v = SchemaValidator::new(&json!({
            "type": "object",
            "properties": {"check": {
                "type": "object", "nullable": true,
                "properties": {"command": {"type": "array", "items": {"type": "string"}}},
                "x-kubernetes-validations": [{"rule": "self.command[0] == 'CMD'", "message": "m"}]
            }}
        }))
        .expect("compiles");
        v.validate(&json!({"check": null}), None)
            .expect("no rule runs on null");
        assert!(
            v.validate(&json!({"check": {"command": ["X"]}}), None)
                .is_err()
        );
    }

    #[test]
    fn reports_missing_required_fields_by_their_own_path() {
        assert_eq!(
            errors(json!({"spec": {}})),
            vec!["spec.items: Required value"]
        );
    }

    #[test]
    fn reports_type_errors_and_too_many_items() {
        let errs = errors(
            json!({"spec": {"count": "x", "items": [{"name": "a"}, {"name": "b"}, {"name": "c"}, {"name": "d"}]}}),
        );
        assert!(errs.contains(&r#"spec.count: Invalid value: "x": spec.count in body must be of type integer: "string""#.to_owned()), "{errs:?}");
        assert!(
            errs.contains(&"spec.items: Too many: 4: must have at most 3 items".to_owned()),
            "{errs:?}"
        );
    }

    #[test]
    fn rejects_duplicate_list_map_keys() {
        let errs = errors(json!({"spec": {"items": [{"name": "a"}, {"name": "a"}]}}));
        assert_eq!(
            errs,
            vec![r#"spec.items[1]: Duplicate value: {"name":"a"}"#]
        );
    }

    #[test]
    fn runs_cel_rules_after_defaulting() {
        assert!(
            errors(json!({"spec": {"items": []}})).is_empty(),
            "mode defaults to a"
        );
        let errs = errors(json!({"spec": {"items": [], "mode": "b"}}));
        assert_eq!(errs, vec!["spec.count: Invalid value: mode b needs count"]);
    }

    #[test]
    fn defaults_are_filled_in_as_kube_cel_fills_them() {
        let schema = json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "properties": {
                        "mode": {"type": "string", "default": "a"},
                        "limits": {"type": "object", "default": {"cpu": 1},
                                   "properties": {"cpu": {"type": "integer"}, "memory": {"type": "integer", "default": 2}}},
                        "items": {"type": "array", "items": {"type": "object",
                                  "properties": {"port": {"type": "integer", "default": 80}}}},
                        "labels": {"type": "object", "additionalProperties": {"type": "object",
                                   "properties": {"weight": {"type": "integer", "default": 1}}}},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                                 "additionalProperties": {"type": "object",
                                   "properties": {"weight": {"type": "integer", "default": 1}}}},
                    },
                },
            },
        });
        for object in [
            json!({"spec": {}}),
            json!({"spec": {"mode": null, "limits": {}, "items": [{}, {"port": 8080}], "labels": {"x": {}}, "free": {"y": {}}}}),
            json!({"spec": {"mode": "b", "items": "not a list", "other": {"z": 1}}, "status": {"n": 1}}),
        ] {
            let filled = with_defaults(&schema, &object);
            assert_eq!(
                filled,
                kube::core::cel::apply_defaults(&schema, &object),
                "{object}"
            );
            assert_ne!(filled, object, "something was defaulted in {object}");
        }
    }

    #[test]
    fn an_update_leaves_unchanged_fields_to_their_earlier_judgement() {
        let v = SchemaValidator::new(&json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "properties": {"count": {"type": "integer"}},
                    "x-kubernetes-validations": [{"rule": "self.count < 10"}],
                },
                "limits": {
                    "type": "object",
                    "properties": {"floor": {"type": "integer"}},
                    "x-kubernetes-validations": [
                        {"rule": "self.floor >= oldSelf.floor", "message": "floor only rises"},
                        {"rule": "self.floor != 7", "message": "not 7"},
                    ],
                },
                "status": {"type": "object", "properties": {"seen": {"type": "integer"}}},
            },
        }))
        .expect("compiles");
        let messages = |object: Value, old: Option<Value>| match v.validate(&object, old.as_ref()) {
            Ok(()) => Vec::new(),
            Err(FieldErrors(errors)) => errors.into_iter().map(|e| e.detail).collect(),
        };
        // Stored before the rule: a status write leaves it be, as
        // kube-apiserver's ratcheting does; a change to it is judged.
        let old = json!({"spec": {"count": 12}, "limits": {"floor": 3}, "status": {"seen": 1}});
        assert!(
            messages(
                json!({"spec": {"count": 12}, "limits": {"floor": 3}, "status": {"seen": 2}}),
                Some(old.clone())
            )
            .is_empty()
        );
        assert_eq!(
            messages(
                json!({"spec": {"count": 11}, "limits": {"floor": 3}}),
                Some(old.clone())
            ),
            vec!["failed rule: self.count < 10"]
        );
        // A create is judged whole.
        assert_eq!(messages(old.clone(), None).len(), 1);
        // A field with a rule on oldSelf is judged on every update: its
        // plain rules too.
        assert_eq!(
            messages(
                json!({"spec": {"count": 1}, "limits": {"floor": 5}}),
                Some(json!({"spec": {"count": 1}, "limits": {"floor": 6}}))
            ),
            vec!["floor only rises"]
        );
        assert_eq!(
            messages(
                json!({"spec": {"count": 1}, "limits": {"floor": 7}}),
                Some(json!({"spec": {"count": 1}, "limits": {"floor": 7}}))
            ),
            vec!["not 7"]
        );
    }

    #[test]
    fn checks_object_names_like_the_api_server() {
        let named = |name: &str| json!({"metadata": {"name": name}});
        assert!(validate_object_name(&named("web-1.example")).is_empty());
        assert!(validate_object_name(&json!({"metadata": {"generateName": "web-"}})).is_empty());
        for bad in ["Web", "-web", "web-", "a..b", "web_1", &"a".repeat(254)] {
            let errs = validate_object_name(&named(bad));
            assert_eq!(errs.len(), 1, "{bad}");
            assert_eq!(errs[0].field, "metadata.name");
        }
        let errs = validate_object_name(&json!({"metadata": {}}));
        assert_eq!(errs[0].kind, FieldErrorKind::Required);
    }

    #[test]
    fn prunes_undeclared_fields_and_names_them() {
        let mut object = json!({
            "apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a", "anything": 1},
            "spec": {"items": [{"name": "a", "colour": "red"}], "extra": true},
            "unknown": 1
        });
        let pruned = validator().prune(&mut object);
        assert_eq!(pruned, ["spec.extra", "spec.items[0].colour", "unknown"]);
        assert_eq!(
            object,
            json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a", "anything": 1}, "spec": {"items": [{"name": "a"}]}})
        );
    }

    #[test]
    fn refuses_a_rule_that_does_not_compile() {
        let bad = json!({"type": "object", "x-kubernetes-validations": [{"rule": "self.a ==", "message": "m"}]});
        assert!(matches!(
            SchemaValidator::new(&bad),
            Err(Error::InvalidRule(_))
        ));
    }
}
