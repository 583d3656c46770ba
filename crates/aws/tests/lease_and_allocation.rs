//! The leader lease and fenced placement commits against the emulator.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::json;
use support::{descriptor, fresh_stage, job};
use titus_aws::{DynamoAgentStore, DynamoAllocationStore, DynamoJobStore, DynamoLeaseStore};
use titus_control::scheduler::commit::chunk_placements;
use titus_core::ports::PageRequest;
use titus_core::ports::{AllocationStore, CommitError, LeaseError, LeaseStore, PlacementWrite};
use titus_core::{Agent, AgentState, AgentStore, JobStore, Resources, Task, TaskReason, TaskState};

const NOW_MS: u64 = 1_764_000_000_000;
const TTL_MS: u64 = 10_000;

fn agent(id: &str, memory_mb: u64) -> Agent {
    Agent {
        id: id.to_owned(),
        queue_url: format!("http://queue/{id}"),
        zone: "z1".to_owned(),
        machine_type: "m5.large".to_owned(),
        machine_group: "default".to_owned(),
        state: AgentState::Active,
        capacity: Resources {
            cpu_millis: 4000,
            memory_mb,
            disk_mb: 100_000,
            network_mbps: 1000,
            gpu: 0,
        },
        allocated: Resources::ZERO,
        task_count: 0,
        registered_at_ms: NOW_MS,
        heartbeat_at_ms: NOW_MS,
        incarnation: 0,
        registration_id: String::new(),
        principal: String::new(),
        task_logs: None,
    }
}

fn placement(task: &Task, agent: &Agent) -> PlacementWrite {
    let mut launched = task.clone();
    launched.agent_id = Some(agent.id.clone());
    launched.agent_incarnation = Some(agent.incarnation);
    launched
        .transition(TaskState::Launched, None, "placed", NOW_MS + 1)
        .unwrap();
    PlacementWrite {
        task: launched,
        expected_version: task.version,
        agent_id: agent.id.clone(),
        agent_incarnation: agent.incarnation,
        resources: Resources::of_container(&task.resources),
        agent_capacity: agent.capacity,
    }
}

#[tokio::test]
async fn the_lease_is_renewed_by_its_owner_and_taken_over_only_after_expiry() {
    let (clients, names) = fresh_stage().await;
    let leases = DynamoLeaseStore::new(clients.dynamodb, &names);

    let first = leases
        .acquire_or_renew("scheduler", "a", NOW_MS, TTL_MS)
        .await
        .unwrap();
    let renewed = leases
        .acquire_or_renew("scheduler", "a", NOW_MS + 5_000, TTL_MS)
        .await
        .unwrap();
    let refused = leases
        .acquire_or_renew("scheduler", "b", NOW_MS + 6_000, TTL_MS)
        .await;
    let taken = leases
        .acquire_or_renew("scheduler", "b", NOW_MS + 15_001, TTL_MS)
        .await
        .unwrap();
    let old_owner = leases
        .acquire_or_renew("scheduler", "a", NOW_MS + 15_002, TTL_MS)
        .await;

    assert_eq!((first.epoch, first.owner.as_str()), (1, "a"));
    assert_eq!(renewed.epoch, 1, "renewal keeps the epoch");
    assert_eq!(renewed.expires_at_ms, NOW_MS + 5_000 + TTL_MS);
    assert!(
        matches!(refused, Err(LeaseError::HeldByOther { ref owner, .. }) if owner == "a"),
        "{refused:?}"
    );
    assert_eq!(
        (taken.epoch, taken.owner.as_str()),
        (2, "b"),
        "a new owner gets a new epoch"
    );
    assert!(
        matches!(old_owner, Err(LeaseError::HeldByOther { ref owner, epoch: 2, .. }) if owner == "b")
    );
}

