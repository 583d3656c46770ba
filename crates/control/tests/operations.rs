//! The job operations against the emulator: real DynamoDB tables, real agent queues.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;
use support::{descriptor, fresh_stage, service};
use titus_aws::DynamoJobStore;
use titus_control::materialize::materialize_jobs;
use titus_control::{
    create_job, delete_attributes, kill_job, kill_task, kill_task_with, list_tasks, set_enabled,
    update_attributes, update_capacity, Admission, CapacityUpdate, ControlError, ControlPlane,
    KillOptions, Settings, TaskFilter,
};
use titus_core::messages::{AgentCommand, KillTask};
use titus_core::ports::{CreateOutcome, IdempotencyKey, JobFilter, Page, PageRequest};
use titus_core::{
    Job, JobId, JobState, JobStore, Limits, Ports, StoreError, Task, TaskId, TaskReason, TaskState,
};

const NOW_MS: u64 = 1_764_000_000_000;

/// A job with its initial tasks written, as the scheduler's next tick would write them.
async fn new_job<P: Ports>(cp: &ControlPlane<P>, descriptor: titus_core::JobDescriptor) -> Job {
    let job = create_job(cp, descriptor, "alice@example.com", None, NOW_MS)
        .await
        .unwrap()
        .into_job();
    materialize_jobs(cp, u32::MAX, u64::MAX).await.unwrap();
    job
}

fn kill_of(task: &Task, reason: TaskReason, grace_period_sec: u32) -> AgentCommand {
    AgentCommand::KillTask(KillTask {
        task_id: task.id.clone(),
        reason,
        grace_period_sec,
    })
}

fn sorted(mut commands: Vec<AgentCommand>) -> Vec<AgentCommand> {
    commands.sort_by(|a, b| a.task_id().cmp(b.task_id()));
    commands
}

#[tokio::test]
async fn a_job_killed_before_the_scheduler_wrote_its_tasks_finishes_at_once_and_gets_none() {
    let stage = fresh_stage().await;
    let job = create_job(
        &stage.cp,
        descriptor(json!({"batch": {"size": 3}})),
        "alice@example.com",
        None,
        NOW_MS,
    )
    .await
    .unwrap()
    .into_job();

    let killed = kill_job(&stage.cp, &job.id, NOW_MS + 10).await.unwrap();

    assert_eq!(killed.status.state, JobState::Finished);
    assert!(
        materialize_jobs(&stage.cp, 100, u64::MAX)
            .await
            .unwrap()
            .is_empty(),
        "the scheduler's next tick writes no task for it"
    );
    assert!(stage.tasks(&job.id).await.is_empty());
}

#[tokio::test]
async fn killing_a_job_finishes_pending_tasks_and_sends_kills_for_placed_ones() {
    let stage = fresh_stage().await;
    let queue_url = stage.agent("a1", NOW_MS).await;
    let job = new_job(
        &stage.cp,
        descriptor(json!({"batch": {"size": 3}, "container": {"killGracePeriodSec": 7}})),
    )
    .await;
    let tasks = stage.tasks(&job.id).await;
    let launched = stage
        .advance(&tasks[0], "a1", TaskState::Launched, NOW_MS)
        .await;
    let started = stage
        .advance(&tasks[1], "a1", TaskState::Started, NOW_MS)
        .await;

    let killed = kill_job(&stage.cp, &job.id, NOW_MS + 10).await.unwrap();

    assert_eq!(killed.status.state, JobState::KillInitiated);
    let after = stage.tasks(&job.id).await;
    assert_eq!(after[0].state(), TaskState::KillInitiated);
    assert_eq!(after[1].state(), TaskState::KillInitiated);
    assert_eq!(
        after[2].state(),
        TaskState::Finished,
        "never placed: finished at once"
    );
    assert!(after
        .iter()
        .all(|t| t.status.reason_code == Some(TaskReason::Killed)));
    assert_eq!(
        sorted(stage.drain(&queue_url).await),
        sorted(vec![
            kill_of(&launched, TaskReason::Killed, 7),
            kill_of(&started, TaskReason::Killed, 7)
        ])
    );
    assert_eq!(stage.store.get_job(&job.id).await.unwrap().unwrap(), killed);
}

