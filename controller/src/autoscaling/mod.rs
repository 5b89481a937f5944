//! Service auto scaling: once a period, each Service with `autoScaling`
//! gets a datapoint of each metric it tracks, measured from the usage its
//! agents report on its running Tasks ([`decide::measure`]); [`decide`]
//! says whether its desiredCount should change, and this module writes
//! the change through the scale subresource (as a HorizontalPodAutoscaler
//! writes a Deployment's), publishes an Event saying why, and keeps
//! `status.autoScaling`.
//!
//! Datapoints are kept in memory: after a restart the alarms fill again
//! (3 periods to scale out, 15 to scale in). The cooldowns' clock is the
//! status's `lastScaleOutTime` and `lastScaleInTime`, so it survives one.

pub mod decide;

use std::{collections::HashMap, future::Future, sync::Arc};

use crds::{
    labels,
    v1alpha1::{AutoScalingStatus, MetricValue, RolloutState, SchedulingStrategy, Service, Task},
};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{reflector::Store, watcher},
};
use serde_json::json;
use tracing::Instrument;

use crate::{Context, cache, events::Note};
use decide::{Decision, Direction, History};

pub mod reason {
    pub const SCALED_OUT: &str = "ScaledOut";
    pub const SCALED_IN: &str = "ScaledIn";
    pub const CAPACITY_BOUNDS: &str = "CapacityBounds";
    pub const SCALING_FAILED: &str = "ScalingFailed";
}

pub async fn run(context: Arc<Context>, shutdown: impl Future<Output = ()> + Send + 'static) {
    let client = context.client.clone();
    let (services, service_cache) = cache::cache::<Service>(&client, watcher::Config::default());
    let (tasks, task_cache) =
        cache::cache::<Task>(&client, watcher::Config::default().labels(labels::SERVICE));
    let period = context.config.autoscaling_period;
    let evaluating = async {
        let _ = services.wait_until_ready().await;
        let _ = tasks.wait_until_ready().await;
        let mut histories: HashMap<String, History> = HashMap::new();
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            evaluate(&context, &services, &tasks, &mut histories).await;
        }
    };
    tokio::select! {
        () = evaluating => {}
        () = service_cache => {}
        () = task_cache => {}
        () = shutdown => {}
    }
}

/// One period: a datapoint for every auto scaled service, and its
/// decision carried out.
async fn evaluate(
    context: &Context,
    services: &Store<Service>,
    tasks: &Store<Task>,
    histories: &mut HashMap<String, History>,
) {
    let scaled: Vec<_> = services
        .state()
        .into_iter()
        .filter(|s| {
            s.spec.auto_scaling.is_some()
                && s.spec.scheduling_strategy == SchedulingStrategy::Replica
                && s.metadata.deletion_timestamp.is_none()
        })
        .collect();
    // Services gone, or no longer auto scaled, forget their datapoints.
    histories.retain(|uid, _| scaled.iter().any(|s| s.uid().as_ref() == Some(uid)));
    let all_tasks = tasks.state();
    for service in scaled {
        let (namespace, name) = (service.namespace().unwrap_or_default(), service.name_any());
        let mine: Vec<Task> = all_tasks
            .iter()
            .filter(|t| {
                t.namespace().as_deref() == Some(namespace.as_str())
                    && t.labels().get(labels::SERVICE) == Some(&name)
            })
            .map(|t| Task::clone(t))
            .collect();
        let history = histories
            .entry(service.uid().unwrap_or_default())
            .or_default();
        let span = tracing::info_span!("autoscaling", service = %name, %namespace);
        scale(context, &service, &mine, history)
            .instrument(span)
            .await;
    }
}

