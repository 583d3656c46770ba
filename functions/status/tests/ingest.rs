//! The status function against the emulator: status messages applied to tasks, forward only;
//! duplicates, reordering and stale agents changing nothing; Finished releasing the allocation
//! once; a recorded-shape SQS batch mixing good, malformed and duplicate messages; transient
//! failures as batch item failures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;

use aws_lambda_events::event::sqs::SqsEvent;
use serde_json::json;
use support::handle_batch;
use support::{fresh_stage, status, NOW};
use titus_app::lambda::sqs_messages;
use titus_aws::sqs::{REASON_ATTRIBUTE, SOURCE_MESSAGE_ID_ATTRIBUTE};
use titus_aws::{DynamoAllocationStore, DynamoJobStore};
use titus_control::status::Outcome;
use titus_control::{ControlPlane, Settings};
use titus_core::messages::TaskStatusUpdate;
use titus_core::ports::AllocationStore;
use titus_core::ports::{CreateOutcome, IdempotencyKey, JobFilter, Page, PageRequest};
use titus_core::{
    Job, JobId, JobState, JobStore, Resources, StoreError, Task, TaskId, TaskReason, TaskState,
};

#[tokio::test]
async fn started_moves_the_task_forward_and_records_the_start_time() {
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", NOW).await;
    let job = stage.job(json!({"batch": {"size": 1}})).await;
    let task = stage.place(&stage.tasks(&job).await[0], &agent, NOW).await;

    let starting = stage
        .report(&task, TaskState::StartInitiated, NOW + 10)
        .await;
    let started = stage.report(&task, TaskState::Started, NOW + 20).await;

    assert_eq!(
        starting,
        Outcome::Applied {
            from: TaskState::Launched,
            to: TaskState::StartInitiated
        }
    );
    assert!(matches!(
        started,
        Outcome::Applied {
            to: TaskState::Started,
            ..
        }
    ));
    let stored = stage.task(&task.id).await;
    assert_eq!(stored.state(), TaskState::Started);
    assert_eq!(stored.started_at_ms, Some(NOW + 20));
    assert_eq!(stored.status.timestamp_ms, NOW + 20);
    let history: Vec<TaskState> = stored.status_history.iter().map(|s| s.state).collect();
    assert_eq!(
        history,
        [
            TaskState::Accepted,
            TaskState::Launched,
            TaskState::StartInitiated
        ]
    );
}

#[tokio::test]
async fn a_duplicate_started_changes_nothing() {
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", NOW).await;
    let job = stage.job(json!({"batch": {"size": 1}})).await;
    let task = stage.run(&stage.tasks(&job).await[0], &agent, NOW).await;

    let again = stage.report(&task, TaskState::Started, NOW + 500).await;

    assert_eq!(again, Outcome::Duplicate);
    assert_eq!(
        stage.task(&task.id).await,
        task,
        "nothing changed, not even the version"
    );
}

#[tokio::test]
async fn finished_before_started_wins_and_the_late_messages_change_nothing() {
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", NOW).await;
    let job = stage.job(json!({"batch": {"size": 1}})).await;
    let task = stage.place(&stage.tasks(&job).await[0], &agent, NOW).await;

    let finished = stage.finish(&task, TaskReason::Normal, 0, NOW + 30).await;
    let after_finish = stage.task(&task.id).await;
    let late_started = stage.report(&task, TaskState::Started, NOW + 20).await;
    let late_starting = stage
        .report(&task, TaskState::StartInitiated, NOW + 10)
        .await;

    assert!(matches!(
        finished,
        Outcome::Applied {
            to: TaskState::Finished,
            ..
        }
    ));
    assert_eq!(
        (late_started, late_starting),
        (Outcome::Duplicate, Outcome::Duplicate)
    );
    let stored = stage.task(&task.id).await;
    assert_eq!(stored, after_finish);
    assert_eq!(stored.state(), TaskState::Finished);
    assert_eq!(stored.started_at_ms, None);
}

