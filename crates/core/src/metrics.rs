//! Application metrics, kept in their process (the control plane's, and each agent's): counters (totals since the
//! process started) and gauges (the last value). Read two ways, from the one registry:
//!
//! - [`Metrics::prometheus`]: Prometheus' text format, served locally at `GET /metrics`;
//! - [`Metrics::emf`]: one CloudWatch Embedded Metric Format line with what changed since the
//!   last line (counters as the increase, gauges as their value), which a Lambda prints after
//!   each invocation for CloudWatch to turn into metrics.
//!
//! The use cases record into it with [`Metrics::add`] and [`Metrics::set`]; no I/O.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// The CloudWatch namespace of every metric.
pub const NAMESPACE: &str = "Titus";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One metric: its name (CloudWatch's; Prometheus' is `titus_` + snake case), kind, unit
/// (CloudWatch's unit names) and meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Def {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: &'static str,
    pub help: &'static str,
}

const fn counter(name: &'static str, unit: &'static str, help: &'static str) -> Def {
    Def {
        name,
        kind: Kind::Counter,
        unit,
        help,
    }
}

const fn gauge(name: &'static str, unit: &'static str, help: &'static str) -> Def {
    Def {
        name,
        kind: Kind::Gauge,
        unit,
        help,
    }
}

pub const TICKS: Def = counter("Ticks", "Count", "Scheduler ticks run.");
pub const TICK_ERRORS: Def = counter("TickErrors", "Count", "Scheduler ticks that failed.");
pub const TICK_DURATION: Def = gauge(
    "TickDurationMs",
    "Milliseconds",
    "How long the last scheduler tick took.",
);
pub const PLACED: Def = counter(
    "TasksPlaced",
    "Count",
    "Tasks placed (committed) by the scheduler.",
);
pub const UNPLACED: Def = gauge(
    "TasksUnplaced",
    "Count",
    "Pending tasks the last tick considered and could place nowhere.",
);
pub const CONFLICTS: Def = counter(
    "PlacementConflicts",
    "Count",
    "Placements refused by a conditional write (lost races), planned again.",
);
pub const MATERIALIZED: Def = counter(
    "TasksMaterialized",
    "Count",
    "Initial tasks the scheduler wrote for newly accepted jobs.",
);
pub const REDISPATCHED: Def = counter(
    "PlacementsRedispatched",
    "Count",
    "Placements sent again because their agent did not acknowledge them.",
);
pub const DISPATCH_FAILURES: Def = counter(
    "DispatchFailures",
    "Count",
    "Committed placements whose message could not be sent (sent again later).",
);
pub const PENDING: Def = gauge(
    "TasksPending",
    "Count",
    "Pending tasks left after the last tick (at least: a tick reads a bounded number).",
);
pub const OLDEST_PENDING_AGE: Def = gauge(
    "OldestPendingAgeMs",
    "Milliseconds",
    "Age of the oldest pending task the last tick read (0 when none).",
);
pub const LAUNCH_LATENCY_MAX: Def = gauge(
    "SubmitToLaunchedMaxMs",
    "Milliseconds",
    "The longest time from a task's creation to its placement, among the last tick's placements.",
);
pub const LAUNCH_LATENCY_SUM: Def = counter(
    "SubmitToLaunchedSumMs",
    "Milliseconds",
    "The sum of creation-to-placement times of placed tasks (divide by TasksPlaced).",
);
pub const LEASE_HELD: Def = gauge(
    "LeaseHeld",
    "Count",
    "1 when the last tick held the scheduler's lease, else 0.",
);
pub const LEASE_TAKEOVERS: Def = counter(
    "LeaseTakeovers",
    "Count",
    "Ticks that held the lease at a new epoch (a new leader).",
);
pub const AGENTS_LOST: Def = counter(
    "AgentsLost",
    "Count",
    "Agents the reconciler declared lost.",
);
pub const TASKS_LOST: Def = counter(
    "TasksLost",
    "Count",
    "Tasks finished as lost (their agent was lost or stopped reporting them).",
);
pub const TASKS_STUCK: Def = counter(
    "TasksStuck",
    "Count",
    "Tasks finished as stuck in a transitional state.",
);
pub const RECONCILE_ERRORS: Def = counter(
    "ReconcileErrors",
    "Count",
    "Items a reconciler run failed on (tried again next run).",
);

