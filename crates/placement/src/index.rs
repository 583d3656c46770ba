//! An index over the active agents that finds the first agents, from a starting position, that
//! could take a task, without looking at every agent.
//!
//! It is a segment tree over the active agents in id order. Each node keeps, for the agents below
//! it: the most free of each resource; the most free of CPU and memory *together* (see
//! [`balanced`]); the zones, machine types and machine groups present (as bit masks); the fewest
//! jobs any of them runs; and whether any of them is not held by an exclusiveHost job. A search
//! descends only into nodes that could hold a fitting agent, so full agents and agents of other
//! zones or types are skipped a subtree at a time; each leaf reached is then checked exactly by
//! the caller's filters. Every node test is a necessary condition for some agent below to fit,
//! so pruning never hides a feasible agent: a search that finds nothing proves the task fits
//! nowhere.

use titus_core::Resources;

use crate::state::Slot;

/// What a task needs from an agent, in the terms the index can test on a whole subtree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Query {
    /// cpu millis, memory, disk, network, gpu.
    pub need: [u64; 5],
    /// [`balanced`] of the CPU and memory needed.
    pub need_balanced: u64,
    /// Bit masks of acceptable zones, machine types and machine groups (see [`bit`]).
    pub zones: u64,
    pub machine_types: u64,
    pub machine_groups: u64,
    /// The most jobs an acceptable agent may already run (1 for exclusiveHost: its own job).
    pub max_jobs: u32,
    /// Only agents no exclusiveHost job holds (for tasks of jobs that hold none).
    pub open_only: bool,
    /// Only the agents with this id number (machineId).
    pub machine_id: Option<u32>,
    /// Set when a constraint names something no agent has: nothing can match.
    pub impossible: bool,
}

impl Query {
    pub fn new(need: Resources) -> Query {
        Query {
            need: dimensions(need),
            need_balanced: balanced(need.cpu_millis, need.memory_mb),
            zones: u64::MAX,
            machine_types: u64::MAX,
            machine_groups: u64::MAX,
            max_jobs: u32::MAX,
            open_only: false,
            machine_id: None,
            impossible: false,
        }
    }
}

/// The mask bit of a name number. Names past the 63rd share the last bit, which keeps the test
/// conservative (it may let such a subtree through; the leaf check is exact).
pub(crate) fn bit(number: u32) -> u64 {
    1u64 << number.min(63)
}

/// CPU and memory as one number: the smaller of the two, each in units of a core and of 4 GB
/// (scaled to integers). An agent with room for a task has at least the task's value, so a
/// subtree whose best value is lower has no room, even when one agent below has the CPU and
/// another the memory. Packed agents are like that (one dimension used up, the other not), and
/// without this test a search would descend into every subtree of them.
pub(crate) fn balanced(cpu_millis: u64, memory_mb: u64) -> u64 {
    const MEMORY_MB_PER_CORE: u64 = 4096;
    const MILLIS_PER_CORE: u64 = 1000;
    cpu_millis
        .saturating_mul(MEMORY_MB_PER_CORE)
        .min(memory_mb.saturating_mul(MILLIS_PER_CORE))
}

fn dimensions(r: Resources) -> [u64; 5] {
    [r.cpu_millis, r.memory_mb, r.disk_mb, r.network_mbps, r.gpu]
}

#[derive(Debug, Clone, Copy, Default)]
struct Node {
    max_free: [u64; 5],
    max_balanced: u64,
    zones: u64,
    machine_types: u64,
    machine_groups: u64,
    min_jobs: u32,
    /// Whether some agent below is held by no exclusiveHost job.
    open: bool,
}

impl Node {
    fn leaf(slot: &Slot<'_>) -> Node {
        let free = slot.free();
        Node {
            max_free: dimensions(free),
            max_balanced: balanced(free.cpu_millis, free.memory_mb),
            zones: bit(slot.zone),
            machine_types: bit(slot.machine_type),
            machine_groups: bit(slot.machine_group),
            min_jobs: u32::try_from(slot.jobs.len()).unwrap_or(u32::MAX),
            open: slot.exclusive_to.is_empty(),
        }
    }

