//! The HTTP client for Titus' REST API: bearer tokens locally, SigV4 to API Gateway in AWS, and one
//! error type whose kinds map to documented exit codes.

use std::time::{Duration, SystemTime};

use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

/// How the CLI proves who it is.
#[derive(Debug, Clone)]
pub enum Auth {
    /// `Authorization: Bearer <token>`, for the local stack.
    Bearer(String),
    /// AWS SigV4 for API Gateway's IAM authorization, with credentials from the standard chain.
    SigV4 { region: String },
}

/// What went wrong, by kind; each kind has its own exit code (see `exit_code`).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The request was refused as invalid (HTTP 400, 413, 415, 422) or the input file was bad.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// HTTP 401 or 403.
    #[error("{0}")]
    Denied(String),
    /// The API could not be reached, or failed (5xx).
    #[error("{0}")]
    Unavailable(String),
    /// `job wait`: the job finished, but not every task ended normally.
    #[error("{0}")]
    JobFailed(String),
    /// `job wait`: the time limit passed first.
    #[error("{0}")]
    Timeout(String),
}

impl CliError {
    /// The documented exit codes (README, `titus --help`).
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Invalid(_) => 2,
            CliError::NotFound(_) => 3,
            CliError::Conflict(_) => 4,
            CliError::Denied(_) => 5,
            CliError::Unavailable(_) => 6,
            CliError::JobFailed(_) => 7,
            CliError::Timeout(_) => 8,
        }
    }
}

/// The API's error body: `{"error", "message", "details": [{"field", "message"}]}`.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    details: Vec<ErrorDetail>,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    field: String,
    #[serde(default)]
    message: String,
}

/// How often a rate-limited request is sent in all.
const RATE_LIMIT_ATTEMPTS: u32 = 4;
/// The longest the CLI waits on a `Retry-After` before sending again.
const MAX_RETRY_AFTER_SECS: u64 = 10;

/// A client of one Titus deployment.
#[derive(Debug, Clone)]
pub struct Client {
    base_url: String,
    auth: Auth,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base_url: &str, auth: Auth) -> Result<Client, CliError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| CliError::Unavailable(format!("cannot build an HTTP client: {e}")))?;
        Ok(Client {
            base_url: base_url.trim_end_matches('/').to_owned(),
            auth,
            http,
        })
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, CliError> {
        self.send(reqwest::Method::GET, path, query, None, &[])
            .await
    }

    pub async fn send<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        headers: &[(&str, String)],
    ) -> Result<T, CliError> {
        let mut url = reqwest::Url::parse(&format!("{}{}", self.base_url, path))
            .map_err(|e| CliError::Invalid(format!("bad API URL {:?}: {e}", self.base_url)))?;
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let body_bytes = body
            .map(|b| serde_json::to_vec(b).unwrap_or_default())
            .unwrap_or_default();
        let mut attempt = 1;
        loop {
            let mut request = self.http.request(method.clone(), url.clone());
            for (name, value) in headers {
                request = request.header(*name, value);
            }
            if body.is_some() {
                request = request
                    .header("content-type", "application/json")
                    .body(body_bytes.clone());
            }
            request = self.authorize(request, &method, &url, &body_bytes).await?;
            let response = request.send().await.map_err(|e| {
                CliError::Unavailable(format!(
                    "cannot reach the Titus API at {}: {e}",
                    self.base_url
                ))
            })?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let text = response
                .text()
                .await
                .map_err(|e| CliError::Unavailable(format!("reading the answer failed: {e}")))?;
            if status.is_success() {
                let text = if text.is_empty() { "null" } else { &text };
                return serde_json::from_str(text).map_err(|e| {
                    CliError::Unavailable(format!("the API answered with unexpected JSON: {e}"))
                });
            }
            // A rate-limited request was refused before anything happened: wait as told and
            // send it again, a few times. Over quota is not retried (it lasts).
            let rate_limited = status.as_u16() == 429
                && serde_json::from_str::<ErrorBody>(&text)
                    .is_ok_and(|b| b.error == "rate_limited");
            if rate_limited && attempt < RATE_LIMIT_ATTEMPTS {
                let wait = retry_after.unwrap_or(1).clamp(1, MAX_RETRY_AFTER_SECS);
                tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
                attempt += 1;
                continue;
            }
            return Err(error_for(status.as_u16(), &text));
        }
    }
}

