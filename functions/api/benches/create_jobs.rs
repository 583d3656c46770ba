//! Create-job throughput through the local HTTP server against the emulator, compared in the same
//! run with the same DynamoDB writes made directly (a create stores the job item alone; the
//! scheduler writes its tasks later); plus the release binary's size and its start-up time to
//! the first answered request.
//!
//! `cargo bench -p titus-api --bench create_jobs` (the emulator must be up: `source scripts/env.sh`).
//! `BENCH_REQUESTS` (default 300) and `BENCH_CONCURRENCY` (default 1) size the run.
//!
//! Each phase writes to a freshly provisioned stage, because moto's TransactWriteItems deep-copies
//! the tables it touches (its cost grows with the table), and the phases run one request at a time
//! by default, because moto 5.2.5 fails concurrent transactions on a table that is being written
//! (`RuntimeError: dictionary changed size during iteration`, answered as HTTP 500).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use titus_aws::provision::provision;
use titus_aws::{AwsClients, Names};
use titus_core::{Job, JobId, Limits};
use tokio::io::AsyncBufReadExt as _;
use tokio::sync::Semaphore;

/// How many interleaved rounds the operations are split into.
const ROUNDS: usize = 5;

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

const DESCRIPTOR: &str = r#"{"owner":{"teamEmail":"team@example.com"},"applicationName":"bench",
  "container":{"image":{"name":"busybox","tag":"stable"},"command":["sh","-c","true"]},
  "batch":{"size":1}}"#;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Debug, Clone)]
struct Summary {
    label: String,
    count: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Summary {
    fn of(label: &str, elapsed: Duration, mut latencies: Vec<Duration>) -> Summary {
        latencies.sort();
        let at = |q: f64| {
            latencies[((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1]
        };
        Summary {
            label: label.to_owned(),
            count: latencies.len(),
            elapsed,
            p50: at(0.50),
            p99: at(0.99),
            max: latencies.last().copied().unwrap_or_default(),
        }
    }

    fn rate(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64()
    }

    fn print(&self) {
        println!(
            "{:<44} {:>5} in {:>6.2} s {:>7.1}/s  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms",
            self.label,
            self.count,
            self.elapsed.as_secs_f64(),
            self.rate(),
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3,
            self.max.as_secs_f64() * 1e3
        );
    }
}

/// Runs `count` operations, `concurrency` at a time, timing each; adds the time and latencies to
/// `phase`.
async fn run<F, Fut>(phase: &mut Phase, count: usize, concurrency: usize, operation: &F)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(concurrency));
    let started = Instant::now();
    let mut handles = Vec::with_capacity(count);
    for i in 0..count {
        let permit = permits.clone().acquire_owned().await.unwrap();
        let future = operation(phase.latencies.len() + i);
        handles.push(tokio::spawn(async move {
            let begun = Instant::now();
            future.await;
            drop(permit);
            begun.elapsed()
        }));
    }
    for handle in handles {
        phase.latencies.push(handle.await.unwrap());
    }
    phase.elapsed += started.elapsed();
}

/// One kind of operation, measured over every round.
#[derive(Debug, Default)]
struct Phase {
    label: &'static str,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Phase {
    fn new(label: &'static str) -> Phase {
        Phase {
            label,
            ..Phase::default()
        }
    }

