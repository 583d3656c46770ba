//! Behaviour of whole plans: ordering, strategies, constraints and the reasons of unplaced tasks.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{agent, check_plan, mixed_workload, placed_on, resources, task};
use titus_core::job::Constraint;
use titus_core::validation::{parse_descriptor, Limits};
use titus_core::{AgentState, Job, JobId, Task};
use titus_placement::{plan, plan_exhaustive, AgentView, Strategy, TaskRequest};

fn agents(n: usize, zones: &[&str]) -> Vec<AgentView> {
    (0..n)
        .map(|i| agent(&format!("agent-{i:02}"), zones[i % zones.len()]))
        .collect()
}

fn tasks(n: usize, job: &str) -> Vec<TaskRequest> {
    (0..n)
        .map(|i| task(&format!("{job}-{i:02}"), job))
        .collect()
}

fn agents_used(p: &titus_placement::Plan) -> usize {
    p.placements
        .iter()
        .map(|p| p.agent_id.as_str())
        .collect::<BTreeSet<_>>()
        .len()
}

#[test]
fn bin_pack_puts_small_tasks_on_fewer_agents_than_spread() {
    let cluster = agents(10, &["z1"]);
    let small = tasks(8, "job");

    let packed = plan(&small, &cluster, Strategy::BinPack);
    let spread = plan(&small, &cluster, Strategy::Spread);

    assert_eq!(packed.placements.len(), 8);
    assert_eq!(spread.placements.len(), 8);
    assert_eq!(
        agents_used(&packed),
        2,
        "4 one-CPU tasks fill a 4-CPU agent"
    );
    assert_eq!(agents_used(&spread), 8);
}

#[test]
fn later_tasks_see_earlier_placements_and_never_over_commit() {
    let cluster = agents(1, &["z1"]);
    let work = tasks(5, "job");

    let result = plan(&work, &cluster, Strategy::BinPack);

    assert_eq!(result.placements.len(), 4);
    assert_eq!(result.unplaced.len(), 1);
    assert_eq!(
        result.unplaced[0].task_id.as_str(),
        "job-04",
        "tasks go in the order given"
    );
    assert_eq!(
        result.unplaced[0].reasons,
        vec!["insufficient cpu on 1 agent"]
    );
    assert_eq!(result.unplaced[0].insufficient, vec!["cpu"]);
}

#[test]
fn unplaced_tasks_count_agents_per_named_reason() {
    let mut cluster = agents(8, &["z1"]);
    cluster[0].state = AgentState::Draining;
    cluster[1].state = AgentState::Draining;
    cluster[2].state = AgentState::Lost;
    for a in &mut cluster[3..6] {
        a.allocated = resources(0, 15_500);
    }
    for a in &mut cluster[6..8] {
        a.job_task_counts.insert(JobId::from_string("job"), 1);
    }
    let mut unique = task("t", "job");
    unique.hard = vec![Constraint::UniqueHost];

    let result = plan(&[unique], &cluster, Strategy::BinPack);

    assert!(result.placements.is_empty());
    assert_eq!(
        result.unplaced[0].reasons,
        vec![
            "insufficient memory on 3 agents",
            "agent draining on 2 agents",
            "hard constraint uniqueHost on 2 agents",
            "agent lost on 1 agent",
        ]
    );
    assert_eq!(result.unplaced[0].insufficient, vec!["memory"]);
}

#[test]
fn a_plan_without_agents_says_so() {
    let result = plan(&tasks(1, "job"), &[], Strategy::BinPack);

    assert_eq!(result.unplaced[0].reasons, vec!["no agents"]);
}

#[test]
fn unique_host_puts_each_task_of_a_job_on_its_own_agent() {
    let cluster = agents(3, &["z1"]);
    let mut work = tasks(4, "job");
    work.iter_mut()
        .for_each(|t| t.hard = vec![Constraint::UniqueHost]);

    let result = plan(&work, &cluster, Strategy::BinPack);

    assert_eq!(agents_used(&result), 3);
    assert_eq!(result.placements.len(), 3);
    assert_eq!(
        result.unplaced[0].reasons,
        vec!["hard constraint uniqueHost on 3 agents"]
    );
}

