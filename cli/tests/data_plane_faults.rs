//! Fault injection end to end: the whole local stack with three agents in processes of their own
//! and real containers, while the data plane is hurt, in each round:
//!
//! - a task stuck in StartInitiated on an image pull that never finishes (a registry that
//!   accepts connections and never answers), its launch in flight on its agent;
//! - that agent SIGKILLed and started again within the heartbeat timeout (its containers go on),
//!   and once the records have finished the stuck task, restarted (SIGTERM) as launches arrive;
//!   then the registry answers again, so that a late launch of that task would start a container;
//! - another agent frozen (SIGSTOP) past the lost timeout as tasks are placed on it, and let go:
//!   it must be fenced and come back as its next incarnation;
//! - an agent frozen as a task is placed on it, past the Launched timeout (the task is finished
//!   as stuck and replaced) but within the heartbeat timeout.
//!
//! Docker's own events, recorded for the whole run, are then held against the task records; three
//! counts must be zero:
//!
//! 1. late containers: a container created, or still running, for a task more than its kill grace
//!    period and [`SLACK_MS`] after the task's Finished record;
//! 2. double slots: two containers of one slot (job and task index) running at once for longer
//!    than that;
//! 3. over capacity: an agent running containers whose memory adds up to more than it offers.
//!
//! Time in which an agent's process could not act (killed, stopping, frozen) does not count against
//! the containers that agent should have stopped: nothing on a host can stop them then.
//!
//! `TITUS_FAULT_ROUNDS` (default 1) repeats the workload and the faults on the same stack, and the
//! totals are printed at the end. A round lasts at least the agent queue's visibility timeout
//! (60 s): what a crash left in flight must come back, and be dealt with, within it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{json, Value};
use support::{Stack, StackOptions};
use titus_core::{AgentState, Job, JobState, Resources, Task, TaskReason, TaskState};

