//! The application layer: every use case of the control plane, written once over one bundle of
//! ports ([`titus_core::ports::Ports`]), so that the Lambda functions, the local stack, the
//! tests and the simulator all run the same code on AWS or in-process ports.
//!
//! | use case | module |
//! | --- | --- |
//! | job operations (create, kill, scale, enable, attributes, task kill) | [`jobs`] |
//! | admission of a descriptor (limits, then policy) | [`admission`], [`policy`] |
//! | listing tasks across jobs | [`query`] |
//! | SQS submission | [`submit`] |
//! | writing a new job's initial tasks | [`materialize`] |
//! | the scheduler's tick: snapshot → plan → fenced commit → dispatch | [`scheduler`] |
//! | status ingest from the agents | [`status`] |
//! | the reconciler: lost agents, stuck tasks, the periodic sweep | [`reconciler`] |
//! | the capacity scaler | [`scaler`] |
//!
//! Three pieces are shared by all of them, each written once: [`converge::converge_job`], the
//! one convergence function per job; [`kill::end_tasks`], the one kill path, which records the
//! change and tells the agent that holds the task; and [`rules`], the pure rules (retries, the
//! capacity count, stuck timeouts, runtime limits).
//!
//! Every operation reads, decides, and writes conditionally on the version it read; a lost race
//! is read again and decided again a bounded number of times. Time comes in as `now_ms`.

pub mod admission;
pub mod agents;
pub mod converge;
pub mod error;
pub mod events;
pub mod jobs;
pub mod kill;
pub mod materialize;
/// The metrics registry, from the domain crate (the agent records into it too).
pub mod metrics {
    pub use titus_core::metrics::*;
}
pub mod policy;
pub mod query;
pub mod reconciler;
pub mod rules;
pub mod scaler;
pub mod scheduler;
pub mod settings;
pub mod status;
pub mod submit;
pub mod tasks;
pub mod teams;

use std::sync::Mutex;

use titus_core::Ports;

pub use admission::{admit, request_hash};
pub(crate) use error::field_error;
pub use error::ControlError;
pub use jobs::{
    create_job, delete_attributes, kill_job, kill_task, kill_task_with, set_enabled,
    update_attributes, update_capacity, update_disruption_budget, update_job_processes,
    CapacityUpdate, KillOptions,
};
pub use policy::JobPolicy;
pub use query::{list_tasks, TaskFilter};
pub use settings::{Admission, Rules, SchedulerSettings, Settings};
pub use teams::Teams;

/// A message as a queue-triggered use case receives it (from Lambda's SQS event, or from the
/// local stack's stand-in for it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboundMessage {
    pub message_id: String,
    pub body: String,
    /// The sending principal (SQS's `SenderId`), where the queue says.
    pub sender_id: Option<String>,
}

/// What became of one inbound message, as far as its queue is concerned.
pub trait MessageOutcome {
    /// Whether the queue must deliver the message again (a partial batch failure).
    fn must_redeliver(&self) -> bool;
}

/// The control plane: its ports and the settings every use case reads. Built once per process
/// (a Lambda's cold start, the local stack) and shared.
#[derive(Debug)]
pub struct ControlPlane<P> {
    pub ports: P,
    pub settings: Settings,
    /// Where the reconciler's sweep of active jobs stopped; the next run goes on from there.
    /// Kept in memory: a cold start sweeps from the newest job again, which is harmless.
    sweep_cursor: Mutex<Option<String>>,
    /// What the reconciler's cross-check of agents' reports remembers between runs (kills sent
    /// for stray containers, tasks their agent stopped reporting). In memory too: a cold start
    /// only starts the clocks again, which delays, never hastens, what they decide.
    agent_watch: Mutex<reconciler::AgentWatch>,
    /// The placement results the scheduler wrote, so that it writes only what changed. In
    /// memory: a cold start writes each result once more.
    placement_results: Mutex<scheduler::results::ResultCache>,
    /// What the use cases count and measure, for `GET /metrics` and the Lambdas' EMF lines.
    pub metrics: metrics::Metrics,
    /// The last lease epoch a tick held, to count takeovers.
    last_epoch: std::sync::atomic::AtomicU64,
}

impl<P: Ports> ControlPlane<P> {
    pub fn new(ports: P, settings: Settings) -> ControlPlane<P> {
        ControlPlane {
            ports,
            settings,
            sweep_cursor: Mutex::new(None),
            agent_watch: Mutex::default(),
            placement_results: Mutex::default(),
            metrics: metrics::Metrics::default(),
            last_epoch: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn ports(&self) -> &P {
        &self.ports
    }

    pub fn rules(&self) -> &Rules {
        &self.settings.rules
    }
}
