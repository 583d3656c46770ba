//! Status ingest: applies the agents' `TaskStatusUpdate` messages from the status queue to tasks.
//!
//! # Guarantees
//! - Idempotent and safe against reordering: an update applies only when its state is later than
//!   the task's (states only move forward), so a duplicate, late or reordered message changes
//!   nothing. An update from an agent the task is not placed on (an earlier placement's agent)
//!   changes nothing either.
//! - Every write is conditional on the version read; a lost race is re-read and decided again.
//! - Finished records the exit code, reason and OOM flag, and gives the task's resources back to
//!   its agent in the same transaction, so the allocation is released exactly once. Then the job
//!   converges ([`task_finished`]): the task is replaced per its job's policy, or its job
//!   finishes. A redelivered Finished repeats those
//!   follow-ups, which are idempotent, so a crash between the two writes is repaired.
//! - A message that can never apply (not JSON, an unknown field, an unknown task, the wrong job) is
//!   sent to the status DLQ with its reason, then acknowledged. A store or queue error makes it a
//!   batch item failure, which SQS redelivers (and after `maxReceiveCount` moves to the DLQ).
//! - Messages of one task in one batch apply in batch order; different tasks at once.

use std::collections::BTreeMap;

use futures::stream::{self, StreamExt};
use titus_core::messages::TaskStatusUpdate;
use titus_core::ports::{DeadLetter, DeadLetterSink};
use titus_core::validation::quoted;
use titus_core::{JobStore, Ports, StoreError, Task, TaskReason, TaskState};
use tracing::{error, info, info_span, warn, Instrument};

use crate::agents::check_sender;
use crate::converge::task_finished;
use crate::kill::tell_agents;
use crate::tasks::{write_finished, MAX_WRITE_ATTEMPTS};
use crate::{ControlError, ControlPlane, InboundMessage, MessageOutcome};

/// How many tasks' messages are applied at once.
const CONCURRENT_TASKS: usize = 8;

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The task moved from `from` to `to`.
    Applied { from: TaskState, to: TaskState },
    /// Not later than the task's state: changed nothing.
    Duplicate,
    /// Sent to the status DLQ with its reason.
    DeadLettered { reason: String },
    /// To be redelivered.
    Failed,
}

impl MessageOutcome for Outcome {
    fn must_redeliver(&self) -> bool {
        *self == Outcome::Failed
    }
}

/// Why an update did not apply.
#[derive(Debug)]
pub enum ApplyError {
    /// The message can never apply; the reason goes to the DLQ with it.
    Malformed(String),
    /// The store or a queue failed; the message is redelivered.
    Failed(ControlError),
}

impl From<StoreError> for ApplyError {
    fn from(err: StoreError) -> Self {
        ApplyError::Failed(err.into())
    }
}

impl From<ControlError> for ApplyError {
    fn from(err: ControlError) -> Self {
        ApplyError::Failed(err)
    }
}

/// Handles one batch of the status queue's messages and says what became of each, by message
/// id, in batch order.
pub async fn process_batch<P: Ports>(
    ctx: &ControlPlane<P>,
    messages: Vec<InboundMessage>,
    now_ms: u64,
) -> Vec<(String, Outcome)> {
    let mut outcomes: Vec<(String, Option<Outcome>)> = Vec::new();
    // Per task, in batch order: position, message id, body, sender, update.
    type Received = (usize, String, String, Option<String>, TaskStatusUpdate);
    let mut by_task: BTreeMap<String, Vec<Received>> = BTreeMap::new();
    let mut malformed = Vec::new();
    for message in messages {
        let position = outcomes.len();
        let message_id = message.message_id;
        let body = message.body;
        let sender = message.sender_id;
        outcomes.push((message_id.clone(), None));
        match serde_json::from_str::<TaskStatusUpdate>(&body) {
            Ok(update) => by_task
                .entry(update.task_id.to_string())
                .or_default()
                .push((position, message_id, body, sender, update)),
            Err(e) => malformed.push((
                position,
                DeadLetter {
                    message_id,
                    body,
                    reason: format!(
                        "not a task status update: {e}; expected the JSON of a TaskStatusUpdate \
                         (taskId, jobId, agentId, state, timestampMs, ...)"
                    ),
                    dead_lettered_at_ms: now_ms,
                },
            )),
        }
    }

    let refused = stream::iter(malformed)
        .map(|(position, letter)| async move {
            let span = info_span!("status_message", message_id = %letter.message_id);
            (position, dead_letter(ctx, letter).instrument(span).await)
        })
        .buffer_unordered(CONCURRENT_TASKS)
        .collect::<Vec<_>>();
    let applied = stream::iter(by_task.into_values())
        .map(|group| async move {
            let mut results = Vec::with_capacity(group.len());
            for (position, message_id, body, sender, update) in group {
                let span = info_span!(
                    "status_message",
                    message_id = %message_id,
                    task_id = %update.task_id,
                    state = %update.state,
                );
                let outcome =
                    apply_message(ctx, message_id, body, sender.as_deref(), &update, now_ms)
                        .instrument(span)
                        .await;
                results.push((position, outcome));
            }
            results
        })
        .buffer_unordered(CONCURRENT_TASKS)
        .collect::<Vec<_>>();
    let (refused, applied) = futures::join!(refused, applied);
    for (position, outcome) in refused.into_iter().chain(applied.into_iter().flatten()) {
        if let Some(slot) = outcomes.get_mut(position) {
            slot.1 = Some(outcome);
        }
    }
    let outcomes: Vec<_> = outcomes
        .into_iter()
        .map(|(id, outcome)| (id, outcome.unwrap_or(Outcome::Failed)))
        .collect();
    for (_, outcome) in &outcomes {
        match outcome {
            Outcome::Applied { .. } => ctx.metrics.add(crate::metrics::STATUS_APPLIED, 1.0),
            Outcome::Duplicate | Outcome::DeadLettered { .. } => {
                ctx.metrics.add(crate::metrics::STATUS_IGNORED, 1.0);
            }
            Outcome::Failed => {}
        }
    }
    outcomes
}

