//! The one kill path. Every way the control plane ends a task — a person's kill, a job kill, a
//! scale-down, a runtime limit, a stuck or lost task — goes through [`end_tasks`], which always
//! does two things: it records the change, and it tells the agent that holds the task to stop
//! its container.
//!
//! How a task ends follows Titus:
//! - a task no agent holds (Accepted) is Finished at once with the reason, and followed up
//!   (replaced per its job's policy, or its job finished);
//! - a placed task moves to KillInitiated with the reason ([`Ending::Kill`]); its agent gets a
//!   `KillTask` and its Finished report, through status ingest, completes the task;
//! - a placed task the control plane gives up on (stuck, lost) is Finished at once, giving back
//!   its resources ([`Ending::Finish`]); its agent still gets a `KillTask`, so that a container
//!   the records no longer expect does not go on running;
//! - a task already being killed is left as it is, and with `resend` its agent is told again;
//! - a Finished task is left alone.
//!
//! A kill that cannot be delivered (no agent record, a queue error) is counted in
//! [`Ended::undelivered`]; the task stays recorded, and the reconciler's KillInitiated timeout
//! sends it again.

use std::collections::BTreeMap;

use futures::stream::{self, StreamExt, TryStreamExt};
use titus_core::messages::{AgentCommand, KillTask};
use titus_core::ports::{CommandQueue, QueueError};
use titus_core::{JobStore, Ports, Task, TaskReason, TaskState};
use tracing::{info, warn};

use crate::converge::{task_finished, AfterFinished};
use crate::tasks::{finish_task, MAX_WRITE_ATTEMPTS};
use crate::{ControlError, ControlPlane};

/// How many task writes one kill keeps in flight.
const TASK_WRITE_CONCURRENCY: usize = 8;

/// How a placed task is ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// KillInitiated now; Finished when its agent reports the container's exit.
    Kill,
    /// Finished now (the control plane gives up on the task); its agent is told to stop it.
    Finish,
}

/// Why and how tasks are ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndTasks<'a> {
    pub reason: TaskReason,
    pub message: &'a str,
    pub ending: Ending,
    /// SIGTERM to SIGKILL, for the agent.
    pub grace_period_sec: u32,
    /// Tell the agents of tasks already KillInitiated again (a repeated kill request).
    pub resend: bool,
}

/// What [`end_tasks`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ended {
    /// Every task asked about, as it is now (the write's result, or as read when unchanged).
    pub tasks: Vec<Task>,
    /// How many tasks this call wrote.
    pub written: usize,
    /// Replacements made for tasks finished here.
    pub replacements: usize,
    /// Jobs finished because of a task finished here.
    pub jobs_finished: usize,
    /// Kills sent to agents.
    pub told: usize,
    /// Kills that could not be delivered.
    pub undelivered: usize,
}

/// Ends `tasks` as `how` says: records each, then tells each agent, one batched send per agent.
pub async fn end_tasks<P: Ports>(
    cp: &ControlPlane<P>,
    tasks: Vec<Task>,
    how: EndTasks<'_>,
    now_ms: u64,
) -> Result<Ended, ControlError> {
    let outcomes: Vec<(Task, Written)> = stream::iter(tasks)
        .map(|task| record(cp, task, how, now_ms))
        .buffer_unordered(TASK_WRITE_CONCURRENCY)
        .try_collect()
        .await?;
    let mut ended = Ended::default();
    let mut kills = Vec::new();
    for (task, written) in &outcomes {
        if *written != Written::Nothing {
            ended.written += 1;
        }
        let tell = match written {
            Written::Nothing => how.resend && task.state() == TaskState::KillInitiated,
            Written::KillInitiated => true,
            // An agent held it when it was finished: make sure the container stops.
            Written::Finished { held } => *held,
        };
        if tell {
            kills.push(task.clone());
        }
    }
    let (told, undelivered) = tell_agents(cp, &kills, how.reason, how.grace_period_sec).await?;
    ended.told = told;
    ended.undelivered = undelivered;
    for (task, written) in outcomes {
        if let Written::Finished { .. } = written {
            match task_finished(cp, &task, now_ms).await? {
                AfterFinished::Replaced { created: true, .. } => ended.replacements += 1,
                AfterFinished::NotReplaced {
                    job_finished: true, ..
                } => ended.jobs_finished += 1,
                _ => {}
            }
        }
        ended.tasks.push(task);
    }
    Ok(ended)
}

