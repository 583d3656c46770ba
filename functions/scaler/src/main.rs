//! The scaler Lambda: builds its clients once, then runs the scaler once per scheduled
//! invocation, with the invocation's request id as the lease owner.

use std::time::Duration;

use lambda_runtime::{service_fn, LambdaEvent};
use titus_aws::clients::load_sdk_config;
use titus_aws::{AwsClients, Names};
use titus_scaler::{AwsScaler, ConfigSource, ScaleSummary, ScalerError};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .without_time()
        .init();
    let stage = std::env::var("TITUS_STAGE")
        .unwrap_or_else(|_| titus_aws::resources::DEFAULT_STAGE.to_owned());
    let names = Names::new(&stage)?;
    let sdk_config = load_sdk_config().await;
    let clients = AwsClients::from_config(&sdk_config);
    let scaler = AwsScaler::with_clients(&clients, aws_sdk_ec2::Client::new(&sdk_config), &names);
    let config = ConfigSource::new(clients.ssm.clone(), &names, Duration::from_secs(60));
    // Fail the cold start on a bad configuration, naming the parameter.
    let first = config.load().await?;
    let config = config.with_max_age(Duration::from_secs(first.settings.config_max_age_secs));
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        let (scaler, config) = (&scaler, &config);
        async move {
            let current = config.load().await.map_err(ScalerError::from)?;
            let summary: ScaleSummary = scaler.run(&current, &event.context.request_id).await?;
            Ok::<_, ScalerError>(summary)
        }
    }))
    .await
}
