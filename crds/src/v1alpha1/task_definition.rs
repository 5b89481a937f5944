//! TaskDefinition: the blueprint of a task, one ECS task definition family.
//!
//! The object's name is the family; every change of its spec is a new
//! revision, counted by `metadata.generation` and reported in
//! `status.revision`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{DNS1123_LABEL, KeyValuePair, NAME_IS_DNS_LABEL, PlacementConstraint};
use crate::conditions::ConditionType;

/// The spec of a TaskDefinition, as in `aws ecs register-task-definition`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gantry.dev",
    version = "v1alpha1",
    kind = "TaskDefinition",
    plural = "taskdefinitions",
    namespaced,
    status = "TaskDefinitionStatus",
    shortname = "td",
    shortname = "taskdef",
    category = "gantry",
    printcolumn = r#"{"name":"Revision","type":"integer","jsonPath":".metadata.generation"}"#,
    printcolumn = r#"{"name":"Valid","type":"string","jsonPath":".status.conditions[?(@.type==\"Valid\")].status"}"#,
    printcolumn = r#"{"name":"Network","type":"string","jsonPath":".spec.networkMode"}"#,
    printcolumn = r#"{"name":"CPU","type":"integer","jsonPath":".spec.cpu"}"#,
    printcolumn = r#"{"name":"Memory","type":"integer","jsonPath":".spec.memory"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new(NAME_IS_DNS_LABEL).message("metadata.name must be a DNS-1123 label of at most 63 characters (a-z, 0-9, '-'): it names the task definition family")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.containerDefinitions.exists(c, c.essential)")
    .message("at least one container must be essential").field_path(".containerDefinitions"))]
#[x_kube(validation = Rule::new(
    "self.containerDefinitions.all(c, !has(c.portMappings) || c.portMappings.all(p, p.hostPort == 0 || (self.containerDefinitions.filter(d, has(d.portMappings) && d.portMappings.exists(q, q.hostPort == p.hostPort && q.protocol == p.protocol)).size() == 1 && c.portMappings.filter(q, q.hostPort == p.hostPort && q.protocol == p.protocol).size() == 1)))"
).message("hostPort must be unique within a task (per protocol)").field_path(".containerDefinitions"))]
#[x_kube(validation = Rule::new(
    "self.networkMode != 'host' || self.containerDefinitions.all(c, !has(c.portMappings) || c.portMappings.all(p, p.hostPort == 0 || p.hostPort == p.containerPort))"
).message("in host network mode hostPort must be omitted, 0, or equal to containerPort").field_path(".containerDefinitions"))]
#[x_kube(validation = Rule::new(
    "self.networkMode != 'none' || self.containerDefinitions.all(c, !has(c.portMappings) || size(c.portMappings) == 0)"
).message("networkMode none takes no portMappings").field_path(".containerDefinitions"))]
#[x_kube(validation = Rule::new(
    "self.networkMode != 'host' || self.containerDefinitions.all(c, !has(c.hostname))"
).message("hostname cannot be set with networkMode host: the host's name is used").field_path(".containerDefinitions"))]
#[x_kube(validation = Rule::new(
    "has(self.memory) || self.containerDefinitions.all(c, has(c.memory) || has(c.memoryReservation))"
).message("set task-level memory, or memory or memoryReservation on every container").field_path(".memory"))]
#[x_kube(validation = Rule::new(
    "self.containerDefinitions.all(c, !has(c.dependsOn) || c.dependsOn.all(d, d.containerName != c.name && self.containerDefinitions.exists(e, e.name == d.containerName)))"
).message("dependsOn must name another container of this task definition").field_path(".containerDefinitions"))]
#[x_kube(validation = Rule::new(
    "self.containerDefinitions.all(c, !has(c.dependsOn) || c.dependsOn.all(d, !(d.condition in ['COMPLETE', 'SUCCESS']) || self.containerDefinitions.exists(e, e.name == d.containerName && !e.essential)))"
).message("a COMPLETE or SUCCESS dependency must be on a non-essential container").field_path(".containerDefinitions"))]
#[x_kube(validation = Rule::new(
    "self.containerDefinitions.all(c, !has(c.dependsOn) || c.dependsOn.all(d, d.condition != 'HEALTHY' || self.containerDefinitions.exists(e, e.name == d.containerName && has(e.healthCheck))))"
).message("a HEALTHY dependency must be on a container with a healthCheck").field_path(".containerDefinitions"))]
#[x_kube(validation = Rule::new(
    "self.containerDefinitions.all(c, !has(c.mountPoints) || c.mountPoints.all(m, has(self.volumes) && self.volumes.exists(v, v.name == m.sourceVolume)))"
).message("mountPoints[].sourceVolume must name one of volumes[]").field_path(".volumes"))]
#[x_kube(validation = Rule::new(
    "self.containerDefinitions.all(c, !has(c.volumesFrom) || c.volumesFrom.all(v, v.sourceContainer != c.name && self.containerDefinitions.exists(e, e.name == v.sourceContainer)))"
).message("volumesFrom[].sourceContainer must name another container of this task definition").field_path(".containerDefinitions"))]
#[x_kube(validation = Rule::new("!has(self.placementConstraints) || self.placementConstraints.all(p, p.type == 'memberOf')")
    .message("a task definition allows only memberOf constraints").field_path(".placementConstraints"))]