#[test]
fn an_exclusive_task_takes_an_empty_agent_and_keeps_other_jobs_off_it() {
    let mut cluster = agents(2, &["z1"]);
    cluster[0]
        .job_task_counts
        .insert(JobId::from_string("other"), 1);
    cluster[0].allocated = resources(1_000, 1_000);
    let mut lonely = task("lonely", "exclusive-job");
    lonely.hard = vec![Constraint::ExclusiveHost];
    let mut pinned = task("pinned", "other");
    pinned.hard = vec![Constraint::MachineId("agent-01".into())];

    let result = plan(&[lonely, pinned], &cluster, Strategy::BinPack);

    assert_eq!(placed_on(&result)["lonely"], "agent-01");
    assert_eq!(
        result.unplaced[0].reasons,
        vec![
            "host exclusive to another job on 1 agent",
            r#"hard constraint machineId="agent-01" on 1 agent"#,
        ]
    );
}

#[test]
fn agents_already_held_exclusively_take_no_other_job() {
    let mut cluster = agents(1, &["z1"]);
    cluster[0]
        .job_task_counts
        .insert(JobId::from_string("owner"), 1);
    cluster[0]
        .exclusive_jobs
        .insert(JobId::from_string("owner"));

    let result = plan(
        &[task("t", "job"), task("u", "owner")],
        &cluster,
        Strategy::BinPack,
    );

    assert_eq!(result.unplaced[0].task_id.as_str(), "t");
    assert_eq!(
        result.unplaced[0].reasons,
        vec!["host exclusive to another job on 1 agent"]
    );
    assert_eq!(placed_on(&result)["u"], "agent-00");
}

#[test]
fn hard_zone_balance_spreads_a_job_evenly_over_zones() {
    let cluster = agents(6, &["z1", "z2", "z3"]);
    let mut work = tasks(6, "job");
    work.iter_mut()
        .for_each(|t| t.hard = vec![Constraint::ZoneBalance]);

    let result = plan(&work, &cluster, Strategy::BinPack);

    let mut per_zone: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &result.placements {
        let zone = &cluster
            .iter()
            .find(|a| a.id == p.agent_id)
            .map(|a| a.zone.as_str());
        *per_zone.entry(zone.unwrap_or("?")).or_default() += 1;
    }
    assert_eq!(per_zone, BTreeMap::from([("z1", 2), ("z2", 2), ("z3", 2)]));
}

#[test]
fn hard_zone_balance_counts_existing_tasks_and_skips_zones_without_room() {
    let mut cluster = agents(3, &["z1", "z2", "z3"]);
    cluster[0]
        .job_task_counts
        .insert(JobId::from_string("job"), 1);
    cluster[1].allocated = resources(4_000, 0);
    let mut balanced = task("t", "job");
    balanced.hard = vec![Constraint::ZoneBalance];

    let result = plan(&[balanced], &cluster, Strategy::BinPack);

    assert_eq!(
        placed_on(&result)["t"],
        "agent-02",
        "z1 has one already, z2 is full"
    );
}

#[test]
fn attribute_constraints_pin_tasks_ignoring_case() {
    let mut cluster = agents(4, &["us-east-1a", "us-east-1b"]);
    cluster[3].machine_type = "r5.large".into();
    cluster[3].machine_group = "batch".into();
    let mut zoned = task("zoned", "job");
    zoned.hard = vec![Constraint::AvailabilityZone("US-EAST-1B".into())];
    let mut typed = task("typed", "job");
    typed.hard = vec![
        Constraint::MachineType("R5.Large".into()),
        Constraint::MachineGroup("Batch".into()),
    ];
    let mut named = task("named", "job");
    named.hard = vec![Constraint::MachineId("AGENT-02".into())];

    let result = plan(&[zoned, typed, named], &cluster, Strategy::BinPack);

    let on = placed_on(&result);
    assert_eq!(on["zoned"], "agent-01");
    assert_eq!(on["typed"], "agent-03");
    assert_eq!(on["named"], "agent-02");
}

