//! Placement throughput: decisions per second of the indexed planner on one thread at 500,
//! 5,000 and 20,000 agents, beside the exhaustive planner (which ranks every feasible agent) on
//! the same inputs, then criterion's statistics for smaller plans.
//!
//! The workload is generated deterministically: agents in 3 zones, 5 machine types (one with
//! GPUs) and 4 machine groups, 97% active, each up to 60% allocated and running a few tasks;
//! 20 pending tasks per agent from jobs of 1 to 100 tasks with a mix of hard and soft
//! constraints. Demand exceeds free capacity, as in a burst, so a share of the tasks is left
//! unplaced with reasons; those decisions count too.

use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion};
use titus_core::job::Constraint;
use titus_core::{AgentState, JobId, Resources, TaskId};
use titus_placement::{plan, plan_exhaustive, AgentView, Plan, Strategy, TaskRequest};

/// Pending tasks per agent in every generated workload.
const TASKS_PER_AGENT: usize = 20;

/// splitmix64: a small deterministic generator, so the workload is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'t, T>(&mut self, items: &'t [T]) -> &'t T {
        &items[self.below(items.len())]
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];
const GROUPS: [&str; 4] = ["web", "batch", "critical", "ml"];
/// Machine types: name, CPUs, memory in GB, GPUs.
const TYPES: [(&str, u64, u64, u64); 5] = [
    ("m5.4xlarge", 16, 64, 0),
    ("r5.4xlarge", 16, 128, 0),
    ("c5.9xlarge", 36, 72, 0),
    ("m5.12xlarge", 48, 192, 0),
    ("p3.8xlarge", 32, 244, 4),
];

fn job_id(j: usize) -> JobId {
    JobId::from_string(format!("job-{j:06}"))
}

/// A cluster of `n` agents and `n * TASKS_PER_AGENT` pending tasks.
fn workload(n: usize, seed: u64) -> (Vec<AgentView>, Vec<TaskRequest>) {
    let mut rng = Rng(seed);
    let task_count = n * TASKS_PER_AGENT;
    let jobs = task_count / 50;

    let agents = (0..n)
        .map(|i| {
            // GPU machines are a few percent of the fleet.
            let kinds = if rng.chance(5) { 5 } else { 4 };
            let (machine_type, cpus, memory_gb, gpus) = *rng.pick(&TYPES[..kinds]);
            let capacity = Resources {
                cpu_millis: cpus * 1000,
                memory_mb: memory_gb * 1024,
                disk_mb: 500_000,
                network_mbps: 10_000,
                gpu: gpus,
            };
            let share = rng.below(61) as u64;
            let mut job_task_counts = BTreeMap::new();
            for _ in 0..rng.below(6) {
                *job_task_counts.entry(job_id(rng.below(jobs))).or_insert(0) += 1;
            }
            AgentView {
                id: format!("i-{i:08x}"),
                zone: rng.pick(&ZONES).to_string(),
                machine_type: machine_type.to_owned(),
                machine_group: rng.pick(&GROUPS).to_string(),
                state: match rng.below(100) {
                    0 => AgentState::Lost,
                    1 | 2 => AgentState::Draining,
                    _ => AgentState::Active,
                },
                capacity,
                allocated: Resources {
                    cpu_millis: capacity.cpu_millis * share / 100,
                    memory_mb: capacity.memory_mb * share / 100,
                    disk_mb: capacity.disk_mb * share / 100,
                    network_mbps: capacity.network_mbps * share / 100,
                    gpu: 0,
                },
                job_task_counts,
                exclusive_jobs: BTreeSet::new(),
            }
        })
        .collect::<Vec<_>>();

    let mut tasks = Vec::with_capacity(task_count);
    let mut j = 0;
    while tasks.len() < task_count {
        let size = (1 + rng.below(100)).min(task_count - tasks.len());
        let resources = Resources {
            cpu_millis: *rng.pick(&[250, 500, 1000, 2000, 4000]),
            memory_mb: *rng.pick(&[512, 1024, 2048, 4096, 8192]),
            disk_mb: 10_000,
            network_mbps: 128,
            gpu: u64::from(rng.chance(1)),
        };
        let (hard, soft, size) = match rng.below(100) {
            0..=39 => (vec![], vec![], size),
            40..=54 => (vec![Constraint::UniqueHost], vec![], size),
            55..=64 => (
                vec![Constraint::ZoneBalance],
                vec![Constraint::UniqueHost],
                size,
            ),
            65..=74 => (
                vec![Constraint::AvailabilityZone(rng.pick(&ZONES).to_string())],
                vec![],
                size,
            ),
            75..=79 => (
                vec![Constraint::MachineType(TYPES[rng.below(4)].0.to_owned())],
                vec![],
                size,
            ),
            80..=82 => (vec![Constraint::ExclusiveHost], vec![], size.min(4)),
            83..=84 => (
                vec![Constraint::MachineId(rng.pick(&agents).id.clone())],
                vec![],
                1,
            ),
            85..=92 => (
                vec![],
                vec![Constraint::ZoneBalance, Constraint::UniqueHost],
                size,
            ),
            _ => (
                vec![],
                vec![Constraint::MachineGroup(rng.pick(&GROUPS).to_string())],
                size,
            ),
        };
        for t in 0..size {
            tasks.push(TaskRequest {
                task_id: TaskId::from_string(format!("job-{j:06}-task-{t:03}")),
                job_id: job_id(j),
                resources,
                hard: hard.clone(),
                soft: soft.clone(),
            });
        }
        j += 1;
    }
    // Jobs' tasks arrive interleaved, as a queue ordered by age would have them.
    for i in (1..tasks.len()).rev() {
        tasks.swap(i, rng.below(i + 1));
    }
    (agents, tasks)
}

