//! Jobs: creation and its idempotency, conditional updates, listings with their pages and
//! cursors, and the initial tasks' all-or-nothing write.

use std::collections::HashSet;

use serde_json::json;
use titus_core::ports::{CreateOutcome, IdempotencyKey, JobFilter, PageRequest};
use titus_core::{JobId, JobState, JobStore, JobType, Ports, StoreError, Task, TaskId};

use crate::fixtures::{batch_job, descriptor, job, stored_batch, NOW_MS};
use crate::{Fixture, Harness};

fn key(scope: &str, key: &str, request_hash: &str) -> IdempotencyKey {
    IdempotencyKey {
        scope: scope.to_owned(),
        key: key.to_owned(),
        request_hash: request_hash.to_owned(),
    }
}

pub async fn a_created_job_reads_back_as_written_and_awaits_its_tasks<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let jobs = fx.ports().jobs();
    let created = job(descriptor(json!({"attributes": {"team": "red"}})), NOW_MS);

    let outcome = jobs.create_job(&created, None).await.unwrap();

    assert_eq!(outcome, CreateOutcome::Created(created.clone()));
    assert_eq!(
        jobs.get_job(&created.id).await.unwrap(),
        Some(created.clone())
    );
    assert_eq!(
        jobs.get_job_awaiting(&created.id).await.unwrap(),
        Some((created, true))
    );
    assert_eq!(jobs.get_job(&JobId::generate()).await.unwrap(), None);
}

pub async fn a_second_create_with_the_same_idempotency_key_returns_the_first_job<H: Harness>(
    h: &H,
) {
    let fx = h.fresh().await;
    let jobs = fx.ports().jobs();
    let first = batch_job(2, NOW_MS);
    let retry = batch_job(2, NOW_MS + 5);
    let k = key("caller@example.com", "client-token-1", "hash-a");

    let created = jobs.create_job(&first, Some(&k)).await.unwrap();
    let repeated = jobs.create_job(&retry, Some(&k)).await.unwrap();

    assert!(created.was_created());
    assert_eq!(repeated, CreateOutcome::Existing(first.clone()));
    assert_eq!(
        jobs.get_job(&retry.id).await.unwrap(),
        None,
        "the repeat stored nothing"
    );
}

pub async fn an_idempotency_key_reused_for_another_request_is_refused<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let jobs = fx.ports().jobs();
    let first = batch_job(2, NOW_MS);
    let other = batch_job(3, NOW_MS + 5);
    jobs.create_job(&first, Some(&key("me", "k", "hash-a")))
        .await
        .unwrap();

    let err = jobs
        .create_job(&other, Some(&key("me", "k", "hash-b")))
        .await
        .unwrap_err();

    assert_eq!(
        err,
        StoreError::IdempotencyMismatch {
            key: "k".to_owned(),
            job_id: first.id.clone(),
        }
    );
    assert_eq!(jobs.get_job(&other.id).await.unwrap(), None);
}

pub async fn the_same_idempotency_key_from_another_caller_creates_another_job<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let jobs = fx.ports().jobs();
    let mine = batch_job(2, NOW_MS);
    let theirs = batch_job(2, NOW_MS + 1);
    // A scope with the separator in it must not collide with another scope and key.
    jobs.create_job(&mine, Some(&key("a#b", "c", "h")))
        .await
        .unwrap();

    let outcome = jobs
        .create_job(&theirs, Some(&key("a", "b#c", "h")))
        .await
        .unwrap();

    assert_eq!(outcome, CreateOutcome::Created(theirs.clone()));
    assert!(jobs.get_job(&theirs.id).await.unwrap().is_some());
}

