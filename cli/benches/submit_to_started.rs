//! Submit-to-Started latency and task throughput of the whole local stack, with real containers
//! from a cached image, beside baselines measured in the same run: plain `docker run -d` of the
//! same image, and the emulator's own DynamoDB write rate.
//!
//! `cargo bench -p titus-cli --bench submit_to_started` (through `scripts/env.sh`, with the
//! emulator and Docker up). `TITUS_BENCH_TASKS` sets how many tasks each phase runs (default 100).
//!
//! - Latency: single-task batch jobs submitted one a second (an open loop, so a slow answer does
//!   not hide queueing, at a rate the emulator sustains, so that queueing is not what is
//!   measured); each task's latency is its container's Started time, as its agent reported it,
//!   minus the moment the client sent the create request.
//! - Throughput: one batch job of N tasks; tasks/s from the request to the last Started.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use serde_json::{json, Value};
use support::{Stack, StackOptions, IMAGE};
use titus_core::{Job, Task, TaskState};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn descriptor(app: &str, size: u32) -> Value {
    json!({
        "owner": {"teamEmail": "bench@example.com"},
        "applicationName": app,
        "container": {
            "image": {"name": "titus-demo/busybox", "tag": "latest"},
            "command": ["sleep", "1"],
            "resources": {"cpu": 0.1, "memoryMB": 512}
        },
        "batch": {"size": size}
    })
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(name: &str, mut values: Vec<u64>) -> (u64, u64) {
    values.sort_unstable();
    let (p50, p99) = (percentile(&values, 50.0), percentile(&values, 99.0));
    println!(
        "{name:<38} n={:<4} p50 {:>5} ms  p90 {:>5} ms  p99 {:>5} ms  max {:>5} ms",
        values.len(),
        p50,
        percentile(&values, 90.0),
        p99,
        values[values.len() - 1]
    );
    (p50, p99)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let tasks: u32 = std::env::var("TITUS_BENCH_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    // Capacity is not what is measured: the agents offer far more than the tasks need.
    let stack = Stack::start(StackOptions {
        agents: 2,
        agent_cpu_millis: 64_000,
        agent_memory_mb: 1_024 * 1_024,
        agent_network_mbps: 1_000_000,
        agent_disk_mb: 100_000_000,
        ..StackOptions::default()
    })
    .await;
    let http = reqwest::Client::new();
    let create = |body: Value| {
        let request = http
            .post(format!("{}/api/v3/jobs", stack.url))
            .bearer_auth("local-dev-token")
            .json(&body)
            .send();
        async move {
            let answer = request.await.expect("the API answers");
            assert!(answer.status().is_success(), "{}", answer.status());
            answer.json::<Job>().await.unwrap()
        }
    };

    // Warm-up: the first task of a stack pays for connections and the agents' first poll.
    let warm = create(descriptor("bench-warm", 1)).await;
    wait_started(&stack, &[warm.id.to_string()], 1).await;

    // Latency, open loop.
    let mut submitted = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    for _ in 0..tasks {
        ticker.tick().await;
        let sent_at_ms = now_ms();
        let job = create(descriptor("bench-latency", 1)).await;
        submitted.push((job.id.to_string(), sent_at_ms));
    }
    let ids: Vec<String> = submitted.iter().map(|(id, _)| id.clone()).collect();
    let started = wait_started(&stack, &ids, tasks as usize).await;
    let stages = breakdown(&started, &submitted);
    let latencies: Vec<u64> = started
        .iter()
        .map(|task| {
            let sent = submitted
                .iter()
                .find(|(id, _)| *id == task.job_id.to_string())
                .unwrap()
                .1;
            task.started_at_ms.unwrap().saturating_sub(sent)
        })
        .collect();

    // Throughput: one job of N tasks.
    let begun = Instant::now();
    let burst = create(descriptor("bench-burst", tasks)).await;
    wait_started(&stack, &[burst.id.to_string()], tasks as usize).await;
    let burst_secs = begun.elapsed().as_secs_f64();

    // Baselines, same run: `docker run -d` of the same image and command, and raw PutItem.
    let mut docker_ms = Vec::new();
    for _ in 0..10 {
        let begun = Instant::now();
        let out = Command::new("docker")
            .args([
                "run",
                "-d",
                "--rm",
                "--label",
                "titus.bench=1",
                IMAGE,
                "sleep",
                "1",
            ])
            .output()
            .expect("docker run");
        assert!(out.status.success(), "{out:?}");
        docker_ms.push(begun.elapsed().as_millis() as u64);
    }
    let puts_per_sec = raw_put_rate(&stack.stage, 200).await;

    println!();
    println!("submit-to-Started, {tasks} single-task jobs at 1/s, cached image, 2 agents:");
    let (p50, p99) = summary("  titus submit -> Started", latencies);
    for (name, values) in stages {
        summary(name, values);
    }
    summary("  baseline: docker run -d (same run)", docker_ms);
    println!(
        "  goal: p50 <= 1000 ms ({}), p99 <= 2500 ms ({}); anchor: Kubernetes' SLO p99 <= 5 s",
        if p50 <= 1000 { "met" } else { "NOT met" },
        if p99 <= 2500 { "met" } else { "NOT met" }
    );
    println!();
    println!(
        "throughput: {tasks} tasks of one job Started in {burst_secs:.2} s = {:.1} tasks/s",
        f64::from(tasks) / burst_secs
    );
    println!("  baseline: the emulator's raw DynamoDB PutItem rate (same run) = {puts_per_sec:.1} writes/s");
}

/// Where the time goes, from the tasks' state histories: the API and the scheduler (submit to
/// Launched, the scheduler's commit), the dispatch (Launched to StartInitiated, the agent taking
/// the launch off its queue) and Docker (StartInitiated to Started).
fn breakdown(tasks: &[Task], submitted: &[(String, u64)]) -> Vec<(&'static str, Vec<u64>)> {
    let at = |task: &Task, state: TaskState| {
        task.status_history
            .iter()
            .chain(std::iter::once(&task.status))
            .find(|s| s.state == state)
            .map(|s| s.timestamp_ms)
            .unwrap()
    };
    let mut stages = vec![
        ("  of which submit -> Launched", Vec::new()),
        ("  of which Launched -> StartInitiated", Vec::new()),
        ("  of which StartInitiated -> Started", Vec::new()),
    ];
    for task in tasks {
        let sent = submitted
            .iter()
            .find(|(id, _)| *id == task.job_id.to_string())
            .unwrap()
            .1;
        let (launched, initiated) = (
            at(task, TaskState::Launched),
            at(task, TaskState::StartInitiated),
        );
        let started = task.started_at_ms.unwrap();
        stages[0].1.push(launched.saturating_sub(sent));
        stages[1].1.push(initiated.saturating_sub(launched));
        stages[2].1.push(started.saturating_sub(initiated));
    }
    stages
}

/// Waits until `count` tasks of `jobs` have Started (or run past it), and returns them.
async fn wait_started(stack: &Stack, jobs: &[String], count: usize) -> Vec<Task> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let mut started = Vec::new();
        for job in jobs {
            started.extend(
                stack
                    .tasks(job)
                    .into_iter()
                    .filter(|t| t.started_at_ms.is_some()),
            );
        }
        if started.len() >= count {
            return started;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {count} tasks started\n{}",
            started.len(),
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// PutItems per second into a scratch table of the emulator, one at a time as the API writes.
async fn raw_put_rate(stage: &str, writes: u32) -> f64 {
    let config = titus_aws::clients::load_sdk_config().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    let table = format!("titus-{stage}-bench-raw");
    dynamodb
        .create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("creating the scratch table");
    let begun = Instant::now();
    for n in 0..writes {
        dynamodb
            .put_item()
            .table_name(&table)
            .item("id", AttributeValue::S(format!("item-{n}")))
            .item("body", AttributeValue::S("x".repeat(400)))
            .send()
            .await
            .expect("PutItem");
    }
    let rate = f64::from(writes) / begun.elapsed().as_secs_f64();
    let _ = dynamodb.delete_table().table_name(&table).send().await;
    rate
}
