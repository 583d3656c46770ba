//! Tasks' output, where the agents' log driver sent it: CloudWatch Logs in AWS and on the
//! emulator, one stream per task. Held by the API beside the bundle, like the rate limiter.

use serde::{Deserialize, Serialize};

use crate::ports::rate::BoxFuture;

/// The most lines one read returns (CloudWatch's GetLogEvents returns at most 10,000 events or
/// 1 MB).
pub const MAX_LOG_LINES_PER_READ: u32 = 10_000;

/// Where an agent sends its tasks' output: a CloudWatch Logs group, in a region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TaskLogs {
    pub group: String,
    /// `None`: the control plane's own region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

impl TaskLogs {
    /// The group a stage's deployments create for their agents' tasks (`/titus/{stage}/tasks`):
    /// where a task's output is looked for once its agent's record is gone.
    pub fn stage_group(stage: &str) -> String {
        format!("/titus/{stage}/tasks")
    }

    /// The stream of one task's output in the group, as the agent names it.
    pub fn stream_of(job_id: &str, task_id: &str) -> String {
        format!("{job_id}/{task_id}")
    }
}

/// One task's log stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct LogLocation {
    pub group: String,
    pub stream: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// Which lines to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRead {
    pub location: LogLocation,
    /// Where the last read stopped (its [`LogPage::cursor`]): the lines after it, oldest first.
    pub cursor: Option<String>,
    /// Without a cursor: only lines at or after this time.
    pub since_ms: Option<u64>,
    /// Without a cursor: the last `tail` lines (of those since `since_ms`) instead of the first.
    pub tail: Option<u32>,
    /// At most this many lines (1 to [`MAX_LOG_LINES_PER_READ`]).
    pub limit: u32,
}

/// One line of a task's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct LogLine {
    pub timestamp_ms: u64,
    pub message: String,
}

/// What one read returned, oldest first, and where to go on from (opaque; the same cursor
/// again returns lines written since).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPage {
    pub lines: Vec<LogLine>,
    pub cursor: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The group or the stream does not exist (yet): the task wrote nothing there.
    #[error("no log stream {stream:?} in group {group:?}")]
    NotFound { group: String, stream: String },
    /// The cursor is not one this reader returned for that stream.
    #[error("the log cursor is not valid for this stream")]
    BadCursor,
    #[error("the log service is throttling reads; retry shortly")]
    Throttled,
    #[error("the log service failed: {0}")]
    Unavailable(String),
}

/// Reads tasks' log streams.
pub trait TaskLogReader: Send + Sync + std::fmt::Debug {
    fn read<'a>(&'a self, read: &'a LogRead) -> BoxFuture<'a, Result<LogPage, LogError>>;
}
