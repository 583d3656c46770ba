//! Benchmark (not a test): the agent's launch latency against Docker's own, and its resident
//! memory. Needs the Docker engine and the AWS emulator (`source scripts/env.sh`):
//!
//!     cargo bench -p titus-agent --bench launch
//!
//! 1. Launch latency: from a launch message in hand to its container running (and its Started
//!    status handed to the status sink), against a plain bollard create + start of the same image
//!    in the same run, interleaved. The agent runs in this process with in-memory queues so that
//!    only its own work and Docker's are measured; its containers are isolated (task network,
//!    dropped capabilities), and one series launches tasks with an IAM role (AssumeRole on the
//!    emulator's STS, the token, the address binding).
//! 2. The task credentials endpoint's answer time (cached credentials), against the same
//!    server's answer to a path it does not serve, over a new TCP connection each.
//! 3. Resident memory of the `titus-agent` binary, idle and with 50 task containers running,
//!    against the emulator.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use support::*;
use titus_agent::agent::AgentIdentity;
use titus_agent::aws::StsRoles;
use titus_agent::testing::{MemoryCommandSource, MemoryLink, MemoryStatusSink};
use titus_agent::{Agent, AgentSettings, DockerRuntime, HostServices};
use titus_core::messages::AgentCommand;
use titus_core::{Resources, TaskState};

const ROUNDS: usize = 30;
const CONTAINERS_FOR_MEMORY: usize = 50;

fn summary(samples: &mut [Duration]) -> (f64, f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = ms(samples[samples.len() / 2]);
    let p90 = ms(samples[samples.len() * 9 / 10]);
    let mean = samples.iter().map(|d| ms(*d)).sum::<f64>() / samples.len() as f64;
    (median, p90, mean)
}