type Planner = fn(&[TaskRequest], &[AgentView], Strategy) -> Plan;

/// How long one plan took.
#[derive(Debug, Clone, Copy)]
struct Timing {
    wall: Duration,
    /// Time the planning thread was on a CPU, where the OS tells; these machines are shared, so
    /// wall time alone would also measure whatever else runs.
    on_cpu: Option<Duration>,
}

impl Timing {
    /// The time rates are computed from: on-CPU time when known, else wall time.
    fn measured(&self) -> Duration {
        self.on_cpu.unwrap_or(self.wall)
    }
}

/// The calling thread's time on a CPU so far, from Linux's schedstat; `None` elsewhere.
fn thread_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// Runs the planner `runs` times and returns the fastest run's time per plan, and the plan.
/// A run repeats a quick plan until it has taken 100 ms, since the kernel updates on-CPU time
/// only at scheduler ticks, a few milliseconds apart.
fn time(
    planner: Planner,
    strategy: Strategy,
    tasks: &[TaskRequest],
    agents: &[AgentView],
    runs: usize,
) -> (Timing, Plan) {
    let mut fastest: Option<Timing> = None;
    let mut result = Plan::default();
    for _ in 0..runs {
        let cpu_before = thread_cpu_time();
        let started = Instant::now();
        let mut plans = 0u32;
        while plans == 0 || started.elapsed() < Duration::from_millis(100) {
            result = planner(black_box(tasks), black_box(agents), strategy);
            plans += 1;
        }
        let timing = Timing {
            wall: started.elapsed() / plans,
            on_cpu: thread_cpu_time()
                .zip(cpu_before)
                .map(|(after, before)| after.saturating_sub(before) / plans),
        };
        if fastest.is_none_or(|f| timing.measured() < f.measured()) {
            fastest = Some(timing);
        }
    }
    let timing = fastest.unwrap_or(Timing {
        wall: Duration::ZERO,
        on_cpu: None,
    });
    (timing, result)
}

