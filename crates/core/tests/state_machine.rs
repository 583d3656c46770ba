//! Property tests of the task and job state machines: forward only, whatever order, duplication
//! or lateness the status messages arrive in.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use titus_core::{
    parse_descriptor, Job, JobId, JobState, Limits, Task, TaskReason, TaskState, TransitionError,
};

fn job() -> Job {
    let json = br#"{"owner": {"teamEmail": "team@example.com"}, "applicationName": "app",
        "container": {"image": {"name": "alpine"}}, "batch": {"size": 1}}"#;
    let descriptor = parse_descriptor(json, &Limits::titus_defaults()).expect("valid descriptor");
    Job::new(JobId::generate(), descriptor, "alice".to_owned(), 0)
}

fn task() -> Task {
    Task::initial(&job(), 0, 0)
}

/// A status message: the state it reports and the reason, if any.
fn task_message() -> impl Strategy<Value = (TaskState, Option<TaskReason>)> {
    (
        select(TaskState::ALL.to_vec()),
        option::of(select(TaskReason::ALL.to_vec())),
    )
}

fn job_message() -> impl Strategy<Value = (JobState, String)> {
    (select(JobState::ALL.to_vec()), "[a-zA-Z]{0,8}")
}

fn reached(task: &Task, state: TaskState) -> bool {
    task.status.state == state || task.status_history.iter().any(|s| s.state == state)
}

proptest! {
    #[test]
    fn task_transitions_follow_the_forward_only_rules(
        messages in vec(task_message(), 0..24)
    ) {
        let mut task = task();
        for (step, (to, reason)) in messages.into_iter().enumerate() {
            let before = task.clone();
            let now_ms = 1_000 * (step as u64 + 1);

            let result = task.transition(to, reason, "status message", now_ms);

            let should_apply = to > before.state()
                && !(to == TaskState::Finished && reason.is_none());
            prop_assert_eq!(result.is_ok(), should_apply, "{:?} -> {:?} {:?}", before.state(), to, reason);
            prop_assert!(task.state() >= before.state(), "state went back");
            match result {
                Ok(()) => {
                    prop_assert_eq!(task.state(), to);
                    prop_assert_eq!(task.status.reason_code, reason);
                    prop_assert_eq!(task.status.timestamp_ms, now_ms);
                    prop_assert_eq!(task.status_history.len(), before.status_history.len() + 1);
                    prop_assert_eq!(task.status_history.last(), Some(&before.status));
                    prop_assert_eq!(task.version, before.version + 1);
                }
                Err(_) => prop_assert_eq!(&task, &before, "a rejected transition changed the task"),
            }
            if task.state() == TaskState::Finished {
                prop_assert!(task.status.reason_code.is_some(), "Finished without a reason");
            }
            prop_assert_eq!(
                task.started_at_ms.is_some(),
                reached(&task, TaskState::Started),
                "started_at_ms must be set exactly when Started was reached"
            );
            if before.state().is_terminal() {
                prop_assert!(task.transition(to, reason, "late", now_ms).is_err());
            }
        }
    }

    #[test]
    fn a_duplicated_task_message_changes_nothing_the_second_time(
        messages in vec(task_message(), 1..16)
    ) {
        let mut task = task();
        for (step, (to, reason)) in messages.into_iter().enumerate() {
            let now_ms = 1_000 * (step as u64 + 1);
            let _ = task.transition(to, reason, "status message", now_ms);
            let after_first = task.clone();

            let second = task.transition(to, reason, "status message", now_ms + 1);

            prop_assert!(second.is_err());
            prop_assert_eq!(&task, &after_first);
        }
    }

    #[test]
    fn a_finished_task_accepts_nothing(
        path in vec(select(TaskState::ALL[1..5].to_vec()), 0..4),
        reason in select(TaskReason::ALL.to_vec())
    ) {
        let mut task = task();
        for state in path {
            let _ = task.transition(state, None, "on the way", 1);
        }
        task.transition(TaskState::Finished, Some(reason), "done", 2).expect("Finished is later");
        let finished = task.clone();

        for to in TaskState::ALL {
            for reason in TaskReason::ALL.map(Some).into_iter().chain([None]) {
                prop_assert!(task.transition(to, reason, "late", 3).is_err());
            }
        }

        prop_assert_eq!(task, finished);
    }

    #[test]
    fn job_transitions_follow_the_forward_only_rules(
        messages in vec(job_message(), 0..12)
    ) {
        let mut job = job();
        for (step, (to, reason_code)) in messages.into_iter().enumerate() {
            let before = job.clone();
            let now_ms = 1_000 * (step as u64 + 1);

            let result = job.transition(to, &reason_code, "because", now_ms);

            prop_assert_eq!(result.is_ok(), to > before.status.state);
            prop_assert!(job.status.state >= before.status.state, "state went back");
            match result {
                Ok(()) => {
                    prop_assert_eq!(job.status.state, to);
                    prop_assert_eq!(&job.status.reason_code, &reason_code);
                    prop_assert_eq!(job.status_history.len(), before.status_history.len() + 1);
                    prop_assert_eq!(job.status_history.last(), Some(&before.status));
                    prop_assert_eq!(job.version, before.version + 1);
                    let again = job.clone();
                    prop_assert!(job.transition(to, &reason_code, "because", now_ms).is_err());
                    prop_assert_eq!(&job, &again, "a duplicate changed the job");
                }
                Err(_) => prop_assert_eq!(&job, &before, "a rejected transition changed the job"),
            }
            if before.status.state == JobState::Finished {
                prop_assert!(result.is_err(), "Finished is terminal");
            }
        }
    }
}

#[test]
fn finishing_without_a_reason_is_refused_with_its_own_error() {
    let mut task = task();
    let before = task.clone();

    let error = task
        .transition(TaskState::Finished, None, "done", 5)
        .expect_err("Finished needs a reason");

    assert!(matches!(
        error,
        TransitionError::FinishedWithoutReason { .. }
    ));
    assert_eq!(task, before);
}

#[test]
fn a_late_message_for_an_earlier_state_is_refused() {
    let mut task = task();
    task.transition(TaskState::Started, None, "running", 5)
        .expect("forward");

    let error = task
        .transition(TaskState::Launched, None, "late", 6)
        .expect_err("Launched is earlier than Started");

    assert!(matches!(
        error,
        TransitionError::NotForward {
            from: TaskState::Started,
            to: TaskState::Launched,
            ..
        }
    ));
    assert_eq!(task.started_at_ms, Some(5));
}

#[test]
fn a_pending_task_killed_skips_straight_to_finished_without_a_start_time() {
    let mut task = task();

    task.transition(TaskState::Finished, Some(TaskReason::Killed), "killed", 7)
        .expect("a skip forward is allowed");

    assert_eq!(task.state(), TaskState::Finished);
    assert_eq!(task.started_at_ms, None);
    assert_eq!(task.version, 2);
}
