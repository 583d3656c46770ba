//! The planners: the indexed one behind [`crate::plan`], and the exhaustive reference behind
//! [`crate::plan_exhaustive`] that scores every feasible agent. Both share the filters, the
//! scorers and the explanation of unplaced tasks; they differ only in how they search.

use std::collections::{HashMap, HashSet};

use titus_core::job::{Constraint, ConstraintName};
use titus_core::{AgentState, Resources};

use crate::filter::{first_rejecting, pipeline, Ask, Filter, FilterSet};
use crate::index::{bit, AgentIndex, Query};
use crate::model::{AgentView, Placement, Plan, Strategy, TaskRequest, Unplaced};
use crate::reason::{Explanation, Tally};
use crate::score::{best, preferences, strategy_scorer, Scorer};
use crate::state::{Cluster, JobIdx};

/// What tasks of one job with the same constraints share: compiled once, not once per task.
#[derive(Debug)]
struct Profile {
    job: JobIdx,
    hard: FilterSet,
    /// Numbers the distinct hard filter sets across jobs (see `FilterSet::key`).
    hard_class: usize,
    /// The hard constraints plus the soft ones as if they were hard. The indexed planner searches
    /// with it first, so that the few candidates it examines satisfy every preference whenever
    /// some agent does; `None` when the task has no soft constraint to honour.
    strict: Option<FilterSet>,
    preferences: Vec<Box<dyn Scorer>>,
}

/// Resources for which one search (a profile's pass over some zones) found no agent. Within a
/// plan agents only fill up and gain tasks, so every filter's verdict can only turn from yes to
/// no; the same search for a task of the same profile needing at least as much in every
/// dimension therefore finds nothing either, and is skipped. (zoneBalance only chooses which
/// zones to search; it is not a filter whose verdict could turn back.)
#[derive(Debug, Default)]
struct Failures(Vec<Resources>);

impl Failures {
    /// How many failures a profile remembers; each is one comparison per later task.
    const KEPT: usize = 16;

    fn covers(&self, needed: &Resources) -> bool {
        self.0.iter().any(|failed| failed.fits_within(needed))
    }

    fn record(&mut self, needed: Resources) {
        // A failure needing more than `needed` in no dimension is implied by the new one.
        self.0.retain(|failed| !needed.fits_within(failed));
        if self.0.len() == Self::KEPT {
            self.0.remove(0);
        }
        self.0.push(needed);
    }
}

/// The profiles of the tasks of a plan, keyed by job and constraint lists as given.
#[derive(Debug, Default)]
struct Profiles<'a> {
    by_key: HashMap<(JobIdx, &'a [Constraint], &'a [Constraint]), usize>,
    list: Vec<Profile>,
    hard_classes: HashMap<Vec<(ConstraintName, String)>, usize>,
}

impl<'a> Profiles<'a> {
    fn of(&mut self, task: &'a TaskRequest, cluster: &Cluster<'_>) -> usize {
        let job = cluster.job(&task.job_id);
        let key = (job, task.hard.as_slice(), task.soft.as_slice());
        if let Some(&p) = self.by_key.get(&key) {
            return p;
        }
        let preferences = preferences(&task.soft, cluster);
        let honoured_soft: Vec<Constraint> = task
            .soft
            .iter()
            .filter(|c| is_honoured_soft(c))
            .cloned()
            .collect();
        let strict = (!honoured_soft.is_empty()).then(|| {
            let mut all = task.hard.clone();
            all.extend(honoured_soft);
            FilterSet::compile(&all, job, cluster)
        });
        let hard = FilterSet::compile(&task.hard, job, cluster);
        let classes = self.hard_classes.len();
        let hard_class = *self.hard_classes.entry(hard.key.clone()).or_insert(classes);
        self.list.push(Profile {
            job,
            hard,
            hard_class,
            strict,
            preferences,
        });
        self.by_key.insert(key, self.list.len() - 1);
        self.list.len() - 1
    }
}

/// Whether a soft constraint becomes a preference (see [`preferences`]).
fn is_honoured_soft(c: &Constraint) -> bool {
    matches!(
        c,
        Constraint::UniqueHost
            | Constraint::ExclusiveHost
            | Constraint::ZoneBalance
            | Constraint::AvailabilityZone(_)
            | Constraint::MachineId(_)
            | Constraint::MachineGroup(_)
            | Constraint::MachineType(_)
    )
}