    /// Padding past the last agent: its empty masks admit no query.
    fn empty() -> Node {
        Node {
            min_jobs: u32::MAX,
            ..Node::default()
        }
    }

    fn join(a: &Node, b: &Node) -> Node {
        let mut max_free = a.max_free;
        for (m, other) in max_free.iter_mut().zip(b.max_free) {
            *m = (*m).max(other);
        }
        Node {
            max_free,
            max_balanced: a.max_balanced.max(b.max_balanced),
            zones: a.zones | b.zones,
            machine_types: a.machine_types | b.machine_types,
            machine_groups: a.machine_groups | b.machine_groups,
            min_jobs: a.min_jobs.min(b.min_jobs),
            open: a.open || b.open,
        }
    }

    fn admits(&self, q: &Query) -> bool {
        self.max_balanced >= q.need_balanced
            && self
                .max_free
                .iter()
                .zip(q.need)
                .all(|(&free, need)| free >= need)
            && self.zones & q.zones != 0
            && self.machine_types & q.machine_types != 0
            && self.machine_groups & q.machine_groups != 0
            && self.min_jobs <= q.max_jobs
            && (self.open || !q.open_only)
    }
}

/// The index. Positions are the active agents' ranks in id order.
#[derive(Debug)]
pub(crate) struct AgentIndex {
    /// A power of two at least the number of positions; leaves are nodes `size..2 * size`.
    size: usize,
    nodes: Vec<Node>,
    /// The slot at each position.
    slot_at: Vec<usize>,
    /// The position of each slot, `None` for agents that are not active.
    position_of: Vec<Option<usize>>,
}

impl AgentIndex {
    /// Indexes the slots for which `include` holds (the active agents).
    pub fn new(slots: &[Slot<'_>], include: impl Fn(&Slot<'_>) -> bool) -> AgentIndex {
        let slot_at: Vec<usize> = (0..slots.len()).filter(|&i| include(&slots[i])).collect();
        let mut position_of = vec![None; slots.len()];
        for (position, &slot) in slot_at.iter().enumerate() {
            position_of[slot] = Some(position);
        }
        let size = slot_at.len().max(1).next_power_of_two();
        let mut nodes = vec![Node::empty(); 2 * size];
        for (position, &slot) in slot_at.iter().enumerate() {
            nodes[size + position] = Node::leaf(&slots[slot]);
        }
        for n in (1..size).rev() {
            nodes[n] = Node::join(&nodes[2 * n], &nodes[2 * n + 1]);
        }
        AgentIndex {
            size,
            nodes,
            slot_at,
            position_of,
        }
    }

    /// How many agents are indexed.
    pub fn len(&self) -> usize {
        self.slot_at.len()
    }

    /// The position of a slot, if it is indexed.
    pub fn position_of(&self, slot: usize) -> Option<usize> {
        self.position_of.get(slot).copied().flatten()
    }

