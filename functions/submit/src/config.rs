//! The submit function's configuration: one typed struct, read once at start from the environment
//! (the stage) and SSM, failing fast with the name of the parameter that is wrong.

use titus_aws::parameters::{get_parameters, ParameterError};
use titus_aws::Names;
use titus_control::JobPolicy;
use titus_core::Limits;

use crate::Admission;

#[derive(Debug, Clone, PartialEq)]
pub struct SubmitConfig {
    pub stage: String,
    pub admission: Admission,
    /// Where refused messages go, with their errors.
    pub rejected_queue_url: String,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("stage {0}")]
    Stage(String),
    #[error(transparent)]
    Parameters(#[from] ParameterError),
    #[error("SSM parameter {parameter} is invalid: {message}; expected {expected}")]
    Invalid {
        parameter: String,
        message: String,
        expected: &'static str,
    },
    #[error("the rejection queue {queue} cannot be found: {message}; expected it provisioned (titus-provision)")]
    RejectionQueue { queue: String, message: String },
}

impl SubmitConfig {
    pub async fn load(
        ssm: &aws_sdk_ssm::Client,
        sqs: &aws_sdk_sqs::Client,
        stage: &str,
    ) -> Result<SubmitConfig, ConfigError> {
        let names = Names::new(stage).map_err(ConfigError::Stage)?;
        let limits_name = names.job_limits_parameter();
        let policy_name = names.job_policy_parameter();
        let values = get_parameters(ssm, &[limits_name.clone(), policy_name.clone()]).await?;
        let limits: Limits = parse(
            &values,
            &limits_name,
            "a JSON object of job limits in camelCase",
        )?;
        let policy: JobPolicy = parse(
            &values,
            &policy_name,
            "a JSON object with allowPrivileged, allowHostNetwork, allowHostMounts and registries",
        )?;
        let queue = names.submit_rejected_queue();
        let rejected_queue_url = sqs
            .get_queue_url()
            .queue_name(&queue)
            .send()
            .await
            .map_err(|e| ConfigError::RejectionQueue {
                queue: queue.clone(),
                message: aws_sdk_sqs::error::DisplayErrorContext(e).to_string(),
            })?
            .queue_url
            .unwrap_or_default();
        Ok(SubmitConfig {
            stage: stage.to_owned(),
            admission: Admission { limits, policy },
            rejected_queue_url,
        })
    }
}

fn parse<T: serde::de::DeserializeOwned>(
    values: &std::collections::BTreeMap<String, String>,
    parameter: &str,
    expected: &'static str,
) -> Result<T, ConfigError> {
    let text = values
        .get(parameter)
        .ok_or_else(|| ParameterError::Missing {
            names: vec![parameter.to_owned()],
        })?;
    serde_json::from_str(text).map_err(|e| ConfigError::Invalid {
        parameter: parameter.to_owned(),
        message: e.to_string(),
        expected,
    })
}