#[tokio::test]
async fn finished_records_exit_code_reason_and_oom_and_releases_the_allocation_once() {
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", NOW).await;
    let job = stage
        .job(json!({"batch": {"size": 2}, "container": {"image": {"name": "busybox"}, "resources": {"cpu": 2, "memoryMB": 1024}}}))
        .await;
    let tasks = stage.tasks(&job).await;
    let oom = stage.run(&tasks[0], &agent, NOW).await;
    let other = stage.run(&tasks[1], &agent, NOW).await;
    let before = stage.get_agent("a1").await;
    let update = TaskStatusUpdate {
        reason: Some(TaskReason::Failed),
        exit_code: Some(137),
        oom_killed: true,
        message: "OOM killed".to_owned(),
        ..status(&oom, TaskState::Finished, NOW + 100)
    };

    let first = stage.send(std::slice::from_ref(&update), NOW + 100).await;
    let after_first = stage.get_agent("a1").await;
    let duplicate = stage.send(&[update], NOW + 200).await;
    let after_duplicate = stage.get_agent("a1").await;

    assert!(matches!(
        first[0],
        Outcome::Applied {
            to: TaskState::Finished,
            ..
        }
    ));
    assert_eq!(duplicate[0], Outcome::Duplicate);
    let stored = stage.task(&oom.id).await;
    assert_eq!(stored.status.reason_code, Some(TaskReason::Failed));
    assert_eq!(stored.status.reason_message, "OOM killed");
    assert_eq!(stored.exit_code, Some(137));
    assert!(stored.oom_killed);
    assert_eq!(before.task_count, 2);
    assert_eq!(
        before.allocated,
        Resources::of_container(&oom.resources)
            .saturating_add(Resources::of_container(&other.resources))
    );
    assert_eq!(after_first.task_count, 1);
    assert_eq!(
        after_first.allocated,
        Resources::of_container(&other.resources)
    );
    assert_eq!(
        after_duplicate.task_count, 1,
        "a duplicate releases nothing"
    );
    assert_eq!(after_duplicate.allocated, after_first.allocated);
}

#[tokio::test]
async fn a_message_from_an_agent_the_task_is_not_placed_on_changes_nothing() {
    let stage = fresh_stage().await;
    let a1 = stage.agent("a1", NOW).await;
    stage.agent("a2", NOW).await;
    let job = stage.job(json!({"batch": {"size": 1}})).await;
    let task = stage.run(&stage.tasks(&job).await[0], &a1, NOW).await;
    let from_old_placement = TaskStatusUpdate {
        agent_id: "a2".to_owned(),
        reason: Some(TaskReason::Failed),
        exit_code: Some(1),
        ..status(&task, TaskState::Finished, NOW + 10)
    };

    let outcome = stage.send(&[from_old_placement], NOW + 10).await;

    assert!(
        matches!(&outcome[0], Outcome::DeadLettered { reason } if reason.contains("is held by agent \"a1\" (incarnation 1)")),
        "{outcome:?}"
    );
    assert_eq!(stage.task(&task.id).await, task);
    assert_eq!(stage.get_agent("a1").await.task_count, 1);
    assert_eq!(
        stage.drain(&stage.dlq_url).await.len(),
        1,
        "kept with its reason"
    );
}

#[tokio::test]
async fn a_kill_keeps_its_reason_whatever_the_container_exited_with() {
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", NOW).await;
    let job = stage.job(json!({"batch": {"size": 1}})).await;
    let task = stage.run(&stage.tasks(&job).await[0], &agent, NOW).await;
    let killing = TaskStatusUpdate {
        reason: Some(TaskReason::RuntimeLimitExceeded),
        message: "runtime limit exceeded".to_owned(),
        ..status(&task, TaskState::KillInitiated, NOW + 10)
    };
    stage.send(&[killing], NOW + 10).await;

    stage.finish(&task, TaskReason::Failed, 143, NOW + 20).await;

    let stored = stage.task(&task.id).await;
    assert_eq!(
        stored.status.reason_code,
        Some(TaskReason::RuntimeLimitExceeded)
    );
    assert_eq!(stored.exit_code, Some(143));
}

