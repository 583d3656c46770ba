//! Feasibility filters: each decides whether one agent may take a task and, when it may not, names
//! the reason. A hard constraint is one small [`Filter`]; supporting a new one means writing it
//! here and adding its line to [`constraint_filter`].
//!
//! `activeHost` has no filter of its own: only active agents ever receive placements, so every
//! placement satisfies it. `zoneBalance` is not a per-agent test (it compares zones), so a
//! [`FilterSet`] only records it and the engine applies it to the agents that pass the rest.

use std::fmt;

use titus_core::job::{Constraint, ConstraintName};
use titus_core::{AgentState, Resources};

use crate::index::{bit, Query};
use crate::reason::Reason;
use crate::state::{Cluster, JobIdx, Slot};

/// A task as filters and scorers see it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ask {
    pub job: JobIdx,
    pub resources: Resources,
}

/// One feasibility test of the pipeline.
pub(crate) trait Filter: fmt::Debug {
    /// Whether `slot` may take the task.
    fn feasible(&self, ask: &Ask, slot: &Slot<'_>) -> bool;

    /// Why `slot`, which this filter rejects, is rejected.
    fn reasons(&self, ask: &Ask, slot: &Slot<'_>, out: &mut Vec<Reason>);

    /// Sorts the agents this filter rejects: those with the same variant are rejected for the
    /// same reasons, so explaining a task takes one call of `reasons` per variant, not per agent.
    fn variant(&self, _ask: &Ask, _slot: &Slot<'_>) -> u32 {
        0
    }

    /// Whether the verdict depends on the task's job (and not only on its resources and the
    /// constraint), so that tasks of different jobs cannot share an explanation.
    fn depends_on_job(&self) -> bool {
        false
    }

    /// Narrows the index query so whole subtrees this filter rejects are skipped. Optional: a
    /// filter that cannot say anything about a subtree leaves the query alone.
    fn narrow(&self, _query: &mut Query) {}
}

/// Only active agents get placements; draining and lost ones are named apart.
#[derive(Debug)]
pub(crate) struct ActiveAgent;

impl Filter for ActiveAgent {
    fn feasible(&self, _ask: &Ask, slot: &Slot<'_>) -> bool {
        slot.state() == AgentState::Active
    }

    fn reasons(&self, _ask: &Ask, slot: &Slot<'_>, out: &mut Vec<Reason>) {
        out.push(match slot.state() {
            AgentState::Lost => Reason::Lost,
            _ => Reason::Draining,
        });
    }

    fn variant(&self, _ask: &Ask, slot: &Slot<'_>) -> u32 {
        u32::from(slot.state() == AgentState::Lost)
    }
}

/// The task's resources fit in what the agent has free, in every dimension.
#[derive(Debug)]
pub(crate) struct FitsResources;

impl Filter for FitsResources {
    fn feasible(&self, ask: &Ask, slot: &Slot<'_>) -> bool {
        ask.resources.fits_within(&slot.free())
    }

    fn reasons(&self, ask: &Ask, slot: &Slot<'_>, out: &mut Vec<Reason>) {
        out.extend(
            ask.resources
                .shortfalls(&slot.free())
                .into_iter()
                .map(Reason::Insufficient),
        );
    }

    fn variant(&self, ask: &Ask, slot: &Slot<'_>) -> u32 {
        // A bit per short dimension.
        let need = ask.resources;
        let free = slot.free();
        [
            need.cpu_millis > free.cpu_millis,
            need.memory_mb > free.memory_mb,
            need.disk_mb > free.disk_mb,
            need.network_mbps > free.network_mbps,
            need.gpu > free.gpu,
        ]
        .iter()
        .enumerate()
        .fold(0, |bits, (i, &short)| bits | (u32::from(short) << i))
    }
}

/// An agent held by an exclusiveHost job takes no task of any other job. Applies to every task,
/// whatever its own constraints.
#[derive(Debug)]
pub(crate) struct NotExclusiveToOtherJob;

impl Filter for NotExclusiveToOtherJob {
    fn feasible(&self, ask: &Ask, slot: &Slot<'_>) -> bool {
        !slot.exclusive_to_other_job(ask.job)
    }

    fn reasons(&self, _ask: &Ask, _slot: &Slot<'_>, out: &mut Vec<Reason>) {
        out.push(Reason::ExclusiveToOtherJob);
    }
}

/// `uniqueHost`: no other task of the same job on the agent.
#[derive(Debug)]
pub(crate) struct UniqueHost;

impl Filter for UniqueHost {
    fn feasible(&self, ask: &Ask, slot: &Slot<'_>) -> bool {
        slot.tasks_of(ask.job) == 0
    }

    fn reasons(&self, _ask: &Ask, _slot: &Slot<'_>, out: &mut Vec<Reason>) {
        out.push(constraint_reason(ConstraintName::UniqueHost, None));
    }

    fn depends_on_job(&self) -> bool {
        true
    }
}

/// `exclusiveHost`: the agent runs no task of another job. Placing the task then makes the agent
/// the job's alone (see [`NotExclusiveToOtherJob`]).
#[derive(Debug)]
pub(crate) struct ExclusiveHost;

impl Filter for ExclusiveHost {
    fn feasible(&self, ask: &Ask, slot: &Slot<'_>) -> bool {
        !slot.runs_other_jobs(ask.job)
    }

    fn reasons(&self, _ask: &Ask, _slot: &Slot<'_>, out: &mut Vec<Reason>) {
        out.push(constraint_reason(ConstraintName::ExclusiveHost, None));
    }

    fn depends_on_job(&self) -> bool {
        true
    }

    fn narrow(&self, query: &mut Query) {
        // An agent with two or more jobs runs at least one that is not the task's.
        query.max_jobs = query.max_jobs.min(1);
    }
}

/// Which agent attribute a constraint names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Attribute {
    MachineId,
    Zone,
    MachineType,
    MachineGroup,
}

impl Attribute {
    fn of(slot: &Slot<'_>, attribute: Attribute) -> u32 {
        match attribute {
            Attribute::MachineId => slot.id_key,
            Attribute::Zone => slot.zone,
            Attribute::MachineType => slot.machine_type,
            Attribute::MachineGroup => slot.machine_group,
        }
    }

