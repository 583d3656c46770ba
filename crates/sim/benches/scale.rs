//! The scale simulation: each shape through the real control plane over the in-process ports,
//! with simulated agents and AWS latencies, printing both clocks, the meter, the bill, and beside
//! them a baseline measured in the same run: the placement engine alone planning the shape's
//! tasks on its agents (no store, no latency), which bounds what any tick could do.
//!
//! `cargo bench -p titus-sim --bench scale` runs C1M and the mixed shape at a tenth of their size
//! and the idle bill at 100, 1,000 and 5,000 agents. `TITUS_SIM_SHAPES=c1m,c2m,mixed`
//! `TITUS_SIM_SCALE=1` for the full sizes (C1M's million tasks take a long while here).

use std::time::Instant;

use titus_sim::aws::{LATENCY_SOURCES, PRICES, PRICES_AS_OF};
use titus_sim::bill::{idle_per_day, per_million_tasks};
use titus_sim::run::Report;
use titus_sim::{simulate, Options, Shape};

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The engine alone on the shape: its tasks (one slot each) on its agents, planned at once.
fn engine_baseline(shape: &Shape) -> (u64, f64) {
    use titus_core::{AgentState, Resources};
    let agents: Vec<titus_core::Agent> = (0..shape.agents)
        .map(|n| titus_core::Agent {
            id: titus_sim::run::agent_id(n),
            queue_url: String::new(),
            zone: ["us-east-1a", "us-east-1b", "us-east-1c"][n as usize % 3].to_owned(),
            machine_type: "m7g.8xlarge".to_owned(),
            machine_group: "default".to_owned(),
            state: AgentState::Active,
            capacity: Resources {
                cpu_millis: u64::from(shape.agent_cpu) * 1000,
                memory_mb: shape.agent_memory_mb,
                disk_mb: shape.agent_disk_mb,
                network_mbps: shape.agent_network_mbps,
                gpu: 0,
            },
            allocated: Resources::ZERO,
            task_count: 0,
            registered_at_ms: 0,
            heartbeat_at_ms: 0,
            incarnation: 1,
            registration_id: String::new(),
            principal: String::new(),
            task_logs: None,
        })
        .collect();
    let views = titus_placement::agent_views(&agents, std::iter::empty());
    let kind = shape
        .kinds
        .iter()
        .find(|k| !k.unplaceable)
        .unwrap_or(&shape.kinds[0]);
    let descriptor = titus_core::parse_descriptor(
        kind.descriptor(0).to_string().as_bytes(),
        &titus_core::Limits::titus_defaults(),
    )
    .expect("the shape's descriptor is valid");
    let job = titus_core::Job::new(titus_core::JobId::generate(), descriptor, "sim".into(), 0);
    let tasks = titus_core::Task::initial_tasks_of(&job);
    let requests: Vec<titus_placement::TaskRequest> = tasks
        .iter()
        .map(|t| titus_placement::TaskRequest::for_task(t, &job))
        .collect();
    let strategy = if shape.strategy == "spread" {
        titus_placement::Strategy::Spread
    } else {
        titus_placement::Strategy::BinPack
    };
    let began = Instant::now();
    let plan = titus_placement::plan(&requests, &views, strategy);
    let secs = began.elapsed().as_secs_f64();
    (
        plan.placements.len() as u64,
        plan.placements.len() as f64 / secs.max(1e-9),
    )
}

