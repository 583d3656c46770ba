//! Tasks' log streams ([`TaskLogReader`]): reading from the head, a tail, since a time, and on
//! from a cursor, which returns what was written after the last read and nothing twice.

use std::future::Future;

use titus_core::ports::{LogError, LogLine, LogLocation, LogRead, TaskLogReader};

/// Writes lines the way the agents' log driver does, for the suite to read back.
pub trait LogWriter: Sync {
    /// Creates the group unless it exists.
    fn create_group(&self, group: &str) -> impl Future<Output = ()> + Send;
    /// Appends lines to a stream of the group, creating the stream.
    fn append(
        &self,
        group: &str,
        stream: &str,
        lines: &[LogLine],
    ) -> impl Future<Output = ()> + Send;
}

fn line(timestamp_ms: u64, message: &str) -> LogLine {
    LogLine {
        timestamp_ms,
        message: message.to_owned(),
    }
}

fn read_of(group: &str, stream: &str) -> LogRead {
    LogRead {
        location: LogLocation {
            group: group.to_owned(),
            stream: stream.to_owned(),
            region: None,
        },
        cursor: None,
        since_ms: None,
        tail: None,
        limit: 100,
    }
}

fn messages(lines: &[LogLine]) -> Vec<&str> {
    lines.iter().map(|l| l.message.as_str()).collect()
}

/// The whole behaviour, on a group of the caller's (unique per run).
pub async fn task_logs(reader: &dyn TaskLogReader, writer: &impl LogWriter, group: &str) {
    writer.create_group(group).await;
    let stream = "job-1/task-1";

    let missing = reader.read(&read_of(group, stream)).await.unwrap_err();
    assert!(
        matches!(missing, LogError::NotFound { .. }),
        "a stream nothing was written to is not found: {missing:?}"
    );

    let t0 = 1_796_000_000_000;
    let first: Vec<LogLine> = (0..5)
        .map(|i| line(t0 + i * 1_000, &format!("line {i}")))
        .collect();
    writer.append(group, stream, &first).await;

    let all = reader.read(&read_of(group, stream)).await.unwrap();
    assert_eq!(
        messages(&all.lines),
        ["line 0", "line 1", "line 2", "line 3", "line 4"],
        "from the head, oldest first"
    );
    assert_eq!(all.lines[2].timestamp_ms, t0 + 2_000);

    let again = reader
        .read(&LogRead {
            cursor: Some(all.cursor.clone()),
            ..read_of(group, stream)
        })
        .await
        .unwrap();
    assert!(
        again.lines.is_empty(),
        "a cursor at the end returns nothing until more is written: {:?}",
        again.lines
    );

    writer
        .append(
            group,
            stream,
            &[line(t0 + 5_000, "line 5"), line(t0 + 6_000, "line 6")],
        )
        .await;
    let more = reader
        .read(&LogRead {
            cursor: Some(again.cursor.clone()),
            ..read_of(group, stream)
        })
        .await
        .unwrap();
    assert_eq!(
        messages(&more.lines),
        ["line 5", "line 6"],
        "the cursor returns what was written after the last read, once"
    );

    let tail = reader
        .read(&LogRead {
            tail: Some(2),
            ..read_of(group, stream)
        })
        .await
        .unwrap();
    assert_eq!(
        messages(&tail.lines),
        ["line 5", "line 6"],
        "the last lines"
    );

    let since = reader
        .read(&LogRead {
            since_ms: Some(t0 + 4_000),
            ..read_of(group, stream)
        })
        .await
        .unwrap();
    assert_eq!(
        messages(&since.lines),
        ["line 4", "line 5", "line 6"],
        "lines at or after the time"
    );

    let head = reader
        .read(&LogRead {
            limit: 3,
            ..read_of(group, stream)
        })
        .await
        .unwrap();
    assert_eq!(messages(&head.lines), ["line 0", "line 1", "line 2"]);
    let next = reader
        .read(&LogRead {
            cursor: Some(head.cursor),
            limit: 3,
            ..read_of(group, stream)
        })
        .await
        .unwrap();
    assert_eq!(
        messages(&next.lines),
        ["line 3", "line 4", "line 5"],
        "pages go on where the last stopped"
    );
}
