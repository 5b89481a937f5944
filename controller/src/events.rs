//! Events (`events.k8s.io/v1`) about Gantry's objects. (Status
//! conditions are API vocabulary: `crds::conditions`.)
//!
//! Callers publish an event when something changes, never on every
//! reconcile, so no series bookkeeping is needed; each event keeps its own
//! note (kube-runtime's `Recorder` would fold a changed note into the
//! first one's series).

use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ObjectMeta, PostParams},
};

pub const REPORTER: &str = "gantry.dev/controller";

/// Normal or Warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Normal,
    Warning,
}

/// One event to publish about an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub kind: Kind,
    pub reason: &'static str,
    pub message: String,
}

impl Note {
    #[must_use]
    pub fn normal(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind: Kind::Normal,
            reason,
            message: message.into(),
        }
    }

    #[must_use]
    pub fn warning(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind: Kind::Warning,
            reason,
            message: message.into(),
        }
    }
}

/// Publishes events as one reporting instance.
#[derive(Clone)]
#[allow(missing_debug_implementations)] // the kube client is not Debug
pub struct Events {
    client: Client,
    instance: String,
}

impl Events {
    #[must_use]
    pub fn new(client: Client, instance: &str) -> Self {
        Self {
            client,
            instance: instance.to_owned(),
        }
    }

    /// Publish `note` about `object`; a failure is logged, never fatal.
    pub async fn publish<K>(&self, object: &K, note: &Note)
    where
        K: Resource<DynamicType = ()>,
    {
        self.publish_about(&object.object_ref(&()), note).await;
    }

    pub async fn publish_about(&self, regarding: &ObjectReference, note: &Note) {
        let now = Timestamp::now();
        let name = regarding.name.clone().unwrap_or_default();
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{name}.{:x}", now.as_nanosecond())),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            action: Some(note.reason.to_owned()),
            reason: Some(note.reason.to_owned()),
            note: Some(truncate(&note.message, 1024)),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(REPORTER.to_owned()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(
                match note.kind {
                    Kind::Normal => "Normal",
                    Kind::Warning => "Warning",
                }
                .to_owned(),
            ),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            tracing::warn!(error = %e, reason = note.reason, object = %name, "cannot publish an event");
        }
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// `namespace/name` of an object, for logs.
#[must_use]
pub fn key<K: ResourceExt>(object: &K) -> String {
    format!(
        "{}/{}",
        object.namespace().unwrap_or_default(),
        object.name_any()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_note_is_cut_on_a_character_boundary() {
        assert_eq!(truncate("ééé", 3), "é");
        assert_eq!(truncate("abc", 3), "abc");
    }
}
