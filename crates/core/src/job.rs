//! The job descriptor (what a user asks for) and the stored job, after Titus' v3 REST model.
//!
//! Field names and shapes follow Titus' `JobDescriptor` message under protobuf's proto3 JSON
//! mapping: camelCase, `memoryMB`/`diskMB`, a `oneof` as the one member that is set
//! (`{"immediate": {"retries": 2}}`), numbers as JSON numbers or strings, `null` or an absent
//! field as the field's default (see [`crate::proto_json`]). Every field of Titus' final
//! descriptor is here; validation refuses the ones the platform cannot act on when ignoring them
//! would mislead. [`crate::parse_descriptor`] refuses unknown fields, listing all of them.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::JobId;
use crate::proto_json::{self, Unsupported};

/// Titus' default kill grace period: SIGTERM, then SIGKILL after this many seconds.
pub const DEFAULT_KILL_GRACE_PERIOD_SEC: u32 = 10;
/// Titus' default batch runtime limit: five days.
pub const DEFAULT_RUNTIME_LIMIT_SEC: u64 = 5 * 24 * 3600;
/// The capacity group a job lands in when it names none.
pub const DEFAULT_CAPACITY_GROUP: &str = "DEFAULT";
/// The tag used when an image names neither a tag nor a digest.
pub const DEFAULT_IMAGE_TAG: &str = "latest";
/// Titus' default size of a container's `/dev/shm`.
pub const DEFAULT_SHM_SIZE_MB: u32 = 64;

/// Everything a user submits to create a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobDescriptor {
    #[serde(default, deserialize_with = "proto_json::or_default")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub owner: Owner,
    #[serde(default, deserialize_with = "proto_json::string")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub application_name: String,
    /// `DEFAULT` when absent or empty.
    #[serde(
        default = "default_capacity_group",
        deserialize_with = "capacity_group"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub capacity_group: String,
    #[serde(default, deserialize_with = "proto_json::or_default")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub job_group_info: JobGroupInfo,
    #[serde(default, deserialize_with = "proto_json::string_map")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub attributes: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "proto_json::or_default")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub container: Container,
    /// Set for a batch job; exactly one of `batch` and `service` is set.
    #[serde(
        default,
        deserialize_with = "proto_json::optional",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub batch: Option<BatchJobSpec>,
    /// Set for a service job; exactly one of `batch` and `service` is set.
    #[serde(
        default,
        deserialize_with = "proto_json::optional",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub service: Option<ServiceJobSpec>,
    /// How many of the job's tasks may be disrupted at once. Stored and returned; the platform
    /// does not evict tasks yet, so nothing enforces it.
    #[serde(
        default,
        deserialize_with = "proto_json::optional",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub disruption_budget: Option<Box<DisruptionBudget>>,
    /// The task's network stack. Tasks get IPv4 on the agent's Docker network; `Ipv6Only` is
    /// refused.
    #[serde(
        default,
        deserialize_with = "proto_json::optional",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub network_configuration: Option<NetworkConfiguration>,
    /// Refused when not empty: a task is one container.
    #[serde(
        default,
        deserialize_with = "proto_json::unsupported_list",
        skip_serializing_if = "Unsupported::is_unset"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable, value_type = Vec<Object>))]
    pub extra_containers: Unsupported,
    /// Refused when not empty: the platform has no shared or SaaS volumes.
    #[serde(
        default,
        deserialize_with = "proto_json::unsupported_list",
        skip_serializing_if = "Unsupported::is_unset"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable, value_type = Vec<Object>))]
    pub volumes: Unsupported,
    /// Refused when not empty: the platform runs no sidecars.
    #[serde(
        default,
        deserialize_with = "proto_json::unsupported_list",
        skip_serializing_if = "Unsupported::is_unset"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable, value_type = Vec<Object>))]
    pub platform_sidecars: Unsupported,
}

fn capacity_group<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let group = proto_json::string(deserializer)?;
    Ok(if group.is_empty() {
        default_capacity_group()
    } else {
        group
    })
}

fn default_capacity_group() -> String {
    DEFAULT_CAPACITY_GROUP.to_owned()
}

impl JobDescriptor {
    /// The job's type, or `None` when the descriptor sets neither or both sections (validation
    /// reports that case).
    pub fn job_type(&self) -> Option<JobType> {
        match (&self.batch, &self.service) {
            (Some(_), None) => Some(JobType::Batch),
            (None, Some(_)) => Some(JobType::Service),
            _ => None,
        }
    }

