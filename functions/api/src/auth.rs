//! Who is calling, and whether they may change a job.
//!
//! In AWS, API Gateway authenticates with IAM (SigV4) and the Lambda entry puts the caller's ARN
//! in the request as a [`GatewayIdentity`]; bearer tokens are then ignored. Served as plain HTTP
//! (locally), the caller presents `Authorization: Bearer <token>` with a token from configuration.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use titus_core::{Job, Ports};

use crate::config::ApiConfig;
use crate::error::ApiError;
use crate::AppState;

/// The identity API Gateway authenticated, inserted by the Lambda entry (`None`: the request
/// context named no IAM caller). Only code can insert it; nothing in a request can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayIdentity(pub Option<String>);

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub identity: String,
    pub admin: bool,
}

impl Caller {
    /// Only a job's creator or an admin may kill or change it.
    pub fn authorize(&self, job: &Job) -> Result<(), ApiError> {
        if self.admin || job.created_by == self.identity {
            return Ok(());
        }
        Err(ApiError::forbidden(format!(
            "caller {:?} may not change job {}, which {:?} created; expected its creator or an admin",
            self.identity, job.id, job.created_by
        )))
    }
}

/// Finds the caller of a request.
pub fn authenticate(parts: &Parts, config: &ApiConfig) -> Result<Caller, ApiError> {
    let identity = match parts.extensions.get::<GatewayIdentity>() {
        Some(GatewayIdentity(Some(identity))) => identity.clone(),
        Some(GatewayIdentity(None)) => {
            return Err(ApiError::unauthorized(
                "the request carries no IAM caller identity; expected API Gateway to authorize \
                 the route with IAM (SigV4)",
            ))
        }
        None => {
            let header = parts
                .headers
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    ApiError::unauthorized(
                        "no credentials; expected an Authorization: Bearer <token> header",
                    )
                })?;
            let token = header
                .split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token.trim())
                .ok_or_else(|| {
                    ApiError::unauthorized(
                        "the Authorization header is not a bearer token; expected \
                         Authorization: Bearer <token>",
                    )
                })?;
            config
                .identity_of_token(token)
                .ok_or_else(|| {
                    ApiError::unauthorized(
                        "the bearer token is not known; expected a token from the API's configuration",
                    )
                })?
                .to_owned()
        }
    };
    Ok(Caller {
        admin: config.is_admin(&identity),
        identity,
    })
}

impl<P: Ports> FromRequestParts<AppState<P>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState<P>,
    ) -> Result<Caller, ApiError> {
        authenticate(parts, state.config())
    }
}
