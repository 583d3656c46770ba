//! One simulation: the real control plane over the in-process world, every AWS request waiting
//! its drawn latency on a paused tokio clock, driven by the actors of a deployment:
//!
//! - the submitter, creating each job through the real API router (API Gateway's overhead
//!   before each request);
//! - the scheduler loop, ticking as the Express state machine does (its Task state's overhead,
//!   at once again after a tick that placed, after the 1 s Wait when idle, a new run when a run's
//!   budget is used);
//! - the status function, fed by Lambda's SQS event source: batches of 10 from the status queue,
//!   as many at once as the event source's concurrency has grown to;
//! - the reconciler, every minute;
//! - the agents: each receives from its own queue when something arrives there, acknowledges
//!   and starts its tasks after the shape's delays, keeps its own accounting, heartbeats every
//!   5 s, and some die.
//!
//! Two clocks: the wall time of the whole run on this machine, and the projected time on tokio's
//! paused clock, which moves only by the drawn latencies and by the compute time of the
//! functions (the wall time a tick or a status batch took here, an upper bound: it includes the
//! in-process store's own work). The meter counts every request and request unit.

use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use futures::StreamExt;
use titus_control::scheduler::{tick, TickInput, TickSummary};
use titus_control::{agents, reconciler, status, ControlPlane, InboundMessage, Settings};
use titus_core::messages::{AgentCommand, AgentRequest, Registration, TaskStatusUpdate};
use titus_core::ports::{AgentStore, Clock, CommandSource, StatusSink};
use titus_core::{AgentHeartbeat, Resources, TaskId, TaskReason, TaskState};
use titus_memory::{
    LatencyModel, MemoryConfig, MemoryPorts, MemoryWorld, MeterSnapshot, Percentiles,
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::aws::{self, overhead};
use crate::shape::Shape;

/// How a run is driven.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub seed: u64,
    /// Jobs in flight through the API at once.
    pub submit_concurrency: usize,
    /// The most status batches processed at once (Lambda's SQS event source grows to it).
    pub status_concurrency: usize,
    /// How fast the event source adds concurrent batches, per minute.
    pub status_scale_per_minute: usize,
    pub heartbeat_every_ms: u64,
    pub reconcile_every_ms: u64,
    pub max_tasks_per_tick: u32,
    /// The run stops here (projected time) whether or not every task started.
    pub limit_ms: u64,
    /// The idle ticks measured after the load, for the idle bill.
    pub idle_ticks: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seed: 0x5eed,
            submit_concurrency: 32,
            status_concurrency: 1_000,
            status_scale_per_minute: 300,
            heartbeat_every_ms: 5_000,
            reconcile_every_ms: 60_000,
            max_tasks_per_tick: 1_000,
            limit_ms: 4 * 3_600_000,
            idle_ticks: 5,
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub shape: String,
    pub agents: u32,
    pub tasks: u64,
    pub wall: Duration,
    /// Projected time from the first submission until every placeable task was Started.
    pub projected_ms: u64,
    pub all_started: bool,
    pub ticks: u64,
    pub placed: u64,
    /// Placements per projected second over the run.
    pub placements_per_sec: f64,
    /// Submit → Launched (the task's Launched status time less its creation), projected.
    pub launch_ms: Percentile,
    /// Submit → Started, projected.
    pub start_ms: Percentile,
    pub api_requests: u64,
    pub status_batches: u64,
    pub meter: MeterSnapshot,
    /// One idle tick's requests and units, and its projected duration.
    pub idle_tick: MeterSnapshot,
    pub idle_tick_ms: f64,
    /// The heartbeats' requests and units per agent per 30 s.
    pub heartbeat_per_agent_30s: MeterSnapshot,
    pub ticks_summary: Vec<TickSummary>,
    /// Broken invariants; empty when the run kept them all.
    pub violations: Vec<String>,
    /// Tasks by state at the end.
    pub states: BTreeMap<TaskState, usize>,
    pub agents_died: u32,
    /// The reconciler's runs: what each did, or why it failed.
    pub reconciles: Vec<Result<reconciler::ReconcileSummary, String>>,
}

/// Percentiles of a sample, in ms.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentile {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub count: usize,
}

impl Percentile {
    pub fn of(mut values: Vec<f64>) -> Percentile {
        if values.is_empty() {
            return Percentile::default();
        }
        values.sort_by(f64::total_cmp);
        let at = |q: f64| values[((values.len() as f64 - 1.0) * q).round() as usize];
        Percentile {
            p50: at(0.5),
            p99: at(0.99),
            max: values[values.len() - 1],
            count: values.len(),
        }
    }
}

