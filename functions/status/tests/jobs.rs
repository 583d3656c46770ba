//! Jobs converging through status messages, against the emulator: batch retries under each
//! policy (with the times the scheduler's pending index hands the replacements out), system errors
//! not using up retries, batch jobs finishing; services replacing tasks and following capacity
//! changes made through titus-control; kills with and without shrink; a job's whole history.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::json;
use support::{fresh_stage, fresh_stage_with, kills, Stage, NOW};
use titus_control::reconciler::reconcile;
use titus_control::status::Outcome;
use titus_control::CapacityUpdate;
use titus_core::{Agent, Job, JobState, JobStore, Task, TaskId, TaskReason, TaskState};

async fn pending_ids(stage: &Stage, now: u64) -> Vec<TaskId> {
    stage
        .store
        .list_pending_tasks(100, now)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect()
}

/// Runs the slot's current task and fails it at `at`; returns the failed task.
async fn run_and_fail(
    stage: &Stage,
    task: &Task,
    agent: &Agent,
    reason: TaskReason,
    at: u64,
) -> Task {
    let running = stage.run(task, agent, at).await;
    stage.finish(&running, reason, 1, at).await;
    stage.task(&running.id).await
}

/// The task that replaces `task`, if any.
async fn replacement_of(stage: &Stage, job: &Job, task: &Task) -> Option<Task> {
    stage
        .tasks(job)
        .await
        .into_iter()
        .find(|t| t.resubmit_of.as_ref() == Some(&task.id))
}

fn batch(policy: serde_json::Value) -> serde_json::Value {
    json!({"batch": {"size": 1, "retryPolicy": policy}})
}

#[tokio::test]
async fn an_immediate_retry_is_pending_at_once_and_linked_to_the_task_it_replaces() {
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", NOW).await;
    let job = stage.job(batch(json!({"immediate": {"retries": 2}}))).await;
    let first = stage.tasks(&job).await.remove(0);

    let failed = run_and_fail(&stage, &first, &agent, TaskReason::Failed, NOW + 100).await;

    let retry = replacement_of(&stage, &job, &failed).await.unwrap();
    assert_eq!(retry.state(), TaskState::Accepted);
    assert_eq!((retry.index, retry.resubmit_number), (0, 1));
    assert_eq!(retry.original_id, first.id);
    assert_eq!(retry.not_before_ms, NOW + 100);
    assert_eq!(pending_ids(&stage, NOW + 100).await, [retry.id]);
}

#[tokio::test]
async fn a_delayed_retry_waits_its_initial_delay_then_its_delay() {
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", NOW).await;
    let job = stage
        .job(batch(
            json!({"delayed": {"initialDelayMs": 5000, "delayMs": 2000, "retries": 3}}),
        ))
        .await;
    let first = stage.tasks(&job).await.remove(0);

    let failed = run_and_fail(&stage, &first, &agent, TaskReason::Failed, NOW).await;
    let second = replacement_of(&stage, &job, &failed).await.unwrap();
    let pending_early = pending_ids(&stage, NOW + 4_999).await;
    let pending_on_time = pending_ids(&stage, NOW + 5_000).await;
    let failed_again = run_and_fail(&stage, &second, &agent, TaskReason::Failed, NOW + 6_000).await;
    let third = replacement_of(&stage, &job, &failed_again).await.unwrap();

    assert_eq!(second.not_before_ms, NOW + 5_000);
    assert!(pending_early.is_empty(), "{pending_early:?}");
    assert_eq!(pending_on_time, std::slice::from_ref(&second.id));
    assert_eq!(third.not_before_ms, NOW + 6_000 + 2_000);
    assert!(pending_ids(&stage, NOW + 7_999).await.is_empty());
    assert_eq!(pending_ids(&stage, NOW + 8_000).await, [third.id]);
}

#[tokio::test]
async fn exponential_backoff_doubles_its_delay_up_to_the_cap() {
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", NOW).await;
    let job = stage
        .job(batch(json!({"exponentialBackOff": {"initialDelayMs": 1000, "maxDelayIntervalMs": 3000, "retries": 5}})))
        .await;
    let mut task = stage.tasks(&job).await.remove(0);
    let mut delays = Vec::new();
    let mut at = NOW;

    for _ in 0..4 {
        let failed = run_and_fail(&stage, &task, &agent, TaskReason::Failed, at).await;
        task = replacement_of(&stage, &job, &failed).await.unwrap();
        delays.push(task.not_before_ms - at);
        assert!(pending_ids(&stage, task.not_before_ms - 1).await.is_empty());
        assert_eq!(
            pending_ids(&stage, task.not_before_ms).await,
            [task.id.clone()]
        );
        at = task.not_before_ms + 10;
    }

    assert_eq!(delays, [1000, 2000, 3000, 3000]);
}

