//! The leader lease and the fenced allocation writes, as the DynamoDB adapter makes them: the
//! lease renewed by its owner (same epoch) or taken once free or expired (the next epoch); a
//! placement commit one transaction of the lease check, each task's write conditional on its
//! version, and each agent's allocation added on condition that it is active at the incarnation
//! and capacity the scheduler read and stays within that capacity; a finish one transaction of
//! the task's write and its agent's release.

use std::collections::BTreeMap;

use titus_core::ports::{
    AllocationStore, CommitError, Lease, LeaseError, LeaseStore, PlacementWrite,
    MAX_TRANSACTION_ITEMS,
};
use titus_core::{AgentState, Resources, StoreError, Task};

use crate::agents::dimensions;
use crate::metering::Consistency;
use crate::transaction::{refused_at, refused_count, transact, Action, TableName, Transacted};
use crate::world::{MemoryWorld, State};

/// A lease's item. The scaler keeps its memory on its lease's item too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LeaseRow {
    pub(crate) owner: String,
    pub(crate) epoch: u64,
    pub(crate) expires_at_ms: u64,
    /// The scaler's state as JSON.
    pub(crate) scaler_state: Option<String>,
}

impl LeaseRow {
    pub(crate) fn size(&self) -> usize {
        100 + self.owner.len() + self.scaler_state.as_ref().map_or(0, String::len)
    }

    fn lease(&self, name: &str) -> Lease {
        Lease {
            name: name.to_owned(),
            owner: self.owner.clone(),
            epoch: self.epoch,
            expires_at_ms: self.expires_at_ms,
        }
    }

    /// Whether `lease` is still this row's: same owner, same epoch.
    pub(crate) fn held_by(&self, lease: &Lease) -> bool {
        self.owner == lease.owner && self.epoch == lease.epoch
    }
}

/// Writes a lease row with a plain UpdateItem.
fn write_lease(state: &mut State, name: &str, row: LeaseRow) {
    let before = state.leases.get(name).map_or(0, LeaseRow::size);
    state.meter.write(before, row.size(), false);
    state.leases.insert(name.to_owned(), row);
}

fn acquire_or_renew(
    state: &mut State,
    name: &str,
    owner: &str,
    now_ms: u64,
    ttl_ms: u64,
) -> Result<Lease, LeaseError> {
    let expires_at_ms = now_ms.saturating_add(ttl_ms);
    // Renewal: we hold it (even if it lapsed, nobody took it, so our epoch is still the newest).
    state.meter.request("DynamoDB.UpdateItem");
    let current = state.leases.get(name).cloned();
    if let Some(row) = current.as_ref().filter(|r| r.owner == owner) {
        let renewed = LeaseRow {
            expires_at_ms,
            ..row.clone()
        };
        let lease = renewed.lease(name);
        write_lease(state, name, renewed);
        return Ok(lease);
    }
    state.meter.write(0, 1, false);
    // Takeover: free or expired. A new owner means a new epoch.
    state.meter.request("DynamoDB.UpdateItem");
    match current {
        Some(row) if row.expires_at_ms > now_ms => {
            state.meter.write(0, 1, false);
            state.meter.request("DynamoDB.GetItem");
            state.meter.read(row.size(), Consistency::Strong);
            Err(LeaseError::HeldByOther {
                name: name.to_owned(),
                owner: row.owner,
                epoch: row.epoch,
                expires_at_ms: row.expires_at_ms,
            })
        }
        current => {
            let taken = LeaseRow {
                owner: owner.to_owned(),
                epoch: current.as_ref().map_or(0, |r| r.epoch) + 1,
                expires_at_ms,
                scaler_state: current.and_then(|r| r.scaler_state),
            };
            let lease = taken.lease(name);
            write_lease(state, name, taken);
            Ok(lease)
        }
    }
}

