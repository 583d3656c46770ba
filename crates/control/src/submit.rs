//! Batch submission through SQS: each job descriptor put on the submit queue is stored with the
//! same admission rules as `POST /api/v3/jobs`.
//!
//! # Message format
//! A message body is either a job descriptor (the JSON `POST /api/v3/jobs` takes), or an envelope
//! `{"clientToken": "<1-255 visible ASCII characters>", "jobDescriptor": {...}}`. A body is an
//! envelope when it is an object with a `jobDescriptor` key.
//!
//! # Guarantees
//! - Idempotent on the client token (scope `submit-queue/client-token/sqs:<SenderId>`, so one
//!   producer's tokens are its own), or on the SQS message id
//!   when there is none (scope `submit-queue/message-id`), so a redelivered message or a
//!   resubmission with the same token stores one job. Messages of one batch that share a key are
//!   processed in order.
//! - A message is acknowledged only once its job is durably stored: a store error (throttling,
//!   an outage) makes it a batch item failure (`ReportBatchItemFailures`), which SQS redelivers and,
//!   after the queue's `maxReceiveCount`, moves to the submit DLQ.
//! - A message that can never be stored (invalid JSON or descriptor, a policy refusal, a client
//!   token reused for another descriptor) is sent to the rejection queue with its errors
//!   ([`Rejection`]) and then acknowledged; if the rejection cannot be sent, it is a batch item
//!   failure instead. Nothing is dropped silently.
//! - The job's creator is `sqs:<SenderId>`, the sending principal SQS reports; it submits only for
//!   the owner teams the stage's team policy gives it (`Admission::teams`), else the message is
//!   rejected with reason `forbidden`.

use std::collections::BTreeMap;

use futures::stream::{self, StreamExt};
use titus_core::messages::Rejection;
use titus_core::ports::{IdempotencyKey, RejectionSink};
use titus_core::validation::quoted;
use titus_core::{FieldError, JobDescriptor, Ports, StoreError};

use crate::admission::{admit, request_hash};
use crate::settings::Admission;
use crate::{ControlError, ControlPlane, InboundMessage, MessageOutcome};

/// Idempotency scope of client tokens.
pub const CLIENT_TOKEN_SCOPE: &str = "submit-queue/client-token";
/// Idempotency scope of message ids.
pub const MESSAGE_ID_SCOPE: &str = "submit-queue/message-id";
/// Longest client token.
pub const CLIENT_TOKEN_MAX_CHARS: usize = 255;
/// How much of a rejected body the rejection record keeps, so the record fits in one SQS message.
pub const REJECTED_BODY_MAX_BYTES: usize = 128 * 1024;
/// How many idempotency keys are processed at once.
const CONCURRENT_KEYS: usize = 8;

/// A message that parsed and passed admission.
#[derive(Debug)]
struct Submission {
    message_id: String,
    descriptor: JobDescriptor,
    key: IdempotencyKey,
    /// The envelope's client token, if it had one (the key is then scoped to the producer).
    client_token: Option<String>,
    created_by: String,
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Stored now, or found stored by an earlier delivery.
    Stored { job_id: String, created: bool },
    /// Sent to the rejection queue.
    Rejected,
    /// To be redelivered.
    Failed,
}

impl MessageOutcome for Outcome {
    fn must_redeliver(&self) -> bool {
        *self == Outcome::Failed
    }
}

/// Handles one batch of the submit queue's messages and says what became of each, by message id,
/// in batch order.
pub async fn process_batch<P: Ports>(
    cp: &ControlPlane<P>,
    messages: Vec<InboundMessage>,
    now_ms: u64,
) -> Vec<(String, Outcome)> {
    let admission = &cp.settings.admission;
    let rejections = cp.ports.rejections();
    let mut outcomes: Vec<(String, Option<Outcome>)> = Vec::new();
    // Messages that share an idempotency key run in batch order; different keys run at once.
    let mut groups: BTreeMap<(String, String), Vec<(usize, Submission)>> = BTreeMap::new();
    let mut refused = Vec::new();
    for message in messages {
        let position = outcomes.len();
        let message_id = message.message_id.clone();
        outcomes.push((message_id, None));
        match read_message(&message, admission) {
            Ok(submission) => groups
                .entry((submission.key.scope.clone(), submission.key.key.clone()))
                .or_default()
                .push((position, submission)),
            Err(rejection) => refused.push((position, rejection(now_ms))),
        }
    }

    let rejected = stream::iter(refused)
        .map(|(position, rejection)| async move {
            (position, send_rejection(rejections, &rejection).await)
        })
        .buffer_unordered(CONCURRENT_KEYS)
        .collect::<Vec<_>>();
    let stored = stream::iter(groups.into_values())
        .map(|group| async move {
            let mut results = Vec::with_capacity(group.len());
            for (position, submission) in group {
                let outcome = store_submission(cp, submission, now_ms).await;
                results.push((position, outcome));
            }
            results
        })
        .buffer_unordered(CONCURRENT_KEYS)
        .collect::<Vec<_>>();
    let (rejected, stored) = futures::join!(rejected, stored);
    for (position, outcome) in rejected.into_iter().chain(stored.into_iter().flatten()) {
        outcomes[position].1 = Some(outcome);
    }
    let outcomes: Vec<_> = outcomes
        .into_iter()
        .map(|(id, outcome)| (id, outcome.unwrap_or(Outcome::Failed)))
        .collect();
    let rejected = outcomes
        .iter()
        .filter(|(_, outcome)| *outcome == Outcome::Rejected)
        .count();
    cp.metrics
        .add(crate::metrics::SUBMISSIONS_REJECTED, rejected as f64);
    outcomes
}

