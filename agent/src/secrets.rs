//! Secrets by reference, resolved when a task is launched: the values of a job's
//! `container.secrets` are read from SSM Parameter Store or Secrets Manager and put into the
//! container's environment, and nowhere else (not in a status, a label or a log line).
//!
//! Whose credentials read them:
//! - a task with an IAM role: the role's (the credentials the task itself gets), so a task reads
//!   exactly what its role may read;
//! - a task without one: the agent's own (the instance role), and then only a secret in the
//!   stage's shared space, SSM parameters under `/titus/{stage}/secrets/` and Secrets Manager
//!   secrets named `titus/{stage}/secrets/…`. The agent refuses any other reference from a
//!   roleless task, and the CDK app grants the agent's role just those (see infra/README).

use futures::future::BoxFuture;
pub use titus_core::secrets::{shared_prefixes, shared_with_roleless_tasks};
use titus_core::secrets::{SecretRef, SecretSource};

use crate::credentials::RoleCredentials;

/// Why a secret could not be had. Messages name the reference, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// Not a reference, not allowed to this task, not found, or access denied: the job must
    /// change; another try cannot help.
    #[error("{0}")]
    Refused(String),
    /// The service could not be reached or failed: another try may work.
    #[error("{0}")]
    Unavailable(String),
}

/// Reads secrets' values (`AwsSecrets` for real).
pub trait SecretResolver: Send + Sync + std::fmt::Debug + 'static {
    /// The value of `reference`, read with `role`'s credentials when the task has a role, else
    /// with the agent's own.
    fn resolve<'a>(
        &'a self,
        reference: &'a SecretRef,
        role: Option<&'a RoleCredentials>,
    ) -> BoxFuture<'a, Result<String, SecretError>>;
}

/// SSM and Secrets Manager through the SDK.
#[derive(Debug)]
pub struct AwsSecrets {
    sdk_config: aws_config::SdkConfig,
}

impl AwsSecrets {
    /// Reads with the agent's credentials from `sdk_config`, or a task's role's.
    pub fn new(sdk_config: aws_config::SdkConfig) -> AwsSecrets {
        AwsSecrets { sdk_config }
    }

    /// The configuration for a call in `region`, with the role's credentials when given.
    fn config_for(&self, region: &str, role: Option<&RoleCredentials>) -> aws_config::SdkConfig {
        let mut builder = self
            .sdk_config
            .to_builder()
            .region(aws_config::Region::new(region.to_owned()));
        if let Some(role) = role {
            let expiry =
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(role.expiration_ms);
            let credentials = aws_credential_types::Credentials::new(
                role.access_key_id.clone(),
                role.secret_access_key.clone(),
                Some(role.session_token.clone()),
                Some(expiry),
                "titus-task-role",
            );
            builder = builder.credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(credentials),
            );
        }
        builder.build()
    }
}

/// The error codes that mean the job, not the moment, is wrong.
const REFUSED_CODES: &[&str] = &[
    "AccessDeniedException",
    "AccessDenied",
    "ParameterNotFound",
    "ParameterVersionNotFound",
    "ResourceNotFoundException",
    "InvalidRequestException",
    "InvalidParameterException",
    "DecryptionFailure",
    "InvalidKeyId",
    "ValidationException",
    "UnrecognizedClientException",
];

fn classify<E, R>(arn: &str, error: aws_sdk_ssm::error::SdkError<E, R>) -> SecretError
where
    E: aws_sdk_ssm::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    use aws_sdk_ssm::error::ProvideErrorMetadata as _;
    let code = error.code().map(str::to_owned);
    let message = format!(
        "reading secret {arn} failed: {}",
        aws_sdk_ssm::error::DisplayErrorContext(&error)
    );
    match code.as_deref() {
        Some(code) if REFUSED_CODES.contains(&code) => SecretError::Refused(message),
        _ => SecretError::Unavailable(message),
    }
}

impl SecretResolver for AwsSecrets {
    fn resolve<'a>(
        &'a self,
        reference: &'a SecretRef,
        role: Option<&'a RoleCredentials>,
    ) -> BoxFuture<'a, Result<String, SecretError>> {
        Box::pin(async move {
            let config = self.config_for(&reference.region, role);
            match reference.source {
                SecretSource::SsmParameter => {
                    let client = aws_sdk_ssm::Client::new(&config);
                    let answer = client
                        .get_parameter()
                        .name(&reference.arn)
                        .with_decryption(true)
                        .send()
                        .await
                        .map_err(|e| classify(&reference.arn, e))?;
                    answer
                        .parameter()
                        .and_then(|p| p.value())
                        .map(str::to_owned)
                        .ok_or_else(|| {
                            SecretError::Unavailable(format!(
                                "SSM answered no value for {}",
                                reference.arn
                            ))
                        })
                }
                SecretSource::SecretsManager => {
                    let client = aws_sdk_secretsmanager::Client::new(&config);
                    let answer = client
                        .get_secret_value()
                        .secret_id(&reference.arn)
                        .send()
                        .await
                        .map_err(|e| classify(&reference.arn, e))?;
                    answer.secret_string().map(str::to_owned).ok_or_else(|| {
                        SecretError::Refused(format!(
                            "secret {} holds binary data, not a string; expected a \
                             SecretString an environment variable can hold",
                            reference.arn
                        ))
                    })
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roleless_tasks_reach_only_the_stages_shared_secrets() {
        let ours =
            SecretRef::parse("arn:aws:ssm:us-east-1:123456789012:parameter/titus/dev/secrets/db")
                .unwrap();
        let other_stage =
            SecretRef::parse("arn:aws:ssm:us-east-1:123456789012:parameter/titus/prod/secrets/db")
                .unwrap();
        let outside =
            SecretRef::parse("arn:aws:ssm:us-east-1:123456789012:parameter/app/db").unwrap();
        let secret = SecretRef::parse(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:titus/dev/secrets/api-AbCdEf",
        )
        .unwrap();
        let lookalike = SecretRef::parse(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:titus/dev/secretsx-AbCdEf",
        )
        .unwrap();
        assert!(shared_with_roleless_tasks(&ours, "dev"));
        assert!(!shared_with_roleless_tasks(&other_stage, "dev"));
        assert!(!shared_with_roleless_tasks(&outside, "dev"));
        assert!(shared_with_roleless_tasks(&secret, "dev"));
        assert!(!shared_with_roleless_tasks(&lookalike, "dev"));
    }
}