    /// Gives fields a proto3 client left at zero the defaults Titus gives them: the minimum
    /// resources, a 64 MB `/dev/shm`, a five-day runtime limit.
    pub fn apply_defaults(&mut self) {
        let resources = &mut self.container.resources;
        let defaults = ContainerResources::default();
        if resources.cpu == 0.0 {
            resources.cpu = defaults.cpu;
        }
        if resources.memory_mb == 0 {
            resources.memory_mb = defaults.memory_mb;
        }
        if resources.disk_mb == 0 {
            resources.disk_mb = defaults.disk_mb;
        }
        if resources.network_mbps == 0 {
            resources.network_mbps = defaults.network_mbps;
        }
        if resources.shm_size_mb == 0 {
            resources.shm_size_mb = DEFAULT_SHM_SIZE_MB;
        }
        if let Some(batch) = &mut self.batch {
            if batch.runtime_limit_sec == 0 {
                batch.runtime_limit_sec = DEFAULT_RUNTIME_LIMIT_SEC;
            }
        }
    }

    /// How many tasks the job starts with: the batch size, or the service's desired capacity.
    pub fn initial_task_count(&self) -> u32 {
        match (&self.batch, &self.service) {
            (Some(batch), _) => batch.size,
            (None, Some(service)) if service.enabled => service.capacity.desired,
            _ => 0,
        }
    }
}

/// Batch or service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum JobType {
    Batch,
    Service,
}

impl JobType {
    pub const ALL: [JobType; 2] = [JobType::Batch, JobType::Service];

    pub fn as_str(self) -> &'static str {
        match self {
            JobType::Batch => "batch",
            JobType::Service => "service",
        }
    }

    /// Parses `batch` or `service`, ignoring case.
    pub fn parse(text: &str) -> Option<JobType> {
        JobType::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(text))
    }
}

impl fmt::Display for JobType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Owner {
    #[serde(default, deserialize_with = "proto_json::string")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub team_email: String,
}

/// Titus' stack/detail/sequence naming of a job's group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobGroupInfo {
    #[serde(default, deserialize_with = "proto_json::string")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub stack: String,
    #[serde(default, deserialize_with = "proto_json::string")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub detail: String,
    #[serde(default, deserialize_with = "proto_json::string")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub sequence: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Container {
    #[serde(default, deserialize_with = "proto_json::or_default")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub resources: ContainerResources,
    #[serde(default, deserialize_with = "proto_json::or_default")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub security_profile: SecurityProfile,
    #[serde(default, deserialize_with = "proto_json::or_default")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub image: Image,
    /// Titus' container attributes: stored and returned.
    #[serde(
        default,
        deserialize_with = "proto_json::string_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub attributes: BTreeMap<String, String>,
    /// Replaces the image's ENTRYPOINT when not empty.
    #[serde(default, deserialize_with = "proto_json::list")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub entry_point: Vec<String>,
    /// Replaces the image's CMD when not empty.
    #[serde(default, deserialize_with = "proto_json::list")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub command: Vec<String>,
    #[serde(default, deserialize_with = "proto_json::string_map")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub env: BTreeMap<String, String>,
    /// Environment variables whose values are secrets, by reference: the variable's name mapped
    /// to an SSM parameter ARN (`arn:aws:ssm:{region}:{account}:parameter/{name}`, SecureString
    /// or String) or a Secrets Manager secret ARN (`arn:aws:secretsmanager:…:secret:{name}`).
    /// The agent resolves them when it launches the task, with the task's IAM role when it has
    /// one; their values are never stored, returned or logged by the platform.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "proto_json::or_default")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub soft_constraints: Constraints,
    #[serde(default, deserialize_with = "proto_json::or_default")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub hard_constraints: Constraints,
    /// Titus' `google.protobuf.Any` of experimental settings: refused when set.
    #[serde(
        default,
        deserialize_with = "proto_json::unsupported_message",
        skip_serializing_if = "Unsupported::is_unset"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable, value_type = Option<Object>))]
    pub experimental: Unsupported,
    /// Refused when not empty: the platform has no volumes to mount.
    #[serde(
        default,
        deserialize_with = "proto_json::unsupported_list",
        skip_serializing_if = "Unsupported::is_unset"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable, value_type = Vec<Object>))]
    pub volume_mounts: Unsupported,
    /// Seconds between SIGTERM and SIGKILL when the task is killed.
    #[serde(default = "default_kill_grace_period_sec")]
    pub kill_grace_period_sec: u32,
    /// Asks for a privileged container; refused unless the platform's configuration allows it.
    #[serde(default)]
    pub privileged: bool,
    /// Asks for the host's network namespace; refused unless configuration allows it.
    #[serde(default)]
    pub host_network: bool,
    /// Host paths to mount; refused unless configuration allows them.
    #[serde(default, deserialize_with = "proto_json::messages")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub host_mounts: Vec<HostMount>,
    /// How the task's processes run: their user, a read-only root file system, capabilities
    /// beyond the platform's default set.
    #[serde(
        default,
        deserialize_with = "proto_json::or_default",
        skip_serializing_if = "SecurityContext::is_default"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub security_context: SecurityContext,
}

