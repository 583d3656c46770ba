//! Event delivery latency against the emulator: from a job's state change (a kill through the
//! API) to a watcher following the job's feed with long polls, beside a watcher polling the job
//! every 500 ms as `titus job wait` did before it followed events, both watching the same change
//! in the same run. The feed goes through the real path: the jobs' DynamoDB stream followed into
//! the events table (`titus_app::streams`), read by `GET /api/v3/events`.
//!
//! `cargo bench -p titus-api --bench event_latency` (the emulator must be up: `source
//! scripts/env.sh`). `BENCH_CHANGES` (default 40) sets how many changes are watched.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request};
use http_body_util::BodyExt as _;
use titus_api::{router, ApiConfig, AppState};
use titus_aws::provision::provision;
use titus_aws::{aws_ports, AwsClients, Names};
use titus_control::{ControlPlane, Settings};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

const TOKEN: &str = "bench-token";
const DESCRIPTOR: &str = r#"{"owner":{"teamEmail":"team@example.com"},"applicationName":"bench",
  "container":{"image":{"name":"busybox","tag":"stable"}},"batch":{"size":1}}"#;
/// How often the polling watcher reads the job, as `titus job wait` did.
const POLL: Duration = Duration::from_millis(500);

async fn call(app: &axum::Router, method: Method, uri: &str) -> serde_json::Value {
    let mut builder = Request::builder()
        .method(method.clone())
        .uri(uri)
        .header("authorization", format!("Bearer {TOKEN}"));
    let body = if method == Method::POST {
        builder = builder.header("content-type", "application/json");
        Body::from(DESCRIPTOR)
    } else {
        Body::empty()
    };
    let response = app
        .clone()
        .oneshot(builder.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    assert!(
        status.is_success(),
        "{method} {uri}: {status} {}",
        String::from_utf8_lossy(&bytes)
    );
    serde_json::from_slice(&bytes).unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn line(label: &str, mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let (p50, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));
    println!(
        "{label:<40} p50 {:>7.1} ms   p99 {:>7.1} ms   max {:>7.1} ms   ({} changes)",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        samples.last().unwrap().as_secs_f64() * 1e3,
        samples.len()
    );
    (p50, p99)
}

#[tokio::main]
async fn main() {
    let changes: usize = std::env::var("BENCH_CHANGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let sdk_config = titus_aws::clients::local_emulator_config().await;
    let clients = AwsClients::from_config(&sdk_config);
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let names = Names::new(&format!("evb{suffix}")).unwrap();
    provision(&clients, &names.definitions()).await.unwrap();
    let mut settings = Settings::default();
    settings.admission.teams =
        titus_control::Teams::default().with("bench@example.com", &["team@example.com"]);
    let cp = Arc::new(ControlPlane::new(aws_ports(&clients, &names), settings));
    let config = ApiConfig::with_tokens(names.stage(), &[(TOKEN, "bench@example.com")], &[]);
    let app = router(AppState::new(cp.clone(), config, None));

    let stop = CancellationToken::new();
    let (ready, following) = tokio::sync::oneshot::channel();
    {
        let (cp, names, stop, sdk_config) =
            (cp.clone(), names.clone(), stop.clone(), sdk_config.clone());
        tokio::spawn(async move {
            titus_app::streams::serve_events(cp, &sdk_config, &names, ready, stop)
                .await
                .expect("following the streams");
        });
    }
    following.await.unwrap();

    let mut by_events = Vec::new();
    let mut by_polling = Vec::new();
    // The kill comes at a different point of the poller's 500 ms each time (a fixed spread, so
    // runs compare): the poller's phase is what a real watcher's is, random.
    for n in 0..changes {
        let phase = POLL.mul_f64(((n * 7) % changes) as f64 / changes as f64);
        let job = call(&app, Method::POST, "/api/v3/jobs").await;
        let id = job["id"].as_str().unwrap().to_owned();
        // Both watchers start before the change: the feed's cursor, the poller's first read.
        let start = call(&app, Method::GET, &format!("/api/v3/events?jobId={id}")).await;
        let cursor = start["cursor"].as_str().unwrap().to_owned();
        let polling_since = Instant::now();
        let changed = polling_since + phase;
        let events_watch = {
            let app = app.clone();
            let id = id.clone();
            async move {
                let mut cursor = cursor;
                loop {
                    let page = call(
                        &app,
                        Method::GET,
                        &format!("/api/v3/events?jobId={id}&types=JobStateChange&waitMs=15000&cursor={cursor}"),
                    )
                    .await;
                    let killed = page["events"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|e| e["state"] != "Accepted");
                    if killed {
                        return Instant::now().saturating_duration_since(changed);
                    }
                    cursor = page["cursor"].as_str().unwrap().to_owned();
                }
            }
        };
        let polling_watch = {
            let app = app.clone();
            let id = id.clone();
            async move {
                loop {
                    let job = call(&app, Method::GET, &format!("/api/v3/jobs/{id}")).await;
                    if job["status"]["state"] != "Accepted" {
                        return Instant::now().saturating_duration_since(changed);
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
        };
        let kill = async {
            tokio::time::sleep_until(changed.into()).await;
            call(&app, Method::DELETE, &format!("/api/v3/jobs/{id}")).await;
        };
        let (events_latency, polling_latency, ()) = tokio::join!(events_watch, polling_watch, kill);
        by_events.push(events_latency);
        by_polling.push(polling_latency);
    }
    stop.cancel();
    println!(
        "state change → watcher, {changes} job kills against the emulator at {}",
        titus_aws::clients::local_emulator_endpoint()
    );
    let (events_p50, events_p99) = line("event feed (stream → table → long poll)", by_events);
    let (poll_p50, poll_p99) = line("polling the job every 500 ms (baseline)", by_polling);
    println!(
        "event feed / polling: p50 {:.2}x, p99 {:.2}x (the feed shows events once they are {} ms old)",
        events_p50.as_secs_f64() / poll_p50.as_secs_f64(),
        events_p99.as_secs_f64() / poll_p99.as_secs_f64(),
        titus_core::events::SETTLE_MS
    );
}
