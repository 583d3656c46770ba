//! Property tests over random clusters and random tasks: the plan never breaks a placement rule,
//! explains every task it leaves out, and depends on nothing but its input.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::check_plan;
use proptest::prelude::*;
use titus_core::job::Constraint;
use titus_core::{AgentState, JobId, Resources, TaskId};
use titus_placement::{plan, plan_exhaustive, AgentView, Strategy as Placing, TaskRequest};

const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];
const TYPES: [&str; 2] = ["m5.xlarge", "r5.2xlarge"];
const GROUPS: [&str; 2] = ["web", "batch"];
const JOBS: usize = 5;
const MAX_AGENTS: usize = 12;

fn job(i: usize) -> JobId {
    JobId::from_string(format!("job-{i}"))
}

/// Some text in random letter case: constraint values must match whatever the case.
fn any_case(text: &'static str) -> impl Strategy<Value = String> {
    any::<bool>().prop_map(move |upper| {
        if upper {
            text.to_ascii_uppercase()
        } else {
            text.to_owned()
        }
    })
}

fn constraint() -> impl Strategy<Value = Constraint> {
    prop_oneof![
        3 => Just(Constraint::UniqueHost),
        1 => Just(Constraint::ExclusiveHost),
        3 => Just(Constraint::ZoneBalance),
        1 => Just(Constraint::ActiveHost),
        // "eu-west-1a" is a zone no agent is in.
        2 => prop::sample::select(vec!["us-east-1a", "us-east-1b", "us-east-1c", "eu-west-1a"])
            .prop_flat_map(any_case)
            .prop_map(Constraint::AvailabilityZone),
        1 => prop::sample::select(TYPES.to_vec()).prop_flat_map(any_case).prop_map(Constraint::MachineType),
        1 => prop::sample::select(GROUPS.to_vec()).prop_flat_map(any_case).prop_map(Constraint::MachineGroup),
        1 => (0..MAX_AGENTS + 2).prop_map(|i| Constraint::MachineId(format!("AGENT-{i:02}"))),
    ]
}

fn capacity() -> impl Strategy<Value = Resources> {
    (
        1_000u64..16_000,
        1_000u64..64_000,
        10_000u64..100_000,
        100u64..10_000,
        0u64..3,
    )
        .prop_map(
            |(cpu_millis, memory_mb, disk_mb, network_mbps, gpu)| Resources {
                cpu_millis,
                memory_mb,
                disk_mb,
                network_mbps,
                gpu,
            },
        )
}

/// A part of `capacity`: each dimension takes its own random fraction in thousandths.
fn part_of(capacity: Resources, thousandths: [u64; 5]) -> Resources {
    let f = |total: u64, t: u64| total * t / 1_000;
    Resources {
        cpu_millis: f(capacity.cpu_millis, thousandths[0]),
        memory_mb: f(capacity.memory_mb, thousandths[1]),
        disk_mb: f(capacity.disk_mb, thousandths[2]),
        network_mbps: f(capacity.network_mbps, thousandths[3]),
        gpu: f(capacity.gpu, thousandths[4]),
    }
}

fn agent(id: usize) -> impl Strategy<Value = AgentView> {
    (
        prop::sample::select(ZONES.to_vec()),
        prop::sample::select(TYPES.to_vec()),
        prop::sample::select(GROUPS.to_vec()),
        prop_oneof![8 => Just(AgentState::Active), 1 => Just(AgentState::Draining), 1 => Just(AgentState::Lost)],
        capacity(),
        prop::array::uniform5(0u64..=1_000),
        prop::collection::btree_map(0..JOBS, 1u32..3, 0..3),
        prop::option::weighted(0.1, 0..JOBS),
    )
        .prop_map(
            move |(zone, machine_type, group, state, capacity, used, jobs, exclusive)| {
                let job_task_counts: BTreeMap<JobId, u32> =
                    jobs.into_iter().map(|(j, n)| (job(j), n)).collect();
                // An agent is held only by a job it runs, and then runs that job alone.
                let exclusive_jobs: BTreeSet<JobId> = exclusive
                    .filter(|j| job_task_counts.len() == 1 && job_task_counts.contains_key(&job(*j)))
                    .map(job)
                    .into_iter()
                    .collect();
                AgentView {
                    id: format!("agent-{id:02}"),
                    zone: zone.to_owned(),
                    machine_type: machine_type.to_owned(),
                    machine_group: group.to_owned(),
                    state,
                    capacity,
                    allocated: part_of(capacity, used),
                    job_task_counts,
                    exclusive_jobs,
                }
            },
        )
}

