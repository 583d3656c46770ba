//! `titus-agent`: runs the agent on this host (the default), or reads a task's log tail, or
//! prints the effective configuration.
//!
//! Signals: SIGTERM drains (no new work, running tasks finish or are handed back as configured,
//! then the agent deregisters and exits); SIGINT stops at once and leaves the containers running
//! for the next start to re-adopt.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use titus_agent::bootstrap;
use titus_agent::DockerRuntime;
use titus_aws::clients::load_sdk_config;
use titus_aws::AwsClients;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(version, about = "The Titus agent: runs task containers on this host")]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent (the default).
    Run,
    /// Print the last lines of a task's container log (running, or finished and retained).
    Logs {
        task_id: String,
        #[arg(long, default_value_t = 100)]
        lines: usize,
    },
    /// Print the settings the agent would run with: the stage's parameter and TITUS_AGENT_*.
    Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,aws_config=warn,aws_smithy_runtime=warn".into());
    if std::env::var("TITUS_LOG_FORMAT").as_deref() == Ok("json") {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let args = Args::parse();
    let env: BTreeMap<String, String> = std::env::vars().collect();
    match args.command.unwrap_or(Command::Run) {
        Command::Run => run(&env).await,
        Command::Logs { task_id, lines } => {
            let runtime = DockerRuntime::connect(Duration::from_secs(30))?;
            let text = titus_agent::task_log_tail(&runtime, &task_id, lines)
                .await
                .with_context(|| format!("reading the log of task {task_id}"))?;
            print!("{text}");
            Ok(())
        }
        Command::Config => {
            let clients = AwsClients::from_config(&load_sdk_config().await);
            let (_, settings) = bootstrap::read_settings(&clients, &env).await?;
            println!("{}", serde_json::to_string_pretty(&settings)?);
            Ok(())
        }
    }
}

async fn run(env: &BTreeMap<String, String>) -> anyhow::Result<()> {
    let sdk_config = load_sdk_config().await;
    let clients = AwsClients::from_config(&sdk_config);
    let agent = bootstrap::start(&clients, &sdk_config, env)
        .await
        .context("starting the agent")?;

    let drain = CancellationToken::new();
    let stop = CancellationToken::new();
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    {
        let (drain, stop) = (drain.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = terminate.recv() => drain.cancel(),
                    _ = interrupt.recv() => stop.cancel(),
                }
            }
        });
    }
    let outcome = agent.run(drain, stop).await.context("running the agent")?;
    tracing::info!(?outcome, "agent exits");
    Ok(())
}
