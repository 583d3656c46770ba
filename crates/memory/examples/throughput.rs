//! How many placements a second the scheduler's tick makes over the in-process ports, for 1,000
//! agents and 20,000 tasks, beside a baseline measured in the same run: the placement engine
//! alone planning the same tasks on the same agents, without the tick's reads, commits and
//! dispatches. Also what the ticks would have cost on AWS, per placement.
//!
//! `cargo run --release -p titus-memory --example throughput`

use std::error::Error;
use std::time::Instant;

use titus_control::materialize::materialize_jobs;
use titus_control::scheduler::{tick, TickInput};
use titus_control::{create_job, ControlPlane, Settings};
use titus_core::ports::CommandQueue;
use titus_core::{
    Agent, AgentState, AgentStore, JobId, JobStore, Limits, Resources, Task, TaskState,
};
use titus_memory::MemoryWorld;
use titus_placement::{AgentView, TaskRequest};

const AGENTS: usize = 1_000;
const JOBS: u32 = 20;
const TASKS_PER_JOB: u32 = 1_000;

fn agent(i: usize, now_ms: u64) -> Agent {
    Agent {
        id: format!("agent-{i:04}"),
        queue_url: String::new(),
        zone: format!("us-east-1{}", ["a", "b", "c"][i % 3]),
        machine_type: "m7g.8xlarge".to_owned(),
        machine_group: "default".to_owned(),
        state: AgentState::Active,
        capacity: Resources {
            cpu_millis: 32_000,
            memory_mb: 65_536,
            disk_mb: 500_000,
            network_mbps: 10_000,
            gpu: 0,
        },
        allocated: Resources::ZERO,
        task_count: 0,
        registered_at_ms: now_ms,
        heartbeat_at_ms: now_ms,
        incarnation: 0,
        registration_id: String::new(),
        principal: String::new(),
        task_logs: None,
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let world = MemoryWorld::default();
    let cp = ControlPlane::new(world.ports(), Settings::default());
    let now = titus_core::ports::Clock::now_ms(world.clock());
    for i in 0..AGENTS {
        let record = agent(i, now);
        world.commands().ensure_agent_queue(&record.id).await?;
        world.agents().register_agent(&record).await?;
    }
    let descriptor = titus_core::parse_descriptor(
        format!(
            r#"{{"owner":{{"teamEmail":"bench@example.com"}},"applicationName":"bench",
               "container":{{"image":{{"name":"busybox"}}}},"batch":{{"size":{TASKS_PER_JOB}}}}}"#
        )
        .as_bytes(),
        &Limits::titus_defaults(),
    )?;
    let mut job_ids: Vec<JobId> = Vec::new();
    for _ in 0..JOBS {
        let job = create_job(&cp, descriptor.clone(), "bench", None, now).await?;
        job_ids.push(job.into_job().id);
    }
    materialize_jobs(&cp, u32::MAX, u64::MAX).await?;
    while !world
        .jobs()
        .list_awaiting_jobs(1, u64::MAX)
        .await?
        .is_empty()
    {
        materialize_jobs(&cp, u32::MAX, u64::MAX).await?;
    }
    println!("{AGENTS} agents, {} tasks written", world.task_count());

    // The baseline: the engine alone, on the snapshot the first ticks would read.
    let agents = world.agents().list_agents().await?;
    let views: Vec<AgentView> = titus_placement::agent_views(&agents, std::iter::empty());
    let job = world
        .jobs()
        .get_job(&job_ids[0])
        .await?
        .ok_or("the first job is stored")?;
    let all_tasks: Vec<Task> = Task::initial_tasks_of(&job);
    let requests: Vec<TaskRequest> = all_tasks
        .iter()
        .take(cp.settings.scheduler.max_tasks_per_tick as usize)
        .map(|t| TaskRequest::for_task(t, &job))
        .collect();
    let started = Instant::now();
    let plan = titus_placement::plan(&requests, &views, cp.settings.scheduler.strategy());
    let engine_secs = started.elapsed().as_secs_f64();
    let engine_rate = plan.placements.len() as f64 / engine_secs;

    let before = world.meter();
    let started = Instant::now();
    let mut placed = 0u64;
    let mut ticks = 0u64;
    let mut iteration = 0;
    loop {
        let summary = tick(
            &cp,
            TickInput {
                owner: "bench".to_owned(),
                started_at_ms: Some(now),
                iteration,
            },
        )
        .await?;
        iteration = summary.iteration;
        ticks += 1;
        placed += u64::from(summary.placed);
        if summary.placed == 0 || summary.pending_left == 0 {
            break;
        }
    }
    let tick_secs = started.elapsed().as_secs_f64();
    let cost = world.meter().since(&before);

    let mut launched = 0;
    for id in &job_ids {
        launched += world
            .jobs()
            .list_all_job_tasks(id)
            .await?
            .iter()
            .filter(|t| t.state() == TaskState::Launched)
            .count();
    }
    let per = |n: f64| n / placed.max(1) as f64;
    println!(
        "baseline: the engine alone placed {} tasks in {:.1} ms: {:.0} placements/s",
        plan.placements.len(),
        engine_secs * 1e3,
        engine_rate
    );
    println!(
        "ticks:    {ticks} ticks placed {placed} tasks ({launched} Launched) in {:.2} s: {:.0} placements/s, {:.1} ms per tick, {:.1}x the engine alone",
        tick_secs,
        placed as f64 / tick_secs,
        tick_secs * 1e3 / ticks as f64,
        engine_rate / (placed as f64 / tick_secs)
    );
    println!(
        "per placement on AWS: {:.2} RRU, {:.2} WRU (+{:.2} WRU for indexes), {:.3} DynamoDB requests, {:.3} SQS requests",
        per(cost.read_request_units),
        per(cost.write_request_units),
        per(cost.index_write_request_units),
        per(cost.dynamodb_requests() as f64),
        per(cost.sqs_requests() as f64)
    );
    Ok(())
}
