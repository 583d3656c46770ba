//! Agent records and agent command queues against the emulator.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use aws_sdk_dynamodb::types::AttributeValue;
use support::fresh_stage;
use titus_aws::provision::ensure_queue;
use titus_aws::resources::QueueDef;
use titus_aws::{DynamoAgentStore, SqsCommandQueue};
use titus_core::messages::{AgentCommand, KillTask};
use titus_core::ports::CommandQueue;
use titus_core::{Agent, AgentState, AgentStore, Resources, StoreError, TaskId, TaskReason};

fn agent(id: &str, now_ms: u64) -> Agent {
    Agent {
        id: id.to_owned(),
        queue_url: format!("http://queue/{id}"),
        zone: "us-east-1a".to_owned(),
        machine_type: "m5.large".to_owned(),
        machine_group: "default".to_owned(),
        state: AgentState::Active,
        capacity: Resources {
            cpu_millis: 2000,
            memory_mb: 8192,
            disk_mb: 50_000,
            network_mbps: 1000,
            gpu: 0,
        },
        allocated: Resources::ZERO,
        task_count: 0,
        registered_at_ms: now_ms,
        heartbeat_at_ms: now_ms,
        incarnation: 0,
        registration_id: String::new(),
        principal: String::new(),
        task_logs: None,
    }
}

#[tokio::test]
async fn a_restarted_agent_keeps_its_allocation_and_draining_state() {
    let (clients, names) = fresh_stage().await;
    let store = DynamoAgentStore::new(clients.dynamodb.clone(), &names);
    store.register_agent(&agent("a1", 1_000)).await.unwrap();
    // The scheduler allocated resources and an operator started a drain.
    clients
        .dynamodb
        .update_item()
        .table_name(names.agents_table())
        .key("agentId", AttributeValue::S("a1".to_owned()))
        .update_expression("ADD allocMemoryMb :m, taskCount :one")
        .expression_attribute_values(":m", AttributeValue::N("512".to_owned()))
        .expression_attribute_values(":one", AttributeValue::N("1".to_owned()))
        .send()
        .await
        .unwrap();
    store
        .set_agent_state("a1", AgentState::Active, AgentState::Draining)
        .await
        .unwrap();

    let mut restarted = agent("a1", 5_000);
    restarted.capacity.memory_mb = 16_384;
    let registered = store.register_agent(&restarted).await.unwrap();

    assert_eq!(registered.allocated.memory_mb, 512);
    assert_eq!(registered.task_count, 1);
    assert_eq!(registered.state, AgentState::Draining);
    assert_eq!(
        registered.capacity.memory_mb, 16_384,
        "capacity is the agent's to report"
    );
    assert_eq!(
        registered.registered_at_ms, 1_000,
        "first registration time is kept"
    );
    assert_eq!(registered.heartbeat_at_ms, 5_000);
    assert_eq!(store.get_agent("a1").await.unwrap(), Some(registered));
}

#[tokio::test]
async fn a_lost_agent_that_comes_back_is_active_again() {
    let (clients, names) = fresh_stage().await;
    let store = DynamoAgentStore::new(clients.dynamodb, &names);
    store.register_agent(&agent("a1", 1_000)).await.unwrap();
    store
        .set_agent_state("a1", AgentState::Active, AgentState::Lost)
        .await
        .unwrap();

    let registered = store.register_agent(&agent("a1", 9_000)).await.unwrap();

    assert_eq!(registered.state, AgentState::Active);
}

#[tokio::test]
async fn state_changes_and_heartbeats_are_conditional() {
    let (clients, names) = fresh_stage().await;
    let store = DynamoAgentStore::new(clients.dynamodb, &names);
    store.register_agent(&agent("a1", 1_000)).await.unwrap();

    let wrong_from = store
        .set_agent_state("a1", AgentState::Draining, AgentState::Lost)
        .await;
    let unknown = store.heartbeat("nobody", 2_000).await;
    store.heartbeat("a1", 3_000).await.unwrap();

    assert!(
        matches!(wrong_from, Err(StoreError::Conflict { .. })),
        "{wrong_from:?}"
    );
    assert!(
        matches!(unknown, Err(StoreError::Conflict { .. })),
        "{unknown:?}"
    );
    let stored = store.get_agent("a1").await.unwrap().unwrap();
    assert_eq!(stored.state, AgentState::Active);
    assert_eq!(stored.heartbeat_at_ms, 3_000);
}

