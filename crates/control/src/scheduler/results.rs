//! Placement results where users look: per job, what the last tick found for the tasks it could
//! not place, written only when the answer changes (or, unchanged, once a minute so its time
//! says it still holds), and removed when the job's considered tasks all fit.
//!
//! The scheduler remembers what it wrote in its process. A cold start writes each job's result
//! once more; a result it never clears (its writer died) stops being refreshed, and readers see
//! it as stale after [`STALE_AFTER_MS`].

use std::collections::{BTreeMap, HashMap, HashSet};

use titus_core::placement::{PlacementResult, MAX_SAMPLE_TASK_IDS, RESULT_TTL_MS};
use titus_core::ports::{JobStore, MAX_PLACEMENT_RESULTS_PER_WRITE};
use titus_core::{JobId, Ports, Task};
use titus_placement::Unplaced;
use tracing::warn;

use crate::ControlPlane;

/// How often a result that still holds is written again.
pub const REFRESH_MS: u64 = 60_000;

/// How old a result's `computed_at_ms` may be before readers call it stale: the scheduler has not
/// confirmed it for three refreshes (the job was not considered, or its writer is gone).
pub const STALE_AFTER_MS: u64 = 3 * REFRESH_MS;

/// What this process last wrote per job.
#[derive(Debug, Default)]
pub struct ResultCache {
    written: HashMap<JobId, PlacementResult>,
}

/// What one tick should write: results that are new, changed or due for a refresh, and jobs
/// whose results should go.
#[derive(Debug, Default, PartialEq)]
pub struct ResultChanges {
    pub write: Vec<PlacementResult>,
    pub clear: Vec<JobId>,
}

/// Each job's result from the tick's unplaced tasks: their count, a sample of their ids, and the
/// reasons of the job's first unplaced task (tasks of one job get the same answer, bar the
/// counts of agents, which the job's first task stands for).
pub fn job_results(unplaced: &[Unplaced], now_ms: u64) -> BTreeMap<JobId, PlacementResult> {
    let mut results: BTreeMap<JobId, PlacementResult> = BTreeMap::new();
    for u in unplaced {
        let result = results
            .entry(u.job_id.clone())
            .or_insert_with(|| PlacementResult {
                job_id: u.job_id.clone(),
                unplaced_tasks: 0,
                task_ids: Vec::new(),
                rejections: u.rejections.clone(),
                insufficient: u.insufficient.iter().map(|d| (*d).to_owned()).collect(),
                since_ms: now_ms,
                computed_at_ms: now_ms,
            });
        result.unplaced_tasks += 1;
        if result.task_ids.len() < MAX_SAMPLE_TASK_IDS {
            result.task_ids.push(u.task_id.clone());
        }
    }
    results
}

impl ResultCache {
    /// What to write, given this tick's results and the jobs it considered (had pending tasks
    /// in the plan). At most [`MAX_PLACEMENT_RESULTS_PER_WRITE`] of each: new and changed
    /// results first, then refreshes; the rest wait for the next tick.
    pub fn changes(
        &self,
        results: BTreeMap<JobId, PlacementResult>,
        considered: &HashSet<JobId>,
        now_ms: u64,
    ) -> ResultChanges {
        // Only jobs whose considered tasks all fit are cleared; a job with unplaced tasks keeps
        // its result, written this tick or not.
        let mut clear: Vec<JobId> = self
            .written
            .keys()
            .filter(|id| considered.contains(*id) && !results.contains_key(*id))
            .cloned()
            .collect();
        clear.sort();
        clear.truncate(MAX_PLACEMENT_RESULTS_PER_WRITE);
        let mut changed = Vec::new();
        let mut refreshes = Vec::new();
        for (job_id, mut result) in results {
            match self.written.get(&job_id) {
                None => changed.push(result),
                Some(last) if !last.same_answer(&result) => changed.push(result),
                Some(last) if now_ms.saturating_sub(last.computed_at_ms) >= REFRESH_MS => {
                    result.since_ms = last.since_ms;
                    refreshes.push(result);
                }
                Some(_) => {}
            }
        }
        let mut write = changed;
        write.extend(refreshes);
        write.truncate(MAX_PLACEMENT_RESULTS_PER_WRITE);
        ResultChanges { write, clear }
    }

    /// Remembers a write that landed, and forgets results old enough to have expired.
    pub fn applied(&mut self, changes: &ResultChanges, now_ms: u64) {
        for id in &changes.clear {
            self.written.remove(id);
        }
        for result in &changes.write {
            self.written.insert(result.job_id.clone(), result.clone());
        }
        self.written
            .retain(|_, r| now_ms.saturating_sub(r.computed_at_ms) < RESULT_TTL_MS);
    }
}

/// Writes what changed for this tick's unplaced tasks. A failed write is logged and tried again
/// next tick: results are advice, and never hold up placements.
pub async fn record<P: Ports>(
    cp: &ControlPlane<P>,
    pending: &[Task],
    unplaced: &[Unplaced],
    now_ms: u64,
) {
    let considered: HashSet<JobId> = pending.iter().map(|t| t.job_id.clone()).collect();
    let changes = {
        let cache = cp
            .placement_results
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        cache.changes(job_results(unplaced, now_ms), &considered, now_ms)
    };
    if changes.write.is_empty() && changes.clear.is_empty() {
        return;
    }
    match cp
        .ports
        .jobs()
        .put_placement_results(&changes.write, &changes.clear)
        .await
    {
        Ok(()) => cp
            .placement_results
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .applied(&changes, now_ms),
        Err(e) => warn!(
            error = %e,
            results = changes.write.len(),
            cleared = changes.clear.len(),
            "placement results not written; trying again next tick"
        ),
    }
}