fn report(name: &str, agents: usize, tasks: usize, timing: Timing, p: &Plan) -> f64 {
    let rate = tasks as f64 / timing.measured().as_secs_f64();
    let used: BTreeSet<&str> = p.placements.iter().map(|x| x.agent_id.as_str()).collect();
    let cpu_ms = timing
        .on_cpu
        .map_or("?".to_owned(), |d| format!("{:.1}", d.as_secs_f64() * 1e3));
    println!(
        "{name:<10} agents={agents} tasks={tasks} decisions/s={rate:.0} us/decision={:.2} \
         cpu_ms={cpu_ms} wall_ms={:.1} placed={} unplaced={} agents_used={}",
        1e6 / rate,
        timing.wall.as_secs_f64() * 1e3,
        p.placements.len(),
        p.unplaced.len(),
        used.len(),
    );
    rate
}

/// The plain decisions/s numbers, on one thread.
fn decision_rates(sizes: &[usize], baseline_tasks: usize, runs: usize) {
    println!(
        "# one thread, best of {runs} runs; a decision is a task placed or left unplaced; \
         rates per second on a CPU (wall time where the OS does not say)"
    );
    for &n in sizes {
        let (agents, tasks) = workload(n, 7);
        let (timing, p) = time(plan, Strategy::BinPack, &tasks, &agents, runs);
        report("bin-pack", n, tasks.len(), timing, &p);
    }
    for &n in sizes {
        let (agents, tasks) = workload(n, 7);
        let (timing, p) = time(plan, Strategy::Spread, &tasks, &agents, 1);
        report("spread", n, tasks.len(), timing, &p);
    }
    // What every plan pays before its first decision: reading the agents into the engine's
    // view and building the index.
    for &n in sizes {
        let (agents, _) = workload(n, 7);
        let (timing, _) = time(plan, Strategy::BinPack, &[], &agents, runs);
        println!(
            "setup      agents={n} tasks=0 ms={:.2}",
            timing.measured().as_secs_f64() * 1e3
        );
    }
    println!(
        "# baseline: the exhaustive planner (ranks every feasible agent) beside the indexed one, \
         bin-packing the same inputs cut to {baseline_tasks} tasks"
    );
    for &n in sizes {
        let (agents, mut tasks) = workload(n, 7);
        tasks.truncate(baseline_tasks);
        let (fast, p) = time(plan, Strategy::BinPack, &tasks, &agents, runs);
        let indexed = report("indexed", n, tasks.len(), fast, &p);
        let (slow, p) = time(plan_exhaustive, Strategy::BinPack, &tasks, &agents, 1);
        let exhaustive = report("exhaustive", n, tasks.len(), slow, &p);
        println!(
            "speedup agents={n} tasks={}: {:.1}x",
            tasks.len(),
            indexed / exhaustive
        );
    }
}

fn criterion_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("plan");
    group.sample_size(10);
    for n in [500, 5_000] {
        let (agents, mut tasks) = workload(n, 11);
        tasks.truncate(2_000);
        group.bench_with_input(BenchmarkId::new("indexed", n), &n, |b, _| {
            b.iter(|| plan(black_box(&tasks), black_box(&agents), Strategy::BinPack))
        });
    }
    let (agents, mut tasks) = workload(500, 11);
    tasks.truncate(2_000);
    group.bench_function(BenchmarkId::new("exhaustive", 500), |b| {
        b.iter(|| plan_exhaustive(black_box(&tasks), black_box(&agents), Strategy::BinPack))
    });
    group.finish();
}

criterion_group!(benches, criterion_benches);

fn main() {
    // `cargo bench` passes `--bench`; without it (`cargo test --benches`) this is a smoke run.
    if std::env::args().any(|a| a == "--bench") {
        decision_rates(&[500, 5_000, 20_000], 2_000, 3);
    } else {
        decision_rates(&[50], 100, 1);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
