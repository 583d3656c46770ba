//! `titus local up`: the whole system on one machine. The functions' handlers run in-process with
//! the event shapes Lambda gives them — the API router as plain HTTP, SQS batches pumped from the
//! emulator's queues, the scheduler loop's ticks — and N agents run tasks on the local Docker
//! engine. Ctrl-C stops everything.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, QueueAttributeName};
use clap::Args;
use titus_aws::provision::provision;
use titus_aws::{AwsClients, DynamoAgentStore, DynamoJobStore, Names, SqsCommandQueue};
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
    env.entry("TITUS_AGENT_POLL_WAIT_SECS".to_owned())
        .or_insert_with(|| "1".to_owned());
    env
}

/// Runs one agent of a running local stack in this process, until `shutdown` is cancelled (Ctrl-C
/// or SIGTERM). Like a host, it can be killed on its own: its tasks then are lost and replaced.
pub async fn agent(args: AgentArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    require_emulator()?;
    let sdk_config = titus_aws::clients::load_sdk_config().await;
    let clients = AwsClients::from_config(&sdk_config);
    let env = local_agent_env(&args.stage, &args.id, &args.zone, args.capacity);
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

/// Runs the local stack until `shutdown` is cancelled (Ctrl-C in the CLI).
pub async fn up(args: UpArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let endpoint = require_emulator()?;
    let names = Names::new(&args.stage).map_err(anyhow::Error::msg)?;
    let sdk_config = titus_aws::clients::load_sdk_config().await;
    let clients = AwsClients::from_config(&sdk_config);
    provision(&clients, &names.definitions())
        .await
        .with_context(|| format!("provisioning stage {:?} at {endpoint}", args.stage))?;
    info!(component = "local", stage = %args.stage, %endpoint, "provisioned");

    let mut tasks = tokio::task::JoinSet::new();

    // The API, as the api Lambda's router.
    let api_config = titus_api::ApiConfig::load(&clients.ssm, &args.stage).await?;
    let state = titus_api::AppState::new(
        DynamoJobStore::new(clients.dynamodb.clone(), &names),
        DynamoAgentStore::new(clients.dynamodb.clone(), &names),
        SqsCommandQueue::new(clients.sqs.clone()),
        api_config,
    );
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| {
            format!(
                "binding the API to {}: is another stack running?",
                args.listen
            )
        })?;
    info!(component = "api", address = %listener.local_addr()?, "listening");
    {
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
        let config =
            titus_submit::SubmitConfig::load(&clients.ssm, &clients.sqs, &args.stage).await?;
        let store = DynamoJobStore::new(clients.dynamodb.clone(), &names);
        let rejections = titus_submit::SqsRejectionQueue::new(
            clients.sqs.clone(),
            config.rejected_queue_url.clone(),
        );
        let (url, arn) = queue(&clients.sqs, &names.submit_queue()).await?;
        let sqs = clients.sqs.clone();
        let stop = shutdown.clone();
        tasks.spawn(
            async move {
                pump(sqs, url, arn, stop, |event| {
                    titus_submit::handle_batch(
                        &store,
                        &rejections,
                        &config.admission,
                        event,
                        now_ms(),
                    )
                })
                .await;
                Ok(())
            }
            .instrument(tracing::info_span!("submit")),
        );
    }

    // The status function, fed from the status queue, and the reconciler every few seconds.
    {
        let mut config = titus_status::StatusConfig::from_env()?;
        config.stage = args.stage.clone();
        let ctx = titus_status::AwsStatusContext::with_clients(&clients, config).await?;
        let ctx = std::sync::Arc::new(ctx);
        let (url, arn) = queue(&clients.sqs, &names.status_queue()).await?;
        let (sqs, stop, status_ctx) = (clients.sqs.clone(), shutdown.clone(), ctx.clone());
        tasks.spawn(
            async move {
                pump(sqs, url, arn, stop, |event| {
                    let ctx = status_ctx.clone();
                    async move { titus_status::handle_batch(&ctx, event, now_ms()).await }
                })
                .await;
                Ok(())
            }
            .instrument(tracing::info_span!("status")),
        );
        let stop = shutdown.clone();
        tasks.spawn(
            async move {
                while !stop.is_cancelled() {
                    match titus_status::reconcile(&ctx, now_ms()).await {
                        Ok(summary) => tracing::debug!(?summary, "reconciled"),
                        Err(e) => warn!(error = %e, "reconciler run failed"),
                    }
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    }
                }
                Ok(())
            }
            .instrument(tracing::info_span!("reconciler")),
        );
    }

    // The scheduler loop: what the Express state machine does, tick after tick.
    {
        let mut config = titus_scheduler::SchedulerConfig::from_env()?;
        config.stage = args.stage.clone();
        let scheduler = titus_scheduler::AwsScheduler::with_clients(&clients, config);
        let stop = shutdown.clone();
        tasks.spawn(
            async move {
                let owner = format!("local-{}", std::process::id());
                let mut input = titus_scheduler::TickInput {
                    owner: owner.clone(),
                    started_at_ms: None,
                    iteration: 0,
                };
                while !stop.is_cancelled() {
                    // As the state machine does: a tick's summary is the next tick's input; a run
                    // that lost the lease or used its time ends, and a new one starts.
                    let pause = match scheduler.tick(input.clone()).await {
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
                Ok(())
            }
            .instrument(tracing::info_span!("scheduler")),
        );
    }

    // The agents, on the local Docker engine.
    for n in 1..=args.agents {
        let id = format!("{}-agent-{n}", args.stage);
        let zone = format!("local-{}", (n - 1) % 2 + 1);
        let capacity = LocalCapacity {
            cpu_millis: args.agent_cpu_millis,
            memory_mb: args.agent_memory_mb,
            network_mbps: args.agent_network_mbps,
            disk_mb: args.agent_disk_mb,
        };
        let env = local_agent_env(&args.stage, &id, &zone, capacity);
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
    info!(component = "local", agents = args.agents, api = %args.listen, "the local stack is up");

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
        Some(e) if !shutdown.is_cancelled() => Err(e),
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn now_ms() -> u64 {
    titus_scheduler::now_ms()
}

async fn queue(sqs: &aws_sdk_sqs::Client, name: &str) -> anyhow::Result<(String, String)> {
    let url = sqs
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .with_context(|| format!("finding queue {name}"))?
        .queue_url()
        .unwrap_or_default()
        .to_owned();
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .with_context(|| format!("reading queue {name}"))?
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .unwrap_or_default();
    Ok((url, arn))
}

/// Feeds a queue to a Lambda-style batch handler, as Lambda's event source mapping does: long
/// polls of up to ten messages, then deletes every message not reported as a batch item
/// failure. Failures come back after the visibility timeout, and go to the DLQ after its limit.
async fn pump<H, F>(
    sqs: aws_sdk_sqs::Client,
    url: String,
    arn: String,
    stop: CancellationToken,
    handler: H,
) where
    H: Fn(SqsEvent) -> F,
    F: Future<Output = SqsBatchResponse>,
{
    while !stop.is_cancelled() {
        let receive = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .send();
        let out = tokio::select! {
            _ = stop.cancelled() => return,
            out = receive => out,
        };
        let messages = match out {
            Ok(out) => out.messages.unwrap_or_default(),
            Err(e) => {
                warn!(queue = %url, error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "receive failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        let mut event = SqsEvent::default();
        event.records = messages
            .iter()
            .map(|m| {
                let mut record = SqsMessage::default();
                record.message_id = m.message_id().map(str::to_owned);
                record.receipt_handle = m.receipt_handle().map(str::to_owned);
                record.body = m.body().map(str::to_owned);
                record.event_source = Some("aws:sqs".to_owned());
                record.event_source_arn = Some(arn.clone());
                record
            })
            .collect();
        let response = handler(event).await;
        let failed: Vec<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        let done: Vec<DeleteMessageBatchRequestEntry> = messages
            .iter()
            .enumerate()
            .filter(|(_, m)| !failed.contains(&m.message_id().unwrap_or_default()))
            .filter_map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .build()
                    .ok()
            })
            .collect();
        if !done.is_empty() {
            // A message not deleted comes back; every handler is idempotent.
            if let Err(e) = sqs
                .delete_message_batch()
                .queue_url(&url)
                .set_entries(Some(done))
                .send()
                .await
            {
                warn!(queue = %url, error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "delete failed");
            }
        }
    }
}
