//! The reconciler: repairs what status messages alone cannot. One run, called by the local stack
//! on every loop or by the scheduled reconciler Lambda:
//!
//! 1. Lost agents: an Active or Draining agent whose heartbeat is older than
//!    `agent_heartbeat_timeout_ms` becomes Lost; its tasks (the `byAgent` index) are Finished as
//!    `lost`, giving back their resources, and replaced per policy (lost is a system error). The
//!    agent also gets a `KillTask` for each, in case it is only cut off and polls again.
//! 2. Stuck tasks: tasks longer than Titus' timeouts in Launched or StartInitiated are Finished as
//!    `stuckInState` and replaced per policy; in KillInitiated, the kill is sent again once, and
//!    after a second timeout the task is Finished as `stuckInKillingState`. Candidates come from
//!    the sparse `transitional` index, so running tasks are never read.
//! 3. A sweep of active jobs, a page per run, continuing where the last run stopped: batch tasks
//!    past their runtime limit are killed (`runtimeLimitExceeded`; the agent enforces the limit,
//!    this is the backstop); a service whose live task count differs from its desired capacity
//!    (after a crash between writes) gets the replacements it is owed and new slots, or loses its
//!    newest tasks as `scaledDown`; a job being killed gets its leftover tasks killed and is
//!    Finished once they are; a batch job with nothing left is Finished (never one with a slot
//!    that has no task yet).
//! 4. Jobs still awaiting their initial tasks `MATERIALIZE_AFTER_MS` after they were created (the
//!    scheduler writes them on its next tick, so these are left by a scheduler that crashed or is
//!    not running) get them written here.
//!
//! Delayed retries need no step: a replacement is stored with its `notBeforeMs`, and the pending
//! index hands it to the scheduler once that time has come. A dispatch lost between the scheduler
//! and an agent is sent again by the scheduler's tick (`list_unacknowledged_tasks`); if the agent
//! never acknowledges, step 2 finishes the task as stuck and replaces it.
//!
//! Every write is conditional on the version read; a task that changed meanwhile is left to the
//! next run. One failing item is counted and logged, and the run goes on.

use std::collections::HashMap;

/// How long after its creation a job still awaiting its initial tasks is given them by the
/// reconciler. The scheduler's tick writes them within about a second; this is the backstop.
pub const MATERIALIZE_AFTER_MS: u64 = 60_000;

use serde::{Deserialize, Serialize};
use titus_core::lease::AllocationStore;
use titus_core::messages::{AgentCommand, CommandQueue, KillTask};
use titus_core::store::{JobFilter, PageRequest};
use titus_core::{
    Agent, AgentState, AgentStore, Job, JobId, JobState, JobStore, JobType, StoreError, Task,
    TaskReason, TaskState, TaskStatus,
};
use tracing::{error, info, warn};

use crate::dead_letter::DeadLetterSink;
use crate::decide::{self, Replacement, Stuck};
use crate::error::StatusError;
use crate::lifecycle::{AfterFinished, StatusContext};

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileSummary {
    /// Agents declared lost by this run.
    pub agents_lost: u32,
    /// Tasks of lost agents finished as `lost`.
    pub lost_tasks_finished: u32,
    /// Tasks finished as `stuckInState` or `stuckInKillingState`.
    pub stuck_tasks_finished: u32,
    /// Kills sent again after the first KillInitiated timeout.
    pub kills_resent: u32,
    /// Batch tasks killed for running past their runtime limit.
    pub runtime_limit_kills: u32,
    /// Replacement tasks created.
    pub replacements: u32,
    /// Jobs moved to Finished.
    pub jobs_finished: u32,
    /// Active jobs the sweep looked at.
    pub jobs_swept: u32,
    /// Whether the sweep reached the last active job (the next run starts again from the first).
    pub sweep_wrapped: bool,
    /// Tasks added to services below their desired capacity.
    pub service_tasks_added: u32,
    /// Tasks of services above their desired capacity killed as `scaledDown`.
    pub service_tasks_scaled_down: u32,
    /// Leftover tasks of jobs being killed, killed by the sweep.
    pub killed_job_tasks: u32,
    /// Initial tasks written for jobs the scheduler left awaiting them.
    #[serde(default)]
    pub tasks_materialized: u32,
    /// Items that failed; each is logged, and the next run tries again.
    pub errors: u32,
}

