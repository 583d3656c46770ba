//! The DynamoDB job store against the emulator: idempotent creation, materializing a job's
//! tasks, races, pagination, large jobs and the pending-task index.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::json;
use support::{descriptor, fresh_stage, job};
use titus_aws::DynamoJobStore;
use titus_core::store::{CreateOutcome, IdempotencyKey, JobFilter, PageRequest};
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
async fn a_created_job_is_stored_alone_and_its_tasks_are_written_once_by_materializing() {
    let (clients, names) = fresh_stage().await;
    let store = DynamoJobStore::new(clients.dynamodb, &names);
    let job = job(descriptor(json!({"batch": {"size": 3}})), NOW_MS);

    let outcome = store.create_job(&job, None).await.unwrap();

    assert!(outcome.was_created());
    assert_eq!(store.get_job(&job.id).await.unwrap(), Some(job.clone()));
    assert!(all_tasks(&store, &job.id).await.is_empty());

    let written = store.materialize_jobs(100, u64::MAX).await.unwrap();

    let tasks = all_tasks(&store, &job.id).await;
    assert_eq!(tasks.len(), 3);
    assert_eq!(written, tasks, "the call returns what it wrote");
    assert!(tasks
        .iter()
        .all(|t| t.state() == TaskState::Accepted && t.job_id == job.id));
    let indexes: HashSet<u32> = tasks.iter().map(|t| t.index).collect();
    assert_eq!(indexes, HashSet::from([0, 1, 2]));
    assert_eq!(
        store.get_task(&tasks[0].id).await.unwrap().as_ref(),
        Some(&tasks[0])
    );
    assert!(
        store
            .materialize_jobs(100, u64::MAX)
            .await
            .unwrap()
            .is_empty(),
        "the job no longer awaits its tasks"
    );
    assert_eq!(all_tasks(&store, &job.id).await.len(), 3);
}