pub struct TaskDefinitionSpec {
    /// The containers of the task, 1 to 10, names unique.
    #[schemars(length(min = 1, max = 10))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub container_definitions: Vec<ContainerDefinition>,

    /// Volumes the containers may mount.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub volumes: Vec<Volume>,

    /// Task-level CPU units (1024 = one vCPU); when set it is what placement
    /// reserves instead of the containers' sum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 128, max = 196_608))]
    pub cpu: Option<u32>,

    /// Task-level memory in MiB; when set it is what placement reserves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 6))]
    pub memory: Option<u32>,

    /// Docker networking of the task's containers.
    #[serde(default)]
    pub network_mode: NetworkMode,

    /// `memberOf` constraints every task of this definition obeys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub placement_constraints: Vec<PlacementConstraint>,
}

/// Docker network mode for every container of a task.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Docker's bridge network; host ports are mapped, 0 picks one.
    #[default]
    Bridge,
    /// The host's network stack; container ports are host ports.
    Host,
    /// No network but loopback; no port mappings.
    None,
}

/// One container of a task definition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.memoryReservation) || !has(self.memory) || self.memoryReservation <= self.memory"
).message("memoryReservation must not exceed memory").field_path(".memoryReservation"))]
pub struct ContainerDefinition {
    /// Unique within the task; a DNS-1123 label.
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS1123_LABEL))]
    pub name: String,

    /// Image reference, e.g. `busybox:stable` or `registry.local/web:1.2`.
    #[schemars(length(min = 1, max = 255))]
    pub image: String,

    /// When the agent pulls the image: `IfNotPresent` (the default: only
    /// when the host lacks it) or `Always` (at every container start, so
    /// that a moving tag such as `:latest` is refreshed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,

    /// Credentials for a private registry, as ECS's
    /// `repositoryCredentials`: a Secret of type
    /// `kubernetes.io/dockerconfigjson` in the task's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_credentials: Option<RepositoryCredentials>,

    /// CPU units reserved (1024 = one vCPU); Docker CPU shares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 196_608))]
    pub cpu: Option<u32>,

    /// Hard memory limit in MiB: the container is killed above it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 6))]
    pub memory: Option<u32>,

    /// Soft memory limit in MiB; when set, what placement reserves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 6))]
    pub memory_reservation: Option<u32>,

    /// When an essential container stops, the whole task stops.
    #[serde(default = "default_true")]
    pub essential: bool,

    /// Docker `Cmd`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub command: Vec<String>,

    /// Docker `Entrypoint`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub entry_point: Vec<String>,

    /// Environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub environment: Vec<KeyValuePair>,

    /// Files of `NAME=VALUE` lines (`#` comments and blank lines skipped)
    /// whose variables the container gets, as ECS's `environmentFiles`
    /// (there from S3): each a ConfigMap key in the task's namespace.
    /// `environment` wins over them, and `secrets` over both.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub environment_files: Vec<EnvironmentFile>,

    /// Environment variables whose values the agent reads from a Secret
    /// or ConfigMap key in the task's namespace when the container starts,
    /// as ECS's `secrets` read Secrets Manager: the value is never in the
    /// TaskDefinition, the Task or its status.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub secrets: Vec<SecretReference>,

    /// Ports to publish on the host. Bounded so that the hostPort
    /// uniqueness rule stays within the API server's CEL cost budget.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["containerPort".into(), "protocol".into()]))]
    pub port_mappings: Vec<PortMapping>,

    /// A Docker health check whose result the task and service act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,

    /// Containers that must reach a condition before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["containerName".into()]))]
    pub depends_on: Vec<ContainerDependency>,

    /// Seconds a container that others depend on (COMPLETE, SUCCESS or
    /// HEALTHY) has, from its start, to reach the condition; past it, its
    /// dependents give up and the task stops. Unset: they wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 120))]
    pub start_timeout: Option<u32>,

    /// Seconds between SIGTERM and SIGKILL when the container is stopped.
    #[serde(default = "default_stop_timeout")]
    #[schemars(range(min = 0, max = 3600))]
    pub stop_timeout: u32,

    /// Volumes mounted into the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["containerPath".into()]))]
    pub mount_points: Vec<MountPoint>,

    /// Every volume of other containers of the task, mounted where they
    /// mount them (Docker `VolumesFrom`); a source is created first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["sourceContainer".into()]))]
    pub volumes_from: Vec<super::VolumeFrom>,

    /// The user the process runs as (Docker `User`): `user`, `uid`,
    /// `user:group`, `uid:gid`, `user:gid` or `uid:group`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub user: Option<String>,

    /// The directory the command runs in (Docker `WorkingDir`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096), regex(pattern = r"^/"))]
    pub working_directory: Option<String>,

    /// Resource limits of its processes (Docker `--ulimit`), one per name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 15))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub ulimits: Vec<super::Ulimit>,

    /// Elevated privileges on the host (Docker `--privileged`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub privileged: bool,

    /// Mount the root filesystem read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub readonly_root_filesystem: bool,

    /// Init process, capabilities, `/dev/shm` size and tmpfs mounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux_parameters: Option<super::LinuxParameters>,

    /// Labels on the container (Docker `Labels`); keys under
    /// `gantry.dev/` are the agent's own.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[schemars(length(max = 100))]
    #[x_kube(validation = Rule::new("self.all(k, !k.startsWith('gantry.dev/') && size(k) <= 255)")
        .message("dockerLabels keys are at most 255 characters and not under gantry.dev/, the agent's own"))]
    pub docker_labels: std::collections::BTreeMap<String, String>,

    /// Name servers for the container's `/etc/resolv.conf` (at most 3, as
    /// resolv.conf reads).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 3), inner(regex(pattern = super::IP_ADDRESS)))]
    pub dns_servers: Vec<String>,

    /// Search domains for `/etc/resolv.conf` (at most 6).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 6), inner(length(max = 253), regex(pattern = super::HOST_NAME)))]
    pub dns_search_domains: Vec<String>,

    /// Extra lines of `/etc/hosts`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub extra_hosts: Vec<super::HostEntry>,

    /// The container's host name; not with `networkMode: host`, whose
    /// host name is the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = super::HOST_NAME))]
    pub hostname: Option<String>,

    /// Where its output goes: a Docker log driver and its options. Unset:
    /// the engine's default driver. `gantry logs` reads `json-file`,
    /// `local` and `journald`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_configuration: Option<super::LogConfiguration>,
}

