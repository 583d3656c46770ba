//! Shared set-up for the agent's Docker and emulator tests: a freshly provisioned stage per test,
//! a test image built locally from Debian's busybox-static (no registry is reachable), the part
//! of the control plane an agent needs (registration, and placements for tests that restart
//! it), and a reader of the stage's status queue.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::query_parameters::{BuildImageOptionsBuilder, RemoveContainerOptionsBuilder};
use futures::StreamExt;
use titus_agent::runtime::label;
use titus_agent::DockerRuntime;
use titus_aws::provision::provision;
use titus_aws::{AwsClients, AwsPorts, Names};
use titus_control::scheduler::TickInput;
use titus_control::{ControlPlane, Settings};
use titus_core::job::{ContainerResources, JobDescriptor};
use titus_core::messages::{AgentCommand, LaunchTask, TaskStatusUpdate};
use titus_core::ports::{Clock as _, Ports as _};
use titus_core::{JobId, JobStore as _, TaskId, TaskState};
use tokio_util::sync::CancellationToken;

/// The image every test runs: `FROM scratch` with a static busybox.
pub const TEST_IMAGE: &str = "titus-test/busybox:1";
const BUSYBOX: &str = "/bin/busybox";

/// Clients for the emulator the test command started. Fails loudly rather than reaching AWS.
pub async fn clients() -> (AwsClients, aws_config::SdkConfig) {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    assert!(
        endpoint.starts_with("http://127.0.0.1") || endpoint.starts_with("http://localhost"),
        "these tests need AWS_ENDPOINT_URL pointing at the local emulator (got {endpoint:?}); \
         run them through scripts/test.sh, which starts it"
    );
    let config = titus_aws::clients::load_sdk_config().await;
    (AwsClients::from_config(&config), config)
}

/// A freshly provisioned stage with a unique name.
pub async fn fresh_stage() -> (AwsClients, aws_config::SdkConfig, Names) {
    let (clients, config) = clients().await;
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..10];
    let names = Names::new(&format!("a{suffix}")).expect("valid stage name");
    provision(&clients, &names.definitions())
        .await
        .expect("provisioning a fresh stage");
    (clients, config, names)
}

/// The Docker engine, with the test image built.
pub async fn docker() -> DockerRuntime {
    let runtime = DockerRuntime::connect(Duration::from_secs(60)).expect("Docker answers");
    ensure_test_image(&runtime).await;
    runtime
}

/// Builds `TEST_IMAGE` from a tar context made here, unless it exists.
pub async fn ensure_test_image(runtime: &DockerRuntime) {
    if runtime.client().inspect_image(TEST_IMAGE).await.is_ok() {
        return;
    }
    let busybox = std::fs::read(BUSYBOX)
        .expect("Debian's busybox-static at /bin/busybox (apt-get install busybox-static)");
    let dockerfile = "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n";
    let mut context = tar::Builder::new(Vec::new());
    for (name, bytes, mode) in [
        ("Dockerfile", dockerfile.as_bytes(), 0o644),
        ("busybox", busybox.as_slice(), 0o755),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(mode);
        header.set_cksum();
        context.append_data(&mut header, name, bytes).unwrap();
    }
    let context = context.into_inner().unwrap();
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(TEST_IMAGE)
        .rm(true)
        .build();
    let mut build =
        runtime
            .client()
            .build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(step) = build.next().await {
        let step = step.expect("building the test image");
        if let Some(error) = step.error_detail {
            panic!("building the test image failed: {error:?}");
        }
    }
}

/// Removes every container of the agent (tests clean up after themselves).
pub async fn remove_containers(runtime: &DockerRuntime, agent_id: &str) {
    use titus_agent::ContainerRuntime as _;
    let containers = runtime
        .list(&[(label::AGENT_ID, agent_id)])
        .await
        .unwrap_or_default();
    for container in containers {
        let _ = runtime
            .client()
            .remove_container(
                &container.id,
                Some(RemoveContainerOptionsBuilder::default().force(true).build()),
            )
            .await;
    }
}

/// Removes the agent's containers when dropped, also when the test failed (with the Docker CLI,
/// since a drop cannot await).
#[derive(Debug)]
pub struct ContainerCleanup(pub String);

impl Drop for ContainerCleanup {
    fn drop(&mut self) {
        titus_agent::testing::remove_agent_containers_blocking(&self.0);
    }
}

