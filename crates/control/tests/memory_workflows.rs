//! Whole workflows of the control plane's use cases over the in-process ports: an agent
//! registered through its request, a job created, placed by the scheduler's tick, moved on by
//! the agent's status updates or by the reconciler, with faults injected where a test says.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use support::descriptor;
use titus_control::scheduler::{tick, TickInput, TickSummary};
use titus_control::{
    agents, create_job, reconciler, status, ControlPlane, InboundMessage, Settings,
};
use titus_core::messages::{AgentCommand, AgentRequest, Registration, TaskStatusUpdate};
use titus_core::ports::{Clock, CommandSource};
use titus_core::{AgentStore, Job, JobState, JobStore, Resources, Task, TaskReason, TaskState};
use titus_memory::{Fault, MemoryPorts, MemoryWorld};

const AGENT: &str = "agent-1";

fn control_plane(world: &MemoryWorld) -> ControlPlane<MemoryPorts> {
    ControlPlane::new(world.ports(), Settings::default())
}

fn message(id: &str, body: String) -> InboundMessage {
    InboundMessage {
        message_id: id.to_owned(),
        body,
        sender_id: None,
    }
}

/// Registers `AGENT` through its request on the agent-requests queue, as the control plane
/// applies it.
async fn register_agent(cp: &ControlPlane<MemoryPorts>) {
    register_agent_named(cp, AGENT).await;
}

async fn register_agent_named(cp: &ControlPlane<MemoryPorts>, agent_id: &str) {
    let request = AgentRequest::Register(Registration {
        agent_id: agent_id.to_owned(),
        registration_id: "boot-1".to_owned(),
        zone: "us-east-1a".to_owned(),
        machine_type: "m7g.2xlarge".to_owned(),
        machine_group: "default".to_owned(),
        capacity: Resources {
            cpu_millis: 64_000,
            memory_mb: 65_536,
            disk_mb: 1_000_000,
            network_mbps: 10_000,
            gpu: 0,
        },
        at_ms: cp.ports.clock.now_ms(),
        task_logs: None,
    });
    let body = serde_json::to_string(&request).unwrap();
    let outcomes =
        agents::process_requests(cp, vec![message("r-1", body)], cp.ports.clock.now_ms()).await;
    assert_eq!(outcomes, vec![("r-1".to_owned(), agents::Outcome::Applied)]);
}

async fn new_job(cp: &ControlPlane<MemoryPorts>, size: u32) -> Job {
    let now = cp.ports.clock.now_ms();
    create_job(
        cp,
        descriptor(json!({"batch": {"size": size}})),
        "alice@example.com",
        None,
        now,
    )
    .await
    .unwrap()
    .into_job()
}

async fn one_tick(
    cp: &ControlPlane<MemoryPorts>,
) -> Result<TickSummary, titus_control::ControlError> {
    tick(
        cp,
        TickInput {
            owner: "loop-1".to_owned(),
            ..TickInput::default()
        },
    )
    .await
}

/// The agent's side: every command waiting on its queue, received and deleted.
async fn receive_commands(world: &MemoryWorld) -> Vec<AgentCommand> {
    let source = world.command_source(AGENT);
    let mut commands = Vec::new();
    loop {
        let batch = source.receive(10, Duration::ZERO).await.unwrap();
        if batch.is_empty() {
            return commands;
        }
        for received in batch {
            commands.push(serde_json::from_str(&received.body).unwrap());
            source.delete(&received.receipt).await.unwrap();
        }
    }
}

fn update(task: &Task, state: TaskState, exit_code: Option<i64>, at_ms: u64) -> TaskStatusUpdate {
    TaskStatusUpdate {
        task_id: task.id.clone(),
        job_id: task.job_id.clone(),
        agent_id: AGENT.to_owned(),
        incarnation: task.agent_incarnation.unwrap_or_default(),
        state,
        reason: None,
        message: String::new(),
        timestamp_ms: at_ms,
        exit_code,
        oom_killed: false,
        container_id: Some("c-1".to_owned()),
    }
}

