//! The event feed's two use cases: ingesting the changes of the jobs, tasks and placement
//! results tables (their DynamoDB streams: the events function in AWS, a stream follower on the
//! emulator) into the feed and onto the event bus, and reading the feed after a cursor.
//!
//! An event is written after its change, from the table's stream, never in the change's own
//! transaction: the writes of the control plane stay as they are, and the stream keeps each
//! record's changes in order and delivers each at least once. Events have stable ids, so a
//! change delivered twice is the same event twice (see `titus_core::events`).

use std::collections::HashMap;

use titus_core::events::{
    agent_events, job_events, partitions, placement_events, task_events, AgentRecord, Event,
    EventQuery, FeedCursor, MAX_EVENTS_PER_READ, MAX_WRITE_LAG_MS, SETTLE_MS,
};
pub use titus_core::events::{ChangeSource, StreamChange};
use titus_core::placement::PlacementResult;
use titus_core::ports::{Clock, EventPublisher, MAX_EVENTS_PER_WRITE};
use titus_core::{Job, JobId, JobStore, Ports, StoreError, Task};

use crate::{ControlError, ControlPlane};

/// What one batch of stream records gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestSummary {
    pub records: usize,
    pub events: usize,
    /// Records whose JSON could not be read: logged and skipped (delivering them again would
    /// fail again).
    pub unreadable: usize,
    /// Writes that landed too late after their feed time and were written again.
    pub rewritten: usize,
}

fn decode<T: serde::de::DeserializeOwned>(doc: Option<&str>) -> Result<Option<T>, String> {
    doc.map(serde_json::from_str)
        .transpose()
        .map_err(|e| e.to_string())
}

/// The events of one stream record; a removal is no event (jobs and tasks are never deleted
/// while they matter, a removed placement result means the job's tasks fit, and an agent's
/// record is removed only long after it was lost). `now_ms` dates an agent's event (its record
/// keeps no time of its state).
fn derive(change: &StreamChange, now_ms: u64) -> Result<Vec<Event>, String> {
    let (old, new) = (change.old_doc.as_deref(), change.new_doc.as_deref());
    Ok(match change.source {
        ChangeSource::Jobs => match decode::<Job>(new)? {
            Some(job) => job_events(decode::<Job>(old)?.as_ref(), &job),
            None => Vec::new(),
        },
        ChangeSource::Tasks => match decode::<Task>(new)? {
            Some(task) => task_events(decode::<Task>(old)?.as_ref(), &task),
            None => Vec::new(),
        },
        ChangeSource::PlacementResults => match decode::<PlacementResult>(new)? {
            Some(result) => placement_events(decode::<PlacementResult>(old)?.as_ref(), &result),
            None => Vec::new(),
        },
        ChangeSource::Agents => match decode::<AgentRecord>(new)? {
            Some(agent) => agent_events(
                decode::<AgentRecord>(old)?.as_ref(),
                &agent,
                &change.sequence,
                now_ms,
            ),
            None => Vec::new(),
        },
    })
}

/// Turns a batch of stream records (in stream order) into events: writes them to the feed and
/// publishes them. An error means nothing of the batch may be taken as done: the caller has
/// the whole batch delivered again (the same events, the same ids).
pub async fn ingest<P: Ports>(
    cp: &ControlPlane<P>,
    publisher: &impl EventPublisher,
    changes: &[StreamChange],
) -> Result<IngestSummary, ControlError> {
    let mut summary = IngestSummary {
        records: changes.len(),
        ..IngestSummary::default()
    };
    let mut events = Vec::new();
    let now_ms = cp.ports.clock().now_ms();
    for change in changes {
        match derive(change, now_ms) {
            Ok(derived) => events.extend(derived),
            Err(e) => {
                summary.unreadable += 1;
                tracing::error!(sequence = %change.sequence, source = ?change.source, error = %e,
                    "a stream record's JSON cannot be read; it gives no event");
            }
        }
    }
    fill_owners(cp, &mut events).await?;
    for chunk in events.chunks_mut(MAX_EVENTS_PER_WRITE) {
        summary.rewritten += write_settled(cp, chunk).await?;
        publisher.publish(chunk).await?;
    }
    summary.events = events.len();
    let m = &cp.metrics;
    m.add(crate::metrics::EVENTS_WRITTEN, events.len() as f64);
    m.add(crate::metrics::EVENTS_PUBLISHED, events.len() as f64);
    if let Some(oldest) = events
        .iter()
        .map(|e| e.timestamp_ms)
        .filter(|&t| t > 0)
        .min()
    {
        let age = cp.ports.clock().now_ms().saturating_sub(oldest);
        m.max(crate::metrics::EVENT_STREAM_AGE, age as f64);
    }
    Ok(summary)
}

