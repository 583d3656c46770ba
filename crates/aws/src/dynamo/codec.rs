//! Jobs and tasks to and from their DynamoDB items: the attributes keys, indexes and conditions
//! read, the record itself as JSON in `doc`, and the keys of idempotency records.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};
use titus_core::ports::IdempotencyKey;
use titus_core::{Job, StoreError, Task, TaskState};

use crate::resources::{attr, pending_shard, pending_shard_key, AWAITING_TASKS_PARTITION};

pub(super) type Item = HashMap<String, AttributeValue>;

/// The states a task should soon leave; the `transitional` index holds tasks in them, keyed by
/// when they entered the state, for the reconciler's stuck-task timeouts.
pub const TRANSITIONAL_STATES: [TaskState; 3] = [
    TaskState::Launched,
    TaskState::StartInitiated,
    TaskState::KillInitiated,
];

pub(super) fn idempotency_item_key(key: &IdempotencyKey) -> String {
    // The scope comes first and cannot contain the separator's escape, so scopes never collide.
    format!("{}#{}", key.scope.replace('#', "##"), key.key)
}

/// Sorts by creation time, then id: `0001732500000000#<id>`.
fn created_key(created_at_ms: u64, suffix: &str) -> String {
    format!("{created_at_ms:013}#{suffix}")
}

/// A job's item. `awaiting_tasks` puts it in the sparse index of jobs whose initial tasks are
/// not written yet. Public so that benchmarks write exactly what the store writes.
pub fn job_item(job: &Job, awaiting_tasks: bool) -> Result<Item, StoreError> {
    let descriptor = &job.job_descriptor;
    let mut item = HashMap::from([
        (attr::JOB_ID.to_owned(), s(job.id.as_str())),
        (attr::JOB_STATE.to_owned(), s(job.status.state.as_str())),
        (attr::OWNER.to_owned(), s(&descriptor.owner.team_email)),
        (
            attr::APPLICATION_NAME.to_owned(),
            s(&descriptor.application_name),
        ),
        (attr::JOB_TYPE.to_owned(), s(job.job_type().as_str())),
        (
            attr::CREATED_KEY.to_owned(),
            s(&created_key(job.created_at_ms, job.id.as_str())),
        ),
        (attr::VERSION.to_owned(), n(job.version)),
        (attr::DOC.to_owned(), s(&encode_doc(job)?)),
    ]);
    if awaiting_tasks {
        item.insert(attr::AWAITING_TASKS.to_owned(), s(AWAITING_TASKS_PARTITION));
    }
    Ok(item)
}

/// A task's item, with the sparse index attributes its state calls for.
pub fn task_item(task: &Task) -> Result<Item, StoreError> {
    let mut item = HashMap::from([
        (attr::TASK_ID.to_owned(), s(task.id.as_str())),
        (attr::JOB_ID.to_owned(), s(task.job_id.as_str())),
        (attr::TASK_STATE.to_owned(), s(task.state().as_str())),
        (
            attr::CREATED_KEY.to_owned(),
            s(&created_key(
                task.created_at_ms,
                &format!("{:06}#{}", task.index, task.id),
            )),
        ),
        (attr::VERSION.to_owned(), n(task.version)),
        (attr::DOC.to_owned(), s(&encode_doc(task)?)),
    ]);
    // The sparse indexes: a task is in the pending index only while it waits for placement, and
    // in the by-agent index only while it holds resources there.
    if task.state() == TaskState::Accepted {
        let eligible_ms = task.created_at_ms.max(task.not_before_ms);
        item.insert(
            attr::PENDING_SHARD.to_owned(),
            s(&pending_shard_key(pending_shard(task.id.as_str()))),
        );
        item.insert(
            attr::PENDING_KEY.to_owned(),
            s(&created_key(eligible_ms, task.id.as_str())),
        );
    }
    if let (TaskState::Launched, Some(dispatched_ms)) = (task.state(), task.dispatched_at_ms) {
        item.insert(
            attr::DISPATCH_SHARD.to_owned(),
            s(&pending_shard_key(pending_shard(task.id.as_str()))),
        );
        item.insert(
            attr::DISPATCH_KEY.to_owned(),
            s(&created_key(dispatched_ms, task.id.as_str())),
        );
    }
    if let (true, Some(agent)) = (task.state().occupies_agent(), &task.agent_id) {
        item.insert(attr::AGENT_ID.to_owned(), s(agent));
    }
    // The reconciler's sparse indexes: tasks in a state they should soon leave, keyed by when
    // they entered it; and every task not yet Finished, by job.
    if TRANSITIONAL_STATES.contains(&task.state()) {
        item.insert(
            attr::TRANSIT_SHARD.to_owned(),
            s(&pending_shard_key(pending_shard(task.id.as_str()))),
        );
        item.insert(
            attr::TRANSIT_KEY.to_owned(),
            s(&created_key(task.status.timestamp_ms, task.id.as_str())),
        );
    }
    if !task.state().is_terminal() {
        item.insert(attr::ACTIVE_JOB_ID.to_owned(), s(task.job_id.as_str()));
    }
    Ok(item)
}

pub(super) fn encode_doc<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Internal(format!("cannot encode record: {e}")))
}

pub(super) fn decode_doc<T: for<'de> Deserialize<'de>>(item: &Item) -> Result<T, StoreError> {
    let doc = string_attr(item, attr::DOC)?;
    serde_json::from_str(&doc)
        .map_err(|e| StoreError::Internal(format!("corrupt stored record: {e}")))
}

pub(super) fn string_attr(item: &Item, name: &str) -> Result<String, StoreError> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .cloned()
        .ok_or_else(|| StoreError::Internal(format!("stored item lacks string attribute {name}")))
}

pub(super) fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

pub(super) fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_scopes_cannot_collide() {
        let key = |scope: &str, key: &str| IdempotencyKey {
            scope: scope.to_owned(),
            key: key.to_owned(),
            request_hash: String::new(),
        };
        assert_ne!(
            idempotency_item_key(&key("a#b", "c")),
            idempotency_item_key(&key("a", "b#c"))
        );
    }
}
