//! What can fail in the status function and the reconciler. `error_type` names are stable: Lambda
//! reports them, and alarms match on them.

use titus_core::messages::QueueError;
use titus_core::StoreError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StatusError {
    /// Throttled or unreachable; the next delivery or run repeats the work.
    #[error("store unavailable: {0}")]
    StoreUnavailable(String),
    #[error("store error: {0}")]
    Store(StoreError),
    #[error("queue error: {0}")]
    Queue(QueueError),
}

impl StatusError {
    pub fn error_type(&self) -> &'static str {
        match self {
            StatusError::StoreUnavailable(_) => "StoreUnavailable",
            StatusError::Store(_) => "StoreError",
            StatusError::Queue(_) => "QueueError",
        }
    }

    /// Whether repeating the same work later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StatusError::StoreUnavailable(_) | StatusError::Queue(QueueError::Unavailable(_))
        )
    }
}

impl From<StoreError> for StatusError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(message) => StatusError::StoreUnavailable(message),
            other => StatusError::Store(other),
        }
    }
}

impl From<QueueError> for StatusError {
    fn from(err: QueueError) -> Self {
        StatusError::Queue(err)
    }
}

impl From<StatusError> for lambda_runtime::Diagnostic {
    fn from(err: StatusError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: err.error_type().to_owned(),
            error_message: err.to_string(),
        }
    }
}
