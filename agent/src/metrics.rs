//! The agent's metrics: what it counts in its registry (launch and heartbeat failures, the
//! slowest image pull, the tasks it runs) reported once a minute as one CloudWatch Embedded
//! Metric Format line, under the stage's dimension only (a dimension per agent would make a
//! metric per host). The line is logged, and written with PutLogEvents to the stage's agents
//! log group (`metrics_log_group`, a stream named by the agent's id), where CloudWatch turns it
//! into metrics.

use aws_sdk_cloudwatchlogs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cloudwatchlogs::types::InputLogEvent;

/// How often the agent reports its metrics.
pub const REPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Writes EMF lines to one stream of a log group.
#[derive(Debug, Clone)]
pub struct EmfWriter {
    client: aws_sdk_cloudwatchlogs::Client,
    group: String,
    stream: String,
    stage: String,
}

impl EmfWriter {
    /// Lines of stage `stage`'s agent, to `stream` of `group`.
    pub fn new(
        client: aws_sdk_cloudwatchlogs::Client,
        group: &str,
        stream: &str,
        stage: &str,
    ) -> EmfWriter {
        EmfWriter {
            client,
            group: group.to_owned(),
            stream: stream.to_owned(),
            stage: stage.to_owned(),
        }
    }

    pub fn stage(&self) -> &str {
        &self.stage
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Writes one line, creating the stream when it does not exist yet.
    pub async fn write(&self, line: &str, at_ms: u64) -> Result<(), String> {
        let event = InputLogEvent::builder()
            .timestamp(at_ms as i64)
            .message(line)
            .build()
            .map_err(|e| e.to_string())?;
        let put = || {
            self.client
                .put_log_events()
                .log_group_name(&self.group)
                .log_stream_name(&self.stream)
                .log_events(event.clone())
                .customize()
                .mutate_request(|request| {
                    // Asks CloudWatch to extract the metrics of the EMF line.
                    request
                        .headers_mut()
                        .insert("x-amzn-logs-format", "json/emf");
                })
                .send()
        };
        match put().await {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e))
                if e.err().code() == Some("ResourceNotFoundException") =>
            {
                match self
                    .client
                    .create_log_stream()
                    .log_group_name(&self.group)
                    .log_stream_name(&self.stream)
                    .send()
                    .await
                {
                    Ok(_) => {}
                    Err(SdkError::ServiceError(e))
                        if e.err().code() == Some("ResourceAlreadyExistsException") => {}
                    Err(e) => return Err(describe(&e)),
                }
                put().await.map(|_| ()).map_err(|e| describe(&e))
            }
            Err(e) => Err(describe(&e)),
        }
    }
}

fn describe<E: std::error::Error + 'static>(e: &E) -> String {
    aws_sdk_cloudwatchlogs::error::DisplayErrorContext(e).to_string()
}
