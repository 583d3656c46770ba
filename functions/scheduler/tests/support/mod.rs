//! A fresh stage in the emulator with agents and jobs, shared by the scheduler's emulator tests
//! and its AWS-cost benchmark.

use titus_aws::provision::{ensure_queue, provision};
use titus_aws::resources::QueueDef;
use titus_aws::{AwsClients, DynamoAgentStore, DynamoJobStore, Names};
use titus_core::ports::now_ms;
use titus_core::{Agent, AgentState, AgentStore, Job, JobId, JobStore, Limits, Resources};

pub async fn fresh_stage() -> (AwsClients, Names) {
    let clients = AwsClients::local_emulator().await;
    let names = Names::new(&format!(
        "s{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    ))
    .unwrap();
    provision(&clients, &names.definitions()).await.unwrap();
    (clients, names)
}

pub async fn add_agent(clients: &AwsClients, names: &Names, id: &str, memory_mb: u64) -> Agent {
    let (queue_url, _) = ensure_queue(
        &clients.sqs,
        &QueueDef {
            role: "agent",
            name: names.agent_queue(id),
            visibility_timeout_secs: 30,
            message_retention_secs: 3600,
            dead_letter: None,
        },
    )
    .await
    .unwrap();
    let agent = Agent {
        id: id.to_owned(),
        queue_url,
        zone: "z1".to_owned(),
        machine_type: "m5.large".to_owned(),
        machine_group: "default".to_owned(),
        state: AgentState::Active,
        capacity: Resources {
            cpu_millis: 64_000,
            memory_mb,
            disk_mb: 10_000_000,
            network_mbps: 100_000,
            gpu: 0,
        },
        allocated: Resources::ZERO,
        task_count: 0,
        registered_at_ms: now_ms(),
        heartbeat_at_ms: now_ms(),
        incarnation: 0,
        registration_id: String::new(),
        principal: String::new(),
        task_logs: None,
    };
    DynamoAgentStore::new(clients.dynamodb.clone(), names)
        .register_agent(&agent)
        .await
        .unwrap()
}

pub async fn submit(
    clients: &AwsClients,
    names: &Names,
    size: u32,
    constraints: serde_json::Value,
) -> Job {
    let descriptor = serde_json::json!({
        "owner": {"teamEmail": "team@example.com"},
        "applicationName": "app",
        "container": {"image": {"name": "busybox", "tag": "1"}, "hardConstraints": {"constraints": constraints}},
        "batch": {"size": size}
    });
    let descriptor =
        titus_core::parse_descriptor(descriptor.to_string().as_bytes(), &Limits::default())
            .unwrap();
    let job = Job::new(JobId::generate(), descriptor, "me".to_owned(), now_ms());
    DynamoJobStore::new(clients.dynamodb.clone(), names)
        .create_job(&job, None)
        .await
        .unwrap();
    job
}
