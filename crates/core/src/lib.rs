//! Titus domain: the job model, its validation, and the task state machine.
//!
//! Pure Rust with no I/O: no AWS, no Docker, no async runtime. Time comes in as `now_ms`
//! arguments so that every rule can be tested without a clock.

pub mod agent;
pub mod ids;
pub mod job;
pub mod lease;
pub mod messages;
pub mod state;
pub mod store;
pub mod task;
pub mod validation;

pub use agent::{Agent, AgentHeartbeat, AgentState, AgentStore, Resources};
pub use ids::{JobId, TaskId};
pub use job::{Job, JobDescriptor, JobState, JobStatus, JobType};
pub use state::{TaskReason, TaskState, TransitionError};
pub use store::{JobStore, StoreError};
pub use task::{Task, TaskStatus};
pub use validation::{parse_descriptor, FieldError, Limits, ParseError};
