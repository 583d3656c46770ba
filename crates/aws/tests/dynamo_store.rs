//! The DynamoDB job store against the emulator: idempotent creation, races, pagination and the
//! pending-task index. (Writing new jobs' tasks is the application layer's, tested in
//! titus-control's `materialize` tests.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;

use serde_json::json;
use support::{descriptor, fresh_stage, job};
use titus_aws::DynamoJobStore;
use titus_core::ports::{CreateOutcome, IdempotencyKey, JobFilter, PageRequest};
use titus_core::{JobState, JobStore, JobType, StoreError, Task, TaskReason, TaskState};

const NOW_MS: u64 = 1_764_000_000_000;

fn key(key: &str, request_hash: &str) -> IdempotencyKey {
    IdempotencyKey {
        scope: "caller@example.com".to_owned(),
        key: key.to_owned(),
        request_hash: request_hash.to_owned(),
    }
}

async fn all_tasks(store: &DynamoJobStore, job_id: &titus_core::JobId) -> Vec<Task> {
    let mut tasks = Vec::new();
    let mut page = PageRequest::first(100);
    loop {
        let result = store.list_job_tasks(job_id, &page).await.unwrap();
        tasks.extend(result.items);
        match result.next_cursor {
            Some(cursor) => page.cursor = Some(cursor),
            None => return tasks,
        }
    }
}

#[tokio::test]
async fn a_repeated_request_with_the_same_key_returns_the_first_job() {
    let (clients, names) = fresh_stage().await;
    let store = DynamoJobStore::new(clients.dynamodb, &names);
    let first = job(descriptor(json!({})), NOW_MS);
    let retry = job(descriptor(json!({})), NOW_MS + 5);

    let created = store
        .create_job(&first, Some(&key("k1", "h1")))
        .await
        .unwrap();
    let repeated = store
        .create_job(&retry, Some(&key("k1", "h1")))
        .await
        .unwrap();

    assert!(created.was_created());
    assert_eq!(repeated, CreateOutcome::Existing(first.clone()));
    assert_eq!(
        store.get_job(&retry.id).await.unwrap(),
        None,
        "the retry stored nothing"
    );
    assert_eq!(
        store.list_awaiting_jobs(100, u64::MAX).await.unwrap(),
        vec![first.id.clone()],
        "only the first job awaits its tasks"
    );
}

#[tokio::test]
async fn a_key_reused_for_a_different_request_is_refused() {
    let (clients, names) = fresh_stage().await;
    let store = DynamoJobStore::new(clients.dynamodb, &names);
    let first = job(descriptor(json!({})), NOW_MS);
    store
        .create_job(&first, Some(&key("k1", "h1")))
        .await
        .unwrap();

    let other = job(descriptor(json!({"applicationName": "other"})), NOW_MS);
    let err = store
        .create_job(&other, Some(&key("k1", "h2")))
        .await
        .unwrap_err();

    assert_eq!(
        err,
        StoreError::IdempotencyMismatch {
            key: "k1".to_owned(),
            job_id: first.id.clone()
        }
    );
    assert_eq!(store.get_job(&other.id).await.unwrap(), None);
}

#[tokio::test]
async fn the_same_key_from_another_caller_is_a_different_key() {
    let (clients, names) = fresh_stage().await;
    let store = DynamoJobStore::new(clients.dynamodb, &names);
    let a = job(descriptor(json!({})), NOW_MS);
    let b = job(descriptor(json!({})), NOW_MS);
    let mut other_caller = key("k1", "h1");
    other_caller.scope = "someone-else@example.com".to_owned();

    assert!(store
        .create_job(&a, Some(&key("k1", "h1")))
        .await
        .unwrap()
        .was_created());
    assert!(store
        .create_job(&b, Some(&other_caller))
        .await
        .unwrap()
        .was_created());
}

#[tokio::test]
async fn concurrent_requests_with_one_key_create_one_job() {
    let (clients, names) = fresh_stage().await;
    let store = DynamoJobStore::new(clients.dynamodb, &names);
    let a = job(descriptor(json!({})), NOW_MS);
    let b = job(descriptor(json!({})), NOW_MS);
    let k = key("race", "h");

    let (ra, rb) = tokio::join!(
        store.create_job(&a, Some(&k)),
        store.create_job(&b, Some(&k))
    );

    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.job().id, rb.job().id, "both callers see the same job");
    assert_eq!(
        usize::from(ra.was_created()) + usize::from(rb.was_created()),
        1,
        "exactly one request created it"
    );
    let loser = if ra.was_created() { &b } else { &a };
    assert_eq!(store.get_job(&loser.id).await.unwrap(), None);
}

