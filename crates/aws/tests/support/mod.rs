//! Shared set-up for the emulator tests: each test provisions a stage of its own, so tests run in
//! parallel without seeing each other's items.

#![allow(dead_code)]

use titus_aws::provision::provision;
use titus_aws::{AwsClients, Names};
use titus_core::ports::MAX_INITIAL_TASKS_PER_WRITE;
use titus_core::{Job, JobDescriptor, JobId, JobStore, Limits, Task};

/// Clients for the emulator the test command started. Fails loudly rather than reaching AWS.
pub async fn clients() -> AwsClients {
    AwsClients::local_emulator().await
}

/// A freshly provisioned stage with a unique name.
pub async fn fresh_stage() -> (AwsClients, Names) {
    let clients = clients().await;
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..10];
    let names = Names::new(&format!("t{suffix}")).expect("valid stage name");
    provision(&clients, &names.definitions())
        .await
        .expect("provisioning a fresh stage");
    (clients, names)
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

pub fn job(descriptor: JobDescriptor, now_ms: u64) -> Job {
    Job::new(
        JobId::generate(),
        descriptor,
        "caller@example.com".to_owned(),
        now_ms,
    )
}

/// Writes a new job's initial tasks through the store's conditional writes, as the application
/// layer's materializing does, and returns them.
pub async fn write_tasks(store: &impl JobStore, job: &Job) -> Vec<Task> {
    let tasks = Task::initial_tasks_of(job);
    let chunks: Vec<&[Task]> = tasks.chunks(MAX_INITIAL_TASKS_PER_WRITE).collect();
    let last = chunks.len().saturating_sub(1);
    for (i, chunk) in chunks.into_iter().enumerate() {
        store
            .write_initial_tasks(job, chunk, i == last)
            .await
            .expect("writing a new job's tasks");
    }
    tasks
}
