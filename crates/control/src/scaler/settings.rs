//! The scaler's settings: its own and one per agent pool, as SSM holds them under
//! `/titus/{stage}/scaler` (read at cold start and again when older than `config_max_age_secs`).
//! Anything invalid fails the run with the parameter's name.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use titus_core::settings::Validate;

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
    /// The stage whose pools these are (their instances carry its tag).
    pub stage: String,
    pub settings: ScalerSettings,
    /// The pools by name.
    pub pools: BTreeMap<String, PoolSettings>,
    /// Where each pool's settings were read from (its SSM parameter), to name it in errors.
    pub sources: BTreeMap<String, String>,
}

impl ScalerConfig {
    /// Where pool `name`'s settings came from, for an error message.
    pub fn source_of(&self, pool: &str) -> String {
        self.sources
            .get(pool)
            .cloned()
            .unwrap_or_else(|| format!("the settings of pool {pool:?}"))
    }
}

/// Whether `name` may name a pool: it is a path segment, an EC2 tag value and a machine group.
pub fn valid_pool_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}