/// When to pull a container's image.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ImagePullPolicy {
    /// Only when the host does not have it.
    #[default]
    IfNotPresent,
    /// At every container start.
    Always,
}

/// Where a private registry's credentials are.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryCredentials {
    /// The name of a Secret of type `kubernetes.io/dockerconfigjson`.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS1123_SUBDOMAIN))]
    pub credentials_parameter: String,
}

/// A Kubernetes object name.
const DNS1123_SUBDOMAIN: &str = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$";

/// An environment file: a ConfigMap key holding `NAME=VALUE` lines.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentFile {
    /// `configmap:NAME:KEY`.
    #[schemars(length(max = 512), regex(pattern = ENVIRONMENT_FILE))]
    pub value: String,
    /// Where it is kept: `configmap` (ECS's is `s3`).
    #[serde(default, rename = "type")]
    pub type_: EnvironmentFileType,
}

/// Where an environment file is kept.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EnvironmentFileType {
    #[default]
    Configmap,
}

/// What an environment file's `value` may say.
pub const ENVIRONMENT_FILE: &str = r"^configmap:[a-z0-9]([-a-z0-9.]*[a-z0-9])?:[-._a-zA-Z0-9]+$";

impl EnvironmentFile {
    /// The ConfigMap and key it names; `None` when it does not have the
    /// shape the schema requires.
    #[must_use]
    pub fn source(&self) -> Option<(&str, &str)> {
        let rest = self.value.strip_prefix("configmap:")?;
        let (name, key) = rest.split_once(':')?;
        (!name.is_empty() && !key.is_empty()).then_some((name, key))
    }

