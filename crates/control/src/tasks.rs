//! The task-level writes every use case shares: finishing a task (giving its resources back to
//! its agent in the same write), storing a new task once, and reading a job's live tasks.
//!
//! Every write is conditional on the version read. New tasks have ids derived from their slot or
//! from the task they replace, so storing one twice (a redelivered message, a repair of what a
//! crash left undone) is a `Conflict` that means "already done".

use titus_core::ports::{AllocationStore, PageRequest};
use titus_core::{JobId, JobStore, Ports, Resources, StoreError, Task, TaskReason, TaskState};
use tracing::info;

use crate::ControlPlane;

/// How often a conditional write is re-read and retried after losing a race.
pub const MAX_WRITE_ATTEMPTS: u32 = 5;

/// Writes `next`, the Finished form of `current`, conditional on `current`'s version. A task
/// that held resources gives them back to its agent in the same transaction, so a duplicate
/// releases nothing.
pub async fn write_finished<P: Ports>(
    cp: &ControlPlane<P>,
    current: &Task,
    next: &Task,
) -> Result<(), StoreError> {
    match (
        current.state().occupies_agent(),
        current.agent_id.as_deref(),
    ) {
        (true, Some(agent_id)) => {
            cp.ports
                .allocations()
                .finish_and_release(
                    next,
                    current.version,
                    agent_id,
                    Resources::of_container(&current.resources),
                )
                .await
        }
        _ => cp.ports.jobs().update_task(next, current.version).await,
    }
}

/// Moves `task` to Finished with `reason`, giving back what it held. `None` when the task changed
/// since it was read (or is Finished already): it is decided again on the next run.
pub async fn finish_task<P: Ports>(
    cp: &ControlPlane<P>,
    task: &Task,
    reason: TaskReason,
    message: &str,
    now_ms: u64,
) -> Result<Option<Task>, StoreError> {
    let mut next = task.clone();
    if next
        .transition(TaskState::Finished, Some(reason), message, now_ms)
        .is_err()
    {
        return Ok(None);
    }
    match write_finished(cp, task, &next).await {
        Ok(()) => {
            info!(task_id = %task.id, job_id = %task.job_id, from = %task.state(), reason = %reason, "task finished by the control plane");
            Ok(Some(next))
        }
        Err(e) if e.is_conflict() => {
            info!(task_id = %task.id, "task changed while being finished; deciding again later");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Stores a new task; `false` when one with its id exists already.
pub async fn insert_once<P: Ports>(cp: &ControlPlane<P>, task: &Task) -> Result<bool, StoreError> {
    match cp.ports.jobs().insert_task(task).await {
        Ok(()) => Ok(true),
        Err(e) if e.is_conflict() => Ok(false),
        Err(e) => Err(e),
    }
}

/// A job's tasks that are not Finished, from the live-task index (which may lag).
pub async fn live_tasks<P: Ports>(
    cp: &ControlPlane<P>,
    job_id: &JobId,
) -> Result<Vec<Task>, StoreError> {
    let mut tasks = Vec::new();
    let mut page = PageRequest::first(PageRequest::MAX_PAGE_SIZE);
    loop {
        let result = cp.ports.jobs().list_active_job_tasks(job_id, &page).await?;
        tasks.extend(result.items);
        match result.next_cursor {
            Some(cursor) => page.cursor = Some(cursor),
            None => return Ok(tasks),
        }
    }
}
