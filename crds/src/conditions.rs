//! Status conditions: the types every Gantry kind reports, their reasons,
//! and [`Conditions`], which sets one the way kube-apiserver's
//! `meta.SetStatusCondition` does: `lastTransitionTime` moves only when
//! the status changes, so a client can tell how long a state has held.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

/// The condition types Gantry sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionType {
    /// Service: at desiredCount, all healthy, the primary deployment done.
    /// LoadBalancer: its listeners are served and a target is healthy.
    Ready,
    /// Service: a deployment is rolling out.
    Progressing,
    /// Service: something keeps it from its desired state.
    Degraded,
    /// Task: False while no instance can take it, with why.
    Scheduled,
    /// TaskDefinition: whether the latest spec can run.
    Valid,
    /// ContainerInstance: whether its agent renews its Lease.
    AgentConnected,
    /// ContainerInstance: whether it is DRAINING.
    Draining,
}

impl ConditionType {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::Progressing => "Progressing",
            Self::Degraded => "Degraded",
            Self::Scheduled => "Scheduled",
            Self::Valid => "Valid",
            Self::AgentConnected => "AgentConnected",
            Self::Draining => "Draining",
        }
    }
}

impl std::fmt::Display for ConditionType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The reasons conditions carry, by the condition that carries them.
pub mod reason {
    /// Service `Ready`. While not ready it carries the `Degraded` or
    /// `Progressing` reason that says why, or `TasksPending`.
    pub mod ready {
        pub const STEADY_STATE: &str = "SteadyState";
        pub const TASKS_PENDING: &str = "TasksPending";
        /// Deleted: its tasks are stopping (the service is DRAINING).
        pub const DRAINING: &str = "Draining";
    }

    /// Service `Progressing`.
    pub mod progressing {
        pub const DEPLOYMENT_IN_PROGRESS: &str = "DeploymentInProgress";
        pub const DEPLOYMENT_COMPLETED: &str = "DeploymentCompleted";
        pub const DEPLOYMENT_FAILED: &str = "DeploymentFailed";
        pub const NO_DEPLOYMENT: &str = "NoDeployment";
    }

    /// Service `Degraded`; each True reason is also the reason of the
    /// Warning event that reports it.
    pub mod degraded {
        pub const AS_EXPECTED: &str = "AsExpected";
        pub const UNPLACEABLE: &str = "Unplaceable";
        pub const CIRCUIT_BREAKER_TRIPPED: &str = "CircuitBreakerTripped";
        pub const INVALID_TASK_DEFINITION: &str = "InvalidTaskDefinition";
        pub const TASK_DEFINITION_NOT_FOUND: &str = "TaskDefinitionNotFound";
    }

    /// LoadBalancer `Ready`.
    pub mod balancer {
        pub const SERVING: &str = "Serving";
        pub const NO_HEALTHY_TARGETS: &str = "NoHealthyTargets";
        pub const LISTENER_FAILED: &str = "ListenerFailed";
    }

    /// TaskDefinition `Valid`.
    pub mod valid {
        pub const VALID: &str = "Valid";
        pub const INVALID: &str = "Invalid";
    }
}

/// The condition of `type_` in `conditions`, if any.
#[must_use]
pub fn find(conditions: &[Condition], type_: ConditionType) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == type_.as_str())
}

/// Whether the condition of `type_` is there and True.
#[must_use]
pub fn is_true(conditions: &[Condition], type_: ConditionType) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

/// Whether the condition of `type_` is there and False.
#[must_use]
pub fn is_false(conditions: &[Condition], type_: ConditionType) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "False")
}

/// Sets conditions on one object's list, for one observed generation at
/// one time.
#[derive(Debug)]
pub struct Conditions<'a> {
    list: &'a mut Vec<Condition>,
    generation: Option<i64>,
    now: Timestamp,
}

impl<'a> Conditions<'a> {
    #[must_use]
    pub fn new(list: &'a mut Vec<Condition>, generation: Option<i64>, now: Timestamp) -> Self {
        Self {
            list,
            generation,
            now,
        }
    }

    /// Set `type_` to `status` with a reason and message. Its
    /// `lastTransitionTime` is `now` only if the status changed (or the
    /// condition is new); otherwise it is kept.
    pub fn set(
        &mut self,
        type_: ConditionType,
        status: bool,
        reason: &str,
        message: impl Into<String>,
    ) -> &mut Self {
        let status = if status { "True" } else { "False" };
        let at = self.list.iter().position(|c| c.type_ == type_.as_str());
        let last_transition_time = match at.map(|i| &self.list[i]) {
            Some(c) if c.status == status => c.last_transition_time.clone(),
            _ => Time(self.now),
        };
        let next = Condition {
            type_: type_.as_str().to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: message.into(),
            observed_generation: self.generation,
            last_transition_time,
        };
        match at {
            Some(i) => self.list[i] = next,
            None => self.list.push(next),
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).expect("a time")
    }

    #[test]
    fn the_transition_time_moves_only_when_the_status_changes() {
        let mut list = Vec::new();
        Conditions::new(&mut list, Some(1), at(10)).set(
            ConditionType::Ready,
            false,
            "Pending",
            "a",
        );
        Conditions::new(&mut list, Some(2), at(20)).set(
            ConditionType::Ready,
            false,
            "Pending",
            "b",
        );
        let ready = find(&list, ConditionType::Ready).expect("Ready");
        assert_eq!(ready.last_transition_time, Time(at(10)), "same status");
        assert_eq!(ready.message, "b", "message updated");
        assert_eq!(ready.observed_generation, Some(2));
        assert!(is_false(&list, ConditionType::Ready));

        Conditions::new(&mut list, Some(2), at(30))
            .set(ConditionType::Ready, true, "SteadyState", "c")
            .set(
                ConditionType::Degraded,
                false,
                reason::degraded::AS_EXPECTED,
                "d",
            );
        assert_eq!(list.len(), 2, "one entry per type");
        let ready = find(&list, ConditionType::Ready).expect("Ready");
        assert_eq!(ready.last_transition_time, Time(at(30)), "status changed");
        assert!(is_true(&list, ConditionType::Ready));
        assert!(!is_true(&list, ConditionType::Degraded));
        assert!(!is_true(&list, ConditionType::Valid), "absent is not True");
        assert!(!is_false(&list, ConditionType::Valid), "nor False");
    }
}