/// The recorded-shape batch with its placeholders filled in for this stage's tasks.
fn recorded_batch(job: &Job, task_a: &Task, task_b: &Task, agent: &str) -> SqsEvent {
    let text = include_str!("data/sqs-status-batch.json")
        .replace("{{JOB}}", job.id.as_str())
        .replace("{{TASK_A}}", task_a.id.as_str())
        .replace("{{TASK_B}}", task_b.id.as_str())
        .replace("{{AGENT}}", agent);
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn a_batch_of_good_malformed_and_duplicate_messages_keeps_the_malformed_with_their_reasons() {
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", NOW).await;
    let job = stage.job(json!({"batch": {"size": 2}})).await;
    let tasks = stage.tasks(&job).await;
    let task_a = stage.place(&tasks[0], &agent, NOW).await;
    let task_b = stage.run(&tasks[1], &agent, NOW).await;
    let event = recorded_batch(&job, &task_a, &task_b, "a1");

    let response = handle_batch(&stage.ctx, event, NOW + 1_000).await;

    assert!(
        response.batch_item_failures.is_empty(),
        "only transient errors are batch item failures: {:?}",
        response.batch_item_failures
    );
    assert_eq!(stage.task(&task_a.id).await.state(), TaskState::Started);
    let b = stage.task(&task_b.id).await;
    assert_eq!((b.state(), b.exit_code), (TaskState::Finished, Some(0)));
    let mut dead = stage.drain(&stage.dlq_url).await;
    dead.sort_by(|a, b| {
        a.attributes[SOURCE_MESSAGE_ID_ATTRIBUTE].cmp(&b.attributes[SOURCE_MESSAGE_ID_ATTRIBUTE])
    });
    let ids: Vec<&str> = dead
        .iter()
        .map(|d| d.attributes[SOURCE_MESSAGE_ID_ATTRIBUTE].as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "5f0c1a7e-3b2d-4c8e-9a61-0d2e4f6a8b03",
            "5f0c1a7e-3b2d-4c8e-9a61-0d2e4f6a8b04",
            "5f0c1a7e-3b2d-4c8e-9a61-0d2e4f6a8b05"
        ]
    );
    assert_eq!(
        dead[0].body,
        "Task 42 started (plain text from a misconfigured sender)"
    );
    assert!(dead[0].attributes[REASON_ATTRIBUTE].contains("not a task status update"));
    assert!(
        dead[1].attributes[REASON_ATTRIBUTE].contains("cpuSeconds"),
        "{:?}",
        dead[1]
    );
    assert!(
        dead[2].attributes[REASON_ATTRIBUTE].contains("does not exist"),
        "{:?}",
        dead[2]
    );
    assert!(
        dead[2]
            .body
            .contains("00000000-0000-4000-8000-000000000000"),
        "kept as received"
    );
}

#[tokio::test]
async fn the_outcome_of_each_recorded_message_is_reported_in_batch_order() {
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", NOW).await;
    let job = stage.job(json!({"batch": {"size": 2}})).await;
    let tasks = stage.tasks(&job).await;
    let task_a = stage.place(&tasks[0], &agent, NOW).await;
    let task_b = stage.run(&tasks[1], &agent, NOW).await;

    let outcomes = titus_control::status::process_batch(
        &stage.ctx,
        sqs_messages(recorded_batch(&job, &task_a, &task_b, "a1")),
        NOW,
    )
    .await;

    let kinds: Vec<&str> = outcomes
        .iter()
        .map(|(_, o)| match o {
            Outcome::Applied { .. } => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::DeadLettered { .. } => "deadLettered",
            Outcome::Failed => "failed",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "applied",
            "duplicate",
            "deadLettered",
            "deadLettered",
            "deadLettered",
            "applied"
        ]
    );
}