#[tokio::test]
async fn killing_a_job_again_resends_the_kills_of_tasks_still_being_killed() {
    let stage = fresh_stage().await;
    let queue_url = stage.agent("a1", NOW_MS).await;
    let job = new_job(&stage.cp, descriptor(json!({"batch": {"size": 1}}))).await;
    let task = stage
        .advance(
            &stage.tasks(&job.id).await[0],
            "a1",
            TaskState::Started,
            NOW_MS,
        )
        .await;
    kill_job(&stage.cp, &job.id, NOW_MS + 1).await.unwrap();
    stage.drain(&queue_url).await;

    let again = kill_job(&stage.cp, &job.id, NOW_MS + 2).await.unwrap();

    assert_eq!(again.status.state, JobState::KillInitiated);
    assert_eq!(
        stage.drain(&queue_url).await,
        vec![kill_of(&task, TaskReason::Killed, 10)]
    );
    let stored = stage.store.get_task(&task.id).await.unwrap().unwrap();
    assert_eq!(
        stored.status_history.len(),
        4,
        "the second kill wrote nothing: Accepted, Launched, StartInitiated, Started"
    );
}

#[tokio::test]
async fn a_job_with_no_placed_task_is_finished_by_its_kill_and_cannot_be_killed_again() {
    let stage = fresh_stage().await;
    let job = new_job(&stage.cp, descriptor(json!({"batch": {"size": 2}}))).await;

    let killed = kill_job(&stage.cp, &job.id, NOW_MS + 1).await.unwrap();

    assert_eq!(killed.status.state, JobState::Finished);
    assert_eq!(killed.status.reason_code, "killed");
    assert!(stage
        .tasks(&job.id)
        .await
        .iter()
        .all(|t| t.state() == TaskState::Finished));
    let err = kill_job(&stage.cp, &job.id, NOW_MS + 2).await.unwrap_err();
    assert!(
        matches!(&err, ControlError::Conflict { message, .. } if message.contains("already finished")),
        "{err:?}"
    );
    let missing = JobId::generate();
    assert!(matches!(
        kill_job(&stage.cp, &missing, NOW_MS).await,
        Err(ControlError::NotFound { entity: "job", .. })
    ));
}

/// The real store, except that the first write to one task loses a race: just before it, the
/// scheduler places that task on agent `a1`.
struct PlacedDuringTheKill {
    inner: DynamoJobStore,
    task_id: TaskId,
    raced: AtomicBool,
}

impl JobStore for PlacedDuringTheKill {
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
        self.inner.get_task(id).await
    }
    async fn list_job_tasks(
        &self,
        job_id: &JobId,
        page: &PageRequest,
    ) -> Result<Page<Task>, StoreError> {
        self.inner.list_job_tasks(job_id, page).await
    }
    async fn list_active_job_tasks(
        &self,
        job_id: &JobId,
        page: &PageRequest,
    ) -> Result<Page<Task>, StoreError> {
        self.inner.list_active_job_tasks(job_id, page).await
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
        if task.id == self.task_id && !self.raced.swap(true, Ordering::SeqCst) {
            let mut placed = self.inner.get_task(&task.id).await?.unwrap();
            let version = placed.version;
            placed
                .transition(TaskState::Launched, None, "placed", NOW_MS)
                .unwrap();
            placed.agent_id = Some("a1".to_owned());
            self.inner.update_task(&placed, version).await?;
        }
        self.inner.update_task(task, expected_version).await
    }
    async fn insert_task(&self, task: &Task) -> Result<(), StoreError> {
        self.inner.insert_task(task).await
    }
}

