//! Injectable faults: a named port operation throttled (`Unavailable`), failing (`Internal`), or
//! applied with its answer lost (it happened, the caller sees `Unavailable`), for its next N calls
//! or with a probability drawn from a seeded generator, so a run with faults is repeatable.
//!
//! Operations are named `port.method`, after the port trait's method: `jobs.update_task`,
//! `allocations.commit_placements`, `commands.send_commands`, `source.receive`; `jobs.*` names
//! every operation of a port and `*` every operation. [`OPERATIONS`] lists them.

use std::sync::{Arc, Mutex, PoisonError};

use titus_core::ports::{CommitError, FleetError, LeaseError, QueueError, StateError, StoreError};

/// Every operation a fault can name.
pub const OPERATIONS: &[&str] = &[
    "jobs.create_job",
    "jobs.list_awaiting_jobs",
    "jobs.get_job_awaiting",
    "jobs.existing_tasks",
    "jobs.write_initial_tasks",
    "jobs.get_job",
    "jobs.list_jobs",
    "jobs.update_job",
    "jobs.list_usage",
    "jobs.get_task",
    "jobs.list_job_tasks",
    "jobs.list_pending_tasks",
    "jobs.list_unacknowledged_tasks",
    "jobs.update_task",
    "jobs.insert_task",
    "jobs.list_agent_tasks",
    "jobs.list_transitional_tasks",
    "jobs.list_active_job_tasks",
    "jobs.put_placement_results",
    "jobs.get_placement_result",
    "jobs.put_events",
    "jobs.read_events",
    "agents.register_agent",
    "agents.get_agent",
    "agents.list_agents",
    "agents.heartbeat",
    "agents.set_agent_state",
    "agents.last_report",
    "agents.list_reports",
    "agents.deregister_agent",
    "agents.report_heartbeat",
    "leases.acquire_or_renew",
    "leases.release",
    "allocations.commit_placements",
    "allocations.finish_and_release",
    "commands.send_commands",
    "commands.ensure_agent_queue",
    "source.receive",
    "source.delete",
    "source.release",
    "source.extend",
    "status.send",
    "requests.send",
    "dead_letters.send",
    "rejections.reject",
    "events.publish",
    "fleet.pool_instances",
    "fleet.instance_types",
    "fleet.subnets",
    "fleet.launch",
    "fleet.terminate",
    "scaler_state.load",
    "scaler_state.save",
];

/// What an injected fault does to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Refused before anything happens, as a throttled or unreachable service: `Unavailable`.
    Throttle,
    /// Refused before anything happens, as a bug or a misconfiguration would: `Internal`.
    Fail,
    /// The call happens, but its answer is lost (a timeout after the write): `Unavailable`.
    LostReply,
}

/// A fault named an operation that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no operation matches {pattern:?}; expected one of titus_memory::faults::OPERATIONS, `port.*` or `*`")]
pub struct UnknownOperation {
    pub pattern: String,
}

#[derive(Debug, Clone)]
enum Trigger {
    Next(u32),
    /// Out of 2^32: the chance per call.
    Chance(u64),
}

#[derive(Debug, Clone)]
struct Rule {
    pattern: String,
    fault: Fault,
    trigger: Trigger,
}

impl Rule {
    fn matches(&self, operation: &str) -> bool {
        matches_pattern(&self.pattern, operation)
    }
}

fn matches_pattern(pattern: &str, operation: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => operation.starts_with(prefix),
        None => pattern == operation,
    }
}

/// SplitMix64: small, fast and the same on every machine for one seed.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[derive(Debug)]
struct Plan {
    rules: Vec<Rule>,
    rng: SplitMix64,
}

/// The faults to inject into a world's calls; clones share one plan.
#[derive(Debug, Clone)]
pub struct Faults {
    plan: Arc<Mutex<Plan>>,
}

impl Faults {
    pub(crate) fn new(seed: u64) -> Faults {
        Faults {
            plan: Arc::new(Mutex::new(Plan {
                rules: Vec::new(),
                rng: SplitMix64(seed),
            })),
        }
    }

    fn plan(&self) -> std::sync::MutexGuard<'_, Plan> {
        self.plan.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn check(&self, pattern: &str) -> Result<(), UnknownOperation> {
        if OPERATIONS.iter().any(|op| matches_pattern(pattern, op)) {
            Ok(())
        } else {
            Err(UnknownOperation {
                pattern: pattern.to_owned(),
            })
        }
    }

    fn add(&self, pattern: &str, fault: Fault, trigger: Trigger) -> Result<(), UnknownOperation> {
        self.check(pattern)?;
        self.plan().rules.push(Rule {
            pattern: pattern.to_owned(),
            fault,
            trigger,
        });
        Ok(())
    }

    /// The next `calls` calls of the operations `pattern` names get `fault`.
    pub fn fail_next(
        &self,
        pattern: &str,
        calls: u32,
        fault: Fault,
    ) -> Result<(), UnknownOperation> {
        if calls == 0 {
            // Still checked, so a misspelt name fails however many calls it names.
            return self.check(pattern);
        }
        self.add(pattern, fault, Trigger::Next(calls))
    }