#[tokio::test]
async fn agents_are_listed_in_id_order_and_can_deregister() {
    let (clients, names) = fresh_stage().await;
    let store = DynamoAgentStore::new(clients.dynamodb, &names);
    for id in ["c", "a", "b"] {
        store.register_agent(&agent(id, 1_000)).await.unwrap();
    }

    store.deregister_agent("b").await.unwrap();

    let ids: Vec<String> = store
        .list_agents()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(ids, vec!["a", "c"]);
}

#[tokio::test]
async fn commands_reach_the_agent_queue_in_batches() {
    let (clients, names) = fresh_stage().await;
    let (url, _) = ensure_queue(
        &clients.sqs,
        &QueueDef {
            role: "agent",
            name: names.agent_queue("a1"),
            visibility_timeout_secs: 30,
            message_retention_secs: 3600,
            dead_letter: None,
        },
    )
    .await
    .unwrap();
    let commands: Vec<AgentCommand> = (0..23)
        .map(|i| {
            AgentCommand::KillTask(KillTask {
                task_id: TaskId::from_string(format!("t{i}")),
                reason: TaskReason::Killed,
                grace_period_sec: 10,
            })
        })
        .collect();

    let failures = SqsCommandQueue::for_stage(clients.sqs.clone(), &names)
        .send_commands("a1", &commands)
        .await
        .unwrap();

    assert!(failures.is_empty(), "{failures:?}");
    let mut received = Vec::new();
    for _ in 0..10 {
        let out = clients
            .sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        for message in out.messages() {
            let command: AgentCommand = serde_json::from_str(message.body().unwrap()).unwrap();
            received.push(command.task_id().to_string());
        }
        if received.len() == commands.len() {
            break;
        }
    }
    received.sort();
    let mut expected: Vec<String> = (0..23).map(|i| format!("t{i}")).collect();
    expected.sort();
    assert_eq!(received, expected);
}

