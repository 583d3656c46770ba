//! The status function's and the reconciler's settings: one typed struct, read once at start from
//! the environment, failing fast with the name of the variable that is wrong.

use titus_aws::Names;

/// Titus' stuck-state timeouts (DESIGN.md) and the retry limits, with units in their names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusConfig {
    pub stage: String,
    /// An Active or Draining agent whose last heartbeat is older than this is declared lost.
    pub agent_heartbeat_timeout_ms: u64,
    /// A task Launched this long without its agent reporting StartInitiated is stuck.
    pub launched_timeout_ms: u64,
    /// A batch task StartInitiated this long without Started is stuck (image pulls can be slow).
    pub start_initiated_batch_timeout_ms: u64,
    /// A service task StartInitiated this long without Started is stuck.
    pub start_initiated_service_timeout_ms: u64,
    /// A task KillInitiated this long without Finished gets its kill sent again; after twice
    /// this, it is Finished as stuckInKillingState.
    pub kill_initiated_timeout_ms: u64,
    /// How long past its runtime limit (and kill grace period) a batch task may run before the
    /// reconciler kills it. The agent enforces the limit; this is the backstop, so it waits a
    /// little longer than the agent would.
    pub runtime_limit_slack_ms: u64,
    /// How often one slot may be replaced after system errors (lost, crashed, stuck, ...), which
    /// do not use up the job's retries. A cap, so a task that always crashes its host stops.
    pub max_system_retries: u32,
    /// A service task that ran at least this long before finishing is replaced after the retry
    /// policy's first delay, not the delay its chain of replacements has grown to.
    pub service_backoff_reset_after_ms: u64,
    /// The most stuck-task candidates one reconciler run reads.
    pub max_tasks_per_run: u32,
    /// How many active jobs one reconciler run checks for convergence (service capacity, kills
    /// and batch jobs to finish, runtime limits); successive runs continue where the last ended.
    pub sweep_jobs_per_run: u32,
}

impl Default for StatusConfig {
    fn default() -> Self {
        StatusConfig {
            stage: titus_aws::resources::DEFAULT_STAGE.to_owned(),
            agent_heartbeat_timeout_ms: 30_000,
            launched_timeout_ms: 5 * 60_000,
            start_initiated_batch_timeout_ms: 12 * 60_000,
            start_initiated_service_timeout_ms: 5 * 60_000,
            kill_initiated_timeout_ms: 10 * 60_000,
            runtime_limit_slack_ms: 60_000,
            max_system_retries: 10,
            service_backoff_reset_after_ms: 10 * 60_000,
            max_tasks_per_run: 500,
            sweep_jobs_per_run: 100,
        }
    }
}

