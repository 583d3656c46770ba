//! Queues fed to the use cases outside Lambda, as Lambda's event source mappings feed them:
//! `titus local up` runs every function this way, and tests run the part they need (an agent's
//! registrations) beside a real agent.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsBatchResponse;
use titus_aws::{AwsClients, Names};
use titus_control::{agents, ControlPlane, InboundMessage};
use titus_core::ports::{Clock as _, Ports};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::lambda::batch_response;

/// How long a message the handler failed stays hidden here before it is received again.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Feeds a queue to a Lambda-style batch handler, as Lambda's event source mapping does: long
/// polls of up to ten messages, then deletes every message not reported as a batch item
/// failure. Failures go to the DLQ after the queue's receive limit, as in AWS; unlike Lambda's
/// mapping, which leaves them hidden for the queue's visibility timeout (60 s), they come back
/// after [`RETRY_AFTER`], so that a transient failure on one machine (an emulator slow under
/// load) delays a status by seconds, not minutes.
pub async fn pump<H, F>(sqs: aws_sdk_sqs::Client, url: String, stop: CancellationToken, handler: H)
where
    H: Fn(Vec<InboundMessage>) -> F,
    F: Future<Output = SqsBatchResponse>,
{
    while !stop.is_cancelled() {
        let receive = titus_aws::sqs::receive_batch(&sqs, &url, Duration::from_secs(1));
        let received = tokio::select! {
            _ = stop.cancelled() => return,
            received = receive => received,
        };
        let messages = match received {
            Ok(messages) => messages,
            Err(e) => {
                warn!(queue = %url, error = %e, "receive failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        let inbound = messages
            .iter()
            .map(|m| InboundMessage {
                message_id: m.message_id.clone(),
                body: m.body.clone(),
                sender_id: m.sender_id.clone(),
            })
            .collect();
        let response = handler(inbound).await;
        let failed: Vec<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        let done: Vec<&str> = messages
            .iter()
            .filter(|m| !failed.contains(&m.message_id.as_str()))
            .map(|m| m.receipt_handle.as_str())
            .collect();
        for failure in messages
            .iter()
            .filter(|m| failed.contains(&m.message_id.as_str()))
        {
            let retry = sqs
                .change_message_visibility()
                .queue_url(&url)
                .receipt_handle(&failure.receipt_handle)
                .visibility_timeout(RETRY_AFTER.as_secs() as i32)
                .send()
                .await;
            if let Err(e) = retry {
                // It comes back after the queue's own visibility timeout instead.
                warn!(queue = %url, error = %e, "could not shorten a failed message's visibility");
            }
        }
        if !done.is_empty() {
            // A message not deleted comes back; every handler is idempotent.
            if let Err(e) = titus_aws::sqs::delete_batch(&sqs, &url, &done).await {
                warn!(queue = %url, error = %e, "delete failed");
            }
        }
    }
}

/// Applies the agents' requests on stage `names`' registrations queue until `stop`, as the status
/// function's second event source mapping does.
pub async fn serve_agent_requests<P: Ports>(
    cp: Arc<ControlPlane<P>>,
    clients: &AwsClients,
    names: &Names,
    stop: CancellationToken,
) -> Result<(), titus_core::ports::QueueError> {
    let url = titus_aws::sqs::queue_url(&clients.sqs, &names.registrations_queue()).await?;
    pump(clients.sqs.clone(), url, stop, |messages| {
        let cp = cp.clone();
        async move {
            let now_ms = cp.ports().clock().now_ms();
            batch_response(&agents::process_requests(&cp, messages, now_ms).await)
        }
    })
    .await;
    Ok(())
}
