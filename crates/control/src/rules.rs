//! The rules, with no I/O: whether a finished task is replaced and when, which tasks count toward
//! a service's capacity, how a batch job ends, which tasks are stuck and when a batch task's
//! runtime limit is up. Every use case decides through these, so an API call, a status message
//! and a repair always agree.

use std::collections::{BTreeMap, HashSet};

use titus_core::job::RetryPolicy;
use titus_core::{Job, JobState, JobType, Task, TaskReason, TaskState};

use crate::settings::Rules;

/// What becomes of a finished task's slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replacement {
    /// A replacement task (linked by resubmitOf) is placed from `not_before_ms`.
    Replace { not_before_ms: u64 },
    /// No replacement, and why.
    Keep(NoReplacement),
}

/// Why a finished task is not replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NoReplacement {
    /// The task is not finished.
    NotFinished,
    /// The job is being killed or is finished.
    JobNotActive,
    /// A batch task that did its work.
    Normal,
    /// Killed, scaledDown or invalidRequest: a person or the platform asked for it.
    NotRetryable(TaskReason),
    /// runtimeLimitExceeded in a job without retryOnRuntimeLimit.
    RuntimeLimitNotRetried,
    /// The job's retry policy allows no more.
    UserRetriesUsed { used: u32, allowed: u32 },
    /// The slot was replaced after system errors `max_system_retries` times.
    SystemRetriesUsed { used: u32, allowed: u32 },
    /// A service task that was scaled down.
    ScaledDown,
    /// A disabled service keeps its tasks but gets no new ones.
    ServiceDisabled,
}

impl NoReplacement {
    pub fn as_str(self) -> &'static str {
        match self {
            NoReplacement::NotFinished => "notFinished",
            NoReplacement::JobNotActive => "jobNotActive",
            NoReplacement::Normal => "normal",
            NoReplacement::NotRetryable(_) => "notRetryable",
            NoReplacement::RuntimeLimitNotRetried => "runtimeLimitNotRetried",
            NoReplacement::UserRetriesUsed { .. } => "userRetriesUsed",
            NoReplacement::SystemRetriesUsed { .. } => "systemRetriesUsed",
            NoReplacement::ScaledDown => "scaledDown",
            NoReplacement::ServiceDisabled => "serviceDisabled",
        }
    }
}

/// Whether and when the finished `task` of `job` is replaced, at `now_ms`.
///
/// Batch: `normal` is never retried, nor killed/scaledDown/invalidRequest; runtimeLimitExceeded
/// only with retryOnRuntimeLimit; system errors do not use up the policy's retries (but at most
/// `max_system_retries` of them per slot); any other failure uses one. Service: every task is
/// replaced unless it was scaled down or the job is disabled, however many retries the policy
/// names. Neither replaces tasks of a job being killed.
///
/// A task that finished while it was being killed (its kill got stuck, or its agent was lost) is
/// decided by why it was being killed: the kill still meant to stop it.
///
/// The delay is the policy's for retry number `resubmit_number + 1` of the slot, counting system
/// errors too, so a crash loop backs off. A service task that ran at least
/// `service_backoff_reset_after_ms` starts the back-off again.
pub fn replacement(job: &Job, task: &Task, now_ms: u64, config: &Rules) -> Replacement {
    use NoReplacement as No;
    if task.state() != TaskState::Finished {
        return Replacement::Keep(No::NotFinished);
    }
    if job.status.state != JobState::Accepted {
        return Replacement::Keep(No::JobNotActive);
    }
    let reason = deciding_reason(task);
    let (policy, attempt) = match (&job.job_descriptor.batch, &job.job_descriptor.service) {
        (Some(batch), _) => {
            let reason = reason.unwrap_or(TaskReason::UnknownSystemError);
            if reason == TaskReason::Normal {
                return Replacement::Keep(No::Normal);
            }
            if !reason.is_retryable() {
                return Replacement::Keep(No::NotRetryable(reason));
            }
            if reason == TaskReason::RuntimeLimitExceeded && !batch.retry_on_runtime_limit {
                return Replacement::Keep(No::RuntimeLimitNotRetried);
            }
            if reason.is_system_error() {
                if task.system_resubmit_number >= config.max_system_retries {
                    return Replacement::Keep(No::SystemRetriesUsed {
                        used: task.system_resubmit_number,
                        allowed: config.max_system_retries,
                    });
                }
            } else if task.user_retries_used() >= batch.retry_policy.retries() {
                return Replacement::Keep(No::UserRetriesUsed {
                    used: task.user_retries_used(),
                    allowed: batch.retry_policy.retries(),
                });
            }
            (batch.retry_policy, task.resubmit_number + 1)
        }
        (None, Some(service)) => {
            if reason == Some(TaskReason::ScaledDown) {
                return Replacement::Keep(No::ScaledDown);
            }
            if !service.enabled {
                return Replacement::Keep(No::ServiceDisabled);
            }
            let ran_ms = task
                .started_at_ms
                .map(|started| task.status.timestamp_ms.saturating_sub(started));
            let healthy = ran_ms.is_some_and(|ran| ran >= config.service_backoff_reset_after_ms);
            let attempt = if healthy { 1 } else { task.resubmit_number + 1 };
            (service.retry_policy, attempt)
        }
        (None, None) => return Replacement::Keep(No::JobNotActive),
    };
    Replacement::Replace {
        not_before_ms: now_ms.saturating_add(retry_delay_ms(&policy, attempt)),
    }
}