fn default_kill_grace_period_sec() -> u32 {
    DEFAULT_KILL_GRACE_PERIOD_SEC
}

impl Default for Container {
    fn default() -> Self {
        Container {
            resources: ContainerResources::default(),
            security_profile: SecurityProfile::default(),
            image: Image::default(),
            attributes: BTreeMap::new(),
            entry_point: Vec::new(),
            command: Vec::new(),
            env: BTreeMap::new(),
            secrets: BTreeMap::new(),
            soft_constraints: Constraints::default(),
            hard_constraints: Constraints::default(),
            experimental: Unsupported::default(),
            volume_mounts: Unsupported::default(),
            kill_grace_period_sec: DEFAULT_KILL_GRACE_PERIOD_SEC,
            privileged: false,
            host_network: false,
            host_mounts: Vec::new(),
            security_context: SecurityContext::default(),
        }
    }
}

/// A container's share of its host. Defaults are Titus' minimums; a zero (proto3's "not set")
/// takes the default too.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerResources {
    #[serde(
        default = "ContainerResources::default_cpu",
        deserialize_with = "proto_json::f64"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub cpu: f64,
    #[serde(default, deserialize_with = "proto_json::u32")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub gpu: u32,
    #[serde(
        rename = "memoryMB",
        default = "ContainerResources::default_memory_mb",
        deserialize_with = "proto_json::u64"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub memory_mb: u64,
    #[serde(
        rename = "diskMB",
        default = "ContainerResources::default_disk_mb",
        deserialize_with = "proto_json::u64"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub disk_mb: u64,
    #[serde(
        default = "ContainerResources::default_network_mbps",
        deserialize_with = "proto_json::u64"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub network_mbps: u64,
    /// The size of the container's `/dev/shm`, at most `memoryMB`; 64 when absent or zero.
    #[serde(
        rename = "shmSizeMB",
        default = "ContainerResources::default_shm_size_mb",
        deserialize_with = "proto_json::u32"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub shm_size_mb: u32,
    /// Titus' request for a routable IP of the task's own. Stored and returned: every task has
    /// an address of its own on the agent's Docker network either way.
    #[serde(
        rename = "allocateIP",
        default,
        deserialize_with = "proto_json::bool",
        skip_serializing_if = "std::ops::Not::not"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub allocate_ip: bool,
    /// Refused when not empty: the agent mounts no EFS file systems.
    #[serde(
        default,
        deserialize_with = "proto_json::unsupported_list",
        skip_serializing_if = "Unsupported::is_unset"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable, value_type = Vec<Object>))]
    pub efs_mounts: Unsupported,
    /// Refused when not empty: the platform assigns no static IP addresses.
    #[serde(
        default,
        deserialize_with = "proto_json::unsupported_list",
        skip_serializing_if = "Unsupported::is_unset"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable, value_type = Vec<Object>))]
    pub signed_address_allocations: Unsupported,
    /// Titus' static IP pool (a `oneof` with `staticIPAddressIDs`): refused when set.
    #[serde(
        default,
        deserialize_with = "proto_json::unsupported_string",
        skip_serializing_if = "Unsupported::is_unset"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable, value_type = Option<String>))]
    pub pool: Unsupported,
    /// Refused when set, as `pool`.
    #[serde(
        rename = "staticIPAddressIDs",
        default,
        deserialize_with = "proto_json::unsupported_message",
        skip_serializing_if = "Unsupported::is_unset"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub static_ip_address_ids: Unsupported,
}

impl ContainerResources {
    fn default_cpu() -> f64 {
        1.0
    }
    fn default_memory_mb() -> u64 {
        512
    }
    fn default_disk_mb() -> u64 {
        10_000
    }
    fn default_network_mbps() -> u64 {
        128
    }
    fn default_shm_size_mb() -> u32 {
        DEFAULT_SHM_SIZE_MB
    }
}

