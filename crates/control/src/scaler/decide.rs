//! The scaler's decision, pure: from a snapshot of the pools' instances, the agents, the pending
//! tasks and the scaler's memory, what to launch, drain and terminate. No I/O and no clock, so
//! every rule is tested without AWS.
//!
//! Demand is measured with the placement engine itself. The pending tasks are first placed on
//! the agents as they are (what the scheduler will do anyway); the tasks left over are then
//! placed again on the same agents plus hypothetical ones: the instances still booting, and
//! for each pool that may launch, fresh instances of every configured type in every subnet. The
//! fresh instances the engine chooses are the ones to launch, by type and zone, so constraints
//! (machine type, zone, group, zone balance, unique host) and bin-packing shape the scale-up.
//! Tasks no hypothetical instance can take (too large for every type, or pinned elsewhere) are
//! reported and launch nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use titus_core::{Agent, AgentState, Resources, TaskId};
use titus_placement::{AgentView, Strategy, TaskRequest};

use titus_core::ports::{InstanceTypeInfo, Lifecycle, PoolInstance, ScalerState, Subnet};

use super::settings::{PoolSettings, ScalerConfig};

/// Everything a decision is made from.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot<'a> {
    pub now_ms: u64,
    pub config: &'a ScalerConfig,
    /// The stage's pool instances that are pending or running.
    pub instances: &'a [PoolInstance],
    pub agents: &'a [Agent],
    pub state: &'a ScalerState,
    /// The configured instance types of every pool.
    pub types: &'a BTreeMap<String, InstanceTypeInfo>,
    /// Each pool's subnets, in order of preference.
    pub subnets: &'a BTreeMap<String, Vec<Subnet>>,
    /// The pending tasks, oldest first.
    pub tasks: &'a [TaskRequest],
    /// Every agent as the engine sees it.
    pub views: &'a [AgentView],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum TerminateReason {
    /// The scaler drained its agent, which now holds no task.
    Drained,
    /// The scaler drained it and its agent has since deregistered.
    Deregistered,
    /// No agent has been registered for it for the registration timeout: its agent never
    /// started, or stopped for good.
    NoAgent,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Termination {
    pub instance_id: String,
    pub pool: String,
    pub reason: TerminateReason,
}

/// Instances to launch of one type in one subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LaunchPlan {
    pub pool: String,
    pub machine_type: String,
    pub subnet_id: String,
    pub zone: String,
    pub on_demand: u32,
    pub spot: u32,
}

impl LaunchPlan {
    pub fn count(&self) -> u32 {
        self.on_demand + self.spot
    }
}

/// Tasks that wait for capacity, by the pool, type and zone that will take them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Demand {
    pub pool: String,
    pub machine_type: String,
    pub zone: String,
    pub tasks: u32,
    pub resources: Resources,
    /// Whether instances already booting will take them (else new ones are launched).
    pub booting: bool,
}

/// One pool's instances by what their agents are doing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolReport {
    pub pool: String,
    pub instances: u32,
    pub active: u32,
    pub idle: u32,
    pub booting: u32,
    pub draining: u32,
    pub lost: u32,
    /// Older instances without an agent, terminated if none registers in time.
    pub unregistered: u32,
    pub min_agents: u32,
    pub max_agents: u32,
    pub cooling_down: bool,
}

/// What to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    pub terminate: Vec<Termination>,
    /// Agents (instance ids) to mark draining, with their pool.
    pub drain: Vec<(String, String)>,
    pub launch: Vec<LaunchPlan>,
    /// The state to keep, before the launches' instance ids are known.
    pub state: ScalerState,
    pub pools: Vec<PoolReport>,
    pub demand: Vec<Demand>,
    /// Pending tasks the current agents cannot take.
    pub unplaced: u32,
    /// Of those, tasks no instance the scaler could launch would take, with the engine's reasons
    /// for the first few.
    pub unschedulable: u32,
    pub unschedulable_examples: Vec<(TaskId, Vec<String>)>,
}