    fn constraint(self) -> ConstraintName {
        match self {
            Attribute::MachineId => ConstraintName::MachineId,
            Attribute::Zone => ConstraintName::AvailabilityZone,
            Attribute::MachineType => ConstraintName::MachineType,
            Attribute::MachineGroup => ConstraintName::MachineGroup,
        }
    }
}

/// `availabilityZone`, `machineType`, `machineGroup`, `machineId`: the agent's attribute equals
/// the value, ignoring case.
#[derive(Debug)]
pub(crate) struct AttributeEquals {
    attribute: Attribute,
    /// The value's number among the agents' names; `None` when no agent has it.
    wanted: Option<u32>,
    /// The value as the user wrote it, for reasons.
    value: String,
}

impl AttributeEquals {
    pub fn new(attribute: Attribute, value: &str, cluster: &Cluster<'_>) -> AttributeEquals {
        let names = match attribute {
            Attribute::MachineId => &cluster.agent_ids,
            Attribute::Zone => &cluster.zones,
            Attribute::MachineType => &cluster.machine_types,
            Attribute::MachineGroup => &cluster.machine_groups,
        };
        AttributeEquals {
            attribute,
            wanted: names.get(value.trim()),
            value: value.to_owned(),
        }
    }
}

impl Filter for AttributeEquals {
    fn feasible(&self, _ask: &Ask, slot: &Slot<'_>) -> bool {
        self.wanted == Some(Attribute::of(slot, self.attribute))
    }

    fn reasons(&self, _ask: &Ask, _slot: &Slot<'_>, out: &mut Vec<Reason>) {
        out.push(constraint_reason(
            self.attribute.constraint(),
            Some(self.value.clone()),
        ));
    }

    fn narrow(&self, query: &mut Query) {
        let Some(wanted) = self.wanted else {
            query.impossible = true;
            return;
        };
        match self.attribute {
            Attribute::MachineId => match query.machine_id {
                Some(other) if other != wanted => query.impossible = true,
                _ => query.machine_id = Some(wanted),
            },
            Attribute::Zone => query.zones &= bit(wanted),
            Attribute::MachineType => query.machine_types &= bit(wanted),
            Attribute::MachineGroup => query.machine_groups &= bit(wanted),
        }
    }
}

/// A hard constraint this engine does not know how to evaluate (the domain's constraint type is
/// non-exhaustive). Rejecting every agent is the safe reading of a requirement we cannot check.
#[derive(Debug)]
pub(crate) struct Unsupported(ConstraintName);

impl Filter for Unsupported {
    fn feasible(&self, _ask: &Ask, _slot: &Slot<'_>) -> bool {
        false
    }

