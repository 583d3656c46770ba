//! `titus ui`: the dashboard (and the whole API) of a deployment, on this machine, through a
//! proxy that authenticates each request as the CLI does: SigV4 for a deployed stack's API
//! Gateway, whose IAM authorization a browser cannot sign, or the context's bearer token. It
//! listens on loopback only and, as a browser is its client, answers only requests whose `Host`
//! is its own address (no DNS rebinding) and refuses writes from other origins (no cross-site
//! requests carrying the user's credentials).

use std::net::SocketAddr;

use axum::body::{to_bytes, Body};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use axum::Router;

use crate::client::{CliError, Client};

/// The largest request body the proxy forwards (API Gateway's own limit is 10 MB).
const MAX_BODY_BYTES: usize = 6 * 1024 * 1024;
/// The request headers forwarded; the caller's own `Authorization` never is (the proxy's wins).
const FORWARDED_REQUEST_HEADERS: [&str; 3] = ["content-type", "accept", "idempotency-key"];
/// The answer's headers passed back.
const FORWARDED_RESPONSE_HEADERS: [&str; 4] =
    ["content-type", "retry-after", "cache-control", "location"];

#[derive(Debug, Clone)]
struct Proxy {
    client: Client,
    /// The `Host` values (and origins, with `http://`) of the proxy's own address.
    hosts: Vec<String>,
}

/// Serves until `stop` resolves; `bound` is told the address it listens on.
pub async fn serve(
    client: Client,
    listen: SocketAddr,
    bound: impl FnOnce(SocketAddr),
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), CliError> {
    if !listen.ip().is_loopback() {
        return Err(CliError::Invalid(format!(
            "--listen {listen}: the proxy holds your credentials and listens on loopback only \
             (127.0.0.1 or [::1])"
        )));
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| CliError::Unavailable(format!("cannot listen on {listen}: {e}")))?;
    let address = listener
        .local_addr()
        .map_err(|e| CliError::Unavailable(format!("cannot read the bound address: {e}")))?;
    let port = address.port();
    let hosts = vec![
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ];
    let app = Router::new()
        .fallback(forward)
        .with_state(Proxy { client, hosts });
    bound(address);
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
        .map_err(|e| CliError::Unavailable(format!("the proxy stopped: {e}")))
}

fn refuse(status: StatusCode, message: String) -> Response<Body> {
    let body = serde_json::json!({ "error": "proxy_refused", "message": message });
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    response
}

/// Why a request may not go through, if it may not.
fn refusal(proxy: &Proxy, method: &axum::http::Method, headers: &HeaderMap) -> Option<String> {
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !proxy.hosts.iter().any(|h| h == host) {
        return Some(format!(
            "Host {host:?} is not this proxy's address; open http://{}/ui/",
            proxy.hosts[0]
        ));
    }
    let reads = [axum::http::Method::GET, axum::http::Method::HEAD];
    if let Some(origin) = headers.get("origin").and_then(|v| v.to_str().ok()) {
        let own = proxy.hosts.iter().any(|h| origin == format!("http://{h}"));
        if !own && !reads.contains(method) {
            return Some(format!(
                "a {method} from origin {origin:?}: only pages of this proxy (http://{}) may \
                 change things through it",
                proxy.hosts[0]
            ));
        }
    }
    None
}

