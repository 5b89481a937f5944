//! Task definition revisions: which revision a reference (`family` or
//! `family:N`) names, as ECS resolves one, and the record of each valid
//! revision the TaskDefinition controller keeps (a TaskDefinitionRevision
//! `<family>-<N>`, crds/src/v1alpha1/task_definition_revision.rs).
//!
//! `family` is its latest valid revision unless that one is INACTIVE;
//! then what the caller already runs, or else its newest ACTIVE one, as
//! ECS runs "the latest ACTIVE revision" and deregistering a revision
//! does not touch what runs it.
//! `family:N` is that revision's snapshot (or the TaskDefinition's spec if
//! N is its latest and not recorded yet). An INACTIVE revision is refused
//! to anything that does not already run it.

use crds::{
    labels,
    v1alpha1::{
        LatestRevision, Reference, RevisionState, TaskDefinition, TaskDefinitionRevision,
        TaskDefinitionRevisionSpec, TaskDefinitionSpec, revision_name,
    },
};
use kube::{
    Api, Resource, ResourceExt,
    api::{ObjectMeta, PostParams},
};

/// Why a reference names nothing that can run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unresolved {
    /// No such family or revision.
    NotFound(String),
    /// The latest spec is not judged yet: its status will follow.
    NotJudged,
    /// The latest spec cannot run: why.
    Invalid(String),
    /// Deregistered: why.
    Inactive(String),
}

impl Unresolved {
    /// The reason to report.
    #[must_use]
    pub fn reason(&self) -> String {
        match self {
            Self::NotFound(why) | Self::Invalid(why) | Self::Inactive(why) => why.clone(),
            Self::NotJudged => "its latest spec is not judged yet".to_owned(),
        }
    }
}

/// Resolve `reference`, given its family's TaskDefinition (if any), a
/// lookup of the family's recorded revisions by number, and the revision
/// the caller already runs (which it may keep though INACTIVE).
///
/// # Errors
/// [`Unresolved`], saying why.
pub fn resolve<'a>(
    reference: Reference<'_>,
    td: Option<&'a TaskDefinition>,
    recorded: impl Fn(i64) -> Option<&'a TaskDefinitionRevisionSpec>,
    running: Option<i64>,
) -> Result<(i64, TaskDefinitionSpec), Unresolved> {
    let family = reference.family;
    let usable = |r: &TaskDefinitionRevisionSpec| {
        r.state == RevisionState::Active || running == Some(r.revision)
    };
    let Some(wanted) = reference.revision else {
        let td = td.ok_or_else(|| {
            Unresolved::NotFound(format!("task definition {family} was not found"))
        })?;
        let latest = match td.latest_revision() {
            LatestRevision::NotJudged => return Err(Unresolved::NotJudged),
            LatestRevision::Invalid(why) => return Err(Unresolved::Invalid(why.to_owned())),
            LatestRevision::Valid(latest) => latest,
        };
        return match recorded(latest) {
            // Deregistering changes nothing for what runs: it keeps its
            // revision; anything else takes the newest ACTIVE one.
            Some(r) if !usable(r) => running
                .and_then(&recorded)
                .into_iter()
                .chain((1..latest).rev().filter_map(&recorded))
                .find(|r| r.state == RevisionState::Active || running == Some(r.revision))
                .map(|r| (r.revision, r.definition.clone()))
                .ok_or_else(|| {
                    Unresolved::Inactive(format!(
                        "every revision of task definition {family} is INACTIVE (deregistered)"
                    ))
                }),
            _ => Ok((latest, td.spec.clone())),
        };
    };
    match recorded(wanted) {
        Some(r) if usable(r) => Ok((wanted, r.definition.clone())),
        Some(_) => Err(Unresolved::Inactive(format!(
            "task definition {reference} is INACTIVE (deregistered): only what already runs it may use it"
        ))),
        None => match td.map(|td| (td, td.latest_revision())) {
            Some((td, LatestRevision::Valid(latest))) if latest == wanted => {
                Ok((wanted, td.spec.clone()))
            }
            Some((td, LatestRevision::NotJudged)) if td.metadata.generation == Some(wanted) => {
                Err(Unresolved::NotJudged)
            }
            _ => Err(Unresolved::NotFound(format!(
                "task definition {reference} was not found"
            ))),
        },
    }
}

