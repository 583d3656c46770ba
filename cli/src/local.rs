//! `titus local up`: the whole system on one machine. The functions' handlers run in-process with
//! the event shapes Lambda gives them — the API router as plain HTTP, SQS batches pumped from the
//! emulator's queues, the scheduler loop's ticks — and N agents run tasks on the local Docker
//! engine. Ctrl-C stops everything.

use std::collections::BTreeMap;
use std::time::Duration;

use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use titus_app::lambda::batch_response;
use titus_app::pump::pump;
use titus_aws::provision::provision;
use titus_aws::{AwsClients, AwsPorts, Names};
use titus_control::scheduler::TickInput;
use titus_control::ControlPlane;
use titus_core::ports::{Clock, Ports};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument as _};

/// How long the local scheduler loop waits after a tick that placed nothing. The deployed state
/// machine's Wait state counts whole seconds (1 s); locally a shorter pause keeps the latency from
/// submission to start low, at about 18 emulator calls a tick.
const LOCAL_IDLE_PAUSE: Duration = Duration::from_millis(250);

#[derive(Debug, Args)]
pub struct UpArgs {
    /// The stage to provision and run.
    #[arg(long, env = "TITUS_STAGE", default_value = "local")]
    stage: String,
    /// Where the API listens.
    #[arg(long, default_value = "127.0.0.1:7001")]
    listen: String,
    /// How many agents to start, each with its own queue and capacity.
    #[arg(long, default_value_t = 2)]
    agents: u32,
    /// Memory each agent offers, in MB.
    #[arg(long, default_value_t = 2048)]
    agent_memory_mb: u64,
    /// CPU each agent offers, in millicores.
    #[arg(long, default_value_t = 2000)]
    agent_cpu_millis: u64,
    /// Network bandwidth each agent offers, in Mbps (a task reserves 128 unless it asks for more).
    #[arg(long, default_value_t = 10_000)]
    agent_network_mbps: u64,
    /// Disk each agent offers, in MB (a task reserves 10,000 unless it asks for more); by default
    /// the size of the Docker root directory's file system.
    #[arg(long)]
    agent_disk_mb: Option<u64>,
    /// Run the capacity scaler too, against the emulator's EC2 (its instances run no agent, so
    /// the scaler terminates them after the registration timeout). Off by default.
    #[arg(long)]
    scaler: bool,
    /// How often the local scaler runs, in seconds (the deployed schedule runs it every minute).
    #[arg(long, default_value_t = 60)]
    scaler_interval_secs: u64,
    /// How often the reconciler runs, in milliseconds (lost agents, stuck tasks, agents'
    /// reports, the job sweep).
    #[arg(long, default_value_t = 5_000)]
    reconcile_interval_ms: u64,
    /// Where the agents send their tasks' output: the emulator's CloudWatch Logs (group
    /// `/titus/{stage}/tasks`, as in AWS; Docker's awslogs driver needs the emulator's
    /// credentials in dockerd's environment) or Docker's json-file logs on this host.
    #[arg(
        long,
        value_enum,
        env = "TITUS_LOCAL_TASK_LOGS",
        default_value = "cloudwatch"
    )]
    task_logs: TaskLogsMode,
}

/// Where local agents send their tasks' output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TaskLogsMode {
    Cloudwatch,
    Docker,
}

/// The awslogs settings of local agents in `mode`, creating the stage's task log group on the
/// emulator (in AWS the deployment creates it).
async fn local_task_logs(
    mode: TaskLogsMode,
    clients: &AwsClients,
    sdk_config: &aws_config::SdkConfig,
    stage: &str,
    endpoint: &str,
) -> anyhow::Result<Option<LocalTaskLogs>> {
    if mode == TaskLogsMode::Docker {
        return Ok(None);
    }
    let group = titus_core::ports::TaskLogs::stage_group(stage);
    titus_aws::logs::ensure_log_group(&clients.logs, &group)
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(Some(LocalTaskLogs {
        group,
        region: sdk_config
            .region()
            .map_or_else(|| "us-east-1".to_owned(), |r| r.to_string()),
        endpoint: endpoint.to_owned(),
    }))
}

