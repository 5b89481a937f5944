//! TaskDefinitionRevision: one registered revision of a task definition
//! family, kept as an immutable snapshot so that a Service or Task may name
//! it (`family:N`), as ECS keeps every revision describable. The
//! TaskDefinition controller records each valid revision as
//! `<family>-<N>`; setting `spec.state: INACTIVE` deregisters it: new
//! services, deployments and tasks can no longer use it, while those that
//! run it keep it.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::task_definition::TaskDefinitionSpec;

/// The spec of a TaskDefinitionRevision.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gantry.dev",
    version = "v1alpha1",
    kind = "TaskDefinitionRevision",
    plural = "taskdefinitionrevisions",
    namespaced,
    shortname = "tdrev",
    category = "gantry",
    printcolumn = r#"{"name":"Family","type":"string","jsonPath":".spec.family"}"#,
    printcolumn = r#"{"name":"Revision","type":"integer","jsonPath":".spec.revision"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".spec.state"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.family == oldSelf.family && self.revision == oldSelf.revision && self.definition == oldSelf.definition")
    .message("a revision is immutable: only its state may change"))]
#[x_kube(validation = Rule::new("oldSelf.state != 'INACTIVE' || self.state == 'INACTIVE'")
    .message("an INACTIVE (deregistered) revision cannot be made ACTIVE again").field_path(".state"))]
pub struct TaskDefinitionRevisionSpec {
    /// The TaskDefinition (family) this is a revision of.
    #[schemars(length(min = 1, max = 63))]
    pub family: String,
    /// Its number: the TaskDefinition's generation it was registered at.
    #[schemars(range(min = 1))]
    pub revision: i64,
    /// The spec as it was registered.
    pub definition: TaskDefinitionSpec,
    /// ACTIVE, or INACTIVE once deregistered (ECS's
    /// `deregister-task-definition`).
    #[serde(default)]
    pub state: RevisionState,
}

/// Whether a revision takes new services, deployments and tasks.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum RevisionState {
    #[default]
    Active,
    Inactive,
}

/// The name of revision `revision` of `family`.
#[must_use]
pub fn revision_name(family: &str, revision: i64) -> String {
    format!("{family}-{revision}")
}

/// A reference to a task definition, as a Service or Task names it:
/// `family` (its latest ACTIVE revision) or `family:N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reference<'a> {
    pub family: &'a str,
    pub revision: Option<i64>,
}

impl<'a> Reference<'a> {
    /// Split `family[:N]`. A suffix that is not a revision number stays
    /// part of the family (which then matches no TaskDefinition: names
    /// cannot hold a colon).
    #[must_use]
    pub fn parse(text: &'a str) -> Self {
        match text.rsplit_once(':') {
            Some((family, n)) => match n.parse::<i64>() {
                Ok(revision) if revision > 0 => Self {
                    family,
                    revision: Some(revision),
                },
                _ => Self {
                    family: text,
                    revision: None,
                },
            },
            None => Self {
                family: text,
                revision: None,
            },
        }
    }
}

impl std::fmt::Display for Reference<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.revision {
            Some(n) => write!(f, "{}:{n}", self.family),
            None => f.write_str(self.family),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_a_family_and_maybe_a_revision() {
        let cases = [
            ("web", "web", None),
            ("web:3", "web", Some(3)),
            ("web:0", "web:0", None),
            ("web:x", "web:x", None),
            ("my-app:12", "my-app", Some(12)),
        ];
        for (text, family, revision) in cases {
            assert_eq!(
                Reference::parse(text),
                Reference { family, revision },
                "{text}"
            );
        }
        assert_eq!(Reference::parse("web:3").to_string(), "web:3");
        assert_eq!(revision_name("web", 3), "web-3");
    }
}
