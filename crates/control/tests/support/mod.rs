//! Shared set-up for the emulator tests: each test provisions a stage of its own, so tests run in
//! parallel without seeing each other's items.

#![allow(dead_code)]

use titus_aws::provision::{ensure_queue, provision};
use titus_aws::{AwsClients, AwsPorts, DynamoAgentStore, DynamoJobStore, Names, SqsCommandQueue};
use titus_control::{ControlPlane, Settings};
use titus_core::messages::AgentCommand;
use titus_core::{
    Agent, AgentState, AgentStore, JobDescriptor, JobStore, Limits, Resources, Task, TaskState,
};

/// Clients for the emulator the test command started. Fails loudly rather than reaching AWS.
pub async fn clients() -> AwsClients {
    AwsClients::local_emulator().await
}

/// A freshly provisioned stage and the ports over it.
pub struct Stage {
    pub clients: AwsClients,
    pub names: Names,
    pub store: DynamoJobStore,
    pub agents: DynamoAgentStore,
    pub queue: SqsCommandQueue,
    /// The control plane over the stage, with the default settings.
    pub cp: ControlPlane<AwsPorts>,
}

pub async fn fresh_stage() -> Stage {
    let clients = clients().await;
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..10];
    let names = Names::new(&format!("c{suffix}")).expect("valid stage name");
    provision(&clients, &names.definitions())
        .await
        .expect("provisioning a fresh stage");
    Stage {
        store: DynamoJobStore::new(clients.dynamodb.clone(), &names),
        agents: DynamoAgentStore::new(clients.dynamodb.clone(), &names),
        queue: SqsCommandQueue::for_stage(clients.sqs.clone(), &names),
        cp: ControlPlane::new(titus_aws::aws_ports(&clients, &names), Settings::default()),
        clients,
        names,
    }
}

impl Stage {
    /// A control plane over the same stage with other settings.
    pub fn with_settings(&self, settings: Settings) -> ControlPlane<AwsPorts> {
        ControlPlane::new(titus_aws::aws_ports(&self.clients, &self.names), settings)
    }

    /// Registers an agent with a real queue of its own; returns the queue URL.
    pub async fn agent(&self, id: &str, now_ms: u64) -> String {
        let (queue_url, _) = ensure_queue(&self.clients.sqs, &self.names.agent_queue_def(id))
            .await
            .expect("creating the agent's queue");
        self.agents
            .register_agent(&Agent {
                id: id.to_owned(),
                queue_url: queue_url.clone(),
                zone: "us-east-1a".to_owned(),
                machine_type: "m5.large".to_owned(),
                machine_group: "default".to_owned(),
                state: AgentState::Active,
                capacity: Resources {
                    cpu_millis: 8_000,
                    memory_mb: 32_768,
                    disk_mb: 100_000,
                    network_mbps: 10_000,
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
            })
            .await
            .expect("registering the agent");
        queue_url
    }

    /// Moves a task forward to `state` on `agent_id`, as the scheduler and the status path would.
    pub async fn advance(
        &self,
        task: &Task,
        agent_id: &str,
        state: TaskState,
        now_ms: u64,
    ) -> Task {
        let mut task = task.clone();
        let expected = task.version;
        for step in [
            TaskState::Launched,
            TaskState::StartInitiated,
            TaskState::Started,
        ] {
            if step <= state && task.state() < step {
                task.transition(step, None, "test", now_ms).unwrap();
            }
        }
        task.agent_id = Some(agent_id.to_owned());
        self.store.update_task(&task, expected).await.unwrap();
        task
    }

    /// Every task of a job, by slot index.
    pub async fn tasks(&self, job_id: &titus_core::JobId) -> Vec<Task> {
        let page = self
            .store
            .list_job_tasks(job_id, &titus_core::ports::PageRequest::first(1000))
            .await
            .unwrap();
        let mut tasks = page.items;
        tasks.sort_by_key(|t| (t.index, t.created_at_ms));
        tasks
    }

    /// Receives every command waiting on an agent queue (deleting them).
    pub async fn drain(&self, queue_url: &str) -> Vec<AgentCommand> {
        let mut commands = Vec::new();
        loop {
            let out = self
                .clients
                .sqs
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .send()
                .await
                .unwrap();
            let messages = out.messages.unwrap_or_default();
            if messages.is_empty() {
                return commands;
            }
            for message in messages {
                commands.push(serde_json::from_str(message.body().unwrap()).unwrap());
                self.clients
                    .sqs
                    .delete_message()
                    .queue_url(queue_url)
                    .receipt_handle(message.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
    }
}

/// A valid descriptor, from JSON the way the API receives it; `extra` is merged over the base.
pub fn descriptor(extra: serde_json::Value) -> JobDescriptor {
    let mut base = serde_json::json!({
        "owner": {"teamEmail": "team@example.com"},
        "applicationName": "app",
        "container": {"image": {"name": "busybox", "tag": "stable"}},
        "batch": {"size": 2}
    });
    merge(&mut base, extra);
    titus_core::parse_descriptor(base.to_string().as_bytes(), &Limits::titus_defaults())
        .expect("test descriptor is valid")
}

/// A service descriptor with the given capacity.
pub fn service(min: u32, desired: u32, max: u32) -> JobDescriptor {
    descriptor(serde_json::json!({
        "batch": null,
        "service": {"capacity": {"min": min, "desired": desired, "max": max}}
    }))
}

fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    match (base, extra) {
        (serde_json::Value::Object(base), serde_json::Value::Object(extra)) => {
            for (key, value) in extra {
                if value.is_null() {
                    base.remove(&key);
                } else {
                    merge(base.entry(key).or_insert(serde_json::Value::Null), value);
                }
            }
        }
        (base, extra) => *base = extra,
    }
}