#[cfg(test)]
mod tests {
    use titus_core::placement::Rejection;
    use titus_core::TaskId;

    use super::*;

    fn unplaced(job: &str, task: &str, reason: &str, agents: u32) -> Unplaced {
        Unplaced {
            task_id: TaskId::from_string(task),
            job_id: JobId::from_string(job),
            reasons: vec![format!("{reason} on {agents} agents")],
            rejections: vec![Rejection {
                reason: reason.to_owned(),
                agents,
            }],
            insufficient: vec!["memory"],
        }
    }

    fn considered(jobs: &[&str]) -> HashSet<JobId> {
        jobs.iter().map(|j| JobId::from_string(*j)).collect()
    }

    #[test]
    fn a_job_s_unplaced_tasks_make_one_result_with_a_bounded_sample() {
        let tasks: Vec<Unplaced> = (0..25)
            .map(|i| unplaced("job-a", &format!("t-{i}"), "insufficient memory", 3))
            .chain([unplaced("job-b", "b-1", "no agents", 0)])
            .collect();

        let results = job_results(&tasks, 1_000);

        assert_eq!(results.len(), 2);
        let a = &results[&JobId::from_string("job-a")];
        assert_eq!(a.unplaced_tasks, 25);
        assert_eq!(a.task_ids.len(), MAX_SAMPLE_TASK_IDS);
        assert_eq!(a.task_ids[0].as_str(), "t-0");
        assert_eq!(a.reasons(), vec!["insufficient memory on 3 agents"]);
        assert_eq!(a.insufficient, vec!["memory"]);
        assert_eq!((a.since_ms, a.computed_at_ms), (1_000, 1_000));
    }

    #[test]
    fn an_unchanged_answer_is_written_once_then_only_when_due_for_a_refresh() {
        let mut cache = ResultCache::default();
        let tasks = [unplaced("job-a", "t-1", "insufficient memory", 3)];
        let first = cache.changes(job_results(&tasks, 1_000), &considered(&["job-a"]), 1_000);
        assert_eq!(first.write.len(), 1);
        cache.applied(&first, 1_000);

        // The same answer with other counts, a second later: nothing to write.
        let busier = [unplaced("job-a", "t-1", "insufficient memory", 5)];
        let again = cache.changes(job_results(&busier, 2_000), &considered(&["job-a"]), 2_000);
        assert_eq!(again, ResultChanges::default());

        // A minute on, the same answer is written again with its first time kept.
        let later = 1_000 + REFRESH_MS;
        let refresh = cache.changes(job_results(&busier, later), &considered(&["job-a"]), later);
        assert_eq!(refresh.write.len(), 1);
        assert_eq!(refresh.write[0].since_ms, 1_000);
        assert_eq!(refresh.write[0].computed_at_ms, later);
        assert_eq!(refresh.write[0].rejections[0].agents, 5);
    }

    #[test]
    fn a_changed_answer_is_written_at_once_and_starts_a_new_since() {
        let mut cache = ResultCache::default();
        let memory = [unplaced("job-a", "t-1", "insufficient memory", 3)];
        let first = cache.changes(job_results(&memory, 1_000), &considered(&["job-a"]), 1_000);
        cache.applied(&first, 1_000);

        let zone = [unplaced(
            "job-a",
            "t-1",
            "hard constraint availabilityZone",
            3,
        )];
        let changed = cache.changes(job_results(&zone, 2_000), &considered(&["job-a"]), 2_000);

        assert_eq!(changed.write.len(), 1);
        assert_eq!(changed.write[0].since_ms, 2_000);
    }

    #[test]
    fn only_a_considered_job_with_no_unplaced_task_is_cleared() {
        let mut cache = ResultCache::default();
        let tasks = [
            unplaced("job-a", "a-1", "insufficient memory", 3),
            unplaced("job-b", "b-1", "insufficient memory", 3),
            unplaced("job-c", "c-1", "insufficient memory", 3),
        ];
        let all = considered(&["job-a", "job-b", "job-c"]);
        let first = cache.changes(job_results(&tasks, 1_000), &all, 1_000);
        cache.applied(&first, 1_000);

        // job-a's tasks fit now; job-b was not read this tick; job-c still waits.
        let next = cache.changes(
            job_results(&tasks[2..], 2_000),
            &considered(&["job-a", "job-c"]),
            2_000,
        );

        assert_eq!(next.clear, vec![JobId::from_string("job-a")]);
        assert!(next.write.is_empty());
        cache.applied(&next, 2_000);
        let after = cache.changes(BTreeMap::new(), &considered(&["job-a"]), 3_000);
        assert_eq!(after, ResultChanges::default());
    }

    #[test]
    fn one_tick_writes_at_most_a_full_batch_new_results_before_refreshes() {
        let mut cache = ResultCache::default();
        let old: Vec<Unplaced> = (0..60)
            .map(|i| unplaced(&format!("old-{i:02}"), "t", "insufficient memory", 1))
            .collect();
        let ids: Vec<String> = (0..60).map(|i| format!("old-{i:02}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let first = cache.changes(job_results(&old, 0), &considered(&refs), 0);
        cache.applied(&first, 0);

        let new: Vec<Unplaced> = (0..60)
            .map(|i| unplaced(&format!("new-{i:02}"), "t", "insufficient memory", 1))
            .collect();
        let both: Vec<Unplaced> = old.iter().chain(&new).cloned().collect();
        let changes = cache.changes(job_results(&both, REFRESH_MS), &HashSet::new(), REFRESH_MS);

        assert_eq!(changes.write.len(), MAX_PLACEMENT_RESULTS_PER_WRITE);
        assert!(changes.write[..60]
            .iter()
            .all(|r| r.job_id.as_str().starts_with("new-")));
    }
}