pub const LEASE_RENEWALS: Def = counter(
    "LeaseRenewals",
    "Count",
    "Ticks that renewed (or took) the scheduler's lease.",
);
pub const JOBS_ACCEPTED: Def = counter(
    "JobsAccepted",
    "Count",
    "Jobs created (through the API or the submit queue; a repeated idempotent create is not counted).",
);
pub const SUBMISSIONS_REJECTED: Def = counter(
    "SubmissionsRejected",
    "Count",
    "Messages of the submit queue refused and sent to the rejection queue with their reasons.",
);
pub const API_REQUESTS: Def = counter("ApiRequests", "Count", "API requests answered.");
pub const API_CLIENT_ERRORS: Def = counter(
    "ApiClientErrors",
    "Count",
    "API requests answered with a 4xx status.",
);
pub const API_SERVER_ERRORS: Def = counter(
    "ApiServerErrors",
    "Count",
    "API requests answered with a 5xx status.",
);
pub const API_LATENCY_MAX: Def = gauge(
    "ApiLatencyMaxMs",
    "Milliseconds",
    "The slowest API answer since the last report.",
);
pub const STATUS_APPLIED: Def = counter(
    "StatusUpdatesApplied",
    "Count",
    "Agents' status updates that changed a task.",
);
pub const STATUS_IGNORED: Def = counter(
    "StatusUpdatesIgnored",
    "Count",
    "Agents' status updates that changed nothing: duplicates, stale or from an agent that does not hold the task.",
);
pub const EVENTS_WRITTEN: Def = counter(
    "EventsWritten",
    "Count",
    "Events written to the event feed (each in its job's feed and the every-job feed).",
);
pub const EVENTS_PUBLISHED: Def = counter(
    "EventsPublished",
    "Count",
    "Events put on the stage's EventBridge bus.",
);
pub const EVENT_STREAM_AGE: Def = gauge(
    "EventStreamAgeMs",
    "Milliseconds",
    "How long after it happened (its own timestamp) the oldest change of a batch reached the event feed, the highest since the last report.",
);
pub const AGENTS_LAUNCHED: Def =
    counter("AgentsLaunched", "Count", "Instances the scaler launched.");
pub const AGENTS_TERMINATED: Def = counter(
    "AgentsTerminated",
    "Count",
    "Instances the scaler terminated.",
);
pub const POOL_AGENTS_DESIRED: Def = gauge(
    "PoolAgentsDesired",
    "Count",
    "The instances every pool holds after the scaler's last run: those it found, plus those it launched, minus those it terminated.",
);
pub const AGENT_TASKS_RUNNING: Def = gauge(
    "AgentTasksRunning",
    "Count",
    "Tasks an agent runs (each agent reports once a minute: the Sum over a minute is the fleet's).",
);
pub const AGENT_LAUNCH_FAILURES: Def = counter(
    "AgentLaunchFailures",
    "Count",
    "Launches an agent could not start (image pull, create, start).",
);
pub const AGENT_HEARTBEAT_FAILURES: Def = counter(
    "AgentHeartbeatFailures",
    "Count",
    "Heartbeats an agent could not write.",
);
pub const AGENT_IMAGE_PULL_MAX: Def = gauge(
    "AgentImagePullMaxMs",
    "Milliseconds",
    "An agent's slowest image pull since its last report.",
);

#[derive(Debug, Clone, Copy)]
struct Value {
    def: Def,
    value: f64,
    /// A counter's value at the last EMF line.
    emitted: f64,
    /// Whether a gauge changed since the last EMF line.
    fresh: bool,
}

/// The registry.
#[derive(Debug, Default)]
pub struct Metrics {
    values: Mutex<BTreeMap<&'static str, Value>>,
}

impl Metrics {
    fn with(&self, def: Def, change: impl FnOnce(&mut Value)) {
        let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        let value = values.entry(def.name).or_insert(Value {
            def,
            value: 0.0,
            emitted: 0.0,
            fresh: false,
        });
        change(value);
    }

    /// Adds `by` to a counter.
    pub fn add(&self, def: Def, by: f64) {
        debug_assert_eq!(def.kind, Kind::Counter, "{} is not a counter", def.name);
        self.with(def, |v| v.value += by);
    }

    /// Sets a gauge.
    pub fn set(&self, def: Def, value: f64) {
        debug_assert_eq!(def.kind, Kind::Gauge, "{} is not a gauge", def.name);
        self.with(def, |v| {
            v.value = value;
            v.fresh = true;
        });
    }

    /// Raises a gauge to `value` if it is higher than what was recorded since the last EMF line
    /// (the slowest of a period).
    pub fn max(&self, def: Def, value: f64) {
        debug_assert_eq!(def.kind, Kind::Gauge, "{} is not a gauge", def.name);
        self.with(def, |v| {
            v.value = if v.fresh { v.value.max(value) } else { value };
            v.fresh = true;
        });
    }

    /// A metric's current value (0 when never recorded).
    pub fn get(&self, def: Def) -> f64 {
        let values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        values.get(def.name).map_or(0.0, |v| v.value)
    }