pub async fn a_job_update_with_a_stale_version_is_a_conflict_and_changes_nothing<H: Harness>(
    h: &H,
) {
    let fx = h.fresh().await;
    let jobs = fx.ports().jobs();
    let original = batch_job(2, NOW_MS);
    jobs.create_job(&original, None).await.unwrap();
    let mut first = original.clone();
    first
        .job_descriptor
        .attributes
        .insert("winner".to_owned(), "first".to_owned());
    first.version += 1;
    let mut second = original.clone();
    second
        .transition(JobState::KillInitiated, "killed", "kill", NOW_MS + 2)
        .unwrap();

    jobs.update_job(&first, original.version).await.unwrap();
    let lost = jobs.update_job(&second, original.version).await;
    let missing = jobs.update_job(&batch_job(1, NOW_MS), 1).await;

    assert!(
        matches!(&lost, Err(StoreError::Conflict { entity: "job", id, .. }) if *id == original.id.to_string()),
        "{lost:?}"
    );
    assert!(
        matches!(missing, Err(StoreError::Conflict { entity: "job", .. })),
        "{missing:?}"
    );
    assert_eq!(
        jobs.get_job(&original.id).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        jobs.get_job_awaiting(&original.id).await.unwrap(),
        Some((first, true)),
        "an update keeps the job awaiting its tasks"
    );
}

pub async fn listing_jobs_pages_newest_first_through_every_match_exactly_once<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let jobs = fx.ports().jobs();
    let mut created = Vec::new();
    for i in 0..7 {
        let job = batch_job(1, NOW_MS + i);
        jobs.create_job(&job, None).await.unwrap();
        created.push(job.id);
    }

    let mut seen = Vec::new();
    let mut pages = 0;
    let mut page = PageRequest::first(3);
    loop {
        let result = jobs.list_jobs(&JobFilter::default(), &page).await.unwrap();
        pages += 1;
        assert!(result.items.len() <= 3, "{} items", result.items.len());
        seen.extend(result.items.into_iter().map(|j| j.id));
        match result.next_cursor {
            Some(cursor) => page.cursor = Some(cursor),
            None => break,
        }
        assert!(pages < 20, "the listing never ends");
    }

    created.reverse();
    assert!(
        pages >= 3,
        "7 jobs in pages of 3 take at least 3 pages, took {pages}"
    );
    assert_eq!(seen, created, "every job once, newest first");
}

pub async fn a_filtered_walk_ends_with_its_last_match_never_an_empty_page<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let jobs = fx.ports().jobs();
    let mut gold = Vec::new();
    for i in 0..6 {
        let mut job = batch_job(1, NOW_MS + i);
        if i == 1 || i == 4 {
            job.job_descriptor
                .attributes
                .insert("tier".to_owned(), "gold".to_owned());
            gold.push(job.id.clone());
        }
        jobs.create_job(&job, None).await.unwrap();
    }
    let filter = JobFilter {
        attributes: [("tier".to_owned(), "gold".to_owned())].into(),
        ..JobFilter::default()
    };

    let mut pages = Vec::new();
    let mut page = PageRequest::first(1);
    loop {
        let result = jobs.list_jobs(&filter, &page).await.unwrap();
        pages.push(
            result
                .items
                .iter()
                .map(|j| j.id.clone())
                .collect::<Vec<_>>(),
        );
        match result.next_cursor {
            Some(cursor) => page.cursor = Some(cursor),
            None => break,
        }
        assert!(pages.len() < 20, "the listing never ends");
    }

    gold.reverse();
    assert_eq!(
        pages,
        gold.iter().map(|id| vec![id.clone()]).collect::<Vec<_>>(),
        "one match a page, newest first, and no empty page after the last"
    );
}

