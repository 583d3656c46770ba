//! Agent commands over SQS: one queue per agent, sent in batches of up to ten.

use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use aws_sdk_sqs::Client;
use titus_core::messages::{AgentCommand, CommandQueue, QueueError, SendFailure};

/// SQS's limit on entries in one SendMessageBatch call.
pub const MAX_BATCH_ENTRIES: usize = 10;

/// Sends agent commands through SQS.
#[derive(Debug, Clone)]
pub struct SqsCommandQueue {
    client: Client,
}

impl SqsCommandQueue {
    pub fn new(client: Client) -> SqsCommandQueue {
        SqsCommandQueue { client }
    }
}

impl CommandQueue for SqsCommandQueue {
    async fn send_commands(
        &self,
        queue_url: &str,
        commands: &[AgentCommand],
    ) -> Result<Vec<SendFailure>, QueueError> {
        let mut failures = Vec::new();
        for chunk in commands.chunks(MAX_BATCH_ENTRIES) {
            let mut entries = Vec::with_capacity(chunk.len());
            for (i, command) in chunk.iter().enumerate() {
                let body = serde_json::to_string(command)
                    .map_err(|e| QueueError::Internal(format!("cannot encode command: {e}")))?;
                entries.push(
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body)
                        .build()
                        .map_err(|e| QueueError::Internal(e.to_string()))?,
                );
            }
            let out = self
                .client
                .send_message_batch()
                .queue_url(queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| queue_error(queue_url, e))?;
            for failed in out.failed() {
                let index: usize = failed.id().parse().unwrap_or(usize::MAX);
                if let Some(command) = chunk.get(index) {
                    failures.push(SendFailure {
                        task_id: command.task_id().clone(),
                        reason: format!(
                            "{}: {}",
                            failed.code(),
                            failed.message().unwrap_or_default()
                        ),
                    });
                }
            }
        }
        Ok(failures)
    }
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
