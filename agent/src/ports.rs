//! The agent's queue ports: where its commands come from and where its status updates go. The
//! SQS adapters are in `aws.rs`; `testing.rs` has in-memory ones.

use std::future::Future;
use std::time::Duration;

use titus_core::messages::{QueueError, TaskStatusUpdate};

/// A message received from the agent's queue. It stays hidden from other receives until it is
/// deleted or released, or its visibility timeout ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub body: String,
    /// Names this receive of the message for `delete`, `release` and `extend`.
    pub receipt: String,
    /// How many times the message was received, this time included.
    pub receive_count: u32,
}

/// The agent's own command queue.
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
