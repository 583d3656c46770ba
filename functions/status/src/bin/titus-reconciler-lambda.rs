//! `titus-reconciler-lambda`: the scheduled reconciler. The control plane is built once; each
//! invocation (an EventBridge Scheduler event, whose content is ignored) is one run, followed
//! by its metrics as one CloudWatch EMF line.

use lambda_runtime::{service_fn, LambdaEvent};
use titus_app::lambda::{emit_metrics, init_logging, Failed};
use titus_control::reconciler::reconcile;
use titus_core::ports::{Clock, Ports};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_logging();
    let clients = titus_aws::AwsClients::from_env().await;
    let stage = titus_app::stage_from_env();
    let cp = titus_app::control_plane(&clients, &stage).await?;
    let (cp, stage) = (&cp, stage.as_str());
    lambda_runtime::run(service_fn(
        move |_event: LambdaEvent<serde_json::Value>| async move {
            let now_ms = cp.ports().clock().now_ms();
            let result = reconcile(cp, now_ms).await;
            emit_metrics(cp, stage);
            result.map_err(Failed)
        },
    ))
    .await
}
