//! The in-process world: one stage's tables, queues and fleet behind one lock, its clock, its
//! faults and its meter. Cheap to clone (every clone is the same world); each port is a view of
//! it, obtained with [`MemoryWorld::jobs`], [`MemoryWorld::agents`], … or all at once with
//! [`MemoryWorld::ports`].
//!
//! Every port call is one [`MemoryWorld::run`]: draw its injected fault, then act on the state
//! under the lock, at the clock's time. The lock is never held across an await.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use titus_core::ports::Clock;
use titus_core::Task;

use crate::agents::{AgentRow, HeartbeatRow};
use crate::clock::{ManualClock, DEFAULT_START_MS};
use crate::faults::{Fault, Faults, Injected};
use crate::fleet::FleetState;
use crate::index::Table;
use crate::items::JobItem;
use crate::latency::LatencyModel;
use crate::lease::LeaseRow;
use crate::metering::{Meter, MeterSnapshot};
use crate::queues::Queues;

/// How a world is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryConfig {
    /// Names the queues as the stage's resources are named (`titus-{stage}-status`).
    pub stage: String,
    /// Where the clock starts.
    pub start_ms: u64,
    /// How long a write takes to reach the tables' indexes, on the world's clock.
    pub index_lag_ms: u64,
    /// How long a received agent command stays hidden.
    pub agent_queue_visibility_timeout_ms: u64,
    /// Receives of an agent command before it moves to the agent queue's dead-letter queue.
    pub agent_queue_max_receives: u32,
    /// Receives of a status message before it moves to the status dead-letter queue.
    pub status_queue_max_receives: u32,
    /// Seeds the generator of probabilistic faults.
    pub fault_seed: u64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            stage: "memory".to_owned(),
            start_ms: DEFAULT_START_MS,
            index_lag_ms: 0,
            agent_queue_visibility_timeout_ms: 60_000,
            agent_queue_max_receives: 3,
            status_queue_max_receives: 5,
            fault_seed: 0x0074_6974_7573,
        }
    }
}

/// A stored idempotency record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdempotencyRecord {
    pub(crate) job_id: String,
    pub(crate) request_hash: String,
}

/// Everything the world holds.
#[derive(Debug)]
pub(crate) struct State {
    /// The clock's time when the current call began.
    pub(crate) now_ms: u64,
    pub(crate) index_lag_ms: u64,
    pub(crate) jobs: Table<JobItem>,
    pub(crate) tasks: Table<Task>,
    pub(crate) idempotency: HashMap<String, IdempotencyRecord>,
    /// Quota usage records by scope key.
    pub(crate) usage: BTreeMap<String, titus_core::quota::Usage>,
    /// The scheduler's last placement result per job, with its item size.
    pub(crate) placement_results: HashMap<String, (titus_core::placement::PlacementResult, usize)>,
    /// The event feed: (feed key, event key) → the event and its item size.
    /// What the event bus was given, in order.
    pub(crate) published_events: Vec<titus_core::events::Event>,
    pub(crate) events:
        std::collections::BTreeMap<(String, String), (titus_core::events::Event, usize)>,
    pub(crate) agents: BTreeMap<String, AgentRow>,
    /// The agents' heartbeat items, by heartbeat key.
    pub(crate) heartbeats: HashMap<String, HeartbeatRow>,
    pub(crate) leases: HashMap<String, LeaseRow>,
    pub(crate) queues: Queues,
    pub(crate) fleet: FleetState,
    pub(crate) meter: Meter,
}

impl State {
    /// Writes a job item (not in a transaction), metering the index writes; returns the sizes
    /// before and after for the caller's table write.
    pub(crate) fn put_job(&mut self, item: JobItem) -> (usize, usize) {
        let id = item.job.id.to_string();
        self.jobs
            .put(&id, item, self.now_ms, self.index_lag_ms, &mut self.meter)
    }

    pub(crate) fn put_task(&mut self, task: Task) -> (usize, usize) {
        let id = task.id.to_string();
        self.tasks
            .put(&id, task, self.now_ms, self.index_lag_ms, &mut self.meter)
    }
}

struct Inner {
    config: MemoryConfig,
    clock: ManualClock,
    faults: Faults,
    state: Mutex<State>,
    /// Wakes receivers waiting on an empty queue.
    arrivals: tokio::sync::Notify,
    latency: RwLock<Option<LatencyModel>>,
}

/// One stage, in process. Clones share it.
#[derive(Clone)]
pub struct MemoryWorld {
    inner: Arc<Inner>,
}

