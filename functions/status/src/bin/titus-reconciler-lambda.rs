//! `titus-reconciler-lambda`: the scheduled reconciler. The control plane is built once; each
//! invocation (an EventBridge Scheduler event, whose content is ignored) is one run.

use lambda_runtime::{service_fn, LambdaEvent};
use titus_app::lambda::{init_logging, Failed};
use titus_control::reconciler::reconcile;
use titus_core::ports::{Clock, Ports};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_logging();
    let clients = titus_aws::AwsClients::from_env().await;
    let cp = titus_app::control_plane(&clients, &titus_app::stage_from_env()).await?;
    let cp = &cp;
    lambda_runtime::run(service_fn(
        move |_event: LambdaEvent<serde_json::Value>| async move {
            let now_ms = cp.ports().clock().now_ms();
            reconcile(cp, now_ms).await.map_err(Failed)
        },
    ))
    .await
}