/// A failure to set up or drive a run (not a broken invariant: those are in the report).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("setting up the run: {0}")]
    Setup(String),
    #[error("a control plane call failed: {0}")]
    Control(#[from] titus_control::ControlError),
}

fn draw(model: &LatencyModel, p: Percentiles) -> Duration {
    model.draw(p)
}

/// A future and the time spent in its own polls: its compute, without the time other tasks of
/// the runtime took while it waited.
struct OwnTime<F> {
    inner: std::pin::Pin<Box<F>>,
    spent: Duration,
}

impl<F: std::future::Future> std::future::Future for OwnTime<F> {
    type Output = (F::Output, Duration);

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let began = Instant::now();
        let polled = self.inner.as_mut().poll(cx);
        self.spent += began.elapsed();
        polled.map(|output| (output, self.spent))
    }
}

/// Runs `future`, then waits (on tokio's clock) the compute time it took here: a function's
/// own work counts in the projected time beside its requests' latencies.
async fn with_compute<F: std::future::Future>(future: F) -> F::Output {
    let (output, spent) = OwnTime {
        inner: Box::pin(future),
        spent: Duration::ZERO,
    }
    .await;
    tokio::time::sleep(spent).await;
    output
}

/// Runs `shape` to its end. Call inside a current-thread runtime whose clock is paused.
pub async fn simulate(shape: &Shape, options: &Options) -> Result<Report, SimError> {
    let wall_started = Instant::now();
    let world = MemoryWorld::new(MemoryConfig {
        stage: "sim".to_owned(),
        ..MemoryConfig::default()
    });
    let model = aws::latency_model(options.seed);
    world.clock().follow_tokio_time();
    let mut settings = Settings::default();
    settings.scheduler.strategy = shape.strategy.to_owned();
    settings.scheduler.max_tasks_per_tick = options.max_tasks_per_tick;
    let cp = Arc::new(ControlPlane::new(world.ports(), settings));

    // Agents register through their requests (before the clock counts: provisioning).
    register_agents(&cp, shape).await?;
    world.set_latency(model.clone());
    let started_ms = world.clock().now_ms();
    let before = world.meter();

    let fleet = Arc::new(Mutex::new(Fleet::new(shape, &world)));
    let stop = CancellationToken::new();
    let progress = Arc::new(Progress::default());

    let mut actors = tokio::task::JoinSet::new();
    actors.spawn(run_fleet(
        world.clone(),
        fleet.clone(),
        shape.clone(),
        stop.clone(),
    ));
    actors.spawn(run_heartbeats(
        world.clone(),
        fleet.clone(),
        options.heartbeat_every_ms,
        stop.clone(),
    ));
    actors.spawn(run_deaths(
        world.clone(),
        fleet.clone(),
        shape.clone(),
        stop.clone(),
    ));
    actors.spawn(run_status(
        cp.clone(),
        world.clone(),
        model.clone(),
        options.clone(),
        progress.clone(),
        stop.clone(),
    ));
    let reconciles = Arc::new(Mutex::new(Vec::new()));
    actors.spawn(run_reconciler(
        cp.clone(),
        model.clone(),
        options.reconcile_every_ms,
        reconciles.clone(),
        stop.clone(),
    ));
    let scheduler = tokio::spawn(run_scheduler(
        cp.clone(),
        model.clone(),
        progress.clone(),
        stop.clone(),
    ));
    let submitted = submit_all(&cp, &model, shape, options).await?;
    let api_requests = submitted.len() as u64;

    // Until every placeable task has Started (checked on the records when the status count
    // says so), or the limit.
    let target = shape.placeable_tasks();
    let deadline = started_ms + options.limit_ms;
    let mut all_started = false;
    let mut finished_at_ms = deadline;
    // With agents dying, not before their deaths were noticed and their tasks replaced.
    let settled_ms = if shape.agent_deaths > 0 {
        started_ms
            + shape.death_after_ms
            + cp.rules().agent_heartbeat_timeout_ms
            + 2 * options.reconcile_every_ms
    } else {
        started_ms
    };
    while world.clock().now_ms() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if progress.started() < target || world.clock().now_ms() < settled_ms {
            continue;
        }
        let states = world.task_states();
        let started = states.get(&TaskState::Started).copied().unwrap_or(0) as u64;
        if started >= target {
            all_started = true;
            finished_at_ms = world.clock().now_ms();
            break;
        }
    }
    let projected_ms = finished_at_ms.saturating_sub(started_ms);
    let loaded = world.meter().since(&before);

    stop.cancel();
    let ticks_summary = scheduler.await.unwrap_or_default();
    while actors.join_next().await.is_some() {}
    // Idle, alone: nothing else runs; the lease of the last run expires first.
    tokio::time::sleep(Duration::from_millis(
        cp.settings.scheduler.lease_ttl_ms + 1_000,
    ))
    .await;
    let idle = measure_idle(&cp, &world, options.idle_ticks).await?;
    // Heartbeats alone, for 30 s.
    let heartbeats = measure_heartbeats(&world, &fleet, options.heartbeat_every_ms).await;

    let reconciled = lock(&reconciles).to_vec();
    let tasks = world.all_tasks();
    let mut violations = fleet
        .lock()
        .map(|f| f.violations.clone())
        .unwrap_or_default();
    violations.extend(check_records(&world, shape, &tasks));
    let (launch_ms, start_ms) = latencies(&submitted, &tasks);
    let placed = ticks_summary.iter().map(|t| u64::from(t.placed)).sum();
    let agents_died = fleet.lock().map(|f| f.dead.len() as u32).unwrap_or(0);
    Ok(Report {
        shape: shape.name.clone(),
        agents: shape.agents,
        tasks: shape.tasks(),
        wall: wall_started.elapsed(),
        projected_ms,
        all_started,
        ticks: ticks_summary.len() as u64,
        placed,
        placements_per_sec: placed as f64 / (projected_ms.max(1) as f64 / 1000.0),
        launch_ms,
        start_ms,
        api_requests,
        status_batches: progress.batches(),
        meter: loaded,
        idle_tick: idle.0,
        idle_tick_ms: idle.1,
        heartbeat_per_agent_30s: heartbeats,
        ticks_summary,
        violations,
        states: world.task_states(),
        agents_died,
        reconciles: reconciled,
    })
}