#[tokio::test]
async fn a_released_lease_can_be_taken_at_once() {
    let (clients, names) = fresh_stage().await;
    let leases = DynamoLeaseStore::new(clients.dynamodb, &names);
    let held = leases
        .acquire_or_renew("scheduler", "a", NOW_MS, TTL_MS)
        .await
        .unwrap();

    leases.release(&held).await.unwrap();
    let taken = leases
        .acquire_or_renew("scheduler", "b", NOW_MS + 1, TTL_MS)
        .await
        .unwrap();

    assert_eq!(taken.epoch, 2);
}

async fn setup(
    memory_mb: u64,
    tasks: u32,
) -> (titus_aws::AwsClients, titus_aws::Names, Agent, Vec<Task>) {
    let (clients, names) = fresh_stage().await;
    let jobs = DynamoJobStore::new(clients.dynamodb.clone(), &names);
    let job = job(descriptor(json!({"batch": {"size": tasks}})), NOW_MS);
    jobs.create_job(&job, None).await.unwrap();
    support::write_tasks(&jobs, &job).await;
    let tasks = jobs
        .list_job_tasks(&job.id, &PageRequest::first(100))
        .await
        .unwrap()
        .items;
    let agents = DynamoAgentStore::new(clients.dynamodb.clone(), &names);
    let agent = agents
        .register_agent(&agent("a1", memory_mb))
        .await
        .unwrap();
    (clients, names, agent, tasks)
}

