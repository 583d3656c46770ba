//! Shared set-up for the API's emulator tests: a freshly provisioned stage per test, the router
//! over it, and a way to send it requests with tower's `oneshot`.

#![allow(dead_code)]

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt as _;
use titus_api::{router, ApiConfig, AppState};
use titus_aws::provision::provision;
use titus_aws::{aws_ports, AwsClients, AwsPorts, DynamoAgentStore, DynamoJobStore, Names};
use titus_control::{ControlPlane, Settings};
use tower::ServiceExt as _;

pub const ALICE: &str = "alice-token";
pub const BOB: &str = "bob-token";
pub const ADMIN: &str = "admin-token";
/// A caller in no team: it creates nothing of the tests' teams and reads only what any caller may.
pub const CAROL: &str = "carol-token";

/// Clients for the emulator the test command started. Fails loudly rather than reaching AWS.
pub async fn clients() -> AwsClients {
    AwsClients::local_emulator().await
}

pub fn unique_stage(prefix: &str) -> Names {
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..10];
    Names::new(&format!("{prefix}{suffix}")).expect("valid stage name")
}

pub fn config(names: &Names) -> ApiConfig {
    ApiConfig::with_tokens(
        names.stage(),
        &[
            (ALICE, "alice@example.com"),
            (BOB, "bob@example.com"),
            (ADMIN, "root@example.com"),
            (CAROL, "carol@example.com"),
        ],
        &["root@example.com"],
    )
}

/// The teams of the tests' callers: Alice (by token and by IAM) and Bob in `team@example.com`,
/// Alice also in `other@example.com`; Carol in none.
pub fn teams() -> titus_control::Teams {
    titus_control::Teams::default()
        .with(
            "alice@example.com",
            &["team@example.com", "other@example.com"],
        )
        .with("bob@example.com", &["team@example.com"])
        // The IAM caller of the recorded API Gateway events.
        .with(
            "arn:aws:iam::123456789012:user/alice",
            &["team@example.com"],
        )
}

/// The API over a fresh stage.
pub struct Api {
    pub clients: AwsClients,
    pub names: Names,
    pub router: Router,
    pub store: DynamoJobStore,
    pub agents: DynamoAgentStore,
    /// The control plane the router runs on.
    pub control: std::sync::Arc<ControlPlane<AwsPorts>>,
}

impl Api {
    pub async fn new() -> Api {
        Api::with_settings(|_| {}).await
    }

    /// The API over a fresh stage whose control-plane settings `change` adjusts.
    pub async fn with_settings(change: impl FnOnce(&mut Settings)) -> Api {
        let clients = clients().await;
        let names = unique_stage("a");
        provision(&clients, &names.definitions())
            .await
            .expect("provisioning a fresh stage");
        let mut settings = Settings::default();
        settings.admission.teams = teams();
        change(&mut settings);
        let config = config(&names);
        Api::over_with(clients, names, config, settings)
    }

    /// The router over a stage that may or may not be provisioned.
    pub fn over(clients: AwsClients, names: Names, config: ApiConfig) -> Api {
        let mut settings = Settings::default();
        settings.admission.teams = teams();
        Api::over_with(clients, names, config, settings)
    }