async fn register_agents(cp: &ControlPlane<MemoryPorts>, shape: &Shape) -> Result<(), SimError> {
    let zones = ["us-east-1a", "us-east-1b", "us-east-1c"];
    let requests: Vec<InboundMessage> = (0..shape.agents)
        .map(|n| {
            let request = AgentRequest::Register(Registration {
                agent_id: agent_id(n),
                registration_id: format!("boot-{n}"),
                zone: zones[n as usize % zones.len()].to_owned(),
                machine_type: "m7g.8xlarge".to_owned(),
                machine_group: "default".to_owned(),
                capacity: capacity(shape),
                at_ms: cp.ports.clock.now_ms(),
                task_logs: None,
            });
            InboundMessage {
                message_id: format!("register-{n}"),
                body: serde_json::to_string(&request).unwrap_or_default(),
                sender_id: None,
            }
        })
        .collect();
    for batch in requests.chunks(10) {
        let now = cp.ports.clock.now_ms();
        for (id, outcome) in agents::process_requests(cp, batch.to_vec(), now).await {
            if outcome != agents::Outcome::Applied {
                return Err(SimError::Setup(format!("registration {id}: {outcome:?}")));
            }
        }
    }
    Ok(())
}

pub fn agent_id(n: u32) -> String {
    format!("sim-agent-{n:05}")
}

fn capacity(shape: &Shape) -> Resources {
    Resources {
        cpu_millis: u64::from(shape.agent_cpu) * 1000,
        memory_mb: shape.agent_memory_mb,
        disk_mb: shape.agent_disk_mb,
        network_mbps: shape.agent_network_mbps,
        gpu: 0,
    }
}

