//! `titus`: the command line for Titus. It talks to any deployment by URL — a bearer token for
//! the local stack, SigV4 for API Gateway — and prints tables, or JSON with `--output json`.
//!
//! Exit codes: 0 success; 2 invalid input (bad flags, a descriptor the API refused); 3 not found;
//! 4 conflict; 5 not authenticated, not allowed, rate-limited or over quota; 6 API unreachable or failing; 7 `job wait`: the
//! job finished but not every task ended normally; 8 `job wait`: timed out.

mod client;
mod commands;
mod config;
mod events;
mod local;
mod output;
mod proxy;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use crate::client::{Auth, CliError, Client};

#[derive(Debug, Parser)]
#[command(name = "titus", version, about = "Run containers on Titus", after_help = EXIT_CODES)]
struct Cli {
    /// The API's base URL (else the context's, else http://127.0.0.1:7001).
    #[arg(long, global = true, env = "TITUS_URL")]
    url: Option<String>,
    /// Bearer token for the local stack (else the context's, else the local stack's default
    /// identity's token).
    #[arg(long, global = true, env = "TITUS_TOKEN")]
    token: Option<String>,
    /// Sign requests with AWS SigV4 for API Gateway in this region, instead of a bearer token.
    #[arg(long, global = true, env = "TITUS_SIGV4_REGION")]
    sigv4_region: Option<String>,
    /// A named context of the config file (`titus config list`) instead of its current one.
    #[arg(long, global = true, env = "TITUS_CONTEXT")]
    context: Option<String>,
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
    /// The event feed: job and task changes, placement failures. Without --follow, prints what
    /// came since --since (default: the last 10 minutes) and stops.
    Events(EventsArgs),
    /// Show the quotas you may see (your teams' and every capacity group's) and their use.
    Quota,
    /// Run the whole system on this machine.
    #[command(subcommand)]
    Local(LocalCommand),
    /// Named contexts (URL, token or SigV4 region) in the config file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The web dashboard of the context's deployment at http://127.0.0.1:8001/ui/: a local proxy
    /// that signs every request (SigV4 for a deployed stack, or the context's token), as
    /// `kubectl proxy` does. Until Ctrl-C.
    Ui(UiArgs),
    /// Print a shell completion script: `source <(titus completion bash)`.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, clap::Args)]
struct UiArgs {
    /// Where the proxy listens (loopback only; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8001")]
    listen: std::net::SocketAddr,
}

#[derive(Debug, clap::Args)]
struct EventsArgs {
    /// Only this job's events.
    #[arg(long)]
    job: Option<String>,
    /// Only events of this owner team's jobs.
    #[arg(long)]
    owner: Option<String>,
    /// Only these types, comma-separated: JobStateChange, JobCapacityChange,
    /// JobAttributesChange, TaskStateChange, PlacementFailure.
    #[arg(long = "type", value_delimiter = ',')]
    types: Vec<String>,
    /// From this long ago: a duration such as 90s, 10m, 1h30m or 2d (the feed keeps 7 days).
    #[arg(long, default_value = "10m")]
    since: String,
    /// Keep waiting for new events until Ctrl-C.
    #[arg(long, short)]
    follow: bool,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// List the contexts; `*` marks the current one.
    List,
    /// Add or change a context.
    SetContext {
        name: String,
        #[arg(long)]
        url: Option<String>,
        #[arg(long)]
        token: Option<String>,
        #[arg(long)]
        sigv4_region: Option<String>,
    },
    /// Make a context the current one.
    UseContext { name: String },
    /// Remove a context.
    DeleteContext { name: String },
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
    if let Command::Completion { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "titus", &mut std::io::stdout());
        return;
    }
    let result = match cli.command {
        Command::Config(command) => config_command(command),
        command => match target(&cli.url, &cli.token, &cli.sigv4_region, &cli.context) {
            Ok(target) => {
                let auth = match target.sigv4_region {
                    Some(region) => Auth::SigV4 { region },
                    None => Auth::Bearer(target.token),
                };
                match Client::new(&target.url, auth) {
                    Ok(client) => Box::pin(run(&client, command, cli.output)).await,
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        },
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
        Command::Events(args) => {
            let mut feed = events::Feed {
                job: args.job,
                owner: args.owner,
                types: Vec::new(),
            };
            for text in &args.types {
                feed.types
                    .push(titus_core::events::EventType::parse(text).ok_or_else(|| {
                        CliError::Invalid(format!(
                            "--type {text:?}: expected one of {}",
                            titus_core::events::EventType::ALL
                                .map(|t| t.as_str())
                                .join(", ")
                        ))
                    })?);
            }
            let ago = events::duration_ms(&args.since).ok_or_else(|| {
                CliError::Invalid(format!(
                    "--since {:?}: expected a duration such as 90s, 10m, 1h30m or 2d",
                    args.since
                ))
            })?;
            let since = commands::now_ms().saturating_sub(ago);
            events::show(client, feed, Some(since), args.follow, output, |_| false).await
        }
        Command::Ui(args) => {
            let auth = match client.auth() {
                Auth::SigV4 { region } => format!("signed with SigV4 for {region}"),
                Auth::Bearer(_) => "with the context's bearer token".to_owned(),
            };
            let base = client.base_url().to_owned();
            proxy::serve(
                client.clone(),
                args.listen,
                move |address| {
                    println!("The dashboard of {base} is at http://{address}/ui/ (requests {auth}); Ctrl-C stops the proxy.");
                },
                async {
                    let _ = tokio::signal::ctrl_c().await;
                },
            )
            .await
        }
        Command::Local(_) | Command::Config(_) | Command::Completion { .. } => Ok(()),
    }
}

fn config_path() -> Result<std::path::PathBuf, CliError> {
    config::path().ok_or_else(|| {
        CliError::Invalid("no config file path: set TITUS_CONFIG or HOME".to_owned())
    })
}

/// The command line's target, filled in from the config file's context.
fn target(
    url: &Option<String>,
    token: &Option<String>,
    sigv4_region: &Option<String>,
    context: &Option<String>,
) -> Result<config::Target, CliError> {
    let given = config::Given {
        context: context.clone(),
        url: url.clone(),
        token: token.clone(),
        sigv4_region: sigv4_region.clone(),
    };
    let loaded = match config::path() {
        Some(path) => config::Config::load(&path)?,
        None => config::Config::default(),
    };
    loaded.resolve(&given)
}

fn config_command(command: ConfigCommand) -> Result<(), CliError> {
    let path = config_path()?;
    let mut config = config::Config::load(&path)?;
    match command {
        ConfigCommand::List => {
            let rows: Vec<Vec<String>> = config
                .contexts
                .iter()
                .map(|(name, c)| {
                    let current = config.current.as_deref() == Some(name.as_str());
                    vec![
                        if current { "*" } else { "" }.to_owned(),
                        name.clone(),
                        c.url.clone().unwrap_or_default(),
                        match (&c.sigv4_region, &c.token) {
                            (Some(region), _) => format!("sigv4 {region}"),
                            (None, Some(_)) => "token".to_owned(),
                            (None, None) => String::new(),
                        },
                    ]
                })
                .collect();
            output::table(&["", "NAME", "URL", "AUTH"], &rows);
            return Ok(());
        }
        ConfigCommand::SetContext {
            name,
            url,
            token,
            sigv4_region,
        } => {
            let context = config.contexts.entry(name.clone()).or_default();
            context.url = url.or(context.url.take());
            context.token = token.or(context.token.take());
            context.sigv4_region = sigv4_region.or(context.sigv4_region.take());
            if config.current.is_none() {
                config.current = Some(name);
            }
        }
        ConfigCommand::UseContext { name } => {
            if !config.contexts.contains_key(&name) {
                return Err(CliError::Invalid(format!(
                    "no context named {name:?}; add it with titus config set-context {name} --url URL"
                )));
            }
            config.current = Some(name);
        }
        ConfigCommand::DeleteContext { name } => {
            if config.contexts.remove(&name).is_none() {
                return Err(CliError::Invalid(format!("no context named {name:?}")));
            }
            if config.current.as_deref() == Some(name.as_str()) {
                config.current = None;
            }
        }
    }
    config.save(&path)?;
    println!("{}", path.display());
    Ok(())
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
