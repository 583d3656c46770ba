//! Jobs and tasks as items of their tables, with the index keys the DynamoDB adapter gives them
//! (the same partition values and sort strings, so listings come back in the same order): jobs
//! by state, owner and application, and the sparse index of jobs awaiting their tasks; tasks by
//! job, the sharded sparse indexes of pending, unacknowledged and transitional tasks, tasks by
//! agent while they hold resources there, and a job's live tasks.

use serde::Serialize;
use titus_core::{Job, Task, TaskState};

use crate::index::{IndexKey, Indexed};

/// The shards the pending, unacknowledged and transitional indexes spread their writes over.
pub(crate) const TASK_SHARDS: u32 = 16;

/// The one partition of jobs awaiting their initial tasks.
pub(crate) const AWAITING_PARTITION: &str = "awaiting";

/// The states a task should soon leave.
pub(crate) const TRANSITIONAL_STATES: [TaskState; 3] = [
    TaskState::Launched,
    TaskState::StartInitiated,
    TaskState::KillInitiated,
];

/// Which shard a task's index entries go to: FNV-1a of its id, as every writer agrees.
pub(crate) fn shard_of(task_id: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in task_id.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % TASK_SHARDS
}

pub(crate) fn shard_key(shard: u32) -> String {
    format!("p{shard:02}")
}

/// Sorts by time, then the suffix: `1764000000000#<suffix>`.
pub(crate) fn time_key(ms: u64, suffix: &str) -> String {
    format!("{ms:013}#{suffix}")
}

/// A job's item: the job, and whether it still awaits its initial tasks.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct JobItem {
    pub(crate) job: Job,
    #[serde(skip)]
    pub(crate) awaiting: bool,
}

impl JobItem {
    pub(crate) fn created_key(&self) -> String {
        time_key(self.job.created_at_ms, self.job.id.as_str())
    }
}

/// The jobs table's indexes.
pub(crate) mod job_index {
    pub(crate) const BY_STATE: usize = 0;
    pub(crate) const BY_OWNER: usize = 1;
    pub(crate) const BY_APPLICATION: usize = 2;
    pub(crate) const AWAITING: usize = 3;
}

impl Indexed for JobItem {
    const INDEXES: usize = 4;

    fn index_key(&self, index: usize) -> Option<IndexKey> {
        let descriptor = &self.job.job_descriptor;
        let partition = match index {
            job_index::BY_STATE => self.job.status.state.as_str().to_owned(),
            job_index::BY_OWNER => descriptor.owner.team_email.clone(),
            job_index::BY_APPLICATION => descriptor.application_name.clone(),
            job_index::AWAITING if self.awaiting => AWAITING_PARTITION.to_owned(),
            _ => return None,
        };
        Some((partition, self.created_key()))
    }
}

/// The tasks table's indexes.
pub(crate) mod task_index {
    pub(crate) const BY_JOB: usize = 0;
    pub(crate) const PENDING: usize = 1;
    pub(crate) const UNACKNOWLEDGED: usize = 2;
    pub(crate) const BY_AGENT: usize = 3;
    pub(crate) const TRANSITIONAL: usize = 4;
    pub(crate) const ACTIVE_BY_JOB: usize = 5;
}

/// A task's sort key in its job's listings: creation time, slot, id.
pub(crate) fn task_created_key(task: &Task) -> String {
    time_key(
        task.created_at_ms,
        &format!("{:06}#{}", task.index, task.id),
    )
}

impl Indexed for Task {
    const INDEXES: usize = 6;

    fn index_key(&self, index: usize) -> Option<IndexKey> {
        let id = self.id.as_str();
        let state = self.state();
        let shard = || shard_key(shard_of(id));
        match index {
            task_index::BY_JOB => Some((self.job_id.to_string(), task_created_key(self))),
            task_index::PENDING if state == TaskState::Accepted => Some((
                shard(),
                time_key(self.created_at_ms.max(self.not_before_ms), id),
            )),
            task_index::UNACKNOWLEDGED if state == TaskState::Launched => self
                .dispatched_at_ms
                .map(|dispatched| (shard(), time_key(dispatched, id))),
            task_index::BY_AGENT if state.occupies_agent() => self
                .agent_id
                .as_ref()
                .map(|agent| (agent.clone(), id.to_owned())),
            task_index::TRANSITIONAL if TRANSITIONAL_STATES.contains(&state) => {
                Some((shard(), time_key(self.status.timestamp_ms, id)))
            }
            task_index::ACTIVE_BY_JOB if !state.is_terminal() => {
                Some((self.job_id.to_string(), task_created_key(self)))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_match_the_dynamodb_adapter_s() {
        // The adapter's own test values: the same id always maps to one shard, keys are p00..p15.
        assert_eq!(shard_of("abc"), shard_of("abc"));
        assert!(shard_of("abc") < TASK_SHARDS);
        assert_eq!(shard_key(3), "p03");
        assert_eq!(time_key(5, "x"), "0000000000005#x");
    }
}
