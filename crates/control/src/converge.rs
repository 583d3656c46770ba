//! The one convergence function: [`converge_job`] brings one job toward the state its record
//! asks for, in the shape of kube-rs' `reconcile(object) -> Action`. Every trigger lands on it:
//! an API change ([`Trigger::Changed`]), a task that finished ([`task_finished`], which knows
//! which task), and the reconciler's periodic sweep ([`Trigger::Sweep`]). The rules it applies
//! are in [`crate::rules`]; the writes go through [`crate::kill`] and [`crate::tasks`].
//!
//! What a job's record asks for:
//! - a job being killed (KillInitiated): every live task ended as `killed`, then the job Finished;
//! - an active batch job: each slot run until it ends normally or its retries run out, a task
//!   past its runtime limit killed, then the job Finished with its outcome — never while a slot
//!   has no task yet (the scheduler writes a new job's tasks on its next tick);
//! - an active, enabled service: as many counting tasks ([`rules::counts_toward_capacity`]) as
//!   its desired capacity — owed replacements first, then new slots; above it, the newest tasks
//!   scaled down. A disabled service keeps its tasks and gets no new ones.
//!
//! Every write is conditional; the index reads that find the work may lag, so the function acts
//! only on consistent reads, and is safe to repeat and to run concurrently.

use titus_core::ports::PageRequest;
use titus_core::{Job, JobId, JobState, JobStore, JobType, Ports, StoreError, Task, TaskId};
use titus_core::{TaskReason, TaskState};
use tracing::{info, warn};

use crate::kill::{end_tasks, EndTasks, Ending};
use crate::rules::{self, NoReplacement, Replacement};
use crate::tasks::{insert_once, live_tasks, MAX_WRITE_ATTEMPTS};
use crate::{ControlError, ControlPlane};

/// What started a convergence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Someone changed the job (a kill, a capacity change, enable or disable): repeat what it
    /// asks for, kills included (an interrupted request is completed by repeating it).
    Changed,
    /// The reconciler's periodic look: repair what a crash between writes left undone.
    Sweep,
}

/// What one convergence did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Converged {
    /// Tasks ended because their job is being killed.
    pub killed_job_tasks: u32,
    /// Batch tasks killed for running past their runtime limit.
    pub runtime_limit_kills: u32,
    /// Replacements made for finished tasks.
    pub replacements: u32,
    /// Tasks added to a service below its desired capacity (replacements owed included).
    pub service_tasks_added: u32,
    /// Tasks of a service above its desired capacity killed as `scaledDown`.
    pub service_tasks_scaled_down: u32,
    /// Whether the job was Finished by this convergence.
    pub job_finished: bool,
    /// Kills that could not be delivered to agents (the stuck-task timeout sends them again).
    pub undelivered: usize,
}

