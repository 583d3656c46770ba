//! Every SQS call of the project: agents' command queues (sent by the control plane, received by
//! the agent), the status queue, the status DLQ with each message's reason, the rejection queue,
//! and the receive-and-delete loop that stands in for Lambda's event source mapping locally.
//!
//! Batches are at most [`MAX_BATCH_MESSAGES`] messages, SQS's limit.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName,
    QueueAttributeName, SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;
use titus_core::messages::{AgentCommand, AgentRequest, Rejection, TaskStatusUpdate};
use titus_core::ports::{
    AgentRequestSink, CommandQueue, CommandSource, DeadLetter, DeadLetterSink, QueueError,
    ReceivedMessage, RejectionSink, SendFailure, StatusSink, MAX_BATCH_MESSAGES,
};
use tokio::sync::OnceCell;

use crate::resources::Names;

/// SQS's limit on entries in one batch call.
pub const MAX_BATCH_ENTRIES: usize = MAX_BATCH_MESSAGES;

/// The URL of the queue named `name`.
pub async fn queue_url(client: &Client, name: &str) -> Result<String, QueueError> {
    let out = client
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .map_err(|e| queue_error(name, e))?;
    out.queue_url()
        .map(str::to_owned)
        .ok_or_else(|| QueueError::NoSuchQueue(name.to_owned()))
}

/// The ARN of the queue at `url`.
pub async fn queue_arn(client: &Client, url: &str) -> Result<String, QueueError> {
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| queue_error(url, e))?;
    out.attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| QueueError::Internal(format!("{url}: no QueueArn in the answer")))
}

/// A queue whose URL is looked up by name on first use and kept, so that building the adapters
/// costs no call.
#[derive(Debug, Clone)]
struct NamedQueue {
    name: String,
    url: OnceCell<String>,
}

impl NamedQueue {
    fn new(name: String) -> NamedQueue {
        NamedQueue {
            name,
            url: OnceCell::new(),
        }
    }

    fn with_url(name: String, url: String) -> NamedQueue {
        NamedQueue {
            name,
            url: OnceCell::new_with(Some(url)),
        }
    }

    async fn url(&self, client: &Client) -> Result<&str, QueueError> {
        self.url
            .get_or_try_init(|| queue_url(client, &self.name))
            .await
            .map(String::as_str)
    }
}

// ---- agents' command queues, from the control plane ----------------------------------------

/// Sends agent commands through SQS, to the queue named after the agent and the stage. URLs are
/// looked up once per agent and kept.
#[derive(Debug, Clone)]
pub struct SqsCommandQueue {
    client: Client,
    names: Names,
    urls: std::sync::Arc<std::sync::Mutex<HashMap<String, String>>>,
}

impl SqsCommandQueue {
    pub fn for_stage(client: Client, names: &Names) -> SqsCommandQueue {
        SqsCommandQueue {
            client,
            names: names.clone(),
            urls: std::sync::Arc::default(),
        }
    }

    /// Agent `agent_id`'s queue URL: derived from the stage and the id, looked up once.
    pub async fn agent_queue_url(&self, agent_id: &str) -> Result<String, QueueError> {
        if let Some(url) = self.cached(agent_id) {
            return Ok(url);
        }
        let url = queue_url(&self.client, &self.names.agent_queue(agent_id)).await?;
        self.remember(agent_id, &url);
        Ok(url)
    }

    fn cached(&self, agent_id: &str) -> Option<String> {
        self.urls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(agent_id)
            .cloned()
    }

    fn remember(&self, agent_id: &str, url: &str) {
        self.urls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(agent_id.to_owned(), url.to_owned());
    }

    async fn send_batch(
        &self,
        queue_url: &str,
        chunk: &[AgentCommand],
    ) -> Result<Vec<SendFailure>, QueueError> {
        let entries = batch_entries(chunk, "command")?;
        let out = self
            .client
            .send_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| queue_error(queue_url, e))?;
        Ok(out
            .failed()
            .iter()
            .filter_map(|failed| {
                let index: usize = failed.id().parse().unwrap_or(usize::MAX);
                chunk.get(index).map(|command| SendFailure {
                    task_id: command.task_id().clone(),
                    reason: format!(
                        "{}: {}",
                        failed.code(),
                        failed.message().unwrap_or_default()
                    ),
                })
            })
            .collect())
    }
}

