//! The event feed over the in-process ports: stream records of jobs, tasks and placement
//! results ingested into the feed and onto the bus, read back after cursors, filtered, in
//! pages, across minutes, with nothing lost or changed when a batch is delivered twice.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;

use support::descriptor;
use titus_control::events::{ingest, read, start_cursor, ChangeSource, StreamChange};
use titus_control::{create_job, ControlPlane, Settings};
use titus_core::events::{EventQuery, EventType, FeedCursor, SETTLE_MS};
use titus_core::ports::Clock;
use titus_core::{Job, JobStore, Task, TaskState, TaskStatus};
use titus_memory::{Fault, MemoryPorts, MemoryWorld};

fn change(source: ChangeSource, seq: u32, old: Option<String>, new: String) -> StreamChange {
    StreamChange {
        source,
        sequence: seq.to_string(),
        old_doc: old,
        new_doc: Some(new),
    }
}

fn doc<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap()
}

/// A job, its two tasks created and one of them launched: the records as the streams give them.
async fn job_and_changes(cp: &ControlPlane<MemoryPorts>, owner: &str) -> (Job, Vec<StreamChange>) {
    let now = cp.ports.clock.now_ms();
    let job = create_job(
        cp,
        descriptor(serde_json::json!({"owner": {"teamEmail": owner}})),
        "caller",
        None,
        now,
    )
    .await
    .unwrap()
    .into_job();
    let tasks: Vec<Task> = Task::initial_tasks_of(&job);
    let mut launched = tasks[0].clone();
    launched.status_history.push(launched.status.clone());
    launched.status = TaskStatus {
        state: TaskState::Launched,
        reason_code: None,
        reason_message: "placed".into(),
        timestamp_ms: now + 1,
    };
    launched.agent_id = Some("agent-1".into());
    let changes = vec![
        change(ChangeSource::Jobs, 1, None, doc(&job)),
        change(ChangeSource::Tasks, 2, None, doc(&tasks[0])),
        change(ChangeSource::Tasks, 3, None, doc(&tasks[1])),
        change(ChangeSource::Tasks, 4, Some(doc(&tasks[0])), doc(&launched)),
    ];
    (job, changes)
}

fn query(limit: u32) -> EventQuery {
    EventQuery {
        limit,
        ..EventQuery::default()
    }
}

#[tokio::test]
async fn ingested_changes_are_read_back_in_order_and_published_each_with_its_owner() {
    let world = MemoryWorld::default();
    let cp = ControlPlane::new(world.ports(), Settings::default());
    let bus = world.event_bus();
    let start = start_cursor(Some(cp.ports.clock.now_ms()), cp.ports.clock.now_ms());
    let (job, changes) = job_and_changes(&cp, "blue@example.com").await;

    let summary = ingest(&cp, &bus, &changes).await.unwrap();
    assert_eq!((summary.records, summary.events), (4, 4));
    assert_eq!(bus.published().len(), 4);

    // Not settled yet: a reader sees nothing, and its cursor does not move past the events.
    let early = read(&cp, &query(100), &start).await.unwrap();
    assert!(early.events.is_empty());
    world.clock().advance_ms(SETTLE_MS + 1);

    let page = read(&cp, &query(100), &early.cursor).await.unwrap();
    let kinds: Vec<(EventType, Option<String>)> = page
        .events
        .iter()
        .map(|e| (e.kind, e.state.clone()))
        .collect();
    assert_eq!(
        kinds,
        [
            (EventType::JobStateChange, Some("Accepted".into())),
            (EventType::TaskStateChange, Some("Accepted".into())),
            (EventType::TaskStateChange, Some("Accepted".into())),
            (EventType::TaskStateChange, Some("Launched".into())),
        ]
    );
    assert!(page.events.iter().all(|e| e.owner == "blue@example.com"));
    assert!(page
        .events
        .iter()
        .all(|e| e.job_id.as_ref() == Some(&job.id)));
    assert!(!page.has_more);
    assert_eq!(page.events, bus.published());

    // The job's own feed says the same; read again from its cursor, nothing.
    let mut by_job = query(100);
    by_job.job_id = Some(job.id.clone());
    let job_page = read(&cp, &by_job, &start).await.unwrap();
    assert_eq!(job_page.events, page.events);
    assert!(read(&cp, &by_job, &job_page.cursor)
        .await
        .unwrap()
        .events
        .is_empty());
}

