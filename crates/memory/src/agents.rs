//! The agent store: one record per agent with the DynamoDB adapter's registration writes (a
//! restart keeps the incarnation, allocation and state; a lost agent comes back as the next
//! incarnation only once its task count is 0) and conditional state changes; and, as the adapter
//! keeps them in a table of their own, the agents' heartbeat items, keyed by the principal each
//! agent was registered as (`Agent::heartbeat_key`): an item counts for an agent only if it is
//! under that agent's key and names it. A record's heartbeat is the later of its own (its
//! registration's, or `heartbeat`'s) and its heartbeat item's.
//!
//! Counters are signed, as DynamoDB's numbers are: the allocation only moves by atomic adds, and
//! one that went below zero (a store that lost a write) reads as 0, with an error for an
//! operator, as the adapter reads it.

use titus_core::{Agent, AgentHeartbeat, AgentState, AgentStore, Resources, StoreError};

use crate::metering::Consistency;
use crate::world::{MemoryWorld, State};

/// An agent's item in the agents table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AgentRow {
    pub(crate) queue_url: String,
    pub(crate) zone: String,
    pub(crate) machine_type: String,
    pub(crate) machine_group: String,
    pub(crate) state: AgentState,
    pub(crate) capacity: Resources,
    /// cpu, memory, disk, network, gpu.
    pub(crate) allocated: [i128; 5],
    pub(crate) task_count: i128,
    pub(crate) registered_at_ms: u64,
    pub(crate) heartbeat_at_ms: u64,
    pub(crate) incarnation: u64,
    pub(crate) registration_id: String,
    pub(crate) principal: String,
    pub(crate) task_logs: Option<titus_core::ports::TaskLogs>,
}

/// An item of the heartbeats table: what an agent last reported, under its heartbeat key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeartbeatRow {
    pub(crate) agent_id: String,
    pub(crate) report: AgentHeartbeat,
}

impl HeartbeatRow {
    fn size(&self) -> usize {
        crate::pages::item_size(&self.report) + self.agent_id.len()
    }
}

pub(crate) fn dimensions(resources: &Resources) -> [u64; 5] {
    [
        resources.cpu_millis,
        resources.memory_mb,
        resources.disk_mb,
        resources.network_mbps,
        resources.gpu,
    ]
}

fn counter(agent_id: &str, name: &str, value: i128) -> u64 {
    if value < 0 {
        tracing::error!(
            agent_id = %agent_id,
            attribute = name,
            value = %value,
            "agent counter is below zero; reading it as 0"
        );
    }
    u64::try_from(value.max(0)).unwrap_or(u64::MAX)
}

impl AgentRow {
    /// The record as the agents table has it (without its heartbeat item).
    pub(crate) fn to_agent(&self, id: &str) -> Agent {
        let [cpu, memory, disk, network, gpu] = self.allocated;
        Agent {
            allocated: Resources {
                cpu_millis: counter(id, "allocCpuMillis", cpu),
                memory_mb: counter(id, "allocMemoryMb", memory),
                disk_mb: counter(id, "allocDiskMb", disk),
                network_mbps: counter(id, "allocNetworkMbps", network),
                gpu: counter(id, "allocGpu", gpu),
            },
            task_count: counter(id, "taskCount", self.task_count),
            ..self.identity(id)
        }
    }

    /// The record without its counters.
    fn identity(&self, id: &str) -> Agent {
        Agent {
            id: id.to_owned(),
            queue_url: self.queue_url.clone(),
            zone: self.zone.clone(),
            machine_type: self.machine_type.clone(),
            machine_group: self.machine_group.clone(),
            state: self.state,
            capacity: self.capacity,
            allocated: Resources::ZERO,
            task_count: 0,
            registered_at_ms: self.registered_at_ms,
            heartbeat_at_ms: self.heartbeat_at_ms,
            incarnation: self.incarnation,
            registration_id: self.registration_id.clone(),
            principal: self.principal.clone(),
            task_logs: self.task_logs.clone(),
        }
    }