/// Creates every job of the shape through the API router, `submit_concurrency` at a time, at
/// the shape's rate; returns when each job was submitted (on the simulation's clock: the API
/// stamps its records with the machine's).
async fn submit_all(
    cp: &Arc<ControlPlane<MemoryPorts>>,
    model: &LatencyModel,
    shape: &Shape,
    options: &Options,
) -> Result<HashMap<String, u64>, SimError> {
    let config =
        titus_api::ApiConfig::with_tokens("sim", &[(SIM_TOKEN, SIM_CALLER)], &[SIM_CALLER]);
    let state = titus_api::AppState::new(cp.clone(), config, None);
    let router = titus_api::router(state);
    let mut kinds = shape.kinds.clone();
    // Kinds submitted first (the oldest pending tasks), then the rest interleaved.
    kinds.sort_by_key(|k| !k.first);
    let mut bodies = Vec::new();
    for kind in kinds.iter().filter(|k| k.first) {
        bodies.extend((0..kind.jobs).map(|n| kind.descriptor(n)));
    }
    let rest: Vec<_> = kinds.iter().filter(|k| !k.first).collect();
    let most = rest.iter().map(|k| k.jobs).max().unwrap_or(0);
    for n in 0..most {
        for kind in rest.iter().filter(|k| n < k.jobs) {
            bodies.push(kind.descriptor(n));
        }
    }
    let count = bodies.len() as u64;
    let pace =
        (shape.jobs_per_sec > 0.0).then(|| Duration::from_secs_f64(1.0 / shape.jobs_per_sec));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let submitted = Arc::new(Mutex::new(HashMap::new()));
    let clock = cp.ports.clock.clone();
    futures::stream::iter(bodies.into_iter().enumerate())
        .for_each_concurrent(options.submit_concurrency, |(n, body)| {
            let (router, model, failures) = (router.clone(), model.clone(), failures.clone());
            let (submitted, clock) = (submitted.clone(), clock.clone());
            async move {
                if let Some(pace) = pace {
                    tokio::time::sleep(pace * n as u32).await;
                }
                let sent_ms = clock.now_ms();
                tokio::time::sleep(draw(&model, overhead::API_GATEWAY)).await;
                let request = Request::post("/api/v3/jobs")
                    .header("authorization", format!("Bearer {SIM_TOKEN}"))
                    .header("content-type", "application/json")
                    .body(Body::from(body.to_string()));
                let answer = match request {
                    Ok(request) => router.oneshot(request).await,
                    Err(e) => {
                        lock(&failures).push(e.to_string());
                        return;
                    }
                };
                match answer {
                    Ok(response) if response.status().is_success() => {
                        let created = axum::body::to_bytes(response.into_body(), 1 << 20)
                            .await
                            .ok()
                            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
                        match created.as_ref().and_then(|job| job["id"].as_str()) {
                            Some(id) => {
                                lock(&submitted).insert(id.to_owned(), sent_ms);
                            }
                            None => lock(&failures).push("a create answered no job id".into()),
                        }
                    }
                    Ok(response) => {
                        let status = response.status();
                        let text = axum::body::to_bytes(response.into_body(), 1 << 20)
                            .await
                            .map(|b| String::from_utf8_lossy(&b).into_owned())
                            .unwrap_or_default();
                        lock(&failures).push(format!("{status}: {text}"));
                    }
                    Err(e) => lock(&failures).push(e.to_string()),
                }
            }
        })
        .await;
    let failures = lock(&failures).clone();
    if let Some(first) = failures.first() {
        return Err(SimError::Setup(format!(
            "{} of {count} job creations failed; the first: {first}",
            failures.len()
        )));
    }
    let submitted = lock(&submitted).clone();
    Ok(submitted)
}

const SIM_TOKEN: &str = "sim-token";
const SIM_CALLER: &str = "sim@example.com";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Counts the status function applied.
#[derive(Debug, Default)]
struct Progress {
    started: std::sync::atomic::AtomicU64,
    batches: std::sync::atomic::AtomicU64,
}

