//! The scheduler's tick against the emulator: placement, dispatch, fencing and races.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};

use titus_aws::provision::ensure_queue;
use titus_aws::resources::QueueDef;
use titus_aws::{
    aws_ports, AwsClients, AwsPorts, DynamoAgentStore, DynamoJobStore, DynamoLeaseStore, Names,
};
use titus_control::materialize::materialize_job;
use titus_control::scheduler::{tick, TickInput};
use titus_control::{ControlPlane, SchedulerSettings, Settings};
use titus_core::messages::AgentCommand;
use titus_core::ports::now_ms;
use titus_core::ports::PageRequest;
use titus_core::ports::{Lease, LeaseError, LeaseStore};
use titus_core::{AgentStore, Job, JobStore, Resources, StoreError, Task, TaskState};

use support::{add_agent, fresh_stage, submit};

async fn tasks_of(clients: &AwsClients, names: &Names, job: &Job) -> Vec<Task> {
    DynamoJobStore::new(clients.dynamodb.clone(), names)
        .list_job_tasks(&job.id, &PageRequest::first(1000))
        .await
        .unwrap()
        .items
}

/// Every command waiting on the agent's queue, by task id.
async fn drain_queue(clients: &AwsClients, url: &str) -> Vec<AgentCommand> {
    let mut commands = Vec::new();
    let mut empty_polls = 0;
    while empty_polls < 2 {
        let out = clients
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        if out.messages().is_empty() {
            empty_polls += 1;
        }
        for message in out.messages() {
            commands.push(serde_json::from_str(message.body().unwrap()).unwrap());
            clients
                .sqs
                .delete_message()
                .queue_url(url)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    commands
}

fn config() -> SchedulerSettings {
    SchedulerSettings::default()
}

/// The control plane over the stage, with these scheduler settings.
fn scheduler(
    clients: &AwsClients,
    names: &Names,
    settings: SchedulerSettings,
) -> ControlPlane<AwsPorts> {
    ControlPlane::new(
        aws_ports(clients, names),
        Settings {
            scheduler: settings,
            ..Settings::default()
        },
    )
}

fn input(owner: &str) -> TickInput {
    TickInput {
        owner: owner.to_owned(),
        started_at_ms: Some(now_ms()),
        iteration: 0,
    }
}

#[tokio::test]
async fn a_tick_places_pending_tasks_and_sends_them_to_their_agents() {
    let (clients, names) = fresh_stage().await;
    let a1 = add_agent(&clients, &names, "a1", 4096).await;
    let a2 = add_agent(&clients, &names, "a2", 4096).await;
    let job = submit(
        &clients,
        &names,
        3,
        serde_json::json!({"uniqueHost": "true"}),
    )
    .await;
    let scheduler = scheduler(&clients, &names, config());

    let summary = tick(&scheduler, input("loop-1")).await.unwrap();

    // The job was just accepted: the tick wrote its three tasks, then placed them. uniqueHost
    // on two agents: two placed, one left with a reason.
    assert_eq!(
        (
            summary.materialized,
            summary.placed,
            summary.unplaced,
            summary.pending_left
        ),
        (3, 2, 1, 1)
    );
    assert!(summary.lease_held && summary.continue_loop);
    let tasks = tasks_of(&clients, &names, &job).await;
    let launched: Vec<&Task> = tasks
        .iter()
        .filter(|t| t.state() == TaskState::Launched)
        .collect();
    assert_eq!(launched.len(), 2);
    let mut hosts: Vec<_> = launched
        .iter()
        .map(|t| t.agent_id.clone().unwrap())
        .collect();
    hosts.sort();
    assert_eq!(hosts, vec!["a1", "a2"]);
    for agent in [&a1, &a2] {
        let commands = drain_queue(&clients, &agent.queue_url).await;
        assert_eq!(commands.len(), 1);
        let AgentCommand::LaunchTask(launch) = &commands[0] else {
            panic!("expected a launch")
        };
        let task = launched.iter().find(|t| t.id == launch.task_id).unwrap();
        assert_eq!(task.agent_id.as_deref(), Some(agent.id.as_str()));
        assert_eq!(launch.image, "busybox:1");
        assert_eq!(
            launch.env.get("TITUS_TASK_ID").map(String::as_str),
            Some(task.id.as_str())
        );
        let stored = DynamoAgentStore::new(clients.dynamodb.clone(), &names)
            .get_agent(&agent.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.allocated.memory_mb, 512);
    }
}

#[tokio::test]
async fn a_scheduler_without_the_lease_places_nothing() {
    let (clients, names) = fresh_stage().await;
    add_agent(&clients, &names, "a1", 4096).await;
    let job = submit(&clients, &names, 2, serde_json::json!({})).await;
    DynamoLeaseStore::new(clients.dynamodb.clone(), &names)
        .acquire_or_renew("scheduler", "the-leader", now_ms(), 60_000)
        .await
        .unwrap();
    let scheduler = scheduler(&clients, &names, config());

    let summary = tick(&scheduler, input("a-follower")).await.unwrap();

    assert!(!summary.lease_held && !summary.continue_loop);
    assert_eq!((summary.materialized, summary.placed), (0, 0));
    assert!(
        tasks_of(&clients, &names, &job).await.is_empty(),
        "a follower writes nothing, not even a new job's tasks"
    );
}

#[tokio::test]
async fn a_waiting_task_of_a_finished_job_is_finished_not_left_pending() {
    let (clients, names) = fresh_stage().await;
    add_agent(&clients, &names, "a1", 4096).await;
    let store = DynamoJobStore::new(clients.dynamodb.clone(), &names);
    let job = submit(&clients, &names, 1, serde_json::json!({})).await;
    let task = materialize_job(&scheduler(&clients, &names, config()), &job.id)
        .await
        .unwrap()
        .remove(0);
    // The job finished while a task of it was being written (a replacement racing a kill).
    let mut finished = job.clone();
    finished
        .transition(
            titus_core::JobState::KillInitiated,
            "killed",
            "kill",
            now_ms(),
        )
        .unwrap();
    finished
        .transition(titus_core::JobState::Finished, "killed", "done", now_ms())
        .unwrap();
    store.update_job(&finished, job.version).await.unwrap();
    let scheduler = scheduler(&clients, &names, config());

    let summary = tick(&scheduler, input("loop-1")).await.unwrap();

    assert_eq!(summary.placed, 0);
    let after = store.get_task(&task.id).await.unwrap().unwrap();
    assert_eq!(after.state(), TaskState::Finished);
    assert_eq!(
        after.status.reason_code,
        Some(titus_core::TaskReason::Killed)
    );
    assert!(store
        .list_pending_tasks(10, now_ms())
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn an_unacknowledged_placement_is_sent_again_and_a_failed_send_loses_nothing() {
    let (clients, names) = fresh_stage().await;
    let mut agent = add_agent(&clients, &names, "a1", 4096).await;
    // The record names a queue someone else reads: the scheduler must not believe it.
    let (decoy, _) = ensure_queue(&clients.sqs, &queue_def(&names, "decoy"))
        .await
        .unwrap();
    agent.queue_url = decoy.clone();
    DynamoAgentStore::new(clients.dynamodb.clone(), &names)
        .register_agent(&agent)
        .await
        .unwrap();
    // The agent's own queue disappears: the first dispatch fails.
    let own = clients
        .sqs
        .get_queue_url()
        .queue_name(names.agent_queue("a1"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    clients
        .sqs
        .delete_queue()
        .queue_url(&own)
        .send()
        .await
        .unwrap();
    let job = submit(&clients, &names, 1, serde_json::json!({})).await;
    let mut cfg = config();
    cfg.ack_timeout_ms = 0;
    let scheduler = scheduler(&clients, &names, cfg);

    let first = tick(&scheduler, input("loop")).await.unwrap();
    let task = tasks_of(&clients, &names, &job).await.remove(0);
    assert_eq!((first.placed, first.dispatch_failures), (1, 1));
    assert_eq!(
        task.state(),
        TaskState::Launched,
        "a failed dispatch keeps the placement"
    );

    // The queue is back; the next tick finds the placement unacknowledged and sends it again,
    // to the queue named after the agent.
    let (url, _) = ensure_queue(&clients.sqs, &queue_def(&names, "a1"))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let second = tick(&scheduler, input("loop")).await.unwrap();

    assert_eq!(second.redispatched, 1);
    let commands = drain_queue(&clients, &url).await;
    assert_eq!(
        commands
            .iter()
            .map(|c| c.task_id().clone())
            .collect::<Vec<_>>(),
        vec![task.id.clone()]
    );
    assert!(
        drain_queue(&clients, &decoy).await.is_empty(),
        "nothing goes to the queue the record names"
    );
}

fn queue_def(names: &Names, agent_id: &str) -> QueueDef {
    QueueDef {
        role: "agent",
        name: names.agent_queue(agent_id),
        visibility_timeout_secs: 30,
        message_retention_secs: 3600,
        dead_letter: None,
    }
}

/// Lets another scheduler take the lease over right after this one got it, as if this one was
/// paused past its lease between renewing it and committing.
struct LosesLeaseMidTick {
    inner: DynamoLeaseStore,
    lose: AtomicBool,
}

impl LeaseStore for LosesLeaseMidTick {
    async fn acquire_or_renew(
        &self,
        name: &str,
        owner: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<Lease, LeaseError> {
        let lease = self
            .inner
            .acquire_or_renew(name, owner, now_ms, ttl_ms)
            .await?;
        if self.lose.load(Ordering::SeqCst) {
            // The usurper sees the lease expired.
            self.inner
                .acquire_or_renew(name, "usurper", lease.expires_at_ms + 1, ttl_ms)
                .await?;
        }
        Ok(lease)
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        self.inner.release(lease).await
    }
}

#[tokio::test]
async fn a_scheduler_that_loses_its_lease_mid_tick_commits_nothing() {
    let (clients, names) = fresh_stage().await;
    add_agent(&clients, &names, "a1", 4096).await;
    let job = submit(&clients, &names, 2, serde_json::json!({})).await;
    let scheduler = ControlPlane::new(
        aws_ports(&clients, &names).with_leases(LosesLeaseMidTick {
            inner: DynamoLeaseStore::new(clients.dynamodb.clone(), &names),
            lose: AtomicBool::new(true),
        }),
        Settings::default(),
    );

    let summary = tick(&scheduler, input("paused")).await.unwrap();

    assert_eq!(summary.placed, 0);
    assert!(!summary.lease_held);
    assert!(tasks_of(&clients, &names, &job)
        .await
        .iter()
        .all(|t| t.state() == TaskState::Accepted));
    let agent = DynamoAgentStore::new(clients.dynamodb.clone(), &names)
        .get_agent("a1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(agent.allocated, Resources::ZERO);
}

#[tokio::test]
async fn two_schedulers_at_once_never_place_a_task_twice_nor_overcommit() {
    let (clients, names) = fresh_stage().await;
    // Room for 10 tasks of 512 MB over two agents, and far more work than that.
    let agents = [
        add_agent(&clients, &names, "a1", 2560).await,
        add_agent(&clients, &names, "a2", 2560).await,
    ];
    let mut jobs = Vec::new();
    let mut cfg = config();
    // A short lease, so it changes hands between the two schedulers during the run.
    cfg.lease_ttl_ms = 50;
    cfg.max_tasks_per_tick = 4;
    let one = scheduler(&clients, &names, cfg.clone());
    let two = scheduler(&clients, &names, cfg);

    for round in 0..12 {
        jobs.push(submit(&clients, &names, 2, serde_json::json!({})).await);
        let (a, b) = tokio::join!(
            tick(
                &one,
                TickInput {
                    owner: "one".to_owned(),
                    started_at_ms: None,
                    iteration: round
                }
            ),
            tick(
                &two,
                TickInput {
                    owner: "two".to_owned(),
                    started_at_ms: None,
                    iteration: round
                }
            )
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(
            !(a.lease_held && b.lease_held && a.epoch == b.epoch && a.placed > 0 && b.placed > 0),
            "both placed under one epoch in round {round}: {a:?} {b:?}"
        );
        if round % 3 == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(60)).await;
        }
    }

    let mut launched_on: BTreeMap<String, Resources> = BTreeMap::new();
    let mut placed_tasks = 0;
    for job in &jobs {
        for task in tasks_of(&clients, &names, job).await {
            if task.state() == TaskState::Launched {
                placed_tasks += 1;
                let entry = launched_on
                    .entry(task.agent_id.clone().unwrap())
                    .or_default();
                *entry = entry.saturating_add(Resources::of_container(&task.resources));
            }
        }
    }
    assert_eq!(placed_tasks, 10, "exactly the room there was");
    let mut launches: HashMap<String, u32> = HashMap::new();
    for agent in &agents {
        let stored = DynamoAgentStore::new(clients.dynamodb.clone(), &names)
            .get_agent(&agent.id)
            .await
            .unwrap()
            .unwrap();
        assert!(
            stored.allocated.fits_within(&stored.capacity),
            "{} over-committed: {:?}",
            agent.id,
            stored.allocated
        );
        assert_eq!(
            stored.allocated,
            launched_on.get(&agent.id).copied().unwrap_or_default()
        );
        for command in drain_queue(&clients, &agent.queue_url).await {
            *launches.entry(command.task_id().to_string()).or_default() += 1;
        }
    }
    assert_eq!(launches.len(), 10);
    assert!(
        launches.values().all(|&n| n == 1),
        "a task was sent twice: {launches:?}"
    );
}