#[test]
fn a_soft_zone_is_preferred_while_it_has_room_and_given_up_when_full() {
    let cluster = agents(2, &["z1", "z2"]);
    let mut work = tasks(6, "job");
    work.iter_mut()
        .for_each(|t| t.soft = vec![Constraint::AvailabilityZone("z2".into())]);

    let result = plan(&work, &cluster, Strategy::BinPack);

    let on = placed_on(&result);
    assert!((0..4).all(|i| on[&format!("job-{i:02}")] == "agent-01"));
    assert_eq!(on["job-04"], "agent-00");
    assert_eq!(on["job-05"], "agent-00");
}

#[test]
fn spread_rotates_over_the_agents() {
    let cluster = agents(3, &["z1"]);

    let result = plan(&tasks(6, "job"), &cluster, Strategy::Spread);

    let order: Vec<&str> = result
        .placements
        .iter()
        .map(|p| p.agent_id.as_str())
        .collect();
    assert_eq!(
        order,
        ["agent-00", "agent-01", "agent-02", "agent-00", "agent-01", "agent-02"]
    );
}

#[test]
fn many_identical_tasks_that_fit_nowhere_all_get_the_same_reasons() {
    let cluster = agents(3, &["z1"]);
    let mut huge = tasks(50, "job");
    huge.iter_mut()
        .for_each(|t| t.resources = resources(1_000, 20_000));

    let result = plan(&huge, &cluster, Strategy::BinPack);

    assert_eq!(result.unplaced.len(), 50);
    assert!(result
        .unplaced
        .iter()
        .all(|u| u.reasons == ["insufficient memory on 3 agents"]));
}

#[test]
fn the_indexed_and_exhaustive_planners_place_the_same_number_on_a_simple_cluster() {
    let cluster = agents(20, &["z1", "z2"]);
    let work: Vec<TaskRequest> = (0..120)
        .map(|i| {
            let mut t = task(&format!("t{i:03}"), &format!("job{}", i % 7));
            t.resources = resources(500 + (i % 4) * 250, 1_000 + (i % 5) * 1_000);
            t
        })
        .collect();

    let indexed = plan(&work, &cluster, Strategy::BinPack);
    let exhaustive = plan_exhaustive(&work, &cluster, Strategy::BinPack);

    check_plan(&work, &cluster, &indexed).unwrap();
    check_plan(&work, &cluster, &exhaustive).unwrap();
    assert_eq!(indexed.placements.len(), exhaustive.placements.len());
}

#[test]
fn a_large_mixed_workload_keeps_every_rule_with_both_strategies() {
    for seed in 1..=3 {
        let (cluster, work) = mixed_workload(300, 3_000, seed);

        for strategy in [Strategy::BinPack, Strategy::Spread] {
            let result = plan(&work, &cluster, strategy);

            check_plan(&work, &cluster, &result).unwrap();
            assert!(!result.placements.is_empty() && !result.unplaced.is_empty());
        }
    }
}

#[test]
fn a_request_is_built_from_a_stored_task_and_its_job() {
    let json = br#"{
        "owner": {"teamEmail": "team@example.com"},
        "applicationName": "app",
        "container": {
            "image": {"name": "busybox"},
            "resources": {"cpu": 1.5, "memoryMB": 2048},
            "hardConstraints": {"constraints": {"UNIQUEHOST": "true", "availabilityZone": "z1"}},
            "softConstraints": {"constraints": {"zoneBalance": "true"}}
        },
        "batch": {"size": 1}
    }"#;
    let descriptor = parse_descriptor(json, &Limits::default()).unwrap();
    let job = Job::new(JobId::from_string("job"), descriptor, "me".into(), 0);
    let stored = Task::initial(&job, 0, 0);

    let request = TaskRequest::for_task(&stored, &job);

    assert_eq!(request.resources.cpu_millis, 1_500);
    assert_eq!(request.resources.memory_mb, 2_048);
    assert_eq!(
        request.hard,
        vec![
            Constraint::UniqueHost,
            Constraint::AvailabilityZone("z1".into())
        ]
    );
    assert_eq!(request.soft, vec![Constraint::ZoneBalance]);
}