pub async fn listing_jobs_filters_by_owner_application_type_state_and_attribute<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let jobs = fx.ports().jobs();
    let batch_a = job(descriptor(json!({"attributes": {"team": "red"}})), NOW_MS);
    let service_a = job(
        descriptor(json!({
            "batch": null,
            "service": {"capacity": {"min": 0, "desired": 1, "max": 2}}
        })),
        NOW_MS + 1,
    );
    let batch_b = job(
        descriptor(json!({"owner": {"teamEmail": "other@example.com"}, "applicationName": "b"})),
        NOW_MS + 2,
    );
    for job in [&batch_a, &service_a, &batch_b] {
        jobs.create_job(job, None).await.unwrap();
    }
    let mut finished = batch_b.clone();
    finished
        .transition(JobState::Finished, "normal", "done", NOW_MS + 3)
        .unwrap();
    jobs.update_job(&finished, batch_b.version).await.unwrap();
    let ids = |filter: JobFilter| {
        let jobs = &jobs;
        async move {
            let page = jobs
                .list_jobs(&filter, &PageRequest::first(50))
                .await
                .unwrap();
            page.items.into_iter().map(|j| j.id).collect::<HashSet<_>>()
        }
    };

    let by_owner = ids(JobFilter {
        owner: Some("other@example.com".to_owned()),
        ..JobFilter::default()
    })
    .await;
    let by_application = ids(JobFilter {
        application_name: Some("app".to_owned()),
        ..JobFilter::default()
    })
    .await;
    let by_type = ids(JobFilter {
        job_type: Some(JobType::Service),
        ..JobFilter::default()
    })
    .await;
    let finished_ones = ids(JobFilter {
        states: vec![JobState::Finished],
        ..JobFilter::default()
    })
    .await;
    let by_attribute = ids(JobFilter {
        attributes: [("team".to_owned(), "red".to_owned())].into(),
        ..JobFilter::default()
    })
    .await;
    let owner_and_state = ids(JobFilter {
        owner: Some("other@example.com".to_owned()),
        states: vec![JobState::Accepted],
        ..JobFilter::default()
    })
    .await;

    assert_eq!(by_owner, HashSet::from([batch_b.id.clone()]));
    assert_eq!(
        by_application,
        HashSet::from([batch_a.id.clone(), service_a.id.clone()])
    );
    assert_eq!(by_type, HashSet::from([service_a.id.clone()]));
    assert_eq!(finished_ones, HashSet::from([batch_b.id.clone()]));
    assert_eq!(by_attribute, HashSet::from([batch_a.id.clone()]));
    assert!(owner_and_state.is_empty(), "{owner_and_state:?}");
}

pub async fn a_cursor_the_listing_did_not_issue_is_an_invalid_cursor<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let jobs = fx.ports().jobs();
    let mut first = None;
    for i in 0..3 {
        let (job, _) = stored_batch(&fx, 2, NOW_MS + i).await;
        first.get_or_insert(job);
    }
    let first = first.unwrap();
    let by_owner = |owner: &str| JobFilter {
        owner: Some(owner.to_owned()),
        ..JobFilter::default()
    };
    let with = |cursor: Option<String>| PageRequest {
        page_size: 1,
        cursor,
    };
    let owner_page = jobs
        .list_jobs(&by_owner("team@example.com"), &PageRequest::first(1))
        .await
        .unwrap();
    let tasks_page = jobs
        .list_job_tasks(&first.id, &PageRequest::first(1))
        .await
        .unwrap();
    assert!(owner_page.next_cursor.is_some() && tasks_page.next_cursor.is_some());

    let forged = jobs
        .list_jobs(
            &JobFilter::default(),
            &with(Some("bm90LWEtY3Vyc29y".to_owned())),
        )
        .await;
    let not_base64 = jobs
        .list_jobs(&JobFilter::default(), &with(Some("!!!".to_owned())))
        .await;
    let other_owner = jobs
        .list_jobs(
            &by_owner("someone@example.com"),
            &with(owner_page.next_cursor.clone()),
        )
        .await;
    let tasks_cursor_for_jobs = jobs
        .list_jobs(&JobFilter::default(), &with(tasks_page.next_cursor.clone()))
        .await;
    let other_job = jobs
        .list_job_tasks(&JobId::generate(), &with(tasks_page.next_cursor.clone()))
        .await;
    let same_owner = jobs
        .list_jobs(&by_owner("team@example.com"), &with(owner_page.next_cursor))
        .await;

    for (what, result) in [
        ("a forged cursor", forged.map(|p| p.items.len())),
        ("not base64", not_base64.map(|p| p.items.len())),
        ("another owner's", other_owner.map(|p| p.items.len())),
        (
            "a task listing's",
            tasks_cursor_for_jobs.map(|p| p.items.len()),
        ),
        ("another job's", other_job.map(|p| p.items.len())),
    ] {
        assert!(
            matches!(result, Err(StoreError::InvalidCursor(_))),
            "{what}: {result:?}"
        );
    }
    assert_eq!(
        same_owner.unwrap().items.len(),
        1,
        "its own listing takes it"
    );
}

