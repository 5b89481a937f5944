//! What a service's load balancers report of its tasks, and when a task
//! being deregistered may go on to stop.
//!
//! ECS registers a RUNNING task in each of its service's target groups and
//! counts it healthy only once every one of them reports it healthy; before
//! it stops a task it deregisters it (DEACTIVATING) and waits until its
//! connections have drained or the deregistration delay has passed
//! (docs/controller.md, "Load balancers").

use std::{collections::HashMap, time::Duration};

use crds::v1alpha1::{LoadBalancer, ServiceLoadBalancer, TargetState, TaskLastStatus};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::{
    Definition,
    facts::{Facts, after, sooner, wait},
};

/// The definition, unless a load balancer entry names a container or
/// port it lacks: then the service cannot run it, as ECS refuses such a
/// service (`problem` holds the why).
#[must_use]
pub fn checked<'a>(
    definition: Definition<'a>,
    entries: &[ServiceLoadBalancer],
    problem: &'a mut String,
) -> Definition<'a> {
    let Definition::Valid { spec, .. } = definition else {
        return definition;
    };
    for entry in entries {
        let container = spec
            .container_definitions
            .iter()
            .find(|c| c.name == entry.container_name);
        let why = match container {
            None => format!("it has no container {}", entry.container_name),
            Some(c)
                if !c
                    .port_mappings
                    .iter()
                    .any(|p| p.container_port == entry.container_port) =>
            {
                format!(
                    "its container {} has no port mapping for containerPort {}",
                    entry.container_name, entry.container_port
                )
            }
            Some(_) => continue,
        };
        *problem = format!("load balancer {}: {why}", entry.load_balancer_name);
        return Definition::Invalid(problem);
    }
    definition
}

/// One of the service's load balancers, as its status reports it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Balancer {
    pub name: String,
    /// Whether the LoadBalancer exists; a missing one holds nothing up.
    pub exists: bool,
    pub delay: Duration,
    /// Target state by task name.
    pub targets: HashMap<String, TargetState>,
}

impl Balancer {
    /// `name`'s view from its LoadBalancer object, if there is one.
    #[must_use]
    pub fn of(name: &str, object: Option<&LoadBalancer>) -> Self {
        let Some(lb) = object else {
            return Self {
                name: name.to_owned(),
                ..Self::default()
            };
        };
        let delay = u64::try_from(lb.spec.deregistration_delay_seconds).unwrap_or(0);
        Self {
            name: lb.name_any(),
            exists: true,
            delay: Duration::from_secs(delay),
            targets: lb
                .status
                .iter()
                .flat_map(|s| &s.targets)
                .map(|t| (t.task.clone(), t.state))
                .collect(),
        }
    }
}

/// The service's load balancers; none for a service without any.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Targets {
    pub balancers: Vec<Balancer>,
}

/// A task's health as its load balancers see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// The service has no load balancers.
    Unbalanced,
    /// Every load balancer reports it healthy.
    Healthy,
    /// Registered but not (yet) healthy everywhere.
    Pending,
    /// This load balancer reports it unhealthy.
    Unhealthy(&'a str),
}

impl Targets {
    #[must_use]
    pub fn any(&self) -> bool {
        !self.balancers.is_empty()
    }

    #[must_use]
    pub fn verdict(&self, task: &str) -> Verdict<'_> {
        if self.balancers.is_empty() {
            return Verdict::Unbalanced;
        }
        let mut all_healthy = true;
        for b in &self.balancers {
            match b.targets.get(task) {
                Some(TargetState::Unhealthy) => return Verdict::Unhealthy(&b.name),
                Some(TargetState::Healthy) => {}
                _ => all_healthy = false,
            }
        }
        if all_healthy {
            Verdict::Healthy
        } else {
            Verdict::Pending
        }
    }

    /// No load balancer still lists the task: its connections are done.
    fn drained(&self, task: &str) -> bool {
        self.balancers
            .iter()
            .all(|b| !b.exists || !b.targets.contains_key(task))
    }

    /// The longest deregistration delay of the existing load balancers.
    fn delay(&self) -> Duration {
        self.balancers
            .iter()
            .filter(|b| b.exists)
            .map(|b| b.delay)
            .max()
            .unwrap_or_default()
    }
}

/// Tasks being deregistered that may now stop, and when to look again for
/// the rest.
#[derive(Debug, Default, PartialEq)]
pub struct Release {
    /// Each task's name and the resourceVersion it was seen at.
    pub tasks: Vec<(String, Option<String>)>,
    pub requeue: Option<Duration>,
}

/// Each DEACTIVATING task goes on to stop once no load balancer lists it,
/// or once the deregistration delay since it began deactivating
/// (`stoppingAt`) has passed, whichever is first.
#[must_use]
pub fn release(facts: &[Facts<'_>], targets: &Targets, now: Timestamp) -> Release {
    let mut out = Release::default();
    for f in facts {
        let status = f.task.status.as_ref();
        if status.and_then(|s| s.last_status) != Some(TaskLastStatus::Deactivating) {
            continue;
        }
        let since = status
            .and_then(|s| s.stopping_at.as_ref())
            .map_or(now, |t| t.0);
        let deadline = after(since, targets.delay());
        if targets.drained(&f.name()) || deadline <= now {
            out.tasks
                .push((f.name(), f.task.metadata.resource_version.clone()));
        } else {
            out.requeue = sooner(out.requeue, wait(now, deadline));
        }
    }
    out
}