/// An answer as the API gave it (for `titus ui`'s proxy).
#[derive(Debug, Clone)]
pub struct RawAnswer {
    pub status: u16,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Client {
    /// Sends a request as it came (its path and query under the API's URL, the given headers and
    /// body) with this client's authentication, and returns the answer as it is, whatever its
    /// status: no retries, no JSON.
    pub async fn forward(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> Result<RawAnswer, CliError> {
        let url = reqwest::Url::parse(&format!("{}{}", self.base_url, path_and_query))
            .map_err(|e| CliError::Invalid(format!("bad path {path_and_query:?}: {e}")))?;
        let mut request = self.http.request(method.clone(), url.clone());
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        request = self.authorize(request, &method, &url, &body).await?;
        let response = request.body(body).send().await.map_err(|e| {
            CliError::Unavailable(format!(
                "cannot reach the Titus API at {}: {e}",
                self.base_url
            ))
        })?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(name, value)| {
                Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
            })
            .collect();
        let body = response
            .bytes()
            .await
            .map_err(|e| CliError::Unavailable(format!("reading the answer failed: {e}")))?
            .to_vec();
        Ok(RawAnswer {
            status,
            headers,
            body,
        })
    }

    /// The request with this client's authentication: its bearer token, or its SigV4 headers.
    async fn authorize(
        &self,
        request: reqwest::RequestBuilder,
        method: &reqwest::Method,
        url: &reqwest::Url,
        body: &[u8],
    ) -> Result<reqwest::RequestBuilder, CliError> {
        Ok(match &self.auth {
            Auth::Bearer(token) => request.bearer_auth(token),
            Auth::SigV4 { region } => {
                let mut request = request;
                for (name, value) in sigv4_headers(method, url, body, region).await? {
                    request = request.header(name, value);
                }
                request
            }
        })
    }

    /// The API's URL, as the client was given it.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn auth(&self) -> &Auth {
        &self.auth
    }
}

fn error_for(status: u16, text: &str) -> CliError {
    let message = match serde_json::from_str::<ErrorBody>(text) {
        Ok(body) => {
            let mut message = format!("{}: {}", body.error, body.message);
            for detail in body.details {
                message.push_str(&format!("\n  {}: {}", detail.field, detail.message));
            }
            message
        }
        Err(_) => format!(
            "HTTP {status}: {}",
            text.chars().take(500).collect::<String>()
        ),
    };
    match status {
        400 | 413 | 415 | 422 => CliError::Invalid(message),
        401 | 403 | 429 => CliError::Denied(message),
        404 => CliError::NotFound(message),
        409 => CliError::Conflict(message),
        _ => CliError::Unavailable(message),
    }
}

/// Signs a request for API Gateway (`execute-api`) with the caller's AWS credentials.
async fn sigv4_headers(
    method: &reqwest::Method,
    url: &reqwest::Url,
    body: &[u8],
    region: &str,
) -> Result<Vec<(String, String)>, CliError> {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let provider = config
        .credentials_provider()
        .ok_or_else(|| CliError::Denied("no AWS credentials found for SigV4 signing".to_owned()))?;
    let credentials = provider
        .provide_credentials()
        .await
        .map_err(|e| CliError::Denied(format!("cannot load AWS credentials: {e}")))?;
    let identity = credentials.into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("execute-api")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| CliError::Invalid(format!("cannot sign the request: {e}")))?
        .into();
    let host = url.host_str().unwrap_or_default().to_owned();
    let headers = [("host", host.as_str())];
    let signable = SignableRequest::new(
        method.as_str(),
        url.as_str(),
        headers.into_iter(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| CliError::Invalid(format!("cannot sign the request: {e}")))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| CliError::Invalid(format!("cannot sign the request: {e}")))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_map_to_their_exit_codes() {
        let body = r#"{"error":"invalid_request","message":"job descriptor has 1 problem","details":[{"field":"container.resources.cpu","message":"must be between 0.1 and 96, got 500"}]}"#;
        let err = error_for(400, body);
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string()
                .contains("container.resources.cpu: must be between"),
            "{err}"
        );
        assert_eq!(error_for(404, "{}").exit_code(), 3);
        assert_eq!(error_for(409, "{}").exit_code(), 4);
        assert_eq!(error_for(403, "{}").exit_code(), 5);
        assert_eq!(error_for(502, "<html>").exit_code(), 6);
    }
}
