//! The agent's AWS adapters against the emulator: settings from SSM, ECR credentials, and the
//! status sink's batches.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;

use aws_sdk_ssm::types::ParameterType;
use support::*;
use titus_agent::aws::{load_settings, EcrAuth, RegistryAuth as _};
use titus_agent::bootstrap::read_settings;
use titus_agent::ports::StatusSink as _;
use titus_agent::{DrainPolicy, LogDriver};
use titus_aws::SqsStatusSink;
use titus_core::messages::TaskStatusUpdate;
use titus_core::{JobId, TaskId, TaskState};

async fn put_parameter(clients: &titus_aws::AwsClients, name: &str, value: &str) {
    clients
        .ssm
        .put_parameter()
        .name(name)
        .value(value)
        .r#type(ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn the_provisioned_parameter_gives_the_defaults_and_an_edit_takes_effect() {
    let (clients, _, names) = fresh_stage().await;

    let provisioned = load_settings(&clients.ssm, &names).await.unwrap();
    put_parameter(
        &clients,
        &names.agent_config_parameter(),
        r#"{"drain_policy":"handBack","log_driver":"awslogs","awslogs_group":"/titus/tasks","poll_wait_secs":5}"#,
    )
    .await;
    let edited = load_settings(&clients.ssm, &names).await.unwrap();

    assert_eq!(provisioned, titus_agent::AgentSettings::default());
    assert_eq!(edited.drain_policy, DrainPolicy::HandBack);
    assert_eq!(edited.log_driver, LogDriver::Awslogs);
    assert_eq!(edited.poll_wait_secs, 5);
}

#[tokio::test]
async fn an_invalid_parameter_fails_the_start_naming_it() {
    let (clients, _, names) = fresh_stage().await;
    put_parameter(
        &clients,
        &names.agent_config_parameter(),
        r#"{"poll_wait_secs":"soon"}"#,
    )
    .await;

    let err = load_settings(&clients.ssm, &names).await.unwrap_err();

    let text = err.to_string();
    assert!(text.contains(&names.agent_config_parameter()), "{text}");
    assert!(text.contains("poll_wait_secs"), "{text}");
}

#[tokio::test]
async fn environment_variables_override_the_parameter_and_are_validated() {
    let (clients, _, names) = fresh_stage().await;
    let env = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        env.insert("TITUS_STAGE".to_owned(), names.stage().to_owned());
        env
    };

    let (_, settings) = read_settings(&clients, &env(&[("TITUS_AGENT_POLL_WAIT_SECS", "2")]))
        .await
        .unwrap();
    let out_of_range = read_settings(&clients, &env(&[("TITUS_AGENT_POLL_WAIT_SECS", "30")]))
        .await
        .unwrap_err();

    assert_eq!(settings.poll_wait_secs, 2);
    let text = out_of_range.to_string();
    assert!(text.contains("poll_wait_secs"), "{text}");
    assert!(text.contains("TITUS_AGENT_"), "{text}");
}

#[tokio::test]
async fn ecr_credentials_come_from_get_authorization_token_and_are_cached() {
    let (_, sdk_config) = clients().await;
    let auth = EcrAuth::new(sdk_config);
    let image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app:1";

    let first = auth.credentials_for(image).await.unwrap().unwrap();
    let second = auth.credentials_for(image).await.unwrap().unwrap();
    let none = auth.credentials_for(TEST_IMAGE).await.unwrap();
    // A host that only starts like ECR's gets no token, so the instance role's ECR password
    // never leaves for it.
    let look_alike = auth
        .credentials_for("123456789012.dkr.ecr.us-east-1.amazonaws.com.evil.example/team/app:1")
        .await
        .unwrap();

    assert_eq!(first.username, "AWS");
    assert!(!first.password.is_empty());
    assert_eq!(first, second);
    assert_eq!(none, None);
    assert_eq!(look_alike, None);
}

#[tokio::test]
async fn status_updates_reach_the_status_queue_in_one_batch() {
    let (clients, _, names) = fresh_stage().await;
    let sink = SqsStatusSink::for_stage(clients.sqs.clone(), &names)
        .await
        .unwrap();
    let updates: Vec<TaskStatusUpdate> = (0..10)
        .map(|i| TaskStatusUpdate {
            task_id: TaskId::from_string(format!("t{i}")),
            job_id: JobId::from_string("j"),
            agent_id: "a".to_owned(),
            incarnation: 1,
            state: TaskState::Started,
            reason: None,
            message: String::new(),
            timestamp_ms: i,
            exit_code: None,
            oom_killed: false,
            container_id: Some(format!("c{i}")),
        })
        .collect();

    let accepted = sink.send(&updates).await.unwrap();

    assert_eq!(accepted, vec![true; 10]);
    let mut reader = StatusReader::new(&clients, &names).await;
    reader.drain_for(std::time::Duration::from_secs(2)).await;
    let mut seen = reader.seen.clone();
    seen.sort_by_key(|u| u.timestamp_ms);
    assert_eq!(seen, updates);
}
