//! The store and queue contract against the AWS adapters on the emulator: each test provisions
//! a stage of its own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use titus_aws::sqs::{delete_batch, queue_url, receive_batch, PolledMessage};
use titus_aws::{AwsClients, AwsPorts, Names, SqsAgentRequests, SqsCommandSource, SqsStatusSink};
use titus_contract::{Fixture, Harness};
use titus_core::messages::{AgentRequest, Rejection, TaskStatusUpdate};
use titus_core::ports::DeadLetter;

#[derive(Debug, Clone, Copy)]
struct Emulator;

#[derive(Debug)]
struct Stage {
    clients: AwsClients,
    names: Names,
    ports: AwsPorts,
}

impl Harness for Emulator {
    type Fixture = Stage;

    async fn fresh(&self) -> Stage {
        let (clients, names) = support::fresh_stage().await;
        Stage {
            ports: titus_aws::aws_ports(&clients, &names),
            clients,
            names,
        }
    }
}

impl Stage {
    /// Receives and deletes every message waiting on queue `name`.
    async fn drain(&self, name: &str) -> Vec<PolledMessage> {
        let url = queue_url(&self.clients.sqs, name).await.unwrap();
        let mut drained = Vec::new();
        loop {
            let batch = receive_batch(&self.clients.sqs, &url, Duration::ZERO)
                .await
                .unwrap();
            if batch.is_empty() {
                return drained;
            }
            let receipts: Vec<&str> = batch.iter().map(|m| m.receipt_handle.as_str()).collect();
            assert_eq!(
                delete_batch(&self.clients.sqs, &url, &receipts)
                    .await
                    .unwrap(),
                0
            );
            drained.extend(batch);
        }
    }

    async fn drain_json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Vec<T> {
        self.drain(name)
            .await
            .into_iter()
            .map(|m| serde_json::from_str(&m.body).unwrap())
            .collect()
    }
}

impl Fixture for Stage {
    type Ports = AwsPorts;
    type Source = SqsCommandSource;
    type Status = SqsStatusSink;
    type Requests = SqsAgentRequests;

    fn ports(&self) -> &AwsPorts {
        &self.ports
    }

    async fn command_source(&self, agent_id: &str) -> SqsCommandSource {
        SqsCommandSource::named(self.clients.sqs.clone(), self.names.agent_queue(agent_id))
    }

    async fn status_sink(&self) -> SqsStatusSink {
        SqsStatusSink::for_stage(self.clients.sqs.clone(), &self.names)
            .await
            .unwrap()
    }

    async fn agent_request_sink(&self) -> SqsAgentRequests {
        SqsAgentRequests::for_stage(self.clients.sqs.clone(), &self.names)
    }

    async fn drain_status_updates(&self) -> Vec<TaskStatusUpdate> {
        self.drain_json(&self.names.status_queue()).await
    }

    async fn drain_dead_letters(&self) -> Vec<DeadLetter> {
        self.drain(&self.names.status_dead_letter_queue())
            .await
            .into_iter()
            .map(|m| {
                let attribute = |name: &str| m.attributes.get(name).cloned().unwrap_or_default();
                DeadLetter {
                    message_id: attribute(titus_aws::sqs::SOURCE_MESSAGE_ID_ATTRIBUTE),
                    reason: attribute(titus_aws::sqs::REASON_ATTRIBUTE),
                    dead_lettered_at_ms: attribute(titus_aws::sqs::DEAD_LETTERED_AT_ATTRIBUTE)
                        .parse()
                        .unwrap(),
                    body: m.body,
                }
            })
            .collect()
    }

    async fn drain_rejections(&self) -> Vec<Rejection> {
        self.drain_json(&self.names.submit_rejected_queue()).await
    }

    async fn drain_agent_requests(&self) -> Vec<AgentRequest> {
        self.drain_json(&self.names.registrations_queue()).await
    }

    async fn drain_agent_dead_letters(&self, agent_id: &str) -> Vec<String> {
        let name = format!("{}-dlq", self.names.agent_queue(agent_id));
        self.drain(&name)
            .await
            .into_iter()
            .map(|m| m.body)
            .collect()
    }

    async fn pass_time(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

titus_contract::contract_tests!(Emulator);

// The rate limiter is held beside the bundle, so its behaviours take a limiter of their own.
#[tokio::test]
async fn rate_limits_count_per_key_and_window() {
    let (clients, names) = support::fresh_stage().await;
    let limiter = titus_aws::DynamoRateLimiter::new(clients.dynamodb.clone(), &names);
    titus_contract::rate::rate_limits(&limiter).await;
}

#[tokio::test]
async fn concurrent_rate_limit_takes_respect_the_limit() {
    let (clients, names) = support::fresh_stage().await;
    let limiter = titus_aws::DynamoRateLimiter::new(clients.dynamodb.clone(), &names);
    titus_contract::rate::concurrent_takes_respect_the_limit(&limiter).await;
}

/// Writes log lines with PutLogEvents, as the agents' awslogs driver does.
struct CloudWatchWriter(aws_sdk_cloudwatchlogs::Client);

impl titus_contract::logs::LogWriter for CloudWatchWriter {
    async fn create_group(&self, group: &str) {
        titus_aws::logs::ensure_log_group(&self.0, group)
            .await
            .unwrap();
    }

    async fn append(&self, group: &str, stream: &str, lines: &[titus_core::ports::LogLine]) {
        let _ = self
            .0
            .create_log_stream()
            .log_group_name(group)
            .log_stream_name(stream)
            .send()
            .await;
        let events = lines.iter().map(|line| {
            aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                .timestamp(line.timestamp_ms as i64)
                .message(&line.message)
                .build()
                .unwrap()
        });
        self.0
            .put_log_events()
            .log_group_name(group)
            .log_stream_name(stream)
            .set_log_events(Some(events.collect()))
            .send()
            .await
            .unwrap();
    }
}

// Tasks' logs are read by the API beside the bundle too.
#[tokio::test]
async fn task_logs_read_from_the_head_a_tail_a_time_and_a_cursor() {
    let (clients, names) = support::fresh_stage().await;
    let reader = titus_aws::CloudWatchTaskLogs::new(clients.logs.clone());
    let group = format!("/titus/{}/tasks", names.stage());
    titus_contract::logs::task_logs(&reader, &CloudWatchWriter(clients.logs.clone()), &group).await;
}
