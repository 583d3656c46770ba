//! The agent's own AWS adapters: its settings from SSM (through the one loader) and ECR
//! credentials from the instance role, and its link to the control plane ([`AwsLink`]). Its
//! queues are `titus-aws`'s SQS adapters.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use futures::future::BoxFuture;
use titus_aws::ssm::read_parameters_by_path;
use titus_aws::{
    AwsClients, DynamoAgentStore, DynamoJobStore, Names, SqsAgentRequests, SqsDeadLetterQueue,
};
use titus_core::messages::{AgentRequest, Registration};
use titus_core::ports::{AgentRequestSink as _, DeadLetter, DeadLetterSink as _, QueueError};
use titus_core::{Agent, AgentHeartbeat, AgentStore as _, JobStore as _, StoreError, TaskId};
use tokio::time::{sleep, Instant};

use crate::config::{AgentSettings, ConfigError};
use crate::credentials::{AssumeError, RoleAssumer, RoleCredentials, SESSION_SECS};
use crate::ports::{ControlPlaneLink, LinkError, Placement};
use crate::runtime::RegistryCredentials;
use crate::time::now_ms;

/// Reads the agent's settings from the stage's parameters, with the one SSM loader. A stage whose
/// parameter is missing (not provisioned) gets the defaults; a parameter that does not parse, or
/// another parameter under the agent's path, fails.
pub async fn load_settings(
    ssm: &aws_sdk_ssm::Client,
    names: &Names,
) -> Result<AgentSettings, ConfigError> {
    let path = names.agent_parameter_path();
    let expected = names.agent_config_parameter();
    let values =
        read_parameters_by_path(ssm, &path)
            .await
            .map_err(|e| ConfigError::Unreadable {
                path: path.clone(),
                message: e.to_string(),
            })?;
    let mut settings = None;
    for (name, value) in values {
        if name != expected {
            return Err(ConfigError::Parameter {
                parameter: name,
                message: format!("unknown agent parameter; expected only {expected}"),
            });
        }
        settings = Some(AgentSettings::from_parameter(&name, &value)?);
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

/// The ECR registry of an image, if it is in one: its host must be exactly
/// `{12 digits}.dkr.ecr[-fips].{region}.amazonaws.com` (or `.amazonaws.com.cn`), so that the
/// instance role's ECR token goes to ECR alone and never to a look-alike host.
pub fn ecr_registry(image: &str) -> Option<EcrRegistry> {
    let host = image.split('/').next()?;
    if !image.contains('/') {
        return None;
    }
    let parts: Vec<&str> = host.split('.').collect();
    let (account_id, dkr, ecr, region, suffix) = match parts.as_slice() {
        [account, dkr, ecr, region, suffix @ ..] => (*account, *dkr, *ecr, *region, suffix),
        _ => return None,
    };
    let is_region = {
        let mut pieces = region.split('-');
        let first = pieces.next().unwrap_or_default();
        let rest: Vec<&str> = pieces.collect();
        first.len() == 2
            && first.bytes().all(|b| b.is_ascii_lowercase())
            && rest.len() >= 2
            && rest
                .last()
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            && rest[..rest.len() - 1]
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
    };
    let is_ecr = account_id.len() == 12
        && account_id.bytes().all(|b| b.is_ascii_digit())
        && dkr == "dkr"
        && (ecr == "ecr" || ecr == "ecr-fips")
        && is_region
        && (suffix == ["amazonaws", "com"] || suffix == ["amazonaws", "com", "cn"]);
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

/// Task roles through STS, with the agent's own credentials (the instance role).
#[derive(Debug)]
pub struct StsRoles {
    client: aws_sdk_sts::Client,
    /// The agent's partition and account, for roles given by name.
    own_account: tokio::sync::OnceCell<(String, String)>,
}

impl StsRoles {
    pub fn new(sdk_config: &aws_config::SdkConfig) -> StsRoles {
        StsRoles {
            client: aws_sdk_sts::Client::new(sdk_config),
            own_account: tokio::sync::OnceCell::new(),
        }
    }

    /// `role` as an ARN: as given, or a name in the agent's own account.
    async fn role_arn(&self, role: &str) -> Result<String, AssumeError> {
        if role.starts_with("arn:") {
            return Ok(role.to_owned());
        }
        let (partition, account) = self
            .own_account
            .get_or_try_init(|| async {
                let identity = self
                    .client
                    .get_caller_identity()
                    .send()
                    .await
                    .map_err(|e| AssumeError::Unavailable {
                        role: role.to_owned(),
                        message: format!(
                            "the agent's own account is needed for a role given by name, and \
                             GetCallerIdentity failed: {}",
                            aws_sdk_sts::error::DisplayErrorContext(&e)
                        ),
                    })?;
                let arn = identity.arn().unwrap_or_default();
                let mut parts = arn.split(':');
                let partition = parts.nth(1).unwrap_or("aws").to_owned();
                let account = identity.account().unwrap_or_default().to_owned();
                Ok::<_, AssumeError>((partition, account))
            })
            .await?;
        Ok(format!("arn:{partition}:iam::{account}:role/{role}"))
    }
}

impl RoleAssumer for StsRoles {
    fn assume<'a>(
        &'a self,
        role: &'a str,
        session_name: &'a str,
    ) -> BoxFuture<'a, Result<RoleCredentials, AssumeError>> {
        Box::pin(async move {
            let role_arn = self.role_arn(role).await?;
            let answer = self
                .client
                .assume_role()
                .role_arn(&role_arn)
                .role_session_name(session_name)
                .duration_seconds(SESSION_SECS)
                .send()
                .await
                .map_err(|e| {
                    let message = aws_sdk_sts::error::DisplayErrorContext(&e).to_string();
                    let refused = e.as_service_error().is_some_and(|service| {
                        use aws_sdk_sts::error::ProvideErrorMetadata as _;
                        matches!(
                            service.code(),
                            Some(
                                "AccessDenied"
                                    | "NoSuchEntity"
                                    | "ValidationError"
                                    | "MalformedPolicyDocument"
                                    | "RegionDisabledException"
                            )
                        )
                    });
                    if refused {
                        AssumeError::Refused {
                            role: role_arn.clone(),
                            message,
                        }
                    } else {
                        AssumeError::Unavailable {
                            role: role_arn.clone(),
                            message,
                        }
                    }
                })?;
            let credentials = answer
                .credentials()
                .ok_or_else(|| AssumeError::Unavailable {
                    role: role_arn.clone(),
                    message: "STS answered without credentials".to_owned(),
                })?;
            Ok(RoleCredentials {
                access_key_id: credentials.access_key_id().to_owned(),
                secret_access_key: credentials.secret_access_key().to_owned(),
                session_token: credentials.session_token().to_owned(),
                expiration_ms: u64::try_from(credentials.expiration().to_millis().unwrap_or(0))
                    .unwrap_or(0),
                role_arn,
            })
        })
    }
}

/// How often the agents table is read while a registration is waited for.
const REGISTRATION_POLL: Duration = Duration::from_millis(250);

/// The agent's link to the control plane on AWS: requests on the stage's registrations queue,
/// its record and heartbeats in the agents table, placements read from the tasks table, and its
/// own dead-letter queue.
#[derive(Debug, Clone)]
pub struct AwsLink {
    pub agents: DynamoAgentStore,
    pub tasks: DynamoJobStore,
    pub requests: SqsAgentRequests,
    pub dead_letters: SqsDeadLetterQueue,
    /// How long a registration is waited for before it is asked for again.
    pub registration_wait: Duration,
}

impl AwsLink {
    pub fn for_agent(
        clients: &AwsClients,
        names: &Names,
        agent_id: &str,
        registration_wait: Duration,
    ) -> AwsLink {
        let dead_letters = names
            .agent_queue_def(agent_id)
            .dead_letter
            .map(|dlq| dlq.name)
            .unwrap_or_else(|| format!("{}-dlq", names.agent_queue(agent_id)));
        AwsLink {
            agents: DynamoAgentStore::new(clients.dynamodb.clone(), names),
            tasks: DynamoJobStore::new(clients.dynamodb.clone(), names),
            requests: SqsAgentRequests::for_stage(clients.sqs.clone(), names),
            dead_letters: SqsDeadLetterQueue::named(clients.sqs.clone(), dead_letters),
            registration_wait,
        }
    }
}

impl ControlPlaneLink for AwsLink {
    async fn register(&self, registration: &Registration) -> Result<Agent, LinkError> {
        self.requests
            .send(&AgentRequest::Register(registration.clone()))
            .await?;
        let started = Instant::now();
        loop {
            if let Some(record) = self.agents.get_agent(&registration.agent_id).await? {
                if record.registration_id == registration.registration_id {
                    return Ok(record);
                }
            }
            if started.elapsed() >= self.registration_wait {
                return Err(LinkError::NotRegistered {
                    agent_id: registration.agent_id.clone(),
                    registration_id: registration.registration_id.clone(),
                    waited_secs: self.registration_wait.as_secs(),
                });
            }
            sleep(REGISTRATION_POLL).await;
        }
    }

    async fn request_drain(&self, agent_id: &str) -> Result<(), LinkError> {
        self.requests
            .send(&AgentRequest::Drain {
                agent_id: agent_id.to_owned(),
            })
            .await?;
        Ok(())
    }

    async fn request_deregister(&self, agent_id: &str) -> Result<(), LinkError> {
        self.requests
            .send(&AgentRequest::Deregister {
                agent_id: agent_id.to_owned(),
            })
            .await?;
        Ok(())
    }

    async fn heartbeat(
        &self,
        agent_id: &str,
        report: &AgentHeartbeat,
    ) -> Result<Agent, StoreError> {
        self.agents.report_heartbeat(agent_id, report).await
    }

    async fn placement(&self, task_id: &TaskId) -> Result<Option<Placement>, StoreError> {
        Ok(self.tasks.get_task(task_id).await?.map(|task| Placement {
            state: task.state(),
            agent_id: task.agent_id,
            incarnation: task.agent_incarnation,
        }))
    }

    async fn dead_letter(&self, letter: &DeadLetter) -> Result<(), QueueError> {
        self.dead_letters.send(letter).await
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
        // Look-alike hosts get no ECR token.
        for host in [
            "123456789012.dkr.ecr.us-east-1.amazonaws.com.evil.example",
            "123456789012.dkr.ecr.us-east-1.amazonaws.community",
            "123456789012.dkr.ecrx.us-east-1.amazonaws.com",
            "123456789012.dkr.ecr.evil.amazonaws.com",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com:443",
            "1234567890123.dkr.ecr.us-east-1.amazonaws.com",
            "x.123456789012.dkr.ecr.us-east-1.amazonaws.com",
        ] {
            assert_eq!(ecr_registry(&format!("{host}/app:1")), None, "{host}");
        }
        assert_eq!(
            ecr_registry("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/app:1")
                .map(|r| r.region),
            Some("cn-north-1".to_owned())
        );
        assert_eq!(
            ecr_registry("123456789012.dkr.ecr.us-gov-west-1.amazonaws.com/app:1")
                .map(|r| r.region),
            Some("us-gov-west-1".to_owned())
        );
        assert_eq!(ecr_registry("docker.io/library/busybox"), None);
        assert_eq!(ecr_registry("titus-test/busybox:1"), None);
    }
}
