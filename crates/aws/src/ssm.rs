//! The one SSM Parameter Store loader: a binary reads its parameters at cold start (by name with
//! [`get_parameters`], or everything under a path with [`read_parameters_by_path`]), a warm one
//! keeps them for a short while ([`ParameterCache`]), and each value becomes a typed setting
//! ([`Parameters::typed`]). One error type, [`ConfigError`], names the parameter that is missing
//! or wrong and what it should hold.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Why configuration could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error(
        "SSM parameter(s) {} do not exist; expected them provisioned (titus-provision for a \
         local stage, the CDK app or Terraform in AWS)",
        .parameters.join(", ")
    )]
    Missing { parameters: Vec<String> },
    #[error("SSM parameter {parameter} is invalid: {message}; expected {expected}")]
    Invalid {
        parameter: String,
        message: String,
        expected: String,
    },
    #[error("reading SSM parameters {what} failed: {message}")]
    Aws { what: String, message: String },
}

impl ConfigError {
    fn missing(parameter: &str) -> ConfigError {
        ConfigError::Missing {
            parameters: vec![parameter.to_owned()],
        }
    }
}

pub use titus_core::settings::Validate;

/// SSM's limit on names in one GetParameters call.
const MAX_NAMES_PER_CALL: usize = 10;

/// The values of `names`, by name, in as few calls as SSM allows. Every name must exist; those
/// that do not are all named in the error.
pub async fn get_parameters(
    ssm: &aws_sdk_ssm::Client,
    names: &[String],
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut values = BTreeMap::new();
    let mut missing = Vec::new();
    for chunk in names.chunks(MAX_NAMES_PER_CALL) {
        let out = ssm
            .get_parameters()
            .set_names(Some(chunk.to_vec()))
            .with_decryption(true)
            .send()
            .await
            .map_err(|e| ConfigError::Aws {
                what: chunk.join(", "),
                message: aws_sdk_ssm::error::DisplayErrorContext(e).to_string(),
            })?;
        missing.extend(out.invalid_parameters().iter().cloned());
        for parameter in out.parameters() {
            if let (Some(name), Some(value)) = (parameter.name(), parameter.value()) {
                values.insert(name.to_owned(), value.to_owned());
            }
        }
    }
    if !missing.is_empty() {
        missing.sort();
        return Err(ConfigError::Missing {
            parameters: missing,
        });
    }
    Ok(values)
}

/// Parameter values by full name, as read at one moment. Cheap to clone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parameters {
    values: Arc<BTreeMap<String, String>>,
}

impl Parameters {
    /// The values of `names`, read with [`get_parameters`].
    pub async fn read(
        ssm: &aws_sdk_ssm::Client,
        names: &[String],
    ) -> Result<Parameters, ConfigError> {
        Ok(Parameters::from_values(get_parameters(ssm, names).await?))
    }

    pub fn from_values(values: BTreeMap<String, String>) -> Parameters {
        Parameters {
            values: Arc::new(values),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The value of a parameter that must exist.
    pub fn require(&self, name: &str) -> Result<&str, ConfigError> {
        self.get(name).ok_or_else(|| ConfigError::missing(name))
    }

    /// The parameter's JSON value as a `T` that is then validated.
    pub fn typed<T: DeserializeOwned + Validate>(&self, name: &str) -> Result<T, ConfigError> {
        parse_typed(name, self.require(name)?)
    }

    /// Every parameter whose name starts with `prefix/`, with the rest of its name.
    pub fn under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.values.iter().filter_map(move |(name, value)| {
            name.strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix('/'))
                .map(|rest| (rest, value.as_str()))
        })
    }
}

/// Parses and validates one parameter's JSON value, naming the parameter when it is wrong.
pub fn parse_typed<T: DeserializeOwned + Validate>(
    parameter: &str,
    text: &str,
) -> Result<T, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        parameter: parameter.to_owned(),
        message,
        expected: T::EXPECTED.to_owned(),
    };
    let value: T = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
    value.validate().map_err(invalid)?;
    Ok(value)
}

/// Every parameter under `path` (recursively), decrypted, by full name.
pub async fn read_parameters_by_path(
    ssm: &aws_sdk_ssm::Client,
    path: &str,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut values = BTreeMap::new();
    let mut next_token = None;
    loop {
        let out = ssm
            .get_parameters_by_path()
            .path(path)
            .recursive(true)
            .with_decryption(true)
            .set_next_token(next_token)
            .send()
            .await
            .map_err(|e| ConfigError::Aws {
                what: format!("under {path}"),
                message: aws_sdk_ssm::error::DisplayErrorContext(e).to_string(),
            })?;
        for parameter in out.parameters() {
            if let (Some(name), Some(value)) = (parameter.name(), parameter.value()) {
                values.insert(name.to_owned(), value.to_owned());
            }
        }
        match out.next_token {
            Some(token) if !token.is_empty() => next_token = Some(token),
            _ => break,
        }
    }
    Ok(values)
}

