//! Lists: a selector-filtered read of a collection, optionally paged with
//! `limit` and `continue` tokens, as JSON or as a table for kubectl.

use std::{borrow::Cow, collections::HashMap};

use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};

use super::{response::json_body, view::View};
use crate::{
    server::{
        app::App, objects::Target, objects::meta::meta, selector::Selector, status::ApiError, table,
    },
    storage::Revision,
};

/// Where a chunked list goes on from. Pages after the first are read
/// from the current state (there are no snapshots to read an older one
/// from) but report the first page's revision, so that a watch started
/// from the list replays every change made while it was paged: an object
/// created meanwhile ahead of the cursor is missed by the list but not by
/// the watch. A real apiserver serves every page from one snapshot; this
/// is the closest the event log allows, and expires with it (410).
#[derive(serde::Serialize, serde::Deserialize)]
struct Continue {
    key: String,
    revision: Revision,
}

/// What a list or a watch reads: where, asked how, shown in which shape.
pub(super) struct Read<'a> {
    pub(super) target: &'a Target,
    pub(super) query: &'a HashMap<String, String>,
    pub(super) as_table: bool,
    pub(super) view: View,
}

impl Read<'_> {
    /// The selectors asked for, refused where the resource cannot be
    /// selected by them.
    pub(super) fn selector(&self) -> Result<Selector, ApiError> {
        Selector::for_resource(self.query, self.target.resource.custom)
    }

    /// Where the collection's objects are stored.
    pub(super) fn prefix(&self) -> String {
        let target = self.target;
        target.resource.prefix(target.namespace.as_deref())
    }

    /// The `<Kind>List` answer holding `items` (stored objects), shown in
    /// this read's view.
    pub(super) fn answer(&self, metadata: Value, items: &[&Value]) -> Response {
        let resource = &self.target.resource;
        let items: Vec<Cow<'_, Value>> = items.iter().map(|o| self.view.shown(o)).collect();
        let body = json!({
            "apiVersion": resource.api_version(),
            "kind": format!("{}List", resource.kind),
            "metadata": metadata,
            "items": items,
        });
        json_body(&self.view.shown(&body)).into_response()
    }
}

pub(super) fn list(app: &App, read: &Read<'_>) -> Result<Response, ApiError> {
    let (target, query) = (read.target, read.query);
    let resource = &target.resource;
    let selector = read.selector()?;
    let prefix = read.prefix();
    let (mut revision, objects) = app.store.list(&prefix);
    super::request::readable_at(query, revision)?;
    let after = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(token)
                .map_err(|_| ApiError::BadRequest("invalid continue token".into()))?;
            let token: Continue = serde_json::from_slice(&bytes)
                .map_err(|_| ApiError::BadRequest("invalid continue token".into()))?;
            if token.revision < app.store.compacted() {
                return Err(ApiError::Gone(
                    "The provided continue parameter is too old to display a consistent list \
                     result. You can start a new list without the continue parameter."
                        .into(),
                ));
            }
            revision = token.revision;
            Some(token.key)
        }
        None => None,
    };
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let key_of = |object: &Value| {
        resource.key(
            meta(object, "namespace").as_deref(),
            &meta(object, "name").unwrap_or_default(),
        )
    };
    let mut items = Vec::new();
    let mut remaining = 0usize;
    for object in &objects {
        if after.as_ref().is_some_and(|a| key_of(object) <= *a) || !selector.matches(object) {
            continue;
        }
        if items.len() == limit {
            remaining += 1;
        } else {
            items.push(&**object);
        }
    }
    if read.as_table {
        let rows = table::table(resource, &items, &revision.to_string(), false);
        return Ok(json_body(&rows).into_response());
    }
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if remaining > 0 {
        let last_key = key_of(items.last().expect("limit reached"));
        let token = base64::engine::general_purpose::STANDARD.encode(
            serde_json::to_vec(&Continue {
                key: last_key,
                revision,
            })
            .unwrap_or_default(),
        );
        metadata["continue"] = Value::String(token);
        metadata["remainingItemCount"] = json!(remaining);
    }
    Ok(read.answer(metadata, &items))
}
