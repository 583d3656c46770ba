//! Task states, Titus' reason codes, and the forward-only transition rules.
//!
//! A task moves `Accepted → Launched → StartInitiated → Started → KillInitiated → Finished`, and may
//! skip states (a pending task that is killed goes straight to Finished) but never goes back. Status
//! messages can arrive duplicated, late or reordered; the rule "only a later state applies" makes
//! them harmless.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{JobId, TaskId};
use crate::job::JobState;

/// Where a task is in its life. The order of the variants is the order of the lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TaskState {
    /// Stored, waiting to be placed.
    Accepted,
    /// Placed on an agent and dispatched to it.
    Launched,
    /// The agent is pulling the image and creating the container.
    StartInitiated,
    /// The container runs.
    Started,
    /// A kill was asked for; the container is being stopped.
    KillInitiated,
    /// Over, with a reason.
    Finished,
}

impl TaskState {
    pub const ALL: [TaskState; 6] = [
        TaskState::Accepted,
        TaskState::Launched,
        TaskState::StartInitiated,
        TaskState::Started,
        TaskState::KillInitiated,
        TaskState::Finished,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Accepted => "Accepted",
            TaskState::Launched => "Launched",
            TaskState::StartInitiated => "StartInitiated",
            TaskState::Started => "Started",
            TaskState::KillInitiated => "KillInitiated",
            TaskState::Finished => "Finished",
        }
    }

    /// Parses a state name, ignoring case.
    pub fn parse(text: &str) -> Option<TaskState> {
        TaskState::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(text))
    }

    pub fn is_terminal(self) -> bool {
        self == TaskState::Finished
    }

    /// Whether the task holds resources on an agent in this state.
    pub fn occupies_agent(self) -> bool {
        matches!(
            self,
            TaskState::Launched
                | TaskState::StartInitiated
                | TaskState::Started
                | TaskState::KillInitiated
        )
    }

    /// The one rule of the state machine: only a strictly later state is reachable.
    pub fn can_transition_to(self, to: TaskState) -> bool {
        to > self
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Titus' reason codes: why a task reached its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum TaskReason {
    Normal,
    Failed,
    Killed,
    ScaledDown,
    StuckInState,
    StuckInKillingState,
    RuntimeLimitExceeded,
    Lost,
    InvalidRequest,
    Crashed,
    TransientSystemError,
    LocalSystemError,
    UnknownSystemError,
}

impl TaskReason {
    pub const ALL: [TaskReason; 13] = [
        TaskReason::Normal,
        TaskReason::Failed,
        TaskReason::Killed,
        TaskReason::ScaledDown,
        TaskReason::StuckInState,
        TaskReason::StuckInKillingState,
        TaskReason::RuntimeLimitExceeded,
        TaskReason::Lost,
        TaskReason::InvalidRequest,
        TaskReason::Crashed,
        TaskReason::TransientSystemError,
        TaskReason::LocalSystemError,
        TaskReason::UnknownSystemError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskReason::Normal => "normal",
            TaskReason::Failed => "failed",
            TaskReason::Killed => "killed",
            TaskReason::ScaledDown => "scaledDown",
            TaskReason::StuckInState => "stuckInState",
            TaskReason::StuckInKillingState => "stuckInKillingState",
            TaskReason::RuntimeLimitExceeded => "runtimeLimitExceeded",
            TaskReason::Lost => "lost",
            TaskReason::InvalidRequest => "invalidRequest",
            TaskReason::Crashed => "crashed",
            TaskReason::TransientSystemError => "transientSystemError",
            TaskReason::LocalSystemError => "localSystemError",
            TaskReason::UnknownSystemError => "unknownSystemError",
        }
    }

    pub fn parse(text: &str) -> Option<TaskReason> {
        TaskReason::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(text))
    }

    /// The platform's fault rather than the user's: such a failure does not use up user retries.
    pub fn is_system_error(self) -> bool {
        matches!(
            self,
            TaskReason::StuckInState
                | TaskReason::StuckInKillingState
                | TaskReason::Lost
                | TaskReason::Crashed
                | TaskReason::TransientSystemError
                | TaskReason::LocalSystemError
                | TaskReason::UnknownSystemError
        )
    }

    /// Whether a batch task that finished for this reason may be retried at all. `normal` (the
    /// work is done) and the kills a person or the platform asked for are never retried.
    pub fn is_retryable(self) -> bool {
        !matches!(
            self,
            TaskReason::Normal
                | TaskReason::Killed
                | TaskReason::ScaledDown
                | TaskReason::InvalidRequest
        )
    }
}

impl fmt::Display for TaskReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A task transition that the state machine forbids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransitionError {
    #[error("task {task_id} cannot move from {from} to {to}: task states only move forward")]
    NotForward {
        task_id: TaskId,
        from: TaskState,
        to: TaskState,
    },
    #[error("task {task_id} cannot move to Finished without a reason")]
    FinishedWithoutReason { task_id: TaskId },
}

/// A job transition that the state machine forbids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("job {job_id} cannot move from {from} to {to}: job states only move forward")]
pub struct JobTransitionError {
    pub job_id: JobId,
    pub from: JobState,
    pub to: JobState,
}
