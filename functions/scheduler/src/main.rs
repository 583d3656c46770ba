//! The scheduler Lambda: builds its clients once, then runs one tick per invocation.

use lambda_runtime::{service_fn, LambdaEvent};
use titus_scheduler::{Scheduler, SchedulerConfig, TickInput};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .without_time()
        .init();
    let clients = titus_aws::AwsClients::from_env().await;
    let config = SchedulerConfig::load(&clients).await?;
    let scheduler = Scheduler::with_clients(&clients, config);
    lambda_runtime::run(service_fn(|event: LambdaEvent<TickInput>| {
        let scheduler = &scheduler;
        async move { scheduler.tick(event.payload).await }
    }))
    .await
}
