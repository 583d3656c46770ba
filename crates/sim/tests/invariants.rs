//! A small mixed shape through the simulator: every placeable task Started, no task placed
//! twice, no agent over-committed (on the agents and in the records), the tasks that fit nowhere
//! (the oldest pending ones) holding nothing up, a dead agent's tasks replaced.

use titus_core::TaskState;
use titus_sim::{simulate, Options, Shape};

#[test]
fn a_small_mixed_load_starts_every_placeable_task_and_keeps_every_invariant() {
    let shape = Shape::small();
    let options = Options {
        limit_ms: 30 * 60_000,
        reconcile_every_ms: 5_000,
        // Fewer than the tasks that fit nowhere: without deferring them, they would fill every
        // tick's read and nothing behind them would be placed.
        max_tasks_per_tick: 100,
        ..Options::default()
    };
    let report = titus_sim::runtime()
        .expect("runtime")
        .block_on(simulate(&shape, &options))
        .expect("the simulation runs");
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
    assert!(
        report.all_started,
        "not every placeable task Started: {:?}",
        report.states
    );
    let started = report.states.get(&TaskState::Started).copied().unwrap_or(0) as u64;
    assert_eq!(started, shape.placeable_tasks(), "{:?}", report.states);
    // The tasks that fit nowhere wait, each still Accepted.
    let unplaceable: u64 = shape
        .kinds
        .iter()
        .filter(|k| k.unplaceable)
        .map(|k| k.tasks())
        .sum();
    assert_eq!(
        report
            .states
            .get(&TaskState::Accepted)
            .copied()
            .unwrap_or(0) as u64,
        unplaceable,
        "{:?}",
        report.states
    );
    assert_eq!(report.agents_died, 1);
    // The dead agent's tasks were finished as lost and replaced.
    assert!(
        report
            .states
            .get(&TaskState::Finished)
            .copied()
            .unwrap_or(0)
            > 0,
        "{:?} after {} ms, {} ticks, reconciler runs {:?}, requests {:?}",
        report.states,
        report.projected_ms,
        report.ticks,
        report.reconciles,
        report.meter.requests
    );
    assert!(report.projected_ms > 0 && report.meter.dynamodb_requests() > 0);
}
