//! The rejection queue on SQS.

use aws_sdk_sqs::Client;
use titus_aws::sqs::queue_error;
use titus_core::messages::QueueError;

use crate::{Rejection, RejectionSink};

/// Sends rejections to the stage's `submit-rejected` queue, one JSON message each.
#[derive(Debug, Clone)]
pub struct SqsRejectionQueue {
    client: Client,
    queue_url: String,
}

impl SqsRejectionQueue {
    pub fn new(client: Client, queue_url: String) -> SqsRejectionQueue {
        SqsRejectionQueue { client, queue_url }
    }
}

impl RejectionSink for SqsRejectionQueue {
    async fn reject(&self, rejection: &Rejection) -> Result<(), QueueError> {
        let body = serde_json::to_string(rejection)
            .map_err(|e| QueueError::Internal(format!("cannot encode rejection: {e}")))?;
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send()
            .await
            .map_err(|e| queue_error(&self.queue_url, e))?;
        Ok(())
    }
}