#[tokio::test]
async fn a_status_naming_the_wrong_job_is_dead_lettered() {
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", NOW).await;
    let job = stage.job(json!({"batch": {"size": 1}})).await;
    let task = stage.place(&stage.tasks(&job).await[0], &agent, NOW).await;
    let wrong = TaskStatusUpdate {
        job_id: JobId::generate(),
        ..status(&task, TaskState::Started, NOW)
    };

    let outcome = stage.send(&[wrong], NOW).await;

    assert!(
        matches!(&outcome[0], Outcome::DeadLettered { reason } if reason.contains("belongs to job"))
    );
    assert_eq!(stage.task(&task.id).await.state(), TaskState::Launched);
    assert_eq!(stage.drain(&stage.dlq_url).await.len(), 1);
}

/// The real store, except that reading one task fails as if DynamoDB throttled.
struct Throttled {
    inner: DynamoJobStore,
    task_id: TaskId,
}

impl JobStore for Throttled {
    async fn put_events(&self, events: &[titus_core::events::Event]) -> Result<(), StoreError> {
        self.inner.put_events(events).await
    }
    async fn read_events(
        &self,
        feed_key: &str,
        after: &titus_core::events::FeedCursor,
        limit: u32,
    ) -> Result<Vec<titus_core::events::Event>, StoreError> {
        self.inner.read_events(feed_key, after, limit).await
    }
    async fn put_placement_results(
        &self,
        results: &[titus_core::placement::PlacementResult],
        cleared: &[JobId],
    ) -> Result<(), StoreError> {
        self.inner.put_placement_results(results, cleared).await
    }
    async fn get_placement_result(
        &self,
        job_id: &JobId,
    ) -> Result<Option<titus_core::placement::PlacementResult>, StoreError> {
        self.inner.get_placement_result(job_id).await
    }
    async fn create_job_charged(
        &self,
        job: &Job,
        idempotency: Option<&IdempotencyKey>,
        usage: &titus_core::quota::UsageChange,
    ) -> Result<CreateOutcome, StoreError> {
        self.inner.create_job_charged(job, idempotency, usage).await
    }
    async fn list_usage(
        &self,
    ) -> Result<std::collections::BTreeMap<String, titus_core::quota::Usage>, StoreError> {
        self.inner.list_usage().await
    }
    async fn list_awaiting_jobs(
        &self,
        limit: u32,
        created_before_ms: u64,
    ) -> Result<Vec<JobId>, StoreError> {
        self.inner
            .list_awaiting_jobs(limit, created_before_ms)
            .await
    }
    async fn get_job_awaiting(&self, id: &JobId) -> Result<Option<(Job, bool)>, StoreError> {
        self.inner.get_job_awaiting(id).await
    }
    async fn existing_tasks(&self, ids: &[&TaskId]) -> Result<HashSet<TaskId>, StoreError> {
        self.inner.existing_tasks(ids).await
    }
    async fn write_initial_tasks(
        &self,
        job: &Job,
        tasks: &[Task],
        clear_mark: bool,
    ) -> Result<(), StoreError> {
        self.inner.write_initial_tasks(job, tasks, clear_mark).await
    }
    async fn get_job(&self, id: &JobId) -> Result<Option<Job>, StoreError> {
        self.inner.get_job(id).await
    }
    async fn list_jobs(
        &self,
        filter: &JobFilter,
        page: &PageRequest,
    ) -> Result<Page<Job>, StoreError> {
        self.inner.list_jobs(filter, page).await
    }
    async fn update_job_charged(
        &self,
        job: &Job,
        expected_version: u64,
        usage: &titus_core::quota::UsageChange,
    ) -> Result<(), StoreError> {
        self.inner
            .update_job_charged(job, expected_version, usage)
            .await
    }
    async fn get_task(&self, id: &TaskId) -> Result<Option<Task>, StoreError> {
        if *id == self.task_id {
            return Err(StoreError::Unavailable(
                "GetItem tasks: ThrottlingException".to_owned(),
            ));
        }
        self.inner.get_task(id).await
    }
    async fn list_job_tasks(
        &self,
        job_id: &JobId,
        page: &PageRequest,
    ) -> Result<Page<Task>, StoreError> {
        self.inner.list_job_tasks(job_id, page).await
    }
    async fn list_pending_tasks(&self, limit: u32, now_ms: u64) -> Result<Vec<Task>, StoreError> {
        self.inner.list_pending_tasks(limit, now_ms).await
    }
    async fn list_unacknowledged_tasks(
        &self,
        limit: u32,
        dispatched_before_ms: u64,
    ) -> Result<Vec<Task>, StoreError> {
        self.inner
            .list_unacknowledged_tasks(limit, dispatched_before_ms)
            .await
    }
    async fn update_task(&self, task: &Task, expected_version: u64) -> Result<(), StoreError> {
        self.inner.update_task(task, expected_version).await
    }
    async fn insert_task(&self, task: &Task) -> Result<(), StoreError> {
        self.inner.insert_task(task).await
    }
    async fn list_active_job_tasks(
        &self,
        job_id: &JobId,
        page: &PageRequest,
    ) -> Result<Page<Task>, StoreError> {
        self.inner.list_active_job_tasks(job_id, page).await
    }
}