async fn scale(context: &Context, service: &Service, tasks: &[Task], history: &mut History) {
    let Some(scaling) = &service.spec.auto_scaling else {
        return;
    };
    let now = Timestamp::now();
    let mut current_metrics = Vec::new();
    for policy in &scaling.target_tracking {
        let point = decide::measure(tasks, policy.metric);
        history.push(policy.metric, point.map(|p| p.value));
        current_metrics.push(MetricValue {
            metric: policy.metric,
            value: point.map(|p| p.value),
            target: policy.target,
            tasks: point.map_or(0, |p| i32::try_from(p.tasks).unwrap_or(i32::MAX)),
        });
    }
    let recorded = service
        .status
        .as_ref()
        .and_then(|s| s.auto_scaling.clone())
        .unwrap_or_default();
    // The later of what the status says and what this process did.
    let last =
        |recorded: &Option<Time>, done: Option<Timestamp>| recorded.as_ref().map(|t| t.0).max(done);
    let last_scale_out = last(&recorded.last_scale_out_time, history.scaled_out);
    let last_scale_in = last(&recorded.last_scale_in_time, history.scaled_in);
    let deploying = service.status.as_ref().is_some_and(|s| {
        s.deployments.len() > 1
            || s.deployments
                .first()
                .is_some_and(|d| d.rollout_state == RolloutState::InProgress)
    });
    let decision = decide::decide(&decide::Input {
        scaling,
        desired: service.spec.desired(),
        history,
        last_scale_out,
        last_scale_in,
        deploying,
        now,
    });
    let mut status = AutoScalingStatus {
        current_metrics,
        last_scale_out_time: last_scale_out.map(Time),
        last_scale_in_time: last_scale_in.map(Time),
    };
    if let Some(decision) = decision {
        match set_desired(context, service, &decision).await {
            Ok(()) => {
                tracing::info!(desired = decision.desired, message = %decision.message, "scaled");
                match decision.direction {
                    Direction::Out => {
                        history.scaled_out = Some(now);
                        status.last_scale_out_time = Some(Time(now));
                    }
                    Direction::In => {
                        history.scaled_in = Some(now);
                        status.last_scale_in_time = Some(Time(now));
                    }
                    Direction::Bounds => {}
                }
                let why = match decision.direction {
                    Direction::Out => reason::SCALED_OUT,
                    Direction::In => reason::SCALED_IN,
                    Direction::Bounds => reason::CAPACITY_BOUNDS,
                };
                context
                    .events
                    .publish(service, &Note::normal(why, decision.message))
                    .await;
            }
            // The service changed since it was read (`kubectl scale`, or
            // a status write): the next period decides from what it is.
            Err(kube::Error::Api(s)) if s.code == 409 => {
                tracing::debug!("the service changed meanwhile; deciding again next period");
            }
            Err(e) => {
                tracing::warn!(error = %e, "setting desiredCount failed");
                let note = Note::warning(
                    reason::SCALING_FAILED,
                    format!("could not set desiredCount to {}: {e}", decision.desired),
                );
                context.events.publish(service, &note).await;
            }
        }
    }
    if status != recorded {
        write_status(context, service, &status).await;
    }
}

/// Write the new count through the scale subresource, on the version
/// read: a count changed meanwhile (`kubectl scale`) is not overwritten,
/// and the next period decides again from it.
async fn set_desired(
    context: &Context,
    service: &Service,
    decision: &Decision,
) -> Result<(), kube::Error> {
    let api: Api<Service> = Api::namespaced(
        context.client.clone(),
        &service.namespace().unwrap_or_default(),
    );
    let scale = json!({
        "metadata": {"resourceVersion": service.resource_version()},
        "spec": {"replicas": decision.desired},
    });
    api.patch_scale(
        &service.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&scale),
    )
    .await?;
    Ok(())
}

async fn write_status(context: &Context, service: &Service, status: &AutoScalingStatus) {
    let api: Api<Service> = Api::namespaced(
        context.client.clone(),
        &service.namespace().unwrap_or_default(),
    );
    let patch = json!({"status": {"autoScaling": status}});
    if let Err(e) = api
        .patch_status(
            &service.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        tracing::warn!(error = %e, "writing status.autoScaling failed");
    }
}
