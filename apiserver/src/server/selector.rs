//! Label and field selectors of list and watch requests.

use std::collections::HashMap;

use serde_json::Value;

use super::status::ApiError;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// Every requirement of `labelSelector` and `fieldSelector`.
#[derive(Clone, Debug, Default)]
pub(super) struct Selector {
    labels: Vec<Requirement>,
    fields: Vec<Requirement>,
}

impl Selector {
    pub(super) fn from_query(query: &HashMap<String, String>) -> Result<Self, ApiError> {
        let parse = |name: &str| -> Result<Vec<Requirement>, ApiError> {
            match query.get(name).filter(|s| !s.trim().is_empty()) {
                Some(text) => parse(text)
                    .map_err(|e| ApiError::BadRequest(format!("unable to parse requirement: {e}"))),
                None => Ok(vec![]),
            }
        };
        Ok(Self {
            labels: parse("labelSelector")?,
            fields: parse("fieldSelector")?,
        })
    }

    /// The selectors of a list, watch or delete-collection of a
    /// resource, refusing field selectors it cannot be selected by.
    pub(super) fn for_resource(
        query: &HashMap<String, String>,
        custom: bool,
    ) -> Result<Self, ApiError> {
        let selector = Self::from_query(query)?;
        selector.check_fields(custom)?;
        Ok(selector)
    }

    /// Refuse a field selector naming a field the resource cannot be
    /// selected by: a custom resource only by `metadata.name` and
    /// `metadata.namespace`, as kube-apiserver allows (built-in kinds are
    /// left free).
    fn check_fields(&self, custom: bool) -> Result<(), ApiError> {
        if !custom {
            return Ok(());
        }
        for requirement in &self.fields {
            let key = match requirement {
                Requirement::Equals(k, _)
                | Requirement::NotEquals(k, _)
                | Requirement::In(k, _)
                | Requirement::NotIn(k, _)
                | Requirement::Exists(k)
                | Requirement::DoesNotExist(k) => k,
            };
            if !matches!(key.as_str(), "metadata.name" | "metadata.namespace") {
                return Err(ApiError::BadRequest(format!(
                    "field label not supported: {key}"
                )));
            }
        }
        Ok(())
    }

    pub(super) fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        let label = |key: &str| {
            labels
                .and_then(|l| l.get(key))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        // A field is a dotted path into the object: metadata.name,
        // involvedObject.uid, spec.containerInstance.
        let field = |path: &str| {
            path.split('.')
                .try_fold(object, |v, part| v.get(part))
                .and_then(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Null => None,
                    other => Some(other.to_string()),
                })
        };
        self.labels.iter().all(|r| holds(r, &label)) && self.fields.iter().all(|r| holds(r, &field))
    }
}

fn holds(requirement: &Requirement, value_of: &dyn Fn(&str) -> Option<String>) -> bool {
    match requirement {
        Requirement::Equals(k, v) => value_of(k).as_deref() == Some(v),
        // Kubernetes: `a!=b` also selects objects without `a`.
        Requirement::NotEquals(k, v) => value_of(k).as_deref() != Some(v),
        Requirement::In(k, vs) => value_of(k).is_some_and(|x| vs.contains(&x)),
        Requirement::NotIn(k, vs) => value_of(k).is_none_or(|x| !vs.contains(&x)),
        Requirement::Exists(k) => value_of(k).is_some(),
        Requirement::DoesNotExist(k) => value_of(k).is_none(),
    }
}

/// Requirements separated by commas outside parentheses.
fn parse(text: &str) -> Result<Vec<Requirement>, String> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts.into_iter().map(|p| requirement(p.trim())).collect()
}

fn requirement(text: &str) -> Result<Requirement, String> {
    let word = |s: &str| -> Result<String, String> {
        let s = s.trim();
        if s.is_empty() || s.contains(char::is_whitespace) {
            Err(format!("{text:?}: expected a key or value, found {s:?}"))
        } else {
            Ok(s.to_owned())
        }
    };
    let values = |s: &str| -> Result<Vec<String>, String> {
        let inner = s
            .trim()
            .strip_prefix('(')
            .and_then(|s| s.strip_suffix(')'))
            .ok_or_else(|| format!("{text:?}: expected a list of values in parentheses"))?;
        Ok(inner
            .split(',')
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect())
    };
    if let Some(key) = text.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(word(key)?));
    }
    if let Some((k, v)) = text.split_once("!=") {
        return Ok(Requirement::NotEquals(word(k)?, v.trim().to_owned()));
    }
    if let Some((k, v)) = text.split_once("==").or_else(|| text.split_once('=')) {
        return Ok(Requirement::Equals(word(k)?, v.trim().to_owned()));
    }
    if let Some((k, v)) = text.split_once(" notin ") {
        return Ok(Requirement::NotIn(word(k)?, values(v)?));
    }
    if let Some((k, v)) = text.split_once(" in ") {
        return Ok(Requirement::In(word(k)?, values(v)?));
    }
    Ok(Requirement::Exists(word(text)?))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn selects(label_selector: &str, labels: Value) -> bool {
        let query = HashMap::from([("labelSelector".to_owned(), label_selector.to_owned())]);
        Selector::from_query(&query)
            .expect("parses")
            .matches(&json!({"metadata": {"labels": labels}}))
    }

    #[test]
    fn label_selectors_follow_kubernetes() {
        let web = json!({"app": "web", "tier": "front"});
        assert!(selects("app=web", web.clone()));
        assert!(selects("app==web,tier=front", web.clone()));
        assert!(!selects("app=web,tier=back", web.clone()));
        assert!(selects("app!=db", web.clone()));
        assert!(selects("env!=prod", web.clone()), "absent keys pass !=");
        assert!(selects("app in (web, api)", web.clone()));
        assert!(!selects("app notin (web)", web.clone()));
        assert!(selects("tier", web.clone()));
        assert!(selects("!env", web.clone()));
        assert!(!selects("!app", web));
    }

    #[test]
    fn field_selectors_read_dotted_paths() {
        let query = HashMap::from([(
            "fieldSelector".to_owned(),
            "metadata.name=a,involvedObject.kind=Task".to_owned(),
        )]);
        let selector = Selector::from_query(&query).expect("parses");
        assert!(
            selector
                .matches(&json!({"metadata": {"name": "a"}, "involvedObject": {"kind": "Task"}}))
        );
        assert!(
            !selector
                .matches(&json!({"metadata": {"name": "b"}, "involvedObject": {"kind": "Task"}}))
        );
    }

    #[test]
    fn malformed_selectors_are_bad_requests() {
        let query = HashMap::from([("labelSelector".to_owned(), "app in web".to_owned())]);
        assert!(matches!(
            Selector::from_query(&query),
            Err(ApiError::BadRequest(_))
        ));
    }
}
