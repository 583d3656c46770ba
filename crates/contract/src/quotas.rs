//! Quota usage: charged with the job writes that change what a job holds, refused whole when a
//! limit would be passed, released with the job's finish, never charged twice by a repeat.

use serde_json::json;
use titus_core::ports::IdempotencyKey;
use titus_core::quota::{Dimension, QuotaScope, Quotas, Usage, UsageChange};
use titus_core::{JobState, JobStore, Ports, StoreError};

use crate::fixtures::{descriptor, job, NOW_MS};
use crate::{Fixture, Harness};

fn quotas(team: serde_json::Value, group: serde_json::Value) -> Quotas {
    serde_json::from_value(json!({
        "teams": {"team@example.com": team},
        "capacityGroups": {"*": group}
    }))
    .unwrap()
}

/// A batch job of `size` one-core, 1,024 MB tasks.
fn sized(size: u32) -> titus_core::Job {
    job(
        descriptor(json!({
            "batch": {"size": size},
            "container": {"resources": {"cpu": 1.0, "memoryMB": 1024}}
        })),
        NOW_MS,
    )
}

async fn usage_of<J: JobStore>(jobs: &J, scope: &QuotaScope) -> Usage {
    jobs.list_usage()
        .await
        .unwrap()
        .get(&scope.key())
        .copied()
        .unwrap_or_default()
}

fn team() -> QuotaScope {
    QuotaScope::Team("team@example.com".to_owned())
}

pub async fn creates_are_charged_and_one_past_a_limit_is_refused_whole<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let jobs = fx.ports().jobs();
    let limits = quotas(json!({"tasks": 5, "cpu": 100}), json!({}));

    let first = sized(3);
    let charged = UsageChange::between(None, &first, &limits);
    jobs.create_job_charged(&first, None, &charged)
        .await
        .unwrap();
    assert_eq!(
        usage_of(jobs, &team()).await,
        Usage {
            jobs: 1,
            tasks: 3,
            cpu_millis: 3000,
            memory_mb: 3072,
            gpu: 0
        }
    );
    let group = QuotaScope::CapacityGroup(first.job_descriptor.capacity_group.clone());
    assert_eq!(
        usage_of(jobs, &group).await.tasks,
        3,
        "the group is charged too"
    );

    // 3 + 3 > 5: refused, naming the quota, its limit and the use; nothing written.
    let second = sized(3);
    let change = UsageChange::between(None, &second, &limits);
    let refused = jobs
        .create_job_charged(&second, None, &change)
        .await
        .unwrap_err();
    let StoreError::QuotaExceeded(exceeded) = refused else {
        panic!("expected QuotaExceeded, got {refused:?}");
    };
    assert_eq!(exceeded.scope, team());
    assert_eq!(exceeded.dimension, Dimension::Tasks);
    assert_eq!(
        (exceeded.limit, exceeded.used, exceeded.requested),
        (5, 3, 3)
    );
    assert_eq!(jobs.get_job(&second.id).await.unwrap(), None);
    assert_eq!(usage_of(jobs, &team()).await.tasks, 3);
    assert_eq!(usage_of(jobs, &group).await.tasks, 3, "no scope charged");

    // What fits still goes in, up to the limit exactly.
    let third = sized(2);
    let change = UsageChange::between(None, &third, &limits);
    jobs.create_job_charged(&third, None, &change)
        .await
        .unwrap();
    assert_eq!(usage_of(jobs, &team()).await.tasks, 5);
}

pub async fn a_repeated_idempotent_create_is_charged_once<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let jobs = fx.ports().jobs();
    let limits = quotas(json!({"tasks": 10}), json!({}));
    let key = IdempotencyKey {
        scope: "caller@example.com".to_owned(),
        key: "token-1".to_owned(),
        request_hash: "hash".to_owned(),
    };
    let first = sized(4);
    let repeat = sized(4);

    let created = jobs
        .create_job_charged(
            &first,
            Some(&key),
            &UsageChange::between(None, &first, &limits),
        )
        .await
        .unwrap();
    let again = jobs
        .create_job_charged(
            &repeat,
            Some(&key),
            &UsageChange::between(None, &repeat, &limits),
        )
        .await
        .unwrap();

    assert!(created.was_created());
    assert!(!again.was_created());
    assert_eq!(again.job().id, first.id);
    assert_eq!(usage_of(jobs, &team()).await.tasks, 4, "charged once");
}