/// How many feasible agents the indexed planner ranks per task, as Nomad limits its rank
/// iterator. Spreading ranks log2 of the agents (at least 2) around its rotating start, since
/// its order says nothing about use. Bin-packing's first-fit order already favours full agents,
/// so ranking the first few only picks the tightest of them; measured on the benchmark's
/// workload, 2 to 15 candidates place the same tasks on as many agents, and each candidate
/// beyond the first costs a walk further into the packed agents.
fn candidate_limit(strategy: Strategy, agents: usize) -> usize {
    match strategy {
        Strategy::BinPack => 4,
        Strategy::Spread => (usize::BITS - agents.leading_zeros()).max(2) as usize,
    }
}

/// Which of a task's searches a remembered failure belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Pass {
    Strict,
    Hard,
}

/// Which zones a search covered, for remembering its failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Zones {
    Every,
    /// A group of zones as a bit set of zone numbers.
    Group(u64),
}

impl Zones {
    /// The key of a zone group; `None` past 64 zones, where a bit set cannot name the group
    /// exactly and nothing is remembered.
    fn group(zones: &[u32]) -> Option<Zones> {
        zones
            .iter()
            .try_fold(0u64, |set, &z| (z < 64).then(|| set | (1 << z)))
            .map(Zones::Group)
    }
}

/// One search for a task: with which filters, in which zones.
#[derive(Debug, Clone, Copy)]
struct Attempt<'s> {
    profile: usize,
    pass: Pass,
    set: &'s FilterSet,
    /// The zones to search; `None` for every zone.
    zones: Option<&'s [u32]>,
}

/// The indexed planner's state across the tasks of one plan.
#[derive(Debug)]
struct Indexed<'a> {
    cluster: Cluster<'a>,
    index: AgentIndex,
    limit: usize,
    /// Where the current task's searches start.
    order: Order,
    /// Per resources asked for (and whether agents held by exclusiveHost jobs count): a
    /// position before which no agent has room for them. Agents
    /// only fill up during a plan, so it only moves right, and bin-packing's first-fit searches
    /// skip the full agents at the front without visiting them again and again.
    frontiers: HashMap<(Resources, bool), usize>,
    /// Searches that found nothing, per profile, pass and zones searched.
    failures: HashMap<(usize, Pass, Zones), Failures>,
}

