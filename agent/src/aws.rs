//! The agent's AWS adapters: its command queue and the status queue on SQS, its settings in SSM,
//! and ECR credentials from the instance role.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_sqs::types::{MessageSystemAttributeName, SendMessageBatchRequestEntry};
use base64::Engine as _;
use futures::future::BoxFuture;
use titus_aws::sqs::queue_error;
use titus_aws::Names;
use titus_core::messages::{QueueError, TaskStatusUpdate};

use crate::config::{AgentSettings, ConfigError};
use crate::ports::{CommandSource, ReceivedMessage, StatusSink};
use crate::runtime::RegistryCredentials;
use crate::time::now_ms;

/// The agent's own queue on SQS.
#[derive(Debug, Clone)]
pub struct SqsCommandSource {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsCommandSource {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: String) -> SqsCommandSource {
        SqsCommandSource { client, queue_url }
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }
}

impl CommandSource for SqsCommandSource {
    async fn receive(&self, max: u32, wait: Duration) -> Result<Vec<ReceivedMessage>, QueueError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| queue_error(&self.queue_url, e))?;
        Ok(out
            .messages()
            .iter()
            .map(|m| ReceivedMessage {
                body: m.body().unwrap_or_default().to_owned(),
                receipt: m.receipt_handle().unwrap_or_default().to_owned(),
                receive_count: m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1),
            })
            .collect())
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| queue_error(&self.queue_url, e))?;
        Ok(())
    }

    async fn release(&self, receipt: &str) -> Result<(), QueueError> {
        self.extend(receipt, Duration::ZERO).await
    }

    async fn extend(&self, receipt: &str, hidden_for: Duration) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(hidden_for.as_secs().min(43_200) as i32)
            .send()
            .await
            .map_err(|e| queue_error(&self.queue_url, e))?;
        Ok(())
    }
}

/// The stage's status queue on SQS.
#[derive(Debug, Clone)]
pub struct SqsStatusSink {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsStatusSink {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: String) -> SqsStatusSink {
        SqsStatusSink { client, queue_url }
    }

    /// The sink for the stage's status queue, which provisioning created.
    pub async fn for_stage(
        client: aws_sdk_sqs::Client,
        names: &Names,
    ) -> Result<SqsStatusSink, QueueError> {
        let name = names.status_queue();
        let out = client
            .get_queue_url()
            .queue_name(&name)
            .send()
            .await
            .map_err(|e| queue_error(&name, e))?;
        let queue_url = out
            .queue_url()
            .ok_or_else(|| QueueError::NoSuchQueue(name.clone()))?
            .to_owned();
        Ok(SqsStatusSink::new(client, queue_url))
    }
}

impl StatusSink for SqsStatusSink {
    async fn send(&self, updates: &[TaskStatusUpdate]) -> Result<Vec<bool>, QueueError> {
        let mut entries = Vec::with_capacity(updates.len());
        for (i, update) in updates.iter().enumerate() {
            let body = serde_json::to_string(update)
                .map_err(|e| QueueError::Internal(format!("cannot encode status update: {e}")))?;
            entries.push(
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body)
                    .build()
                    .map_err(|e| QueueError::Internal(e.to_string()))?,
            );
        }
        let out = self
            .client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| queue_error(&self.queue_url, e))?;
        let mut accepted = vec![true; updates.len()];
        for failed in out.failed() {
            if let Some(slot) = failed
                .id()
                .parse::<usize>()
                .ok()
                .and_then(|i| accepted.get_mut(i))
            {
                *slot = false;
            }
        }
        Ok(accepted)
    }
}

/// Reads the agent's settings from the stage's parameters. A stage whose parameter is missing
/// (not provisioned) gets the defaults; a parameter that does not parse fails.
pub async fn load_settings(
    ssm: &aws_sdk_ssm::Client,
    names: &Names,
) -> Result<AgentSettings, ConfigError> {
    let path = names.agent_parameter_path();
    let expected = names.agent_config_parameter();
    let mut settings = None;
    let mut next_token = None;
    loop {
        let out = ssm
            .get_parameters_by_path()
            .path(&path)
            .recursive(true)
            .set_next_token(next_token)
            .send()
            .await
            .map_err(|e| ConfigError::Unreadable {
                path: path.clone(),
                message: aws_sdk_ssm::error::DisplayErrorContext(&e).to_string(),
            })?;
        for parameter in out.parameters() {
            let name = parameter.name().unwrap_or_default();
            if name != expected {
                return Err(ConfigError::Parameter {
                    parameter: name.to_owned(),
                    message: format!("unknown agent parameter; expected only {expected}"),
                });
            }
            settings = Some(AgentSettings::from_parameter(
                name,
                parameter.value().unwrap_or_default(),
            )?);
        }
        next_token = out.next_token().map(str::to_owned);
        if next_token.is_none() {
            break;
        }
    }
    Ok(settings.unwrap_or_else(|| {
        tracing::warn!(parameter = %expected, "agent parameter not found; using the built-in defaults");
        AgentSettings::default()
    }))
}

/// Finds credentials for pulling an image.
pub trait RegistryAuth: Send + Sync + std::fmt::Debug + 'static {
    /// Credentials for the image's registry, or `None` when it needs none.
    fn credentials_for<'a>(
        &'a self,
        image: &'a str,
    ) -> BoxFuture<'a, Result<Option<RegistryCredentials>, String>>;
}

