//! Recorded API Gateway HTTP API (payload v2) events through the Lambda entry point: lambda_http's
//! event conversion, the identity taken from the IAM request context, the router, and the
//! conversion of the answer back into an API Gateway response.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use lambda_http::request::LambdaRequest;
use lambda_http::{Context, LambdaEvent};
use serde_json::{json, Value};
use support::Api;
use tower::{Service as _, ServiceExt as _};

fn event(name: &str) -> Value {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Runs an event through exactly what `lambda_http::run(lambda_service(router))` runs; returns the
/// API Gateway response as JSON.
async fn invoke(api: &Api, event: Value) -> Value {
    let request: LambdaRequest = serde_json::from_value(event).unwrap();
    let mut adapter = lambda_http::Adapter::from(titus_api::lambda_service(api.router.clone()));
    let response = adapter
        .ready()
        .await
        .unwrap()
        .call(LambdaEvent::new(request, Context::default()))
        .await
        .unwrap();
    serde_json::to_value(&response).unwrap()
}

fn body(response: &Value) -> Value {
    serde_json::from_str(response["body"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn a_recorded_create_job_event_creates_a_job_owned_by_the_iam_caller() {
    let api = Api::new().await;

    let created = invoke(&api, event("apigw-v2-iam-create-job.json")).await;
    let retried = invoke(&api, event("apigw-v2-iam-create-job.json")).await;
    let listed = invoke(&api, event("apigw-v2-iam-list-jobs.json")).await;

    assert_eq!(created["statusCode"], 201, "{created}");
    let job = body(&created);
    assert_eq!(job["createdBy"], "arn:aws:iam::123456789012:user/alice");
    assert_eq!(created["headers"]["x-request-id"], "Zx1bAhPcIAMEbGA=");
    assert_eq!(
        created["headers"]["location"],
        json!(format!("/api/v3/jobs/{}", job["id"].as_str().unwrap()))
    );
    assert_eq!(
        retried["statusCode"], 200,
        "the recorded Idempotency-Key makes a retry safe"
    );
    assert_eq!(body(&retried)["id"], job["id"]);
    assert_eq!(listed["statusCode"], 200, "{listed}");
    assert_eq!(body(&listed)["items"][0]["id"], job["id"]);
    assert_eq!(body(&listed)["pagination"]["pageSize"], 10);
}

#[tokio::test]
async fn an_event_without_an_iam_caller_is_401_even_with_a_bearer_token() {
    let api = Api::new().await;
    let mut unauthenticated = event("apigw-v2-no-authorizer.json");
    unauthenticated["headers"]["authorization"] = json!(format!("Bearer {}", support::ALICE));

    let response = invoke(&api, unauthenticated).await;

    assert_eq!(response["statusCode"], 401, "{response}");
    assert_eq!(body(&response)["error"], "unauthorized");
    assert_eq!(response["headers"]["content-type"], "application/json");
}
