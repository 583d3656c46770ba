//! The agent's ports. Its queues are the core's ([`titus_core::ports::CommandSource`] for its
//! own queue, [`titus_core::ports::StatusSink`] for the status queue), with `titus-aws`'s SQS
//! adapters; [`ControlPlaneLink`] is what it asks of the control plane and its records.
//! `testing.rs` has in-memory implementations of all of them.

use std::future::Future;

use titus_core::messages::Registration;
pub use titus_core::ports::{CommandSource, ReceivedMessage, StatusSink};
use titus_core::ports::{DeadLetter, QueueError};
use titus_core::{Agent, AgentHeartbeat, StoreError, TaskId, TaskState};

/// Where the records place a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub agent_id: Option<String>,
    pub incarnation: Option<u64>,
    pub state: TaskState,
}

impl Placement {
    /// Whether the records run the task on agent `agent_id` at `incarnation`.
    pub fn runs_on(&self, agent_id: &str, incarnation: u64) -> bool {
        !self.state.is_terminal()
            && self.agent_id.as_deref() == Some(agent_id)
            && self.incarnation.is_none_or(|i| i == incarnation)
    }
}

/// Why the control plane could not be reached or did not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The registration was not applied in time (the control plane may be finishing the tasks
    /// of this agent's last incarnation); the agent asks again.
    #[error("registration {registration_id} of agent {agent_id} was not applied within {waited_secs} s; asking again")]
    NotRegistered {
        agent_id: String,
        registration_id: String,
        waited_secs: u64,
    },
}

/// What an agent asks of the control plane: it never writes the fields of its record the
/// control plane decides (state, capacity, incarnation, allocation), it requests.
pub trait ControlPlaneLink: Send + Sync + 'static {
    /// Asks to be registered and waits for the record that says so (its `registration_id`),
    /// with the incarnation the control plane gave this life of the agent.
    fn register(
        &self,
        registration: &Registration,
    ) -> impl Future<Output = Result<Agent, LinkError>> + Send;

    /// Asks the control plane to place nothing more here: the agent is draining.
    fn request_drain(&self, agent_id: &str) -> impl Future<Output = Result<(), LinkError>> + Send;

    /// The agent drained and leaves.
    fn request_deregister(
        &self,
        agent_id: &str,
    ) -> impl Future<Output = Result<(), LinkError>> + Send;

    /// Records a heartbeat with the agent's own view of its work; returns its record, from which
    /// it learns that it is being drained or was declared lost. `Conflict` when not registered.
    fn heartbeat(
        &self,
        agent_id: &str,
        report: &AgentHeartbeat,
    ) -> impl Future<Output = Result<Agent, StoreError>> + Send;

    /// Where the records place task `task_id`, read consistently; `None` for a task they do not
    /// know.
    fn placement(
        &self,
        task_id: &TaskId,
    ) -> impl Future<Output = Result<Option<Placement>, StoreError>> + Send;

    /// Keeps a command that can never be processed on the agent's dead-letter queue, with why.
    fn dead_letter(
        &self,
        letter: &DeadLetter,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
}
