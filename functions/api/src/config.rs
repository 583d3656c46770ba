//! The API's own configuration, beside the control plane's settings: who the bearer tokens stand
//! for outside AWS, who may change any job, and how many requests each caller may make. Read once at start from SSM
//! (`/titus/{stage}/api/...`) with the one loader, failing fast with the name of the parameter
//! that is wrong.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use titus_aws::ssm::{ConfigError, Parameters};
use titus_aws::Names;
use titus_core::settings::Validate;

/// Everything the API needs to know besides the control plane.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiConfig {
    pub stage: String,
    /// Local bearer tokens, by their SHA-256 (so a lookup's timing tells nothing about a token),
    /// to the identity they stand for.
    token_identities: BTreeMap<[u8; 32], String>,
    /// Identities that may kill or change any job.
    pub admins: BTreeSet<String>,
    /// How many requests, and job creations, each caller may make per window.
    pub rate_limits: RateLimits,
}

/// Per-caller rate limits (`/titus/{stage}/api/rate-limits`): at most `requests` authenticated
/// requests and `creates` job creations per caller in each window of `windowSecs`, with
/// per-identity exceptions in `callers`. Counted across every API process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimits {
    pub window_secs: u64,
    pub requests: u32,
    pub creates: u32,
    #[serde(default)]
    pub callers: BTreeMap<String, CallerLimits>,
}

/// One identity's own limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CallerLimits {
    pub requests: u32,
    pub creates: u32,
}

impl Default for RateLimits {
    /// 50 requests and 10 job creations per caller per second.
    fn default() -> RateLimits {
        RateLimits {
            window_secs: 1,
            requests: 50,
            creates: 10,
            callers: BTreeMap::new(),
        }
    }
}

impl RateLimits {
    /// The limits of `identity`.
    pub fn of(&self, identity: &str) -> CallerLimits {
        self.callers.get(identity).copied().unwrap_or(CallerLimits {
            requests: self.requests,
            creates: self.creates,
        })
    }

    pub fn window_ms(&self) -> u64 {
        self.window_secs.saturating_mul(1_000)
    }
}

impl Validate for RateLimits {
    const EXPECTED: &'static str = "a JSON object with windowSecs (1 to 3600), requests and \
                                    creates (per caller and window), and optional callers \
                                    (identity to its own requests and creates)";

    fn validate(&self) -> Result<(), String> {
        if !(1..=3_600).contains(&self.window_secs) {
            return Err(format!(
                "windowSecs must be 1 to 3600, got {}",
                self.window_secs
            ));
        }
        Ok(())
    }
}

/// Bearer tokens to the identities they stand for (`/titus/{stage}/api/identities`).
#[derive(Debug, Deserialize)]
#[serde(transparent)]
struct Identities(BTreeMap<String, String>);

impl Validate for Identities {
    const EXPECTED: &'static str =
        "a JSON object of bearer token to caller identity, with non-empty tokens and identities";

    fn validate(&self) -> Result<(), String> {
        match self
            .0
            .iter()
            .find(|(token, identity)| token.trim().is_empty() || identity.trim().is_empty())
        {
            Some((token, _)) if token.trim().is_empty() => Err("a token is empty".to_owned()),
            Some((_, identity)) => Err(format!("the identity of a token is empty ({identity:?})")),
            None => Ok(()),
        }
    }
}

/// Identities that may change any job (`/titus/{stage}/api/admins`).
#[derive(Debug, Deserialize)]
#[serde(transparent)]
struct Admins(BTreeSet<String>);

impl Validate for Admins {
    const EXPECTED: &'static str = "a JSON array of identities";
}

impl ApiConfig {
    /// Reads the stage's API parameters from SSM.
    pub async fn load(ssm: &aws_sdk_ssm::Client, names: &Names) -> Result<ApiConfig, ConfigError> {
        let wanted = [
            names.api_identities_parameter(),
            names.api_admins_parameter(),
            names.api_rate_limits_parameter(),
        ];
        ApiConfig::from_parameters(names, &Parameters::read(ssm, &wanted).await?)
    }