impl Indexed<'_> {
    /// Up to `limit` agents the task may go on, appended to `out`, or none when it fits nowhere.
    fn candidates(&mut self, p: usize, profile: &Profile, ask: &Ask, out: &mut Vec<usize>) {
        // A function, not a closure, so that each call borrows its zones for its own lifetime.
        fn attempt<'s>(
            p: usize,
            pass: Pass,
            set: &'s FilterSet,
            zones: Option<&'s [u32]>,
        ) -> Attempt<'s> {
            Attempt {
                profile: p,
                pass,
                set,
                zones,
            }
        }
        if profile.hard.zone_balance {
            // The hard constraints alone decide which zones the task may go to: those with the
            // fewest of its job's tasks among the zones where it fits. Zones are tried by that
            // count, equal counts together, so the first group with a feasible agent is exactly
            // that set. Soft constraints only choose within it.
            for group in self.zone_groups(ask.job) {
                if let Some(strict) = &profile.strict {
                    if self.attempt(attempt(p, Pass::Strict, strict, Some(&group)), ask, out) {
                        return;
                    }
                }
                if self.attempt(
                    attempt(p, Pass::Hard, &profile.hard, Some(&group)),
                    ask,
                    out,
                ) {
                    return;
                }
            }
            return;
        }
        if let Some(strict) = &profile.strict {
            if strict.zone_balance {
                // Soft zoneBalance: the fewest of the job's tasks among the zones where every
                // other preference can be met too.
                for group in self.zone_groups(ask.job) {
                    if self.attempt(attempt(p, Pass::Strict, strict, Some(&group)), ask, out) {
                        return;
                    }
                }
            } else if self.attempt(attempt(p, Pass::Strict, strict, None), ask, out) {
                return;
            }
        }
        self.attempt(attempt(p, Pass::Hard, &profile.hard, None), ask, out);
    }

    /// The first position with room for `need`, among agents held by no exclusiveHost job
    /// when `open_only` (see `frontiers`).
    fn frontier(&mut self, need: Resources, open_only: bool) -> usize {
        let from = self.frontiers.get(&(need, open_only)).copied().unwrap_or(0);
        let first = self.index.first_fit(need, open_only, from);
        self.frontiers.insert((need, open_only), first);
        first
    }

    /// The zones with active agents grouped by the job's tasks in them, fewest first.
    fn zone_groups(&self, job: JobIdx) -> Vec<Vec<u32>> {
        let counts = self.cluster.zone_counts(job);
        let count = |z: &u32| counts.get(*z as usize).copied().unwrap_or(0);
        let mut zones = self.cluster.active_zones.clone();
        zones.sort_by_key(|z| (count(z), *z));
        zones
            .chunk_by(|a, b| count(a) == count(b))
            .map(<[u32]>::to_vec)
            .collect()
    }

    /// Runs one search unless a remembered failure covers it, and remembers it if it fails.
    /// Returns whether it found any agent.
    fn attempt(&mut self, attempt: Attempt<'_>, ask: &Ask, out: &mut Vec<usize>) -> bool {
        let zones = match attempt.zones {
            None => Some(Zones::Every),
            Some(group) => Zones::group(group),
        };
        let key = zones.map(|z| (attempt.profile, attempt.pass, z));
        let covered = key
            .and_then(|k| self.failures.get(&k))
            .is_some_and(|f| f.covers(&ask.resources));
        if covered {
            return false;
        }
        self.find_feasible(attempt.set, ask, attempt.zones, out);
        if out.is_empty() {
            if let Some(k) = key {
                self.failures.entry(k).or_default().record(ask.resources);
            }
            return false;
        }
        true
    }

    /// Finds up to `limit` agents that pass the set's per-agent filters (its zoneBalance is the
    /// caller's business), in `only_zones` if given, in the current search order; appends their
    /// slots to `out`. Finds none only if no such agent exists.
    fn find_feasible(
        &self,
        set: &FilterSet,
        ask: &Ask,
        only_zones: Option<&[u32]>,
        out: &mut Vec<usize>,
    ) {
        let cluster = &self.cluster;
        let mut query = set.query(ask.resources);
        // Agents held by exclusiveHost jobs are closed to other jobs; only an exclusive job
        // can hold one, so tasks of other jobs skip them a subtree at a time.
        query.open_only = !cluster.is_exclusive(ask.job);
        if let Some(zones) = only_zones {
            query.zones &= zones.iter().fold(0, |mask, &z| mask | bit(z));
        }
        let mut accept = |slot: usize| {
            let s = &cluster.slots[slot];
            only_zones.is_none_or(|zones| zones.contains(&s.zone))
                && !s.exclusive_to_other_job(ask.job)
                && set.passes(ask, s)
        };
        find(
            &query,
            cluster,
            &self.index,
            self.order,
            self.limit,
            &mut accept,
            out,
        );
    }
}

