//! Placement commits and releases: fenced by the lease, conditional on every task's version and
//! on each agent being active at the incarnation and capacity the scheduler read, with room;
//! all or nothing, within a transaction's 100 items.

use titus_core::ports::{AllocationStore, CommitError, LeaseStore, PlacementWrite};
use titus_core::{
    AgentState, AgentStore, JobStore, Ports, Resources, StoreError, Task, TaskReason, TaskState,
};

use crate::fixtures::{
    lease, placement, registered, state_of, stored_agent, stored_batch, LEASE, NOW_MS, TTL_MS,
};
use crate::{Fixture, Harness};

fn finished(write: &PlacementWrite) -> Task {
    let mut task = write.task.clone();
    task.transition(
        TaskState::Finished,
        Some(TaskReason::Normal),
        "exit 0",
        NOW_MS + 9,
    )
    .unwrap();
    task
}

/// Asserts that nothing of `tasks` was placed and agent `agent_id` holds nothing.
async fn assert_nothing_placed<F: Fixture>(fx: &F, tasks: &[Task], agent_id: &str) {
    for task in tasks {
        assert_eq!(state_of(fx, task).await, TaskState::Accepted, "{}", task.id);
    }
    let agent = stored_agent(fx, agent_id).await;
    assert_eq!(agent.allocated, Resources::ZERO);
    assert_eq!(agent.task_count, 0);
}

pub async fn a_commit_adds_each_task_s_resources_and_count_to_its_agent<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let (_, tasks) = stored_batch(&fx, 3, NOW_MS).await;
    let a1 = registered(&fx, "a1", 8_192).await;
    let a2 = registered(&fx, "a2", 8_192).await;
    let lease = lease(&fx, "s", NOW_MS).await;
    let writes = vec![
        placement(&tasks[0], &a1),
        placement(&tasks[1], &a2),
        placement(&tasks[2], &a1),
    ];

    fx.ports()
        .allocations()
        .commit_placements(&lease, &writes)
        .await
        .unwrap();

    let one = writes[0].resources;
    let on_a1 = stored_agent(&fx, "a1").await;
    let on_a2 = stored_agent(&fx, "a2").await;
    assert_eq!(on_a1.allocated, one.saturating_add(one));
    assert_eq!(on_a1.task_count, 2);
    assert_eq!(on_a2.allocated, one);
    assert_eq!(on_a2.task_count, 1);
    assert_eq!(on_a1.free(), a1.capacity.saturating_sub(on_a1.allocated));
    for write in &writes {
        let stored = fx.ports().jobs().get_task(&write.task.id).await.unwrap();
        assert_eq!(stored.as_ref(), Some(&write.task), "written as placed");
    }
}

pub async fn a_commit_that_would_overcommit_an_agent_is_refused_whole<H: Harness>(h: &H) {
    // Two 512 MB tasks on an agent with 1000 MB: only one fits.
    let fx = h.fresh().await;
    let (_, tasks) = stored_batch(&fx, 2, NOW_MS).await;
    let agent = registered(&fx, "a1", 1_000).await;
    let lease = lease(&fx, "s", NOW_MS).await;
    let allocations = fx.ports().allocations();
    let writes: Vec<_> = tasks.iter().map(|t| placement(t, &agent)).collect();

    let both = allocations.commit_placements(&lease, &writes).await;
    assert!(matches!(both, Err(CommitError::Conflict(_))), "{both:?}");
    assert_nothing_placed(&fx, &tasks, "a1").await;
    let one = allocations.commit_placements(&lease, &writes[..1]).await;
    // The scheduler's capacity was right, but another placement took the room since.
    let second = allocations.commit_placements(&lease, &writes[1..]).await;

    assert_eq!(one, Ok(()));
    assert!(
        matches!(second, Err(CommitError::Conflict(_))),
        "{second:?}"
    );
    let stored = stored_agent(&fx, "a1").await;
    assert_eq!(stored.allocated.memory_mb, 512);
    assert_eq!(stored.task_count, 1);
    assert_eq!(state_of(&fx, &tasks[1]).await, TaskState::Accepted);
}

