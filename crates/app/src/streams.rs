//! The event feed's stream side, shared by the events Lambda and the local stack: DynamoDB
//! stream records read from a Lambda event (the event source mappings in AWS) or followed on
//! the emulator (what those mappings do, for `titus local up` and the tests).

use std::future::Future;
use std::time::Duration;

use aws_sdk_dynamodbstreams::types::ShardIteratorType;
use serde::Deserialize;
use titus_aws::events::stream_change;
use titus_aws::Names;
use titus_core::events::{ChangeSource, StreamChange};
use tokio_util::sync::CancellationToken;

/// The part of a Lambda DynamoDB stream event the events function reads.
#[derive(Debug, Deserialize)]
pub struct StreamEvent {
    #[serde(rename = "Records", default)]
    pub records: Vec<StreamEventRecord>,
}

#[derive(Debug, Deserialize)]
pub struct StreamEventRecord {
    #[serde(rename = "eventSourceARN", default)]
    pub event_source_arn: String,
    pub dynamodb: StreamEventData,
}

#[derive(Debug, Deserialize)]
pub struct StreamEventData {
    #[serde(rename = "SequenceNumber")]
    pub sequence_number: String,
    #[serde(rename = "NewImage", default)]
    pub new_image: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(rename = "OldImage", default)]
    pub old_image: Option<serde_json::Map<String, serde_json::Value>>,
}

fn image_doc(
    source: ChangeSource,
    image: Option<&serde_json::Map<String, serde_json::Value>>,
) -> Option<String> {
    let image = image?;
    match source {
        // An agent's record is kept in attributes, not in a document.
        ChangeSource::Agents => titus_aws::events::agent_doc(
            |name| Some(image.get(name)?.get("S")?.as_str()?.to_owned()),
            |name| image.get(name)?.get("N")?.as_str()?.parse().ok(),
        ),
        _ => image.get("doc")?.get("S")?.as_str().map(str::to_owned),
    }
}

/// The source of a stream ARN (`arn:aws:dynamodb:…:table/{table name}/stream/…`) among the
/// stage's streamed tables, given as (table name, source).
fn source_of_arn(arn: &str, sources: &[(String, ChangeSource)]) -> Option<ChangeSource> {
    let table = arn.split("table/").nth(1)?.split('/').next()?;
    sources
        .iter()
        .find(|(name, _)| name == table)
        .map(|(_, source)| *source)
}

/// The records of a Lambda stream event, in order; an error names a record from a table that
/// is not one of the stage's streamed tables.
pub fn stream_changes(event: &StreamEvent, names: &Names) -> Result<Vec<StreamChange>, String> {
    // The stage's tables, once per batch rather than once per record.
    let sources: Vec<(String, ChangeSource)> = names
        .definitions()
        .tables
        .into_iter()
        .filter_map(|t| ChangeSource::of_table_role(t.role).map(|source| (t.name, source)))
        .collect();
    event
        .records
        .iter()
        .map(|record| {
            let source = source_of_arn(&record.event_source_arn, &sources).ok_or_else(|| {
                format!(
                    "stream record from {:?}, which is not a streamed table of stage {}",
                    record.event_source_arn,
                    names.stage()
                )
            })?;
            Ok(StreamChange {
                source,
                sequence: record.dynamodb.sequence_number.clone(),
                old_doc: image_doc(source, record.dynamodb.old_image.as_ref()),
                new_doc: image_doc(source, record.dynamodb.new_image.as_ref()),
            })
        })
        .collect()
}

