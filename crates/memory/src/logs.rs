//! Tasks' log streams in memory ([`TaskLogReader`]), with GetLogEvents' reading rules: a cursor
//! is a position in the stream, the same cursor again returns what was appended since, and a
//! read without one starts at the head or, for a tail, at the end.

use std::collections::BTreeMap;
use std::sync::Mutex;

use titus_core::ports::rate::BoxFuture;
use titus_core::ports::{
    LogError, LogLine, LogPage, LogRead, TaskLogReader, MAX_LOG_LINES_PER_READ,
};

/// Streams by (group, stream). Groups must be created first, as in CloudWatch Logs.
#[derive(Debug, Default)]
pub struct MemoryTaskLogs {
    groups: Mutex<BTreeMap<String, BTreeMap<String, Vec<LogLine>>>>,
}

impl MemoryTaskLogs {
    pub fn new() -> MemoryTaskLogs {
        MemoryTaskLogs::default()
    }

    pub fn create_group(&self, group: &str) {
        self.lock().entry(group.to_owned()).or_default();
    }

    /// Appends lines to a stream of an existing group, creating the stream (as the awslogs
    /// driver does). Panics when the group does not exist: a test's mistake.
    pub fn append(&self, group: &str, stream: &str, lines: &[LogLine]) {
        let mut groups = self.lock();
        let streams = groups
            .get_mut(group)
            .unwrap_or_else(|| panic!("log group {group:?} does not exist"));
        let stream = streams.entry(stream.to_owned()).or_default();
        stream.extend_from_slice(lines);
        stream.sort_by_key(|line| line.timestamp_ms);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, BTreeMap<String, Vec<LogLine>>>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn read_now(&self, read: &LogRead) -> Result<LogPage, LogError> {
        let groups = self.lock();
        let not_found = || LogError::NotFound {
            group: read.location.group.clone(),
            stream: read.location.stream.clone(),
        };
        let lines = groups
            .get(&read.location.group)
            .and_then(|streams| streams.get(&read.location.stream))
            .ok_or_else(not_found)?;
        let limit = read.limit.clamp(1, MAX_LOG_LINES_PER_READ) as usize;
        let (start, end) = match &read.cursor {
            Some(cursor) => {
                let position: usize = cursor
                    .strip_prefix("f/")
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n <= lines.len())
                    .ok_or(LogError::BadCursor)?;
                (position, (position + limit).min(lines.len()))
            }
            None => {
                let first = read
                    .since_ms
                    .map_or(0, |since| lines.partition_point(|l| l.timestamp_ms < since));
                match read.tail {
                    Some(tail) => {
                        let tail = (tail as usize).clamp(1, limit);
                        (lines.len().saturating_sub(tail).max(first), lines.len())
                    }
                    None => (first, (first + limit).min(lines.len())),
                }
            }
        };
        Ok(LogPage {
            lines: lines[start..end].to_vec(),
            cursor: format!("f/{end}"),
        })
    }
}

impl TaskLogReader for MemoryTaskLogs {
    fn read<'a>(&'a self, read: &'a LogRead) -> BoxFuture<'a, Result<LogPage, LogError>> {
        Box::pin(std::future::ready(self.read_now(read)))
    }
}
