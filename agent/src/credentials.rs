//! Each task's AWS identity: the agent assumes the task's IAM role and serves the credentials to
//! that task's container alone, through the container credentials provider every AWS SDK's
//! default chain reads (`AWS_CONTAINER_CREDENTIALS_FULL_URI` with
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN`, as on ECS and EKS Pod Identity).
//!
//! A token is bound to one task: it is random, known to the agent only by its SHA-256 (kept in
//! a container label, so a restarted agent serves the tasks it re-adopts), answered only for
//! requests from that task's container address, and forgotten when the task finishes. A task
//! without a role gets no token and no variables, and its container cannot reach instance
//! metadata (`isolation`), so it has no AWS credentials at all.
//!
//! Credentials are cached per task and assumed again when less than `REFRESH_BEFORE` of them
//! remains, so a task's SDK, which refreshes some minutes before expiry, always gets fresh ones.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};
use titus_core::TaskId;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::time::now_ms;

/// The path credentials are served on.
pub const CREDENTIALS_PATH: &str = "/v1/credentials";
/// The variables a task with a role gets.
pub const FULL_URI_VAR: &str = "AWS_CONTAINER_CREDENTIALS_FULL_URI";
pub const TOKEN_VAR: &str = "AWS_CONTAINER_AUTHORIZATION_TOKEN";
/// Cached credentials are served while at least this much of them remains.
pub const REFRESH_BEFORE: Duration = Duration::from_secs(15 * 60);
/// How long a request waits for its container's address to be known (a container may ask
/// before the agent has inspected it after its start).
const BINDING_WAIT: Duration = Duration::from_secs(5);
/// How long the assumed credentials last (an hour: every role's maximum allows it).
pub const SESSION_SECS: i32 = 3600;

/// Temporary credentials of a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    pub expiration_ms: u64,
    /// The role's ARN (as resolved from a bare name).
    pub role_arn: String,
}

/// Why a role's credentials could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AssumeError {
    /// The role does not exist, does not trust this agent, or is not tagged for the stage:
    /// retrying cannot help.
    #[error("role {role:?} cannot be assumed by this agent: {message}")]
    Refused { role: String, message: String },
    /// STS could not be reached or failed: another try may work.
    #[error("assuming role {role:?} failed: {message}")]
    Unavailable { role: String, message: String },
}

/// STS, as the credentials service needs it (`aws::StsRoles` for real).
pub trait RoleAssumer: Send + Sync + 'static {
    /// Credentials of `role` (an ARN, or a name in the agent's own account) for a session named
    /// `session_name`.
    fn assume<'a>(
        &'a self,
        role: &'a str,
        session_name: &'a str,
    ) -> BoxFuture<'a, Result<RoleCredentials, AssumeError>>;
}

/// The session name that names the task in CloudTrail: `titus-{taskId}`, cut to STS' 64
/// characters of `[\w+=,.@-]`.
pub fn session_name(task_id: &TaskId) -> String {
    let name: String = format!("titus-{task_id}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    name.chars().take(64).collect()
}

/// What a task's container gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub token: String,
    /// For the container's label: how a restarted agent knows the token again.
    pub token_sha256: String,
    pub uri: String,
}

/// Which source addresses a token is answered for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// Not yet known: the container has not started, or the agent has not inspected it.
    Pending,
    /// The container's addresses on the task network.
    Addresses(Vec<IpAddr>),
    /// The container shares the host's network (allowed only by configuration): the token
    /// alone identifies it.
    AnyAddress,
}

#[derive(Debug)]
struct Entry {
    task_id: TaskId,
    role: String,
    binding: watch::Sender<Binding>,
    cached: tokio::sync::Mutex<Option<RoleCredentials>>,
}

/// Why a request was not answered: its HTTP status, a code and a message for the task's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            code,
            message: message.into(),
        }
    }
}

/// The tokens of this agent's tasks and their cached credentials.
pub struct CredentialService {
    assumer: Arc<dyn RoleAssumer>,
    uri: String,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    by_task: Mutex<HashMap<TaskId, String>>,
}

impl std::fmt::Debug for CredentialService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialService")
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// SHA-256 of a token, in lowercase hex.
pub fn token_digest(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn new_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

impl CredentialService {
    /// A service whose tasks reach it at `address` (`http://{address}/v1/credentials`).
    pub fn new(assumer: Arc<dyn RoleAssumer>, address: SocketAddr) -> CredentialService {
        CredentialService {
            assumer,
            uri: format!("http://{address}{CREDENTIALS_PATH}"),
            entries: Mutex::new(HashMap::new()),
            by_task: Mutex::new(HashMap::new()),
        }
    }

    /// The URI tasks are given.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Assumes the task's role (so that a role that cannot be had fails the launch, not the
    /// task's first AWS call) and makes the task's token.
    pub async fn issue(&self, task_id: &TaskId, role: &str) -> Result<IssuedToken, AssumeError> {
        let credentials = self.assumer.assume(role, &session_name(task_id)).await?;
        let token = new_token();
        let digest = token_digest(&token);
        self.insert(task_id, role, &digest, Some(credentials));
        Ok(IssuedToken {
            token,
            token_sha256: digest,
            uri: self.uri.clone(),
        })
    }

    /// Serves a task found running at start again: its token is known by its digest.
    pub fn adopt(&self, task_id: &TaskId, role: &str, token_sha256: &str, binding: Binding) {
        self.insert(task_id, role, token_sha256, None);
        self.bind(task_id, binding);
    }

    fn insert(
        &self,
        task_id: &TaskId,
        role: &str,
        digest: &str,
        credentials: Option<RoleCredentials>,
    ) {
        let entry = Arc::new(Entry {
            task_id: task_id.clone(),
            role: role.to_owned(),
            binding: watch::Sender::new(Binding::Pending),
            cached: tokio::sync::Mutex::new(credentials),
        });
        if let Some(old) = lock(&self.by_task).insert(task_id.clone(), digest.to_owned()) {
            lock(&self.entries).remove(&old);
        }
        lock(&self.entries).insert(digest.to_owned(), entry);
    }

    /// Says where the task's container answers from, once it runs.
    pub fn bind(&self, task_id: &TaskId, binding: Binding) {
        let Some(digest) = lock(&self.by_task).get(task_id).cloned() else {
            return;
        };
        if let Some(entry) = lock(&self.entries).get(&digest) {
            entry.binding.send_replace(binding);
        }
    }

    /// The credentials issued for the task's role, as cached (what the agent reads the task's
    /// secrets with at launch); `None` for a task without a token or adopted without them.
    pub async fn role_credentials(&self, task_id: &TaskId) -> Option<RoleCredentials> {
        let digest = lock(&self.by_task).get(task_id).cloned()?;
        let entry = lock(&self.entries).get(&digest).cloned()?;
        let cached = entry.cached.lock().await;
        cached.clone()
    }

    /// Forgets the task's token: its container has finished.
    pub fn revoke(&self, task_id: &TaskId) {
        if let Some(digest) = lock(&self.by_task).remove(task_id) {
            lock(&self.entries).remove(&digest);
        }
    }

    /// How many tasks hold a token.
    pub fn tokens(&self) -> usize {
        lock(&self.entries).len()
    }

    /// The credentials for a request with `token` from `peer`.
    pub async fn answer(
        &self,
        token: Option<&str>,
        peer: IpAddr,
    ) -> Result<RoleCredentials, Refusal> {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Err(Refusal::new(
                401,
                "NoToken",
                "expected the task's token in the Authorization header \
                 (AWS_CONTAINER_AUTHORIZATION_TOKEN)",
            ));
        };
        let entry = lock(&self.entries).get(&token_digest(token)).cloned();
        let Some(entry) = entry else {
            return Err(Refusal::new(
                403,
                "UnknownToken",
                "this token belongs to no running task on this host (a finished task's token \
                 is refused)",
            ));
        };
        let mut binding = entry.binding.subscribe();
        // The watch's guard is not held across an await.
        let allowed =
            match tokio::time::timeout(BINDING_WAIT, binding.wait_for(|b| *b != Binding::Pending))
                .await
            {
                Ok(Ok(binding)) => match &*binding {
                    Binding::AnyAddress => true,
                    Binding::Addresses(addresses) => addresses.contains(&peer),
                    Binding::Pending => false,
                },
                _ => false,
            };
        if !allowed {
            tracing::warn!(task_id = %entry.task_id, %peer, "a task's token was presented from another address");
            return Err(Refusal::new(
                403,
                "WrongTask",
                format!(
                    "this token is bound to another task's container; {peer} may use only its own"
                ),
            ));
        }
        let mut cached = entry.cached.lock().await;
        let fresh_until = now_ms().saturating_add(duration_ms(REFRESH_BEFORE));
        if let Some(credentials) = cached.as_ref() {
            if credentials.expiration_ms > fresh_until {
                return Ok(credentials.clone());
            }
        }
        match self
            .assumer
            .assume(&entry.role, &session_name(&entry.task_id))
            .await
        {
            Ok(credentials) => {
                *cached = Some(credentials.clone());
                Ok(credentials)
            }
            Err(e) => {
                tracing::warn!(task_id = %entry.task_id, error = %e, "refreshing a task's credentials failed");
                // Credentials still valid are better than none while STS is away.
                match cached.as_ref() {
                    Some(credentials) if credentials.expiration_ms > now_ms() => {
                        Ok(credentials.clone())
                    }
                    _ => Err(Refusal::new(503, "AssumeRoleFailed", e.to_string())),
                }
            }
        }
    }

    /// Answers tasks on `listener` until `stop`.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        stop: CancellationToken,
    ) -> std::io::Result<()> {
        let app = Router::new()
            .route(CREDENTIALS_PATH, get(credentials_handler))
            .fallback(|| async {
                error_response(&Refusal::new(
                    404,
                    "NotFound",
                    format!("credentials are served at {CREDENTIALS_PATH}"),
                ))
            })
            .with_state(self);
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
    }
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

