//! `titus-events-lambda`: the event feed's writer. Its event source mappings hand it the jobs',
//! tasks' and placement results' stream records in order; each batch becomes events in the
//! events table and on the stage's EventBridge bus. A failed batch answers with its first
//! record as the batch item failure, so the whole batch comes again (the same events, the same
//! ids); records before it in an earlier, successful batch are never repeated.

use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::json;
use titus_app::lambda::{init_logging, Failed};
use titus_app::streams::{stream_changes, StreamEvent};
use titus_aws::events::EventBridgePublisher;
use titus_aws::Names;
use titus_control::events::ingest;
use titus_control::ControlError;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_logging();
    let sdk_config = titus_aws::clients::load_sdk_config().await;
    let clients = titus_aws::AwsClients::from_config(&sdk_config);
    let stage = titus_app::stage_from_env();
    let names = Names::new(&stage).map_err(lambda_runtime::Error::from)?;
    let cp = titus_app::control_plane(&clients, &stage).await?;
    let publisher =
        EventBridgePublisher::new(aws_sdk_eventbridge::Client::new(&sdk_config), &names);
    let (cp, names, publisher, stage) = (&cp, &names, &publisher, stage.as_str());
    lambda_runtime::run(service_fn(move |event: LambdaEvent<StreamEvent>| async move {
        let changes = stream_changes(&event.payload, names)
            .map_err(|e| Failed(ControlError::Configuration(e)))?;
        match ingest(cp, publisher, &changes).await {
            Ok(summary) => {
                tracing::info!(?summary, "events written");
                titus_app::lambda::emit_metrics(cp, stage);
                Ok(json!({"batchItemFailures": []}))
            }
            Err(e) => {
                tracing::error!(error = %e, records = changes.len(), "the batch gave no events; it comes again");
                let first = changes.first().map(|c| c.sequence.clone()).unwrap_or_default();
                Ok::<_, Failed>(json!({"batchItemFailures": [{"itemIdentifier": first}]}))
            }
        }
    }))
    .await
}
