//! The operations that change jobs and tasks, as the API and the submit queue ask for them.
//!
//! Each writes the job's record, then converges the job ([`converge_job`]) or ends the task
//! through the one kill path ([`end_tasks`]): a task not yet placed (Accepted) finishes at once;
//! a placed one moves to KillInitiated and its agent gets a `KillTask` on its own queue; the
//! agent's Finished report (the status path) completes it. A job being killed is KillInitiated
//! until its last task is Finished. If a kill message cannot be sent, the task stays
//! KillInitiated and the reconciler resends it; the caller also gets the error, and repeating the
//! call resends.

use std::collections::{BTreeMap, BTreeSet};

use titus_core::job::{Capacity, DisruptionBudget, JobDescriptor, ServiceJobProcesses};
use titus_core::ports::{CreateOutcome, IdempotencyKey, QueueError};
use titus_core::quota::{QuotaExceeded, UsageChange};
use titus_core::{
    FieldError, Job, JobId, JobState, JobStore, JobType, Limits, Ports, StoreError, Task, TaskId,
    TaskReason, TaskState,
};

use crate::converge::{converge_job, Trigger};
use crate::kill::{end_tasks, EndTasks, Ending};
use crate::tasks::MAX_WRITE_ATTEMPTS;
use crate::{field_error, ControlError, ControlPlane};

/// Stores a new job, created by `caller`; the scheduler writes its initial tasks on its next tick.
/// With an idempotency key, a repeat returns the first job (`CreateOutcome::Existing`).
pub async fn create_job<P: Ports>(
    cp: &ControlPlane<P>,
    descriptor: JobDescriptor,
    caller: &str,
    idempotency: Option<IdempotencyKey>,
    now_ms: u64,
) -> Result<CreateOutcome, ControlError> {
    let job = Job::new(JobId::generate(), descriptor, caller.to_owned(), now_ms);
    let usage = UsageChange::between(None, &job, &cp.settings.admission.quotas);
    if let Some(refused) = beyond_any_use(&usage) {
        return Err(refused);
    }
    let outcome = cp
        .ports
        .jobs()
        .create_job_charged(&job, idempotency.as_ref(), &usage)
        .await?;
    if matches!(outcome, CreateOutcome::Created(_)) {
        cp.metrics.add(crate::metrics::JOBS_ACCEPTED, 1.0);
    }
    Ok(outcome)
}

/// The quota a change passes on its own: a request that can never be accepted as it is.
fn beyond_any_use(usage: &UsageChange) -> Option<ControlError> {
    let (scope, dimension, limit) = usage.beyond_any_use()?;
    Some(ControlError::OverQuota {
        exceeded: QuotaExceeded {
            scope: scope.clone(),
            dimension,
            limit,
            used: 0,
            requested: usage.delta.get(dimension),
        },
        fits_ever: false,
    })
}

/// Kills a job: the job moves to KillInitiated and each of its active tasks is killed; when none is
/// left running, the job is Finished. Killing a job that is already being killed repeats the task
/// kills (resending kill messages), so an interrupted kill can be completed by calling again.
pub async fn kill_job<P: Ports>(
    cp: &ControlPlane<P>,
    job_id: &JobId,
    now_ms: u64,
) -> Result<Job, ControlError> {
    let job = change_job(cp, job_id, |job| match job.status.state {
        JobState::Finished => Err(ControlError::conflict(format!(
            "job {job_id} is already finished; expected an active job"
        ))),
        JobState::KillInitiated => Ok(false),
        JobState::Accepted => {
            job.transition(
                JobState::KillInitiated,
                TaskReason::Killed.as_str(),
                "job kill requested",
                now_ms,
            )
            .map_err(|e| ControlError::conflict(e.to_string()))?;
            Ok(true)
        }
    })
    .await?;
    let converged = converge_job(cp, &job, Trigger::Changed, now_ms).await?;
    undelivered_is_an_error(converged.undelivered)?;
    if converged.job_finished {
        return cp
            .ports
            .jobs()
            .get_job(job_id)
            .await?
            .ok_or_else(|| ControlError::not_found("job", job_id.as_str()));
    }
    Ok(job)
}

/// Kills one task. With `shrink` (service jobs only) the job's desired capacity drops by one and the
/// task finishes as `scaledDown`, so it is not replaced; without it the task finishes as `killed`
/// and a service job replaces it.
pub async fn kill_task<P: Ports>(
    cp: &ControlPlane<P>,
    task_id: &TaskId,
    shrink: bool,
    now_ms: u64,
) -> Result<Task, ControlError> {
    let options = KillOptions {
        shrink,
        prevent_min_size_update: true,
    };
    kill_task_with(cp, task_id, options, now_ms).await
}