pub async fn growing_past_a_limit_is_refused_and_finishing_releases_everything<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let jobs = fx.ports().jobs();
    let limits = quotas(json!({"jobs": 5}), json!({"cpu": 4}));
    let service = job(
        descriptor(json!({
            "batch": null,
            "service": {"capacity": {"min": 0, "desired": 2, "max": 10}},
            "container": {"resources": {"cpu": 1.0}}
        })),
        NOW_MS,
    );
    jobs.create_job_charged(
        &service,
        None,
        &UsageChange::between(None, &service, &limits),
    )
    .await
    .unwrap();
    let group = QuotaScope::CapacityGroup(service.job_descriptor.capacity_group.clone());

    // 2 → 5 tasks of one core passes the group's 4 cores: refused, the job unchanged.
    let mut grown = service.clone();
    if let Some(spec) = grown.job_descriptor.service.as_mut() {
        spec.capacity.desired = 5;
    }
    grown.version += 1;
    let change = UsageChange::between(Some(&service), &grown, &limits);
    let refused = jobs
        .update_job_charged(&grown, service.version, &change)
        .await
        .unwrap_err();
    let StoreError::QuotaExceeded(exceeded) = refused else {
        panic!("expected QuotaExceeded, got {refused:?}");
    };
    assert_eq!(
        (exceeded.scope.clone(), exceeded.dimension),
        (group.clone(), Dimension::Cpu)
    );
    assert_eq!(
        (exceeded.limit, exceeded.used, exceeded.requested),
        (4000, 2000, 3000)
    );
    assert_eq!(
        jobs.get_job(&service.id).await.unwrap(),
        Some(service.clone())
    );

    // 2 → 4 fits exactly.
    let mut fits = service.clone();
    if let Some(spec) = fits.job_descriptor.service.as_mut() {
        spec.capacity.desired = 4;
    }
    fits.version += 1;
    let change = UsageChange::between(Some(&service), &fits, &limits);
    jobs.update_job_charged(&fits, service.version, &change)
        .await
        .unwrap();
    assert_eq!(usage_of(jobs, &group).await.cpu_millis, 4000);

    // A stale write changes no usage either.
    let change = UsageChange::between(Some(&service), &grown, &limits);
    let stale = jobs
        .update_job_charged(&grown, service.version, &change)
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { .. })),
        "{stale:?}"
    );
    assert_eq!(usage_of(jobs, &group).await.cpu_millis, 4000);

    // The finish releases all of it.
    let mut finished = fits.clone();
    finished
        .transition(JobState::KillInitiated, "killed", "kill", NOW_MS + 1)
        .unwrap();
    finished
        .transition(JobState::Finished, "killed", "done", NOW_MS + 2)
        .unwrap();
    let change = UsageChange::between(Some(&fits), &finished, &limits);
    jobs.update_job_charged(&finished, fits.version, &change)
        .await
        .unwrap();
    assert!(usage_of(jobs, &group).await.is_zero());
    assert!(usage_of(jobs, &team()).await.is_zero());
}

pub async fn two_creates_racing_for_the_last_of_a_quota_cannot_both_win<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let jobs = fx.ports().jobs();
    let limits = quotas(json!({"jobs": 1}), json!({}));
    let a = sized(1);
    let b = sized(1);
    let change_a = UsageChange::between(None, &a, &limits);
    let change_b = UsageChange::between(None, &b, &limits);

    let (ra, rb) = futures::join!(
        jobs.create_job_charged(&a, None, &change_a),
        jobs.create_job_charged(&b, None, &change_b)
    );

    let won = [ra.is_ok(), rb.is_ok()];
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{ra:?} {rb:?}");
    let lost = if ra.is_ok() { rb } else { ra };
    assert!(
        matches!(
            lost,
            Err(StoreError::QuotaExceeded(_)) | Err(StoreError::Unavailable(_))
        ),
        "the loser is over quota (or its transaction was cancelled by the winner's): {lost:?}"
    );
    assert_eq!(usage_of(jobs, &team()).await.jobs, 1);
}
