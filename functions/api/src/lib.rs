//! Titus' Gateway: the v3 REST API as one axum [`router`], served by API Gateway (HTTP API, IAM
//! auth) through lambda_http in AWS ([`lambda_service`]) and as plain HTTP locally ([`serve`]).
//!
//! Routes (all under `/api/v3` but `/healthz` and `/metrics`): `POST/GET /jobs`, `GET/DELETE /jobs/{id}`,
//! `PUT /jobs/{id}/instances`, `POST /jobs/{id}/enable|disable`, `PUT/DELETE /jobs/{id}/attributes`,
//! `GET /tasks`, `GET/DELETE /tasks/{id}?shrink=`, `GET /tasks/{id}/logs`, `GET /agents`, `GET /quotas`,
//! `GET /scheduler/results/{id}`, `POST /scheduler/plan`, `GET /openapi.json`.

pub mod auth;
pub mod body;
pub mod config;
pub mod error;
pub mod models;
pub mod openapi;
pub mod params;
pub mod routes;
pub mod ui;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use titus_control::ControlPlane;
use titus_core::ports::{RateLimiter, TaskLogReader};
use titus_core::Ports;
use tracing::Instrument;

pub use auth::{Caller, GatewayIdentity};
pub use config::ApiConfig;
pub use error::{ApiError, ErrorBody};

/// The port Titus served its REST API on, kept for the local server.
pub const DEFAULT_LOCAL_PORT: u16 = 7001;
/// The header carrying a request's id, in and out.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// What the handlers share: the control plane (its ports and settings), the API's own
/// configuration and the rate limiter. Cheap to clone.
#[derive(Debug)]
pub struct AppState<P> {
    inner: Arc<Shared<P>>,
}

#[derive(Debug)]
struct Shared<P> {
    control: Arc<ControlPlane<P>>,
    config: ApiConfig,
    limiter: Option<Arc<dyn RateLimiter>>,
    task_logs: Option<Arc<dyn TaskLogReader>>,
}

impl<P> Clone for AppState<P> {
    fn clone(&self) -> Self {
        AppState {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<P: Ports> AppState<P> {
    /// The state over a control plane the API may share with other components (the local
    /// stack's), counting every caller's requests with `limiter` (the stage's rate-limits table;
    /// `None` only for tools that serve no one else).
    pub fn new(
        control: Arc<ControlPlane<P>>,
        config: ApiConfig,
        limiter: Option<Arc<dyn RateLimiter>>,
    ) -> AppState<P> {
        AppState {
            inner: Arc::new(Shared {
                control,
                config,
                limiter,
                task_logs: None,
            }),
        }
    }

    /// The same state reading tasks' output with `logs` (`GET /tasks/{id}/logs`; without a
    /// reader that route answers 503).
    pub fn with_task_logs(self, logs: Arc<dyn TaskLogReader>) -> AppState<P> {
        let shared = &*self.inner;
        AppState {
            inner: Arc::new(Shared {
                control: Arc::clone(&shared.control),
                config: shared.config.clone(),
                limiter: shared.limiter.clone(),
                task_logs: Some(logs),
            }),
        }
    }

    pub fn task_logs(&self) -> Option<&dyn TaskLogReader> {
        self.inner.task_logs.as_deref()
    }

    pub fn limiter(&self) -> Option<&dyn RateLimiter> {
        self.inner.limiter.as_deref()
    }

    pub fn control(&self) -> &ControlPlane<P> {
        &self.inner.control
    }

    /// Now, by the control plane's clock: what every record the API writes is timed with, so
    /// that its times and the scheduler's agree (a simulation's clock is not the system's).
    pub fn now_ms(&self) -> u64 {
        titus_core::ports::Clock::now_ms(self.inner.control.ports.clock())
    }

    pub fn store(&self) -> &P::Jobs {
        self.inner.control.ports.jobs()
    }

    pub fn agents(&self) -> &P::Agents {
        self.inner.control.ports.agents()
    }

    pub fn config(&self) -> &ApiConfig {
        &self.inner.config
    }
}

/// The whole API as one router.
pub fn router<P: Ports>(state: AppState<P>) -> Router {
    let body_limit = state
        .control()
        .settings
        .admission
        .limits
        .descriptor_max_bytes;
    Router::new()
        .route("/healthz", get(routes::healthz))
        .route("/metrics", get(routes::metrics::<P>))
        .route("/ui", get(ui::redirect))
        .route("/ui/", get(ui::index))
        .route("/ui/app.js", get(ui::app_js))
        .route("/ui/app.css", get(ui::app_css))
        .route("/api/v3/openapi.json", get(routes::openapi_document))
        .route(
            "/api/v3/jobs",
            get(routes::list_jobs::<P>).post(routes::create_job::<P>),
        )
        .route(
            "/api/v3/jobs/{id}",
            get(routes::get_job::<P>).delete(routes::kill_job::<P>),
        )
        .route(
            "/api/v3/jobs/{id}/instances",
            put(routes::update_capacity::<P>),
        )
        .route(
            "/api/v3/jobs/{id}/capacityAttributes",
            put(routes::update_capacity_attributes::<P>),
        )
        .route(
            "/api/v3/jobs/{id}/jobprocesses",
            put(routes::update_job_processes::<P>),
        )
        .route(
            "/api/v3/jobs/{id}/disruptionBudget",
            put(routes::update_disruption_budget::<P>),
        )
        .route("/api/v3/jobs/{id}/enable", post(routes::enable_job::<P>))
        .route("/api/v3/jobs/{id}/disable", post(routes::disable_job::<P>))
        .route(
            "/api/v3/jobs/{id}/attributes",
            put(routes::update_attributes::<P>).delete(routes::delete_attributes::<P>),
        )
        .route("/api/v3/tasks", get(routes::list_tasks::<P>))
        .route(
            "/api/v3/tasks/{id}",
            get(routes::get_task::<P>).delete(routes::kill_task::<P>),
        )
        .route("/api/v3/tasks/{id}/logs", get(routes::get_task_logs::<P>))
        .route("/api/v3/agents", get(routes::list_agents::<P>))
        .route("/api/v3/quotas", get(routes::list_quotas::<P>))
        .route("/api/v3/scheduler/plan", post(routes::plan_job::<P>))
        .route("/api/v3/events", get(routes::list_events::<P>))
        .route(
            "/api/v3/scheduler/results/{id}",
            get(routes::get_scheduling_result::<P>),
        )
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_request::<P>,
        ))
        .layer(middleware::from_fn(request_context))
        .with_state(state)
}

async fn unknown_route(request: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route {} {}; expected one of the routes in /api/v3/openapi.json",
        request.method(),
        titus_core::validation::quoted(request.uri().path())
    ))
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::method_not_allowed(format!(
        "method {} is not allowed on {}; see /api/v3/openapi.json for the allowed methods",
        titus_core::validation::quoted(request.method().as_str()),
        titus_core::validation::quoted(request.uri().path())
    ))
}