    /// The variables of an environment file's text, in order: `NAME=VALUE`
    /// lines, skipping blank lines, `#` comments and lines without `=`.
    #[must_use]
    pub fn parse(text: &str) -> Vec<(String, String)> {
        text.lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .filter_map(|line| line.split_once('='))
            .filter(|(name, _)| !name.trim().is_empty())
            .map(|(name, value)| (name.trim().to_owned(), value.to_owned()))
            .collect()
    }
}

/// An environment variable set from a Secret or ConfigMap key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    /// The environment variable.
    #[schemars(length(min = 1, max = 255))]
    pub name: String,
    /// `secret:NAME:KEY` or `configmap:NAME:KEY`: a key of a Secret or
    /// ConfigMap in the task's namespace.
    #[schemars(length(max = 512), regex(pattern = SECRET_SOURCE))]
    pub value_from: String,
}

/// What `valueFrom` may say: the kind, a DNS-1123 subdomain (an object
/// name) and a data key (Kubernetes' `[-._a-zA-Z0-9]+`).
pub const SECRET_SOURCE: &str =
    r"^(secret|configmap):[a-z0-9]([-a-z0-9.]*[a-z0-9])?:[-._a-zA-Z0-9]+$";

/// Where a secret's value is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretSource {
    Secret,
    ConfigMap,
}

impl SecretReference {
    /// The kind, object name and key `valueFrom` names; `None` when it
    /// does not have the shape the schema requires.
    #[must_use]
    pub fn source(&self) -> Option<(SecretSource, &str, &str)> {
        let mut parts = self.value_from.splitn(3, ':');
        let kind = match parts.next()? {
            "secret" => SecretSource::Secret,
            "configmap" => SecretSource::ConfigMap,
            _ => return None,
        };
        let (name, key) = (parts.next()?, parts.next()?);
        (!name.is_empty() && !key.is_empty()).then_some((kind, name, key))
    }
}

/// ECS's default: a container is essential unless it says otherwise.
pub const DEFAULT_ESSENTIAL: bool = true;
/// ECS's default `stopTimeout` (and the agent's `ECS_CONTAINER_STOP_TIMEOUT`).
pub const DEFAULT_STOP_TIMEOUT_SECONDS: u32 = 30;

fn default_true() -> bool {
    DEFAULT_ESSENTIAL
}

fn default_stop_timeout() -> u32 {
    DEFAULT_STOP_TIMEOUT_SECONDS
}

/// Transport protocol of a port mapping.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

/// A container port published on the host.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    #[schemars(range(min = 1, max = 65535))]
    pub container_port: u16,
    /// Host port; 0 (the default) lets the host pick a free one.
    #[serde(default)]
    #[schemars(range(min = 0, max = 65535))]
    pub host_port: u16,
    #[serde(default)]
    pub protocol: Protocol,
}

/// A container health check, as Docker runs it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.command[0] in ['CMD', 'CMD-SHELL']")
    .message("healthCheck.command must start with CMD or CMD-SHELL").field_path(".command"))]
pub struct HealthCheck {
    /// `["CMD", "exe", "arg"]` or `["CMD-SHELL", "shell command"]`.
    #[schemars(length(min = 2, max = 256))]
    pub command: Vec<String>,
    /// Seconds between checks.
    #[serde(default = "default_interval")]
    #[schemars(range(min = 5, max = 300))]
    pub interval: u32,
    /// Seconds before one check counts as failed.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 2, max = 60))]
    pub timeout: u32,
    /// Consecutive failures before the container is UNHEALTHY.
    #[serde(default = "default_retries")]
    #[schemars(range(min = 1, max = 10))]
    pub retries: u32,
    /// Grace period in seconds during which failures are not counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 300))]
    pub start_period: Option<u32>,
}

fn default_interval() -> u32 {
    30
}
fn default_timeout() -> u32 {
    5
}
fn default_retries() -> u32 {
    3
}

/// What a dependency must reach before the dependent container starts.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum DependencyCondition {
    /// The dependency has started.
    Start,
    /// The dependency has exited (any code).
    Complete,
    /// The dependency has exited with code 0.
    Success,
    /// The dependency's health check passed.
    Healthy,
}

/// One `dependsOn` entry.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDependency {
    #[schemars(length(min = 1, max = 63))]
    pub container_name: String,
    pub condition: DependencyCondition,
}

/// A volume of the task: a host path (`host`), a Docker volume
/// (`dockerVolumeConfiguration`), or, with neither, a local Docker volume
/// of the task's own.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.host) || !has(self.dockerVolumeConfiguration)")
    .message("a volume is a host path or a Docker volume, not both").field_path(".dockerVolumeConfiguration"))]
