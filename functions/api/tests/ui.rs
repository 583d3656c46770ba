//! The dashboard's files through the router: served without credentials, with their content
//! types, cache policy and a strict CSP, and nothing else under `/ui`.
//!
//! The static routes touch no port, so the router here runs over AWS adapters pointed at an
//! address nothing listens on: these tests need no emulator, and would fail loudly if a static
//! route ever reached the store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt as _;
use titus_api::{router, ApiConfig, AppState};
use titus_aws::{aws_ports, AwsClients, Names};
use titus_control::{ControlPlane, Settings};
use tower::ServiceExt as _;

const TOKEN: &str = "ui-test-token";

fn dashboard_router() -> Router {
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        // Port 9 (discard): nothing answers, so any store call would fail the test.
        .endpoint_url("http://127.0.0.1:9")
        .build();
    let clients = AwsClients::from_config(&sdk);
    let names = Names::new("uitest").unwrap();
    let control = Arc::new(ControlPlane::new(
        aws_ports(&clients, &names),
        Settings::default(),
    ));
    let config = ApiConfig::with_tokens(names.stage(), &[(TOKEN, "ui@example.com")], &[]);
    router(AppState::new(control, config, None))
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

async fn send(method: Method, uri: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = dashboard_router()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

fn header(reply: &Reply, name: header::HeaderName) -> &str {
    reply
        .headers
        .get(&name)
        .unwrap_or_else(|| panic!("no {name} header in {:?}", reply.headers))
        .to_str()
        .unwrap()
}

fn assert_strict_headers(reply: &Reply) {
    let csp = header(reply, header::CONTENT_SECURITY_POLICY);
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert!(csp.contains("script-src 'self';"), "{csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(header(reply, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
}

#[tokio::test]
async fn the_dashboard_files_are_served_without_credentials_with_their_types_and_a_strict_csp() {
    for (path, content_type, marker) in [
        ("/ui/", "text/html; charset=utf-8", "<!doctype html>"),
        ("/ui/app.js", "text/javascript; charset=utf-8", "api/v3/"),
        ("/ui/app.css", "text/css; charset=utf-8", "font-family"),
    ] {
        let reply = send(Method::GET, path, &[]).await;

        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(header(&reply, header::CONTENT_TYPE), content_type, "{path}");
        assert_eq!(header(&reply, header::CACHE_CONTROL), "no-cache", "{path}");
        assert_strict_headers(&reply);
        assert!(header(&reply, header::ETAG).starts_with('"'), "{path}");
        let text = String::from_utf8(reply.body).unwrap();
        assert!(text.contains(marker), "{path} lacks {marker:?}");
    }
}

#[tokio::test]
async fn the_page_is_the_one_built_into_ui_dist() {
    let reply = send(Method::GET, "/ui/", &[]).await;
    let app_js = send(Method::GET, "/ui/app.js", &[]).await;

    let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ui/dist");
    assert_eq!(reply.body, std::fs::read(dist.join("index.html")).unwrap());
    assert_eq!(app_js.body, std::fs::read(dist.join("app.js")).unwrap());
    let page = String::from_utf8(reply.body).unwrap();
    assert!(
        page.contains(r#"<script defer src="app.js"></script>"#),
        "{page}"
    );
}

#[tokio::test]
async fn ui_without_a_slash_redirects_to_the_page_relative_to_any_prefix() {
    let reply = send(Method::GET, "/ui", &[]).await;

    assert_eq!(reply.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(header(&reply, header::LOCATION), "ui/");
    assert_strict_headers(&reply);
}

#[tokio::test]
async fn a_file_the_browser_already_has_is_answered_304() {
    let first = send(Method::GET, "/ui/app.js", &[]).await;
    let etag = header(&first, header::ETAG).to_owned();

    let again = send(Method::GET, "/ui/app.js", &[("if-none-match", &etag)]).await;
    let other = send(Method::GET, "/ui/app.js", &[("if-none-match", "\"other\"")]).await;

    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.body.is_empty());
    assert_eq!(header(&again, header::ETAG), etag);
    assert_strict_headers(&again);
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(other.body, first.body);
}

#[tokio::test]
async fn head_answers_the_headers_of_get() {
    let reply = send(Method::HEAD, "/ui/", &[]).await;

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        header(&reply, header::CONTENT_TYPE),
        "text/html; charset=utf-8"
    );
    assert!(reply.body.is_empty());
}

#[tokio::test]
async fn unknown_paths_under_ui_are_404_in_the_apis_error_shape() {
    for path in [
        "/ui/index.html",
        "/ui/app.js.map",
        "/ui/../Cargo.toml",
        "/ui/jobs",
        "/ui/app.js/x",
        "/uix",
    ] {
        let reply = send(Method::GET, path, &[]).await;

        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(body["error"], "not_found", "{path}");
    }
}

#[tokio::test]
async fn the_dashboard_files_take_no_writes() {
    let reply = send(Method::POST, "/ui/", &[]).await;

    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn serving_the_page_opens_no_way_around_the_apis_credentials() {
    let reply = send(Method::GET, "/api/v3/jobs", &[("referer", "/ui/")]).await;

    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}