    fn reasons(&self, _ask: &Ask, _slot: &Slot<'_>, out: &mut Vec<Reason>) {
        out.push(Reason::Unsupported(self.0));
    }

    fn narrow(&self, query: &mut Query) {
        query.impossible = true;
    }
}

fn constraint_reason(name: ConstraintName, value: Option<String>) -> Reason {
    Reason::Constraint { name, value }
}

/// The filter of one constraint as a per-agent test; `None` for `activeHost` and `zoneBalance`,
/// which are not per-agent tests (see the module doc).
pub(crate) fn constraint_filter(
    constraint: &Constraint,
    cluster: &Cluster<'_>,
) -> Option<Box<dyn Filter>> {
    let attribute = |a: Attribute, value: &str| -> Option<Box<dyn Filter>> {
        Some(Box::new(AttributeEquals::new(a, value, cluster)))
    };
    match constraint {
        Constraint::UniqueHost => Some(Box::new(UniqueHost)),
        Constraint::ExclusiveHost => Some(Box::new(ExclusiveHost)),
        Constraint::ZoneBalance | Constraint::ActiveHost => None,
        Constraint::AvailabilityZone(v) => attribute(Attribute::Zone, v),
        Constraint::MachineId(v) => attribute(Attribute::MachineId, v),
        Constraint::MachineGroup(v) => attribute(Attribute::MachineGroup, v),
        Constraint::MachineType(v) => attribute(Attribute::MachineType, v),
        other => Some(Box::new(Unsupported(other.name()))),
    }
}

/// The filters a task's hard constraints compile to, in pipeline order: the cheap attribute
/// tests first, then the tests of the agent's jobs.
#[derive(Debug)]
pub(crate) struct FilterSet {
    pub filters: Vec<Box<dyn Filter>>,
    /// Whether the task must go to a zone with the fewest of its job's tasks.
    pub zone_balance: bool,
    /// The constraints compiled, by name and case-folded value, in pipeline order: equal keys
    /// make equal sets, whatever the job.
    pub key: Vec<(ConstraintName, String)>,
}

impl FilterSet {
    /// Compiles `constraints` for a task of `job`. Every task of an exclusive job gets
    /// exclusiveHost, so that one job's tasks cannot disagree about holding their agents.
    pub fn compile(constraints: &[Constraint], job: JobIdx, cluster: &Cluster<'_>) -> FilterSet {
        let mut constraints: Vec<Constraint> = constraints.to_vec();
        if cluster.is_exclusive(job) {
            constraints.push(Constraint::ExclusiveHost);
        }
        constraints.sort_by_cached_key(|c| (pipeline_rank(c), constraint_key(c)));
        constraints.dedup_by(|a, b| constraint_key(a) == constraint_key(b));
        FilterSet {
            zone_balance: constraints.contains(&Constraint::ZoneBalance),
            filters: constraints
                .iter()
                .filter_map(|c| constraint_filter(c, cluster))
                .collect(),
            key: constraints.iter().map(constraint_key).collect(),
        }
    }

    /// Whether some filter's verdict depends on the task's job.
    pub fn depends_on_job(&self) -> bool {
        self.filters.iter().any(|f| f.depends_on_job())
    }

    /// Whether `slot` passes every filter of the set (not the built-in state, exclusivity and
    /// resource filters, which the caller applies).
    pub fn passes(&self, ask: &Ask, slot: &Slot<'_>) -> bool {
        self.filters.iter().all(|f| f.feasible(ask, slot))
    }

