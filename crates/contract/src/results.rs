//! Placement results: one per job, replaced by the next write, removed when cleared, written in
//! batches larger than one DynamoDB call.

use titus_core::placement::{PlacementResult, Rejection};
use titus_core::ports::MAX_PLACEMENT_RESULTS_PER_WRITE;
use titus_core::{JobId, JobStore, Ports, StoreError, TaskId};

use crate::fixtures::NOW_MS;
use crate::{Fixture, Harness};

fn result(job: &str, memory_agents: u32, computed_at_ms: u64) -> PlacementResult {
    PlacementResult {
        job_id: JobId::from_string(job),
        unplaced_tasks: 3,
        task_ids: vec![TaskId::from_string(format!("{job}-task-1"))],
        rejections: vec![
            Rejection {
                reason: "insufficient memory".to_owned(),
                agents: memory_agents,
            },
            Rejection {
                reason: r#"hard constraint availabilityZone="z\"1""#.to_owned(),
                agents: 1,
            },
        ],
        insufficient: vec!["memory".to_owned()],
        since_ms: NOW_MS,
        computed_at_ms,
    }
}

pub async fn a_placement_result_reads_back_and_the_next_write_replaces_it<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let jobs = fx.ports().jobs();
    let job = JobId::from_string("job-results-1");
    assert_eq!(jobs.get_placement_result(&job).await.unwrap(), None);

    let first = result(job.as_str(), 7, NOW_MS);
    jobs.put_placement_results(std::slice::from_ref(&first), &[])
        .await
        .unwrap();
    assert_eq!(
        jobs.get_placement_result(&job).await.unwrap(),
        Some(first.clone())
    );

    let second = result(job.as_str(), 9, NOW_MS + 60_000);
    jobs.put_placement_results(std::slice::from_ref(&second), &[])
        .await
        .unwrap();
    assert_eq!(jobs.get_placement_result(&job).await.unwrap(), Some(second));
}

pub async fn cleared_results_are_gone_and_a_job_cleared_and_written_at_once_keeps_it<H: Harness>(
    h: &H,
) {
    let fx = h.fresh().await;
    let jobs = fx.ports().jobs();
    let a = result("job-results-a", 2, NOW_MS);
    let b = result("job-results-b", 2, NOW_MS);
    jobs.put_placement_results(&[a.clone(), b.clone()], &[])
        .await
        .unwrap();

    jobs.put_placement_results(
        std::slice::from_ref(&b),
        &[
            a.job_id.clone(),
            b.job_id.clone(),
            JobId::from_string("never-written"),
        ],
    )
    .await
    .unwrap();

    assert_eq!(jobs.get_placement_result(&a.job_id).await.unwrap(), None);
    assert_eq!(jobs.get_placement_result(&b.job_id).await.unwrap(), Some(b));
}

pub async fn a_full_write_of_results_and_removals_lands_whole<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let jobs = fx.ports().jobs();
    let old: Vec<PlacementResult> = (0..MAX_PLACEMENT_RESULTS_PER_WRITE)
        .map(|i| result(&format!("job-old-{i:03}"), 1, NOW_MS))
        .collect();
    jobs.put_placement_results(&old, &[]).await.unwrap();
    let new: Vec<PlacementResult> = (0..MAX_PLACEMENT_RESULTS_PER_WRITE)
        .map(|i| result(&format!("job-new-{i:03}"), 4, NOW_MS))
        .collect();
    let cleared: Vec<JobId> = old.iter().map(|r| r.job_id.clone()).collect();

    jobs.put_placement_results(&new, &cleared).await.unwrap();

    for r in &old {
        assert_eq!(jobs.get_placement_result(&r.job_id).await.unwrap(), None);
    }
    for r in &new {
        assert_eq!(
            jobs.get_placement_result(&r.job_id).await.unwrap().as_ref(),
            Some(r)
        );
    }
}

pub async fn a_write_past_the_limit_is_refused_and_writes_nothing<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let jobs = fx.ports().jobs();
    let too_many: Vec<PlacementResult> = (0..=MAX_PLACEMENT_RESULTS_PER_WRITE)
        .map(|i| result(&format!("job-many-{i:03}"), 1, NOW_MS))
        .collect();

    let err = jobs
        .put_placement_results(&too_many, &[])
        .await
        .unwrap_err();

    assert!(
        matches!(&err, StoreError::Internal(m) if m.contains("at most 100")),
        "{err}"
    );
    assert_eq!(
        jobs.get_placement_result(&too_many[0].job_id)
            .await
            .unwrap(),
        None
    );
}
