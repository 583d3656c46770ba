//! Response and request shapes of the API that are not domain types, with their schemas.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use titus_core::ports::Page;
use titus_core::{Agent, Job, JobState, JobType, Task, TaskState};
use utoipa::{IntoParams, ToSchema};

/// Where a list stopped. Pass `cursor` back, with the same filters, for the next page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pagination {
    /// The page size that was asked for; a page may hold fewer items and still have more after it.
    pub page_size: u32,
    pub has_more: bool,
    /// Present when `hasMore` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

impl Pagination {
    pub fn of<T>(page: &Page<T>, page_size: u32) -> Pagination {
        Pagination {
            page_size,
            has_more: page.next_cursor.is_some(),
            cursor: page.next_cursor.clone(),
        }
    }
}

/// One page of jobs, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobPage {
    pub items: Vec<Job>,
    pub pagination: Pagination,
}

/// One page of tasks, oldest first within each job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskPage {
    pub items: Vec<Task>,
    pub pagination: Pagination,
}

/// A read of the event feed: the matching events after the cursor, oldest first, and the cursor
/// to read on from. An event may come twice (at least once); its `id` says it is the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventList {
    pub events: Vec<titus_core::events::Event>,
    /// Pass back as `cursor` to go on; never empty.
    pub cursor: String,
    /// More events can be read at once (the read stopped at `limit` or at the end of the
    /// minutes one read walks).
    pub has_more: bool,
}

/// A read of a task's output: where it is kept, the lines read (oldest first), and the cursor to
/// read on from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskLogs {
    pub task_id: String,
    /// The CloudWatch Logs stream (`{jobId}/{taskId}` in the agent's group), readable with AWS'
    /// own tools too.
    pub location: titus_core::ports::LogLocation,
    pub lines: Vec<titus_core::ports::LogLine>,
    /// Pass back as `cursor` for the lines written since; absent while the stream does not
    /// exist yet (the task has not started): read again without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// The task is Finished: once a read with the cursor returns no lines, nothing more comes.
    pub task_finished: bool,
}

/// `GET /api/v3/tasks/{id}/logs`' parameters.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct TaskLogsParams {
    /// The `cursor` of the previous answer: the lines written after it.
    cursor: Option<String>,
    /// Without a cursor: only lines at or after this time (ms since the epoch).
    #[param(rename = "sinceMs", minimum = 0)]
    since_ms: Option<u64>,
    /// Without a cursor: the last this many lines instead of the first, 1 to 10000.
    #[param(minimum = 1, maximum = 10000)]
    tail: Option<u32>,
    /// Most lines per answer, 1 to 10000 (default 1000).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
}

/// `GET /api/v3/events`'s parameters.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ListEventsParams {
    /// Only this job's events (its own feed: cheaper than filtering every job's).
    #[param(rename = "jobId", format = Uuid)]
    job_id: Option<String>,
    /// Only events of jobs of this owner team (`owner.teamEmail`).
    owner: Option<String>,
    /// Event types to include, comma-separated (default: all).
    #[param(style = Form, explode = false)]
    types: Option<Vec<titus_core::events::EventType>>,
    /// The `cursor` of the previous answer.
    cursor: Option<String>,
    /// Without a cursor: start at this time (ms since the epoch; the feed keeps 7 days).
    /// Without either: start now.
    #[param(rename = "sinceMs", minimum = 0)]
    since_ms: Option<u64>,
    /// Wait up to this long for a matching event, 0 to 20000 (default 0: answer at once).
    #[param(rename = "waitMs", minimum = 0, maximum = 20000)]
    wait_ms: Option<u64>,
    /// Most events per answer, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// Every registered agent, in id order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentList {
    pub items: Vec<Agent>,
}

/// One quota: whose, its limits (what applies, `"*"`'s when the scope has no entry of its own)
/// and what its unfinished jobs hold now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaView {
    /// `team` or `capacityGroup`.
    pub kind: String,
    /// The owner team's email or the capacity group's name.
    pub name: String,
    pub limits: titus_core::quota::QuotaLimits,
    pub used: UsedResources,
}

/// What is held, CPU in cores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsedResources {
    pub jobs: i64,
    pub tasks: i64,
    pub cpu: f64,
    #[serde(rename = "memoryMB")]
    pub memory_mb: i64,
    pub gpu: i64,
}

impl From<titus_core::quota::Usage> for UsedResources {
    fn from(usage: titus_core::quota::Usage) -> UsedResources {
        UsedResources {
            jobs: usage.jobs,
            tasks: usage.tasks,
            cpu: usage.cpu_millis as f64 / 1000.0,
            memory_mb: usage.memory_mb,
            gpu: usage.gpu,
        }
    }
}