    /// The index query for a task needing `resources` under this set.
    pub fn query(&self, resources: Resources) -> Query {
        let mut query = Query::new(resources);
        for filter in &self.filters {
            filter.narrow(&mut query);
        }
        query
    }
}

/// Constraints compared ignoring the case of their values, so duplicates collapse.
fn constraint_key(c: &Constraint) -> (ConstraintName, String) {
    let value = match c {
        Constraint::AvailabilityZone(v)
        | Constraint::MachineId(v)
        | Constraint::MachineGroup(v)
        | Constraint::MachineType(v) => v.trim().to_ascii_lowercase(),
        _ => String::new(),
    };
    (c.name(), value)
}

/// Where a constraint's filter runs in the pipeline; reasons follow this order on ties.
fn pipeline_rank(c: &Constraint) -> u8 {
    match c.name() {
        ConstraintName::MachineId => 0,
        ConstraintName::AvailabilityZone => 1,
        ConstraintName::MachineType => 2,
        ConstraintName::MachineGroup => 3,
        ConstraintName::ExclusiveHost => 4,
        ConstraintName::UniqueHost => 5,
        _ => 6,
    }
}

/// The whole pipeline a task's agents go through, in order: state, exclusivity, the set's
/// filters, resources. Resources come last so that `insufficient` reasons count agents that
/// satisfy everything else: what added capacity would have to look like.
pub(crate) fn pipeline(set: &FilterSet) -> impl Iterator<Item = &dyn Filter> {
    [&ActiveAgent as &dyn Filter, &NotExclusiveToOtherJob]
        .into_iter()
        .chain(set.filters.iter().map(|f| f.as_ref()))
        .chain(std::iter::once(&FitsResources as &dyn Filter))
}

/// The pipeline stage that first rejects `slot`, with its variant; `None` when `slot` passes.
pub(crate) fn first_rejecting(set: &FilterSet, ask: &Ask, slot: &Slot<'_>) -> Option<(usize, u32)> {
    pipeline(set)
        .enumerate()
        .find(|(_, filter)| !filter.feasible(ask, slot))
        .map(|(stage, filter)| (stage, filter.variant(ask, slot)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AgentView, TaskRequest};
    use std::collections::{BTreeMap, BTreeSet};
    use titus_core::{JobId, TaskId};

    fn agent(id: &str) -> AgentView {
        AgentView {
            id: id.to_owned(),
            zone: "us-east-1a".to_owned(),
            machine_type: "m5.large".to_owned(),
            machine_group: "web".to_owned(),
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

    fn task(job: &str, hard: Vec<Constraint>) -> TaskRequest {
        TaskRequest {
            task_id: TaskId::from_string(format!("{job}-t")),
            job_id: JobId::from_string(job),
            resources: Resources {
                cpu_millis: 1000,
                memory_mb: 1000,
                ..Resources::ZERO
            },
            hard,
            soft: vec![],
        }
    }

    /// Whether the one agent passes the task's whole pipeline, and the reasons when it does not.
    fn judge(agent: AgentView, task: TaskRequest) -> (bool, Vec<String>) {
        let agents = [agent];
        let tasks = [task];
        let cluster = Cluster::new(&agents, &tasks);
        let job = cluster.job(&tasks[0].job_id);
        let set = FilterSet::compile(&tasks[0].hard, job, &cluster);
        let ask = Ask {
            job,
            resources: tasks[0].resources,
        };
        let slot = &cluster.slots[0];
        let mut reasons = Vec::new();
        if let Some((stage, _)) = first_rejecting(&set, &ask, slot) {
            let filters: Vec<&dyn Filter> = pipeline(&set).collect();
            filters[stage].reasons(&ask, slot, &mut reasons);
        }
        (
            reasons.is_empty(),
            reasons.iter().map(ToString::to_string).collect(),
        )
    }

    #[test]
    fn a_draining_agent_is_rejected_as_draining() {
        let mut a = agent("a");
        a.state = AgentState::Draining;

        assert_eq!(
            judge(a, task("j", vec![])),
            (false, vec!["agent draining".into()])
        );
    }

    #[test]
    fn a_lost_agent_is_rejected_as_lost() {
        let mut a = agent("a");
        a.state = AgentState::Lost;

        assert_eq!(
            judge(a, task("j", vec![])),
            (false, vec!["agent lost".into()])
        );
    }

    #[test]
    fn active_host_is_satisfied_by_any_active_agent() {
        assert!(judge(agent("a"), task("j", vec![Constraint::ActiveHost])).0);
    }

    #[test]
    fn every_short_resource_is_named() {
        let mut a = agent("a");
        a.allocated = Resources {
            cpu_millis: 3500,
            memory_mb: 7500,
            ..Resources::ZERO
        };

        let (feasible, reasons) = judge(a, task("j", vec![]));

        assert!(!feasible);
        assert_eq!(reasons, vec!["insufficient cpu", "insufficient memory"]);
    }

    #[test]
    fn unique_host_rejects_an_agent_running_the_same_job() {
        let mut a = agent("a");
        a.job_task_counts.insert(JobId::from_string("j"), 1);

        let (feasible, reasons) = judge(a, task("j", vec![Constraint::UniqueHost]));

        assert!(!feasible);
        assert_eq!(reasons, vec!["hard constraint uniqueHost"]);
    }

    #[test]
    fn unique_host_accepts_an_agent_running_other_jobs() {
        let mut a = agent("a");
        a.job_task_counts.insert(JobId::from_string("other"), 3);

        assert!(judge(a, task("j", vec![Constraint::UniqueHost])).0);
    }

    #[test]
    fn exclusive_host_rejects_an_agent_running_another_job() {
        let mut a = agent("a");
        a.job_task_counts.insert(JobId::from_string("other"), 1);

        let (feasible, reasons) = judge(a, task("j", vec![Constraint::ExclusiveHost]));

        assert!(!feasible);
        assert_eq!(reasons, vec!["hard constraint exclusiveHost"]);
    }

    #[test]
    fn exclusive_host_accepts_an_agent_running_only_its_own_job() {
        let mut a = agent("a");
        a.job_task_counts.insert(JobId::from_string("j"), 2);

        assert!(judge(a, task("j", vec![Constraint::ExclusiveHost])).0);
    }

    #[test]
    fn an_agent_held_exclusively_rejects_other_jobs_tasks() {
        let mut a = agent("a");
        a.job_task_counts.insert(JobId::from_string("owner"), 1);
        a.exclusive_jobs.insert(JobId::from_string("owner"));

        let (feasible, reasons) = judge(a, task("j", vec![]));

        assert!(!feasible);
        assert_eq!(reasons, vec!["host exclusive to another job"]);
    }

    #[test]
    fn attribute_constraints_match_ignoring_case() {
        let hard = vec![
            Constraint::AvailabilityZone("US-EAST-1A".into()),
            Constraint::MachineType("M5.Large".into()),
            Constraint::MachineGroup("WEB".into()),
            Constraint::MachineId("A".into()),
        ];

        assert!(judge(agent("a"), task("j", hard)).0);
    }

    #[test]
    fn attribute_constraints_name_the_first_mismatch_with_its_value() {
        let hard = vec![
            Constraint::MachineType("c5.xlarge".into()),
            Constraint::AvailabilityZone("us-west-2b".into()),
        ];

        let (feasible, reasons) = judge(agent("a"), task("j", hard));

        assert!(!feasible);
        assert_eq!(
            reasons,
            vec![r#"hard constraint availabilityZone="us-west-2b""#]
        );
    }

    #[test]
    fn a_query_for_a_value_no_agent_has_is_impossible() {
        let agents = [agent("a")];
        let tasks = [task("j", vec![Constraint::MachineGroup("nope".into())])];
        let cluster = Cluster::new(&agents, &tasks);
        let job = cluster.job(&tasks[0].job_id);

        let set = FilterSet::compile(&tasks[0].hard, job, &cluster);

        assert!(set.query(Resources::ZERO).impossible);
    }

    #[test]
    fn zone_balance_is_recorded_not_filtered_per_agent() {
        let agents = [agent("a")];
        let tasks = [task("j", vec![Constraint::ZoneBalance])];
        let cluster = Cluster::new(&agents, &tasks);
        let job = cluster.job(&tasks[0].job_id);

        let set = FilterSet::compile(&tasks[0].hard, job, &cluster);

        assert!(set.zone_balance);
        assert!(set.filters.is_empty());
    }

    #[test]
    fn every_task_of_an_exclusive_job_needs_an_exclusive_host() {
        let agents = [agent("a")];
        let tasks = [
            task("j", vec![Constraint::ExclusiveHost]),
            task("j", vec![]),
        ];
        let cluster = Cluster::new(&agents, &tasks);
        let job = cluster.job(&tasks[1].job_id);

        let set = FilterSet::compile(&tasks[1].hard, job, &cluster);

        assert_eq!(set.query(Resources::ZERO).max_jobs, 1);
    }
}
