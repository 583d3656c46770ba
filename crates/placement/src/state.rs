//! The engine's working copy of the cluster: agents with interned attributes, updated by every
//! placement so that later tasks of the same plan see it.

use std::collections::{BTreeSet, HashMap};

use titus_core::job::Constraint;
use titus_core::{AgentState, JobId, Resources};

use crate::model::{AgentView, TaskRequest};

/// A job, numbered for the duration of one plan.
pub(crate) type JobIdx = u32;

/// One agent during a plan.
#[derive(Debug)]
pub(crate) struct Slot<'a> {
    pub view: &'a AgentView,
    /// The agent id, case-folded and numbered (see [`Names`]); `machineId` compares it.
    pub id_key: u32,
    pub zone: u32,
    pub machine_type: u32,
    pub machine_group: u32,
    /// The agent's allocation, including what this plan placed on it.
    pub allocated: Resources,
    /// Tasks per job, only jobs with at least one task. An agent runs few jobs, so a vector
    /// searched linearly is faster than a map.
    pub jobs: Vec<(JobIdx, u32)>,
    /// Jobs holding the agent exclusively; normally none, one at most in consistent data.
    pub exclusive_to: Vec<JobIdx>,
}

impl Slot<'_> {
    pub fn state(&self) -> AgentState {
        self.view.state
    }

    pub fn free(&self) -> Resources {
        self.view.capacity.saturating_sub(self.allocated)
    }

    pub fn tasks_of(&self, job: JobIdx) -> u32 {
        self.jobs
            .iter()
            .find(|&&(j, _)| j == job)
            .map_or(0, |&(_, n)| n)
    }

    pub fn runs_other_jobs(&self, job: JobIdx) -> bool {
        self.jobs.iter().any(|&(j, _)| j != job)
    }

    pub fn exclusive_to_other_job(&self, job: JobIdx) -> bool {
        self.exclusive_to.iter().any(|&j| j != job)
    }
}

/// Case-insensitive names (zones, machine types, machine groups, agent ids) numbered in the
/// order of their case-folded text, so numbers do not depend on the order agents were given in.
#[derive(Debug, Default)]
pub(crate) struct Names {
    numbers: HashMap<String, u32>,
}

impl Names {
    fn new<'n>(names: impl Iterator<Item = &'n str>) -> Names {
        let folded: BTreeSet<String> = names.map(str::to_ascii_lowercase).collect();
        Names {
            numbers: folded.into_iter().zip(0..).collect(),
        }
    }

    /// The number of `name`, ignoring case; `None` when no agent has it.
    pub fn get(&self, name: &str) -> Option<u32> {
        self.numbers.get(&name.to_ascii_lowercase()).copied()
    }

    fn number(&self, name: &str) -> u32 {
        // Every agent's own names were numbered at construction.
        self.get(name).unwrap_or(u32::MAX)
    }

    pub fn len(&self) -> usize {
        self.numbers.len()
    }
}

/// The cluster during one plan.
#[derive(Debug)]
pub(crate) struct Cluster<'a> {
    /// Every agent, in id order: the order the engine scans and breaks ties in.
    pub slots: Vec<Slot<'a>>,
    pub zones: Names,
    pub machine_types: Names,
    pub machine_groups: Names,
    pub agent_ids: Names,
    /// Slots per agent id number (one, unless ids differ only in case).
    pub slots_by_id: Vec<Vec<usize>>,
    /// Zones with at least one active agent, in name order: the zones zoneBalance compares.
    pub active_zones: Vec<u32>,
    jobs: HashMap<&'a JobId, JobIdx>,
    /// Per job: whether it holds its agents exclusively.
    exclusive: Vec<bool>,
    /// Per job, per zone: the job's tasks there. Lost agents do not count: their tasks are being
    /// replaced, and the replacements are what zoneBalance is balancing.
    zone_counts: Vec<Vec<u32>>,
}

impl<'a> Cluster<'a> {
    pub fn new(agents: &'a [AgentView], tasks: &'a [TaskRequest]) -> Cluster<'a> {
        let mut order: Vec<&AgentView> = agents.iter().collect();
        // Stable, so agents with equal ids (which callers should not send) keep their order.
        order.sort_by(|a, b| a.id.cmp(&b.id));

        let zones = Names::new(order.iter().map(|a| a.zone.as_str()));
        let machine_types = Names::new(order.iter().map(|a| a.machine_type.as_str()));
        let machine_groups = Names::new(order.iter().map(|a| a.machine_group.as_str()));
        let agent_ids = Names::new(order.iter().map(|a| a.id.as_str()));