#[tokio::test]
async fn jobs_are_materialized_oldest_first_and_one_call_stops_near_its_task_budget() {
    let (clients, names) = fresh_stage().await;
    let store = DynamoJobStore::new(clients.dynamodb, &names);
    let newer = job(descriptor(json!({"batch": {"size": 2}})), NOW_MS + 10);
    let older = job(descriptor(json!({"batch": {"size": 3}})), NOW_MS);
    store.create_job(&newer, None).await.unwrap();
    store.create_job(&older, None).await.unwrap();

    // Only jobs created before the bound.
    assert!(store
        .materialize_jobs(100, NOW_MS)
        .await
        .unwrap()
        .is_empty());
    // A budget of one task still completes the oldest job, and stops there.
    let first = store.materialize_jobs(1, NOW_MS + 11).await.unwrap();
    let second = store.materialize_jobs(1, u64::MAX).await.unwrap();

    assert_eq!(first.len(), 3);
    assert!(first.iter().all(|t| t.job_id == older.id));
    assert_eq!(second.len(), 2);
    assert!(second.iter().all(|t| t.job_id == newer.id));
    assert!(store
        .materialize_jobs(1, u64::MAX)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn an_unreadable_job_awaiting_its_tasks_holds_back_no_other_job() {
    let (clients, names) = fresh_stage().await;
    let store = DynamoJobStore::new(clients.dynamodb.clone(), &names);
    let older = job(descriptor(json!({})), NOW_MS);
    let mut item = titus_aws::dynamo::job_item(&older, true).unwrap();
    item.insert("doc".to_owned(), AttributeValue::S("{not json".to_owned()));
    clients
        .dynamodb
        .put_item()
        .table_name(names.jobs_table())
        .set_item(Some(item))
        .send()
        .await
        .unwrap();
    let newer = job(descriptor(json!({"batch": {"size": 2}})), NOW_MS + 10);
    store.create_job(&newer, None).await.unwrap();

    let written = store.materialize_jobs(100, u64::MAX).await.unwrap();

    assert_eq!(written.len(), 2);
    assert!(written.iter().all(|t| t.job_id == newer.id));
    assert!(all_tasks(&store, &older.id).await.is_empty());
}

#[tokio::test]
async fn a_job_killed_before_its_tasks_are_written_gets_none() {
    let (clients, names) = fresh_stage().await;
    let store = DynamoJobStore::new(clients.dynamodb, &names);
    let job = job(descriptor(json!({"batch": {"size": 4}})), NOW_MS);
    store.create_job(&job, None).await.unwrap();
    let mut killed = job.clone();
    killed
        .transition(
            JobState::KillInitiated,
            "killed",
            "job kill requested",
            NOW_MS + 1,
        )
        .unwrap();
    store.update_job(&killed, job.version).await.unwrap();

    let written = store.materialize_jobs(100, u64::MAX).await.unwrap();

    assert!(written.is_empty());
    assert!(all_tasks(&store, &job.id).await.is_empty());
    assert!(
        store.materialize_job(&job.id).await.unwrap().is_empty(),
        "its mark was cleared"
    );
}

#[tokio::test]
async fn a_job_changed_before_its_tasks_are_written_gets_the_tasks_of_its_new_version() {
    let (clients, names) = fresh_stage().await;
    let store = DynamoJobStore::new(clients.dynamodb, &names);
    let job = job(
        descriptor(
            json!({"batch": null, "service": {"capacity": {"min": 0, "desired": 2, "max": 5}}}),
        ),
        NOW_MS,
    );
    store.create_job(&job, None).await.unwrap();
    let mut scaled = job.clone();
    if let Some(service) = scaled.job_descriptor.service.as_mut() {
        service.capacity.desired = 4;
    }
    scaled.version += 1;
    store.update_job(&scaled, job.version).await.unwrap();

    let written = store.materialize_job(&job.id).await.unwrap();

    assert_eq!(written.len(), 4);
    let indexes: HashSet<u32> = all_tasks(&store, &job.id)
        .await
        .iter()
        .map(|t| t.index)
        .collect();
    assert_eq!(indexes, HashSet::from([0, 1, 2, 3]));
}

#[tokio::test]
async fn two_materializers_of_one_large_job_write_each_task_once() {
    let (clients, names) = fresh_stage().await;
    let store = DynamoJobStore::new(clients.dynamodb, &names);
    let job = job(descriptor(json!({"batch": {"size": 250}})), NOW_MS);
    store.create_job(&job, None).await.unwrap();

    let (a, b) = tokio::join!(
        store.materialize_job(&job.id),
        store.materialize_job(&job.id)
    );

    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        a.len() + b.len(),
        250,
        "each task written by exactly one of them"
    );
    let written: HashSet<_> = a.iter().chain(&b).map(|t| t.id.clone()).collect();
    assert_eq!(written.len(), 250);
    let stored: HashSet<_> = all_tasks(&store, &job.id)
        .await
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(stored, written);
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
        store.materialize_jobs(100, u64::MAX).await.unwrap().len(),
        2,
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
async fn an_interrupted_materialization_is_completed_by_the_next_one() {
    let (clients, names) = fresh_stage().await;
    let store = DynamoJobStore::new(clients.dynamodb.clone(), &names);
    let job = job(descriptor(json!({"batch": {"size": 5}})), NOW_MS);
    store.create_job(&job, None).await.unwrap();
    let tasks = store.materialize_job(&job.id).await.unwrap();
    // Make it look as if the materializer died after its first transaction of several: two
    // tasks missing and the job still marked as awaiting them.
    for task in &tasks[..2] {
        clients
            .dynamodb
            .delete_item()
            .table_name(names.tasks_table())
            .key("taskId", AttributeValue::S(task.id.to_string()))
            .send()
            .await
            .unwrap();
    }
    clients
        .dynamodb
        .update_item()
        .table_name(names.jobs_table())
        .key("jobId", AttributeValue::S(job.id.to_string()))
        .update_expression("SET #a = :a")
        .expression_attribute_names("#a", "awaitingTasks")
        .expression_attribute_values(":a", AttributeValue::S("awaiting".to_owned()))
        .send()
        .await
        .unwrap();

    let written = store.materialize_jobs(100, u64::MAX).await.unwrap();

    let ids = |tasks: &[Task]| tasks.iter().map(|t| t.id.clone()).collect::<HashSet<_>>();
    assert_eq!(ids(&written), ids(&tasks[..2]), "only the missing two");
    assert_eq!(
        ids(&all_tasks(&store, &job.id).await),
        ids(&tasks),
        "the same five tasks, none twice"
    );
}

#[tokio::test]
async fn a_job_of_a_thousand_tasks_is_written_in_chunks() {
    let (clients, names) = fresh_stage().await;
    let store = DynamoJobStore::new(clients.dynamodb, &names);
    let job = job(descriptor(json!({"batch": {"size": 1000}})), NOW_MS);

    store
        .create_job(&job, Some(&key("big", "h")))
        .await
        .unwrap();
    let written = store.materialize_jobs(1, u64::MAX).await.unwrap();

    assert_eq!(written.len(), 1000);
    let tasks = all_tasks(&store, &job.id).await;
    assert_eq!(tasks.len(), 1000);
    let ids: HashSet<_> = tasks.iter().map(|t| &t.id).collect();
    assert_eq!(ids.len(), 1000);
    let indexes: HashSet<_> = tasks.iter().map(|t| t.index).collect();
    assert_eq!(indexes, (0..1000).collect());
}

#[tokio::test]
async fn a_write_that_loses_a_race_is_a_conflict_and_changes_nothing() {
    let (clients, names) = fresh_stage().await;
    let store = DynamoJobStore::new(clients.dynamodb, &names);
    let job = job(descriptor(json!({"batch": {"size": 1}})), NOW_MS);
    store.create_job(&job, None).await.unwrap();
    store.materialize_job(&job.id).await.unwrap();
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
    store.materialize_job(&job.id).await.unwrap();
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
    store.materialize_job(&job.id).await.unwrap();
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
        store.materialize_job(&job.id).await.unwrap();
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
    store.materialize_job(&newer.id).await.unwrap();
    store.create_job(&older, None).await.unwrap();
    store.materialize_job(&older.id).await.unwrap();
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