impl Progress {
    fn started(&self) -> u64 {
        self.started.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn batches(&self) -> u64 {
        self.batches.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The scheduler loop, as the state machine runs it; returns every tick's summary.
async fn run_scheduler(
    cp: Arc<ControlPlane<MemoryPorts>>,
    model: LatencyModel,
    _progress: Arc<Progress>,
    stop: CancellationToken,
) -> Vec<TickSummary> {
    let mut summaries = Vec::new();
    let mut run = 0u64;
    let mut input = TickInput {
        owner: format!("sim-run-{run}"),
        ..TickInput::default()
    };
    tokio::time::sleep(draw(&model, overhead::STATE_MACHINE_START)).await;
    while !stop.is_cancelled() {
        tokio::time::sleep(draw(&model, overhead::STATE_MACHINE_TICK)).await;
        let summary = match with_compute(tick(&cp, input.clone())).await {
            Ok(summary) => summary,
            Err(e) => {
                tracing::warn!(error = %e, "a simulated tick failed; the loop ticks again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let placed = summary.placed;
        let carry_on = summary.continue_loop;
        input = TickInput {
            owner: summary.owner.clone(),
            started_at_ms: Some(summary.started_at_ms),
            iteration: summary.iteration,
        };
        summaries.push(summary);
        if !carry_on {
            run += 1;
            input = TickInput {
                owner: format!("sim-run-{run}"),
                ..TickInput::default()
            };
            tokio::time::sleep(draw(&model, overhead::STATE_MACHINE_START)).await;
            continue;
        }
        if placed == 0 {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(overhead::IDLE_WAIT_MS)) => {}
            }
        }
    }
    summaries
}

/// Lambda's SQS event source over the status queue: batches of 10, processed concurrently up to
/// a concurrency that grows by `status_scale_per_minute` a minute.
async fn run_status(
    cp: Arc<ControlPlane<MemoryPorts>>,
    world: MemoryWorld,
    model: LatencyModel,
    options: Options,
    progress: Arc<Progress>,
    stop: CancellationToken,
) {
    let (queue, _) = world.status_queue_names();
    let source = world.queue_source(&queue);
    let began = tokio::time::Instant::now();
    let mut running = tokio::task::JoinSet::new();
    while !stop.is_cancelled() {
        let minutes = began.elapsed().as_secs_f64() / 60.0;
        let allowed = (5.0 + minutes * options.status_scale_per_minute as f64)
            .min(options.status_concurrency as f64) as usize;
        while running.len() >= allowed.max(1) {
            running.join_next().await;
        }
        // A long poll, as the event source's pollers make them: one request however long it
        // waits.
        let batch = tokio::select! {
            _ = stop.cancelled() => break,
            received = source.receive(10, Duration::from_secs(20)) => received.unwrap_or_default(),
        };
        if batch.is_empty() {
            continue;
        }
        let (cp, model, source, progress) = (
            cp.clone(),
            model.clone(),
            world.queue_source(&queue),
            progress.clone(),
        );
        running.spawn(async move {
            tokio::time::sleep(draw(&model, overhead::SQS_EVENT_SOURCE)).await;
            let messages: Vec<InboundMessage> = batch
                .iter()
                .map(|m| InboundMessage {
                    message_id: m.receipt.clone(),
                    body: m.body.clone(),
                    sender_id: None,
                })
                .collect();
            let now = cp.ports.clock.now_ms();
            let outcomes = with_compute(status::process_batch(&cp, messages, now)).await;
            progress
                .batches
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            for (receipt, outcome) in outcomes {
                if let status::Outcome::Applied {
                    to: TaskState::Started,
                    ..
                } = outcome
                {
                    progress
                        .started
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                if outcome != status::Outcome::Failed {
                    let _ = source.delete(&receipt).await;
                }
            }
        });
    }
    running.shutdown().await;
}

async fn run_reconciler(
    cp: Arc<ControlPlane<MemoryPorts>>,
    model: LatencyModel,
    every_ms: u64,
    runs: Arc<Mutex<Vec<Result<reconciler::ReconcileSummary, String>>>>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(every_ms)) => {}
        }
        tokio::time::sleep(draw(&model, overhead::STATE_MACHINE_TICK)).await;
        let now = cp.ports.clock.now_ms();
        let run = with_compute(reconciler::reconcile(&cp, now)).await;
        lock(&runs).push(run.map_err(|e| e.to_string()));
    }
}

/// One simulated agent's view of itself.
#[derive(Debug, Default)]
struct SimAgent {
    capacity: Resources,
    incarnation: u64,
    /// Task → its resources and its job.
    running: HashMap<TaskId, (Resources, titus_core::JobId)>,
    /// The last report written, as the agent keeps it (an unchanged one is not written again
    /// before it is due).
    last_report: Option<AgentHeartbeat>,
}

/// A status an agent will send at `due_ms`.
#[derive(Debug, PartialEq, Eq)]
struct Due {
    due_ms: u64,
    seq: u64,
    agent: u32,
    update: TaskStatusUpdate,
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.due_ms, other.seq).cmp(&(self.due_ms, self.seq))
    }
}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Every simulated agent.
#[derive(Debug)]
struct Fleet {
    agents: Vec<SimAgent>,
    dead: HashSet<u32>,
    queue_prefix: String,
    /// The agent each task was launched on (the latest launch).
    launched_on: HashMap<TaskId, u32>,
    due: BinaryHeap<Due>,
    seq: u64,
    violations: Vec<String>,
}

impl Fleet {
    fn new(shape: &Shape, world: &MemoryWorld) -> Fleet {
        let prefix = world.agent_queue_name("");
        Fleet {
            agents: (0..shape.agents)
                .map(|_| SimAgent {
                    capacity: capacity(shape),
                    incarnation: 1,
                    running: HashMap::new(),
                    last_report: None,
                })
                .collect(),
            dead: HashSet::new(),
            queue_prefix: prefix,
            launched_on: HashMap::new(),
            due: BinaryHeap::new(),
            seq: 0,
            violations: Vec::new(),
        }
    }

    fn agent_of_queue(&self, queue: &str) -> Option<u32> {
        queue
            .strip_prefix(&self.queue_prefix)?
            .strip_prefix("sim-agent-")?
            .parse()
            .ok()
    }

    fn schedule(&mut self, due_ms: u64, agent: u32, update: TaskStatusUpdate) {
        self.seq += 1;
        self.due.push(Due {
            due_ms,
            seq: self.seq,
            agent,
            update,
        });
    }

    fn update(
        agent: u32,
        incarnation: u64,
        task_id: &TaskId,
        job_id: &titus_core::JobId,
        state: TaskState,
        at_ms: u64,
    ) -> TaskStatusUpdate {
        TaskStatusUpdate {
            task_id: task_id.clone(),
            job_id: job_id.clone(),
            agent_id: agent_id(agent),
            incarnation,
            state,
            reason: None,
            message: String::new(),
            timestamp_ms: at_ms,
            exit_code: None,
            oom_killed: false,
            container_id: Some(format!("c-{task_id}")),
        }
    }

