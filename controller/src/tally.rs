//! An instance's task counts, as ECS reports them in `DescribeContainerInstances`
//! and Gantry prints them in `kubectl get ci`.
//!
//! ECS defines `runningTasksCount` as the tasks on the instance whose
//! desired status is RUNNING (so a task still starting counts) and
//! `pendingTasksCount` as those in the PENDING status (docs/controller.md,
//! "Instance figures"). Both are counted over the instance's allocations:
//! every task placed there holds one from its reservation until it is
//! STOPPED, so the tasks the figures speak of are exactly the ones whose
//! resources `remainingResources` leaves out.
//!
//! Writing the counts bumps the instance's resourceVersion, which is the
//! scheduler's precondition, so they are never written on their own for
//! every task event: the scheduler adds the tasks it reserves for to the
//! counts in its reservation write, the allocation collector adds the
//! correction in its release write, and only a change neither of them
//! carries (a task turned RUNNING, or asked to stop) costs one write per
//! instance per collector pass, however many tasks changed.

use std::ops::Deref;

use crds::v1alpha1::{Allocation, ContainerInstance, DesiredStatus, Task, TaskLastStatus};
use kube::ResourceExt;

/// `runningTasksCount` and `pendingTasksCount` of one instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub running: i32,
    pub pending: i32,
}

impl Tally {
    /// The counts the instance holds now.
    #[must_use]
    pub fn stored(ci: &ContainerInstance) -> Self {
        ci.status.as_ref().map_or_else(Self::default, |s| Self {
            running: s.running_tasks_count,
            pending: s.pending_tasks_count,
        })
    }

    /// The counts once `n` more tasks are reserved for: a task being
    /// placed is desired RUNNING and has not started, so it is both.
    #[must_use]
    pub fn reserved(self, n: usize) -> Self {
        let n = i32::try_from(n).unwrap_or(i32::MAX);
        Self {
            running: self.running.saturating_add(n),
            pending: self.pending.saturating_add(n),
        }
    }

    /// Count the tasks behind `allocations`; `task` finds an allocation's
    /// task as cached (`None` when it is not seen yet, which is how a
    /// fresh reservation looks, and counts as one being placed).
    #[must_use]
    pub fn of<T: Deref<Target = Task>>(
        allocations: &[Allocation],
        task: impl Fn(&Allocation) -> Option<T>,
    ) -> Self {
        let mut tally = Self::default();
        for allocation in allocations {
            let task =
                task(allocation).filter(|t| t.uid().as_deref() == Some(&allocation.task_uid));
            let Some(task) = task else {
                tally = tally.reserved(1);
                continue;
            };
            if task.spec.desired_status == DesiredStatus::Running {
                tally.running += 1;
            }
            let last = task.status.as_ref().and_then(|s| s.last_status);
            if matches!(
                last,
                None | Some(
                    TaskLastStatus::Provisioning
                        | TaskLastStatus::Pending
                        | TaskLastStatus::Activating
                )
            ) {
                tally.pending += 1;
            }
        }
        tally
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::v1alpha1::{TaskSpec, TaskStatus};
    use serde_json::json;

    fn allocation(task: &str) -> Allocation {
        serde_json::from_value(
            json!({"task": task, "taskUid": format!("uid-{task}"), "cpu": 0, "memory": 10}),
        )
        .expect("an allocation")
    }

    fn task(name: &str, desired: DesiredStatus, last: Option<TaskLastStatus>) -> Task {
        let spec: TaskSpec =
            serde_json::from_value(json!({"taskDefinition": "web"})).expect("a spec");
        let mut task = Task::new(name, spec);
        task.metadata.uid = Some(format!("uid-{name}"));
        task.spec.desired_status = desired;
        task.status = Some(TaskStatus {
            last_status: last,
            ..TaskStatus::default()
        });
        task
    }

    #[test]
    fn running_is_desired_running_and_pending_is_not_started_yet() {
        use DesiredStatus::{Running, Stopped};
        use TaskLastStatus as L;
        let tasks = [
            task("starting", Running, Some(L::Pending)),
            task("new", Running, None),
            task("up", Running, Some(L::Running)),
            task("up-too", Running, Some(L::Running)),
            task("asked-to-stop", Stopped, Some(L::Running)),
            task("stopping", Stopped, Some(L::Deactivating)),
            task("stopped-while-pending", Stopped, Some(L::Pending)),
        ];
        let mut allocations: Vec<Allocation> =
            tasks.iter().map(|t| allocation(&t.name_any())).collect();
        // A reservation whose task this cache has not seen, and one whose
        // name now belongs to a recreated task (another uid).
        allocations.push(allocation("unseen"));
        let mut recreated = allocation("up");
        recreated.task_uid = "uid-of-an-older-up".into();
        allocations.push(recreated);
        let tally = Tally::of(&allocations, |a| {
            tasks.iter().find(|t| t.name_any() == a.task)
        });
        assert_eq!(
            tally,
            Tally {
                running: 4 + 2,
                pending: 3 + 2
            },
            "running: starting, new, up, up-too and the two not seen; pending: starting, new, stopped-while-pending and the two not seen"
        );
    }

    #[test]
    fn a_reservation_counts_its_tasks_as_starting_as_the_collector_will() {
        let before = Tally {
            running: 3,
            pending: 1,
        };
        assert_eq!(
            before.reserved(2),
            Tally {
                running: 5,
                pending: 3
            }
        );
        // The collector, counting the same fresh reservations before their
        // tasks reach its cache, agrees: no correcting write follows.
        let fresh = [allocation("a"), allocation("b")];
        assert_eq!(
            Tally::of(&fresh, |_| None::<&Task>),
            Tally::default().reserved(2)
        );
    }
}