async fn store_submission<P: Ports>(
    cp: &ControlPlane<P>,
    submission: Submission,
    now_ms: u64,
) -> Outcome {
    let rejections = cp.ports.rejections();
    let message_id = submission.message_id.clone();
    let client_token = submission.client_token.clone();
    let body = serde_json::to_string(&submission.descriptor).unwrap_or_default();
    match crate::jobs::create_job(
        cp,
        submission.descriptor,
        &submission.created_by,
        Some(submission.key),
        now_ms,
    )
    .await
    {
        Ok(outcome) => {
            let job = outcome.job();
            tracing::info!(
                message_id = %message_id,
                job_id = %job.id,
                created = outcome.was_created(),
                "submission stored"
            );
            Outcome::Stored {
                job_id: job.id.to_string(),
                created: outcome.was_created(),
            }
        }
        Err(ControlError::Store(error @ StoreError::IdempotencyMismatch { .. })) => {
            let rejection = Rejection {
                message_id,
                client_token,
                rejected_at_ms: now_ms,
                reason: "idempotencyMismatch".to_owned(),
                errors: vec![FieldError {
                    field: "clientToken".to_owned(),
                    message: error.to_string(),
                }],
                body,
                body_truncated: false,
            };
            send_rejection(rejections, &rejection).await
        }
        Err(error @ ControlError::OverQuota { .. }) => {
            // Not retried from the queue: the producer learns why and submits again when the
            // use has dropped (or the limit was raised); the body is in the rejection.
            let rejection = Rejection {
                message_id,
                client_token,
                rejected_at_ms: now_ms,
                reason: "quotaExceeded".to_owned(),
                errors: vec![FieldError {
                    field: "quota".to_owned(),
                    message: error.to_string(),
                }],
                body,
                body_truncated: false,
            };
            send_rejection(rejections, &rejection).await
        }
        Err(error) => {
            tracing::warn!(
                message_id = %message_id,
                error = %error,
                "submission not stored; SQS will redeliver it"
            );
            Outcome::Failed
        }
    }
}

async fn send_rejection(rejections: &impl RejectionSink, rejection: &Rejection) -> Outcome {
    match rejections.reject(rejection).await {
        Ok(()) => {
            tracing::info!(
                message_id = %rejection.message_id,
                reason = %rejection.reason,
                errors = rejection.errors.len(),
                "submission rejected"
            );
            Outcome::Rejected
        }
        Err(error) => {
            tracing::warn!(
                message_id = %rejection.message_id,
                error = %error,
                "rejection could not be sent; SQS will redeliver the message"
            );
            Outcome::Failed
        }
    }
}

/// A rejection waiting for its time stamp.
type PendingRejection = Box<dyn FnOnce(u64) -> Rejection + Send>;