/// How a task is killed, as Titus' `TaskKillRequest` says it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KillOptions {
    /// Also lower the service job's desired capacity by one.
    pub shrink: bool,
    /// With `shrink`, refuse to go below the job's min; without it (Titus' default), a shrink
    /// at min lowers min too.
    pub prevent_min_size_update: bool,
}

/// [`kill_task`] with Titus' options.
pub async fn kill_task_with<P: Ports>(
    cp: &ControlPlane<P>,
    task_id: &TaskId,
    options: KillOptions,
    now_ms: u64,
) -> Result<Task, ControlError> {
    let shrink = options.shrink;
    let store = cp.ports.jobs();
    let task = store
        .get_task(task_id)
        .await?
        .ok_or_else(|| ControlError::not_found("task", task_id.as_str()))?;
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
            shrink_desired(cp, &job.id, !options.prevent_min_size_update).await?;
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
    let ended = end_tasks(
        cp,
        vec![task],
        EndTasks {
            reason,
            message,
            ending: Ending::Kill,
            grace_period_sec: job.job_descriptor.container.kill_grace_period_sec,
            resend: true,
        },
        now_ms,
    )
    .await?;
    undelivered_is_an_error(ended.undelivered)?;
    ended
        .tasks
        .into_iter()
        .next()
        .ok_or_else(|| ControlError::not_found("task", task_id.as_str()))
}

/// The caller of an operation whose kills were not all delivered gets an error: the tasks are
/// recorded as being killed, and repeating the request resends them.
fn undelivered_is_an_error(undelivered: usize) -> Result<(), ControlError> {
    if undelivered == 0 {
        return Ok(());
    }
    Err(ControlError::Queue(QueueError::Unavailable(format!(
        "{undelivered} kill message(s) were not delivered; the tasks are recorded as being \
         killed, and repeating the request resends them"
    ))))
}

