//! The scale simulator: the real control plane (the API router for creates, the scheduler's
//! tick, the status function, the reconciler) over the in-process ports, with simulated agents,
//! AWS latencies drawn from one table, and the bill from one price table. `cargo bench -p
//! titus-sim --bench scale` runs the shapes and prints what they measured; `tests/invariants.rs`
//! runs a small shape and checks the invariants.

pub mod aws;
pub mod bill;
pub mod run;
pub mod shape;

pub use run::{simulate, Options, Report};
pub use shape::Shape;

/// A current-thread runtime with a paused clock, as [`simulate`] needs.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
}
