//! `titus-provision`: creates (or checks) every table, queue and SSM parameter of a stage in
//! whatever AWS endpoint the environment names — the local emulator, LocalStack or AWS itself.

use anyhow::Context as _;
use clap::Parser;
use titus_aws::provision::provision;
use titus_aws::{AwsClients, Names};

#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The stage whose resources to provision; resource names carry it (`titus-{stage}-jobs`).
    #[arg(long, env = "TITUS_STAGE", default_value = titus_aws::resources::DEFAULT_STAGE)]
    stage: String,
    /// Print the stage's resource definitions as JSON and exit, touching nothing.
    #[arg(long)]
    print_definitions: bool,
    /// Also write the local-only bearer tokens (`local-dev-token`, `local-admin-token`) and
    /// their admin: for a stage on the local emulator only, so AWS_ENDPOINT_URL must be set.
    #[arg(long)]
    local_tokens: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = Args::parse();
    let names = Names::new(&args.stage).map_err(anyhow::Error::msg)?;
    let definitions = if args.local_tokens {
        let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
        anyhow::ensure!(
            !endpoint.is_empty(),
            "--local-tokens writes well-known tokens, for an emulator only; expected \
             AWS_ENDPOINT_URL to name the emulator"
        );
        names.local_definitions()
    } else {
        names.definitions()
    };
    if args.print_definitions {
        println!("{}", serde_json::to_string_pretty(&definitions)?);
        return Ok(());
    }
    let clients = AwsClients::from_env().await;
    let report = provision(&clients, &definitions)
        .await
        .with_context(|| format!("provisioning stage {:?}", args.stage))?;
    for what in &report.created {
        println!("created  {what}");
    }
    for what in &report.existing {
        println!("exists   {what}");
    }
    println!(
        "stage {:?} is provisioned: {} tables, {} queues, {} parameters",
        args.stage,
        definitions.tables.len(),
        definitions.queues.len(),
        definitions.parameters.len()
    );
    Ok(())
}