#[tokio::test]
async fn when_retries_run_out_the_job_finishes_failed() {
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", NOW).await;
    let job = stage.job(batch(json!({"immediate": {"retries": 1}}))).await;
    let first = stage.tasks(&job).await.remove(0);

    let failed = run_and_fail(&stage, &first, &agent, TaskReason::Failed, NOW).await;
    let retry = replacement_of(&stage, &job, &failed).await.unwrap();
    let failed_again = run_and_fail(&stage, &retry, &agent, TaskReason::Failed, NOW + 10).await;

    assert!(replacement_of(&stage, &job, &failed_again).await.is_none());
    let job = stage.get_job(&job.id).await;
    assert_eq!(job.status.state, JobState::Finished);
    assert_eq!(job.status.reason_code, "failed");
    assert_eq!(stage.get_agent("a1").await.task_count, 0);
}

#[tokio::test]
async fn system_errors_do_not_use_up_user_retries() {
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", NOW).await;
    let job = stage.job(batch(json!({"immediate": {"retries": 0}}))).await;
    let first = stage.tasks(&job).await.remove(0);

    let crashed = run_and_fail(&stage, &first, &agent, TaskReason::Crashed, NOW).await;
    let after_crash = replacement_of(&stage, &job, &crashed).await.unwrap();
    let transient = run_and_fail(
        &stage,
        &after_crash,
        &agent,
        TaskReason::TransientSystemError,
        NOW + 10,
    )
    .await;
    let after_transient = replacement_of(&stage, &job, &transient).await.unwrap();
    let failed = run_and_fail(
        &stage,
        &after_transient,
        &agent,
        TaskReason::Failed,
        NOW + 20,
    )
    .await;

    assert_eq!(after_transient.system_resubmit_number, 2);
    assert_eq!(after_transient.user_retries_used(), 0);
    assert!(
        replacement_of(&stage, &job, &failed).await.is_none(),
        "retries 0: a user failure ends it"
    );
    assert_eq!(stage.get_job(&job.id).await.status.reason_code, "failed");
}

#[tokio::test]
async fn system_retries_stop_at_their_cap() {
    let stage = fresh_stage_with(|c| c.max_system_retries = 2).await;
    let agent = stage.agent("a1", NOW).await;
    let job = stage.job(batch(json!({"immediate": {"retries": 0}}))).await;
    let mut task = stage.tasks(&job).await.remove(0);

    for i in 0..3 {
        let crashed = run_and_fail(&stage, &task, &agent, TaskReason::Crashed, NOW + i).await;
        match replacement_of(&stage, &job, &crashed).await {
            Some(next) => task = next,
            None => break,
        }
    }

    assert_eq!(
        stage.tasks(&job).await.len(),
        3,
        "the first task and two system retries"
    );
    assert_eq!(
        stage.get_job(&job.id).await.status.state,
        JobState::Finished
    );
}

#[tokio::test]
async fn a_batch_job_finishes_normal_when_its_last_task_finishes_normal() {
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", NOW).await;
    let job = stage
        .job(json!({"batch": {"size": 2, "retryPolicy": {"immediate": {"retries": 3}}}}))
        .await;
    let tasks = stage.tasks(&job).await;
    let first = stage.run(&tasks[0], &agent, NOW).await;
    let second = stage.run(&tasks[1], &agent, NOW).await;

    stage.finish(&first, TaskReason::Normal, 0, NOW + 10).await;
    let after_first = stage.get_job(&job.id).await;
    stage.finish(&second, TaskReason::Normal, 0, NOW + 20).await;
    let after_both = stage.get_job(&job.id).await;

    assert_eq!(after_first.status.state, JobState::Accepted);
    assert_eq!(after_both.status.state, JobState::Finished);
    assert_eq!(after_both.status.reason_code, "normal");
    assert_eq!(stage.tasks(&job).await.len(), 2, "normal is never retried");
}

