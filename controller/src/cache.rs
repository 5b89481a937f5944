//! A watch-fed cache of one kind, as the sweeps and reconcilers that read
//! more than their own objects keep them.

use std::{fmt::Debug, future::Future, hash::Hash};

use futures::StreamExt;
use kube::{
    Api, Client, Resource,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher::{self, watcher},
    },
};
use serde::de::DeserializeOwned;

/// A cache of every `K` matching `config`, cluster-wide: its store, and
/// the future that keeps it filled, to run beside whatever reads the
/// store. A failed watch is logged and resumed with kube-runtime's
/// backoff.
pub fn cache<K>(
    client: &Client,
    config: watcher::Config,
) -> (Store<K>, impl Future<Output = ()> + Send + use<K>)
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let (store, writer) = reflector::store::<K>();
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let feed = reflector::reflector(writer, watcher(Api::<K>::all(client.clone()), config))
        .default_backoff()
        .for_each(move |event| {
            if let Err(e) = event {
                tracing::warn!(error = %e, "watching {kind}");
            }
            futures::future::ready(())
        });
    (store, feed)
}
