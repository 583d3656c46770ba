//! Builders for agents and tasks, and a checker that verifies a plan against the placement rules
//! on its own, without the engine's filter code.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use titus_core::job::Constraint;
use titus_core::{AgentState, JobId, Resources, TaskId};
use titus_placement::{AgentView, Plan, TaskRequest};

pub fn resources(cpu_millis: u64, memory_mb: u64) -> Resources {
    Resources {
        cpu_millis,
        memory_mb,
        disk_mb: 1_000,
        network_mbps: 10,
        gpu: 0,
    }
}

/// An active, empty agent with 4 CPUs and 16 GB.
pub fn agent(id: &str, zone: &str) -> AgentView {
    AgentView {
        id: id.to_owned(),
        zone: zone.to_owned(),
        machine_type: "m5.xlarge".to_owned(),
        machine_group: "default".to_owned(),
        state: AgentState::Active,
        capacity: Resources {
            cpu_millis: 4_000,
            memory_mb: 16_000,
            disk_mb: 100_000,
            network_mbps: 1_000,
            gpu: 0,
        },
        allocated: Resources::ZERO,
        job_task_counts: BTreeMap::new(),
        exclusive_jobs: BTreeSet::new(),
    }
}

/// A task of `job` needing one CPU and 1 GB.
pub fn task(id: &str, job: &str) -> TaskRequest {
    TaskRequest {
        task_id: TaskId::from_string(id),
        job_id: JobId::from_string(job),
        resources: resources(1_000, 1_000),
        hard: Vec::new(),
        soft: Vec::new(),
    }
}

/// The agent each task went to, by task id.
pub fn placed_on(plan: &Plan) -> BTreeMap<String, String> {
    plan.placements
        .iter()
        .map(|p| (p.task_id.to_string(), p.agent_id.clone()))
        .collect()
}

/// One agent while a plan is replayed.
#[derive(Clone)]
struct Replayed<'a> {
    view: &'a AgentView,
    allocated: Resources,
    jobs: BTreeMap<JobId, u32>,
}

impl Replayed<'_> {
    fn runs_other_jobs(&self, job: &JobId) -> bool {
        self.jobs.iter().any(|(j, &n)| j != job && n > 0)
    }
}