/// The id a request is known by in logs and answers: the caller's `x-request-id` when it is a
/// sane token (API Gateway's request id in Lambda), else a fresh UUID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

fn request_id_of(request: &Request) -> String {
    request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| {
            (1..=128).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Gives each request an id and a span, logs internal errors with that id, and answers them with
/// the id instead of their detail.
async fn request_context(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = request_id_of(&request);
    request
        .extensions_mut()
        .insert(RequestId(request_id.clone()));
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    if let Some(error::InternalDetail(detail)) = response.extensions_mut().remove() {
        if status == StatusCode::SERVICE_UNAVAILABLE {
            span.in_scope(|| tracing::warn!(error = %detail, "dependency unavailable"));
        } else {
            span.in_scope(|| tracing::error!(error = %detail, "internal error"));
            let answer = ErrorBody {
                error: "internal".to_owned(),
                message: format!("internal error; quote request id {request_id} when reporting it"),
                details: Vec::new(),
                status_code: status.as_u16(),
                error_context: None,
            };
            let headers = std::mem::take(response.headers_mut());
            response = (status, error::json_body(&answer)).into_response();
            *response.headers_mut() = headers;
        }
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    span.in_scope(|| {
        tracing::debug!(
            status = status.as_u16(),
            latency_us = started.elapsed().as_micros() as u64,
            "answered"
        )
    });
    response
}

/// Counts each request in the control plane's metrics: its status class and the slowest answer.
async fn count_request<P: Ports>(
    axum::extract::State(app): axum::extract::State<AppState<P>>,
    request: Request,
    next: Next,
) -> Response {
    use titus_control::metrics::{
        API_CLIENT_ERRORS, API_LATENCY_MAX, API_REQUESTS, API_SERVER_ERRORS,
    };
    let started = Instant::now();
    let response = next.run(request).await;
    let metrics = &app.control().metrics;
    metrics.add(API_REQUESTS, 1.0);
    if response.status().is_client_error() {
        metrics.add(API_CLIENT_ERRORS, 1.0);
    } else if response.status().is_server_error() {
        metrics.add(API_SERVER_ERRORS, 1.0);
    }
    metrics.max(API_LATENCY_MAX, started.elapsed().as_secs_f64() * 1000.0);
    response
}

/// The router as the Lambda entry serves it: API Gateway's IAM caller and request id are taken
/// from the request context before the router sees the request.
pub fn lambda_service(
    router: Router,
) -> impl tower::Service<
    lambda_http::Request,
    Response = Response,
    Error = Infallible,
    Future = impl Send + 'static,
> + Clone
       + Send
       + 'static {
    tower::ServiceBuilder::new()
        .map_request(with_gateway_context)
        .service(router)
}

fn with_gateway_context(mut request: lambda_http::Request) -> lambda_http::Request {
    use lambda_http::request::RequestContext;
    use lambda_http::RequestExt as _;
    let (identity, request_id) = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => {
            let iam = context.authorizer.as_ref().and_then(|a| a.iam.as_ref());
            let identity = iam
                .and_then(|iam| iam.user_arn.clone().or_else(|| iam.caller_id.clone()))
                .filter(|id| !id.is_empty());
            (identity, context.request_id.clone())
        }
        _ => (None, None),
    };
    request.extensions_mut().insert(GatewayIdentity(identity));
    if let Some(value) = request_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
        request.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    request
}

/// Serves the router as plain HTTP on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}