/// The indexed planner: see the crate documentation.
pub(crate) fn plan_indexed(
    tasks: &[TaskRequest],
    agents: &[AgentView],
    strategy: Strategy,
) -> Plan {
    let cluster = Cluster::new(agents, tasks);
    let index = AgentIndex::new(&cluster.slots, |s| s.state() == AgentState::Active);
    let mut planner = Indexed {
        limit: candidate_limit(strategy, index.len()),
        cluster,
        index,
        order: Order::Rotating(0),
        frontiers: HashMap::new(),
        failures: HashMap::new(),
    };
    let scorer = strategy_scorer(strategy);
    let mut profiles = Profiles::default();
    let mut placements = Vec::new();
    let mut unplaced = Vec::new();
    // Where spreading resumes its search: after the last agent it chose, so consecutive tasks
    // start at different agents, as Nomad's shuffled node order does, but deterministically.
    let mut cursor = 0;
    let mut candidates = Vec::new();

    for task in tasks {
        let p = profiles.of(task, &planner.cluster);
        let profile = &profiles.list[p];
        let ask = Ask {
            job: profile.job,
            resources: task.resources,
        };
        planner.order = match strategy {
            Strategy::Spread => Order::Rotating(cursor),
            Strategy::BinPack => {
                let open_only = !planner.cluster.is_exclusive(ask.job);
                Order::From(planner.frontier(ask.resources, open_only))
            }
        };
        candidates.clear();
        planner.candidates(p, profile, &ask, &mut candidates);
        let chosen = best(
            &candidates,
            &ask,
            &planner.cluster,
            scorer,
            &profile.preferences,
        );
        match chosen {
            Some(slot) => {
                planner.cluster.place(slot, ask.job, ask.resources);
                planner.index.update(&planner.cluster.slots, slot);
                cursor = planner
                    .index
                    .position_of(slot)
                    .map_or(0, |position| position + 1);
                placements.push(placement(task, &planner.cluster, slot));
            }
            None => unplaced.push((task, p)),
        }
    }
    Plan {
        placements,
        unplaced: explain(&unplaced, &profiles, &planner.cluster),
    }
}

/// Where a search starts, and whether it wraps around.
#[derive(Debug, Clone, Copy)]
enum Order {
    /// From this position to the end: first fit, for bin-packing.
    From(usize),
    /// From this position to the end, then from the beginning: for spreading.
    Rotating(usize),
}

/// The index search, or for a machineId query a direct look at the named agents.
fn find(
    query: &Query,
    cluster: &Cluster<'_>,
    index: &AgentIndex,
    order: Order,
    limit: usize,
    accept: &mut dyn FnMut(usize) -> bool,
    out: &mut Vec<usize>,
) {
    match query.machine_id {
        None => match order {
            Order::From(start) => index.search(query, start, false, limit, accept, out),
            Order::Rotating(start) => index.search(query, start, true, limit, accept, out),
        },
        Some(id) => {
            let named = cluster
                .slots_by_id
                .get(id as usize)
                .map_or(&[][..], Vec::as_slice);
            for &slot in named {
                let admitted = index
                    .position_of(slot)
                    .is_some_and(|position| index.admits(position, query));
                if admitted && out.len() < limit && accept(slot) {
                    out.push(slot);
                }
            }
        }
    }
}

/// The reference planner: for every task, runs every filter on every agent and ranks all the
/// feasible ones. Same filters, scorers and explanations as the indexed planner.
pub(crate) fn plan_exhaustive(
    tasks: &[TaskRequest],
    agents: &[AgentView],
    strategy: Strategy,
) -> Plan {
    let mut cluster = Cluster::new(agents, tasks);
    let scorer = strategy_scorer(strategy);
    let mut profiles = Profiles::default();
    let mut placements = Vec::new();
    let mut unplaced = Vec::new();
    let mut feasible = Vec::new();

    for task in tasks {
        let p = profiles.of(task, &cluster);
        let profile = &profiles.list[p];
        let ask = Ask {
            job: profile.job,
            resources: task.resources,
        };
        feasible.clear();
        feasible.extend(
            (0..cluster.slots.len()).filter(|&slot| {
                first_rejecting(&profile.hard, &ask, &cluster.slots[slot]).is_none()
            }),
        );
        if profile.hard.zone_balance {
            let counts = cluster.zone_counts(ask.job);
            let count = |slot: &usize| {
                let zone = cluster.slots[*slot].zone as usize;
                counts.get(zone).copied().unwrap_or(0)
            };
            if let Some(fewest) = feasible.iter().map(count).min() {
                feasible.retain(|slot| count(slot) == fewest);
            }
        }
        match best(&feasible, &ask, &cluster, scorer, &profile.preferences) {
            Some(slot) => {
                cluster.place(slot, ask.job, ask.resources);
                placements.push(placement(task, &cluster, slot));
            }
            None => unplaced.push((task, p)),
        }
    }
    Plan {
        placements,
        unplaced: explain(&unplaced, &profiles, &cluster),
    }
}

fn placement(task: &TaskRequest, cluster: &Cluster<'_>, slot: usize) -> Placement {
    Placement {
        task_id: task.task_id.clone(),
        job_id: task.job_id.clone(),
        agent_id: cluster.slots[slot].view.id.clone(),
        resources: task.resources,
    }
}