async fn apply_message<P: Ports>(
    ctx: &ControlPlane<P>,
    message_id: String,
    body: String,
    sender_id: Option<&str>,
    update: &TaskStatusUpdate,
    now_ms: u64,
) -> Outcome {
    let applied = match check_sender(ctx, &update.agent_id, sender_id) {
        Ok(()) => apply_update(ctx, update, now_ms).await,
        Err(reason) => Err(ApplyError::Malformed(format!("status refused: {reason}"))),
    };
    match applied {
        Ok(outcome) => outcome,
        Err(ApplyError::Malformed(reason)) => {
            let letter = DeadLetter {
                message_id,
                body,
                reason,
                dead_lettered_at_ms: now_ms,
            };
            dead_letter(ctx, letter).await
        }
        Err(ApplyError::Failed(e)) if e.is_transient() => {
            warn!(error = %e, "status not applied; SQS will redeliver it");
            Outcome::Failed
        }
        Err(ApplyError::Failed(e)) => {
            error!(error = %e, error_type = e.error_type(), "status not applied; SQS will redeliver it and, after repeated failures, move it to the DLQ");
            Outcome::Failed
        }
    }
}

async fn dead_letter<P: Ports>(ctx: &ControlPlane<P>, letter: DeadLetter) -> Outcome {
    match ctx.ports.dead_letters().send(&letter).await {
        Ok(()) => {
            warn!(reason = %letter.reason, "status message sent to the DLQ");
            Outcome::DeadLettered {
                reason: letter.reason,
            }
        }
        Err(e) => {
            warn!(error = %e, reason = %letter.reason, "status message could not be sent to the DLQ; SQS will redeliver it");
            Outcome::Failed
        }
    }
}