/// The parameters under some paths, read at most once per `max_age`: a warm function picks up an
/// operator's change within `max_age` without paying an SSM call per invocation.
#[derive(Debug)]
pub struct ParameterCache {
    ssm: aws_sdk_ssm::Client,
    paths: Vec<String>,
    max_age: Duration,
    cached: Mutex<Option<(Instant, Parameters)>>,
}

impl ParameterCache {
    pub fn new(ssm: aws_sdk_ssm::Client, paths: Vec<String>, max_age: Duration) -> ParameterCache {
        ParameterCache {
            ssm,
            paths,
            max_age,
            cached: Mutex::new(None),
        }
    }

    /// The same cache with another maximum age, keeping what it has read.
    pub fn with_max_age(mut self, max_age: Duration) -> ParameterCache {
        self.max_age = max_age;
        self
    }

    /// The parameters, read again when the copy is older than `max_age`. When a refresh fails
    /// the previous copy is served (with a warning), so a throttled SSM does not stop a warm
    /// function; without a copy (a cold start) the error is returned.
    pub async fn get(&self) -> Result<Parameters, ConfigError> {
        let mut cached = self.cached.lock().await;
        if let Some((read_at, parameters)) = cached.as_ref() {
            if read_at.elapsed() < self.max_age {
                return Ok(parameters.clone());
            }
        }
        match self.read().await {
            Ok(parameters) => {
                *cached = Some((Instant::now(), parameters.clone()));
                Ok(parameters)
            }
            Err(e) => match cached.as_ref() {
                Some((_, parameters)) => {
                    tracing::warn!(error = %e, "refreshing SSM parameters failed; using the previous values");
                    Ok(parameters.clone())
                }
                None => Err(e),
            },
        }
    }

    async fn read(&self) -> Result<Parameters, ConfigError> {
        let mut values = BTreeMap::new();
        for path in &self.paths {
            values.extend(read_parameters_by_path(&self.ssm, path).await?);
        }
        Ok(Parameters::from_values(values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Pool {
        min: u32,
        max: u32,
    }

    impl Validate for Pool {
        const EXPECTED: &'static str = "a JSON object {min, max} with min <= max";
        fn validate(&self) -> Result<(), String> {
            if self.min > self.max {
                return Err(format!("min {} exceeds max {}", self.min, self.max));
            }
            Ok(())
        }
    }

    fn parameters(pairs: &[(&str, &str)]) -> Parameters {
        Parameters::from_values(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn a_valid_value_is_typed() {
        let p = parameters(&[("/titus/x/pool", r#"{"min":1,"max":3}"#)]);
        assert_eq!(
            p.typed::<Pool>("/titus/x/pool").unwrap(),
            Pool { min: 1, max: 3 }
        );
    }

    #[test]
    fn a_value_of_the_wrong_shape_names_the_parameter_and_the_field() {
        let p = parameters(&[("/titus/x/pool", r#"{"min":1,"maks":3}"#)]);
        let err = p.typed::<Pool>("/titus/x/pool").unwrap_err().to_string();
        assert!(err.contains("/titus/x/pool"), "{err}");
        assert!(err.contains("maks"), "{err}");
        assert!(err.contains("min <= max"), "{err}");
    }

    #[test]
    fn a_value_that_fails_validation_says_why() {
        let p = parameters(&[("/titus/x/pool", r#"{"min":5,"max":3}"#)]);
        assert_eq!(
            p.typed::<Pool>("/titus/x/pool").unwrap_err(),
            ConfigError::Invalid {
                parameter: "/titus/x/pool".to_owned(),
                message: "min 5 exceeds max 3".to_owned(),
                expected: Pool::EXPECTED.to_owned(),
            }
        );
    }

    #[test]
    fn a_missing_parameter_is_named() {
        let err = parameters(&[]).typed::<Pool>("/titus/x/pool").unwrap_err();
        assert_eq!(
            err,
            ConfigError::Missing {
                parameters: vec!["/titus/x/pool".to_owned()]
            }
        );
    }

    #[test]
    fn parameters_under_a_prefix_carry_the_rest_of_their_name() {
        let p = parameters(&[
            ("/titus/x/scaler/pools/a", "1"),
            ("/titus/x/scaler/pools/b", "2"),
            ("/titus/x/scaler/poolsx", "3"),
            ("/titus/x/other", "4"),
        ]);
        let under: Vec<_> = p.under("/titus/x/scaler/pools").collect();
        assert_eq!(under, vec![("a", "1"), ("b", "2")]);
    }
}
