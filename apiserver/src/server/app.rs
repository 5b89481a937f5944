//! The state every part of the server shares: the store, the registry of
//! served kinds, the credentials, and the garbage collector's inbox. A
//! leaf: the HTTP and object layers both use it, and it uses neither.

use super::{pki::Credentials, registry::Registry};
use crate::storage::Store;

/// What every request handler shares.
#[derive(Debug)]
pub(crate) struct App {
    pub(crate) store: Store,
    pub(crate) registry: Registry,
    pub(super) credentials: Credentials,
    /// Uids of removed objects, for the garbage collector.
    pub(super) removed: tokio::sync::mpsc::UnboundedSender<String>,
}

impl App {
    /// An object is gone: collect its dependents.
    pub(crate) fn removed(&self, object: &serde_json::Value) {
        if let Some(uid) = object
            .pointer("/metadata/uid")
            .and_then(serde_json::Value::as_str)
        {
            // The collector lives as long as the server; nothing to do if
            // it has stopped.
            let _ = self.removed.send(uid.to_owned());
        }
    }
}