#[tokio::test]
async fn a_batch_job_is_placed_by_a_tick_then_started_and_finished_by_its_agent_s_statuses() {
    let world = MemoryWorld::default();
    let cp = control_plane(&world);
    register_agent(&cp).await;
    let job = new_job(&cp, 1).await;

    let summary = one_tick(&cp).await.unwrap();
    let launches = receive_commands(&world).await;
    let task = cp
        .ports
        .jobs
        .list_all_job_tasks(&job.id)
        .await
        .unwrap()
        .remove(0);
    let now = world.clock().now_ms();
    let updates = [
        update(&task, TaskState::StartInitiated, None, now + 1_000),
        update(&task, TaskState::Started, None, now + 2_000),
        update(&task, TaskState::Finished, Some(0), now + 3_000),
    ];
    for (i, update) in updates.iter().enumerate() {
        let body = serde_json::to_string(update).unwrap();
        let outcomes =
            status::process_batch(&cp, vec![message(&format!("s-{i}"), body)], now + 3_000).await;
        assert!(
            matches!(outcomes[0].1, status::Outcome::Applied { .. }),
            "{outcomes:?}"
        );
    }

    assert_eq!(
        (summary.materialized, summary.placed),
        (1, 1),
        "{summary:?}"
    );
    assert!(
        matches!(&launches[..], [AgentCommand::LaunchTask(l)] if l.task_id == task.id && l.incarnation == 1),
        "{launches:?}"
    );
    let finished = cp.ports.jobs.get_task(&task.id).await.unwrap().unwrap();
    assert_eq!(finished.state(), TaskState::Finished);
    assert_eq!(finished.status.reason_code, Some(TaskReason::Normal));
    assert_eq!(finished.exit_code, Some(0));
    let job = cp.ports.jobs.get_job(&job.id).await.unwrap().unwrap();
    assert_eq!(job.status.state, JobState::Finished);
    let agent = cp.ports.agents.get_agent(AGENT).await.unwrap().unwrap();
    assert_eq!((agent.allocated, agent.task_count), (Resources::ZERO, 0));
}

#[tokio::test]
async fn a_task_its_agent_never_starts_is_finished_as_stuck_and_its_kill_reaches_the_agent() {
    let world = MemoryWorld::default();
    let cp = control_plane(&world);
    register_agent(&cp).await;
    let job = new_job(&cp, 1).await;
    one_tick(&cp).await.unwrap();
    // The launch is lost on the agent's side: received, never acted on.
    let lost_launch = receive_commands(&world).await;
    assert_eq!(lost_launch.len(), 1);

    // Past the Launched timeout (5 minutes); the agent still heartbeats.
    let now = world.clock().advance(Duration::from_secs(6 * 60));
    cp.ports.agents.heartbeat(AGENT, now).await.unwrap();
    let summary = reconciler::reconcile(&cp, now).await.unwrap();

    let tasks = cp.ports.jobs.list_all_job_tasks(&job.id).await.unwrap();
    let stuck = tasks.iter().find(|t| t.resubmit_of.is_none()).unwrap();
    assert_eq!(summary.stuck_tasks_finished, 1, "{summary:?}");
    assert_eq!(stuck.state(), TaskState::Finished);
    assert_eq!(stuck.status.reason_code, Some(TaskReason::StuckInState));
    let kills: Vec<_> = world
        .agent_commands(AGENT)
        .into_iter()
        .filter_map(|c| match c {
            AgentCommand::KillTask(kill) => Some(kill),
            AgentCommand::LaunchTask(_) => None,
        })
        .collect();
    assert_eq!(kills.len(), 1, "{kills:?}");
    assert_eq!(kills[0].task_id, stuck.id);
    assert_eq!(kills[0].reason, TaskReason::StuckInState);
    assert!(
        tasks
            .iter()
            .any(|t| t.resubmit_of.as_ref() == Some(&stuck.id) && t.state() == TaskState::Accepted),
        "a stuck task is a system error, so it is replaced: {tasks:?}"
    );
    let agent = cp.ports.agents.get_agent(AGENT).await.unwrap().unwrap();
    assert_eq!(
        agent.task_count, 0,
        "the stuck task gave its resources back"
    );
}

