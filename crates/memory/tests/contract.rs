//! The store and queue contract, in process: each test gets a world of its own.

use std::time::Duration;

use titus_contract::{Fixture, Harness};
use titus_core::messages::{AgentRequest, Rejection, TaskStatusUpdate};
use titus_core::ports::DeadLetter;
use titus_memory::{
    MemoryAgentRequests, MemoryCommandSource, MemoryPorts, MemoryStatusSink, MemoryWorld,
};

#[derive(Debug, Clone, Copy)]
struct InProcess;

#[derive(Debug)]
struct World {
    world: MemoryWorld,
    ports: MemoryPorts,
}

impl Harness for InProcess {
    type Fixture = World;

    async fn fresh(&self) -> World {
        let world = MemoryWorld::default();
        World {
            ports: world.ports(),
            world,
        }
    }
}

fn parsed<T: serde::de::DeserializeOwned>(messages: Vec<titus_memory::QueuedMessage>) -> Vec<T> {
    messages
        .into_iter()
        .map(|m| serde_json::from_str(&m.body).expect("the queue holds JSON it was sent"))
        .collect()
}

impl Fixture for World {
    type Ports = MemoryPorts;
    type Source = MemoryCommandSource;
    type Status = MemoryStatusSink;
    type Requests = MemoryAgentRequests;

    fn ports(&self) -> &MemoryPorts {
        &self.ports
    }

    async fn command_source(&self, agent_id: &str) -> MemoryCommandSource {
        self.world.command_source(agent_id)
    }

    async fn status_sink(&self) -> MemoryStatusSink {
        self.world.status_sink()
    }

    async fn agent_request_sink(&self) -> MemoryAgentRequests {
        self.world.agent_requests()
    }

    async fn drain_status_updates(&self) -> Vec<TaskStatusUpdate> {
        parsed(self.world.drain_queue(&self.world.status_queue_names().0))
    }

    async fn drain_dead_letters(&self) -> Vec<DeadLetter> {
        self.world.drain_status_dead_letters()
    }

    async fn drain_rejections(&self) -> Vec<Rejection> {
        parsed(self.world.drain_queue(&self.world.rejection_queue_name()))
    }

    async fn drain_agent_requests(&self) -> Vec<AgentRequest> {
        parsed(
            self.world
                .drain_queue(&self.world.agent_requests_queue_name()),
        )
    }

    async fn drain_agent_dead_letters(&self, agent_id: &str) -> Vec<String> {
        let name = format!("{}-dlq", self.world.agent_queue_name(agent_id));
        self.world
            .drain_queue(&name)
            .into_iter()
            .map(|m| m.body)
            .collect()
    }

    async fn pass_time(&self, duration: Duration) {
        self.world.clock().advance(duration);
    }
}

titus_contract::contract_tests!(InProcess);

// The rate limiter is held beside the bundle, so its behaviours take a limiter of their own.
#[tokio::test]
async fn rate_limits_count_per_key_and_window() {
    titus_contract::rate::rate_limits(&titus_memory::MemoryRateLimiter::new()).await;
}

#[tokio::test]
async fn concurrent_rate_limit_takes_respect_the_limit() {
    let limiter = titus_memory::MemoryRateLimiter::new();
    titus_contract::rate::concurrent_takes_respect_the_limit(&limiter).await;
}

struct MemoryWriter<'a>(&'a titus_memory::MemoryTaskLogs);

impl titus_contract::logs::LogWriter for MemoryWriter<'_> {
    async fn create_group(&self, group: &str) {
        self.0.create_group(group);
    }

    async fn append(&self, group: &str, stream: &str, lines: &[titus_core::ports::LogLine]) {
        self.0.append(group, stream, lines);
    }
}

#[tokio::test]
async fn task_logs_read_from_the_head_a_tail_a_time_and_a_cursor() {
    let logs = titus_memory::MemoryTaskLogs::new();
    titus_contract::logs::task_logs(&logs, &MemoryWriter(&logs), "/titus/m/tasks").await;
}
