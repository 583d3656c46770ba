//! The event feed's AWS parts: the EventBridge bus every event is published to, and stream
//! records read as the events use case takes them.

use std::time::Duration;

use aws_sdk_dynamodbstreams::types::{AttributeValue, Record};
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use titus_core::events::{AgentRecord, ChangeSource, Event, StreamChange};
use titus_core::ports::{EventPublisher, QueueError};

use crate::agents::agent_attr;
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
                        .set_resources(Some(event_resources(event)))
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

/// What an event on the bus is about, for rules to match: its job, its agent.
fn event_resources(event: &Event) -> Vec<String> {
    let job = event.job_id.iter().map(|id| format!("titus:job:{id}"));
    let agent = event.agent_id.iter().map(|id| format!("titus:agent:{id}"));
    job.chain(agent).collect()
}

/// The document of a stream image: the `doc` attribute of jobs, tasks and placement results;
/// for an agent, whose record is kept in attributes, the part of it an event reports.
fn doc(
    source: ChangeSource,
    image: Option<&std::collections::HashMap<String, AttributeValue>>,
) -> Option<String> {
    let image = image?;
    match source {
        ChangeSource::Agents => agent_doc(
            |name| image.get(name)?.as_s().ok().cloned(),
            |name| image.get(name)?.as_n().ok()?.parse().ok(),
        ),
        _ => image.get(attr::DOC)?.as_s().ok().cloned(),
    }
}

/// An agent stream image as an [`AgentRecord`] document, from its string and number attributes
/// (`string(name)`, `number(name)`): the images of DynamoDB Streams' API and of a Lambda event
/// differ in form only. `None` when the image is no agent's (no id or state).
pub fn agent_doc(
    string: impl Fn(&str) -> Option<String>,
    number: impl Fn(&str) -> Option<u64>,
) -> Option<String> {
    let record = AgentRecord {
        id: string(attr::AGENT_ID)?,
        state: string(agent_attr::STATE)?,
        task_count: number(agent_attr::TASK_COUNT).unwrap_or(0),
        zone: string(agent_attr::ZONE).unwrap_or_default(),
        machine_group: string(agent_attr::MACHINE_GROUP).unwrap_or_default(),
    };
    serde_json::to_string(&record).ok()
}

/// A stream record as the events use case takes it.
pub fn stream_change(source: ChangeSource, record: &Record) -> Option<StreamChange> {
    let data = record.dynamodb()?;
    Some(StreamChange {
        source,
        sequence: data.sequence_number()?.to_owned(),
        old_doc: doc(source, data.old_image.as_ref()),
        new_doc: doc(source, data.new_image.as_ref()),
    })
}