/// A setting that could not be read, named so the operator can fix it.
#[derive(Debug, thiserror::Error)]
#[error("setting {name} is {value:?}: expected {expected}")]
pub struct ConfigError {
    pub name: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl StatusConfig {
    /// Defaults overridden by `TITUS_STAGE` and `TITUS_STATUS_*` variables (the names are the
    /// fields' in upper case, e.g. `TITUS_STATUS_LAUNCHED_TIMEOUT_MS`).
    pub fn from_env() -> Result<StatusConfig, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like `from_env`, reading variables through `lookup`.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<StatusConfig, ConfigError> {
        let defaults = StatusConfig::default();
        let stage = lookup("TITUS_STAGE").unwrap_or(defaults.stage);
        if Names::new(&stage).is_err() {
            return Err(ConfigError {
                name: "TITUS_STAGE",
                value: stage,
                expected: "1 to 16 lowercase letters, digits or hyphens",
            });
        }
        let millis = |name: &'static str, default: u64| -> Result<u64, ConfigError> {
            match lookup(name) {
                None => Ok(default),
                Some(value) => value.trim().parse().map_err(|_| ConfigError {
                    name,
                    value,
                    expected: "a whole number of milliseconds",
                }),
            }
        };
        let count = |name: &'static str,
                     default: u32,
                     range: std::ops::RangeInclusive<u32>,
                     expected: &'static str|
         -> Result<u32, ConfigError> {
            match lookup(name) {
                None => Ok(default),
                Some(value) => value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| range.contains(n))
                    .ok_or(ConfigError {
                        name,
                        value,
                        expected,
                    }),
            }
        };
        let config = StatusConfig {
            stage,
            agent_heartbeat_timeout_ms: millis(
                "TITUS_STATUS_AGENT_HEARTBEAT_TIMEOUT_MS",
                defaults.agent_heartbeat_timeout_ms,
            )?,
            launched_timeout_ms: millis(
                "TITUS_STATUS_LAUNCHED_TIMEOUT_MS",
                defaults.launched_timeout_ms,
            )?,
            start_initiated_batch_timeout_ms: millis(
                "TITUS_STATUS_START_INITIATED_BATCH_TIMEOUT_MS",
                defaults.start_initiated_batch_timeout_ms,
            )?,
            start_initiated_service_timeout_ms: millis(
                "TITUS_STATUS_START_INITIATED_SERVICE_TIMEOUT_MS",
                defaults.start_initiated_service_timeout_ms,
            )?,
            kill_initiated_timeout_ms: millis(
                "TITUS_STATUS_KILL_INITIATED_TIMEOUT_MS",
                defaults.kill_initiated_timeout_ms,
            )?,
            runtime_limit_slack_ms: millis(
                "TITUS_STATUS_RUNTIME_LIMIT_SLACK_MS",
                defaults.runtime_limit_slack_ms,
            )?,
            max_system_retries: count(
                "TITUS_STATUS_MAX_SYSTEM_RETRIES",
                defaults.max_system_retries,
                0..=1_000,
                "a whole number from 0 to 1000",
            )?,
            service_backoff_reset_after_ms: millis(
                "TITUS_STATUS_SERVICE_BACKOFF_RESET_AFTER_MS",
                defaults.service_backoff_reset_after_ms,
            )?,
            max_tasks_per_run: count(
                "TITUS_STATUS_MAX_TASKS_PER_RUN",
                defaults.max_tasks_per_run,
                1..=1_000,
                "a whole number from 1 to 1000",
            )?,
            sweep_jobs_per_run: count(
                "TITUS_STATUS_SWEEP_JOBS_PER_RUN",
                defaults.sweep_jobs_per_run,
                0..=1_000,
                "a whole number from 0 (no sweep) to 1000",
            )?,
        };
        Ok(config)
    }

    /// The shortest stuck-state timeout: no task younger than this in its state can be stuck.
    pub fn shortest_stuck_timeout_ms(&self) -> u64 {
        self.launched_timeout_ms
            .min(self.start_initiated_batch_timeout_ms)
            .min(self.start_initiated_service_timeout_ms)
            .min(self.kill_initiated_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn without_overrides_the_timeouts_are_titus_own() {
        let config = StatusConfig::from_lookup(lookup(&[])).unwrap();

        assert_eq!(config, StatusConfig::default());
        assert_eq!(config.launched_timeout_ms, 300_000);
        assert_eq!(config.start_initiated_batch_timeout_ms, 720_000);
        assert_eq!(config.start_initiated_service_timeout_ms, 300_000);
        assert_eq!(config.kill_initiated_timeout_ms, 600_000);
        assert_eq!(config.shortest_stuck_timeout_ms(), 300_000);
    }

    #[test]
    fn environment_variables_override_each_setting() {
        let config = StatusConfig::from_lookup(lookup(&[
            ("TITUS_STAGE", "dev"),
            ("TITUS_STATUS_LAUNCHED_TIMEOUT_MS", "1000"),
            ("TITUS_STATUS_MAX_SYSTEM_RETRIES", "3"),
        ]))
        .unwrap();

        assert_eq!(config.stage, "dev");
        assert_eq!(config.launched_timeout_ms, 1_000);
        assert_eq!(config.max_system_retries, 3);
        assert_eq!(config.shortest_stuck_timeout_ms(), 1_000);
    }

    #[test]
    fn a_bad_value_names_the_variable_and_what_was_expected() {
        let err =
            StatusConfig::from_lookup(lookup(&[("TITUS_STATUS_KILL_INITIATED_TIMEOUT_MS", "10m")]))
                .unwrap_err();

        let text = err.to_string();
        assert!(
            text.contains("TITUS_STATUS_KILL_INITIATED_TIMEOUT_MS"),
            "{text}"
        );
        assert!(text.contains("milliseconds"), "{text}");
        assert!(StatusConfig::from_lookup(lookup(&[("TITUS_STAGE", "Prod")])).is_err());
        assert!(
            StatusConfig::from_lookup(lookup(&[("TITUS_STATUS_MAX_TASKS_PER_RUN", "0")])).is_err()
        );
    }
}
