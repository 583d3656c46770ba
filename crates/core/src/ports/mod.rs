//! The ports: everything the application layer needs from the outside world, as traits, and
//! [`Ports`], the one bundle of them every use case takes.
//!
//! - [`store`]: jobs and tasks ([`JobStore`]);
//! - [`agents`]: the hosts' records ([`AgentStore`]);
//! - [`lease`]: the scheduler's fenced lease and the allocation commits ([`LeaseStore`],
//!   [`AllocationStore`]);
//! - [`queues`]: agents' command queues, the status queue, dead letters and rejections;
//! - [`fleet`]: the EC2 fleet and the scaler's memory;
//! - [`rate`]: per-caller rate limits ([`RateLimiter`]), held by the API beside the bundle;
//! - [`logs`]: tasks' output in CloudWatch Logs ([`TaskLogReader`]), held by the API too;
//! - [`Clock`]: the time.
//!
//! Two implementations exist: the AWS adapters (`titus-aws`: DynamoDB, SQS, EC2) and the
//! in-process one (`titus-memory`), which keeps DynamoDB's and SQS's semantics for unit tests and
//! simulation. One contract suite (`titus-contract`) runs against both.

pub mod agents;
pub mod cursor;
pub mod fleet;
pub mod lease;
pub mod logs;
pub mod queues;
pub mod rate;
pub mod store;

use std::time::{SystemTime, UNIX_EPOCH};

pub use agents::AgentStore;
pub use cursor::PageCursor;
pub use fleet::{
    Fleet, FleetError, InstanceTypeInfo, LaunchOutcome, LaunchRecord, LaunchRequest,
    LaunchedInstance, Lifecycle, PoolInstance, ScalerState, ScalerStateStore, StateError, Subnet,
};
pub use lease::{AllocationStore, CommitError, Lease, LeaseError, LeaseStore, PlacementWrite};
pub use logs::{
    LogError, LogLine, LogLocation, LogPage, LogRead, TaskLogReader, TaskLogs,
    MAX_LOG_LINES_PER_READ,
};
pub use queues::{
    AgentRequestSink, CommandQueue, CommandSource, DeadLetter, DeadLetterSink, EventPublisher,
    QueueError, ReceivedMessage, RejectionSink, SendFailure, StatusSink, MAX_BATCH_MESSAGES,
};
pub use rate::{window_of, RateDecision, RateLimiter};
pub use store::{
    check_events_write, check_placement_results_write, CreateOutcome, IdempotencyKey, JobFilter,
    JobStore, Page, PageRequest, StoreError, MAX_EVENTS_PER_WRITE, MAX_INITIAL_TASKS_PER_WRITE,
    MAX_PLACEMENT_RESULTS_PER_WRITE, MAX_TRANSACTION_ITEMS,
};

/// The time, in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that is a function: the system's ([`now_ms`]) by default, another one in tests that
/// move time on their own.
#[derive(Debug, Clone, Copy)]
pub struct FnClock(pub fn() -> u64);

impl Default for FnClock {
    fn default() -> Self {
        FnClock(now_ms)
    }
}

impl Clock for FnClock {
    fn now_ms(&self) -> u64 {
        (self.0)()
    }
}

/// Milliseconds since the Unix epoch, from the system's clock; for the entry points that read
/// the time once and pass it on.
pub fn now_ms() -> u64 {
    SystemClock.now_ms()
}

/// The one bundle of ports a use case takes: a function is generic over one `P: Ports`, not a
/// list of type parameters. Each implementation (AWS, in-process) is one type.
pub trait Ports: Send + Sync + 'static {
    type Jobs: JobStore;
    type Agents: AgentStore;
    type Leases: LeaseStore;
    type Allocations: AllocationStore;
    type Commands: CommandQueue;
    type DeadLetters: DeadLetterSink;
    type Rejections: RejectionSink;
    type Fleet: Fleet;
    type ScalerState: ScalerStateStore;
    type Clock: Clock;

    fn jobs(&self) -> &Self::Jobs;
    fn agents(&self) -> &Self::Agents;
    fn leases(&self) -> &Self::Leases;
    fn allocations(&self) -> &Self::Allocations;
    /// Agents' own queues: launches and kills.
    fn commands(&self) -> &Self::Commands;
    /// The status queue's dead letters.
    fn dead_letters(&self) -> &Self::DeadLetters;
    /// Refused submissions.
    fn rejections(&self) -> &Self::Rejections;
    fn fleet(&self) -> &Self::Fleet;
    fn scaler_state(&self) -> &Self::ScalerState;
    fn clock(&self) -> &Self::Clock;
}

