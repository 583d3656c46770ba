//! The operations that change jobs and tasks.
//!
//! Kills follow Titus: a task not yet placed (Accepted) finishes at once; a placed one moves to
//! KillInitiated and its agent gets a `KillTask` on its own queue; the agent's Finished report
//! (the status path) completes it. A job being killed is KillInitiated until its last task is
//! Finished. If a kill message cannot be sent, the task stays KillInitiated and the reconciler
//! resends it; the caller also gets the error, and repeating the call resends.

use std::collections::{BTreeMap, BTreeSet};

use futures::stream::{self, StreamExt, TryStreamExt};
use titus_core::job::{Capacity, JobDescriptor};
use titus_core::messages::{AgentCommand, CommandQueue, KillTask, QueueError};
use titus_core::store::{CreateOutcome, IdempotencyKey};
use titus_core::validation::quoted;
use titus_core::{
    AgentStore, FieldError, Job, JobId, JobState, JobStore, JobType, Limits, StoreError, Task,
    TaskId, TaskReason, TaskState,
};

use crate::{field_error, ControlError};

/// How often a conditional write is re-read and retried after losing a race.
const MAX_WRITE_ATTEMPTS: u32 = 5;
/// How many task writes one operation keeps in flight.
const TASK_WRITE_CONCURRENCY: usize = 8;

/// Stores a new job, created by `caller`; the scheduler writes its initial tasks on its next tick.
/// With an idempotency key, a repeat returns the first job (`CreateOutcome::Existing`).
pub async fn create_job<S: JobStore>(
    store: &S,
    descriptor: JobDescriptor,
    caller: &str,
    idempotency: Option<IdempotencyKey>,
    now_ms: u64,
) -> Result<CreateOutcome, ControlError> {
    let job = Job::new(JobId::generate(), descriptor, caller.to_owned(), now_ms);
    Ok(store.create_job(&job, idempotency.as_ref()).await?)
}

/// Kills a job: the job moves to KillInitiated and each of its active tasks is killed; when none is
/// left running, the job is Finished. Killing a job that is already being killed repeats the task
/// kills (resending kill messages), so an interrupted kill can be completed by calling again.
pub async fn kill_job<S: JobStore, A: AgentStore, Q: CommandQueue>(
    store: &S,
    agents: &A,
    queue: &Q,
    job_id: &JobId,
    now_ms: u64,
) -> Result<Job, ControlError> {
    let job = change_job(store, job_id, |job| match job.status.state {
        JobState::Finished => Err(ControlError::conflict(format!(
            "job {job_id} is already finished; expected an active job"
        ))),
        JobState::KillInitiated => Ok(false),
        JobState::Accepted => {
            transition_job(job, JobState::KillInitiated, "job kill requested", now_ms)?;
            Ok(true)
        }
    })
    .await?;
    let tasks = store.list_all_job_tasks(job_id).await?;
    let grace_period_sec = job.job_descriptor.container.kill_grace_period_sec;
    let tasks = kill_tasks(
        store,
        agents,
        queue,
        tasks,
        TaskReason::Killed,
        "job killed",
        grace_period_sec,
        now_ms,
    )
    .await?;
    if tasks.iter().all(|t| t.state().is_terminal()) {
        return finish_killed_job(store, job_id, now_ms).await;
    }
    Ok(job)
}

/// Moves a KillInitiated job with no task left to Finished(killed).
async fn finish_killed_job<S: JobStore>(
    store: &S,
    job_id: &JobId,
    now_ms: u64,
) -> Result<Job, ControlError> {
    change_job(store, job_id, |job| match job.status.state {
        JobState::Finished => Ok(false),
        _ => {
            transition_job(job, JobState::Finished, "all tasks finished", now_ms)?;
            Ok(true)
        }
    })
    .await
}

