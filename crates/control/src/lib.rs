//! Titus' job operations — create, kill, scale, enable and label jobs, kill tasks — written once
//! over the store and queue ports, so the API, the submit function and the control-plane functions
//! (status, reconciler) apply the same rules.
//!
//! Every operation reads, decides, and writes conditionally on the version it read. A lost race is
//! re-read and decided again a bounded number of times; after that it surfaces as
//! [`ControlError::Conflict`]. Time comes in as `now_ms`.

pub mod admission;
pub mod jobs;
pub mod policy;
pub mod query;

use titus_core::messages::QueueError;
use titus_core::{FieldError, StoreError};

pub use admission::{admit, request_hash};
pub use jobs::{
    create_job, delete_attributes, kill_job, kill_task, set_enabled, update_attributes,
    update_capacity, CapacityUpdate,
};
pub use policy::JobPolicy;
pub use query::{list_tasks, TaskFilter};

/// Why a job operation did not happen.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The job or task does not exist.
    #[error("{entity} {id} does not exist")]
    NotFound { entity: &'static str, id: String },
    /// The operation does not fit the current state (a finished job, capacity outside min/max, a
    /// write race lost too often). The message says what was expected.
    #[error("{message}")]
    Conflict {
        message: String,
        details: Vec<FieldError>,
    },
    /// The request itself is wrong, whatever the state: every problem found.
    #[error("invalid request: {}", summarize(.0))]
    Invalid(Vec<FieldError>),
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl ControlError {
    pub(crate) fn conflict(message: impl Into<String>) -> ControlError {
        ControlError::Conflict {
            message: message.into(),
            details: Vec::new(),
        }
    }

    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> ControlError {
        ControlError::Invalid(vec![field_error(field, message)])
    }
}

impl From<StoreError> for ControlError {
    fn from(error: StoreError) -> ControlError {
        ControlError::Store(error)
    }
}

pub(crate) fn field_error(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_owned(),
        message: message.into(),
    }
}

fn summarize(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(FieldError::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
