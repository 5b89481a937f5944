//! Events expire, as on kube-apiserver (`--event-ttl`, an hour by
//! default): an Event not written for the TTL is deleted, so that a
//! long-running control plane does not keep every Event ever recorded.
//! kube-apiserver attaches an etcd lease to each Event write; here a sweep
//! judges each Event by its newest timestamp and deletes it on the
//! revision it judged, so an Event written again meanwhile is kept.
//! Deleting sends watchers a DELETED event, as a lease's expiry does.

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::meta::revision_of;
use crate::server::app::App;

/// Where Events are kept: core and `events.k8s.io` Events alike (stored
/// once, in the core shape).
const EVENTS: &str = "/core/events/";

/// When `event` was last written, as far as its timestamps say.
fn last_written(event: &Value) -> Option<Timestamp> {
    [
        "/metadata/creationTimestamp",
        "/lastTimestamp",
        "/eventTime",
        "/series/lastObservedTime",
    ]
    .iter()
    .filter_map(|pointer| event.pointer(pointer)?.as_str()?.parse::<Timestamp>().ok())
    .chain(
        event
            .pointer("/metadata/managedFields")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|entry| entry.get("time")?.as_str()?.parse().ok()),
    )
    .max()
}

/// Whether `event` has not been written for `ttl` at `now`.
fn expired(event: &Value, ttl: Duration, now: Timestamp) -> bool {
    last_written(event).is_some_and(|written| {
        now.duration_since(written)
            .try_into()
            .is_ok_and(|age: Duration| age >= ttl)
    })
}

/// Sweep Events every quarter of `ttl` (at most every minute) for as long
/// as the server runs.
pub(crate) fn spawn(app: &Arc<App>, ttl: Duration) {
    let app: Weak<App> = Arc::downgrade(app);
    let every = (ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(60));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let Some(app) = app.upgrade() else { return };
            sweep(&app, ttl).await;
        }
    });
}

async fn sweep(app: &App, ttl: Duration) {
    let now = Timestamp::now();
    let (_, events) = app.store.list(EVENTS);
    for event in events.iter().filter(|e| expired(e, ttl, now)) {
        let (Some(namespace), Some(name)) = (
            event.pointer("/metadata/namespace").and_then(Value::as_str),
            event.pointer("/metadata/name").and_then(Value::as_str),
        ) else {
            continue;
        };
        let key = format!("{EVENTS}{namespace}/{name}");
        // On the revision judged: an Event written again since is kept;
        // one deleted meanwhile is gone either way.
        if let Err(e) = app.store.delete(&key, revision_of(event)).await {
            tracing::debug!(%key, error = %e, "an expired Event was not deleted");
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_event_expires_a_ttl_after_its_newest_timestamp() {
        let at = |s: &str| s.parse::<Timestamp>().expect("a time");
        let hour = Duration::from_secs(3600);
        let event = json!({
            "metadata": {"creationTimestamp": "2026-01-01T10:00:00Z"},
            "lastTimestamp": "2026-01-01T10:30:00Z",
        });
        assert!(!expired(&event, hour, at("2026-01-01T11:29:59Z")));
        assert!(expired(&event, hour, at("2026-01-01T11:30:00Z")));
        // An events.k8s.io Event's series moves it on.
        let series = json!({
            "metadata": {"creationTimestamp": "2026-01-01T10:00:00Z"},
            "eventTime": "2026-01-01T10:00:00.000000Z",
            "series": {"count": 4, "lastObservedTime": "2026-01-01T10:50:00.000000Z"},
        });
        assert!(!expired(&series, hour, at("2026-01-01T11:30:00Z")));
        // Nothing to judge by: kept.
        assert!(!expired(
            &json!({"metadata": {}}),
            hour,
            at("2030-01-01T00:00:00Z")
        ));
    }
}
