//! The Docker settings of a container definition beyond image, command and
//! resources, as ECS's container definition names them (`ulimits`,
//! `linuxParameters`, `extraHosts`), with ECS's value rules. The agent maps
//! them onto Docker's container config (agent/src/runtime/docker.rs).

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// An IPv4 or IPv6 address, loosely: digits and dots, or hex and colons.
pub const IP_ADDRESS: &str = r"^([0-9]{1,3}(\.[0-9]{1,3}){3}|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*)$";
/// A host or domain name: DNS labels joined by dots.
pub const HOST_NAME: &str = r"^[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$";

/// A resource limit of the container's processes (Docker `--ulimit`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.softLimit <= self.hardLimit")
    .message("softLimit must not exceed hardLimit").field_path(".softLimit"))]
pub struct Ulimit {
    pub name: UlimitName,
    #[schemars(range(min = 0))]
    pub soft_limit: i64,
    #[schemars(range(min = 0))]
    pub hard_limit: i64,
}

/// The limits ECS accepts.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UlimitName {
    Core,
    Cpu,
    Data,
    Fsize,
    Locks,
    Memlock,
    Msgqueue,
    Nice,
    Nofile,
    Nproc,
    Rss,
    Rtprio,
    Rttime,
    Sigpending,
    Stack,
}

impl UlimitName {
    /// Docker's name for it (`nofile`).
    #[must_use]
    pub fn docker_name(self) -> String {
        serde_name(self)
    }
}

/// The name a unit-like enum value is written as: Docker's name for it.
fn serde_name(value: impl Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Linux-specific settings (ECS's `linuxParameters`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinuxParameters {
    /// Run an init process (Docker `--init`) that reaps zombies and
    /// forwards signals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_process_enabled: Option<bool>,
    /// Kernel capabilities added to or dropped from Docker's default set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<KernelCapabilities>,
    /// The size of `/dev/shm` in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub shared_memory_size: Option<u32>,
    /// tmpfs mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["containerPath".into()]))]
    pub tmpfs: Vec<Tmpfs>,
}

/// Capabilities to add and drop (ECS's `KernelCapabilities`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KernelCapabilities {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 40))]
    pub add: Vec<Capability>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 40))]
    pub drop: Vec<Capability>,
}

/// The capabilities ECS accepts, by Docker's names.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Capability {
    All,
    AuditControl,
    AuditWrite,
    BlockSuspend,
    Chown,
    DacOverride,
    DacReadSearch,
    Fowner,
    Fsetid,
    IpcLock,
    IpcOwner,
    Kill,
    Lease,
    LinuxImmutable,
    MacAdmin,
    MacOverride,
    Mknod,
    NetAdmin,
    NetBindService,
    NetBroadcast,
    NetRaw,
    Setfcap,
    Setgid,
    Setpcap,
    Setuid,
    SysAdmin,
    SysBoot,
    SysChroot,
    SysModule,
    SysNice,
    SysPacct,
    SysPtrace,
    SysRawio,
    SysResource,
    SysTime,
    SysTtyConfig,
    Syslog,
    WakeAlarm,
}

impl Capability {
    /// Docker's name for it (`CHOWN`, `NET_ADMIN`, `ALL`).
    #[must_use]
    pub fn docker_name(self) -> String {
        serde_name(self)
    }
}

/// A tmpfs mount.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tmpfs {
    /// Absolute path in the container.
    #[schemars(length(min = 2, max = 4096), regex(pattern = r"^/"))]
    pub container_path: String,
    /// Its size in MiB.
    #[schemars(range(min = 1))]
    pub size: u32,
    /// Mount options, as ECS lists them (`noexec`, `mode=1777`, …): one
    /// of ECS's, with a value for `mode`, `uid`, `gid`, `nr_inodes`,
    /// `nr_blocks` and `mpol`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), inner(regex(pattern = TMPFS_OPTION)))]
    pub mount_options: Vec<String>,
}

/// What a tmpfs mount option may say.
pub const TMPFS_OPTION: &str = "^(defaults|ro|rw|suid|nosuid|dev|nodev|exec|noexec|sync|async|dirsync|remount|mand|nomand|atime|noatime|diratime|nodiratime|bind|rbind|unbindable|runbindable|private|rprivate|shared|rshared|slave|rslave|relatime|norelatime|strictatime|nostrictatime|(mode|uid|gid|nr_inodes|nr_blocks)=[0-9]+[kmg%]?|mpol=[a-z:0-9,-]+)$";

/// A line for the container's `/etc/hosts` (ECS's `HostEntry`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostEntry {
    #[schemars(length(min = 1, max = 253), regex(pattern = HOST_NAME))]
    pub hostname: String,
    #[schemars(length(min = 2, max = 45), regex(pattern = IP_ADDRESS))]
    pub ip_address: String,
}

/// A container whose volumes another mounts (ECS's `VolumeFrom`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeFrom {
    /// Another container of the task.
    #[schemars(length(min = 1, max = 63))]
    pub source_container: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

/// Where a container's output goes (ECS's `logConfiguration`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "self.logDriver != 'json-file' || !has(self.options) || self.options.all(k, k in ['max-size', 'max-file', 'compress', 'labels', 'labels-regex', 'env', 'env-regex', 'tag'])"
).message("json-file takes max-size, max-file, compress, labels, labels-regex, env, env-regex and tag").field_path(".options"))]
#[x_kube(validation = Rule::new(
    "self.logDriver != 'local' || !has(self.options) || self.options.all(k, k in ['max-size', 'max-file', 'compress'])"
).message("local takes max-size, max-file and compress").field_path(".options"))]
#[x_kube(validation = Rule::new("self.logDriver != 'none' || !has(self.options) || size(self.options) == 0")
    .message("the none driver takes no options").field_path(".options"))]
#[x_kube(validation = Rule::new(
    "!has(self.options) || ((!('max-size' in self.options) || self.options['max-size'].matches('^[0-9]+[kmg]?$')) && (!('max-file' in self.options) || self.options['max-file'].matches('^[1-9][0-9]*$')) && (!('compress' in self.options) || self.options['compress'] in ['true', 'false']))"
).message("max-size is a size (10m), max-file a count of at least 1, compress true or false").field_path(".options"))]
pub struct LogConfiguration {
    pub log_driver: LogDriver,
    /// The driver's options, as `docker run --log-opt` takes them
    /// (`max-size: 10m`, `max-file: "3"` for rotation).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[schemars(length(max = 50))]
    pub options: std::collections::BTreeMap<String, String>,
}

/// The log drivers a Docker engine has built in, by Docker's names; ECS's
/// (`awsfirelens` aside) and `local`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LogDriver {
    JsonFile,
    Local,
    Journald,
    Syslog,
    Gelf,
    Fluentd,
    Awslogs,
    Splunk,
    None,
}

impl LogDriver {
    /// Docker's name for it (`json-file`).
    #[must_use]
    pub fn docker_name(self) -> String {
        serde_name(self)
    }
}