    /// Each call of the operations `pattern` names gets `fault` with `probability` (0 to 1),
    /// drawn from the world's seeded generator.
    pub fn fail_with_probability(
        &self,
        pattern: &str,
        probability: f64,
        fault: Fault,
    ) -> Result<(), UnknownOperation> {
        let chance = (probability.clamp(0.0, 1.0) * f64::from(u32::MAX)) as u64;
        self.add(pattern, fault, Trigger::Chance(chance))
    }

    /// No more faults.
    pub fn clear(&self) {
        self.plan().rules.clear();
    }

    /// The fault this call of `operation` gets, if any. The first matching rule decides.
    pub(crate) fn draw(&self, operation: &str) -> Option<Fault> {
        let mut plan = self.plan();
        let Plan { rules, rng } = &mut *plan;
        let mut fired = None;
        for (i, rule) in rules.iter_mut().enumerate() {
            if !rule.matches(operation) {
                continue;
            }
            match &mut rule.trigger {
                Trigger::Next(left) => {
                    *left = left.saturating_sub(1);
                    fired = Some((i, rule.fault, *left == 0));
                    break;
                }
                Trigger::Chance(chance) => {
                    if (rng.next() >> 32) < *chance {
                        fired = Some((i, rule.fault, false));
                        break;
                    }
                }
            }
        }
        let (index, fault, used_up) = fired?;
        if used_up {
            rules.remove(index);
        }
        Some(fault)
    }
}

/// The error a port returns for an injected fault.
pub(crate) trait Injected {
    fn injected(operation: &str, fault: Fault) -> Self;
}

fn message(operation: &str, fault: Fault) -> String {
    match fault {
        Fault::Throttle => format!("{operation}: injected throttling"),
        Fault::Fail => format!("{operation}: injected failure"),
        Fault::LostReply => format!("{operation}: injected lost reply (the call was applied)"),
    }
}

impl Injected for StoreError {
    fn injected(operation: &str, fault: Fault) -> Self {
        match fault {
            Fault::Fail => StoreError::Internal(message(operation, fault)),
            _ => StoreError::Unavailable(message(operation, fault)),
        }
    }
}

impl Injected for QueueError {
    fn injected(operation: &str, fault: Fault) -> Self {
        match fault {
            Fault::Fail => QueueError::Internal(message(operation, fault)),
            _ => QueueError::Unavailable(message(operation, fault)),
        }
    }
}

impl Injected for LeaseError {
    fn injected(operation: &str, fault: Fault) -> Self {
        LeaseError::Store(StoreError::injected(operation, fault))
    }
}

impl Injected for CommitError {
    fn injected(operation: &str, fault: Fault) -> Self {
        CommitError::Store(StoreError::injected(operation, fault))
    }
}

impl Injected for StateError {
    fn injected(operation: &str, fault: Fault) -> Self {
        StateError::Store(StoreError::injected(operation, fault))
    }
}

impl Injected for FleetError {
    fn injected(operation: &str, fault: Fault) -> Self {
        FleetError {
            operation: "injected",
            message: message(operation, fault),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_n_calls_fail_then_calls_succeed() {
        let faults = Faults::new(1);
        faults
            .fail_next("jobs.update_task", 2, Fault::Throttle)
            .unwrap();

        let drawn: Vec<_> = (0..3).map(|_| faults.draw("jobs.update_task")).collect();

        assert_eq!(
            drawn,
            vec![Some(Fault::Throttle), Some(Fault::Throttle), None]
        );
        assert_eq!(
            faults.draw("jobs.get_task"),
            None,
            "other operations are untouched"
        );
        faults.fail_next("jobs.get_task", 0, Fault::Fail).unwrap();
        assert_eq!(faults.draw("jobs.get_task"), None, "no calls, no faults");
    }

    #[test]
    fn a_probability_draws_the_same_faults_for_the_same_seed() {
        let run = |seed| {
            let faults = Faults::new(seed);
            faults
                .fail_with_probability("jobs.*", 0.3, Fault::Fail)
                .unwrap();
            (0..200)
                .map(|_| faults.draw("jobs.get_task").is_some())
                .collect::<Vec<_>>()
        };

        let first = run(7);
        let fired = first.iter().filter(|f| **f).count();

        assert_eq!(first, run(7));
        assert_ne!(first, run(8));
        assert!((30..=90).contains(&fired), "about 30% of 200, got {fired}");
    }

    #[test]
    fn an_operation_that_does_not_exist_is_refused() {
        let faults = Faults::new(1);

        let err = faults
            .fail_next("jobs.updte_task", 1, Fault::Fail)
            .unwrap_err();

        assert!(err.to_string().contains("\"jobs.updte_task\""), "{err}");
        assert!(faults.fail_next("*", 1, Fault::Fail).is_ok());
    }
}