fn transition_job(
    job: &mut Job,
    to: JobState,
    message: &str,
    now_ms: u64,
) -> Result<(), ControlError> {
    job.transition(to, TaskReason::Killed.as_str(), message, now_ms)
        .map_err(|e| ControlError::conflict(e.to_string()))
}

/// Kills one task. With `shrink` (service jobs only) the job's desired capacity drops by one and the
/// task finishes as `scaledDown`, so it is not replaced; without it the task finishes as `killed`
/// and a service job replaces it.
pub async fn kill_task<S: JobStore, A: AgentStore, Q: CommandQueue>(
    store: &S,
    agents: &A,
    queue: &Q,
    task_id: &TaskId,
    shrink: bool,
    now_ms: u64,
) -> Result<Task, ControlError> {
    let task = store
        .get_task(task_id)
        .await?
        .ok_or_else(|| not_found("task", task_id.as_str()))?;
    if task.state().is_terminal() {
        return Err(ControlError::conflict(format!(
            "task {task_id} is already finished; expected an active task"
        )));
    }
    let job = store.get_job(&task.job_id).await?.ok_or_else(|| {
        ControlError::Store(StoreError::Internal(format!(
            "task {task_id} belongs to job {}, which does not exist",
            task.job_id
        )))
    })?;
    let reason = if shrink {
        if job.job_type() != JobType::Service {
            return Err(ControlError::invalid(
                "shrink",
                format!(
                    "shrink applies only to service jobs, and task {task_id} belongs to batch job {}; \
                     expected shrink=false",
                    job.id
                ),
            ));
        }
        if task.state() == TaskState::KillInitiated {
            // A repeated shrink of the same task (the first answer was lost) must not lower the
            // capacity twice; a task already being killed without shrink cannot become a shrink.
            if task.status.reason_code != Some(TaskReason::ScaledDown) {
                return Err(ControlError::conflict(format!(
                    "task {task_id} is already being killed without shrink; expected an active task"
                )));
            }
        } else {
            shrink_desired(store, &job.id).await?;
        }
        TaskReason::ScaledDown
    } else {
        TaskReason::Killed
    };
    let message = if shrink {
        "task killed with shrink"
    } else {
        "task killed"
    };
    let grace_period_sec = job.job_descriptor.container.kill_grace_period_sec;
    let mut killed = kill_tasks(
        store,
        agents,
        queue,
        vec![task],
        reason,
        message,
        grace_period_sec,
        now_ms,
    )
    .await?;
    killed
        .pop()
        .ok_or_else(|| not_found("task", task_id.as_str()))
}

/// Lowers a service job's desired capacity by one, refusing to go below min.
async fn shrink_desired<S: JobStore>(store: &S, job_id: &JobId) -> Result<Job, ControlError> {
    change_job(store, job_id, |job| {
        require_active(job)?;
        let capacity = service_capacity(job)?;
        let lowered = capacity.desired.checked_sub(1).filter(|d| *d >= capacity.min);
        let Some(desired) = lowered else {
            return Err(ControlError::Conflict {
                message: format!(
                    "shrinking job {job_id} would take its desired capacity from {} below its min {}; \
                     expected desired > min, or a kill without shrink",
                    capacity.desired, capacity.min
                ),
                details: vec![field_error(
                    "shrink",
                    format!("desired {} is already at min {}", capacity.desired, capacity.min),
                )],
            });
        };
        set_capacity(job, Capacity { desired, ..capacity });
        Ok(true)
    })
    .await
}

/// A change of a service job's capacity; a field left `None` keeps its current value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapacityUpdate {
    pub min: Option<u32>,
    pub desired: Option<u32>,
    pub max: Option<u32>,
}