#[tokio::test]
async fn a_task_placed_while_its_kill_is_written_is_killed_on_its_agent() {
    let stage = fresh_stage().await;
    let queue_url = stage.agent("a1", NOW_MS).await;
    let job = new_job(&stage.cp, descriptor(json!({"batch": {"size": 1}}))).await;
    let task = stage.tasks(&job.id).await.remove(0);
    let racing_cp = ControlPlane::new(
        titus_aws::aws_ports(&stage.clients, &stage.names).with_jobs(PlacedDuringTheKill {
            inner: stage.store.clone(),
            task_id: task.id.clone(),
            raced: AtomicBool::new(false),
        }),
        Settings::default(),
    );
    let racing = &racing_cp.ports.jobs;

    let killed = kill_task(&racing_cp, &task.id, false, NOW_MS + 5)
        .await
        .unwrap();

    assert!(racing.raced.load(Ordering::SeqCst));
    assert_eq!(
        killed.state(),
        TaskState::KillInitiated,
        "re-read, saw it placed"
    );
    assert_eq!(killed.agent_id.as_deref(), Some("a1"));
    assert_eq!(
        stage.store.get_task(&task.id).await.unwrap().unwrap(),
        killed
    );
    assert_eq!(
        stage.drain(&queue_url).await,
        vec![kill_of(&killed, TaskReason::Killed, 10)]
    );
}

#[tokio::test]
async fn killing_a_started_task_sends_a_kill_and_keeps_the_capacity() {
    let stage = fresh_stage().await;
    let queue_url = stage.agent("a1", NOW_MS).await;
    let job = new_job(&stage.cp, service(1, 2, 3)).await;
    let task = stage
        .advance(
            &stage.tasks(&job.id).await[0],
            "a1",
            TaskState::Started,
            NOW_MS,
        )
        .await;

    let killed = kill_task(&stage.cp, &task.id, false, NOW_MS + 1)
        .await
        .unwrap();

    assert_eq!(killed.state(), TaskState::KillInitiated);
    assert_eq!(killed.status.reason_code, Some(TaskReason::Killed));
    assert_eq!(
        stage.drain(&queue_url).await,
        vec![kill_of(&task, TaskReason::Killed, 10)]
    );
    let job = stage.store.get_job(&job.id).await.unwrap().unwrap();
    assert_eq!(job.job_descriptor.service.unwrap().capacity.desired, 2);
    let err = kill_task(&stage.cp, &task.id, true, NOW_MS + 2)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ControlError::Conflict { message, .. } if message.contains("without shrink")),
        "a kill cannot become a shrink afterwards: {err:?}"
    );
}

#[tokio::test]
async fn killing_a_task_with_shrink_lowers_desired_until_min() {
    let stage = fresh_stage().await;
    let queue_url = stage.agent("a1", NOW_MS).await;
    let job = new_job(&stage.cp, service(1, 3, 5)).await;
    let tasks = stage.tasks(&job.id).await;
    let running = stage
        .advance(&tasks[1], "a1", TaskState::Started, NOW_MS)
        .await;

    let first = kill_task(&stage.cp, &tasks[0].id, true, NOW_MS + 1)
        .await
        .unwrap();
    let second = kill_task(&stage.cp, &running.id, true, NOW_MS + 2)
        .await
        .unwrap();
    let repeated = kill_task(&stage.cp, &running.id, true, NOW_MS + 3)
        .await
        .unwrap();
    let third = kill_task(&stage.cp, &tasks[2].id, true, NOW_MS + 4)
        .await
        .unwrap_err();

    assert_eq!(first.state(), TaskState::Finished);
    assert_eq!(first.status.reason_code, Some(TaskReason::ScaledDown));
    assert_eq!(second.state(), TaskState::KillInitiated);
    assert_eq!(second.status.reason_code, Some(TaskReason::ScaledDown));
    assert_eq!(repeated, second, "a repeated shrink changes nothing");
    let job = stage.store.get_job(&job.id).await.unwrap().unwrap();
    assert_eq!(
        job.job_descriptor.service.unwrap().capacity.desired,
        1,
        "3 - 2 shrinks; the repeat did not count"
    );
    assert!(
        matches!(&third, ControlError::Conflict { message, .. } if message.contains("below its min")),
        "{third:?}"
    );
    assert_eq!(
        stage.tasks(&job.id).await[2].state(),
        TaskState::Accepted,
        "the refused shrink killed nothing"
    );
    assert_eq!(
        stage.drain(&queue_url).await,
        vec![
            kill_of(&running, TaskReason::ScaledDown, 10),
            kill_of(&running, TaskReason::ScaledDown, 10)
        ]
    );
}

