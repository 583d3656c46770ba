//! `titus-submit-lambda`: the SQS-triggered submit function. Clients and configuration are built
//! once; each invocation handles one batch and reports partial batch failures.

use anyhow::Context as _;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{service_fn, LambdaEvent};
use titus_aws::{AwsClients, DynamoJobStore, Names};
use titus_submit::{handle_batch, SqsRejectionQueue, SubmitConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .without_time()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let stage = std::env::var("TITUS_STAGE")
        .unwrap_or_else(|_| titus_aws::resources::DEFAULT_STAGE.to_owned());
    let names = Names::new(&stage).map_err(anyhow::Error::msg)?;
    let clients = AwsClients::from_env().await;
    let config = SubmitConfig::load(&clients.ssm, &clients.sqs, &stage)
        .await
        .with_context(|| {
            format!("loading the submit function's configuration for stage {stage:?}")
        })?;
    let store = DynamoJobStore::new(clients.dynamodb.clone(), &names);
    let rejections = SqsRejectionQueue::new(clients.sqs.clone(), config.rejected_queue_url.clone());
    let (store, rejections, config) = (&store, &rejections, &config);

    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let response: SqsBatchResponse = handle_batch(
            store,
            rejections,
            &config.admission,
            event.payload,
            now_ms(),
        )
        .await;
        Ok::<_, lambda_runtime::Error>(response)
    }))
    .await
    .map_err(|e| anyhow::anyhow!("Lambda runtime: {e}"))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}
