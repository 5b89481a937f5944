//! One way to run a kube-runtime reconciler, so that every one logs,
//! counts and retries alike: a tracing span naming the object, reconcile
//! and error counts labelled by reconciler (and errors by kind), and one
//! error policy (requeue after a fixed delay; kube-runtime's own backoff
//! would hide a reconciler that always fails).

use std::{fmt::Debug, future::Future, hash::Hash, sync::Arc, time::Duration};

use futures::{FutureExt, StreamExt};
use kube::{
    Resource,
    runtime::{Controller, controller::Action},
};
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::{Metrics, events};

/// What every reconciler run through [`run`] shares.
#[derive(Debug)]
pub struct Reconciler {
    /// Its name in logs and metrics (`controller="service"`).
    pub name: &'static str,
    pub metrics: Arc<Metrics>,
    /// How long after a failed reconcile to try again.
    pub retry: Duration,
}

impl Reconciler {
    /// A reconciler retried 5 s after a failure.
    #[must_use]
    pub fn new(name: &'static str, metrics: &Arc<Metrics>) -> Self {
        Self {
            name,
            metrics: Arc::clone(metrics),
            retry: Duration::from_secs(5),
        }
    }
}

/// Run `controller` with `reconcile` until `shutdown`.
pub async fn run<K, Ctx, F, Fut>(
    controller: Controller<K>,
    reconciler: Reconciler,
    context: Arc<Ctx>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    mut reconcile: F,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Debug + Unpin,
    Ctx: Send + Sync + 'static,
    F: FnMut(Arc<K>, Arc<Ctx>) -> Fut,
    Fut: Future<Output = Result<Action, kube::Error>> + Send + 'static,
{
    let Reconciler {
        name,
        metrics,
        retry,
    } = reconciler;
    controller
        .graceful_shutdown_on(shutdown)
        .run(
            move |object, context| {
                let span = tracing::info_span!("reconcile", reconciler = name, object = %events::key(object.as_ref()));
                let metrics = Arc::clone(&metrics);
                reconcile(object, context)
                    .map(move |result| {
                        metrics.reconciled(name, result.as_ref().err().map(error_kind));
                        result
                    })
                    .instrument(span)
            },
            move |object, error, _| {
                tracing::warn!(reconciler = name, object = %events::key(object.as_ref()), %error, "reconcile failed");
                Action::requeue(retry)
            },
            context,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// What kind of failure an API error is, for the error counter's `error`
/// label: few values, so the metric stays small.
#[must_use]
pub fn error_kind(error: &kube::Error) -> &'static str {
    match error {
        kube::Error::Api(status) => match status.code {
            409 => "conflict",
            404 => "not_found",
            401 | 403 => "forbidden",
            400 | 422 => "invalid",
            429 => "throttled",
            code if code >= 500 => "server",
            _ => "api",
        },
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::HttpError(_) => {
            "transport"
        }
        kube::Error::SerdeError(_) => "decode",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(Status::failure("no", "Reason").with_code(code)))
    }

    #[test]
    fn api_errors_are_labelled_by_what_went_wrong() {
        for (code, kind) in [
            (409, "conflict"),
            (404, "not_found"),
            (403, "forbidden"),
            (422, "invalid"),
            (429, "throttled"),
            (503, "server"),
            (418, "api"),
        ] {
            assert_eq!(error_kind(&api(code)), kind, "{code}");
        }
        let decode = serde_json::from_str::<u8>("x").expect_err("not a number");
        assert_eq!(error_kind(&kube::Error::SerdeError(decode)), "decode");
    }
}
