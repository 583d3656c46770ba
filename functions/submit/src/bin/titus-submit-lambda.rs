//! `titus-submit-lambda`: the SQS-triggered submit function. The control plane is built once;
//! each invocation stores one batch of job descriptors from the submit queue (refused ones go to
//! the rejection queue with their errors) and reports partial batch failures.

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{service_fn, LambdaEvent};
use titus_app::lambda::{batch_response, init_logging, sqs_messages, Failed};
use titus_control::submit::process_batch;
use titus_core::ports::{Clock, Ports};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_logging();
    let clients = titus_aws::AwsClients::from_env().await;
    let stage = titus_app::stage_from_env();
    let cp = titus_app::control_plane(&clients, &stage).await?;
    // Fail the cold start, naming the queue, when the stage's rejection queue does not exist.
    cp.ports.rejections.queue_url().await?;
    let (cp, stage) = (&cp, stage.as_str());
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let now_ms = cp.ports().clock().now_ms();
        let outcomes = process_batch(cp, sqs_messages(event.payload), now_ms).await;
        titus_app::lambda::emit_metrics(cp, stage);
        Ok::<_, Failed>(batch_response(&outcomes))
    }))
    .await
}