    /// What agent `n` does with a command it received at `now_ms`.
    fn command(&mut self, n: u32, command: AgentCommand, now_ms: u64, shape: &Shape) {
        match command {
            AgentCommand::LaunchTask(launch) => {
                let Some(agent) = self.agents.get_mut(n as usize) else {
                    return;
                };
                if launch.incarnation != agent.incarnation {
                    return;
                }
                if agent.running.contains_key(&launch.task_id) {
                    // A dispatch sent again: the same launch, already running.
                    return;
                }
                if let Some(&other) = self.launched_on.get(&launch.task_id) {
                    if other != n
                        && self.agents[other as usize]
                            .running
                            .contains_key(&launch.task_id)
                        && !self.dead.contains(&other)
                    {
                        self.violations.push(format!(
                            "task {} launched on {} while it runs on {}",
                            launch.task_id,
                            agent_id(n),
                            agent_id(other)
                        ));
                    }
                }
                let agent = &mut self.agents[n as usize];
                let wants = Resources::of_container(&launch.resources);
                let used = agent
                    .running
                    .values()
                    .fold(Resources::ZERO, |sum, (r, _)| sum.saturating_add(*r));
                if !used.saturating_add(wants).fits_within(&agent.capacity) {
                    self.violations.push(format!(
                        "{} over-committed by task {}: {used:?} + {wants:?} over {:?}",
                        agent_id(n),
                        launch.task_id,
                        agent.capacity
                    ));
                }
                agent
                    .running
                    .insert(launch.task_id.clone(), (wants, launch.job_id.clone()));
                let incarnation = agent.incarnation;
                self.launched_on.insert(launch.task_id.clone(), n);
                let (task, job) = (launch.task_id.clone(), launch.job_id.clone());
                let acked = now_ms + shape.ack_ms;
                self.schedule(
                    acked,
                    n,
                    Fleet::update(
                        n,
                        incarnation,
                        &task,
                        &job,
                        TaskState::StartInitiated,
                        acked,
                    ),
                );
                let started = acked + shape.start_ms;
                self.schedule(
                    started,
                    n,
                    Fleet::update(n, incarnation, &task, &job, TaskState::Started, started),
                );
            }
            AgentCommand::KillTask(kill) => {
                let Some(agent) = self.agents.get_mut(n as usize) else {
                    return;
                };
                if let Some((_, job)) = agent.running.remove(&kill.task_id) {
                    let incarnation = agent.incarnation;
                    let at = now_ms + 100;
                    let mut update =
                        Fleet::update(n, incarnation, &kill.task_id, &job, TaskState::Finished, at);
                    update.reason = Some(if kill.reason == TaskReason::Lost {
                        TaskReason::Lost
                    } else {
                        TaskReason::Killed
                    });
                    update.exit_code = Some(137);
                    self.schedule(at, n, update);
                }
            }
        }
    }
}