impl CommandQueue for SqsCommandQueue {
    async fn send_commands(
        &self,
        agent_id: &str,
        commands: &[AgentCommand],
    ) -> Result<Vec<SendFailure>, QueueError> {
        let queue_url = self.agent_queue_url(agent_id).await?;
        let mut failures = Vec::new();
        for chunk in commands.chunks(MAX_BATCH_ENTRIES) {
            failures.extend(self.send_batch(&queue_url, chunk).await?);
        }
        Ok(failures)
    }

    async fn ensure_agent_queue(&self, agent_id: &str) -> Result<String, QueueError> {
        let (url, _) =
            crate::provision::ensure_queue(&self.client, &self.names.agent_queue_def(agent_id))
                .await
                .map_err(|e| QueueError::Unavailable(e.to_string()))?;
        self.remember(agent_id, &url);
        Ok(url)
    }
}

/// Sends an agent's requests about its own record to the stage's registrations queue.
#[derive(Debug, Clone)]
pub struct SqsAgentRequests {
    client: Client,
    queue: NamedQueue,
}

impl SqsAgentRequests {
    pub fn for_stage(client: Client, names: &Names) -> SqsAgentRequests {
        SqsAgentRequests {
            client,
            queue: NamedQueue::new(names.registrations_queue()),
        }
    }
}

impl AgentRequestSink for SqsAgentRequests {
    async fn send(&self, request: &AgentRequest) -> Result<(), QueueError> {
        let body = serde_json::to_string(request)
            .map_err(|e| QueueError::Internal(format!("cannot encode agent request: {e}")))?;
        let queue_url = self.queue.url(&self.client).await?;
        self.client
            .send_message()
            .queue_url(queue_url)
            .message_body(body)
            .send()
            .await
            .map_err(|e| queue_error(queue_url, e))?;
        Ok(())
    }
}

// ---- an agent's own queue and the status queue, from the agent ----------------------------

/// The agent's own queue on SQS.
#[derive(Debug, Clone)]
pub struct SqsCommandSource {
    client: Client,
    queue: NamedQueue,
}

impl SqsCommandSource {
    pub fn new(client: Client, queue_url: String) -> SqsCommandSource {
        SqsCommandSource {
            client,
            queue: NamedQueue::with_url(String::new(), queue_url),
        }
    }

    /// The queue named `name`, looked up on first use: the control plane creates an agent's
    /// queue when it registers the agent, so it may not exist when the adapter is built.
    pub fn named(client: Client, name: String) -> SqsCommandSource {
        SqsCommandSource {
            client,
            queue: NamedQueue::new(name),
        }
    }

    pub async fn queue_url(&self) -> Result<&str, QueueError> {
        self.queue.url(&self.client).await
    }
}

impl CommandSource for SqsCommandSource {
    async fn receive(&self, max: u32, wait: Duration) -> Result<Vec<ReceivedMessage>, QueueError> {
        let queue_url = self.queue_url().await?;
        let out = self
            .client
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| queue_error(queue_url, e))?;
        Ok(out
            .messages()
            .iter()
            .map(|m| ReceivedMessage {
                body: m.body().unwrap_or_default().to_owned(),
                receipt: m.receipt_handle().unwrap_or_default().to_owned(),
                receive_count: m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1),
            })
            .collect())
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        let queue_url = self.queue_url().await?;
        self.client
            .delete_message()
            .queue_url(queue_url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| queue_error(queue_url, e))?;
        Ok(())
    }

    async fn release(&self, receipt: &str) -> Result<(), QueueError> {
        self.extend(receipt, Duration::ZERO).await
    }

    async fn extend(&self, receipt: &str, hidden_for: Duration) -> Result<(), QueueError> {
        let queue_url = self.queue_url().await?;
        self.client
            .change_message_visibility()
            .queue_url(queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(hidden_for.as_secs().min(43_200) as i32)
            .send()
            .await
            .map_err(|e| queue_error(queue_url, e))?;
        Ok(())
    }
}

/// The stage's status queue on SQS.
#[derive(Debug, Clone)]
pub struct SqsStatusSink {
    client: Client,
    queue_url: String,
}

impl SqsStatusSink {
    pub fn new(client: Client, queue_url: String) -> SqsStatusSink {
        SqsStatusSink { client, queue_url }
    }

    /// The sink for the stage's status queue, which provisioning created.
    pub async fn for_stage(client: Client, names: &Names) -> Result<SqsStatusSink, QueueError> {
        let queue_url = queue_url(&client, &names.status_queue()).await?;
        Ok(SqsStatusSink::new(client, queue_url))
    }
}

