//! Tasks that fit nowhere step aside. A tick reads the oldest eligible pending tasks; if those
//! that fit nowhere stayed eligible, a few hundred of them at the head of the pending index would
//! fill every tick's read and hold up every newer task that would fit (head-of-line blocking).
//! So each task a tick could not place is made eligible again only after a backoff: its
//! `not_before_ms` moves ahead by half its age, between [`MIN_BACKOFF_MS`] and
//! [`MAX_BACKOFF_MS`], and the pending index orders it by that time. A task that keeps not
//! fitting is looked at less and less often (its age grows by half at each look), at least once
//! a [`MAX_BACKOFF_MS`], so a new agent or a freed one is found within that time; why it waits is
//! in its job's placement result, refreshed each time it is looked at.
//!
//! A deferral is a conditional write on the task's version and no placement: a task that moved
//! on meanwhile (killed, or placed by a newer leader) is left as it is.

use std::collections::HashSet;

use futures::stream::{self, StreamExt};
use titus_core::{JobStore, Ports, StoreError, Task, TaskId};
use titus_placement::Unplaced;
use tracing::warn;

use crate::ControlPlane;

/// The shortest deferral: a young task that did not fit is looked at again a second later.
pub const MIN_BACKOFF_MS: u64 = 1_000;

/// The longest deferral: every task that fits nowhere is looked at again at least this often.
pub const MAX_BACKOFF_MS: u64 = 60_000;

/// How many deferrals one tick keeps in flight.
const CONCURRENCY: usize = 32;

/// How long a task of `age_ms` that did not fit waits before it is looked at again.
pub fn backoff_ms(age_ms: u64) -> u64 {
    (age_ms / 2).clamp(MIN_BACKOFF_MS, MAX_BACKOFF_MS)
}

/// Moves each of `unplaced` (tasks of `pending`, as read) out of the eligible window for its
/// backoff. A failed write is logged, not returned: the task is then simply looked at again next
/// tick, as it was before deferrals existed; one that changed meanwhile is left as it is.
/// Returns how many were deferred.
pub async fn defer<P: Ports>(
    cp: &ControlPlane<P>,
    pending: &[Task],
    unplaced: &[Unplaced],
    now_ms: u64,
) -> u32 {
    let unplaced: HashSet<&TaskId> = unplaced.iter().map(|u| &u.task_id).collect();
    let tasks: Vec<Task> = pending
        .iter()
        .filter(|t| unplaced.contains(&t.id))
        .cloned()
        .collect();
    let results: Vec<(TaskId, Result<(), StoreError>)> = stream::iter(tasks)
        .map(|task| defer_one(cp, task, now_ms))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut deferred = 0;
    for (task_id, result) in results {
        match result {
            Ok(()) => deferred += 1,
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => {
                warn!(task = %task_id, error = %e, "could not defer a task that fits nowhere")
            }
        }
    }
    deferred
}

async fn defer_one<P: Ports>(
    cp: &ControlPlane<P>,
    task: Task,
    now_ms: u64,
) -> (TaskId, Result<(), StoreError>) {
    let mut later = task.clone();
    later.not_before_ms = now_ms + backoff_ms(now_ms.saturating_sub(task.created_at_ms));
    later.version = task.version + 1;
    let result = cp.ports.jobs().update_task(&later, task.version).await;
    (task.id, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_is_half_the_age_within_its_bounds() {
        assert_eq!(backoff_ms(0), MIN_BACKOFF_MS);
        assert_eq!(backoff_ms(1_500), MIN_BACKOFF_MS);
        assert_eq!(backoff_ms(10_000), 5_000);
        assert_eq!(backoff_ms(119_998), 59_999);
        assert_eq!(backoff_ms(3_600_000), MAX_BACKOFF_MS);
    }
}