/// One reconciler run at `now_ms`. Fails only when none of its steps could start (the agents
/// could not even be listed, say); a failing item is counted in `errors`.
pub async fn reconcile<J, A, C, Q, D>(
    ctx: &StatusContext<J, A, C, Q, D>,
    now_ms: u64,
) -> Result<ReconcileSummary, StatusError>
where
    J: JobStore,
    A: AgentStore,
    C: AllocationStore,
    Q: CommandQueue,
    D: DeadLetterSink,
{
    let mut summary = ReconcileSummary::default();
    let mut failures = Vec::new();
    if let Err(e) = lost_agents(ctx, now_ms, &mut summary).await {
        failures.push(("lost agents", e));
    }
    if let Err(e) = stuck_tasks(ctx, now_ms, &mut summary).await {
        failures.push(("stuck tasks", e));
    }
    if let Err(e) = sweep(ctx, now_ms, &mut summary).await {
        failures.push(("job sweep", e));
    }
    match ctx
        .jobs
        .materialize_jobs(
            ctx.config.max_tasks_per_run,
            now_ms.saturating_sub(MATERIALIZE_AFTER_MS),
        )
        .await
    {
        Ok(tasks) => summary.tasks_materialized = tasks.len() as u32,
        Err(e) => failures.push(("jobs awaiting their tasks", e.into())),
    }
    let steps_failed = failures.len();
    for (step, e) in failures {
        summary.errors += 1;
        log_failure(step, &e);
        if steps_failed == 4 {
            return Err(e);
        }
    }
    info!(
        agents_lost = summary.agents_lost,
        lost_tasks_finished = summary.lost_tasks_finished,
        stuck_tasks_finished = summary.stuck_tasks_finished,
        kills_resent = summary.kills_resent,
        runtime_limit_kills = summary.runtime_limit_kills,
        replacements = summary.replacements,
        jobs_finished = summary.jobs_finished,
        jobs_swept = summary.jobs_swept,
        service_tasks_added = summary.service_tasks_added,
        service_tasks_scaled_down = summary.service_tasks_scaled_down,
        killed_job_tasks = summary.killed_job_tasks,
        tasks_materialized = summary.tasks_materialized,
        errors = summary.errors,
        "reconciled"
    );
    Ok(summary)
}

fn log_failure(what: &str, e: &StatusError) {
    if e.is_transient() {
        warn!(step = what, error = %e, "reconciler step failed; the next run repeats it");
    } else {
        error!(step = what, error = %e, error_type = e.error_type(), "reconciler step failed; the next run repeats it");
    }
}

/// Counts an item's failure and goes on.
fn note(summary: &mut ReconcileSummary, what: &str, result: Result<(), StatusError>) {
    if let Err(e) = result {
        summary.errors += 1;
        log_failure(what, &e);
    }
}

/// Replacement or job end after a task finished, counted.
async fn follow_up<J, A, C, Q, D>(
    ctx: &StatusContext<J, A, C, Q, D>,
    task: &Task,
    now_ms: u64,
    summary: &mut ReconcileSummary,
) -> Result<(), StatusError>
where
    J: JobStore,
    A: AgentStore,
    C: AllocationStore,
    Q: CommandQueue,
    D: DeadLetterSink,
{
    match ctx.after_finished(task, now_ms).await? {
        AfterFinished::Replaced { created: true, .. } => summary.replacements += 1,
        AfterFinished::NotReplaced {
            job_finished: true, ..
        } => summary.jobs_finished += 1,
        _ => {}
    }
    Ok(())
}