impl Default for ContainerResources {
    fn default() -> Self {
        ContainerResources {
            cpu: Self::default_cpu(),
            gpu: 0,
            memory_mb: Self::default_memory_mb(),
            disk_mb: Self::default_disk_mb(),
            network_mbps: Self::default_network_mbps(),
            shm_size_mb: Self::default_shm_size_mb(),
            allocate_ip: false,
            efs_mounts: Unsupported::default(),
            signed_address_allocations: Unsupported::default(),
            pool: Unsupported::default(),
            static_ip_address_ids: Unsupported::default(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecurityProfile {
    #[serde(default, deserialize_with = "proto_json::list")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub security_groups: Vec<String>,
    #[serde(default, deserialize_with = "proto_json::string")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub iam_role: String,
    #[serde(default, deserialize_with = "proto_json::string_map")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub attributes: BTreeMap<String, String>,
}

/// An image reference: a name with a tag or a digest (not both; `latest` when neither is given).
/// An empty tag or digest (`"digest": ""`, as Titus prints an absent one) is not set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Image {
    #[serde(default, deserialize_with = "proto_json::string")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub name: String,
    #[serde(
        default,
        deserialize_with = "proto_json::non_empty_string",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub tag: Option<String>,
    #[serde(
        default,
        deserialize_with = "proto_json::non_empty_string",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub digest: Option<String>,
}

impl Image {
    /// The reference Docker understands: `name@digest` or `name:tag`.
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => format!("{}@{}", self.name, digest),
            (None, Some(tag)) => format!("{}:{}", self.name, tag),
            (None, None) => format!("{}:{}", self.name, DEFAULT_IMAGE_TAG),
        }
    }
}

/// Constraints by name (case-insensitive, e.g. `uniqueHost`) with a string value (`"true"`, a zone).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Constraints {
    #[serde(default, deserialize_with = "proto_json::string_map")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub constraints: BTreeMap<String, String>,
    /// Titus' constraint expression: refused when not empty (`""`, as Titus prints an absent
    /// one, is fine).
    #[serde(
        default,
        deserialize_with = "proto_json::string",
        skip_serializing_if = "String::is_empty"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub expression: String,
}

impl Constraints {
    pub fn is_empty(&self) -> bool {
        self.constraints.is_empty() && self.expression.is_empty()
    }

    /// The known constraints, parsed. Unknown names and bad values are skipped here; validation
    /// rejects them before a job is stored.
    pub fn parsed(&self) -> Vec<Constraint> {
        self.constraints
            .iter()
            .filter_map(|(name, value)| Constraint::parse_entry(name, value).ok().flatten())
            .collect()
    }
}

/// The constraint names Titus knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ConstraintName {
    UniqueHost,
    ExclusiveHost,
    ZoneBalance,
    ActiveHost,
    AvailabilityZone,
    MachineId,
    MachineGroup,
    MachineType,
}

impl ConstraintName {
    pub const ALL: [ConstraintName; 8] = [
        ConstraintName::UniqueHost,
        ConstraintName::ExclusiveHost,
        ConstraintName::ZoneBalance,
        ConstraintName::ActiveHost,
        ConstraintName::AvailabilityZone,
        ConstraintName::MachineId,
        ConstraintName::MachineGroup,
        ConstraintName::MachineType,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConstraintName::UniqueHost => "uniqueHost",
            ConstraintName::ExclusiveHost => "exclusiveHost",
            ConstraintName::ZoneBalance => "zoneBalance",
            ConstraintName::ActiveHost => "activeHost",
            ConstraintName::AvailabilityZone => "availabilityZone",
            ConstraintName::MachineId => "machineId",
            ConstraintName::MachineGroup => "machineGroup",
            ConstraintName::MachineType => "machineType",
        }
    }

    /// Boolean constraints take `"true"` or `"false"`; the others name a zone, machine or group.
    pub fn is_boolean(self) -> bool {
        matches!(
            self,
            ConstraintName::UniqueHost
                | ConstraintName::ExclusiveHost
                | ConstraintName::ZoneBalance
                | ConstraintName::ActiveHost
        )
    }

    /// Looks a name up ignoring case, as Titus does.
    pub fn parse(name: &str) -> Option<ConstraintName> {
        ConstraintName::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for ConstraintName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed constraint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Constraint {
    UniqueHost,
    ExclusiveHost,
    ZoneBalance,
    ActiveHost,
    AvailabilityZone(String),
    MachineId(String),
    MachineGroup(String),
    MachineType(String),
}

/// Why a constraint entry could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConstraintError {
    #[error("unknown constraint {name:?}, expected one of {expected}")]
    UnknownName { name: String, expected: String },
    #[error("constraint {name} takes \"true\" or \"false\", got {value:?}")]
    NotBoolean { name: ConstraintName, value: String },
    #[error("constraint {name} needs a non-empty value")]
    EmptyValue { name: ConstraintName },
}