async fn remove(docker: &bollard::Docker, name: &str) {
    let _ = docker
        .remove_container(
            name,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await;
}

async fn launch_latency() {
    let runtime = docker().await;
    let docker = runtime.client().clone();
    let agent_id = agent_id("bench");
    let _cleanup = ContainerCleanup(agent_id.clone());
    let settings = AgentSettings {
        agent_id: Some(agent_id.clone()),
        finished_retention_secs: 0,
        credentials_port: 0,
        ..AgentSettings::default()
    };
    let (_, sdk_config) = clients().await;
    let credentials = titus_agent::bootstrap::serve_credentials(
        &settings,
        std::sync::Arc::new(StsRoles::new(&sdk_config)),
    )
    .await
    .unwrap();
    let agent = Agent::start(
        AgentIdentity {
            agent_id: agent_id.clone(),
            zone: "local".to_owned(),
            machine_type: "local".to_owned(),
            machine_group: "default".to_owned(),
            capacity: Resources {
                cpu_millis: 64_000,
                memory_mb: 65_536,
                disk_mb: 100_000,
                network_mbps: 1000,
                gpu: 0,
            },
        },
        settings,
        DockerRuntime::from_client(docker.clone(), Duration::from_secs(60)),
        MemoryCommandSource::default(),
        MemoryStatusSink::default(),
        MemoryLink::default(),
        HostServices {
            registry_auth: std::sync::Arc::new(titus_agent::aws::NoRegistryAuth),
            credentials: Some(credentials),
            secrets: None,
            metrics: None,
        },
    )
    .await
    .unwrap();

    let (mut plain, mut configured, mut agent_samples, mut role_samples) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // One warm-up round of each, not counted.
    for round in 0..=ROUNDS {
        let name = format!("titus-bench-plain-{agent_id}-{round}");
        let started = Instant::now();
        docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                ContainerCreateBody {
                    image: Some(TEST_IMAGE.to_owned()),
                    cmd: Some(vec!["sleep".to_owned(), "60".to_owned()]),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        docker.start_container(&name, None).await.unwrap();
        let plain_elapsed = started.elapsed();
        remove(&docker, &name).await;

        // Docker's own create + start with the settings the agent gives a task's container.
        let name = format!("titus-bench-configured-{agent_id}-{round}");
        let started = Instant::now();
        docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                ContainerCreateBody {
                    image: Some(TEST_IMAGE.to_owned()),
                    cmd: Some(vec![
                        "sh".to_owned(),
                        "-c".to_owned(),
                        "sleep 60".to_owned(),
                    ]),
                    labels: Some(HashMap::from([("titus.bench".to_owned(), "1".to_owned())])),
                    host_config: Some(HostConfig {
                        nano_cpus: Some(500_000_000),
                        memory: Some(512 * 1024 * 1024),
                        memory_swap: Some(512 * 1024 * 1024),
                        pids_limit: Some(4096),
                        init: Some(true),
                        network_mode: Some("titus-tasks".to_owned()),
                        security_opt: Some(vec!["no-new-privileges:true".to_owned()]),
                        cap_drop: Some(vec!["ALL".to_owned()]),
                        cap_add: Some(vec!["NET_BIND_SERVICE".to_owned()]),
                        log_config: Some(HostConfigLogConfig {
                            typ: Some("json-file".to_owned()),
                            config: Some(HashMap::from([
                                ("max-size".to_owned(), "10m".to_owned()),
                                ("max-file".to_owned(), "3".to_owned()),
                            ])),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        docker.start_container(&name, None).await.unwrap();
        let configured_elapsed = started.elapsed();
        remove(&docker, &name).await;

        let task = launch("sleep 60");
        let body = serde_json::to_string(&AgentCommand::LaunchTask(task.clone())).unwrap();
        let started = Instant::now();
        let disposition = agent.handle_message(&body).await;
        let agent_elapsed = started.elapsed();
        assert_eq!(disposition, titus_agent::Disposition::Delete);
        remove(&docker, &format!("titus-{}", task.task_id)).await;

        let mut task = launch("sleep 60");
        task.iam_role = "arn:aws:iam::123456789012:role/bench".to_owned();
        let body = serde_json::to_string(&AgentCommand::LaunchTask(task.clone())).unwrap();
        let started = Instant::now();
        let disposition = agent.handle_message(&body).await;
        let role_elapsed = started.elapsed();
        assert_eq!(disposition, titus_agent::Disposition::Delete);
        remove(&docker, &format!("titus-{}", task.task_id)).await;

        if round > 0 {
            plain.push(plain_elapsed);
            configured.push(configured_elapsed);
            agent_samples.push(agent_elapsed);
            role_samples.push(role_elapsed);
        }
    }
    agent.shutdown();
    let (plain_median, plain_p90, plain_mean) = summary(&mut plain);
    let (configured_median, configured_p90, configured_mean) = summary(&mut configured);
    let (agent_median, agent_p90, agent_mean) = summary(&mut agent_samples);
    let (role_median, role_p90, role_mean) = summary(&mut role_samples);
    println!("launch latency, {ROUNDS} rounds, interleaved (ms):");
    println!(
        "  docker create+start (bollard, same image): median {plain_median:7.1}  p90 {plain_p90:7.1}  mean {plain_mean:7.1}"
    );
    println!(
        "  docker create+start, the agent's settings:  median {configured_median:7.1}  p90 {configured_p90:7.1}  mean {configured_mean:7.1}"
    );
    println!(
        "  agent: launch message -> container running: median {agent_median:7.1}  p90 {agent_p90:7.1}  mean {agent_mean:7.1}"
    );
    println!(
        "  agent, task with an IAM role (AssumeRole): median {role_median:7.1}  p90 {role_p90:7.1}  mean {role_mean:7.1}"
    );
    println!(
        "  ratio agent / docker (median): {:.2} (goal <= 1.10); against the same settings: {:.2}",
        agent_median / plain_median,
        agent_median / configured_median
    );
    println!(
        "  ratio agent with a role / docker (median): {:.2} (goal <= 1.10); against the same settings: {:.2}",
        role_median / plain_median,
        role_median / configured_median
    );
}

/// One HTTP/1.1 request on a new connection; the answer's status line.
async fn get(address: std::net::SocketAddr, path: &str, token: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: {token}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

async fn credentials_answer_time() {
    const REQUESTS: usize = 500;
    let (_, sdk_config) = clients().await;
    let settings = AgentSettings {
        credentials_address: "127.0.0.1".to_owned(),
        credentials_port: 0,
        ..AgentSettings::default()
    };
    let service = titus_agent::bootstrap::serve_credentials(
        &settings,
        std::sync::Arc::new(StsRoles::new(&sdk_config)),
    )
    .await
    .unwrap();
    let address: std::net::SocketAddr = service
        .uri()
        .trim_start_matches("http://")
        .trim_end_matches(titus_agent::credentials::CREDENTIALS_PATH)
        .parse()
        .unwrap();
    let task = titus_core::TaskId::generate();
    let token = "bench-token";
    service.adopt(
        &task,
        "arn:aws:iam::123456789012:role/bench",
        &titus_agent::credentials::token_digest(token),
        titus_agent::credentials::Binding::AnyAddress,
    );
    // The first answer assumes the role; the rest are served from the cache.
    assert!(get(address, "/v1/credentials", token).await.contains("200"));
    let (mut answered, mut baseline) = (Vec::new(), Vec::new());
    for _ in 0..REQUESTS {
        let started = Instant::now();
        let status = get(address, "/v1/credentials", token).await;
        answered.push(started.elapsed());
        assert!(status.contains("200"), "{status}");
        let started = Instant::now();
        let status = get(address, "/elsewhere", token).await;
        baseline.push(started.elapsed());
        assert!(status.contains("404"), "{status}");
    }
    let us = |samples: &mut Vec<Duration>| {
        let (median, p90, _) = summary(samples);
        (median * 1000.0, p90 * 1000.0)
    };
    let (answer_median, answer_p90) = us(&mut answered);
    let (base_median, base_p90) = us(&mut baseline);
    println!("task credentials endpoint, {REQUESTS} requests each, new connection each (µs):");
    println!(
        "  the same server, a path it does not serve: median {base_median:7.0}  p90 {base_p90:7.0}"
    );
    println!("  credentials (token checked, cached):       median {answer_median:7.0}  p90 {answer_p90:7.0}");
    println!(
        "  ratio credentials / baseline (median): {:.2}",
        answer_median / base_median
    );
}

fn resident_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap()
}

async fn resident_memory() {
    let runtime = docker().await;
    let (clients, _, names) = fresh_stage().await;
    let agent_id = agent_id("benchmem");
    let _cleanup = ContainerCleanup(agent_id.clone());
    // The agent starts only once registered, and runs only tasks placed on it: the part of the
    // control plane that registers and places runs here.
    let control = InProcessControlPlane::start(&clients, &names);
    // Room for every task: each reserves 128 Mbps and 10,000 MB of disk.
    let env: BTreeMap<String, String> = agent_env(
        &names,
        &agent_id,
        &[
            ("TITUS_AGENT_NETWORK_MBPS", "100000"),
            ("TITUS_AGENT_DISK_MB", "1000000"),
        ],
    );
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_titus-agent"))
        .env_clear()
        .envs(&env)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    wait_registered(&clients, &names, &agent_id, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_kb = resident_kb(pid);

    let mut status = StatusReader::new(&clients, &names).await;
    let tasks = control
        .place_batch("sleep 600", CONTAINERS_FOR_MEMORY as u32)
        .await;
    for task in &tasks {
        status
            .wait_for(&task.task_id, TaskState::Started, Duration::from_secs(300))
            .await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let busy_kb = resident_kb(pid);
    let _ = child.start_kill();
    let _ = child.wait().await;
    remove_containers(&runtime, &agent_id).await;

    println!("agent resident memory (VmRSS of the titus-agent process):");
    println!(
        "  idle:                         {:6.1} MiB",
        idle_kb as f64 / 1024.0
    );
    println!(
        "  with {CONTAINERS_FOR_MEMORY} containers running:  {:6.1} MiB",
        busy_kb as f64 / 1024.0
    );
}

fn main() {
    // `cargo bench` passes `--bench`; anything else that looks like a filter is ignored.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        launch_latency().await;
        credentials_answer_time().await;
        resident_memory().await;
    });
}
