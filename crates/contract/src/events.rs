//! The event feed's store: each event in its job's partition and its minute's shard of every
//! job's, read back in feed order after a cursor, idempotent, written in more than one call.

use titus_core::events::{job_feed_key, Event, EventType, FeedCursor};
use titus_core::ports::MAX_EVENTS_PER_WRITE;
use titus_core::{JobId, JobStore, Ports, StoreError, TaskId};

use crate::fixtures::NOW_MS;
use crate::{Fixture, Harness};

fn event(job: &str, n: u32, feed_ms: u64) -> Event {
    Event {
        id: format!("{job}-task:state:{n}"),
        kind: EventType::TaskStateChange,
        job_id: Some(JobId::from_string(job)),
        task_id: Some(TaskId::from_string(format!("{job}-task"))),
        owner: "team@example.com".to_owned(),
        timestamp_ms: feed_ms - 5,
        feed_ms,
        feed_seq: n,
        state: Some("Launched".to_owned()),
        reason_code: Some("normal".to_owned()),
        reason_message: Some("placed on \"a1\"".to_owned()),
        agent_id: Some("a1".to_owned()),
        capacity: None,
        attributes: None,
        placement: None,
    }
}

pub async fn events_read_back_in_feed_order_from_both_their_partitions<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let jobs = fx.ports().jobs();
    let a: Vec<Event> = (0..3)
        .map(|n| event("job-events-a", n, NOW_MS + u64::from(n)))
        .collect();
    let b = event("job-events-b", 0, NOW_MS + 1);
    // Written out of order: the feed orders by feed time.
    jobs.put_events(&[a[2].clone(), b.clone(), a[0].clone(), a[1].clone()])
        .await
        .unwrap();

    let start = FeedCursor::at_ms(NOW_MS - 1);
    let job_a = job_feed_key(a[0].job_id.as_ref().expect("a job's event"));
    assert_eq!(jobs.read_events(&job_a, &start, 100).await.unwrap(), a);
    // After a cursor, with a limit.
    let after_first = FeedCursor::after_key(&a[0].event_key());
    assert_eq!(
        jobs.read_events(&job_a, &after_first, 1).await.unwrap(),
        vec![a[1].clone()]
    );
    // The every-job shard holds each event of its jobs too.
    for e in a.iter().chain([&b]) {
        let all = e.feed_keys()[1].clone();
        let read = jobs.read_events(&all, &start, 100).await.unwrap();
        assert!(read.contains(e), "{} is not in {all}: {read:?}", e.id);
    }
    assert!(jobs
        .read_events("job#job-events-none", &start, 100)
        .await
        .unwrap()
        .is_empty());
}

pub async fn an_event_written_twice_is_kept_once<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let jobs = fx.ports().jobs();
    let e = event("job-events-twice", 0, NOW_MS);
    jobs.put_events(std::slice::from_ref(&e)).await.unwrap();
    jobs.put_events(std::slice::from_ref(&e)).await.unwrap();
    let read = jobs
        .read_events(
            &job_feed_key(e.job_id.as_ref().expect("a job's event")),
            &FeedCursor::at_ms(0),
            100,
        )
        .await
        .unwrap();
    assert_eq!(read, vec![e]);
}

pub async fn a_full_write_of_events_lands_whole_and_a_larger_one_is_refused<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let jobs = fx.ports().jobs();
    let many: Vec<Event> = (0..MAX_EVENTS_PER_WRITE as u32)
        .map(|n| event("job-events-many", n, NOW_MS + u64::from(n)))
        .collect();
    jobs.put_events(&many).await.unwrap();
    let key = job_feed_key(many[0].job_id.as_ref().expect("a job's event"));
    let mut read = Vec::new();
    let mut cursor = FeedCursor::at_ms(0);
    loop {
        let page = jobs.read_events(&key, &cursor, 100).await.unwrap();
        let Some(last) = page.last() else { break };
        cursor = FeedCursor::after_key(&last.event_key());
        read.extend(page);
    }
    assert_eq!(read, many);

    let too_many: Vec<Event> = (0..=MAX_EVENTS_PER_WRITE as u32)
        .map(|n| event("job-events-too-many", n, NOW_MS + u64::from(n)))
        .collect();
    let refused = jobs.put_events(&too_many).await;
    assert!(
        matches!(refused, Err(StoreError::Internal(_))),
        "{refused:?}"
    );
    let key = job_feed_key(too_many[0].job_id.as_ref().expect("a job's event"));
    assert!(jobs
        .read_events(&key, &FeedCursor::at_ms(0), 10)
        .await
        .unwrap()
        .is_empty());
}
