//! The reconciler's task indexes against the emulator: tasks by agent, tasks in a transitional
//! state by when they entered it, and a job's live tasks without its finished history.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::json;
use support::{descriptor, fresh_stage, job};
use titus_aws::DynamoJobStore;
use titus_core::ports::PageRequest;
use titus_core::{JobStore, StoreError, Task, TaskReason, TaskState};

const NOW_MS: u64 = 1_764_000_000_000;

async fn tasks_of(store: &DynamoJobStore, job: &titus_core::Job) -> Vec<Task> {
    let mut tasks = store
        .list_job_tasks(&job.id, &PageRequest::first(100))
        .await
        .unwrap()
        .items;
    tasks.sort_by_key(|t| t.index);
    tasks
}

/// Moves a task to `state` on `agent` at `at_ms` and stores it.
async fn advance(
    store: &DynamoJobStore,
    task: &Task,
    state: TaskState,
    agent: Option<&str>,
    at_ms: u64,
) -> Task {
    let mut next = task.clone();
    if let Some(agent) = agent {
        next.agent_id = Some(agent.to_owned());
    }
    let reason = (state >= TaskState::KillInitiated).then_some(TaskReason::Killed);
    next.transition(state, reason, "test", at_ms).unwrap();
    store.update_task(&next, task.version).await.unwrap();
    next
}

fn ids(tasks: &[Task]) -> Vec<String> {
    tasks.iter().map(|t| t.id.to_string()).collect()
}

#[tokio::test]
async fn tasks_are_listed_by_agent_only_while_they_hold_resources_there() {
    let (clients, names) = fresh_stage().await;
    let store = DynamoJobStore::new(clients.dynamodb, &names);
    let job = job(descriptor(json!({"batch": {"size": 4}})), NOW_MS);
    store.create_job(&job, None).await.unwrap();
    support::write_tasks(&store, &job).await;
    let tasks = tasks_of(&store, &job).await;
    let on_a1 = advance(&store, &tasks[0], TaskState::Launched, Some("a1"), NOW_MS).await;
    let killing_on_a1 = advance(
        &store,
        &tasks[1],
        TaskState::KillInitiated,
        Some("a1"),
        NOW_MS,
    )
    .await;
    let done_on_a1 = advance(&store, &tasks[2], TaskState::Started, Some("a1"), NOW_MS).await;
    advance(&store, &done_on_a1, TaskState::Finished, None, NOW_MS + 1).await;
    let on_a2 = advance(&store, &tasks[3], TaskState::Started, Some("a2"), NOW_MS).await;

    let mut a1 = store.list_agent_tasks("a1").await.unwrap();
    a1.sort_by_key(|t| t.index);
    let a2 = store.list_agent_tasks("a2").await.unwrap();
    let a3 = store.list_agent_tasks("a3").await.unwrap();

    assert_eq!(ids(&a1), ids(&[on_a1, killing_on_a1]));
    assert_eq!(ids(&a2), ids(&[on_a2]));
    assert!(a3.is_empty());
}

#[tokio::test]
async fn transitional_tasks_are_listed_oldest_first_by_when_they_entered_their_state() {
    let (clients, names) = fresh_stage().await;
    let store = DynamoJobStore::new(clients.dynamodb, &names);
    let job = job(descriptor(json!({"batch": {"size": 6}})), NOW_MS);
    store.create_job(&job, None).await.unwrap();
    support::write_tasks(&store, &job).await;
    let tasks = tasks_of(&store, &job).await;
    let launched = advance(
        &store,
        &tasks[0],
        TaskState::Launched,
        Some("a1"),
        NOW_MS + 10,
    )
    .await;
    let starting = advance(
        &store,
        &tasks[1],
        TaskState::StartInitiated,
        Some("a1"),
        NOW_MS + 20,
    )
    .await;
    let started = advance(
        &store,
        &tasks[2],
        TaskState::Started,
        Some("a1"),
        NOW_MS + 5,
    )
    .await;
    let killing = advance(
        &store,
        &tasks[3],
        TaskState::KillInitiated,
        Some("a1"),
        NOW_MS + 30,
    )
    .await;
    let killed = advance(
        &store,
        &tasks[4],
        TaskState::KillInitiated,
        Some("a1"),
        NOW_MS,
    )
    .await;
    advance(&store, &killed, TaskState::Finished, None, NOW_MS + 1).await;
    // tasks[5] stays Accepted.

    let all = store
        .list_transitional_tasks(100, NOW_MS + 30)
        .await
        .unwrap();
    let older = store
        .list_transitional_tasks(100, NOW_MS + 25)
        .await
        .unwrap();
    let oldest = store.list_transitional_tasks(1, NOW_MS + 30).await.unwrap();
    let none = store
        .list_transitional_tasks(100, NOW_MS + 9)
        .await
        .unwrap();

    assert_eq!(
        ids(&all),
        ids(&[launched.clone(), starting.clone(), killing])
    );
    assert_eq!(ids(&older), ids(&[launched.clone(), starting]));
    assert_eq!(ids(&oldest), ids(&[launched]));
    assert!(none.is_empty(), "{none:?}");
    assert!(!ids(&all).contains(&started.id.to_string()));
}