/// What one task's record became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    Nothing,
    KillInitiated,
    /// Finished here; `held` when an agent held it.
    Finished {
        held: bool,
    },
}

/// Writes one task's end, re-reading and deciding again when it changed under the write.
async fn record<P: Ports>(
    cp: &ControlPlane<P>,
    mut task: Task,
    how: EndTasks<'_>,
    now_ms: u64,
) -> Result<(Task, Written), ControlError> {
    for _ in 0..MAX_WRITE_ATTEMPTS {
        let state = task.state();
        let to = match (state, how.ending) {
            (TaskState::Finished | TaskState::KillInitiated, Ending::Kill)
            | (TaskState::Finished, Ending::Finish) => return Ok((task, Written::Nothing)),
            (TaskState::Accepted, _) | (_, Ending::Finish) => TaskState::Finished,
            (_, Ending::Kill) => TaskState::KillInitiated,
        };
        if to == TaskState::Finished {
            let held = state.occupies_agent();
            if let Some(finished) = finish_task(cp, &task, how.reason, how.message, now_ms).await? {
                return Ok((finished, Written::Finished { held }));
            }
        } else {
            let mut next = task.clone();
            next.transition(to, Some(how.reason), how.message, now_ms)
                .map_err(|e| ControlError::conflict(e.to_string()))?;
            match cp.ports.jobs().update_task(&next, task.version).await {
                Ok(()) => {
                    info!(task_id = %task.id, job_id = %task.job_id, reason = %how.reason, "task kill initiated");
                    return Ok((next, Written::KillInitiated));
                }
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e.into()),
            }
        }
        // It changed under the write (placed, reported, finished): decide again on what it is.
        task = cp
            .ports
            .jobs()
            .get_task(&task.id)
            .await?
            .ok_or_else(|| ControlError::not_found("task", task.id.as_str()))?;
    }
    Err(ControlError::lost_race("task", task.id.as_str()))
}

/// Sends a `KillTask` for each task to the agent that holds it, one batched send per agent. A
/// task's own recorded kill reason wins over `reason` (a repeated kill keeps the first one).
/// Returns how many kills were sent and how many could not be delivered.
pub async fn tell_agents<P: Ports>(
    cp: &ControlPlane<P>,
    tasks: &[Task],
    reason: TaskReason,
    grace_period_sec: u32,
) -> Result<(usize, usize), ControlError> {
    let mut by_agent: BTreeMap<&str, Vec<AgentCommand>> = BTreeMap::new();
    for task in tasks {
        let Some(agent_id) = task.agent_id.as_deref() else {
            continue;
        };
        let reason = match task.state() {
            TaskState::KillInitiated => task.status.reason_code.unwrap_or(reason),
            _ => reason,
        };
        by_agent
            .entry(agent_id)
            .or_default()
            .push(AgentCommand::KillTask(KillTask {
                task_id: task.id.clone(),
                reason,
                grace_period_sec,
            }));
    }
    let (mut told, mut undelivered) = (0, 0);
    for (agent_id, commands) in by_agent {
        match cp.ports.commands().send_commands(agent_id, &commands).await {
            Ok(failures) => {
                for failure in &failures {
                    warn!(agent_id, task_id = %failure.task_id, reason = %failure.reason, "kill not delivered");
                }
                told += commands.len() - failures.len();
                undelivered += failures.len();
            }
            // Its tasks end without it: the stuck-task timeouts finish them.
            Err(QueueError::NoSuchQueue(queue)) => warn!(
                agent_id,
                %queue,
                tasks = commands.len(),
                "the agent of tasks being ended has no queue; their kill is not sent"
            ),
            Err(e) => {
                warn!(agent_id, error = %e, tasks = commands.len(), "kills not delivered");
                undelivered += commands.len();
            }
        }
    }
    Ok((told, undelivered))
}
