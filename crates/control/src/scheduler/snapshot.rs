//! What a tick plans from: the lease, the agents, the oldest pending tasks (newly accepted jobs'
//! tasks written first, so they are placed in the same tick) and those tasks' jobs.

use std::collections::{BTreeSet, HashMap, HashSet};

use titus_core::ports::{Lease, LeaseError, LeaseStore};
use titus_core::{
    Agent, AgentStore, Job, JobId, JobState, JobStore, Ports, StoreError, Task, TaskId, TaskReason,
    TaskState,
};
use titus_placement::AgentView;
use tracing::{info, warn};

use super::TickSummary;
use crate::materialize::materialize_jobs;
use crate::settings::SchedulerSettings;
use crate::{ControlError, ControlPlane};

/// The state one tick works on.
#[derive(Debug)]
pub struct Snapshot {
    pub lease: Lease,
    pub agents: Vec<Agent>,
    /// Agents by id, as positions in `agents`.
    by_id: HashMap<String, usize>,
    /// The tasks to place, oldest first, all of jobs that are Accepted.
    pub pending: Vec<Task>,
    /// Whether more tasks were pending than one tick reads.
    pub more_than_read: bool,
    /// The jobs read so far, by id; `None` for a job that does not exist.
    pub jobs: HashMap<JobId, Option<Job>>,
}

impl Snapshot {
    pub fn agent(&self, id: &str) -> Option<&Agent> {
        self.by_id.get(id).and_then(|&i| self.agents.get(i))
    }

    pub fn job(&self, id: &JobId) -> Option<&Job> {
        self.jobs.get(id).and_then(Option::as_ref)
    }
}

/// Renews the lease while reading the agents and the pending tasks. Reading before the lease is
/// confirmed is harmless: nothing is written without it, and every placement commit checks its
/// epoch. `None` when another scheduler holds the lease (the summary says so).
pub async fn read<P: Ports>(
    cp: &ControlPlane<P>,
    owner: &str,
    now: u64,
    summary: &mut TickSummary,
) -> Result<Option<Snapshot>, ControlError> {
    let settings = &cp.settings.scheduler;
    let limit = settings.max_tasks_per_tick;
    // (Boxed, so that the tick's own future stays small.)
    let (lease, agents, pending) = futures::join!(
        Box::pin(cp.ports.leases().acquire_or_renew(
            SchedulerSettings::LEASE_NAME,
            owner,
            now,
            settings.lease_ttl_ms,
        )),
        Box::pin(cp.ports.agents().list_agents()),
        Box::pin(cp.ports.jobs().list_pending_tasks(limit + 1, now)),
    );
    let lease = match lease {
        Ok(lease) => lease,
        Err(LeaseError::HeldByOther { owner, epoch, .. }) => {
            info!(holder = %owner, epoch, "another scheduler holds the lease; stopping");
            summary.epoch = epoch;
            return Ok(None);
        }
        Err(LeaseError::Store(e)) => return Err(e.into()),
        Err(other) => return Err(StoreError::Internal(other.to_string()).into()),
    };
    summary.lease_held = true;
    summary.epoch = lease.epoch;
    let agents = agents?;
    let by_id = agents
        .iter()
        .enumerate()
        .map(|(i, a)| (a.id.clone(), i))
        .collect();
    Ok(Some(Snapshot {
        lease,
        agents,
        by_id,
        pending: pending?,
        more_than_read: false,
        jobs: HashMap::new(),
    }))
}

