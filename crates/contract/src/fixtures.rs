//! The suite's test data, built the way the application layer builds it: descriptors parsed from
//! the JSON the API receives, jobs with their initial tasks written through the store, agents as
//! a registration asks for them, placements as the scheduler plans them.

use titus_core::ports::{
    AllocationStore, Lease, LeaseStore, PageRequest, PlacementWrite, MAX_INITIAL_TASKS_PER_WRITE,
};
use titus_core::{
    Agent, AgentState, AgentStore, Job, JobDescriptor, JobId, JobStore, Limits, Ports, Resources,
    Task, TaskReason, TaskState,
};

use crate::Fixture;

/// The time the suite's records are written at.
pub const NOW_MS: u64 = 1_764_000_000_000;

/// How long the suite's leases last.
pub const TTL_MS: u64 = 10_000;

/// The scheduler's lease name.
pub const LEASE: &str = "scheduler";

/// A valid descriptor, from JSON the way the API receives it; `extra` is merged over a batch job
/// of two tasks (a `null` removes a field).
pub fn descriptor(extra: serde_json::Value) -> JobDescriptor {
    let mut base = serde_json::json!({
        "owner": {"teamEmail": "team@example.com"},
        "applicationName": "app",
        "container": {"image": {"name": "busybox", "tag": "stable"}},
        "batch": {"size": 2}
    });
    merge(&mut base, extra);
    titus_core::parse_descriptor(base.to_string().as_bytes(), &Limits::titus_defaults())
        .expect("the suite's descriptors are valid")
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

/// A batch job of `size` tasks created at `created_at_ms`.
pub fn batch_job(size: u32, created_at_ms: u64) -> Job {
    job(
        descriptor(serde_json::json!({"batch": {"size": size}})),
        created_at_ms,
    )
}

pub fn job(descriptor: JobDescriptor, created_at_ms: u64) -> Job {
    Job::new(
        JobId::generate(),
        descriptor,
        "caller@example.com".to_owned(),
        created_at_ms,
    )
}

/// Stores `job` and writes its initial tasks as the application layer's materializing does;
/// returns the tasks in slot order.
pub async fn stored_job<F: Fixture>(fx: &F, job: &Job) -> Vec<Task> {
    let jobs = fx.ports().jobs();
    jobs.create_job(job, None).await.expect("creating a job");
    let tasks = Task::initial_tasks_of(job);
    let chunks: Vec<&[Task]> = tasks.chunks(MAX_INITIAL_TASKS_PER_WRITE).collect();
    let last = chunks.len().saturating_sub(1);
    for (i, chunk) in chunks.into_iter().enumerate() {
        jobs.write_initial_tasks(job, chunk, i == last)
            .await
            .expect("writing a new job's tasks");
    }
    tasks
}

/// A batch job of `size` tasks, stored with its tasks.
pub async fn stored_batch<F: Fixture>(fx: &F, size: u32, created_at_ms: u64) -> (Job, Vec<Task>) {
    let job = batch_job(size, created_at_ms);
    let tasks = stored_job(fx, &job).await;
    (job, tasks)
}

/// What a test agent offers: room for `memory_mb` of default tasks' memory, and plenty of the
/// rest.
pub fn capacity(memory_mb: u64) -> Resources {
    Resources {
        cpu_millis: 200_000,
        memory_mb,
        disk_mb: 2_000_000,
        network_mbps: 100_000,
        gpu: 0,
    }
}

/// The record a registration of agent `id` asks for at `now_ms`.
pub fn agent(id: &str, memory_mb: u64, now_ms: u64) -> Agent {
    Agent {
        id: id.to_owned(),
        queue_url: format!("https://queue.example/{id}"),
        zone: "us-east-1a".to_owned(),
        machine_type: "m5.large".to_owned(),
        machine_group: "default".to_owned(),
        state: AgentState::Active,
        capacity: capacity(memory_mb),
        allocated: Resources::ZERO,
        task_count: 0,
        registered_at_ms: now_ms,
        heartbeat_at_ms: now_ms,
        incarnation: 0,
        registration_id: format!("reg-{id}-{now_ms}"),
        principal: String::new(),
        task_logs: None,
    }
}

/// Registers agent `id` with room for `memory_mb`; returns its record.
pub async fn registered<F: Fixture>(fx: &F, id: &str, memory_mb: u64) -> Agent {
    fx.ports()
        .agents()
        .register_agent(&agent(id, memory_mb, NOW_MS))
        .await
        .expect("registering an agent")
}

/// The scheduler's lease, held by `owner` from `now_ms`.
pub async fn lease<F: Fixture>(fx: &F, owner: &str, now_ms: u64) -> Lease {
    fx.ports()
        .leases()
        .acquire_or_renew(LEASE, owner, now_ms, TTL_MS)
        .await
        .expect("taking a free lease")
}

/// The placement of `task` on `agent` as the scheduler plans it.
pub fn placement(task: &Task, agent: &Agent) -> PlacementWrite {
    let mut launched = task.clone();
    launched.agent_id = Some(agent.id.clone());
    launched.agent_incarnation = Some(agent.incarnation);
    launched.dispatched_at_ms = Some(NOW_MS + 1);
    launched
        .transition(TaskState::Launched, None, "placed", NOW_MS + 1)
        .expect("an accepted task can be placed");
    PlacementWrite {
        task: launched,
        expected_version: task.version,
        agent_id: agent.id.clone(),
        agent_incarnation: agent.incarnation,
        resources: Resources::of_container(&task.resources),
        agent_capacity: agent.capacity,
    }
}

/// Places `task` on `agent` under a fresh lease; returns the task as placed.
pub async fn placed<F: Fixture>(fx: &F, task: &Task, agent: &Agent) -> PlacementWrite {
    let lease = lease(fx, "placer", NOW_MS).await;
    let write = placement(task, agent);
    fx.ports()
        .allocations()
        .commit_placements(&lease, std::slice::from_ref(&write))
        .await
        .expect("placing a task on an agent with room");
    write
}

/// `task` moved forward through each state up to `state` at `at_ms`, on `agent_id` (Finished
/// as `normal`); written conditionally on its version, and returned as written.
pub async fn advanced<F: Fixture>(
    fx: &F,
    task: &Task,
    agent_id: &str,
    state: TaskState,
    at_ms: u64,
) -> Task {
    let mut next = task.clone();
    for step in [
        TaskState::Launched,
        TaskState::StartInitiated,
        TaskState::Started,
        TaskState::KillInitiated,
        TaskState::Finished,
    ] {
        if step <= state && next.state() < step {
            let reason = (step == TaskState::Finished).then_some(TaskReason::Normal);
            next.transition(step, reason, "test", at_ms)
                .expect("forward transitions");
        }
    }
    if next.agent_id.is_none() {
        next.agent_id = Some(agent_id.to_owned());
    }
    fx.ports()
        .jobs()
        .update_task(&next, task.version)
        .await
        .expect("moving a task forward");
    next
}

/// Every task of a job, page by page.
pub async fn all_tasks<F: Fixture>(fx: &F, job_id: &JobId) -> Vec<Task> {
    let mut tasks = Vec::new();
    let mut page = PageRequest::first(100);
    loop {
        let result = fx
            .ports()
            .jobs()
            .list_job_tasks(job_id, &page)
            .await
            .expect("listing a job's tasks");
        tasks.extend(result.items);
        match result.next_cursor {
            Some(cursor) => page.cursor = Some(cursor),
            None => return tasks,
        }
    }
}

/// The stored agent, which must exist.
pub async fn stored_agent<F: Fixture>(fx: &F, id: &str) -> Agent {
    fx.ports()
        .agents()
        .get_agent(id)
        .await
        .expect("reading an agent")
        .expect("the agent exists")
}

/// The stored task's state, which must exist.
pub async fn state_of<F: Fixture>(fx: &F, task: &Task) -> TaskState {
    fx.ports()
        .jobs()
        .get_task(&task.id)
        .await
        .expect("reading a task")
        .expect("the task exists")
        .state()
}