#[tokio::test]
async fn runtime_limit_exceeded_is_retried_only_when_the_job_asks() {
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", NOW).await;
    let asks = stage
        .job(json!({"batch": {"size": 1, "retryOnRuntimeLimit": true, "retryPolicy": {"immediate": {"retries": 1}}}}))
        .await;
    let does_not = stage.job(batch(json!({"immediate": {"retries": 1}}))).await;

    let a = run_and_fail(
        &stage,
        &stage.tasks(&asks).await[0],
        &agent,
        TaskReason::RuntimeLimitExceeded,
        NOW,
    )
    .await;
    let b = run_and_fail(
        &stage,
        &stage.tasks(&does_not).await[0],
        &agent,
        TaskReason::RuntimeLimitExceeded,
        NOW,
    )
    .await;

    assert!(replacement_of(&stage, &asks, &a).await.is_some());
    assert!(replacement_of(&stage, &does_not, &b).await.is_none());
    assert_eq!(
        stage.get_job(&does_not.id).await.status.state,
        JobState::Finished
    );
}

#[tokio::test]
async fn a_killed_batch_task_is_not_retried() {
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", NOW).await;
    let job = stage.job(batch(json!({"immediate": {"retries": 3}}))).await;
    let task = stage.run(&stage.tasks(&job).await[0], &agent, NOW).await;

    let killing = titus_control::kill_task(&stage.ctx, &task.id, false, NOW + 10)
        .await
        .unwrap();
    let commands = stage.commands(&agent).await;
    stage
        .finish(&killing, TaskReason::Killed, 137, NOW + 20)
        .await;

    assert_eq!(kills(&commands), [(task.id.clone(), TaskReason::Killed)]);
    assert_eq!(stage.tasks(&job).await.len(), 1);
    assert_eq!(
        stage.task(&task.id).await.status.reason_code,
        Some(TaskReason::Killed)
    );
    assert_eq!(
        stage.get_job(&job.id).await.status.state,
        JobState::Finished
    );
}

fn service(desired: u32) -> serde_json::Value {
    json!({"service": {"capacity": {"min": 0, "desired": desired, "max": 10},
        "retryPolicy": {"exponentialBackOff": {"initialDelayMs": 1000, "maxDelayIntervalMs": 60000, "retries": 0}}}})
}

#[tokio::test]
async fn a_finished_service_task_is_replaced_after_the_back_off_even_with_retries_zero() {
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", NOW).await;
    let job = stage.job(service(2)).await;
    let first = stage.tasks(&job).await.remove(0);

    let failed = run_and_fail(&stage, &first, &agent, TaskReason::Failed, NOW + 100).await;
    let replacement = replacement_of(&stage, &job, &failed).await.unwrap();
    let failed_again = run_and_fail(
        &stage,
        &replacement,
        &agent,
        TaskReason::Normal,
        NOW + 2_000,
    )
    .await;
    let third = replacement_of(&stage, &job, &failed_again).await.unwrap();

    assert_eq!(replacement.not_before_ms, NOW + 100 + 1_000);
    assert_eq!(
        third.not_before_ms,
        NOW + 2_000 + 2_000,
        "a crash loop backs off"
    );
    assert_eq!(stage.live(&job).await.len(), 2);
    assert_eq!(
        stage.get_job(&job.id).await.status.state,
        JobState::Accepted
    );
}

#[tokio::test]
async fn scaling_a_service_up_adds_tasks_that_the_reconciler_leaves_alone() {
    let stage = fresh_stage().await;
    let job = stage.job(service(1)).await;

    titus_control::update_capacity(
        &stage.ctx,
        &job.id,
        CapacityUpdate {
            desired: Some(3),
            ..CapacityUpdate::default()
        },
        NOW + 10,
    )
    .await
    .unwrap();
    let summary = reconcile(&stage.ctx, NOW + 20).await.unwrap();

    assert_eq!(stage.live(&job).await.len(), 3);
    assert_eq!(
        (
            summary.service_tasks_added,
            summary.service_tasks_scaled_down
        ),
        (0, 0)
    );
    assert_eq!(summary.errors, 0);
}