impl StatusSink for SqsStatusSink {
    async fn send(&self, updates: &[TaskStatusUpdate]) -> Result<Vec<bool>, QueueError> {
        let entries = batch_entries(updates, "status update")?;
        let out = self
            .client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| queue_error(&self.queue_url, e))?;
        let mut accepted = vec![true; updates.len()];
        for failed in out.failed() {
            if let Some(slot) = failed
                .id()
                .parse::<usize>()
                .ok()
                .and_then(|i| accepted.get_mut(i))
            {
                *slot = false;
            }
        }
        Ok(accepted)
    }
}

// ---- the status DLQ ---------------------------------------------------------------------

/// Message attribute that says why a message was dead-lettered.
pub const REASON_ATTRIBUTE: &str = "reason";
/// Message attribute with the id the message had on the status queue.
pub const SOURCE_MESSAGE_ID_ATTRIBUTE: &str = "sourceMessageId";
/// Message attribute with when the status function gave up on the message.
pub const DEAD_LETTERED_AT_ATTRIBUTE: &str = "deadLetteredAtMs";
/// SQS refuses an empty body; an empty message is kept as this.
pub const EMPTY_BODY_PLACEHOLDER: &str = "(empty message body)";
/// Longest reason kept, so that body and attributes fit in one SQS message.
const REASON_MAX_CHARS: usize = 1_000;

/// The stage's status DLQ on SQS.
#[derive(Debug, Clone)]
pub struct SqsDeadLetterQueue {
    client: Client,
    queue: NamedQueue,
}

impl SqsDeadLetterQueue {
    /// The stage's status DLQ, which provisioning created; its URL is looked up on first use.
    pub fn for_stage(client: Client, names: &Names) -> SqsDeadLetterQueue {
        SqsDeadLetterQueue {
            client,
            queue: NamedQueue::new(names.status_dead_letter_queue()),
        }
    }

    /// The dead-letter queue named `name` (an agent's own, say); its URL is looked up on first
    /// use.
    pub fn named(client: Client, name: String) -> SqsDeadLetterQueue {
        SqsDeadLetterQueue {
            client,
            queue: NamedQueue::new(name),
        }
    }

    /// The DLQ at a known URL.
    pub fn new(client: Client, queue_url: String) -> SqsDeadLetterQueue {
        SqsDeadLetterQueue {
            client,
            queue: NamedQueue::with_url(queue_url.clone(), queue_url),
        }
    }

    /// The queue's URL, looked up if it was not yet.
    pub async fn queue_url(&self) -> Result<&str, QueueError> {
        self.queue.url(&self.client).await
    }
}

/// One `SendMessageBatch` entry per message, as JSON, with its position as its id (what the
/// batch's failures name).
fn batch_entries<T: serde::Serialize>(
    messages: &[T],
    what: &str,
) -> Result<Vec<SendMessageBatchRequestEntry>, QueueError> {
    messages
        .iter()
        .enumerate()
        .map(|(i, message)| {
            let body = serde_json::to_string(message)
                .map_err(|e| QueueError::Internal(format!("cannot encode {what}: {e}")))?;
            SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(body)
                .build()
                .map_err(|e| QueueError::Internal(e.to_string()))
        })
        .collect()
}

fn string_attribute(value: &str, data_type: &str) -> Result<MessageAttributeValue, QueueError> {
    MessageAttributeValue::builder()
        .data_type(data_type)
        .string_value(value)
        .build()
        .map_err(|e| QueueError::Internal(format!("building a message attribute: {e}")))
}

impl DeadLetterSink for SqsDeadLetterQueue {
    async fn send(&self, letter: &DeadLetter) -> Result<(), QueueError> {
        let reason: String = letter.reason.chars().take(REASON_MAX_CHARS).collect();
        let body = if letter.body.is_empty() {
            EMPTY_BODY_PLACEHOLDER
        } else {
            &letter.body
        };
        let queue_url = self.queue_url().await?;
        let mut request = self
            .client
            .send_message()
            .queue_url(queue_url)
            .message_body(body)
            .message_attributes(REASON_ATTRIBUTE, string_attribute(&reason, "String")?)
            .message_attributes(
                DEAD_LETTERED_AT_ATTRIBUTE,
                string_attribute(&letter.dead_lettered_at_ms.to_string(), "Number")?,
            );
        if !letter.message_id.is_empty() {
            request = request.message_attributes(
                SOURCE_MESSAGE_ID_ATTRIBUTE,
                string_attribute(&letter.message_id, "String")?,
            );
        }
        request
            .send()
            .await
            .map_err(|e| queue_error(queue_url, e))?;
        Ok(())
    }
}

// ---- the rejection queue -------------------------------------------------------------------

/// Sends rejections to the stage's `submit-rejected` queue, one JSON message each.
#[derive(Debug, Clone)]
pub struct SqsRejectionQueue {
    client: Client,
    queue: NamedQueue,
}

