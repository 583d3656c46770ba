//! The settings every binary reads at start: the control plane's from the stage's SSM
//! parameters (job limits and policy, the rules, the scheduler's tunables) with the process's
//! environment over them, and the scaler's, read again when older than its configured age.

use std::collections::BTreeMap;
use std::time::Duration;

use titus_aws::ssm::{parse_typed, ConfigError, ParameterCache, Parameters};
use titus_aws::Names;
use titus_control::policy::JobPolicy;
use titus_control::scaler::settings::valid_pool_name;
use titus_control::scaler::{PoolSettings, ScalerConfig};
use titus_control::settings::{Admission, Rules, SchedulerSettings, Settings};
use titus_core::settings::OverrideError;

/// Why a binary could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("TITUS_STAGE={stage:?} is not valid: {message}")]
    Stage { stage: String, message: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Override(#[from] OverrideError),
}

/// The control plane's settings of a stage: its five parameters, read in one call, and the
/// `TITUS_STATUS_*` and `TITUS_SCHEDULER_*` variables `lookup` finds over them.
pub async fn load(
    ssm: &aws_sdk_ssm::Client,
    names: &Names,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Settings, StartError> {
    let wanted = [
        names.job_limits_parameter(),
        names.job_policy_parameter(),
        names.team_policy_parameter(),
        names.quota_policy_parameter(),
        names.control_rules_parameter(),
        names.scheduler_config_parameter(),
    ];
    let parameters = Parameters::read(ssm, &wanted).await?;
    from_parameters(names, &parameters, lookup)
}

/// The settings from parameter values (as SSM returns them) and overrides.
pub fn from_parameters(
    names: &Names,
    parameters: &Parameters,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Settings, StartError> {
    let rules: Rules = parameters.typed(&names.control_rules_parameter())?;
    let scheduler: SchedulerSettings = parameters.typed(&names.scheduler_config_parameter())?;
    Ok(Settings {
        rules: rules.with_overrides(&lookup)?,
        scheduler: scheduler.with_overrides(&lookup)?,
        admission: Admission {
            limits: parameters.typed(&names.job_limits_parameter())?,
            policy: JobPolicy {
                stage: names.stage().to_owned(),
                ..parameters.typed(&names.job_policy_parameter())?
            },
            teams: parameters.typed(&names.team_policy_parameter())?,
            quotas: parameters.typed(&names.quota_policy_parameter())?,
        },
    })
}

/// The scaler's configuration from the parameters under the stage's scaler path: its settings
/// and one parameter per pool.
pub fn scaler_config(names: &Names, parameters: &Parameters) -> Result<ScalerConfig, ConfigError> {
    let settings = parameters.typed(&names.scaler_config_parameter())?;
    let pools_path = names.scaler_pools_path();
    let mut pools = BTreeMap::new();
    let mut sources = BTreeMap::new();
    for (name, text) in parameters.under(&pools_path) {
        let parameter = format!("{pools_path}/{name}");
        if !valid_pool_name(name) {
            return Err(ConfigError::Invalid {
                parameter,
                message: "the pool name (the last part of the parameter name) is not valid"
                    .to_owned(),
                expected: "1 to 32 lowercase letters, digits, '-' or '_'".to_owned(),
            });
        }
        let pool: PoolSettings = parse_typed(&parameter, text)?;
        pools.insert(name.to_owned(), pool);
        sources.insert(name.to_owned(), parameter);
    }
    Ok(ScalerConfig {
        stage: names.stage().to_owned(),
        settings,
        pools,
        sources,
    })
}

/// The scaler's parameters, read at cold start and again once older than the configured age.
#[derive(Debug)]
pub struct ScalerConfigSource {
    names: Names,
    cache: ParameterCache,
}

impl ScalerConfigSource {
    pub fn new(ssm: aws_sdk_ssm::Client, names: &Names, max_age: Duration) -> ScalerConfigSource {
        ScalerConfigSource {
            names: names.clone(),
            cache: ParameterCache::new(ssm, vec![names.scaler_parameter_path()], max_age),
        }
    }

    /// The same source with another maximum age (the configured `config_max_age_secs`).
    pub fn with_max_age(self, max_age: Duration) -> ScalerConfigSource {
        ScalerConfigSource {
            names: self.names,
            cache: self.cache.with_max_age(max_age),
        }
    }

    pub async fn load(&self) -> Result<ScalerConfig, ConfigError> {
        let parameters = self.cache.get().await?;
        scaler_config(&self.names, &parameters)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use titus_aws::resources::{scaler_config_default, scaler_pool_default, DEFAULT_POOL};
    use titus_control::scaler::ScalerSettings;

    fn names() -> Names {
        Names::new("cfg").unwrap()
    }

    fn provisioned() -> BTreeMap<String, String> {
        let names = names();
        names
            .definitions()
            .parameters
            .into_iter()
            .map(|p| (p.name, p.default_value))
            .collect()
    }

    #[test]
    fn the_provisioned_defaults_are_the_built_in_defaults_and_valid() {
        let names = names();
        let config = scaler_config(&names, &Parameters::from_values(provisioned())).unwrap();
        assert_eq!(config.settings, ScalerSettings::default());
        assert_eq!(
            serde_json::to_value(&config.settings).unwrap(),
            scaler_config_default()
        );
        let pool = &config.pools[DEFAULT_POOL];
        assert_eq!(
            serde_json::to_value(pool).unwrap(),
            scaler_pool_default(&names)
        );
        assert_eq!(pool.launch_template, names.agent_launch_template());
        assert_eq!(config.pools.len(), 1);
    }

    #[test]
    fn an_invalid_pool_names_its_parameter_and_the_problem() {
        let names = names();
        let mut values = provisioned();
        let parameter = names.scaler_pool_parameter(DEFAULT_POOL);
        let mut pool = scaler_pool_default(&names);
        pool["min_agents"] = 5.into();
        pool["max_agents"] = 2.into();
        values.insert(parameter.clone(), pool.to_string());

        let err = scaler_config(&names, &Parameters::from_values(values))
            .unwrap_err()
            .to_string();

        assert!(err.contains(&parameter), "{err}");
        assert!(err.contains("min_agents 5 exceeds max_agents 2"), "{err}");
    }

    #[test]
    fn an_unknown_setting_is_refused_with_its_name() {
        let names = names();
        let mut values = provisioned();
        values.insert(
            names.scaler_config_parameter(),
            r#"{"lease_ttl_secs": 60, "lease_ttl_sec": 30}"#.to_owned(),
        );
        let err = scaler_config(&names, &Parameters::from_values(values))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&names.scaler_config_parameter()), "{err}");
        assert!(err.contains("lease_ttl_sec"), "{err}");
    }

    #[test]
    fn a_pool_name_must_be_a_plain_segment() {
        let names = names();
        let mut values = provisioned();
        values.insert(
            names.scaler_pool_parameter("GPU Pool"),
            scaler_pool_default(&names).to_string(),
        );
        let err = scaler_config(&names, &Parameters::from_values(values)).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { parameter, .. } if parameter.ends_with("/GPU Pool")),
            "{err}"
        );
    }

    #[test]
    fn a_missing_settings_parameter_is_named() {
        let names = names();
        let mut values = provisioned();
        values.remove(&names.scaler_config_parameter());
        let err = scaler_config(&names, &Parameters::from_values(values)).unwrap_err();
        assert_eq!(
            err,
            ConfigError::Missing {
                parameters: vec![names.scaler_config_parameter()]
            }
        );
    }

    #[test]
    fn the_provisioned_control_plane_settings_are_the_built_in_defaults() {
        let names = names();
        let parameters = Parameters::from_values(provisioned());

        let mut settings = from_parameters(&names, &parameters, |_| None).unwrap();

        assert_eq!(
            settings.admission.policy.stage,
            names.stage(),
            "the loader names the stage"
        );
        settings.admission.policy.stage.clear();
        // Every team has a default quota; nothing else differs from the built-in defaults.
        let quotas = std::mem::take(&mut settings.admission.quotas);
        let provisioned: titus_core::quota::Quotas =
            serde_json::from_value(titus_aws::resources::quotas_default()).unwrap();
        assert_eq!(quotas, provisioned);
        assert!(quotas
            .limits_for(&titus_core::quota::QuotaScope::Team("any@x".to_owned()))
            .tasks
            .is_some());
        assert_eq!(settings, Settings::default());
    }

    #[test]
    fn variables_override_the_provisioned_settings_and_a_bad_one_is_named() {
        let names = names();
        let parameters = Parameters::from_values(provisioned());
        let vars = |name: &str| match name {
            "TITUS_STATUS_AGENT_HEARTBEAT_TIMEOUT_MS" => Some("5000".to_owned()),
            "TITUS_SCHEDULER_STRATEGY" => Some("spread".to_owned()),
            _ => None,
        };

        let settings = from_parameters(&names, &parameters, vars).unwrap();
        let err = from_parameters(&names, &parameters, |name| {
            (name == "TITUS_SCHEDULER_MAX_TASKS_PER_TICK").then(|| "5000".to_owned())
        })
        .unwrap_err();

        assert_eq!(settings.rules.agent_heartbeat_timeout_ms, 5_000);
        assert_eq!(settings.scheduler.strategy, "spread");
        assert!(
            err.to_string()
                .contains("TITUS_SCHEDULER_MAX_TASKS_PER_TICK"),
            "{err}"
        );
    }

    #[test]
    fn a_wrong_rules_parameter_is_named() {
        let names = names();
        let mut values = provisioned();
        values.insert(
            names.control_rules_parameter(),
            r#"{"launched_timeout": 5}"#.to_owned(),
        );
        let err = from_parameters(&names, &Parameters::from_values(values), |_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/titus/cfg/control/rules"), "{err}");
        assert!(err.contains("launched_timeout"), "{err}");
    }

    #[test]
    fn an_invalid_policy_is_named_in_the_error() {
        let names = names();
        let mut values = provisioned();
        values.insert(
            names.job_policy_parameter(),
            r#"{"allowRoot": true}"#.to_owned(),
        );

        let err = from_parameters(&names, &Parameters::from_values(values), |_| None)
            .unwrap_err()
            .to_string();

        assert!(err.contains("/titus/cfg/policy/jobs"), "{err}");
        assert!(err.contains("allowRoot"), "{err}");
    }
}
