//! The scheduler: one tick of Titus Master's scheduling loop, in small steps.
//!
//! 1. [`snapshot`]: renew the leader lease while reading the agents and the oldest pending tasks;
//!    write newly accepted jobs' tasks; read the tasks' jobs.
//! 2. [`plan`]: the placement engine's answer, as the writes that apply it (pure).
//! 3. [`commit`]: those writes in fenced transactions, chunk by chunk, each checking the lease's
//!    epoch; a lost lease stops everything.
//! 4. [`dispatch`]: each committed placement sent to its agent's queue; every few ticks, the
//!    placements their agents did not acknowledge in time are sent again.
//! 5. [`results`]: for each job with tasks that fit nowhere, why, written when it changes.
//! 6. [`defer`]: those tasks step aside for a backoff, so that the next tick reads work that may
//!    fit (no head-of-line blocking).
//!
//! The Step Functions loop (`statemachines/scheduler-loop.asl.json`) calls [`tick`] over and
//! over; the local stack does the same in a loop.

pub mod commit;
pub mod defer;
pub mod dispatch;
pub mod dry_run;
pub mod plan;
pub mod results;
pub mod snapshot;

use serde::{Deserialize, Serialize};
use titus_core::ports::{Clock, LeaseStore};
use titus_core::Ports;
use tracing::info;

use crate::{ControlError, ControlPlane};

/// How often a tick looks for placements their agents did not acknowledge: on the first tick of a
/// run and every this many ticks after. Idle ticks come about a second apart, so a placement is
/// sent again at most a few seconds after its acknowledgement timeout.
pub const REDISPATCH_EVERY_TICKS: u64 = 5;

/// What the loop passes to each tick.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TickInput {
    /// Who asks for the lease: the loop's execution name, the same for every tick of one run.
    pub owner: String,
    /// When the loop's run started, to end it before its time limit; absent or 0 on the first
    /// tick, which starts the clock.
    #[serde(default)]
    pub started_at_ms: Option<u64>,
    #[serde(default)]
    pub iteration: u64,
}

/// What a tick did; the loop decides from it whether to go on at once, wait, or stop.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TickSummary {
    /// The lease owner, passed on to the next tick.
    pub owner: String,
    /// When the loop's run started, passed on to the next tick.
    pub started_at_ms: u64,
    /// Initial tasks this tick wrote for newly accepted jobs (before placing them).
    #[serde(default)]
    pub materialized: u32,
    pub placed: u32,
    pub unplaced: u32,
    /// Unplaced tasks moved out of the next ticks' reads for their backoff.
    #[serde(default)]
    pub deferred: u32,
    /// Pending tasks left after this tick (at least; a tick reads a bounded number).
    pub pending_left: u32,
    pub lease_held: bool,
    pub epoch: u64,
    /// Placements sent again because their agent did not acknowledge them.
    pub redispatched: u32,
    /// Placements refused by a conditional write (a lost race); re-planned next tick.
    pub conflicts: u32,
    /// Placements committed but not delivered; sent again after the acknowledgement timeout.
    pub dispatch_failures: u32,
    /// The next tick's iteration number.
    pub iteration: u64,
    /// Whether the loop should tick again: the lease is held and the run has time left.
    pub continue_loop: bool,
}

/// One tick. Losing the lease is not an error: the summary says `leaseHeld: false` and the loop
/// stops. What the tick did is also recorded in the control plane's metrics.
pub async fn tick<P: Ports>(
    cp: &ControlPlane<P>,
    input: TickInput,
) -> Result<TickSummary, ControlError> {
    let started = std::time::Instant::now();
    let result = run_tick(cp, input).await;
    record(cp, result.as_ref().ok(), started.elapsed());
    result
}

fn record<P: Ports>(
    cp: &ControlPlane<P>,
    summary: Option<&TickSummary>,
    took: std::time::Duration,
) {
    use crate::metrics::*;
    let m = &cp.metrics;
    m.add(TICKS, 1.0);
    m.set(TICK_DURATION, took.as_secs_f64() * 1000.0);
    let Some(s) = summary else {
        m.add(TICK_ERRORS, 1.0);
        return;
    };
    m.add(PLACED, f64::from(s.placed));
    m.set(UNPLACED, f64::from(s.unplaced));
    m.add(CONFLICTS, f64::from(s.conflicts));
    m.add(MATERIALIZED, f64::from(s.materialized));
    m.add(REDISPATCHED, f64::from(s.redispatched));
    m.add(DISPATCH_FAILURES, f64::from(s.dispatch_failures));
    m.set(PENDING, f64::from(s.pending_left));
    m.set(LEASE_HELD, if s.lease_held { 1.0 } else { 0.0 });
    if s.lease_held {
        m.add(LEASE_RENEWALS, 1.0);
        let last = cp
            .last_epoch
            .swap(s.epoch, std::sync::atomic::Ordering::Relaxed);
        if last != 0 && last != s.epoch {
            m.add(LEASE_TAKEOVERS, 1.0);
        }
    }
}