#[tokio::test]
async fn scaling_a_service_down_kills_the_newest_tasks_which_are_not_replaced() {
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", NOW).await;
    let job = stage.job(service(1)).await;
    titus_control::update_capacity(
        &stage.ctx,
        &job.id,
        CapacityUpdate {
            desired: Some(3),
            ..CapacityUpdate::default()
        },
        NOW + 10,
    )
    .await
    .unwrap();
    for task in stage.tasks(&job).await {
        stage.run(&task, &agent, NOW + 20).await;
    }
    let oldest = stage.tasks(&job).await.remove(0);

    titus_control::update_capacity(
        &stage.ctx,
        &job.id,
        CapacityUpdate {
            desired: Some(1),
            ..CapacityUpdate::default()
        },
        NOW + 30,
    )
    .await
    .unwrap();
    let killed = kills(&stage.commands(&agent).await);
    for (task_id, _) in &killed {
        let task = stage.task(task_id).await;
        // The agent reports the container's end; the kill's reason stands.
        stage.finish(&task, TaskReason::Killed, 143, NOW + 40).await;
    }
    let summary = reconcile(&stage.ctx, NOW + 50).await.unwrap();

    assert_eq!(killed.len(), 2);
    assert!(killed
        .iter()
        .all(|(id, reason)| *reason == TaskReason::ScaledDown && *id != oldest.id));
    let live = stage.live(&job).await;
    assert_eq!(
        live.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
        [oldest.id]
    );
    assert_eq!(
        stage.tasks(&job).await.len(),
        3,
        "scaled-down tasks are not replaced"
    );
    for (task_id, _) in &killed {
        assert_eq!(
            stage.task(task_id).await.status.reason_code,
            Some(TaskReason::ScaledDown)
        );
    }
    assert_eq!(
        (
            summary.service_tasks_added,
            summary.service_tasks_scaled_down
        ),
        (0, 0)
    );
    assert_eq!(stage.get_agent("a1").await.task_count, 1);
}

#[tokio::test]
async fn a_task_killed_without_shrink_is_replaced() {
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", NOW).await;
    let job = stage.job(service(2)).await;
    let task = stage.run(&stage.tasks(&job).await[0], &agent, NOW).await;

    titus_control::kill_task(&stage.ctx, &task.id, false, NOW + 10)
        .await
        .unwrap();
    stage.finish(&task, TaskReason::Killed, 143, NOW + 20).await;

    let replacement = replacement_of(&stage, &job, &task).await.unwrap();
    assert_eq!(replacement.state(), TaskState::Accepted);
    assert_eq!(stage.live(&job).await.len(), 2);
    let desired = stage
        .get_job(&job.id)
        .await
        .job_descriptor
        .service
        .unwrap()
        .capacity
        .desired;
    assert_eq!(desired, 2);
}

#[tokio::test]
async fn a_task_killed_with_shrink_is_not_replaced_and_the_service_shrinks() {
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", NOW).await;
    let job = stage.job(service(2)).await;
    let task = stage.run(&stage.tasks(&job).await[0], &agent, NOW).await;

    titus_control::kill_task(&stage.ctx, &task.id, true, NOW + 10)
        .await
        .unwrap();
    stage.finish(&task, TaskReason::Killed, 143, NOW + 20).await;
    let summary = reconcile(&stage.ctx, NOW + 30).await.unwrap();

    assert!(replacement_of(&stage, &job, &task).await.is_none());
    assert_eq!(
        stage.task(&task.id).await.status.reason_code,
        Some(TaskReason::ScaledDown)
    );
    assert_eq!(stage.live(&job).await.len(), 1);
    let desired = stage
        .get_job(&job.id)
        .await
        .job_descriptor
        .service
        .unwrap()
        .capacity
        .desired;
    assert_eq!(desired, 1);
    assert_eq!(summary.service_tasks_added, 0);
}

#[tokio::test]
async fn a_disabled_service_keeps_its_tasks_but_replaces_none_and_ignores_capacity() {
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", NOW).await;
    let job = stage.job(service(2)).await;
    let tasks = stage.tasks(&job).await;
    let running = stage.run(&tasks[0], &agent, NOW).await;
    titus_control::set_enabled(&stage.ctx, &job.id, false, NOW + 5)
        .await
        .unwrap();

    stage
        .finish(&running, TaskReason::Failed, 1, NOW + 10)
        .await;
    titus_control::update_capacity(
        &stage.ctx,
        &job.id,
        CapacityUpdate {
            desired: Some(5),
            ..CapacityUpdate::default()
        },
        NOW + 20,
    )
    .await
    .unwrap();
    let summary = reconcile(&stage.ctx, NOW + 30).await.unwrap();

    assert!(replacement_of(&stage, &job, &running).await.is_none());
    assert_eq!(stage.live(&job).await.len(), 1, "the other task is kept");
    assert_eq!(summary.service_tasks_added, 0);
}