/// The quotas the caller may see: its teams' and every capacity group's (an admin: all), plus
/// the defaults for scopes without an entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaList {
    pub items: Vec<QuotaView>,
    pub default_team_limits: titus_core::quota::QuotaLimits,
    pub default_capacity_group_limits: titus_core::quota::QuotaLimits,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok`: the function answers.
    pub status: String,
}

/// A change of a service job's capacity. An omitted (or null) field keeps its current value; the
/// result must satisfy min <= desired <= max.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CapacityRequest {
    #[schema(maximum = 4294967295_u64)]
    pub min: Option<u32>,
    #[schema(maximum = 4294967295_u64)]
    pub desired: Option<u32>,
    #[schema(maximum = 4294967295_u64)]
    pub max: Option<u32>,
}

/// Attributes to add or replace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttributesRequest {
    pub attributes: BTreeMap<String, String>,
}

/// Query parameters of `GET /api/v3/jobs` (documentation; the handler parses the query itself).
#[allow(dead_code)]
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListJobsParams {
    /// Job states to include, comma-separated (default: all).
    #[param(rename = "jobState", style = Form, explode = false)]
    job_state: Option<Vec<JobState>>,
    /// The owner's team email.
    #[param(max_length = 254)]
    owner: Option<String>,
    /// The application name (at most 2048 bytes).
    #[param(rename = "applicationName", max_length = 2048)]
    application_name: Option<String>,
    #[param(rename = "jobType")]
    job_type: Option<JobType>,
    /// Attributes that must be set, as comma-separated `key:value` pairs (at most 16 pairs,
    /// 4096 bytes in all).
    #[param(style = Form, explode = false, max_items = 16)]
    attributes: Option<Vec<String>>,
    /// Items per page, 1 to 1000 (default 50).
    #[param(rename = "pageSize", minimum = 1, maximum = 1000)]
    page_size: Option<u32>,
    /// The `pagination.cursor` of the previous page.
    cursor: Option<String>,
}

/// Query parameters of `GET /api/v3/tasks`.
#[allow(dead_code)]
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListTasksParams {
    /// Only this job's tasks.
    #[param(rename = "jobId", format = Uuid)]
    job_id: Option<String>,
    /// Task states to include, comma-separated (default: all).
    #[param(rename = "taskStates", style = Form, explode = false)]
    task_states: Option<Vec<TaskState>>,
    /// Items per page, 1 to 1000 (default 50).
    #[param(rename = "pageSize", minimum = 1, maximum = 1000)]
    page_size: Option<u32>,
    /// The `pagination.cursor` of the previous page.
    cursor: Option<String>,
}

/// What the scheduler found for a task, or for a job's pending tasks, in the shape of Titus'
/// `SchedulingResultEvent`: `success` once a task is placed, `failures` while its job's tasks fit
/// on no agent, neither (with `message`) while the scheduler has not tried or has not failed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingResult {
    pub job_id: String,
    /// Present when the id asked about is a task's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<SchedulingSuccess>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<SchedulingFailures>,
    /// Why there is neither a success nor failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// With `failures`: the job's pending tasks the scheduler could not place when it last tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unplaced_tasks: Option<u32>,
    /// With `failures`: the resource dimensions (`cpu`, `memory`, `disk`, `network`, `gpu`)
    /// short on agents that met the job's constraints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub insufficient: Vec<String>,
    /// With `failures`: since when the scheduler finds this answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
    /// With `failures`: when the scheduler last confirmed it (it does about once a minute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub computed_at_ms: Option<u64>,
    /// With `failures`: the scheduler has not confirmed the answer for three minutes (the
    /// job's tasks were not among those it read, or it has not run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SchedulingSuccess {
    /// E.g. `placed on agent i-0abc at 1732500000000`.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SchedulingFailures {
    /// Why agents were rejected, most agents first.
    pub failures: Vec<SchedulingFailure>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingFailure {
    /// E.g. `insufficient memory`, `hard constraint availabilityZone="us-east-1a"`, `no agents`.
    pub reason: String,
    /// The agents rejected for this reason.
    pub failure_count: u32,
}

impl SchedulingResult {
    /// The ids of `base` with a job's stored result, stale when the scheduler has not confirmed
    /// it for [`titus_control::scheduler::results::STALE_AFTER_MS`].
    pub fn failures(
        found: titus_core::placement::PlacementResult,
        now_ms: u64,
        base: SchedulingResult,
    ) -> SchedulingResult {
        let stale = now_ms.saturating_sub(found.computed_at_ms)
            > titus_control::scheduler::results::STALE_AFTER_MS;
        SchedulingResult {
            failures: Some(SchedulingFailures {
                failures: found
                    .rejections
                    .into_iter()
                    .map(|r| SchedulingFailure {
                        reason: r.reason,
                        failure_count: r.agents,
                    })
                    .collect(),
            }),
            unplaced_tasks: Some(found.unplaced_tasks),
            insufficient: found.insufficient,
            since_ms: Some(found.since_ms),
            computed_at_ms: Some(found.computed_at_ms),
            stale: Some(stale),
            ..base
        }
    }
}
