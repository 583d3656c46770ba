//! Writing new jobs' tasks against the emulator: one write per create, the tasks written once by
//! materializing, oldest job first within a budget, a job killed or changed before its tasks
//! are written, two writers at once, an interrupted writer and an unreadable job.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::json;
use support::{descriptor, fresh_stage};
use titus_aws::DynamoJobStore;
use titus_control::materialize::{materialize_job, materialize_jobs};
use titus_core::ports::IdempotencyKey;
use titus_core::{Job, JobDescriptor, JobId, JobState, JobStore, Task, TaskState};

const NOW_MS: u64 = 1_764_000_000_000;

fn job(descriptor: JobDescriptor, now_ms: u64) -> Job {
    Job::new(
        JobId::generate(),
        descriptor,
        "caller@example.com".to_owned(),
        now_ms,
    )
}

fn key(key: &str, request_hash: &str) -> IdempotencyKey {
    IdempotencyKey {
        scope: "caller@example.com".to_owned(),
        key: key.to_owned(),
        request_hash: request_hash.to_owned(),
    }
}

async fn all_tasks(store: &DynamoJobStore, job_id: &JobId) -> Vec<Task> {
    store.list_all_job_tasks(job_id).await.unwrap()
}

#[tokio::test]
async fn a_created_job_is_stored_alone_and_its_tasks_are_written_once_by_materializing() {
    let stage = fresh_stage().await;
    let (cp, store) = (&stage.cp, &stage.store);
    let job = job(descriptor(json!({"batch": {"size": 3}})), NOW_MS);

    let outcome = store.create_job(&job, None).await.unwrap();

    assert!(outcome.was_created());
    assert_eq!(store.get_job(&job.id).await.unwrap(), Some(job.clone()));
    assert!(all_tasks(store, &job.id).await.is_empty());

    let written = materialize_jobs(cp, 100, u64::MAX).await.unwrap();

    let tasks = all_tasks(store, &job.id).await;
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
        materialize_jobs(cp, 100, u64::MAX)
            .await
            .unwrap()
            .is_empty(),
        "the job no longer awaits its tasks"
    );
    assert_eq!(all_tasks(store, &job.id).await.len(), 3);
}

#[tokio::test]
async fn jobs_are_materialized_oldest_first_and_one_call_stops_near_its_task_budget() {
    let stage = fresh_stage().await;
    let (cp, store) = (&stage.cp, &stage.store);
    let newer = job(descriptor(json!({"batch": {"size": 2}})), NOW_MS + 10);
    let older = job(descriptor(json!({"batch": {"size": 3}})), NOW_MS);
    store.create_job(&newer, None).await.unwrap();
    store.create_job(&older, None).await.unwrap();

    // Only jobs created before the bound.
    assert!(materialize_jobs(cp, 100, NOW_MS).await.unwrap().is_empty());
    // A budget of one task still completes the oldest job, and stops there.
    let first = materialize_jobs(cp, 1, NOW_MS + 11).await.unwrap();
    let second = materialize_jobs(cp, 1, u64::MAX).await.unwrap();

    assert_eq!(first.len(), 3);
    assert!(first.iter().all(|t| t.job_id == older.id));
    assert_eq!(second.len(), 2);
    assert!(second.iter().all(|t| t.job_id == newer.id));
    assert!(materialize_jobs(cp, 1, u64::MAX).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_unreadable_job_awaiting_its_tasks_holds_back_no_other_job() {
    let stage = fresh_stage().await;
    let (cp, store) = (&stage.cp, &stage.store);
    let (clients, names) = (&stage.clients, &stage.names);
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

    let written = materialize_jobs(cp, 100, u64::MAX).await.unwrap();

    assert_eq!(written.len(), 2);
    assert!(written.iter().all(|t| t.job_id == newer.id));
    assert!(all_tasks(store, &older.id).await.is_empty());
}

#[tokio::test]
async fn a_job_killed_before_its_tasks_are_written_gets_none() {
    let stage = fresh_stage().await;
    let (cp, store) = (&stage.cp, &stage.store);
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

    let written = materialize_jobs(cp, 100, u64::MAX).await.unwrap();

    assert!(written.is_empty());
    assert!(all_tasks(store, &job.id).await.is_empty());
    assert!(
        materialize_job(cp, &job.id).await.unwrap().is_empty(),
        "its mark was cleared"
    );
}

#[tokio::test]
async fn a_job_changed_before_its_tasks_are_written_gets_the_tasks_of_its_new_version() {
    let stage = fresh_stage().await;
    let (cp, store) = (&stage.cp, &stage.store);
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

    let written = materialize_job(cp, &job.id).await.unwrap();

    assert_eq!(written.len(), 4);
    let indexes: HashSet<u32> = all_tasks(store, &job.id)
        .await
        .iter()
        .map(|t| t.index)
        .collect();
    assert_eq!(indexes, HashSet::from([0, 1, 2, 3]));
}

#[tokio::test]
async fn two_materializers_of_one_large_job_write_each_task_once() {
    let stage = fresh_stage().await;
    let (cp, store) = (&stage.cp, &stage.store);
    let job = job(descriptor(json!({"batch": {"size": 250}})), NOW_MS);
    store.create_job(&job, None).await.unwrap();

    let (a, b) = tokio::join!(materialize_job(cp, &job.id), materialize_job(cp, &job.id));

    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        a.len() + b.len(),
        250,
        "each task written by exactly one of them"
    );
    let written: HashSet<_> = a.iter().chain(&b).map(|t| t.id.clone()).collect();
    assert_eq!(written.len(), 250);
    let stored: HashSet<_> = all_tasks(store, &job.id)
        .await
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(stored, written);
}

#[tokio::test]
async fn an_interrupted_materialization_is_completed_by_the_next_one() {
    let stage = fresh_stage().await;
    let (cp, store) = (&stage.cp, &stage.store);
    let (clients, names) = (&stage.clients, &stage.names);
    let job = job(descriptor(json!({"batch": {"size": 5}})), NOW_MS);
    store.create_job(&job, None).await.unwrap();
    let tasks = materialize_job(cp, &job.id).await.unwrap();
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

    let written = materialize_jobs(cp, 100, u64::MAX).await.unwrap();

    let ids = |tasks: &[Task]| tasks.iter().map(|t| t.id.clone()).collect::<HashSet<_>>();
    assert_eq!(ids(&written), ids(&tasks[..2]), "only the missing two");
    assert_eq!(
        ids(&all_tasks(store, &job.id).await),
        ids(&tasks),
        "the same five tasks, none twice"
    );
}

#[tokio::test]
async fn a_job_of_a_thousand_tasks_is_written_in_chunks() {
    let stage = fresh_stage().await;
    let (cp, store) = (&stage.cp, &stage.store);
    let job = job(descriptor(json!({"batch": {"size": 1000}})), NOW_MS);

    store
        .create_job(&job, Some(&key("big", "h")))
        .await
        .unwrap();
    let written = materialize_jobs(cp, 1, u64::MAX).await.unwrap();

    assert_eq!(written.len(), 1000);
    let tasks = all_tasks(store, &job.id).await;
    assert_eq!(tasks.len(), 1000);
    let ids: HashSet<_> = tasks.iter().map(|t| &t.id).collect();
    assert_eq!(ids.len(), 1000);
    let indexes: HashSet<_> = tasks.iter().map(|t| t.index).collect();
    assert_eq!(indexes, (0..1000).collect());
}
