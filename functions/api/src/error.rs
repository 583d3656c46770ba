//! The API's one error shape, `{"error": code, "message": text, "details": [{"field", "message"}]}`,
//! and the mapping of every lower error onto it. Internal errors keep their detail out of the
//! response: the request-context middleware logs it with the request id and answers with the id.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use titus_control::ControlError;
use titus_core::ports::QueueError;
use titus_core::{FieldError, ParseError, StoreError};
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    /// A stable code: `invalid_request`, `unauthorized`, `forbidden`, `not_found`,
    /// `method_not_allowed`, `conflict`, `idempotency_mismatch`, `payload_too_large`,
    /// `unsupported_media_type`, `rate_limited`, `quota_exceeded`, `unavailable` or `internal`.
    pub error: String,
    /// What was wrong and what was expected.
    pub message: String,
    /// One entry per problem, where a problem has a place (a field, a parameter, a header).
    pub details: Vec<ErrorDetail>,
    /// The HTTP status again, as Titus' error body (`ErrorResponse`) carries it.
    #[serde(rename = "statusCode")]
    pub status_code: u16,
    /// Titus' `errorContext`: the problems as `constraintViolations`, field to message (two
    /// problems of one field joined by "; "). Absent when there are none.
    #[serde(
        rename = "errorContext",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub error_context: Option<ErrorContext>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorContext {
    #[serde(rename = "constraintViolations")]
    pub constraint_violations: std::collections::BTreeMap<String, String>,
}

impl ErrorContext {
    fn of(details: &[ErrorDetail]) -> Option<ErrorContext> {
        if details.is_empty() {
            return None;
        }
        let mut violations = std::collections::BTreeMap::<String, String>::new();
        for detail in details {
            violations
                .entry(detail.field.clone())
                .and_modify(|message| {
                    message.push_str("; ");
                    message.push_str(&detail.message);
                })
                .or_insert_with(|| detail.message.clone());
        }
        Some(ErrorContext {
            constraint_violations: violations,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// A dotted path into the request body (`container.resources.cpu`), or the name of a query
    /// parameter, path parameter or header.
    pub field: String,
    pub message: String,
}

impl From<FieldError> for ErrorDetail {
    fn from(error: FieldError) -> ErrorDetail {
        ErrorDetail {
            field: error.field,
            message: error.message,
        }
    }
}

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Vec<ErrorDetail>,
    /// For 5xx: what went wrong, for the log only.
    internal: Option<String>,
    /// For 429: the seconds after which to retry (`Retry-After`).
    retry_after_secs: Option<u64>,
}

/// Carries an internal error's detail from the handler to the request-context middleware, which
/// logs it with the request id. Never serialized.
#[derive(Debug, Clone)]
pub(crate) struct InternalDetail(pub String);

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
            internal: None,
            retry_after_secs: None,
        }
    }

    /// 429: the caller's rate limit is used up; retry after `retry_after_secs`.
    pub fn rate_limited(message: impl Into<String>, retry_after_secs: u64) -> ApiError {
        ApiError {
            retry_after_secs: Some(retry_after_secs.max(1)),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn with_details(mut self, details: Vec<ErrorDetail>) -> ApiError {
        self.details = details;
        self
    }

    /// 400 with one problem at `field`.
    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        let message = message.into();
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("{field}: {message}"),
        )
        .with_details(vec![ErrorDetail {
            field: field.to_owned(),
            message,
        }])
    }

    /// 400 listing every problem.
    pub fn invalid_all(errors: Vec<FieldError>) -> ApiError {
        let noun = if errors.len() == 1 {
            "problem"
        } else {
            "problems"
        };
        let first = errors.first().map(|e| format!(": {e}")).unwrap_or_default();
        let more = if errors.len() > 1 {
            "; see details"
        } else {
            ""
        };
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("the request has {} {noun}{first}{more}", errors.len()),
        )
        .with_details(errors.into_iter().map(ErrorDetail::from).collect())
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            message,
        )
    }

    pub fn payload_too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    }

    /// 503: a dependency is throttling or unreachable; the client may retry.
    pub fn unavailable(detail: impl Into<String>) -> ApiError {
        ApiError {
            internal: Some(detail.into()),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "a dependency of the API is temporarily unavailable; retry the request",
            )
        }
    }

    /// 500: a bug or a misconfiguration. The detail is logged, never returned.
    pub fn internal(detail: impl Into<String>) -> ApiError {
        ApiError {
            internal: Some(detail.into()),
            ..ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        }
    }

    /// A rejected job descriptor: 413 when over the size limit, else 400 with every problem.
    pub fn from_parse(error: ParseError) -> ApiError {
        match error {
            ParseError::TooLarge { .. } => ApiError::payload_too_large(error.to_string())
                .with_details(error.field_errors().into_iter().map(Into::into).collect()),
            other => ApiError::invalid_all(other.field_errors()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match error {
            StoreError::InvalidCursor(_) => ApiError::invalid("cursor", error.to_string()),
            StoreError::IdempotencyMismatch { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_mismatch",
                error.to_string(),
            )
            .with_details(vec![ErrorDetail {
                field: "Idempotency-Key".to_owned(),
                message: "was already used for a different request".to_owned(),
            }]),
            StoreError::Conflict { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("{error}; read it again and retry"),
            ),
            StoreError::Unavailable(detail) => ApiError::unavailable(detail),
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(error: QueueError) -> ApiError {
        match error {
            QueueError::Unavailable(detail) => ApiError {
                message: "the change is recorded, but some kill messages could not be sent yet; \
                          repeat the request to resend them"
                    .to_owned(),
                ..ApiError::unavailable(detail)
            },
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(error: ControlError) -> ApiError {
        match error {
            ControlError::NotFound { .. } => ApiError::not_found(error.to_string()),
            ControlError::Conflict { message, details } => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
                    .with_details(details.into_iter().map(Into::into).collect())
            }
            ControlError::Invalid(errors) => ApiError::invalid_all(errors),
            ControlError::OverQuota {
                ref exceeded,
                fits_ever,
            } => {
                let detail = ErrorDetail {
                    field: format!("quota.{}", exceeded.dimension.name()),
                    message: format!(
                        "{}: limit {}, in use {}, requested {}",
                        exceeded.scope.describe(),
                        exceeded.dimension.show(exceeded.limit),
                        exceeded.dimension.show(exceeded.used),
                        exceeded.dimension.show(exceeded.requested)
                    ),
                };
                // Over what is in use: it may fit later (429). Beyond the limit on its own: it
                // never will as it is (403).
                let status = if fits_ever {
                    StatusCode::TOO_MANY_REQUESTS
                } else {
                    StatusCode::FORBIDDEN
                };
                ApiError::new(status, "quota_exceeded", error.to_string())
                    .with_details(vec![detail])
            }
            ControlError::Store(error) => error.into(),
            ControlError::Queue(error) => error.into(),
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code.to_owned(),
            message: self.message,
            error_context: ErrorContext::of(&self.details),
            details: self.details,
            status_code: self.status.as_u16(),
        };
        let mut response = (self.status, json_body(&body)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Some(secs) = self.retry_after_secs {
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        if let Some(detail) = self.internal {
            response.extensions_mut().insert(InternalDetail(detail));
        }
        response
    }
}

/// Serializes a response body; the types serialized here cannot fail, but if one did the answer is
/// still JSON.
pub(crate) fn json_body<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|_| {
        br#"{"error":"internal","message":"internal error","details":[]}"#.to_vec()
    })
}