fn release(state: &mut State, lease: &Lease) {
    state.meter.request("DynamoDB.UpdateItem");
    match state.leases.get(&lease.name).cloned() {
        Some(row) if row.held_by(lease) => write_lease(
            state,
            &lease.name,
            LeaseRow {
                expires_at_ms: 0,
                ..row
            },
        ),
        // Someone else holds it already: nothing of ours to release.
        _ => state.meter.write(0, 1, false),
    }
}

/// The lease store of a [`MemoryWorld`].
#[derive(Debug, Clone)]
pub struct MemoryLeaseStore {
    world: MemoryWorld,
}

impl MemoryLeaseStore {
    pub(crate) fn new(world: MemoryWorld) -> MemoryLeaseStore {
        MemoryLeaseStore { world }
    }
}

impl LeaseStore for MemoryLeaseStore {
    async fn acquire_or_renew(
        &self,
        name: &str,
        owner: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<Lease, LeaseError> {
        self.world
            .run("leases.acquire_or_renew", |s| {
                acquire_or_renew(s, name, owner, now_ms, ttl_ms)
            })
            .await
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        self.world
            .run("leases.release", |s| {
                release(s, lease);
                Ok(())
            })
            .await
    }
}

/// Whether the agent's record takes `sum` more, as the scheduler read it at `capacity` and
/// `incarnation`: active, unchanged, with room.
fn agent_takes(
    state: &State,
    agent_id: &str,
    sum: &Resources,
    capacity: &Resources,
    incarnation: u64,
) -> bool {
    let Some(row) = state.agents.get(agent_id) else {
        return false;
    };
    row.incarnation == incarnation
        && row.state == AgentState::Active
        && row.capacity == *capacity
        && row
            .allocated
            .iter()
            .zip(dimensions(sum).into_iter().zip(dimensions(capacity)))
            .all(|(allocated, (value, cap))| *allocated <= i128::from(cap.saturating_sub(value)))
}

fn task_unchanged(state: &State, task: &Task, expected_version: u64) -> bool {
    state
        .tasks
        .get(task.id.as_str())
        .is_some_and(|r| r.doc.version == expected_version)
}

fn put_task<'a>(task: &'a Task, expected_version: u64) -> Action<'a> {
    Action::write(
        TableName::Tasks,
        task.id.as_str(),
        move |s: &State| task_unchanged(s, task, expected_version),
        move |s: &mut State| {
            s.put_task(task.clone());
        },
    )
}

fn add_to_agent<'a>(
    agent_id: &'a str,
    delta: Resources,
    sign: i128,
    condition: impl Fn(&State) -> bool + 'a,
) -> Action<'a> {
    Action::write(
        TableName::Agents,
        agent_id,
        condition,
        move |s: &mut State| {
            if let Some(row) = s.agents.get_mut(agent_id) {
                row.add(&delta, sign, sign);
            }
        },
    )
}