#[tokio::test]
async fn a_killed_job_finishes_when_its_last_task_does_and_nothing_is_replaced() {
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", NOW).await;
    let job = stage
        .job(json!({"batch": {"size": 2, "retryPolicy": {"immediate": {"retries": 3}}}}))
        .await;
    let tasks = stage.tasks(&job).await;
    let running = stage.run(&tasks[0], &agent, NOW).await;
    // tasks[1] is still waiting for placement.

    let killing = titus_control::kill_job(&stage.ctx, &job.id, NOW + 10)
        .await
        .unwrap();
    let commands = stage.commands(&agent).await;
    let while_killing = stage.get_job(&job.id).await;
    let outcome = stage
        .finish(&running, TaskReason::Failed, 143, NOW + 20)
        .await;

    assert_eq!(killing.status.state, JobState::KillInitiated);
    assert_eq!(kills(&commands), [(running.id.clone(), TaskReason::Killed)]);
    assert_eq!(while_killing.status.state, JobState::KillInitiated);
    assert!(matches!(
        outcome,
        Outcome::Applied {
            to: TaskState::Finished,
            ..
        }
    ));
    assert_eq!(stage.tasks(&job).await.len(), 2, "nothing replaced");
    let job = stage.get_job(&job.id).await;
    assert_eq!(job.status.state, JobState::Finished);
    assert_eq!(job.status.reason_code, "killed");
    assert_eq!(stage.get_agent("a1").await.task_count, 0);
}

#[tokio::test]
async fn a_killed_service_finishes_when_its_tasks_do() {
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", NOW).await;
    let job = stage.job(service(2)).await;
    let mut running = Vec::new();
    for task in stage.tasks(&job).await {
        running.push(stage.run(&task, &agent, NOW).await);
    }

    titus_control::kill_job(&stage.ctx, &job.id, NOW + 10)
        .await
        .unwrap();
    stage
        .finish(&running[0], TaskReason::Killed, 143, NOW + 20)
        .await;
    let after_one = stage.get_job(&job.id).await.status.state;
    stage
        .finish(&running[1], TaskReason::Killed, 143, NOW + 30)
        .await;

    assert_eq!(after_one, JobState::KillInitiated);
    assert_eq!(stage.tasks(&job).await.len(), 2);
    assert_eq!(stage.get_job(&job.id).await.status.reason_code, "killed");
}

#[tokio::test]
async fn a_job_s_history_shows_each_task_its_replacements_states_reasons_and_exit_codes() {
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", NOW).await;
    let job = stage.job(batch(json!({"immediate": {"retries": 1}}))).await;
    let first = stage.tasks(&job).await.remove(0);
    let placed = stage.place(&first, &agent, NOW + 10).await;
    stage
        .report(&placed, TaskState::StartInitiated, NOW + 20)
        .await;
    stage.report(&placed, TaskState::Started, NOW + 30).await;
    stage.finish(&placed, TaskReason::Failed, 2, NOW + 40).await;
    let retry = replacement_of(&stage, &job, &placed).await.unwrap();
    let retried = stage.run(&retry, &agent, NOW + 50).await;
    stage
        .finish(&retried, TaskReason::Normal, 0, NOW + 60)
        .await;

    let history = stage.tasks(&job).await;

    assert_eq!(history.len(), 2);
    let (a, b) = (&history[0], &history[1]);
    let states = |t: &Task| {
        t.status_history
            .iter()
            .chain(std::iter::once(&t.status))
            .map(|s| (s.state, s.timestamp_ms))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        states(a),
        [
            (TaskState::Accepted, NOW),
            (TaskState::Launched, NOW + 10),
            (TaskState::StartInitiated, NOW + 20),
            (TaskState::Started, NOW + 30),
            (TaskState::Finished, NOW + 40)
        ]
    );
    assert_eq!(
        (a.status.reason_code, a.exit_code),
        (Some(TaskReason::Failed), Some(2))
    );
    assert_eq!(b.resubmit_of.as_ref(), Some(&a.id));
    assert_eq!(b.original_id, a.id);
    assert_eq!(b.status.reason_message, "exited with 0");
    assert_eq!(
        (b.status.reason_code, b.exit_code),
        (Some(TaskReason::Normal), Some(0))
    );
    assert_eq!(states(b).len(), 4);
    let job = stage.get_job(&job.id).await;
    assert_eq!(job.status.reason_code, "normal");
    assert_eq!(
        job.status_history.last().map(|s| s.state),
        Some(JobState::Accepted)
    );
}
