//! `titus`: the command line for Titus. It talks to any deployment by URL — a bearer token for
//! the local stack, SigV4 for API Gateway — and prints tables, or JSON with `--output json`.
//!
//! Exit codes: 0 success; 2 invalid input (bad flags, a descriptor the API refused); 3 not found;
//! 4 conflict; 5 not authenticated, not allowed, rate-limited or over quota; 6 API unreachable or failing; 7 `job wait`: the
//! job finished but not every task ended normally; 8 `job wait`: timed out.

mod client;
mod commands;
mod local;
mod output;

use clap::{Parser, Subcommand, ValueEnum};

use crate::client::{Auth, CliError, Client};

#[derive(Debug, Parser)]
#[command(name = "titus", version, about = "Run containers on Titus", after_help = EXIT_CODES)]
struct Cli {
    /// The API's base URL.
    #[arg(
        long,
        global = true,
        env = "TITUS_URL",
        default_value = "http://127.0.0.1:7001"
    )]
    url: String,
    /// Bearer token for the local stack (its default identity's token by default).
    #[arg(
        long,
        global = true,
        env = "TITUS_TOKEN",
        default_value = "local-dev-token"
    )]
    token: String,
    /// Sign requests with AWS SigV4 for API Gateway in this region, instead of a bearer token.
    #[arg(long, global = true, env = "TITUS_SIGV4_REGION")]
    sigv4_region: Option<String>,
    #[arg(long, short, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 success, 2 invalid input, 3 not found, 4 conflict, \
5 not authenticated, not allowed, rate-limited or over quota, 6 API unreachable or failing, 7 job finished unsuccessfully \
(job wait), 8 timed out (job wait).";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Submit, inspect and change jobs.
    #[command(subcommand)]
    Job(commands::JobCommand),
    /// Inspect and kill tasks.
    #[command(subcommand)]
    Task(commands::TaskCommand),
    /// Inspect agents.
    #[command(subcommand)]
    Agent(commands::AgentCommand),
    /// Show the quotas you may see (your teams' and every capacity group's) and their use.
    Quota,
    /// Run the whole system on this machine.
    #[command(subcommand)]
    Local(LocalCommand),
}

#[derive(Debug, Subcommand)]
enum LocalCommand {
    /// Provision the emulator and run the API (on 127.0.0.1:7001), the scheduler loop, status
    /// ingest, the reconciler and N agents, until Ctrl-C.
    Up(local::UpArgs),
    /// Run one more agent of a running local stack in its own process, until Ctrl-C or SIGTERM.
    Agent(local::AgentArgs),
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Command::Local(command) = cli.command {
        std::process::exit(run_local(command).await);
    }
    let auth = match &cli.sigv4_region {
        Some(region) => Auth::SigV4 {
            region: region.clone(),
        },
        None => Auth::Bearer(cli.token.clone()),
    };
    let result = match Client::new(&cli.url, auth) {
        Ok(client) => run(&client, cli.command, cli.output).await,
        Err(e) => Err(e),
    };
    if let Err(err) = result {
        eprintln!("titus: {err}");
        std::process::exit(err.exit_code());
    }
}

async fn run(client: &Client, command: Command, output: Output) -> Result<(), CliError> {
    match command {
        Command::Job(command) => commands::job(client, command, output).await,
        Command::Task(command) => commands::task(client, command, output).await,
        Command::Agent(command) => commands::agent(client, command, output).await,
        Command::Quota => commands::quota(client, output).await,
        Command::Local(_) => Ok(()),
    }
}

/// Runs the local stack, or one local agent, with one log line per event tagged by component,
/// until Ctrl-C (or SIGTERM).
async fn run_local(command: LocalCommand) -> i32 {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                "info,aws_config=warn,aws_smithy_runtime=warn,hyper=warn".into()
            }),
        )
        .with_target(false)
        .compact()
        .init();
    let shutdown = tokio_util::sync::CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let terminate = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut signal) => {
                        signal.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C: stopping"),
                _ = terminate => tracing::info!("SIGTERM: stopping"),
            }
            shutdown.cancel();
        });
    }
    let (name, outcome) = match command {
        LocalCommand::Up(args) => ("titus local up", local::up(args, shutdown).await),
        LocalCommand::Agent(args) => ("titus local agent", local::agent(args, shutdown).await),
    };
    match outcome {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            6
        }
    }
}
