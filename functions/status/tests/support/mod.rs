//! Shared set-up for the status function's emulator tests: each test provisions a stage of its
//! own, registers agents with real queues, places tasks with real fenced commits, and reports
//! status the way agents do, through SQS-shaped events. Time is a parameter everywhere.

#![allow(dead_code)]

use std::collections::HashMap;

use aws_lambda_events::event::sqs::SqsBatchResponse;
use aws_lambda_events::event::sqs::SqsEvent;
use serde_json::json;
use titus_app::lambda::{batch_response, sqs_messages};
use titus_aws::provision::{ensure_queue, provision};
use titus_aws::AwsPorts;
use titus_aws::{
    AwsClients, DynamoAgentStore, DynamoAllocationStore, DynamoJobStore, DynamoLeaseStore, Names,
};
use titus_control::status::{process_batch, Outcome};
use titus_control::{ControlPlane, Rules, Settings};
use titus_core::messages::{AgentCommand, TaskStatusUpdate};
use titus_core::ports::PageRequest;
use titus_core::ports::{AllocationStore, LeaseStore, PlacementWrite};
use titus_core::{
    Agent, AgentState, AgentStore, Job, JobId, JobStore, Limits, Resources, Task, TaskId,
    TaskReason, TaskState,
};

/// A fixed point in time; tests move the clock by adding to it.
pub const NOW: u64 = 1_764_000_000_000;

/// Short timeouts, so tests move the clock by seconds.
pub fn test_config() -> Rules {
    Rules {
        agent_heartbeat_timeout_ms: 30_000,
        launched_timeout_ms: 1_000,
        start_initiated_batch_timeout_ms: 3_000,
        start_initiated_service_timeout_ms: 2_000,
        kill_initiated_timeout_ms: 4_000,
        runtime_limit_slack_ms: 0,
        max_system_retries: 10,
        service_backoff_reset_after_ms: 600_000,
        max_tasks_per_run: 500,
        sweep_jobs_per_run: 100,
        ..Rules::default()
    }
}

pub struct Stage {
    pub clients: AwsClients,
    pub names: Names,
    pub ctx: ControlPlane<AwsPorts>,
    pub store: DynamoJobStore,
    pub agents: DynamoAgentStore,
    pub dlq_url: String,
}

pub async fn fresh_stage() -> Stage {
    fresh_stage_with(|_| {}).await
}

