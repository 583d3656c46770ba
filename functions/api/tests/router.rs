//! Every route and every error status of the API, through the router (tower `oneshot`) against
//! the emulator-backed store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{json, Value};
use support::{batch, request, service, Api, ADMIN, ALICE, BOB, CAROL};
use titus_aws::provision::ensure_queue;
use titus_core::{Agent, AgentState, AgentStore, JobStore, Resources, TaskId, TaskState};

fn id_of(job: &Value) -> String {
    job["id"].as_str().unwrap().to_owned()
}

async fn tasks_of(api: &Api, job_id: &str) -> Vec<Value> {
    let reply = api
        .get(
            &format!("/api/v3/tasks?jobId={job_id}&pageSize=1000"),
            ALICE,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.json["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn health_and_the_openapi_document_need_no_credentials() {
    let api = Api::new().await;

    let health = api.send(request(Method::GET, "/healthz", None, None)).await;
    let document = api
        .send(request(Method::GET, "/api/v3/openapi.json", None, None))
        .await;

    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json, json!({"status": "ok"}));
    assert_eq!(document.status, StatusCode::OK);
    assert_eq!(document.text, titus_api::openapi::document_json());
    assert!(health.headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn a_caller_without_known_credentials_gets_401() {
    let api = Api::new().await;

    let missing = api
        .send(request(Method::GET, "/api/v3/jobs", None, None))
        .await;
    let unknown = api.get("/api/v3/jobs", "not-a-token").await;
    let basic = api
        .send(
            Request::builder()
                .uri("/api/v3/agents")
                .header("authorization", "Basic YWxpY2U6cHc=")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    let create = api
        .send(request(
            Method::POST,
            "/api/v3/jobs",
            None,
            Some(batch(1).to_string()),
        ))
        .await;

    for reply in [&missing, &unknown, &basic, &create] {
        assert_eq!(reply.error(StatusCode::UNAUTHORIZED), "unauthorized");
        assert_eq!(reply.headers.get("www-authenticate").unwrap(), "Bearer");
    }
}

#[tokio::test]
async fn a_created_job_is_returned_with_its_location_and_read_back() {
    let api = Api::new().await;

    let reply = api.post_json("/api/v3/jobs", ALICE, &batch(2)).await;

    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let id = id_of(&reply.json);
    assert_eq!(
        reply.headers.get("location").unwrap(),
        &format!("/api/v3/jobs/{id}")
    );
    assert_eq!(reply.json["createdBy"], "alice@example.com");
    assert_eq!(reply.json["status"]["state"], "Accepted");
    assert_eq!(reply.json["jobDescriptor"]["applicationName"], "app");
    let read = api.get(&format!("/api/v3/jobs/{id}"), BOB).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.json, reply.json);
    let upper = api
        .get(&format!("/api/v3/jobs/{}", id.to_uppercase()), BOB)
        .await;
    assert_eq!(upper.json, reply.json, "ids are read in canonical form");
    // The request stored the job alone; its tasks are the scheduler's to write.
    assert!(tasks_of(&api, &id).await.is_empty());
    let written = titus_control::materialize::materialize_job(
        &api.control,
        &titus_core::JobId::from_string(id.clone()),
    )
    .await
    .unwrap();
    assert_eq!(written.len(), 2);
    let tasks = tasks_of(&api, &id).await;
    assert_eq!(tasks.len(), 2);
    assert!(tasks.iter().all(|t| t["status"]["state"] == "Accepted"));
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_returns_the_same_job() {
    let api = Api::new().await;
    let with_key = |token: &'static str, key: &'static str, body: Value| {
        let mut request = request(
            Method::POST,
            "/api/v3/jobs",
            Some(token),
            Some(body.to_string()),
        );
        request
            .headers_mut()
            .insert("idempotency-key", key.parse().unwrap());
        request
    };

    let first = api.send(with_key(ALICE, "order-1", batch(1))).await;
    // The same request spelt differently (a default spelt out) is the same request.
    let mut spelt_out = batch(1);
    spelt_out["container"]["killGracePeriodSec"] = json!(10);
    let retry = api.send(with_key(ALICE, "order-1", spelt_out)).await;
    let other_body = api.send(with_key(ALICE, "order-1", batch(2))).await;
    let other_caller = api.send(with_key(BOB, "order-1", batch(1))).await;
    let bad_key = api.send(with_key(ALICE, "has space", batch(1))).await;

    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(retry.status, StatusCode::OK, "{}", retry.text);
    assert_eq!(retry.json, first.json);
    assert_eq!(
        other_body.error(StatusCode::CONFLICT),
        "idempotency_mismatch"
    );
    assert_eq!(other_body.fields(), ["Idempotency-Key"]);
    assert_eq!(
        other_caller.status,
        StatusCode::CREATED,
        "keys are per caller"
    );
    assert_ne!(id_of(&other_caller.json), id_of(&first.json));
    assert_eq!(bad_key.error(StatusCode::BAD_REQUEST), "invalid_request");
    assert_eq!(bad_key.fields(), ["Idempotency-Key"]);
}

#[tokio::test]
async fn an_invalid_descriptor_gets_400_listing_every_problem() {
    let api = Api::new().await;
    let mut invalid = batch(1);
    invalid["owner"]["teamEmail"] = json!("not-an-email");
    invalid["container"]["resources"] = json!({"cpu": 500, "memoryMB": 1});
    invalid["container"]["privileged"] = json!(true);
    invalid["container"]["hostNetwork"] = json!(true);

    let reply = api.post_json("/api/v3/jobs", ALICE, &invalid).await;
    let malformed = api
        .send(request(
            Method::POST,
            "/api/v3/jobs",
            Some(ALICE),
            Some("{\"owner\": ".to_owned()),
        ))
        .await;
    let unknown_field = api
        .post_json(
            "/api/v3/jobs",
            ALICE,
            &json!({"owner": {"teamEmail": "a@b.c"}, "x\n${jndi}": 1}),
        )
        .await;

    assert_eq!(reply.error(StatusCode::BAD_REQUEST), "invalid_request");
    let fields: HashSet<String> = reply.fields().into_iter().collect();
    for field in [
        "owner.teamEmail",
        "container.resources.cpu",
        "container.resources.memoryMB",
        "container.privileged",
        "container.hostNetwork",
    ] {
        assert!(fields.contains(field), "{field} missing from {fields:?}");
    }
    assert_eq!(malformed.error(StatusCode::BAD_REQUEST), "invalid_request");
    assert_eq!(
        unknown_field.error(StatusCode::BAD_REQUEST),
        "invalid_request"
    );
    assert!(
        !unknown_field.text.contains("x\n"),
        "user text is only ever quoted: {}",
        unknown_field.text
    );
    let listed = api.get("/api/v3/jobs", ALICE).await;
    assert_eq!(listed.json["items"], json!([]), "nothing was stored");
}

#[tokio::test]
async fn a_policy_that_allows_privileged_containers_and_restricts_registries_is_applied() {
    let api = Api::with_settings(|settings| {
        settings.admission.policy.allow_privileged = true;
        settings.admission.policy.registries = vec!["registry.example.com".to_owned()];
    })
    .await;
    let mut privileged = batch(1);
    privileged["container"]["privileged"] = json!(true);
    privileged["container"]["image"]["name"] = json!("registry.example.com/team/app");
    let mut hub = batch(1);
    hub["container"]["image"]["name"] = json!("busybox");

    let allowed = api.post_json("/api/v3/jobs", ALICE, &privileged).await;
    let refused = api.post_json("/api/v3/jobs", ALICE, &hub).await;

    assert_eq!(allowed.status, StatusCode::CREATED, "{}", allowed.text);
    assert_eq!(refused.error(StatusCode::BAD_REQUEST), "invalid_request");
    assert_eq!(refused.fields(), ["container.image.name"]);
}

#[tokio::test]
async fn a_body_that_is_not_json_gets_415_and_an_oversized_one_413() {
    let api = Api::new().await;
    let text_plain = Request::builder()
        .method(Method::POST)
        .uri("/api/v3/jobs")
        .header("authorization", format!("Bearer {ALICE}"))
        .header("content-type", "text/plain")
        .body(Body::from(batch(1).to_string()))
        .unwrap();
    let no_type = Request::builder()
        .method(Method::POST)
        .uri("/api/v3/jobs")
        .header("authorization", format!("Bearer {ALICE}"))
        .body(Body::from(batch(1).to_string()))
        .unwrap();
    let mut huge = batch(1);
    huge["container"]["env"] = json!({"BIG": "x".repeat(300 * 1024)});

    let wrong_type = api.send(text_plain).await;
    let missing_type = api.send(no_type).await;
    let too_large = api.post_json("/api/v3/jobs", ALICE, &huge).await;
    let too_large_put = api
        .put_json(
            &format!("/api/v3/jobs/{}/attributes", uuid::Uuid::new_v4()),
            ALICE,
            &json!({"attributes": {"a": "x".repeat(300 * 1024)}}),
        )
        .await;

    assert_eq!(
        wrong_type.error(StatusCode::UNSUPPORTED_MEDIA_TYPE),
        "unsupported_media_type"
    );
    assert_eq!(
        missing_type.error(StatusCode::UNSUPPORTED_MEDIA_TYPE),
        "unsupported_media_type"
    );
    assert_eq!(
        too_large.error(StatusCode::PAYLOAD_TOO_LARGE),
        "payload_too_large"
    );
    assert_eq!(
        too_large_put.error(StatusCode::PAYLOAD_TOO_LARGE),
        "payload_too_large"
    );
}

#[tokio::test]
async fn jobs_are_listed_by_filter_page_by_page() {
    let api = Api::new().await;
    let mut ids = HashSet::new();
    for _ in 0..3 {
        ids.insert(id_of(&api.create(ALICE, &batch(1)).await));
    }
    let mut labelled = service(0, 1, 2);
    labelled["attributes"] = json!({"team": "red"});
    let web = id_of(&api.create(BOB, &labelled).await);
    let mut other_owner = batch(1);
    other_owner["owner"]["teamEmail"] = json!("other@example.com");
    let other = id_of(&api.create(ALICE, &other_owner).await);
    api.delete(&format!("/api/v3/jobs/{other}"), ALICE).await;

    let mut seen = Vec::new();
    let mut uri = "/api/v3/jobs?jobType=batch&owner=team@example.com&pageSize=2".to_owned();
    loop {
        let page = api.get(&uri, ALICE).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        assert_eq!(page.json["pagination"]["pageSize"], 2);
        seen.extend(page.json["items"].as_array().unwrap().iter().map(id_of));
        if page.json["pagination"]["hasMore"] == json!(false) {
            break;
        }
        let cursor = page.json["pagination"]["cursor"].as_str().unwrap();
        uri =
            format!("/api/v3/jobs?jobType=batch&owner=team@example.com&pageSize=2&cursor={cursor}");
    }
    let by_attribute = api.get("/api/v3/jobs?attributes=team:red", ALICE).await;
    let by_app = api.get("/api/v3/jobs?applicationName=web", ALICE).await;
    let finished = api.get("/api/v3/jobs?jobState=Finished", ALICE).await;
    let active = api
        .get("/api/v3/jobs?jobState=Accepted,KillInitiated", ALICE)
        .await;

    assert_eq!(seen.len(), 3, "each exactly once: {seen:?}");
    assert_eq!(seen.into_iter().collect::<HashSet<_>>(), ids);
    assert_eq!(by_attribute.json["items"][0]["id"], json!(web));
    assert_eq!(by_attribute.json["items"].as_array().unwrap().len(), 1);
    assert_eq!(by_app.json["items"].as_array().unwrap().len(), 1);
    assert_eq!(finished.json["items"][0]["id"], json!(other));
    assert_eq!(active.json["items"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn bad_query_parameters_and_cursors_get_400() {
    let api = Api::new().await;
    api.create(ALICE, &batch(1)).await;
    api.create(ALICE, &batch(1)).await;
    let first = api.get("/api/v3/jobs?pageSize=1", ALICE).await;
    let cursor = first.json["pagination"]["cursor"]
        .as_str()
        .unwrap()
        .to_owned();

    for uri in [
        "/api/v3/jobs?pageSize=0".to_owned(),
        "/api/v3/jobs?pageSize=1001".to_owned(),
        "/api/v3/jobs?pageSize=abc".to_owned(),
        "/api/v3/jobs?jobState=Running".to_owned(),
        "/api/v3/jobs?jobType=cron".to_owned(),
        "/api/v3/jobs?jobType=".to_owned(),
        "/api/v3/jobs?attributes=novalue".to_owned(),
        "/api/v3/jobs?jobState=".to_owned(),
        "/api/v3/jobs?jobState=Accepted,".to_owned(),
        "/api/v3/jobs?attributes=".to_owned(),
        "/api/v3/tasks?taskStates=".to_owned(),
        "/api/v3/jobs?bogus=1".to_owned(),
        "/api/v3/jobs?pageSize=1&pageSize=2".to_owned(),
        "/api/v3/jobs?cursor=%%%".to_owned(),
        "/api/v3/jobs?cursor=bm90LWEtY3Vyc29y".to_owned(),
        format!("/api/v3/jobs?owner=someone@example.com&cursor={cursor}"),
        "/api/v3/tasks?jobId=not-a-uuid".to_owned(),
        "/api/v3/tasks?jobId=".to_owned(),
        "/api/v3/tasks?taskStates=Running".to_owned(),
        "/api/v3/tasks?cursor=garbage!".to_owned(),
        format!(
            "/api/v3/tasks?jobId={}&cursor={cursor}",
            uuid::Uuid::new_v4()
        ),
    ] {
        let reply = api.get(&uri, ALICE).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{uri}: {}",
            reply.text
        );
        assert_eq!(
            reply.error(StatusCode::BAD_REQUEST),
            "invalid_request",
            "{uri}"
        );
    }
    let same_filter = api
        .get(&format!("/api/v3/jobs?pageSize=1&cursor={cursor}"), ALICE)
        .await;
    assert_eq!(same_filter.status, StatusCode::OK);
}

#[tokio::test]
async fn unknown_ids_get_404_and_malformed_ids_400() {
    let api = Api::new().await;
    let unknown = uuid::Uuid::new_v4();

    for uri in [
        format!("/api/v3/jobs/{unknown}"),
        format!("/api/v3/tasks/{unknown}"),
    ] {
        assert_eq!(
            api.get(&uri, ALICE).await.error(StatusCode::NOT_FOUND),
            "not_found"
        );
        assert_eq!(
            api.delete(&uri, ALICE).await.error(StatusCode::NOT_FOUND),
            "not_found"
        );
    }
    for (method, uri) in [
        (Method::POST, format!("/api/v3/jobs/{unknown}/enable")),
        (Method::POST, format!("/api/v3/jobs/{unknown}/disable")),
        (
            Method::DELETE,
            format!("/api/v3/jobs/{unknown}/attributes?keys=a"),
        ),
    ] {
        let reply = api.send(request(method, &uri, Some(ALICE), None)).await;
        assert_eq!(reply.error(StatusCode::NOT_FOUND), "not_found", "{uri}");
    }
    let capacity = api
        .put_json(
            &format!("/api/v3/jobs/{unknown}/instances"),
            ALICE,
            &json!({"desired": 1}),
        )
        .await;
    let attributes = api
        .put_json(
            &format!("/api/v3/jobs/{unknown}/attributes"),
            ALICE,
            &json!({"attributes": {"a": "1"}}),
        )
        .await;
    assert_eq!(capacity.error(StatusCode::NOT_FOUND), "not_found");
    assert_eq!(attributes.error(StatusCode::NOT_FOUND), "not_found");

    for uri in [
        "/api/v3/jobs/not-a-uuid",
        "/api/v3/tasks/123",
        "/api/v3/jobs/%E2%80%A8x",
        "/api/v3/jobs/%FF%FE",
        "/api/v3/tasks/%C3%28",
    ] {
        let reply = api.get(uri, ALICE).await;
        assert_eq!(
            reply.error(StatusCode::BAD_REQUEST),
            "invalid_request",
            "{uri}"
        );
        assert_eq!(reply.fields(), ["id"]);
    }
}

#[tokio::test]
async fn unknown_routes_get_404_and_wrong_methods_405_in_the_error_shape() {
    let api = Api::new().await;

    let unknown = api.get("/api/v3/nope", ALICE).await;
    let wrong_method = api
        .send(request(Method::PATCH, "/api/v3/jobs", Some(ALICE), None))
        .await;

    assert_eq!(unknown.error(StatusCode::NOT_FOUND), "not_found");
    assert_eq!(
        wrong_method.error(StatusCode::METHOD_NOT_ALLOWED),
        "method_not_allowed"
    );
    let allow = wrong_method
        .headers
        .get("allow")
        .map(|v| v.to_str().unwrap().to_owned());
    assert!(
        allow
            .as_deref()
            .is_some_and(|a| a.contains("GET") && a.contains("POST")),
        "{allow:?}"
    );
}

#[tokio::test]
async fn only_the_creator_or_an_admin_may_kill_or_change_a_job() {
    let api = Api::new().await;
    let job = id_of(&api.create(ALICE, &service(0, 1, 3)).await);
    let task = tasks_of(&api, &job).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let refused = [
        api.delete(&format!("/api/v3/jobs/{job}"), BOB).await,
        api.put_json(
            &format!("/api/v3/jobs/{job}/instances"),
            BOB,
            &json!({"desired": 2}),
        )
        .await,
        api.send(request(
            Method::POST,
            &format!("/api/v3/jobs/{job}/disable"),
            Some(BOB),
            None,
        ))
        .await,
        api.send(request(
            Method::POST,
            &format!("/api/v3/jobs/{job}/enable"),
            Some(BOB),
            None,
        ))
        .await,
        api.put_json(
            &format!("/api/v3/jobs/{job}/attributes"),
            BOB,
            &json!({"attributes": {"a": "1"}}),
        )
        .await,
        api.delete(&format!("/api/v3/jobs/{job}/attributes?keys=a"), BOB)
            .await,
        api.delete(&format!("/api/v3/tasks/{task}"), BOB).await,
    ];
    for reply in &refused {
        assert_eq!(reply.error(StatusCode::FORBIDDEN), "forbidden");
    }
    let unchanged = api.get(&format!("/api/v3/jobs/{job}"), BOB).await;
    assert_eq!(unchanged.json["version"], 1, "nothing was changed");

    let by_admin = api
        .put_json(
            &format!("/api/v3/jobs/{job}/instances"),
            ADMIN,
            &json!({"desired": 2}),
        )
        .await;
    let killed = api.delete(&format!("/api/v3/jobs/{job}"), ALICE).await;
    assert_eq!(by_admin.status, StatusCode::OK, "{}", by_admin.text);
    assert_eq!(killed.status, StatusCode::OK, "{}", killed.text);
    assert_eq!(
        killed.json["status"]["state"], "Finished",
        "no task was placed"
    );
}

#[tokio::test]
async fn killing_a_job_reports_its_state_and_a_finished_job_cannot_change() {
    let api = Api::new().await;
    let job = id_of(&api.create(ALICE, &service(0, 2, 3)).await);

    let killed = api.delete(&format!("/api/v3/jobs/{job}"), ALICE).await;
    let again = api.delete(&format!("/api/v3/jobs/{job}"), ALICE).await;
    let capacity = api
        .put_json(
            &format!("/api/v3/jobs/{job}/instances"),
            ALICE,
            &json!({"desired": 1}),
        )
        .await;
    let enable = api
        .send(request(
            Method::POST,
            &format!("/api/v3/jobs/{job}/enable"),
            Some(ALICE),
            None,
        ))
        .await;
    let attributes = api
        .put_json(
            &format!("/api/v3/jobs/{job}/attributes"),
            ALICE,
            &json!({"attributes": {"a": "1"}}),
        )
        .await;
    let delete_attributes = api
        .delete(&format!("/api/v3/jobs/{job}/attributes?keys=a"), ALICE)
        .await;

    assert_eq!(killed.status, StatusCode::OK);
    assert_eq!(killed.json["status"]["state"], "Finished");
    for reply in [&again, &capacity, &enable, &attributes, &delete_attributes] {
        assert_eq!(reply.error(StatusCode::CONFLICT), "conflict");
    }
    assert!(tasks_of(&api, &job)
        .await
        .iter()
        .all(|t| t["status"]["state"] == "Finished" && t["status"]["reasonCode"] == "killed"));
}

#[tokio::test]
async fn a_service_job_is_scaled_enabled_and_disabled() {
    let api = Api::new().await;
    let job = id_of(&api.create(ALICE, &service(1, 1, 5)).await);
    let batch_job = id_of(&api.create(ALICE, &batch(1)).await);

    let grown = api
        .put_json(
            &format!("/api/v3/jobs/{job}/instances"),
            ALICE,
            &json!({"desired": 3}),
        )
        .await;
    let outside = api
        .put_json(
            &format!("/api/v3/jobs/{job}/instances"),
            ALICE,
            &json!({"desired": 6}),
        )
        .await;
    let inverted = api
        .put_json(
            &format!("/api/v3/jobs/{job}/instances"),
            ALICE,
            &json!({"min": 4, "desired": 3, "max": 2}),
        )
        .await;
    let over_limit = api
        .put_json(
            &format!("/api/v3/jobs/{job}/instances"),
            ALICE,
            &json!({"max": 20_000}),
        )
        .await;
    let bad_body = api
        .put_json(
            &format!("/api/v3/jobs/{job}/instances"),
            ALICE,
            &json!({"desired": -1, "size": 3}),
        )
        .await;
    let of_batch = api
        .put_json(
            &format!("/api/v3/jobs/{batch_job}/instances"),
            ALICE,
            &json!({"desired": 3}),
        )
        .await;
    let disabled = api
        .send(request(
            Method::POST,
            &format!("/api/v3/jobs/{job}/disable"),
            Some(ALICE),
            None,
        ))
        .await;
    let enabled = api
        .send(request(
            Method::POST,
            &format!("/api/v3/jobs/{job}/enable"),
            Some(ALICE),
            None,
        ))
        .await;
    let disable_batch = api
        .send(request(
            Method::POST,
            &format!("/api/v3/jobs/{batch_job}/disable"),
            Some(ALICE),
            None,
        ))
        .await;

    assert_eq!(grown.status, StatusCode::OK, "{}", grown.text);
    assert_eq!(
        grown.json["jobDescriptor"]["service"]["capacity"],
        json!({"min": 1, "desired": 3, "max": 5})
    );
    assert_eq!(tasks_of(&api, &job).await.len(), 3);
    assert_eq!(outside.error(StatusCode::CONFLICT), "conflict");
    assert_eq!(outside.fields(), ["desired"]);
    assert_eq!(inverted.error(StatusCode::CONFLICT), "conflict");
    assert_eq!(inverted.fields(), ["min", "desired", "desired"]);
    assert_eq!(over_limit.error(StatusCode::BAD_REQUEST), "invalid_request");
    assert_eq!(bad_body.error(StatusCode::BAD_REQUEST), "invalid_request");
    assert_eq!(bad_body.fields(), ["\"size\"", "desired"]);
    assert_eq!(of_batch.error(StatusCode::BAD_REQUEST), "invalid_request");
    assert_eq!(disabled.status, StatusCode::OK);
    assert_eq!(disabled.json["jobDescriptor"]["service"]["enabled"], false);
    assert_eq!(enabled.json["jobDescriptor"]["service"]["enabled"], true);
    assert_eq!(
        disable_batch.error(StatusCode::BAD_REQUEST),
        "invalid_request"
    );
}

#[tokio::test]
async fn attributes_are_set_and_deleted() {
    let api = Api::new().await;
    let job = id_of(&api.create(ALICE, &batch(1)).await);

    let set = api
        .put_json(
            &format!("/api/v3/jobs/{job}/attributes"),
            ALICE,
            &json!({"attributes": {"team": "red", "tier": "1"}}),
        )
        .await;
    let deleted = api
        .delete(
            &format!("/api/v3/jobs/{job}/attributes?keys=tier,absent"),
            ALICE,
        )
        .await;
    let no_keys = api
        .delete(&format!("/api/v3/jobs/{job}/attributes"), ALICE)
        .await;
    let empty_key = api
        .delete(
            &format!("/api/v3/jobs/{job}/attributes?keys=team,,x"),
            ALICE,
        )
        .await;
    let not_strings = api
        .put_json(
            &format!("/api/v3/jobs/{job}/attributes"),
            ALICE,
            &json!({"attributes": {"n": 1}}),
        )
        .await;
    let too_long_key = api
        .put_json(
            &format!("/api/v3/jobs/{job}/attributes"),
            ALICE,
            &json!({"attributes": {"k".repeat(300): "v"}}),
        )
        .await;

    assert_eq!(set.status, StatusCode::OK, "{}", set.text);
    assert_eq!(
        set.json["jobDescriptor"]["attributes"],
        json!({"team": "red", "tier": "1"})
    );
    assert_eq!(deleted.status, StatusCode::OK);
    assert_eq!(
        deleted.json["jobDescriptor"]["attributes"],
        json!({"team": "red"})
    );
    assert_eq!(no_keys.error(StatusCode::BAD_REQUEST), "invalid_request");
    assert_eq!(no_keys.fields(), ["keys"]);
    assert_eq!(empty_key.error(StatusCode::BAD_REQUEST), "invalid_request");
    assert_eq!(
        not_strings.error(StatusCode::BAD_REQUEST),
        "invalid_request"
    );
    assert_eq!(
        too_long_key.error(StatusCode::BAD_REQUEST),
        "invalid_request"
    );
}

#[tokio::test]
async fn control_characters_in_attributes_and_oversized_filters_get_400_and_change_nothing() {
    let api = Api::new().await;
    let job = id_of(&api.create(ALICE, &batch(1)).await);

    let escape = api
        .put_json(
            &format!("/api/v3/jobs/{job}/attributes"),
            ALICE,
            &json!({"attributes": {"colour": "\u{1b}[31mred", "ok": "fine"}}),
        )
        .await;
    let nul_key = api
        .put_json(
            &format!("/api/v3/jobs/{job}/attributes"),
            ALICE,
            &json!({"attributes": {"a\u{0}b": "v"}}),
        )
        .await;
    let mut escaped_at_creation = batch(1);
    escaped_at_creation["attributes"] = json!({"note": "line\nbreak"});
    let created = api
        .post_json("/api/v3/jobs", ALICE, &escaped_at_creation)
        .await;
    let huge_owner = api
        .get(&format!("/api/v3/jobs?owner={}", "o".repeat(65_000)), ALICE)
        .await;
    let unchanged = api.get(&format!("/api/v3/jobs/{job}"), ALICE).await;

    assert_eq!(escape.error(StatusCode::BAD_REQUEST), "invalid_request");
    assert_eq!(escape.fields(), ["attributes[\"colour\"]"]);
    assert!(
        escape.text.contains("must not contain control characters"),
        "{}",
        escape.text
    );
    assert_eq!(nul_key.error(StatusCode::BAD_REQUEST), "invalid_request");
    assert_eq!(created.error(StatusCode::BAD_REQUEST), "invalid_request");
    assert_eq!(created.fields(), ["attributes[\"note\"]"]);
    assert_eq!(huge_owner.error(StatusCode::BAD_REQUEST), "invalid_request");
    assert_eq!(huge_owner.fields(), ["owner"]);
    assert!(huge_owner.text.contains("at most 254 characters"));
    assert_eq!(unchanged.json["jobDescriptor"]["attributes"], json!({}));
}

/// What each kind of caller reads of a job and an agent, and for which teams it may submit.
#[tokio::test]
async fn callers_read_env_values_of_their_teams_only_and_submit_for_their_teams_only() {
    let api = Api::new().await;
    let mut secretive = batch(1);
    secretive["container"]["env"] = json!({"DB_PASSWORD": "hunter2", "MODE": "prod"});
    let job = id_of(&api.create(ALICE, &secretive).await);
    let mut for_blue = batch(1);
    for_blue["owner"]["teamEmail"] = json!("blue@example.com");
    let mut for_herself = batch(1);
    for_herself["owner"]["teamEmail"] = json!("carol@example.com");

    let env_seen_by = |token: &'static str| {
        let api = &api;
        let job = job.clone();
        async move {
            let one = api.get(&format!("/api/v3/jobs/{job}"), token).await;
            let listed = api.get("/api/v3/jobs?owner=team@example.com", token).await;
            let in_list = listed.json["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|j| j["id"] == json!(job))
                .unwrap()["jobDescriptor"]["container"]["env"]
                .clone();
            assert_eq!(one.json["jobDescriptor"]["container"]["env"], in_list);
            in_list
        }
    };
    let creator = env_seen_by(ALICE).await;
    let team_member = env_seen_by(BOB).await;
    let admin = env_seen_by(ADMIN).await;
    let outsider = env_seen_by(CAROL).await;
    let outsider_for_blue = api.post_json("/api/v3/jobs", CAROL, &for_blue).await;
    let outsider_for_team = api.post_json("/api/v3/jobs", CAROL, &batch(1)).await;
    let carol_for_herself = api.post_json("/api/v3/jobs", CAROL, &for_herself).await;
    let admin_for_blue = api.post_json("/api/v3/jobs", ADMIN, &for_blue).await;
    let listed = api.get("/api/v3/jobs?pageSize=1000", CAROL).await;

    let plain = json!({"DB_PASSWORD": "hunter2", "MODE": "prod"});
    assert_eq!(creator, plain);
    assert_eq!(team_member, plain);
    assert_eq!(admin, plain);
    assert_eq!(
        outsider,
        json!({"DB_PASSWORD": "(hidden)", "MODE": "(hidden)"}),
        "another caller sees the names only"
    );
    assert!(!listed.text.contains("hunter2"), "{}", listed.text);
    assert_eq!(outsider_for_blue.error(StatusCode::FORBIDDEN), "forbidden");
    assert!(
        outsider_for_blue.json["message"]
            .as_str()
            .unwrap()
            .contains("\"blue@example.com\""),
        "the refusal names the team: {}",
        outsider_for_blue.text
    );
    assert_eq!(outsider_for_team.error(StatusCode::FORBIDDEN), "forbidden");
    assert_eq!(carol_for_herself.status, StatusCode::CREATED);
    assert_eq!(carol_for_herself.json["createdBy"], "carol@example.com");
    assert_eq!(
        carol_for_herself.json["jobDescriptor"]["owner"]["teamEmail"],
        "carol@example.com"
    );
    assert_eq!(
        admin_for_blue.status,
        StatusCode::CREATED,
        "{}",
        admin_for_blue.text
    );
    let created: Vec<&Value> = listed.json["items"].as_array().unwrap().iter().collect();
    assert_eq!(
        created.len(),
        3,
        "the two refused submissions wrote nothing"
    );
}

#[tokio::test]
async fn a_caller_over_its_rate_limit_gets_429_with_retry_after_and_others_are_not_slowed() {
    let provisioned = Api::new().await;
    // An hour's window, so that the test does not straddle two; never within its last 15 s.
    let into_hour = titus_core::ports::now_ms() % 3_600_000;
    if into_hour > 3_585_000 {
        tokio::time::sleep(std::time::Duration::from_millis(
            3_600_000 - into_hour + 100,
        ))
        .await;
    }
    let mut config = support::config(&provisioned.names);
    config.rate_limits = serde_json::from_value(json!({
        "windowSecs": 3600, "requests": 8, "creates": 3,
        "callers": {"root@example.com": {"requests": 100, "creates": 50}}
    }))
    .unwrap();
    let api = Api::over(
        provisioned.clients.clone(),
        provisioned.names.clone(),
        config,
    );

    let mut creates = Vec::new();
    for _ in 0..5 {
        creates.push(api.post_json("/api/v3/jobs", ALICE, &batch(1)).await);
    }
    let mut admin_creates = Vec::new();
    for _ in 0..5 {
        admin_creates.push(api.post_json("/api/v3/jobs", ADMIN, &batch(1)).await);
    }
    let bob_reads = api.get("/api/v3/jobs?pageSize=100", BOB).await;
    // Alice's five creates counted as requests too: three more reads fit, then none.
    let mut alice_reads = Vec::new();
    for _ in 0..4 {
        alice_reads.push(api.get("/api/v3/jobs", ALICE).await.status);
    }

    let statuses: Vec<StatusCode> = creates.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [
            StatusCode::CREATED,
            StatusCode::CREATED,
            StatusCode::CREATED,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    let limited = &creates[3];
    assert_eq!(limited.error(StatusCode::TOO_MANY_REQUESTS), "rate_limited");
    let retry_after: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3_600).contains(&retry_after), "{retry_after}");
    assert!(
        limited.json["message"]
            .as_str()
            .unwrap()
            .contains("more than 3 job creations"),
        "{}",
        limited.text
    );
    assert!(admin_creates
        .iter()
        .all(|r| r.status == StatusCode::CREATED));
    assert_eq!(bob_reads.status, StatusCode::OK);
    assert_eq!(
        bob_reads.json["items"].as_array().unwrap().len(),
        8,
        "the refused creates wrote nothing"
    );
    assert_eq!(
        alice_reads,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
}

#[tokio::test]
async fn tasks_are_listed_read_and_killed() {
    let api = Api::new().await;
    let queue_url = register_a1(&api, 1).await;
    api.agents
        .register_agent(&Agent {
            id: "a1".to_owned(),
            queue_url: queue_url.clone(),
            zone: "us-east-1a".to_owned(),
            machine_type: "m5.large".to_owned(),
            machine_group: "default".to_owned(),
            state: AgentState::Active,
            capacity: Resources {
                cpu_millis: 4000,
                memory_mb: 16_384,
                disk_mb: 100_000,
                network_mbps: 1000,
                gpu: 0,
            },
            allocated: Resources::ZERO,
            task_count: 0,
            registered_at_ms: 1,
            heartbeat_at_ms: 1,
            incarnation: 0,
            registration_id: String::new(),
            principal: String::new(),
            task_logs: None,
        })
        .await
        .unwrap();
    let web = id_of(&api.create(ALICE, &service(1, 3, 3)).await);
    let batch_job = id_of(&api.create(ALICE, &batch(2)).await);
    let web_tasks = tasks_of(&api, &web).await;
    // The scheduler placed the first web task on a1 and it started.
    let placed_id = TaskId::from_string(web_tasks[0]["id"].as_str().unwrap());
    let mut placed = api.store.get_task(&placed_id).await.unwrap().unwrap();
    let version = placed.version;
    for state in [
        TaskState::Launched,
        TaskState::StartInitiated,
        TaskState::Started,
    ] {
        placed.transition(state, None, "test", 1).unwrap();
    }
    placed.agent_id = Some("a1".to_owned());
    api.store.update_task(&placed, version).await.unwrap();

    let started = api.get("/api/v3/tasks?taskStates=Started", ALICE).await;
    let accepted_of_web = api
        .get(
            &format!("/api/v3/tasks?jobId={web}&taskStates=Accepted"),
            ALICE,
        )
        .await;
    let all = api.get("/api/v3/tasks?pageSize=2", ALICE).await;
    let one = api.get(&format!("/api/v3/tasks/{placed_id}"), BOB).await;
    let killed = api
        .delete(&format!("/api/v3/tasks/{placed_id}?shrink=true"), ALICE)
        .await;
    let shrink_to_below_min = [
        api.delete(
            &format!(
                "/api/v3/tasks/{}?shrink=true",
                web_tasks[1]["id"].as_str().unwrap()
            ),
            ALICE,
        )
        .await,
        api.delete(
            &format!(
                "/api/v3/tasks/{}?shrink=true&preventMinSizeUpdate=true",
                web_tasks[2]["id"].as_str().unwrap()
            ),
            ALICE,
        )
        .await,
    ];
    let batch_task = tasks_of(&api, &batch_job).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let shrink_batch = api
        .delete(&format!("/api/v3/tasks/{batch_task}?shrink=true"), ALICE)
        .await;
    let bad_shrink = api
        .delete(&format!("/api/v3/tasks/{batch_task}?shrink=maybe"), ALICE)
        .await;
    let killed_batch = api
        .delete(&format!("/api/v3/tasks/{batch_task}"), ALICE)
        .await;
    let killed_again = api
        .delete(&format!("/api/v3/tasks/{batch_task}"), ALICE)
        .await;
    let agents = api.get("/api/v3/agents", BOB).await;
    let agents_as_admin = api.get("/api/v3/agents", ADMIN).await;

    assert_eq!(started.status, StatusCode::OK, "{}", started.text);
    assert_eq!(started.json["items"][0]["id"], json!(placed_id.as_str()));
    assert_eq!(started.json["items"].as_array().unwrap().len(), 1);
    assert_eq!(accepted_of_web.json["items"].as_array().unwrap().len(), 2);
    assert_eq!(all.json["items"].as_array().unwrap().len(), 2);
    assert_eq!(all.json["pagination"]["hasMore"], true);
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.json["agentId"], "a1");
    assert_eq!(killed.status, StatusCode::OK, "{}", killed.text);
    assert_eq!(killed.json["status"]["state"], "KillInitiated");
    assert_eq!(killed.json["status"]["reasonCode"], "scaledDown");
    assert_eq!(
        shrink_to_below_min[0].status,
        StatusCode::OK,
        "desired 2 -> 1"
    );
    assert_eq!(
        shrink_to_below_min[1].error(StatusCode::CONFLICT),
        "conflict",
        "at min, and the kill prevents lowering min"
    );
    assert_eq!(
        shrink_batch.error(StatusCode::BAD_REQUEST),
        "invalid_request"
    );
    assert_eq!(shrink_batch.fields(), ["shrink"]);
    assert_eq!(bad_shrink.error(StatusCode::BAD_REQUEST), "invalid_request");
    assert_eq!(killed_batch.json["status"]["state"], "Finished");
    assert_eq!(killed_again.error(StatusCode::CONFLICT), "conflict");
    assert_eq!(agents.status, StatusCode::OK);
    assert_eq!(agents.json["items"][0]["id"], "a1");
    assert_eq!(
        agents.json["items"][0]["queueUrl"], "",
        "only admins see queues"
    );
    assert_eq!(
        agents_as_admin.json["items"][0]["queueUrl"],
        json!(queue_url)
    );
    let messages = api
        .clients
        .sqs
        .receive_message()
        .queue_url(&queue_url)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    let bodies: Vec<Value> = messages
        .messages()
        .iter()
        .map(|m| serde_json::from_str(m.body().unwrap()).unwrap())
        .collect();
    assert_eq!(
        bodies,
        [
            json!({"type": "killTask", "taskId": placed_id.as_str(), "reason": "scaledDown", "gracePeriodSec": 10})
        ]
    );
}

#[tokio::test]
async fn an_internal_error_is_answered_with_a_request_id_and_no_internals() {
    // The tables of this stage were never created: every store call fails inside DynamoDB.
    let clients = support::clients().await;
    let names = support::unique_stage("u");
    let config = support::config(&names);
    let api = Api::over(clients, names, config);

    let reply = api.get("/api/v3/jobs", ALICE).await;
    let with_id = api
        .send(
            Request::builder()
                .uri(format!("/api/v3/jobs/{}", uuid::Uuid::new_v4()))
                .header("authorization", format!("Bearer {ALICE}"))
                .header("x-request-id", "req-123")
                .body(Body::empty())
                .unwrap(),
        )
        .await;

    assert_eq!(reply.error(StatusCode::INTERNAL_SERVER_ERROR), "internal");
    let request_id = reply.headers.get("x-request-id").unwrap().to_str().unwrap();
    assert!(reply.json["message"].as_str().unwrap().contains(request_id));
    for leak in [
        "ResourceNotFound",
        "titus-",
        "Query",
        "DynamoDB",
        "dynamodb",
    ] {
        assert!(!reply.text.contains(leak), "{leak} leaked: {}", reply.text);
    }
    assert_eq!(with_id.error(StatusCode::INTERNAL_SERVER_ERROR), "internal");
    assert_eq!(with_id.headers.get("x-request-id").unwrap(), "req-123");
    assert!(with_id.text.contains("req-123"));
}

#[tokio::test]
async fn an_unreachable_store_is_a_503_to_retry() {
    // A DynamoDB endpoint where nothing listens: the SDK cannot connect.
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url("http://127.0.0.1:9")
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await;
    let clients = titus_aws::AwsClients::from_config(&config);
    let names = support::unique_stage("u");
    let api_config = support::config(&names);
    let api = Api::over(clients, names, api_config);

    let reply = api.get("/api/v3/jobs", ALICE).await;

    assert_eq!(reply.error(StatusCode::SERVICE_UNAVAILABLE), "unavailable");
    assert_eq!(reply.headers.get("retry-after").unwrap(), "1");
    assert!(!reply.text.contains("127.0.0.1"), "{}", reply.text);
}

#[tokio::test]
async fn quotas_refuse_what_does_not_fit_name_the_quota_and_free_up_when_jobs_finish() {
    let api = Api::with_settings(|settings| {
        settings.admission.quotas = serde_json::from_value(json!({
            "teams": {"team@example.com": {"tasks": 4}},
            "capacityGroups": {"*": {"jobs": 10}}
        }))
        .unwrap();
    })
    .await;

    let first = api.create(ALICE, &batch(3)).await;
    let over = api.post_json("/api/v3/jobs", BOB, &batch(2)).await;
    assert_eq!(over.error(StatusCode::TOO_MANY_REQUESTS), "quota_exceeded");
    let message = over.json["message"].as_str().unwrap();
    assert!(
        message.contains(
            "the tasks quota of team team@example.com is 4, 3 in use, and this asks for 2 more"
        ),
        "{message}"
    );
    assert_eq!(over.json["details"][0]["field"], "quota.tasks");
    let never = api.post_json("/api/v3/jobs", ALICE, &batch(5)).await;
    assert_eq!(never.error(StatusCode::FORBIDDEN), "quota_exceeded");
    assert!(
        never.json["message"]
            .as_str()
            .unwrap()
            .contains("asks for 5 on its own"),
        "{}",
        never.text
    );
    let listed = api.get("/api/v3/jobs?pageSize=100", ADMIN).await;
    assert_eq!(
        listed.json["items"].as_array().unwrap().len(),
        1,
        "the refused wrote nothing"
    );

    // Alice sees her team's quota and use; Carol, in no team, sees only the capacity group.
    let quotas = api.get("/api/v3/quotas", ALICE).await;
    assert_eq!(quotas.status, StatusCode::OK, "{}", quotas.text);
    let team = quotas.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["kind"] == "team" && q["name"] == "team@example.com")
        .cloned()
        .unwrap_or_else(|| panic!("the team's quota is listed: {}", quotas.text));
    assert_eq!(team["limits"]["tasks"], 4);
    assert_eq!(team["used"]["tasks"], 3);
    assert_eq!(team["used"]["jobs"], 1);
    let carols = api.get("/api/v3/quotas", CAROL).await;
    let kinds: Vec<&str> = carols.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["kind"].as_str().unwrap())
        .collect();
    assert!(
        !kinds.is_empty() && kinds.iter().all(|k| *k == "capacityGroup"),
        "{}",
        carols.text
    );

    // Killing the job finishes it (its tasks were never placed) and frees what it held.
    let id = first["id"].as_str().unwrap();
    let killed = api.delete(&format!("/api/v3/jobs/{id}"), ALICE).await;
    assert_eq!(killed.status, StatusCode::OK, "{}", killed.text);
    let quotas = api.get("/api/v3/quotas", ALICE).await;
    let team_used = quotas.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "team@example.com")
        .map(|q| q["used"].clone())
        .unwrap();
    assert_eq!(team_used["tasks"], 0, "{}", quotas.text);
    assert_eq!(team_used["jobs"], 0);

    // A service grows within the quota and is refused past it, unchanged.
    let web = api.create(ALICE, &service(0, 1, 10)).await;
    let web_id = web["id"].as_str().unwrap();
    let grow = |desired: u32| json!({"min": 0, "desired": desired, "max": 10});
    let past = api
        .put_json(&format!("/api/v3/jobs/{web_id}/instances"), ALICE, &grow(5))
        .await;
    assert_eq!(past.error(StatusCode::TOO_MANY_REQUESTS), "quota_exceeded");
    let unchanged = api.get(&format!("/api/v3/jobs/{web_id}"), ALICE).await;
    assert_eq!(
        unchanged.json["jobDescriptor"]["service"]["capacity"]["desired"],
        1
    );
    let within = api
        .put_json(&format!("/api/v3/jobs/{web_id}/instances"), ALICE, &grow(4))
        .await;
    assert_eq!(within.status, StatusCode::OK, "{}", within.text);
}

/// Registers agent `a1` (4 cores, 16 GB) last heard from at `heartbeat_at_ms`, with its queue,
/// and returns the queue's URL.
async fn register_a1(api: &Api, heartbeat_at_ms: u64) -> String {
    register_a1_with(api, heartbeat_at_ms, None).await
}

/// [`register_a1`], sending its tasks' output to `task_logs`.
async fn register_a1_with(
    api: &Api,
    heartbeat_at_ms: u64,
    task_logs: Option<titus_core::ports::TaskLogs>,
) -> String {
    let (queue_url, _) = ensure_queue(&api.clients.sqs, &api.names.agent_queue_def("a1"))
        .await
        .unwrap();
    api.agents
        .register_agent(&Agent {
            id: "a1".to_owned(),
            queue_url: queue_url.clone(),
            zone: "us-east-1a".to_owned(),
            machine_type: "m5.large".to_owned(),
            machine_group: "default".to_owned(),
            state: AgentState::Active,
            capacity: Resources {
                cpu_millis: 4000,
                memory_mb: 16_384,
                disk_mb: 100_000,
                network_mbps: 1000,
                gpu: 0,
            },
            allocated: Resources::ZERO,
            task_count: 0,
            registered_at_ms: 1,
            heartbeat_at_ms,
            incarnation: 0,
            registration_id: String::new(),
            principal: String::new(),
            task_logs,
        })
        .await
        .unwrap();
    queue_url
}

#[tokio::test]
async fn scheduling_results_say_where_a_task_went_and_why_its_sibling_waits() {
    let api = Api::new().await;
    register_a1(&api, titus_api::now_ms()).await;
    let mut descriptor = batch(2);
    descriptor["container"]["resources"] = json!({"cpu": 1.0, "memoryMB": 12_000});
    let job = id_of(&api.create(ALICE, &descriptor).await);
    let before = api
        .get(&format!("/api/v3/scheduler/results/{job}"), ALICE)
        .await;

    // One 12 GB task fits on the 16 GB agent, the other fits nowhere.
    let summary = titus_control::scheduler::tick(
        &api.control,
        titus_control::scheduler::TickInput {
            owner: "test-loop".to_owned(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!((summary.placed, summary.unplaced), (1, 1));
    let tasks = tasks_of(&api, &job).await;
    let (placed, waiting): (Vec<&Value>, Vec<&Value>) = tasks
        .iter()
        .partition(|t| t["status"]["state"] == "Launched");
    let by_job = api
        .get(&format!("/api/v3/scheduler/results/{job}"), ALICE)
        .await;
    let by_waiting_task = api
        .get(
            &format!(
                "/api/v3/scheduler/results/{}",
                waiting[0]["id"].as_str().unwrap()
            ),
            BOB,
        )
        .await;
    let by_placed_task = api
        .get(
            &format!(
                "/api/v3/scheduler/results/{}",
                placed[0]["id"].as_str().unwrap()
            ),
            ALICE,
        )
        .await;
    let unknown = api
        .get(
            &format!("/api/v3/scheduler/results/{}", uuid::Uuid::new_v4()),
            ALICE,
        )
        .await;
    let not_an_id = api.get("/api/v3/scheduler/results/nope", ALICE).await;
    // The tick's metrics, as the local stack serves them.
    let metrics = api.send(request(Method::GET, "/metrics", None, None)).await;

    assert_eq!(before.status, StatusCode::OK, "{}", before.text);
    assert_eq!(
        before.json,
        json!({"jobId": job, "message": "no placement failure recorded for the job's tasks"})
    );
    assert_eq!(by_job.status, StatusCode::OK, "{}", by_job.text);
    assert_eq!(
        by_job.json["failures"],
        json!({"failures": [{"reason": "insufficient memory", "failureCount": 1}]})
    );
    assert_eq!(by_job.json["unplacedTasks"], 1);
    assert_eq!(by_job.json["insufficient"], json!(["memory"]));
    assert_eq!(by_job.json["stale"], false);
    assert!(
        by_job.json["computedAtMs"].as_u64().unwrap() >= by_job.json["sinceMs"].as_u64().unwrap()
    );
    assert_eq!(
        by_waiting_task.status,
        StatusCode::OK,
        "{}",
        by_waiting_task.text
    );
    assert_eq!(by_waiting_task.json["failures"], by_job.json["failures"]);
    assert_eq!(by_waiting_task.json["taskId"], waiting[0]["id"]);
    assert_eq!(
        by_placed_task.status,
        StatusCode::OK,
        "{}",
        by_placed_task.text
    );
    assert!(by_placed_task.json["success"]["message"]
        .as_str()
        .unwrap()
        .starts_with("placed on agent a1 at "));
    assert!(by_placed_task.json.get("failures").is_none());
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.text);
    assert!(unknown.json["message"]
        .as_str()
        .unwrap()
        .starts_with("no task or job has id"));
    assert_eq!(
        not_an_id.status,
        StatusCode::BAD_REQUEST,
        "{}",
        not_an_id.text
    );
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(
        metrics.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        metrics.headers
    );
    let stage = api.names.stage();
    for sample in [
        format!("titus_ticks_total{{stage=\"{stage}\"}} 1\n"),
        format!("titus_tasks_placed_total{{stage=\"{stage}\"}} 1\n"),
        format!("titus_tasks_unplaced{{stage=\"{stage}\"}} 1\n"),
        format!("titus_lease_held{{stage=\"{stage}\"}} 1\n"),
    ] {
        assert!(
            metrics.text.contains(&sample),
            "{sample} in {}",
            metrics.text
        );
    }
}

#[tokio::test]
async fn a_dry_run_says_where_tasks_would_go_and_why_the_rest_would_wait_storing_nothing() {
    let api = Api::new().await;
    register_a1(&api, titus_api::now_ms()).await;
    let mut descriptor = batch(3);
    descriptor["container"]["resources"] = json!({"cpu": 1.0, "memoryMB": 6_000});

    let plan = api
        .post_json("/api/v3/scheduler/plan", ALICE, &descriptor)
        .await;
    let mut two_problems = descriptor.clone();
    two_problems["applicationName"] = json!("");
    two_problems["container"]["resources"]["memoryMB"] = json!(1);
    let invalid = api
        .post_json("/api/v3/scheduler/plan", ALICE, &two_problems)
        .await;
    let not_her_team = api
        .post_json("/api/v3/scheduler/plan", CAROL, &descriptor)
        .await;
    let jobs = api.get("/api/v3/jobs", ADMIN).await;

    assert_eq!(plan.status, StatusCode::OK, "{}", plan.text);
    assert_eq!(
        plan.json,
        json!({
            "tasks": 3,
            "placed": 2,
            "placements": {"a1": 2},
            "unplaced": 1,
            "rejections": [{"reason": "insufficient memory", "agents": 1}],
            "insufficient": ["memory"],
            "agents": 1
        })
    );
    assert_eq!(invalid.status, StatusCode::BAD_REQUEST, "{}", invalid.text);
    assert!(
        invalid.fields().len() >= 2,
        "every problem at once: {}",
        invalid.text
    );
    assert_eq!(
        not_her_team.status,
        StatusCode::FORBIDDEN,
        "{}",
        not_her_team.text
    );
    assert_eq!(jobs.json["items"], json!([]), "a dry run stores no job");
}

/// Appends lines to a task's stream, as the agent's awslogs driver does.
async fn write_task_output(api: &Api, group: &str, stream: &str, lines: &[&str]) {
    let _ = api
        .clients
        .logs
        .create_log_stream()
        .log_group_name(group)
        .log_stream_name(stream)
        .send()
        .await;
    let now = titus_api::now_ms() as i64;
    let events = lines.iter().enumerate().map(|(i, line)| {
        aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
            .timestamp(now + i as i64)
            .message(*line)
            .build()
            .unwrap()
    });
    api.clients
        .logs
        .put_log_events()
        .log_group_name(group)
        .log_stream_name(stream)
        .set_log_events(Some(events.collect()))
        .send()
        .await
        .unwrap();
}

fn lines_of(reply: &support::Reply) -> Vec<String> {
    reply.json["lines"]
        .as_array()
        .unwrap_or_else(|| panic!("no lines in {}", reply.text))
        .iter()
        .map(|l| l["message"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_tasks_output_is_read_from_its_cloudwatch_stream_by_tail_and_cursor() {
    let api = Api::new().await;
    let group = titus_core::ports::TaskLogs::stage_group(api.names.stage());
    titus_aws::logs::ensure_log_group(&api.clients.logs, &group)
        .await
        .unwrap();
    let logs = titus_core::ports::TaskLogs {
        group: group.clone(),
        region: None,
    };
    register_a1_with(&api, titus_api::now_ms(), Some(logs)).await;
    let mut descriptor = batch(2);
    descriptor["container"]["resources"] = json!({"cpu": 1.0, "memoryMB": 12_000});
    let job = id_of(&api.create(ALICE, &descriptor).await);
    titus_control::scheduler::tick(
        &api.control,
        titus_control::scheduler::TickInput {
            owner: "test-loop".to_owned(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let tasks = tasks_of(&api, &job).await;
    let (placed, waiting): (Vec<&Value>, Vec<&Value>) = tasks
        .iter()
        .partition(|t| t["status"]["state"] == "Launched");
    let (placed, waiting) = (
        placed[0]["id"].as_str().unwrap().to_owned(),
        waiting[0]["id"].as_str().unwrap().to_owned(),
    );
    let stream = format!("{job}/{placed}");
    let uri = format!("/api/v3/tasks/{placed}/logs");

    // Before the container writes, its stream does not exist: nothing yet, no cursor.
    let early = api.get(&uri, ALICE).await;
    assert_eq!(early.status, StatusCode::OK, "{}", early.text);
    assert_eq!(lines_of(&early), Vec::<String>::new());
    assert!(early.json.get("cursor").is_none(), "{}", early.text);
    assert_eq!(early.json["location"]["group"], group.as_str());
    assert_eq!(early.json["location"]["stream"], stream.as_str());
    assert_eq!(early.json["taskFinished"], false);

    write_task_output(&api, &group, &stream, &["one", "two", "three"]).await;
    let tail = api.get(&format!("{uri}?tail=2"), BOB).await;
    assert_eq!(tail.status, StatusCode::OK, "{}", tail.text);
    assert_eq!(
        lines_of(&tail),
        ["two", "three"],
        "a team member reads the tail"
    );
    let all = api.get(&uri, ALICE).await;
    assert_eq!(lines_of(&all), ["one", "two", "three"]);
    let cursor = all.json["cursor"].as_str().unwrap().to_owned();
    let encoded = serde_urlencoded::to_string([("c", &cursor)]).unwrap()[2..].to_owned();
    let nothing_new = api.get(&format!("{uri}?cursor={encoded}"), ALICE).await;
    assert_eq!(lines_of(&nothing_new), Vec::<String>::new());
    write_task_output(&api, &group, &stream, &["four"]).await;
    let next = api.get(&format!("{uri}?cursor={encoded}"), ALICE).await;
    assert_eq!(
        lines_of(&next),
        ["four"],
        "the cursor returns only what came since"
    );

    // Who may not read it, and what does not exist.
    let carol = api.get(&uri, CAROL).await;
    assert_eq!(carol.status, StatusCode::FORBIDDEN, "{}", carol.text);
    assert!(carol.text.contains("team@example.com"), "{}", carol.text);
    let unplaced = api
        .get(&format!("/api/v3/tasks/{waiting}/logs"), ALICE)
        .await;
    assert_eq!(unplaced.status, StatusCode::NOT_FOUND, "{}", unplaced.text);
    assert!(unplaced.text.contains("never placed"), "{}", unplaced.text);
    let unknown = api
        .get(
            "/api/v3/tasks/3f1c2b9e-8a1d-4c3e-9b7a-2d5e6f708192/logs",
            ALICE,
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.text);

    // Every bad parameter at once.
    let bad = api
        .get(
            &format!("{uri}?tail=0&limit=20000&cursor=x&sinceMs=soon"),
            ALICE,
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text);
    let fields = bad.fields();
    for field in ["tail", "limit", "sinceMs"] {
        assert!(fields.contains(&field.to_owned()), "{field}: {}", bad.text);
    }
    let mixed = api
        .get(&format!("{uri}?cursor={encoded}&tail=5"), ALICE)
        .await;
    assert_eq!(mixed.fields(), ["cursor"], "{}", mixed.text);

    // An agent that keeps its tasks' output on the host says so.
    register_a1_with(&api, titus_api::now_ms(), None).await;
    let on_host = api.get(&uri, ALICE).await;
    assert_eq!(on_host.status, StatusCode::NOT_FOUND, "{}", on_host.text);
    assert!(on_host.text.contains("json-file"), "{}", on_host.text);
}

/// The descriptors in the shapes Titus' own code and clients send (see
/// `crates/core/tests/data/titus/`), for the tests' team.
fn titus_fixture(name: &str) -> Value {
    let path = format!(
        "{}/../../crates/core/tests/data/titus/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut descriptor: Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    descriptor["owner"]["teamEmail"] = json!("team@example.com");
    descriptor
}

#[tokio::test]
async fn descriptors_as_titus_clients_send_them_are_created_and_read_back_as_sent() {
    let api = Api::new().await;

    let directory = format!(
        "{}/../../crates/core/tests/data/titus",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut names: Vec<String> = std::fs::read_dir(directory)
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".json").map(str::to_owned)
        })
        .collect();
    names.sort();
    assert!(names.len() >= 6, "{names:?}");
    for name in &names {
        let sent = titus_fixture(name);

        let reply = api.post_json("/api/v3/jobs", ALICE, &sent).await;

        assert_eq!(reply.status, StatusCode::CREATED, "{name}: {}", reply.text);
        let read = api
            .get(&format!("/api/v3/jobs/{}", id_of(&reply.json)), ALICE)
            .await;
        let stored = &read.json["jobDescriptor"];
        assert_eq!(stored["applicationName"], sent["applicationName"], "{name}");
        for kept in ["disruptionBudget", "networkConfiguration", "jobGroupInfo"] {
            if sent[kept].is_object() && sent[kept] != json!({"networkMode": "UnknownNetworkMode"})
            {
                assert!(stored[kept].is_object(), "{name}: {kept} kept in {stored}");
            }
        }
        assert_eq!(
            stored["container"]["resources"]["allocateIP"]
                .as_bool()
                .unwrap_or(false),
            sent["container"]["resources"]["allocateIP"]
                .as_bool()
                .unwrap_or(false),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_titus_descriptor_with_many_problems_gets_400_naming_each_and_stores_nothing() {
    let api = Api::new().await;
    let mut sent = titus_fixture("spinnaker-server-group");
    sent["container"]["resources"]["efsMounts"] = json!([{"efsId": "fs-1", "mountPoint": "/d"}]);
    sent["container"]["resources"]["cpuBurst"] = json!(true);
    sent["service"]["capacity"]["desired"] = json!("lots");
    sent["extraContainers"] = json!([{"name": "envoy"}]);

    let reply = api.post_json("/api/v3/jobs", ALICE, &sent).await;

    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    let text = reply.text.as_str();
    for named in [
        "efsMounts",
        "cpuBurst",
        "service.capacity.desired",
        "extraContainers",
    ] {
        assert!(text.contains(named), "{named} in {text}");
    }
    let jobs = api.get("/api/v3/jobs", ALICE).await;
    assert_eq!(jobs.json["items"], json!([]), "nothing stored");
}

#[tokio::test]
async fn titus_job_routes_change_capacity_processes_and_the_disruption_budget() {
    let api = Api::new().await;
    let job = api.create(ALICE, &service(0, 1, 4)).await;
    let id = id_of(&job);
    let route = |suffix: &str| format!("/api/v3/jobs/{id}/{suffix}");

    let capacity = api
        .put_json(&route("capacityAttributes"), ALICE, &json!({"desired": 3}))
        .await;
    let frozen = api
        .put_json(
            &route("jobprocesses"),
            ALICE,
            &json!({"disableIncreaseDesired": true, "disableDecreaseDesired": "false"}),
        )
        .await;
    let refused = api
        .put_json(&route("capacityAttributes"), ALICE, &json!({"desired": 4}))
        .await;
    let budget = api
        .put_json(
            &route("disruptionBudget"),
            ALICE,
            &json!({"selfManaged": {"relocationTimeMs": "60000"}, "rateUnlimited": {}}),
        )
        .await;
    let bad_budget = api
        .put_json(
            &route("disruptionBudget"),
            ALICE,
            &json!({"selfManaged": {}, "relocationLimit": {"limit": 1}, "rateUnlimited": [], "typo": 1}),
        )
        .await;
    let not_yours = api.put_json(&route("jobprocesses"), BOB, &json!({})).await;

    assert_eq!(capacity.status, StatusCode::OK, "{}", capacity.text);
    assert_eq!(
        capacity.json["jobDescriptor"]["service"]["capacity"]["desired"],
        3
    );
    assert_eq!(frozen.status, StatusCode::OK, "{}", frozen.text);
    assert_eq!(
        frozen.json["jobDescriptor"]["service"]["serviceJobProcesses"],
        json!({"disableIncreaseDesired": true, "disableDecreaseDesired": false})
    );
    assert_eq!(refused.error(StatusCode::CONFLICT), "conflict");
    assert!(
        refused.text.contains("disableIncreaseDesired"),
        "{}",
        refused.text
    );
    assert_eq!(budget.status, StatusCode::OK, "{}", budget.text);
    assert_eq!(
        budget.json["jobDescriptor"]["disruptionBudget"]["selfManaged"]["relocationTimeMs"],
        60000
    );
    assert_eq!(bad_budget.error(StatusCode::BAD_REQUEST), "invalid_request");
    let fields = bad_budget.fields();
    assert!(fields.contains(&"rateUnlimited".to_owned()), "{fields:?}");
    assert!(
        fields.contains(&"(root)".to_owned()),
        "the unknown field: {fields:?}"
    );
    assert_eq!(not_yours.error(StatusCode::FORBIDDEN), "forbidden");
    let stored = api.get(&format!("/api/v3/jobs/{id}"), ALICE).await;
    assert_eq!(
        stored.json["jobDescriptor"]["service"]["capacity"]["desired"],
        3
    );
    assert_eq!(stored.json["version"], budget.json["version"]);
}