async fn credentials_handler(
    State(service): State<Arc<CredentialService>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    // An IPv4 peer may come in as an IPv4-mapped IPv6 address.
    let peer = match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match service.answer(token, peer).await {
        Ok(credentials) => Json(serde_json::json!({
            "AccessKeyId": credentials.access_key_id,
            "SecretAccessKey": credentials.secret_access_key,
            "Token": credentials.session_token,
            "Expiration": rfc3339(credentials.expiration_ms),
            "RoleArn": credentials.role_arn,
        }))
        .into_response(),
        Err(refusal) => error_response(&refusal),
    }
}

fn error_response(refusal: &Refusal) -> Response {
    let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::FORBIDDEN);
    (
        status,
        Json(serde_json::json!({"code": refusal.code, "message": refusal.message})),
    )
        .into_response()
}

/// `2026-12-02T10:00:00Z`.
pub fn rfc3339(ms: u64) -> String {
    let secs = i64::try_from(ms / 1000).unwrap_or(i64::MAX);
    aws_smithy_types::DateTime::from_secs(secs)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::FakeRoles;

    fn service(lifetime: Duration) -> (Arc<FakeRoles>, CredentialService) {
        let sts = Arc::new(FakeRoles::new(lifetime, &[]));
        let address: SocketAddr = "169.254.170.2:51679".parse().unwrap();
        (sts.clone(), CredentialService::new(sts, address))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[tokio::test]
    async fn a_token_is_answered_for_its_own_container_only() {
        let (sts, service) = service(Duration::from_secs(3600));
        let a = TaskId::from_string("task-a".to_owned());
        let b = TaskId::from_string("task-b".to_owned());
        let token_a = service.issue(&a, "role-a").await.unwrap();
        let token_b = service.issue(&b, "role-b").await.unwrap();
        service.bind(&a, Binding::Addresses(vec![ip("10.99.0.1")]));
        service.bind(&b, Binding::Addresses(vec![ip("10.99.0.2")]));
        assert_eq!(token_a.uri, "http://169.254.170.2:51679/v1/credentials");
        assert_eq!(token_a.token_sha256, token_digest(&token_a.token));

        let got = service
            .answer(Some(&token_a.token), ip("10.99.0.1"))
            .await
            .unwrap();
        assert_eq!(got.role_arn, "arn:aws:iam::123456789012:role/role-a");
        assert_eq!(got.session_token, "session-titus-task-a");
        // Served from the cache: two assumes (one per issue), not three.
        assert_eq!(sts.calls(), 2);

        let stolen = service
            .answer(Some(&token_a.token), ip("10.99.0.2"))
            .await
            .unwrap_err();
        assert_eq!((stolen.status, stolen.code), (403, "WrongTask"));
        let none = service.answer(None, ip("10.99.0.1")).await.unwrap_err();
        assert_eq!((none.status, none.code), (401, "NoToken"));
        let forged = service
            .answer(Some("guess"), ip("10.99.0.1"))
            .await
            .unwrap_err();
        assert_eq!((forged.status, forged.code), (403, "UnknownToken"));
        assert!(service
            .answer(Some(&token_b.token), ip("10.99.0.2"))
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn a_finished_tasks_token_is_refused() {
        let (_, service) = service(Duration::from_secs(3600));
        let a = TaskId::from_string("task-a".to_owned());
        let token = service.issue(&a, "role-a").await.unwrap();
        service.bind(&a, Binding::Addresses(vec![ip("10.99.0.1")]));
        service.revoke(&a);
        let refused = service
            .answer(Some(&token.token), ip("10.99.0.1"))
            .await
            .unwrap_err();
        assert_eq!((refused.status, refused.code), (403, "UnknownToken"));
        assert_eq!(service.tokens(), 0);
    }

    #[tokio::test]
    async fn credentials_close_to_expiry_are_assumed_again() {
        // Ten minutes of life: under REFRESH_BEFORE, so every answer assumes again.
        let (sts, service) = service(Duration::from_secs(600));
        let a = TaskId::from_string("task-a".to_owned());
        let token = service.issue(&a, "role-a").await.unwrap();
        service.bind(&a, Binding::AnyAddress);
        let first = service
            .answer(Some(&token.token), ip("10.0.0.9"))
            .await
            .unwrap();
        let second = service
            .answer(Some(&token.token), ip("10.0.0.9"))
            .await
            .unwrap();
        assert_ne!(first.access_key_id, second.access_key_id);
        assert_eq!(sts.calls(), 3);
    }

    #[tokio::test]
    async fn an_adopted_task_is_served_by_its_tokens_digest() {
        let (sts, service) = service(Duration::from_secs(3600));
        let a = TaskId::from_string("task-a".to_owned());
        let token = "0123456789abcdef";
        service.adopt(
            &a,
            "role-a",
            &token_digest(token),
            Binding::Addresses(vec![ip("10.99.0.7")]),
        );
        let got = service.answer(Some(token), ip("10.99.0.7")).await.unwrap();
        assert_eq!(got.role_arn, "arn:aws:iam::123456789012:role/role-a");
        assert_eq!(sts.calls(), 1);
    }

    #[tokio::test]
    async fn a_role_that_cannot_be_assumed_fails_the_issue() {
        let sts = Arc::new(FakeRoles::new(Duration::from_secs(3600), &["role-a"]));
        let service = CredentialService::new(sts, "127.0.0.1:1".parse().unwrap());
        let a = TaskId::from_string("task-a".to_owned());
        let error = service.issue(&a, "role-a").await.unwrap_err();
        assert!(matches!(error, AssumeError::Refused { .. }), "{error:?}");
        assert_eq!(service.tokens(), 0);
    }

    #[test]
    fn session_names_name_the_task_within_sts_limits() {
        let id = TaskId::from_string("0b0e8a44-7f9d-4a43-9d2b-1f7d3b6f0a11".to_owned());
        assert_eq!(
            session_name(&id),
            "titus-0b0e8a44-7f9d-4a43-9d2b-1f7d3b6f0a11"
        );
        let long = TaskId::from_string(format!("{}/x y", "a".repeat(80)));
        let name = session_name(&long);
        assert_eq!(name.len(), 64);
        assert!(name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)));
    }

    #[test]
    fn expirations_are_written_as_sdks_read_them() {
        assert_eq!(rfc3339(1_796_205_600_000), "2026-12-02T10:00:00Z");
    }
}