async fn lost_agents<J, A, C, Q, D>(
    ctx: &StatusContext<J, A, C, Q, D>,
    now_ms: u64,
    summary: &mut ReconcileSummary,
) -> Result<(), StatusError>
where
    J: JobStore,
    A: AgentStore,
    C: AllocationStore,
    Q: CommandQueue,
    D: DeadLetterSink,
{
    let timeout_ms = ctx.config.agent_heartbeat_timeout_ms;
    for agent in ctx.agents.list_agents().await? {
        let silent_ms = now_ms.saturating_sub(agent.heartbeat_at_ms);
        match agent.state {
            AgentState::Active | AgentState::Draining if silent_ms > timeout_ms => {
                match ctx
                    .agents
                    .set_agent_state(&agent.id, agent.state, AgentState::Lost)
                    .await
                {
                    Ok(()) => {
                        warn!(agent_id = %agent.id, silent_ms, was = %agent.state, "agent lost: no heartbeat");
                        summary.agents_lost += 1;
                    }
                    // It changed state meanwhile (drained, re-registered); the next run decides.
                    Err(e) if e.is_conflict() => continue,
                    Err(e) => {
                        note(summary, "marking an agent lost", Err(e.into()));
                        continue;
                    }
                }
            }
            // A lost agent's tasks are finished below; one whose tasks are all finished is done.
            AgentState::Lost if agent.task_count > 0 => {}
            _ => continue,
        }
        let result = finish_lost_agent_tasks(ctx, &agent, silent_ms, now_ms, summary).await;
        note(summary, "finishing a lost agent's tasks", result);
    }
    Ok(())
}

async fn finish_lost_agent_tasks<J, A, C, Q, D>(
    ctx: &StatusContext<J, A, C, Q, D>,
    agent: &Agent,
    silent_ms: u64,
    now_ms: u64,
    summary: &mut ReconcileSummary,
) -> Result<(), StatusError>
where
    J: JobStore,
    A: AgentStore,
    C: AllocationStore,
    Q: CommandQueue,
    D: DeadLetterSink,
{
    let message = format!(
        "agent {} lost: no heartbeat for {} s",
        agent.id,
        silent_ms / 1_000
    );
    let mut kills = Vec::new();
    for task in ctx.jobs.list_agent_tasks(&agent.id).await? {
        match ctx
            .finish_task(&task, TaskReason::Lost, &message, now_ms)
            .await
        {
            Ok(Some(finished)) => {
                summary.lost_tasks_finished += 1;
                kills.push(AgentCommand::KillTask(KillTask {
                    task_id: task.id.clone(),
                    reason: TaskReason::Lost,
                    grace_period_sec: 0,
                }));
                let result = follow_up(ctx, &finished, now_ms, summary).await;
                note(summary, "replacing a lost task", result);
            }
            Ok(None) => {}
            Err(e) => note(summary, "finishing a lost task", Err(e.into())),
        }
    }
    if !kills.is_empty() {
        // Best effort: an agent that was only cut off stops these containers when it polls again.
        if let Err(e) = ctx.commands.send_commands(&agent.queue_url, &kills).await {
            info!(agent_id = %agent.id, error = %e, "kills for a lost agent's tasks not sent");
        }
    }
    Ok(())
}

