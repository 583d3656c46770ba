//! A task: one run of a job's container, with its status history.

use serde::{Deserialize, Serialize};

use crate::ids::{JobId, TaskId};
use crate::job::{ContainerResources, Job};
use crate::state::{TaskReason, TaskState, TransitionError};

/// A task's status at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    pub state: TaskState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<TaskReason>,
    #[serde(default)]
    pub reason_message: String,
    pub timestamp_ms: u64,
}

/// A stored task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub id: TaskId,
    pub job_id: JobId,
    /// The task's slot in its job: the batch index, or the service ordinal. A replacement keeps it.
    pub index: u32,
    /// The first task of this slot's chain of replacements.
    pub original_id: TaskId,
    /// The task this one replaces, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resubmit_of: Option<TaskId>,
    /// How many tasks came before this one in its chain.
    #[serde(default)]
    pub resubmit_number: u32,
    /// Of those, how many were replaced because of a system error (not counted against retries).
    #[serde(default)]
    pub system_resubmit_number: u32,
    pub status: TaskStatus,
    #[serde(default)]
    pub status_history: Vec<TaskStatus>,
    /// The agent the task was placed on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// That agent's incarnation when the task was placed: only that life of the agent may run
    /// it or report on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_incarnation: Option<u64>,
    /// What the task reserves on its agent, copied from the job when the task was made.
    pub resources: ContainerResources,
    pub created_at_ms: u64,
    /// The task is not placed before this time (a delayed retry); 0 means at once.
    #[serde(default)]
    pub not_before_ms: u64,
    /// When the scheduler last sent the task to its agent. A task still Launched long after this
    /// was not acknowledged and is sent again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatched_at_ms: Option<u64>,
    /// When the container started; the runtime-limit clock starts here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    #[serde(default)]
    pub oom_killed: bool,
    /// Bumped by every write; writes are conditional on it.
    pub version: u64,
}

impl Task {
    /// A job's first task for slot `index`, in state Accepted.
    pub fn initial(job: &Job, index: u32, now_ms: u64) -> Task {
        let id = TaskId::for_initial_slot(&job.id, index);
        Task {
            original_id: id.clone(),
            id,
            job_id: job.id.clone(),
            index,
            resubmit_of: None,
            resubmit_number: 0,
            system_resubmit_number: 0,
            status: TaskStatus {
                state: TaskState::Accepted,
                reason_code: None,
                reason_message: "task accepted".to_owned(),
                timestamp_ms: now_ms,
            },
            status_history: Vec::new(),
            agent_id: None,
            agent_incarnation: None,
            resources: job.job_descriptor.container.resources,
            created_at_ms: now_ms,
            not_before_ms: 0,
            dispatched_at_ms: None,
            started_at_ms: None,
            exit_code: None,
            oom_killed: false,
            version: 1,
        }
    }

    /// A job's first tasks, one per slot. Ids are derived from the job id, so building them
    /// twice gives the same tasks.
    pub fn initial_tasks_of(job: &Job) -> Vec<Task> {
        (0..job.job_descriptor.initial_task_count())
            .map(|index| Task::initial(job, index, job.created_at_ms))
            .collect()
    }

    /// The task that replaces this one in its slot, eligible for placement from `not_before_ms`.
    pub fn replacement(&self, now_ms: u64, not_before_ms: u64) -> Task {
        let system_error = self
            .status
            .reason_code
            .is_some_and(TaskReason::is_system_error);
        Task {
            id: TaskId::for_replacement_of(&self.id),
            job_id: self.job_id.clone(),
            index: self.index,
            original_id: self.original_id.clone(),
            resubmit_of: Some(self.id.clone()),
            resubmit_number: self.resubmit_number + 1,
            system_resubmit_number: self.system_resubmit_number + u32::from(system_error),
            status: TaskStatus {
                state: TaskState::Accepted,
                reason_code: None,
                reason_message: format!("replaces task {}", self.id),
                timestamp_ms: now_ms,
            },
            status_history: Vec::new(),
            agent_id: None,
            agent_incarnation: None,
            resources: self.resources,
            created_at_ms: now_ms,
            not_before_ms,
            dispatched_at_ms: None,
            started_at_ms: None,
            exit_code: None,
            oom_killed: false,
            version: 1,
        }
    }

    /// Retries of this slot that count against the user's retry policy.
    pub fn user_retries_used(&self) -> u32 {
        self.resubmit_number
            .saturating_sub(self.system_resubmit_number)
    }

    pub fn state(&self) -> TaskState {
        self.status.state
    }

    /// Moves the task to a later state, keeping the old status in the history. Finished needs a
    /// reason. On error the task is unchanged.
    pub fn transition(
        &mut self,
        to: TaskState,
        reason_code: Option<TaskReason>,
        reason_message: &str,
        now_ms: u64,
    ) -> Result<(), TransitionError> {
        let from = self.status.state;
        if !from.can_transition_to(to) {
            return Err(TransitionError::NotForward {
                task_id: self.id.clone(),
                from,
                to,
            });
        }
        if to == TaskState::Finished && reason_code.is_none() {
            return Err(TransitionError::FinishedWithoutReason {
                task_id: self.id.clone(),
            });
        }
        if to == TaskState::Started {
            self.started_at_ms = Some(now_ms);
        }
        let previous = std::mem::replace(
            &mut self.status,
            TaskStatus {
                state: to,
                reason_code,
                reason_message: reason_message.to_owned(),
                timestamp_ms: now_ms,
            },
        );
        self.status_history.push(previous);
        self.version += 1;
        Ok(())
    }
}
