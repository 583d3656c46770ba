//! `titus-status-lambda`: the SQS-triggered status function. Clients and configuration are built
//! once; each invocation applies one batch of status messages and reports partial batch failures
//! (the event source mapping needs `ReportBatchItemFailures`).

use anyhow::Context as _;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{service_fn, LambdaEvent};
use titus_aws::AwsClients;
use titus_status::{handle_batch, init_lambda_logging, now_ms, AwsStatusContext, StatusConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_lambda_logging();
    let config = StatusConfig::from_env().context("reading the status function's settings")?;
    let stage = config.stage.clone();
    let clients = AwsClients::from_env().await;
    let ctx = AwsStatusContext::with_clients(&clients, config)
        .await
        .with_context(|| format!("finding the status DLQ of stage {stage:?}"))?;
    let ctx = &ctx;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let response: SqsBatchResponse = handle_batch(ctx, event.payload, now_ms()).await;
        Ok::<_, lambda_runtime::Error>(response)
    }))
    .await
    .map_err(|e| anyhow::anyhow!("Lambda runtime: {e}"))
}
