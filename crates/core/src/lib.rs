//! Titus domain: the job model, its validation, the task state machine, and the ports the
//! application layer reaches the outside world through.
//!
//! Pure Rust with no I/O: no AWS, no Docker, no async runtime. Time comes in as `now_ms`
//! arguments so that every rule can be tested without a clock.

pub mod agent;
pub mod events;
pub mod ids;
pub mod job;
pub mod messages;
pub mod metrics;
pub mod placement;
pub mod ports;
pub mod proto_json;
pub mod quota;
pub mod secrets;
pub mod settings;
pub mod state;
pub mod task;
pub mod validation;

pub use agent::{Agent, AgentHeartbeat, AgentState, Resources};
pub use ids::{JobId, TaskId};
pub use job::{Job, JobDescriptor, JobState, JobStatus, JobType};
pub use ports::{AgentStore, JobStore, Ports, StoreError};
pub use state::{TaskReason, TaskState, TransitionError};
pub use task::{Task, TaskStatus};
pub use validation::{parse_descriptor, parse_message, FieldError, Limits, ParseError};
