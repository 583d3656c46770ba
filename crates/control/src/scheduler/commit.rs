//! Committing a tick's placements: fenced transactions of at most
//! [`MAX_TRANSACTION_ITEMS`] items, each checking the lease's epoch, every task's version and
//! each agent's room. A chunk that lost a race is skipped (its tasks are planned again next
//! tick); a lost lease stops everything.

use titus_core::ports::{
    AllocationStore, CommitError, Lease, PlacementWrite, StoreError, MAX_TRANSACTION_ITEMS,
};
use titus_core::Ports;
use tracing::{info, warn};

use crate::{ControlError, ControlPlane};

/// What was committed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Committed {
    pub placed: Vec<PlacementWrite>,
    /// Placements refused by a conditional write.
    pub conflicts: u32,
    /// Whether the lease was found lost mid-tick.
    pub lease_lost: bool,
}

/// Splits placements into commits that fit one transaction: the lease check, each task, and one
/// update per distinct agent in the chunk.
pub fn chunk_placements(placements: &[PlacementWrite]) -> Vec<Vec<PlacementWrite>> {
    let mut chunks = Vec::new();
    let mut current: Vec<PlacementWrite> = Vec::new();
    let mut agents: Vec<&str> = Vec::new();
    for placement in placements {
        let new_agent = !agents.contains(&placement.agent_id.as_str());
        let items = 1 + current.len() + agents.len() + 1 + usize::from(new_agent);
        if items > MAX_TRANSACTION_ITEMS {
            chunks.push(std::mem::take(&mut current));
            agents.clear();
        }
        if !agents.contains(&placement.agent_id.as_str()) {
            agents.push(&placement.agent_id);
        }
        current.push(placement.clone());
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// Commits the placements chunk by chunk. What was committed before an error is returned with
/// it, so that it is still dispatched.
pub async fn commit<P: Ports>(
    cp: &ControlPlane<P>,
    lease: &Lease,
    writes: &[PlacementWrite],
) -> (Committed, Result<(), ControlError>) {
    let mut committed = Committed::default();
    for chunk in chunk_placements(writes) {
        match cp
            .ports
            .allocations()
            .commit_placements(lease, &chunk)
            .await
        {
            Ok(()) => committed.placed.extend(chunk),
            Err(CommitError::LeaseLost { epoch }) => {
                warn!(epoch, "lease lost mid-tick; committing nothing more");
                committed.lease_lost = true;
                break;
            }
            Err(CommitError::Conflict(detail)) => {
                info!(%detail, tasks = chunk.len(), "placement chunk lost a race");
                committed.conflicts += chunk.len() as u32;
            }
            Err(CommitError::Store(e)) => return (committed, Err(e.into())),
            Err(other) => {
                return (
                    committed,
                    Err(StoreError::Internal(other.to_string()).into()),
                )
            }
        }
    }
    (committed, Ok(()))
}
