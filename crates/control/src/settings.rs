//! The application layer's settings, one typed struct each, as the stage's SSM parameters hold
//! them (JSON, snake_case) and as `TITUS_STATUS_*` and `TITUS_SCHEDULER_*` variables override
//! them per process:
//!
//! - [`Rules`] (`/titus/{stage}/control/rules`): Titus' stuck-state timeouts, the heartbeat
//!   timeout, retry limits and how much one reconciler run does;
//! - [`SchedulerSettings`] (`/titus/{stage}/scheduler/config`): the lease, the tick's batch, the
//!   acknowledgement timeout, the loop's budget and the placement strategy;
//! - [`Admission`] (`/titus/{stage}/limits/job` and `/titus/{stage}/policy/jobs`): what a job
//!   descriptor is checked against.

use serde::{Deserialize, Serialize};
use titus_core::ports::PageRequest;
use titus_core::settings::{apply_overrides, OverrideError, Validate};
use titus_core::Limits;
use titus_placement::Strategy;

use crate::policy::JobPolicy;

/// The variables that override [`Rules`]: `TITUS_STATUS_` and the field's name in capitals.
pub const RULES_ENV_PREFIX: &str = "TITUS_STATUS_";
/// The variables that override [`SchedulerSettings`].
pub const SCHEDULER_ENV_PREFIX: &str = "TITUS_SCHEDULER_";

/// Titus' stuck-state timeouts (DESIGN.md) and the retry limits, with units in their names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rules {
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
    /// The IAM role id of the agents' instance role (`AROA...`), when agents run in AWS: a
    /// status or a request is then believed only when SQS names its sender
    /// `{agent_role_id}:{agent id}` (an instance role session is named after its instance). Empty
    /// (the default, and locally, where every process shares one identity): not checked.
    pub agent_role_id: String,
    /// A task its agent's heartbeats have not listed for this long, while the records hold it
    /// there (started), is finished as lost: its container is not there.
    pub unreported_task_timeout_ms: u64,
    /// The first wait before a kill is sent again to an agent that still reports a task the
    /// records do not hold there; it doubles each time, up to 16 times.
    pub stray_kill_backoff_ms: u64,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
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
            agent_role_id: String::new(),
            unreported_task_timeout_ms: 60_000,
            stray_kill_backoff_ms: 5_000,
        }
    }
}

impl Validate for Rules {
    const EXPECTED: &'static str = "a JSON object of whole numbers: the *_ms timeouts in \
        milliseconds, max_system_retries (0-1000), max_tasks_per_run (1-1000) and \
        sweep_jobs_per_run (0, no sweep, to 1000)";

    fn validate(&self) -> Result<(), String> {
        if self.max_system_retries > 1_000 {
            return Err(format!("max_system_retries is {}", self.max_system_retries));
        }
        if !(1..=1_000).contains(&self.max_tasks_per_run) {
            return Err(format!("max_tasks_per_run is {}", self.max_tasks_per_run));
        }
        if self.sweep_jobs_per_run > 1_000 {
            return Err(format!("sweep_jobs_per_run is {}", self.sweep_jobs_per_run));
        }
        Ok(())
    }
}

impl Rules {
    /// The shortest stuck-state timeout: no task younger than this in its state can be stuck.
    pub fn shortest_stuck_timeout_ms(&self) -> u64 {
        self.launched_timeout_ms
            .min(self.start_initiated_batch_timeout_ms)
            .min(self.start_initiated_service_timeout_ms)
            .min(self.kill_initiated_timeout_ms)
    }

    /// These rules with `TITUS_STATUS_*` variables (read through `lookup`) over them.
    pub fn with_overrides(
        self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Rules, OverrideError> {
        apply_overrides(self, RULES_ENV_PREFIX, lookup)
    }
}

/// A strategy's name as settings spell it: `binpack` (or `bin-pack`) or `spread`, in any case.
fn parse_strategy(text: &str) -> Option<Strategy> {
    match text.to_ascii_lowercase().as_str() {
        "binpack" | "bin-pack" => Some(Strategy::BinPack),
        "spread" => Some(Strategy::Spread),
        _ => None,
    }
}

/// The scheduler's tunables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerSettings {
    /// How long a lease lasts without renewal; a tick renews it.
    pub lease_ttl_ms: u64,
    /// The most pending tasks one tick reads and plans.
    pub max_tasks_per_tick: u32,
    /// A placement not acknowledged by its agent within this is dispatched again.
    pub ack_timeout_ms: u64,
    /// How long one run of the loop may go on; Express workflows end at five minutes.
    pub loop_budget_ms: u64,
    /// `binpack` or `spread`.
    pub strategy: String,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        SchedulerSettings {
            lease_ttl_ms: 15_000,
            max_tasks_per_tick: 500,
            ack_timeout_ms: 30_000,
            loop_budget_ms: 240_000,
            strategy: "binpack".to_owned(),
        }
    }
}