    /// Refreshes a slot after its allocation or jobs changed.
    pub fn update(&mut self, slots: &[Slot<'_>], slot: usize) {
        let Some(position) = self.position_of(slot) else {
            return;
        };
        let mut n = self.size + position;
        self.nodes[n] = Node::leaf(&slots[slot]);
        while n > 1 {
            n /= 2;
            self.nodes[n] = Node::join(&self.nodes[2 * n], &self.nodes[2 * n + 1]);
        }
    }

    /// Appends to `out` the slots of up to `limit` agents that the query admits and `accept`
    /// approves, visiting positions from `start` to the end and then, if `wrap`, from the
    /// beginning up to `start`.
    pub fn search(
        &self,
        query: &Query,
        start: usize,
        wrap: bool,
        limit: usize,
        accept: &mut dyn FnMut(usize) -> bool,
        out: &mut Vec<usize>,
    ) {
        if query.impossible || limit == 0 || self.slot_at.is_empty() {
            return;
        }
        let start = if wrap {
            start % self.slot_at.len()
        } else {
            start
        };
        let mut search = Search {
            index: self,
            query,
            limit,
            accept,
            out,
        };
        if !search.visit(1, 0, self.size, start, self.slot_at.len()) && wrap {
            search.visit(1, 0, self.size, 0, start);
        }
    }

    /// The first position from `from` on whose agent has room for `need` (and, if `open_only`,
    /// is held by no exclusiveHost job), or the number of positions when none has.
    pub fn first_fit(&self, need: Resources, open_only: bool, from: usize) -> usize {
        let query = Query {
            open_only,
            ..Query::new(need)
        };
        self.first_fit_under(1, 0, self.size, from, &query)
            .unwrap_or(self.slot_at.len())
    }

    fn first_fit_under(
        &self,
        n: usize,
        lo: usize,
        hi: usize,
        from: usize,
        query: &Query,
    ) -> Option<usize> {
        if hi <= from || !self.nodes[n].admits(query) {
            return None;
        }
        if hi - lo == 1 {
            return Some(lo);
        }
        let mid = lo + (hi - lo) / 2;
        self.first_fit_under(2 * n, lo, mid, from, query)
            .or_else(|| self.first_fit_under(2 * n + 1, mid, hi, from, query))
    }

    /// Whether the query admits the agent at `position` (the index's part of the check).
    pub fn admits(&self, position: usize, query: &Query) -> bool {
        !query.impossible && self.nodes[self.size + position].admits(query)
    }
}

/// One search's state, so that the recursion passes one reference instead of six.
struct Search<'s> {
    index: &'s AgentIndex,
    query: &'s Query,
    limit: usize,
    accept: &'s mut dyn FnMut(usize) -> bool,
    out: &'s mut Vec<usize>,
}

