//! The placement engine's answer for a tick, as the writes that apply it. Pure: no I/O.

use titus_core::ports::PlacementWrite;
use titus_core::{Task, TaskState};
use titus_placement::{AgentView, Strategy, TaskRequest, Unplaced};
use tracing::info;

use super::snapshot::Snapshot;

/// What a tick will commit, and the pending tasks that fit nowhere, with why.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Planned {
    pub writes: Vec<PlacementWrite>,
    pub unplaced: Vec<Unplaced>,
}

/// Plans the snapshot's pending tasks on `views` and turns each placement into the write that
/// moves its task to Launched on its agent at `now`.
pub fn plan(snapshot: &Snapshot, views: &[AgentView], strategy: Strategy, now: u64) -> Planned {
    let requests: Vec<TaskRequest> = snapshot
        .pending
        .iter()
        .filter_map(|t| Some(TaskRequest::for_task(t, snapshot.job(&t.job_id)?)))
        .collect();
    let plan = titus_placement::plan(&requests, views, strategy);
    for unplaced in plan.unplaced.iter().take(5) {
        info!(task = %unplaced.task_id, reasons = ?unplaced.reasons, "task not placed");
    }
    let by_id: std::collections::HashMap<&str, &Task> = snapshot
        .pending
        .iter()
        .map(|t| (t.id.as_str(), t))
        .collect();
    let mut writes = Vec::with_capacity(plan.placements.len());
    for placement in &plan.placements {
        let (Some(task), Some(agent)) = (
            by_id.get(placement.task_id.as_str()),
            snapshot.agent(placement.agent_id.as_str()),
        ) else {
            continue;
        };
        let mut launched = (*task).clone();
        launched.agent_id = Some(agent.id.clone());
        launched.agent_incarnation = Some(agent.incarnation);
        launched.dispatched_at_ms = Some(now);
        if launched
            .transition(
                TaskState::Launched,
                None,
                &format!("placed on agent {}", agent.id),
                now,
            )
            .is_err()
        {
            continue;
        }
        writes.push(PlacementWrite {
            task: launched,
            expected_version: task.version,
            agent_id: agent.id.clone(),
            agent_incarnation: agent.incarnation,
            resources: placement.resources,
            agent_capacity: agent.capacity,
        });
    }
    Planned {
        writes,
        unplaced: plan.unplaced,
    }
}