#[tokio::test]
async fn a_commit_under_a_lost_lease_changes_nothing() {
    let (clients, names, agent, tasks) = setup(8192, 2).await;
    let leases = DynamoLeaseStore::new(clients.dynamodb.clone(), &names);
    let allocations = DynamoAllocationStore::new(clients.dynamodb.clone(), &names);
    let stale = leases
        .acquire_or_renew("scheduler", "paused", NOW_MS, TTL_MS)
        .await
        .unwrap();
    // The paused scheduler's lease expires and another takes over.
    leases
        .acquire_or_renew("scheduler", "other", NOW_MS + TTL_MS + 1, TTL_MS)
        .await
        .unwrap();

    let writes: Vec<_> = tasks.iter().map(|t| placement(t, &agent)).collect();
    let result = allocations.commit_placements(&stale, &writes).await;

    assert_eq!(result, Err(CommitError::LeaseLost { epoch: 1 }));
    let jobs = DynamoJobStore::new(clients.dynamodb.clone(), &names);
    for task in &tasks {
        assert_eq!(
            jobs.get_task(&task.id).await.unwrap().unwrap().state(),
            TaskState::Accepted
        );
    }
    let stored = DynamoAgentStore::new(clients.dynamodb, &names)
        .get_agent("a1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.allocated, Resources::ZERO);
}

#[tokio::test]
async fn a_commit_that_would_overcommit_an_agent_is_refused_whole() {
    // Two 512 MB tasks on an agent with 1000 MB: only one fits.
    let (clients, names, agent, tasks) = setup(1000, 2).await;
    let leases = DynamoLeaseStore::new(clients.dynamodb.clone(), &names);
    let allocations = DynamoAllocationStore::new(clients.dynamodb.clone(), &names);
    let lease = leases
        .acquire_or_renew("scheduler", "s", NOW_MS, TTL_MS)
        .await
        .unwrap();

    let writes: Vec<_> = tasks.iter().map(|t| placement(t, &agent)).collect();
    let both = allocations.commit_placements(&lease, &writes).await;
    let one = allocations.commit_placements(&lease, &writes[..1]).await;

    assert!(matches!(both, Err(CommitError::Conflict(_))), "{both:?}");
    assert_eq!(one, Ok(()));
    let stored = DynamoAgentStore::new(clients.dynamodb.clone(), &names)
        .get_agent("a1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.allocated.memory_mb, 512);
    assert_eq!(stored.task_count, 1);
    let jobs = DynamoJobStore::new(clients.dynamodb, &names);
    assert_eq!(
        jobs.get_task(&tasks[0].id).await.unwrap().unwrap().state(),
        TaskState::Launched
    );
    assert_eq!(
        jobs.get_task(&tasks[1].id).await.unwrap().unwrap().state(),
        TaskState::Accepted
    );
}

#[tokio::test]
async fn a_task_committed_twice_is_placed_once() {
    let (clients, names, agent, tasks) = setup(8192, 1).await;
    let leases = DynamoLeaseStore::new(clients.dynamodb.clone(), &names);
    let allocations = DynamoAllocationStore::new(clients.dynamodb.clone(), &names);
    let lease = leases
        .acquire_or_renew("scheduler", "s", NOW_MS, TTL_MS)
        .await
        .unwrap();
    let write = placement(&tasks[0], &agent);

    let first = allocations
        .commit_placements(&lease, std::slice::from_ref(&write))
        .await;
    // A duplicated invocation replays the same plan.
    let second = allocations.commit_placements(&lease, &[write]).await;

    assert_eq!(first, Ok(()));
    assert!(
        matches!(second, Err(CommitError::Conflict(_))),
        "{second:?}"
    );
    let stored = DynamoAgentStore::new(clients.dynamodb, &names)
        .get_agent("a1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.allocated.memory_mb, 512, "allocated once");
}

#[tokio::test]
async fn a_draining_agent_takes_no_placements() {
    let (clients, names, agent, tasks) = setup(8192, 1).await;
    let agents = DynamoAgentStore::new(clients.dynamodb.clone(), &names);
    agents
        .set_agent_state("a1", AgentState::Active, AgentState::Draining)
        .await
        .unwrap();
    let leases = DynamoLeaseStore::new(clients.dynamodb.clone(), &names);
    let lease = leases
        .acquire_or_renew("scheduler", "s", NOW_MS, TTL_MS)
        .await
        .unwrap();

    let result = DynamoAllocationStore::new(clients.dynamodb.clone(), &names)
        .commit_placements(&lease, &[placement(&tasks[0], &agent)])
        .await;

    assert!(
        matches!(result, Err(CommitError::Conflict(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn finishing_a_task_releases_its_resources_exactly_once() {
    let (clients, names, agent, tasks) = setup(8192, 1).await;
    let leases = DynamoLeaseStore::new(clients.dynamodb.clone(), &names);
    let allocations = DynamoAllocationStore::new(clients.dynamodb.clone(), &names);
    let lease = leases
        .acquire_or_renew("scheduler", "s", NOW_MS, TTL_MS)
        .await
        .unwrap();
    let write = placement(&tasks[0], &agent);
    allocations
        .commit_placements(&lease, std::slice::from_ref(&write))
        .await
        .unwrap();
    let launched = write.task.clone();
    let mut finished = launched.clone();
    finished
        .transition(
            TaskState::Finished,
            Some(TaskReason::Normal),
            "exit 0",
            NOW_MS + 9,
        )
        .unwrap();

    allocations
        .finish_and_release(&finished, launched.version, "a1", write.resources)
        .await
        .unwrap();
    let duplicate = allocations
        .finish_and_release(&finished, launched.version, "a1", write.resources)
        .await;

    assert!(
        duplicate.as_ref().is_err_and(|e| e.is_conflict()),
        "{duplicate:?}"
    );
    let stored = DynamoAgentStore::new(clients.dynamodb, &names)
        .get_agent("a1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.allocated, Resources::ZERO);
    assert_eq!(stored.task_count, 0);
}

#[test]
fn placements_are_chunked_within_the_transaction_limit() {
    let task = support::job(support::descriptor(json!({"batch": {"size": 1}})), NOW_MS);
    let task = Task::initial(&task, 0, NOW_MS);
    let writes: Vec<PlacementWrite> = (0..250)
        .map(|i| placement(&task, &agent(&format!("a{}", i % 7), 8192)))
        .collect();

    let chunks = chunk_placements(&writes);

    assert_eq!(chunks.iter().map(Vec::len).sum::<usize>(), 250);
    for chunk in &chunks {
        let mut agents: Vec<_> = chunk.iter().map(|p| &p.agent_id).collect();
        agents.sort();
        agents.dedup();
        assert!(
            1 + chunk.len() + agents.len() <= 100,
            "{} tasks, {} agents",
            chunk.len(),
            agents.len()
        );
    }
}
