//! The v3 REST handlers. Each one: parameters and caller, then the body, then the store; a change
//! to a job is authorized against the job's creator before it is made.

use axum::extract::{RawQuery, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use titus_control::{request_hash, ControlError};
use titus_core::placement::DryRun;
use titus_core::ports::{IdempotencyKey, LogError, LogLocation, LogRead};
use titus_core::{AgentStore, Job, JobDescriptor, JobId, JobStore, Ports, Task};

use crate::auth::Caller;
use crate::body::{attributes_update, capacity_update, JsonBody};
use crate::error::{json_body, ApiError, ErrorBody};
use crate::models::{
    AgentList, AttributesRequest, CapacityRequest, EventList, Health, JobPage, ListEventsParams,
    ListJobsParams, ListTasksParams, Pagination, QuotaList, QuotaView, SchedulingResult,
    SchedulingSuccess, TaskLogs, TaskLogsParams, TaskPage,
};
use crate::params::{self, IdParam, Query};
use crate::AppState;

/// A 200 (or other status) answer with a JSON body.
fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    let mut response = (status, json_body(value)).into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

async fn load_job<S: JobStore>(store: &S, id: &JobId) -> Result<Job, ApiError> {
    store
        .get_job(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("job {id} does not exist")))
}

#[utoipa::path(
    get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The function answers", body = Health))
)]
pub async fn healthz() -> Response {
    json(
        StatusCode::OK,
        &Health {
            status: "ok".to_owned(),
        },
    )
}

