//! The agent store port: registration, heartbeats and state changes of the hosts' records.

use std::future::Future;

use crate::agent::{Agent, AgentHeartbeat, AgentState};
use crate::ports::store::StoreError;

/// Storage of agent records.
pub trait AgentStore: Send + Sync {
    /// Registers the agent or, when it exists (a restart), refreshes its identity fields and
    /// heartbeat while keeping its allocation and state.
    fn register_agent(
        &self,
        agent: &Agent,
    ) -> impl Future<Output = Result<Agent, StoreError>> + Send;

    fn get_agent(&self, id: &str)
        -> impl Future<Output = Result<Option<Agent>, StoreError>> + Send;

    /// Every agent, in id order.
    fn list_agents(&self) -> impl Future<Output = Result<Vec<Agent>, StoreError>> + Send;

    /// Records a heartbeat; `Conflict` if the agent is not registered.
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

    /// Removes the agent's record (after it drained).
    fn deregister_agent(&self, id: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Records a heartbeat together with the agent's own view of its work, and returns the
    /// agent's state, so that an agent learns from its heartbeat that it is being drained or was
    /// declared lost. `Conflict` if the agent is not registered. The default keeps no report: it
    /// records the heartbeat and reads the state back.
    fn report_heartbeat(
        &self,
        id: &str,
        report: &AgentHeartbeat,
    ) -> impl Future<Output = Result<AgentState, StoreError>> + Send {
        async move {
            self.heartbeat(id, report.at_ms).await?;
            match self.get_agent(id).await? {
                Some(agent) => Ok(agent.state),
                None => Err(StoreError::Conflict {
                    entity: "agent",
                    id: id.to_owned(),
                    detail: "not registered".to_owned(),
                }),
            }
        }
    }
}
