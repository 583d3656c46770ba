//! Builds the SDK clients once per process, from the standard AWS configuration chain.

use aws_config::{BehaviorVersion, SdkConfig};

/// The SDK clients the functions and the agent need. Cheap to clone: clients share one
/// connection pool.
#[derive(Debug, Clone)]
pub struct AwsClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub ec2: aws_sdk_ec2::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
}

impl AwsClients {
    /// Reads region, credentials and endpoint the standard way. `AWS_ENDPOINT_URL` points every
    /// client at the local emulator.
    pub async fn from_env() -> AwsClients {
        Self::from_config(&load_sdk_config().await)
    }

    /// The clients of the local emulator, for tests and local tools. Panics, saying what to
    /// do, unless `AWS_ENDPOINT_URL` points at loopback: nothing that calls this may reach an
    /// AWS account.
    pub async fn local_emulator() -> AwsClients {
        Self::from_config(&local_emulator_config().await)
    }

    pub fn from_config(config: &SdkConfig) -> AwsClients {
        AwsClients {
            dynamodb: aws_sdk_dynamodb::Client::new(config),
            sqs: aws_sdk_sqs::Client::new(config),
            ssm: aws_sdk_ssm::Client::new(config),
            ec2: aws_sdk_ec2::Client::new(config),
            logs: aws_sdk_cloudwatchlogs::Client::new(config),
        }
    }
}

/// The shared SDK configuration from the environment, profile and instance role.
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// [`load_sdk_config`] for the local emulator only: panics unless `AWS_ENDPOINT_URL` is an
/// `http://` loopback address (see [`AwsClients::local_emulator`]).
pub async fn local_emulator_config() -> SdkConfig {
    local_emulator_endpoint();
    load_sdk_config().await
}

/// `AWS_ENDPOINT_URL`, which must be an `http://` loopback address: the local emulator's. Panics
/// otherwise, so that a test or benchmark never reaches AWS.
pub fn local_emulator_endpoint() -> String {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    assert!(
        endpoint.starts_with("http://127.0.0.1") || endpoint.starts_with("http://localhost"),
        "this needs AWS_ENDPOINT_URL pointing at the local emulator (got {endpoint:?}); \
         run the tests through scripts/test.sh, which starts it"
    );
    endpoint
}