/// Lowers a service job's desired capacity by one: below min only with `lower_min`, which
/// lowers min with it.
async fn shrink_desired<P: Ports>(
    cp: &ControlPlane<P>,
    job_id: &JobId,
    lower_min: bool,
) -> Result<Job, ControlError> {
    change_job(cp, job_id, |job| {
        require_active(job)?;
        let mut capacity = service_capacity(job)?;
        let lowered = capacity
            .desired
            .checked_sub(1)
            .filter(|d| *d >= capacity.min || lower_min);
        if let Some(desired) = lowered {
            capacity.min = capacity.min.min(desired);
        }
        check_processes(job, capacity.desired, lowered.unwrap_or(capacity.desired), "shrink")?;
        let Some(desired) = lowered else {
            return Err(ControlError::Conflict {
                message: format!(
                    "shrinking job {job_id} would take its desired capacity from {} below its min {}; \
                     expected desired > min, preventMinSizeUpdate=false, or a kill without shrink",
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
pub async fn update_capacity<P: Ports>(
    cp: &ControlPlane<P>,
    job_id: &JobId,
    update: CapacityUpdate,
    now_ms: u64,
) -> Result<Job, ControlError> {
    let limits = &cp.settings.admission.limits;
    let job = change_job(cp, job_id, |job| {
        let current = service_capacity(job)?;
        require_active(job)?;
        let wanted = Capacity {
            min: update.min.unwrap_or(current.min),
            desired: update.desired.unwrap_or(current.desired),
            max: update.max.unwrap_or(current.max),
        };
        check_capacity(&wanted, limits)?;
        check_processes(job, current.desired, wanted.desired, "desired")?;
        if wanted == current {
            return Ok(false);
        }
        set_capacity(job, wanted);
        Ok(true)
    })
    .await?;
    let converged = converge_job(cp, &job, Trigger::Changed, now_ms).await?;
    undelivered_is_an_error(converged.undelivered)?;
    Ok(job)
}

/// Titus' service job processes: a job may freeze its desired size in either direction, and a
/// change that moves it that way is a conflict (the job's own setting, not a bad request).
fn check_processes(job: &Job, from: u32, to: u32, field: &str) -> Result<(), ControlError> {
    let Some(service) = &job.job_descriptor.service else {
        return Ok(());
    };
    let processes = service.service_job_processes;
    let refused = if to > from && processes.disable_increase_desired {
        Some(("increase", "disableIncreaseDesired"))
    } else if to < from && processes.disable_decrease_desired {
        Some(("decrease", "disableDecreaseDesired"))
    } else {
        None
    };
    match refused {
        None => Ok(()),
        Some((direction, switch)) => Err(ControlError::Conflict {
            message: format!(
                "job {} does not allow its desired size to {direction} \
                 (serviceJobProcesses.{switch}); expected desired to stay {from}, or the job's \
                 processes changed first",
                job.id
            ),
            details: vec![field_error(
                field,
                format!("would {direction} desired from {from} to {to}"),
            )],
        }),
    }
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
pub async fn set_enabled<P: Ports>(
    cp: &ControlPlane<P>,
    job_id: &JobId,
    enabled: bool,
    now_ms: u64,
) -> Result<Job, ControlError> {
    let job = change_job(cp, job_id, |job| {
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
    let converged = converge_job(cp, &job, Trigger::Changed, now_ms).await?;
    undelivered_is_an_error(converged.undelivered)?;
    Ok(job)
}

/// Adds or replaces job attributes. The result must stay within the platform's attribute limits.
pub async fn update_attributes<P: Ports>(
    cp: &ControlPlane<P>,
    job_id: &JobId,
    upserts: &BTreeMap<String, String>,
) -> Result<Job, ControlError> {
    let limits = &cp.settings.admission.limits;
    if upserts.is_empty() {
        return Err(ControlError::invalid(
            "attributes",
            "is empty; expected at least one attribute to set",
        ));
    }
    change_job(cp, job_id, |job| {
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
pub async fn delete_attributes<P: Ports>(
    cp: &ControlPlane<P>,
    job_id: &JobId,
    keys: &BTreeSet<String>,
) -> Result<Job, ControlError> {
    if keys.is_empty() {
        return Err(ControlError::invalid(
            "keys",
            "is empty; expected at least one attribute key to delete",
        ));
    }
    change_job(cp, job_id, |job| {
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
async fn change_job<P, F>(
    cp: &ControlPlane<P>,
    job_id: &JobId,
    mut change: F,
) -> Result<Job, ControlError>
where
    P: Ports,
    F: FnMut(&mut Job) -> Result<bool, ControlError>,
{
    let store = cp.ports.jobs();
    for _ in 0..MAX_WRITE_ATTEMPTS {
        let mut job = store
            .get_job(job_id)
            .await?
            .ok_or_else(|| ControlError::not_found("job", job_id.as_str()))?;
        let expected_version = job.version;
        let before = job.clone();
        if !change(&mut job)? {
            return Ok(job);
        }
        let usage = UsageChange::between(Some(&before), &job, &cp.settings.admission.quotas);
        if let Some(refused) = beyond_any_use(&usage) {
            return Err(refused);
        }
        match store
            .update_job_charged(&job, expected_version, &usage)
            .await
        {
            Ok(()) => return Ok(job),
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ControlError::lost_race("job", job_id.as_str()))
}

/// Sets a service job's processes (Titus' `UpdateJobProcesses`): which way its desired size is
/// frozen.
pub async fn update_job_processes<P: Ports>(
    cp: &ControlPlane<P>,
    job_id: &JobId,
    processes: ServiceJobProcesses,
) -> Result<Job, ControlError> {
    change_job(cp, job_id, |job| {
        service_capacity(job)?;
        require_active(job)?;
        match job.job_descriptor.service.as_mut() {
            Some(service) if service.service_job_processes != processes => {
                service.service_job_processes = processes;
                job.version += 1;
                Ok(true)
            }
            _ => Ok(false),
        }
    })
    .await
}

/// Replaces a job's disruption budget (Titus' `UpdateJobDisruptionBudget`). Kept for the
/// eviction work to come; nothing enforces it yet.
pub async fn update_disruption_budget<P: Ports>(
    cp: &ControlPlane<P>,
    job_id: &JobId,
    budget: DisruptionBudget,
) -> Result<Job, ControlError> {
    titus_core::validation::validate_disruption_budget(&budget, &cp.settings.admission.limits)
        .map_err(ControlError::Invalid)?;
    change_job(cp, job_id, |job| {
        require_active(job)?;
        if job.job_descriptor.disruption_budget.as_deref() == Some(&budget) {
            return Ok(false);
        }
        job.job_descriptor.disruption_budget = Some(Box::new(budget.clone()));
        job.version += 1;
        Ok(true)
    })
    .await
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
}