/// Changes a service job's capacity. Above the platform's service limit is invalid; a capacity
/// whose desired is outside min..=max (after merging with the current values) is a conflict. An
/// enabled job gets new tasks (new slots) when desired grows and loses its newest active tasks
/// (`scaledDown`) when it shrinks; a disabled job only records the capacity.
pub async fn update_capacity<S: JobStore, A: AgentStore, Q: CommandQueue>(
    store: &S,
    agents: &A,
    queue: &Q,
    job_id: &JobId,
    update: CapacityUpdate,
    limits: &Limits,
    now_ms: u64,
) -> Result<Job, ControlError> {
    let job = change_job(store, job_id, |job| {
        let current = service_capacity(job)?;
        require_active(job)?;
        let wanted = Capacity {
            min: update.min.unwrap_or(current.min),
            desired: update.desired.unwrap_or(current.desired),
            max: update.max.unwrap_or(current.max),
        };
        check_capacity(&wanted, limits)?;
        if wanted == current {
            return Ok(false);
        }
        set_capacity(job, wanted);
        Ok(true)
    })
    .await?;
    reconcile_service_tasks(store, agents, queue, &job, now_ms).await?;
    Ok(job)
}

fn check_capacity(capacity: &Capacity, limits: &Limits) -> Result<(), ControlError> {
    let over_limit: Vec<FieldError> = [("desired", capacity.desired), ("max", capacity.max)]
        .into_iter()
        .filter(|(_, value)| *value > limits.service_max)
        .map(|(field, value)| {
            field_error(
                field,
                format!(
                    "must be at most {} (the platform's limit on a service's tasks), got {value}",
                    limits.service_max
                ),
            )
        })
        .collect();
    if !over_limit.is_empty() {
        return Err(ControlError::Invalid(over_limit));
    }
    let Capacity { min, desired, max } = *capacity;
    let mut outside = Vec::new();
    if min > max {
        outside.push(field_error(
            "min",
            format!("must be at most max ({max}), got {min}"),
        ));
    }
    if desired < min {
        outside.push(field_error(
            "desired",
            format!("must be at least min ({min}), got {desired}"),
        ));
    }
    if desired > max {
        outside.push(field_error(
            "desired",
            format!("must be at most max ({max}), got {desired}"),
        ));
    }
    if outside.is_empty() {
        Ok(())
    } else {
        Err(ControlError::Conflict {
            message: format!(
                "capacity min {min}, desired {desired}, max {max} is outside its bounds; \
                 expected min <= desired <= max"
            ),
            details: outside,
        })
    }
}

/// Enables or disables a service job. A disabled job keeps its tasks but gets no new ones; enabling
/// it brings its tasks to the desired capacity.
pub async fn set_enabled<S: JobStore, A: AgentStore, Q: CommandQueue>(
    store: &S,
    agents: &A,
    queue: &Q,
    job_id: &JobId,
    enabled: bool,
    now_ms: u64,
) -> Result<Job, ControlError> {
    let job = change_job(store, job_id, |job| {
        service_capacity(job)?;
        require_active(job)?;
        match job.job_descriptor.service.as_mut() {
            Some(service) if service.enabled != enabled => {
                service.enabled = enabled;
                job.version += 1;
                Ok(true)
            }
            _ => Ok(false),
        }
    })
    .await?;
    reconcile_service_tasks(store, agents, queue, &job, now_ms).await?;
    Ok(job)
}

/// Adds or replaces job attributes. The result must stay within the platform's attribute limits.
pub async fn update_attributes<S: JobStore>(
    store: &S,
    job_id: &JobId,
    upserts: &BTreeMap<String, String>,
    limits: &Limits,
) -> Result<Job, ControlError> {
    if upserts.is_empty() {
        return Err(ControlError::invalid(
            "attributes",
            "is empty; expected at least one attribute to set",
        ));
    }
    change_job(store, job_id, |job| {
        require_not_finished(job)?;
        let attributes = &mut job.job_descriptor.attributes;
        if upserts.iter().all(|(k, v)| attributes.get(k) == Some(v)) {
            return Ok(false);
        }
        attributes.extend(upserts.iter().map(|(k, v)| (k.clone(), v.clone())));
        check_attributes(&job.job_descriptor, limits)?;
        job.version += 1;
        Ok(true)
    })
    .await
}

