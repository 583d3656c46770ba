//! `titus-provision`: creates (or checks) every table, queue and SSM parameter of a stage in
//! whatever AWS endpoint the environment names — the local emulator, LocalStack or AWS itself.
//! With `--teardown` it instead removes what the stage made at run time (the scaler's instances,
//! the agents' queues), before its stack is destroyed.

use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use titus_aws::provision::provision;
use titus_aws::teardown::{self, TeardownPlan};
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
    #[arg(long, conflicts_with = "teardown")]
    local_tokens: bool,
    /// Remove what the stage made at run time, which its stack does not know: terminate the
    /// instances its scaler launched (tagged `titus:stage={stage}` and
    /// `titus:managed-by=titus-scaler`) and delete its agents' queues
    /// (`titus-{stage}-agent-*`). Run it before `cdk destroy`; safe to run again.
    #[arg(long, conflicts_with = "print_definitions")]
    teardown: bool,
    /// With --teardown: list what would be removed and change nothing.
    #[arg(long, requires = "teardown")]
    dry_run: bool,
    /// With --teardown: how long to wait for the instances to be shutting down or terminated.
    #[arg(long, requires = "teardown", default_value_t = 300)]
    wait_secs: u64,
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
    if args.teardown {
        return teardown_stage(&clients, &names, args.dry_run, args.wait_secs).await;
    }
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

/// `--teardown`: prints what it finds, then (unless a dry run) what it removed.
async fn teardown_stage(
    clients: &AwsClients,
    names: &Names,
    dry_run: bool,
    wait_secs: u64,
) -> anyhow::Result<()> {
    let stage = names.stage();
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    let target = if endpoint.is_empty() {
        "AWS".to_owned()
    } else {
        format!("the endpoint {endpoint}")
    };
    let plan = teardown::plan(clients, names)
        .await
        .with_context(|| format!("finding what stage {stage:?} made at run time in {target}"))?;
    if plan.is_empty() {
        println!(
            "stage {stage:?} has nothing left to remove in {target}: no instance launched by its \
             scaler, no agent queue"
        );
        return Ok(());
    }
    if dry_run {
        print_plan(&plan);
        println!(
            "dry run: would remove {} instances and {} agent queues of stage {stage:?} in \
             {target}; nothing was changed",
            plan.instances.len(),
            plan.queues.len()
        );
        return Ok(());
    }
    let wait = Duration::from_secs(wait_secs);
    let report = teardown::execute(clients, &plan, wait, Duration::from_secs(5))
        .await
        .with_context(|| format!("tearing down stage {stage:?} in {target}"))?;
    for id in &report.terminated {
        println!("terminated instance {id}");
    }
    for name in &report.deleted_queues {
        println!("deleted    queue {name}");
    }
    for name in &report.already_gone {
        println!("gone       queue {name} (already deleted)");
    }
    anyhow::ensure!(
        report.still_running.is_empty(),
        "instances {} of stage {stage:?} were not shutting down within {wait_secs} s of their \
         termination; expected them to be shutting-down or terminated. Run the teardown again",
        report.still_running.join(", ")
    );
    println!(
        "stage {stage:?} is torn down in {target}: {} instances terminated, {} agent queues \
         deleted",
        report.terminated.len(),
        report.deleted_queues.len()
    );
    Ok(())
}

fn print_plan(plan: &TeardownPlan) {
    for instance in &plan.instances {
        println!(
            "would terminate instance {} ({})",
            instance.id, instance.state
        );
    }
    for queue in &plan.queues {
        println!("would delete    queue {}", queue.name);
    }
}