async fn forward(State(proxy): State<Proxy>, request: Request<Body>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    if let Some(why) = refusal(&proxy, &parts.method, &parts.headers) {
        tracing::warn!(method = %parts.method, uri = %parts.uri, reason = %why, "proxy refused a request");
        return refuse(StatusCode::FORBIDDEN, why);
    }
    let body = match to_bytes(body, MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(_) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is over {MAX_BODY_BYTES} bytes"),
            )
        }
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let headers: Vec<(String, String)> = FORWARDED_REQUEST_HEADERS
        .iter()
        .filter_map(|name| {
            let value = parts.headers.get(*name)?.to_str().ok()?;
            Some(((*name).to_owned(), value.to_owned()))
        })
        .collect();
    let method = match reqwest::Method::from_bytes(parts.method.as_str().as_bytes()) {
        Ok(method) => method,
        Err(_) => return refuse(StatusCode::METHOD_NOT_ALLOWED, "unknown method".into()),
    };
    match proxy
        .client
        .forward(method, &path, &headers, body.to_vec())
        .await
    {
        Ok(answer) => {
            let mut response = Response::new(Body::from(answer.body));
            *response.status_mut() =
                StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
            for (name, value) in answer.headers {
                if FORWARDED_RESPONSE_HEADERS.contains(&name.as_str()) {
                    if let (Ok(name), Ok(value)) = (
                        axum::http::HeaderName::from_bytes(name.as_bytes()),
                        HeaderValue::from_str(&value),
                    ) {
                        response.headers_mut().insert(name, value);
                    }
                }
            }
            response
        }
        Err(e) => refuse(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Auth;
    use std::sync::{Arc, Mutex};

    type Seen = Arc<Mutex<Vec<(String, String, Option<String>, Option<String>)>>>;

    /// A stand-in for the deployed API: records each request's method, path, Authorization and
    /// idempotency key, and answers with JSON.
    async fn upstream() -> (String, Seen) {
        let seen: Seen = Arc::default();
        let record = seen.clone();
        let app = Router::new().fallback(move |request: Request<Body>| {
            let record = record.clone();
            async move {
                let header = |name: &str| {
                    request
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                record.lock().unwrap().push((
                    request.method().to_string(),
                    request.uri().to_string(),
                    header("authorization"),
                    header("idempotency-key"),
                ));
                let mut response = Response::new(Body::from(r#"{"items":[]}"#));
                response
                    .headers_mut()
                    .insert("content-type", HeaderValue::from_static("application/json"));
                response
                    .headers_mut()
                    .insert("retry-after", HeaderValue::from_static("3"));
                response
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, seen)
    }

    async fn proxy_to(url: &str, auth: Auth) -> SocketAddr {
        let client = Client::new(url, auth).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            serve(
                client,
                "127.0.0.1:0".parse().unwrap(),
                |address| tx.send(address).unwrap(),
                std::future::pending(),
            )
            .await
            .unwrap();
        });
        rx.await.unwrap()
    }

    #[tokio::test]
    async fn requests_go_through_with_the_proxys_bearer_token_and_never_the_callers() {
        let (url, seen) = upstream().await;
        let proxy = proxy_to(&url, Auth::Bearer("context-token".into())).await;
        let http = reqwest::Client::new();
        let answer = http
            .get(format!("http://{proxy}/api/v3/jobs?pageSize=2"))
            .header("authorization", "Bearer someone-elses")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.headers()["retry-after"], "3");
        assert_eq!(answer.text().await.unwrap(), r#"{"items":[]}"#);
        let posted = http
            .post(format!("http://{proxy}/api/v3/jobs"))
            .header("origin", format!("http://{proxy}"))
            .header("idempotency-key", "k-1")
            .json(&serde_json::json!({"a": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(posted.status(), 200);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            [
                (
                    "GET".to_owned(),
                    "/api/v3/jobs?pageSize=2".to_owned(),
                    Some("Bearer context-token".to_owned()),
                    None
                ),
                (
                    "POST".to_owned(),
                    "/api/v3/jobs".to_owned(),
                    Some("Bearer context-token".to_owned()),
                    Some("k-1".to_owned())
                ),
            ]
        );
    }

    #[tokio::test]
    async fn a_deployed_stacks_requests_are_signed_with_sigv4_for_execute_api() {
        // Signed with the credentials the standard chain finds (the test command's environment
        // gives the emulator's).
        let (url, seen) = upstream().await;
        let proxy = proxy_to(
            &url,
            Auth::SigV4 {
                region: "eu-west-1".into(),
            },
        )
        .await;
        let answer = reqwest::get(format!("http://{proxy}/ui/")).await.unwrap();
        assert_eq!(answer.status(), 200);
        let authorization = seen.lock().unwrap()[0].2.clone().unwrap_or_default();
        assert!(
            authorization.starts_with("AWS4-HMAC-SHA256 Credential=")
                && authorization.contains("/eu-west-1/execute-api/aws4_request"),
            "{authorization}"
        );
    }

    #[tokio::test]
    async fn another_host_or_a_write_from_another_origin_is_refused_and_sent_nowhere() {
        let (url, seen) = upstream().await;
        let proxy = proxy_to(&url, Auth::Bearer("context-token".into())).await;
        let http = reqwest::Client::new();
        let rebound = http
            .get(format!("http://{proxy}/api/v3/jobs"))
            .header("host", "evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(rebound.status(), 403);
        assert!(rebound
            .text()
            .await
            .unwrap()
            .contains("is not this proxy's address"));
        let cross_site = http
            .delete(format!("http://{proxy}/api/v3/jobs/some-job"))
            .header("origin", "https://evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(cross_site.status(), 403);
        assert!(cross_site
            .text()
            .await
            .unwrap()
            .contains("only pages of this proxy"));
        assert!(seen.lock().unwrap().is_empty(), "nothing reached the API");
        let not_loopback = serve(
            Client::new(&url, Auth::Bearer("t".into())).unwrap(),
            "0.0.0.0:0".parse().unwrap(),
            |_| {},
            std::future::ready(()),
        )
        .await;
        assert!(matches!(not_loopback, Err(CliError::Invalid(m)) if m.contains("loopback only")));
    }
}