#[tokio::test]
async fn a_store_outage_makes_only_the_affected_message_a_batch_item_failure() {
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", NOW).await;
    let job = stage.job(json!({"batch": {"size": 2}})).await;
    let tasks = stage.tasks(&job).await;
    let healthy = stage.place(&tasks[0], &agent, NOW).await;
    let throttled = stage.place(&tasks[1], &agent, NOW).await;
    let ctx = ControlPlane::new(
        titus_aws::aws_ports(&stage.clients, &stage.names).with_jobs(Throttled {
            inner: DynamoJobStore::new(stage.clients.dynamodb.clone(), &stage.names),
            task_id: throttled.id.clone(),
        }),
        Settings {
            rules: stage.ctx.settings.rules.clone(),
            ..Settings::default()
        },
    );
    let bodies = [
        serde_json::to_string(&status(&healthy, TaskState::Started, NOW + 1)).unwrap(),
        serde_json::to_string(&status(&throttled, TaskState::Started, NOW + 1)).unwrap(),
    ];
    let event = support::sqs_event(&bodies);
    let throttled_message = event.records[1].message_id.clone().unwrap();

    let response = handle_batch(&ctx, event, NOW + 1).await;

    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, [throttled_message.as_str()]);
    assert_eq!(stage.task(&healthy.id).await.state(), TaskState::Started);
    assert_eq!(stage.task(&throttled.id).await.state(), TaskState::Launched);
    assert!(
        stage.drain(&stage.dlq_url).await.is_empty(),
        "a transient error is not dead-lettered"
    );
}

#[tokio::test]
async fn a_redelivered_finished_makes_the_replacement_a_crash_left_unmade() {
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", NOW).await;
    let job = stage
        .job(json!({"batch": {"size": 1, "retryPolicy": {"immediate": {"retries": 1}}}}))
        .await;
    let task = stage.run(&stage.tasks(&job).await[0], &agent, NOW).await;
    // The first delivery wrote Finished, then the function crashed before the replacement.
    let mut finished = task.clone();
    finished
        .transition(
            TaskState::Finished,
            Some(TaskReason::Failed),
            "exit 1",
            NOW + 10,
        )
        .unwrap();
    DynamoAllocationStore::new(stage.clients.dynamodb.clone(), &stage.names)
        .finish_and_release(
            &finished,
            task.version,
            "a1",
            Resources::of_container(&task.resources),
        )
        .await
        .unwrap();
    assert_eq!(stage.tasks(&job).await.len(), 1);

    let redelivered = stage.finish(&task, TaskReason::Failed, 1, NOW + 10).await;

    assert_eq!(redelivered, Outcome::Duplicate);
    let tasks = stage.tasks(&job).await;
    assert_eq!(tasks.len(), 2);
    assert_eq!(tasks[1].resubmit_of.as_ref(), Some(&task.id));
    assert_eq!(
        stage.get_job(&job.id).await.status.state,
        JobState::Accepted
    );
}