fn same(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

/// The jobs holding their agents exclusively: named by an agent, or with a pending task that
/// carries a hard exclusiveHost.
fn exclusive_jobs(tasks: &[TaskRequest], agents: &[AgentView]) -> BTreeSet<JobId> {
    let mut jobs: BTreeSet<JobId> = agents
        .iter()
        .flat_map(|a| a.exclusive_jobs.iter().cloned())
        .collect();
    jobs.extend(
        tasks
            .iter()
            .filter(|t| t.hard.contains(&Constraint::ExclusiveHost))
            .map(|t| t.job_id.clone()),
    );
    jobs
}

/// Whether `agent` may take `task` by every rule except zoneBalance, written out plainly.
fn may_take(
    task: &TaskRequest,
    agent: &Replayed<'_>,
    exclusive: &BTreeSet<JobId>,
    held_by: &BTreeSet<JobId>,
) -> bool {
    let view = agent.view;
    if view.state != AgentState::Active {
        return false;
    }
    if held_by.iter().any(|j| *j != task.job_id) {
        return false;
    }
    let needs_exclusive = exclusive.contains(&task.job_id);
    if needs_exclusive && agent.runs_other_jobs(&task.job_id) {
        return false;
    }
    for constraint in &task.hard {
        let ok = match constraint {
            Constraint::UniqueHost => agent.jobs.get(&task.job_id).copied().unwrap_or(0) == 0,
            Constraint::ExclusiveHost => !agent.runs_other_jobs(&task.job_id),
            Constraint::AvailabilityZone(z) => same(z, &view.zone),
            Constraint::MachineType(t) => same(t, &view.machine_type),
            Constraint::MachineGroup(g) => same(g, &view.machine_group),
            Constraint::MachineId(id) => same(id, &view.id),
            _ => true,
        };
        if !ok {
            return false;
        }
    }
    task.resources
        .fits_within(&view.capacity.saturating_sub(agent.allocated))
}

/// The jobs holding `agent`: those it lists, and exclusive jobs it runs.
fn holders(agent: &Replayed<'_>, exclusive: &BTreeSet<JobId>) -> BTreeSet<JobId> {
    let mut held: BTreeSet<JobId> = agent.view.exclusive_jobs.clone();
    held.extend(
        agent
            .jobs
            .iter()
            .filter(|(j, &n)| n > 0 && exclusive.contains(*j))
            .map(|(j, _)| j.clone()),
    );
    held
}

/// The job's tasks per zone, on agents that are not lost.
fn zone_counts(job: &JobId, agents: &[Replayed<'_>]) -> BTreeMap<String, u32> {
    let mut counts = BTreeMap::new();
    for a in agents {
        if a.view.state != AgentState::Lost {
            *counts.entry(a.view.zone.to_ascii_lowercase()).or_insert(0) +=
                a.jobs.get(job).copied().unwrap_or(0);
        }
    }
    counts
}

/// Replays `plan` over `agents` in task order and checks every rule: placements only on active
/// agents that exist, no over-commitment, every hard constraint at the moment of placement,
/// every task either placed once or unplaced with reasons, and every unplaced task fitting no
/// agent at the end of the plan.
pub fn check_plan(tasks: &[TaskRequest], agents: &[AgentView], plan: &Plan) -> Result<(), String> {
    let exclusive = exclusive_jobs(tasks, agents);
    let mut state: Vec<Replayed<'_>> = agents
        .iter()
        .map(|view| Replayed {
            view,
            allocated: view.allocated,
            jobs: view.job_task_counts.clone(),
        })
        .collect();
    let placements: BTreeMap<&TaskId, &str> = plan
        .placements
        .iter()
        .map(|p| (&p.task_id, p.agent_id.as_str()))
        .collect();
    let unplaced: BTreeSet<&TaskId> = plan.unplaced.iter().map(|u| &u.task_id).collect();
    if placements.len() + unplaced.len() != tasks.len()
        || plan.placements.len() + plan.unplaced.len() != tasks.len()
    {
        return Err("every task must be decided exactly once".into());
    }
    for u in &plan.unplaced {
        if u.reasons.is_empty() {
            return Err(format!("task {} is unplaced without a reason", u.task_id));
        }
    }

    for task in tasks {
        let Some(&agent_id) = placements.get(&task.task_id) else {
            continue;
        };
        let position = state
            .iter()
            .position(|a| a.view.id == agent_id)
            .ok_or_else(|| format!("task {} placed on unknown agent {agent_id}", task.task_id))?;
        let agent = &state[position];
        let held_by = holders(agent, &exclusive);
        if agent.view.state != AgentState::Active {
            return Err(format!(
                "task {} placed on {} agent",
                task.task_id, agent.view.state
            ));
        }
        if !may_take(task, agent, &exclusive, &held_by) {
            return Err(format!(
                "task {} on {agent_id} breaks a hard constraint or over-commits it",
                task.task_id
            ));
        }
        if task.hard.contains(&Constraint::ZoneBalance) {
            let counts = zone_counts(&task.job_id, &state);
            let fewest = state
                .iter()
                .filter(|a| may_take(task, a, &exclusive, &holders(a, &exclusive)))
                .map(|a| counts[&a.view.zone.to_ascii_lowercase()])
                .min();
            let mine = counts[&agent.view.zone.to_ascii_lowercase()];
            if fewest != Some(mine) {
                return Err(format!(
                    "task {} went to a zone with {mine} of its job's tasks, fewest is {fewest:?}",
                    task.task_id
                ));
            }
        }
        let agent = &mut state[position];
        agent.allocated = agent.allocated.saturating_add(task.resources);
        *agent.jobs.entry(task.job_id.clone()).or_insert(0) += 1;
        if !agent.allocated.fits_within(&agent.view.capacity) {
            return Err(format!("agent {agent_id} over-committed"));
        }
    }

    for task in tasks.iter().filter(|t| unplaced.contains(&t.task_id)) {
        if let Some(a) = state
            .iter()
            .find(|a| may_take(task, a, &exclusive, &holders(a, &exclusive)))
        {
            return Err(format!(
                "task {} is unplaced but fits agent {} at the end of the plan",
                task.task_id, a.view.id
            ));
        }
    }
    Ok(())
}

/// splitmix64, so generated workloads are the same on every run without a random-number crate.
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
}

/// A cluster of `agents` agents in 3 zones, part used, and `tasks` pending tasks of jobs of up
/// to 30 tasks with a mix of every constraint, hard and soft: large enough for the engine's
/// index, candidate limit and remembered failures to matter.
pub fn mixed_workload(
    agents: usize,
    tasks: usize,
    seed: u64,
) -> (Vec<AgentView>, Vec<TaskRequest>) {
    let mut rng = Rng(seed);
    let zones = ["us-east-1a", "us-east-1b", "us-east-1c"];
    let types = ["m5.xlarge", "r5.xlarge"];
    let groups = ["web", "batch"];
    let jobs = tasks / 15 + 1;
    let views: Vec<AgentView> = (0..agents)
        .map(|i| {
            let mut a = agent(&format!("agent-{i:04}"), zones[rng.below(3)]);
            a.machine_type = types[rng.below(2)].to_owned();
            a.machine_group = groups[rng.below(2)].to_owned();
            a.state = match rng.below(20) {
                0 => AgentState::Draining,
                1 => AgentState::Lost,
                _ => AgentState::Active,
            };
            a.allocated = resources(rng.below(3) as u64 * 1_000, rng.below(8) as u64 * 1_000);
            for _ in 0..rng.below(3) {
                *a.job_task_counts
                    .entry(JobId::from_string(format!("job-{}", rng.below(jobs))))
                    .or_insert(0) += 1;
            }
            a
        })
        .collect();
    let mut pending = Vec::with_capacity(tasks);
    let mut j = 0;
    while pending.len() < tasks {
        let size = 1 + rng.below(30);
        let need = resources(
            250 * (1 + rng.below(8)) as u64,
            512 * (1 + rng.below(8)) as u64,
        );
        let pick = |rng: &mut Rng| -> Vec<Constraint> {
            match rng.below(10) {
                0 => vec![Constraint::UniqueHost],
                1 => vec![Constraint::ZoneBalance],
                2 => vec![Constraint::ZoneBalance, Constraint::UniqueHost],
                3 => vec![Constraint::AvailabilityZone(
                    zones[rng.below(3)].to_uppercase(),
                )],
                4 => vec![Constraint::MachineType(types[rng.below(2)].to_owned())],
                5 => vec![Constraint::MachineGroup(groups[rng.below(2)].to_owned())],
                6 if rng.below(4) == 0 => vec![Constraint::ExclusiveHost],
                7 if rng.below(4) == 0 => vec![Constraint::MachineId(format!(
                    "AGENT-{:04}",
                    rng.below(agents.max(1))
                ))],
                _ => vec![],
            }
        };
        let hard = pick(&mut rng);
        let soft = pick(&mut rng);
        for t in 0..size.min(tasks - pending.len()) {
            let mut request = task(&format!("job-{j}-task-{t}"), &format!("job-{j}"));
            request.resources = need;
            request.hard = hard.clone();
            request.soft = soft.clone();
            pending.push(request);
        }
        j += 1;
    }
    for i in (1..pending.len()).rev() {
        pending.swap(i, rng.below(i + 1));
    }
    (views, pending)
}
