//! Every port of `titus_core::ports`, in process, keeping DynamoDB's and SQS's semantics: the
//! conditional writes and typed conflicts of the AWS adapters, transactions of at most 100
//! actions applied whole or not at all, pages of at most 1 MB with opaque cursors, sparse indexes
//! that may lag their tables, batches of at most 10 messages, visibility timeouts, dead-letter
//! queues after a number of receives. Every call is metered (request units by DynamoDB's rules,
//! requests per AWS operation), can be made to fail on purpose, deterministically, and, with a
//! [`LatencyModel`], waits on tokio's clock the drawn latency of each AWS request it made (for
//! simulations on a paused clock).
//!
//! A [`MemoryWorld`] is one stage: clone it freely, take each port from it
//! ([`MemoryWorld::jobs`], [`MemoryWorld::command_source`], …) or all of them as
//! [`MemoryPorts`], move its [`ManualClock`], inject [`Faults`], read the [`MeterSnapshot`], and
//! read back what reached its queues.
//!
//! It serves unit tests and simulations; the same contract suite (`titus-contract`) runs against
//! it and against the AWS adapters on the emulator, and it never replaces the emulator tests.

mod agents;
mod clock;
pub mod faults;
mod fleet;
mod index;
mod inspect;
mod items;
mod jobs;
mod latency;
mod lease;
mod listings;
mod logs;
mod metering;
mod pages;
mod ports;
mod queues;
mod rate;
mod scaler_state;
mod sinks;
mod transaction;
mod world;

pub use agents::MemoryAgentStore;
pub use clock::{ManualClock, DEFAULT_START_MS};
pub use faults::{Fault, Faults, UnknownOperation};
pub use fleet::MemoryFleet;
pub use jobs::MemoryJobStore;
pub use latency::{LatencyModel, Percentiles};
pub use lease::{MemoryAllocationStore, MemoryLeaseStore};
pub use logs::MemoryTaskLogs;
pub use metering::{MeterSnapshot, READ_UNIT_BYTES, SQS_BILLING_CHUNK_BYTES, WRITE_UNIT_BYTES};
pub use pages::MAX_PAGE_BYTES;
pub use ports::MemoryPorts;
pub use queues::{QueuedMessage, MAX_MESSAGE_BYTES};
pub use rate::MemoryRateLimiter;
pub use scaler_state::MemoryScalerState;
pub use sinks::{
    MemoryAgentRequests, MemoryCommandQueue, MemoryCommandSource, MemoryDeadLetters,
    MemoryEventBus, MemoryRejections, MemoryStatusSink, DEAD_LETTERED_AT_ATTRIBUTE,
    EMPTY_BODY_PLACEHOLDER, REASON_ATTRIBUTE, SOURCE_MESSAGE_ID_ATTRIBUTE,
};
pub use world::{MemoryConfig, MemoryWorld};
