//! Tasks: conditional inserts and updates, and the listings the scheduler and the reconciler
//! read (a job's tasks, pending, unacknowledged, per agent, transitional, a job's live ones).

use std::collections::HashSet;

use titus_core::ports::PageRequest;
use titus_core::{JobStore, Ports, StoreError, Task, TaskId, TaskReason, TaskState};

use crate::fixtures::{advanced, all_tasks, stored_batch, NOW_MS};
use crate::{Fixture, Harness};

fn ids(tasks: &[Task]) -> Vec<TaskId> {
    tasks.iter().map(|t| t.id.clone()).collect()
}

pub async fn inserting_a_task_whose_id_exists_is_a_conflict<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let jobs = fx.ports().jobs();
    let (_, tasks) = stored_batch(&fx, 2, NOW_MS).await;
    let replacement = tasks[0].replacement(NOW_MS + 10, 0);

    let again = jobs.insert_task(&tasks[0]).await;
    jobs.insert_task(&replacement).await.unwrap();
    let replaced_twice = jobs.insert_task(&replacement).await;
    let unknown = TaskId::generate();
    let existing = jobs
        .existing_tasks(&[&tasks[0].id, &replacement.id, &unknown])
        .await
        .unwrap();

    for result in [again, replaced_twice] {
        assert!(
            matches!(result, Err(StoreError::Conflict { entity: "task", .. })),
            "{result:?}"
        );
    }
    assert_eq!(
        existing,
        HashSet::from([tasks[0].id.clone(), replacement.id.clone()])
    );
}

pub async fn a_task_update_with_a_stale_version_is_a_conflict_and_changes_nothing<H: Harness>(
    h: &H,
) {
    let fx = h.fresh().await;
    let jobs = fx.ports().jobs();
    let (job, tasks) = stored_batch(&fx, 1, NOW_MS).await;
    let read = tasks[0].clone();
    let mut placed = read.clone();
    placed.agent_id = Some("a1".to_owned());
    placed
        .transition(TaskState::Launched, None, "placed", NOW_MS + 1)
        .unwrap();
    let mut killed = read.clone();
    killed
        .transition(
            TaskState::Finished,
            Some(TaskReason::Killed),
            "killed",
            NOW_MS + 2,
        )
        .unwrap();

    jobs.update_task(&placed, read.version).await.unwrap();
    let lost = jobs.update_task(&killed, read.version).await;
    let missing = jobs
        .update_task(&titus_core::Task::initial(&job, 7, NOW_MS), 1)
        .await;

    for result in [lost, missing] {
        assert!(
            matches!(result, Err(StoreError::Conflict { entity: "task", .. })),
            "{result:?}"
        );
    }
    assert_eq!(jobs.get_task(&read.id).await.unwrap(), Some(placed));
}

pub async fn a_job_s_tasks_are_listed_oldest_first_page_by_page<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let jobs = fx.ports().jobs();
    let (job, tasks) = stored_batch(&fx, 5, NOW_MS).await;
    let replacement = tasks[1].replacement(NOW_MS + 50, 0);
    jobs.insert_task(&replacement).await.unwrap();
    let (other, _) = stored_batch(&fx, 2, NOW_MS).await;

    let mut seen = Vec::new();
    let mut page = PageRequest::first(2);
    let mut pages = 0;
    loop {
        let result = jobs.list_job_tasks(&job.id, &page).await.unwrap();
        pages += 1;
        assert!(
            (1..=2).contains(&result.items.len()),
            "{} items: a page with more promised holds some",
            result.items.len()
        );
        seen.extend(result.items);
        match result.next_cursor {
            Some(cursor) => page.cursor = Some(cursor),
            None => break,
        }
        assert!(pages < 20, "the listing never ends");
    }
    let everything = jobs.list_all_job_tasks(&job.id).await.unwrap();

    let mut expected = ids(&tasks);
    expected.push(replacement.id.clone());
    assert_eq!(
        pages, 3,
        "6 tasks in pages of 2, the last saying it is the last"
    );
    assert_eq!(
        ids(&seen),
        expected,
        "slot order, then the later replacement"
    );
    assert_eq!(ids(&everything), expected);
    assert_eq!(all_tasks(&fx, &other.id).await.len(), 2);
}

pub async fn pending_tasks_come_oldest_first_and_only_once_eligible<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let jobs = fx.ports().jobs();
    let (newer, _) = stored_batch(&fx, 2, NOW_MS + 10).await;
    let (older, older_tasks) = stored_batch(&fx, 2, NOW_MS).await;
    // A delayed retry, not eligible until later.
    let failed = advanced(&fx, &older_tasks[0], "a1", TaskState::Finished, NOW_MS + 20).await;
    let delayed = failed.replacement(NOW_MS + 20, NOW_MS + 60_000);
    jobs.insert_task(&delayed).await.unwrap();

    let pending = jobs.list_pending_tasks(10, NOW_MS + 1_000).await.unwrap();
    let later = jobs.list_pending_tasks(10, NOW_MS + 60_000).await.unwrap();
    let limited = jobs.list_pending_tasks(1, NOW_MS + 1_000).await.unwrap();
    advanced(&fx, &pending[0], "a1", TaskState::Launched, NOW_MS + 30).await;
    let after_placing = jobs.list_pending_tasks(10, NOW_MS + 1_000).await.unwrap();

    let job_of: Vec<_> = pending.iter().map(|t| t.job_id.clone()).collect();
    assert_eq!(
        job_of,
        vec![older.id.clone(), newer.id.clone(), newer.id.clone()]
    );
    assert!(pending.iter().all(|t| t.state() == TaskState::Accepted));
    assert!(
        !pending.iter().any(|t| t.id == delayed.id),
        "not eligible yet"
    );
    assert!(
        later.iter().any(|t| t.id == delayed.id),
        "eligible once its time has come"
    );
    assert_eq!(ids(&limited), vec![pending[0].id.clone()]);
    assert_eq!(
        ids(&after_placing),
        ids(&pending[1..]),
        "a placed task is not pending"
    );
}

