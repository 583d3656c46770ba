//! The API's configuration: one typed struct, read once at start from the environment (the stage)
//! and SSM (`/titus/{stage}/...`), failing fast with the name of the parameter that is wrong.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use titus_aws::parameters::{get_parameters, ParameterError};
use titus_aws::Names;
use titus_control::JobPolicy;
use titus_core::Limits;

/// Everything the API needs to know besides its clients.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiConfig {
    pub stage: String,
    /// Local bearer tokens, by their SHA-256 (so a lookup's timing tells nothing about a token),
    /// to the identity they stand for.
    token_identities: BTreeMap<[u8; 32], String>,
    /// Identities that may kill or change any job.
    pub admins: BTreeSet<String>,
    /// What jobs may ask of their hosts.
    pub policy: JobPolicy,
    /// Limits every job descriptor is validated against.
    pub limits: Limits,
}

/// Why the configuration could not be loaded.
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
}

impl ApiConfig {
    /// Reads the stage's parameters from SSM.
    pub async fn load(ssm: &aws_sdk_ssm::Client, stage: &str) -> Result<ApiConfig, ConfigError> {
        let names = Names::new(stage).map_err(ConfigError::Stage)?;
        let wanted = [
            names.job_limits_parameter(),
            names.job_policy_parameter(),
            names.api_identities_parameter(),
            names.api_admins_parameter(),
        ];
        let values = get_parameters(ssm, &wanted).await?;
        ApiConfig::from_parameters(&names, &values)
    }

    /// Builds the configuration from parameter values by name (as SSM returns them).
    pub fn from_parameters(
        names: &Names,
        values: &BTreeMap<String, String>,
    ) -> Result<ApiConfig, ConfigError> {
        let limits: Limits = parse(
            values,
            &names.job_limits_parameter(),
            "a JSON object of job limits in camelCase (see Limits)",
        )?;
        let policy: JobPolicy = parse(
            values,
            &names.job_policy_parameter(),
            "a JSON object with allowPrivileged, allowHostNetwork, allowHostMounts and registries",
        )?;
        let identities_parameter = names.api_identities_parameter();
        let identities: BTreeMap<String, String> = parse(
            values,
            &identities_parameter,
            "a JSON object of bearer token to caller identity",
        )?;
        let admins: BTreeSet<String> = parse(
            values,
            &names.api_admins_parameter(),
            "a JSON array of identities",
        )?;
        if let Some((token, identity)) = identities
            .iter()
            .find(|(token, identity)| token.trim().is_empty() || identity.trim().is_empty())
        {
            let what = if token.trim().is_empty() {
                "a token is empty".to_owned()
            } else {
                format!("the identity of a token is empty ({identity:?})")
            };
            return Err(ConfigError::Invalid {
                parameter: identities_parameter,
                message: what,
                expected: "non-empty tokens and identities",
            });
        }
        Ok(ApiConfig {
            stage: names.stage().to_owned(),
            token_identities: identities
                .into_iter()
                .map(|(token, identity)| (token_digest(&token), identity))
                .collect(),
            admins,
            policy,
            limits,
        })
    }

    /// A configuration for tests and tools: the given tokens and admins, default policy and limits.
    pub fn with_tokens(stage: &str, tokens: &[(&str, &str)], admins: &[&str]) -> ApiConfig {
        ApiConfig {
            stage: stage.to_owned(),
            token_identities: tokens
                .iter()
                .map(|(token, identity)| (token_digest(token), (*identity).to_owned()))
                .collect(),
            admins: admins.iter().map(|a| (*a).to_owned()).collect(),
            policy: JobPolicy::default(),
            limits: Limits::default(),
        }
    }

    /// The identity a bearer token stands for.
    pub fn identity_of_token(&self, token: &str) -> Option<&str> {
        self.token_identities
            .get(&token_digest(token))
            .map(String::as_str)
    }

    pub fn is_admin(&self, identity: &str) -> bool {
        self.admins.contains(identity)
    }
}

fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn parse<T: DeserializeOwned>(
    values: &BTreeMap<String, String>,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults(names: &Names) -> BTreeMap<String, String> {
        names
            .definitions()
            .parameters
            .into_iter()
            .map(|p| (p.name, p.default_value))
            .collect()
    }

    #[test]
    fn the_provisioned_defaults_are_a_valid_configuration() {
        let names = Names::new("unit").unwrap();

        let config = ApiConfig::from_parameters(&names, &defaults(&names)).unwrap();

        assert_eq!(
            config.identity_of_token("local-dev-token"),
            Some("dev@titus.local")
        );
        assert_eq!(config.identity_of_token("wrong"), None);
        assert!(config.is_admin("admin@titus.local"));
        assert!(!config.is_admin("dev@titus.local"));
        assert_eq!(config.policy, JobPolicy::default());
        assert_eq!(config.limits, Limits::default());
    }

    #[test]
    fn an_invalid_parameter_is_named_in_the_error() {
        let names = Names::new("unit").unwrap();
        let mut values = defaults(&names);
        values.insert(
            names.job_policy_parameter(),
            r#"{"allowRoot": true}"#.to_owned(),
        );

        let err = ApiConfig::from_parameters(&names, &values).unwrap_err();

        let text = err.to_string();
        assert!(text.contains("/titus/unit/policy/jobs"), "{text}");
        assert!(text.contains("allowRoot"), "{text}");
    }

    #[test]
    fn a_missing_parameter_is_named_in_the_error() {
        let names = Names::new("unit").unwrap();
        let mut values = defaults(&names);
        values.remove(&names.api_admins_parameter());

        let err = ApiConfig::from_parameters(&names, &values).unwrap_err();

        assert!(err.to_string().contains("/titus/unit/api/admins"), "{err}");
    }

    #[test]
    fn an_empty_token_is_refused() {
        let names = Names::new("unit").unwrap();
        let mut values = defaults(&names);
        values.insert(
            names.api_identities_parameter(),
            r#"{"": "someone"}"#.to_owned(),
        );

        let err = ApiConfig::from_parameters(&names, &values).unwrap_err();

        assert!(err.to_string().contains("a token is empty"), "{err}");
    }
}