const AGENTS: u32 = 3;
/// Four tasks fill an agent, so placement and the agents' own checks are at their limit.
const AGENT_MEMORY_MB: u64 = 2_048;
const TASK_MEMORY_MB: u64 = 512;
const HEARTBEAT_TIMEOUT_MS: u64 = 8_000;
const LAUNCHED_TIMEOUT_MS: u64 = 3_000;
const START_INITIATED_TIMEOUT_MS: u64 = 8_000;
const RECONCILE_INTERVAL_MS: u64 = 1_000;
/// Every job's kill grace period; `sleep` as a container's PID 1 ignores SIGTERM, so each kill
/// takes all of it.
const KILL_GRACE_MS: u64 = 2_000;
/// How long after its grace period a container may still run before it counts as late: an agent
/// hears of a kill within its long poll (1 s), of its fence within a heartbeat (1 s), and of a
/// stray container within a reconciler run (1 s) and the stray-kill back-off (1 s); the last
/// second is Docker's and the emulator's latency on a machine of two shared cores.
const SLACK_MS: u64 = 5_000;
/// Frozen this long, an agent is declared lost (the heartbeat timeout, then a reconciler run)
/// well before it runs again.
const LOST_PAUSE: Duration = Duration::from_millis(HEARTBEAT_TIMEOUT_MS + 4_000);
/// Frozen this long, a task placed on the agent as it froze is stuck in Launched (the Launched
/// timeout and a reconciler run), while the agent is not yet lost (the heartbeat timeout).
const LAUNCH_PAUSE: Duration = Duration::from_millis(5_000);
/// Injected in each round: a stuck image pull, a crash, a restart, a freeze past the lost timeout
/// and a freeze between a launch and its start.
const FAULTS_PER_ROUND: u32 = 5;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn options() -> StackOptions {
    let env = |pairs: &[(&str, u64)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_string()))
            .collect()
    };
    StackOptions {
        agents: AGENTS,
        agent_memory_mb: AGENT_MEMORY_MB,
        heartbeat_timeout_ms: HEARTBEAT_TIMEOUT_MS,
        reconcile_interval_ms: RECONCILE_INTERVAL_MS,
        control_env: env(&[
            ("TITUS_STATUS_LAUNCHED_TIMEOUT_MS", LAUNCHED_TIMEOUT_MS),
            (
                "TITUS_STATUS_START_INITIATED_BATCH_TIMEOUT_MS",
                START_INITIATED_TIMEOUT_MS,
            ),
            (
                "TITUS_STATUS_START_INITIATED_SERVICE_TIMEOUT_MS",
                START_INITIATED_TIMEOUT_MS,
            ),
            ("TITUS_STATUS_KILL_INITIATED_TIMEOUT_MS", 20_000),
            ("TITUS_STATUS_UNREPORTED_TASK_TIMEOUT_MS", 5_000),
            ("TITUS_STATUS_STRAY_KILL_BACKOFF_MS", 1_000),
        ]),
        ..StackOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_follow_the_records_through_agent_crashes_restarts_freezes_and_stuck_tasks() {
    let rounds: u32 = std::env::var("TITUS_FAULT_ROUNDS").map_or(1, |v| {
        v.parse()
            .expect("TITUS_FAULT_ROUNDS should be a whole number of rounds")
    });
    let mut stack = Stack::start(options()).await;
    let events = DockerEvents::start(&stack.stage, stack.log_dir());
    let registry = hanging_registry().await;

    let mut total = Findings::default();
    let (mut tasks, mut faults) = (0, 0);
    for round in 1..=rounds {
        let report = run_round(&mut stack, &events, &registry, round).await;
        println!(
            "data-plane faults round {round}/{rounds}: {} tasks={} faults={} (containers={}, \
             finished: {})",
            report.findings.counts(),
            report.tasks,
            report.faults,
            report.containers,
            report.reasons
        );
        println!("  {}", report.findings.closest());
        for line in report.findings.details() {
            println!("  {line}");
        }
        tasks += report.tasks;
        faults += report.faults;
        total.extend(report.findings);
    }
    println!(
        "data-plane faults total over {rounds} rounds: {} tasks={tasks} faults={faults}",
        total.counts()
    );
    println!("  {}", total.closest());

    assert!(
        total.is_empty(),
        "the containers did not follow the records ({}):\n{}\nlogs in {}",
        total.counts(),
        total.details().join("\n"),
        stack.log_dir().display()
    );
}

/// What one round found.
struct RoundReport {
    findings: Findings,
    tasks: usize,
    faults: u32,
    containers: usize,
    /// How the round's tasks finished, as `reason=count`.
    reasons: String,
}

/// An interval in which an agent's process could not act.
#[derive(Debug, Clone)]
struct Outage {
    agent_id: String,
    from_ms: u64,
    to_ms: u64,
}

async fn run_round(
    stack: &mut Stack,
    events: &DockerEvents,
    registry: &str,
    round: u32,
) -> RoundReport {
    let mut jobs = Vec::new();
    let mut outages = Vec::new();

    let service = submit(
        stack,
        descriptor(
            "faults-service",
            &["sleep", "3600"],
            json!({"service": {"capacity": {"min": 3, "desired": 3, "max": 3}}}),
        ),
    );
    jobs.push(service.clone());
    jobs.push(submit(stack, sleeping_batch("faults-wave-1", 3, 12)));
    // An image from a registry that accepts connections and never answers: the pull hangs and
    // the task stays StartInitiated, its launch in flight, until the reconciler finishes it.
    let stuck_image = format!("{registry}/titus-stuck-{round}");
    let stuck_pull = submit(stack, {
        let mut stuck = sleeping_batch("faults-stuck-pull", 1, 30);
        stuck["container"]["image"] = json!({"name": stuck_image, "tag": "latest"});
        stuck
    });
    jobs.push(stuck_pull.clone());
    wait_service_runs(stack, &service).await;
    let pulling = wait_pulling(stack, &stuck_pull).await;

    // 1. The agent pulling that image crashes (SIGKILL; its containers go on) and starts again
    //    within the heartbeat timeout: it takes its containers over again, and finds the
    //    launches placed on it meanwhile. The launch it was pulling for stays in flight until
    //    the queue's visibility timeout (60 s); its task is finished meanwhile, and the kill
    //    goes to the agent's new process.
    let crashed = agent_number(stack, &pulling.agent_id.clone().unwrap());
    let from_ms = now_ms();
    stack.crash_agent(crashed);
    jobs.push(submit(stack, sleeping_batch("faults-wave-2", 3, 12)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack.restart_agent(crashed);
    outages.push(Outage {
        agent_id: stack.agent_id(crashed),
        from_ms,
        to_ms: now_ms(),
    });
    wait_heartbeat_after(stack, crashed, now_ms()).await;
    wait_service_runs(stack, &service).await;
    stack
        .eventually(
            "the task whose launch the crash left in flight finishes",
            || {
                let task = stack.cli_json::<Task>(&["task", "get", pulling.id.as_ref()]);
                std::future::ready(task.state() == TaskState::Finished)
            },
        )
        .await;
    // Its kill reaches the agent's new process.
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    // 2. The same agent is restarted (SIGTERM leaves its containers running) as launches arrive,
    //    before its crash's launch comes back: what the process learnt (that task's kill) is
    //    gone with it. Then the registry answers again, so that a launch of that task would
    //    now start a container.
    let restarted = crashed;
    jobs.push(submit(stack, sleeping_batch("faults-wave-3", 2, 8)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let from_ms = now_ms();
    stack.stop_agent(restarted);
    stack.restart_agent(restarted);
    outages.push(Outage {
        agent_id: stack.agent_id(restarted),
        from_ms,
        to_ms: now_ms(),
    });
    wait_heartbeat_after(stack, restarted, now_ms()).await;
    wait_service_runs(stack, &service).await;
    let _recovered = ImageTag::new(support::IMAGE, &format!("{stuck_image}:latest"));

    // 3. An agent with running tasks freezes past the lost timeout, as tasks are placed: it is
    //    declared lost and its tasks replaced; let go, it must stop them, start none of the
    //    launches it finds, and come back as its next incarnation.
    let frozen = busiest_agent(stack, &jobs, Some(restarted));
    let frozen_id = stack.agent_id(frozen);
    let incarnation = agent_record(stack, &frozen_id).await.incarnation;
    let from_ms = now_ms();
    stack.pause_agent(frozen);
    jobs.push(submit(stack, sleeping_batch("faults-wave-5", 3, 12)));
    tokio::time::sleep(LOST_PAUSE).await;
    stack.resume_agent(frozen);
    outages.push(Outage {
        agent_id: frozen_id.clone(),
        from_ms,
        to_ms: now_ms(),
    });
    stack
        .eventually(
            &format!("agent {frozen_id} is fenced and registers as incarnation {incarnation} + 1"),
            || async {
                stack.agents().await.iter().any(|a| {
                    a.id == frozen_id
                        && a.state == AgentState::Active
                        && a.incarnation > incarnation
                })
            },
        )
        .await;
    wait_service_runs(stack, &service).await;

    // 4. An agent freezes as a task is placed on it, past the Launched timeout but within the
    //    heartbeat timeout: the task is finished as stuck and replaced there, and on waking the
    //    agent finds both launches and the first one's kill in its queue.
    let paused = roomiest_agent(stack).await;
    let paused_id = stack.agent_id(paused);
    let from_ms = now_ms();
    stack.pause_agent(paused);
    let pinned = submit(
        stack,
        pinned(sleeping_batch("faults-pinned", 1, 5), &paused_id),
    );
    jobs.push(pinned.clone());
    tokio::time::sleep(LAUNCH_PAUSE).await;
    stack.resume_agent(paused);
    outages.push(Outage {
        agent_id: paused_id,
        from_ms,
        to_ms: now_ms(),
    });
    stack
        .eventually("the pinned job finishes", || async {
            stack.job(&pinned).status.state == JobState::Finished
        })
        .await;

    // Settle: every job killed and finished, every container stopped.
    for job in &jobs {
        stack.cli(&["job", "kill", job]);
    }
    stack
        .eventually("every job of the round finishes", || {
            let done = jobs
                .iter()
                .all(|job| stack.job(job).status.state == JobState::Finished);
            std::future::ready(done)
        })
        .await;
    let agent_ids: Vec<String> = (1..=AGENTS).map(|n| stack.agent_id(n)).collect();
    wait_commands_handled(stack, &agent_ids).await;
    wait_no_running_containers(&agent_ids, Duration::from_secs(30)).await;
    events.sync();

    let end_ms = now_ms();
    let tasks: Vec<Task> = jobs.iter().flat_map(|job| stack.tasks(job)).collect();
    // The faults took effect: tasks were finished as stuck, and as lost.
    for reason in [TaskReason::StuckInState, TaskReason::Lost] {
        assert!(
            tasks
                .iter()
                .any(|t| t.state() == TaskState::Finished && t.status.reason_code == Some(reason)),
            "no task of the round finished as {reason}: {}",
            reasons(&tasks)
        );
    }
    let capacity_mb: HashMap<String, u64> = stack
        .agents()
        .await
        .into_iter()
        .map(|a| (a.id, a.capacity.memory_mb))
        .collect();
    let job_ids: HashSet<&str> = jobs.iter().map(String::as_str).collect();
    let containers: Vec<ContainerLife> = events
        .containers()
        .into_iter()
        .filter(|c| job_ids.contains(c.job_id.as_str()))
        .collect();
    let facts: HashMap<String, TaskFacts> = tasks
        .iter()
        .map(|t| (t.id.to_string(), TaskFacts::of(t)))
        .collect();
    let findings = analyse(&Round {
        containers: &containers,
        tasks: &facts,
        outages: &outages,
        capacity_mb: &capacity_mb,
        end_ms,
    });
    RoundReport {
        findings,
        tasks: tasks.len(),
        faults: FAULTS_PER_ROUND,
        containers: containers.len(),
        reasons: reasons(&tasks),
    }
}

// ---- the workload ------------------------------------------------------------------------------

fn descriptor(app: &str, command: &[&str], kind: Value) -> Value {
    let mut descriptor = json!({
        "owner": {"teamEmail": "faults@example.com"},
        "applicationName": app,
        "container": {
            "image": {"name": "titus-demo/busybox", "tag": "latest"},
            "command": command,
            "resources": {"cpu": 0.5, "memoryMB": TASK_MEMORY_MB},
            "killGracePeriodSec": KILL_GRACE_MS / 1_000
        }
    });
    for (key, value) in kind.as_object().unwrap() {
        descriptor[key] = value.clone();
    }
    descriptor
}

fn sleeping_batch(app: &str, size: u32, sleep_secs: u32) -> Value {
    descriptor(
        app,
        &["sleep", &sleep_secs.to_string()],
        json!({"batch": {"size": size, "retryPolicy": {"immediate": {"retries": 3}}}}),
    )
}

/// The job, to run on agent `agent_id` only.
fn pinned(mut descriptor: Value, agent_id: &str) -> Value {
    descriptor["container"]["hardConstraints"] = json!({"constraints": {"machineId": agent_id}});
    descriptor
}

fn submit(stack: &Stack, descriptor: Value) -> String {
    let run = stack.cli_with(
        &["-o", "json", "job", "submit", "--file", "-"],
        Some(&descriptor.to_string()),
    );
    assert_eq!(run.code, 0, "submit: {}", run.stderr);
    let job: Job = serde_json::from_str(&run.stdout).unwrap();
    job.id.to_string()
}

async fn wait_service_runs(stack: &Stack, service: &str) {
    stack
        .eventually("the service runs its 3 tasks", || {
            std::future::ready(stack.tasks_in(service, TaskState::Started).len() == 3)
        })
        .await;
}

async fn wait_heartbeat_after(stack: &Stack, n: u32, after_ms: u64) {
    let id = stack.agent_id(n);
    stack
        .eventually(&format!("agent {id} heartbeats again"), || async {
            let agent = agent_record(stack, &id).await;
            agent.state == AgentState::Active && agent.heartbeat_at_ms > after_ms
        })
        .await;
}

async fn agent_record(stack: &Stack, id: &str) -> titus_core::Agent {
    stack
        .agents()
        .await
        .into_iter()
        .find(|a| a.id == id)
        .unwrap_or_else(|| panic!("agent {id} has no record"))
}

/// Waits until the job's task is StartInitiated (its agent pulls its image), and returns it.
async fn wait_pulling(stack: &Stack, job: &str) -> Task {
    let mut pulling = None;
    stack
        .eventually(
            "the task of the image that cannot be pulled is StartInitiated",
            || {
                pulling = stack
                    .tasks_in(job, TaskState::StartInitiated)
                    .into_iter()
                    .next();
                std::future::ready(pulling.is_some())
            },
        )
        .await;
    pulling.unwrap()
}

/// Agent `n`'s number, from its id.
fn agent_number(stack: &Stack, agent_id: &str) -> u32 {
    (1..=AGENTS)
        .find(|&n| stack.agent_id(n) == agent_id)
        .unwrap_or_else(|| panic!("{agent_id:?} is not an agent of the stack"))
}

/// A local tag of an image, removed (only the tag) when dropped.
struct ImageTag(String);

impl ImageTag {
    fn new(image: &str, tag: &str) -> ImageTag {
        let out = Command::new("docker")
            .args(["tag", image, tag])
            .output()
            .unwrap();
        assert!(out.status.success(), "docker tag {image} {tag}: {out:?}");
        ImageTag(tag.to_owned())
    }
}

impl Drop for ImageTag {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", &self.0]).output();
    }
}

/// The agent running the most of the round's tasks, other than `besides` when another runs any.
fn busiest_agent(stack: &Stack, jobs: &[String], besides: Option<u32>) -> u32 {
    let mut running: BTreeMap<String, usize> = BTreeMap::new();
    for job in jobs {
        for task in stack.tasks_in(job, TaskState::Started) {
            *running
                .entry(task.agent_id.unwrap_or_default())
                .or_default() += 1;
        }
    }
    let count = |n: u32| running.get(&stack.agent_id(n)).copied().unwrap_or(0);
    let mut ranked: Vec<u32> = (1..=AGENTS).collect();
    ranked.sort_by_key(|&n| (std::cmp::Reverse(count(n)), n));
    ranked
        .iter()
        .copied()
        .find(|&n| Some(n) != besides && count(n) > 0)
        .unwrap_or(ranked[0])
}

/// The active agent with the most memory left, so that a task pinned there is placed at once.
async fn roomiest_agent(stack: &Stack) -> u32 {
    let agents = stack.agents().await;
    let free = |n: u32| {
        agents
            .iter()
            .find(|a| a.id == stack.agent_id(n) && a.state == AgentState::Active)
            .map_or(0, |a| {
                a.capacity.memory_mb.saturating_sub(a.allocated.memory_mb)
            })
    };
    (1..=AGENTS).max_by_key(|&n| (free(n), n)).unwrap()
}

/// Waits until no agent has a command waiting or in flight, twice in a row: a command an agent
/// was working on when it stopped comes back after the queue's visibility timeout (60 s), and
/// what the agent does with it then belongs to this round.
async fn wait_commands_handled(stack: &Stack, agent_ids: &[String]) {
    let (aws, names) = stack.aws().await;
    let mut urls = Vec::new();
    for id in agent_ids {
        let url = aws
            .sqs
            .get_queue_url()
            .queue_name(names.agent_queue(id))
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        urls.push(url);
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut quiet = 0;
    while quiet < 2 && Instant::now() < deadline {
        let mut waiting = 0;
        for url in &urls {
            let attributes = aws
                .sqs
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(
                    aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages,
                )
                .attribute_names(
                    aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
                )
                .send()
                .await
                .unwrap();
            waiting += attributes
                .attributes
                .unwrap_or_default()
                .values()
                .map(|v| v.parse::<u64>().unwrap_or(0))
                .sum::<u64>();
        }
        quiet = if waiting == 0 { quiet + 1 } else { 0 };
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn wait_no_running_containers(agent_ids: &[String], patience: Duration) {
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        let running = agent_ids.iter().any(|id| {
            let out = Command::new("docker")
                .args(["ps", "-q", "--filter", "status=running", "--filter"])
                .arg(format!("label=titus.agent.id={id}"))
                .output()
                .expect("running docker ps");
            !String::from_utf8_lossy(&out.stdout).trim().is_empty()
        });
        if !running {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn reasons(tasks: &[Task]) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for task in tasks {
        let reason = match (task.state(), task.status.reason_code) {
            (TaskState::Finished, Some(reason)) => reason.to_string(),
            (state, _) => state.to_string(),
        };
        *counts.entry(reason).or_default() += 1;
    }
    counts
        .iter()
        .map(|(reason, n)| format!("{reason}={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A registry that accepts connections and never answers; returns its `host:port`.
async fn hanging_registry() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    address.to_string()
}

// ---- Docker's events ---------------------------------------------------------------------------

/// `docker events` for the task containers, from before the first round to the end, in a file.
struct DockerEvents {
    child: Child,
    path: PathBuf,
    /// The agents' ids start with this.
    agent_prefix: String,
    sentinel_label: String,
}

impl DockerEvents {
    fn start(stage: &str, dir: &Path) -> DockerEvents {
        let path = dir.join("docker-events.jsonl");
        let file = std::fs::File::create(&path).unwrap();
        // From a moment ago: nothing is missed while the stream is being set up.
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .saturating_sub(Duration::from_secs(1));
        let child = Command::new("docker")
            .args(["events", "--format", "{{json .}}"])
            .args(["--filter", "type=container"])
            .args(["--filter", "label=titus.agent.id"])
            .args(["--since", &format!("{}", since.as_secs())])
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .expect("running docker events");
        DockerEvents {
            child,
            path,
            agent_prefix: format!("{stage}-a"),
            sentinel_label: format!("titus.agent.id={stage}-sentinel"),
        }
    }

    /// Waits until every event so far is in the file: a container created and removed now is the
    /// marker.
    fn sync(&self) {
        let created = Command::new("docker")
            .args([
                "create",
                "--label",
                &self.sentinel_label,
                support::IMAGE,
                "true",
            ])
            .output()
            .expect("running docker create");
        assert!(created.status.success(), "{created:?}");
        let id = String::from_utf8_lossy(&created.stdout).trim().to_owned();
        let removed = Command::new("docker").args(["rm", &id]).output().unwrap();
        assert!(removed.status.success(), "{removed:?}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&self.path).unwrap_or_default();
            if text
                .lines()
                .any(|line| line.contains(&id) && line.contains("\"destroy\""))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "docker events did not report the marker container {id}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every task container of the stage's agents seen so far, with its life.
    fn containers(&self) -> Vec<ContainerLife> {
        let text = std::fs::read_to_string(&self.path).unwrap();
        let events = text
            .lines()
            .filter_map(|line| serde_json::from_str::<DockerEvent>(line).ok());
        lives(events, &self.agent_prefix)
    }
}

impl Drop for DockerEvents {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One line of `docker events --format '{{json .}}'`.
#[derive(Debug, Deserialize)]
struct DockerEvent {
    #[serde(rename = "Action", default)]
    action: String,
    #[serde(rename = "Actor", default)]
    actor: Actor,
    #[serde(rename = "timeNano", default)]
    time_nano: u64,
}

#[derive(Debug, Default, Deserialize)]
struct Actor {
    #[serde(rename = "ID", default)]
    id: String,
    /// The container's labels, and its name and image.
    #[serde(rename = "Attributes", default)]
    attributes: BTreeMap<String, String>,
}

/// A task container as Docker saw it.
#[derive(Debug, Clone)]
struct ContainerLife {
    id: String,
    name: String,
    agent_id: String,
    job_id: String,
    task_id: String,
    memory_mb: u64,
    created_ms: Option<u64>,
    /// From each start to its die; no die while it still runs.
    runs: Vec<(u64, Option<u64>)>,
}

fn lives(events: impl Iterator<Item = DockerEvent>, agent_prefix: &str) -> Vec<ContainerLife> {
    let mut lives: BTreeMap<String, ContainerLife> = BTreeMap::new();
    for event in events {
        let labels = &event.actor.attributes;
        let Some(agent_id) = labels.get("titus.agent.id") else {
            continue;
        };
        if !agent_id.starts_with(agent_prefix) {
            continue;
        }
        let at_ms = event.time_nano / 1_000_000;
        let life = lives
            .entry(event.actor.id.clone())
            .or_insert_with(|| ContainerLife {
                id: event.actor.id.clone(),
                name: labels.get("name").cloned().unwrap_or_default(),
                agent_id: agent_id.clone(),
                job_id: labels.get("titus.job.id").cloned().unwrap_or_default(),
                task_id: labels.get("titus.task.id").cloned().unwrap_or_default(),
                memory_mb: labels
                    .get("titus.resources")
                    .and_then(|json| serde_json::from_str::<Resources>(json).ok())
                    .map_or(0, |r| r.memory_mb),
                created_ms: None,
                runs: Vec::new(),
            });
        match event.action.as_str() {
            "create" => life.created_ms = Some(at_ms),
            "start" => life.runs.push((at_ms, None)),
            "die" => {
                if let Some(run) = life.runs.iter_mut().rev().find(|r| r.1.is_none()) {
                    run.1 = Some(at_ms);
                }
            }
            _ => {}
        }
    }
    lives.into_values().collect()
}

// ---- holding the containers against the records ------------------------------------------------

/// What the records say about one task.
#[derive(Debug, Clone)]
struct TaskFacts {
    job_id: String,
    index: u32,
    finished_ms: Option<u64>,
    reason: Option<TaskReason>,
    agent_id: Option<String>,
    incarnation: Option<u64>,
}

impl TaskFacts {
    fn of(task: &Task) -> TaskFacts {
        TaskFacts {
            job_id: task.job_id.to_string(),
            index: task.index,
            finished_ms: (task.state() == TaskState::Finished).then_some(task.status.timestamp_ms),
            reason: task.status.reason_code,
            agent_id: task.agent_id.clone(),
            incarnation: task.agent_incarnation,
        }
    }
}

/// Everything one round's verdict is made from.
struct Round<'a> {
    containers: &'a [ContainerLife],
    tasks: &'a HashMap<String, TaskFacts>,
    outages: &'a [Outage],
    capacity_mb: &'a HashMap<String, u64>,
    /// A container that has not died counts as running until here.
    end_ms: u64,
}

/// The violations found, each described with its evidence, and how close the rest came.
#[derive(Debug, Default)]
struct Findings {
    late: Vec<String>,
    double: Vec<String>,
    over: Vec<String>,
    /// The longest a container went on after its task's Finished record, in time its agent
    /// could act.
    longest_after_finished_ms: u64,
    /// The longest two containers of one slot ran at once, counted the same way.
    longest_overlap_ms: u64,
    /// The most memory an agent's running containers held.
    peak_mb: u64,
}

impl Findings {
    fn counts(&self) -> String {
        format!(
            "late_containers={} double_slots={} over_capacity={}",
            self.late.len(),
            self.double.len(),
            self.over.len()
        )
    }

    fn closest(&self) -> String {
        format!(
            "closest: {} ms past Finished, slots {} ms at once (limits {DUE_MS} ms), fullest \
             agent {} MB",
            self.longest_after_finished_ms, self.longest_overlap_ms, self.peak_mb
        )
    }

    fn details(&self) -> Vec<String> {
        let tagged = |tag: &str, lines: &[String]| -> Vec<String> {
            lines.iter().map(|l| format!("{tag}: {l}")).collect()
        };
        [
            tagged("late container", &self.late),
            tagged("double slot", &self.double),
            tagged("over capacity", &self.over),
        ]
        .concat()
    }

    fn is_empty(&self) -> bool {
        self.late.is_empty() && self.double.is_empty() && self.over.is_empty()
    }

    fn extend(&mut self, other: Findings) {
        self.late.extend(other.late);
        self.double.extend(other.double);
        self.over.extend(other.over);
        self.longest_after_finished_ms = self
            .longest_after_finished_ms
            .max(other.longest_after_finished_ms);
        self.longest_overlap_ms = self.longest_overlap_ms.max(other.longest_overlap_ms);
        self.peak_mb = self.peak_mb.max(other.peak_mb);
    }
}

/// The budget a finished task's container has to be gone: its grace period and the slack.
const DUE_MS: u64 = KILL_GRACE_MS + SLACK_MS;

fn analyse(round: &Round) -> Findings {
    let (late, longest_after_finished_ms) = late_containers(round);
    let (double, longest_overlap_ms) = double_slots(round);
    let (over, peak_mb) = over_capacity(round);
    Findings {
        late,
        double,
        over,
        longest_after_finished_ms,
        longest_overlap_ms,
        peak_mb,
    }
}

/// The agent's outages, by start.
fn outages_of<'a>(round: &'a Round, agent_id: &str) -> Vec<&'a Outage> {
    let mut outages: Vec<&Outage> = round
        .outages
        .iter()
        .filter(|o| o.agent_id == agent_id)
        .collect();
    outages.sort_by_key(|o| o.from_ms);
    outages
}

/// The moment `budget_ms` of time in which the agent could act has passed since `from_ms`.
fn due_after(from_ms: u64, budget_ms: u64, outages: &[&Outage]) -> u64 {
    let (mut at, mut left) = (from_ms, budget_ms);
    for outage in outages {
        if outage.to_ms <= at {
            continue;
        }
        let up_to = outage.from_ms.max(at);
        if up_to - at >= left {
            return at + left;
        }
        left -= up_to - at;
        at = outage.to_ms;
    }
    at + left
}

/// How much of `[from_ms, to_ms]` the outages cover.
fn covered(from_ms: u64, to_ms: u64, outages: &[&Outage]) -> u64 {
    outages
        .iter()
        .map(|o| o.to_ms.min(to_ms).saturating_sub(o.from_ms.max(from_ms)))
        .sum()
}

fn describe(c: &ContainerLife, task: Option<&TaskFacts>) -> String {
    let runs: Vec<String> = c
        .runs
        .iter()
        .map(|(start, die)| match die {
            Some(die) => format!("{start}..{die}"),
            None => format!("{start}..(running)"),
        })
        .collect();
    let record = match task {
        Some(t) => format!(
            "record: job {} index {} on {} incarnation {} finished at {} as {}",
            t.job_id,
            t.index,
            t.agent_id.as_deref().unwrap_or("-"),
            t.incarnation.map_or("-".to_owned(), |i| i.to_string()),
            t.finished_ms.map_or("-".to_owned(), |f| f.to_string()),
            t.reason.map_or("-".to_owned(), |r| r.to_string())
        ),
        None => "no record".to_owned(),
    };
    let ran = if runs.is_empty() {
        "never started".to_owned()
    } else {
        format!("ran {} ms", runs.join(", "))
    };
    format!(
        "task {} container {} ({}) on {}: created at {}, {ran}; {record}",
        c.task_id,
        &c.id[..c.id.len().min(12)],
        c.name,
        c.agent_id,
        c.created_ms.map_or("-".to_owned(), |t| t.to_string()),
    )
}

/// Containers created or running past their task's Finished record, its grace period and the
/// slack (counting only time in which their agent could act); and the longest any went on.
fn late_containers(round: &Round) -> (Vec<String>, u64) {
    let (mut late, mut longest_ms) = (Vec::new(), 0);
    for c in round.containers {
        let Some(task) = round.tasks.get(&c.task_id) else {
            late.push(format!(
                "a container of a task the records do not have: {}",
                describe(c, None)
            ));
            continue;
        };
        let Some(finished_ms) = task.finished_ms else {
            continue;
        };
        let outages = outages_of(round, &c.agent_id);
        let due_ms = due_after(finished_ms, DUE_MS, &outages);
        let last_ms = c
            .runs
            .iter()
            .map(|(_, die)| die.unwrap_or(round.end_ms))
            .chain(c.created_ms)
            .max()
            .unwrap_or(0);
        let after_ms = last_ms.saturating_sub(finished_ms);
        longest_ms = longest_ms.max(after_ms - covered(finished_ms, last_ms, &outages));
        if last_ms > due_ms {
            late.push(format!(
                "due by {due_ms} ({} ms after Finished), {}",
                due_ms - finished_ms,
                describe(c, Some(task))
            ));
        }
    }
    (late, longest_ms)
}

/// Pairs of containers of one slot that ran at once for longer than a finished task's container
/// may go on (its grace period and the slack), not counting time in which the agent of the one
/// that should have stopped (the task finished first) could not act; and the longest overlap.
fn double_slots(round: &Round) -> (Vec<String>, u64) {
    let mut by_slot: BTreeMap<(String, u32), Vec<&ContainerLife>> = BTreeMap::new();
    for c in round.containers {
        if let Some(task) = round.tasks.get(&c.task_id) {
            by_slot
                .entry((task.job_id.clone(), task.index))
                .or_default()
                .push(c);
        }
    }
    let finished = |c: &ContainerLife| round.tasks[&c.task_id].finished_ms.unwrap_or(u64::MAX);
    let (mut doubles, mut longest_ms) = (Vec::new(), 0);
    for ((job_id, index), containers) in &by_slot {
        for (i, a) in containers.iter().enumerate() {
            for b in &containers[i + 1..] {
                // Two containers of one task: neither is excused.
                let should_stop = if a.task_id == b.task_id {
                    None
                } else if finished(a) <= finished(b) {
                    Some(*a)
                } else {
                    Some(*b)
                };
                let outages = should_stop.map_or(Vec::new(), |c| outages_of(round, &c.agent_id));
                let longest = a
                    .runs
                    .iter()
                    .flat_map(|ra| b.runs.iter().map(move |rb| (ra, rb)))
                    .filter_map(|((sa, ea), (sb, eb))| {
                        let from = (*sa).max(*sb);
                        let to = ea.unwrap_or(round.end_ms).min(eb.unwrap_or(round.end_ms));
                        (to > from).then(|| (to - from).saturating_sub(covered(from, to, &outages)))
                    })
                    .max();
                longest_ms = longest_ms.max(longest.unwrap_or(0));
                if let Some(overlap_ms) = longest.filter(|&ms| ms > DUE_MS) {
                    doubles.push(format!(
                        "job {job_id} index {index}: {overlap_ms} ms at once\n    {}\n    {}",
                        describe(a, round.tasks.get(&a.task_id)),
                        describe(b, round.tasks.get(&b.task_id))
                    ));
                }
            }
        }
    }
    (doubles, longest_ms)
}

/// Moments an agent ran containers whose memory adds up to more than it offers. None is
/// excused: an agent counts a task against its capacity until its container has died. Also the
/// most memory an agent's containers held.
fn over_capacity(round: &Round) -> (Vec<String>, u64) {
    let mut by_agent: BTreeMap<&str, Vec<(u64, i64, &ContainerLife)>> = BTreeMap::new();
    for c in round.containers {
        for (start, die) in &c.runs {
            let steps = by_agent.entry(c.agent_id.as_str()).or_default();
            steps.push((*start, c.memory_mb as i64, c));
            steps.push((die.unwrap_or(round.end_ms), -(c.memory_mb as i64), c));
        }
    }
    let (mut over, mut peak_mb) = (Vec::new(), 0);
    for (agent_id, mut steps) in by_agent {
        let Some(&capacity) = round.capacity_mb.get(agent_id) else {
            over.push(format!(
                "agent {agent_id} has no record to say its capacity"
            ));
            continue;
        };
        // A container that dies at the moment another starts made room for it.
        steps.sort_by_key(|(at, delta, _)| (*at, *delta));
        let mut used: i64 = 0;
        let mut running: BTreeMap<&str, &ContainerLife> = BTreeMap::new();
        let mut episode: Option<(u64, i64, Vec<String>)> = None;
        for (at, delta, c) in steps {
            used += delta;
            peak_mb = peak_mb.max(used.max(0) as u64);
            if delta > 0 {
                running.insert(c.id.as_str(), c);
            } else {
                running.remove(c.id.as_str());
            }
            if used > capacity as i64 {
                let tasks: Vec<String> = running.values().map(|c| c.task_id.clone()).collect();
                match &mut episode {
                    Some((_, peak, peak_tasks)) if used > *peak => {
                        *peak = used;
                        *peak_tasks = tasks;
                    }
                    Some(_) => {}
                    None => episode = Some((at, used, tasks)),
                }
            } else if let Some((from, peak, tasks)) = episode.take() {
                over.push(format!(
                    "agent {agent_id} ran {peak} MB of its {capacity} MB from {from} to {at} \
                     ({} ms): tasks {}",
                    at - from,
                    tasks.join(", ")
                ));
            }
        }
    }
    (over, peak_mb)
}

#[cfg(test)]
mod analysis {
    //! The verdict itself can fail: made-up lives that break each rule are counted.

    use super::*;

    fn life(id: &str, agent: &str, task: &str, runs: &[(u64, u64)]) -> ContainerLife {
        ContainerLife {
            id: id.to_owned(),
            name: format!("titus-{task}"),
            agent_id: agent.to_owned(),
            job_id: "job".to_owned(),
            task_id: task.to_owned(),
            memory_mb: 512,
            created_ms: runs.first().map(|r| r.0),
            runs: runs.iter().map(|&(s, e)| (s, Some(e))).collect(),
        }
    }

    fn task(index: u32, finished_ms: Option<u64>) -> TaskFacts {
        TaskFacts {
            job_id: "job".to_owned(),
            index,
            finished_ms,
            reason: finished_ms.map(|_| TaskReason::Lost),
            agent_id: Some("a1".to_owned()),
            incarnation: Some(1),
        }
    }

    fn findings(
        containers: &[ContainerLife],
        tasks: &[(&str, TaskFacts)],
        outages: &[Outage],
    ) -> Findings {
        let tasks: HashMap<String, TaskFacts> = tasks
            .iter()
            .map(|(id, t)| ((*id).to_owned(), t.clone()))
            .collect();
        let capacity_mb = HashMap::from([("a1".to_owned(), 1_024), ("a2".to_owned(), 1_024)]);
        analyse(&Round {
            containers,
            tasks: &tasks,
            outages,
            capacity_mb: &capacity_mb,
            end_ms: 100_000,
        })
    }

    #[test]
    fn a_container_running_long_after_its_task_finished_is_late_and_doubles_its_slot() {
        let old = life("c1", "a1", "t1", &[(0, 30_000)]);
        let new = life("c2", "a2", "t2", &[(11_000, 60_000)]);

        let found = findings(
            &[old, new],
            &[("t1", task(0, Some(10_000))), ("t2", task(0, None))],
            &[],
        );

        assert_eq!(found.late.len(), 1, "{found:?}");
        assert_eq!(found.double.len(), 1, "{found:?}");
        assert!(found.over.is_empty(), "{found:?}");
    }

    #[test]
    fn time_the_agent_could_not_act_is_not_held_against_its_containers() {
        let old = life("c1", "a1", "t1", &[(0, 30_000)]);
        let new = life("c2", "a2", "t2", &[(11_000, 60_000)]);
        let frozen = Outage {
            agent_id: "a1".to_owned(),
            from_ms: 5_000,
            to_ms: 25_000,
        };

        let found = findings(
            &[old, new],
            &[("t1", task(0, Some(10_000))), ("t2", task(0, None))],
            &[frozen],
        );

        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn three_containers_of_512_mb_on_an_agent_of_1024_mb_overfill_it_once() {
        let containers = [
            life("c1", "a1", "t1", &[(0, 10_000)]),
            life("c2", "a1", "t2", &[(1_000, 10_000)]),
            life("c3", "a1", "t3", &[(2_000, 3_000), (4_000, 5_000)]),
            life("c4", "a1", "t4", &[(10_000, 20_000)]),
        ];
        let tasks = [
            ("t1", task(0, None)),
            ("t2", task(1, None)),
            ("t3", task(2, None)),
            ("t4", task(3, None)),
        ];

        let found = findings(&containers, &tasks, &[]);

        assert_eq!(found.over.len(), 2, "{found:?}");
        assert!(
            found.late.is_empty() && found.double.is_empty(),
            "{found:?}"
        );
    }
}
