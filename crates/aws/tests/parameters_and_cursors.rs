//! SSM parameter loading, and listing cursors used with another listing's filters, against the
//! emulator.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::json;
use support::{descriptor, fresh_stage, job};
use titus_aws::ssm::{get_parameters, ConfigError};
use titus_aws::DynamoJobStore;
use titus_core::ports::{JobFilter, PageRequest};
use titus_core::{JobStore, StoreError};

const NOW_MS: u64 = 1_764_000_000_000;

#[tokio::test]
async fn provisioned_parameters_are_read_in_one_go_and_missing_ones_are_named() {
    let (clients, names) = fresh_stage().await;
    let mut wanted = vec![names.api_admins_parameter()];
    for i in 0..12 {
        let name = format!("{}/test/p{i}", names.parameter_path());
        clients
            .ssm
            .put_parameter()
            .name(&name)
            .value(format!("v{i}"))
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .send()
            .await
            .unwrap();
        wanted.push(name);
    }

    let values = get_parameters(&clients.ssm, &wanted).await.unwrap();
    let missing = get_parameters(
        &clients.ssm,
        &[
            names.api_admins_parameter(),
            format!("{}/nope", names.parameter_path()),
        ],
    )
    .await
    .unwrap_err();

    assert_eq!(values.len(), 13, "more than one GetParameters call's worth");
    assert_eq!(values[&wanted[12]], "v11");
    assert_eq!(values[&names.api_admins_parameter()], json!([]).to_string());
    assert_eq!(
        missing,
        ConfigError::Missing {
            parameters: vec![format!("{}/nope", names.parameter_path())]
        }
    );
}

#[tokio::test]
async fn a_cursor_used_with_other_filters_is_an_invalid_cursor() {
    let (clients, names) = fresh_stage().await;
    let store = DynamoJobStore::new(clients.dynamodb, &names);
    let mut first = None;
    for i in 0..3 {
        let created = job(descriptor(json!({"batch": {"size": 2}})), NOW_MS + i);
        store.create_job(&created, None).await.unwrap();
        support::write_tasks(&store, &created).await;
        first.get_or_insert(created);
    }
    let first = first.unwrap();
    let by_owner = |owner: &str| JobFilter {
        owner: Some(owner.to_owned()),
        ..JobFilter::default()
    };
    let page = store
        .list_jobs(&by_owner("team@example.com"), &PageRequest::first(1))
        .await
        .unwrap();
    let tasks = store
        .list_job_tasks(&first.id, &PageRequest::first(1))
        .await
        .unwrap();
    let other_job = job(descriptor(json!({})), NOW_MS);

    let jobs_err = store
        .list_jobs(
            &by_owner("someone-else@example.com"),
            &PageRequest {
                page_size: 1,
                cursor: page.next_cursor.clone(),
            },
        )
        .await
        .unwrap_err();
    let tasks_err = store
        .list_job_tasks(
            &other_job.id,
            &PageRequest {
                page_size: 1,
                cursor: tasks.next_cursor.clone(),
            },
        )
        .await
        .unwrap_err();
    let same_filter = store
        .list_jobs(
            &by_owner("team@example.com"),
            &PageRequest {
                page_size: 5,
                cursor: page.next_cursor,
            },
        )
        .await
        .unwrap();

    assert!(
        matches!(jobs_err, StoreError::InvalidCursor(_)),
        "{jobs_err:?}"
    );
    assert!(
        matches!(tasks_err, StoreError::InvalidCursor(_)),
        "{tasks_err:?}"
    );
    assert_eq!(same_filter.items.len(), 2);
}
