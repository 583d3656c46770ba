//! The queue ports on the world's queues, as the SQS adapters use SQS: commands to the queue
//! derived from the agent's id, in batches of at most ten; an agent's (or any) queue read as a
//! [`CommandSource`]; statuses, agents' requests, dead letters (with their reason as message
//! attributes) and rejections each on their stage queue.

use std::collections::BTreeMap;
use std::time::Duration;

use titus_core::messages::{AgentCommand, AgentRequest, Rejection, TaskStatusUpdate};
use titus_core::ports::{
    AgentRequestSink, CommandQueue, CommandSource, DeadLetter, DeadLetterSink, EventPublisher,
    QueueError, ReceivedMessage, RejectionSink, SendFailure, StatusSink, MAX_BATCH_MESSAGES,
};

use crate::queues::Queues;
use crate::world::{MemoryWorld, State};

/// Message attribute that says why a message was dead-lettered (as the SQS adapter names it).
pub const REASON_ATTRIBUTE: &str = "reason";
/// Message attribute with the id the message had on the status queue.
pub const SOURCE_MESSAGE_ID_ATTRIBUTE: &str = "sourceMessageId";
/// Message attribute with when the message was given up on.
pub const DEAD_LETTERED_AT_ATTRIBUTE: &str = "deadLetteredAtMs";
/// SQS refuses an empty body; an empty message is kept as this.
pub const EMPTY_BODY_PLACEHOLDER: &str = "(empty message body)";
/// Longest reason kept.
const REASON_MAX_CHARS: usize = 1_000;
/// The longest a receive waits for a message.
const MAX_WAIT: Duration = Duration::from_secs(20);

fn encode<T: serde::Serialize>(value: &T, what: &str) -> Result<String, QueueError> {
    serde_json::to_string(value)
        .map_err(|e| QueueError::Internal(format!("cannot encode {what}: {e}")))
}

/// One SendMessageBatch of `bodies` to queue `name`.
fn send_batch(state: &mut State, name: &str, bodies: Vec<String>) -> Result<(), QueueError> {
    Queues::check_batch(name, &bodies)?;
    let payload = bodies.iter().map(String::len).sum();
    state.meter.sqs("SQS.SendMessageBatch", payload);
    for body in bodies {
        state
            .queues
            .send(name, body, BTreeMap::new(), state.now_ms)?;
    }
    Ok(())
}

/// One SendMessage.
fn send_one(
    state: &mut State,
    name: &str,
    body: String,
    attributes: BTreeMap<String, String>,
) -> Result<(), QueueError> {
    let payload = body.len()
        + attributes
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
    state.meter.sqs("SQS.SendMessage", payload);
    state.queues.send(name, body, attributes, state.now_ms)?;
    Ok(())
}

/// Agents' command queues, from the control plane.
#[derive(Debug, Clone)]
pub struct MemoryCommandQueue {
    world: MemoryWorld,
}

impl MemoryCommandQueue {
    pub(crate) fn new(world: MemoryWorld) -> MemoryCommandQueue {
        MemoryCommandQueue { world }
    }
}

impl CommandQueue for MemoryCommandQueue {
    async fn send_commands(
        &self,
        agent_id: &str,
        commands: &[AgentCommand],
    ) -> Result<Vec<SendFailure>, QueueError> {
        let result = self
            .world
            .run("commands.send_commands", |s| {
                let name = s.queues.agent_queue(agent_id);
                if !s.queues.exists(&name) {
                    s.meter.sqs("SQS.GetQueueUrl", 0);
                    return Err(QueueError::NoSuchQueue(name));
                }
                for chunk in commands.chunks(MAX_BATCH_MESSAGES) {
                    let bodies = chunk
                        .iter()
                        .map(|c| encode(c, "command"))
                        .collect::<Result<Vec<_>, _>>()?;
                    send_batch(s, &name, bodies)?;
                }
                Ok(Vec::new())
            })
            .await;
        self.world.notify_arrivals();
        result
    }

