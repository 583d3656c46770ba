//! A job's dry run, as `nomad job plan` does: what the placement engine would answer for the
//! job's initial tasks on the agents as they are now, and whether a quota would refuse it,
//! storing nothing.

use std::collections::BTreeMap;

use titus_core::placement::DryRun;
use titus_core::quota::{QuotaExceeded, UsageChange};
use titus_core::{AgentStore, Job, JobDescriptor, JobId, JobStore, Ports, Task};
use titus_placement::TaskRequest;

use crate::{ControlError, ControlPlane};

/// Plans `descriptor`'s initial tasks on the agents' free capacity now. The tasks already
/// waiting for capacity are not counted against it, and uniqueHost or zoneBalance among other
/// jobs' tasks does not apply: the answer is what the job would get on an idle tick.
pub async fn plan_job<P: Ports>(
    cp: &ControlPlane<P>,
    descriptor: JobDescriptor,
    caller: &str,
    now_ms: u64,
) -> Result<DryRun, ControlError> {
    let job = Job::new(JobId::generate(), descriptor, caller.to_owned(), now_ms);
    let tasks = Task::initial_tasks_of(&job);
    let (agents, held) = futures::join!(
        cp.ports.agents().list_agents(),
        cp.ports.jobs().list_usage()
    );
    let (agents, held) = (agents?, held?);
    let views = titus_placement::agent_views(&agents, std::iter::empty());
    let requests: Vec<TaskRequest> = tasks
        .iter()
        .map(|t| TaskRequest::for_task(t, &job))
        .collect();
    let plan = titus_placement::plan(&requests, &views, cp.settings.scheduler.strategy());
    let mut placements: BTreeMap<String, u32> = BTreeMap::new();
    for p in &plan.placements {
        *placements.entry(p.agent_id.clone()).or_default() += 1;
    }
    let first = plan.unplaced.first();
    let usage = UsageChange::between(None, &job, &cp.settings.admission.quotas);
    let quota_refusal = usage.scopes.iter().find_map(|charge| {
        let used = held.get(&charge.scope.key()).copied().unwrap_or_default();
        QuotaExceeded::find(&usage, &charge.scope, &used).map(|e| e.to_string())
    });
    Ok(DryRun {
        tasks: tasks.len() as u32,
        placed: plan.placements.len() as u32,
        placements,
        unplaced: plan.unplaced.len() as u32,
        rejections: first.map(|u| u.rejections.clone()).unwrap_or_default(),
        insufficient: first
            .map(|u| u.insufficient.iter().map(|d| (*d).to_owned()).collect())
            .unwrap_or_default(),
        agents: agents.len() as u32,
        quota_refusal,
    })
}