fn agents() -> impl Strategy<Value = Vec<AgentView>> {
    (0..=MAX_AGENTS).prop_flat_map(|n| (0..n).map(agent).collect::<Vec<_>>())
}

fn task(id: usize) -> impl Strategy<Value = TaskRequest> {
    (
        0..JOBS,
        (
            0u64..6_000,
            0u64..24_000,
            0u64..20_000,
            0u64..2_000,
            prop_oneof![9 => Just(0u64), 1 => Just(1u64)],
        ),
        prop::collection::vec(constraint(), 0..3),
        prop::collection::vec(constraint(), 0..3),
    )
        .prop_map(
            move |(j, (cpu, mem, disk, net, gpu), hard, soft)| TaskRequest {
                task_id: TaskId::from_string(format!("task-{id:03}")),
                job_id: job(j),
                resources: Resources {
                    cpu_millis: cpu,
                    memory_mb: mem,
                    disk_mb: disk,
                    network_mbps: net,
                    gpu,
                },
                hard,
                soft,
            },
        )
}

fn tasks() -> impl Strategy<Value = Vec<TaskRequest>> {
    (0usize..40).prop_flat_map(|n| (0..n).map(task).collect::<Vec<_>>())
}

fn strategy() -> impl Strategy<Value = Placing> {
    prop_oneof![Just(Placing::BinPack), Just(Placing::Spread)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Properties 1–3: no over-commitment, every hard constraint holds at the moment of each
    /// placement, placements only on active agents, and every unplaced task has reasons and
    /// really fits no agent at the end of the plan (checked by `check_plan`, which re-derives
    /// every rule without the engine's filters).
    #[test]
    fn every_plan_keeps_every_placement_rule(
        agents in agents(),
        tasks in tasks(),
        strategy in strategy(),
    ) {
        let result = plan(&tasks, &agents, strategy);

        prop_assert_eq!(check_plan(&tasks, &agents, &result), Ok(()));
    }

    /// The reference planner keeps the same rules, so it is a fair baseline.
    #[test]
    fn the_exhaustive_planner_keeps_every_placement_rule(
        agents in agents(),
        tasks in tasks(),
        strategy in strategy(),
    ) {
        let result = plan_exhaustive(&tasks, &agents, strategy);

        prop_assert_eq!(check_plan(&tasks, &agents, &result), Ok(()));
    }

    /// Property 4: the same input gives the same plan, in whatever order the agents come.
    #[test]
    fn the_plan_depends_only_on_the_input_not_on_agent_order(
        agents in agents(),
        tasks in tasks(),
        strategy in strategy(),
        seed in any::<u64>(),
    ) {
        let first = plan(&tasks, &agents, strategy);
        let again = plan(&tasks, &agents, strategy);
        let mut shuffled = agents.clone();
        shuffle(&mut shuffled, seed);
        let reordered = plan(&tasks, &shuffled, strategy);

        prop_assert_eq!(&first, &again);
        prop_assert_eq!(&first, &reordered);
    }

    /// Every decided task is either placed or explained, and the two lists keep the tasks' order.
    #[test]
    fn placements_and_unplaced_tasks_keep_the_input_order(
        agents in agents(),
        tasks in tasks(),
        strategy in strategy(),
    ) {
        let result = plan(&tasks, &agents, strategy);

        let position: BTreeMap<&TaskId, usize> =
            tasks.iter().enumerate().map(|(i, t)| (&t.task_id, i)).collect();
        let placed: Vec<usize> = result.placements.iter().map(|p| position[&p.task_id]).collect();
        let unplaced: Vec<usize> = result.unplaced.iter().map(|u| position[&u.task_id]).collect();
        prop_assert!(placed.windows(2).all(|w| w[0] < w[1]));
        prop_assert!(unplaced.windows(2).all(|w| w[0] < w[1]));
        prop_assert!(result.unplaced.iter().all(|u| !u.reasons.is_empty()));
    }
}

/// A Fisher–Yates shuffle driven by splitmix64, so the test needs no random-number crate.
fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        items.swap(i, (z % (i as u64 + 1)) as usize);
    }
}
