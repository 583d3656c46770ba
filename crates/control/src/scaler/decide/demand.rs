//! Demand: what the pending tasks the agents cannot take need. The engine places them again on
//! the agents (with what the first placement gave them) plus the hypothetical instances; the
//! tasks booting instances take wait for those, the fresh instances chosen are the ones to
//! launch (the first of each pool, up to what it may launch), and the rest is unschedulable.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use titus_core::{Resources, TaskId};
use titus_placement::{AgentView, Plan, Strategy, TaskRequest};

use super::hypothetical::{add_hypothetical, Candidate, Hypothetical};
use super::terminate::launch_cap;
use super::{Cooling, Demand, Headroom, Members, Picks, Snapshot};

/// How many tasks, and what they need, by where the engine put them.
type Tally<K> = BTreeMap<K, (u32, Resources)>;

/// What the tasks beyond the agents come to.
#[derive(Debug, Default)]
pub(super) struct Beyond<'a> {
    pub(super) demand: Vec<Demand>,
    pub(super) picks: Picks<'a>,
    pub(super) unschedulable: u32,
    pub(super) unschedulable_examples: Vec<(TaskId, Vec<String>)>,
}

/// The demand beyond the agents, given the engine's placement on them as they are (`current`).
pub(super) fn beyond_agents<'a>(
    s: &Snapshot<'a>,
    members: &Members<'a>,
    cooling: &Cooling<'a>,
    headroom: &Headroom<'a>,
    current: &Plan,
) -> Beyond<'a> {
    if current.unplaced.is_empty() {
        return Beyond::default();
    }
    let mut views = with_placements(s.views, current);
    let hypothetical = add_hypothetical(s, members, cooling, headroom, &mut views);
    let second = titus_placement::plan(&leftover(s.tasks, current), &views, Strategy::BinPack);
    let taken = tally(&second, &hypothetical);
    let mut demand = booting_demand(taken.on_booting);
    let (picks, on_fresh, waiting) =
        fresh_launches(s, headroom, &hypothetical.candidates, taken.on_fresh);
    demand.extend(fresh_demand(s, on_fresh));
    Beyond {
        demand,
        picks,
        unschedulable: second.unplaced.len() as u32 + waiting,
        unschedulable_examples: second
            .unplaced
            .iter()
            .take(5)
            .map(|u| (u.task_id.clone(), u.reasons.clone()))
            .collect(),
    }
}

/// The agents' views with the first placement's tasks on them.
fn with_placements(views: &[AgentView], current: &Plan) -> Vec<AgentView> {
    let mut views = views.to_vec();
    let index: HashMap<String, usize> = views
        .iter()
        .enumerate()
        .map(|(i, v)| (v.id.clone(), i))
        .collect();
    for placement in &current.placements {
        if let Some(&i) = index.get(&placement.agent_id) {
            let view = &mut views[i];
            view.allocated = view.allocated.saturating_add(placement.resources);
            *view
                .job_task_counts
                .entry(placement.job_id.clone())
                .or_default() += 1;
        }
    }
    views
}

/// The pending tasks the first placement left, oldest first.
fn leftover(tasks: &[TaskRequest], current: &Plan) -> Vec<TaskRequest> {
    let unplaced: BTreeSet<&TaskId> = current.unplaced.iter().map(|u| &u.task_id).collect();
    tasks
        .iter()
        .filter(|t| unplaced.contains(&t.task_id))
        .cloned()
        .collect()
}

/// What the second placement put on the hypothetical instances.
#[derive(Debug)]
struct Taken<'h> {
    /// By candidate id.
    on_fresh: Tally<&'h str>,
    /// By pool, type and zone.
    on_booting: Tally<(&'h str, &'h str, &'h str)>,
}

fn tally<'h>(second: &Plan, hypothetical: &'h Hypothetical<'_>) -> Taken<'h> {
    let mut on_fresh: Tally<&str> = BTreeMap::new();
    let mut on_booting: Tally<(&str, &str, &str)> = BTreeMap::new();
    for placement in &second.placements {
        if let Some((id, _)) = hypothetical.candidates.get_key_value(&placement.agent_id) {
            let entry = on_fresh.entry(id.as_str()).or_insert((0, Resources::ZERO));
            entry.0 += 1;
            entry.1 = entry.1.saturating_add(placement.resources);
        } else if let Some((pool, member)) = hypothetical.booting.get(&placement.agent_id) {
            let entry = on_booting
                .entry((pool, member.machine_type.as_str(), member.zone.as_str()))
                .or_insert((0, Resources::ZERO));
            entry.0 += 1;
            entry.1 = entry.1.saturating_add(placement.resources);
        }
    }
    Taken {
        on_fresh,
        on_booting,
    }
}

/// The demand booting instances will take.
fn booting_demand(on_booting: Tally<(&str, &str, &str)>) -> Vec<Demand> {
    on_booting
        .into_iter()
        .map(|((pool, machine_type, zone), (tasks, resources))| Demand {
            pool: pool.to_owned(),
            machine_type: machine_type.to_owned(),
            zone: zone.to_owned(),
            tasks,
            resources,
            booting: true,
        })
        .collect()
}

/// What the kept candidates take, by pool, type index and subnet index.
type FreshTally = Tally<(String, usize, usize)>;

/// The chosen candidates to launch, what they take, and how many tasks wait because their pool
/// may launch no more this run.
fn fresh_launches<'a>(
    s: &Snapshot<'a>,
    headroom: &Headroom<'a>,
    candidates: &HashMap<String, Candidate>,
    on_fresh: Tally<&str>,
) -> (Picks<'a>, FreshTally, u32) {
    let mut picks: Picks<'a> = BTreeMap::new();
    // Candidate ids sort by pool, then sequence: the first `cap` of a pool are kept.
    let mut per_pool_kept: BTreeMap<&str, u32> = BTreeMap::new();
    let mut new_demand: FreshTally = BTreeMap::new();
    let mut waiting = 0u32;
    for (id, (tasks, resources)) in on_fresh {
        let candidate = &candidates[id];
        let pool = candidate.pool.as_str();
        let cap = launch_cap(s, headroom, pool);
        let kept = per_pool_kept.entry(pool).or_default();
        if *kept >= cap {
            waiting += tasks;
            continue;
        }
        *kept += 1;
        let entry = new_demand
            .entry((
                candidate.pool.clone(),
                candidate.type_index,
                candidate.subnet_index,
            ))
            .or_insert((0, Resources::ZERO));
        entry.0 += tasks;
        entry.1 = entry.1.saturating_add(resources);
        if let Some((pool_name, _)) = s.config.pools.get_key_value(pool) {
            picks
                .entry(pool_name.as_str())
                .or_default()
                .push((candidate.type_index, candidate.subnet_index));
        }
    }
    (picks, new_demand, waiting)
}

/// The demand the fresh instances to launch will take.
fn fresh_demand(s: &Snapshot<'_>, new_demand: FreshTally) -> Vec<Demand> {
    new_demand
        .into_iter()
        .map(|((pool, type_index, subnet_index), (tasks, resources))| {
            let pool_settings = &s.config.pools[&pool];
            let zone = s
                .subnets
                .get(&pool)
                .and_then(|subnets| subnets.get(subnet_index))
                .map(|subnet| subnet.zone.clone())
                .unwrap_or_default();
            Demand {
                machine_type: pool_settings.instance_types[type_index].clone(),
                pool,
                zone,
                tasks,
                resources,
                booting: false,
            }
        })
        .collect()
}
