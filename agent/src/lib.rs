//! Titus agent: the daemon on each host that runs task containers with Docker, watches them, and
//! reports their lifecycle to the status queue.
//!
//! Ports and adapters: `agent` holds the logic over the ports in `runtime` (the container
//! engine) and `ports` (the command and status queues) plus titus-core's `AgentStore`; `docker`
//! and `aws` are the adapters; `testing` has in-memory ones; `bootstrap` wires them for real.

pub mod agent;
pub mod aws;
pub mod bootstrap;
pub mod config;
pub mod credentials;
pub mod docker;
pub mod host;
pub mod isolation;
pub mod metrics;
pub mod outbox;
pub mod ports;
pub mod runtime;
pub mod secrets;
pub mod testing;
pub mod time;

pub use agent::{
    task_log_tail, Agent, AgentError, AgentIdentity, Disposition, HostServices, RunOutcome,
    TaskSecrets,
};
pub use config::{AgentSettings, DrainPolicy, LogDriver};
pub use docker::DockerRuntime;
pub use runtime::ContainerRuntime;