/// How long the follower waits between reads of a stream that had nothing new.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Follows the streams of every streamed table of `names` from their latest records (`ready`
/// is told once it reads from there), handing
/// each batch of a table's records (in order) to `handle`, which must succeed before the
/// follower goes on: a failed batch is handed over again. Ends when `stop` is cancelled. For
/// the emulator: in AWS, event source mappings do this.
pub async fn follow_streams<F, Fut>(
    dynamodb: &aws_sdk_dynamodb::Client,
    streams: &aws_sdk_dynamodbstreams::Client,
    names: &Names,
    handle: F,
    ready: tokio::sync::oneshot::Sender<()>,
    stop: CancellationToken,
) -> Result<(), String>
where
    F: Fn(Vec<StreamChange>) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut followed = Vec::new();
    for table in names.definitions().tables.iter().filter(|t| t.stream) {
        let Some(source) = ChangeSource::of_table_role(table.role) else {
            continue;
        };
        let described = dynamodb
            .describe_table()
            .table_name(&table.name)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "DescribeTable {}: {}",
                    table.name,
                    aws_sdk_dynamodb::error::DisplayErrorContext(e)
                )
            })?;
        let arn = described
            .table()
            .and_then(|t| t.latest_stream_arn())
            .ok_or_else(|| {
                format!(
                    "table {} has no stream; provision the stage again",
                    table.name
                )
            })?
            .to_owned();
        let stream = streams
            .describe_stream()
            .stream_arn(&arn)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "DescribeStream {arn}: {}",
                    aws_sdk_dynamodbstreams::error::DisplayErrorContext(e)
                )
            })?;
        for shard in stream
            .stream_description()
            .map(|d| d.shards())
            .unwrap_or_default()
        {
            let Some(shard_id) = shard.shard_id() else {
                continue;
            };
            let iterator = streams
                .get_shard_iterator()
                .stream_arn(&arn)
                .shard_id(shard_id)
                .shard_iterator_type(ShardIteratorType::Latest)
                .send()
                .await
                .map_err(|e| {
                    format!(
                        "GetShardIterator {arn}: {}",
                        aws_sdk_dynamodbstreams::error::DisplayErrorContext(e)
                    )
                })?
                .shard_iterator;
            followed.push((source, table.name.clone(), iterator));
        }
    }
    // Every change from here on is seen.
    let _ = ready.send(());
    while !stop.is_cancelled() {
        let mut quiet = true;
        for (source, table, iterator) in &mut followed {
            let Some(current) = iterator.clone() else {
                continue;
            };
            let out = match streams
                .get_records()
                .shard_iterator(&current)
                .limit(100)
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) => {
                    tracing::warn!(%table, error = %aws_sdk_dynamodbstreams::error::DisplayErrorContext(e), "reading a stream failed; trying again");
                    continue;
                }
            };
            let changes: Vec<StreamChange> = out
                .records()
                .iter()
                .filter_map(|r| stream_change(*source, r))
                .collect();
            if !changes.is_empty() {
                quiet = false;
                // The batch is handed over until it succeeds: nothing is skipped.
                while let Err(e) = handle(changes.clone()).await {
                    tracing::warn!(%table, error = %e, "ingesting stream records failed; trying again");
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
            *iterator = out.next_shard_iterator;
        }
        if quiet {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
    }
    Ok(())
}

/// The events function on the emulator: creates the stage's bus if it is missing, then follows
/// the stage's streams into the feed and onto the bus until `stop` (`ready` is told when every
/// change from then on will be seen).
pub async fn serve_events<P: titus_core::Ports>(
    cp: std::sync::Arc<titus_control::ControlPlane<P>>,
    sdk_config: &aws_config::SdkConfig,
    names: &Names,
    ready: tokio::sync::oneshot::Sender<()>,
    stop: CancellationToken,
) -> Result<(), String> {
    let bus = aws_sdk_eventbridge::Client::new(sdk_config);
    titus_aws::events::ensure_event_bus(&bus, names)
        .await
        .map_err(|e| e.to_string())?;
    let publisher = titus_aws::events::EventBridgePublisher::new(bus, names);
    let dynamodb = aws_sdk_dynamodb::Client::new(sdk_config);
    let streams = aws_sdk_dynamodbstreams::Client::new(sdk_config);
    let (cp, publisher) = (&cp, &publisher);
    follow_streams(
        &dynamodb,
        &streams,
        names,
        |changes| async move {
            titus_control::events::ingest(cp, publisher, &changes)
                .await
                .map(|summary| tracing::debug!(?summary, "events written"))
                .map_err(|e| e.to_string())
        },
        ready,
        stop,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent_image(state: &str, task_count: u32) -> serde_json::Value {
        serde_json::json!({
            "agentId": {"S": "i-0abc"},
            "agentState": {"S": state},
            "taskCount": {"N": task_count.to_string()},
            "zone": {"S": "us-east-1a"},
            "machineGroup": {"S": "default"},
            "queueUrl": {"S": "https://sqs.us-east-1.amazonaws.com/123456789012/q"}
        })
    }

    #[test]
    fn an_agents_stream_record_of_a_lambda_event_reads_as_the_agents_record() {
        let names = Names::new("test").expect("stage");
        let arn = format!(
            "arn:aws:dynamodb:us-east-1:123456789012:table/{}/stream/2026-01-01T00:00:00.000",
            names.agents_table()
        );
        let event: StreamEvent = serde_json::from_value(serde_json::json!({
            "Records": [{
                "eventName": "MODIFY",
                "eventSourceARN": arn,
                "dynamodb": {
                    "SequenceNumber": "42",
                    "OldImage": agent_image("active", 2),
                    "NewImage": agent_image("draining", 2)
                }
            }]
        }))
        .expect("event");
        let changes = stream_changes(&event, &names).expect("changes");
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].source, ChangeSource::Agents);
        let new: titus_core::events::AgentRecord =
            serde_json::from_str(changes[0].new_doc.as_deref().expect("new doc")).expect("record");
        assert_eq!(new.state, "draining");
        assert_eq!(new.task_count, 2);
        assert_eq!(new.id, "i-0abc");
        let old: titus_core::events::AgentRecord =
            serde_json::from_str(changes[0].old_doc.as_deref().expect("old doc")).expect("record");
        assert_eq!(old.state, "active");
    }
}
