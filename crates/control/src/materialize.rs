//! Writing a new job's initial tasks. Accepting a job is one write (the job, marked as awaiting
//! its tasks); the scheduler's next tick writes the tasks and places them, and the reconciler
//! writes those of a job a crashed scheduler left waiting.
//!
//! The policy lives here, the store only offers conditional writes: a job killed before its
//! tasks were written gets none; a job changed meanwhile (scaled) is read again and gets the
//! tasks its current version calls for; a writer that dies part-way is completed by the next
//! (task ids derive from the job id, so none is written twice); a job that fails is logged and
//! left for the next call, so it holds back no other.

use titus_core::ports::MAX_INITIAL_TASKS_PER_WRITE;
use titus_core::{JobId, JobState, JobStore, Ports, StoreError, Task, TaskId};

use crate::ControlPlane;

/// How many jobs awaiting their tasks one call reads.
const JOBS_PER_CALL: u32 = 25;
/// How often one job's materialization is read again and retried after losing a race.
const MAX_ATTEMPTS: u32 = 5;

/// Writes the initial tasks of jobs awaiting them that were created before `created_before_ms`,
/// oldest job first, stopping once about `max_tasks` tasks were written (one job is always
/// completed, however large). Returns the tasks this call wrote. Only failing to read the
/// waiting jobs is an error. Safe to run concurrently and to repeat.
pub async fn materialize_jobs<P: Ports>(
    cp: &ControlPlane<P>,
    max_tasks: u32,
    created_before_ms: u64,
) -> Result<Vec<Task>, StoreError> {
    let waiting = cp
        .ports
        .jobs()
        .list_awaiting_jobs(JOBS_PER_CALL, created_before_ms)
        .await?;
    let mut written = Vec::new();
    for job_id in waiting {
        if !written.is_empty() && written.len() >= max_tasks as usize {
            break;
        }
        match materialize_job(cp, &job_id).await {
            Ok(tasks) => written.extend(tasks),
            Err(e) => tracing::warn!(
                job_id = %job_id,
                error = %e,
                "could not write a new job's tasks; it is tried again"
            ),
        }
    }
    Ok(written)
}

/// Writes the missing initial tasks of one job and clears its awaiting mark, in writes that
/// check the job's version, so that a kill or a capacity change made meanwhile is seen. Returns
/// the tasks written by this call; nothing for a job that does not await its tasks.
pub async fn materialize_job<P: Ports>(
    cp: &ControlPlane<P>,
    id: &JobId,
) -> Result<Vec<Task>, StoreError> {
    let store = cp.ports.jobs();
    let mut written = Vec::new();
    // The first attempt expects no task to exist; only a retry pays for reading which do.
    let mut check_existing = false;
    for _ in 0..MAX_ATTEMPTS {
        let Some((job, awaiting)) = store.get_job_awaiting(id).await? else {
            return Ok(written);
        };
        if !awaiting {
            return Ok(written);
        }
        // A job killed before its tasks were written gets none.
        let mut tasks = if job.status.state == JobState::Accepted {
            Task::initial_tasks_of(&job)
        } else {
            Vec::new()
        };
        if check_existing && !tasks.is_empty() {
            let ids: Vec<&TaskId> = tasks.iter().map(|t| &t.id).collect();
            let existing = store.existing_tasks(&ids).await?;
            tasks.retain(|t| !existing.contains(&t.id));
        }
        let chunks: Vec<&[Task]> = if tasks.is_empty() {
            vec![&[]]
        } else {
            tasks.chunks(MAX_INITIAL_TASKS_PER_WRITE).collect()
        };
        let last = chunks.len() - 1;
        let mut lost_race = false;
        for (i, chunk) in chunks.into_iter().enumerate() {
            match store.write_initial_tasks(&job, chunk, i == last).await {
                Ok(()) => written.extend_from_slice(chunk),
                // The job changed, or another writer made some of the tasks: read both again.
                Err(e) if e.is_conflict() => {
                    tracing::debug!(job_id = %id, error = %e, "materializing lost a race; reading again");
                    lost_race = true;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if !lost_race {
            return Ok(written);
        }
        check_existing = true;
    }
    Err(StoreError::Unavailable(format!(
        "could not write the initial tasks of job {id} in {MAX_ATTEMPTS} attempts; it stays \
         marked as awaiting them and is tried again"
    )))
}