    /// Every metric in Prometheus' text exposition format, with `labels` on each sample.
    pub fn prometheus(&self, labels: &[(&str, &str)]) -> String {
        let values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        let labels = if labels.is_empty() {
            String::new()
        } else {
            let inner: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
                .collect();
            format!("{{{}}}", inner.join(","))
        };
        let mut out = String::new();
        for v in values.values() {
            let name = prometheus_name(v.def);
            let kind = match v.def.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            let _ = writeln!(out, "# HELP {name} {}", v.def.help);
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name}{labels} {}", v.value);
        }
        out
    }

    /// One EMF line with the counters' increase and the gauges set since the last line, under
    /// `dimensions`; `None` when nothing changed. Marks what it reports as emitted.
    pub fn emf(&self, dimensions: &[(&str, &str)], now_ms: u64) -> Option<String> {
        let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        let mut metrics = Vec::new();
        let mut fields = serde_json::Map::new();
        for v in values.values_mut() {
            let reported = match v.def.kind {
                Kind::Counter if v.value != v.emitted => Some(v.value - v.emitted),
                Kind::Gauge if v.fresh => Some(v.value),
                _ => None,
            };
            let Some(reported) = reported else { continue };
            v.emitted = v.value;
            v.fresh = false;
            metrics.push(serde_json::json!({"Name": v.def.name, "Unit": v.def.unit}));
            fields.insert(v.def.name.to_owned(), serde_json::json!(reported));
        }
        if metrics.is_empty() {
            return None;
        }
        for (k, v) in dimensions {
            fields.insert((*k).to_owned(), serde_json::json!(v));
        }
        let names: Vec<&str> = dimensions.iter().map(|(k, _)| *k).collect();
        fields.insert(
            "_aws".to_owned(),
            serde_json::json!({
                "Timestamp": now_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [names],
                    "Metrics": metrics,
                }],
            }),
        );
        Some(serde_json::Value::Object(fields).to_string())
    }
}

/// `TasksPlaced` → `titus_tasks_placed_total`; `TickDurationMs` → `titus_tick_duration_ms`.
fn prometheus_name(def: Def) -> String {
    let mut name = String::from("titus");
    for c in def.name.chars() {
        if c.is_ascii_uppercase() {
            name.push('_');
            name.push(c.to_ascii_lowercase());
        } else {
            name.push(c);
        }
    }
    if def.kind == Kind::Counter {
        name.push_str("_total");
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_has_help_type_and_labelled_samples() {
        let m = Metrics::default();
        m.add(PLACED, 3.0);
        m.add(PLACED, 2.0);
        m.set(TICK_DURATION, 41.5);

        let text = m.prometheus(&[("stage", "dev\"1")]);

        assert!(
            text.contains("# TYPE titus_tasks_placed_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("titus_tasks_placed_total{stage=\"dev\\\"1\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE titus_tick_duration_ms gauge\n"),
            "{text}"
        );
        assert!(
            text.contains("titus_tick_duration_ms{stage=\"dev\\\"1\"} 41.5\n"),
            "{text}"
        );
    }

    #[test]
    fn an_emf_line_reports_what_changed_since_the_last_one() {
        let m = Metrics::default();
        m.add(PLACED, 5.0);
        m.set(LEASE_HELD, 1.0);

        let first: serde_json::Value =
            serde_json::from_str(&m.emf(&[("Stage", "dev")], 1_000).unwrap()).unwrap();
        m.add(PLACED, 2.0);
        let second: serde_json::Value =
            serde_json::from_str(&m.emf(&[("Stage", "dev")], 2_000).unwrap()).unwrap();
        let third = m.emf(&[("Stage", "dev")], 3_000);

        assert_eq!(first["TasksPlaced"], 5.0);
        assert_eq!(first["LeaseHeld"], 1.0);
        assert_eq!(first["Stage"], "dev");
        let directive = &first["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE);
        assert_eq!(directive["Dimensions"], serde_json::json!([["Stage"]]));
        assert_eq!(first["_aws"]["Timestamp"], 1_000);
        assert!(directive["Metrics"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!({"Name": "TasksPlaced", "Unit": "Count"})));
        assert_eq!(second["TasksPlaced"], 2.0);
        assert!(
            second.get("LeaseHeld").is_none(),
            "an unchanged gauge is left out"
        );
        assert_eq!(third, None);
    }

    #[test]
    fn a_max_gauge_reports_the_highest_value_of_each_period() {
        let m = Metrics::default();
        m.max(API_LATENCY_MAX, 12.0);
        m.max(API_LATENCY_MAX, 40.0);
        m.max(API_LATENCY_MAX, 7.0);
        let first: serde_json::Value =
            serde_json::from_str(&m.emf(&[("Stage", "dev")], 1_000).unwrap()).unwrap();
        m.max(API_LATENCY_MAX, 5.0);
        let second: serde_json::Value =
            serde_json::from_str(&m.emf(&[("Stage", "dev")], 2_000).unwrap()).unwrap();

        assert_eq!(first["ApiLatencyMaxMs"], 40.0);
        assert_eq!(second["ApiLatencyMaxMs"], 5.0, "a new period starts afresh");
    }
}
