//! The LoadBalancer status the balancer reports: its addresses, every
//! target not yet drained, counts and `Ready`. Pure; [`crate::serve`]
//! writes it when it changes.

use std::collections::BTreeMap;

use crds::{
    conditions::{ConditionType, Conditions, reason::balancer},
    v1alpha1::{LoadBalancerStatus, Target, TargetState},
};
use k8s_openapi::jiff::Timestamp;

/// What the listeners of one LoadBalancer do now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listening {
    /// `host:port` of each bound listener.
    pub addresses: Vec<String>,
    /// Why a listener could not be bound, by port.
    pub errors: BTreeMap<u16, String>,
}

/// The status to report, given the one reported before.
#[must_use]
pub fn status(
    previous: &LoadBalancerStatus,
    generation: Option<i64>,
    listening: &Listening,
    targets: Vec<Target>,
    now: Timestamp,
) -> LoadBalancerStatus {
    let healthy = targets
        .iter()
        .filter(|t| t.state == TargetState::Healthy)
        .count();
    let mut conditions = previous.conditions.clone();
    let mut set = Conditions::new(&mut conditions, generation, now);
    if let Some((port, why)) = listening.errors.iter().next() {
        set.set(
            ConditionType::Ready,
            false,
            balancer::LISTENER_FAILED,
            format!("cannot listen on port {port}: {why}"),
        );
    } else if healthy == 0 {
        set.set(
            ConditionType::Ready,
            false,
            balancer::NO_HEALTHY_TARGETS,
            format!("none of {} targets is healthy", targets.len()),
        );
    } else {
        set.set(
            ConditionType::Ready,
            true,
            balancer::SERVING,
            format!("{healthy} of {} targets healthy", targets.len()),
        );
    }
    LoadBalancerStatus {
        observed_generation: generation,
        addresses: listening.addresses.clone(),
        healthy_targets: i32::try_from(healthy).unwrap_or(i32::MAX),
        target_count: i32::try_from(targets.len()).unwrap_or(i32::MAX),
        targets,
        conditions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(task: &str, state: TargetState) -> Target {
        Target {
            task: task.into(),
            container: "web".into(),
            address: "127.0.0.2:80".into(),
            service: "web".into(),
            state,
            reason: None,
            description: None,
        }
    }

    #[test]
    fn ready_needs_every_listener_and_a_healthy_target() {
        let at = |s| Timestamp::from_second(s).expect("a time");
        let listening = Listening {
            addresses: vec!["127.0.0.1:8080".into()],
            errors: BTreeMap::new(),
        };
        let none = status(
            &LoadBalancerStatus::default(),
            Some(1),
            &listening,
            vec![target("a", TargetState::Initial)],
            at(10),
        );
        assert_eq!(none.conditions[0].status, "False");
        assert_eq!(none.conditions[0].reason, balancer::NO_HEALTHY_TARGETS);
        let serving = status(
            &none,
            Some(1),
            &listening,
            vec![
                target("a", TargetState::Healthy),
                target("b", TargetState::Draining),
            ],
            at(20),
        );
        assert_eq!(serving.conditions[0].status, "True");
        assert_eq!((serving.healthy_targets, serving.target_count), (1, 2));
        let again = status(
            &serving,
            Some(1),
            &listening,
            serving.targets.clone(),
            at(30),
        );
        assert_eq!(again, serving, "nothing changed: nothing to write");
        let failed = Listening {
            addresses: Vec::new(),
            errors: BTreeMap::from([(8080, "Address already in use".into())]),
        };
        let broken = status(&serving, Some(2), &failed, serving.targets.clone(), at(40));
        assert_eq!(broken.conditions[0].reason, balancer::LISTENER_FAILED);
        assert!(broken.conditions[0].message.contains("8080"));
    }
}
