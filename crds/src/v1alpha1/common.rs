//! Pieces shared by several kinds: placement, environment, conditions.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A `name`/`value` pair, as ECS writes environment variables.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
pub struct KeyValuePair {
    #[schemars(length(min = 1, max = 255))]
    pub name: String,
    #[serde(default)]
    pub value: String,
}

/// How a task is ranked among the instances that can take it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PlacementStrategyType {
    /// Fewest remaining units of `field` (cpu or memory) that still fit.
    Binpack,
    /// Evenly over the values of `field` (instanceId, host or attribute:NAME).
    Spread,
    /// Any instance that fits.
    Random,
}

/// One link of a chained placement strategy, in priority order.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new(
    "self.type != 'binpack' || (has(self.field) && self.field in ['cpu', 'memory'])"
).message("binpack needs field cpu or memory").field_path(".field"))]
#[x_kube(validation = Rule::new(
    "self.type != 'spread' || (has(self.field) && (self.field in ['instanceId', 'host'] || self.field.startsWith('attribute:')))"
).message("spread needs field instanceId, host or attribute:<name>").field_path(".field"))]
#[x_kube(validation = Rule::new("self.type != 'random' || !has(self.field)")
    .message("random takes no field").field_path(".field"))]
pub struct PlacementStrategy {
    #[serde(rename = "type")]
    pub type_: PlacementStrategyType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub field: Option<String>,
}

/// A binding rule on where a task may run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PlacementConstraintType {
    /// Each task of the group on a different instance.
    DistinctInstance,
    /// Only instances that satisfy a cluster query `expression`.
    MemberOf,
}

/// A placement constraint: `distinctInstance`, or `memberOf` with an ECS
/// cluster query expression such as `attribute:ecs.instance-type =~ t2.*`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(validation = Rule::new("self.type != 'memberOf' || has(self.expression)")
    .message("memberOf needs an expression").field_path(".expression"))]
#[x_kube(validation = Rule::new("self.type != 'distinctInstance' || !has(self.expression)")
    .message("distinctInstance takes no expression").field_path(".expression"))]
pub struct PlacementConstraint {
    #[serde(rename = "type")]
    pub type_: PlacementConstraintType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2000))]
    pub expression: Option<String>,
}

/// Names (containers, volumes, instances) that become Docker names, label
/// values and DNS labels: RFC 1123 labels of at most 63 characters.
pub(crate) const DNS1123_LABEL: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// A task definition reference: a family (a DNS-1123 label), optionally
/// with `:<revision>`.
pub(crate) const TASK_DEFINITION_REFERENCE: &str =
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(:[1-9][0-9]{0,9})?$";

/// The CEL rule, applied at the root of a kind, that holds `metadata.name`
/// to a DNS-1123 label: the name becomes a label value on every Task.
pub(crate) const NAME_IS_DNS_LABEL: &str = "size(self.metadata.name) <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')";
