//! The event feed's AWS parts: the EventBridge bus every event is published to, and stream
//! records read as the events use case takes them.

use std::time::Duration;

use aws_sdk_dynamodbstreams::types::{AttributeValue, Record};
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use titus_core::events::{ChangeSource, Event, StreamChange};
use titus_core::ports::{EventPublisher, QueueError};

use crate::resources::{attr, Names};

/// The `source` of every event this platform puts on its bus.
pub const EVENT_SOURCE: &str = "titus";
/// EventBridge's limit on entries per PutEvents call.
const MAX_ENTRIES: usize = 10;
const MAX_ATTEMPTS: u32 = 5;

/// Publishes to the stage's bus: `source` [`EVENT_SOURCE`], `detail-type` the event's type,
/// `detail` the event as the API returns it.
#[derive(Debug, Clone)]
pub struct EventBridgePublisher {
    client: aws_sdk_eventbridge::Client,
    bus: String,
}

impl EventBridgePublisher {
    pub fn new(client: aws_sdk_eventbridge::Client, names: &Names) -> EventBridgePublisher {
        EventBridgePublisher {
            client,
            bus: names.event_bus(),
        }
    }
}

impl EventPublisher for EventBridgePublisher {
    async fn publish(&self, events: &[Event]) -> Result<(), QueueError> {
        for chunk in events.chunks(MAX_ENTRIES) {
            let mut pending: Vec<PutEventsRequestEntry> = chunk
                .iter()
                .map(|event| {
                    let detail = serde_json::to_string(event)
                        .map_err(|e| QueueError::Internal(format!("cannot encode event: {e}")))?;
                    Ok(PutEventsRequestEntry::builder()
                        .source(EVENT_SOURCE)
                        .detail_type(event.kind.as_str())
                        .detail(detail)
                        .event_bus_name(&self.bus)
                        .resources(format!("titus:job:{}", event.job_id))
                        .build())
                })
                .collect::<Result<_, QueueError>>()?;
            let mut attempt = 0;
            while !pending.is_empty() {
                attempt += 1;
                if attempt > MAX_ATTEMPTS {
                    return Err(QueueError::Unavailable(format!(
                        "PutEvents {}: {} entries still failing after {MAX_ATTEMPTS} attempts",
                        self.bus,
                        pending.len()
                    )));
                }
                if attempt > 1 {
                    tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                }
                let out = self
                    .client
                    .put_events()
                    .set_entries(Some(pending.clone()))
                    .send()
                    .await
                    .map_err(|e| {
                        QueueError::Unavailable(format!(
                            "PutEvents {}: {}",
                            self.bus,
                            aws_sdk_eventbridge::error::DisplayErrorContext(e)
                        ))
                    })?;
                // Entries answer in order; the failed ones carry an error code.
                pending = out
                    .entries()
                    .iter()
                    .zip(pending)
                    .filter(|(result, _)| result.error_code().is_some())
                    .map(|(_, entry)| entry)
                    .collect();
            }
        }
        Ok(())
    }
}

/// Creates the stage's bus on the emulator if it is missing (the CDK app and Terraform create
/// it in AWS).
pub async fn ensure_event_bus(
    client: &aws_sdk_eventbridge::Client,
    names: &Names,
) -> Result<(), QueueError> {
    let name = names.event_bus();
    if client.describe_event_bus().name(&name).send().await.is_ok() {
        return Ok(());
    }
    match client.create_event_bus().name(&name).send().await {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_already_exists_exception()) =>
        {
            Ok(())
        }
        Err(e) => Err(QueueError::Unavailable(format!(
            "CreateEventBus {name}: {}",
            aws_sdk_eventbridge::error::DisplayErrorContext(e)
        ))),
    }
}

fn doc(image: Option<&std::collections::HashMap<String, AttributeValue>>) -> Option<String> {
    image?.get(attr::DOC)?.as_s().ok().cloned()
}

/// A stream record as the events use case takes it.
pub fn stream_change(source: ChangeSource, record: &Record) -> Option<StreamChange> {
    let data = record.dynamodb()?;
    Some(StreamChange {
        source,
        sequence: data.sequence_number()?.to_owned(),
        old_doc: doc(data.old_image.as_ref()),
        new_doc: doc(data.new_image.as_ref()),
    })
}
