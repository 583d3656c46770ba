//! What the in-process world does that the emulator cannot show: indexes that lag their tables,
//! pages cut at 1 MB, request units metered by DynamoDB's rules, injected faults, a configurable
//! dead-letter limit, and long polls.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use titus_contract::fixtures::{batch_job, NOW_MS};
use titus_core::messages::{AgentCommand, KillTask};
use titus_core::ports::{
    AllocationStore, Clock, CommandQueue, CommandSource, LeaseStore, PageRequest, QueueError,
    StoreError,
};
use titus_core::{AgentStore, JobStore, Task, TaskId, TaskReason, TaskState};
use titus_memory::{Fault, MemoryConfig, MemoryWorld, MAX_PAGE_BYTES};

async fn stored_batch(world: &MemoryWorld, size: u32) -> (titus_core::Job, Vec<Task>) {
    let job = batch_job(size, NOW_MS);
    let jobs = world.jobs();
    jobs.create_job(&job, None).await.unwrap();
    let tasks = Task::initial_tasks_of(&job);
    jobs.write_initial_tasks(&job, &tasks, true).await.unwrap();
    (job, tasks)
}

fn placed(task: &Task, at_ms: u64) -> Task {
    let mut next = task.clone();
    next.agent_id = Some("a1".to_owned());
    next.transition(TaskState::Launched, None, "placed", at_ms)
        .unwrap();
    next
}

fn kill(task: &str) -> AgentCommand {
    AgentCommand::KillTask(KillTask {
        task_id: TaskId::from_string(task),
        reason: TaskReason::Killed,
        grace_period_sec: 1,
    })
}

#[tokio::test]
async fn an_index_read_sees_a_write_only_after_the_lag_while_a_get_sees_it_at_once() {
    let world = MemoryWorld::new(MemoryConfig {
        index_lag_ms: 500,
        ..MemoryConfig::default()
    });
    let jobs = world.jobs();
    let job = batch_job(1, NOW_MS);
    jobs.create_job(&job, None).await.unwrap();

    let awaiting_at_once = jobs.list_awaiting_jobs(10, u64::MAX).await.unwrap();
    world.clock().advance_ms(500);
    let awaiting_after_lag = jobs.list_awaiting_jobs(10, u64::MAX).await.unwrap();
    let tasks = Task::initial_tasks_of(&job);
    jobs.write_initial_tasks(&job, &tasks, true).await.unwrap();
    let launched = placed(&tasks[0], NOW_MS + 1);
    world.clock().advance_ms(500);
    jobs.update_task(&launched, tasks[0].version).await.unwrap();
    let pending_during_lag = jobs.list_pending_tasks(10, u64::MAX).await.unwrap();
    let consistent = jobs.get_task(&tasks[0].id).await.unwrap().unwrap();
    world.clock().advance_ms(500);
    let pending_after_lag = jobs.list_pending_tasks(10, u64::MAX).await.unwrap();

    assert!(
        awaiting_at_once.is_empty(),
        "the index has not seen the job yet"
    );
    assert_eq!(awaiting_after_lag, vec![job.id.clone()]);
    assert_eq!(
        pending_during_lag.len(),
        1,
        "the index still has the task pending"
    );
    assert_eq!(
        pending_during_lag[0].state(),
        TaskState::Accepted,
        "as it was when the index saw it"
    );
    assert_eq!(consistent.state(), TaskState::Launched);
    assert!(pending_after_lag.is_empty());
}

#[tokio::test]
async fn a_page_stops_at_1_mb_of_items_and_says_where() {
    let world = MemoryWorld::default();
    let (job, tasks) = stored_batch(&world, 1).await;
    let jobs = world.jobs();
    // Forty tasks of about 100 KB each: their long histories.
    let mut previous = tasks[0].clone();
    for i in 0..40 {
        let mut task = previous.replacement(NOW_MS + i, 0);
        task.status.reason_message = "x".repeat(100 * 1024);
        jobs.insert_task(&task).await.unwrap();
        previous = task;
    }

    let first = jobs
        .list_job_tasks(&job.id, &PageRequest::first(1_000))
        .await
        .unwrap();
    let all = jobs.list_all_job_tasks(&job.id).await.unwrap();

    let bytes: usize = first
        .items
        .iter()
        .map(|t| serde_json::to_vec(t).unwrap().len())
        .sum();
    assert!(
        first.items.len() < 41,
        "{} items in the first page",
        first.items.len()
    );
    assert!(bytes <= MAX_PAGE_BYTES, "{bytes} bytes");
    assert!(first.next_cursor.is_some());
    assert_eq!(all.len(), 41, "the pages together hold every task once");
}