/// The reason a replacement is decided by: the kill's, when the task was being killed; else its
/// own.
pub fn deciding_reason(task: &Task) -> Option<TaskReason> {
    let own = task.status.reason_code;
    match task.status_history.last() {
        Some(previous) if previous.state == TaskState::KillInitiated => {
            previous.reason_code.or(own)
        }
        _ => own,
    }
}

fn retry_delay_ms(policy: &RetryPolicy, attempt: u32) -> u64 {
    policy.delay_ms(attempt)
}

/// Whether each of the job's initial slots has a task. A job whose initial tasks are not written
/// yet (it was accepted a moment ago) has empty slots and is not done, though no task is live.
pub fn every_slot_has_a_task(job: &Job, tasks: &[Task]) -> bool {
    let slots: HashSet<u32> = tasks.iter().map(|t| t.index).collect();
    (0..job.job_descriptor.initial_task_count()).all(|index| slots.contains(&index))
}

/// The last task of each slot's chain: the tasks no other task replaces.
pub fn chain_heads(tasks: &[Task]) -> Vec<&Task> {
    let replaced: HashSet<&str> = tasks
        .iter()
        .filter_map(|t| t.resubmit_of.as_ref().map(|id| id.as_str()))
        .collect();
    tasks
        .iter()
        .filter(|t| !replaced.contains(t.id.as_str()))
        .collect()
}

/// How a batch job ends once every task is Finished: `normal` when each slot's last task ended
/// normally, else `failed`. `None` while a task is not Finished.
pub fn batch_job_outcome(tasks: &[Task]) -> Option<&'static str> {
    if tasks.iter().any(|t| !t.state().is_terminal()) {
        return None;
    }
    // The last task of a slot is the one with the most resubmits before it.
    let mut last_of_slot: BTreeMap<u32, &Task> = BTreeMap::new();
    for task in tasks {
        let entry = last_of_slot.entry(task.index).or_insert(task);
        if task.resubmit_number > entry.resubmit_number {
            *entry = task;
        }
    }
    let all_normal = last_of_slot
        .values()
        .all(|t| t.status.reason_code == Some(TaskReason::Normal));
    Some(if all_normal { "normal" } else { "failed" })
}

/// What the reconciler does with a task that has been in its state a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stuck {
    /// Not stuck (yet).
    No,
    /// Finish it with this reason (and replace it per policy).
    Finish(TaskReason),
    /// Send its kill again (the first KillInitiated timeout).
    ResendKill,
}