    async fn ensure_agent_queue(&self, agent_id: &str) -> Result<String, QueueError> {
        self.world
            .run("commands.ensure_agent_queue", |s| {
                let name = s.queues.agent_queue(agent_id);
                let created = !s.queues.exists(&name);
                // Provisioning's calls: look up the dead-letter queue, create or update it, read its
                // ARN, then the same for the queue itself.
                for operation in [
                    "SQS.GetQueueUrl",
                    "SQS.GetQueueAttributes",
                    "SQS.GetQueueUrl",
                ] {
                    s.meter.sqs(operation, 0);
                }
                let write = if created {
                    "SQS.CreateQueue"
                } else {
                    "SQS.SetQueueAttributes"
                };
                s.meter.sqs(write, 0);
                s.meter.sqs(write, 0);
                Ok(s.queues.ensure_agent_queue(agent_id))
            })
            .await
    }
}

/// A queue read as an agent reads its own: receive, delete, release, extend. A long poll ends
/// when a message arrives on its queue (or is released there) or when its wait ends; a message
/// that becomes visible because the clock was moved is seen by the next receive.
#[derive(Debug, Clone)]
pub struct MemoryCommandSource {
    world: MemoryWorld,
    queue: String,
}

impl MemoryCommandSource {
    pub(crate) fn new(world: MemoryWorld, queue: String) -> MemoryCommandSource {
        MemoryCommandSource { world, queue }
    }

    /// The queue's name.
    pub fn queue(&self) -> &str {
        &self.queue
    }
}

impl CommandSource for MemoryCommandSource {
    async fn receive(&self, max: u32, wait: Duration) -> Result<Vec<ReceivedMessage>, QueueError> {
        let arrival = self.world.next_arrival();
        tokio::pin!(arrival);
        arrival.as_mut().enable();
        let received = self
            .world
            .run("source.receive", |s| {
                s.meter.sqs("SQS.ReceiveMessage", 0);
                s.queues.receive(&self.queue, max, s.now_ms)
            })
            .await?;
        if !received.is_empty() || wait.is_zero() {
            return Ok(received);
        }
        // A long poll: the same request, answered when a message arrives here or the wait ends.
        let deadline = tokio::time::Instant::now() + wait.min(MAX_WAIT);
        loop {
            let timed_out = tokio::time::timeout_at(deadline, arrival.as_mut())
                .await
                .is_err();
            arrival.set(self.world.next_arrival());
            arrival.as_mut().enable();
            let received = self
                .world
                .inspect(|s| s.queues.receive(&self.queue, max, s.now_ms))?;
            if timed_out || !received.is_empty() {
                return Ok(received);
            }
        }
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.world
            .run("source.delete", |s| {
                s.meter.sqs("SQS.DeleteMessage", 0);
                s.queues.delete(&self.queue, receipt)
            })
            .await
    }

    async fn release(&self, receipt: &str) -> Result<(), QueueError> {
        let result = self
            .world
            .run("source.release", |s| {
                s.meter.sqs("SQS.ChangeMessageVisibility", 0);
                s.queues
                    .change_visibility(&self.queue, receipt, 0, s.now_ms)
            })
            .await;
        self.world.notify_arrivals();
        result
    }

    async fn extend(&self, receipt: &str, hidden_for: Duration) -> Result<(), QueueError> {
        // Whole seconds, as SQS takes them.
        let hidden_for_ms = hidden_for.as_secs().saturating_mul(1000);
        self.world
            .run("source.extend", |s| {
                s.meter.sqs("SQS.ChangeMessageVisibility", 0);
                s.queues
                    .change_visibility(&self.queue, receipt, hidden_for_ms, s.now_ms)
            })
            .await
    }
}

/// The stage's status queue, from the agents.
#[derive(Debug, Clone)]
pub struct MemoryStatusSink {
    world: MemoryWorld,
}

impl MemoryStatusSink {
    pub(crate) fn new(world: MemoryWorld) -> MemoryStatusSink {
        MemoryStatusSink { world }
    }
}