/// Settings for an agent under test: quick polls and heartbeats, no instance metadata.
pub fn agent_env(
    names: &Names,
    agent_id: &str,
    extra: &[(&str, &str)],
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| !k.starts_with("TITUS_"))
        .collect();
    for (key, value) in [
        ("TITUS_STAGE", names.stage()),
        ("TITUS_AGENT_ID", agent_id),
        ("TITUS_AGENT_POLL_WAIT_SECS", "1"),
        ("TITUS_AGENT_HEARTBEAT_INTERVAL_SECS", "1"),
        ("TITUS_AGENT_IMAGE_PULL_TIMEOUT_SECS", "30"),
        ("TITUS_AGENT_ECR_AUTH_FROM_INSTANCE_ROLE", "false"),
        ("TITUS_AGENT_CPU_MILLIS", "64000"),
        ("TITUS_AGENT_MEMORY_MB", "65536"),
    ] {
        env.insert(key.to_owned(), value.to_owned());
    }
    for (key, value) in extra {
        env.insert((*key).to_owned(), (*value).to_owned());
    }
    env
}

/// A unique agent id for a test.
pub fn agent_id(test: &str) -> String {
    format!(
        "test-{test}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    )
}

/// A launch of the test image running `command` under `sh -c`.
pub fn launch(script: &str) -> LaunchTask {
    LaunchTask {
        task_id: TaskId::generate(),
        job_id: JobId::generate(),
        image: TEST_IMAGE.to_owned(),
        entry_point: vec![],
        command: vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()],
        env: BTreeMap::new(),
        resources: ContainerResources {
            cpu: 0.5,
            gpu: 0,
            memory_mb: 512,
            disk_mb: 10_000,
            network_mbps: 128,
        },
        kill_grace_period_sec: 10,
        runtime_limit_sec: None,
        privileged: false,
        host_network: false,
        host_mounts: vec![],
        incarnation: 1,
        placement_version: 1,
    }
}

pub async fn queue_url(clients: &AwsClients, name: &str) -> String {
    clients
        .sqs
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("queue {name}: {e:?}"))
        .queue_url()
        .unwrap()
        .to_owned()
}

/// Sends a message body to a queue.
pub async fn send_body(clients: &AwsClients, url: &str, body: &str) {
    clients
        .sqs
        .send_message()
        .queue_url(url)
        .message_body(body)
        .send()
        .await
        .unwrap();
}

pub async fn send_command(clients: &AwsClients, url: &str, command: &AgentCommand) {
    send_body(clients, url, &serde_json::to_string(command).unwrap()).await;
}

/// Reads the stage's status queue, keeping every update it saw in order.
#[derive(Debug)]
pub struct StatusReader {
    sqs: aws_sdk_sqs::Client,
    url: String,
    pub seen: Vec<TaskStatusUpdate>,
}

impl StatusReader {
    pub async fn new(clients: &AwsClients, names: &Names) -> StatusReader {
        StatusReader {
            sqs: clients.sqs.clone(),
            url: queue_url(clients, &names.status_queue()).await,
            seen: Vec::new(),
        }
    }

    /// Receives whatever is there (waiting up to a second) and deletes it.
    pub async fn poll(&mut self) {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for message in out.messages() {
            let update: TaskStatusUpdate = serde_json::from_str(message.body().unwrap())
                .expect("the agent sends valid status updates");
            self.seen.push(update);
            self.sqs
                .delete_message()
                .queue_url(&self.url)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }

    /// Polls until the task has reached `state`, for at most `within`.
    pub async fn wait_for(
        &mut self,
        task: &TaskId,
        state: TaskState,
        within: Duration,
    ) -> TaskStatusUpdate {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(update) = self.updates(task).into_iter().find(|u| u.state == state) {
                return update;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "task {task} did not reach {state} within {within:?}; saw {:?}",
                self.states(task)
            );
            self.poll().await;
        }
    }

    /// Polls for `period`, collecting whatever arrives.
    pub async fn drain_for(&mut self, period: Duration) {
        let deadline = tokio::time::Instant::now() + period;
        while tokio::time::Instant::now() < deadline {
            self.poll().await;
        }
    }

    pub fn updates(&self, task: &TaskId) -> Vec<TaskStatusUpdate> {
        self.seen
            .iter()
            .filter(|u| &u.task_id == task)
            .cloned()
            .collect()
    }