/// For registries that need no credentials (and for tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRegistryAuth;

impl RegistryAuth for NoRegistryAuth {
    fn credentials_for<'a>(
        &'a self,
        _image: &'a str,
    ) -> BoxFuture<'a, Result<Option<RegistryCredentials>, String>> {
        Box::pin(async { Ok(None) })
    }
}

/// An ECR registry an image lives in: `{account}.dkr.ecr.{region}.amazonaws.com/...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcrRegistry {
    pub host: String,
    pub account_id: String,
    pub region: String,
}

/// The ECR registry of an image, if it is in one.
pub fn ecr_registry(image: &str) -> Option<EcrRegistry> {
    let host = image.split('/').next()?;
    if !image.contains('/') {
        return None;
    }
    let mut parts = host.split('.');
    let account_id = parts.next()?;
    let (dkr, ecr, region) = (parts.next()?, parts.next()?, parts.next()?);
    let rest: Vec<&str> = parts.collect();
    let is_ecr = account_id.len() == 12
        && account_id.bytes().all(|b| b.is_ascii_digit())
        && dkr == "dkr"
        && ecr.starts_with("ecr")
        && rest.first() == Some(&"amazonaws");
    is_ecr.then(|| EcrRegistry {
        host: host.to_owned(),
        account_id: account_id.to_owned(),
        region: region.to_owned(),
    })
}

/// ECR credentials from the instance role (`GetAuthorizationToken`), cached until shortly
/// before they expire (ECR's tokens last 12 hours).
#[derive(Debug)]
pub struct EcrAuth {
    sdk_config: aws_config::SdkConfig,
    cache: Mutex<HashMap<String, (RegistryCredentials, u64)>>,
}

impl EcrAuth {
    pub fn new(sdk_config: aws_config::SdkConfig) -> EcrAuth {
        EcrAuth {
            sdk_config,
            cache: Mutex::new(HashMap::new()),
        }
    }

    async fn fetch(&self, registry: &EcrRegistry) -> Result<(RegistryCredentials, u64), String> {
        let config = aws_sdk_ecr::config::Builder::from(&self.sdk_config)
            .region(aws_sdk_ecr::config::Region::new(registry.region.clone()))
            .build();
        let client = aws_sdk_ecr::Client::from_conf(config);
        #[allow(deprecated)] // registryIds is deprecated, but names the account across accounts
        let out = client
            .get_authorization_token()
            .registry_ids(&registry.account_id)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "ECR GetAuthorizationToken for {}: {}",
                    registry.host,
                    aws_sdk_ecr::error::DisplayErrorContext(&e)
                )
            })?;
        let data = out
            .authorization_data()
            .first()
            .ok_or_else(|| format!("ECR returned no authorization data for {}", registry.host))?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(data.authorization_token().unwrap_or_default())
            .map_err(|e| format!("ECR authorization token is not base64: {e}"))?;
        let decoded = String::from_utf8_lossy(&decoded);
        let (username, password) = decoded
            .split_once(':')
            .ok_or("ECR authorization token is not user:password")?;
        // Refresh an hour early; without an expiry, after an hour.
        let expires_ms = data
            .expires_at()
            .and_then(|t| u64::try_from(t.to_millis().ok()?).ok())
            .map(|ms| ms.saturating_sub(3_600_000))
            .unwrap_or_else(|| now_ms() + 3_600_000);
        let server = data
            .proxy_endpoint()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("https://{}", registry.host));
        Ok((
            RegistryCredentials {
                server,
                username: username.to_owned(),
                password: password.to_owned(),
            },
            expires_ms,
        ))
    }
}

impl RegistryAuth for EcrAuth {
    fn credentials_for<'a>(
        &'a self,
        image: &'a str,
    ) -> BoxFuture<'a, Result<Option<RegistryCredentials>, String>> {
        Box::pin(async move {
            let Some(registry) = ecr_registry(image) else {
                return Ok(None);
            };
            let cached = self
                .cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&registry.host)
                .filter(|(_, expires_ms)| *expires_ms > now_ms())
                .map(|(credentials, _)| credentials.clone());
            if let Some(credentials) = cached {
                return Ok(Some(credentials));
            }
            let (credentials, expires_ms) = self.fetch(&registry).await?;
            self.cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(registry.host.clone(), (credentials.clone(), expires_ms));
            Ok(Some(credentials))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecr_images_are_recognised() {
        assert_eq!(
            ecr_registry("123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/app:1"),
            Some(EcrRegistry {
                host: "123456789012.dkr.ecr.eu-west-1.amazonaws.com".to_owned(),
                account_id: "123456789012".to_owned(),
                region: "eu-west-1".to_owned(),
            })
        );
        assert_eq!(
            ecr_registry("123456789012.dkr.ecr-fips.us-east-1.amazonaws.com/app").map(|r| r.region),
            Some("us-east-1".to_owned())
        );
        assert_eq!(ecr_registry("busybox:1"), None);
        assert_eq!(ecr_registry("docker.io/library/busybox"), None);
        assert_eq!(ecr_registry("titus-test/busybox:1"), None);
    }
}
