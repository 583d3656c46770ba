//! The scheduler's placement results in the stage's `placement-results` table: one item per job
//! whose tasks fit nowhere, the result as JSON in `doc`, removed by the scheduler when the job's
//! tasks fit again and by the table's time to live after the last write.

use std::time::Duration;

use aws_sdk_dynamodb::types::{DeleteRequest, PutRequest, WriteRequest};
use aws_sdk_dynamodb::Client;
use titus_core::placement::{PlacementResult, RESULT_TTL_MS};
use titus_core::ports::check_placement_results_write;
use titus_core::{JobId, StoreError};

use super::codec::{decode_doc, encode_doc, n, s};
use super::conditional::sdk_error;
use crate::resources::attr;

/// DynamoDB's limit on requests in one BatchWriteItem call.
const MAX_BATCH_WRITES: usize = 25;

/// How many times unprocessed writes (throttled by DynamoDB) are sent again before giving up.
const MAX_ATTEMPTS: u32 = 6;

fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(e.to_string())
}

fn put_request(result: &PlacementResult) -> Result<WriteRequest, StoreError> {
    let expires_at_secs = (result.computed_at_ms + RESULT_TTL_MS) / 1000;
    let put = PutRequest::builder()
        .item(attr::JOB_ID, s(result.job_id.as_str()))
        .item(attr::DOC, s(&encode_doc(result)?))
        .item(attr::EXPIRES_AT, n(expires_at_secs))
        .build()
        .map_err(internal)?;
    Ok(WriteRequest::builder().put_request(put).build())
}

fn delete_request(job_id: &JobId) -> Result<WriteRequest, StoreError> {
    let delete = DeleteRequest::builder()
        .key(attr::JOB_ID, s(job_id.as_str()))
        .build()
        .map_err(internal)?;
    Ok(WriteRequest::builder().delete_request(delete).build())
}

/// Puts `results` and deletes `cleared`, 25 requests per call, sending unprocessed ones again
/// with backoff.
pub(super) async fn write(
    client: &Client,
    table: &str,
    results: &[PlacementResult],
    cleared: &[JobId],
) -> Result<(), StoreError> {
    check_placement_results_write(results.len(), cleared.len())?;
    // A job both cleared and written keeps the result: results are what this tick found.
    let requests: Vec<WriteRequest> = results
        .iter()
        .map(put_request)
        .chain(
            cleared
                .iter()
                .filter(|id| !results.iter().any(|r| r.job_id == **id))
                .map(delete_request),
        )
        .collect::<Result<_, _>>()?;
    batch_write(client, table, "placement-results", requests).await
}

/// Sends `requests` 25 per BatchWriteItem call, sending unprocessed ones (throttled by
/// DynamoDB) again with backoff. `what` names the table in errors.
pub(super) async fn batch_write(
    client: &Client,
    table: &str,
    what: &str,
    requests: Vec<WriteRequest>,
) -> Result<(), StoreError> {
    for chunk in requests.chunks(MAX_BATCH_WRITES) {
        let mut pending = chunk.to_vec();
        let mut attempt = 0;
        while !pending.is_empty() {
            attempt += 1;
            if attempt > MAX_ATTEMPTS {
                return Err(StoreError::Unavailable(format!(
                    "BatchWriteItem {what}: {} writes still unprocessed after \
                     {MAX_ATTEMPTS} attempts",
                    pending.len()
                )));
            }
            if attempt > 1 {
                tokio::time::sleep(Duration::from_millis(25 << attempt.min(6))).await;
            }
            let out = client
                .batch_write_item()
                .request_items(table, pending)
                .send()
                .await
                .map_err(|e| sdk_error(&format!("BatchWriteItem {what}"), e))?;
            pending = out
                .unprocessed_items
                .unwrap_or_default()
                .remove(table)
                .unwrap_or_default();
        }
    }
    Ok(())
}

/// A job's result, read eventually consistently: a result is a few seconds old at best anyway.
pub(super) async fn read(
    client: &Client,
    table: &str,
    job_id: &JobId,
) -> Result<Option<PlacementResult>, StoreError> {
    let out = client
        .get_item()
        .table_name(table)
        .key(attr::JOB_ID, s(job_id.as_str()))
        .send()
        .await
        .map_err(|e| sdk_error("GetItem placement-results", e))?;
    out.item.as_ref().map(decode_doc).transpose()
}