    pub(crate) fn size(&self, id: &str) -> usize {
        crate::pages::item_size(&self.identity(id))
    }

    /// Adds `sign` times `delta` to the allocation and `tasks` to the count.
    pub(crate) fn add(&mut self, delta: &Resources, sign: i128, tasks: i128) {
        for (slot, value) in self.allocated.iter_mut().zip(dimensions(delta)) {
            *slot += sign * i128::from(value);
        }
        self.task_count += tasks;
    }
}

/// The agent's own heartbeat item, if one is under its key and names it.
fn own_heartbeat<'a>(state: &'a State, agent: &Agent) -> Option<&'a HeartbeatRow> {
    state
        .heartbeats
        .get(agent.heartbeat_key())
        .filter(|h| h.agent_id == agent.id)
}

/// The record with its heartbeat item's heartbeat, when that is later.
fn with_heartbeat(mut agent: Agent, heartbeat: Option<&HeartbeatRow>) -> Agent {
    if let Some(heartbeat) = heartbeat {
        agent.heartbeat_at_ms = agent.heartbeat_at_ms.max(heartbeat.report.at_ms);
    }
    agent
}

/// The agent store of a [`MemoryWorld`].
#[derive(Debug, Clone)]
pub struct MemoryAgentStore {
    world: MemoryWorld,
}

impl MemoryAgentStore {
    pub(crate) fn new(world: MemoryWorld) -> MemoryAgentStore {
        MemoryAgentStore { world }
    }
}

fn not_registered(id: &str) -> StoreError {
    StoreError::Conflict {
        entity: "agent",
        id: id.to_owned(),
        detail: "not registered".to_owned(),
    }
}

/// The registration's fields over what exists, as the adapter's UpdateItem sets them.
fn refreshed(agent: &Agent, existing: Option<&AgentRow>) -> AgentRow {
    AgentRow {
        queue_url: agent.queue_url.clone(),
        zone: agent.zone.clone(),
        machine_type: agent.machine_type.clone(),
        machine_group: agent.machine_group.clone(),
        state: existing.map_or(AgentState::Active, |r| r.state),
        capacity: agent.capacity,
        allocated: existing.map_or([0; 5], |r| r.allocated),
        task_count: existing.map_or(0, |r| r.task_count),
        // The first registration's time is kept; a new record takes the heartbeat's.
        registered_at_ms: existing.map_or(agent.heartbeat_at_ms, |r| r.registered_at_ms),
        heartbeat_at_ms: agent.heartbeat_at_ms,
        incarnation: existing.map_or(1, |r| r.incarnation),
        registration_id: agent.registration_id.clone(),
        principal: agent.principal.clone(),
        task_logs: agent.task_logs.clone(),
    }
}

fn write(state: &mut State, id: &str, row: AgentRow) -> Agent {
    let before = state.agents.get(id).map_or(0, |r| r.size(id));
    let after = row.size(id);
    state.meter.write(before, after, false);
    let agent = row.to_agent(id);
    state.agents.insert(id.to_owned(), row);
    agent
}

fn register(state: &mut State, agent: &Agent) -> Result<Agent, StoreError> {
    let id = agent.id.as_str();
    // A new agent, or one that is not lost (a restart): its identity and capacity refreshed,
    // its allocation, state and incarnation kept.
    state.meter.request("DynamoDB.UpdateItem");
    let existing = state.agents.get(id).cloned();
    if existing
        .as_ref()
        .is_none_or(|r| r.state != AgentState::Lost)
    {
        return Ok(write(state, id, refreshed(agent, existing.as_ref())));
    }
    // A lost agent comes back as its next incarnation once no task of its old one holds
    // resources. (The first write was refused, which costs its unit too.)
    state.meter.write(0, 1, false);
    state.meter.request("DynamoDB.UpdateItem");
    match existing {
        Some(row) if row.task_count == 0 => {
            let mut relived = refreshed(agent, Some(&row));
            relived.state = AgentState::Active;
            relived.incarnation = row.incarnation + 1;
            Ok(write(state, id, relived))
        }
        _ => {
            state.meter.write(0, 1, false);
            Err(StoreError::Conflict {
                entity: "agent",
                id: id.to_owned(),
                detail: "it was declared lost and the tasks of its last incarnation are still \
                         being finished; expected to register again once they are"
                    .to_owned(),
            })
        }
    }
}