#[tokio::test]
async fn ticks_over_a_throttled_store_lose_no_task_and_place_none_twice() {
    let world = MemoryWorld::default();
    let cp = control_plane(&world);
    register_agent(&cp).await;
    let job = new_job(&cp, 20).await;
    let faults = world.faults();
    faults
        .fail_next("allocations.commit_placements", 1, Fault::Throttle)
        .unwrap();
    for store in ["jobs.*", "agents.*", "leases.*", "allocations.*"] {
        faults
            .fail_with_probability(store, 0.25, Fault::Throttle)
            .unwrap();
    }

    let mut failed_ticks = 0;
    for _ in 0..20 {
        match one_tick(&cp).await {
            Ok(_) => {}
            Err(e) => {
                assert!(e.is_transient(), "a throttled store is retried: {e}");
                failed_ticks += 1;
            }
        }
    }
    faults.clear();
    for _ in 0..5 {
        if one_tick(&cp).await.unwrap().pending_left == 0 {
            break;
        }
    }

    assert!(failed_ticks > 0, "the faults were injected");
    assert!(world.meter().faults_injected.values().sum::<u64>() > 0);
    let tasks = cp.ports.jobs.list_all_job_tasks(&job.id).await.unwrap();
    assert_eq!(tasks.len(), 20, "one task per slot, none lost or doubled");
    assert!(
        tasks
            .iter()
            .all(|t| t.state() == TaskState::Launched && t.agent_id.as_deref() == Some(AGENT)),
        "{tasks:?}"
    );
    let agent = cp.ports.agents.get_agent(AGENT).await.unwrap().unwrap();
    let one = Resources::of_container(&tasks[0].resources);
    assert_eq!(agent.task_count, 20);
    assert_eq!(
        agent.allocated.memory_mb,
        20 * one.memory_mb,
        "allocated once per task"
    );
    let mut launches: BTreeMap<String, u32> = BTreeMap::new();
    for command in receive_commands(&world).await {
        *launches.entry(command.task_id().to_string()).or_default() += 1;
    }
    assert_eq!(launches.len(), 20);
    assert!(
        launches.values().all(|n| *n == 1),
        "each launched once: {launches:?}"
    );
}