/// Applies one update to its task; see the module's guarantees.
pub async fn apply_update<P: Ports>(
    ctx: &ControlPlane<P>,
    update: &TaskStatusUpdate,
    now_ms: u64,
) -> Result<Outcome, ApplyError> {
    let jobs = ctx.ports.jobs();
    for _ in 0..MAX_WRITE_ATTEMPTS {
        let Some(task) = jobs.get_task(&update.task_id).await? else {
            return Err(ApplyError::Malformed(format!(
                "task {} does not exist; expected the id of a task placed on agent {}",
                quoted(update.task_id.as_str()),
                quoted(&update.agent_id)
            )));
        };
        if task.job_id != update.job_id {
            return Err(ApplyError::Malformed(format!(
                "task {} belongs to job {}, but the message names job {}; expected the task's own job",
                task.id,
                task.job_id,
                quoted(update.job_id.as_str())
            )));
        }
        let held_by_sender = task.agent_id.as_deref() == Some(update.agent_id.as_str())
            && task
                .agent_incarnation
                .is_none_or(|i| i == update.incarnation);
        if !held_by_sender {
            // Believed only from the agent, and the incarnation, the task is placed on. One that
            // says it runs the task is told to stop it: the records have it elsewhere or not at
            // all. (Not when the records run it on that very agent, as another incarnation: a
            // kill by task id would stop the holder's container.)
            let holder_is_sender = task.agent_id.as_deref() == Some(update.agent_id.as_str());
            let kill_would_stop_the_holder = holder_is_sender && !task.state().is_terminal();
            if update.state < TaskState::Finished && !kill_would_stop_the_holder {
                stop_on_sender(ctx, &task, update).await?;
            }
            return Err(ApplyError::Malformed(format!(
                "status from agent {} (incarnation {}), but task {} is held by {}; expected a \
                 status from the agent and incarnation the task is placed on",
                quoted(&update.agent_id),
                update.incarnation,
                task.id,
                match (&task.agent_id, task.agent_incarnation) {
                    (Some(agent), Some(incarnation)) =>
                        format!("agent {} (incarnation {incarnation})", quoted(agent)),
                    (Some(agent), None) => format!("agent {}", quoted(agent)),
                    (None, _) => "no agent".to_owned(),
                }
            )));
        }
        let from = task.state();
        if !from.can_transition_to(update.state) {
            if from == TaskState::Finished && update.state == TaskState::Finished {
                // A redelivery: the first may have stopped between the Finished write and the
                // replacement. The follow-ups are idempotent.
                task_finished(ctx, &task, now_ms).await?;
            }
            if from == TaskState::Finished && update.state < TaskState::Finished {
                // The records finished the task (stuck, lost, killed) but its agent says it runs
                // or starts it: that container must stop.
                stop_on_sender(ctx, &task, update).await?;
            }
            info!(current = %from, "status not later than the task's; changes nothing");
            return Ok(Outcome::Duplicate);
        }
        let mut next = task.clone();
        if update.state == TaskState::Finished {
            let reason = finished_reason(&task, update);
            let message = finished_message(update);
            if next
                .transition(
                    TaskState::Finished,
                    Some(reason),
                    &message,
                    update.timestamp_ms,
                )
                .is_err()
            {
                return Ok(Outcome::Duplicate);
            }
            next.exit_code = update.exit_code;
            next.oom_killed = update.oom_killed;
            match write_finished(ctx, &task, &next).await {
                Ok(()) => {}
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
            info!(from = %from, reason = %reason, exit_code = ?update.exit_code, oom_killed = update.oom_killed, "task finished");
            let follow_up = task_finished(ctx, &next, now_ms).await?;
            info!(?follow_up, "after the task finished");
        } else {
            if next
                .transition(
                    update.state,
                    update.reason,
                    &update.message,
                    update.timestamp_ms,
                )
                .is_err()
            {
                return Ok(Outcome::Duplicate);
            }
            match jobs.update_task(&next, task.version).await {
                Ok(()) => {}
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
            info!(from = %from, to = %update.state, "task status applied");
        }
        return Ok(Outcome::Applied {
            from,
            to: update.state,
        });
    }
    Err(ApplyError::Failed(ControlError::Store(
        StoreError::Unavailable(format!(
            "task {} kept changing while its status was applied ({MAX_WRITE_ATTEMPTS} attempts)",
            update.task_id
        )),
    )))
}

/// Tells the agent that sent `update` to stop the task's container, which the records do not
/// expect to run there (finished, or held by another agent or incarnation).
async fn stop_on_sender<P: Ports>(
    ctx: &ControlPlane<P>,
    task: &Task,
    update: &TaskStatusUpdate,
) -> Result<(), ApplyError> {
    let reason = match task.status.reason_code {
        Some(reason) if task.state() == TaskState::Finished => reason,
        _ => TaskReason::Killed,
    };
    let on_sender = Task {
        agent_id: Some(update.agent_id.clone()),
        status: titus_core::TaskStatus {
            state: TaskState::Started,
            ..task.status.clone()
        },
        ..task.clone()
    };
    let (told, _) = tell_agents(ctx, std::slice::from_ref(&on_sender), reason, 0).await?;
    warn!(
        agent_id = %quoted(&update.agent_id),
        reported = %update.state,
        recorded = %task.state(),
        told,
        "an agent reports a task the records do not run there; told to stop it"
    );
    Ok(())
}

/// Why the task finished. A kill the control plane or the agent initiated keeps its reason: the
/// container's exit after SIGTERM is the kill's doing. Otherwise the agent's reason, or the exit
/// code's (0 is normal).
fn finished_reason(task: &Task, update: &TaskStatusUpdate) -> TaskReason {
    if task.state() == TaskState::KillInitiated {
        if let Some(reason) = task.status.reason_code {
            return reason;
        }
    }
    update.reason.unwrap_or(match update.exit_code {
        Some(0) => TaskReason::Normal,
        Some(_) => TaskReason::Failed,
        None => TaskReason::UnknownSystemError,
    })
}

fn finished_message(update: &TaskStatusUpdate) -> String {
    if !update.message.is_empty() {
        return update.message.clone();
    }
    match update.exit_code {
        Some(code) => format!("container exited with code {code}"),
        None => "finished".to_owned(),
    }
}