/// A consistent GetItem of the agent's record.
fn record(state: &mut State, id: &str) -> Option<Agent> {
    state.meter.request("DynamoDB.GetItem");
    let row = state.agents.get(id).cloned();
    state
        .meter
        .read(row.as_ref().map_or(0, |r| r.size(id)), Consistency::Strong);
    row.map(|row| row.to_agent(id))
}

/// A consistent GetItem of the agent's heartbeat item, kept if it is the agent's own.
fn heartbeat_item(state: &mut State, agent: &Agent) -> Option<HeartbeatRow> {
    state.meter.request("DynamoDB.GetItem");
    let size = state
        .heartbeats
        .get(agent.heartbeat_key())
        .map_or(0, HeartbeatRow::size);
    state.meter.read(size, Consistency::Strong);
    own_heartbeat(state, agent).cloned()
}

/// Scans of both tables, 1 MB a page: every record in id order, each with its own heartbeat
/// item.
fn scan(state: &mut State) -> Vec<(Agent, Option<HeartbeatRow>)> {
    let heartbeat_sizes: Vec<usize> = state.heartbeats.values().map(HeartbeatRow::size).collect();
    scan_pages(state, &heartbeat_sizes);
    let record_sizes: Vec<usize> = state.agents.iter().map(|(id, r)| r.size(id)).collect();
    scan_pages(state, &record_sizes);
    let agents: Vec<Agent> = state
        .agents
        .iter()
        .map(|(id, row)| row.to_agent(id))
        .collect();
    agents
        .into_iter()
        .map(|agent| {
            let heartbeat = own_heartbeat(state, &agent).cloned();
            (agent, heartbeat)
        })
        .collect()
}

/// Meters one Scan of items of `sizes`: a request and its units per 1 MB page.
fn scan_pages(state: &mut State, sizes: &[usize]) {
    let mut page_bytes = 0;
    state.meter.request("DynamoDB.Scan");
    for size in sizes {
        if page_bytes > 0 && page_bytes + size > crate::pages::MAX_PAGE_BYTES {
            state.meter.read(page_bytes, Consistency::Strong);
            state.meter.request("DynamoDB.Scan");
            page_bytes = 0;
        }
        page_bytes += size;
    }
    state.meter.read(page_bytes, Consistency::Strong);
}

fn heartbeat(state: &mut State, id: &str, now_ms: u64) -> Result<(), StoreError> {
    state.meter.request("DynamoDB.UpdateItem");
    let Some(mut row) = state.agents.get(id).cloned() else {
        state.meter.write(0, 1, false);
        return Err(not_registered(id));
    };
    row.heartbeat_at_ms = now_ms;
    write(state, id, row);
    Ok(())
}

fn report_heartbeat(
    state: &mut State,
    id: &str,
    report: &AgentHeartbeat,
) -> Result<Agent, StoreError> {
    let mut agent = record(state, id).ok_or_else(|| not_registered(id))?;
    let row = HeartbeatRow {
        agent_id: id.to_owned(),
        report: report.clone(),
    };
    state.meter.request("DynamoDB.PutItem");
    let before = state
        .heartbeats
        .get(agent.heartbeat_key())
        .map_or(0, HeartbeatRow::size);
    state.meter.write(before, row.size(), false);
    state
        .heartbeats
        .insert(agent.heartbeat_key().to_owned(), row);
    agent.heartbeat_at_ms = agent.heartbeat_at_ms.max(report.at_ms);
    Ok(agent)
}