pub async fn a_fenced_commit_is_refused_after_the_lease_is_lost_and_changes_nothing<H: Harness>(
    h: &H,
) {
    let fx = h.fresh().await;
    let (_, tasks) = stored_batch(&fx, 2, NOW_MS).await;
    let agent = registered(&fx, "a1", 8_192).await;
    let stale = lease(&fx, "paused", NOW_MS).await;
    // The paused scheduler's lease expires and another takes over.
    fx.ports()
        .leases()
        .acquire_or_renew(LEASE, "other", NOW_MS + TTL_MS + 1, TTL_MS)
        .await
        .unwrap();
    let writes: Vec<_> = tasks.iter().map(|t| placement(t, &agent)).collect();

    let result = fx
        .ports()
        .allocations()
        .commit_placements(&stale, &writes)
        .await;

    assert_eq!(result, Err(CommitError::LeaseLost { epoch: stale.epoch }));
    assert_nothing_placed(&fx, &tasks, "a1").await;
}

pub async fn a_commit_for_another_incarnation_of_the_agent_is_refused<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let (_, tasks) = stored_batch(&fx, 1, NOW_MS).await;
    let first_life = registered(&fx, "a1", 8_192).await;
    let agents = fx.ports().agents();
    agents
        .set_agent_state("a1", AgentState::Active, AgentState::Lost)
        .await
        .unwrap();
    let second_life = registered(&fx, "a1", 8_192).await;
    let lease = lease(&fx, "s", NOW_MS).await;
    let allocations = fx.ports().allocations();

    let stale = allocations
        .commit_placements(&lease, &[placement(&tasks[0], &first_life)])
        .await;
    assert!(matches!(stale, Err(CommitError::Conflict(_))), "{stale:?}");
    assert_nothing_placed(&fx, &tasks, "a1").await;
    let current = allocations
        .commit_placements(&lease, &[placement(&tasks[0], &second_life)])
        .await;

    assert_eq!((first_life.incarnation, second_life.incarnation), (1, 2));
    assert_eq!(current, Ok(()));
}

pub async fn a_task_committed_twice_is_placed_once<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let (_, tasks) = stored_batch(&fx, 1, NOW_MS).await;
    let agent = registered(&fx, "a1", 8_192).await;
    let lease = lease(&fx, "s", NOW_MS).await;
    let allocations = fx.ports().allocations();
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
    let stored = stored_agent(&fx, "a1").await;
    assert_eq!(stored.allocated.memory_mb, 512, "allocated once");
    assert_eq!(stored.task_count, 1);
}

pub async fn a_draining_agent_takes_no_placements<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let (_, tasks) = stored_batch(&fx, 1, NOW_MS).await;
    let agent = registered(&fx, "a1", 8_192).await;
    fx.ports()
        .agents()
        .set_agent_state("a1", AgentState::Active, AgentState::Draining)
        .await
        .unwrap();
    let lease = lease(&fx, "s", NOW_MS).await;

    let result = fx
        .ports()
        .allocations()
        .commit_placements(&lease, &[placement(&tasks[0], &agent)])
        .await;

    assert!(
        matches!(result, Err(CommitError::Conflict(_))),
        "{result:?}"
    );
    assert_nothing_placed(&fx, &tasks, "a1").await;
}

