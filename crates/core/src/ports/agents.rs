//! The agent store port: registration, heartbeats and state changes of the hosts' records.

use std::future::Future;

use crate::agent::{Agent, AgentHeartbeat, AgentState};
use crate::ports::store::StoreError;

/// Storage of agent records.
pub trait AgentStore: Send + Sync {
    /// Registers the agent or, when it exists (a restart), refreshes its identity fields,
    /// capacity, heartbeat and `registration_id` while keeping its allocation, state and
    /// incarnation. A new agent is Active at incarnation 1. An agent declared lost is fenced: it
    /// registers again as the next incarnation, Active, and only once no task of its old one
    /// holds resources (`Conflict` until then). The incarnation of `agent` is ignored.
    fn register_agent(
        &self,
        agent: &Agent,
    ) -> impl Future<Output = Result<Agent, StoreError>> + Send;

    fn get_agent(&self, id: &str)
        -> impl Future<Output = Result<Option<Agent>, StoreError>> + Send;

    /// Every agent, in id order.
    fn list_agents(&self) -> impl Future<Output = Result<Vec<Agent>, StoreError>> + Send;

    /// Records a sign of life on the record itself, written by the control plane (an agent
    /// reports with [`AgentStore::report_heartbeat`]); `Conflict` if the agent is not registered.
    fn heartbeat(
        &self,
        id: &str,
        now_ms: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Moves the agent to `to` only if it is in `from`; `Conflict` otherwise.
    fn set_agent_state(
        &self,
        id: &str,
        from: AgentState,
        to: AgentState,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The agent's own last report (`report_heartbeat`), if it ever sent one: a second opinion
    /// on what runs there.
    fn last_report(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<AgentHeartbeat>, StoreError>> + Send;

    /// Every agent's last report, by agent id: what the reconciler compares with the records.
    /// The default reads them one agent at a time; a store that can read them in one go does.
    fn list_reports(
        &self,
    ) -> impl Future<Output = Result<Vec<(String, AgentHeartbeat)>, StoreError>> + Send {
        async move {
            let mut reports = Vec::new();
            for agent in self.list_agents().await? {
                if let Some(report) = self.last_report(&agent.id).await? {
                    reports.push((agent.id, report));
                }
            }
            Ok(reports)
        }
    }

    /// Removes the agent's record (after it drained).
    fn deregister_agent(&self, id: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Records a heartbeat together with the agent's own view of its work, and returns the
    /// agent's record, so that an agent learns from its heartbeat that it is being drained, or
    /// that it was declared lost (its state, or an incarnation other than its own). `Conflict` if
    /// the agent is not registered. The default keeps no report: it records the heartbeat and
    /// reads the record back.
    fn report_heartbeat(
        &self,
        id: &str,
        report: &AgentHeartbeat,
    ) -> impl Future<Output = Result<Agent, StoreError>> + Send {
        async move {
            self.heartbeat(id, report.at_ms).await?;
            match self.get_agent(id).await? {
                Some(agent) => Ok(agent),
                None => Err(StoreError::Conflict {
                    entity: "agent",
                    id: id.to_owned(),
                    detail: "not registered".to_owned(),
                }),
            }
        }
    }
}