fn commit_placements(
    state: &mut State,
    lease: &Lease,
    placements: &[PlacementWrite],
) -> Result<(), CommitError> {
    if placements.is_empty() {
        return Ok(());
    }
    let mut per_agent: BTreeMap<&str, (Resources, Resources, u64)> = BTreeMap::new();
    for placement in placements {
        let entry = per_agent.entry(&placement.agent_id).or_insert((
            Resources::ZERO,
            placement.agent_capacity,
            placement.agent_incarnation,
        ));
        entry.0 = entry.0.saturating_add(placement.resources);
    }
    for (agent_id, (sum, capacity, _)) in &per_agent {
        if !sum.fits_within(capacity) {
            return Err(CommitError::Conflict(format!(
                "placements on agent {agent_id} need more {} than its capacity",
                sum.shortfalls(capacity).join(", ")
            )));
        }
    }
    let items = 1 + placements.len() + per_agent.len();
    if items > MAX_TRANSACTION_ITEMS {
        return Err(CommitError::Store(StoreError::Internal(format!(
            "{items} items exceed a transaction's {MAX_TRANSACTION_ITEMS}; expected the \
             placements in chunks that fit"
        ))));
    }
    let mut actions = Vec::with_capacity(items);
    actions.push(Action::check(
        TableName::Leases,
        lease.name.as_str(),
        |s: &State| s.leases.get(&lease.name).is_some_and(|r| r.held_by(lease)),
    ));
    for placement in placements {
        actions.push(put_task(&placement.task, placement.expected_version));
    }
    let counts: BTreeMap<&str, i128> = placements.iter().fold(BTreeMap::new(), |mut m, p| {
        *m.entry(p.agent_id.as_str()).or_default() += 1;
        m
    });
    for (agent_id, (sum, capacity, incarnation)) in per_agent {
        let tasks = counts.get(agent_id).copied().unwrap_or(0);
        actions.push(Action::write(
            TableName::Agents,
            agent_id,
            move |s: &State| agent_takes(s, agent_id, &sum, &capacity, incarnation),
            move |s: &mut State| {
                if let Some(row) = s.agents.get_mut(agent_id) {
                    row.add(&sum, 1, tasks);
                }
            },
        ));
    }
    let outcome = transact(state, actions)
        .map_err(|e| StoreError::Internal(format!("TransactWriteItems: {e}")))?;
    match outcome {
        Transacted::Committed => Ok(()),
        // The lease check is the first action.
        Transacted::Refused(codes) if refused_at(&codes, 0) => {
            Err(CommitError::LeaseLost { epoch: lease.epoch })
        }
        Transacted::Refused(codes) => {
            let tasks_failed = refused_count(&codes[1..=placements.len()]);
            let agents_failed = refused_count(&codes[placements.len() + 1..]);
            Err(CommitError::Conflict(format!(
                "{tasks_failed} tasks changed and {agents_failed} agents lacked room or changed"
            )))
        }
    }
}

fn finish_and_release(
    state: &mut State,
    task: &Task,
    expected_version: u64,
    agent_id: &str,
    resources: Resources,
) -> Result<(), StoreError> {
    let changed = || StoreError::Conflict {
        entity: "task",
        id: task.id.to_string(),
        detail: format!("expected version {expected_version}; the task changed"),
    };
    let internal =
        |e: crate::transaction::Invalid| StoreError::Internal(format!("TransactWriteItems: {e}"));
    let actions = vec![
        put_task(task, expected_version),
        add_to_agent(agent_id, resources, -1, move |s: &State| {
            s.agents.contains_key(agent_id)
        }),
    ];
    match transact(state, actions).map_err(internal)? {
        Transacted::Committed => Ok(()),
        Transacted::Refused(codes) if refused_at(&codes, 0) => Err(changed()),
        // The agent's record is gone (it deregistered): there is nothing to give back to.
        Transacted::Refused(_) => {
            match transact(state, vec![put_task(task, expected_version)]).map_err(internal)? {
                Transacted::Committed => Ok(()),
                Transacted::Refused(_) => Err(changed()),
            }
        }
    }
}

/// The allocation store of a [`MemoryWorld`].
#[derive(Debug, Clone)]
pub struct MemoryAllocationStore {
    world: MemoryWorld,
}

impl MemoryAllocationStore {
    pub(crate) fn new(world: MemoryWorld) -> MemoryAllocationStore {
        MemoryAllocationStore { world }
    }
}

impl AllocationStore for MemoryAllocationStore {
    async fn commit_placements(
        &self,
        lease: &Lease,
        placements: &[PlacementWrite],
    ) -> Result<(), CommitError> {
        self.world
            .run("allocations.commit_placements", |s| {
                commit_placements(s, lease, placements)
            })
            .await
    }

    async fn finish_and_release(
        &self,
        task: &Task,
        expected_version: u64,
        agent_id: &str,
        resources: Resources,
    ) -> Result<(), StoreError> {
        self.world
            .run("allocations.finish_and_release", |s| {
                finish_and_release(s, task, expected_version, agent_id, resources)
            })
            .await
    }
}
