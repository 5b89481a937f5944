//! Names for the tasks a deployment starts: `SERVICE-DEPLOYMENT-SLOT`,
//! numbered on from the highest slot a task of the deployment has taken.
//!
//! Two reconciles that saw the same tasks pick the same names: two
//! controllers running at once without leader election, or one reconcile
//! retried before its own creates show in the list. The second create of
//! a slot is then refused as a conflict instead of starting a second task.

use crds::labels;
use kube::ResourceExt;

use super::Task;

/// `count` names for new tasks of `deployment`, after the slots `tasks`
/// (the service's tasks, stopped ones included, and those an earlier
/// Service of the same name left) hold.
pub fn next<'a>(
    service: &str,
    deployment: u32,
    tasks: impl IntoIterator<Item = &'a Task>,
    count: usize,
) -> Vec<String> {
    let prefix = format!("{service}-{deployment}-");
    let deployment = deployment.to_string();
    let taken = tasks
        .into_iter()
        .filter(|t| t.labels().get(labels::DEPLOYMENT) == Some(&deployment))
        .filter_map(|t| {
            t.metadata
                .name
                .as_deref()?
                .strip_prefix(&prefix)?
                .parse::<u64>()
                .ok()
        })
        .max();
    let first = taken.map_or(0, |slot| slot + 1);
    (first..)
        .take(count)
        .map(|slot| format!("{prefix}{slot}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kube::api::ObjectMeta;

    use super::*;

    fn task(name: &str, deployment: &str) -> Task {
        Task {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                labels: Some(BTreeMap::from([(
                    labels::DEPLOYMENT.to_owned(),
                    deployment.to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            spec: serde_json::from_value(serde_json::json!({"taskDefinition": "web"}))
                .expect("spec"),
            status: None,
        }
    }

    #[test]
    fn slots_follow_the_highest_taken_by_the_deployment() {
        assert_eq!(next("web", 1, [], 2), ["web-1-0", "web-1-1"]);
        let tasks = [
            task("web-1-0", "1"),
            task("web-1-7", "1"),
            task("web-1-3", "1"),
            // Another deployment's slots and names not in slot form.
            task("web-2-40", "2"),
            task("web-1-xkcd5", "1"),
        ];
        assert_eq!(next("web", 1, &tasks, 2), ["web-1-8", "web-1-9"]);
        assert_eq!(next("web", 2, &tasks, 1), ["web-2-41"]);
        assert_eq!(next("web", 3, &tasks, 1), ["web-3-0"]);
    }

    #[test]
    fn the_same_tasks_give_the_same_names() {
        let tasks = [task("web-1-4", "1"), task("web-1-5", "1")];
        assert_eq!(next("web", 1, &tasks, 3), next("web", 1, &tasks, 3));
    }
}
