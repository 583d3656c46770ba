//! `titus-reconciler-lambda`: the scheduled reconciler. Clients and configuration are built once;
//! each invocation (an EventBridge Scheduler event, whose content is ignored) is one run.

use anyhow::Context as _;
use lambda_runtime::{service_fn, LambdaEvent};
use titus_aws::AwsClients;
use titus_status::{init_lambda_logging, now_ms, reconcile, AwsStatusContext, StatusConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_lambda_logging();
    let config = StatusConfig::from_env().context("reading the reconciler's settings")?;
    let stage = config.stage.clone();
    let clients = AwsClients::from_env().await;
    let ctx = AwsStatusContext::with_clients(&clients, config)
        .await
        .with_context(|| format!("finding the status DLQ of stage {stage:?}"))?;
    let ctx = &ctx;
    lambda_runtime::run(service_fn(
        move |_event: LambdaEvent<serde_json::Value>| async move { reconcile(ctx, now_ms()).await },
    ))
    .await
    .map_err(|e| anyhow::anyhow!("Lambda runtime: {e}"))
}
