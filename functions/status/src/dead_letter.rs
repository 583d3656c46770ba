//! The status DLQ: where a message that can never be applied is kept, with why.
//!
//! The body is kept exactly as received, so that once the cause is fixed (an agent's bug, a
//! schema change), an operator can redrive the DLQ into the status queue and the messages apply.
//! Why it was refused travels beside it, in message attributes: `reason`, `sourceMessageId` and
//! `deadLetteredAtMs`.

use std::future::Future;

use aws_sdk_sqs::types::MessageAttributeValue;
use aws_sdk_sqs::Client;
use titus_aws::sqs::queue_error;
use titus_aws::Names;
use titus_core::messages::QueueError;

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

/// A message that cannot be applied, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub message_id: String,
    pub body: String,
    pub reason: String,
    pub dead_lettered_at_ms: u64,
}

/// Where dead letters go.
pub trait DeadLetterSink: Send + Sync {
    fn send(&self, letter: &DeadLetter) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// The stage's status DLQ on SQS.
#[derive(Debug, Clone)]
pub struct SqsDeadLetterQueue {
    client: Client,
    queue_url: String,
}

impl SqsDeadLetterQueue {
    pub fn new(client: Client, queue_url: String) -> SqsDeadLetterQueue {
        SqsDeadLetterQueue { client, queue_url }
    }

    /// The stage's status DLQ, which provisioning created.
    pub async fn for_stage(
        client: Client,
        names: &Names,
    ) -> Result<SqsDeadLetterQueue, QueueError> {
        let name = names.status_dead_letter_queue();
        let out = client
            .get_queue_url()
            .queue_name(&name)
            .send()
            .await
            .map_err(|e| queue_error(&name, e))?;
        let queue_url = out
            .queue_url()
            .ok_or_else(|| QueueError::NoSuchQueue(name.clone()))?
            .to_owned();
        Ok(SqsDeadLetterQueue::new(client, queue_url))
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }
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
        let mut request = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
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
            .map_err(|e| queue_error(&self.queue_url, e))?;
        Ok(())
    }
}
