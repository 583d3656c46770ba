//! The container runtime port: what the agent needs from a container engine. The Docker adapter
//! (`docker.rs`) is the only implementation that talks to an engine; `testing::FakeRuntime`
//! records calls for the agent's unit tests.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use titus_core::job::HostMount;

/// Labels every task container carries. The agent finds its containers by them after a restart.
pub mod label {
    pub const AGENT_ID: &str = "titus.agent.id";
    pub const JOB_ID: &str = "titus.job.id";
    pub const TASK_ID: &str = "titus.task.id";
    /// The agent's incarnation the task was placed on.
    pub const INCARNATION: &str = "titus.agent.incarnation";
    /// The task record's version the launch was placed at.
    pub const PLACEMENT_VERSION: &str = "titus.placement.version";
    /// Seconds the task may run before it is killed with `runtimeLimitExceeded` (batch only).
    pub const RUNTIME_LIMIT_SECS: &str = "titus.runtime-limit-secs";
    /// Seconds between SIGTERM and SIGKILL when the task is killed.
    pub const KILL_GRACE_SECS: &str = "titus.kill-grace-secs";
    /// The task's resources as JSON (`Resources`), for the heartbeat's report after a restart.
    pub const RESOURCES: &str = "titus.resources";
    /// The task's IAM role, and the SHA-256 of its credentials token: a restarted agent serves
    /// the task's credentials again without knowing the token itself.
    pub const IAM_ROLE: &str = "titus.iam-role";
    pub const TOKEN_SHA256: &str = "titus.credentials.token-sha256";
}

/// The deterministic container name of a task: a second launch of the same task finds it taken.
pub fn container_name(task_id: &str) -> String {
    format!("titus-{task_id}")
}

/// The name a task's container gets once its Finished status was sent: the marker that its exit
/// was reported, kept until the retention period ends so that its log can still be read.
pub fn finished_container_name(task_id: &str) -> String {
    format!("titus-{task_id}{FINISHED_SUFFIX}")
}

/// See `finished_container_name`.
pub const FINISHED_SUFFIX: &str = "-finished";

/// Where a container's output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Docker's log driver name (`json-file`, `awslogs`).
    pub driver: String,
    pub options: BTreeMap<String, String>,
}

/// Everything needed to create a task's container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    /// Replaces the image's ENTRYPOINT when not empty.
    pub entry_point: Vec<String>,
    /// Replaces the image's CMD when not empty.
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// CPU quota in units of 10^-9 CPUs.
    pub nano_cpus: i64,
    /// Memory limit; swap is not allowed beyond it.
    pub memory_bytes: i64,
    /// The most processes the container may have; 0 leaves the engine's default.
    pub pids_limit: i64,
    /// The size of `/dev/shm` (the job's `shmSizeMB`); 0 leaves the engine's default.
    pub shm_size_bytes: i64,
    pub privileged: bool,
    /// The Docker network the container joins (the agent's task network); ignored with
    /// `host_network`.
    pub network: Option<String>,
    pub host_network: bool,
    pub host_mounts: Vec<HostMount>,
    pub log: LogConfig,
    /// Capabilities kept; every other one is dropped. Ignored when privileged.
    pub capabilities: Vec<String>,
    /// `UID` or `UID:GID`; the image's user when `None`.
    pub user: Option<String>,
    /// A read-only root file system, with an in-memory `/tmp`.
    pub read_only_root_filesystem: bool,
    /// GPUs asked of the engine's GPU device driver.
    pub gpus: u32,
}

/// The capabilities every task container keeps: binding ports under 1024. Kubernetes' Pod
/// Security Standard "restricted" allows this one alone.
pub const DEFAULT_CAPABILITIES: &[&str] = &["NET_BIND_SERVICE"];

/// A container's lifecycle state, as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerStatus {
    Created,
    Running,
    /// Paused or restarting: alive, not finished.
    Paused,
    Exited,
    /// The engine failed to stop or remove it properly.
    Dead,
    /// Anything else the engine says (`removing`), kept verbatim.
    Other(String),
}

