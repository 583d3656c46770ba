//! The application layer's one error type. `error_type` names are stable: Lambda reports them,
//! the scheduler loop's Retry and Catch match them (`StoreUnavailable` is retried), and alarms
//! filter on them.

use titus_core::ports::{FleetError, QueueError};
use titus_core::validation::quoted;
use titus_core::{FieldError, StoreError};

use crate::tasks::MAX_WRITE_ATTEMPTS;

/// Why a use case did not happen.
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
    /// The job would take its team or capacity group past a quota. `fits_ever` is false when
    /// the request alone is beyond the limit (it can never be accepted as it is).
    #[error("{}", over_quota_message(exceeded, *fits_ever))]
    OverQuota {
        exceeded: titus_core::quota::QuotaExceeded,
        fits_ever: bool,
    },
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Fleet(#[from] FleetError),
    /// A setting is missing or wrong: the message names it and says what it should hold.
    #[error("configuration: {0}")]
    Configuration(String),
}

impl ControlError {
    /// The stable name of the error's kind.
    pub fn error_type(&self) -> &'static str {
        match self {
            ControlError::NotFound { .. } => "NotFound",
            ControlError::Conflict { .. } => "Conflict",
            ControlError::Invalid(_) => "InvalidInput",
            ControlError::OverQuota { .. } => "QuotaExceeded",
            ControlError::Store(StoreError::Unavailable(_)) => "StoreUnavailable",
            ControlError::Store(_) => "StoreError",
            ControlError::Queue(_) => "QueueError",
            ControlError::Fleet(_) => "Ec2Error",
            ControlError::Configuration(_) => "InvalidConfiguration",
        }
    }

    /// Whether repeating the same work later may succeed (throttling, an outage).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ControlError::Store(StoreError::Unavailable(_))
                | ControlError::Queue(QueueError::Unavailable(_))
        )
    }

    pub(crate) fn conflict(message: impl Into<String>) -> ControlError {
        ControlError::Conflict {
            message: message.into(),
            details: Vec::new(),
        }
    }

    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> ControlError {
        ControlError::Invalid(vec![field_error(field, message)])
    }

    pub(crate) fn not_found(entity: &'static str, id: &str) -> ControlError {
        ControlError::NotFound {
            entity,
            id: quoted_id(id),
        }
    }

    pub(crate) fn lost_race(entity: &str, id: &str) -> ControlError {
        ControlError::conflict(format!(
            "{entity} {} kept changing while this request tried to update it \
             ({MAX_WRITE_ATTEMPTS} attempts); expected it to hold still: read it again and retry",
            quoted_id(id)
        ))
    }
}

fn over_quota_message(exceeded: &titus_core::quota::QuotaExceeded, fits_ever: bool) -> String {
    if fits_ever {
        format!(
            "over quota: {exceeded}; expected the use to drop (jobs finishing, capacity \
             shrinking) or a higher limit in /titus/{{stage}}/policy/quotas"
        )
    } else {
        let d = exceeded.dimension;
        format!(
            "over quota: the {} quota of {} is {}, and this asks for {} on its own; expected a \
             request within the limit, or a higher limit in /titus/{{stage}}/policy/quotas",
            d.name(),
            exceeded.scope.describe(),
            d.show(exceeded.limit),
            d.show(exceeded.requested)
        )
    }
}

impl From<StoreError> for ControlError {
    fn from(error: StoreError) -> ControlError {
        match error {
            StoreError::QuotaExceeded(exceeded) => ControlError::OverQuota {
                exceeded,
                fits_ever: true,
            },
            other => ControlError::Store(other),
        }
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

/// Ids are platform-issued UUIDs, but one passed in by a caller is user text until checked.
pub(crate) fn quoted_id(id: &str) -> String {
    if uuid_like(id) {
        id.to_owned()
    } else {
        quoted(id)
    }
}

fn uuid_like(id: &str) -> bool {
    id.len() == 36 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_that_is_not_a_uuid_is_quoted_in_messages() {
        assert_eq!(
            quoted_id("1b4e28ba-2fa1-11d2-883f-0016d3cca427"),
            "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
        );
        assert_eq!(quoted_id("x\ny"), "\"x\\ny\"");
    }

    #[test]
    fn a_throttled_store_is_the_one_error_the_loop_retries() {
        let throttled = ControlError::from(StoreError::Unavailable("slow down".to_owned()));
        let broken = ControlError::from(StoreError::Internal("bad item".to_owned()));
        assert_eq!(throttled.error_type(), "StoreUnavailable");
        assert!(throttled.is_transient());
        assert_eq!(broken.error_type(), "StoreError");
        assert!(!broken.is_transient());
    }
}