#[tokio::test]
async fn shrink_is_refused_for_a_batch_task_and_a_finished_task_cannot_be_killed() {
    let stage = fresh_stage().await;
    let job = new_job(&stage.cp, descriptor(json!({"batch": {"size": 1}}))).await;
    let task = stage.tasks(&job.id).await.remove(0);

    let shrink = kill_task(&stage.cp, &task.id, true, NOW_MS)
        .await
        .unwrap_err();
    kill_task(&stage.cp, &task.id, false, NOW_MS).await.unwrap();
    let again = kill_task(&stage.cp, &task.id, false, NOW_MS)
        .await
        .unwrap_err();

    assert!(
        matches!(&shrink, ControlError::Invalid(errors) if errors[0].field == "shrink"),
        "{shrink:?}"
    );
    assert!(
        matches!(&again, ControlError::Conflict { message, .. } if message.contains("already finished")),
        "{again:?}"
    );
    assert!(matches!(
        kill_task(&stage.cp, &TaskId::generate(), false, NOW_MS).await,
        Err(ControlError::NotFound { entity: "task", .. })
    ));
}

#[tokio::test]
async fn growing_capacity_adds_tasks_in_new_slots_and_shrinking_kills_the_newest_first() {
    let stage = fresh_stage().await;
    let queue_url = stage.agent("a1", NOW_MS).await;
    let job = new_job(&stage.cp, service(0, 2, 10)).await;
    let grow = CapacityUpdate {
        desired: Some(4),
        ..CapacityUpdate::default()
    };

    let grown = update_capacity(&stage.cp, &job.id, grow, NOW_MS + 10)
        .await
        .unwrap();
    let repeated = update_capacity(&stage.cp, &job.id, grow, NOW_MS + 11)
        .await
        .unwrap();

    assert_eq!(
        grown
            .job_descriptor
            .service
            .as_ref()
            .unwrap()
            .capacity
            .desired,
        4
    );
    assert_eq!(repeated, grown, "the same capacity again writes nothing");
    let tasks = stage.tasks(&job.id).await;
    let slots: Vec<u32> = tasks.iter().map(|t| t.index).collect();
    assert_eq!(slots, [0, 1, 2, 3]);
    assert!(tasks.iter().all(|t| t.state() == TaskState::Accepted));

    // The newest task (slot 3) runs; shrinking to 1 kills slots 3, 2 and 1.
    let newest = stage
        .advance(&tasks[3], "a1", TaskState::Started, NOW_MS + 20)
        .await;
    update_capacity(
        &stage.cp,
        &job.id,
        CapacityUpdate {
            desired: Some(1),
            ..CapacityUpdate::default()
        },
        NOW_MS + 30,
    )
    .await
    .unwrap();

    let tasks = stage.tasks(&job.id).await;
    let states: Vec<TaskState> = tasks.iter().map(Task::state).collect();
    assert_eq!(
        states,
        [
            TaskState::Accepted,
            TaskState::Finished,
            TaskState::Finished,
            TaskState::KillInitiated
        ]
    );
    assert!(tasks[1..]
        .iter()
        .all(|t| t.status.reason_code == Some(TaskReason::ScaledDown)));
    assert_eq!(
        stage.drain(&queue_url).await,
        vec![kill_of(&newest, TaskReason::ScaledDown, 10)]
    );
}

