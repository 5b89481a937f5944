//! TaskDefinitions: each valid spec is a revision (its generation),
//! recorded as a TaskDefinitionRevision (`revisions::record`); the `Valid`
//! condition says whether the latest spec can run, and why not.
//!
//! The CRD's schema and CEL rules refuse most mistakes at admission; what
//! is left needs Gantry's own knowledge: the cluster query language of
//! `memberOf` constraints, and container sizes against the task's.

use std::sync::Arc;

use crds::{
    conditions::{ConditionType, Conditions, reason},
    v1alpha1::{LatestRevision, TaskDefinition, TaskDefinitionRevision, TaskDefinitionSpec},
};
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{Controller, controller::Action, watcher},
};
use serde_json::json;

use crate::{Context, convert, events::Note, placement::Query, revisions, runner};

/// Everything wrong with a spec that admission could not see.
#[must_use]
pub fn problems(spec: &TaskDefinitionSpec) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, c) in spec.placement_constraints.iter().enumerate() {
        if let Some(expression) = &c.expression
            && convert::pinned_instance(expression).is_none()
            && let Err(e) = Query::parse(expression)
        {
            problems.push(format!("placementConstraints[{i}].expression: {e}"));
        }
    }
    problems.extend(spec.size_problems());
    problems
}

pub async fn run(
    context: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let controller = Controller::new(
        Api::<TaskDefinition>::all(context.client.clone()),
        watcher::Config::default(),
    );
    let reconciler = runner::Reconciler::new("taskdefinition", &context.metrics);
    runner::run(
        controller,
        reconciler,
        context,
        shutdown,
        |td, ctx| async move { reconcile(&td, &ctx).await },
    )
    .await;
}

async fn reconcile(td: &TaskDefinition, ctx: &Context) -> Result<Action, kube::Error> {
    let generation = td.metadata.generation;
    let status = td.status.clone().unwrap_or_default();
    let namespace = td.namespace().unwrap_or_default();
    let records: Api<TaskDefinitionRevision> = Api::namespaced(ctx.client.clone(), &namespace);
    if status.observed_generation == generation && generation.is_some() {
        // Judged already; recorded too, unless judged before revisions
        // were recorded.
        if let LatestRevision::Valid(revision) = td.latest_revision() {
            revisions::record(&records, td, revision).await?;
        }
        return Ok(Action::await_change());
    }
    let problems = problems(&td.spec);
    let mut conditions = status.conditions.clone();
    let valid = problems.is_empty();
    let revision = if valid { generation } else { status.revision };
    Conditions::new(&mut conditions, generation, Timestamp::now()).set(
        ConditionType::Valid,
        valid,
        if valid {
            reason::valid::VALID
        } else {
            reason::valid::INVALID
        },
        if valid {
            format!("revision {} can run", generation.unwrap_or_default())
        } else {
            problems.join("; ")
        },
    );
    // Recorded before it is announced: whoever sees it valid finds it.
    if let (true, Some(revision)) = (valid, generation) {
        revisions::record(&records, td, revision).await?;
    }
    let api: Api<TaskDefinition> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = json!({"status": {
        "observedGeneration": generation,
        "revision": revision,
        "conditions": conditions,
    }});
    api.patch_status(
        &td.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    let note = if valid {
        Note::normal(
            "RevisionRegistered",
            format!(
                "{}:{} registered",
                td.name_any(),
                generation.unwrap_or_default()
            ),
        )
    } else {
        Note::warning(
            "InvalidTaskDefinition",
            format!(
                "revision {} cannot run: {}",
                generation.unwrap_or_default(),
                problems.join("; ")
            ),
        )
    };
    ctx.events.publish(td, &note).await;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn what_admission_cannot_check_is_named() {
        let spec: TaskDefinitionSpec = serde_json::from_value(json!({
            "cpu": 256, "memory": 128,
            "containerDefinitions": [
                {"name": "a", "image": "x", "cpu": 200, "memory": 256},
                {"name": "b", "image": "x", "cpu": 100, "memoryReservation": 64},
            ],
            "placementConstraints": [{"type": "memberOf", "expression": "attribute:x =="}],
        }))
        .expect("a spec");
        let found = problems(&spec);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].starts_with("placementConstraints[0].expression"));
        assert!(found[1].contains("cpu (300) exceeds the task's (256)"));
        assert!(found[2].starts_with("containerDefinitions[0].memory: 256 MiB"));
    }
}
