//! A watch-fed cache of one kind, as the sweeps and reconcilers that read
//! more than their own objects keep them.

use std::{fmt::Debug, future::Future, hash::Hash};

use futures::StreamExt;
use kube::{
    Api, Client, Resource,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher::{self, Event, watcher},
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

/// What a reconciler files from a watch of `K` its own way: each applied
/// object taken in, each deleted one let go.
pub trait Index<K>: Default {
    fn insert(&mut self, object: &K);
    fn remove(&mut self, object: &K);
}

/// An [`Index`] kept by a watch. A relist fills a fresh one, swapped in
/// when it is done, so that readers never see half a list.
#[derive(Debug, Default)]
pub struct Watched<I> {
    pub live: I,
    relisting: Option<I>,
    /// The first list is in.
    pub ready: bool,
}

impl<I> Watched<I> {
    /// Take in one event of the watch.
    pub fn apply<K>(&mut self, event: &Event<K>)
    where
        I: Index<K>,
    {
        match event {
            Event::Apply(object) => self.live.insert(object),
            Event::Delete(object) => self.live.remove(object),
            Event::Init => self.relisting = Some(I::default()),
            Event::InitApply(object) => {
                if let Some(relisting) = &mut self.relisting {
                    relisting.insert(object);
                }
            }
            Event::InitDone => {
                if let Some(relisted) = self.relisting.take() {
                    self.live = relisted;
                }
                self.ready = true;
            }
        }
    }
}