impl StatusSink for MemoryStatusSink {
    async fn send(&self, updates: &[TaskStatusUpdate]) -> Result<Vec<bool>, QueueError> {
        let result = self
            .world
            .run("status.send", |s| {
                let bodies = updates
                    .iter()
                    .map(|u| encode(u, "status update"))
                    .collect::<Result<Vec<_>, _>>()?;
                let name = s.queues.status_queue();
                send_batch(s, &name, bodies)?;
                Ok(vec![true; updates.len()])
            })
            .await;
        self.world.notify_arrivals();
        result
    }
}

/// The stage's agent-requests queue, from the agents.
#[derive(Debug, Clone)]
pub struct MemoryAgentRequests {
    world: MemoryWorld,
}

impl MemoryAgentRequests {
    pub(crate) fn new(world: MemoryWorld) -> MemoryAgentRequests {
        MemoryAgentRequests { world }
    }
}

impl AgentRequestSink for MemoryAgentRequests {
    async fn send(&self, request: &AgentRequest) -> Result<(), QueueError> {
        let result = self
            .world
            .run("requests.send", |s| {
                let name = s.queues.registrations_queue();
                send_one(s, &name, encode(request, "agent request")?, BTreeMap::new())
            })
            .await;
        self.world.notify_arrivals();
        result
    }
}

/// The status queue's dead-letter queue.
#[derive(Debug, Clone)]
pub struct MemoryDeadLetters {
    world: MemoryWorld,
}

impl MemoryDeadLetters {
    pub(crate) fn new(world: MemoryWorld) -> MemoryDeadLetters {
        MemoryDeadLetters { world }
    }
}

impl DeadLetterSink for MemoryDeadLetters {
    async fn send(&self, letter: &DeadLetter) -> Result<(), QueueError> {
        let result = self
            .world
            .run("dead_letters.send", |s| {
                let reason: String = letter.reason.chars().take(REASON_MAX_CHARS).collect();
                let body = if letter.body.is_empty() {
                    EMPTY_BODY_PLACEHOLDER.to_owned()
                } else {
                    letter.body.clone()
                };
                let mut attributes = BTreeMap::from([
                    (REASON_ATTRIBUTE.to_owned(), reason),
                    (
                        DEAD_LETTERED_AT_ATTRIBUTE.to_owned(),
                        letter.dead_lettered_at_ms.to_string(),
                    ),
                ]);
                if !letter.message_id.is_empty() {
                    attributes.insert(
                        SOURCE_MESSAGE_ID_ATTRIBUTE.to_owned(),
                        letter.message_id.clone(),
                    );
                }
                let name = s.queues.status_dead_letter_queue();
                send_one(s, &name, body, attributes)
            })
            .await;
        self.world.notify_arrivals();
        result
    }
}

/// The stage's `submit-rejected` queue.
#[derive(Debug, Clone)]
pub struct MemoryRejections {
    world: MemoryWorld,
}

impl MemoryRejections {
    pub(crate) fn new(world: MemoryWorld) -> MemoryRejections {
        MemoryRejections { world }
    }
}

impl RejectionSink for MemoryRejections {
    async fn reject(&self, rejection: &Rejection) -> Result<(), QueueError> {
        let result = self
            .world
            .run("rejections.reject", |s| {
                let name = s.queues.rejection_queue();
                send_one(s, &name, encode(rejection, "rejection")?, BTreeMap::new())
            })
            .await;
        self.world.notify_arrivals();
        result
    }
}

/// The stage's event bus: what was published, in order, as EventBridge would take it (ten
/// entries per PutEvents call).
#[derive(Debug, Clone)]
pub struct MemoryEventBus {
    world: MemoryWorld,
}

impl MemoryEventBus {
    pub(crate) fn new(world: MemoryWorld) -> MemoryEventBus {
        MemoryEventBus { world }
    }

    /// Every event published so far.
    pub fn published(&self) -> Vec<titus_core::events::Event> {
        self.world.inspect(|s| s.published_events.clone())
    }
}

impl EventPublisher for MemoryEventBus {
    async fn publish(&self, events: &[titus_core::events::Event]) -> Result<(), QueueError> {
        self.world
            .run("events.publish", |s| {
                for chunk in events.chunks(10) {
                    s.meter.request("EventBridge.PutEvents");
                    s.published_events.extend(chunk.iter().cloned());
                }
                Ok(())
            })
            .await
    }
}