/// A bundle of ports as named fields, one type parameter each: what a test builds to replace one
/// port of a real bundle (to inject a race or a fault) and keep the rest, with the `with_*`
/// methods. Use cases never name it: they take `P: Ports`.
#[derive(Debug, Clone)]
pub struct PortSet<J, A, L, C, Q, D, R, F, S, K> {
    pub jobs: J,
    pub agents: A,
    pub leases: L,
    pub allocations: C,
    pub commands: Q,
    pub dead_letters: D,
    pub rejections: R,
    pub fleet: F,
    pub scaler_state: S,
    pub clock: K,
}

impl<J, A, L, C, Q, D, R, F, S, K> PortSet<J, A, L, C, Q, D, R, F, S, K> {
    /// The same ports with another job store.
    pub fn with_jobs<J2>(self, jobs: J2) -> PortSet<J2, A, L, C, Q, D, R, F, S, K> {
        PortSet {
            jobs,
            agents: self.agents,
            leases: self.leases,
            allocations: self.allocations,
            commands: self.commands,
            dead_letters: self.dead_letters,
            rejections: self.rejections,
            fleet: self.fleet,
            scaler_state: self.scaler_state,
            clock: self.clock,
        }
    }

    /// The same ports with another lease store.
    pub fn with_leases<L2>(self, leases: L2) -> PortSet<J, A, L2, C, Q, D, R, F, S, K> {
        PortSet {
            jobs: self.jobs,
            agents: self.agents,
            leases,
            allocations: self.allocations,
            commands: self.commands,
            dead_letters: self.dead_letters,
            rejections: self.rejections,
            fleet: self.fleet,
            scaler_state: self.scaler_state,
            clock: self.clock,
        }
    }

    /// The same ports with another allocation store.
    pub fn with_allocations<C2>(self, allocations: C2) -> PortSet<J, A, L, C2, Q, D, R, F, S, K> {
        PortSet {
            jobs: self.jobs,
            agents: self.agents,
            leases: self.leases,
            allocations,
            commands: self.commands,
            dead_letters: self.dead_letters,
            rejections: self.rejections,
            fleet: self.fleet,
            scaler_state: self.scaler_state,
            clock: self.clock,
        }
    }

    /// The same ports with another store of the scaler's memory.
    pub fn with_scaler_state<S2>(self, scaler_state: S2) -> PortSet<J, A, L, C, Q, D, R, F, S2, K> {
        PortSet {
            jobs: self.jobs,
            agents: self.agents,
            leases: self.leases,
            allocations: self.allocations,
            commands: self.commands,
            dead_letters: self.dead_letters,
            rejections: self.rejections,
            fleet: self.fleet,
            scaler_state,
            clock: self.clock,
        }
    }

    /// The same ports with another command queue.
    pub fn with_commands<Q2>(self, commands: Q2) -> PortSet<J, A, L, C, Q2, D, R, F, S, K> {
        PortSet {
            jobs: self.jobs,
            agents: self.agents,
            leases: self.leases,
            allocations: self.allocations,
            commands,
            dead_letters: self.dead_letters,
            rejections: self.rejections,
            fleet: self.fleet,
            scaler_state: self.scaler_state,
            clock: self.clock,
        }
    }
}

impl<J, A, L, C, Q, D, R, F, S, K> Ports for PortSet<J, A, L, C, Q, D, R, F, S, K>
where
    J: JobStore + 'static,
    A: AgentStore + 'static,
    L: LeaseStore + 'static,
    C: AllocationStore + 'static,
    Q: CommandQueue + 'static,
    D: DeadLetterSink + 'static,
    R: RejectionSink + 'static,
    F: Fleet + 'static,
    S: ScalerStateStore + 'static,
    K: Clock + 'static,
{
    type Jobs = J;
    type Agents = A;
    type Leases = L;
    type Allocations = C;
    type Commands = Q;
    type DeadLetters = D;
    type Rejections = R;
    type Fleet = F;
    type ScalerState = S;
    type Clock = K;

    fn jobs(&self) -> &J {
        &self.jobs
    }
    fn agents(&self) -> &A {
        &self.agents
    }
    fn leases(&self) -> &L {
        &self.leases
    }
    fn allocations(&self) -> &C {
        &self.allocations
    }
    fn commands(&self) -> &Q {
        &self.commands
    }
    fn dead_letters(&self) -> &D {
        &self.dead_letters
    }
    fn rejections(&self) -> &R {
        &self.rejections
    }
    fn fleet(&self) -> &F {
        &self.fleet
    }
    fn scaler_state(&self) -> &S {
        &self.scaler_state
    }
    fn clock(&self) -> &K {
        &self.clock
    }
}
