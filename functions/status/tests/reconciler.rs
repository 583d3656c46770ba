//! The reconciler against the emulator: lost agents, stuck tasks (Titus' timeouts, shortened),
//! runtime limits, a dispatch the agent never acknowledges (with the real scheduler tick), and the
//! sweep converging services, kills and batch jobs after a crash between writes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::json;
use support::{fresh_stage, kills, Stage, NOW};
use titus_control::reconciler::{reconcile, MATERIALIZE_AFTER_MS};
use titus_control::scheduler::{self, TickInput};
use titus_control::{ControlPlane, SchedulerSettings, Settings};
use titus_core::ports::AllocationStore;
use titus_core::{
    AgentState, AgentStore, Job, JobState, JobStore, Resources, Task, TaskReason, TaskState,
};

fn service(desired: u32) -> serde_json::Value {
    json!({"service": {"capacity": {"min": 0, "desired": desired, "max": 10},
        "retryPolicy": {"immediate": {"retries": 0}}}})
}

fn replacement_of<'a>(tasks: &'a [Task], task: &Task) -> Option<&'a Task> {
    tasks
        .iter()
        .find(|t| t.resubmit_of.as_ref() == Some(&task.id))
}

/// Finishes a task the way the status function's first write does, without its follow-ups: the
/// state a crash between the two writes leaves behind.
async fn finish_without_follow_up(stage: &Stage, task: &Task, reason: TaskReason, at: u64) {
    let mut finished = task.clone();
    finished
        .transition(
            TaskState::Finished,
            Some(reason),
            "crashed before the follow-up",
            at,
        )
        .unwrap();
    titus_aws::DynamoAllocationStore::new(stage.clients.dynamodb.clone(), &stage.names)
        .finish_and_release(
            &finished,
            task.version,
            task.agent_id.as_deref().unwrap(),
            Resources::of_container(&task.resources),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_silent_agent_is_lost_and_its_tasks_finish_lost_are_replaced_and_release_their_resources()
{
    // Stuck timeouts longer than the heartbeat's, so that only the agent's silence counts here.
    let stage = support::fresh_stage_with(|c| {
        c.launched_timeout_ms = 3_600_000;
        c.kill_initiated_timeout_ms = 3_600_000;
    })
    .await;
    let silent = stage.agent("silent", NOW).await;
    let healthy = stage.agent("healthy", NOW).await;
    let batch = stage
        .job(json!({"batch": {"size": 2, "retryPolicy": {"immediate": {"retries": 0}}}}))
        .await;
    let tasks = stage.tasks(&batch).await;
    let on_silent = stage.run(&tasks[0], &silent, NOW).await;
    let launched_on_silent = stage.place(&tasks[1], &silent, NOW).await;
    let svc = stage.job(service(1)).await;
    let service_task = stage.run(&stage.tasks(&svc).await[0], &healthy, NOW).await;
    stage
        .agents
        .heartbeat("healthy", NOW + 40_000)
        .await
        .unwrap();

    let early = reconcile(&stage.ctx, NOW + 30_000).await.unwrap();
    let summary = reconcile(&stage.ctx, NOW + 40_000).await.unwrap();
    let again = reconcile(&stage.ctx, NOW + 41_000).await.unwrap();

    assert_eq!(early.agents_lost, 0);
    assert_eq!((summary.agents_lost, summary.lost_tasks_finished), (1, 2));
    assert_eq!(
        summary.replacements, 2,
        "lost is a system error: retried despite retries 0"
    );
    assert_eq!((again.agents_lost, again.lost_tasks_finished), (0, 0));
    let lost_agent = stage.get_agent("silent").await;
    assert_eq!(lost_agent.state, AgentState::Lost);
    assert_eq!(
        (lost_agent.task_count, lost_agent.allocated),
        (0, Resources::ZERO)
    );
    let all = stage.tasks(&batch).await;
    for task in [&on_silent, &launched_on_silent] {
        let stored = stage.task(&task.id).await;
        assert_eq!(stored.state(), TaskState::Finished);
        assert_eq!(stored.status.reason_code, Some(TaskReason::Lost));
        let replacement = replacement_of(&all, task).unwrap();
        assert_eq!(
            (replacement.state(), replacement.system_resubmit_number),
            (TaskState::Accepted, 1)
        );
    }
    let told = kills(&stage.commands(&silent).await);
    assert!(
        told.contains(&(on_silent.id.clone(), TaskReason::Lost)),
        "{told:?}"
    );
    assert_eq!(
        stage.task(&service_task.id).await.state(),
        TaskState::Started
    );
    assert_eq!(stage.get_agent("healthy").await.state, AgentState::Active);
}

#[tokio::test]
async fn a_dispatch_never_acknowledged_is_sent_again_then_finished_stuck_and_replaced() {
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", titus_core::ports::now_ms()).await;
    let job = stage
        .job(json!({"batch": {"size": 1, "retryPolicy": {"immediate": {"retries": 0}}}}))
        .await;
    let scheduler = ControlPlane::new(
        titus_aws::aws_ports(&stage.clients, &stage.names),
        Settings {
            rules: stage.ctx.settings.rules.clone(),
            scheduler: SchedulerSettings {
                ack_timeout_ms: 0,
                ..SchedulerSettings::default()
            },
            ..Settings::default()
        },
    );
    let tick = |i| TickInput {
        owner: "loop-1".to_owned(),
        started_at_ms: Some(titus_core::ports::now_ms()),
        iteration: i,
    };

    let first = scheduler::tick(&scheduler, tick(0)).await.unwrap();
    let sent = stage.commands(&agent).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    // A later tick of the run that looks for unacknowledged placements (every few ticks do).
    let second = scheduler::tick(&scheduler, tick(scheduler::REDISPATCH_EVERY_TICKS))
        .await
        .unwrap();
    let resent = stage.commands(&agent).await;
    let launched = stage.tasks(&job).await.remove(0);
    let too_soon = reconcile(&stage.ctx, launched.status.timestamp_ms + 999)
        .await
        .unwrap();
    let summary = reconcile(&stage.ctx, launched.status.timestamp_ms + 1_000)
        .await
        .unwrap();

    assert_eq!((first.placed, second.redispatched), (1, 1));
    assert_eq!(
        (sent.len(), resent.len()),
        (1, 1),
        "the unacknowledged launch is sent again"
    );
    assert_eq!(launched.state(), TaskState::Launched);
    assert_eq!(too_soon.stuck_tasks_finished, 0);
    assert_eq!((summary.stuck_tasks_finished, summary.replacements), (1, 1));
    let tasks = stage.tasks(&job).await;
    assert_eq!(tasks[0].status.reason_code, Some(TaskReason::StuckInState));
    assert_eq!(
        replacement_of(&tasks, &tasks[0]).unwrap().state(),
        TaskState::Accepted
    );
    assert_eq!(stage.get_agent("a1").await.task_count, 0);
}

#[tokio::test]
async fn start_initiated_is_stuck_sooner_for_a_service_than_for_a_batch_task() {
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", NOW).await;
    let batch = stage.job(json!({"batch": {"size": 1}})).await;
    let svc = stage.job(service(1)).await;
    let batch_task = stage
        .place(&stage.tasks(&batch).await[0], &agent, NOW)
        .await;
    let service_task = stage.place(&stage.tasks(&svc).await[0], &agent, NOW).await;
    stage
        .report(&batch_task, TaskState::StartInitiated, NOW)
        .await;
    stage
        .report(&service_task, TaskState::StartInitiated, NOW)
        .await;
    stage.agents.heartbeat("a1", NOW + 3_000).await.unwrap();

    let at_service_timeout = reconcile(&stage.ctx, NOW + 2_000).await.unwrap();
    let service_state = stage.task(&service_task.id).await;
    let batch_state_then = stage.task(&batch_task.id).await.state();
    let at_batch_timeout = reconcile(&stage.ctx, NOW + 3_000).await.unwrap();

    assert_eq!(at_service_timeout.stuck_tasks_finished, 1);
    assert_eq!(
        service_state.status.reason_code,
        Some(TaskReason::StuckInState)
    );
    assert_eq!(batch_state_then, TaskState::StartInitiated);
    assert_eq!(at_batch_timeout.stuck_tasks_finished, 1);
    let batch_now = stage.task(&batch_task.id).await;
    assert_eq!(batch_now.status.reason_code, Some(TaskReason::StuckInState));
    assert!(replacement_of(&stage.tasks(&svc).await, &service_task).is_some());
}

#[tokio::test]
async fn a_kill_without_an_answer_is_sent_once_more_then_the_task_finishes_stuck_in_killing_state()
{
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", NOW).await;
    let job = stage.job(json!({"batch": {"size": 1}})).await;
    let task = stage.run(&stage.tasks(&job).await[0], &agent, NOW).await;
    titus_control::kill_task(&stage.ctx, &task.id, false, NOW + 10)
        .await
        .unwrap();
    let first_kill = kills(&stage.commands(&agent).await);
    stage.agents.heartbeat("a1", NOW + 10_000).await.unwrap();

    let before = reconcile(&stage.ctx, NOW + 4_009).await.unwrap();
    let resend = reconcile(&stage.ctx, NOW + 4_010).await.unwrap();
    let resent_kill = kills(&stage.commands(&agent).await);
    let waiting = reconcile(&stage.ctx, NOW + 8_009).await.unwrap();
    let finish = reconcile(&stage.ctx, NOW + 8_010).await.unwrap();

    assert_eq!(first_kill, [(task.id.clone(), TaskReason::Killed)]);
    assert_eq!((before.kills_resent, before.stuck_tasks_finished), (0, 0));
    assert_eq!((resend.kills_resent, resend.stuck_tasks_finished), (1, 0));
    assert_eq!(resent_kill, [(task.id.clone(), TaskReason::Killed)]);
    assert_eq!((waiting.kills_resent, waiting.stuck_tasks_finished), (0, 0));
    assert_eq!((finish.kills_resent, finish.stuck_tasks_finished), (0, 1));
    let stored = stage.task(&task.id).await;
    assert_eq!(
        stored.status.reason_code,
        Some(TaskReason::StuckInKillingState)
    );
    let kill_attempts: Vec<u64> = stored
        .status_history
        .iter()
        .filter(|s| s.state == TaskState::KillInitiated)
        .map(|s| s.timestamp_ms)
        .collect();
    assert_eq!(
        kill_attempts,
        [NOW + 10, NOW + 4_010],
        "both kills are in the history"
    );
    assert_eq!(stage.get_agent("a1").await.task_count, 0);
    assert_eq!(
        stage.get_job(&job.id).await.status.state,
        JobState::Finished
    );
}

#[tokio::test]
async fn a_batch_task_past_its_runtime_limit_is_killed_and_not_retried() {
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", NOW).await;
    let job = stage
        .job(json!({"batch": {"size": 1, "runtimeLimitSec": 60, "retryPolicy": {"immediate": {"retries": 3}}},
            "container": {"image": {"name": "busybox"}, "killGracePeriodSec": 10}}))
        .await;
    let task = stage.run(&stage.tasks(&job).await[0], &agent, NOW).await;
    stage.agents.heartbeat("a1", NOW + 70_000).await.unwrap();

    let within = reconcile(&stage.ctx, NOW + 69_999).await.unwrap();
    let past = reconcile(&stage.ctx, NOW + 70_000).await.unwrap();
    let sent = kills(&stage.commands(&agent).await);
    stage
        .finish(&task, TaskReason::Killed, 137, NOW + 71_000)
        .await;

    assert_eq!(within.runtime_limit_kills, 0);
    assert_eq!(past.runtime_limit_kills, 1);
    assert_eq!(sent, [(task.id.clone(), TaskReason::RuntimeLimitExceeded)]);
    let stored = stage.task(&task.id).await;
    assert_eq!(
        stored.status.reason_code,
        Some(TaskReason::RuntimeLimitExceeded)
    );
    assert_eq!(
        stage.tasks(&job).await.len(),
        1,
        "retryOnRuntimeLimit is off"
    );
    assert_eq!(
        stage.get_job(&job.id).await.status.state,
        JobState::Finished
    );
}

#[tokio::test]
async fn a_service_left_short_by_a_crash_gets_the_replacement_it_was_owed() {
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", NOW).await;
    let job = stage.job(service(2)).await;
    let tasks = stage.tasks(&job).await;
    let crashed = stage.run(&tasks[0], &agent, NOW).await;
    stage.run(&tasks[1], &agent, NOW).await;
    finish_without_follow_up(&stage, &crashed, TaskReason::Failed, NOW + 10).await;

    let summary = reconcile(&stage.ctx, NOW + 20).await.unwrap();
    let again = reconcile(&stage.ctx, NOW + 30).await.unwrap();

    assert_eq!(summary.service_tasks_added, 1);
    assert_eq!(again.service_tasks_added, 0);
    let all = stage.tasks(&job).await;
    assert!(
        replacement_of(&all, &crashed).is_some(),
        "the same id the status path would make"
    );
    assert_eq!(stage.live(&job).await.len(), 2);
}

#[tokio::test]
async fn a_service_with_no_task_to_replace_gets_new_slots() {
    let stage = fresh_stage().await;
    let job = stage.job(service(3)).await;
    // Only one of its initial tasks was written: a crash part-way through a capacity change.
    let tasks = stage.tasks(&job).await;
    for task in &tasks[1..] {
        let mut gone = task.clone();
        gone.transition(
            TaskState::Finished,
            Some(TaskReason::ScaledDown),
            "scaled down",
            NOW,
        )
        .unwrap();
        stage.store.update_task(&gone, task.version).await.unwrap();
    }

    let summary = reconcile(&stage.ctx, NOW + 10).await.unwrap();

    assert_eq!(summary.service_tasks_added, 2);
    let live = stage.live(&job).await;
    assert_eq!(live.len(), 3);
    let mut indexes: Vec<u32> = live.iter().map(|t| t.index).collect();
    indexes.sort();
    assert_eq!(indexes, [0, 3, 4], "new slots after the highest used");
}

#[tokio::test]
async fn a_service_above_its_capacity_loses_its_newest_tasks_as_scaled_down() {
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", NOW).await;
    let job = stage.job(service(2)).await;
    for task in stage.tasks(&job).await {
        stage.run(&task, &agent, NOW).await;
    }
    // A replacement made twice over by a race: one task too many.
    let extra = Task::initial(&job, 7, NOW + 100);
    stage.store.insert_task(&extra).await.unwrap();
    let extra = stage.run(&extra, &agent, NOW + 100).await;

    let summary = reconcile(&stage.ctx, NOW + 200).await.unwrap();
    let sent = kills(&stage.commands(&agent).await);
    stage
        .finish(&extra, TaskReason::Killed, 143, NOW + 300)
        .await;
    let after = reconcile(&stage.ctx, NOW + 400).await.unwrap();

    assert_eq!(summary.service_tasks_scaled_down, 1);
    assert_eq!(sent, [(extra.id.clone(), TaskReason::ScaledDown)]);
    assert_eq!(
        stage.task(&extra.id).await.status.reason_code,
        Some(TaskReason::ScaledDown)
    );
    assert_eq!(
        (after.service_tasks_added, after.service_tasks_scaled_down),
        (0, 0)
    );
    assert_eq!(stage.live(&job).await.len(), 2);
}

#[tokio::test]
async fn a_job_being_killed_has_its_leftover_tasks_killed_and_then_finishes() {
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", NOW).await;
    let job = stage.job(json!({"batch": {"size": 2}})).await;
    let tasks = stage.tasks(&job).await;
    // Killed while the scheduler placed one task and another waited: the kill saw neither.
    let mut killing: Job = stage.get_job(&job.id).await;
    let version = killing.version;
    killing
        .transition(JobState::KillInitiated, "killed", "job kill requested", NOW)
        .unwrap();
    stage.store.update_job(&killing, version).await.unwrap();
    let placed = stage.place(&tasks[0], &agent, NOW + 10).await;

    let first = reconcile(&stage.ctx, NOW + 20).await.unwrap();
    let sent = kills(&stage.commands(&agent).await);
    stage
        .finish(&placed, TaskReason::Killed, 137, NOW + 30)
        .await;

    assert_eq!(first.killed_job_tasks, 2);
    assert_eq!(sent, [(placed.id.clone(), TaskReason::Killed)]);
    assert_eq!(
        stage.task(&tasks[1].id).await.status.reason_code,
        Some(TaskReason::Killed)
    );
    let job = stage.get_job(&job.id).await;
    assert_eq!(
        (job.status.state, job.status.reason_code.as_str()),
        (JobState::Finished, "killed")
    );
}

#[tokio::test]
async fn a_batch_job_whose_last_retry_was_lost_in_a_crash_is_retried_not_finished() {
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", NOW).await;
    let job = stage
        .job(json!({"batch": {"size": 1, "retryPolicy": {"immediate": {"retries": 1}}}}))
        .await;
    let task = stage.run(&stage.tasks(&job).await[0], &agent, NOW).await;
    finish_without_follow_up(&stage, &task, TaskReason::Failed, NOW + 10).await;

    let summary = reconcile(&stage.ctx, NOW + 20).await.unwrap();

    assert_eq!(summary.jobs_finished, 0);
    let all = stage.tasks(&job).await;
    assert_eq!(
        replacement_of(&all, &task).unwrap().state(),
        TaskState::Accepted
    );
    assert_eq!(
        stage.get_job(&job.id).await.status.state,
        JobState::Accepted
    );
}

#[tokio::test]
async fn a_batch_job_whose_finish_was_lost_in_a_crash_is_finished_by_the_sweep() {
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", NOW).await;
    let job = stage.job(json!({"batch": {"size": 1}})).await;
    let task = stage.run(&stage.tasks(&job).await[0], &agent, NOW).await;
    finish_without_follow_up(&stage, &task, TaskReason::Normal, NOW + 10).await;

    let summary = reconcile(&stage.ctx, NOW + 20).await.unwrap();

    assert_eq!(summary.jobs_finished, 1);
    let job = stage.get_job(&job.id).await;
    assert_eq!(
        (job.status.state, job.status.reason_code.as_str()),
        (JobState::Finished, "normal")
    );
}

#[tokio::test]
async fn a_batch_job_whose_tasks_are_not_written_yet_is_not_finished_by_the_sweep() {
    let stage = fresh_stage().await;
    let job = stage
        .job_awaiting_tasks(json!({"batch": {"size": 2}}))
        .await;

    let summary = reconcile(&stage.ctx, NOW + 20).await.unwrap();

    assert_eq!(summary.jobs_swept, 1);
    assert_eq!(summary.jobs_finished, 0);
    assert_eq!(
        summary.tasks_materialized, 0,
        "a job this young is the scheduler's to complete"
    );
    assert_eq!(
        stage.get_job(&job.id).await.status.state,
        JobState::Accepted
    );
    assert!(stage.tasks(&job).await.is_empty());
}

#[tokio::test]
async fn a_job_the_scheduler_left_awaiting_its_tasks_gets_them_from_the_reconciler() {
    let stage = fresh_stage().await;
    let job = stage
        .job_awaiting_tasks(json!({"batch": {"size": 2}}))
        .await;

    let summary = reconcile(&stage.ctx, NOW + MATERIALIZE_AFTER_MS + 1)
        .await
        .unwrap();

    assert_eq!(summary.tasks_materialized, 2);
    assert_eq!(summary.jobs_finished, 0);
    let tasks = stage.tasks(&job).await;
    assert_eq!(tasks.len(), 2);
    assert!(tasks.iter().all(|t| t.state() == TaskState::Accepted));
    let again = reconcile(&stage.ctx, NOW + MATERIALIZE_AFTER_MS + 2)
        .await
        .unwrap();
    assert_eq!(again.tasks_materialized, 0);
}

#[tokio::test]
async fn the_sweep_goes_through_active_jobs_a_page_per_run() {
    let stage = support::fresh_stage_with(|c| c.sweep_jobs_per_run = 2).await;
    for _ in 0..3 {
        stage.job(json!({"batch": {"size": 1}})).await;
    }

    let first = reconcile(&stage.ctx, NOW).await.unwrap();
    let second = reconcile(&stage.ctx, NOW).await.unwrap();
    let third = reconcile(&stage.ctx, NOW).await.unwrap();

    assert_eq!((first.jobs_swept, first.sweep_wrapped), (2, false));
    assert_eq!((second.jobs_swept, second.sweep_wrapped), (1, true));
    assert_eq!((third.jobs_swept, third.sweep_wrapped), (2, false));
}
