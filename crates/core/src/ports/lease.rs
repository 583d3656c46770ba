//! The scheduler's leader lease and the fenced writes it guards.
//!
//! One scheduler at a time holds the lease; every placement commit carries a check that the lease
//! epoch is still the holder's. The epoch grows whenever the owner changes, so a scheduler that
//! was paused, slow or invoked twice after losing the lease commits nothing.

use std::future::Future;

use crate::agent::Resources;
use crate::ports::store::StoreError;
use crate::task::Task;

/// A held lease. `epoch` is the fencing token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    pub owner: String,
    pub epoch: u64,
    pub expires_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    #[error("lease {name} is held by {owner:?} until {expires_at_ms} (epoch {epoch})")]
    HeldByOther {
        name: String,
        owner: String,
        epoch: u64,
        expires_at_ms: u64,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Acquires, renews and releases leases.
pub trait LeaseStore: Send + Sync {
    /// Renews the lease if `owner` holds it (keeping the epoch), else takes it if it is free or
    /// expired (a new epoch), else `HeldByOther`.
    fn acquire_or_renew(
        &self,
        name: &str,
        owner: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> impl Future<Output = Result<Lease, LeaseError>> + Send;

    /// Gives the lease up early so another scheduler need not wait for it to expire.
    fn release(&self, lease: &Lease) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// One task placed on an agent: the task as read and as it will be written.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacementWrite {
    /// The task in Launched with its agent set.
    pub task: Task,
    /// The version the task had when it was read in state Accepted.
    pub expected_version: u64,
    pub agent_id: String,
    /// The agent's incarnation as the scheduler read it; the commit fails if it changed (the
    /// agent was declared lost and came back).
    pub agent_incarnation: u64,
    /// What the task holds on the agent.
    pub resources: Resources,
    /// The agent's capacity as the scheduler read it; the commit fails if it changed.
    pub agent_capacity: Resources,
}

/// How a commit of placements ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// The lease's epoch changed: this scheduler is no longer the leader and must stop.
    #[error("lease lost: epoch {epoch} is no longer current")]
    LeaseLost { epoch: u64 },
    /// A task changed or an agent lacked room; the chunk was not applied and is re-planned.
    #[error("placement conflict: {0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Applies placements and releases, keeping tasks and agents' allocations consistent.
pub trait AllocationStore: Send + Sync {
    /// Atomically moves each task to Launched and adds its resources to its agent, on condition
    /// that every task is unchanged, every agent is active with room, and the lease epoch holds.
    /// All or nothing; callers keep chunks within `max_commit_tasks`.
    fn commit_placements(
        &self,
        lease: &Lease,
        placements: &[PlacementWrite],
    ) -> impl Future<Output = Result<(), CommitError>> + Send;

    /// Atomically writes a task that stops holding resources (Finished) and gives its resources
    /// back to its agent. Conflict if the task changed, so a duplicate message releases nothing.
    fn finish_and_release(
        &self,
        task: &Task,
        expected_version: u64,
        agent_id: &str,
        resources: Resources,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