/// The agents: receive what arrived on their queues, send what is due.
async fn run_fleet(
    world: MemoryWorld,
    fleet: Arc<Mutex<Fleet>>,
    shape: Shape,
    stop: CancellationToken,
) {
    let sink = world.status_sink();
    while !stop.is_cancelled() {
        let arrival = world.next_arrival();
        tokio::pin!(arrival);
        arrival.as_mut().enable();
        let agents: Vec<u32> = {
            let fleet = lock(&fleet);
            world
                .take_arrivals()
                .iter()
                .filter_map(|q| fleet.agent_of_queue(q))
                .filter(|n| !fleet.dead.contains(n))
                .collect()
        };
        // Each agent receives its own queue, all at once.
        let received = futures::future::join_all(agents.iter().map(|&n| {
            let source = world.command_source(&agent_id(n));
            async move {
                let mut commands = Vec::new();
                loop {
                    // The agent's long poll answers with what is there; a full batch may
                    // leave more.
                    let Ok(batch) = source.receive(10, Duration::ZERO).await else {
                        break;
                    };
                    let full = batch.len() == 10;
                    for message in batch {
                        if let Ok(command) = serde_json::from_str::<AgentCommand>(&message.body) {
                            commands.push(command);
                        }
                        let _ = source.delete(&message.receipt).await;
                    }
                    if !full {
                        break;
                    }
                }
                (n, commands)
            }
        }))
        .await;
        let now = world.clock().now_ms();
        {
            let mut fleet = lock(&fleet);
            for (n, commands) in received {
                for command in commands {
                    fleet.command(n, command, now, &shape);
                }
            }
        }
        // What is due now, by agent, up to 10 a message batch.
        let mut due: BTreeMap<u32, Vec<TaskStatusUpdate>> = BTreeMap::new();
        let next_due_ms = {
            let mut fleet = lock(&fleet);
            while fleet.due.peek().is_some_and(|d| d.due_ms <= now) {
                if let Some(d) = fleet.due.pop() {
                    if !fleet.dead.contains(&d.agent) {
                        due.entry(d.agent).or_default().push(d.update);
                    }
                }
            }
            fleet.due.peek().map(|d| d.due_ms)
        };
        let sends = due.into_values().flat_map(|updates| {
            updates
                .chunks(10)
                .map(<[TaskStatusUpdate]>::to_vec)
                .collect::<Vec<_>>()
        });
        futures::future::join_all(sends.map(|chunk| {
            let sink = sink.clone();
            async move {
                let mut pending = chunk;
                for _ in 0..5 {
                    if let Ok(accepted) = sink.send(&pending).await {
                        pending = pending
                            .into_iter()
                            .zip(accepted)
                            .filter(|(_, ok)| !ok)
                            .map(|(u, _)| u)
                            .collect();
                    }
                    if pending.is_empty() {
                        break;
                    }
                }
            }
        }))
        .await;
        let wait = next_due_ms.map_or(Duration::from_secs(1), |due| {
            Duration::from_millis(due.saturating_sub(world.clock().now_ms()).max(1))
        });
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = arrival => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Every live agent heartbeats every `every_ms`, all at once.
async fn run_heartbeats(
    world: MemoryWorld,
    fleet: Arc<Mutex<Fleet>>,
    every_ms: u64,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(every_ms)) => {}
        }
        heartbeat_once(&world, &fleet, every_ms).await;
    }
}

/// One heartbeat of every live agent, each written as the agent writes it: when it changed or
/// is due ([`AgentHeartbeat::is_due`]).
async fn heartbeat_once(world: &MemoryWorld, fleet: &Mutex<Fleet>, every_ms: u64) {
    let now = world.clock().now_ms();
    let reports: Vec<(u32, AgentHeartbeat)> = {
        let fleet = lock(fleet);
        fleet
            .agents
            .iter()
            .enumerate()
            .filter(|(n, _)| !fleet.dead.contains(&(*n as u32)))
            .map(|(n, agent)| {
                let mut running: Vec<TaskId> = agent.running.keys().cloned().collect();
                running.sort();
                let used = agent
                    .running
                    .values()
                    .fold(Resources::ZERO, |sum, (r, _)| sum.saturating_add(*r));
                (
                    n as u32,
                    AgentHeartbeat {
                        at_ms: now,
                        running_task_ids: running,
                        used,
                    },
                )
            })
            .filter(|(n, report)| {
                report.is_due(fleet.agents[*n as usize].last_report.as_ref(), every_ms)
            })
            .collect()
    };
    let store = world.agents();
    let written = futures::future::join_all(reports.into_iter().map(|(n, report)| {
        let store = store.clone();
        async move {
            let ok = store.report_heartbeat(&agent_id(n), &report).await.is_ok();
            (n, ok.then_some(report))
        }
    }))
    .await;
    let mut fleet = lock(fleet);
    for (n, report) in written {
        fleet.agents[n as usize].last_report = report;
    }
}

/// The shape's agents that die, at their time: no heartbeat, no work, from then on.
async fn run_deaths(
    world: MemoryWorld,
    fleet: Arc<Mutex<Fleet>>,
    shape: Shape,
    stop: CancellationToken,
) {
    if shape.agent_deaths == 0 {
        return;
    }
    tokio::select! {
        _ = stop.cancelled() => return,
        _ = tokio::time::sleep(Duration::from_millis(shape.death_after_ms)) => {}
    }
    let mut fleet = lock(&fleet);
    // The busiest agents die: the most work to replace.
    let mut by_load: Vec<(usize, u32)> = fleet
        .agents
        .iter()
        .enumerate()
        .map(|(n, a)| (a.running.len(), n as u32))
        .collect();
    by_load.sort_unstable_by(|a, b| b.cmp(a));
    for (_, n) in by_load.into_iter().take(shape.agent_deaths as usize) {
        fleet.dead.insert(n);
    }
    tracing::info!(
        agents = shape.agent_deaths,
        at_ms = world.clock().now_ms(),
        "simulated agents died"
    );
}