pub async fn a_commit_with_two_actions_on_one_task_is_refused_and_changes_nothing<H: Harness>(
    h: &H,
) {
    let fx = h.fresh().await;
    let (_, tasks) = stored_batch(&fx, 1, NOW_MS).await;
    let agent = registered(&fx, "a1", 8_192).await;
    let lease = lease(&fx, "s", NOW_MS).await;
    let write = placement(&tasks[0], &agent);

    let result = fx
        .ports()
        .allocations()
        .commit_placements(&lease, &[write.clone(), write])
        .await;

    assert!(
        matches!(result, Err(CommitError::Store(StoreError::Internal(_)))),
        "DynamoDB refuses two actions on one item outright: {result:?}"
    );
    assert_nothing_placed(&fx, &tasks, "a1").await;
}

pub async fn a_transaction_of_more_than_100_items_is_refused_and_changes_nothing<H: Harness>(
    h: &H,
) {
    // 99 tasks on one agent: the lease check, 99 tasks and the agent are 101 items.
    let fx = h.fresh().await;
    let (_, tasks) = stored_batch(&fx, 99, NOW_MS).await;
    let agent = registered(&fx, "a1", 100_000).await;
    let lease = lease(&fx, "s", NOW_MS).await;
    let allocations = fx.ports().allocations();
    let writes: Vec<_> = tasks.iter().map(|t| placement(t, &agent)).collect();

    let too_many = allocations.commit_placements(&lease, &writes).await;
    assert!(
        matches!(too_many, Err(CommitError::Store(StoreError::Internal(_)))),
        "{too_many:?}"
    );
    assert_nothing_placed(&fx, &tasks, "a1").await;
    // 98 tasks make exactly 100 items, which is allowed.
    let at_the_limit = allocations.commit_placements(&lease, &writes[..98]).await;

    assert_eq!(at_the_limit, Ok(()));
    assert_eq!(stored_agent(&fx, "a1").await.task_count, 98);
    assert_eq!(state_of(&fx, &tasks[98]).await, TaskState::Accepted);
}

pub async fn finishing_a_task_releases_its_resources_exactly_once<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let (_, tasks) = stored_batch(&fx, 1, NOW_MS).await;
    let agent = registered(&fx, "a1", 8_192).await;
    let lease = lease(&fx, "s", NOW_MS).await;
    let allocations = fx.ports().allocations();
    let write = placement(&tasks[0], &agent);
    allocations
        .commit_placements(&lease, std::slice::from_ref(&write))
        .await
        .unwrap();
    let done = finished(&write);

    allocations
        .finish_and_release(&done, write.task.version, "a1", write.resources)
        .await
        .unwrap();
    let duplicate = allocations
        .finish_and_release(&done, write.task.version, "a1", write.resources)
        .await;

    assert!(
        matches!(duplicate, Err(StoreError::Conflict { entity: "task", .. })),
        "{duplicate:?}"
    );
    let stored = stored_agent(&fx, "a1").await;
    assert_eq!(stored.allocated, Resources::ZERO);
    assert_eq!(stored.task_count, 0);
    assert_eq!(state_of(&fx, &write.task).await, TaskState::Finished);
}

pub async fn finishing_a_task_of_a_deregistered_agent_still_finishes_it<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let (_, tasks) = stored_batch(&fx, 1, NOW_MS).await;
    let agent = registered(&fx, "a1", 8_192).await;
    let lease = lease(&fx, "s", NOW_MS).await;
    let allocations = fx.ports().allocations();
    let write = placement(&tasks[0], &agent);
    allocations
        .commit_placements(&lease, std::slice::from_ref(&write))
        .await
        .unwrap();
    fx.ports().agents().deregister_agent("a1").await.unwrap();
    let done = finished(&write);

    let result = allocations
        .finish_and_release(&done, write.task.version, "a1", write.resources)
        .await;
    let duplicate = allocations
        .finish_and_release(&done, write.task.version, "a1", write.resources)
        .await;

    assert_eq!(result, Ok(()));
    assert!(duplicate.is_err_and(|e| e.is_conflict()));
    assert_eq!(state_of(&fx, &write.task).await, TaskState::Finished);
    assert_eq!(fx.ports().agents().get_agent("a1").await.unwrap(), None);
}
