//! Titus' status ingest and reconciliation: what keeps every job at its desired state.
//!
//! - [`handle_batch`]: the SQS-triggered status function. Applies the agents' status messages to
//!   tasks, idempotently and safe against reordering; on Finished, releases the agent's allocation,
//!   then replaces the task per its job's retry policy or finishes the job. See [`ingest`].
//! - [`reconcile`]: the reconciler, run on every scheduler loop locally or as a scheduled Lambda.
//!   Declares silent agents lost, moves stuck tasks on, kills tasks past their runtime limit, and
//!   converges services, kills and batch jobs. See [`reconcile()`](reconcile::reconcile).
//! - [`decide`]: the rules, pure, shared by both.
//!
//! A job's history stays readable through `JobStore::list_job_tasks`: every task with its
//! replacements (`resubmitOf`), each state with its timestamp and reason (`statusHistory`), and the
//! exit codes.

pub mod config;
pub mod dead_letter;
pub mod decide;
pub mod error;
pub mod ingest;
pub mod lifecycle;
pub mod reconcile;

use std::time::{SystemTime, UNIX_EPOCH};

pub use config::{ConfigError, StatusConfig};
pub use dead_letter::{DeadLetter, DeadLetterSink, SqsDeadLetterQueue};
pub use error::StatusError;
pub use ingest::{apply_update, handle_batch, process_batch, Outcome};
pub use lifecycle::{AfterFinished, AwsStatusContext, StatusContext};
pub use reconcile::{reconcile, ReconcileSummary};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// JSON logs for Lambda, with the current span (the message being handled) on each line.
pub fn init_lambda_logging() {
    tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .without_time()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}