/// Creates a job. With an `Idempotency-Key` header a retry returns the job the first request
/// created, with status 200 instead of 201; the same key with a different descriptor is a 409.
/// The job is stored alone; the scheduler writes its tasks on its next tick, so they show in
/// `GET /api/v3/tasks` about a second later.
#[utoipa::path(
    post, path = "/api/v3/jobs", tag = "jobs",
    request_body(content = JobDescriptor, content_type = "application/json",
        example = json!({
            "owner": {"teamEmail": "team@example.com"},
            "applicationName": "nightly-report",
            "container": {
                "image": {"name": "busybox", "tag": "stable"},
                "resources": {"cpu": 1.0, "memoryMB": 512},
                "command": ["sh", "-c", "echo hello"]
            },
            "batch": {"size": 1, "retryPolicy": {"immediate": {"retries": 2}}}
        })),
    params(
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255,
         pattern = "^[!-~]+$",
         description = "Makes the request safe to retry: the same key and descriptor from the same caller return the same job"),
    ),
    responses(
        (status = 201, description = "The job was created; its tasks are written by the scheduler's next tick", body = Job,
         headers(("Location" = String, description = "The job's URL"))),
        (status = 200, description = "A retry with the same Idempotency-Key: the job the first request created", body = Job),
        (status = 400, description = "The descriptor is invalid; every problem is listed", body = ErrorBody),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 429, description = "The caller's rate limit (`/titus/{stage}/api/rate-limits`) is used up; retry after `Retry-After` seconds", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds until the caller's window reopens"))),
        (status = 403, description = "The caller may not submit jobs for the owner team it names (`/titus/{stage}/api/teams`)", body = ErrorBody),
        (status = 409, description = "The Idempotency-Key was used for a different descriptor", body = ErrorBody),
        (status = 413, description = "The body is over the descriptor size limit", body = ErrorBody),
        (status = 415, description = "The body is not declared as application/json", body = ErrorBody),
        (status = 500, description = "Internal error (logged with the request id)", body = ErrorBody),
        (status = 503, description = "The store is throttling or unreachable; retry", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create_job<P: Ports>(
    State(app): State<AppState<P>>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let key = params::idempotency_key(&headers)?;
    let admission = &app.control().settings.admission;
    let descriptor = titus_control::admit(&body, &admission.limits, &admission.policy)
        .map_err(ApiError::from_parse)?;
    caller.may_submit_for(&descriptor.owner.team_email)?;
    let idempotency = key.map(|key| IdempotencyKey {
        scope: caller.identity.clone(),
        key,
        request_hash: request_hash(&descriptor),
    });
    let outcome = titus_control::create_job(
        app.control(),
        descriptor,
        &caller.identity,
        idempotency,
        app.now_ms(),
    )
    .await?;
    let status = if outcome.was_created() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let job = outcome.into_job();
    let mut response = json(status, &job);
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v3/jobs/{}", job.id)) {
        response.headers_mut().insert(LOCATION, location);
    }
    Ok(response)
}

/// The control plane's metrics of this process in Prometheus' text format. Locally, the API
/// shares its process with the scheduler, status ingest and the reconciler, so every metric is
/// here; in AWS each function prints its own as CloudWatch EMF lines instead.
#[utoipa::path(
    get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain; version=0.0.4"))
)]
pub async fn metrics<P: Ports>(State(app): State<AppState<P>>) -> Response {
    let text = app
        .control()
        .metrics
        .prometheus(&[("stage", app.config().stage.as_str())]);
    (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[utoipa::path(
    get, path = "/api/v3/jobs", tag = "jobs",
    params(ListJobsParams),
    responses(
        (status = 200, description = "A page of jobs, newest first; environment values read `(hidden)` unless the caller created the job, is in its owner team or is an admin", body = JobPage),
        (status = 400, description = "A query parameter or the cursor is invalid", body = ErrorBody),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 429, description = "The caller's rate limit (`/titus/{stage}/api/rate-limits`) is used up; retry after `Retry-After` seconds", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds until the caller's window reopens"))),
        (status = 500, description = "Internal error (logged with the request id)", body = ErrorBody),
        (status = 503, description = "The store is throttling or unreachable; retry", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_jobs<P: Ports>(
    State(app): State<AppState<P>>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let mut query = Query::parse(
        raw.as_deref(),
        &[
            "jobState",
            "owner",
            "applicationName",
            "jobType",
            "attributes",
            "pageSize",
            "cursor",
        ],
    );
    let filter = query.job_filter();
    let page = query.page();
    query.finish()?;
    let result = app.store().list_jobs(&filter, &page).await?;
    let pagination = Pagination::of(&result, page.page_size);
    Ok(json(
        StatusCode::OK,
        &JobPage {
            items: result
                .items
                .into_iter()
                .map(|job| caller.view_of_job(job))
                .collect(),
            pagination,
        },
    ))
}

#[utoipa::path(
    get, path = "/api/v3/jobs/{id}", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job; its environment values read `(hidden)` unless the caller created it, is in its owner team or is an admin", body = Job),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 429, description = "The caller's rate limit (`/titus/{stage}/api/rate-limits`) is used up; retry after `Retry-After` seconds", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds until the caller's window reopens"))),
        (status = 404, description = "No job has this id", body = ErrorBody),
        (status = 500, description = "Internal error (logged with the request id)", body = ErrorBody),
        (status = 503, description = "The store is throttling or unreachable; retry", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_job<P: Ports>(
    State(app): State<AppState<P>>,
    IdParam(id): IdParam,
    caller: Caller,
) -> Result<Response, ApiError> {
    let id = params::job_id(&id)?;
    let job = load_job(app.store(), &id).await?;
    Ok(json(StatusCode::OK, &caller.view_of_job(job)))
}

/// Kills a job: it moves to KillInitiated and its tasks are killed; it is Finished once none runs.
#[utoipa::path(
    delete, path = "/api/v3/jobs/{id}", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The kill is under way (KillInitiated) or done (Finished)", body = Job),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 429, description = "The caller's rate limit (`/titus/{stage}/api/rate-limits`) is used up; retry after `Retry-After` seconds", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds until the caller's window reopens"))),
        (status = 403, description = "Only the job's creator or an admin may kill it", body = ErrorBody),
        (status = 404, description = "No job has this id", body = ErrorBody),
        (status = 409, description = "The job is already finished, or kept changing", body = ErrorBody),
        (status = 500, description = "Internal error (logged with the request id)", body = ErrorBody),
        (status = 503, description = "The store or an agent queue is unavailable; retry", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn kill_job<P: Ports>(
    State(app): State<AppState<P>>,
    IdParam(id): IdParam,
    caller: Caller,
) -> Result<Response, ApiError> {
    let id = params::job_id(&id)?;
    caller.authorize(&load_job(app.store(), &id).await?)?;
    let job = titus_control::kill_job(app.control(), &id, app.now_ms()).await?;
    Ok(json(StatusCode::OK, &job))
}

/// Changes a service job's capacity.
#[utoipa::path(
    put, path = "/api/v3/jobs/{id}/instances", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "The job's id")),
    request_body(content = CapacityRequest, content_type = "application/json",
        example = json!({"min": 1, "desired": 2, "max": 3})),
    responses(
        (status = 200, description = "The job with its new capacity", body = Job),
        (status = 400, description = "The body or id is invalid, the capacity is over the platform's limit, or the job is a batch job", body = ErrorBody),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 429, description = "The caller's rate limit (`/titus/{stage}/api/rate-limits`) is used up; retry after `Retry-After` seconds", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds until the caller's window reopens"))),
        (status = 403, description = "Only the job's creator or an admin may change it", body = ErrorBody),
        (status = 404, description = "No job has this id", body = ErrorBody),
        (status = 409, description = "Desired is outside min..max, the job is not active, or it kept changing", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not declared as application/json", body = ErrorBody),
        (status = 500, description = "Internal error (logged with the request id)", body = ErrorBody),
        (status = 503, description = "The store or an agent queue is unavailable; retry", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn update_capacity<P: Ports>(
    State(app): State<AppState<P>>,
    IdParam(id): IdParam,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let id = params::job_id(&id)?;
    let update = capacity_update(&body)?;
    caller.authorize(&load_job(app.store(), &id).await?)?;
    let job = titus_control::update_capacity(app.control(), &id, update, app.now_ms()).await?;
    Ok(json(StatusCode::OK, &job))
}

/// Changes a service job's capacity: Titus' route for `JobCapacityWithOptionalAttributes`, the
/// same change as `PUT /api/v3/jobs/{id}/instances`.
#[utoipa::path(
    put, path = "/api/v3/jobs/{id}/capacityAttributes", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "The job's id")),
    request_body(content = CapacityRequest, content_type = "application/json",
        example = json!({"desired": 2})),
    responses(
        (status = 200, description = "The job with its new capacity", body = Job),
        (status = 400, description = "The body or id is invalid, the capacity is over the platform's limit, or the job is a batch job", body = ErrorBody),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 429, description = "The caller's rate limit (`/titus/{stage}/api/rate-limits`) is used up; retry after `Retry-After` seconds", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds until the caller's window reopens"))),
        (status = 403, description = "Only the job's creator or an admin may change it", body = ErrorBody),
        (status = 404, description = "No job has this id", body = ErrorBody),
        (status = 409, description = "Desired is outside min..max, the job's processes freeze it, the job is not active, or it kept changing", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not declared as application/json", body = ErrorBody),
        (status = 500, description = "Internal error (logged with the request id)", body = ErrorBody),
        (status = 503, description = "The store or an agent queue is unavailable; retry", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn update_capacity_attributes<P: Ports>(
    state: State<AppState<P>>,
    id: IdParam,
    caller: Caller,
    body: JsonBody,
) -> Result<Response, ApiError> {
    update_capacity(state, id, caller, body).await
}

/// Sets a service job's processes: which way its desired size is frozen.
#[utoipa::path(
    put, path = "/api/v3/jobs/{id}/jobprocesses", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "The job's id")),
    request_body(content = titus_core::job::ServiceJobProcesses, content_type = "application/json",
        example = json!({"disableIncreaseDesired": true, "disableDecreaseDesired": false})),
    responses(
        (status = 200, description = "The job with its processes", body = Job),
        (status = 400, description = "The body or id is invalid, or the job is a batch job", body = ErrorBody),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 429, description = "The caller's rate limit (`/titus/{stage}/api/rate-limits`) is used up; retry after `Retry-After` seconds", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds until the caller's window reopens"))),
        (status = 403, description = "Only the job's creator or an admin may change it", body = ErrorBody),
        (status = 404, description = "No job has this id", body = ErrorBody),
        (status = 409, description = "The job is not active, or it kept changing", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not declared as application/json", body = ErrorBody),
        (status = 500, description = "Internal error (logged with the request id)", body = ErrorBody),
        (status = 503, description = "The store is throttling or unreachable; retry", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn update_job_processes<P: Ports>(
    State(app): State<AppState<P>>,
    IdParam(id): IdParam,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let id = params::job_id(&id)?;
    let processes = titus_core::parse_message(&body, "a job's service processes")
        .map_err(ApiError::from_parse)?;
    caller.authorize(&load_job(app.store(), &id).await?)?;
    let job = titus_control::update_job_processes(app.control(), &id, processes).await?;
    Ok(json(StatusCode::OK, &job))
}

/// Replaces a job's disruption budget. It is stored; nothing evicts tasks yet.
#[utoipa::path(
    put, path = "/api/v3/jobs/{id}/disruptionBudget", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "The job's id")),
    request_body(content = titus_core::job::DisruptionBudget, content_type = "application/json",
        example = json!({"selfManaged": {"relocationTimeMs": "60000"}, "rateUnlimited": {}})),
    responses(
        (status = 200, description = "The job with its budget", body = Job),
        (status = 400, description = "The body or id is invalid (every problem listed)", body = ErrorBody),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 429, description = "The caller's rate limit (`/titus/{stage}/api/rate-limits`) is used up; retry after `Retry-After` seconds", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds until the caller's window reopens"))),
        (status = 403, description = "Only the job's creator or an admin may change it", body = ErrorBody),
        (status = 404, description = "No job has this id", body = ErrorBody),
        (status = 409, description = "The job is not active, or it kept changing", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not declared as application/json", body = ErrorBody),
        (status = 500, description = "Internal error (logged with the request id)", body = ErrorBody),
        (status = 503, description = "The store is throttling or unreachable; retry", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn update_disruption_budget<P: Ports>(
    State(app): State<AppState<P>>,
    IdParam(id): IdParam,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let id = params::job_id(&id)?;
    let budget =
        titus_core::parse_message(&body, "a disruption budget").map_err(ApiError::from_parse)?;
    caller.authorize(&load_job(app.store(), &id).await?)?;
    let job = titus_control::update_disruption_budget(app.control(), &id, budget).await?;
    Ok(json(StatusCode::OK, &job))
}

async fn set_enabled<P: Ports>(
    app: &AppState<P>,
    id: &str,
    caller: &Caller,
    enabled: bool,
) -> Result<Response, ApiError> {
    let id = params::job_id(id)?;
    caller.authorize(&load_job(app.store(), &id).await?)?;
    let job = titus_control::set_enabled(app.control(), &id, enabled, app.now_ms()).await?;
    Ok(json(StatusCode::OK, &job))
}

/// Enables a service job: it gets tasks up to its desired capacity again.
#[utoipa::path(
    post, path = "/api/v3/jobs/{id}/enable", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job, enabled", body = Job),
        (status = 400, description = "The id is invalid, or the job is a batch job", body = ErrorBody),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 429, description = "The caller's rate limit (`/titus/{stage}/api/rate-limits`) is used up; retry after `Retry-After` seconds", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds until the caller's window reopens"))),
        (status = 403, description = "Only the job's creator or an admin may change it", body = ErrorBody),
        (status = 404, description = "No job has this id", body = ErrorBody),
        (status = 409, description = "The job is not active, or it kept changing", body = ErrorBody),
        (status = 500, description = "Internal error (logged with the request id)", body = ErrorBody),
        (status = 503, description = "The store or an agent queue is unavailable; retry", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn enable_job<P: Ports>(
    State(app): State<AppState<P>>,
    IdParam(id): IdParam,
    caller: Caller,
) -> Result<Response, ApiError> {
    set_enabled(&app, &id, &caller, true).await
}

/// Disables a service job: it keeps its tasks but gets no new ones.
#[utoipa::path(
    post, path = "/api/v3/jobs/{id}/disable", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job, disabled", body = Job),
        (status = 400, description = "The id is invalid, or the job is a batch job", body = ErrorBody),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 429, description = "The caller's rate limit (`/titus/{stage}/api/rate-limits`) is used up; retry after `Retry-After` seconds", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds until the caller's window reopens"))),
        (status = 403, description = "Only the job's creator or an admin may change it", body = ErrorBody),
        (status = 404, description = "No job has this id", body = ErrorBody),
        (status = 409, description = "The job is not active, or it kept changing", body = ErrorBody),
        (status = 500, description = "Internal error (logged with the request id)", body = ErrorBody),
        (status = 503, description = "The store is throttling or unreachable; retry", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn disable_job<P: Ports>(
    State(app): State<AppState<P>>,
    IdParam(id): IdParam,
    caller: Caller,
) -> Result<Response, ApiError> {
    set_enabled(&app, &id, &caller, false).await
}

/// Adds or replaces job attributes.
#[utoipa::path(
    put, path = "/api/v3/jobs/{id}/attributes", tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "The job's id")),
    request_body(content = AttributesRequest, content_type = "application/json",
        example = json!({"attributes": {"team": "red"}})),
    responses(
        (status = 200, description = "The job with its attributes", body = Job),
        (status = 400, description = "The body or id is invalid, or an attribute breaks a limit", body = ErrorBody),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 429, description = "The caller's rate limit (`/titus/{stage}/api/rate-limits`) is used up; retry after `Retry-After` seconds", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds until the caller's window reopens"))),
        (status = 403, description = "Only the job's creator or an admin may change it", body = ErrorBody),
        (status = 404, description = "No job has this id", body = ErrorBody),
        (status = 409, description = "The job is finished, or it kept changing", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not declared as application/json", body = ErrorBody),
        (status = 500, description = "Internal error (logged with the request id)", body = ErrorBody),
        (status = 503, description = "The store is throttling or unreachable; retry", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn update_attributes<P: Ports>(
    State(app): State<AppState<P>>,
    IdParam(id): IdParam,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let id = params::job_id(&id)?;
    let upserts = attributes_update(&body)?;
    caller.authorize(&load_job(app.store(), &id).await?)?;
    let job = titus_control::update_attributes(app.control(), &id, &upserts).await?;
    Ok(json(StatusCode::OK, &job))
}

/// Removes job attributes; keys that are not set are ignored.
#[utoipa::path(
    delete, path = "/api/v3/jobs/{id}/attributes", tag = "jobs",
    params(
        ("id" = uuid::Uuid, Path, description = "The job's id"),
        ("keys" = Vec<String>, Query, style = Form, explode = false, min_items = 1,
         description = "Attribute keys to remove, comma-separated"),
    ),
    responses(
        (status = 200, description = "The job without those attributes", body = Job),
        (status = 400, description = "The id or keys are invalid", body = ErrorBody),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 429, description = "The caller's rate limit (`/titus/{stage}/api/rate-limits`) is used up; retry after `Retry-After` seconds", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds until the caller's window reopens"))),
        (status = 403, description = "Only the job's creator or an admin may change it", body = ErrorBody),
        (status = 404, description = "No job has this id", body = ErrorBody),
        (status = 409, description = "The job is finished, or it kept changing", body = ErrorBody),
        (status = 500, description = "Internal error (logged with the request id)", body = ErrorBody),
        (status = 503, description = "The store is throttling or unreachable; retry", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete_attributes<P: Ports>(
    State(app): State<AppState<P>>,
    IdParam(id): IdParam,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let id = params::job_id(&id)?;
    let mut query = Query::parse(raw.as_deref(), &["keys"]);
    let keys = query.attribute_keys();
    query.finish()?;
    caller.authorize(&load_job(app.store(), &id).await?)?;
    let job = titus_control::delete_attributes(app.control(), &id, &keys).await?;
    Ok(json(StatusCode::OK, &job))
}

#[utoipa::path(
    get, path = "/api/v3/tasks", tag = "tasks",
    params(ListTasksParams),
    responses(
        (status = 200, description = "A page of tasks", body = TaskPage),
        (status = 400, description = "A query parameter or the cursor is invalid", body = ErrorBody),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 429, description = "The caller's rate limit (`/titus/{stage}/api/rate-limits`) is used up; retry after `Retry-After` seconds", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds until the caller's window reopens"))),
        (status = 500, description = "Internal error (logged with the request id)", body = ErrorBody),
        (status = 503, description = "The store is throttling or unreachable; retry", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_tasks<P: Ports>(
    State(app): State<AppState<P>>,
    _caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let mut query = Query::parse(
        raw.as_deref(),
        &["jobId", "taskStates", "pageSize", "cursor"],
    );
    let filter = query.task_filter();
    let page = query.page();
    query.finish()?;
    let result = titus_control::list_tasks(app.control(), &filter, &page).await?;
    let pagination = Pagination::of(&result, page.page_size);
    Ok(json(
        StatusCode::OK,
        &TaskPage {
            items: result.items,
            pagination,
        },
    ))
}

#[utoipa::path(
    get, path = "/api/v3/tasks/{id}", tag = "tasks",
    params(("id" = uuid::Uuid, Path, description = "The task's id")),
    responses(
        (status = 200, description = "The task", body = Task),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 429, description = "The caller's rate limit (`/titus/{stage}/api/rate-limits`) is used up; retry after `Retry-After` seconds", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds until the caller's window reopens"))),
        (status = 404, description = "No task has this id", body = ErrorBody),
        (status = 500, description = "Internal error (logged with the request id)", body = ErrorBody),
        (status = 503, description = "The store is throttling or unreachable; retry", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_task<P: Ports>(
    State(app): State<AppState<P>>,
    IdParam(id): IdParam,
    _caller: Caller,
) -> Result<Response, ApiError> {
    let id = params::task_id(&id)?;
    let task = app
        .store()
        .get_task(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("task {id} does not exist")))?;
    Ok(json(StatusCode::OK, &task))
}

/// A task's output, from the CloudWatch Logs stream its agent's log driver writes. Read from
/// the head, the last `tail` lines, or from `sinceMs`; then on from the returned `cursor`, which
/// returns only lines written since (a follow reads again until `taskFinished` and no lines).
#[utoipa::path(
    get, path = "/api/v3/tasks/{id}/logs", tag = "tasks",
    params(("id" = uuid::Uuid, Path, description = "The task's id"), TaskLogsParams),
    responses(
        (status = 200, description = "The lines read, oldest first, where they are kept, and the cursor to read on from", body = TaskLogs),
        (status = 400, description = "The id or a query parameter is invalid, or the cursor is not one this stream gave", body = ErrorBody),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 403, description = "Only the job's creator, its owner team's members and admins read its tasks' output", body = ErrorBody),
        (status = 404, description = "No task has this id, it was never placed, or its agent keeps its output on the host", body = ErrorBody),
        (status = 429, description = "The caller's rate limit (`/titus/{stage}/api/rate-limits`) is used up; retry after `Retry-After` seconds", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds until the caller's window reopens"))),
        (status = 500, description = "Internal error (logged with the request id)", body = ErrorBody),
        (status = 503, description = "CloudWatch Logs is throttling or unreachable, or this API reads no logs; retry", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_task_logs<P: Ports>(
    State(app): State<AppState<P>>,
    IdParam(id): IdParam,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let id = params::task_id(&id)?;
    let mut query = Query::parse(raw.as_deref(), &["cursor", "sinceMs", "tail", "limit"]);
    let (cursor, since_ms, tail, limit) = query.log_read();
    query.finish()?;
    let task = app
        .store()
        .get_task(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("task {id} does not exist")))?;
    let job = app.store().get_job(&task.job_id).await?;
    if let Some(job) = &job {
        if !caller.may_read_env_of(job) {
            return Err(ApiError::forbidden(format!(
                "{} may not read task {id}'s output: only the job's creator, members of its \
                 owner team {} and admins may",
                caller.identity, job.job_descriptor.owner.team_email
            )));
        }
    }
    let Some(agent_id) = task.agent_id.clone() else {
        return Err(ApiError::not_found(format!(
            "task {id} has no output: it was never placed on an agent (it is {})",
            task.state()
        )));
    };
    let Some(reader) = app.task_logs() else {
        return Err(ApiError::unavailable(
            "this API serves no task logs: it was started without a CloudWatch Logs reader",
        ));
    };
    let group = match app.agents().get_agent(&agent_id).await? {
        Some(agent) => match agent.task_logs {
            Some(logs) => logs,
            None => {
                return Err(ApiError::not_found(format!(
                    "task {id}'s agent {agent_id} keeps its tasks' output on its host (Docker's \
                     json-file log driver), not in CloudWatch Logs: read it there with \
                     `titus-agent logs {id}`"
                )))
            }
        },
        // The agent left; its tasks' streams stay in the stage's group.
        None => titus_core::ports::TaskLogs {
            group: titus_core::ports::TaskLogs::stage_group(
                &app.control().settings.admission.policy.stage,
            ),
            region: None,
        },
    };
    let location = LogLocation {
        stream: titus_core::ports::TaskLogs::stream_of(task.job_id.as_str(), id.as_ref()),
        group: group.group,
        region: group.region,
    };
    let read = LogRead {
        location: location.clone(),
        cursor,
        since_ms,
        tail,
        limit,
    };
    let task_finished = task.state() == titus_core::TaskState::Finished;
    let (lines, cursor) =
        match reader.read(&read).await {
            Ok(page) => (page.lines, Some(page.cursor)),
            // Not started yet, or it wrote nothing: no stream.
            Err(LogError::NotFound { .. }) if read.cursor.is_none() => (Vec::new(), None),
            Err(LogError::NotFound { group, stream }) => {
                return Err(ApiError::not_found(format!(
                "task {id}'s log stream {stream} in {group} is gone (CloudWatch Logs' retention)"
            )))
            }
            Err(LogError::BadCursor) => return Err(ApiError::invalid(
                "cursor",
                "is not a cursor of this task's stream; expected the `cursor` of an earlier answer",
            )),
            Err(e) => return Err(ApiError::unavailable(e.to_string())),
        };
    Ok(json(
        StatusCode::OK,
        &TaskLogs {
            task_id: id.to_string(),
            location,
            lines,
            cursor,
            task_finished,
        },
    ))
}

/// Kills a task. With `shrink=true` (service jobs only) the job's desired capacity drops by one
/// and the task is not replaced.
#[utoipa::path(
    delete, path = "/api/v3/tasks/{id}", tag = "tasks",
    params(
        ("id" = uuid::Uuid, Path, description = "The task's id"),
        ("shrink" = Option<bool>, Query, description = "Also lower the service job's desired capacity (default false)"),
        ("preventMinSizeUpdate" = Option<bool>, Query, description = "With shrink: refuse to go below the job's min (409); by default, as in Titus, a shrink at min lowers min too"),
    ),
    responses(
        (status = 200, description = "The task, being killed (KillInitiated) or Finished", body = Task),
        (status = 400, description = "The id or shrink is invalid, or shrink was asked for a batch job", body = ErrorBody),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 429, description = "The caller's rate limit (`/titus/{stage}/api/rate-limits`) is used up; retry after `Retry-After` seconds", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds until the caller's window reopens"))),
        (status = 403, description = "Only the job's creator or an admin may kill its tasks", body = ErrorBody),
        (status = 404, description = "No task has this id", body = ErrorBody),
        (status = 409, description = "The task is finished, desired would go below min, or it kept changing", body = ErrorBody),
        (status = 500, description = "Internal error (logged with the request id)", body = ErrorBody),
        (status = 503, description = "The store or the agent's queue is unavailable; retry", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn kill_task<P: Ports>(
    State(app): State<AppState<P>>,
    IdParam(id): IdParam,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let id = params::task_id(&id)?;
    let mut query = Query::parse(raw.as_deref(), &["shrink", "preventMinSizeUpdate"]);
    let options = titus_control::KillOptions {
        shrink: query.shrink(),
        prevent_min_size_update: query.flag("preventMinSizeUpdate"),
    };
    query.finish()?;
    let task: Task = app
        .store()
        .get_task(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("task {id} does not exist")))?;
    let job = app.store().get_job(&task.job_id).await?.ok_or_else(|| {
        ApiError::from(ControlError::NotFound {
            entity: "job",
            id: task.job_id.to_string(),
        })
    })?;
    caller.authorize(&job)?;
    let task = titus_control::kill_task_with(app.control(), &id, options, app.now_ms()).await?;
    Ok(json(StatusCode::OK, &task))
}

#[utoipa::path(
    get, path = "/api/v3/agents", tag = "agents",
    responses(
        (status = 200, description = "Every registered agent; `queueUrl` and `principal` are empty unless the caller is an admin", body = AgentList),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 429, description = "The caller's rate limit (`/titus/{stage}/api/rate-limits`) is used up; retry after `Retry-After` seconds", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds until the caller's window reopens"))),
        (status = 500, description = "Internal error (logged with the request id)", body = ErrorBody),
        (status = 503, description = "The store is throttling or unreachable; retry", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_agents<P: Ports>(
    State(app): State<AppState<P>>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let items = app
        .agents()
        .list_agents()
        .await?
        .into_iter()
        .map(|agent| caller.view_of_agent(agent))
        .collect();
    Ok(json(StatusCode::OK, &AgentList { items }))
}

#[utoipa::path(
    get, path = "/api/v3/events", tag = "events",
    params(ListEventsParams),
    responses(
        (status = 200, description = "The matching events after the cursor (settled: 300 ms old), oldest first; empty when none came within `waitMs`", body = EventList),
        (status = 400, description = "A query parameter or the cursor is invalid", body = ErrorBody),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 429, description = "The caller's rate limit (`/titus/{stage}/api/rate-limits`) is used up; retry after `Retry-After` seconds", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds until the caller's window reopens"))),
        (status = 500, description = "Internal error (logged with the request id)", body = ErrorBody),
        (status = 503, description = "The store is throttling or unreachable; retry", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_events<P: Ports>(
    State(app): State<AppState<P>>,
    _caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    /// How often a waiting read looks again.
    const POLL: std::time::Duration = std::time::Duration::from_millis(100);
    let mut query = Query::parse(
        raw.as_deref(),
        &[
            "jobId", "owner", "types", "cursor", "sinceMs", "waitMs", "limit",
        ],
    );
    let cp = app.control();
    let started = std::time::Instant::now();
    let (filter, cursor, wait_ms) = query.event_query(app.now_ms());
    query.finish()?;
    let wait = std::time::Duration::from_millis(wait_ms);
    let mut page = titus_control::events::read(cp, &filter, &cursor).await?;
    while page.events.is_empty() && !page.has_more && started.elapsed() + POLL < wait {
        tokio::time::sleep(POLL).await;
        page = titus_control::events::read(cp, &filter, &page.cursor).await?;
    }
    Ok(json(
        StatusCode::OK,
        &EventList {
            events: page.events,
            cursor: page.cursor.encode(),
            has_more: page.has_more,
        },
    ))
}

#[utoipa::path(
    get, path = "/api/v3/scheduler/results/{id}", tag = "scheduler",
    params(("id" = uuid::Uuid, Path, description = "A task's id, or a job's for all its pending tasks")),
    responses(
        (status = 200, description = "What the scheduler found: `success` for a placed task, `failures` with the counted reasons while the job's tasks fit nowhere, or only `message` while it has not tried or not failed", body = SchedulingResult),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 429, description = "The caller's rate limit (`/titus/{stage}/api/rate-limits`) is used up; retry after `Retry-After` seconds", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds until the caller's window reopens"))),
        (status = 404, description = "No task or job has this id, or the task finished without being placed", body = ErrorBody),
        (status = 500, description = "Internal error (logged with the request id)", body = ErrorBody),
        (status = 503, description = "The store is throttling or unreachable; retry", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_scheduling_result<P: Ports>(
    State(app): State<AppState<P>>,
    IdParam(id): IdParam,
    _caller: Caller,
) -> Result<Response, ApiError> {
    let task_id = params::task_id(&id)?;
    let store = app.store();
    let (task, job_id) = match store.get_task(&task_id).await? {
        Some(task) => {
            let job_id = task.job_id.clone();
            (Some(task), job_id)
        }
        None => {
            let job_id = JobId::from_string(task_id.as_str());
            if store.get_job(&job_id).await?.is_none() {
                return Err(ApiError::not_found(format!(
                    "no task or job has id {task_id}"
                )));
            }
            (None, job_id)
        }
    };
    let result = SchedulingResult {
        job_id: job_id.to_string(),
        task_id: task.as_ref().map(|t| t.id.to_string()),
        ..SchedulingResult::default()
    };
    let now = app.now_ms();
    let answer = match &task {
        Some(task) if task.agent_id.is_some() => {
            let agent = task.agent_id.as_deref().unwrap_or_default();
            let at = task.dispatched_at_ms.unwrap_or(task.status.timestamp_ms);
            SchedulingResult {
                success: Some(SchedulingSuccess {
                    message: format!("placed on agent {agent} at {at}"),
                }),
                ..result
            }
        }
        Some(task) if task.state().is_terminal() => {
            return Err(ApiError::not_found(format!(
                "task {} finished ({}) without being placed; the scheduler keeps results for \
                 pending tasks only",
                task.id,
                task.status.reason_code.map_or("no reason", |r| r.as_str())
            )))
        }
        // A task that fit nowhere is deferred (its not-before time moves ahead), so the job's
        // failures come first; a later not-before time without them is a retry delay.
        _ => match store.get_placement_result(&job_id).await? {
            Some(found) => SchedulingResult::failures(found, now, result),
            None if task.as_ref().is_some_and(|t| t.not_before_ms > now) => SchedulingResult {
                message: Some(format!(
                    "waiting for its retry delay: the scheduler considers it from {}",
                    task.as_ref().map_or(0, |t| t.not_before_ms)
                )),
                ..result
            },
            None => SchedulingResult {
                message: Some(match task {
                    Some(_) => "pending: the scheduler has not failed to place it".to_owned(),
                    None => "no placement failure recorded for the job's tasks".to_owned(),
                }),
                ..result
            },
        },
    };
    Ok(json(StatusCode::OK, &answer))
}

/// A dry run of a job, as `nomad job plan`: the descriptor is validated as a create would, and the
/// placement engine answers for its initial tasks on the agents as they are. Nothing is stored.
#[utoipa::path(
    post, path = "/api/v3/scheduler/plan", tag = "scheduler",
    request_body(content = JobDescriptor, description = "A job descriptor, as for `POST /api/v3/jobs`"),
    responses(
        (status = 200, description = "Where the job's tasks would go now, how many would wait and why, and whether a quota would refuse the job", body = DryRun),
        (status = 400, description = "The descriptor is invalid; every problem is listed in `details`", body = ErrorBody),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 403, description = "The caller may not submit jobs for the descriptor's owner team", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 429, description = "The caller's rate limit (`/titus/{stage}/api/rate-limits`) is used up; retry after `Retry-After` seconds", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds until the caller's window reopens"))),
        (status = 500, description = "Internal error (logged with the request id)", body = ErrorBody),
        (status = 503, description = "The store is throttling or unreachable; retry", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn plan_job<P: Ports>(
    State(app): State<AppState<P>>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let admission = &app.control().settings.admission;
    let descriptor = titus_control::admit(&body, &admission.limits, &admission.policy)
        .map_err(ApiError::from_parse)?;
    caller.may_submit_for(&descriptor.owner.team_email)?;
    let plan = titus_control::scheduler::dry_run::plan_job(
        app.control(),
        descriptor,
        &caller.identity,
        app.now_ms(),
    )
    .await?;
    Ok(json(StatusCode::OK, &plan))
}

#[utoipa::path(
    get, path = "/api/v3/quotas", tag = "quotas",
    responses(
        (status = 200, description = "The quotas the caller may see (`/titus/{stage}/policy/quotas`) with what is held: the caller's teams and every capacity group; an admin sees every team", body = QuotaList),
        (status = 401, description = "No or unknown credentials", body = ErrorBody),
        (status = 429, description = "The caller's rate limit (`/titus/{stage}/api/rate-limits`) is used up; retry after `Retry-After` seconds", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds until the caller's window reopens"))),
        (status = 500, description = "Internal error (logged with the request id)", body = ErrorBody),
        (status = 503, description = "The store is throttling or unreachable; retry", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_quotas<P: Ports>(
    State(app): State<AppState<P>>,
    caller: Caller,
) -> Result<Response, ApiError> {
    use titus_core::quota::QuotaScope;
    let quotas = &app.control().settings.admission.quotas;
    let usage = app.store().list_usage().await?;
    let mut scopes: std::collections::BTreeSet<QuotaScope> = usage
        .keys()
        .filter_map(|key| QuotaScope::from_key(key))
        .collect();
    scopes.extend(
        quotas
            .teams
            .keys()
            .filter(|name| *name != "*")
            .map(|name| QuotaScope::Team(name.clone())),
    );
    scopes.extend(
        quotas
            .capacity_groups
            .keys()
            .filter(|name| *name != "*")
            .map(|name| QuotaScope::CapacityGroup(name.clone())),
    );
    let items = scopes
        .into_iter()
        .filter(|scope| match scope {
            QuotaScope::Team(team) => caller.admin || caller.is_member_of(team),
            QuotaScope::CapacityGroup(_) => true,
        })
        .map(|scope| {
            let used = usage.get(&scope.key()).copied().unwrap_or_default();
            let (kind, name) = match &scope {
                QuotaScope::Team(team) => ("team", team.clone()),
                QuotaScope::CapacityGroup(group) => ("capacityGroup", group.clone()),
            };
            QuotaView {
                kind: kind.to_owned(),
                name,
                limits: quotas.limits_for(&scope),
                used: used.into(),
            }
        })
        .collect();
    let list = QuotaList {
        items,
        default_team_limits: quotas.teams.get("*").copied().unwrap_or_default(),
        default_capacity_group_limits: quotas.capacity_groups.get("*").copied().unwrap_or_default(),
    };
    Ok(json(StatusCode::OK, &list))
}

#[utoipa::path(
    get, path = "/api/v3/openapi.json", tag = "health",
    responses((status = 200, description = "This document", content_type = "application/json"))
)]
pub async fn openapi_document() -> Response {
    let mut response = (StatusCode::OK, crate::openapi::document_json()).into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