/// Whether `task` of a job of `job_type` is stuck at `now_ms`, by Titus' timeouts. A
/// KillInitiated task gets its kill sent once more after one timeout, which the reconciler
/// records as a second KillInitiated status; one more timeout after that, it is finished.
pub fn stuck(task: &Task, job_type: JobType, now_ms: u64, config: &Rules) -> Stuck {
    let in_state_ms = now_ms.saturating_sub(task.status.timestamp_ms);
    match task.state() {
        TaskState::Launched if in_state_ms >= config.launched_timeout_ms => {
            Stuck::Finish(TaskReason::StuckInState)
        }
        TaskState::StartInitiated => {
            let timeout = match job_type {
                JobType::Batch => config.start_initiated_batch_timeout_ms,
                JobType::Service => config.start_initiated_service_timeout_ms,
            };
            if in_state_ms >= timeout {
                Stuck::Finish(TaskReason::StuckInState)
            } else {
                Stuck::No
            }
        }
        TaskState::KillInitiated if in_state_ms >= config.kill_initiated_timeout_ms => {
            if kill_was_resent(task) || task.agent_id.is_none() {
                Stuck::Finish(TaskReason::StuckInKillingState)
            } else {
                Stuck::ResendKill
            }
        }
        _ => Stuck::No,
    }
}

/// Whether the reconciler already sent this task's kill again: its previous status is a
/// KillInitiated too.
pub fn kill_was_resent(task: &Task) -> bool {
    task.state() == TaskState::KillInitiated
        && task
            .status_history
            .last()
            .is_some_and(|s| s.state == TaskState::KillInitiated)
}

/// When a Started batch task passes its runtime limit, with the kill grace period and the
/// reconciler's slack on top. `None` for service tasks and tasks not started.
pub fn runtime_deadline_ms(job: &Job, task: &Task, config: &Rules) -> Option<u64> {
    let batch = job.job_descriptor.batch.as_ref()?;
    if task.state() != TaskState::Started {
        return None;
    }
    let grace_ms = u64::from(job.job_descriptor.container.kill_grace_period_sec) * 1_000;
    Some(
        task.started_at_ms?
            .saturating_add(batch.runtime_limit_sec.saturating_mul(1_000))
            .saturating_add(grace_ms)
            .saturating_add(config.runtime_limit_slack_ms),
    )
}

