//! The scheduler Lambda: builds the control plane once, then runs one tick per invocation. The
//! Step Functions loop passes each tick's summary (`TickSummary`) on as the next one's input
//! (`TickInput`). After each tick it prints the tick's metrics as one CloudWatch EMF line.

use lambda_runtime::{service_fn, LambdaEvent};
use titus_app::lambda::{emit_metrics, init_logging, Failed};
use titus_control::scheduler::{tick, TickInput};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_logging();
    let clients = titus_aws::AwsClients::from_env().await;
    let stage = titus_app::stage_from_env();
    let cp = titus_app::control_plane(&clients, &stage).await?;
    let (cp, stage) = (&cp, stage.as_str());
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<TickInput>| async move {
            let result = tick(cp, event.payload).await;
            emit_metrics(cp, stage);
            result.map_err(Failed)
        },
    ))
    .await
}