impl SqsRejectionQueue {
    /// The stage's rejection queue, which provisioning created; its URL is looked up on first
    /// use.
    pub fn for_stage(client: Client, names: &Names) -> SqsRejectionQueue {
        SqsRejectionQueue {
            client,
            queue: NamedQueue::new(names.submit_rejected_queue()),
        }
    }

    /// The rejection queue at a known URL.
    pub fn new(client: Client, queue_url: String) -> SqsRejectionQueue {
        SqsRejectionQueue {
            client,
            queue: NamedQueue::with_url(queue_url.clone(), queue_url),
        }
    }

    /// The queue's URL, looked up if it was not yet.
    pub async fn queue_url(&self) -> Result<&str, QueueError> {
        self.queue.url(&self.client).await
    }
}

impl RejectionSink for SqsRejectionQueue {
    async fn reject(&self, rejection: &Rejection) -> Result<(), QueueError> {
        let body = serde_json::to_string(rejection)
            .map_err(|e| QueueError::Internal(format!("cannot encode rejection: {e}")))?;
        let queue_url = self.queue.url(&self.client).await?;
        self.client
            .send_message()
            .queue_url(queue_url)
            .message_body(body)
            .send()
            .await
            .map_err(|e| queue_error(queue_url, e))?;
        Ok(())
    }
}

// ---- Lambda's event source mapping, locally ----------------------------------------------

/// A message received by [`receive_batch`], with what Lambda's SQS event carries of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolledMessage {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    /// The sending principal's id (SQS's `SenderId` system attribute).
    pub sender_id: Option<String>,
    pub receive_count: u32,
    /// String message attributes.
    pub attributes: HashMap<String, String>,
}

/// One long poll of up to ten messages, with their system and message attributes, as Lambda's
/// event source mapping receives them.
pub async fn receive_batch(
    client: &Client,
    queue_url: &str,
    wait: Duration,
) -> Result<Vec<PolledMessage>, QueueError> {
    let out = client
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(MAX_BATCH_ENTRIES as i32)
        .wait_time_seconds(wait.as_secs().min(20) as i32)
        .message_attribute_names("All")
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .map_err(|e| queue_error(queue_url, e))?;
    Ok(out
        .messages()
        .iter()
        .map(|m| {
            let system = m.attributes();
            PolledMessage {
                message_id: m.message_id().unwrap_or_default().to_owned(),
                receipt_handle: m.receipt_handle().unwrap_or_default().to_owned(),
                body: m.body().unwrap_or_default().to_owned(),
                sender_id: system
                    .and_then(|a| a.get(&MessageSystemAttributeName::SenderId))
                    .cloned(),
                receive_count: system
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1),
                attributes: m
                    .message_attributes()
                    .map(|attributes| {
                        attributes
                            .iter()
                            .filter_map(|(k, v)| Some((k.clone(), v.string_value()?.to_owned())))
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        })
        .collect())
}

/// Deletes received messages by receipt handle, ten at a time. Returns how many SQS refused; a
/// message not deleted comes back after its visibility timeout.
pub async fn delete_batch(
    client: &Client,
    queue_url: &str,
    receipt_handles: &[&str],
) -> Result<usize, QueueError> {
    let mut refused = 0;
    for chunk in receipt_handles.chunks(MAX_BATCH_ENTRIES) {
        let entries: Vec<DeleteMessageBatchRequestEntry> = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, receipt)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(*receipt)
                    .build()
                    .ok()
            })
            .collect();
        let out = client
            .delete_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| queue_error(queue_url, e))?;
        refused += out.failed().len();
    }
    Ok(refused)
}

/// Maps an SQS SDK error to the queue's error.
pub fn queue_error<E, R>(queue: &str, err: SdkError<E, R>) -> QueueError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match &err {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            QueueError::Unavailable(format!(
                "{queue}: {}",
                aws_sdk_sqs::error::DisplayErrorContext(&err)
            ))
        }
        _ => match err.code() {
            Some("AWS.SimpleQueueService.NonExistentQueue" | "QueueDoesNotExist") => {
                QueueError::NoSuchQueue(queue.to_owned())
            }
            Some("ThrottlingException" | "RequestThrottled" | "ServiceUnavailable") => {
                QueueError::Unavailable(format!("{queue}: {}", err.message().unwrap_or_default()))
            }
            code => QueueError::Internal(format!(
                "{queue}: {}: {}",
                code.unwrap_or("Unknown"),
                err.message().unwrap_or_default()
            )),
        },
    }
}