/// Idle ticks after the load, alone: the average requests and units of a tick (over
/// [`titus_control::scheduler::REDISPATCH_EVERY_TICKS`] ticks, so the redispatch read counts
/// its share) and its projected ms, after one tick that takes the lease.
async fn measure_idle(
    cp: &ControlPlane<MemoryPorts>,
    world: &MemoryWorld,
    ticks: u32,
) -> Result<(MeterSnapshot, f64), SimError> {
    let ticks = ticks.max(1);
    let owner = "sim-idle".to_owned();
    let first = tick(
        cp,
        TickInput {
            owner: owner.clone(),
            ..TickInput::default()
        },
    )
    .await?;
    let mut input = TickInput {
        owner,
        started_at_ms: Some(first.started_at_ms),
        iteration: first.iteration,
    };
    let before = world.meter();
    let began = tokio::time::Instant::now();
    for _ in 0..ticks {
        let summary = with_compute(tick(cp, input.clone())).await?;
        input.iteration = summary.iteration;
    }
    let took_ms = began.elapsed().as_secs_f64() * 1000.0 / f64::from(ticks);
    Ok((
        per(&world.meter().since(&before), f64::from(ticks)),
        took_ms,
    ))
}

/// A snapshot's counts divided by `n`.
pub fn per(snapshot: &MeterSnapshot, n: f64) -> MeterSnapshot {
    let n = n.max(f64::MIN_POSITIVE);
    MeterSnapshot {
        read_request_units: snapshot.read_request_units / n,
        write_request_units: snapshot.write_request_units / n,
        index_write_request_units: snapshot.index_write_request_units / n,
        requests: snapshot
            .requests
            .iter()
            .map(|(k, v)| (k.clone(), (*v as f64 / n).round() as u64))
            .collect(),
        sqs_billed_requests: (snapshot.sqs_billed_requests as f64 / n).round() as u64,
        faults_injected: BTreeMap::new(),
    }
}

/// The heartbeats' cost per agent per 30 s, measured over 30 s of heartbeats alone.
async fn measure_heartbeats(
    world: &MemoryWorld,
    fleet: &Mutex<Fleet>,
    every_ms: u64,
) -> MeterSnapshot {
    let before = world.meter();
    let rounds = (30_000 / every_ms.max(1)).max(1);
    for _ in 0..rounds {
        // (The clock follows tokio's paused one: the interval passes at once.)
        tokio::time::sleep(Duration::from_millis(every_ms)).await;
        heartbeat_once(world, fleet, every_ms).await;
    }
    let used = world.meter().since(&before);
    let live = {
        let fleet = lock(fleet);
        fleet.agents.len().saturating_sub(fleet.dead.len()).max(1)
    };
    per(&used, live as f64)
}

/// The invariants on the records: no agent holds more than it has, every placeable live task
/// Started, none placed on a dead agent still counted as running.
fn check_records(world: &MemoryWorld, shape: &Shape, tasks: &[titus_core::Task]) -> Vec<String> {
    let mut violations = Vec::new();
    for agent in world.all_agents() {
        if !agent.allocated.fits_within(&agent.capacity) {
            violations.push(format!(
                "agent {} allocated {:?} over its capacity {:?}",
                agent.id, agent.allocated, agent.capacity
            ));
        }
    }
    // Per agent, the tasks the records hold there.
    let mut held: HashMap<&str, Resources> = HashMap::new();
    for task in tasks.iter().filter(|t| t.state() != TaskState::Finished) {
        if let Some(agent) = task.agent_id.as_deref() {
            let sum = held.entry(agent).or_insert(Resources::ZERO);
            *sum = sum.saturating_add(Resources::of_container(&task.resources));
        }
    }
    let capacity = capacity(shape);
    for (agent, sum) in held {
        if !sum.fits_within(&capacity) {
            violations.push(format!(
                "the records place {sum:?} on {agent}, over {capacity:?}"
            ));
        }
    }
    violations
}

/// Submit → Launched and submit → Started of every task that got there: from its job's
/// submission for a job's first tasks, from its own creation for a replacement.
fn latencies(
    submitted: &HashMap<String, u64>,
    tasks: &[titus_core::Task],
) -> (Percentile, Percentile) {
    let when = |t: &titus_core::Task, state: TaskState| {
        let submitted = match t.resubmit_number {
            0 => submitted.get(t.job_id.as_str()).copied()?,
            _ => t.created_at_ms,
        };
        t.status_history
            .iter()
            .chain(std::iter::once(&t.status))
            .find(|s| s.state == state)
            .map(|s| s.timestamp_ms.saturating_sub(submitted) as f64)
    };
    (
        Percentile::of(
            tasks
                .iter()
                .filter_map(|t| when(t, TaskState::Launched))
                .collect(),
        ),
        Percentile::of(
            tasks
                .iter()
                .filter_map(|t| when(t, TaskState::Started))
                .collect(),
        ),
    )
}