/// Parses and admits one message, or says why it is refused.
fn read_message(
    message: &InboundMessage,
    admission: &Admission,
) -> Result<Submission, PendingRejection> {
    let message_id = message.message_id.clone();
    let body = message.body.clone();
    let refuse_for = |reason: &'static str,
                      client_token: Option<String>,
                      errors: Vec<FieldError>|
     -> PendingRejection {
        let message_id = message_id.clone();
        let (kept, truncated) = truncate(&body, REJECTED_BODY_MAX_BYTES);
        let kept = kept.to_owned();
        Box::new(move |now_ms| Rejection {
            message_id,
            client_token,
            rejected_at_ms: now_ms,
            reason: reason.to_owned(),
            errors,
            body: kept,
            body_truncated: truncated,
        })
    };
    let refuse = |client_token, errors| refuse_for("invalid", client_token, errors);
    if message_id.is_empty() {
        return Err(refuse(
            None,
            vec![field(
                "(message)",
                "has no messageId; expected an SQS message",
            )],
        ));
    }
    let (envelope, client_token, descriptor_json) = match split_envelope(&body) {
        Ok(parts) => parts,
        Err(errors) => return Err(refuse(None, errors)),
    };
    let descriptor = match admit(
        descriptor_json.as_bytes(),
        &admission.limits,
        &admission.policy,
    ) {
        Ok(descriptor) => descriptor,
        Err(error) => {
            let errors = error
                .field_errors()
                .into_iter()
                .map(|mut e| {
                    if envelope {
                        e.field = format!("jobDescriptor.{}", e.field);
                    }
                    e
                })
                .collect();
            return Err(refuse(client_token, errors));
        }
    };
    let sender = message
        .sender_id
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or("submit-queue");
    let created_by = format!("sqs:{sender}");
    if let Some(refusal) = admission
        .teams
        .refusal(&created_by, &descriptor.owner.team_email)
    {
        let field_name = if envelope {
            "jobDescriptor.owner.teamEmail"
        } else {
            "owner.teamEmail"
        };
        return Err(refuse_for(
            "forbidden",
            client_token,
            vec![field(field_name, refusal)],
        ));
    }
    let key = match &client_token {
        // Scoped to the producer: one producer's tokens never answer with another's jobs.
        Some(token) => IdempotencyKey {
            scope: format!("{CLIENT_TOKEN_SCOPE}/{created_by}"),
            key: token.clone(),
            request_hash: request_hash(&descriptor),
        },
        None => IdempotencyKey {
            scope: MESSAGE_ID_SCOPE.to_owned(),
            key: message_id.clone(),
            request_hash: request_hash(&descriptor),
        },
    };
    Ok(Submission {
        message_id,
        descriptor,
        key,
        client_token,
        created_by,
    })
}

fn field(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// Whether the body is an envelope, its client token, and the descriptor's JSON text.
fn split_envelope(body: &str) -> Result<(bool, Option<String>, String), Vec<FieldError>> {
    let value: serde_json::Value = match serde_json::from_str(body) {
        Ok(value) => value,
        // Not JSON: admission reports it with its position.
        Err(_) => return Ok((false, None, body.to_owned())),
    };
    let Some(object) = value
        .as_object()
        .filter(|o| o.contains_key("jobDescriptor"))
    else {
        return Ok((false, None, body.to_owned()));
    };
    let mut errors = Vec::new();
    for name in object
        .keys()
        .filter(|k| !matches!(k.as_str(), "clientToken" | "jobDescriptor"))
    {
        errors.push(field(
            &quoted(name),
            "unknown envelope field; expected only clientToken and jobDescriptor",
        ));
    }
    let token = match object.get("clientToken") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(token))
            if !token.is_empty()
                && token.len() <= CLIENT_TOKEN_MAX_CHARS
                && token.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Some(token.clone())
        }
        Some(_) => {
            errors.push(field(
                "clientToken",
                format!("must be 1 to {CLIENT_TOKEN_MAX_CHARS} visible ASCII characters"),
            ));
            None
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let descriptor = object
        .get("jobDescriptor")
        .map(serde_json::Value::to_string)
        .unwrap_or_default();
    Ok((true, token, descriptor))
}

/// `text` cut to at most `max_bytes` on a character boundary, and whether it was cut.
fn truncate(text: &str, max_bytes: usize) -> (&str, bool) {
    if text.len() <= max_bytes {
        return (text, false);
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_is_told_from_a_plain_descriptor() {
        let (envelope, token, json) =
            split_envelope(r#"{"clientToken":"t-1","jobDescriptor":{"a":1}}"#).unwrap();
        assert!(envelope);
        assert_eq!(token.as_deref(), Some("t-1"));
        assert_eq!(json, r#"{"a":1}"#);
        let (envelope, token, json) = split_envelope(r#"{"owner":{}}"#).unwrap();
        assert!(!envelope);
        assert_eq!(token, None);
        assert_eq!(json, r#"{"owner":{}}"#);
        let errors =
            split_envelope(r#"{"clientToken":"a b","jobDescriptor":{},"x":1}"#).unwrap_err();
        assert_eq!(errors.len(), 2);
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("héllo", 2), ("h", true));
        assert_eq!(truncate("héllo", 3), ("hé", true));
        assert_eq!(truncate("abc", 3), ("abc", false));
    }
}
