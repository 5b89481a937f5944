//! Leader election over a `coordination.k8s.io/v1` Lease, as
//! kube-controller-manager does it: the holder renews the Lease; a
//! candidate takes it once `renewTime + leaseDurationSeconds` has passed;
//! every write carries the resourceVersion read, so two candidates never
//! both win.

use std::time::{Duration, Instant};

use k8s_openapi::{
    api::coordination::v1::{Lease as LeaseObject, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};

use crate::Error;

/// Which Lease, and its timing.
#[derive(Clone, Debug)]
pub struct Options {
    pub namespace: String,
    pub name: String,
    /// How long a holder that stops renewing keeps the Lease.
    pub duration: Duration,
    /// How often the holder renews (and candidates retry).
    pub renew: Duration,
}

impl Options {
    #[must_use]
    pub fn new(namespace: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: "gantry-controller".to_owned(),
            duration: Duration::from_secs(15),
            renew: Duration::from_secs(5),
        }
    }
}

/// A Lease this process holds.
#[allow(missing_debug_implementations)] // the kube Api is not Debug
pub struct Lease {
    api: Api<LeaseObject>,
    identity: String,
    options: Options,
}

impl Lease {
    /// Wait until this process holds the Lease.
    ///
    /// # Errors
    /// None in practice: API failures are logged and retried.
    pub async fn acquire(client: Client, identity: &str, options: &Options) -> Result<Self, Error> {
        let lease = Self {
            api: Api::namespaced(client, &options.namespace),
            identity: identity.to_owned(),
            options: options.clone(),
        };
        let mut waiting = false;
        loop {
            match lease.try_hold().await {
                Ok(true) => return Ok(lease),
                Ok(false) => {
                    if !waiting {
                        tracing::info!(lease = %options.name, "another replica leads; waiting");
                        waiting = true;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the leader Lease"),
            }
            tokio::time::sleep(options.renew).await;
        }
    }

    /// Renew until the Lease is lost; returns why.
    pub async fn hold(self) -> Error {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.options.renew).await;
            match self.try_hold().await {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => return Error::LostLeadership(self.options.name.clone()),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew the leader Lease");
                    if renewed.elapsed() >= self.options.duration {
                        return Error::LostLeadership(self.options.name.clone());
                    }
                }
            }
        }
    }

    /// Take or renew the Lease if it is free, expired or ours.
    async fn try_hold(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let seconds = i32::try_from(self.options.duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.options.name).await? else {
            let lease = LeaseObject {
                metadata: ObjectMeta {
                    name: Some(self.options.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        if !ours && !expired(spec, now) {
            return Ok(false);
        }
        if !ours {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(seconds);
        // The object carries the resourceVersion read: a precondition.
        match self
            .api
            .replace(&self.options.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Whether a Lease's holder has stopped renewing it.
#[must_use]
pub fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    match (&spec.holder_identity, &spec.renew_time) {
        (Some(holder), Some(renewed)) if !holder.is_empty() => {
            let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0)) * 1000;
            renewed.0.as_millisecond() + duration < now.as_millisecond()
        }
        _ => true,
    }
}