fn print(report: &Report, baseline: (u64, f64)) {
    let bill = per_million_tasks(report, &PRICES);
    println!(
        "== {} : {} agents, {} tasks ==",
        report.shape, report.agents, report.tasks
    );
    println!(
        "  wall time here {:.1} s; projected AWS time {:.1} s ({}); {} ticks, {} placed, {:.0} placements/s projected",
        report.wall.as_secs_f64(),
        report.projected_ms as f64 / 1000.0,
        if report.all_started { "every placeable task Started" } else { "NOT every task Started by the limit" },
        report.ticks,
        report.placed,
        report.placements_per_sec
    );
    println!(
        "  baseline, same run: the placement engine alone placed {} tasks of one job at {:.0} placements/s (no store, no latency)",
        baseline.0, baseline.1
    );
    println!(
        "  submit->Launched p50 {:.0} ms p99 {:.0} ms; submit->Started p50 {:.0} ms p99 {:.0} ms (projected)",
        report.launch_ms.p50, report.launch_ms.p99, report.start_ms.p50, report.start_ms.p99
    );
    println!(
        "  per task: {:.2} write units (table {:.2} + indexes {:.2}), {:.2} read units, {:.2} DynamoDB and {:.2} SQS requests",
        bill.write_units_per_task,
        report.meter.write_request_units / report.tasks.max(1) as f64,
        report.meter.index_write_request_units / report.tasks.max(1) as f64,
        bill.read_units_per_task,
        report.meter.dynamodb_requests() as f64 / report.tasks.max(1) as f64,
        report.meter.sqs_requests() as f64 / report.tasks.max(1) as f64
    );
    println!(
        "  bill per million tasks: ${:.2} (DynamoDB+SQS ${:.2}, Lambda ${:.2}, API Gateway ${:.2}, event feed ${:.2})",
        bill.total, bill.dynamodb_and_sqs, bill.lambda, bill.api_gateway, bill.events
    );
    let idle = &report.idle_tick;
    println!(
        "  idle tick: {} requests ({}), {:.1} read units, {:.2} write units, {:.0} ms projected",
        idle.requests.values().sum::<u64>(),
        idle.requests
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        idle.read_request_units,
        idle.write_request_units + idle.index_write_request_units,
        report.idle_tick_ms
    );
    let hb = &report.heartbeat_per_agent_30s;
    println!(
        "  heartbeats per agent per 30 s: {:.2} write units, {:.2} read units, {} requests",
        hb.write_request_units + hb.index_write_request_units,
        hb.read_request_units,
        hb.requests.values().sum::<u64>()
    );
    println!(
        "  tasks by state at the end: {:?}; agents died: {}",
        report.states, report.agents_died
    );
    if report.violations.is_empty() {
        println!("  invariants: kept");
    } else {
        println!("  invariants BROKEN ({}):", report.violations.len());
        for v in report.violations.iter().take(10) {
            println!("    {v}");
        }
    }
}

fn main() {
    let scale: f64 = env("TITUS_SIM_SCALE", "0.1")
        .parse()
        .expect("TITUS_SIM_SCALE is a number");
    let shapes = env("TITUS_SIM_SHAPES", "c1m,mixed");
    let idle_agents = env("TITUS_SIM_IDLE_AGENTS", "100,1000,5000");
    println!("latencies: {LATENCY_SOURCES}");
    println!("prices: {PRICES_AS_OF}");
    let runtime = titus_sim::runtime().expect("a runtime");
    for name in shapes.split(',').filter(|s| !s.is_empty()) {
        let shape = Shape::named(name, scale)
            .unwrap_or_else(|| panic!("no shape {name:?}: c1m, c2m, mixed, small"));
        let baseline = engine_baseline(&shape);
        let options = Options {
            limit_ms: env("TITUS_SIM_LIMIT_SECS", "3600")
                .parse::<u64>()
                .expect("TITUS_SIM_LIMIT_SECS is a number")
                * 1000,
            ..Options::default()
        };
        let report = runtime
            .block_on(simulate(&shape, &options))
            .expect("the simulation runs");
        print(&report, baseline);
    }
    for agents in idle_agents.split(',').filter(|s| !s.is_empty()) {
        let agents: u32 = agents.parse().expect("agent counts are numbers");
        let mut shape = Shape::small();
        shape.name = format!("idle-{agents}");
        shape.agents = agents;
        shape.kinds.clear();
        shape.agent_deaths = 0;
        let report = runtime
            .block_on(simulate(&shape, &Options::default()))
            .expect("the idle simulation runs");
        let bill = idle_per_day(&report, &PRICES);
        println!(
            "idle, {agents} agents: ${:.2}/day (${:.0}/month): scheduler ${:.2} ({:.0} ticks, {} requests and {:.1} read units each), state machine ${:.2}, heartbeats ${:.2}, agents' long polls ${:.2}",
            bill.total,
            bill.total * 30.0,
            bill.scheduler,
            bill.ticks_per_day,
            report.idle_tick.requests.values().sum::<u64>(),
            report.idle_tick.read_request_units,
            bill.state_machine,
            bill.heartbeats,
            bill.agent_polls
        );
    }
}