/// Brings `job` toward what its record asks for. `job` may come from an index (a sweep) or from
/// the write that changed it; what is acted on is read again consistently.
pub async fn converge_job<P: Ports>(
    cp: &ControlPlane<P>,
    job: &Job,
    trigger: Trigger,
    now_ms: u64,
) -> Result<Converged, ControlError> {
    let mut done = Converged::default();
    let live = live_tasks(cp, &job.id).await?;
    let grace_period_sec = job.job_descriptor.container.kill_grace_period_sec;
    match (job.status.state, job.job_type()) {
        (JobState::Finished, _) => {}
        (JobState::KillInitiated, _) => {
            let ended = end_tasks(
                cp,
                live,
                EndTasks {
                    reason: TaskReason::Killed,
                    message: "job killed",
                    ending: Ending::Kill,
                    grace_period_sec,
                    resend: trigger == Trigger::Changed,
                },
                now_ms,
            )
            .await?;
            done.killed_job_tasks = ended.written as u32;
            done.undelivered += ended.undelivered;
            done.job_finished = ended.jobs_finished > 0;
            if !done.job_finished && ended.tasks.iter().all(|t| t.state().is_terminal()) {
                done.job_finished = finish_job_if_done(cp, job, None, now_ms).await?;
            }
        }
        (JobState::Accepted, JobType::Batch) => {
            let past_limit: Vec<Task> = live
                .iter()
                .filter(|task| {
                    rules::runtime_deadline_ms(job, task, &cp.settings.rules)
                        .is_some_and(|deadline_ms| now_ms >= deadline_ms)
                })
                .cloned()
                .collect();
            if !past_limit.is_empty() {
                let limit_secs = job
                    .job_descriptor
                    .batch
                    .as_ref()
                    .map_or(0, |b| b.runtime_limit_sec);
                let message = format!("runtime limit of {limit_secs} s exceeded");
                let ended = end_tasks(
                    cp,
                    past_limit,
                    EndTasks {
                        reason: TaskReason::RuntimeLimitExceeded,
                        message: &message,
                        ending: Ending::Kill,
                        grace_period_sec,
                        resend: false,
                    },
                    now_ms,
                )
                .await?;
                done.runtime_limit_kills = ended.written as u32;
                done.undelivered += ended.undelivered;
            }
            if live.is_empty() {
                done.job_finished = finish_job_if_done(cp, job, None, now_ms).await?;
            }
        }
        (JobState::Accepted, JobType::Service) => {
            converge_service(cp, job, &live, now_ms, &mut done).await?;
        }
    }
    Ok(done)
}

/// What was done after a task finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterFinished {
    /// A replacement exists now: made here (`created`), or earlier by another delivery.
    Replaced {
        task_id: TaskId,
        not_before_ms: u64,
        created: bool,
    },
    /// No replacement; and whether the job finished with this task.
    NotReplaced {
        why: NoReplacement,
        job_finished: bool,
    },
    /// The task's job does not exist (a bug or a manual deletion); nothing to decide from.
    JobMissing,
}

/// Converges a job after its task `task` finished: the task's replacement per the job's policy,
/// or else the job's end. Cheaper than a whole [`converge_job`]: only this task's slot is
/// decided, and the job's history is read only when nothing of it is left live. Safe to repeat.
pub async fn task_finished<P: Ports>(
    cp: &ControlPlane<P>,
    task: &Task,
    now_ms: u64,
) -> Result<AfterFinished, StoreError> {
    let Some(job) = cp.ports.jobs().get_job(&task.job_id).await? else {
        warn!(task_id = %task.id, job_id = %task.job_id, "finished task's job does not exist");
        return Ok(AfterFinished::JobMissing);
    };
    match rules::replacement(&job, task, now_ms, &cp.settings.rules) {
        Replacement::Replace { not_before_ms } => {
            let (task_id, created) = insert_replacement(cp, task, now_ms, not_before_ms).await?;
            Ok(AfterFinished::Replaced {
                task_id,
                not_before_ms,
                created,
            })
        }
        Replacement::Keep(why) => {
            info!(task_id = %task.id, job_id = %job.id, why = why.as_str(), "task not replaced");
            let job_finished = finish_job_if_done(cp, &job, Some(&task.id), now_ms).await?;
            Ok(AfterFinished::NotReplaced { why, job_finished })
        }
    }
}

/// Stores the replacement of `task`; `created` is false when it existed already.
async fn insert_replacement<P: Ports>(
    cp: &ControlPlane<P>,
    task: &Task,
    now_ms: u64,
    not_before_ms: u64,
) -> Result<(TaskId, bool), StoreError> {
    let replacement = task.replacement(now_ms, not_before_ms);
    let created = insert_once(cp, &replacement).await?;
    if created {
        info!(
            task_id = %replacement.id,
            replaces = %task.id,
            job_id = %task.job_id,
            not_before_ms,
            reason = ?task.status.reason_code,
            "replacement task created"
        );
    }
    Ok((replacement.id, created))
}