#[tokio::test]
async fn reads_are_metered_per_4_kb_and_half_that_from_an_index() {
    let world = MemoryWorld::default();
    let (job, tasks) = stored_batch(&world, 2).await;
    let jobs = world.jobs();
    let before = world.meter();

    jobs.get_task(&tasks[0].id).await.unwrap();
    jobs.list_job_tasks(&job.id, &PageRequest::first(10))
        .await
        .unwrap();
    jobs.update_task(&placed(&tasks[0], NOW_MS + 1), tasks[0].version)
        .await
        .unwrap();
    let delta = world.meter().since(&before);

    // A small task: one strongly consistent unit, then half a unit for the index page.
    assert_eq!(delta.read_request_units, 1.5, "{delta:?}");
    assert!(delta.write_request_units >= 1.0, "{delta:?}");
    // Placed, the task leaves the pending index, enters the by-agent and transitional ones,
    // and changes in the by-job and live-by-job ones.
    assert!(delta.index_write_request_units >= 5.0, "{delta:?}");
    assert_eq!(delta.requests_of("DynamoDB.GetItem"), 1);
    assert_eq!(delta.requests_of("DynamoDB.Query"), 1);
    assert_eq!(delta.requests_of("DynamoDB.PutItem"), 1);
}

#[tokio::test]
async fn a_transaction_costs_twice_the_write_units_of_the_same_writes_alone() {
    let job = batch_job(3, NOW_MS);
    let tasks = Task::initial_tasks_of(&job);
    let alone = MemoryWorld::default();
    alone.jobs().create_job(&job, None).await.unwrap();
    let job_written = alone.meter();
    for task in &tasks {
        alone.jobs().insert_task(task).await.unwrap();
    }
    let tasks_alone = alone.meter().since(&job_written).write_request_units;
    let together = MemoryWorld::default();
    together.jobs().create_job(&job, None).await.unwrap();
    let before = together.meter();

    together
        .jobs()
        .write_initial_tasks(&job, &tasks, false)
        .await
        .unwrap();
    let delta = together.meter().since(&before);

    // The job is checked (a condition check costs as a write) and each task put, all doubled.
    assert_eq!(
        delta.write_request_units,
        2.0 * (job_written.write_request_units + tasks_alone),
        "{delta:?}"
    );
    assert_eq!(delta.requests_of("DynamoDB.TransactWriteItems"), 1);
}

#[tokio::test]
async fn a_throttled_operation_fails_for_its_next_calls_then_succeeds() {
    let world = MemoryWorld::default();
    let (_, tasks) = stored_batch(&world, 1).await;
    world
        .faults()
        .fail_next("jobs.get_task", 2, Fault::Throttle)
        .unwrap();
    let jobs = world.jobs();

    let first = jobs.get_task(&tasks[0].id).await;
    let second = jobs.get_task(&tasks[0].id).await;
    let third = jobs.get_task(&tasks[0].id).await;
    let other = jobs.get_job(&tasks[0].job_id).await;

    assert!(
        matches!(first, Err(StoreError::Unavailable(_))),
        "{first:?}"
    );
    assert!(matches!(second, Err(StoreError::Unavailable(_))));
    assert!(matches!(third, Ok(Some(_))));
    assert!(other.is_ok(), "another operation is untouched");
    assert_eq!(world.meter().faults_injected["jobs.get_task"], 2);
}

#[tokio::test]
async fn a_lost_reply_applies_the_write_but_reports_it_unavailable() {
    let world = MemoryWorld::default();
    let (_, tasks) = stored_batch(&world, 1).await;
    world
        .faults()
        .fail_next("jobs.update_task", 1, Fault::LostReply)
        .unwrap();
    let jobs = world.jobs();
    let launched = placed(&tasks[0], NOW_MS + 1);

    let answer = jobs.update_task(&launched, tasks[0].version).await;
    let retry = jobs.update_task(&launched, tasks[0].version).await;

    assert!(
        matches!(answer, Err(StoreError::Unavailable(_))),
        "{answer:?}"
    );
    assert!(
        retry.is_err_and(|e| e.is_conflict()),
        "the first write happened"
    );
    assert_eq!(
        jobs.get_task(&tasks[0].id).await.unwrap().unwrap().state(),
        TaskState::Launched
    );
}

