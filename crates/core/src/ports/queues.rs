//! The queue ports: agents' command queues (sending from the control plane, receiving on the
//! agent), the status queue, and where messages that cannot be processed are kept with why.
//!
//! SQS is the model: batches of at most [`MAX_BATCH_MESSAGES`], a received message hidden until
//! it is deleted, released or its visibility timeout ends, and a dead-letter queue after a number
//! of receives.

use std::future::Future;
use std::time::Duration;

use crate::ids::TaskId;
use crate::messages::{AgentCommand, AgentRequest, Rejection, TaskStatusUpdate};

/// SQS's limit on messages in one batch call (send, receive, delete).
pub const MAX_BATCH_MESSAGES: usize = 10;

/// What can go wrong with a queue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// Throttled or unreachable; safe to retry.
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    /// The queue does not exist.
    #[error("queue {0} does not exist")]
    NoSuchQueue(String),
    #[error("queue error: {0}")]
    Internal(String),
}

/// One command that a batch send did not deliver, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendFailure {
    pub task_id: TaskId,
    pub reason: String,
}

/// Delivers commands to agents' own queues. The queue is derived from the agent's id (and the
/// stage), never read from a record a writer could set.
pub trait CommandQueue: Send + Sync {
    /// Sends `commands` to agent `agent_id`'s queue, batched within SQS's limits. Returns the
    /// commands that were not delivered; the caller keeps them to retry. `NoSuchQueue` when the
    /// agent has no queue (it never registered).
    fn send_commands(
        &self,
        agent_id: &str,
        commands: &[AgentCommand],
    ) -> impl Future<Output = Result<Vec<SendFailure>, QueueError>> + Send;

    /// Creates agent `agent_id`'s queue (and its dead-letter queue) unless it exists; returns
    /// its URL. The control plane does this when it registers the agent.
    fn ensure_agent_queue(
        &self,
        agent_id: &str,
    ) -> impl Future<Output = Result<String, QueueError>> + Send;
}

/// Where an agent sends its requests about its own record (the agent-requests queue).
pub trait AgentRequestSink: Send + Sync + 'static {
    fn send(&self, request: &AgentRequest) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// A message received from a queue. It stays hidden from other receives until it is deleted or
/// released, or its visibility timeout ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub body: String,
    /// Names this receive of the message for `delete`, `release` and `extend`.
    pub receipt: String,
    /// How many times the message was received, this time included.
    pub receive_count: u32,
}

/// An agent's own command queue, as the agent reads it.
pub trait CommandSource: Send + Sync + 'static {
    /// Waits up to `wait` for at most `max` messages (1 to 10).
    fn receive(
        &self,
        max: u32,
        wait: Duration,
    ) -> impl Future<Output = Result<Vec<ReceivedMessage>, QueueError>> + Send;

    /// The message's work is safe: it will not be delivered again.
    fn delete(&self, receipt: &str) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Makes the message visible again at once, counting this receive towards the dead-letter
    /// queue's limit.
    fn release(&self, receipt: &str) -> impl Future<Output = Result<(), QueueError>> + Send;

    /// Keeps the message hidden for `hidden_for` from now, while its work goes on.
    fn extend(
        &self,
        receipt: &str,
        hidden_for: Duration,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// Where task status updates go: the stage's status queue.
pub trait StatusSink: Send + Sync + 'static {
    /// Sends up to ten updates. Returns, per update in order, whether it was accepted; the
    /// caller sends the others again.
    fn send(
        &self,
        updates: &[TaskStatusUpdate],
    ) -> impl Future<Output = Result<Vec<bool>, QueueError>> + Send;
}

/// A message that cannot be applied, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub message_id: String,
    pub body: String,
    pub reason: String,
    pub dead_lettered_at_ms: u64,
}

/// Where status messages that can never be applied are kept, with their reason (the status
/// queue's dead-letter queue).
pub trait DeadLetterSink: Send + Sync {
    fn send(&self, letter: &DeadLetter) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// Where refused submissions go, with their errors (the `submit-rejected` queue).
pub trait RejectionSink: Send + Sync {
    fn reject(&self, rejection: &Rejection) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// Where the event feed is published besides its table: EventBridge in AWS and on the
/// emulator. At least once: a failed call is retried with the same events (same ids).
pub trait EventPublisher: Send + Sync + 'static {
    fn publish(
        &self,
        events: &[crate::events::Event],
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
}
