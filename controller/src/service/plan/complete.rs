//! When the primary deployment is done: it alone has live tasks, exactly
//! desiredCount of them, all healthy, and nothing is being started.

use crds::v1alpha1::{Deployment, RolloutState};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use super::facts::Facts;
use crate::events::Note;

#[derive(Debug)]
pub struct Done<'a> {
    /// The tasks the classification kept (the primary's).
    pub keep: &'a [&'a Facts<'a>],
    pub facts: &'a [Facts<'a>],
    pub desired: i32,
    /// Whether this plan starts tasks.
    pub starting: bool,
}

impl Done<'_> {
    #[must_use]
    pub fn holds(&self) -> bool {
        let healthy = self.keep.iter().filter(|f| f.healthy).count();
        let others_live = self
            .facts
            .iter()
            .filter(|f| f.live)
            .count()
            .saturating_sub(self.keep.len());
        usize::try_from(self.desired).is_ok_and(|d| d == healthy)
            && self.keep.len() == healthy
            && others_live == 0
            && !self.starting
    }

    /// Mark an in-progress `primary` COMPLETED if done.
    pub fn mark(&self, primary: &mut Deployment, service: &str, now: Timestamp) -> Option<Note> {
        if primary.rollout_state != RolloutState::InProgress || !self.holds() {
            return None;
        }
        primary.rollout_state = RolloutState::Completed;
        primary.rollout_state_reason = Some(format!("ECS deployment {} completed.", primary.id));
        primary.updated_at = Some(Time(now));
        Some(Note::normal(
            "DeploymentCompleted",
            format!("service ({service}) deployment {} completed", primary.id),
        ))
    }
}