/// The record of `td`'s valid revision `revision`: owned by the
/// TaskDefinition, labelled with its family.
#[must_use]
pub fn record_of(td: &TaskDefinition, revision: i64) -> TaskDefinitionRevision {
    let family = td.name_any();
    TaskDefinitionRevision {
        metadata: ObjectMeta {
            name: Some(revision_name(&family, revision)),
            namespace: td.namespace(),
            labels: Some([(labels::TASK_DEFINITION.to_owned(), family.clone())].into()),
            owner_references: td.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: TaskDefinitionRevisionSpec {
            family,
            revision,
            definition: td.spec.clone(),
            state: RevisionState::Active,
        },
    }
}

/// Record `td`'s valid revision `revision`, once: an existing record is
/// left as it is (it may have been made INACTIVE).
///
/// # Errors
/// The API server's, but for the record existing already.
pub async fn record(
    api: &Api<TaskDefinitionRevision>,
    td: &TaskDefinition,
    revision: i64,
) -> Result<(), kube::Error> {
    match api
        .create(&PostParams::default(), &record_of(td, revision))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crds::conditions::{ConditionType, Conditions};
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;

    use super::*;

    fn spec(image: &str) -> TaskDefinitionSpec {
        serde_json::from_value(json!({"containerDefinitions": [{"name": "app", "image": image}]}))
            .expect("a spec")
    }

    /// TaskDefinition `web` at `generation`, judged valid (or not judged).
    fn web(generation: i64, judged: bool) -> TaskDefinition {
        let mut td = TaskDefinition::new("web", spec(&format!("web:{generation}")));
        td.metadata.generation = Some(generation);
        if judged {
            let status = td.status.get_or_insert_default();
            status.observed_generation = Some(generation);
            status.revision = Some(generation);
            Conditions::new(
                &mut status.conditions,
                Some(generation),
                Timestamp::UNIX_EPOCH,
            )
            .set(ConditionType::Valid, true, "Valid", "ok");
        }
        td
    }

    fn revisions(states: &[(i64, RevisionState)]) -> BTreeMap<i64, TaskDefinitionRevisionSpec> {
        states
            .iter()
            .map(|(n, state)| {
                (
                    *n,
                    TaskDefinitionRevisionSpec {
                        family: "web".into(),
                        revision: *n,
                        definition: spec(&format!("web:{n}")),
                        state: *state,
                    },
                )
            })
            .collect()
    }

    fn image(
        resolved: &Result<(i64, TaskDefinitionSpec), Unresolved>,
    ) -> Result<(i64, String), Unresolved> {
        resolved
            .clone()
            .map(|(n, s)| (n, s.container_definitions[0].image.clone()))
    }

    #[test]
    fn references_resolve_as_ecs_resolves_them() {
        use RevisionState::{Active, Inactive};
        let td = web(3, true);
        let all_active = revisions(&[(1, Active), (2, Active), (3, Active)]);
        let latest_inactive = revisions(&[(1, Active), (2, Inactive), (3, Inactive)]);
        let none_active = revisions(&[(1, Inactive), (3, Inactive)]);
        let not_found = |what: &str| {
            Err(Unresolved::NotFound(format!(
                "task definition {what} was not found"
            )))
        };
        // (reference, records, running, resolved)
        let cases = [
            ("web", &all_active, None, Ok((3, "web:3".to_owned()))),
            ("web:1", &all_active, None, Ok((1, "web:1".to_owned()))),
            // The latest is INACTIVE: the newest ACTIVE one, unless the
            // caller already runs the latest.
            ("web", &latest_inactive, None, Ok((1, "web:1".to_owned()))),
            ("web", &latest_inactive, Some(3), Ok((3, "web:3".to_owned()))),
            ("web", &latest_inactive, Some(2), Ok((2, "web:2".to_owned()))),
            (
                "web",
                &none_active,
                None,
                Err(Unresolved::Inactive(
                    "every revision of task definition web is INACTIVE (deregistered)".into(),
                )),
            ),
            (
                "web:2",
                &latest_inactive,
                None,
                Err(Unresolved::Inactive(
                    "task definition web:2 is INACTIVE (deregistered): only what already runs it may use it".into(),
                )),
            ),
            ("web:2", &latest_inactive, Some(2), Ok((2, "web:2".to_owned()))),
            // The latest, not recorded yet: the TaskDefinition's spec.
            ("web:3", &revisions(&[]), None, Ok((3, "web:3".to_owned()))),
            ("web:4", &all_active, None, not_found("web:4")),
            ("web:2", &revisions(&[(1, Active)]), None, not_found("web:2")),
        ];
        for (text, records, running, expected) in cases {
            let resolved = resolve(
                Reference::parse(text),
                Some(&td),
                |n| records.get(&n),
                running,
            );
            assert_eq!(image(&resolved), expected, "{text} running {running:?}");
        }
        let missing = resolve(Reference::parse("web"), None, |_| None, None);
        assert_eq!(
            missing,
            Err(Unresolved::NotFound(
                "task definition web was not found".into()
            ))
        );
        let unjudged = web(4, false);
        for text in ["web", "web:4"] {
            let resolved = resolve(
                Reference::parse(text),
                Some(&unjudged),
                |n| all_active.get(&n),
                None,
            );
            assert_eq!(resolved, Err(Unresolved::NotJudged), "{text}");
        }
        // An older revision stays resolvable while the latest is judged.
        let resolved = resolve(
            Reference::parse("web:2"),
            Some(&unjudged),
            |n| all_active.get(&n),
            None,
        );
        assert_eq!(image(&resolved), Ok((2, "web:2".to_owned())));
    }

    #[test]
    fn a_record_is_owned_by_its_family_and_labelled_with_it() {
        let mut td = web(3, true);
        td.metadata.namespace = Some("prod".into());
        td.metadata.uid = Some("uid-1".into());
        let record = record_of(&td, 3);
        assert_eq!(record.metadata.name.as_deref(), Some("web-3"));
        assert_eq!(record.metadata.namespace.as_deref(), Some("prod"));
        assert_eq!(
            record
                .labels()
                .get(labels::TASK_DEFINITION)
                .map(String::as_str),
            Some("web")
        );
        assert_eq!(record.owner_references()[0].uid, "uid-1");
        assert_eq!(
            (record.spec.revision, record.spec.state),
            (3, RevisionState::Active)
        );
        assert_eq!(record.spec.definition, td.spec);
    }
}