fn stored_job(id: &str, constraints: &str) -> Job {
    let json = format!(
        r#"{{"owner": {{"teamEmail": "team@example.com"}}, "applicationName": "app",
            "container": {{"image": {{"name": "busybox"}}, "hardConstraints": {{"constraints": {constraints}}}}},
            "batch": {{"size": 3}}}}"#
    );
    let descriptor =
        parse_descriptor(json.as_bytes(), &Limits::default()).expect("a valid descriptor");
    Job::new(JobId::from_string(id), descriptor, "me".into(), 0)
}

fn stored_agent(id: &str) -> titus_core::Agent {
    titus_core::Agent {
        id: id.to_owned(),
        queue_url: String::new(),
        zone: "z1".to_owned(),
        machine_type: "m5.large".to_owned(),
        machine_group: "default".to_owned(),
        state: AgentState::Active,
        capacity: resources(4_000, 8_192),
        allocated: titus_core::Resources::default(),
        task_count: 0,
        registered_at_ms: 0,
        heartbeat_at_ms: 0,
        incarnation: 0,
        registration_id: String::new(),
        principal: String::new(),
        task_logs: None,
    }
}

#[test]
fn agent_views_count_the_tasks_occupying_each_agent_and_who_holds_it_exclusively() {
    let unique = stored_job("unique", r#"{"uniqueHost": "true"}"#);
    let exclusive = stored_job("exclusive", r#"{"exclusiveHost": "true"}"#);
    let plain = stored_job("plain", "{}");
    let on = |job: &Job, index: u32, agent: &str, state: titus_core::TaskState| {
        let mut task = Task::initial(job, index, 0);
        task.agent_id = Some(agent.to_owned());
        task.transition(titus_core::TaskState::Launched, None, "placed", 1)
            .expect("Accepted to Launched");
        if state != titus_core::TaskState::Launched {
            task.transition(state, Some(titus_core::TaskReason::Normal), "moved", 2)
                .expect("a forward move");
        }
        task
    };
    let unique_tasks = vec![
        on(&unique, 0, "a1", titus_core::TaskState::Launched),
        on(&unique, 1, "a1", titus_core::TaskState::Launched),
        // Finished: it holds nothing any more.
        on(&unique, 2, "a2", titus_core::TaskState::Finished),
    ];
    let exclusive_tasks = vec![on(&exclusive, 0, "a2", titus_core::TaskState::Launched)];

    let views = titus_placement::agent_views(
        &[stored_agent("a1"), stored_agent("a2"), stored_agent("a3")],
        [
            (&unique, unique_tasks.as_slice()),
            (&exclusive, exclusive_tasks.as_slice()),
        ],
    );

    assert!(titus_placement::needs_job_counts(&unique));
    assert!(titus_placement::needs_job_counts(&exclusive));
    assert!(!titus_placement::needs_job_counts(&plain));
    let ids: Vec<&str> = views.iter().map(|v| v.id.as_str()).collect();
    assert_eq!(ids, ["a1", "a2", "a3"]);
    assert_eq!(
        views[0].job_task_counts,
        BTreeMap::from([(unique.id.clone(), 2)])
    );
    assert!(views[0].exclusive_jobs.is_empty());
    assert_eq!(
        views[1].job_task_counts,
        BTreeMap::from([(exclusive.id.clone(), 1)])
    );
    assert_eq!(
        views[1].exclusive_jobs,
        BTreeSet::from([exclusive.id.clone()])
    );
    assert!(views[2].job_task_counts.is_empty() && views[2].exclusive_jobs.is_empty());
}
