//! `titus-status-lambda`: the SQS-triggered status function. The control plane is built once;
//! each invocation applies one batch, of the agents' status messages or of their requests from
//! the registrations queue (two event source mappings, told apart by the records' source), and
//! reports partial batch failures (the event source mappings need `ReportBatchItemFailures`).

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{service_fn, LambdaEvent};
use titus_app::lambda::{batch_response, from_queue, init_logging, sqs_messages, Failed};
use titus_control::{agents, status};
use titus_core::ports::{Clock, Ports};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_logging();
    let clients = titus_aws::AwsClients::from_env().await;
    let stage = titus_app::stage_from_env();
    let names = titus_aws::Names::new(&stage)?;
    let cp = titus_app::control_plane(&clients, &stage).await?;
    // Fail the cold start, naming the queue, when the stage's status DLQ does not exist.
    cp.ports.dead_letters.queue_url().await?;
    let registrations = names.registrations_queue();
    let (cp, registrations, stage) = (&cp, registrations.as_str(), stage.as_str());
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let now_ms = cp.ports().clock().now_ms();
        let from_agents_requests = from_queue(&event.payload, registrations);
        let messages = sqs_messages(event.payload);
        let response = if from_agents_requests {
            batch_response(&agents::process_requests(cp, messages, now_ms).await)
        } else {
            batch_response(&status::process_batch(cp, messages, now_ms).await)
        };
        titus_app::lambda::emit_metrics(cp, stage);
        Ok::<_, Failed>(response)
    }))
    .await
}
