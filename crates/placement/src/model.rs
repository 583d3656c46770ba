//! What the engine takes in (agents, pending tasks, a strategy) and what it gives back (a plan).

use std::collections::{BTreeMap, BTreeSet};

use titus_core::job::{Constraint, Job};
use titus_core::placement::Rejection;
use titus_core::{Agent, AgentState, JobId, Resources, Task, TaskId};

/// One agent as the engine needs it: where it is, what it has, and whose tasks it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentView {
    /// The agent's id, which is also its machine id (`machineId` constraints match it).
    pub id: String,
    pub zone: String,
    pub machine_type: String,
    pub machine_group: String,
    /// Only Active agents get placements.
    pub state: AgentState,
    pub capacity: Resources,
    /// What tasks already hold on the agent.
    pub allocated: Resources,
    /// Tasks per job already on the agent (uniqueHost, exclusiveHost and zoneBalance read it).
    pub job_task_counts: BTreeMap<JobId, u32>,
    /// Jobs on the agent that hold it exclusively (placed earlier under a hard exclusiveHost).
    /// Jobs whose pending tasks carry hard exclusiveHost are recognised without this field.
    pub exclusive_jobs: BTreeSet<JobId>,
}

impl AgentView {
    /// The view of a stored agent, given the tasks per job it runs.
    pub fn from_agent(agent: &Agent, job_task_counts: BTreeMap<JobId, u32>) -> AgentView {
        AgentView {
            id: agent.id.clone(),
            zone: agent.zone.clone(),
            machine_type: agent.machine_type.clone(),
            machine_group: agent.machine_group.clone(),
            state: agent.state,
            capacity: agent.capacity,
            allocated: agent.allocated,
            job_task_counts,
            exclusive_jobs: BTreeSet::new(),
        }
    }
}

/// Whether placing a task of this job depends on where the job's tasks already run: a hard or
/// soft uniqueHost, exclusiveHost or zoneBalance. Only such jobs' tasks need to be read to build
/// the agents' views.
pub fn needs_job_counts(job: &Job) -> bool {
    let container = &job.job_descriptor.container;
    container
        .hard_constraints
        .parsed()
        .into_iter()
        .chain(container.soft_constraints.parsed())
        .any(|c| {
            matches!(
                c,
                Constraint::UniqueHost | Constraint::ExclusiveHost | Constraint::ZoneBalance
            )
        })
}

/// The engine's view of each agent, given the tasks of the jobs that need counts
/// ([`needs_job_counts`]): how many of each job's tasks occupy the agent, and which jobs hold it
/// exclusively (a hard exclusiveHost). Tasks that do not occupy an agent are ignored.
pub fn agent_views<'a>(
    agents: &[Agent],
    jobs_tasks: impl IntoIterator<Item = (&'a Job, &'a [Task])>,
) -> Vec<AgentView> {
    let mut counts: BTreeMap<&str, BTreeMap<JobId, u32>> = BTreeMap::new();
    let mut exclusive: BTreeMap<&str, BTreeSet<JobId>> = BTreeMap::new();
    for (job, tasks) in jobs_tasks {
        let holds_exclusively = job
            .job_descriptor
            .container
            .hard_constraints
            .parsed()
            .contains(&Constraint::ExclusiveHost);
        for task in tasks {
            let (true, Some(agent)) = (task.state().occupies_agent(), task.agent_id.as_deref())
            else {
                continue;
            };
            *counts
                .entry(agent)
                .or_default()
                .entry(job.id.clone())
                .or_default() += 1;
            if holds_exclusively {
                exclusive.entry(agent).or_default().insert(job.id.clone());
            }
        }
    }
    agents
        .iter()
        .map(|agent| {
            let mut view =
                AgentView::from_agent(agent, counts.remove(agent.id.as_str()).unwrap_or_default());
            view.exclusive_jobs = exclusive.remove(agent.id.as_str()).unwrap_or_default();
            view
        })
        .collect()
}

/// A pending task: what it needs and the constraints it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRequest {
    pub task_id: TaskId,
    pub job_id: JobId,
    pub resources: Resources,
    /// Constraints every placement must satisfy.
    pub hard: Vec<Constraint>,
    /// Constraints the engine prefers to satisfy, in addition to its strategy.
    pub soft: Vec<Constraint>,
}

impl TaskRequest {
    /// The request for a stored task of `job`, with the job's constraints.
    pub fn for_task(task: &Task, job: &Job) -> TaskRequest {
        let container = &job.job_descriptor.container;
        TaskRequest {
            task_id: task.id.clone(),
            job_id: task.job_id.clone(),
            resources: Resources::of_container(&task.resources),
            hard: container.hard_constraints.parsed(),
            soft: container.soft_constraints.parsed(),
        }
    }
}

/// How the engine ranks the agents a task could go on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Strategy {
    /// Prefer the agent that is most used after the placement, so that whole agents stay empty
    /// and the scaler can release them.
    #[default]
    BinPack,
    /// Prefer the least used agent, so that a host failure takes down fewer tasks.
    Spread,
}

/// A decision to run a task on an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub task_id: TaskId,
    pub job_id: JobId,
    pub agent_id: String,
    /// What the task reserves on the agent.
    pub resources: Resources,
}

/// A task that fits nowhere, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unplaced {
    pub task_id: TaskId,
    pub job_id: JobId,
    /// Named reasons with the number of agents each rejected, most agents first, e.g.
    /// `insufficient memory on 37 agents`. Never empty. Computed against the cluster as it is at
    /// the end of the plan, i.e. what a retry would face.
    pub reasons: Vec<String>,
    /// The same reasons as (reason, agents) pairs, e.g. (`insufficient memory`, 37), in the same
    /// order.
    pub rejections: Vec<Rejection>,
    /// The resource dimensions (`cpu`, `memory`, `disk`, `network`, `gpu`) that were short on
    /// agents that otherwise satisfied the task's constraints: what more capacity should offer.
    pub insufficient: Vec<&'static str>,
}

/// The engine's answer: placements and unplaced tasks, each in the order the tasks were given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub placements: Vec<Placement>,
    pub unplaced: Vec<Unplaced>,
}