impl Constraint {
    /// Parses one entry; `Ok(None)` means a boolean constraint switched off with `"false"`.
    pub fn parse_entry(name: &str, value: &str) -> Result<Option<Constraint>, ConstraintError> {
        let Some(known) = ConstraintName::parse(name.trim()) else {
            return Err(ConstraintError::UnknownName {
                name: name.to_owned(),
                expected: ConstraintName::ALL.map(ConstraintName::as_str).join(", "),
            });
        };
        if known.is_boolean() {
            let on = match value.trim().to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(ConstraintError::NotBoolean {
                        name: known,
                        value: value.to_owned(),
                    })
                }
            };
            if !on {
                return Ok(None);
            }
        } else if value.trim().is_empty() {
            return Err(ConstraintError::EmptyValue { name: known });
        }
        let text = value.trim().to_owned();
        Ok(Some(match known {
            ConstraintName::UniqueHost => Constraint::UniqueHost,
            ConstraintName::ExclusiveHost => Constraint::ExclusiveHost,
            ConstraintName::ZoneBalance => Constraint::ZoneBalance,
            ConstraintName::ActiveHost => Constraint::ActiveHost,
            ConstraintName::AvailabilityZone => Constraint::AvailabilityZone(text),
            ConstraintName::MachineId => Constraint::MachineId(text),
            ConstraintName::MachineGroup => Constraint::MachineGroup(text),
            ConstraintName::MachineType => Constraint::MachineType(text),
        }))
    }

    pub fn name(&self) -> ConstraintName {
        match self {
            Constraint::UniqueHost => ConstraintName::UniqueHost,
            Constraint::ExclusiveHost => ConstraintName::ExclusiveHost,
            Constraint::ZoneBalance => ConstraintName::ZoneBalance,
            Constraint::ActiveHost => ConstraintName::ActiveHost,
            Constraint::AvailabilityZone(_) => ConstraintName::AvailabilityZone,
            Constraint::MachineId(_) => ConstraintName::MachineId,
            Constraint::MachineGroup(_) => ConstraintName::MachineGroup,
            Constraint::MachineType(_) => ConstraintName::MachineType,
        }
    }
}

/// How a task's processes run. Every container runs with `no-new-privileges`, all Linux
/// capabilities dropped but the agent's default set (`NET_BIND_SERVICE`), and a pids limit; this
/// asks for more or for less.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecurityContext {
    /// `UID` or `UID:GID`, numeric; the image's user when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The container's root file system is read-only; `/tmp` is a fresh in-memory file system.
    #[serde(default)]
    pub read_only_root_filesystem: bool,
    /// Capabilities beyond the default set, by their names without `CAP_` (`NET_RAW`); refused
    /// by the agent unless its `allowed_capabilities` lists them.
    #[serde(default)]
    pub add_capabilities: Vec<String>,
}

impl SecurityContext {
    pub fn is_default(&self) -> bool {
        self == &SecurityContext::default()
    }
}

/// A host path mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostMount {
    pub host_path: String,
    pub container_path: String,
    #[serde(default = "default_true")]
    pub read_only: bool,
}

fn default_true() -> bool {
    true
}

/// How a failed task is retried. Titus' JSON: `{"immediate": {"retries": 3}}` and so on; an
/// absent member is zero (`{"immediate": {}}` retries nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum RetryPolicy {
    Immediate {
        #[serde(default, deserialize_with = "proto_json::u32")]
        #[cfg_attr(feature = "openapi", schema(nullable))]
        retries: u32,
    },
    #[serde(rename_all = "camelCase")]
    Delayed {
        #[serde(default, deserialize_with = "proto_json::u64")]
        #[cfg_attr(feature = "openapi", schema(nullable))]
        initial_delay_ms: u64,
        #[serde(default, deserialize_with = "proto_json::u64")]
        #[cfg_attr(feature = "openapi", schema(nullable))]
        delay_ms: u64,
        #[serde(default, deserialize_with = "proto_json::u32")]
        #[cfg_attr(feature = "openapi", schema(nullable))]
        retries: u32,
    },
    #[serde(rename_all = "camelCase")]
    ExponentialBackOff {
        #[serde(default, deserialize_with = "proto_json::u64")]
        #[cfg_attr(feature = "openapi", schema(nullable))]
        initial_delay_ms: u64,
        #[serde(default, deserialize_with = "proto_json::u64")]
        #[cfg_attr(feature = "openapi", schema(nullable))]
        max_delay_interval_ms: u64,
        #[serde(default, deserialize_with = "proto_json::u32")]
        #[cfg_attr(feature = "openapi", schema(nullable))]
        retries: u32,
    },
}

impl RetryPolicy {
    /// How many user retries the policy allows.
    pub fn retries(&self) -> u32 {
        match *self {
            RetryPolicy::Immediate { retries }
            | RetryPolicy::Delayed { retries, .. }
            | RetryPolicy::ExponentialBackOff { retries, .. } => retries,
        }
    }