/// Whether a task counts toward its service's desired capacity: not Finished, and not being
/// killed as scaledDown (a kill for any other reason is replaced, so its slot still counts).
pub fn counts_toward_capacity(task: &Task) -> bool {
    match task.state() {
        TaskState::Finished => false,
        TaskState::KillInitiated => task.status.reason_code != Some(TaskReason::ScaledDown),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use titus_core::{JobId, Limits};

    use super::*;

    const NOW: u64 = 1_000_000;

    fn job(kind: serde_json::Value) -> Job {
        let mut json = serde_json::json!({
            "owner": {"teamEmail": "team@example.com"},
            "applicationName": "app",
            "container": {"image": {"name": "busybox"}},
        });
        if let (Some(base), Some(extra)) = (json.as_object_mut(), kind.as_object()) {
            base.extend(extra.clone());
        }
        let descriptor =
            titus_core::parse_descriptor(json.to_string().as_bytes(), &Limits::default()).unwrap();
        Job::new(JobId::generate(), descriptor, "me".to_owned(), 0)
    }

    fn batch(policy: serde_json::Value) -> Job {
        job(serde_json::json!({"batch": {"size": 1, "retryPolicy": policy}}))
    }

    fn finished(task: &Task, reason: TaskReason, at_ms: u64) -> Task {
        let mut done = task.clone();
        done.transition(TaskState::Finished, Some(reason), "done", at_ms)
            .unwrap();
        done
    }

    fn first_task(job: &Job) -> Task {
        Task::initial(job, 0, 0)
    }

    fn config() -> Rules {
        Rules::default()
    }

    #[test]
    fn immediate_retry_is_eligible_at_once() {
        let job = batch(serde_json::json!({"immediate": {"retries": 1}}));
        let failed = finished(&first_task(&job), TaskReason::Failed, NOW);

        assert_eq!(
            replacement(&job, &failed, NOW, &config()),
            Replacement::Replace { not_before_ms: NOW }
        );
    }

    #[test]
    fn delayed_retry_waits_the_initial_delay_then_the_delay() {
        let job = batch(
            serde_json::json!({"delayed": {"initialDelayMs": 5000, "delayMs": 1000, "retries": 3}}),
        );
        let first = finished(&first_task(&job), TaskReason::Failed, NOW);
        let second = finished(&first.replacement(NOW, NOW + 5000), TaskReason::Failed, NOW);

        assert_eq!(
            replacement(&job, &first, NOW, &config()),
            Replacement::Replace {
                not_before_ms: NOW + 5000
            }
        );
        assert_eq!(
            replacement(&job, &second, NOW, &config()),
            Replacement::Replace {
                not_before_ms: NOW + 1000
            }
        );
    }

    #[test]
    fn exponential_backoff_doubles_up_to_its_cap() {
        let job = batch(
            serde_json::json!({"exponentialBackOff": {"initialDelayMs": 1000, "maxDelayIntervalMs": 3000, "retries": 5}}),
        );
        let mut task = finished(&first_task(&job), TaskReason::Failed, NOW);
        let mut delays = Vec::new();
        for _ in 0..4 {
            let Replacement::Replace { not_before_ms } = replacement(&job, &task, NOW, &config())
            else {
                panic!("expected a retry")
            };
            delays.push(not_before_ms - NOW);
            task = finished(
                &task.replacement(NOW, not_before_ms),
                TaskReason::Failed,
                NOW,
            );
        }

        assert_eq!(delays, [1000, 2000, 3000, 3000]);
    }

    #[test]
    fn user_retries_run_out_but_system_errors_do_not_count() {
        let job = batch(serde_json::json!({"immediate": {"retries": 1}}));
        let lost = finished(&first_task(&job), TaskReason::Lost, NOW);
        let after_lost = lost.replacement(NOW, NOW);
        let failed = finished(&after_lost, TaskReason::Failed, NOW);
        let after_failed = failed.replacement(NOW, NOW);
        let failed_again = finished(&after_failed, TaskReason::Failed, NOW);

        assert!(matches!(
            replacement(&job, &lost, NOW, &config()),
            Replacement::Replace { .. }
        ));
        assert!(matches!(
            replacement(&job, &failed, NOW, &config()),
            Replacement::Replace { .. }
        ));
        assert_eq!(
            replacement(&job, &failed_again, NOW, &config()),
            Replacement::Keep(NoReplacement::UserRetriesUsed {
                used: 1,
                allowed: 1
            })
        );
    }

    #[test]
    fn system_retries_are_capped() {
        let job = batch(serde_json::json!({"immediate": {"retries": 0}}));
        let config = Rules {
            max_system_retries: 2,
            ..config()
        };
        let mut task = finished(&first_task(&job), TaskReason::Crashed, NOW);
        let mut replaced = 0;
        while let Replacement::Replace { .. } = replacement(&job, &task, NOW, &config) {
            replaced += 1;
            task = finished(&task.replacement(NOW, NOW), TaskReason::Crashed, NOW);
        }

        assert_eq!(replaced, 2);
    }

    #[test]
    fn normal_killed_and_unasked_runtime_limits_are_never_retried() {
        let job = batch(serde_json::json!({"immediate": {"retries": 5}}));
        let task = first_task(&job);
        for (reason, why) in [
            (TaskReason::Normal, NoReplacement::Normal),
            (
                TaskReason::Killed,
                NoReplacement::NotRetryable(TaskReason::Killed),
            ),
            (
                TaskReason::InvalidRequest,
                NoReplacement::NotRetryable(TaskReason::InvalidRequest),
            ),
            (
                TaskReason::RuntimeLimitExceeded,
                NoReplacement::RuntimeLimitNotRetried,
            ),
        ] {
            assert_eq!(
                replacement(&job, &finished(&task, reason, NOW), NOW, &config()),
                Replacement::Keep(why),
                "{reason}"
            );
        }
        let asks = job_with_runtime_retry();
        let exceeded = finished(&first_task(&asks), TaskReason::RuntimeLimitExceeded, NOW);
        assert!(matches!(
            replacement(&asks, &exceeded, NOW, &config()),
            Replacement::Replace { .. }
        ));
    }

    #[test]
    fn a_task_that_finishes_while_being_killed_is_decided_by_the_kill() {
        let batch_job = batch(serde_json::json!({"immediate": {"retries": 5}}));
        let service_job = service(true);
        let killing = |job: &Job, reason: TaskReason| {
            let mut task = first_task(job);
            task.transition(TaskState::KillInitiated, Some(reason), "kill", NOW)
                .unwrap();
            task
        };

        let stuck_kill = finished(
            &killing(&batch_job, TaskReason::Killed),
            TaskReason::StuckInKillingState,
            NOW,
        );
        let lost_scaled_down = finished(
            &killing(&service_job, TaskReason::ScaledDown),
            TaskReason::Lost,
            NOW,
        );
        let lost_killed = finished(
            &killing(&service_job, TaskReason::Killed),
            TaskReason::Lost,
            NOW,
        );

        assert_eq!(
            replacement(&batch_job, &stuck_kill, NOW, &config()),
            Replacement::Keep(NoReplacement::NotRetryable(TaskReason::Killed))
        );
        assert_eq!(
            replacement(&service_job, &lost_scaled_down, NOW, &config()),
            Replacement::Keep(NoReplacement::ScaledDown)
        );
        assert!(matches!(
            replacement(&service_job, &lost_killed, NOW, &config()),
            Replacement::Replace { .. }
        ));
    }

    fn job_with_runtime_retry() -> Job {
        job(
            serde_json::json!({"batch": {"size": 1, "retryOnRuntimeLimit": true, "retryPolicy": {"immediate": {"retries": 1}}}}),
        )
    }

    #[test]
    fn a_job_being_killed_replaces_nothing() {
        let mut job = batch(serde_json::json!({"immediate": {"retries": 5}}));
        let failed = finished(&first_task(&job), TaskReason::Failed, NOW);
        job.transition(JobState::KillInitiated, "killed", "kill", NOW)
            .unwrap();

        assert_eq!(
            replacement(&job, &failed, NOW, &config()),
            Replacement::Keep(NoReplacement::JobNotActive)
        );
    }

    fn service(enabled: bool) -> Job {
        job(
            serde_json::json!({"service": {"capacity": {"min": 0, "desired": 1, "max": 5}, "enabled": enabled,
            "retryPolicy": {"exponentialBackOff": {"initialDelayMs": 1000, "maxDelayIntervalMs": 60000, "retries": 0}}}}),
        )
    }

    #[test]
    fn service_tasks_are_replaced_unless_scaled_down_or_disabled() {
        let job = service(true);
        let task = first_task(&job);

        for reason in [
            TaskReason::Normal,
            TaskReason::Failed,
            TaskReason::Killed,
            TaskReason::Lost,
        ] {
            assert!(
                matches!(
                    replacement(&job, &finished(&task, reason, NOW), NOW, &config()),
                    Replacement::Replace { .. }
                ),
                "{reason}"
            );
        }
        assert_eq!(
            replacement(
                &job,
                &finished(&task, TaskReason::ScaledDown, NOW),
                NOW,
                &config()
            ),
            Replacement::Keep(NoReplacement::ScaledDown)
        );
        assert_eq!(
            replacement(
                &service(false),
                &finished(&task, TaskReason::Failed, NOW),
                NOW,
                &config()
            ),
            Replacement::Keep(NoReplacement::ServiceDisabled)
        );
    }

    #[test]
    fn a_service_crash_loop_backs_off_and_a_long_run_resets_it() {
        let job = service(true);
        let mut task = first_task(&job);
        for _ in 0..3 {
            task = finished(&task, TaskReason::Failed, NOW).replacement(NOW, NOW);
        }
        let mut started = task.clone();
        started
            .transition(TaskState::Started, None, "", NOW)
            .unwrap();
        let quick = finished(&started, TaskReason::Failed, NOW + 10);
        let long = finished(
            &started,
            TaskReason::Failed,
            NOW + config().service_backoff_reset_after_ms,
        );

        assert_eq!(
            replacement(&job, &quick, NOW, &config()),
            Replacement::Replace {
                not_before_ms: NOW + 8000
            }
        );
        assert_eq!(
            replacement(&job, &long, NOW, &config()),
            Replacement::Replace {
                not_before_ms: NOW + 1000
            }
        );
    }

    #[test]
    fn a_batch_job_ends_normal_only_when_every_slot_ended_normal() {
        let job = job(serde_json::json!({"batch": {"size": 2}}));
        let a = finished(&Task::initial(&job, 0, 0), TaskReason::Failed, NOW);
        let a_retry = finished(&a.replacement(NOW, NOW), TaskReason::Normal, NOW);
        let b = finished(&Task::initial(&job, 1, 0), TaskReason::Normal, NOW);
        let b_failed = finished(&Task::initial(&job, 1, 0), TaskReason::Failed, NOW);

        assert_eq!(
            batch_job_outcome(&[a.clone(), a_retry.clone(), b]),
            Some("normal")
        );
        assert_eq!(
            batch_job_outcome(&[a.clone(), a_retry, b_failed]),
            Some("failed")
        );
        assert_eq!(
            batch_job_outcome(&[a.clone(), a.replacement(NOW, NOW)]),
            None
        );
        assert_eq!(chain_heads(&[a.clone(), a.replacement(NOW, NOW)]).len(), 1);
    }

    #[test]
    fn a_batch_job_with_an_empty_slot_is_not_done() {
        let job = job(serde_json::json!({"batch": {"size": 2}}));
        let a = finished(&Task::initial(&job, 0, 0), TaskReason::Normal, NOW);
        let b = finished(&Task::initial(&job, 1, 0), TaskReason::Normal, NOW);

        assert!(!every_slot_has_a_task(&job, &[]));
        assert!(!every_slot_has_a_task(&job, std::slice::from_ref(&a)));
        assert!(every_slot_has_a_task(&job, &[a.clone(), b]));
        assert!(!every_slot_has_a_task(
            &job,
            &[a.clone(), a.replacement(NOW, NOW)]
        ));
    }

    #[test]
    fn stuck_timeouts_follow_titus() {
        let batch_job = job(serde_json::json!({"batch": {"size": 1}}));
        let mut task = first_task(&batch_job);
        task.agent_id = Some("a1".to_owned());
        task.transition(TaskState::Launched, None, "", 0).unwrap();
        let config = config();

        assert_eq!(stuck(&task, JobType::Batch, 299_999, &config), Stuck::No);
        assert_eq!(
            stuck(&task, JobType::Batch, 300_000, &config),
            Stuck::Finish(TaskReason::StuckInState)
        );
        task.transition(TaskState::StartInitiated, None, "", 0)
            .unwrap();
        assert_eq!(stuck(&task, JobType::Batch, 300_000, &config), Stuck::No);
        assert_eq!(
            stuck(&task, JobType::Service, 300_000, &config),
            Stuck::Finish(TaskReason::StuckInState)
        );
        assert_eq!(
            stuck(&task, JobType::Batch, 720_000, &config),
            Stuck::Finish(TaskReason::StuckInState)
        );
        task.transition(TaskState::KillInitiated, Some(TaskReason::Killed), "", 0)
            .unwrap();
        assert_eq!(
            stuck(&task, JobType::Batch, 600_000, &config),
            Stuck::ResendKill
        );
        let previous = task.status.clone();
        task.status_history.push(previous);
        assert_eq!(
            stuck(&task, JobType::Batch, 600_000, &config),
            Stuck::Finish(TaskReason::StuckInKillingState)
        );
    }

    #[test]
    fn the_runtime_limit_counts_from_start_with_grace_and_slack() {
        let job = job(
            serde_json::json!({"batch": {"size": 1, "runtimeLimitSec": 60}, "container": {"image": {"name": "busybox"}, "killGracePeriodSec": 5}}),
        );
        let mut task = first_task(&job);
        assert_eq!(runtime_deadline_ms(&job, &task, &config()), None);
        task.transition(TaskState::Started, None, "", 1_000)
            .unwrap();

        assert_eq!(
            runtime_deadline_ms(&job, &task, &config()),
            Some(1_000 + 60_000 + 5_000 + config().runtime_limit_slack_ms)
        );
        assert_eq!(runtime_deadline_ms(&service(true), &task, &config()), None);
    }
}
