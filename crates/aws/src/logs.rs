//! Tasks' output in CloudWatch Logs ([`TaskLogReader`]): one GetLogEvents call per read, in the
//! stream the agent's awslogs driver writes (`{jobId}/{taskId}` in the agent's group).
//!
//! GetLogEvents is the call for one stream (FilterLogEvents searches a group and has a lower
//! quota): a cursor is its forward token, which returns nothing new until more is written, so
//! following a task is reading again with the cursor of the last read.

use aws_sdk_cloudwatchlogs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cloudwatchlogs::Client;
use titus_core::ports::rate::BoxFuture;
use titus_core::ports::{
    LogError, LogLine, LogPage, LogRead, TaskLogReader, MAX_LOG_LINES_PER_READ,
};

/// The reader, over one client; a stream in another region is read with a client of that region.
#[derive(Debug, Clone)]
pub struct CloudWatchTaskLogs {
    client: Client,
}

impl CloudWatchTaskLogs {
    pub fn new(client: Client) -> CloudWatchTaskLogs {
        CloudWatchTaskLogs { client }
    }

    fn client_for(&self, region: Option<&str>) -> Client {
        match region {
            Some(region) if self.client.config().region().map(|r| r.as_ref()) != Some(region) => {
                let config = self
                    .client
                    .config()
                    .to_builder()
                    .region(aws_sdk_cloudwatchlogs::config::Region::new(
                        region.to_owned(),
                    ))
                    .build();
                Client::from_conf(config)
            }
            _ => self.client.clone(),
        }
    }

    async fn read_page(&self, read: &LogRead) -> Result<LogPage, LogError> {
        let location = &read.location;
        let limit = read.limit.clamp(1, MAX_LOG_LINES_PER_READ);
        let mut request = self
            .client_for(location.region.as_deref())
            .get_log_events()
            .log_group_name(&location.group)
            .log_stream_name(&location.stream);
        request = match &read.cursor {
            Some(cursor) => request
                .next_token(cursor)
                .start_from_head(true)
                .limit(limit as i32),
            None => {
                let request = match read.since_ms {
                    Some(since) => request.start_time(since as i64),
                    None => request,
                };
                match read.tail {
                    // From the end: the last `tail` lines, and a forward token after them.
                    Some(tail) => request
                        .start_from_head(false)
                        .limit(tail.clamp(1, limit) as i32),
                    None => request.start_from_head(true).limit(limit as i32),
                }
            }
        };
        let out = request.send().await.map_err(|e| match &e {
            SdkError::ServiceError(service) => match service.err().code() {
                Some("ResourceNotFoundException") => LogError::NotFound {
                    group: location.group.clone(),
                    stream: location.stream.clone(),
                },
                Some("InvalidParameterException") if read.cursor.is_some() => LogError::BadCursor,
                Some("ThrottlingException") => LogError::Throttled,
                _ => LogError::Unavailable(format!(
                    "GetLogEvents: {}",
                    service.err().message().unwrap_or("no message")
                )),
            },
            _ => LogError::Unavailable(format!(
                "GetLogEvents: {}",
                aws_sdk_cloudwatchlogs::error::DisplayErrorContext(&e)
            )),
        })?;
        let lines = out
            .events
            .unwrap_or_default()
            .into_iter()
            .map(|event| LogLine {
                timestamp_ms: event.timestamp.unwrap_or(0).max(0) as u64,
                message: event.message.unwrap_or_default(),
            })
            .collect();
        let cursor = out
            .next_forward_token
            .or_else(|| read.cursor.clone())
            .unwrap_or_default();
        Ok(LogPage { lines, cursor })
    }
}

impl TaskLogReader for CloudWatchTaskLogs {
    fn read<'a>(&'a self, read: &'a LogRead) -> BoxFuture<'a, Result<LogPage, LogError>> {
        Box::pin(self.read_page(read))
    }
}

/// Creates the log group unless it exists (for the local stack and tests; in AWS the deployment
/// creates it, with its retention).
pub async fn ensure_log_group(client: &Client, group: &str) -> Result<(), String> {
    match client.create_log_group().log_group_name(group).send().await {
        Ok(_) => Ok(()),
        Err(SdkError::ServiceError(e))
            if e.err().code() == Some("ResourceAlreadyExistsException") =>
        {
            Ok(())
        }
        Err(e) => Err(format!(
            "CreateLogGroup {group}: {}",
            aws_sdk_cloudwatchlogs::error::DisplayErrorContext(&e)
        )),
    }
}
