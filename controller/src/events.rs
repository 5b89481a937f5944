//! Events (`events.k8s.io/v1`) about Gantry's objects, and status
//! conditions.
//!
//! Callers publish an event when something changes, never on every
//! reconcile, so no series bookkeeping is needed; each event keeps its own
//! note (kube-runtime's `Recorder` would fold a changed note into the
//! first one's series).

use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time},
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

/// The condition of `type_` in `conditions`, if any.
#[must_use]
pub fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Set a condition, keeping its lastTransitionTime when its status stays.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = if status { "True" } else { "False" }.to_owned();
    let previous = conditions.iter().position(|c| c.type_ == type_);
    let last_transition_time = match previous.map(|i| &conditions[i]) {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(now),
    };
    let next = Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time,
    };
    match previous {
        Some(i) => conditions[i] = next,
        None => conditions.push(next),
    }
}

/// Whether `object`'s condition `type_` is True.
#[must_use]
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    condition(conditions, type_).is_some_and(|c| c.status == "True")
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
    fn a_condition_keeps_its_transition_time_while_its_status_stays() {
        let t0 = Timestamp::from_second(1_000).expect("a time");
        let t1 = Timestamp::from_second(2_000).expect("a time");
        let mut conditions = Vec::new();
        set_condition(&mut conditions, "Ready", false, "Pending", "a", Some(1), t0);
        set_condition(&mut conditions, "Ready", false, "Pending", "b", Some(2), t1);
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, Time(t0));
        assert_eq!(conditions[0].message, "b");
        set_condition(
            &mut conditions,
            "Ready",
            true,
            "SteadyState",
            "c",
            Some(2),
            t1,
        );
        assert_eq!(conditions[0].last_transition_time, Time(t1));
        assert!(is_true(&conditions, "Ready"));
        assert_eq!(truncate("ééé", 3), "é");
    }
}