/// Removes job attributes; keys that are not set are ignored.
pub async fn delete_attributes<S: JobStore>(
    store: &S,
    job_id: &JobId,
    keys: &BTreeSet<String>,
) -> Result<Job, ControlError> {
    if keys.is_empty() {
        return Err(ControlError::invalid(
            "keys",
            "is empty; expected at least one attribute key to delete",
        ));
    }
    change_job(store, job_id, |job| {
        require_not_finished(job)?;
        let attributes = &mut job.job_descriptor.attributes;
        let before = attributes.len();
        attributes.retain(|k, _| !keys.contains(k));
        if attributes.len() == before {
            return Ok(false);
        }
        job.version += 1;
        Ok(true)
    })
    .await
}

/// The attribute problems of a descriptor, by the same rules as a new job's.
fn check_attributes(descriptor: &JobDescriptor, limits: &Limits) -> Result<(), ControlError> {
    let problems: Vec<FieldError> = match titus_core::validation::validate(descriptor, limits) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .into_iter()
            .filter(|e| e.field.starts_with("attributes"))
            .collect(),
    };
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ControlError::Invalid(problems))
    }
}

/// Reads the job, lets `change` decide (returning whether it changed the job, which must then have
/// a bumped version), and writes it conditionally, re-reading and deciding again on a lost race.
async fn change_job<S, F>(store: &S, job_id: &JobId, mut change: F) -> Result<Job, ControlError>
where
    S: JobStore,
    F: FnMut(&mut Job) -> Result<bool, ControlError>,
{
    for _ in 0..MAX_WRITE_ATTEMPTS {
        let mut job = store
            .get_job(job_id)
            .await?
            .ok_or_else(|| not_found("job", job_id.as_str()))?;
        let expected_version = job.version;
        if !change(&mut job)? {
            return Ok(job);
        }
        match store.update_job(&job, expected_version).await {
            Ok(()) => return Ok(job),
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(lost_race("job", job_id.as_str()))
}

fn require_active(job: &Job) -> Result<(), ControlError> {
    match job.status.state {
        JobState::Accepted => Ok(()),
        state => Err(ControlError::conflict(format!(
            "job {} is {state}; expected an active job (Accepted)",
            job.id
        ))),
    }
}

fn require_not_finished(job: &Job) -> Result<(), ControlError> {
    if job.status.state == JobState::Finished {
        return Err(ControlError::conflict(format!(
            "job {} is already finished; expected an active job",
            job.id
        )));
    }
    Ok(())
}

fn service_capacity(job: &Job) -> Result<Capacity, ControlError> {
    match &job.job_descriptor.service {
        Some(service) => Ok(service.capacity),
        None => Err(ControlError::invalid(
            "(job)",
            format!(
                "job {} is a batch job; capacity and enable/disable apply only to service jobs",
                job.id
            ),
        )),
    }
}

fn set_capacity(job: &mut Job, capacity: Capacity) {
    if let Some(service) = job.job_descriptor.service.as_mut() {
        service.capacity = capacity;
        job.version += 1;
    }
}

/// Whether a task counts toward its service's capacity: running or about to, or being killed in a
/// way that the status path will replace.
fn counts_toward_capacity(task: &Task) -> bool {
    match task.state() {
        TaskState::Finished => false,
        TaskState::KillInitiated => task.status.reason_code != Some(TaskReason::ScaledDown),
        _ => true,
    }
}

/// Brings an enabled, active service job's tasks to its desired count: new tasks in new slots, or
/// the newest active tasks scaled down. Safe to repeat: new task ids derive from the slot, so a
/// repeat or a concurrent call cannot create a slot twice.
async fn reconcile_service_tasks<S: JobStore, A: AgentStore, Q: CommandQueue>(
    store: &S,
    agents: &A,
    queue: &Q,
    job: &Job,
    now_ms: u64,
) -> Result<(), ControlError> {
    let Some(service) = &job.job_descriptor.service else {
        return Ok(());
    };
    if !service.enabled || job.status.state != JobState::Accepted {
        return Ok(());
    }
    let desired = service.capacity.desired as usize;
    let tasks = store.list_all_job_tasks(&job.id).await?;
    let counted = tasks.iter().filter(|t| counts_toward_capacity(t)).count();
    if counted < desired {
        let next_index = tasks.iter().map(|t| t.index + 1).max().unwrap_or(0);
        let new_tasks: Vec<Task> = (0..(desired - counted) as u32)
            .map(|offset| Task::initial(job, next_index + offset, now_ms))
            .collect();
        stream::iter(new_tasks)
            .map(|task| async move {
                match store.insert_task(&task).await {
                    // A concurrent or earlier call made this slot already.
                    Ok(()) | Err(StoreError::Conflict { .. }) => Ok(()),
                    Err(e) => Err(ControlError::from(e)),
                }
            })
            .buffer_unordered(TASK_WRITE_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
    } else if counted > desired {
        let mut candidates: Vec<Task> = tasks
            .into_iter()
            .filter(|t| t.state() < TaskState::KillInitiated)
            .collect();
        candidates.sort_by(|a, b| {
            (b.created_at_ms, b.index, &b.id).cmp(&(a.created_at_ms, a.index, &a.id))
        });
        candidates.truncate(counted - desired);
        kill_tasks(
            store,
            agents,
            queue,
            candidates,
            TaskReason::ScaledDown,
            "scaled down",
            job.job_descriptor.container.kill_grace_period_sec,
            now_ms,
        )
        .await?;
    }
    Ok(())
}

/// Kills tasks: each is written first (Accepted → Finished, placed → KillInitiated), then the
/// placed ones' agents get `KillTask` commands, one batched send per agent queue. Returns the tasks
/// as written.
#[allow(clippy::too_many_arguments)]
async fn kill_tasks<S: JobStore, A: AgentStore, Q: CommandQueue>(
    store: &S,
    agents: &A,
    queue: &Q,
    tasks: Vec<Task>,
    reason: TaskReason,
    message: &str,
    grace_period_sec: u32,
    now_ms: u64,
) -> Result<Vec<Task>, ControlError> {
    let written: Vec<Task> = stream::iter(tasks)
        .map(|task| mark_killed(store, task, reason, message, now_ms))
        .buffer_unordered(TASK_WRITE_CONCURRENCY)
        .try_collect()
        .await?;

    let mut by_agent: BTreeMap<&str, Vec<AgentCommand>> = BTreeMap::new();
    for task in written
        .iter()
        .filter(|t| t.state() == TaskState::KillInitiated)
    {
        let Some(agent_id) = task.agent_id.as_deref() else {
            tracing::warn!(task_id = %task.id, "task being killed has no agent; the reconciler will finish it");
            continue;
        };
        by_agent
            .entry(agent_id)
            .or_default()
            .push(AgentCommand::KillTask(KillTask {
                task_id: task.id.clone(),
                // The reason the task's own status carries: a repeated kill keeps the first one.
                reason: task.status.reason_code.unwrap_or(reason),
                grace_period_sec,
            }));
    }
    let mut undelivered = 0usize;
    for (agent_id, commands) in by_agent {
        let Some(agent) = agents.get_agent(agent_id).await? else {
            tracing::warn!(
                agent_id,
                tasks = commands.len(),
                "agent of tasks being killed is not registered; the reconciler will finish them"
            );
            continue;
        };
        let failures = queue.send_commands(&agent.queue_url, &commands).await?;
        for failure in &failures {
            tracing::warn!(agent_id, task_id = %failure.task_id, reason = %failure.reason, "kill message not delivered");
        }
        undelivered += failures.len();
    }
    if undelivered > 0 {
        return Err(ControlError::Queue(QueueError::Unavailable(format!(
            "{undelivered} kill message(s) were not delivered; the tasks are recorded as being \
             killed, and repeating the request resends them"
        ))));
    }
    Ok(written)
}

/// Writes one task's kill: Accepted → Finished, Launched..Started → KillInitiated; KillInitiated and
/// Finished stay as they are. Re-reads and decides again when the task changed under it.
async fn mark_killed<S: JobStore>(
    store: &S,
    mut task: Task,
    reason: TaskReason,
    message: &str,
    now_ms: u64,
) -> Result<Task, ControlError> {
    for _ in 0..MAX_WRITE_ATTEMPTS {
        let to = match task.state() {
            TaskState::Finished | TaskState::KillInitiated => return Ok(task),
            TaskState::Accepted => TaskState::Finished,
            TaskState::Launched | TaskState::StartInitiated | TaskState::Started => {
                TaskState::KillInitiated
            }
        };
        let expected_version = task.version;
        let mut next = task.clone();
        next.transition(to, Some(reason), message, now_ms)
            .map_err(|e| ControlError::conflict(e.to_string()))?;
        match store.update_task(&next, expected_version).await {
            Ok(()) => return Ok(next),
            Err(e) if e.is_conflict() => {
                task = store
                    .get_task(&task.id)
                    .await?
                    .ok_or_else(|| not_found("task", task.id.as_str()))?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(lost_race("task", task.id.as_str()))
}

fn not_found(entity: &'static str, id: &str) -> ControlError {
    ControlError::NotFound {
        entity,
        id: quoted_id(id),
    }
}

/// Ids are platform-issued UUIDs, but one passed in by a caller is user text until checked.
fn quoted_id(id: &str) -> String {
    if uuid_like(id) {
        id.to_owned()
    } else {
        quoted(id)
    }
}

fn uuid_like(id: &str) -> bool {
    id.len() == 36 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

fn lost_race(entity: &str, id: &str) -> ControlError {
    ControlError::conflict(format!(
        "{entity} {} kept changing while this request tried to update it ({MAX_WRITE_ATTEMPTS} \
         attempts); expected it to hold still: read it again and retry",
        quoted_id(id)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_above_the_service_limit_is_invalid() {
        let limits = Limits {
            service_max: 10,
            ..Limits::default()
        };
        let err = check_capacity(
            &Capacity {
                min: 0,
                desired: 5,
                max: 11,
            },
            &limits,
        )
        .unwrap_err();
        assert!(
            matches!(&err, ControlError::Invalid(e) if e.len() == 1 && e[0].field == "max"),
            "{err:?}"
        );
    }

    #[test]
    fn desired_outside_min_and_max_is_a_conflict_listing_each_bound() {
        let err = check_capacity(
            &Capacity {
                min: 5,
                desired: 2,
                max: 4,
            },
            &Limits::default(),
        )
        .unwrap_err();
        let ControlError::Conflict { message, details } = err else {
            panic!("expected a conflict");
        };
        assert!(
            message.contains("expected min <= desired <= max"),
            "{message}"
        );
        let fields: Vec<&str> = details.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(fields, ["min", "desired"]);
    }

    #[test]
    fn a_capacity_within_bounds_passes() {
        let ok = Capacity {
            min: 1,
            desired: 1,
            max: 1,
        };
        assert!(check_capacity(&ok, &Limits::default()).is_ok());
    }

    #[test]
    fn an_id_that_is_not_a_uuid_is_quoted_in_messages() {
        assert_eq!(
            quoted_id("1b4e28ba-2fa1-11d2-883f-0016d3cca427"),
            "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
        );
        assert_eq!(quoted_id("x\ny"), "\"x\\ny\"");
    }
}