impl fmt::Debug for MemoryWorld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryWorld")
            .field("stage", &self.inner.config.stage)
            .field("now_ms", &self.inner.clock.now_ms())
            .finish_non_exhaustive()
    }
}

impl Default for MemoryWorld {
    fn default() -> Self {
        MemoryWorld::new(MemoryConfig::default())
    }
}

impl MemoryWorld {
    pub fn new(config: MemoryConfig) -> MemoryWorld {
        let clock = ManualClock::new(config.start_ms);
        let state = State {
            now_ms: config.start_ms,
            index_lag_ms: config.index_lag_ms,
            jobs: Table::new(),
            tasks: Table::new(),
            idempotency: HashMap::new(),
            usage: BTreeMap::new(),
            placement_results: HashMap::new(),
            events: std::collections::BTreeMap::new(),
            published_events: Vec::new(),
            agents: BTreeMap::new(),
            heartbeats: HashMap::new(),
            leases: HashMap::new(),
            queues: Queues::for_stage(&config),
            fleet: FleetState::default(),
            meter: Meter::default(),
        };
        MemoryWorld {
            inner: Arc::new(Inner {
                faults: Faults::new(config.fault_seed),
                config,
                clock,
                state: Mutex::new(state),
                arrivals: tokio::sync::Notify::new(),
                latency: RwLock::new(None),
            }),
        }
    }

    pub fn config(&self) -> &MemoryConfig {
        &self.inner.config
    }

    /// The world's clock; clones share its time.
    pub fn clock(&self) -> &ManualClock {
        &self.inner.clock
    }

    /// The faults to inject into this world's calls.
    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    /// What the calls so far would have cost on AWS.
    pub fn meter(&self) -> MeterSnapshot {
        self.lock().meter.snapshot()
    }

    /// From now on, writes reach the indexes `lag_ms` after the table.
    pub fn set_index_lag_ms(&self, lag_ms: u64) {
        self.lock().index_lag_ms = lag_ms;
    }

    /// How many tasks are stored.
    pub fn task_count(&self) -> usize {
        self.lock().tasks.len()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads or changes the state at the clock's time, outside any port call (inspection).
    pub(crate) fn inspect<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self.lock();
        state.now_ms = self.inner.clock.now_ms();
        f(&mut state)
    }

    /// Gives every AWS request a port call makes a latency, waited on tokio's clock after the
    /// call has acted (see [`LatencyModel`]): with a paused tokio clock, the time a simulation's
    /// steps take is what they would take on AWS, concurrent calls overlapping.
    pub fn set_latency(&self, model: LatencyModel) {
        *self
            .inner
            .latency
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(model);
    }

    /// One port call named `operation`: its injected fault, if one is drawn, else `f` on the
    /// state at the clock's time; then, with a latency model, the latencies of the AWS requests
    /// it made, one after another.
    pub(crate) async fn run<T, E: Injected>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&mut State) -> Result<T, E>,
    ) -> Result<T, E> {
        let (result, requests) = self.act(operation, f);
        let delay = match &*self
            .inner
            .latency
            .read()
            .unwrap_or_else(PoisonError::into_inner)
        {
            Some(model) if !requests.is_empty() => {
                requests.iter().map(|r| model.latency(r)).sum::<Duration>()
            }
            _ => Duration::ZERO,
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        result
    }

    /// The call itself, under the lock; returns the AWS requests it made.
    fn act<T, E: Injected>(
        &self,
        operation: &'static str,
        f: impl FnOnce(&mut State) -> Result<T, E>,
    ) -> (Result<T, E>, Vec<&'static str>) {
        let fault = self.inner.faults.draw(operation);
        let mut state = self.lock();
        state.now_ms = self.inner.clock.now_ms();
        state.meter.start_call();
        let result = match fault {
            Some(fault @ (Fault::Throttle | Fault::Fail)) => {
                state.meter.fault(operation);
                Err(E::injected(operation, fault))
            }
            Some(Fault::LostReply) => {
                // What it returned is dropped, as a reply lost on the way back would be.
                let _ = f(&mut state);
                state.meter.fault(operation);
                Err(E::injected(operation, Fault::LostReply))
            }
            None => f(&mut state),
        };
        let requests = state.meter.take_call_requests();
        (result, requests)
    }

    /// Wakes receivers waiting for messages.
    pub(crate) fn notify_arrivals(&self) {
        self.inner.arrivals.notify_waiters();
    }

    /// A future that completes at the next arrival of a message anywhere in the world. Enable it
    /// before looking at a queue, so that an arrival between the look and the wait is not missed.
    pub fn next_arrival(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.arrivals.notified()
    }
}