#[tokio::test]
async fn a_task_that_fits_nowhere_gets_its_reasons_written_once_and_cleared_once_it_fits() {
    let world = MemoryWorld::default();
    let cp = control_plane(&world);
    register_agent(&cp).await;
    // Two 40 GB tasks on one 64 GB agent: one fits, one waits.
    let now = world.clock().now_ms();
    let job = create_job(
        &cp,
        descriptor(json!({"batch": {"size": 2}, "container": {"resources": {"memoryMB": 40_000}}})),
        "alice@example.com",
        None,
        now,
    )
    .await
    .unwrap()
    .into_job();
    let writes = || world.meter().requests_of("DynamoDB.BatchWriteItem");

    let first = one_tick(&cp).await.unwrap();
    let result = cp.ports.jobs.get_placement_result(&job.id).await.unwrap();

    assert_eq!((first.placed, first.unplaced), (1, 1));
    let result = result.expect("a result for the waiting task");
    assert_eq!(result.unplaced_tasks, 1);
    assert_eq!(result.reasons(), vec!["insufficient memory on 1 agent"]);
    assert_eq!(result.insufficient, vec!["memory"]);
    assert_eq!(writes(), 1);

    // Ticks that find the same answer write nothing, until the result is due for a refresh (the
    // task that fits nowhere is deferred, so not every tick looks at it).
    let mut looked_at = 0;
    for _ in 0..5 {
        world.clock().advance_ms(1_000);
        looked_at += one_tick(&cp).await.unwrap().unplaced;
    }
    assert!(looked_at >= 2, "looked at {looked_at} times in 5 s");
    assert_eq!(writes(), 1);
    world
        .clock()
        .advance_ms(titus_control::scheduler::results::REFRESH_MS);
    one_tick(&cp).await.unwrap();
    let refreshed = cp.ports.jobs.get_placement_result(&job.id).await.unwrap();
    assert_eq!(writes(), 2);
    let refreshed = refreshed.unwrap();
    assert_eq!(refreshed.since_ms, result.since_ms);
    assert!(refreshed.computed_at_ms > result.computed_at_ms);

    // A second agent: the task fits once it is looked at again, and its job's result goes.
    register_agent_named(&cp, "agent-2").await;
    world
        .clock()
        .advance_ms(titus_control::scheduler::defer::MAX_BACKOFF_MS);
    let placed = one_tick(&cp).await.unwrap();

    assert_eq!((placed.placed, placed.unplaced), (1, 0));
    assert_eq!(
        cp.ports.jobs.get_placement_result(&job.id).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn a_task_that_fits_is_placed_at_once_behind_more_tasks_that_fit_nowhere_than_a_tick_reads() {
    let world = MemoryWorld::default();
    let cp = control_plane(&world);
    register_agent(&cp).await;
    let limit = cp.settings.scheduler.max_tasks_per_tick;
    // Three jobs of tasks bigger than any agent: six times what one tick reads.
    let now = world.clock().now_ms();
    let huge =
        json!({"batch": {"size": limit * 2}, "container": {"resources": {"memoryMB": 1_000_000}}});
    for _ in 0..3 {
        create_job(
            &cp,
            descriptor(huge.clone()),
            "alice@example.com",
            None,
            now,
        )
        .await
        .unwrap();
    }
    // Ticks write them (a job a tick) and look at each once; then none is left to look at.
    let (mut written, mut looked_at, mut ticks) = (0, 0, 0);
    loop {
        world.clock().advance_ms(100);
        let summary = one_tick(&cp).await.unwrap();
        assert_eq!(summary.placed, 0);
        assert!(summary.unplaced <= limit);
        written += summary.materialized;
        looked_at += summary.unplaced;
        ticks += 1;
        assert!(
            ticks <= 8,
            "{written} tasks written, {looked_at} looked at, after {ticks} ticks"
        );
        if written == limit * 6 && summary.unplaced == 0 {
            break;
        }
    }
    assert_eq!(looked_at, limit * 6);
    let waiting = world.all_tasks();
    assert_eq!(waiting.len() as u32, limit * 6);
    assert!(waiting.iter().all(|t| t.state() == TaskState::Accepted));

    // A small job after them: placed by the tick that writes its task, and the next one sees
    // no task that fits nowhere yet (each was deferred when it was looked at). Before tasks were
    // deferred, those at the head of the pending index filled every tick's read.
    let small = new_job(&cp, 1).await;
    world.clock().advance_ms(100);
    let summary = one_tick(&cp).await.unwrap();
    assert_eq!(
        (summary.materialized, summary.placed),
        (1, 1),
        "{summary:?}"
    );
    let placed = cp.ports.jobs.list_all_job_tasks(&small.id).await.unwrap();
    assert_eq!(placed[0].state(), TaskState::Launched);
    world.clock().advance_ms(100);
    let next = one_tick(&cp).await.unwrap();
    assert_eq!((next.placed, next.unplaced), (0, 0), "{next:?}");

    // Every one of them is looked at again within the longest deferral, and still waits, with
    // its job's reasons.
    world
        .clock()
        .advance_ms(titus_control::scheduler::defer::MAX_BACKOFF_MS);
    let mut looked_at = 0;
    for _ in 0..12 {
        let summary = one_tick(&cp).await.unwrap();
        looked_at += summary.unplaced;
        assert_eq!(summary.placed, 0);
    }
    assert_eq!(looked_at, limit * 6);
    let job = waiting[0].job_id.clone();
    let result = cp.ports.jobs.get_placement_result(&job).await.unwrap();
    assert_eq!(
        result.expect("a placement result").reasons(),
        vec!["insufficient memory on 1 agent"]
    );
}