/// Where a local agent's awslogs driver writes.
#[derive(Debug, Clone)]
struct LocalTaskLogs {
    group: String,
    region: String,
    endpoint: String,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The stage the agent joins (its stack must be running: `titus local up`).
    #[arg(long, env = "TITUS_STAGE", default_value = "local")]
    stage: String,
    /// The agent's id, unique in the stage: 1 to 40 letters, digits, `-` or `_`.
    #[arg(long)]
    id: String,
    /// The zone the agent reports.
    #[arg(long, default_value = "local-1")]
    zone: String,
    #[command(flatten)]
    capacity: LocalCapacity,
    /// Where the agents send their tasks' output: the emulator's CloudWatch Logs (group
    /// `/titus/{stage}/tasks`, as in AWS; Docker's awslogs driver needs the emulator's
    /// credentials in dockerd's environment) or Docker's json-file logs on this host.
    #[arg(
        long,
        value_enum,
        env = "TITUS_LOCAL_TASK_LOGS",
        default_value = "cloudwatch"
    )]
    task_logs: TaskLogsMode,
}

/// What one local agent offers.
#[derive(Debug, Clone, Copy, Args)]
struct LocalCapacity {
    /// CPU the agent offers, in millicores.
    #[arg(long, default_value_t = 2000)]
    cpu_millis: u64,
    /// Memory the agent offers, in MB.
    #[arg(long, default_value_t = 2048)]
    memory_mb: u64,
    /// Network bandwidth the agent offers, in Mbps.
    #[arg(long, default_value_t = 10_000)]
    network_mbps: u64,
    /// Disk the agent offers, in MB; by default the size of the Docker root directory's file
    /// system, as on a real host.
    #[arg(long)]
    disk_mb: Option<u64>,
}

/// The settings of one local agent: `TITUS_AGENT_*` variables of this process (so any agent
/// setting can be tuned), then the local stack's own choices.
fn local_agent_env(
    stage: &str,
    id: &str,
    zone: &str,
    capacity: LocalCapacity,
    logs: Option<&LocalTaskLogs>,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("TITUS_AGENT_"))
        .collect();
    env.insert("TITUS_STAGE".to_owned(), stage.to_owned());
    env.insert("TITUS_AGENT_ID".to_owned(), id.to_owned());
    env.insert("TITUS_AGENT_ZONE".to_owned(), zone.to_owned());
    for (name, value) in [
        ("TITUS_AGENT_CPU_MILLIS", capacity.cpu_millis),
        ("TITUS_AGENT_MEMORY_MB", capacity.memory_mb),
        ("TITUS_AGENT_NETWORK_MBPS", capacity.network_mbps),
    ] {
        env.insert(name.to_owned(), value.to_string());
    }
    if let Some(disk_mb) = capacity.disk_mb {
        env.insert("TITUS_AGENT_DISK_MB".to_owned(), disk_mb.to_string());
    }
    if let Some(logs) = logs {
        for (name, value) in [
            ("TITUS_AGENT_LOG_DRIVER", "awslogs"),
            ("TITUS_AGENT_AWSLOGS_GROUP", &logs.group),
            ("TITUS_AGENT_AWSLOGS_REGION", &logs.region),
            ("TITUS_AGENT_AWSLOGS_ENDPOINT", &logs.endpoint),
        ] {
            env.entry(name.to_owned())
                .or_insert_with(|| value.to_owned());
        }
    }
    env.entry("TITUS_AGENT_POLL_WAIT_SECS".to_owned())
        .or_insert_with(|| "1".to_owned());
    // The local agents share one host: each serves task credentials on a port of its own.
    env.entry("TITUS_AGENT_CREDENTIALS_PORT".to_owned())
        .or_insert_with(|| "0".to_owned());
    env
}