/// Finishes `job` when nothing of it is left to run: a batch job whose every slot is done
/// (`normal` or `failed`), or a job being killed whose every task is Finished (`killed`). An
/// enabled service runs until killed. Returns whether the job was finished here.
///
/// The live-task index answers the common "not yet" with one small query. When it shows nothing
/// live, the whole history is read once, and a replacement a crash left unmade is made instead
/// of finishing the job.
async fn finish_job_if_done<P: Ports>(
    cp: &ControlPlane<P>,
    job: &Job,
    just_finished: Option<&TaskId>,
    now_ms: u64,
) -> Result<bool, StoreError> {
    match (job.status.state, job.job_type()) {
        (JobState::Finished, _) | (JobState::Accepted, JobType::Service) => return Ok(false),
        _ => {}
    }
    if has_live_task(cp, &job.id, just_finished).await? {
        return Ok(false);
    }
    let tasks = cp.ports.jobs().list_all_job_tasks(&job.id).await?;
    if tasks.iter().any(|t| !t.state().is_terminal()) {
        return Ok(false);
    }
    if job.status.state == JobState::Accepted && !rules::every_slot_has_a_task(job, &tasks) {
        // A job accepted a moment ago: the scheduler has not written its tasks yet.
        return Ok(false);
    }
    if job.status.state == JobState::Accepted {
        for head in rules::chain_heads(&tasks) {
            if let Replacement::Replace { not_before_ms } =
                rules::replacement(job, head, now_ms, &cp.settings.rules)
            {
                // A crash between a task's Finished write and its replacement, or an index
                // that has not caught up with a replacement made a moment ago.
                insert_replacement(cp, head, now_ms, not_before_ms).await?;
                return Ok(false);
            }
        }
    }
    let outcome = rules::batch_job_outcome(&tasks).unwrap_or("failed");
    finish_job(cp, &job.id, outcome, now_ms).await
}

/// Whether the job has a task that is not Finished, other than `except` (which the caller just
/// finished, and the index may not show so yet).
async fn has_live_task<P: Ports>(
    cp: &ControlPlane<P>,
    job_id: &JobId,
    except: Option<&TaskId>,
) -> Result<bool, StoreError> {
    let mut page = PageRequest::first(10);
    loop {
        let live = cp.ports.jobs().list_active_job_tasks(job_id, &page).await?;
        for task in &live.items {
            if Some(&task.id) == except {
                continue;
            }
            // The index lags; a consistent read settles it.
            if let Some(current) = cp.ports.jobs().get_task(&task.id).await? {
                if !current.state().is_terminal() {
                    return Ok(true);
                }
            }
        }
        match live.next_cursor {
            Some(cursor) => page.cursor = Some(cursor),
            None => return Ok(false),
        }
    }
}

