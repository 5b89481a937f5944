//! Resources that are another resource's objects in another shape.
//! `events.k8s.io/v1` Events are core `v1` Events, as in kube-apiserver:
//! one stored object, two shapes, so an Event written through either
//! group is read through both (`kubectl describe` and `kubectl events`
//! read core Events; controllers write `events.k8s.io` ones). The shapes
//! differ only in the names of top-level fields, so requests are turned
//! into the stored shape here and answers back, and the object layer
//! sees one resource.

use std::{borrow::Cow, collections::HashMap};

use serde_json::{Map, Value};

use crate::server::registry::Resource;

/// `events.k8s.io/v1` names, and the core `v1` names they are stored
/// under.
const EVENT_FIELDS: [(&str, &str); 7] = [
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("deprecatedSource", "source"),
    ("reportingController", "reportingComponent"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// The shape a request reads and writes objects in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum View {
    /// As stored.
    Stored,
    /// `events.k8s.io/v1` Events over core Events.
    EventsV1,
}

impl View {
    /// The view a resource is, and the resource it is stored as (group,
    /// version, plural).
    pub(crate) fn of(
        resource: &Resource,
    ) -> (Self, Option<(&'static str, &'static str, &'static str)>) {
        if resource.group == "events.k8s.io" && resource.plural == "events" {
            (Self::EventsV1, Some(("", "v1", "events")))
        } else {
            (Self::Stored, None)
        }
    }

    fn names(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::Stored => &[],
            Self::EventsV1 => &EVENT_FIELDS,
        }
    }

    /// `apiVersion` of the objects in this view, if it differs.
    fn api_version(self) -> Option<&'static str> {
        match self {
            Self::Stored => None,
            Self::EventsV1 => Some("events.k8s.io/v1"),
        }
    }

    /// The object with its top-level fields renamed: from this view's
    /// names to the stored ones, or back.
    fn renamed(self, object: Value, to_stored: bool) -> Value {
        let Value::Object(map) = object else {
            return object;
        };
        let rename = |key: String| {
            let found = self
                .names()
                .iter()
                .find(|(shown, stored)| key == if to_stored { *shown } else { *stored });
            match found {
                Some((shown, stored)) => (if to_stored { *stored } else { *shown }).to_owned(),
                None => key,
            }
        };
        Value::Object(
            map.into_iter()
                .map(|(k, v)| (rename(k), v))
                .collect::<Map<_, _>>(),
        )
    }

    /// An object (or a merge patch, or an applied configuration) sent in
    /// this view, in the stored shape.
    pub(crate) fn to_stored(self, object: Value) -> Value {
        let Some(api_version) = self.api_version() else {
            return object;
        };
        let mut out = self.renamed(object, true);
        if out.get("apiVersion").and_then(Value::as_str) == Some(api_version) {
            out["apiVersion"] = Value::String("v1".into());
        }
        out
    }

    /// A stored object as this view shows it: itself, unless the view
    /// renames its fields.
    pub(crate) fn shown(self, object: &Value) -> Cow<'_, Value> {
        let Some(api_version) = self.api_version() else {
            return Cow::Borrowed(object);
        };
        let mut out = self.renamed(object.clone(), false);
        if out.is_object() {
            out["apiVersion"] = Value::String(api_version.into());
        }
        Cow::Owned(out)
    }

    /// A JSON patch sent in this view, its paths in the stored shape.
    pub(crate) fn json_patch_to_stored(self, mut patch: Value) -> Value {
        for op in patch.as_array_mut().into_iter().flatten() {
            for field in ["path", "from"] {
                if let Some(path) = op.get(field).and_then(Value::as_str) {
                    let stored = self.path_to_stored(path, '/');
                    op[field] = Value::String(stored);
                }
            }
        }
        patch
    }

    /// A query whose field selector names fields in this view, naming
    /// them as stored.
    pub(crate) fn query<'a>(
        self,
        query: &'a HashMap<String, String>,
    ) -> Cow<'a, HashMap<String, String>> {
        let Some(selector) = query.get("fieldSelector").filter(|_| self != Self::Stored) else {
            return Cow::Borrowed(query);
        };
        let stored = selector
            .split(',')
            .map(|requirement| self.path_to_stored(requirement, '.'))
            .collect::<Vec<_>>()
            .join(",");
        let mut query = query.clone();
        query.insert("fieldSelector".into(), stored);
        Cow::Owned(query)
    }

    /// `path` (a JSON pointer when `separator` is '/', a field path when
    /// '.') with its first field named as stored.
    fn path_to_stored(self, path: &str, separator: char) -> String {
        let (lead, rest) = match path.strip_prefix(separator) {
            Some(rest) if separator == '/' => ("/", rest),
            _ => ("", path),
        };
        let end = rest
            .find(|c: char| c == separator || !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let (first, tail) = rest.split_at(end);
        let first = self
            .names()
            .iter()
            .find(|(shown, _)| *shown == first)
            .map_or(first, |(_, stored)| stored);
        format!("{lead}{first}{tail}")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_events_v1_event_is_a_core_event_with_other_names() {
        let shown = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "web.1"},
            "regarding": {"kind": "Service", "name": "web"},
            "note": "started", "reason": "TasksStarted", "reportingController": "gantry",
            "eventTime": "2026-12-02T00:00:00.000000Z", "deprecatedCount": 2,
        });
        let stored = View::EventsV1.to_stored(shown.clone());
        assert_eq!(
            stored,
            json!({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": "web.1"},
                "involvedObject": {"kind": "Service", "name": "web"},
                "message": "started", "reason": "TasksStarted", "reportingComponent": "gantry",
                "eventTime": "2026-12-02T00:00:00.000000Z", "count": 2,
            })
        );
        assert_eq!(View::EventsV1.shown(&stored).into_owned(), shown);
        assert!(matches!(View::Stored.shown(&stored), Cow::Borrowed(s) if *s == stored));
    }

    #[test]
    fn patches_and_field_selectors_name_the_stored_fields() {
        let patch = json!([
            {"op": "replace", "path": "/note", "value": "x"},
            {"op": "copy", "from": "/regarding/name", "path": "/related/name"},
        ]);
        assert_eq!(
            View::EventsV1.json_patch_to_stored(patch),
            json!([
                {"op": "replace", "path": "/message", "value": "x"},
                {"op": "copy", "from": "/involvedObject/name", "path": "/related/name"},
            ])
        );
        let query = HashMap::from([(
            "fieldSelector".to_owned(),
            "regarding.name=web,reason!=x,note=a.b".to_owned(),
        )]);
        assert_eq!(
            View::EventsV1.query(&query)["fieldSelector"],
            "involvedObject.name=web,reason!=x,message=a.b"
        );
        assert!(matches!(View::Stored.query(&query), Cow::Borrowed(_)));
    }
}