fn deregister(state: &mut State, id: &str) {
    let record = record(state, id);
    state.meter.request("DynamoDB.DeleteItem");
    let size = state.agents.remove(id).map_or(0, |row| row.size(id));
    state.meter.write(size, 0, false);
    let Some(agent) = record else {
        return;
    };
    // Its last heartbeat goes too, unless the item is another agent's by now.
    state.meter.request("DynamoDB.DeleteItem");
    let key = agent.heartbeat_key();
    if state.heartbeats.get(key).is_some_and(|h| h.agent_id == id) {
        let size = state.heartbeats.remove(key).map_or(0, |h| h.size());
        state.meter.write(size, 0, false);
    } else {
        state.meter.write(0, 1, false);
    }
}

impl AgentStore for MemoryAgentStore {
    async fn register_agent(&self, agent: &Agent) -> Result<Agent, StoreError> {
        self.world
            .run("agents.register_agent", |s| register(s, agent))
            .await
    }

    async fn get_agent(&self, id: &str) -> Result<Option<Agent>, StoreError> {
        self.world
            .run("agents.get_agent", |s| {
                let Some(agent) = record(s, id) else {
                    return Ok(None);
                };
                let heartbeat = heartbeat_item(s, &agent);
                Ok(Some(with_heartbeat(agent, heartbeat.as_ref())))
            })
            .await
    }

    async fn list_agents(&self) -> Result<Vec<Agent>, StoreError> {
        self.world
            .run("agents.list_agents", |s| {
                Ok(scan(s)
                    .into_iter()
                    .map(|(agent, heartbeat)| with_heartbeat(agent, heartbeat.as_ref()))
                    .collect())
            })
            .await
    }

    async fn heartbeat(&self, id: &str, now_ms: u64) -> Result<(), StoreError> {
        self.world
            .run("agents.heartbeat", |s| heartbeat(s, id, now_ms))
            .await
    }

    async fn set_agent_state(
        &self,
        id: &str,
        from: AgentState,
        to: AgentState,
    ) -> Result<(), StoreError> {
        self.world
            .run("agents.set_agent_state", |s| {
                s.meter.request("DynamoDB.UpdateItem");
                match s.agents.get(id).cloned() {
                    Some(mut row) if row.state == from => {
                        row.state = to;
                        write(s, id, row);
                        Ok(())
                    }
                    _ => {
                        s.meter.write(0, 1, false);
                        Err(StoreError::Conflict {
                            entity: "agent",
                            id: id.to_owned(),
                            detail: format!("expected state {from}, found another or no agent"),
                        })
                    }
                }
            })
            .await
    }

    async fn last_report(&self, id: &str) -> Result<Option<AgentHeartbeat>, StoreError> {
        self.world
            .run("agents.last_report", |s| {
                let Some(agent) = record(s, id) else {
                    return Ok(None);
                };
                Ok(heartbeat_item(s, &agent).map(|h| h.report))
            })
            .await
    }

    async fn list_reports(&self) -> Result<Vec<(String, AgentHeartbeat)>, StoreError> {
        self.world
            .run("agents.list_reports", |s| {
                Ok(scan(s)
                    .into_iter()
                    .filter_map(|(agent, heartbeat)| heartbeat.map(|h| (agent.id, h.report)))
                    .collect())
            })
            .await
    }

    async fn deregister_agent(&self, id: &str) -> Result<(), StoreError> {
        self.world
            .run("agents.deregister_agent", |s| {
                deregister(s, id);
                Ok(())
            })
            .await
    }

    async fn report_heartbeat(
        &self,
        id: &str,
        report: &AgentHeartbeat,
    ) -> Result<Agent, StoreError> {
        self.world
            .run("agents.report_heartbeat", |s| {
                report_heartbeat(s, id, report)
            })
            .await
    }
}