    /// The delay before retry number `attempt` (1 for the first retry).
    pub fn delay_ms(&self, attempt: u32) -> u64 {
        match *self {
            RetryPolicy::Immediate { .. } => 0,
            RetryPolicy::Delayed {
                initial_delay_ms,
                delay_ms,
                ..
            } => {
                if attempt <= 1 {
                    initial_delay_ms
                } else {
                    delay_ms
                }
            }
            RetryPolicy::ExponentialBackOff {
                initial_delay_ms,
                max_delay_interval_ms,
                ..
            } => {
                let doublings = attempt.saturating_sub(1).min(63);
                initial_delay_ms
                    .saturating_mul(1u64 << doublings)
                    .min(max_delay_interval_ms)
            }
        }
    }

    fn batch_default() -> RetryPolicy {
        RetryPolicy::Immediate { retries: 0 }
    }

    fn service_default() -> RetryPolicy {
        RetryPolicy::ExponentialBackOff {
            initial_delay_ms: 1_000,
            max_delay_interval_ms: 60_000,
            retries: u32::MAX,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchJobSpec {
    /// How many tasks; required (at least 1), as in Titus.
    #[serde(default, deserialize_with = "proto_json::u32")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub size: u32,
    /// At least 5; five days when absent or zero.
    #[serde(
        default = "default_runtime_limit_sec",
        deserialize_with = "proto_json::u64"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub runtime_limit_sec: u64,
    #[serde(
        default = "RetryPolicy::batch_default",
        deserialize_with = "batch_retry_policy"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub retry_policy: RetryPolicy,
    #[serde(default, deserialize_with = "proto_json::bool")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub retry_on_runtime_limit: bool,
}

fn batch_retry_policy<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<RetryPolicy, D::Error> {
    Ok(
        Option::<RetryPolicy>::deserialize(deserializer)?
            .unwrap_or_else(RetryPolicy::batch_default),
    )
}

fn service_retry_policy<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<RetryPolicy, D::Error> {
    Ok(Option::<RetryPolicy>::deserialize(deserializer)?
        .unwrap_or_else(RetryPolicy::service_default))
}

fn default_runtime_limit_sec() -> u64 {
    DEFAULT_RUNTIME_LIMIT_SEC
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceJobSpec {
    #[serde(default, deserialize_with = "proto_json::or_default")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub capacity: Capacity,
    /// True when absent (proto3 would make it false; see the API README).
    #[serde(default = "default_true", deserialize_with = "proto_json::bool")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub enabled: bool,
    #[serde(
        default = "RetryPolicy::service_default",
        deserialize_with = "service_retry_policy"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub retry_policy: RetryPolicy,
    /// Stored and returned; the platform does not migrate tasks off hosts yet.
    #[serde(
        default,
        deserialize_with = "proto_json::optional",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub migration_policy: Option<MigrationPolicy>,
    /// Which capacity changes the job refuses: acted on by every capacity update.
    #[serde(
        default,
        deserialize_with = "proto_json::or_default",
        skip_serializing_if = "ServiceJobProcesses::is_default"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub service_job_processes: ServiceJobProcesses,
}

/// A service's task count bounds; `min ≤ desired ≤ max`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Capacity {
    #[serde(default, deserialize_with = "proto_json::u32")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub min: u32,
    #[serde(default, deserialize_with = "proto_json::u32")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub desired: u32,
    #[serde(default, deserialize_with = "proto_json::u32")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub max: u32,
}

/// Titus' service job processes: switches that freeze the desired size in one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceJobProcesses {
    /// A capacity update that raises `desired` is refused.
    #[serde(default, deserialize_with = "proto_json::bool")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub disable_increase_desired: bool,
    /// A capacity update that lowers `desired` is refused.
    #[serde(default, deserialize_with = "proto_json::bool")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub disable_decrease_desired: bool,
}

impl ServiceJobProcesses {
    pub fn is_default(&self) -> bool {
        self == &ServiceJobProcesses::default()
    }
}

/// An empty proto message, the value of a `oneof` member that carries nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// Titus' migration policy, a `oneof`: at most one member is set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MigrationPolicy {
    #[serde(
        default,
        deserialize_with = "proto_json::optional",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub system_default: Option<Empty>,
    #[serde(
        default,
        deserialize_with = "proto_json::optional",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub self_managed: Option<Empty>,
}

/// Titus' network modes, by name or number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum NetworkMode {
    #[default]
    UnknownNetworkMode,
    Ipv4Only,
    Ipv6AndIpv4,
    Ipv6AndIpv4Fallback,
    Ipv6Only,
    HighScale,
}

