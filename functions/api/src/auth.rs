//! Who is calling, and what they may read and change.
//!
//! - Any caller reads every job and task, but a job's environment values only if it created the
//!   job, belongs to the job's owner team, or is an admin; others see the names with
//!   [`HIDDEN_VALUE`]. Agents' queue URLs and principals are shown to admins only.
//! - A caller submits jobs only for its teams (`/titus/{stage}/policy/teams`, or the team named
//!   like itself); admins for any team.
//! - Only a job's creator or an admin kills or changes it.
//!
//! In AWS, API Gateway authenticates with IAM (SigV4) and the Lambda entry puts the caller's ARN
//! in the request as a [`GatewayIdentity`]; bearer tokens are then ignored. Served as plain HTTP
//! (locally), the caller presents `Authorization: Bearer <token>` with a token from configuration.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::Method;
use titus_control::Teams;
use titus_core::ports::{now_ms, RateDecision, RateLimiter};
use titus_core::{Agent, Job, Ports};

use crate::config::ApiConfig;
use crate::error::ApiError;
use crate::AppState;

/// The identity API Gateway authenticated, inserted by the Lambda entry (`None`: the request
/// context named no IAM caller). Only code can insert it; nothing in a request can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayIdentity(pub Option<String>);

/// What a caller who may not read them sees in place of a job's environment values.
pub const HIDDEN_VALUE: &str = "(hidden)";

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub identity: String,
    pub admin: bool,
    /// The stage's map of callers to owner teams, narrowed to this caller.
    pub teams: Teams,
}

impl Caller {
    /// Whether the caller belongs to `team`.
    pub fn is_member_of(&self, team: &str) -> bool {
        self.teams.is_member(&self.identity, team)
    }

    /// Only admins and a team's members submit jobs for the team.
    pub fn may_submit_for(&self, team: &str) -> Result<(), ApiError> {
        match self.teams.refusal(&self.identity, team) {
            Some(refusal) if !self.admin => Err(ApiError::forbidden(refusal)),
            _ => Ok(()),
        }
    }

    /// Whether the caller may read `job`'s environment values.
    pub fn may_read_env_of(&self, job: &Job) -> bool {
        self.admin
            || job.created_by == self.identity
            || self.is_member_of(&job.job_descriptor.owner.team_email)
    }

    /// `job` as this caller may see it.
    pub fn view_of_job(&self, mut job: Job) -> Job {
        if !self.may_read_env_of(&job) {
            for value in job.job_descriptor.container.env.values_mut() {
                *value = HIDDEN_VALUE.to_owned();
            }
        }
        job
    }

    /// `agent` as this caller may see it: where to reach it and who it speaks as are for admins.
    pub fn view_of_agent(&self, mut agent: Agent) -> Agent {
        if !self.admin {
            agent.queue_url.clear();
            agent.principal.clear();
        }
        agent
    }

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
pub fn authenticate(parts: &Parts, config: &ApiConfig, teams: &Teams) -> Result<Caller, ApiError> {
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
        teams: teams.narrowed_to(&identity),
        identity,
    })
}

/// Counts the request against the caller's rate limits: every request, and a job creation
/// against its own limit too. A limiter that cannot be reached lets the request through (and
/// logs it): the limits protect the store, they are not worth an outage.
async fn check_rate(
    parts: &Parts,
    caller: &Caller,
    config: &ApiConfig,
    limiter: &dyn RateLimiter,
) -> Result<(), ApiError> {
    let limits = config.rate_limits.of(&caller.identity);
    let window_ms = config.rate_limits.window_ms();
    let creates = parts.method == Method::POST && parts.uri.path() == "/api/v3/jobs";
    let mut counters = vec![("requests", limits.requests)];
    if creates {
        counters.push(("creates", limits.creates));
    }
    let now = now_ms();
    for (kind, limit) in counters {
        let key = format!("{}#{kind}", caller.identity);
        match limiter.take(&key, limit, window_ms, now).await {
            Ok(RateDecision::Allowed { .. }) => {}
            Ok(RateDecision::Limited { retry_after_ms }) => {
                let what = if kind == "creates" {
                    "job creations"
                } else {
                    "requests"
                };
                return Err(ApiError::rate_limited(
                    format!(
                        "caller {:?} made more than {limit} {what} in {} s; expected to retry \
                         after the Retry-After header's seconds (limits: \
                         /titus/{{stage}}/api/rate-limits)",
                        caller.identity, config.rate_limits.window_secs
                    ),
                    retry_after_ms.div_ceil(1_000),
                ));
            }
            Err(error) => {
                tracing::warn!(%error, caller = %caller.identity, "rate limiter unavailable; request let through");
                return Ok(());
            }
        }
    }
    Ok(())
}

impl<P: Ports> FromRequestParts<AppState<P>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState<P>,
    ) -> Result<Caller, ApiError> {
        let caller = authenticate(
            parts,
            state.config(),
            &state.control().settings.admission.teams,
        )?;
        if let Some(limiter) = state.limiter() {
            check_rate(parts, &caller, state.config(), limiter).await?;
        }
        Ok(caller)
    }
}