/// Task and placement events name their job's owner, read once per job and batch. An agent's
/// event has no job and no owner.
async fn fill_owners<P: Ports>(
    cp: &ControlPlane<P>,
    events: &mut [Event],
) -> Result<(), ControlError> {
    let mut owners: HashMap<JobId, String> = events
        .iter()
        .filter(|e| !e.owner.is_empty())
        .filter_map(|e| Some((e.job_id.clone()?, e.owner.clone())))
        .collect();
    for event in events.iter_mut().filter(|e| e.owner.is_empty()) {
        let Some(job_id) = event.job_id.clone() else {
            continue;
        };
        if !owners.contains_key(&job_id) {
            let owner = cp
                .ports
                .jobs()
                .get_job(&job_id)
                .await?
                .map(|job| job.job_descriptor.owner.team_email)
                .unwrap_or_default();
            owners.insert(job_id.clone(), owner);
        }
        event.owner.clone_from(&owners[&job_id]);
    }
    Ok(())
}

/// Writes events stamped with the time now, and again with a new time while a write lands
/// later than [`MAX_WRITE_LAG_MS`] after its stamp: readers read only what is older than
/// [`SETTLE_MS`], so a late write could fall behind a reader. Returns how many rewrites it took.
async fn write_settled<P: Ports>(
    cp: &ControlPlane<P>,
    events: &mut [Event],
) -> Result<usize, ControlError> {
    const MAX_WRITES: usize = 5;
    for attempt in 0..MAX_WRITES {
        let stamp = cp.ports.clock().now_ms();
        for (n, event) in events.iter_mut().enumerate() {
            event.feed_ms = stamp;
            event.feed_seq = n as u32;
        }
        cp.ports.jobs().put_events(events).await?;
        if cp.ports.clock().now_ms().saturating_sub(stamp) <= MAX_WRITE_LAG_MS {
            return Ok(attempt);
        }
        tracing::warn!(
            events = events.len(),
            attempt,
            "an event write landed late; writing it again"
        );
    }
    Err(StoreError::Unavailable(format!(
        "event writes landed later than {MAX_WRITE_LAG_MS} ms after their time {MAX_WRITES} times"
    ))
    .into())
}

/// One read of the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPage {
    /// The matching events after the cursor, in feed order.
    pub events: Vec<Event>,
    /// Where the next read goes on from (past events the filters dropped, too).
    pub cursor: FeedCursor,
    /// Whether more events may be read at once (the read stopped at its limit).
    pub has_more: bool,
}

/// Where a read with no cursor starts: `since_ms` (no older than the feed keeps), or now.
pub fn start_cursor(since_ms: Option<u64>, now_ms: u64) -> FeedCursor {
    let oldest = now_ms.saturating_sub(titus_core::events::EVENT_TTL_MS);
    match since_ms {
        Some(since) => FeedCursor::at_ms(since.max(oldest).saturating_sub(1)),
        None => FeedCursor::at_ms(now_ms.saturating_sub(SETTLE_MS)),
    }
}