impl proto_json::ProtoEnum for NetworkMode {
    const VALUES: &'static [(Self, &'static str)] = &[
        (NetworkMode::UnknownNetworkMode, "UnknownNetworkMode"),
        (NetworkMode::Ipv4Only, "Ipv4Only"),
        (NetworkMode::Ipv6AndIpv4, "Ipv6AndIpv4"),
        (NetworkMode::Ipv6AndIpv4Fallback, "Ipv6AndIpv4Fallback"),
        (NetworkMode::Ipv6Only, "Ipv6Only"),
        (NetworkMode::HighScale, "HighScale"),
    ];
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkConfiguration {
    #[serde(default, deserialize_with = "proto_json::enumeration")]
    /// One of `UnknownNetworkMode`, `Ipv4Only`, `Ipv6AndIpv4`, `Ipv6AndIpv4Fallback`,
    /// `Ipv6Only`, `HighScale`, or its number (0 to 5).
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub network_mode: NetworkMode,
}

/// Titus' job disruption budget: a policy `oneof` (at most one of the first four), a rate
/// `oneof` (at most one of the next four), when relocation may happen, and who says a container
/// is healthy. Stored and returned as given.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DisruptionBudget {
    #[serde(
        default,
        deserialize_with = "proto_json::optional",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub self_managed: Option<SelfManagedBudget>,
    #[serde(
        default,
        deserialize_with = "proto_json::optional",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub availability_percentage_limit: Option<AvailabilityPercentageLimit>,
    #[serde(
        default,
        deserialize_with = "proto_json::optional",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub unhealthy_tasks_limit: Option<UnhealthyTasksLimit>,
    #[serde(
        default,
        deserialize_with = "proto_json::optional",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub relocation_limit: Option<RelocationLimit>,
    #[serde(
        default,
        deserialize_with = "proto_json::optional",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub rate_unlimited: Option<Empty>,
    #[serde(
        default,
        deserialize_with = "proto_json::optional",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub rate_percentage_per_hour: Option<RatePercentagePerHour>,
    #[serde(
        default,
        deserialize_with = "proto_json::optional",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub rate_per_interval: Option<RatePerInterval>,
    #[serde(
        default,
        deserialize_with = "proto_json::optional",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub rate_percentage_per_interval: Option<RatePercentagePerInterval>,
    #[serde(
        default,
        deserialize_with = "proto_json::messages",
        skip_serializing_if = "Vec::is_empty"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub time_windows: Vec<TimeWindow>,
    #[serde(
        default,
        deserialize_with = "proto_json::messages",
        skip_serializing_if = "Vec::is_empty"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub container_health_providers: Vec<ContainerHealthProvider>,
}