    fn summary(&self) -> Summary {
        Summary::of(self.label, self.elapsed, self.latencies.clone())
    }
}

fn bench_job() -> Job {
    let descriptor =
        titus_core::parse_descriptor(DESCRIPTOR.as_bytes(), &Limits::default()).unwrap();
    Job::new(
        JobId::generate(),
        descriptor,
        "dev@titus.local".to_owned(),
        titus_api::now_ms(),
    )
}

/// The item a job creation writes, built by the store's own code.
fn job_item(job: &Job) -> HashMap<String, AttributeValue> {
    titus_aws::dynamo::job_item(job, true).unwrap()
}

/// Starts the API binary; returns it, its address, the time to `listening`, and the time to the
/// first answered request.
async fn start_api(stage: &str) -> (tokio::process::Child, String, Duration, Duration) {
    let started = Instant::now();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_titus-api-lambda"))
        .args(["--stage", stage, "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("starting the API binary");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let address = loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("the API exited before listening");
        if let Some(address) = line.strip_prefix("listening on ") {
            break address.to_owned();
        }
    };
    let listening = started.elapsed();
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let uri: hyper::Uri = format!("http://{address}/healthz").parse().unwrap();
    loop {
        if let Ok(response) = client.get(uri.clone()).await {
            if response.status().is_success() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    (child, address, listening, started.elapsed())
}

#[tokio::main]
async fn main() {
    let endpoint = titus_aws::clients::local_emulator_endpoint();
    let count = env_number("BENCH_REQUESTS", 300);
    let concurrency = env_number("BENCH_CONCURRENCY", 1);
    let clients = AwsClients::from_env().await;
    let fresh_stage = || {
        let clients = clients.clone();
        async move {
            let names = Names::new(&format!(
                "b{}",
                &uuid::Uuid::new_v4().simple().to_string()[..10]
            ))
            .unwrap();
            provision(&clients, &names.local_definitions())
                .await
                .unwrap();
            names
        }
    };
    let names = fresh_stage().await;

    let binary = env!("CARGO_BIN_EXE_titus-api-lambda");
    let size_bytes = std::fs::metadata(binary).unwrap().len();
    println!(
        "binary {binary}: {:.1} MiB",
        size_bytes as f64 / (1024.0 * 1024.0)
    );
    let mut startups = Vec::new();
    let mut server = None;
    for _ in 0..5 {
        let (child, address, listening, answered) = start_api(names.stage()).await;
        startups.push((listening, answered));
        server = Some((child, address));
    }
    startups.sort_by_key(|(_, answered)| *answered);
    let (listening, answered) = startups[startups.len() / 2];
    println!(
        "start-up (median of 5): listening after {:.1} ms, first request answered after {:.1} ms \
         (includes reading 4 SSM parameters)",
        listening.as_secs_f64() * 1e3,
        answered.as_secs_f64() * 1e3
    );
    let (_child, address) = server.unwrap();
    let http: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .build_http();
    println!(
        "{count} operations each, {concurrency} at a time, in {ROUNDS} interleaved rounds; \
         emulator at {endpoint}"
    );

    let dynamodb = clients.dynamodb.clone();
    let raw_names = fresh_stage().await;
    let put_table = raw_names.jobs_table();
    // The write an API create makes, made directly: one conditional PutItem of the job item.
    let raw_put = |_: usize| {
        let dynamodb = dynamodb.clone();
        let table = put_table.clone();
        async move {
            let job = bench_job();
            dynamodb
                .put_item()
                .table_name(table)
                .set_item(Some(job_item(&job)))
                .condition_expression("attribute_not_exists(jobId)")
                .send()
                .await
                .unwrap();
        }
    };
    let transaction_names = fresh_stage().await;
    let (jobs_table, idempotency_table) = (
        transaction_names.jobs_table(),
        transaction_names.idempotency_table(),
    );
    // The write a create with an Idempotency-Key makes: the key's record and the job, together.
    let raw_transaction = |i: usize| {
        let dynamodb = dynamodb.clone();
        let (jobs, idempotency) = (jobs_table.clone(), idempotency_table.clone());
        async move {
            let job = bench_job();
            let s = |v: String| AttributeValue::S(v);
            let record = HashMap::from([
                (
                    "idempotencyKey".to_owned(),
                    s(format!("dev@titus.local#raw-{i}-{}", job.id)),
                ),
                ("jobId".to_owned(), s(job.id.to_string())),
                ("requestHash".to_owned(), s("h".to_owned())),
                ("expiresAt".to_owned(), AttributeValue::N("1".to_owned())),
            ]);
            let put = |table: String, item, key: &str| {
                TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name(table)
                            .set_item(Some(item))
                            .condition_expression(format!("attribute_not_exists({key})"))
                            .build()
                            .unwrap(),
                    )
                    .build()
            };
            dynamodb
                .transact_write_items()
                .transact_items(put(idempotency, record, "idempotencyKey"))
                .transact_items(put(jobs, job_item(&job), "jobId"))
                .send()
                .await
                .unwrap();
        }
    };
    let create = |with_key: bool, address: String| {
        let http = http.clone();
        move |i: usize| {
            let http = http.clone();
            let mut request = hyper::Request::post(format!("http://{address}/api/v3/jobs"))
                .header("authorization", "Bearer local-dev-token")
                .header("content-type", "application/json");
            if with_key {
                request = request.header(
                    "idempotency-key",
                    format!("bench-{}-{i}", uuid::Uuid::new_v4()),
                );
            }
            let request = request
                .body(Full::new(Bytes::from_static(DESCRIPTOR.as_bytes())))
                .unwrap();
            async move {
                let response = http.request(request).await.unwrap();
                let status = response.status();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
            }
        }
    };
    let api_create = create(false, address.clone());
    let keyed_names = fresh_stage().await;
    let (_keyed_child, keyed_address, _, _) = start_api(keyed_names.stage()).await;
    let api_keyed_create = create(true, keyed_address);

    // Interleaved rounds, so that a change in the emulator's load (it is shared) or in its tables'
    // sizes weighs on every phase alike.
    let mut phases = [
        Phase::new("raw DynamoDB PutItem (job item)"),
        Phase::new("raw TransactWriteItems (key record + job)"),
        Phase::new("API POST /api/v3/jobs (batch, 1 task)"),
        Phase::new("API POST /api/v3/jobs with Idempotency-Key"),
    ];
    let per_round = count.div_ceil(ROUNDS);
    for _ in 0..ROUNDS {
        run(&mut phases[0], per_round, concurrency, &raw_put).await;
        run(&mut phases[1], per_round, concurrency, &raw_transaction).await;
        run(&mut phases[2], per_round, concurrency, &api_create).await;
        run(&mut phases[3], per_round, concurrency, &api_keyed_create).await;
    }
    let [raw_put, raw_transaction, api, api_keyed] = phases.map(|p| p.summary());

    println!();
    for summary in [&raw_put, &raw_transaction, &api, &api_keyed] {
        summary.print();
    }
    println!();
    println!(
        "API rate / raw PutItem rate:                        {:.2} (goal >= 0.8)",
        api.rate() / raw_put.rate()
    );
    println!(
        "API with Idempotency-Key / raw transaction rate:    {:.2} (the same DynamoDB write)",
        api_keyed.rate() / raw_transaction.rate()
    );
    println!(
        "API with Idempotency-Key / raw PutItem rate:        {:.2}",
        api_keyed.rate() / raw_put.rate()
    );
}