async fn run_tick<P: Ports>(
    cp: &ControlPlane<P>,
    input: TickInput,
) -> Result<TickSummary, ControlError> {
    if input.owner.trim().is_empty() {
        return Err(ControlError::invalid(
            "owner",
            "is empty; expected the loop's execution name",
        ));
    }
    let now = cp.ports.clock().now_ms();
    let started_at_ms = input.started_at_ms.filter(|&s| s > 0).unwrap_or(now);
    let mut summary = TickSummary {
        owner: input.owner.clone(),
        started_at_ms,
        iteration: input.iteration + 1,
        ..TickSummary::default()
    };
    let Some(mut snapshot) = snapshot::read(cp, &input.owner, now, &mut summary).await? else {
        return Ok(summary);
    };

    // Unacknowledged placements wait at least the acknowledgement timeout, so their index need
    // not be read on every tick: on a run's first tick and every few after.
    if summary.iteration % REDISPATCH_EVERY_TICKS == 1 {
        summary.redispatched = dispatch::redispatch(cp, &mut snapshot, now).await?;
    }
    snapshot::take_new_jobs(cp, &mut snapshot, now, &mut summary).await?;

    cp.metrics.set(
        crate::metrics::OLDEST_PENDING_AGE,
        snapshot
            .pending
            .iter()
            .map(|t| now.saturating_sub(t.created_at_ms))
            .max()
            .unwrap_or(0) as f64,
    );
    if !snapshot.pending.is_empty() {
        let views = snapshot::agent_views(cp, &snapshot).await?;
        let planned = plan::plan(&snapshot, &views, cp.settings.scheduler.strategy(), now);
        summary.unplaced = planned.unplaced.len() as u32;
        let (committed, outcome) = commit::commit(cp, &snapshot.lease, &planned.writes).await;
        summary.placed = committed.placed.len() as u32;
        record_launch_latency(cp, &committed.placed, now);
        summary.conflicts = committed.conflicts;
        summary.lease_held = !committed.lease_lost;
        summary.dispatch_failures = dispatch::dispatch(cp, &committed.placed, &snapshot).await;
        if !committed.lease_lost {
            results::record(cp, &snapshot.pending, &planned.unplaced, now).await;
            summary.deferred = defer::defer(cp, &snapshot.pending, &planned.unplaced, now).await;
        }
        outcome?;
    }

    summary.pending_left = (snapshot.pending.len() as u32).saturating_sub(summary.placed)
        + u32::from(snapshot.more_than_read);
    let deadline = started_at_ms.saturating_add(cp.settings.scheduler.loop_budget_ms);
    summary.continue_loop = summary.lease_held && now < deadline;
    if summary.lease_held && !summary.continue_loop {
        // The run ends: let the next scheduled run take over without waiting for expiry.
        cp.ports.leases().release(&snapshot.lease).await?;
    }
    log_tick(&summary);
    Ok(summary)
}

/// How long the tick's placed tasks waited from their creation.
fn record_launch_latency<P: Ports>(
    cp: &ControlPlane<P>,
    placed: &[titus_core::ports::PlacementWrite],
    now: u64,
) {
    let waits = placed
        .iter()
        .map(|p| now.saturating_sub(p.task.created_at_ms));
    let (max, sum) = waits.fold((0, 0u64), |(max, sum), w| (max.max(w), sum + w));
    if !placed.is_empty() {
        cp.metrics
            .set(crate::metrics::LAUNCH_LATENCY_MAX, max as f64);
        cp.metrics
            .add(crate::metrics::LAUNCH_LATENCY_SUM, sum as f64);
    }
}

fn log_tick(summary: &TickSummary) {
    if summary.materialized
        + summary.placed
        + summary.unplaced
        + summary.redispatched
        + summary.conflicts
        == 0
    {
        tracing::debug!(
            epoch = summary.epoch,
            lease_held = summary.lease_held,
            "idle tick"
        );
    } else {
        info!(
            materialized = summary.materialized,
            placed = summary.placed,
            unplaced = summary.unplaced,
            deferred = summary.deferred,
            pending_left = summary.pending_left,
            conflicts = summary.conflicts,
            redispatched = summary.redispatched,
            epoch = summary.epoch,
            lease_held = summary.lease_held,
            "tick"
        );
    }
}