/// Reads the events after `cursor` that are settled (older than [`SETTLE_MS`]) and match the
/// query, at most `query.limit`. Does not wait: a long poll reads again.
pub async fn read<P: Ports>(
    cp: &ControlPlane<P>,
    query: &EventQuery,
    cursor: &FeedCursor,
) -> Result<EventPage, ControlError> {
    let limit = query.limit.clamp(1, MAX_EVENTS_PER_READ) as usize;
    let horizon_ms = cp.ports.clock().now_ms().saturating_sub(SETTLE_MS);
    let settled = FeedCursor::at_ms(horizon_ms);
    let mut page = EventPage {
        events: Vec::new(),
        cursor: cursor.clone(),
        has_more: false,
    };
    if *cursor >= settled {
        return Ok(page);
    }
    let minutes = partitions(query.job_id.as_ref(), cursor, horizon_ms);
    let minutes_read = minutes.len();
    for (n, shards) in minutes.into_iter().enumerate() {
        let wanted = limit - page.events.len();
        let mut merged = Vec::new();
        // A shard that filled the read may hold more: only what sorts before its last event is
        // known complete.
        let mut known_until: Option<String> = None;
        for key in &shards {
            let read = cp
                .ports
                .jobs()
                .read_events(key, &page.cursor, wanted as u32)
                .await?;
            if read.len() == wanted {
                let last = read.last().map(Event::event_key).unwrap_or_default();
                known_until = Some(known_until.map_or(last.clone(), |k| k.min(last)));
            }
            merged.extend(read);
        }
        merged.sort_by_key(Event::event_key);
        merged.retain(|e| {
            e.feed_ms <= horizon_ms && known_until.as_ref().is_none_or(|k| e.event_key() <= *k)
        });
        let end = match query.job_id {
            Some(_) => horizon_ms,
            None => titus_core::events::minute_end_ms(&shards[0])
                .unwrap_or(horizon_ms)
                .min(horizon_ms),
        };
        if merged.len() >= wanted {
            merged.truncate(wanted);
            let last = merged.last().map(Event::event_key).unwrap_or_default();
            page.cursor = FeedCursor::after_key(&last);
            page.events
                .extend(merged.into_iter().filter(|e| query.matches(e)));
            page.has_more = true;
            return Ok(page);
        }
        page.events
            .extend(merged.into_iter().filter(|e| query.matches(e)));
        page.cursor = FeedCursor::at_ms(end).max(page.cursor.clone());
        // The walk is bounded: a read that stopped before the horizon says so.
        if n + 1 == minutes_read && end < horizon_ms {
            page.has_more = true;
        }
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use titus_core::events::EventType;

    #[test]
    fn a_task_record_written_again_gives_no_new_event_and_an_unreadable_one_is_an_error() {
        let change = StreamChange {
            source: ChangeSource::Tasks,
            sequence: "1".into(),
            old_doc: None,
            new_doc: Some("{not json".into()),
        };
        assert!(derive(&change, 0).is_err());
        let removed = StreamChange {
            new_doc: None,
            old_doc: Some("{}".into()),
            ..change
        };
        assert_eq!(derive(&removed, 0), Ok(Vec::new()));
        assert_eq!(
            ChangeSource::of_table_role("tasks"),
            Some(ChangeSource::Tasks)
        );
        assert_eq!(
            ChangeSource::of_table_role("agents"),
            Some(ChangeSource::Agents)
        );
        assert_eq!(ChangeSource::of_table_role("heartbeats"), None);
        assert_eq!(
            EventType::parse("TaskStateChange"),
            Some(EventType::TaskStateChange)
        );
    }

    #[test]
    fn a_read_without_a_cursor_starts_now_or_at_since_within_the_feeds_memory() {
        let now = 10 * titus_core::events::EVENT_TTL_MS;
        assert_eq!(start_cursor(None, now), FeedCursor::at_ms(now - SETTLE_MS));
        assert_eq!(start_cursor(Some(now - 5), now), FeedCursor::at_ms(now - 6));
        assert_eq!(
            start_cursor(Some(0), now),
            FeedCursor::at_ms(now - titus_core::events::EVENT_TTL_MS - 1)
        );
    }
}