async fn stuck_tasks<J, A, C, Q, D>(
    ctx: &StatusContext<J, A, C, Q, D>,
    now_ms: u64,
    summary: &mut ReconcileSummary,
) -> Result<(), StatusError>
where
    J: JobStore,
    A: AgentStore,
    C: AllocationStore,
    Q: CommandQueue,
    D: DeadLetterSink,
{
    let config = &ctx.config;
    let changed_before_ms = now_ms.saturating_sub(config.shortest_stuck_timeout_ms());
    let candidates = ctx
        .jobs
        .list_transitional_tasks(config.max_tasks_per_run, changed_before_ms)
        .await?;
    let mut jobs: HashMap<JobId, Option<Job>> = HashMap::new();
    for task in candidates {
        let job = match jobs.get(&task.job_id) {
            Some(job) => job.clone(),
            None => {
                let job = match ctx.jobs.get_job(&task.job_id).await {
                    Ok(job) => job,
                    Err(e) => {
                        note(summary, "reading a stuck task's job", Err(e.into()));
                        continue;
                    }
                };
                jobs.insert(task.job_id.clone(), job.clone());
                job
            }
        };
        let Some(job) = job else {
            warn!(task_id = %task.id, job_id = %task.job_id, "stuck task's job does not exist");
            continue;
        };
        let in_state_secs = now_ms.saturating_sub(task.status.timestamp_ms) / 1_000;
        let result = match decide::stuck(&task, job.job_type(), now_ms, config) {
            Stuck::No => continue,
            Stuck::Finish(reason) => {
                let message = format!("stuck in {} for {in_state_secs} s", task.state());
                match ctx.finish_task(&task, reason, &message, now_ms).await {
                    Ok(Some(finished)) => {
                        warn!(task_id = %task.id, job_id = %job.id, state = %task.state(), in_state_secs, reason = %reason, "stuck task finished");
                        summary.stuck_tasks_finished += 1;
                        follow_up(ctx, &finished, now_ms, summary).await
                    }
                    Ok(None) => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
            Stuck::ResendKill => resend_kill(ctx, &job, &task, in_state_secs, now_ms)
                .await
                .map(|resent| summary.kills_resent += u32::from(resent)),
        };
        note(summary, "moving a stuck task on", result);
    }
    Ok(())
}

/// Records the kill's second attempt as a new KillInitiated status (the first stays in the
/// history, so the next timeout finishes the task), then sends the kill again.
async fn resend_kill<J, A, C, Q, D>(
    ctx: &StatusContext<J, A, C, Q, D>,
    job: &Job,
    task: &Task,
    in_state_secs: u64,
    now_ms: u64,
) -> Result<bool, StatusError>
where
    J: JobStore,
    A: AgentStore,
    C: AllocationStore,
    Q: CommandQueue,
    D: DeadLetterSink,
{
    let reason = task.status.reason_code.unwrap_or(TaskReason::Killed);
    let mut next = task.clone();
    let first = std::mem::replace(
        &mut next.status,
        TaskStatus {
            state: TaskState::KillInitiated,
            reason_code: Some(reason),
            reason_message: format!(
                "kill sent again: no Finished report {in_state_secs} s after the first"
            ),
            timestamp_ms: now_ms,
        },
    );
    next.status_history.push(first);
    next.version += 1;
    match ctx.jobs.update_task(&next, task.version).await {
        Ok(()) => {}
        Err(e) if e.is_conflict() => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    warn!(task_id = %task.id, job_id = %job.id, in_state_secs, "task stuck in KillInitiated; kill sent again");
    ctx.send_kill(
        &next,
        reason,
        job.job_descriptor.container.kill_grace_period_sec,
    )
    .await?;
    Ok(true)
}

async fn sweep<J, A, C, Q, D>(
    ctx: &StatusContext<J, A, C, Q, D>,
    now_ms: u64,
    summary: &mut ReconcileSummary,
) -> Result<(), StatusError>
where
    J: JobStore,
    A: AgentStore,
    C: AllocationStore,
    Q: CommandQueue,
    D: DeadLetterSink,
{
    if ctx.config.sweep_jobs_per_run == 0 {
        return Ok(());
    }
    let filter = JobFilter {
        states: vec![JobState::Accepted, JobState::KillInitiated],
        ..JobFilter::default()
    };
    let cursor = ctx.sweep_cursor.lock().ok().and_then(|c| c.clone());
    let request = |cursor| PageRequest {
        page_size: ctx.config.sweep_jobs_per_run,
        cursor,
    };
    let page = match ctx.jobs.list_jobs(&filter, &request(cursor)).await {
        // A cursor the store no longer accepts: start over.
        Err(StoreError::InvalidCursor(_)) => ctx.jobs.list_jobs(&filter, &request(None)).await?,
        other => other?,
    };
    summary.sweep_wrapped = page.next_cursor.is_none();
    if let Ok(mut cursor) = ctx.sweep_cursor.lock() {
        *cursor = page.next_cursor.clone();
    }
    for job in page.items {
        summary.jobs_swept += 1;
        let result = converge_job(ctx, &job, now_ms, summary).await;
        note(summary, "converging a job", result);
    }
    Ok(())
}

/// Brings one active job toward its desired state.
async fn converge_job<J, A, C, Q, D>(
    ctx: &StatusContext<J, A, C, Q, D>,
    job: &Job,
    now_ms: u64,
    summary: &mut ReconcileSummary,
) -> Result<(), StatusError>
where
    J: JobStore,
    A: AgentStore,
    C: AllocationStore,
    Q: CommandQueue,
    D: DeadLetterSink,
{
    let live = ctx.live_tasks(&job.id).await?;
    match (job.status.state, job.job_type()) {
        (JobState::KillInitiated, _) => {
            for task in live.iter().filter(|t| t.state() < TaskState::KillInitiated) {
                let result = kill_and_follow_up(
                    ctx,
                    job,
                    task,
                    TaskReason::Killed,
                    "job killed",
                    now_ms,
                    summary,
                )
                .await
                .map(|killed| summary.killed_job_tasks += u32::from(killed));
                note(summary, "killing a killed job's task", result);
            }
            if live.is_empty() && ctx.finish_job_if_done(job, None, now_ms).await? {
                summary.jobs_finished += 1;
            }
        }
        (JobState::Accepted, JobType::Batch) => {
            for task in &live {
                let Some(deadline_ms) = decide::runtime_deadline_ms(job, task, &ctx.config) else {
                    continue;
                };
                if now_ms < deadline_ms {
                    continue;
                }
                let limit_secs = job
                    .job_descriptor
                    .batch
                    .as_ref()
                    .map_or(0, |b| b.runtime_limit_sec);
                let message = format!("runtime limit of {limit_secs} s exceeded");
                let result = kill_and_follow_up(
                    ctx,
                    job,
                    task,
                    TaskReason::RuntimeLimitExceeded,
                    &message,
                    now_ms,
                    summary,
                )
                .await
                .map(|killed| summary.runtime_limit_kills += u32::from(killed));
                note(summary, "killing a task past its runtime limit", result);
            }
            if live.is_empty() && ctx.finish_job_if_done(job, None, now_ms).await? {
                summary.jobs_finished += 1;
            }
        }
        (JobState::Accepted, JobType::Service) => {
            converge_service(ctx, job, &live, now_ms, summary).await?;
        }
        (JobState::Finished, _) => {}
    }
    Ok(())
}

/// Kills a task; one that finishes at once (it was not placed) is followed up.
async fn kill_and_follow_up<J, A, C, Q, D>(
    ctx: &StatusContext<J, A, C, Q, D>,
    job: &Job,
    task: &Task,
    reason: TaskReason,
    message: &str,
    now_ms: u64,
    summary: &mut ReconcileSummary,
) -> Result<bool, StatusError>
where
    J: JobStore,
    A: AgentStore,
    C: AllocationStore,
    Q: CommandQueue,
    D: DeadLetterSink,
{
    if task.state() == TaskState::Accepted {
        return match ctx.finish_task(task, reason, message, now_ms).await? {
            Some(finished) => {
                follow_up(ctx, &finished, now_ms, summary).await?;
                Ok(true)
            }
            None => Ok(false),
        };
    }
    ctx.kill_task(job, task, reason, message, now_ms).await
}

/// Brings an enabled service's live tasks to its desired capacity, by titus-control's counting
/// rule (`decide::counts_toward_capacity`). Below it: first the replacements finished tasks are
/// owed (their ids are the status path's, so the two never both add one), then new slots. Above
/// it: the newest tasks are killed as `scaledDown`, as a capacity change does. Acts only on a
/// fresh (consistent) read of the job and its tasks, since the indexes lag.
async fn converge_service<J, A, C, Q, D>(
    ctx: &StatusContext<J, A, C, Q, D>,
    job: &Job,
    live: &[Task],
    now_ms: u64,
    summary: &mut ReconcileSummary,
) -> Result<(), StatusError>
where
    J: JobStore,
    A: AgentStore,
    C: AllocationStore,
    Q: CommandQueue,
    D: DeadLetterSink,
{
    let desired_of = |job: &Job| {
        job.job_descriptor
            .service
            .as_ref()
            .filter(|s| s.enabled)
            .map(|s| s.capacity.desired as usize)
    };
    let Some(desired) = desired_of(job) else {
        // A disabled service keeps its tasks and ignores its capacity.
        return Ok(());
    };
    if live
        .iter()
        .filter(|t| decide::counts_toward_capacity(t))
        .count()
        == desired
    {
        return Ok(());
    }
    // Something to do: decide again on consistent reads.
    let Some(job) = ctx.jobs.get_job(&job.id).await? else {
        return Ok(());
    };
    if job.status.state != JobState::Accepted {
        return Ok(());
    }
    let Some(desired) = desired_of(&job) else {
        return Ok(());
    };
    let mut current = Vec::with_capacity(live.len());
    for task in live {
        if let Some(task) = ctx.jobs.get_task(&task.id).await? {
            if !task.state().is_terminal() {
                current.push(task);
            }
        }
    }
    let counted = current
        .iter()
        .filter(|t| decide::counts_toward_capacity(t))
        .count();
    if counted < desired {
        let missing = desired - counted;
        let all = ctx.jobs.list_all_job_tasks(&job.id).await?;
        let mut owed: Vec<(&Task, u64)> = decide::chain_heads(&all)
            .into_iter()
            .filter_map(
                |head| match decide::replacement(&job, head, now_ms, &ctx.config) {
                    Replacement::Replace { not_before_ms } => Some((head, not_before_ms)),
                    Replacement::Keep(_) => None,
                },
            )
            .collect();
        owed.sort_by_key(|(head, _)| std::cmp::Reverse(head.status.timestamp_ms));
        let mut added = 0usize;
        for (head, not_before_ms) in owed.into_iter().take(missing) {
            let replacement = head.replacement(now_ms, not_before_ms);
            if insert_new(ctx, &replacement).await? {
                added += 1;
            }
        }
        let mut index = all.iter().map(|t| t.index + 1).max().unwrap_or(0);
        // New slots; a slot that exists already (an index that lags) is skipped, within bounds.
        let mut attempts = 0;
        while added < missing && attempts < missing * 2 + 10 {
            attempts += 1;
            if insert_new(ctx, &Task::initial(&job, index, now_ms)).await? {
                added += 1;
            }
            index += 1;
        }
        info!(job_id = %job.id, desired, counted, added, "service below its desired capacity; tasks added");
        summary.service_tasks_added += added as u32;
    } else if counted > desired {
        let mut extras: Vec<&Task> = current
            .iter()
            .filter(|t| t.state() < TaskState::KillInitiated)
            .collect();
        // Newest first, the order titus-control's capacity changes use.
        extras.sort_by(|a, b| {
            (b.created_at_ms, b.index, &b.id).cmp(&(a.created_at_ms, a.index, &a.id))
        });
        extras.truncate(counted - desired);
        let message = format!("scaled down to the desired capacity of {desired}");
        for task in extras {
            let result = kill_and_follow_up(
                ctx,
                &job,
                task,
                TaskReason::ScaledDown,
                &message,
                now_ms,
                summary,
            )
            .await
            .map(|killed| summary.service_tasks_scaled_down += u32::from(killed));
            note(summary, "scaling a service down", result);
        }
        info!(job_id = %job.id, desired, counted, "service above its desired capacity; newest tasks scaled down");
    }
    Ok(())
}

/// Stores a new task; false when one with its id exists.
async fn insert_new<J, A, C, Q, D>(
    ctx: &StatusContext<J, A, C, Q, D>,
    task: &Task,
) -> Result<bool, StatusError>
where
    J: JobStore,
{
    match ctx.jobs.insert_task(task).await {
        Ok(()) => Ok(true),
        Err(e) if e.is_conflict() => Ok(false),
        Err(e) => Err(e.into()),
    }
}
