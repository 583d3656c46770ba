//! The scaler Lambda: builds the control plane once, then runs the scaler once per scheduled
//! invocation, with the invocation's request id as the lease owner. Its pools' settings are read
//! again once older than `config_max_age_secs`.

use std::time::Duration;

use lambda_runtime::{service_fn, LambdaEvent};
use titus_app::lambda::{init_logging, Failed};
use titus_app::ScalerConfigSource;
use titus_aws::Names;
use titus_control::scaler::run;
use titus_control::ControlError;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_logging();
    let clients = titus_aws::AwsClients::from_env().await;
    let stage = titus_app::stage_from_env();
    let cp = titus_app::control_plane(&clients, &stage).await?;
    let names = Names::new(&stage)?;
    let source = ScalerConfigSource::new(clients.ssm.clone(), &names, Duration::from_secs(60));
    // Fail the cold start on a bad configuration, naming the parameter.
    let first = source.load().await?;
    let source = source.with_max_age(Duration::from_secs(first.settings.config_max_age_secs));
    let (cp, source, stage) = (&cp, &source, stage.as_str());
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let config = source
                .load()
                .await
                .map_err(|e| Failed(ControlError::Configuration(e.to_string())))?;
            let summary = run(cp, &config, &event.context.request_id)
                .await
                .map_err(Failed);
            titus_app::lambda::emit_metrics(cp, stage);
            summary
        },
    ))
    .await
}