/// Moves the job to Finished: `killed` if it is being killed, else `outcome`.
async fn finish_job<P: Ports>(
    cp: &ControlPlane<P>,
    job_id: &JobId,
    outcome: &str,
    now_ms: u64,
) -> Result<bool, StoreError> {
    for _ in 0..MAX_WRITE_ATTEMPTS {
        let Some(mut job) = cp.ports.jobs().get_job(job_id).await? else {
            return Ok(false);
        };
        let expected_version = job.version;
        let before = job.clone();
        let (reason, message) = match job.status.state {
            JobState::Finished => return Ok(false),
            JobState::KillInitiated => (
                TaskReason::Killed.as_str(),
                "all tasks finished after the job was killed".to_owned(),
            ),
            JobState::Accepted => (outcome, format!("all tasks finished ({outcome})")),
        };
        if job
            .transition(JobState::Finished, reason, &message, now_ms)
            .is_err()
        {
            return Ok(false);
        }
        // What the job held is released with its finish, in the same write.
        let released = titus_core::quota::UsageChange::between(
            Some(&before),
            &job,
            &cp.settings.admission.quotas,
        );
        match cp
            .ports
            .jobs()
            .update_job_charged(&job, expected_version, &released)
            .await
        {
            Ok(()) => {
                info!(job_id = %job_id, reason, "job finished");
                return Ok(true);
            }
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Conflict {
        entity: "job",
        id: job_id.to_string(),
        detail: format!("kept changing while being finished ({MAX_WRITE_ATTEMPTS} attempts)"),
    })
}

/// Brings an enabled service's live tasks to its desired capacity by the one counting rule
/// ([`rules::counts_toward_capacity`]). Below it: first the replacements finished tasks are owed
/// (their ids are the status path's, so the two never both add one), then new slots. Above it:
/// the newest tasks are killed as `scaledDown`. Acts only on a fresh (consistent) read of the job
/// and its tasks, since the indexes lag.
async fn converge_service<P: Ports>(
    cp: &ControlPlane<P>,
    job: &Job,
    live: &[Task],
    now_ms: u64,
    done: &mut Converged,
) -> Result<(), ControlError> {
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
    let counted = |tasks: &[Task]| {
        tasks
            .iter()
            .filter(|t| rules::counts_toward_capacity(t))
            .count()
    };
    if counted(live) == desired {
        return Ok(());
    }
    // Something to do: decide again on consistent reads.
    let jobs = cp.ports.jobs();
    let Some(job) = jobs.get_job(&job.id).await? else {
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
        if let Some(task) = jobs.get_task(&task.id).await? {
            if !task.state().is_terminal() {
                current.push(task);
            }
        }
    }
    let counted = counted(&current);
    if counted < desired {
        let missing = desired - counted;
        let all = jobs.list_all_job_tasks(&job.id).await?;
        let mut owed: Vec<(&Task, u64)> = rules::chain_heads(&all)
            .into_iter()
            .filter_map(
                |head| match rules::replacement(&job, head, now_ms, &cp.settings.rules) {
                    Replacement::Replace { not_before_ms } => Some((head, not_before_ms)),
                    Replacement::Keep(_) => None,
                },
            )
            .collect();
        owed.sort_by_key(|(head, _)| std::cmp::Reverse(head.status.timestamp_ms));
        let mut added = 0usize;
        for (head, not_before_ms) in owed.into_iter().take(missing) {
            if insert_once(cp, &head.replacement(now_ms, not_before_ms)).await? {
                added += 1;
                done.replacements += 1;
            }
        }
        let mut index = all.iter().map(|t| t.index + 1).max().unwrap_or(0);
        // New slots; a slot that exists already (an index that lags) is skipped, within bounds.
        let mut attempts = 0;
        while added < missing && attempts < missing * 2 + 10 {
            attempts += 1;
            if insert_once(cp, &Task::initial(&job, index, now_ms)).await? {
                added += 1;
            }
            index += 1;
        }
        info!(job_id = %job.id, desired, counted, added, "service below its desired capacity; tasks added");
        done.service_tasks_added += added as u32;
    } else if counted > desired {
        let mut extras: Vec<Task> = current
            .into_iter()
            .filter(|t| t.state() < TaskState::KillInitiated)
            .collect();
        // Newest first.
        extras.sort_by(|a, b| {
            (b.created_at_ms, b.index, &b.id).cmp(&(a.created_at_ms, a.index, &a.id))
        });
        extras.truncate(counted - desired);
        let message = format!("scaled down to the desired capacity of {desired}");
        let ended = end_tasks(
            cp,
            extras,
            EndTasks {
                reason: TaskReason::ScaledDown,
                message: &message,
                ending: Ending::Kill,
                grace_period_sec: job.job_descriptor.container.kill_grace_period_sec,
                resend: false,
            },
            now_ms,
        )
        .await?;
        done.service_tasks_scaled_down += ended.written as u32;
        done.undelivered += ended.undelivered;
        info!(job_id = %job.id, desired, counted, "service above its desired capacity; newest tasks scaled down");
    }
    Ok(())
}
