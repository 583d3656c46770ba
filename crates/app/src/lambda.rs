//! What every Lambda function shares: logging as Lambda's advanced logging controls ask, SQS
//! events in and partial batch failures out, and errors reported with their stable types (the
//! scheduler loop's Retry and Catch and the alarms match them).

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use titus_control::{ControlError, InboundMessage, MessageOutcome};

/// Logs for Lambda: the level from `AWS_LAMBDA_LOG_LEVEL` (else `RUST_LOG`, else `info`), JSON
/// lines unless `AWS_LAMBDA_LOG_FORMAT` is `Text`, each with its current span (the message being
/// handled). CloudWatch stamps the time.
pub fn init_logging() {
    let format = std::env::var("AWS_LAMBDA_LOG_FORMAT").unwrap_or_default();
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_owned());
    let filter = tracing_subscriber::EnvFilter::try_new(level.to_ascii_lowercase())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .without_time();
    if format.eq_ignore_ascii_case("text") {
        builder.init();
    } else {
        builder.json().with_current_span(true).init();
    }
}

/// The messages of an SQS event, as the use cases take them.
pub fn sqs_messages(event: SqsEvent) -> Vec<InboundMessage> {
    event
        .records
        .into_iter()
        .map(|record| InboundMessage {
            message_id: record.message_id.unwrap_or_default(),
            body: record.body.unwrap_or_default(),
            sender_id: record.attributes.get("SenderId").cloned(),
        })
        .collect()
}

/// Whether the event's messages come from queue `queue_name` (an event source mapping delivers
/// one queue's messages per batch; the queue is the last part of the records' source ARN).
pub fn from_queue(event: &SqsEvent, queue_name: &str) -> bool {
    event.records.first().is_some_and(|record| {
        record
            .event_source_arn
            .as_deref()
            .and_then(|arn| arn.rsplit(':').next())
            == Some(queue_name)
    })
}

/// The partial batch response for what became of each message: the ones the queue must deliver
/// again (the event source mapping needs `ReportBatchItemFailures`).
pub fn batch_response<O: MessageOutcome>(outcomes: &[(String, O)]) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = outcomes
        .iter()
        .filter(|(_, outcome)| outcome.must_redeliver())
        .map(|(message_id, _)| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = message_id.clone();
            failure
        })
        .collect();
    response
}

/// A use case's error as Lambda reports it: its stable type and its message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Failed(pub ControlError);

impl From<ControlError> for Failed {
    fn from(error: ControlError) -> Self {
        Failed(error)
    }
}

impl From<Failed> for lambda_runtime::Diagnostic {
    fn from(failed: Failed) -> Self {
        lambda_runtime::Diagnostic {
            error_type: failed.0.error_type().to_owned(),
            error_message: failed.0.to_string(),
        }
    }
}

/// Prints the control plane's metrics that changed during this invocation as one CloudWatch
/// Embedded Metric Format line (the function's log stream is where CloudWatch reads it), with
/// the stage as the dimension.
pub fn emit_metrics<P: titus_core::Ports>(cp: &titus_control::ControlPlane<P>, stage: &str) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    if let Some(line) = cp.metrics.emf(&[("Stage", stage)], now_ms) {
        println!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use titus_core::StoreError;

    use super::*;

    #[derive(Debug, PartialEq)]
    struct Done(bool);

    impl MessageOutcome for Done {
        fn must_redeliver(&self) -> bool {
            self.0
        }
    }

    #[test]
    fn only_the_messages_to_redeliver_are_batch_item_failures() {
        let outcomes = vec![
            ("m1".to_owned(), Done(false)),
            ("m2".to_owned(), Done(true)),
            ("m3".to_owned(), Done(false)),
        ];

        let response = batch_response(&outcomes);

        let failed: Vec<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(failed, ["m2"]);
    }

    #[test]
    fn an_sqs_event_becomes_messages_with_their_sender() {
        let event: SqsEvent = serde_json::from_value(serde_json::json!({
            "Records": [{
                "messageId": "m1",
                "receiptHandle": "r",
                "body": "{}",
                "attributes": {"SenderId": "AIDAEXAMPLE", "ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q",
                "awsRegion": "us-east-1"
            }]
        }))
        .unwrap();

        assert!(from_queue(&event, "q"));
        assert!(!from_queue(&event, "titus-dev-q"));
        let messages = sqs_messages(event);

        assert_eq!(
            messages,
            [InboundMessage {
                message_id: "m1".to_owned(),
                body: "{}".to_owned(),
                sender_id: Some("AIDAEXAMPLE".to_owned()),
            }]
        );
    }

    #[test]
    fn a_failure_keeps_its_stable_type() {
        let diagnostic = lambda_runtime::Diagnostic::from(Failed(ControlError::from(
            StoreError::Unavailable("throttled".to_owned()),
        )));
        assert_eq!(diagnostic.error_type, "StoreUnavailable");
        assert!(diagnostic.error_message.contains("throttled"));
    }
}