pub struct Volume {
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS1123_LABEL))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostVolume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_volume_configuration: Option<DockerVolumeConfiguration>,
}

/// A Docker volume (ECS's `dockerVolumeConfiguration`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.autoprovision) || !self.autoprovision || (has(self.scope) && self.scope == 'shared')")
    .message("autoprovision applies to shared volumes only").field_path(".autoprovision"))]
pub struct DockerVolumeConfiguration {
    /// `task`: made when the task starts, removed when it stops, named
    /// for the task. `shared`: named by the volume's `name`, kept after
    /// the task.
    #[serde(default)]
    pub scope: VolumeScope,
    /// Create a shared volume missing on the host; otherwise the task
    /// fails to start without it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub autoprovision: bool,
    /// The volume driver (Docker's default: `local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 255),
        regex(pattern = r"^[A-Za-z0-9][-A-Za-z0-9_./:]*$")
    )]
    pub driver: Option<String>,
    /// The driver's options (`type`, `device`, `o` for `local`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[schemars(length(max = 50))]
    pub driver_opts: std::collections::BTreeMap<String, String>,
    /// Labels on the volume; keys under `gantry.dev/` are the agent's.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[schemars(length(max = 50))]
    #[x_kube(validation = Rule::new("self.all(k, !k.startsWith('gantry.dev/'))")
        .message("labels under gantry.dev/ are the agent's own"))]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// How long a Docker volume lives.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VolumeScope {
    #[default]
    Task,
    Shared,
}

/// A bind mount from the host.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostVolume {
    /// Absolute path on the host.
    #[schemars(length(min = 1, max = 4096), regex(pattern = "^/"))]
    pub source_path: String,
}

/// Where a volume appears inside a container.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MountPoint {
    #[schemars(length(min = 1, max = 63))]
    pub source_volume: String,
    #[schemars(length(min = 1, max = 4096), regex(pattern = "^/"))]
    pub container_path: String,
    #[serde(default)]
    pub read_only: bool,
}

/// What the controller observed of a TaskDefinition.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskDefinitionStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The revision new tasks run: the generation of the last valid spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// `Valid`: whether the latest spec can be run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// What a TaskDefinition offers new tasks, as its controller judged it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatestRevision<'a> {
    /// The latest spec is not judged yet: its status will follow.
    NotJudged,
    /// The latest spec can run, as this revision.
    Valid(i64),
    /// The latest spec cannot run: the `Valid` condition's message says why.
    Invalid(&'a str),
}

impl TaskDefinitionSpec {
    /// Container sizes that do not fit the task's own: the containers'
    /// CPU above the task's, a container's memory above the task's, or
    /// their reservations above it.
    #[must_use]
    pub fn size_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let containers = &self.container_definitions;
        if let Some(cpu) = self.cpu {
            let sum: u32 = containers.iter().filter_map(|c| c.cpu).sum();
            if sum > cpu {
                problems.push(format!(
                    "containerDefinitions: the containers' cpu ({sum}) exceeds the task's ({cpu})"
                ));
            }
        }
        if let Some(memory) = self.memory {
            for (i, c) in containers.iter().enumerate() {
                if let Some(m) = c.memory.filter(|m| *m > memory) {
                    problems.push(format!(
                        "containerDefinitions[{i}].memory: {m} MiB exceeds the task's {memory} MiB"
                    ));
                }
            }
            let reserved: u32 = containers.iter().filter_map(|c| c.memory_reservation).sum();
            if reserved > memory {
                problems.push(format!(
                    "containerDefinitions: the containers' memoryReservation ({reserved} MiB) exceeds the task's {memory} MiB"
                ));
            }
        }
        problems
    }
}

impl TaskDefinition {
    /// Whether the latest spec is a valid revision. Tasks run only the
    /// latest spec, as ECS runs the revision a service names: an older
    /// valid revision is no fallback for an invalid newer spec.
    #[must_use]
    pub fn latest_revision(&self) -> LatestRevision<'_> {
        let generation = self.metadata.generation;
        let Some(status) = self.status.as_ref() else {
            return LatestRevision::NotJudged;
        };
        if status.observed_generation != generation {
            return LatestRevision::NotJudged;
        }
        let valid = crate::conditions::find(&status.conditions, ConditionType::Valid);
        match (status.revision, valid) {
            (Some(revision), Some(c)) if Some(revision) == generation && c.status == "True" => {
                LatestRevision::Valid(revision)
            }
            (_, c) => LatestRevision::Invalid(c.map_or("", |c| c.message.as_str())),
        }
    }
}
