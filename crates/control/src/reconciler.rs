//! The reconciler: repairs what status messages alone cannot. One run, called by the local stack
//! on every loop or by the scheduled reconciler Lambda:
//!
//! 1. Lost agents: an Active or Draining agent whose heartbeat is older than
//!    `agent_heartbeat_timeout_ms` becomes Lost; its tasks (the `byAgent` index) are Finished as
//!    `lost`, giving back their resources, and replaced per policy (lost is a system error). The
//!    agent also gets a `KillTask` for each (the kill path), in case it is only cut off and polls
//!    again.
//! 2. Stuck tasks: tasks longer than Titus' timeouts in Launched or StartInitiated are Finished as
//!    `stuckInState` and replaced per policy, and their agent is told to stop them; in
//!    KillInitiated, the kill is sent again once, and after a second timeout the task is Finished
//!    as `stuckInKillingState`. Candidates come from the sparse `transitional` index, so running
//!    tasks are never read.
//! 3. A sweep of active jobs, a page per run, continuing where the last run stopped: each job is
//!    converged ([`converge_job`]): batch tasks past their runtime limit are killed (the agent
//!    enforces the limit, this is the backstop); a service whose live task count differs from its
//!    desired capacity (after a crash between writes) gets the replacements it is owed and new
//!    slots, or loses its newest tasks as `scaledDown`; a job being killed gets its leftover tasks
//!    killed and is Finished once they are; a batch job with nothing left is Finished (never one
//!    with a slot that has no task yet).
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

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use titus_core::ports::{JobFilter, PageRequest};
use titus_core::{
    Agent, AgentState, AgentStore, Job, JobId, JobState, JobStore, Ports, StoreError, Task, TaskId,
    TaskReason, TaskState, TaskStatus,
};
use tracing::{error, info, warn};

use crate::converge::{converge_job, Converged, Trigger};
use crate::kill::{end_tasks, tell_agents, EndTasks, Ended, Ending};
use crate::materialize::materialize_jobs;
use crate::rules::{self, Stuck};
use crate::{ControlError, ControlPlane};

/// How long after its creation a job still awaiting its initial tasks is given them by the
/// reconciler. The scheduler's tick writes them within about a second; this is the backstop.
pub const MATERIALIZE_AFTER_MS: u64 = 60_000;

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
    /// Kills sent (again) to agents that report containers of tasks the records do not run
    /// there (finished, or placed elsewhere).
    #[serde(default)]
    pub stray_kills_sent: u32,
    /// Tasks finished as lost because their agent stopped reporting them.
    #[serde(default)]
    pub unreported_tasks_finished: u32,
    /// Items that failed; each is logged, and the next run tries again.
    pub errors: u32,
}

impl ReconcileSummary {
    fn add_ended(&mut self, ended: &Ended) {
        self.replacements += ended.replacements as u32;
        self.jobs_finished += ended.jobs_finished as u32;
    }

    fn add_converged(&mut self, converged: &Converged) {
        self.killed_job_tasks += converged.killed_job_tasks;
        self.runtime_limit_kills += converged.runtime_limit_kills;
        self.replacements += converged.replacements;
        self.service_tasks_added += converged.service_tasks_added;
        self.service_tasks_scaled_down += converged.service_tasks_scaled_down;
        self.jobs_finished += u32::from(converged.job_finished);
    }
}

/// One reconciler run at `now_ms`. Fails only when none of its steps could start (the agents
/// could not even be listed, say); a failing item is counted in `errors`.
pub async fn reconcile<P: Ports>(
    cp: &ControlPlane<P>,
    now_ms: u64,
) -> Result<ReconcileSummary, ControlError> {
    let result = run(cp, now_ms).await;
    let m = &cp.metrics;
    match &result {
        Ok(s) => {
            use crate::metrics::*;
            m.add(AGENTS_LOST, f64::from(s.agents_lost));
            m.add(
                TASKS_LOST,
                f64::from(s.lost_tasks_finished + s.unreported_tasks_finished),
            );
            m.add(TASKS_STUCK, f64::from(s.stuck_tasks_finished));
            m.add(RECONCILE_ERRORS, f64::from(s.errors));
        }
        Err(_) => m.add(crate::metrics::RECONCILE_ERRORS, 1.0),
    }
    result
}