pub async fn jobs_awaiting_their_tasks_are_listed_oldest_first_until_their_tasks_are_written<
    H: Harness,
>(
    h: &H,
) {
    let fx = h.fresh().await;
    let jobs = fx.ports().jobs();
    let newest = batch_job(1, NOW_MS + 5);
    let oldest = batch_job(1, NOW_MS);
    let middle = batch_job(1, NOW_MS + 1);
    for job in [&newest, &oldest, &middle] {
        jobs.create_job(job, None).await.unwrap();
    }

    let before_newest = jobs.list_awaiting_jobs(10, NOW_MS + 5).await.unwrap();
    let first_only = jobs.list_awaiting_jobs(1, NOW_MS + 10).await.unwrap();
    jobs.write_initial_tasks(&oldest, &Task::initial_tasks_of(&oldest), true)
        .await
        .unwrap();
    let after_write = jobs.list_awaiting_jobs(10, NOW_MS + 10).await.unwrap();

    assert_eq!(before_newest, vec![oldest.id.clone(), middle.id.clone()]);
    assert_eq!(first_only, vec![oldest.id.clone()]);
    assert_eq!(after_write, vec![middle.id.clone(), newest.id.clone()]);
    assert_eq!(
        jobs.get_job_awaiting(&oldest.id).await.unwrap(),
        Some((oldest, false))
    );
}

pub async fn initial_tasks_are_refused_once_the_job_changed_and_none_are_written<H: Harness>(
    h: &H,
) {
    let fx = h.fresh().await;
    let jobs = fx.ports().jobs();
    let read = batch_job(2, NOW_MS);
    jobs.create_job(&read, None).await.unwrap();
    let mut changed = read.clone();
    changed
        .transition(JobState::KillInitiated, "killed", "kill", NOW_MS + 1)
        .unwrap();
    jobs.update_job(&changed, read.version).await.unwrap();
    let tasks = Task::initial_tasks_of(&read);
    let ids: Vec<&TaskId> = tasks.iter().map(|t| &t.id).collect();

    let stale = jobs.write_initial_tasks(&read, &tasks, true).await;
    let none_written = jobs.existing_tasks(&ids).await.unwrap();
    let current = jobs.write_initial_tasks(&changed, &tasks, true).await;

    assert!(
        matches!(&stale, Err(StoreError::Conflict { entity: "job", .. })),
        "{stale:?}"
    );
    assert!(none_written.is_empty(), "{none_written:?}");
    assert_eq!(current, Ok(()), "the job as it is now takes them");
    assert_eq!(jobs.existing_tasks(&ids).await.unwrap().len(), 2);
}

pub async fn initial_tasks_are_written_all_or_none_with_the_cancellation_reasons<H: Harness>(
    h: &H,
) {
    let fx = h.fresh().await;
    let jobs = fx.ports().jobs();
    let job = batch_job(3, NOW_MS);
    jobs.create_job(&job, None).await.unwrap();
    let tasks = Task::initial_tasks_of(&job);
    jobs.write_initial_tasks(&job, &tasks[..1], false)
        .await
        .unwrap();

    let overlapping = jobs
        .write_initial_tasks(&job, &[tasks[1].clone(), tasks[0].clone()], true)
        .await;

    let Err(StoreError::Conflict { entity, detail, .. }) = &overlapping else {
        panic!("expected a conflict, got {overlapping:?}");
    };
    assert_eq!(*entity, "job");
    assert!(
        detail.contains("ConditionalCheckFailed"),
        "the error names why the transaction was cancelled: {detail}"
    );
    assert!(jobs
        .existing_tasks(&[&tasks[1].id])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        jobs.get_job_awaiting(&job.id)
            .await
            .unwrap()
            .map(|(_, awaiting)| awaiting),
        Some(true),
        "the mark stays with the refused write"
    );
    let rest = jobs.write_initial_tasks(&job, &tasks[1..], true).await;
    assert_eq!(rest, Ok(()), "the tasks not yet written still can be");
}
