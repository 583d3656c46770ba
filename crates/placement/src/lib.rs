//! Titus placement engine: pending tasks and agents in, a plan of placements out. Pure: no I/O,
//! no clock, no randomness; the same input always gives the same plan.
//!
//! # Pipeline
//! As in Nomad's scheduler, each task goes through feasibility filters and then rankers:
//! - Filters, in order: the agent is active (rejections `agent draining`, `agent lost`); it is not
//!   held by another job's exclusiveHost; the task's hard constraints (`machineId`,
//!   `availabilityZone`, `machineType`, `machineGroup`, `exclusiveHost`, `uniqueHost`); the
//!   task's resources fit (`insufficient cpu|memory|disk|network|gpu`). `zoneBalance` then keeps
//!   the agents in the zones with the fewest of the job's tasks among the zones that have a
//!   feasible agent. `activeHost` needs no filter: only active agents are ever chosen.
//! - Rankers: each satisfied soft constraint counts first, then the [`Strategy`] (bin-pack: the
//!   agent most used after the placement, by mean used fraction of CPU and memory; spread: the
//!   least used), then the lowest agent id.
//!
//! Tasks are decided in the order given (callers pass the oldest first), and each placement
//! updates the engine's view of its agent, so no agent is over-committed across the plan.
//! Values of constraints compare ignoring case. A job is exclusive when any of its pending tasks
//! has a hard exclusiveHost or an agent lists it in [`AgentView::exclusive_jobs`]; then all its
//! tasks need agents running no other job, and its agents take no other job's tasks.
//!
//! # Search
//! [`plan`] does not run every filter on every agent (5,000 agents × 100,000 tasks would be
//! 5·10⁸ checks). An index over the active agents (a segment tree keeping, per subtree, the most
//! free of each resource and of CPU and memory together, the zones, types and groups present,
//! and whether some agent is not held exclusively) skips subtrees that cannot take the task, and
//! the search stops after a few feasible candidates, which the rankers then order, as Nomad
//! limits its rank iterator. Bin-packing searches first fit, from the first agent with room for
//! the task's resources (remembered per resources, since it only moves on), and ranks 4
//! candidates; spreading resumes after the agent it chose last and ranks log2 of the agents.
//! Soft constraints are first tried as if hard, so the candidates satisfy them whenever some
//! agent can. A search that finds nothing proves the task fits nowhere (the index only skips
//! what cannot fit), and because agents only fill up during a plan, the engine remembers it: a
//! later task of the same job and constraints needing as much or more is decided without
//! searching.
//!
//! [`plan_exhaustive`] ranks every feasible agent for every task; it is the baseline benchmarks
//! compare against and a reference for tests.
//!
//! # Unplaced tasks
//! Every unplaced task carries named reasons with the number of agents each rejected (an agent
//! counts under the first filter that rejects it; a short agent under each short resource),
//! computed against the cluster at the end of the plan.

mod engine;
mod filter;
mod index;
mod model;
mod reason;
mod score;
mod state;

pub use model::{
    agent_views, needs_job_counts, AgentView, Placement, Plan, Strategy, TaskRequest, Unplaced,
};

/// Places `tasks`, in order, on `agents` with the given strategy. See the crate documentation.
pub fn plan(tasks: &[TaskRequest], agents: &[AgentView], strategy: Strategy) -> Plan {
    engine::plan_indexed(tasks, agents, strategy)
}

/// Places `tasks` like [`plan`], but ranks every feasible agent for every task instead of
/// searching an index: O(tasks × agents). The reference for tests and the benchmark's baseline;
/// its choices among feasible agents may differ from [`plan`]'s, its rules do not.
pub fn plan_exhaustive(tasks: &[TaskRequest], agents: &[AgentView], strategy: Strategy) -> Plan {
    engine::plan_exhaustive(tasks, agents, strategy)
}