#[tokio::test]
async fn sending_to_an_agent_without_a_queue_is_a_clear_error() {
    let (clients, names) = fresh_stage().await;
    let queue = SqsCommandQueue::for_stage(clients.sqs, &names);
    let command = AgentCommand::KillTask(KillTask {
        task_id: TaskId::from_string("t"),
        reason: TaskReason::Killed,
        grace_period_sec: 1,
    });

    let err = queue
        .send_commands("never-registered", &[command])
        .await
        .unwrap_err();

    assert!(
        matches!(err, titus_core::ports::QueueError::NoSuchQueue(_)),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_heartbeat_report_is_stored_and_tells_the_agent_its_state() {
    let (clients, names) = fresh_stage().await;
    let store = DynamoAgentStore::new(clients.dynamodb, &names);
    store.register_agent(&agent("a1", 1_000)).await.unwrap();
    let report = titus_core::AgentHeartbeat {
        at_ms: 7_000,
        running_task_ids: vec![TaskId::from_string("t1"), TaskId::from_string("t2")],
        used: Resources {
            cpu_millis: 1500,
            memory_mb: 1024,
            disk_mb: 20_000,
            network_mbps: 256,
            gpu: 0,
        },
    };

    let active = store.report_heartbeat("a1", &report).await.unwrap();
    store
        .set_agent_state("a1", AgentState::Active, AgentState::Draining)
        .await
        .unwrap();
    let draining = store.report_heartbeat("a1", &report).await.unwrap();
    let unknown = store.report_heartbeat("nobody", &report).await;

    assert_eq!(active.state, AgentState::Active);
    assert_eq!(draining.state, AgentState::Draining);
    assert!(
        matches!(unknown, Err(StoreError::Conflict { .. })),
        "{unknown:?}"
    );
    assert_eq!(store.last_report("a1").await.unwrap(), Some(report));
    let stored = store.get_agent("a1").await.unwrap().unwrap();
    assert_eq!(stored.heartbeat_at_ms, 7_000);
    assert_eq!(
        stored.task_count, 0,
        "the task count is the control plane's"
    );
}

#[tokio::test]
async fn an_agent_queue_has_a_dead_letter_queue() {
    let (clients, names) = fresh_stage().await;
    let definition = names.agent_queue_def("i-0abc");

    let (url, created) = ensure_queue(&clients.sqs, &definition).await.unwrap();

    assert!(created);
    assert!(url.ends_with(&names.agent_queue("i-0abc")), "{url}");
    let attributes = clients
        .sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .unwrap();
    let redrive = attributes
        .attributes()
        .unwrap()
        .get(&aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy)
        .unwrap()
        .clone();
    let redrive: serde_json::Value = serde_json::from_str(&redrive).unwrap();
    let target = redrive["deadLetterTargetArn"].as_str().unwrap();
    assert!(
        target.ends_with(&format!("{}-dlq", names.agent_queue("i-0abc"))),
        "{redrive}"
    );
    // SQS gives the count as a string; the emulator as a number.
    let max_receives = redrive["maxReceiveCount"]
        .to_string()
        .trim_matches('"')
        .to_owned();
    assert_eq!(max_receives, "3", "{redrive}");
}

#[tokio::test]
async fn a_heartbeat_counts_only_under_its_agents_principal_and_naming_it() {
    let (clients, names) = fresh_stage().await;
    let store = DynamoAgentStore::new(clients.dynamodb.clone(), &names);
    let principal = "AROAEXAMPLE:a1";
    store
        .register_agent(&Agent {
            principal: principal.to_owned(),
            ..agent("a1", 1_000)
        })
        .await
        .unwrap();
    // Written by someone who is not the agent's principal (under the agent's id), and by the
    // principal of another agent naming a1: neither is a1's heartbeat.
    let forge = |key: &str, agent_id: &str| {
        clients
            .dynamodb
            .put_item()
            .table_name(names.heartbeats_table())
            .item("heartbeatKey", AttributeValue::S(key.to_owned()))
            .item("agentId", AttributeValue::S(agent_id.to_owned()))
            .item("heartbeatAtMs", AttributeValue::N("9000000".to_owned()))
            .item(
                "runningTaskIds",
                AttributeValue::L(vec![AttributeValue::S("forged".to_owned())]),
            )
            .item("runningTaskCount", AttributeValue::N("1".to_owned()))
            .send()
    };
    forge("a1", "a1").await.unwrap();
    forge("AROAEXAMPLE:a2", "a1").await.unwrap();

    let before = store.get_agent("a1").await.unwrap().unwrap();
    let listed = store.list_agents().await.unwrap();
    let reports_before = store.list_reports().await.unwrap();
    let report = titus_core::AgentHeartbeat {
        at_ms: 5_000,
        running_task_ids: vec![TaskId::from_string("t1")],
        used: Resources::ZERO,
    };
    store.report_heartbeat("a1", &report).await.unwrap();

    assert_eq!(
        before.heartbeat_at_ms, 1_000,
        "forged heartbeats do not count"
    );
    assert_eq!(listed[0].heartbeat_at_ms, 1_000);
    assert!(reports_before.is_empty(), "{reports_before:?}");
    assert_eq!(store.last_report("a1").await.unwrap(), Some(report.clone()));
    assert_eq!(
        store.list_reports().await.unwrap(),
        vec![("a1".to_owned(), report)]
    );
    assert_eq!(
        store
            .get_agent("a1")
            .await
            .unwrap()
            .unwrap()
            .heartbeat_at_ms,
        5_000
    );
    // The agent's own report went under its principal's key.
    let own = clients
        .dynamodb
        .get_item()
        .table_name(names.heartbeats_table())
        .key("heartbeatKey", AttributeValue::S(principal.to_owned()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert_eq!(own["agentId"], AttributeValue::S("a1".to_owned()));
}