impl Validate for SchedulerSettings {
    const EXPECTED: &'static str = "a JSON object with lease_ttl_ms (>= 1000), max_tasks_per_tick \
        (1-1000), ack_timeout_ms, loop_budget_ms (at most 290000, under Express's five minutes) \
        and strategy (binpack or spread)";

    fn validate(&self) -> Result<(), String> {
        if self.lease_ttl_ms < 1000 {
            return Err(format!("lease_ttl_ms is {}", self.lease_ttl_ms));
        }
        if !(1..=PageRequest::MAX_PAGE_SIZE).contains(&self.max_tasks_per_tick) {
            return Err(format!("max_tasks_per_tick is {}", self.max_tasks_per_tick));
        }
        if self.loop_budget_ms > 290_000 {
            return Err(format!("loop_budget_ms is {}", self.loop_budget_ms));
        }
        parse_strategy(&self.strategy)
            .map(|_| ())
            .ok_or_else(|| format!("strategy is {:?}", self.strategy))
    }
}

impl SchedulerSettings {
    /// The placement strategy; bin-packing when the name is not one (validation refuses it).
    pub fn strategy(&self) -> Strategy {
        parse_strategy(&self.strategy).unwrap_or(Strategy::BinPack)
    }

    /// The name of the lease every scheduler of a stage takes.
    pub const LEASE_NAME: &'static str = "scheduler";

    /// These settings with `TITUS_SCHEDULER_*` variables (read through `lookup`) over them.
    pub fn with_overrides(
        self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<SchedulerSettings, OverrideError> {
        apply_overrides(self, SCHEDULER_ENV_PREFIX, lookup)
    }
}

impl Validate for JobPolicy {
    const EXPECTED: &'static str =
        "a JSON object with allowPrivileged, allowHostNetwork, allowHostMounts, registries and \
         allowedCapabilities (capability names without CAP_, such as NET_RAW)";

    fn validate(&self) -> Result<(), String> {
        match self
            .allowed_capabilities
            .iter()
            .find(|c| !titus_core::validation::CAPABILITIES.contains(&c.as_str()))
        {
            Some(unknown) => Err(format!(
                "allowedCapabilities names unknown capability {unknown:?}"
            )),
            None => Ok(()),
        }
    }
}

/// What submissions are checked against: the platform's limits, then its policy, then whether
/// the caller belongs to the job's owner team.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Admission {
    pub limits: Limits,
    pub policy: JobPolicy,
    pub teams: crate::teams::Teams,
    /// What each owner team and capacity group may hold (`/titus/{stage}/policy/quotas`).
    pub quotas: titus_core::quota::Quotas,
}

/// Every setting the use cases read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    pub rules: Rules,
    pub scheduler: SchedulerSettings,
    pub admission: Admission,
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
        let rules = Rules::default().with_overrides(lookup(&[])).unwrap();

        assert_eq!(rules, Rules::default());
        assert_eq!(rules.launched_timeout_ms, 300_000);
        assert_eq!(rules.start_initiated_batch_timeout_ms, 720_000);
        assert_eq!(rules.start_initiated_service_timeout_ms, 300_000);
        assert_eq!(rules.kill_initiated_timeout_ms, 600_000);
        assert_eq!(rules.shortest_stuck_timeout_ms(), 300_000);
    }

    #[test]
    fn environment_variables_override_each_setting() {
        let rules = Rules::default()
            .with_overrides(lookup(&[
                ("TITUS_STATUS_LAUNCHED_TIMEOUT_MS", "1000"),
                ("TITUS_STATUS_MAX_SYSTEM_RETRIES", "3"),
            ]))
            .unwrap();

        assert_eq!(rules.launched_timeout_ms, 1_000);
        assert_eq!(rules.max_system_retries, 3);
        assert_eq!(rules.shortest_stuck_timeout_ms(), 1_000);
    }

    #[test]
    fn a_bad_value_names_the_variable_and_what_was_expected() {
        let err = Rules::default()
            .with_overrides(lookup(&[("TITUS_STATUS_KILL_INITIATED_TIMEOUT_MS", "10m")]))
            .unwrap_err();

        let text = err.to_string();
        assert!(
            text.contains("TITUS_STATUS_KILL_INITIATED_TIMEOUT_MS"),
            "{text}"
        );
        assert!(text.contains("milliseconds"), "{text}");
        assert!(Rules::default()
            .with_overrides(lookup(&[("TITUS_STATUS_MAX_TASKS_PER_RUN", "0")]))
            .is_err());
    }

    #[test]
    fn the_scheduler_strategy_is_read_in_any_case_and_a_bad_one_is_named() {
        let spread = SchedulerSettings::default()
            .with_overrides(lookup(&[("TITUS_SCHEDULER_STRATEGY", "SPREAD")]))
            .unwrap();
        assert_eq!(spread.strategy(), Strategy::Spread);

        let err = SchedulerSettings::default()
            .with_overrides(lookup(&[("TITUS_SCHEDULER_STRATEGY", "random")]))
            .unwrap_err();
        assert!(
            err.to_string().contains("TITUS_SCHEDULER_STRATEGY"),
            "{err}"
        );
        assert!(err.to_string().contains("binpack or spread"), "{err}");
    }

    #[test]
    fn a_job_policy_may_allow_only_known_capabilities() {
        let known = JobPolicy {
            allowed_capabilities: vec!["NET_RAW".to_owned()],
            ..JobPolicy::default()
        };
        assert_eq!(known.validate(), Ok(()));

        let unknown = JobPolicy {
            allowed_capabilities: vec!["CAP_NET_RAW".to_owned()],
            ..JobPolicy::default()
        };
        let err = unknown.validate().unwrap_err();
        assert!(err.contains("\"CAP_NET_RAW\""), "{err}");
    }
}