#[tokio::test]
async fn a_task_that_moves_on_leaves_the_transitional_index_and_re_enters_with_its_new_time() {
    let (clients, names) = fresh_stage().await;
    let store = DynamoJobStore::new(clients.dynamodb, &names);
    let job = job(descriptor(json!({"batch": {"size": 1}})), NOW_MS);
    store.create_job(&job, None).await.unwrap();
    support::write_tasks(&store, &job).await;
    let task = tasks_of(&store, &job).await.remove(0);
    let launched = advance(&store, &task, TaskState::Launched, Some("a1"), NOW_MS).await;
    let started = advance(&store, &launched, TaskState::Started, None, NOW_MS + 10).await;

    let while_started = store
        .list_transitional_tasks(100, NOW_MS + 100)
        .await
        .unwrap();
    advance(
        &store,
        &started,
        TaskState::KillInitiated,
        None,
        NOW_MS + 50,
    )
    .await;
    let before_kill = store
        .list_transitional_tasks(100, NOW_MS + 49)
        .await
        .unwrap();
    let after_kill = store
        .list_transitional_tasks(100, NOW_MS + 50)
        .await
        .unwrap();

    assert!(while_started.is_empty());
    assert!(before_kill.is_empty());
    assert_eq!(after_kill.len(), 1);
    assert_eq!(after_kill[0].state(), TaskState::KillInitiated);
}

#[tokio::test]
async fn a_job_s_live_tasks_leave_out_its_finished_ones_and_page() {
    let (clients, names) = fresh_stage().await;
    let store = DynamoJobStore::new(clients.dynamodb, &names);
    let job = job(descriptor(json!({"batch": {"size": 5}})), NOW_MS);
    let other = support::job(descriptor(json!({"batch": {"size": 1}})), NOW_MS);
    store.create_job(&job, None).await.unwrap();
    support::write_tasks(&store, &job).await;
    store.create_job(&other, None).await.unwrap();
    support::write_tasks(&store, &other).await;
    let tasks = tasks_of(&store, &job).await;
    for task in &tasks[..2] {
        let started = advance(&store, task, TaskState::Started, Some("a1"), NOW_MS).await;
        advance(&store, &started, TaskState::Finished, None, NOW_MS + 1).await;
    }

    let first = store
        .list_active_job_tasks(&job.id, &PageRequest::first(2))
        .await
        .unwrap();
    let second = store
        .list_active_job_tasks(
            &job.id,
            &PageRequest {
                page_size: 2,
                cursor: first.next_cursor.clone(),
            },
        )
        .await
        .unwrap();
    let foreign = store
        .list_active_job_tasks(
            &other.id,
            &PageRequest {
                page_size: 2,
                cursor: first.next_cursor.clone(),
            },
        )
        .await;

    let mut live: Vec<Task> = first.items.into_iter().chain(second.items).collect();
    live.sort_by_key(|t| t.index);
    assert_eq!(ids(&live), ids(&tasks[2..]));
    assert!(live.iter().all(|t| t.state() == TaskState::Accepted));
    assert!(
        matches!(foreign, Err(StoreError::InvalidCursor(_))),
        "{foreign:?}"
    );
}