#[tokio::test]
async fn a_write_that_loses_a_race_is_a_conflict_and_changes_nothing() {
    let (clients, names) = fresh_stage().await;
    let store = DynamoJobStore::new(clients.dynamodb, &names);
    let job = job(descriptor(json!({"batch": {"size": 1}})), NOW_MS);
    store.create_job(&job, None).await.unwrap();
    support::write_tasks(&store, &job).await;
    let read = all_tasks(&store, &job.id).await.remove(0);
    let mut winner = read.clone();
    let mut loser = read.clone();
    winner.agent_id = Some("agent-a".to_owned());
    winner
        .transition(TaskState::Launched, None, "placed", NOW_MS + 1)
        .unwrap();
    loser
        .transition(
            TaskState::Finished,
            Some(TaskReason::Killed),
            "killed",
            NOW_MS + 2,
        )
        .unwrap();

    store.update_task(&winner, read.version).await.unwrap();
    let err = store.update_task(&loser, read.version).await.unwrap_err();

    assert!(err.is_conflict(), "{err}");
    assert_eq!(store.get_task(&read.id).await.unwrap(), Some(winner));
}

#[tokio::test]
async fn a_stale_job_update_is_a_conflict() {
    let (clients, names) = fresh_stage().await;
    let store = DynamoJobStore::new(clients.dynamodb, &names);
    let job = job(descriptor(json!({})), NOW_MS);
    store.create_job(&job, None).await.unwrap();
    support::write_tasks(&store, &job).await;
    let mut first = job.clone();
    first
        .transition(JobState::KillInitiated, "killed", "by test", NOW_MS + 1)
        .unwrap();
    let mut second = job.clone();
    second
        .transition(JobState::Finished, "normal", "done", NOW_MS + 1)
        .unwrap();

    store.update_job(&first, job.version).await.unwrap();
    let err = store.update_job(&second, job.version).await.unwrap_err();

    assert!(err.is_conflict(), "{err}");
    assert_eq!(store.get_job(&job.id).await.unwrap(), Some(first));
}

#[tokio::test]
async fn inserting_a_task_twice_is_a_conflict() {
    let (clients, names) = fresh_stage().await;
    let store = DynamoJobStore::new(clients.dynamodb, &names);
    let job = job(descriptor(json!({"batch": {"size": 1}})), NOW_MS);
    store.create_job(&job, None).await.unwrap();
    support::write_tasks(&store, &job).await;
    let mut failed = all_tasks(&store, &job.id).await.remove(0);
    failed
        .transition(
            TaskState::Finished,
            Some(TaskReason::Failed),
            "exit 1",
            NOW_MS + 1,
        )
        .unwrap();
    let replacement = failed.replacement(NOW_MS + 2, 0);

    store.insert_task(&replacement).await.unwrap();
    // A duplicate status message derives the same replacement id, and must not add a second one.
    let again = failed.replacement(NOW_MS + 3, 0);
    let err = store.insert_task(&again).await.unwrap_err();

    assert!(err.is_conflict(), "{err}");
    assert_eq!(all_tasks(&store, &job.id).await.len(), 2);
}

#[tokio::test]
async fn listing_jobs_pages_through_every_match_once() {
    let (clients, names) = fresh_stage().await;
    let store = DynamoJobStore::new(clients.dynamodb, &names);
    let mut created = HashSet::new();
    for i in 0..7u64 {
        let job = job(descriptor(json!({"batch": {"size": 1}})), NOW_MS + i);
        store.create_job(&job, None).await.unwrap();
        support::write_tasks(&store, &job).await;
        created.insert(job.id);
    }

    let mut seen = Vec::new();
    let mut pages = 0;
    let mut page = PageRequest::first(3);
    loop {
        let result = store.list_jobs(&JobFilter::default(), &page).await.unwrap();
        pages += 1;
        assert!(result.items.len() <= 3);
        seen.extend(result.items.into_iter().map(|j| j.id));
        match result.next_cursor {
            Some(cursor) => page.cursor = Some(cursor),
            None => break,
        }
    }

    assert!(
        pages >= 3,
        "7 jobs in pages of 3 take at least 3 pages, took {pages}"
    );
    assert_eq!(seen.len(), 7, "no job twice");
    assert_eq!(seen.into_iter().collect::<HashSet<_>>(), created);
}

