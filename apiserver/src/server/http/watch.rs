//! Watches: a collection's changes as a stream of newline-delimited
//! `WatchEvent`s, from a revision or from now, with bookmarks, the
//! watch-list end marker, and a 410 when the revision asked for is older
//! than the event log.

use std::{sync::Arc, time::Duration};

use axum::{
    body::{Body, Bytes},
    http::header,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{list::Read, request::is_true, view::View};
use crate::{
    server::{app::App, registry::Resource, selector::Selector, status::ApiError, table},
    storage::{EventKind, Revision, Store, StoreError},
};

pub(super) fn watch(app: &App, read: &Read<'_>) -> Result<Response, ApiError> {
    let query = read.query;
    let selector = read.selector()?;
    let prefix = read.prefix();
    let from = super::request::resource_version(query)?;
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(Duration::from_secs(30 * 60), Duration::from_secs);
    let now = tokio::time::Instant::now();
    let request = WatchRequest {
        // A timeout too large to add is as good as none.
        deadline: now
            .checked_add(timeout)
            .unwrap_or(now + Duration::from_secs(100 * 365 * 24 * 3600)),
        bookmarks: is_true(query.get("allowWatchBookmarks")),
        initial_events: is_true(query.get("sendInitialEvents")),
        selector,
        resource: Arc::clone(&read.target.resource),
        as_table: read.as_table,
        view: read.view,
    };
    let stream = async_watch(app.store.clone(), &prefix, from, request);
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// A watch event line around an object.
fn line(kind: &str, object: &Value) -> Result<Bytes, std::convert::Infallible> {
    let mut bytes =
        serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    bytes.push(b'\n');
    Ok(Bytes::from(bytes))
}

/// A watch event line around an already encoded object.
fn encoded_line(kind: &str, object: &[u8]) -> Result<Bytes, std::convert::Infallible> {
    let mut bytes = Vec::with_capacity(object.len() + 32);
    bytes.extend_from_slice(b"{\"type\":\"");
    bytes.extend_from_slice(kind.as_bytes());
    bytes.extend_from_slice(b"\",\"object\":");
    bytes.extend_from_slice(object);
    bytes.extend_from_slice(b"}\n");
    Ok(Bytes::from(bytes))
}

/// How a watch's events are filtered, shaped and ended.
struct WatchRequest {
    deadline: tokio::time::Instant,
    bookmarks: bool,
    /// Watch-list: after the initial events, a bookmark saying they ended.
    initial_events: bool,
    selector: Selector,
    resource: Arc<Resource>,
    as_table: bool,
    view: View,
}

/// The watch as a stream of newline-delimited `WatchEvent`s.
fn async_watch(
    store: Store,
    prefix: &str,
    from: Option<Revision>,
    request: WatchRequest,
) -> impl futures::Stream<Item = Result<Bytes, std::convert::Infallible>> + use<> {
    let opened = store.watch(prefix, from);
    let request = Arc::new(request);
    let initial = request.initial_events;
    futures::stream::unfold(Some((opened, store, true, initial)), move |state| {
        let request = Arc::clone(&request);
        async move {
            let WatchRequest {
                deadline,
                bookmarks,
                initial_events: _,
                ref selector,
                ref resource,
                as_table,
                view,
            } = *request;
            let (opened, store, first, initial_pending) = state?;
            let mut watch = match opened {
                Ok(watch) => watch,
                Err(e) => {
                    let error = match ApiError::from_store(e, &resource.qualified(), "") {
                        ApiError::TooLargeResourceVersion {
                            requested, current, ..
                        } => ApiError::TooLargeResourceVersion {
                            requested,
                            current,
                            watch: true,
                        },
                        error => error,
                    };
                    return Some((line("ERROR", &error.status()), None));
                }
            };
            let bookmark_every = Duration::from_secs(60);
            loop {
                // Watch-list: once the initial events are out, say so, even
                // when the selector kept the last of them back.
                if initial_pending && watch.pending() == 0 {
                    let end = json!({
                        "apiVersion": resource.api_version(),
                        "kind": resource.kind,
                        "metadata": {
                            "resourceVersion": watch.revision().to_string(),
                            "annotations": {"k8s.io/initial-events-end": "true"},
                        },
                    });
                    return Some((
                        line("BOOKMARK", &view.shown(&end)),
                        Some((Ok(watch), store, first, false)),
                    ));
                }
                let tick = tokio::time::sleep(bookmark_every);
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => return None,
                    () = tick, if bookmarks => {
                        let bookmark = json!({
                            "apiVersion": resource.api_version(),
                            "kind": resource.kind,
                            "metadata": {"resourceVersion": store.revision().to_string()},
                        });
                        return Some((line("BOOKMARK", &view.shown(&bookmark)), Some((Ok(watch), store, first, initial_pending))));
                    }
                    event = watch.next() => match event {
                        None => return None,
                        Some(Err(StoreError::Gone { requested, oldest })) => {
                            let status = ApiError::Gone(format!("too old resource version: {requested} ({oldest})")).status();
                            return Some((line("ERROR", &status), None));
                        }
                        Some(Err(e)) => {
                            let status = ApiError::Internal(e.to_string()).status();
                            return Some((line("ERROR", &status), None));
                        }
                        Some(Ok(event)) if selector.matches(&event.object) => {
                            let kind = match event.kind {
                                EventKind::Added => "ADDED",
                                EventKind::Modified => "MODIFIED",
                                EventKind::Deleted => "DELETED",
                            };
                            let line = if as_table {
                                // Column definitions come with the first event only.
                                let rows = table::table(resource, &[&event.object], &event.revision.to_string(), !first);
                                line(kind, &rows)
                            } else if view == View::Stored {
                                // Every watcher sends the same bytes: encode once.
                                encoded_line(kind, event.object_json())
                            } else {
                                line(kind, &view.shown(&event.object))
                            };
                            return Some((line, Some((Ok(watch), store, false, initial_pending))));
                        }
                        Some(Ok(_)) => {}
                    }
                }
            }
        }
    })
}