    pub fn states(&self, task: &TaskId) -> Vec<TaskState> {
        self.updates(task).iter().map(|u| u.state).collect()
    }
}

/// The stage's control plane, in this process: it applies the agents' registration requests as
/// the status function does (an agent starts only once registered), and places jobs with the
/// scheduler's real ticks, so that the records hold what an agent reconciles with. Stops when
/// dropped.
pub struct InProcessControlPlane {
    pub cp: Arc<ControlPlane<AwsPorts>>,
    stop: CancellationToken,
}

impl InProcessControlPlane {
    pub fn start(clients: &AwsClients, names: &Names) -> InProcessControlPlane {
        let cp = Arc::new(ControlPlane::new(
            titus_aws::aws_ports(clients, names),
            Settings::default(),
        ));
        let stop = CancellationToken::new();
        tokio::spawn({
            let (cp, clients, names, stop) =
                (cp.clone(), clients.clone(), names.clone(), stop.clone());
            async move {
                titus_app::pump::serve_agent_requests(cp, &clients, &names, stop)
                    .await
                    .expect("the registrations queue exists");
            }
        });
        InProcessControlPlane { cp, stop }
    }

    /// Accepts a batch job of `count` tasks running `script` under `sh -c`, and ticks the
    /// scheduler until every task is placed (and its launch sent to its agent's queue). Returns
    /// the launches as sent.
    pub async fn place_batch(&self, script: &str, count: u32) -> Vec<LaunchTask> {
        let descriptor: JobDescriptor = serde_json::from_value(serde_json::json!({
            "owner": {"teamEmail": "team@example.com"},
            "applicationName": "agent-test",
            "container": {
                "image": {"name": "titus-test/busybox", "tag": "1"},
                "command": ["sh", "-c", script],
                "resources": {"cpu": 0.5, "memoryMB": 512, "diskMB": 10000, "networkMbps": 128},
                "killGracePeriodSec": 10
            },
            "batch": {"size": count}
        }))
        .expect("a valid descriptor");
        let now = self.cp.ports().clock().now_ms();
        let job = titus_control::jobs::create_job(&self.cp, descriptor, "test", None, now)
            .await
            .unwrap()
            .into_job();
        for iteration in 0..30 {
            let input = TickInput {
                owner: "agent-test".to_owned(),
                started_at_ms: None,
                iteration,
            };
            titus_control::scheduler::tick(&self.cp, input)
                .await
                .unwrap();
            let tasks = self
                .cp
                .ports()
                .jobs()
                .list_all_job_tasks(&job.id)
                .await
                .unwrap();
            if tasks.len() == count as usize && tasks.iter().all(|t| t.agent_id.is_some()) {
                return tasks
                    .iter()
                    .map(|task| LaunchTask::for_task(task, &job))
                    .collect();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "the scheduler did not place the {count} tasks of job {}",
            job.id
        );
    }
}

impl Drop for InProcessControlPlane {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Polls the agents table until `agent_id` has a record (registered), for at most `within`.
pub async fn wait_registered(
    clients: &AwsClients,
    names: &Names,
    agent_id: &str,
    within: Duration,
) {
    use titus_core::AgentStore as _;
    let store = titus_aws::DynamoAgentStore::new(clients.dynamodb.clone(), names);
    let deadline = tokio::time::Instant::now() + within;
    while store.get_agent(agent_id).await.unwrap().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "agent {agent_id} was not registered within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Counts receives of a queue's messages: how many are in its dead-letter queue.
pub async fn messages_in(clients: &AwsClients, url: &str) -> Vec<String> {
    messages_with_reasons(clients, url)
        .await
        .into_iter()
        .map(|(body, _)| body)
        .collect()
}

/// The messages waiting on a queue (received, so hidden for a while), each with its `reason`
/// attribute (empty when it has none).
pub async fn messages_with_reasons(clients: &AwsClients, url: &str) -> Vec<(String, String)> {
    let out = clients
        .sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .message_attribute_names("All")
        .send()
        .await
        .unwrap();
    out.messages()
        .iter()
        .map(|m| {
            let reason = m
                .message_attributes()
                .and_then(|attributes| attributes.get("reason"))
                .and_then(|value| value.string_value())
                .unwrap_or_default()
                .to_owned();
            (m.body().unwrap_or_default().to_owned(), reason)
        })
        .collect()
}