#[tokio::test]
async fn a_shrink_at_min_lowers_min_too_unless_the_kill_prevents_it_as_in_titus() {
    let stage = fresh_stage().await;
    let job = new_job(&stage.cp, service(2, 2, 4)).await;
    let tasks = stage.tasks(&job.id).await;
    let kill = |task: usize, prevent_min_size_update: bool| {
        let (cp, id) = (&stage.cp, tasks[task].id.clone());
        async move {
            let options = KillOptions {
                shrink: true,
                prevent_min_size_update,
            };
            kill_task_with(cp, &id, options, NOW_MS).await
        }
    };

    let prevented = kill(0, true).await;
    let lowered = kill(0, false).await.unwrap();

    assert!(
        matches!(&prevented, Err(ControlError::Conflict { message, .. }) if message.contains("below its min")),
        "{prevented:?}"
    );
    assert_eq!(lowered.status.reason_code, Some(TaskReason::ScaledDown));
    let capacity = stage
        .store
        .get_job(&job.id)
        .await
        .unwrap()
        .unwrap()
        .job_descriptor
        .service
        .unwrap()
        .capacity;
    assert_eq!((capacity.min, capacity.desired, capacity.max), (1, 1, 4));
}

#[tokio::test]
async fn service_job_processes_freeze_desired_in_the_direction_they_name() {
    let stage = fresh_stage().await;
    let frozen_down = |processes: serde_json::Value| {
        descriptor(json!({
            "batch": null,
            "service": {
                "capacity": {"min": 0, "desired": 2, "max": 4},
                "serviceJobProcesses": processes
            }
        }))
    };
    let no_decrease = new_job(
        &stage.cp,
        frozen_down(json!({"disableDecreaseDesired": true})),
    )
    .await;
    let no_increase = new_job(
        &stage.cp,
        frozen_down(json!({"disableIncreaseDesired": "true"})),
    )
    .await;
    let desired = |value: u32| CapacityUpdate {
        desired: Some(value),
        ..CapacityUpdate::default()
    };

    let lowered = update_capacity(&stage.cp, &no_decrease.id, desired(1), NOW_MS).await;
    let tasks = stage.tasks(&no_decrease.id).await;
    let shrunk = kill_task(&stage.cp, &tasks[0].id, true, NOW_MS).await;
    let raised = update_capacity(&stage.cp, &no_decrease.id, desired(3), NOW_MS).await;
    let raised_frozen = update_capacity(&stage.cp, &no_increase.id, desired(3), NOW_MS).await;
    let lowered_other = update_capacity(&stage.cp, &no_increase.id, desired(1), NOW_MS).await;

    for refused in [&lowered.as_ref().map(|_| ()), &shrunk.as_ref().map(|_| ())] {
        assert!(
            matches!(refused, Err(ControlError::Conflict { message, .. })
                if message.contains("serviceJobProcesses.disableDecreaseDesired")),
            "{refused:?}"
        );
    }
    assert!(
        matches!(&raised_frozen, Err(ControlError::Conflict { message, .. })
            if message.contains("serviceJobProcesses.disableIncreaseDesired")),
        "{raised_frozen:?}"
    );
    assert_eq!(
        stage.tasks(&no_decrease.id).await[0].state(),
        TaskState::Accepted,
        "no kill"
    );
    let capacity_of = |job: Job| job.job_descriptor.service.unwrap().capacity.desired;
    assert_eq!(
        capacity_of(raised.unwrap()),
        3,
        "the other direction is free"
    );
    assert_eq!(capacity_of(lowered_other.unwrap()), 1);
    let stored = stage.store.get_job(&no_increase.id).await.unwrap().unwrap();
    assert_eq!(capacity_of(stored), 1);
}