pub async fn fresh_stage_with(adjust: impl FnOnce(&mut Rules)) -> Stage {
    let clients = AwsClients::local_emulator().await;
    let names = Names::new(&format!(
        "r{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    ))
    .unwrap();
    provision(&clients, &names.definitions()).await.unwrap();
    let mut rules = test_config();
    adjust(&mut rules);
    let ctx = ControlPlane::new(
        titus_aws::aws_ports(&clients, &names),
        Settings {
            rules,
            ..Settings::default()
        },
    );
    Stage {
        store: DynamoJobStore::new(clients.dynamodb.clone(), &names),
        agents: DynamoAgentStore::new(clients.dynamodb.clone(), &names),
        dlq_url: ctx.ports.dead_letters.queue_url().await.unwrap().to_owned(),
        ctx,
        clients,
        names,
    }
}

/// A message read from a queue: body and string attributes.
#[derive(Debug, Clone)]
pub struct Received {
    pub body: String,
    pub attributes: HashMap<String, String>,
}

impl Stage {
    /// Registers an agent with its own queue, heartbeating at `now`.
    pub async fn agent(&self, id: &str, now: u64) -> Agent {
        let (queue_url, _) = ensure_queue(&self.clients.sqs, &self.names.agent_queue_def(id))
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
                cpu_millis: 16_000,
                memory_mb: 65_536,
                disk_mb: 1_000_000,
                network_mbps: 10_000,
                gpu: 0,
            },
            allocated: Resources::ZERO,
            task_count: 0,
            registered_at_ms: now,
            heartbeat_at_ms: now,
            incarnation: 0,
            registration_id: String::new(),
            principal: String::new(),
            task_logs: None,
        };
        self.agents.register_agent(&agent).await.unwrap()
    }

    pub async fn get_agent(&self, id: &str) -> Agent {
        self.agents.get_agent(id).await.unwrap().unwrap()
    }

    /// Stores a job from descriptor JSON merged over a minimal batch job.
    /// A job with its initial tasks written, as the scheduler's next tick would write them.
    pub async fn job(&self, extra: serde_json::Value) -> Job {
        let job = self.job_awaiting_tasks(extra).await;
        titus_control::materialize::materialize_job(&self.ctx, &job.id)
            .await
            .unwrap();
        job
    }

    /// A job just accepted: stored, its initial tasks not written yet.
    pub async fn job_awaiting_tasks(&self, extra: serde_json::Value) -> Job {
        let mut descriptor = json!({
            "owner": {"teamEmail": "team@example.com"},
            "applicationName": "app",
            "container": {"image": {"name": "busybox", "tag": "stable"}},
        });
        if let (Some(base), Some(extra)) = (descriptor.as_object_mut(), extra.as_object()) {
            base.extend(extra.clone());
        }
        let descriptor =
            titus_core::parse_descriptor(descriptor.to_string().as_bytes(), &Limits::default())
                .unwrap();
        let job = Job::new(
            JobId::generate(),
            descriptor,
            "me@example.com".to_owned(),
            NOW,
        );
        self.store.create_job(&job, None).await.unwrap();
        job
    }

    pub async fn get_job(&self, id: &JobId) -> Job {
        self.store.get_job(id).await.unwrap().unwrap()
    }

    /// Every task of the job, oldest first (slot, then place in the slot's chain).
    pub async fn tasks(&self, job: &Job) -> Vec<Task> {
        let mut tasks = self
            .store
            .list_job_tasks(&job.id, &PageRequest::first(1000))
            .await
            .unwrap()
            .items;
        tasks.sort_by_key(|t| (t.index, t.resubmit_number));
        tasks
    }

    pub async fn task(&self, id: &TaskId) -> Task {
        self.store.get_task(id).await.unwrap().unwrap()
    }

    /// The job's tasks that are not Finished.
    pub async fn live(&self, job: &Job) -> Vec<Task> {
        self.tasks(job)
            .await
            .into_iter()
            .filter(|t| !t.state().is_terminal())
            .collect()
    }

    /// Places the task on the agent at `now` with a fenced commit, as the scheduler does.
    pub async fn place(&self, task: &Task, agent: &Agent, now: u64) -> Task {
        let leases = DynamoLeaseStore::new(self.clients.dynamodb.clone(), &self.names);
        let lease = leases
            .acquire_or_renew("scheduler", "test-placer", now, 3_600_000)
            .await
            .unwrap();
        let mut launched = task.clone();
        launched.agent_id = Some(agent.id.clone());
        launched.agent_incarnation = Some(agent.incarnation);
        launched.dispatched_at_ms = Some(now);
        launched
            .transition(TaskState::Launched, None, "placed", now)
            .unwrap();
        let write = PlacementWrite {
            task: launched.clone(),
            expected_version: task.version,
            agent_id: agent.id.clone(),
            agent_incarnation: agent.incarnation,
            resources: Resources::of_container(&task.resources),
            agent_capacity: agent.capacity,
        };
        DynamoAllocationStore::new(self.clients.dynamodb.clone(), &self.names)
            .commit_placements(&lease, &[write])
            .await
            .unwrap();
        launched
    }

    /// Places the task and reports it Started at `now`.
    pub async fn run(&self, task: &Task, agent: &Agent, now: u64) -> Task {
        let placed = self.place(task, agent, now).await;
        self.report(&placed, TaskState::Started, now).await;
        self.task(&placed.id).await
    }

    /// Applies an agent's status report, as one SQS message, and returns what became of it.
    pub async fn report(&self, task: &Task, state: TaskState, at: u64) -> Outcome {
        let update = status(task, state, at);
        self.send(&[update], at).await.remove(0)
    }

    /// Reports Finished with the reason and exit code an agent would send.
    pub async fn finish(
        &self,
        task: &Task,
        reason: TaskReason,
        exit_code: i64,
        at: u64,
    ) -> Outcome {
        let update = TaskStatusUpdate {
            reason: Some(reason),
            exit_code: Some(exit_code),
            message: format!("exited with {exit_code}"),
            ..status(task, TaskState::Finished, at)
        };
        self.send(&[update], at).await.remove(0)
    }

    /// Applies updates as one SQS batch at `now`.
    pub async fn send(&self, updates: &[TaskStatusUpdate], now: u64) -> Vec<Outcome> {
        let bodies: Vec<String> = updates
            .iter()
            .map(|u| serde_json::to_string(u).unwrap())
            .collect();
        process_batch(&self.ctx, sqs_messages(sqs_event(&bodies)), now)
            .await
            .into_iter()
            .map(|(_, outcome)| outcome)
            .collect()
    }

    /// Every message waiting on a queue, deleted as read.
    pub async fn drain(&self, queue_url: &str) -> Vec<Received> {
        let mut received = Vec::new();
        loop {
            let out = self
                .clients
                .sqs
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages(10)
                .message_attribute_names("All")
                .send()
                .await
                .unwrap();
            let messages = out.messages.unwrap_or_default();
            if messages.is_empty() {
                return received;
            }
            for message in messages {
                let attributes = message
                    .message_attributes()
                    .map(|attrs| {
                        attrs
                            .iter()
                            .map(|(k, v)| {
                                (k.clone(), v.string_value().unwrap_or_default().to_owned())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                received.push(Received {
                    body: message.body().unwrap_or_default().to_owned(),
                    attributes,
                });
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

    /// The commands waiting on an agent's queue.
    pub async fn commands(&self, agent: &Agent) -> Vec<AgentCommand> {
        self.drain(&agent.queue_url)
            .await
            .into_iter()
            .map(|m| serde_json::from_str(&m.body).unwrap())
            .collect()
    }
}

/// Handles one SQS batch as the status Lambda does; the response lists what SQS must redeliver.
pub async fn handle_batch<P: titus_core::Ports>(
    ctx: &ControlPlane<P>,
    event: SqsEvent,
    now: u64,
) -> SqsBatchResponse {
    batch_response(&process_batch(ctx, sqs_messages(event), now).await)
}

/// The update an agent sends for `task` reaching `state` at `at`.
pub fn status(task: &Task, state: TaskState, at: u64) -> TaskStatusUpdate {
    TaskStatusUpdate {
        task_id: task.id.clone(),
        job_id: task.job_id.clone(),
        agent_id: task.agent_id.clone().unwrap_or_default(),
        incarnation: task.agent_incarnation.unwrap_or_default(),
        state,
        reason: None,
        message: String::new(),
        timestamp_ms: at,
        exit_code: None,
        oom_killed: false,
        container_id: Some("c0ffee".to_owned()),
    }
}

/// An SQS event as Lambda delivers it, one record per body.
pub fn sqs_event(bodies: &[String]) -> SqsEvent {
    let records: Vec<serde_json::Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            json!({
                "messageId": format!("msg-{i}-{}", uuid::Uuid::new_v4()),
                "receiptHandle": "AQEB",
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": NOW.to_string()},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:titus-test-status",
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).unwrap()
}

/// The kill commands among `commands`, as (task, reason).
pub fn kills(commands: &[AgentCommand]) -> Vec<(TaskId, TaskReason)> {
    commands
        .iter()
        .filter_map(|c| match c {
            AgentCommand::KillTask(kill) => Some((kill.task_id.clone(), kill.reason)),
            AgentCommand::LaunchTask(_) => None,
        })
        .collect()
}
