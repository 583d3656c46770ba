//! The event feed in the stage's `events` table: each event twice, in its job's partition and in
//! its minute's shard of every job's, under `{feed ms}#{id}`, the event as JSON in `doc`,
//! forgotten by the table's time to live (see `titus_core::events`).

use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use aws_sdk_dynamodb::Client;
use titus_core::events::{Event, FeedCursor};
use titus_core::ports::check_events_write;
use titus_core::StoreError;

use super::codec::{decode_doc, encode_doc, n, s};
use super::conditional::sdk_error;
use super::results::batch_write;
use crate::resources::attr;

pub(super) async fn write(
    client: &Client,
    table: &str,
    events: &[Event],
) -> Result<(), StoreError> {
    check_events_write(events.len())?;
    let mut requests = Vec::with_capacity(events.len() * 2);
    for event in events {
        let doc = encode_doc(event)?;
        for feed_key in event.feed_keys() {
            let put = PutRequest::builder()
                .item(attr::FEED_KEY, s(&feed_key))
                .item(attr::EVENT_KEY, s(&event.event_key()))
                .item(attr::DOC, s(&doc))
                .item(attr::EXPIRES_AT, n(event.expires_at_secs()))
                .build()
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            requests.push(WriteRequest::builder().put_request(put).build());
        }
    }
    batch_write(client, table, "events", requests).await
}

/// One partition after the cursor, strongly consistent so that an event written before the
/// read is in it.
pub(super) async fn read(
    client: &Client,
    table: &str,
    feed_key: &str,
    after: &FeedCursor,
    limit: u32,
) -> Result<Vec<Event>, StoreError> {
    let out = client
        .query()
        .table_name(table)
        .key_condition_expression("#feed = :feed AND #key > :after")
        .expression_attribute_names("#feed", attr::FEED_KEY)
        .expression_attribute_names("#key", attr::EVENT_KEY)
        .expression_attribute_values(":feed", s(feed_key))
        .expression_attribute_values(":after", s(after.as_str()))
        .consistent_read(true)
        .limit(limit.max(1) as i32)
        .send()
        .await
        .map_err(|e| sdk_error("Query events", e))?;
    out.items().iter().map(decode_doc).collect()
}