        let mut jobs: HashMap<&JobId, JobIdx> = HashMap::new();
        let mut intern = |job: &'a JobId| -> JobIdx {
            let next = jobs.len() as JobIdx;
            *jobs.entry(job).or_insert(next)
        };
        for agent in &order {
            agent.job_task_counts.keys().for_each(|j| {
                intern(j);
            });
            agent.exclusive_jobs.iter().for_each(|j| {
                intern(j);
            });
        }
        for task in tasks {
            intern(&task.job_id);
        }

        let mut exclusive = vec![false; jobs.len()];
        for agent in &order {
            for job in &agent.exclusive_jobs {
                exclusive[jobs[job] as usize] = true;
            }
        }
        for task in tasks {
            if task.hard.contains(&Constraint::ExclusiveHost) {
                exclusive[jobs[&task.job_id] as usize] = true;
            }
        }

        let mut zone_counts = vec![vec![0u32; zones.len()]; jobs.len()];
        let mut slots_by_id = vec![Vec::new(); agent_ids.len()];
        let mut active = vec![false; zones.len()];
        let mut slots = Vec::with_capacity(order.len());
        for (position, view) in order.into_iter().enumerate() {
            let zone = zones.number(&view.zone);
            let job_counts: Vec<(JobIdx, u32)> = view
                .job_task_counts
                .iter()
                .filter(|&(_, &n)| n > 0)
                .map(|(j, &n)| (jobs[j], n))
                .collect();
            let mut exclusive_to: Vec<JobIdx> =
                view.exclusive_jobs.iter().map(|j| jobs[j]).collect();
            exclusive_to.extend(
                job_counts
                    .iter()
                    .map(|&(j, _)| j)
                    .filter(|&j| exclusive[j as usize]),
            );
            exclusive_to.sort_unstable();
            exclusive_to.dedup();
            if view.state != AgentState::Lost {
                for &(j, n) in &job_counts {
                    zone_counts[j as usize][zone as usize] += n;
                }
            }
            if view.state == AgentState::Active {
                active[zone as usize] = true;
            }
            let id_key = agent_ids.number(&view.id);
            slots_by_id[id_key as usize].push(position);
            slots.push(Slot {
                view,
                id_key,
                zone,
                machine_type: machine_types.number(&view.machine_type),
                machine_group: machine_groups.number(&view.machine_group),
                allocated: view.allocated,
                jobs: job_counts,
                exclusive_to,
            });
        }
        let active_zones = (0..zones.len() as u32)
            .filter(|&z| active[z as usize])
            .collect();

        Cluster {
            slots,
            zones,
            machine_types,
            machine_groups,
            agent_ids,
            slots_by_id,
            active_zones,
            jobs,
            exclusive,
            zone_counts,
        }
    }

    /// The number of a job that appears in the plan's input.
    pub fn job(&self, id: &JobId) -> JobIdx {
        // Every task's job was numbered at construction.
        self.jobs.get(id).copied().unwrap_or(JobIdx::MAX)
    }

    /// Whether the job holds its agents exclusively (every task of it then needs an empty host).
    pub fn is_exclusive(&self, job: JobIdx) -> bool {
        self.exclusive.get(job as usize).copied().unwrap_or(false)
    }

    /// The job's tasks per zone number.
    pub fn zone_counts(&self, job: JobIdx) -> &[u32] {
        self.zone_counts
            .get(job as usize)
            .map_or(&[][..], Vec::as_slice)
    }

    /// Records a placement so that later decisions see it.
    pub fn place(&mut self, slot: usize, job: JobIdx, resources: Resources) {
        let exclusive = self.is_exclusive(job);
        let s = &mut self.slots[slot];
        s.allocated = s.allocated.saturating_add(resources);
        match s.jobs.iter_mut().find(|(j, _)| *j == job) {
            Some((_, n)) => *n += 1,
            None => s.jobs.push((job, 1)),
        }
        if exclusive && !s.exclusive_to.contains(&job) {
            s.exclusive_to.push(job);
        }
        let zone = s.zone as usize;
        if let Some(count) = self
            .zone_counts
            .get_mut(job as usize)
            .and_then(|z| z.get_mut(zone))
        {
            *count += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use titus_core::TaskId;

    fn agent(id: &str, zone: &str) -> AgentView {
        AgentView {
            id: id.to_owned(),
            zone: zone.to_owned(),
            machine_type: "m5.large".to_owned(),
            machine_group: "default".to_owned(),
            state: AgentState::Active,
            capacity: Resources {
                cpu_millis: 4000,
                memory_mb: 8000,
                disk_mb: 100_000,
                network_mbps: 1000,
                gpu: 0,
            },
            allocated: Resources::ZERO,
            job_task_counts: BTreeMap::new(),
            exclusive_jobs: BTreeSet::new(),
        }
    }

    #[test]
    fn names_are_numbered_in_case_folded_order_whatever_the_agent_order() {
        let agents = [agent("b", "us-east-1B"), agent("a", "US-EAST-1a")];

        let cluster = Cluster::new(&agents, &[]);

        assert_eq!(cluster.zones.get("us-east-1a"), Some(0));
        assert_eq!(cluster.zones.get("Us-East-1b"), Some(1));
        assert_eq!(cluster.slots[0].view.id, "a");
    }

    #[test]
    fn placing_updates_allocation_job_counts_and_zone_counts() {
        let agents = [agent("a", "z1")];
        let job = JobId::from_string("job");
        let tasks = [TaskRequest {
            task_id: TaskId::from_string("t"),
            job_id: job.clone(),
            resources: Resources::ZERO,
            hard: vec![Constraint::ExclusiveHost],
            soft: vec![],
        }];
        let mut cluster = Cluster::new(&agents, &tasks);
        let j = cluster.job(&job);
        let one_cpu = Resources {
            cpu_millis: 1000,
            ..Resources::ZERO
        };

        cluster.place(0, j, one_cpu);

        let slot = &cluster.slots[0];
        assert_eq!(slot.allocated.cpu_millis, 1000);
        assert_eq!(slot.tasks_of(j), 1);
        assert_eq!(slot.exclusive_to, vec![j]);
        assert_eq!(cluster.zone_counts(j), &[1]);
    }

    #[test]
    fn lost_agents_do_not_count_towards_zone_counts() {
        let job = JobId::from_string("job");
        let mut lost = agent("a", "z1");
        lost.state = AgentState::Lost;
        lost.job_task_counts.insert(job.clone(), 3);
        let mut draining = agent("b", "z1");
        draining.state = AgentState::Draining;
        draining.job_task_counts.insert(job.clone(), 2);
        let agents = [lost, draining];

        let cluster = Cluster::new(&agents, &[]);

        assert_eq!(cluster.zone_counts(cluster.job(&job)), &[2]);
        assert!(cluster.active_zones.is_empty());
    }
}
