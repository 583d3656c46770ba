//! The agent's queue ports, where its commands come from and where its status updates go, are
//! the core's ([`titus_core::ports::CommandSource`], [`titus_core::ports::StatusSink`]): their
//! SQS adapters are `titus-aws`'s, and `testing.rs` has in-memory ones.

pub use titus_core::ports::{CommandSource, ReceivedMessage, StatusSink};
