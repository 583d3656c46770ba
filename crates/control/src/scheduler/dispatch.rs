//! Sending committed placements to their agents' queues, and again those their agents did not
//! acknowledge in time. A placement not delivered stays Launched and is sent again once the
//! acknowledgement timeout passes; one never acknowledged is finished as stuck by the reconciler.

use std::collections::BTreeMap;

use titus_core::messages::{AgentCommand, LaunchTask};
use titus_core::ports::{CommandQueue, PlacementWrite};
use titus_core::{JobStore, Ports, Resources};
use tracing::{info, warn};

use super::snapshot::{load_jobs, Snapshot};
use crate::{ControlError, ControlPlane};

/// Sends each committed placement to its agent's queue (derived from the agent's id), one
/// batched send per agent. Returns how many were not delivered.
pub async fn dispatch<P: Ports>(
    cp: &ControlPlane<P>,
    committed: &[PlacementWrite],
    snapshot: &Snapshot,
) -> u32 {
    let mut per_agent: BTreeMap<&str, Vec<AgentCommand>> = BTreeMap::new();
    for write in committed {
        let Some(job) = snapshot.job(&write.task.job_id) else {
            continue;
        };
        per_agent
            .entry(write.agent_id.as_str())
            .or_default()
            .push(AgentCommand::LaunchTask(LaunchTask::for_task(
                &write.task,
                job,
            )));
    }
    let sends = per_agent
        .iter()
        .map(|(agent_id, commands)| cp.ports.commands().send_commands(agent_id, commands));
    let mut failed = 0u32;
    for (result, (agent_id, commands)) in futures::future::join_all(sends)
        .await
        .into_iter()
        .zip(&per_agent)
    {
        match result {
            Ok(failures) => failed += failures.len() as u32,
            Err(e) => {
                warn!(agent_id, error = %e, "dispatch failed; will send again after the acknowledgement timeout");
                failed += commands.len() as u32;
            }
        }
    }
    failed
}

/// Sends again the placements whose agents have not acknowledged them in time. Returns how many
/// were sent again.
pub async fn redispatch<P: Ports>(
    cp: &ControlPlane<P>,
    snapshot: &mut Snapshot,
    now: u64,
) -> Result<u32, ControlError> {
    let settings = &cp.settings.scheduler;
    let stale = cp
        .ports
        .jobs()
        .list_unacknowledged_tasks(
            settings.max_tasks_per_tick,
            now.saturating_sub(settings.ack_timeout_ms),
        )
        .await?;
    if stale.is_empty() {
        return Ok(0);
    }
    load_jobs(cp, stale.iter().map(|t| &t.job_id), &mut snapshot.jobs).await?;
    let mut resent = Vec::new();
    for task in stale {
        let Some(agent_id) = task.agent_id.as_deref() else {
            continue;
        };
        if snapshot.agent(agent_id).is_none() {
            // The agent is gone; the reconciler declares its tasks lost.
            continue;
        }
        let mut updated = task.clone();
        updated.dispatched_at_ms = Some(now);
        updated.version += 1;
        match cp.ports.jobs().update_task(&updated, task.version).await {
            Ok(()) => resent.push(PlacementWrite {
                agent_id: agent_id.to_owned(),
                agent_incarnation: updated.agent_incarnation.unwrap_or_default(),
                resources: Resources::of_container(&updated.resources),
                agent_capacity: Resources::ZERO,
                expected_version: task.version,
                task: updated,
            }),
            // The agent acknowledged in the meantime.
            Err(e) if e.is_conflict() => {}
            Err(e) => return Err(e.into()),
        }
    }
    let failed = dispatch(cp, &resent, snapshot).await;
    if !resent.is_empty() {
        info!(
            count = resent.len(),
            failed, "sent unacknowledged placements again"
        );
    }
    Ok(resent.len() as u32)
}