#[tokio::test]
async fn probabilistic_faults_fall_the_same_way_for_the_same_seed() {
    async fn run(seed: u64) -> Vec<bool> {
        let world = MemoryWorld::new(MemoryConfig {
            fault_seed: seed,
            ..MemoryConfig::default()
        });
        world
            .faults()
            .fail_with_probability("leases.*", 0.5, Fault::Fail)
            .unwrap();
        let leases = world.leases();
        let mut outcomes = Vec::new();
        for i in 0..40 {
            outcomes.push(
                leases
                    .acquire_or_renew("l", "me", NOW_MS + i, 1_000)
                    .await
                    .is_ok(),
            );
        }
        outcomes
    }

    let first = run(42).await;

    assert_eq!(first, run(42).await);
    assert_ne!(first, run(43).await);
    assert!(first.contains(&true) && first.contains(&false), "{first:?}");
}

#[tokio::test]
async fn a_commit_can_be_throttled_like_any_store_call() {
    let world = MemoryWorld::default();
    world
        .faults()
        .fail_next("allocations.*", 1, Fault::Throttle)
        .unwrap();
    let lease = world
        .leases()
        .acquire_or_renew("scheduler", "s", NOW_MS, 1_000)
        .await
        .unwrap();

    let result = world.allocations().commit_placements(&lease, &[]).await;

    assert!(
        matches!(
            result,
            Err(titus_core::ports::CommitError::Store(
                StoreError::Unavailable(_)
            ))
        ),
        "{result:?}"
    );
}

#[tokio::test]
async fn the_dead_letter_limit_is_the_world_s_to_set() {
    let world = MemoryWorld::new(MemoryConfig {
        agent_queue_max_receives: 1,
        ..MemoryConfig::default()
    });
    world.commands().ensure_agent_queue("a1").await.unwrap();
    world
        .commands()
        .send_commands("a1", &[kill("t1")])
        .await
        .unwrap();
    let source = world.command_source("a1");

    let first = source.receive(10, Duration::ZERO).await.unwrap();
    source.release(&first[0].receipt).await.unwrap();
    let second = source.receive(10, Duration::ZERO).await.unwrap();

    assert_eq!(first.len(), 1);
    assert!(second.is_empty());
    assert_eq!(world.agent_dead_letters("a1").len(), 1);
    assert!(world.agent_commands("a1").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_long_poll_waits_for_a_message_to_its_own_queue() {
    let world = MemoryWorld::default();
    for agent in ["a1", "a2"] {
        world.commands().ensure_agent_queue(agent).await.unwrap();
    }
    let source = world.command_source("a1");
    let sender = world.commands();
    let send = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        sender
            .send_commands("a2", &[kill("elsewhere")])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        sender.send_commands("a1", &[kill("t1")]).await.unwrap();
    });

    let received = source.receive(10, Duration::from_secs(10)).await.unwrap();
    send.await.unwrap();
    let idle = source.receive(10, Duration::from_secs(1)).await.unwrap();

    assert_eq!(received.len(), 1, "{received:?}");
    assert!(received[0].body.contains("t1"), "{received:?}");
    assert!(
        idle.is_empty(),
        "a poll with nothing to get ends empty at its wait"
    );
    assert_eq!(
        world.meter().requests_of("SQS.ReceiveMessage"),
        2,
        "a long poll is one request"
    );
}

#[tokio::test]
async fn an_agent_queue_that_does_not_exist_is_no_such_queue_on_both_sides() {
    let world = MemoryWorld::default();

    let send = world.commands().send_commands("a1", &[kill("t")]).await;
    let receive = world.command_source("a1").receive(1, Duration::ZERO).await;

    assert!(matches!(send, Err(QueueError::NoSuchQueue(_))), "{send:?}");
    assert!(
        matches!(receive, Err(QueueError::NoSuchQueue(_))),
        "{receive:?}"
    );
}

#[tokio::test]
async fn a_world_s_clock_is_its_ports_clock() {
    let world = MemoryWorld::default();
    let ports = world.ports();

    world.clock().advance(Duration::from_secs(3));

    assert_eq!(ports.clock.now_ms(), world.clock().now_ms());
    assert_eq!(ports.clock.now_ms(), titus_memory::DEFAULT_START_MS + 3_000);
    let registered = world
        .agents()
        .register_agent(&titus_contract::fixtures::agent("a1", 1_024, NOW_MS))
        .await
        .unwrap();
    assert_eq!(registered.incarnation, 1);
}