impl ContainerStatus {
    pub fn parse(text: &str) -> ContainerStatus {
        match text {
            "created" => ContainerStatus::Created,
            "running" => ContainerStatus::Running,
            "paused" | "restarting" => ContainerStatus::Paused,
            "exited" => ContainerStatus::Exited,
            "dead" => ContainerStatus::Dead,
            other => ContainerStatus::Other(other.to_owned()),
        }
    }

    /// Whether the container's process has ended for good.
    pub fn is_finished(&self) -> bool {
        matches!(self, ContainerStatus::Exited | ContainerStatus::Dead)
    }
}

/// What inspecting a container tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    /// Without Docker's leading slash.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub status: ContainerStatus,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    /// The engine's error for the container (a failed start), empty when none.
    pub error: String,
    /// Its addresses on its networks (none with the host's network or before it started).
    pub ip_addresses: Vec<std::net::IpAddr>,
}

/// One container found by listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSummary {
    pub id: String,
    /// Without Docker's leading slash.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub status: ContainerStatus,
}

/// Credentials for a registry, sent with a pull.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryCredentials {
    pub server: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// What can go wrong talking to the engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    #[error("container or image {0} does not exist")]
    NotFound(String),
    /// A container with this name exists already.
    #[error("a container named {0} exists already")]
    NameTaken(String),
    /// Creating the container found no such image locally.
    #[error("image {image} is not present on this host")]
    ImageMissing { image: String },
    /// The registry says the image does not exist (or may not be pulled).
    #[error("image {image} was not found in its registry: {message}")]
    ImageNotFound { image: String, message: String },
    /// The registry could not be reached or the pull failed part-way.
    #[error("pulling image {image} failed: {message}")]
    PullFailed { image: String, message: String },
    /// The engine refused to start the container's process (a bad entry point, say).
    #[error("container {name} could not start: {message}")]
    StartFailed { name: String, message: String },
    #[error("{operation} did not answer within {secs} s")]
    Timeout { operation: &'static str, secs: u64 },
    #[error("{operation} failed: {message}")]
    Engine {
        operation: &'static str,
        message: String,
    },
}

/// A container engine. Every method names a container by its name or id.
pub trait ContainerRuntime: Send + Sync + 'static {
    /// Whether the image is present locally.
    fn image_present(&self, image: &str)
        -> impl Future<Output = Result<bool, RuntimeError>> + Send;

    /// Pulls the image; `ImageNotFound` or `PullFailed` when it cannot.
    fn pull_image(
        &self,
        image: &str,
        credentials: Option<RegistryCredentials>,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Creates the container and returns its id; `NameTaken` if the name is in use,
    /// `ImageMissing` if the image is not present.
    fn create(
        &self,
        spec: &ContainerSpec,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;

    fn start(&self, name: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Returns once the container is not running. Answered from the container's state, so an
    /// exit that happened before the call returns at once; `NotFound` if it does not exist.
    fn wait(&self, name: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Sends SIGTERM, then SIGKILL when the container still runs after `grace`. Returns once it
    /// stopped. Stopping a stopped container is not an error.
    fn stop(
        &self,
        name: &str,
        grace: Duration,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    fn inspect(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<ContainerInfo, RuntimeError>> + Send;

    /// Every container, running or not, that carries all of these labels.
    fn list(
        &self,
        labels: &[(&str, &str)],
    ) -> impl Future<Output = Result<Vec<ContainerSummary>, RuntimeError>> + Send;

    fn rename(
        &self,
        name: &str,
        new_name: &str,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Removes the container, stopping it first if it runs. Removing a missing one is not an
    /// error.
    fn remove(&self, name: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// The last `lines` lines of the container's stdout and stderr, interleaved as written.
    fn logs_tail(
        &self,
        name: &str,
        lines: usize,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;
}