impl DisruptionBudget {
    /// The names of the policy `oneof`'s members that are set.
    pub fn policies_set(&self) -> Vec<&'static str> {
        [
            ("selfManaged", self.self_managed.is_some()),
            (
                "availabilityPercentageLimit",
                self.availability_percentage_limit.is_some(),
            ),
            ("unhealthyTasksLimit", self.unhealthy_tasks_limit.is_some()),
            ("relocationLimit", self.relocation_limit.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }

    /// The names of the rate `oneof`'s members that are set.
    pub fn rates_set(&self) -> Vec<&'static str> {
        [
            ("rateUnlimited", self.rate_unlimited.is_some()),
            (
                "ratePercentagePerHour",
                self.rate_percentage_per_hour.is_some(),
            ),
            ("ratePerInterval", self.rate_per_interval.is_some()),
            (
                "ratePercentagePerInterval",
                self.rate_percentage_per_interval.is_some(),
            ),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SelfManagedBudget {
    #[serde(default, deserialize_with = "proto_json::u64")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub relocation_time_ms: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AvailabilityPercentageLimit {
    #[serde(default, deserialize_with = "proto_json::f64")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub percentage_of_healthy_containers: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UnhealthyTasksLimit {
    #[serde(default, deserialize_with = "proto_json::u32")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub limit_of_unhealthy_containers: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RelocationLimit {
    #[serde(default, deserialize_with = "proto_json::u32")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub limit: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RatePercentagePerHour {
    #[serde(default, deserialize_with = "proto_json::f64")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub max_percentage_of_containers_relocated_in_hour: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RatePerInterval {
    #[serde(default, deserialize_with = "proto_json::u64")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub interval_ms: u64,
    #[serde(default, deserialize_with = "proto_json::u32")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub limit_per_interval: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RatePercentagePerInterval {
    #[serde(default, deserialize_with = "proto_json::u64")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub interval_ms: u64,
    #[serde(default, deserialize_with = "proto_json::f64")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub percentage_limit_per_interval: f64,
}

/// Titus' days of the week, by name or number (Monday is 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Day {
    #[default]
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

impl proto_json::ProtoEnum for Day {
    const VALUES: &'static [(Self, &'static str)] = &[
        (Day::Monday, "Monday"),
        (Day::Tuesday, "Tuesday"),
        (Day::Wednesday, "Wednesday"),
        (Day::Thursday, "Thursday"),
        (Day::Friday, "Friday"),
        (Day::Saturday, "Saturday"),
        (Day::Sunday, "Sunday"),
    ];
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TimeWindow {
    #[serde(
        default,
        deserialize_with = "proto_json::enumerations",
        skip_serializing_if = "Vec::is_empty"
    )]
    /// Days by name (`Monday` … `Sunday`) or number (0 for Monday).
    #[cfg_attr(feature = "openapi", schema(nullable, value_type = Vec<Value>))]
    pub days: Vec<Day>,
    #[serde(
        default,
        deserialize_with = "proto_json::messages",
        skip_serializing_if = "Vec::is_empty"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub hourly_time_windows: Vec<HourlyTimeWindow>,
    #[serde(
        default,
        deserialize_with = "proto_json::string",
        skip_serializing_if = "String::is_empty"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub time_zone: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HourlyTimeWindow {
    #[serde(default, deserialize_with = "proto_json::u32")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub start_hour: u32,
    #[serde(default, deserialize_with = "proto_json::u32")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub end_hour: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerHealthProvider {
    #[serde(default, deserialize_with = "proto_json::string")]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub name: String,
    #[serde(
        default,
        deserialize_with = "proto_json::string_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    #[cfg_attr(feature = "openapi", schema(nullable))]
    pub attributes: BTreeMap<String, String>,
}

/// A job's lifecycle: forward only, `Accepted → KillInitiated → Finished` (or straight to Finished).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum JobState {
    Accepted,
    KillInitiated,
    Finished,
}

impl JobState {
    pub const ALL: [JobState; 3] = [
        JobState::Accepted,
        JobState::KillInitiated,
        JobState::Finished,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Accepted => "Accepted",
            JobState::KillInitiated => "KillInitiated",
            JobState::Finished => "Finished",
        }
    }

    pub fn parse(text: &str) -> Option<JobState> {
        JobState::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(text))
    }

    pub fn is_active(self) -> bool {
        self != JobState::Finished
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job's current status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    pub state: JobState,
    /// Why the job is in this state (`normal`, `killed`, ...).
    pub reason_code: String,
    #[serde(default)]
    pub reason_message: String,
    pub timestamp_ms: u64,
}

/// A stored job: the descriptor plus what the platform records about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub id: JobId,
    pub job_descriptor: JobDescriptor,
    pub status: JobStatus,
    #[serde(default)]
    pub status_history: Vec<JobStatus>,
    /// The identity of the caller that created the job; only it (or an admin) may change it.
    pub created_by: String,
    pub created_at_ms: u64,
    /// Bumped by every write; writes are conditional on it.
    pub version: u64,
}

impl Job {
    /// A new job in state Accepted.
    pub fn new(id: JobId, descriptor: JobDescriptor, created_by: String, now_ms: u64) -> Job {
        Job {
            id,
            job_descriptor: descriptor,
            status: JobStatus {
                state: JobState::Accepted,
                reason_code: "normal".to_owned(),
                reason_message: "job accepted".to_owned(),
                timestamp_ms: now_ms,
            },
            status_history: Vec::new(),
            created_by,
            created_at_ms: now_ms,
            version: 1,
        }
    }

    pub fn job_type(&self) -> JobType {
        // A stored job was validated, so it has exactly one of the two sections.
        self.job_descriptor.job_type().unwrap_or(JobType::Batch)
    }

    /// Moves the job to a later state; the job's own state machine is forward only too.
    pub fn transition(
        &mut self,
        to: JobState,
        reason_code: &str,
        reason_message: &str,
        now_ms: u64,
    ) -> Result<(), crate::state::JobTransitionError> {
        if to <= self.status.state {
            return Err(crate::state::JobTransitionError {
                job_id: self.id.clone(),
                from: self.status.state,
                to,
            });
        }
        let previous = std::mem::replace(
            &mut self.status,
            JobStatus {
                state: to,
                reason_code: reason_code.to_owned(),
                reason_message: reason_message.to_owned(),
                timestamp_ms: now_ms,
            },
        );
        self.status_history.push(previous);
        self.version += 1;
        Ok(())
    }
}