/// Runs one agent of a running local stack in this process, until `shutdown` is cancelled (Ctrl-C
/// or SIGTERM). Like a host, it can be killed on its own: its tasks then are lost and replaced.
pub async fn agent(args: AgentArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let sdk_config = titus_aws::clients::load_sdk_config().await;
    let clients = AwsClients::from_config(&sdk_config);
    let endpoint = require_emulator()?;
    let logs = local_task_logs(
        args.task_logs,
        &clients,
        &sdk_config,
        &args.stage,
        &endpoint,
    )
    .await?;
    let env = local_agent_env(
        &args.stage,
        &args.id,
        &args.zone,
        args.capacity,
        logs.as_ref(),
    );
    let agent = titus_agent::bootstrap::start(&clients, &sdk_config, &env)
        .await
        .with_context(|| format!("starting agent {:?} in stage {:?}", args.id, args.stage))?;
    info!(component = "agent", id = %args.id, stage = %args.stage, "agent is up");
    // Stopping leaves the containers running, as a crashed host would; the next start with the
    // same id re-adopts them.
    agent.run(CancellationToken::new(), shutdown).await?;
    Ok(())
}

fn require_emulator() -> anyhow::Result<String> {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    anyhow::ensure!(
        !endpoint.is_empty(),
        "AWS_ENDPOINT_URL is not set: the local stack runs against an emulator; start it with \
         ./scripts/local-up.sh or localstack/emulator.sh start"
    );
    Ok(endpoint)
}