#[tokio::test]
async fn filters_pages_and_minutes_give_every_event_once() {
    let world = MemoryWorld::default();
    let cp = ControlPlane::new(world.ports(), Settings::default());
    let bus = world.event_bus();
    let start = FeedCursor::at_ms(cp.ports.clock.now_ms() - 1);
    let mut all_ids = BTreeSet::new();
    // Five jobs of two owners, each ingested a minute and a half after the last.
    for n in 0..5 {
        let owner = if n % 2 == 0 {
            "even@example.com"
        } else {
            "odd@example.com"
        };
        let (_, changes) = job_and_changes(&cp, owner).await;
        ingest(&cp, &bus, &changes).await.unwrap();
        world.clock().advance_ms(90_000);
    }
    for event in bus.published() {
        all_ids.insert(event.id);
    }
    assert_eq!(all_ids.len(), 20);

    // Pages of three, across minutes: every event once, in feed order.
    let mut cursor = start.clone();
    let mut read_ids = Vec::new();
    for _ in 0..100 {
        let page = read(&cp, &query(3), &cursor).await.unwrap();
        assert!(page.events.len() <= 3);
        read_ids.extend(page.events.iter().map(|e| e.id.clone()));
        assert!(page.cursor >= cursor, "the cursor never goes back");
        cursor = page.cursor;
        if !page.has_more && page.events.is_empty() {
            break;
        }
    }
    assert_eq!(read_ids.len(), 20, "{read_ids:?}");
    assert_eq!(read_ids.iter().cloned().collect::<BTreeSet<_>>(), all_ids);

    // Filters by owner and type.
    let mut odd_jobs = query(100);
    odd_jobs.owner = Some("odd@example.com".into());
    odd_jobs.types = vec![EventType::JobStateChange];
    let mut cursor = start;
    let mut seen = Vec::new();
    loop {
        let page = read(&cp, &odd_jobs, &cursor).await.unwrap();
        seen.extend(page.events);
        cursor = page.cursor;
        if !page.has_more {
            break;
        }
    }
    assert_eq!(seen.len(), 2);
    assert!(seen
        .iter()
        .all(|e| e.owner == "odd@example.com" && e.kind == EventType::JobStateChange));
}

#[tokio::test]
async fn a_batch_delivered_again_gives_the_same_events_and_a_failed_write_fails_the_batch() {
    let world = MemoryWorld::default();
    let cp = ControlPlane::new(world.ports(), Settings::default());
    let bus = world.event_bus();
    let start = FeedCursor::at_ms(cp.ports.clock.now_ms() - 1);
    let (job, changes) = job_and_changes(&cp, "team@example.com").await;

    world
        .faults()
        .fail_next("jobs.put_events", 1, Fault::Throttle)
        .unwrap();
    assert!(ingest(&cp, &bus, &changes).await.is_err());
    assert!(
        bus.published().is_empty(),
        "nothing is published before the feed has it"
    );
    // The stream delivers the batch again, twice.
    ingest(&cp, &bus, &changes).await.unwrap();
    world.clock().advance_ms(10);
    ingest(&cp, &bus, &changes).await.unwrap();
    world.clock().advance_ms(SETTLE_MS + 1);

    let mut by_job = query(100);
    by_job.job_id = Some(job.id.clone());
    let page = read(&cp, &by_job, &start).await.unwrap();
    let ids: BTreeSet<&str> = page.events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), 4, "the same four changes");
    assert_eq!(
        page.events.len(),
        8,
        "each seen at most twice beyond the first delivery"
    );
    let stored = cp.ports.jobs.get_job(&job.id).await.unwrap().unwrap();
    assert_eq!(stored, job, "ingest reads the job, never writes it");
}