pub async fn unacknowledged_tasks_are_the_launched_ones_dispatched_before_the_bound<H: Harness>(
    h: &H,
) {
    let fx = h.fresh().await;
    let jobs = fx.ports().jobs();
    let (_, tasks) = stored_batch(&fx, 3, NOW_MS).await;
    let dispatch = |task: &Task, at_ms: u64| {
        let mut t = task.clone();
        t.dispatched_at_ms = Some(at_ms);
        t
    };
    let early = advanced(
        &fx,
        &dispatch(&tasks[0], NOW_MS + 10),
        "a1",
        TaskState::Launched,
        NOW_MS + 10,
    )
    .await;
    let late = advanced(
        &fx,
        &dispatch(&tasks[1], NOW_MS + 20),
        "a1",
        TaskState::Launched,
        NOW_MS + 20,
    )
    .await;
    // Acknowledged: the agent started on it.
    advanced(
        &fx,
        &dispatch(&tasks[2], NOW_MS + 5),
        "a1",
        TaskState::StartInitiated,
        NOW_MS + 6,
    )
    .await;

    let before_late = jobs
        .list_unacknowledged_tasks(10, NOW_MS + 15)
        .await
        .unwrap();
    let both = jobs
        .list_unacknowledged_tasks(10, NOW_MS + 25)
        .await
        .unwrap();

    assert_eq!(ids(&before_late), vec![early.id.clone()]);
    assert_eq!(ids(&both), vec![early.id, late.id]);
}

pub async fn tasks_are_listed_by_agent_only_while_they_hold_resources_there<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let jobs = fx.ports().jobs();
    let (_, tasks) = stored_batch(&fx, 4, NOW_MS).await;
    let launched = advanced(&fx, &tasks[0], "a1", TaskState::Launched, NOW_MS + 1).await;
    let started = advanced(&fx, &tasks[1], "a1", TaskState::Started, NOW_MS + 2).await;
    advanced(&fx, &tasks[2], "a2", TaskState::Started, NOW_MS + 3).await;
    advanced(&fx, &tasks[3], "a1", TaskState::Finished, NOW_MS + 4).await;

    let on_a1: HashSet<TaskId> = ids(&jobs.list_agent_tasks("a1").await.unwrap())
        .into_iter()
        .collect();
    let on_nobody = jobs.list_agent_tasks("a3").await.unwrap();

    assert_eq!(on_a1, HashSet::from([launched.id, started.id]));
    assert!(on_nobody.is_empty());
}

pub async fn transitional_tasks_are_listed_oldest_first_by_when_they_entered_their_state<
    H: Harness,
>(
    h: &H,
) {
    let fx = h.fresh().await;
    let jobs = fx.ports().jobs();
    let (_, tasks) = stored_batch(&fx, 4, NOW_MS).await;
    let launched = advanced(&fx, &tasks[0], "a1", TaskState::Launched, NOW_MS + 30).await;
    let starting = advanced(&fx, &tasks[1], "a1", TaskState::StartInitiated, NOW_MS + 10).await;
    advanced(&fx, &tasks[2], "a1", TaskState::Started, NOW_MS + 5).await;
    let killing = advanced(&fx, &tasks[3], "a1", TaskState::KillInitiated, NOW_MS + 20).await;

    let early = jobs.list_transitional_tasks(10, NOW_MS + 25).await.unwrap();
    let all = jobs
        .list_transitional_tasks(10, NOW_MS + 100)
        .await
        .unwrap();
    let first = jobs.list_transitional_tasks(1, NOW_MS + 100).await.unwrap();

    assert_eq!(ids(&early), vec![starting.id.clone(), killing.id.clone()]);
    assert_eq!(
        ids(&all),
        vec![starting.id.clone(), killing.id, launched.id],
        "a running task is not transitional"
    );
    assert_eq!(ids(&first), vec![starting.id]);
}

pub async fn a_job_s_active_tasks_leave_out_its_finished_ones<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let jobs = fx.ports().jobs();
    let (job, tasks) = stored_batch(&fx, 3, NOW_MS).await;
    advanced(&fx, &tasks[1], "a1", TaskState::Finished, NOW_MS + 5).await;
    let running = advanced(&fx, &tasks[2], "a1", TaskState::Started, NOW_MS + 6).await;

    let mut live = Vec::new();
    let mut page = PageRequest::first(1);
    for _ in 0..10 {
        let result = jobs.list_active_job_tasks(&job.id, &page).await.unwrap();
        live.extend(result.items);
        match result.next_cursor {
            Some(cursor) => page.cursor = Some(cursor),
            None => break,
        }
    }

    assert_eq!(ids(&live), vec![tasks[0].id.clone(), running.id.clone()]);
    assert_eq!(live[1], running, "as written");
}