#[tokio::test]
async fn a_capacity_outside_its_bounds_is_a_conflict_and_over_the_limit_is_invalid() {
    let stage = fresh_stage().await;
    let job = new_job(&stage.cp, service(1, 2, 3)).await;
    let batch = new_job(&stage.cp, descriptor(json!({}))).await;
    let change = |job_id: JobId, update: CapacityUpdate, limits: Limits| {
        let cp = stage.with_settings(Settings {
            admission: Admission {
                limits,
                ..Admission::default()
            },
            ..Settings::default()
        });
        async move { update_capacity(&cp, &job_id, update, NOW_MS).await }
    };

    let above_max = change(
        job.id.clone(),
        CapacityUpdate {
            desired: Some(4),
            ..CapacityUpdate::default()
        },
        Limits::default(),
    )
    .await
    .unwrap_err();
    let over_limit = change(
        job.id.clone(),
        CapacityUpdate {
            max: Some(11),
            ..CapacityUpdate::default()
        },
        Limits {
            service_max: 10,
            ..Limits::default()
        },
    )
    .await
    .unwrap_err();
    let of_batch = change(
        batch.id.clone(),
        CapacityUpdate::default(),
        Limits::default(),
    )
    .await
    .unwrap_err();

    assert!(
        matches!(&above_max, ControlError::Conflict { details, .. } if details[0].field == "desired"),
        "{above_max:?}"
    );
    assert!(
        matches!(&over_limit, ControlError::Invalid(errors) if errors[0].field == "max"),
        "{over_limit:?}"
    );
    assert!(
        matches!(&of_batch, ControlError::Invalid(_)),
        "{of_batch:?}"
    );
    let unchanged = stage.store.get_job(&job.id).await.unwrap().unwrap();
    assert_eq!(unchanged, job);
}

#[tokio::test]
async fn a_disabled_job_keeps_its_tasks_until_it_is_enabled_again() {
    let stage = fresh_stage().await;
    let job = new_job(&stage.cp, service(0, 2, 5)).await;

    let disabled = set_enabled(&stage.cp, &job.id, false, NOW_MS)
        .await
        .unwrap();
    update_capacity(
        &stage.cp,
        &job.id,
        CapacityUpdate {
            desired: Some(4),
            ..CapacityUpdate::default()
        },
        NOW_MS + 1,
    )
    .await
    .unwrap();
    let tasks_while_disabled = stage.tasks(&job.id).await.len();
    let enabled = set_enabled(&stage.cp, &job.id, true, NOW_MS + 2)
        .await
        .unwrap();

    assert!(!disabled.job_descriptor.service.as_ref().unwrap().enabled);
    assert_eq!(tasks_while_disabled, 2);
    assert!(enabled.job_descriptor.service.as_ref().unwrap().enabled);
    assert_eq!(stage.tasks(&job.id).await.len(), 4);

    let batch = new_job(&stage.cp, descriptor(json!({}))).await;
    assert!(matches!(
        set_enabled(&stage.cp, &batch.id, false, NOW_MS).await,
        Err(ControlError::Invalid(_))
    ));
}

#[tokio::test]
async fn attributes_are_set_and_deleted_but_not_on_a_finished_job() {
    let stage = fresh_stage().await;
    let job = new_job(&stage.cp, descriptor(json!({"attributes": {"keep": "1"}}))).await;

    let set = update_attributes(
        &stage.cp,
        &job.id,
        &BTreeMap::from([("team".to_owned(), "red".to_owned())]),
    )
    .await
    .unwrap();
    let deleted = delete_attributes(
        &stage.cp,
        &job.id,
        &BTreeSet::from(["keep".to_owned(), "absent".to_owned()]),
    )
    .await
    .unwrap();
    let too_long = update_attributes(
        &stage.cp,
        &job.id,
        &BTreeMap::from([("k".to_owned(), "v".repeat(5_000))]),
    )
    .await
    .unwrap_err();

    assert_eq!(set.job_descriptor.attributes.len(), 2);
    assert_eq!(set.version, job.version + 1);
    assert_eq!(
        deleted.job_descriptor.attributes,
        BTreeMap::from([("team".to_owned(), "red".to_owned())])
    );
    assert_eq!(
        stage.store.get_job(&job.id).await.unwrap().unwrap(),
        deleted
    );
    assert!(
        matches!(&too_long, ControlError::Invalid(errors) if errors[0].field.starts_with("attributes")),
        "{too_long:?}"
    );

    kill_job(&stage.cp, &job.id, NOW_MS).await.unwrap();
    let finished = update_attributes(
        &stage.cp,
        &job.id,
        &BTreeMap::from([("late".to_owned(), "x".to_owned())]),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(finished, ControlError::Conflict { .. }),
        "{finished:?}"
    );
}