#[tokio::test]
async fn listing_jobs_filters_by_owner_application_type_state_and_attribute() {
    let (clients, names) = fresh_stage().await;
    let store = DynamoJobStore::new(clients.dynamodb, &names);
    let batch_a = job(descriptor(json!({"attributes": {"team": "red"}})), NOW_MS);
    let service_a = job(
        descriptor(json!({
            "batch": null,
            "service": {"capacity": {"min": 0, "desired": 1, "max": 2}}
        })),
        NOW_MS + 1,
    );
    let batch_b = job(
        descriptor(json!({"owner": {"teamEmail": "other@example.com"}, "applicationName": "b"})),
        NOW_MS + 2,
    );
    for job in [&batch_a, &service_a, &batch_b] {
        store.create_job(job, None).await.unwrap();
    }
    let mut finished = batch_b.clone();
    finished
        .transition(JobState::Finished, "normal", "done", NOW_MS + 3)
        .unwrap();
    store.update_job(&finished, batch_b.version).await.unwrap();

    let ids = |filter: JobFilter| {
        let store = &store;
        async move {
            let page = store
                .list_jobs(&filter, &PageRequest::first(50))
                .await
                .unwrap();
            page.items.into_iter().map(|j| j.id).collect::<HashSet<_>>()
        }
    };
    let by_owner = JobFilter {
        owner: Some("other@example.com".to_owned()),
        ..Default::default()
    };
    let by_app = JobFilter {
        application_name: Some("app".to_owned()),
        ..Default::default()
    };
    let by_type = JobFilter {
        job_type: Some(JobType::Service),
        ..Default::default()
    };
    let by_state = JobFilter {
        states: vec![JobState::Finished],
        ..Default::default()
    };
    let active = JobFilter {
        states: vec![JobState::Accepted],
        ..Default::default()
    };
    let by_attribute = JobFilter {
        attributes: [("team".to_owned(), "red".to_owned())].into(),
        ..Default::default()
    };

    assert_eq!(ids(by_owner).await, HashSet::from([batch_b.id.clone()]));
    assert_eq!(
        ids(by_app).await,
        HashSet::from([batch_a.id.clone(), service_a.id.clone()])
    );
    assert_eq!(ids(by_type).await, HashSet::from([service_a.id.clone()]));
    assert_eq!(ids(by_state).await, HashSet::from([batch_b.id.clone()]));
    assert_eq!(
        ids(active).await,
        HashSet::from([batch_a.id.clone(), service_a.id.clone()])
    );
    assert_eq!(ids(by_attribute).await, HashSet::from([batch_a.id.clone()]));
}

#[tokio::test]
async fn a_cursor_the_store_did_not_issue_is_refused() {
    let (clients, names) = fresh_stage().await;
    let store = DynamoJobStore::new(clients.dynamodb, &names);
    let page = PageRequest {
        page_size: 10,
        cursor: Some("bm90LWEtY3Vyc29y".to_owned()),
    };

    let err = store
        .list_jobs(&JobFilter::default(), &page)
        .await
        .unwrap_err();

    assert!(matches!(err, StoreError::InvalidCursor(_)), "{err}");
}

#[tokio::test]
async fn pending_tasks_come_oldest_first_and_only_once_eligible() {
    let (clients, names) = fresh_stage().await;
    let store = DynamoJobStore::new(clients.dynamodb, &names);
    let newer = job(descriptor(json!({"batch": {"size": 2}})), NOW_MS + 10);
    let older = job(descriptor(json!({"batch": {"size": 2}})), NOW_MS);
    store.create_job(&newer, None).await.unwrap();
    support::write_tasks(&store, &newer).await;
    store.create_job(&older, None).await.unwrap();
    support::write_tasks(&store, &older).await;
    // A delayed retry, not eligible until later.
    let mut failed = all_tasks(&store, &older.id).await.remove(0);
    let failed_version = failed.version;
    failed
        .transition(
            TaskState::Finished,
            Some(TaskReason::Failed),
            "exit 1",
            NOW_MS + 20,
        )
        .unwrap();
    store.update_task(&failed, failed_version).await.unwrap();
    let delayed = failed.replacement(NOW_MS + 20, NOW_MS + 60_000);
    store.insert_task(&delayed).await.unwrap();

    let pending = store.list_pending_tasks(10, NOW_MS + 1_000).await.unwrap();

    let jobs: Vec<_> = pending.iter().map(|t| t.job_id.clone()).collect();
    assert_eq!(
        jobs,
        vec![older.id.clone(), newer.id.clone(), newer.id.clone()]
    );
    assert!(pending.iter().all(|t| t.state() == TaskState::Accepted));
    assert!(
        !pending.iter().any(|t| t.id == delayed.id),
        "not eligible yet"
    );

    let later = store.list_pending_tasks(10, NOW_MS + 60_000).await.unwrap();
    assert!(
        later.iter().any(|t| t.id == delayed.id),
        "eligible once its time has come"
    );

    // A placed task leaves the pending index.
    let mut placed = pending[0].clone();
    placed.agent_id = Some("agent-1".to_owned());
    placed
        .transition(TaskState::Launched, None, "placed", NOW_MS + 30)
        .unwrap();
    store
        .update_task(&placed, pending[0].version)
        .await
        .unwrap();
    let after = store.list_pending_tasks(10, NOW_MS + 1_000).await.unwrap();
    assert_eq!(after.len(), 2);
    assert!(!after.iter().any(|t| t.id == placed.id));

    let limited = store.list_pending_tasks(1, NOW_MS + 1_000).await.unwrap();
    assert_eq!(limited.len(), 1);
}