/// Names why each unplaced task fits nowhere, against the cluster at the end of the plan.
/// Verdicts only turn from yes to no during a plan, so a task that fit nowhere when it was
/// decided still fits nowhere, and every agent has a reason.
///
/// Each explanation is a scan of every agent, so tasks share one where they must get the same
/// answer: same constraints and resources, and, when a filter depends on the job or the job
/// holds agents exclusively, the same job.
fn explain(
    unplaced: &[(&TaskRequest, usize)],
    profiles: &Profiles<'_>,
    cluster: &Cluster<'_>,
) -> Vec<Unplaced> {
    let holders: HashSet<JobIdx> = cluster
        .slots
        .iter()
        .flat_map(|s| s.exclusive_to.iter().copied())
        .collect();
    let mut explained: HashMap<(usize, Resources, Option<JobIdx>), Explanation> = HashMap::new();
    unplaced
        .iter()
        .map(|&(task, p)| {
            let profile = &profiles.list[p];
            let job_matters = profile.hard.depends_on_job() || holders.contains(&profile.job);
            let key = (
                profile.hard_class,
                task.resources,
                job_matters.then_some(profile.job),
            );
            let ask = Ask {
                job: profile.job,
                resources: task.resources,
            };
            let Explanation {
                reasons,
                rejections,
                insufficient,
            } = explained
                .entry(key)
                .or_insert_with(|| explain_one(&profile.hard, &ask, cluster))
                .clone();
            Unplaced {
                task_id: task.task_id.clone(),
                job_id: task.job_id.clone(),
                reasons,
                rejections,
                insufficient,
            }
        })
        .collect()
}

/// Counts every agent under the reasons of the first filter rejecting it.
fn explain_one(set: &FilterSet, ask: &Ask, cluster: &Cluster<'_>) -> Explanation {
    // Agents per (stage, variant), with one of them to ask the stage's filter for the words.
    let mut verdicts: Vec<((usize, u32), usize, usize)> = Vec::new();
    for (slot, s) in cluster.slots.iter().enumerate() {
        let Some(verdict) = first_rejecting(set, ask, s) else {
            debug_assert!(false, "an unplaced task fits agent {}", s.view.id);
            continue;
        };
        match verdicts.iter_mut().find(|(v, _, _)| *v == verdict) {
            Some((_, agents, _)) => *agents += 1,
            None => verdicts.push((verdict, 1, slot)),
        }
    }
    let stages: Vec<&dyn Filter> = pipeline(set).collect();
    let mut tally = Tally::default();
    let mut reasons = Vec::new();
    for ((stage, _), agents, example) in verdicts {
        stages[stage].reasons(ask, &cluster.slots[example], &mut reasons);
        reasons.drain(..).for_each(|r| tally.add(r, agents));
    }
    tally.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(millis: u64) -> Resources {
        Resources {
            cpu_millis: millis,
            ..Resources::ZERO
        }
    }

    #[test]
    fn a_failure_covers_tasks_needing_as_much_or_more() {
        let mut failures = Failures::default();

        failures.record(cpu(2000));

        assert!(failures.covers(&cpu(2000)));
        assert!(failures.covers(&Resources {
            memory_mb: 1,
            ..cpu(3000)
        }));
        assert!(!failures.covers(&cpu(1999)));
    }

    #[test]
    fn a_weaker_failure_replaces_the_ones_it_implies() {
        let mut failures = Failures::default();
        failures.record(cpu(3000));

        failures.record(cpu(1000));

        assert_eq!(failures.0, vec![cpu(1000)]);
    }

    #[test]
    fn spreading_ranks_log2_of_the_agents_and_bin_packing_a_few() {
        assert_eq!(candidate_limit(Strategy::Spread, 0), 2);
        assert_eq!(candidate_limit(Strategy::Spread, 1), 2);
        assert_eq!(candidate_limit(Strategy::Spread, 5000), 13);
        assert_eq!(candidate_limit(Strategy::Spread, 20_000), 15);
        assert_eq!(candidate_limit(Strategy::BinPack, 20_000), 4);
    }
}
