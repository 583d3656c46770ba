//! The scaler's configuration: its own settings and one parameter per agent pool, all under
//! `/titus/{stage}/scaler` in SSM, read at cold start and again when older than
//! `config_max_age_secs`. Anything invalid fails the run with the parameter's name.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use titus_aws::config::{parse_typed, ConfigError, Parameters, Validate};
use titus_aws::Names;

/// The scaler's own settings (`/titus/{stage}/scaler/config`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScalerSettings {
    /// How long one run may hold the scaler lease; longer than a run ever takes.
    pub lease_ttl_secs: u64,
    /// The most pending tasks one run reads to compute demand (oldest first; at most 1000, the
    /// job store's page).
    pub max_pending_tasks: u32,
    /// An instance without a registered agent this long (from its launch, or from when it was
    /// first seen without one) is terminated.
    pub registration_timeout_secs: u64,
    /// How long a warm function keeps the parameters before reading them again.
    pub config_max_age_secs: u64,
}

impl Default for ScalerSettings {
    fn default() -> ScalerSettings {
        ScalerSettings {
            lease_ttl_secs: 120,
            max_pending_tasks: 1_000,
            registration_timeout_secs: 600,
            config_max_age_secs: 60,
        }
    }
}

impl Validate for ScalerSettings {
    const EXPECTED: &'static str = "a JSON object with lease_ttl_secs (10-900), max_pending_tasks \
        (1-1000), registration_timeout_secs (>= 60) and config_max_age_secs";

    fn validate(&self) -> Result<(), String> {
        if !(10..=900).contains(&self.lease_ttl_secs) {
            return Err(format!("lease_ttl_secs is {}", self.lease_ttl_secs));
        }
        if !(1..=1_000).contains(&self.max_pending_tasks) {
            return Err(format!("max_pending_tasks is {}", self.max_pending_tasks));
        }
        if self.registration_timeout_secs < 60 {
            return Err(format!(
                "registration_timeout_secs is {}",
                self.registration_timeout_secs
            ));
        }
        Ok(())
    }
}

/// One agent pool (`/titus/{stage}/scaler/pools/{name}`); its name is the agents' machine
/// group and the `titus:pool` tag of its instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSettings {
    /// Agents the pool keeps even when idle.
    pub min_agents: u32,
    /// Instances the pool never exceeds, booting and draining ones included.
    pub max_agents: u32,
    /// The instance types new agents may have, in order of preference among equals.
    pub instance_types: Vec<String>,
    /// The EC2 launch template (name) instances start from.
    pub launch_template: String,
    /// Where instances go, one zone per subnet; empty: the region's default subnets.
    #[serde(default)]
    pub subnet_ids: Vec<String>,
    /// Instances that are always on-demand before any spot is used.
    #[serde(default)]
    pub on_demand_base: u32,
    /// The share of instances above the base that are on-demand; the rest are spot.
    #[serde(default = "hundred")]
    pub on_demand_percent_above_base: u32,
    /// EC2 Fleet's spot allocation strategy.
    #[serde(default = "price_capacity_optimized")]
    pub spot_allocation_strategy: String,
    /// After a launch, no further launch nor drain in this pool for this long.
    pub cooldown_secs: u64,
    /// An agent without tasks for this long is drained (above `min_agents`).
    pub idle_threshold_secs: u64,
    /// The most instances one run launches in this pool.
    #[serde(default = "twenty")]
    pub max_launches_per_run: u32,
    /// Memory an instance type offers that its agent will not (the OS, Docker, the agent).
    #[serde(default)]
    pub memory_reserved_mb: u64,
    /// The disk an agent of this pool offers (the launch template's volume, less the OS).
    pub disk_mb: u64,
    /// The network bandwidth an agent of this pool offers (its agent setting).
    pub network_mbps: u64,
}

fn hundred() -> u32 {
    100
}

fn twenty() -> u32 {
    20
}

fn price_capacity_optimized() -> String {
    "price-capacity-optimized".to_owned()
}

/// EC2 Fleet's spot allocation strategies.
const SPOT_STRATEGIES: [&str; 5] = [
    "price-capacity-optimized",
    "capacity-optimized",
    "capacity-optimized-prioritized",
    "lowest-price",
    "diversified",
];

impl Validate for PoolSettings {
    const EXPECTED: &'static str = "a JSON object with min_agents <= max_agents, non-empty \
        instance_types, launch_template, on_demand_percent_above_base 0-100, a known \
        spot_allocation_strategy, cooldown_secs, idle_threshold_secs, disk_mb and network_mbps \
        (see infra/README.md)";

    fn validate(&self) -> Result<(), String> {
        if self.min_agents > self.max_agents {
            return Err(format!(
                "min_agents {} exceeds max_agents {}",
                self.min_agents, self.max_agents
            ));
        }
        if self.instance_types.is_empty() {
            return Err("instance_types is empty".to_owned());
        }
        if let Some(bad) = self
            .instance_types
            .iter()
            .find(|t| t.is_empty() || !t.contains('.'))
        {
            return Err(format!(
                "instance type {bad:?} is not an EC2 instance type name"
            ));
        }
        if self.launch_template.trim().is_empty() {
            return Err("launch_template is empty".to_owned());
        }
        if self.on_demand_percent_above_base > 100 {
            return Err(format!(
                "on_demand_percent_above_base is {}",
                self.on_demand_percent_above_base
            ));
        }
        if !SPOT_STRATEGIES.contains(&self.spot_allocation_strategy.as_str()) {
            return Err(format!(
                "spot_allocation_strategy {:?} is not one of {SPOT_STRATEGIES:?}",
                self.spot_allocation_strategy
            ));
        }
        if self.max_launches_per_run == 0 && self.max_agents > 0 {
            return Err("max_launches_per_run is 0".to_owned());
        }
        Ok(())
    }
}

/// Everything a run needs to know besides its clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalerConfig {
    pub settings: ScalerSettings,
    /// The pools by name.
    pub pools: BTreeMap<String, PoolSettings>,
}

/// Whether `name` may name a pool: it is a path segment, an EC2 tag value and a machine group.
pub fn valid_pool_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl ScalerConfig {
    /// The configuration from the parameters under the stage's scaler path.
    pub fn from_parameters(
        names: &Names,
        parameters: &Parameters,
    ) -> Result<ScalerConfig, ConfigError> {
        let settings: ScalerSettings = parameters.typed(&names.scaler_config_parameter())?;
        let pools_path = names.scaler_pools_path();
        let mut pools = BTreeMap::new();
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
        }
        Ok(ScalerConfig { settings, pools })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use titus_aws::resources::{scaler_config_default, scaler_pool_default, DEFAULT_POOL};

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
        let config =
            ScalerConfig::from_parameters(&names, &Parameters::from_values(provisioned())).unwrap();
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

        let err = ScalerConfig::from_parameters(&names, &Parameters::from_values(values))
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
        let err = ScalerConfig::from_parameters(&names, &Parameters::from_values(values))
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
        let err =
            ScalerConfig::from_parameters(&names, &Parameters::from_values(values)).unwrap_err();
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
        let err =
            ScalerConfig::from_parameters(&names, &Parameters::from_values(values)).unwrap_err();
        assert_eq!(
            err,
            ConfigError::Missing {
                parameter: names.scaler_config_parameter()
            }
        );
    }
}
