//! The queue pump against the emulator: a message its handler fails comes back within seconds,
//! not after the queue's visibility timeout, and one it handles is deleted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse};
use titus_app::pump::{pump, RETRY_AFTER};
use titus_aws::provision::ensure_queue;
use titus_aws::resources::QueueDef;
use titus_aws::AwsClients;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_message_comes_back_within_seconds_and_a_handled_one_is_deleted() {
    let clients = AwsClients::local_emulator().await;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let queue = QueueDef {
        role: "pump-test",
        name: format!("titus-pump-test-{nanos}"),
        // Far longer than the test waits: only the pump's own retry brings the message back.
        visibility_timeout_secs: 300,
        message_retention_secs: 3_600,
        dead_letter: None,
    };
    let (url, _) = ensure_queue(&clients.sqs, &queue).await.unwrap();
    clients
        .sqs
        .send_message()
        .queue_url(&url)
        .message_body("hello")
        .send()
        .await
        .unwrap();

    let deliveries: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let stop = CancellationToken::new();
    let pumping = tokio::spawn({
        let (sqs, url, stop, deliveries) = (
            clients.sqs.clone(),
            url.clone(),
            stop.clone(),
            deliveries.clone(),
        );
        async move {
            pump(sqs, url, stop.clone(), |messages| {
                let deliveries = deliveries.clone();
                let stop = stop.clone();
                async move {
                    let mut seen = deliveries.lock().unwrap();
                    let mut failures = Vec::new();
                    for m in messages {
                        seen.push((m.body.clone(), Instant::now()));
                        if seen.len() == 1 {
                            let mut failure = BatchItemFailure::default();
                            failure.item_identifier = m.message_id;
                            failures.push(failure);
                        } else {
                            stop.cancel();
                        }
                    }
                    let mut response = SqsBatchResponse::default();
                    response.batch_item_failures = failures;
                    response
                }
            })
            .await;
        }
    });
    let waited = tokio::time::timeout(Duration::from_secs(60), stop.cancelled()).await;
    stop.cancel();
    pumping.await.unwrap();

    assert!(
        waited.is_ok(),
        "delivered again within 60 s: {deliveries:?}"
    );
    let seen = deliveries.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(|(body, _)| body == "hello"));
    let gap = seen[1].1 - seen[0].1;
    assert!(
        gap >= RETRY_AFTER - Duration::from_secs(1),
        "came back after {gap:?}"
    );
    // The handled delivery was deleted: nothing is left, visible or hidden.
    let attributes = clients
        .sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .unwrap();
    let count = |name| {
        attributes
            .attributes()
            .and_then(|a| a.get(&name))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(
        (
            count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages),
            count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        ),
        ("0".to_owned(), "0".to_owned())
    );
    clients
        .sqs
        .delete_queue()
        .queue_url(&url)
        .send()
        .await
        .unwrap();
}