    fn over_with(clients: AwsClients, names: Names, config: ApiConfig, settings: Settings) -> Api {
        let store = DynamoJobStore::new(clients.dynamodb.clone(), &names);
        let agents = DynamoAgentStore::new(clients.dynamodb.clone(), &names);
        let control = std::sync::Arc::new(ControlPlane::new(aws_ports(&clients, &names), settings));
        let limiter = titus_aws::DynamoRateLimiter::new(clients.dynamodb.clone(), &names);
        let state = AppState::new(control.clone(), config, Some(std::sync::Arc::new(limiter)))
            .with_task_logs(std::sync::Arc::new(titus_aws::CloudWatchTaskLogs::new(
                clients.logs.clone(),
            )));
        Api {
            router: router(state),
            clients,
            names,
            store,
            agents,
            control,
        }
    }

    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Reply {
            status,
            headers,
            json,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    pub async fn get(&self, uri: &str, token: &str) -> Reply {
        self.send(request(Method::GET, uri, Some(token), None))
            .await
    }

    pub async fn delete(&self, uri: &str, token: &str) -> Reply {
        self.send(request(Method::DELETE, uri, Some(token), None))
            .await
    }

    pub async fn post_json(&self, uri: &str, token: &str, body: &serde_json::Value) -> Reply {
        self.send(request(
            Method::POST,
            uri,
            Some(token),
            Some(body.to_string()),
        ))
        .await
    }

    pub async fn put_json(&self, uri: &str, token: &str, body: &serde_json::Value) -> Reply {
        self.send(request(
            Method::PUT,
            uri,
            Some(token),
            Some(body.to_string()),
        ))
        .await
    }

    /// Creates a job as `token`'s caller and returns its JSON. Its initial tasks are written
    /// too, as the scheduler's next tick would write them.
    pub async fn create(&self, token: &str, descriptor: &serde_json::Value) -> serde_json::Value {
        let reply = self.post_json("/api/v3/jobs", token, descriptor).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        let id = titus_core::JobId::from_string(reply.json["id"].as_str().unwrap());
        titus_control::materialize::materialize_job(&self.control, &id)
            .await
            .unwrap();
        reply.json
    }
}

/// A request with an optional bearer token and an optional JSON body.
pub fn request(
    method: Method,
    uri: &str,
    token: Option<&str>,
    json: Option<String>,
) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    match json {
        Some(body) => builder
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap(),
        None => builder.body(Body::empty()).unwrap(),
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: serde_json::Value,
    pub text: String,
}

impl Reply {
    /// Asserts the error shape and the status; returns the error code.
    pub fn error(&self, status: StatusCode) -> &str {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(
            self.headers.get("content-type").unwrap(),
            "application/json"
        );
        let object = self
            .json
            .as_object()
            .expect("an error body is a JSON object");
        let details = self.json["details"].as_array().expect("details");
        let mut keys = vec!["details", "error", "message", "statusCode"];
        if !details.is_empty() {
            keys.insert(2, "errorContext");
        }
        assert_eq!(
            object.keys().map(String::as_str).collect::<Vec<_>>(),
            keys,
            "{}",
            self.text
        );
        // Titus' ErrorResponse: the status again, and each problem as a constraint violation.
        assert_eq!(self.json["statusCode"], status.as_u16(), "{}", self.text);
        for detail in details {
            let field = detail["field"].as_str().unwrap();
            let violation = self.json["errorContext"]["constraintViolations"][field]
                .as_str()
                .unwrap_or_default();
            assert!(
                violation.contains(detail["message"].as_str().unwrap()),
                "{field} in {}",
                self.text
            );
        }
        assert!(!self.json["message"].as_str().unwrap().is_empty());
        self.json["error"].as_str().unwrap()
    }

    /// The `field`s of the error's details.
    pub fn fields(&self) -> Vec<String> {
        self.json["details"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["field"].as_str().unwrap().to_owned())
            .collect()
    }
}

pub fn batch(size: u32) -> serde_json::Value {
    serde_json::json!({
        "owner": {"teamEmail": "team@example.com"},
        "applicationName": "app",
        "container": {"image": {"name": "busybox", "tag": "stable"}},
        "batch": {"size": size}
    })
}

pub fn service(min: u32, desired: u32, max: u32) -> serde_json::Value {
    serde_json::json!({
        "owner": {"teamEmail": "team@example.com"},
        "applicationName": "web",
        "container": {"image": {"name": "busybox", "tag": "stable"}},
        "service": {"capacity": {"min": min, "desired": desired, "max": max}}
    })
}