/// Writes newly accepted jobs' tasks and adds them to the pending ones (taken from the write,
/// not from the pending index, which may lag it); keeps the oldest `max_tasks_per_tick`; reads
/// their jobs; finishes waiting tasks of finished jobs; and keeps only tasks of active jobs.
pub async fn take_new_jobs<P: Ports>(
    cp: &ControlPlane<P>,
    snapshot: &mut Snapshot,
    now: u64,
    summary: &mut TickSummary,
) -> Result<(), ControlError> {
    let limit = cp.settings.scheduler.max_tasks_per_tick;
    let materialized = match materialize_jobs(cp, limit, u64::MAX).await {
        Ok(tasks) => tasks,
        // The tasks already waiting are still placed; the new jobs wait for the next tick.
        Err(e) => {
            warn!(error = %e, "could not read the jobs awaiting their tasks");
            Vec::new()
        }
    };
    summary.materialized = materialized.len() as u32;
    let pending = &mut snapshot.pending;
    if !materialized.is_empty() {
        let known: HashSet<TaskId> = pending.iter().map(|t| t.id.clone()).collect();
        pending.extend(
            materialized
                .into_iter()
                .filter(|t| !known.contains(&t.id) && t.not_before_ms <= now),
        );
        // Oldest first, as the pending index orders them.
        pending.sort_by(|a, b| {
            (a.created_at_ms.max(a.not_before_ms), a.id.as_str())
                .cmp(&(b.created_at_ms.max(b.not_before_ms), b.id.as_str()))
        });
    }
    snapshot.more_than_read = pending.len() > limit as usize;
    pending.truncate(limit as usize);
    let job_ids: Vec<JobId> = snapshot.pending.iter().map(|t| t.job_id.clone()).collect();
    load_jobs(cp, job_ids.iter(), &mut snapshot.jobs).await?;
    finish_orphans(cp, &snapshot.pending, &snapshot.jobs, now).await?;
    // Tasks whose job is being killed or gone are finished by the kill path, not placed.
    let jobs = &snapshot.jobs;
    snapshot.pending.retain(|t| {
        jobs.get(&t.job_id)
            .and_then(Option::as_ref)
            .is_some_and(|j| j.status.state == JobState::Accepted)
    });
    Ok(())
}

/// Reads the jobs of `ids` not read yet, at once.
pub async fn load_jobs<'a, P: Ports>(
    cp: &ControlPlane<P>,
    ids: impl Iterator<Item = &'a JobId>,
    jobs: &mut HashMap<JobId, Option<Job>>,
) -> Result<(), ControlError> {
    let missing: BTreeSet<&JobId> = ids.filter(|id| !jobs.contains_key(*id)).collect();
    let reads = missing.iter().map(|id| cp.ports.jobs().get_job(id));
    for (id, result) in missing.iter().zip(futures::future::join_all(reads).await) {
        jobs.insert((*id).clone(), result?);
    }
    Ok(())
}

/// Finishes waiting tasks of jobs that are already Finished: tasks written just as their job was
/// killed (a replacement, a new slot), which no kill will reach, and which would otherwise stay
/// in the pending index for good.
async fn finish_orphans<P: Ports>(
    cp: &ControlPlane<P>,
    pending: &[Task],
    jobs: &HashMap<JobId, Option<Job>>,
    now: u64,
) -> Result<(), ControlError> {
    let job_finished = |t: &Task| {
        jobs.get(&t.job_id)
            .and_then(Option::as_ref)
            .is_some_and(|j| j.status.state == JobState::Finished)
    };
    for task in pending.iter().filter(|t| job_finished(t)) {
        let mut finished = task.clone();
        if finished
            .transition(
                TaskState::Finished,
                Some(TaskReason::Killed),
                "its job had already finished",
                now,
            )
            .is_err()
        {
            continue;
        }
        match cp.ports.jobs().update_task(&finished, task.version).await {
            Ok(()) => {
                info!(task = %task.id, job = %task.job_id, "finished a task of a finished job")
            }
            // It moved on meanwhile; the next tick sees where it went.
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The agents as the engine sees them, with where the constrained jobs' tasks already run.
pub async fn agent_views<P: Ports>(
    cp: &ControlPlane<P>,
    snapshot: &Snapshot,
) -> Result<Vec<AgentView>, ControlError> {
    let job_ids: BTreeSet<&JobId> = snapshot.pending.iter().map(|t| &t.job_id).collect();
    let mut jobs_tasks = Vec::new();
    for job in job_ids
        .into_iter()
        .filter_map(|id| snapshot.job(id))
        .filter(|job| titus_placement::needs_job_counts(job))
    {
        jobs_tasks.push((job, cp.ports.jobs().list_all_job_tasks(&job.id).await?));
    }
    Ok(titus_placement::agent_views(
        &snapshot.agents,
        jobs_tasks
            .iter()
            .map(|(job, tasks)| (*job, tasks.as_slice())),
    ))
}
