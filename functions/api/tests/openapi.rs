//! The checked-in OpenAPI document (`functions/api/openapi.json`) is the one the code generates.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

#[test]
fn the_checked_in_openapi_document_matches_the_code() {
    let generated = titus_api::openapi::document_json();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "{} differs from the document the code generates; regenerate it with \
         `UPDATE_OPENAPI=1 cargo test -p titus-api --test openapi` and commit it",
        path.display()
    );
}

#[test]
fn the_document_is_openapi_3_with_every_route() {
    let document: serde_json::Value =
        serde_json::from_str(&titus_api::openapi::document_json()).unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let paths = document["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/healthz", &["get"][..]),
        ("/metrics", &["get"]),
        ("/api/v3/openapi.json", &["get"]),
        ("/api/v3/jobs", &["get", "post"]),
        ("/api/v3/jobs/{id}", &["get", "delete"]),
        ("/api/v3/jobs/{id}/instances", &["put"]),
        ("/api/v3/jobs/{id}/enable", &["post"]),
        ("/api/v3/jobs/{id}/disable", &["post"]),
        ("/api/v3/jobs/{id}/attributes", &["put", "delete"]),
        ("/api/v3/tasks", &["get"]),
        ("/api/v3/tasks/{id}", &["get", "delete"]),
        ("/api/v3/scheduler/results/{id}", &["get"]),
        ("/api/v3/scheduler/plan", &["post"]),
        ("/api/v3/agents", &["get"]),
    ] {
        for method in methods {
            assert!(
                paths.get(path).and_then(|p| p.get(method)).is_some(),
                "{method} {path} is not documented"
            );
        }
    }
}