    /// Builds the configuration from parameter values (as SSM returns them).
    pub fn from_parameters(
        names: &Names,
        parameters: &Parameters,
    ) -> Result<ApiConfig, ConfigError> {
        let Identities(identities) = parameters.typed(&names.api_identities_parameter())?;
        let Admins(admins) = parameters.typed(&names.api_admins_parameter())?;
        let rate_limits = parameters.typed(&names.api_rate_limits_parameter())?;
        Ok(ApiConfig {
            stage: names.stage().to_owned(),
            token_identities: identities
                .into_iter()
                .map(|(token, identity)| (token_digest(&token), identity))
                .collect(),
            admins,
            rate_limits,
        })
    }

    /// A configuration for tests and tools: the given tokens and admins.
    pub fn with_tokens(stage: &str, tokens: &[(&str, &str)], admins: &[&str]) -> ApiConfig {
        ApiConfig {
            stage: stage.to_owned(),
            token_identities: tokens
                .iter()
                .map(|(token, identity)| (token_digest(token), (*identity).to_owned()))
                .collect(),
            admins: admins.iter().map(|a| (*a).to_owned()).collect(),
            rate_limits: RateLimits::default(),
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

    fn config(names: &Names, values: BTreeMap<String, String>) -> Result<ApiConfig, ConfigError> {
        ApiConfig::from_parameters(names, &Parameters::from_values(values))
    }

    #[test]
    fn a_stage_starts_with_no_token_and_no_admin() {
        let names = Names::new("unit").unwrap();

        let config = config(&names, defaults(&names)).unwrap();

        assert_eq!(config.identity_of_token("local-dev-token"), None);
        assert_eq!(config.identity_of_token("local-admin-token"), None);
        assert!(config.admins.is_empty());
    }

    #[test]
    fn the_local_defaults_are_a_valid_configuration() {
        let names = Names::new("unit").unwrap();
        let local = names
            .local_definitions()
            .parameters
            .into_iter()
            .map(|p| (p.name, p.default_value))
            .collect();

        let config = config(&names, local).unwrap();

        assert_eq!(
            config.identity_of_token("local-dev-token"),
            Some("dev@titus.local")
        );
        assert_eq!(config.identity_of_token("wrong"), None);
        assert!(config.is_admin("admin@titus.local"));
        assert!(!config.is_admin("dev@titus.local"));
    }

    #[test]
    fn rate_limits_have_defaults_and_per_caller_exceptions() {
        let names = Names::new("unit").unwrap();
        let mut values = defaults(&names);
        assert_eq!(
            config(&names, values.clone()).unwrap().rate_limits,
            RateLimits::default()
        );
        values.insert(
            names.api_rate_limits_parameter(),
            r#"{"windowSecs": 60, "requests": 600, "creates": 60,
                "callers": {"ci@example.com": {"requests": 6000, "creates": 600}}}"#
                .to_owned(),
        );
        let limits = config(&names, values.clone()).unwrap().rate_limits;
        assert_eq!(limits.window_ms(), 60_000);
        assert_eq!(limits.of("ci@example.com").creates, 600);
        assert_eq!(limits.of("someone@example.com").creates, 60);

        values.insert(
            names.api_rate_limits_parameter(),
            r#"{"windowSecs": 0, "requests": 1, "creates": 1}"#.to_owned(),
        );
        let err = config(&names, values).unwrap_err();
        assert!(
            err.to_string().contains("/titus/unit/api/rate-limits"),
            "{err}"
        );
        assert!(
            err.to_string().contains("windowSecs must be 1 to 3600"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_parameter_is_named_in_the_error() {
        let names = Names::new("unit").unwrap();
        let mut values = defaults(&names);
        values.remove(&names.api_admins_parameter());

        let err = config(&names, values).unwrap_err();

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

        let err = config(&names, values).unwrap_err();

        assert!(err.to_string().contains("a token is empty"), "{err}");
        assert!(
            err.to_string().contains("/titus/unit/api/identities"),
            "{err}"
        );
    }
}