/// Runs the local stack until `shutdown` is cancelled (Ctrl-C in the CLI). Every component runs
/// on one control plane, built as the Lambda functions build theirs: the stage's ports and its
/// SSM settings with this process's `TITUS_STATUS_*` and `TITUS_SCHEDULER_*` variables over them.
pub async fn up(args: UpArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let endpoint = require_emulator()?;
    let names = Names::new(&args.stage).map_err(anyhow::Error::msg)?;
    let sdk_config = titus_aws::clients::load_sdk_config().await;
    let clients = AwsClients::from_config(&sdk_config);
    provision(&clients, &names.local_definitions())
        .await
        .with_context(|| format!("provisioning stage {:?} at {endpoint}", args.stage))?;
    info!(component = "local", stage = %args.stage, %endpoint, "provisioned");
    let cp = Arc::new(
        titus_app::control_plane(&clients, &args.stage)
            .await
            .with_context(|| format!("loading the settings of stage {:?}", args.stage))?,
    );

    let mut tasks = tokio::task::JoinSet::new();

    // The events function, following the tables' streams from now on: started first, so that
    // it sees every change the other components make.
    {
        let (cp, sdk_config, names, stop) = (
            cp.clone(),
            sdk_config.clone(),
            names.clone(),
            shutdown.clone(),
        );
        let (ready, following) = tokio::sync::oneshot::channel();
        tasks.spawn(
            async move {
                titus_app::streams::serve_events(cp, &sdk_config, &names, ready, stop)
                    .await
                    .map_err(anyhow::Error::msg)
                    .context("following the tables' streams into the event feed")
            }
            .instrument(tracing::info_span!("events")),
        );
        if following.await.is_err() {
            // The follower stopped before it read its streams: its error ends the stack below.
            warn!("the event feed's stream follower did not start");
        }
    }

    // The API, as the api Lambda's router.
    {
        let api_config = titus_api::ApiConfig::load(&clients.ssm, &names).await?;
        let limiter = titus_aws::DynamoRateLimiter::new(clients.dynamodb.clone(), &names);
        let state = titus_api::AppState::new(cp.clone(), api_config, Some(Arc::new(limiter)))
            .with_task_logs(Arc::new(titus_aws::CloudWatchTaskLogs::new(
                clients.logs.clone(),
            )));
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| {
                format!(
                    "binding the API to {}: is another stack running?",
                    args.listen
                )
            })?;
        info!(component = "api", address = %listener.local_addr()?, "listening");
        let stop = shutdown.clone();
        let app = titus_api::router(state);
        tasks.spawn(
            async move {
                titus_api::serve(listener, app, async move { stop.cancelled().await })
                    .await
                    .context("serving the API")
            }
            .instrument(tracing::info_span!("api")),
        );
    }

    // The submit function, fed from the submit queue.
    {
        cp.ports.rejections.queue_url().await?;
        let url = queue_url(&clients.sqs, &names.submit_queue()).await?;
        let (sqs, stop, cp) = (clients.sqs.clone(), shutdown.clone(), cp.clone());
        tasks.spawn(
            async move {
                pump(sqs, url, stop, |messages| {
                    let cp = cp.clone();
                    async move {
                        let now_ms = cp.ports().clock().now_ms();
                        batch_response(
                            &titus_control::submit::process_batch(&cp, messages, now_ms).await,
                        )
                    }
                })
                .await;
                Ok(())
            }
            .instrument(tracing::info_span!("submit")),
        );
    }

    // The status function, fed from the status queue and the registrations queue, and the
    // reconciler every few seconds.
    {
        cp.ports.dead_letters.queue_url().await?;
        let url = queue_url(&clients.sqs, &names.status_queue()).await?;
        let (sqs, stop, status_cp) = (clients.sqs.clone(), shutdown.clone(), cp.clone());
        tasks.spawn(
            async move {
                pump(sqs, url, stop, |messages| {
                    let cp = status_cp.clone();
                    async move {
                        let now_ms = cp.ports().clock().now_ms();
                        batch_response(
                            &titus_control::status::process_batch(&cp, messages, now_ms).await,
                        )
                    }
                })
                .await;
                Ok(())
            }
            .instrument(tracing::info_span!("status")),
        );
        {
            let (clients, names, stop, cp) =
                (clients.clone(), names.clone(), shutdown.clone(), cp.clone());
            tasks.spawn(
                async move {
                    titus_app::pump::serve_agent_requests(cp, &clients, &names, stop)
                        .await
                        .context("serving the agents' requests")
                }
                .instrument(tracing::info_span!("registrations")),
            );
        }
        let (stop, cp) = (shutdown.clone(), cp.clone());
        let interval = Duration::from_millis(args.reconcile_interval_ms.max(100));
        tasks.spawn(
            async move {
                while !stop.is_cancelled() {
                    let now_ms = cp.ports().clock().now_ms();
                    match titus_control::reconciler::reconcile(&cp, now_ms).await {
                        Ok(summary) => tracing::debug!(?summary, "reconciled"),
                        Err(e) => warn!(error = %e, "reconciler run failed"),
                    }
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::time::sleep(interval) => {}
                    }
                }
                Ok(())
            }
            .instrument(tracing::info_span!("reconciler")),
        );
    }

    // The scheduler loop: what the Express state machine does, tick after tick.
    {
        let (stop, cp) = (shutdown.clone(), cp.clone());
        tasks.spawn(
            async move {
                scheduler_loop(&cp, stop).await;
                Ok(())
            }
            .instrument(tracing::info_span!("scheduler")),
        );
    }

    // The scaler, against the emulator's EC2, when asked for.
    if args.scaler {
        let template = names.agent_launch_template();
        if titus_aws::provision::ensure_local_launch_template(&clients.ec2, &template).await? {
            info!(component = "scaler", %template, "created the agents' launch template in the emulator");
        }
        let source = titus_app::ScalerConfigSource::new(
            clients.ssm.clone(),
            &names,
            Duration::from_secs(60),
        );
        let interval = Duration::from_secs(args.scaler_interval_secs.max(1));
        let (stop, cp) = (shutdown.clone(), cp.clone());
        tasks.spawn(
            async move {
                scaler_loop(&cp, &source, interval, stop).await;
                Ok(())
            }
            .instrument(tracing::info_span!("scaler")),
        );
    }

    // The agents, on the local Docker engine.
    let logs = local_task_logs(
        args.task_logs,
        &clients,
        &sdk_config,
        &args.stage,
        &endpoint,
    )
    .await?;
    for n in 1..=args.agents {
        let id = format!("{}-agent-{n}", args.stage);
        let zone = format!("local-{}", (n - 1) % 2 + 1);
        let capacity = LocalCapacity {
            cpu_millis: args.agent_cpu_millis,
            memory_mb: args.agent_memory_mb,
            network_mbps: args.agent_network_mbps,
            disk_mb: args.agent_disk_mb,
        };
        let env = local_agent_env(&args.stage, &id, &zone, capacity, logs.as_ref());
        let agent = titus_agent::bootstrap::start(&clients, &sdk_config, &env)
            .instrument(tracing::info_span!("agent", id = %id))
            .await
            .with_context(|| format!("starting agent {id}"))?;
        let stop = shutdown.clone();
        tasks.spawn(
            async move {
                // Ctrl-C leaves the agents' containers running, as a crashed host would; the
                // next start re-adopts them.
                agent
                    .run(CancellationToken::new(), stop)
                    .await
                    .map(|_| ())
                    .map_err(anyhow::Error::from)
            }
            .instrument(tracing::info_span!("agent", id = %id)),
        );
    }
    info!(component = "local", agents = args.agents, scaler = args.scaler, api = %args.listen, "the local stack is up");

    let mut first_error = None;
    while let Some(result) = tasks.join_next().await {
        let outcome = result.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(e) = outcome {
            warn!(error = %format!("{e:#}"), "a component stopped");
            first_error.get_or_insert(e);
            shutdown.cancel();
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Ticks as the Express state machine does: a tick's summary is the next tick's input; a run that
/// lost the lease or used its time ends, and a new one starts.
async fn scheduler_loop(cp: &ControlPlane<AwsPorts>, stop: CancellationToken) {
    let owner = format!("local-{}", std::process::id());
    let mut input = TickInput {
        owner: owner.clone(),
        started_at_ms: None,
        iteration: 0,
    };
    while !stop.is_cancelled() {
        let pause = match titus_control::scheduler::tick(cp, input.clone()).await {
            Ok(summary) if !summary.lease_held || !summary.continue_loop => {
                input.started_at_ms = None;
                input.iteration = 0;
                Duration::from_secs(1)
            }
            Ok(summary) => {
                input.started_at_ms = Some(summary.started_at_ms);
                input.iteration = summary.iteration;
                if summary.placed > 0 {
                    Duration::ZERO
                } else {
                    LOCAL_IDLE_PAUSE
                }
            }
            Err(e) => {
                warn!(error = %e, "tick failed");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Runs the scaler as its schedule would: once a run interval, each run with its own lease owner.
async fn scaler_loop(
    cp: &ControlPlane<AwsPorts>,
    source: &titus_app::ScalerConfigSource,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut run = 0u64;
    while !stop.is_cancelled() {
        run += 1;
        match source.load().await {
            Ok(config) => {
                let owner = format!("local-scaler-{}-{run}", std::process::id());
                match titus_control::scaler::run(cp, &config, &owner).await {
                    Ok(summary) => info!(
                        launched = summary.launched.len(),
                        drained = summary.drained.len(),
                        terminated = summary.terminated.len(),
                        unplaced = summary.unplaced,
                        "scaler run"
                    ),
                    Err(e) => warn!(error = %e, "scaler run failed"),
                }
            }
            Err(e) => warn!(error = %e, "scaler configuration not readable"),
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

async fn queue_url(sqs: &aws_sdk_sqs::Client, name: &str) -> anyhow::Result<String> {
    titus_aws::sqs::queue_url(sqs, name)
        .await
        .with_context(|| format!("finding queue {name}"))
}