#[tokio::test]
async fn tasks_are_listed_across_jobs_by_state_page_by_page() {
    let stage = fresh_stage().await;
    let mut started = HashSet::new();
    let mut all = HashSet::new();
    for size in [3, 1, 4] {
        let job = new_job(&stage.cp, descriptor(json!({"batch": {"size": size}}))).await;
        for (i, task) in stage.tasks(&job.id).await.into_iter().enumerate() {
            all.insert(task.id.clone());
            if i % 2 == 0 {
                let task = stage.advance(&task, "a1", TaskState::Started, NOW_MS).await;
                started.insert(task.id);
            }
        }
    }
    // A finished job's tasks are found only when Finished tasks are asked for.
    let done = new_job(&stage.cp, descriptor(json!({"batch": {"size": 1}}))).await;
    kill_job(&stage.cp, &done.id, NOW_MS).await.unwrap();

    let collect = |filter: TaskFilter, page_size: u32| {
        let stage = &stage;
        async move {
            let mut seen = Vec::new();
            let mut page = PageRequest::first(page_size);
            for _ in 0..50 {
                let result = list_tasks(&stage.cp, &filter, &page).await.unwrap();
                assert!(result.items.len() <= page_size as usize);
                seen.extend(result.items.into_iter().map(|t| t.id));
                match result.next_cursor {
                    Some(cursor) => page.cursor = Some(cursor),
                    None => return seen,
                }
            }
            panic!("the listing did not end");
        }
    };

    let started_seen = collect(
        TaskFilter {
            job_id: None,
            states: vec![TaskState::Started],
        },
        2,
    )
    .await;
    let all_seen = collect(TaskFilter::default(), 3).await;
    let finished_seen = collect(
        TaskFilter {
            job_id: None,
            states: vec![TaskState::Finished],
        },
        10,
    )
    .await;
    let one_job = collect(
        TaskFilter {
            job_id: Some(done.id.clone()),
            states: Vec::new(),
        },
        1,
    )
    .await;

    assert_eq!(started_seen.len(), started.len(), "each exactly once");
    assert_eq!(started_seen.into_iter().collect::<HashSet<_>>(), started);
    assert_eq!(all_seen.len(), all.len() + 1);
    assert_eq!(finished_seen.len(), 1);
    assert_eq!(one_job.len(), 1);
    let bad = list_tasks(
        &stage.cp,
        &TaskFilter::default(),
        &PageRequest {
            page_size: 5,
            cursor: Some("not-a-cursor!".to_owned()),
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(bad, ControlError::Store(StoreError::InvalidCursor(_))),
        "{bad:?}"
    );
}

#[tokio::test]
async fn a_repeated_creation_with_the_same_key_returns_the_first_job() {
    let stage = fresh_stage().await;
    let key = IdempotencyKey {
        scope: "alice@example.com".to_owned(),
        key: "k1".to_owned(),
        request_hash: titus_control::request_hash(&descriptor(json!({}))),
    };

    let first = create_job(
        &stage.cp,
        descriptor(json!({})),
        "alice@example.com",
        Some(key.clone()),
        NOW_MS,
    )
    .await
    .unwrap();
    let again = create_job(
        &stage.cp,
        descriptor(json!({})),
        "alice@example.com",
        Some(key),
        NOW_MS + 1,
    )
    .await
    .unwrap();

    assert!(first.was_created());
    assert!(!again.was_created());
    assert_eq!(again.job(), first.job());
    assert_eq!(first.job().created_by, "alice@example.com");
}
