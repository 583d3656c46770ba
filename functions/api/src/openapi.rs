//! The OpenAPI 3 document, generated from the handlers' annotations and the domain types' schemas.
//! It is served at `/api/v3/openapi.json` and checked in at `functions/api/openapi.json`; a test
//! fails when the two differ (`UPDATE_OPENAPI=1 cargo test -p titus-api --test openapi`
//! rewrites the checked-in copy).

use std::sync::OnceLock;

use titus_core::quota::QuotaLimits;
use titus_core::{JobState, JobType, TaskState};
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::RefOr;
use utoipa::{Modify, OpenApi};

use crate::error::{ErrorBody, ErrorContext, ErrorDetail};
use crate::models::{
    AgentList, AttributesRequest, CapacityRequest, EventList, Health, JobPage, Pagination,
    QuotaList, QuotaView, SchedulingFailure, SchedulingFailures, SchedulingResult,
    SchedulingSuccess, TaskLogs, TaskPage, UsedResources,
};
use crate::routes;

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Titus API",
        version = "3",
        description = "Titus' v3 REST API on a serverless control plane. In AWS, API Gateway \
                       authorizes every call with IAM (SigV4) and the caller's ARN is its identity; \
                       served locally, callers present a bearer token from configuration. Errors \
                       share one shape: {\"error\", \"message\", \"details\": [{\"field\", \"message\"}]}."
    ),
    paths(
        routes::healthz,
        routes::metrics,
        routes::openapi_document,
        routes::create_job,
        routes::list_jobs,
        routes::get_job,
        routes::kill_job,
        routes::update_capacity,
        routes::update_capacity_attributes,
        routes::update_job_processes,
        routes::update_disruption_budget,
        routes::enable_job,
        routes::disable_job,
        routes::update_attributes,
        routes::delete_attributes,
        routes::list_tasks,
        routes::get_task,
        routes::kill_task,
        routes::get_task_logs,
        routes::list_agents,
        routes::list_quotas,
        routes::get_scheduling_result,
        routes::plan_job,
        routes::list_events,
    ),
    components(schemas(
        ErrorBody,
        ErrorContext,
        ErrorDetail,
        Pagination,
        JobPage,
        TaskPage,
        EventList,
        TaskLogs,
        titus_core::ports::LogLocation,
        titus_core::ports::LogLine,
        titus_core::events::Event,
        titus_core::events::EventType,
        titus_core::events::PlacementSummary,
        AgentList,
        QuotaList,
        QuotaView,
        SchedulingResult,
        SchedulingSuccess,
        SchedulingFailures,
        SchedulingFailure,
        titus_core::placement::DryRun,
        titus_core::placement::Rejection,
        UsedResources,
        QuotaLimits,
        Health,
        CapacityRequest,
        AttributesRequest,
        JobType,
        JobState,
        TaskState,
    )),
    modifiers(&BearerAuth, &Links),
    tags(
        (name = "jobs", description = "Create, list, kill and change jobs"),
        (name = "tasks", description = "List and kill tasks"),
        (name = "agents", description = "The hosts that run tasks"),
        (name = "quotas", description = "What each owner team and capacity group may hold, and holds"),
        (name = "scheduler", description = "Why a task waits: the scheduler's placement results"),
        (name = "events", description = "The feed of job and task changes, resumable from a cursor, with long polls"),
        (name = "health", description = "Liveness and this document"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token from /titus/{stage}/api/identities (local); in AWS, IAM SigV4 \
                         through API Gateway instead",
                    ))
                    .build(),
            ),
        );
    }
}

/// OpenAPI links: a created job's id feeds the operations on that job, and a task listing's first
/// task feeds the operations on a task, so clients (and schemathesis' stateful phase) can follow
/// them.
struct Links;

impl Modify for Links {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let on_a_job = [
            ("get_job", "id"),
            ("kill_job", "id"),
            ("update_capacity", "id"),
            ("enable_job", "id"),
            ("disable_job", "id"),
            ("update_attributes", "id"),
            ("delete_attributes", "id"),
            ("list_tasks", "jobId"),
        ];
        add_links(
            openapi,
            "/api/v3/jobs",
            "post",
            "201",
            &on_a_job,
            "$response.body#/id",
        );
        add_links(
            openapi,
            "/api/v3/tasks",
            "get",
            "200",
            &[("get_task", "id"), ("kill_task", "id")],
            "$response.body#/items/0/id",
        );
    }
}

fn add_links(
    openapi: &mut utoipa::openapi::OpenApi,
    path: &str,
    method: &str,
    status: &str,
    targets: &[(&str, &str)],
    value: &str,
) {
    let Some(item) = openapi.paths.paths.get_mut(path) else {
        return;
    };
    let operation = match method {
        "get" => item.get.as_mut(),
        "post" => item.post.as_mut(),
        _ => None,
    };
    let Some(RefOr::T(response)) = operation.and_then(|o| o.responses.responses.get_mut(status))
    else {
        return;
    };
    for (operation_id, parameter) in targets {
        response.links.insert(
            (*operation_id).to_owned(),
            RefOr::T(
                LinkBuilder::new()
                    .operation_id(*operation_id)
                    .parameter(*parameter, value)
                    .build(),
            ),
        );
    }
}

/// The document as pretty JSON with a trailing newline, the form checked in.
pub fn document_json() -> String {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT
        .get_or_init(|| {
            let mut document = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
            fix_link_field_names(&mut document);
            let mut text = serde_json::to_string_pretty(&document).unwrap_or_default();
            text.push('\n');
            text
        })
        .clone()
}

/// utoipa 5 serializes a Link's fields in snake_case (`operation_id`); OpenAPI spells them in
/// camelCase (`operationId`), which is what clients and schemathesis read.
fn fix_link_field_names(document: &mut serde_json::Value) {
    let Some(paths) = document.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    let links = paths
        .values_mut()
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut())
        .filter_map(|operation| operation.get_mut("responses"))
        .filter_map(|responses| responses.as_object_mut())
        .flat_map(|responses| responses.values_mut())
        .filter_map(|response| response.get_mut("links"))
        .filter_map(|links| links.as_object_mut())
        .flat_map(|links| links.values_mut())
        .filter_map(|link| link.as_object_mut());
    for link in links {
        for (snake, camel) in [
            ("operation_id", "operationId"),
            ("operation_ref", "operationRef"),
            ("request_body", "requestBody"),
        ] {
            if let Some(value) = link.remove(snake) {
                link.insert(camel.to_owned(), value);
            }
        }
    }
}