async fn run<P: Ports>(
    cp: &ControlPlane<P>,
    now_ms: u64,
) -> Result<ReconcileSummary, ControlError> {
    let mut summary = ReconcileSummary::default();
    let mut failures = Vec::new();
    if let Err(e) = lost_agents(cp, now_ms, &mut summary).await {
        failures.push(("lost agents", e));
    }
    if let Err(e) = stuck_tasks(cp, now_ms, &mut summary).await {
        failures.push(("stuck tasks", e));
    }
    if let Err(e) = cross_check_agents(cp, now_ms, &mut summary).await {
        failures.push(("agents' reports", e));
    }
    if let Err(e) = sweep(cp, now_ms, &mut summary).await {
        failures.push(("job sweep", e));
    }
    match materialize_jobs(
        cp,
        cp.rules().max_tasks_per_run,
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
        if steps_failed == 5 {
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
        stray_kills_sent = summary.stray_kills_sent,
        unreported_tasks_finished = summary.unreported_tasks_finished,
        errors = summary.errors,
        "reconciled"
    );
    Ok(summary)
}

fn log_failure(what: &str, e: &ControlError) {
    if e.is_transient() {
        warn!(step = what, error = %e, "reconciler step failed; the next run repeats it");
    } else {
        error!(step = what, error = %e, error_type = e.error_type(), "reconciler step failed; the next run repeats it");
    }
}

/// Counts an item's failure and goes on.
fn note(summary: &mut ReconcileSummary, what: &str, result: Result<(), ControlError>) {
    if let Err(e) = result {
        summary.errors += 1;
        log_failure(what, &e);
    }
}

async fn lost_agents<P: Ports>(
    cp: &ControlPlane<P>,
    now_ms: u64,
    summary: &mut ReconcileSummary,
) -> Result<(), ControlError> {
    let timeout_ms = cp.rules().agent_heartbeat_timeout_ms;
    let agents = cp.ports.agents();
    for agent in agents.list_agents().await? {
        let silent_ms = now_ms.saturating_sub(agent.heartbeat_at_ms);
        match agent.state {
            AgentState::Active | AgentState::Draining if silent_ms > timeout_ms => {
                match agents
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
        let result = finish_lost_agent_tasks(cp, &agent, silent_ms, now_ms, summary).await;
        note(summary, "finishing a lost agent's tasks", result);
    }
    Ok(())
}

/// Finishes a lost agent's tasks as `lost` through the kill path: each gives back its resources
/// and is replaced per policy, and the agent is told to stop it, in case it is only cut off and
/// polls again.
async fn finish_lost_agent_tasks<P: Ports>(
    cp: &ControlPlane<P>,
    agent: &Agent,
    silent_ms: u64,
    now_ms: u64,
    summary: &mut ReconcileSummary,
) -> Result<(), ControlError> {
    let message = format!(
        "agent {} lost: no heartbeat for {} s",
        agent.id,
        silent_ms / 1_000
    );
    let tasks = cp.ports.jobs().list_agent_tasks(&agent.id).await?;
    let ended = end_tasks(
        cp,
        tasks,
        EndTasks {
            reason: TaskReason::Lost,
            message: &message,
            ending: Ending::Finish,
            grace_period_sec: 0,
            resend: false,
        },
        now_ms,
    )
    .await?;
    summary.lost_tasks_finished += ended.written as u32;
    summary.add_ended(&ended);
    Ok(())
}

async fn stuck_tasks<P: Ports>(
    cp: &ControlPlane<P>,
    now_ms: u64,
    summary: &mut ReconcileSummary,
) -> Result<(), ControlError> {
    let rules = cp.rules();
    let changed_before_ms = now_ms.saturating_sub(rules.shortest_stuck_timeout_ms());
    let candidates = cp
        .ports
        .jobs()
        .list_transitional_tasks(rules.max_tasks_per_run, changed_before_ms)
        .await?;
    let mut jobs: HashMap<JobId, Option<Job>> = HashMap::new();
    for task in candidates {
        let job = match jobs.get(&task.job_id) {
            Some(job) => job.clone(),
            None => {
                let job = match cp.ports.jobs().get_job(&task.job_id).await {
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
        let result = match rules::stuck(&task, job.job_type(), now_ms, rules) {
            Stuck::No => continue,
            Stuck::Finish(reason) => {
                let message = format!("stuck in {} for {in_state_secs} s", task.state());
                let state = task.state();
                end_tasks(
                    cp,
                    vec![task],
                    EndTasks {
                        reason,
                        message: &message,
                        ending: Ending::Finish,
                        grace_period_sec: job.job_descriptor.container.kill_grace_period_sec,
                        resend: false,
                    },
                    now_ms,
                )
                .await
                .map(|ended| {
                    if ended.written > 0 {
                        warn!(job_id = %job.id, state = %state, in_state_secs, reason = %reason, "stuck task finished");
                    }
                    summary.stuck_tasks_finished += ended.written as u32;
                    summary.add_ended(&ended);
                })
            }
            Stuck::ResendKill => resend_kill(cp, &job, &task, in_state_secs, now_ms)
                .await
                .map(|resent| summary.kills_resent += u32::from(resent)),
        };
        note(summary, "moving a stuck task on", result);
    }
    Ok(())
}

/// Records the kill's second attempt as a new KillInitiated status (the first stays in the
/// history, so the next timeout finishes the task), then sends the kill again.
async fn resend_kill<P: Ports>(
    cp: &ControlPlane<P>,
    job: &Job,
    task: &Task,
    in_state_secs: u64,
    now_ms: u64,
) -> Result<bool, ControlError> {
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
    match cp.ports.jobs().update_task(&next, task.version).await {
        Ok(()) => {}
        Err(e) if e.is_conflict() => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    warn!(task_id = %task.id, job_id = %job.id, in_state_secs, "task stuck in KillInitiated; kill sent again");
    tell_agents(
        cp,
        std::slice::from_ref(&next),
        reason,
        job.job_descriptor.container.kill_grace_period_sec,
    )
    .await?;
    Ok(true)
}

/// Converges a page of active jobs, going on from where the last run stopped.
async fn sweep<P: Ports>(
    cp: &ControlPlane<P>,
    now_ms: u64,
    summary: &mut ReconcileSummary,
) -> Result<(), ControlError> {
    let page_size = cp.rules().sweep_jobs_per_run;
    if page_size == 0 {
        return Ok(());
    }
    let filter = JobFilter {
        states: vec![JobState::Accepted, JobState::KillInitiated],
        ..JobFilter::default()
    };
    let cursor = cp.sweep_cursor.lock().ok().and_then(|c| c.clone());
    let request = |cursor| PageRequest { page_size, cursor };
    let jobs = cp.ports.jobs();
    let page = match jobs.list_jobs(&filter, &request(cursor)).await {
        // A cursor the store no longer accepts: start over.
        Err(StoreError::InvalidCursor(_)) => jobs.list_jobs(&filter, &request(None)).await?,
        other => other?,
    };
    summary.sweep_wrapped = page.next_cursor.is_none();
    if let Ok(mut cursor) = cp.sweep_cursor.lock() {
        *cursor = page.next_cursor.clone();
    }
    for job in page.items {
        summary.jobs_swept += 1;
        let result = converge_job(cp, &job, Trigger::Sweep, now_ms)
            .await
            .map(|converged| summary.add_converged(&converged));
        note(summary, "converging a job", result);
    }
    Ok(())
}

/// What the cross-check of agents' reports remembers between runs.
#[derive(Debug, Default)]
pub struct AgentWatch {
    /// Per (agent, task) reported though the records do not run it there: how many kills were
    /// sent, and when the next may go.
    strays: HashMap<(String, TaskId), (u32, u64)>,
    /// Per (agent, task) the records run there but its reports leave out: since when.
    unreported: HashMap<(String, TaskId), u64>,
}

/// Compares what each active agent reports running with what the records place on it (its
/// current incarnation): a task reported but not placed there (finished, or elsewhere) is a
/// stray container, and the agent is told to stop it, from one back-off after it is first seen
/// and then with a doubling back-off, until its reports no longer list it (or it is declared
/// lost); a task placed there and started, but
/// left out of every report for `unreported_task_timeout_ms`, is not there: it is finished as
/// lost and replaced per its policy.
async fn cross_check_agents<P: Ports>(
    cp: &ControlPlane<P>,
    now_ms: u64,
    summary: &mut ReconcileSummary,
) -> Result<(), ControlError> {
    let agents = cp.ports.agents().list_agents().await?;
    let reports: HashMap<String, titus_core::AgentHeartbeat> = cp
        .ports
        .agents()
        .list_reports()
        .await?
        .into_iter()
        .collect();
    let mut seen_strays = HashSet::new();
    let mut seen_unreported = HashSet::new();
    for agent in agents
        .iter()
        .filter(|a| matches!(a.state, AgentState::Active | AgentState::Draining))
    {
        let Some(report) = reports.get(&agent.id) else {
            continue;
        };
        let result = cross_check_agent(
            cp,
            agent,
            report,
            now_ms,
            summary,
            &mut seen_strays,
            &mut seen_unreported,
        )
        .await;
        note(summary, "checking an agent's report", result);
    }
    // What is no longer seen is settled: the agent stopped the container, or reports it again.
    let mut watch = cp.agent_watch.lock().unwrap_or_else(|p| p.into_inner());
    watch.strays.retain(|key, _| seen_strays.contains(key));
    watch
        .unreported
        .retain(|key, _| seen_unreported.contains(key));
    Ok(())
}

async fn cross_check_agent<P: Ports>(
    cp: &ControlPlane<P>,
    agent: &Agent,
    report: &titus_core::AgentHeartbeat,
    now_ms: u64,
    summary: &mut ReconcileSummary,
    seen_strays: &mut HashSet<(String, TaskId)>,
    seen_unreported: &mut HashSet<(String, TaskId)>,
) -> Result<(), ControlError> {
    let rules = cp.rules();
    let held: Vec<Task> = cp
        .ports
        .jobs()
        .list_agent_tasks(&agent.id)
        .await?
        .into_iter()
        .filter(|t| t.agent_incarnation.is_none_or(|i| i == agent.incarnation))
        .collect();
    let reported: HashSet<&TaskId> = report.running_task_ids.iter().collect();
    let held_ids: HashSet<&TaskId> = held.iter().map(|t| &t.id).collect();

    // Stray containers: reported, not held there. The index may lag a placement made a moment
    // ago, so a consistent read settles each.
    let mut strays = Vec::new();
    for task_id in report
        .running_task_ids
        .iter()
        .filter(|id| !held_ids.contains(id))
    {
        let current = cp.ports.jobs().get_task(task_id).await?;
        let runs_here = current.as_ref().is_some_and(|t| {
            !t.state().is_terminal()
                && t.agent_id.as_deref() == Some(agent.id.as_str())
                && t.agent_incarnation.is_none_or(|i| i == agent.incarnation)
        });
        if runs_here {
            continue;
        }
        let key = (agent.id.clone(), task_id.clone());
        seen_strays.insert(key.clone());
        let due = {
            let mut watch = cp.agent_watch.lock().unwrap_or_else(|p| p.into_inner());
            // The kill path told the agent when the task ended; the first resend waits one
            // back-off, for the agent to act on that.
            let first_due = now_ms.saturating_add(rules.stray_kill_backoff_ms);
            let entry = watch.strays.entry(key).or_insert((0, first_due));
            if now_ms >= entry.1 {
                entry.0 += 1;
                let doublings = (entry.0 - 1).min(16);
                entry.1 = now_ms.saturating_add(rules.stray_kill_backoff_ms << doublings);
                true
            } else {
                false
            }
        };
        if due {
            // A stand-in placed here, so that the kill path sends it to this agent.
            let mut stray = current.unwrap_or_else(|| unknown_task(task_id));
            stray.agent_id = Some(agent.id.clone());
            stray.status.state = TaskState::Started;
            strays.push(stray);
        }
    }
    if !strays.is_empty() {
        let (told, _) = tell_agents(cp, &strays, TaskReason::Killed, 0).await?;
        warn!(agent_id = %agent.id, strays = strays.len(), told, "agent reports containers the records do not run there; told to stop them");
        summary.stray_kills_sent += told as u32;
    }

    // Unreported tasks: held there and started, but in no report taken since.
    let mut missing = Vec::new();
    for task in held.iter().filter(|t| {
        matches!(
            t.state(),
            TaskState::StartInitiated | TaskState::Started | TaskState::KillInitiated
        ) && !reported.contains(&t.id)
            && report.at_ms > t.status.timestamp_ms
    }) {
        let key = (agent.id.clone(), task.id.clone());
        seen_unreported.insert(key.clone());
        let since = *cp
            .agent_watch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unreported
            .entry(key)
            .or_insert(now_ms);
        if now_ms.saturating_sub(since) >= rules.unreported_task_timeout_ms {
            missing.push(task.clone());
        }
    }
    if !missing.is_empty() {
        let message = format!(
            "agent {} has not reported the task for {} s",
            agent.id,
            rules.unreported_task_timeout_ms / 1_000
        );
        let ended = end_tasks(
            cp,
            missing,
            EndTasks {
                reason: TaskReason::Lost,
                message: &message,
                ending: Ending::Finish,
                grace_period_sec: 0,
                resend: false,
            },
            now_ms,
        )
        .await?;
        warn!(agent_id = %agent.id, finished = ended.written, "tasks their agent no longer reports finished as lost");
        summary.unreported_tasks_finished += ended.written as u32;
        summary.add_ended(&ended);
    }
    Ok(())
}

/// A task the records do not know, as the kill path needs it to address its agent.
fn unknown_task(task_id: &TaskId) -> Task {
    Task {
        id: task_id.clone(),
        job_id: JobId::from_string(""),
        index: 0,
        original_id: task_id.clone(),
        resubmit_of: None,
        resubmit_number: 0,
        system_resubmit_number: 0,
        status: TaskStatus {
            state: TaskState::Started,
            reason_code: None,
            reason_message: String::new(),
            timestamp_ms: 0,
        },
        status_history: Vec::new(),
        agent_id: None,
        agent_incarnation: None,
        resources: titus_core::job::ContainerResources::default(),
        created_at_ms: 0,
        not_before_ms: 0,
        dispatched_at_ms: None,
        started_at_ms: None,
        exit_code: None,
        oom_killed: false,
        version: 0,
    }
}