/// What an agent on an instance of this type in this pool will offer, as far as the scaler can
/// tell before it registers.
pub fn estimated_capacity(pool: &PoolSettings, info: &InstanceTypeInfo) -> Resources {
    Resources {
        cpu_millis: u64::from(info.vcpus) * 1000,
        memory_mb: info.memory_mib.saturating_sub(pool.memory_reserved_mb),
        disk_mb: pool.disk_mb,
        network_mbps: pool.network_mbps,
        gpu: u64::from(info.gpus),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Active {
        idle: bool,
    },
    Draining,
    Lost,
    Booting,
    /// Launched a while ago and without an agent (not counted as capacity).
    Unregistered,
    Terminate(TerminateReason),
}

#[derive(Debug, Clone)]
struct Member {
    id: String,
    machine_type: String,
    zone: String,
    lifecycle: Lifecycle,
    status: Status,
}

/// A fresh instance the engine may choose: which pool, type and subnet it stands for.
#[derive(Debug, Clone)]
struct Candidate {
    pool: String,
    type_index: usize,
    subnet_index: usize,
}

/// Candidate ids sort after instance ids (`i-...`) and, within a pool, by their sequence number
/// first, so that equal choices spread over the subnets before doubling up in one.
fn candidate_id(pool: &str, n: u32, type_index: usize, subnet_index: usize) -> String {
    format!("~{pool}~{n:05}~{type_index:03}~{subnet_index:03}")
}

fn hypothetical_view(
    id: String,
    pool: &str,
    machine_type: &str,
    zone: &str,
    capacity: Resources,
) -> AgentView {
    AgentView {
        id,
        zone: zone.to_owned(),
        machine_type: machine_type.to_owned(),
        machine_group: pool.to_owned(),
        state: AgentState::Active,
        capacity,
        allocated: Resources::ZERO,
        job_task_counts: BTreeMap::new(),
        exclusive_jobs: BTreeSet::new(),
    }
}

/// Decides one run. See the module documentation.
pub fn decide(s: &Snapshot<'_>) -> Decision {
    let now = s.now_ms;
    let settings = &s.config.settings;
    let registration_timeout_ms = settings.registration_timeout_secs.saturating_mul(1000);
    let agents: HashMap<&str, &Agent> = s.agents.iter().map(|a| (a.id.as_str(), a)).collect();

    // Every pool's members: the instances EC2 lists, plus recent launches it does not list yet.
    let mut members: BTreeMap<&str, Vec<Member>> = s
        .config
        .pools
        .keys()
        .map(|p| (p.as_str(), Vec::new()))
        .collect();
    let listed: BTreeSet<&str> = s.instances.iter().map(|i| i.id.as_str()).collect();
    let mut unregistered_since: BTreeMap<String, u64> = BTreeMap::new();
    for instance in s.instances {
        let Some(pool_members) = members.get_mut(instance.pool.as_str()) else {
            continue;
        };
        let drained_by_us = s.state.drained_at_ms.contains_key(&instance.id);
        let status = match agents.get(instance.id.as_str()) {
            Some(agent) => agent_status(agent, drained_by_us),
            None if drained_by_us => Status::Terminate(TerminateReason::Deregistered),
            None => {
                // The clock starts at launch for a new instance, and when it is first seen
                // without an agent for an older one (its agent may be restarting).
                let young = now.saturating_sub(instance.launched_at_ms) < registration_timeout_ms;
                let since = match s.state.unregistered_since_ms.get(&instance.id) {
                    Some(&since) => since,
                    None if young => instance.launched_at_ms,
                    None => now,
                };
                unregistered_since.insert(instance.id.clone(), since);
                if now.saturating_sub(since) >= registration_timeout_ms {
                    Status::Terminate(TerminateReason::NoAgent)
                } else if young {
                    Status::Booting
                } else {
                    Status::Unregistered
                }
            }
        };
        pool_members.push(Member {
            id: instance.id.clone(),
            machine_type: instance.machine_type.clone(),
            zone: instance.zone.clone(),
            lifecycle: instance.lifecycle,
            status,
        });
    }
    for (id, record) in &s.state.launched {
        let young = now.saturating_sub(record.launched_at_ms) < registration_timeout_ms;
        if listed.contains(id.as_str()) || !young {
            continue;
        }
        if let Some(pool_members) = members.get_mut(record.pool.as_str()) {
            let status = match agents.get(id.as_str()) {
                Some(agent) => agent_status(agent, s.state.drained_at_ms.contains_key(id)),
                None => Status::Booting,
            };
            // An unlisted instance is never terminated: EC2 may not show it yet, nor its end.
            let status = match status {
                Status::Terminate(_) => Status::Draining,
                other => other,
            };
            pool_members.push(Member {
                id: id.clone(),
                machine_type: record.machine_type.clone(),
                zone: record.zone.clone(),
                lifecycle: record.lifecycle,
                status,
            });
        }
    }

    let mut decision = Decision::default();
    let cooling: BTreeMap<&str, bool> = s
        .config
        .pools
        .iter()
        .map(|(name, pool)| {
            let cooling = s.state.last_launch_at_ms.get(name).is_some_and(|&at| {
                now < at.saturating_add(pool.cooldown_secs.saturating_mul(1000))
            });
            (name.as_str(), cooling)
        })
        .collect();

    // Terminations, and how much room each pool then has.
    let mut headroom: BTreeMap<&str, u32> = BTreeMap::new();
    for (pool, pool_members) in &members {
        for member in pool_members {
            if let Status::Terminate(reason) = member.status {
                decision.terminate.push(Termination {
                    instance_id: member.id.clone(),
                    pool: (*pool).to_owned(),
                    reason,
                });
            }
        }
        let staying = pool_members
            .iter()
            .filter(|m| !matches!(m.status, Status::Terminate(_)))
            .count() as u32;
        let settings = &s.config.pools[*pool];
        headroom.insert(pool, settings.max_agents.saturating_sub(staying));
    }

    // Demand: what the agents as they are cannot take.
    let first = titus_placement::plan(s.tasks, s.views, Strategy::BinPack);
    let receiving: BTreeSet<&str> = first
        .placements
        .iter()
        .map(|p| p.agent_id.as_str())
        .collect();
    decision.unplaced = first.unplaced.len() as u32;

    let mut launches: BTreeMap<&str, Vec<(usize, usize)>> = BTreeMap::new();
    if !first.unplaced.is_empty() {
        let mut views = s.views.to_vec();
        let index: HashMap<String, usize> = views
            .iter()
            .enumerate()
            .map(|(i, v)| (v.id.clone(), i))
            .collect();
        for placement in &first.placements {
            if let Some(&i) = index.get(&placement.agent_id) {
                let view = &mut views[i];
                view.allocated = view.allocated.saturating_add(placement.resources);
                *view
                    .job_task_counts
                    .entry(placement.job_id.clone())
                    .or_default() += 1;
            }
        }
        let mut candidates: HashMap<String, Candidate> = HashMap::new();
        let mut booting: HashMap<String, (&str, &Member)> = HashMap::new();
        for (pool, pool_members) in &members {
            let pool_settings = &s.config.pools[*pool];
            for member in pool_members.iter().filter(|m| m.status == Status::Booting) {
                if let Some(info) = s.types.get(&member.machine_type) {
                    views.push(hypothetical_view(
                        member.id.clone(),
                        pool,
                        &member.machine_type,
                        &member.zone,
                        estimated_capacity(pool_settings, info),
                    ));
                    booting.insert(member.id.clone(), (pool, member));
                }
            }
            if cooling[pool] {
                continue;
            }
            let cap = headroom[pool].min(pool_settings.max_launches_per_run);
            let subnets = s.subnets.get(*pool).map(Vec::as_slice).unwrap_or_default();
            for n in 0..cap {
                for (type_index, machine_type) in pool_settings.instance_types.iter().enumerate() {
                    let Some(info) = s.types.get(machine_type) else {
                        continue;
                    };
                    let capacity = estimated_capacity(pool_settings, info);
                    for (subnet_index, subnet) in subnets.iter().enumerate() {
                        let id = candidate_id(pool, n, type_index, subnet_index);
                        views.push(hypothetical_view(
                            id.clone(),
                            pool,
                            machine_type,
                            &subnet.zone,
                            capacity,
                        ));
                        candidates.insert(
                            id,
                            Candidate {
                                pool: (*pool).to_owned(),
                                type_index,
                                subnet_index,
                            },
                        );
                    }
                }
            }
        }
        let unplaced: BTreeSet<&TaskId> = first.unplaced.iter().map(|u| &u.task_id).collect();
        let leftover: Vec<TaskRequest> = s
            .tasks
            .iter()
            .filter(|t| unplaced.contains(&t.task_id))
            .cloned()
            .collect();
        let second = titus_placement::plan(&leftover, &views, Strategy::BinPack);

        // Which candidates were chosen, and what they would hold.
        let mut chosen: BTreeMap<&str, (u32, Resources)> = BTreeMap::new();
        let mut on_booting: BTreeMap<(&str, &str, &str), (u32, Resources)> = BTreeMap::new();
        for placement in &second.placements {
            if let Some((id, _)) = candidates.get_key_value(&placement.agent_id) {
                let entry = chosen.entry(id.as_str()).or_insert((0, Resources::ZERO));
                entry.0 += 1;
                entry.1 = entry.1.saturating_add(placement.resources);
            } else if let Some((pool, member)) = booting.get(&placement.agent_id) {
                let entry = on_booting
                    .entry((pool, member.machine_type.as_str(), member.zone.as_str()))
                    .or_insert((0, Resources::ZERO));
                entry.0 += 1;
                entry.1 = entry.1.saturating_add(placement.resources);
            }
        }
        for ((pool, machine_type, zone), (tasks, resources)) in on_booting {
            decision.demand.push(Demand {
                pool: pool.to_owned(),
                machine_type: machine_type.to_owned(),
                zone: zone.to_owned(),
                tasks,
                resources,
                booting: true,
            });
        }
        // Candidate ids sort by pool, then sequence: the first `cap` of a pool are kept.
        let mut per_pool_kept: BTreeMap<&str, u32> = BTreeMap::new();
        let mut new_demand: BTreeMap<(String, usize, usize), (u32, Resources)> = BTreeMap::new();
        let mut waiting = 0u32;
        for (id, (tasks, resources)) in chosen {
            let candidate = &candidates[id];
            let pool = candidate.pool.as_str();
            let pool_settings = &s.config.pools[pool];
            let cap = headroom[pool].min(pool_settings.max_launches_per_run);
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
                launches
                    .entry(pool_name.as_str())
                    .or_default()
                    .push((candidate.type_index, candidate.subnet_index));
            }
        }
        for ((pool, type_index, subnet_index), (tasks, resources)) in new_demand {
            let pool_settings = &s.config.pools[&pool];
            let zone = s
                .subnets
                .get(&pool)
                .and_then(|subnets| subnets.get(subnet_index))
                .map(|subnet| subnet.zone.clone())
                .unwrap_or_default();
            decision.demand.push(Demand {
                machine_type: pool_settings.instance_types[type_index].clone(),
                pool,
                zone,
                tasks,
                resources,
                booting: false,
            });
        }
        decision.unschedulable = second.unplaced.len() as u32 + waiting;
        decision.unschedulable_examples = second
            .unplaced
            .iter()
            .take(5)
            .map(|u| (u.task_id.clone(), u.reasons.clone()))
            .collect();
    }

    // The minimum: top up with the first type, in the zones with the fewest instances.
    for (pool, pool_members) in &members {
        let pool_settings = &s.config.pools[*pool];
        if cooling[pool] {
            continue;
        }
        let subnets = s.subnets.get(*pool).map(Vec::as_slice).unwrap_or_default();
        if subnets.is_empty() || !s.types.contains_key(&pool_settings.instance_types[0]) {
            continue;
        }
        let planned = launches.get(pool).map_or(0, Vec::len) as u32;
        let working = pool_members
            .iter()
            .filter(|m| matches!(m.status, Status::Active { .. } | Status::Booting))
            .count() as u32;
        let cap = headroom[pool]
            .min(pool_settings.max_launches_per_run)
            .saturating_sub(planned);
        let need = pool_settings
            .min_agents
            .saturating_sub(working + planned)
            .min(cap);
        let mut per_zone: BTreeMap<&str, u32> =
            subnets.iter().map(|s| (s.zone.as_str(), 0)).collect();
        for member in pool_members
            .iter()
            .filter(|m| !matches!(m.status, Status::Terminate(_)))
        {
            if let Some(count) = per_zone.get_mut(member.zone.as_str()) {
                *count += 1;
            }
        }
        for &(_, subnet_index) in launches.get(pool).map(Vec::as_slice).unwrap_or_default() {
            if let Some(count) = per_zone.get_mut(subnets[subnet_index].zone.as_str()) {
                *count += 1;
            }
        }
        for _ in 0..need {
            let (subnet_index, _) = subnets
                .iter()
                .enumerate()
                .min_by_key(|(i, subnet)| (per_zone[subnet.zone.as_str()], *i))
                .unwrap_or((0, &subnets[0]));
            *per_zone
                .entry(subnets[subnet_index].zone.as_str())
                .or_default() += 1;
            launches.entry(pool).or_default().push((0, subnet_index));
        }
    }

    // Launch plans, with the on-demand/spot mix over the whole pool.
    for (pool, picks) in &launches {
        if picks.is_empty() {
            continue;
        }
        let pool_settings = &s.config.pools[*pool];
        let subnets = &s.subnets[*pool];
        let staying = members[pool]
            .iter()
            .filter(|m| !matches!(m.status, Status::Terminate(_)));
        let (mut on_demand, mut spot) =
            staying.fold((0u32, 0u32), |(od, sp), m| match m.lifecycle {
                Lifecycle::OnDemand => (od + 1, sp),
                Lifecycle::Spot => (od, sp + 1),
            });
        let mut groups: BTreeMap<(usize, usize), (u32, u32)> = BTreeMap::new();
        for &(type_index, subnet_index) in picks {
            let group = groups.entry((type_index, subnet_index)).or_default();
            if wants_on_demand(pool_settings, on_demand, spot) {
                on_demand += 1;
                group.0 += 1;
            } else {
                spot += 1;
                group.1 += 1;
            }
        }
        for ((type_index, subnet_index), (od, sp)) in groups {
            decision.launch.push(LaunchPlan {
                pool: (*pool).to_owned(),
                machine_type: pool_settings.instance_types[type_index].clone(),
                subnet_id: subnets[subnet_index].id.clone(),
                zone: subnets[subnet_index].zone.clone(),
                on_demand: od,
                spot: sp,
            });
        }
    }

    // Scale-down: idle agents, oldest idle first, never below the minimum, and not in a pool
    // that is growing or cooling down.
    let mut idle_since = BTreeMap::new();
    for (pool, pool_members) in &members {
        let pool_settings = &s.config.pools[*pool];
        let mut idle: Vec<(u64, &str)> = Vec::new();
        for member in pool_members {
            if member.status == (Status::Active { idle: true })
                && !receiving.contains(member.id.as_str())
            {
                let since = s
                    .state
                    .idle_since_ms
                    .get(&member.id)
                    .copied()
                    .unwrap_or(now);
                idle_since.insert(member.id.clone(), since);
                idle.push((since, member.id.as_str()));
            }
        }
        let growing = launches.get(pool).is_some_and(|l| !l.is_empty());
        let mut report = PoolReport {
            pool: (*pool).to_owned(),
            instances: pool_members.len() as u32,
            idle: idle.len() as u32,
            min_agents: pool_settings.min_agents,
            max_agents: pool_settings.max_agents,
            cooling_down: cooling[pool],
            ..PoolReport::default()
        };
        for member in pool_members {
            match member.status {
                Status::Active { .. } => report.active += 1,
                Status::Booting => report.booting += 1,
                Status::Draining | Status::Terminate(_) => report.draining += 1,
                Status::Lost => report.lost += 1,
                Status::Unregistered => report.unregistered += 1,
            }
        }
        decision.pools.push(report);
        if cooling[pool] || growing {
            continue;
        }
        let working = pool_members
            .iter()
            .filter(|m| matches!(m.status, Status::Active { .. } | Status::Booting))
            .count() as u32;
        let mut allowed = working.saturating_sub(pool_settings.min_agents);
        let threshold_ms = pool_settings.idle_threshold_secs.saturating_mul(1000);
        idle.sort();
        for (since, id) in idle {
            if allowed == 0 {
                break;
            }
            if now.saturating_sub(since) >= threshold_ms {
                decision.drain.push((id.to_owned(), (*pool).to_owned()));
                idle_since.remove(id);
                allowed -= 1;
            }
        }
    }

    // The state to keep.
    let terminated: BTreeSet<&str> = decision
        .terminate
        .iter()
        .map(|t| t.instance_id.as_str())
        .collect();
    let mut state = ScalerState {
        last_launch_at_ms: s
            .state
            .last_launch_at_ms
            .iter()
            .filter(|(pool, _)| s.config.pools.contains_key(*pool))
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
        idle_since_ms: idle_since,
        ..ScalerState::default()
    };
    for plan in &decision.launch {
        state.last_launch_at_ms.insert(plan.pool.clone(), now);
    }
    state.launched = s
        .state
        .launched
        .iter()
        .filter(|(id, record)| {
            !agents.contains_key(id.as_str())
                && !terminated.contains(id.as_str())
                && now.saturating_sub(record.launched_at_ms) < registration_timeout_ms
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let member_ids: BTreeSet<&str> = members.values().flatten().map(|m| m.id.as_str()).collect();
    state.drained_at_ms = s
        .state
        .drained_at_ms
        .iter()
        // Kept until the instance is gone: a termination the run then skips (the agent reported a
        // container still running) is decided again next run.
        .filter(|(id, _)| member_ids.contains(id.as_str()))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    for (id, _) in &decision.drain {
        state.drained_at_ms.insert(id.clone(), now);
    }
    state.unregistered_since_ms = unregistered_since;
    decision.state = state;
    decision
}

/// An agent drained by someone else (an operator, its own SIGTERM) is left to finish on its own:
/// it deregisters when done, and its instance is then one without an agent.
fn agent_status(agent: &Agent, drained_by_us: bool) -> Status {
    let empty = agent.task_count == 0 && agent.allocated == Resources::ZERO;
    match agent.state {
        AgentState::Active => Status::Active { idle: empty },
        AgentState::Draining if empty && drained_by_us => {
            Status::Terminate(TerminateReason::Drained)
        }
        AgentState::Draining => Status::Draining,
        AgentState::Lost => Status::Lost,
    }
}

/// Whether the next instance of a pool that has `on_demand` and `spot` instances should be
/// on-demand: always up to the base, then in the configured share of what is above it.
pub fn wants_on_demand(pool: &PoolSettings, on_demand: u32, spot: u32) -> bool {
    if on_demand < pool.on_demand_base {
        return true;
    }
    let above_base_on_demand = on_demand - pool.on_demand_base;
    let above_base_after = u64::from(above_base_on_demand) + u64::from(spot) + 1;
    let wanted = (above_base_after * u64::from(pool.on_demand_percent_above_base)).div_ceil(100);
    u64::from(above_base_on_demand) < wanted
}

#[cfg(test)]
mod tests {
    use titus_core::job::Constraint;
    use titus_core::JobId;

    use super::super::settings::ScalerSettings;
    use super::*;
    use titus_core::ports::LaunchRecord;

    const NOW: u64 = 1_764_000_000_000;
    const MINUTE: u64 = 60_000;

    fn pool(min: u32, max: u32) -> PoolSettings {
        PoolSettings {
            min_agents: min,
            max_agents: max,
            instance_types: vec!["m7g.large".into(), "m7g.xlarge".into()],
            launch_template: "lt".into(),
            subnet_ids: vec![],
            on_demand_base: 0,
            on_demand_percent_above_base: 100,
            spot_allocation_strategy: "price-capacity-optimized".into(),
            cooldown_secs: 120,
            idle_threshold_secs: 600,
            max_launches_per_run: 20,
            memory_reserved_mb: 512,
            disk_mb: 40_000,
            network_mbps: 1000,
        }
    }

    struct World {
        config: ScalerConfig,
        instances: Vec<PoolInstance>,
        agents: Vec<Agent>,
        state: ScalerState,
        types: BTreeMap<String, InstanceTypeInfo>,
        subnets: BTreeMap<String, Vec<Subnet>>,
        tasks: Vec<TaskRequest>,
        now: u64,
    }

    impl World {
        fn new(pool_settings: PoolSettings) -> World {
            let types = [("m7g.large", 2, 8192), ("m7g.xlarge", 4, 16384)]
                .into_iter()
                .map(|(name, vcpus, memory_mib)| {
                    (
                        name.to_owned(),
                        InstanceTypeInfo {
                            vcpus,
                            memory_mib,
                            gpus: 0,
                        },
                    )
                })
                .collect();
            let subnets = BTreeMap::from([(
                "default".to_owned(),
                vec![
                    Subnet {
                        id: "subnet-a".into(),
                        zone: "zone-a".into(),
                    },
                    Subnet {
                        id: "subnet-b".into(),
                        zone: "zone-b".into(),
                    },
                ],
            )]);
            World {
                config: ScalerConfig {
                    stage: "test".to_owned(),
                    settings: ScalerSettings::default(),
                    pools: BTreeMap::from([("default".to_owned(), pool_settings)]),
                    sources: BTreeMap::new(),
                },
                instances: vec![],
                agents: vec![],
                state: ScalerState::default(),
                types,
                subnets,
                tasks: vec![],
                now: NOW,
            }
        }

        fn tasks(&mut self, count: usize, cpu_millis: u64, memory_mb: u64, hard: Vec<Constraint>) {
            let job_id = JobId::generate();
            for _ in 0..count {
                self.tasks.push(TaskRequest {
                    task_id: TaskId::generate(),
                    job_id: job_id.clone(),
                    resources: Resources {
                        cpu_millis,
                        memory_mb,
                        disk_mb: 1_000,
                        network_mbps: 10,
                        gpu: 0,
                    },
                    hard: hard.clone(),
                    soft: vec![],
                });
            }
        }

        /// An instance of the pool, launched `age_ms` ago, with an agent in `state` holding
        /// `tasks` tasks (or no agent).
        fn instance(&mut self, id: &str, age_ms: u64, agent: Option<(AgentState, u64)>) {
            self.instances.push(PoolInstance {
                id: id.into(),
                pool: "default".into(),
                machine_type: "m7g.large".into(),
                zone: "zone-a".into(),
                lifecycle: Lifecycle::OnDemand,
                launched_at_ms: self.now - age_ms,
            });
            if let Some((state, tasks)) = agent {
                let per_task = Resources {
                    cpu_millis: 500,
                    memory_mb: 512,
                    disk_mb: 1_000,
                    network_mbps: 10,
                    gpu: 0,
                };
                let mut allocated = Resources::ZERO;
                for _ in 0..tasks {
                    allocated = allocated.saturating_add(per_task);
                }
                self.agents.push(Agent {
                    id: id.into(),
                    queue_url: format!("q-{id}"),
                    zone: "zone-a".into(),
                    machine_type: "m7g.large".into(),
                    machine_group: "default".into(),
                    state,
                    capacity: Resources {
                        cpu_millis: 2_000,
                        memory_mb: 7_600,
                        disk_mb: 40_000,
                        network_mbps: 1_000,
                        gpu: 0,
                    },
                    allocated,
                    task_count: tasks,
                    registered_at_ms: self.now - age_ms,
                    heartbeat_at_ms: self.now,
                });
            }
        }

        fn decide(&self) -> Decision {
            let views: Vec<AgentView> = self
                .agents
                .iter()
                .map(|a| AgentView::from_agent(a, BTreeMap::new()))
                .collect();
            decide(&Snapshot {
                now_ms: self.now,
                config: &self.config,
                instances: &self.instances,
                agents: &self.agents,
                state: &self.state,
                types: &self.types,
                subnets: &self.subnets,
                tasks: &self.tasks,
                views: &views,
            })
        }
    }

    fn launched(decision: &Decision) -> Vec<(String, String, u32)> {
        decision
            .launch
            .iter()
            .map(|l| (l.machine_type.clone(), l.zone.clone(), l.count()))
            .collect()
    }

    #[test]
    fn demand_launches_the_smallest_type_that_fits_spread_over_zones() {
        let mut world = World::new(pool(0, 10));
        world.tasks(3, 1_000, 1_024, vec![]);

        let decision = world.decide();

        assert_eq!(
            launched(&decision),
            vec![
                ("m7g.large".into(), "zone-a".into(), 1),
                ("m7g.large".into(), "zone-b".into(), 1)
            ]
        );
        assert_eq!(decision.unplaced, 3);
        assert_eq!(decision.unschedulable, 0);
        let demand_tasks: u32 = decision.demand.iter().map(|d| d.tasks).sum();
        assert_eq!(demand_tasks, 3);
        assert_eq!(decision.state.last_launch_at_ms["default"], NOW);
    }

    #[test]
    fn a_task_too_large_for_the_small_type_gets_the_larger_one() {
        let mut world = World::new(pool(0, 10));
        world.tasks(1, 3_000, 10_000, vec![]);

        assert_eq!(
            launched(&world.decide()),
            vec![("m7g.xlarge".into(), "zone-a".into(), 1)]
        );
    }

    #[test]
    fn constraints_choose_the_type_and_zone() {
        let mut world = World::new(pool(0, 10));
        world.tasks(
            1,
            500,
            512,
            vec![
                Constraint::MachineType("m7g.xlarge".into()),
                Constraint::AvailabilityZone("zone-b".into()),
            ],
        );

        assert_eq!(
            launched(&world.decide()),
            vec![("m7g.xlarge".into(), "zone-b".into(), 1)]
        );
    }

    #[test]
    fn tasks_that_fit_on_current_agents_launch_nothing() {
        let mut world = World::new(pool(0, 10));
        world.instance("i-1", 10 * MINUTE, Some((AgentState::Active, 0)));
        world.tasks(2, 500, 512, vec![]);

        let decision = world.decide();

        assert!(decision.launch.is_empty(), "{:?}", decision.launch);
        assert_eq!(decision.unplaced, 0);
    }

    #[test]
    fn launches_stop_at_the_pool_maximum() {
        let mut world = World::new(pool(0, 2));
        world.instance("i-1", 10 * MINUTE, Some((AgentState::Active, 4)));
        world.tasks(6, 2_000, 1_024, vec![]);

        let decision = world.decide();

        let count: u32 = decision.launch.iter().map(LaunchPlan::count).sum();
        assert_eq!(count, 1, "one more instance reaches max 2");
        assert_eq!(decision.unschedulable, 5, "the rest wait for room");
    }

    #[test]
    fn a_task_no_instance_type_can_hold_is_unschedulable() {
        let mut world = World::new(pool(0, 10));
        world.tasks(1, 64_000, 1_024, vec![]);

        let decision = world.decide();

        assert!(decision.launch.is_empty());
        assert_eq!(decision.unschedulable, 1);
        assert!(!decision.unschedulable_examples[0].1.is_empty());
    }

    #[test]
    fn no_launch_during_the_cool_down_and_one_after_it() {
        let mut world = World::new(pool(0, 10));
        world.tasks(1, 1_000, 1_024, vec![]);
        world
            .state
            .last_launch_at_ms
            .insert("default".into(), NOW - MINUTE);

        let cooling = world.decide();
        world.now = NOW + 2 * MINUTE;
        let after = world.decide();

        assert!(cooling.launch.is_empty());
        assert!(cooling.pools[0].cooling_down);
        assert_eq!(cooling.state.last_launch_at_ms["default"], NOW - MINUTE);
        assert_eq!(after.launch.len(), 1);
    }

    #[test]
    fn booting_instances_take_the_demand_before_new_ones_are_launched() {
        let mut world = World::new(pool(0, 10));
        world.instance("i-boot", MINUTE, None);
        world.tasks(2, 500, 512, vec![]);

        let decision = world.decide();

        assert!(decision.launch.is_empty(), "{:?}", decision.launch);
        assert!(decision.demand.iter().all(|d| d.booting));
    }

    #[test]
    fn launches_ec2_does_not_list_yet_count_as_booting() {
        let mut world = World::new(pool(0, 10));
        world.state.launched.insert(
            "i-new".into(),
            LaunchRecord {
                pool: "default".into(),
                machine_type: "m7g.large".into(),
                zone: "zone-a".into(),
                lifecycle: Lifecycle::OnDemand,
                launched_at_ms: NOW - 10_000,
            },
        );
        world.tasks(1, 500, 512, vec![]);

        let decision = world.decide();

        assert!(decision.launch.is_empty());
        assert!(decision.state.launched.contains_key("i-new"));
        assert!(decision.terminate.is_empty());
    }

    #[test]
    fn the_minimum_is_kept_across_zones() {
        let mut world = World::new(pool(3, 10));
        world.instance("i-1", 10 * MINUTE, Some((AgentState::Active, 1)));

        let decision = world.decide();

        assert_eq!(
            launched(&decision),
            vec![
                ("m7g.large".into(), "zone-a".into(), 1),
                ("m7g.large".into(), "zone-b".into(), 1),
            ],
            "zone-a already has one: two and two"
        );
    }

    #[test]
    fn an_idle_agent_is_drained_only_after_the_threshold_and_never_below_the_minimum() {
        let mut world = World::new(pool(1, 10));
        world.instance("i-1", 60 * MINUTE, Some((AgentState::Active, 0)));
        world.instance("i-2", 60 * MINUTE, Some((AgentState::Active, 0)));

        let first = world.decide();
        world.state = first.state.clone();
        world.now = NOW + 11 * MINUTE;
        let later = world.decide();

        assert!(first.drain.is_empty());
        assert_eq!(first.state.idle_since_ms["i-1"], NOW);
        assert_eq!(later.drain, vec![("i-1".to_owned(), "default".to_owned())]);
        assert!(later.state.drained_at_ms.contains_key("i-1"));
        assert!(!later.state.idle_since_ms.contains_key("i-1"));
    }

    #[test]
    fn an_agent_about_to_receive_tasks_is_not_idle() {
        let mut world = World::new(pool(0, 10));
        world.instance("i-1", 60 * MINUTE, Some((AgentState::Active, 0)));
        world
            .state
            .idle_since_ms
            .insert("i-1".into(), NOW - 60 * MINUTE);
        world.tasks(1, 500, 512, vec![]);

        let decision = world.decide();

        assert!(decision.drain.is_empty());
        assert!(decision.state.idle_since_ms.is_empty());
    }

    #[test]
    fn a_busy_agent_is_never_drained_nor_terminated() {
        let mut world = World::new(pool(0, 10));
        world.instance("i-busy", 60 * MINUTE, Some((AgentState::Active, 2)));
        world.instance("i-draining", 60 * MINUTE, Some((AgentState::Draining, 1)));
        world
            .state
            .idle_since_ms
            .insert("i-busy".into(), NOW - 60 * MINUTE);

        let decision = world.decide();

        assert!(decision.drain.is_empty());
        assert!(decision.terminate.is_empty());
    }

    #[test]
    fn drained_agents_are_terminated_once_empty_or_deregistered() {
        let mut world = World::new(pool(0, 10));
        world.instance("i-empty", 60 * MINUTE, Some((AgentState::Draining, 0)));
        world.instance("i-gone", 60 * MINUTE, None);
        world.instance("i-busy", 60 * MINUTE, Some((AgentState::Draining, 1)));
        for id in ["i-empty", "i-gone", "i-busy", "i-vanished"] {
            world.state.drained_at_ms.insert(id.into(), NOW - MINUTE);
        }

        let decision = world.decide();

        let terminated: Vec<(&str, TerminateReason)> = decision
            .terminate
            .iter()
            .map(|t| (t.instance_id.as_str(), t.reason))
            .collect();
        assert_eq!(
            terminated,
            vec![
                ("i-empty", TerminateReason::Drained),
                ("i-gone", TerminateReason::Deregistered),
            ]
        );
        // Remembered until EC2 no longer lists the instance.
        assert_eq!(
            decision.state.drained_at_ms.keys().collect::<Vec<_>>(),
            vec!["i-busy", "i-empty", "i-gone"]
        );
    }

    #[test]
    fn an_agent_drained_by_someone_else_is_left_to_finish() {
        let mut world = World::new(pool(0, 10));
        world.instance("i-operator", 60 * MINUTE, Some((AgentState::Draining, 0)));

        let decision = world.decide();

        assert!(decision.terminate.is_empty());
        assert_eq!(decision.pools[0].draining, 1);
    }

    #[test]
    fn an_instance_without_an_agent_is_terminated_after_the_registration_timeout() {
        let mut world = World::new(pool(0, 10));
        world.instance("i-young", MINUTE, None);
        world.instance("i-never", 11 * MINUTE, None);
        world.instance("i-old", 60 * MINUTE, None);
        world
            .state
            .unregistered_since_ms
            .insert("i-never".into(), NOW - 11 * MINUTE);

        let first = world.decide();
        world.state = first.state.clone();
        world.instances.retain(|i| i.id != "i-never");
        world.now = NOW + 11 * MINUTE;
        let later = world.decide();

        let reasons = |d: &Decision| -> Vec<(String, TerminateReason)> {
            d.terminate
                .iter()
                .map(|t| (t.instance_id.clone(), t.reason))
                .collect()
        };
        // An older instance first seen without an agent may be restarting it: it gets the
        // whole timeout from now, and meanwhile counts as no capacity.
        assert_eq!(
            reasons(&first),
            vec![("i-never".into(), TerminateReason::NoAgent)]
        );
        assert_eq!(first.pools[0].booting, 1);
        assert_eq!(first.pools[0].unregistered, 1);
        assert_eq!(first.state.unregistered_since_ms["i-old"], NOW);
        assert_eq!(
            reasons(&later),
            vec![
                ("i-young".into(), TerminateReason::NoAgent),
                ("i-old".into(), TerminateReason::NoAgent),
            ]
        );
    }

    #[test]
    fn nothing_is_drained_while_the_pool_grows_or_cools_down() {
        let mut world = World::new(pool(0, 10));
        world.instance("i-1", 60 * MINUTE, Some((AgentState::Active, 0)));
        world
            .state
            .idle_since_ms
            .insert("i-1".into(), NOW - 60 * MINUTE);
        world
            .state
            .last_launch_at_ms
            .insert("default".into(), NOW - MINUTE);

        assert!(world.decide().drain.is_empty());
    }

    #[test]
    fn instances_of_unconfigured_pools_are_left_alone() {
        let mut world = World::new(pool(0, 10));
        world.instance("i-other", 60 * MINUTE, None);
        world.instances[0].pool = "other".into();

        let decision = world.decide();

        assert!(decision.terminate.is_empty());
        assert!(decision.launch.is_empty());
    }

    #[test]
    fn spot_fills_the_share_above_the_on_demand_base() {
        let mut settings = pool(0, 10);
        settings.on_demand_base = 1;
        settings.on_demand_percent_above_base = 50;

        let mut kinds = Vec::new();
        let (mut on_demand, mut spot) = (0, 0);
        for _ in 0..5 {
            if wants_on_demand(&settings, on_demand, spot) {
                on_demand += 1;
                kinds.push('o');
            } else {
                spot += 1;
                kinds.push('s');
            }
        }

        assert_eq!(kinds.into_iter().collect::<String>(), "oosos");
    }

    #[test]
    fn the_mix_is_applied_to_a_launch() {
        let mut settings = pool(0, 10);
        settings.on_demand_percent_above_base = 0;
        let mut world = World::new(settings);
        world.tasks(1, 1_000, 1_024, vec![]);

        let decision = world.decide();

        assert_eq!(decision.launch[0].spot, 1);
        assert_eq!(decision.launch[0].on_demand, 0);
    }
}
