//! The scheduler Lambda: builds the control plane once, then runs one tick per invocation. The
//! Step Functions loop passes each tick's summary (`TickSummary`) on as the next one's input
//! (`TickInput`).

use lambda_runtime::{service_fn, LambdaEvent};
use titus_app::lambda::{init_logging, Failed};
use titus_control::scheduler::{tick, TickInput};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_logging();
    let clients = titus_aws::AwsClients::from_env().await;
    let cp = titus_app::control_plane(&clients, &titus_app::stage_from_env()).await?;
    let cp = &cp;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<TickInput>| async move {
            tick(cp, event.payload).await.map_err(Failed)
        },
    ))
    .await
}
