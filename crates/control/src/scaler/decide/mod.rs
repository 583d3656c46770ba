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
//!
//! The decision is made in phases, each in its own module and in this order: `classify` every
//! pool's instances by what their agents do; `terminate` the finished and the agentless;
//! `demand` from the engine, on `hypothetical` instances where the agents fall short;
//! `launch` within each pool's limits and mix; `drain` the idle; and `report` and `state`
//! what to show and what to remember.

mod classify;
mod demand;
mod drain;
mod hypothetical;
mod launch;
mod report;
mod state;
mod terminate;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use titus_core::{Agent, AgentState, Resources, TaskId};
use titus_placement::{AgentView, Strategy, TaskRequest};

use titus_core::ports::{InstanceTypeInfo, Lifecycle, PoolInstance, ScalerState, Subnet};

use super::settings::{PoolSettings, ScalerConfig};

pub use launch::wants_on_demand;

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

impl Snapshot<'_> {
    /// How long an instance may go without a registered agent.
    fn registration_timeout_ms(&self) -> u64 {
        self.config
            .settings
            .registration_timeout_secs
            .saturating_mul(1000)
    }

    /// Whether an instance launched at `launched_at_ms` is still within the registration
    /// timeout.
    fn is_young(&self, launched_at_ms: u64) -> bool {
        self.now_ms.saturating_sub(launched_at_ms) < self.registration_timeout_ms()
    }
}

/// What an instance is doing, as far as its agent (or the lack of one) tells.
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

/// An instance of a pool, listed by EC2 or launched recently, and what it is doing.
#[derive(Debug, Clone)]
struct Member {
    id: String,
    machine_type: String,
    zone: String,
    lifecycle: Lifecycle,
    status: Status,
}

impl Member {
    /// Not about to be terminated: it counts against the pool's maximum and its zone.
    fn stays(&self) -> bool {
        !matches!(self.status, Status::Terminate(_))
    }

    /// Capacity now or soon: what the pool's minimum counts.
    fn works(&self) -> bool {
        matches!(self.status, Status::Active { .. } | Status::Booting)
    }
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

/// Every configured pool's members, by pool.
type Members<'a> = BTreeMap<&'a str, Vec<Member>>;
/// Whether each pool is in its cool-down after a launch.
type Cooling<'a> = BTreeMap<&'a str, bool>;
/// How many more instances each pool may hold once the terminations are done.
type Headroom<'a> = BTreeMap<&'a str, u32>;
/// The instances to launch in each pool, as (index in its instance types, index in its subnets).
type Picks<'a> = BTreeMap<&'a str, Vec<(usize, usize)>>;

/// Decides one run. See the module documentation.
pub fn decide(s: &Snapshot<'_>) -> Decision {
    let agents: HashMap<&str, &Agent> = s.agents.iter().map(|a| (a.id.as_str(), a)).collect();
    let classify::Classified {
        members,
        unregistered_since,
    } = classify::members(s, &agents);
    let cooling = classify::cooling(s);
    let (terminate, headroom) = terminate::terminations(s, &members);

    // The agents as they are take what they can (what the scheduler will do anyway); what is
    // left is the demand for instances.
    let current = titus_placement::plan(s.tasks, s.views, Strategy::BinPack);
    let receiving: BTreeSet<&str> = current
        .placements
        .iter()
        .map(|p| p.agent_id.as_str())
        .collect();
    let beyond = demand::beyond_agents(s, &members, &cooling, &headroom, &current);

    let mut picks = beyond.picks;
    launch::top_up_to_minimum(s, &members, &cooling, &headroom, &mut picks);
    let launch = launch::launch_plans(s, &members, &picks);
    let (drain, idle_since) = drain::idle_drains(s, &members, &cooling, &picks, &receiving);
    let mut decision = Decision {
        terminate,
        drain,
        launch,
        state: ScalerState::default(),
        pools: report::pool_reports(s, &members, &cooling, &receiving),
        demand: beyond.demand,
        unplaced: current.unplaced.len() as u32,
        unschedulable: beyond.unschedulable,
        unschedulable_examples: beyond.unschedulable_examples,
    };
    decision.state = state::state_to_keep(
        s,
        &agents,
        &members,
        &decision,
        idle_since,
        unregistered_since,
    );
    decision
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
                    incarnation: 0,
                    registration_id: String::new(),
                    principal: String::new(),
                    task_logs: None,
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
