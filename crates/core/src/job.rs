//! The job descriptor (what a user asks for) and the stored job, after Titus' v3 REST model.
//!
//! Field names and shapes follow Titus' JSON: camelCase, `memoryMB`/`diskMB`, a retry policy as a
//! one-key object (`{"immediate": {"retries": 2}}`), and either a `batch` or a `service` section.
//! Every struct rejects unknown fields so a typo is an error, not a silently ignored setting.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::JobId;

/// Titus' default kill grace period: SIGTERM, then SIGKILL after this many seconds.
pub const DEFAULT_KILL_GRACE_PERIOD_SEC: u32 = 10;
/// Titus' default batch runtime limit: five days.
pub const DEFAULT_RUNTIME_LIMIT_SEC: u64 = 5 * 24 * 3600;
/// The capacity group a job lands in when it names none.
pub const DEFAULT_CAPACITY_GROUP: &str = "DEFAULT";
/// The tag used when an image names neither a tag nor a digest.
pub const DEFAULT_IMAGE_TAG: &str = "latest";

/// Everything a user submits to create a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobDescriptor {
    pub owner: Owner,
    pub application_name: String,
    #[serde(default = "default_capacity_group")]
    pub capacity_group: String,
    #[serde(default)]
    pub job_group_info: JobGroupInfo,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    pub container: Container,
    /// Set for a batch job; exactly one of `batch` and `service` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchJobSpec>,
    /// Set for a service job; exactly one of `batch` and `service` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceJobSpec>,
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
#[serde(rename_all = "camelCase")]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Owner {
    pub team_email: String,
}

/// Titus' stack/detail/sequence naming of a job's group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobGroupInfo {
    #[serde(default)]
    pub stack: String,
    #[serde(default)]
    pub detail: String,
    #[serde(default)]
    pub sequence: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Container {
    #[serde(default)]
    pub resources: ContainerResources,
    #[serde(default)]
    pub security_profile: SecurityProfile,
    pub image: Image,
    /// Replaces the image's ENTRYPOINT when not empty.
    #[serde(default)]
    pub entry_point: Vec<String>,
    /// Replaces the image's CMD when not empty.
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Environment variables whose values are secrets, by reference: the variable's name mapped
    /// to an SSM parameter ARN (`arn:aws:ssm:{region}:{account}:parameter/{name}`, SecureString
    /// or String) or a Secrets Manager secret ARN (`arn:aws:secretsmanager:…:secret:{name}`).
    /// The agent resolves them when it launches the task, with the task's IAM role when it has
    /// one; their values are never stored, returned or logged by the platform.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    #[serde(default)]
    pub soft_constraints: Constraints,
    #[serde(default)]
    pub hard_constraints: Constraints,
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
    #[serde(default)]
    pub host_mounts: Vec<HostMount>,
    /// How the task's processes run: their user, a read-only root file system, capabilities
    /// beyond the platform's default set.
    #[serde(default, skip_serializing_if = "SecurityContext::is_default")]
    pub security_context: SecurityContext,
}

fn default_kill_grace_period_sec() -> u32 {
    DEFAULT_KILL_GRACE_PERIOD_SEC
}

/// A container's share of its host. Defaults are Titus' minimums.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerResources {
    #[serde(default = "ContainerResources::default_cpu")]
    pub cpu: f64,
    #[serde(default)]
    pub gpu: u32,
    #[serde(rename = "memoryMB", default = "ContainerResources::default_memory_mb")]
    pub memory_mb: u64,
    #[serde(rename = "diskMB", default = "ContainerResources::default_disk_mb")]
    pub disk_mb: u64,
    #[serde(default = "ContainerResources::default_network_mbps")]
    pub network_mbps: u64,
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
}

impl Default for ContainerResources {
    fn default() -> Self {
        ContainerResources {
            cpu: Self::default_cpu(),
            gpu: 0,
            memory_mb: Self::default_memory_mb(),
            disk_mb: Self::default_disk_mb(),
            network_mbps: Self::default_network_mbps(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecurityProfile {
    #[serde(default)]
    pub security_groups: Vec<String>,
    #[serde(default)]
    pub iam_role: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// An image reference: a name with a tag or a digest (not both; `latest` when neither is given).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Image {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    #[serde(default)]
    pub constraints: BTreeMap<String, String>,
}

impl Constraints {
    pub fn is_empty(&self) -> bool {
        self.constraints.is_empty()
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

/// How a failed task is retried. Titus' JSON: `{"immediate": {"retries": 3}}` and so on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum RetryPolicy {
    Immediate {
        retries: u32,
    },
    #[serde(rename_all = "camelCase")]
    Delayed {
        initial_delay_ms: u64,
        delay_ms: u64,
        retries: u32,
    },
    #[serde(rename_all = "camelCase")]
    ExponentialBackOff {
        initial_delay_ms: u64,
        max_delay_interval_ms: u64,
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
    #[serde(default = "default_batch_size")]
    pub size: u32,
    #[serde(default = "default_runtime_limit_sec")]
    pub runtime_limit_sec: u64,
    #[serde(default = "RetryPolicy::batch_default")]
    pub retry_policy: RetryPolicy,
    #[serde(default)]
    pub retry_on_runtime_limit: bool,
}

fn default_batch_size() -> u32 {
    1
}

fn default_runtime_limit_sec() -> u64 {
    DEFAULT_RUNTIME_LIMIT_SEC
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceJobSpec {
    pub capacity: Capacity,
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "RetryPolicy::service_default")]
    pub retry_policy: RetryPolicy,
}

/// A service's task count bounds; `min ≤ desired ≤ max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Capacity {
    #[serde(default)]
    pub min: u32,
    pub desired: u32,
    pub max: u32,
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