impl Search<'_> {
    /// Visits the positions in `from..to` under node `n`, which covers `lo..hi`. Returns true
    /// once `limit` agents were found.
    fn visit(&mut self, n: usize, lo: usize, hi: usize, from: usize, to: usize) -> bool {
        if hi <= from || to <= lo || !self.index.nodes[n].admits(self.query) {
            return false;
        }
        if hi - lo == 1 {
            let slot = self.index.slot_at[lo];
            if (self.accept)(slot) {
                self.out.push(slot);
            }
            return self.out.len() >= self.limit;
        }
        let mid = lo + (hi - lo) / 2;
        self.visit(2 * n, lo, mid, from, to) || self.visit(2 * n + 1, mid, hi, from, to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AgentView;
    use crate::state::Cluster;
    use std::collections::{BTreeMap, BTreeSet};
    use titus_core::AgentState;

    fn agent(id: &str, zone: &str, free_cpu_millis: u64) -> AgentView {
        let capacity = Resources {
            cpu_millis: 4000,
            memory_mb: 8000,
            disk_mb: 100_000,
            network_mbps: 1000,
            gpu: 0,
        };
        AgentView {
            id: id.to_owned(),
            zone: zone.to_owned(),
            machine_type: "m5".to_owned(),
            machine_group: "g".to_owned(),
            state: AgentState::Active,
            capacity,
            allocated: Resources {
                cpu_millis: 4000 - free_cpu_millis,
                ..Resources::ZERO
            },
            job_task_counts: BTreeMap::new(),
            exclusive_jobs: BTreeSet::new(),
        }
    }

    fn cpu(millis: u64) -> Resources {
        Resources {
            cpu_millis: millis,
            ..Resources::ZERO
        }
    }

    fn found(index: &AgentIndex, query: &Query, start: usize, limit: usize) -> Vec<usize> {
        let mut out = Vec::new();
        index.search(query, start, true, limit, &mut |_| true, &mut out);
        out
    }

    #[test]
    fn search_skips_agents_without_room_and_stops_at_the_limit() {
        let agents: Vec<AgentView> = [0, 3000, 500, 3000, 3000]
            .iter()
            .enumerate()
            .map(|(i, &free)| agent(&format!("a{i}"), "z", free))
            .collect();
        let cluster = Cluster::new(&agents, &[]);
        let index = AgentIndex::new(&cluster.slots, |_| true);

        let result = found(&index, &Query::new(cpu(1000)), 0, 2);

        assert_eq!(result, vec![1, 3]);
    }

    #[test]
    fn search_wraps_around_from_its_start() {
        let agents: Vec<AgentView> = (0..5).map(|i| agent(&format!("a{i}"), "z", 4000)).collect();
        let cluster = Cluster::new(&agents, &[]);
        let index = AgentIndex::new(&cluster.slots, |_| true);

        let result = found(&index, &Query::new(cpu(1)), 3, 4);

        assert_eq!(result, vec![3, 4, 0, 1]);
    }

    #[test]
    fn search_without_wrapping_stops_at_the_end() {
        let agents: Vec<AgentView> = (0..5).map(|i| agent(&format!("a{i}"), "z", 4000)).collect();
        let cluster = Cluster::new(&agents, &[]);
        let index = AgentIndex::new(&cluster.slots, |_| true);
        let mut out = Vec::new();

        index.search(&Query::new(cpu(1)), 3, false, 4, &mut |_| true, &mut out);

        assert_eq!(out, vec![3, 4]);
    }

    #[test]
    fn first_fit_finds_the_first_agent_with_room_from_a_position() {
        let agents: Vec<AgentView> = [0, 3000, 500, 3000]
            .iter()
            .enumerate()
            .map(|(i, &free)| agent(&format!("a{i}"), "z", free))
            .collect();
        let cluster = Cluster::new(&agents, &[]);
        let index = AgentIndex::new(&cluster.slots, |_| true);

        assert_eq!(index.first_fit(cpu(1000), false, 0), 1);
        assert_eq!(index.first_fit(cpu(1000), false, 2), 3);
        assert_eq!(index.first_fit(cpu(4000), false, 0), 4, "none has room");
    }

    #[test]
    fn an_agent_with_the_cpu_and_another_with_the_memory_do_not_make_room() {
        let mut cpu_left = agent("a", "z", 4000);
        cpu_left.allocated.memory_mb = 8000;
        let memory_left = agent("b", "z", 0);
        let agents = [cpu_left, memory_left];
        let cluster = Cluster::new(&agents, &[]);
        let index = AgentIndex::new(&cluster.slots, |_| true);
        let need = Resources {
            cpu_millis: 1000,
            memory_mb: 1000,
            ..Resources::ZERO
        };

        assert!(!index.nodes[1].admits(&Query::new(need)));
        assert_eq!(index.first_fit(need, false, 0), 2);
    }

    #[test]
    fn open_only_queries_skip_agents_held_exclusively() {
        let agents = [agent("a", "z", 4000), agent("b", "z", 4000)];
        let mut cluster = Cluster::new(&agents, &[]);
        cluster.slots[0].exclusive_to.push(0);
        let index = AgentIndex::new(&cluster.slots, |_| true);
        let mut query = Query::new(cpu(1));
        query.open_only = true;

        assert_eq!(found(&index, &query, 0, 10), vec![1]);
        assert_eq!(index.first_fit(cpu(1), true, 0), 1);
        assert_eq!(index.first_fit(cpu(1), false, 0), 0);
    }

    #[test]
    fn search_prunes_zones_outside_the_mask() {
        let agents = [agent("a", "z1", 4000), agent("b", "z2", 4000)];
        let cluster = Cluster::new(&agents, &[]);
        let index = AgentIndex::new(&cluster.slots, |_| true);
        let mut query = Query::new(cpu(1));
        query.zones = bit(cluster.zones.get("z2").unwrap_or(0));

        let result = found(&index, &query, 0, 10);

        assert_eq!(result, vec![1]);
    }

    #[test]
    fn an_update_makes_a_filled_agent_disappear_from_searches() {
        let agents = [agent("a", "z", 4000), agent("b", "z", 4000)];
        let mut cluster = Cluster::new(&agents, &[]);
        let mut index = AgentIndex::new(&cluster.slots, |_| true);

        cluster.slots[0].allocated = cpu(4000);
        index.update(&cluster.slots, 0);

        assert_eq!(found(&index, &Query::new(cpu(1)), 0, 10), vec![1]);
    }

    #[test]
    fn excluded_slots_are_never_found() {
        let agents = [agent("a", "z", 4000), agent("b", "z", 4000)];
        let cluster = Cluster::new(&agents, &[]);
        let index = AgentIndex::new(&cluster.slots, |s| s.view.id == "b");

        assert_eq!(found(&index, &Query::new(cpu(1)), 0, 10), vec![1]);
        assert_eq!(index.position_of(0), None);
    }
}
