//! In-memory implementations of the agent's ports, for its unit tests and benchmarks: a
//! recording fake container runtime, a status sink, a command queue, an agent store and a link
//! to a control plane that registers at once and whose placements the test sets.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;

use titus_core::messages::{Registration, TaskStatusUpdate};
use titus_core::ports::{DeadLetter, QueueError};
use titus_core::{Agent, AgentHeartbeat, AgentState, AgentStore, StoreError, TaskId, TaskState};
use tokio::sync::watch;

use crate::ports::{
    CommandSource, ControlPlaneLink, LinkError, Placement, ReceivedMessage, StatusSink,
};
use crate::runtime::{
    ContainerInfo, ContainerRuntime, ContainerSpec, ContainerStatus, ContainerSummary,
    RegistryCredentials, RuntimeError,
};
use crate::time::now_ms;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug)]
struct FakeContainer {
    id: String,
    spec: ContainerSpec,
    info: watch::Sender<ContainerInfo>,
}

#[derive(Debug, Default)]
struct FakeState {
    images: HashSet<String>,
    /// Pull results by image; an image not listed pulls successfully.
    pull_failures: HashMap<String, RuntimeError>,
    containers: BTreeMap<String, FakeContainer>,
    calls: Vec<String>,
    next_id: u64,
}

/// A container engine in memory that records every call. A container's command decides what
/// it does once started: `["exit", "N"]` exits at once with code N, `["oom"]` is OOM-killed,
/// anything else runs until stopped (exit 143) or `exit` is called.
#[derive(Debug, Clone, Default)]
pub struct FakeRuntime {
    state: Arc<Mutex<FakeState>>,
}

impl FakeRuntime {
    pub fn new() -> FakeRuntime {
        FakeRuntime::default()
    }

    /// Makes an image present locally.
    pub fn add_image(&self, image: &str) {
        lock(&self.state).images.insert(image.to_owned());
    }

    /// Makes pulls of `image` fail with `error`.
    pub fn fail_pull(&self, image: &str, error: RuntimeError) {
        lock(&self.state)
            .pull_failures
            .insert(image.to_owned(), error);
    }

    /// Every call so far, as `"operation name"`.
    pub fn calls(&self) -> Vec<String> {
        lock(&self.state).calls.clone()
    }

    /// Names of the containers that exist.
    pub fn container_names(&self) -> Vec<String> {
        lock(&self.state).containers.keys().cloned().collect()
    }

    /// The spec a container was created with.
    pub fn spec(&self, name: &str) -> Option<ContainerSpec> {
        lock(&self.state)
            .containers
            .get(name)
            .map(|c| c.spec.clone())
    }

    /// Ends a running container's process with `code`.
    pub fn exit(&self, name: &str, code: i64, oom_killed: bool) {
        if let Some(container) = lock(&self.state).containers.get(name) {
            container.info.send_modify(|info| {
                if info.status == ContainerStatus::Running {
                    info.status = ContainerStatus::Exited;
                    info.exit_code = Some(code);
                    info.oom_killed = oom_killed;
                    info.finished_at_ms = Some(now_ms());
                }
            });
        }
    }

    /// Adds a container as if an earlier agent had created it.
    pub fn insert_container(
        &self,
        spec: ContainerSpec,
        status: ContainerStatus,
        exit_code: Option<i64>,
    ) {
        let mut state = lock(&self.state);
        state.next_id += 1;
        let id = format!("fake{}", state.next_id);
        let info = ContainerInfo {
            id: id.clone(),
            name: spec.name.clone(),
            labels: spec.labels.clone(),
            status,
            exit_code,
            oom_killed: false,
            started_at_ms: Some(now_ms()),
            finished_at_ms: exit_code.map(|_| now_ms()),
            error: String::new(),
            ip_addresses: vec![fake_address(state.next_id)],
        };
        state.containers.insert(
            spec.name.clone(),
            FakeContainer {
                id,
                spec,
                info: watch::Sender::new(info),
            },
        );
    }

    fn record(&self, call: String) {
        lock(&self.state).calls.push(call);
    }

    /// A container by name or id, as the engine accepts either.
    fn info_channel(&self, name: &str) -> Result<watch::Receiver<ContainerInfo>, RuntimeError> {
        let state = lock(&self.state);
        state
            .containers
            .get(name)
            .or_else(|| state.containers.values().find(|c| c.id == name))
            .map(|c| c.info.subscribe())
            .ok_or_else(|| RuntimeError::NotFound(name.to_owned()))
    }
}

impl ContainerRuntime for FakeRuntime {
    async fn image_present(&self, image: &str) -> Result<bool, RuntimeError> {
        self.record(format!("image_present {image}"));
        Ok(lock(&self.state).images.contains(image))
    }

    async fn pull_image(
        &self,
        image: &str,
        _credentials: Option<RegistryCredentials>,
    ) -> Result<(), RuntimeError> {
        self.record(format!("pull {image}"));
        let mut state = lock(&self.state);
        if let Some(error) = state.pull_failures.get(image) {
            return Err(error.clone());
        }
        state.images.insert(image.to_owned());
        Ok(())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        self.record(format!("create {}", spec.name));
        let mut state = lock(&self.state);
        if state.containers.contains_key(&spec.name) {
            return Err(RuntimeError::NameTaken(spec.name.clone()));
        }
        if !state.images.contains(&spec.image) {
            return Err(RuntimeError::ImageMissing {
                image: spec.image.clone(),
            });
        }
        state.next_id += 1;
        let id = format!("fake{}", state.next_id);
        let info = ContainerInfo {
            id: id.clone(),
            name: spec.name.clone(),
            labels: spec.labels.clone(),
            status: ContainerStatus::Created,
            exit_code: None,
            oom_killed: false,
            started_at_ms: None,
            finished_at_ms: None,
            error: String::new(),
            ip_addresses: vec![fake_address(state.next_id)],
        };
        state.containers.insert(
            spec.name.clone(),
            FakeContainer {
                id: id.clone(),
                spec: spec.clone(),
                info: watch::Sender::new(info),
            },
        );
        Ok(id)
    }

    async fn start(&self, name: &str) -> Result<(), RuntimeError> {
        self.record(format!("start {name}"));
        let state = lock(&self.state);
        let container = state
            .containers
            .get(name)
            .ok_or_else(|| RuntimeError::NotFound(name.to_owned()))?;
        let command = container.spec.command.clone();
        container.info.send_modify(|info| {
            info.status = ContainerStatus::Running;
            info.started_at_ms = Some(now_ms());
            match command.iter().map(String::as_str).collect::<Vec<_>>()[..] {
                ["exit", code] => {
                    info.status = ContainerStatus::Exited;
                    info.exit_code = Some(code.parse().unwrap_or(1));
                    info.finished_at_ms = Some(now_ms());
                }
                ["oom"] => {
                    info.status = ContainerStatus::Exited;
                    info.exit_code = Some(137);
                    info.oom_killed = true;
                    info.finished_at_ms = Some(now_ms());
                }
                _ => {}
            }
        });
        Ok(())
    }

    async fn wait(&self, name: &str) -> Result<(), RuntimeError> {
        let mut info = self.info_channel(name)?;
        let _ = info
            .wait_for(|i| !matches!(i.status, ContainerStatus::Running | ContainerStatus::Paused))
            .await;
        Ok(())
    }

    async fn stop(&self, name: &str, grace: Duration) -> Result<(), RuntimeError> {
        self.record(format!("stop {name} {}", grace.as_secs()));
        let state = lock(&self.state);
        let container = state
            .containers
            .get(name)
            .ok_or_else(|| RuntimeError::NotFound(name.to_owned()))?;
        container.info.send_modify(|info| {
            if info.status == ContainerStatus::Running {
                info.status = ContainerStatus::Exited;
                info.exit_code = Some(143);
                info.finished_at_ms = Some(now_ms());
            }
        });
        Ok(())
    }

    async fn inspect(&self, name: &str) -> Result<ContainerInfo, RuntimeError> {
        let info = self.info_channel(name)?;
        let info = info.borrow().clone();
        Ok(info)
    }

    async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerSummary>, RuntimeError> {
        let state = lock(&self.state);
        Ok(state
            .containers
            .values()
            .filter(|c| {
                labels
                    .iter()
                    .all(|(k, v)| c.spec.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|c| {
                let info = c.info.borrow();
                ContainerSummary {
                    id: c.id.clone(),
                    name: info.name.clone(),
                    labels: c.spec.labels.clone(),
                    status: info.status.clone(),
                }
            })
            .collect())
    }

    async fn rename(&self, name: &str, new_name: &str) -> Result<(), RuntimeError> {
        self.record(format!("rename {name} {new_name}"));
        let mut state = lock(&self.state);
        if state.containers.contains_key(new_name) {
            return Err(RuntimeError::NameTaken(new_name.to_owned()));
        }
        let mut container = state
            .containers
            .remove(name)
            .ok_or_else(|| RuntimeError::NotFound(name.to_owned()))?;
        container.spec.name = new_name.to_owned();
        container
            .info
            .send_modify(|info| info.name = new_name.to_owned());
        state.containers.insert(new_name.to_owned(), container);
        Ok(())
    }

    async fn remove(&self, name: &str) -> Result<(), RuntimeError> {
        self.record(format!("remove {name}"));
        lock(&self.state).containers.remove(name);
        Ok(())
    }

    async fn logs_tail(&self, name: &str, lines: usize) -> Result<String, RuntimeError> {
        let info = self.info_channel(name)?;
        let name = info.borrow().name.clone();
        Ok(format!("last {lines} lines of {name}\n"))
    }
}

#[derive(Debug, Default)]
struct SinkState {
    sent: Vec<TaskStatusUpdate>,
    batch_sizes: Vec<usize>,
    fail_next: usize,
    reject_once: HashSet<String>,
}

/// A status queue in memory, with failures on demand.
#[derive(Debug, Clone, Default)]
pub struct MemoryStatusSink {
    state: Arc<Mutex<SinkState>>,
}

impl MemoryStatusSink {
    /// Every update accepted so far, in order.
    pub fn sent(&self) -> Vec<TaskStatusUpdate> {
        lock(&self.state).sent.clone()
    }

    /// Sizes of the accepted batches.
    pub fn batch_sizes(&self) -> Vec<usize> {
        lock(&self.state).batch_sizes.clone()
    }

    /// The next `n` sends fail as if the queue were unreachable.
    pub fn fail_next_sends(&self, n: usize) {
        lock(&self.state).fail_next = n;
    }

    /// The next update of `task` in a batch is rejected (a partial batch failure).
    pub fn reject_task_once(&self, task: &str) {
        lock(&self.state).reject_once.insert(task.to_owned());
    }
}

impl StatusSink for MemoryStatusSink {
    async fn send(&self, updates: &[TaskStatusUpdate]) -> Result<Vec<bool>, QueueError> {
        let mut state = lock(&self.state);
        if state.fail_next > 0 {
            state.fail_next -= 1;
            return Err(QueueError::Unavailable("injected failure".to_owned()));
        }
        let mut accepted = Vec::with_capacity(updates.len());
        let mut batch = 0;
        for update in updates {
            if state.reject_once.remove(update.task_id.as_str()) {
                accepted.push(false);
            } else {
                state.sent.push(update.clone());
                accepted.push(true);
                batch += 1;
            }
        }
        state.batch_sizes.push(batch);
        Ok(accepted)
    }
}

#[derive(Debug, Default)]
struct QueueState {
    visible: VecDeque<(String, u32)>,
    in_flight: HashMap<String, (String, u32)>,
    deleted: Vec<String>,
    released: Vec<String>,
    next_receipt: u64,
}

/// A command queue in memory: messages become visible again only when released.
#[derive(Debug, Clone, Default)]
pub struct MemoryCommandSource {
    state: Arc<Mutex<QueueState>>,
}

impl MemoryCommandSource {
    pub fn push(&self, body: impl Into<String>) {
        lock(&self.state).visible.push_back((body.into(), 0));
    }

    /// Bodies of the deleted messages.
    pub fn deleted(&self) -> Vec<String> {
        lock(&self.state).deleted.clone()
    }

    /// Bodies of the released messages, once per release.
    pub fn released(&self) -> Vec<String> {
        lock(&self.state).released.clone()
    }

    /// Messages neither deleted nor released.
    pub fn in_flight(&self) -> usize {
        lock(&self.state).in_flight.len()
    }
}

impl CommandSource for MemoryCommandSource {
    async fn receive(&self, max: u32, wait: Duration) -> Result<Vec<ReceivedMessage>, QueueError> {
        let received: Vec<ReceivedMessage> = {
            let mut state = lock(&self.state);
            let mut received = Vec::new();
            while received.len() < max as usize {
                let Some((body, count)) = state.visible.pop_front() else {
                    break;
                };
                state.next_receipt += 1;
                let receipt = format!("r{}", state.next_receipt);
                state
                    .in_flight
                    .insert(receipt.clone(), (body.clone(), count + 1));
                received.push(ReceivedMessage {
                    body,
                    receipt,
                    receive_count: count + 1,
                });
            }
            received
        };
        if received.is_empty() {
            tokio::time::sleep(wait.min(Duration::from_millis(50))).await;
        }
        Ok(received)
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        let mut state = lock(&self.state);
        if let Some((body, _)) = state.in_flight.remove(receipt) {
            state.deleted.push(body);
        }
        Ok(())
    }

    async fn release(&self, receipt: &str) -> Result<(), QueueError> {
        let mut state = lock(&self.state);
        if let Some((body, count)) = state.in_flight.remove(receipt) {
            state.released.push(body.clone());
            state.visible.push_back((body, count));
        }
        Ok(())
    }

    async fn extend(&self, _receipt: &str, _hidden_for: Duration) -> Result<(), QueueError> {
        Ok(())
    }
}

#[derive(Debug, Default)]
struct StoreState {
    agents: BTreeMap<String, Agent>,
    reports: HashMap<String, AgentHeartbeat>,
}

/// Agent records in memory, with the DynamoDB store's semantics for what the agent uses.
#[derive(Debug, Clone, Default)]
pub struct MemoryAgentStore {
    state: Arc<Mutex<StoreState>>,
}

impl MemoryAgentStore {
    /// The last heartbeat report of the agent.
    pub fn report(&self, id: &str) -> Option<AgentHeartbeat> {
        lock(&self.state).reports.get(id).cloned()
    }
}

impl AgentStore for MemoryAgentStore {
    async fn register_agent(&self, agent: &Agent) -> Result<Agent, StoreError> {
        let mut state = lock(&self.state);
        let record = match state.agents.get(&agent.id) {
            Some(existing) if existing.state == AgentState::Lost && existing.task_count > 0 => {
                return Err(StoreError::Conflict {
                    entity: "agent",
                    id: agent.id.clone(),
                    detail: "declared lost; its tasks are still being finished".to_owned(),
                });
            }
            Some(existing) => Agent {
                allocated: existing.allocated,
                task_count: existing.task_count,
                registered_at_ms: existing.registered_at_ms,
                state: match existing.state {
                    AgentState::Lost => AgentState::Active,
                    other => other,
                },
                incarnation: existing.incarnation + u64::from(existing.state == AgentState::Lost),
                ..agent.clone()
            },
            None => Agent {
                incarnation: 1,
                ..agent.clone()
            },
        };
        state.agents.insert(agent.id.clone(), record.clone());
        Ok(record)
    }

    async fn get_agent(&self, id: &str) -> Result<Option<Agent>, StoreError> {
        Ok(lock(&self.state).agents.get(id).cloned())
    }

    async fn list_agents(&self) -> Result<Vec<Agent>, StoreError> {
        Ok(lock(&self.state).agents.values().cloned().collect())
    }

    async fn heartbeat(&self, id: &str, now_ms: u64) -> Result<(), StoreError> {
        match lock(&self.state).agents.get_mut(id) {
            Some(agent) => {
                agent.heartbeat_at_ms = now_ms;
                Ok(())
            }
            None => Err(StoreError::Conflict {
                entity: "agent",
                id: id.to_owned(),
                detail: "not registered".to_owned(),
            }),
        }
    }

    async fn set_agent_state(
        &self,
        id: &str,
        from: AgentState,
        to: AgentState,
    ) -> Result<(), StoreError> {
        match lock(&self.state).agents.get_mut(id) {
            Some(agent) if agent.state == from => {
                agent.state = to;
                Ok(())
            }
            _ => Err(StoreError::Conflict {
                entity: "agent",
                id: id.to_owned(),
                detail: format!("expected state {from}"),
            }),
        }
    }

    async fn deregister_agent(&self, id: &str) -> Result<(), StoreError> {
        lock(&self.state).agents.remove(id);
        Ok(())
    }

    async fn last_report(&self, id: &str) -> Result<Option<AgentHeartbeat>, StoreError> {
        Ok(self.report(id))
    }

    async fn report_heartbeat(
        &self,
        id: &str,
        report: &AgentHeartbeat,
    ) -> Result<Agent, StoreError> {
        let mut state = lock(&self.state);
        let Some(agent) = state.agents.get_mut(id) else {
            return Err(StoreError::Conflict {
                entity: "agent",
                id: id.to_owned(),
                detail: "not registered".to_owned(),
            });
        };
        agent.heartbeat_at_ms = report.at_ms;
        let record = agent.clone();
        state.reports.insert(id.to_owned(), report.clone());
        Ok(record)
    }
}

/// A control plane in memory for the agent: it registers the agent at once in a
/// [`MemoryAgentStore`] (refusing, as the real one does, an agent declared lost whose tasks are not
/// finished yet), and answers placements from what the test set with [`MemoryLink::place`].
#[derive(Debug, Clone, Default)]
pub struct MemoryLink {
    pub store: MemoryAgentStore,
    placements: Arc<Mutex<HashMap<TaskId, Placement>>>,
    dead_letters: Arc<Mutex<Vec<DeadLetter>>>,
}

impl MemoryLink {
    /// The records run `task` on `agent_id` at `incarnation`.
    pub fn place(&self, task: &str, agent_id: &str, incarnation: u64) {
        lock(&self.placements).insert(
            TaskId::from_string(task),
            Placement {
                agent_id: Some(agent_id.to_owned()),
                incarnation: Some(incarnation),
                state: TaskState::Started,
            },
        );
    }

    /// The records say `task` ended.
    pub fn finish(&self, task: &str) {
        if let Some(placement) = lock(&self.placements).get_mut(&TaskId::from_string(task)) {
            placement.state = TaskState::Finished;
        }
    }

    /// What the agent put on its dead-letter queue.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        lock(&self.dead_letters).clone()
    }
}

impl ControlPlaneLink for MemoryLink {
    async fn register(&self, registration: &Registration) -> Result<Agent, LinkError> {
        let record = registration.record(
            format!("memory://{}", registration.agent_id),
            String::new(),
            registration.at_ms,
        );
        match self.store.register_agent(&record).await {
            Ok(record) => Ok(record),
            Err(StoreError::Conflict { .. }) => Err(LinkError::NotRegistered {
                agent_id: registration.agent_id.clone(),
                registration_id: registration.registration_id.clone(),
                waited_secs: 0,
            }),
            Err(e) => Err(e.into()),
        }
    }

    async fn request_drain(&self, agent_id: &str) -> Result<(), LinkError> {
        match self
            .store
            .set_agent_state(agent_id, AgentState::Active, AgentState::Draining)
            .await
        {
            Ok(()) | Err(StoreError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn request_deregister(&self, agent_id: &str) -> Result<(), LinkError> {
        Ok(self.store.deregister_agent(agent_id).await?)
    }

    async fn heartbeat(
        &self,
        agent_id: &str,
        report: &AgentHeartbeat,
    ) -> Result<Agent, StoreError> {
        self.store.report_heartbeat(agent_id, report).await
    }

    async fn placement(&self, task_id: &TaskId) -> Result<Option<Placement>, StoreError> {
        Ok(lock(&self.placements).get(task_id).cloned())
    }

    async fn dead_letter(&self, letter: &DeadLetter) -> Result<(), QueueError> {
        lock(&self.dead_letters).push(letter.clone());
        Ok(())
    }
}

/// Force-removes every container of `agent_id` with the Docker CLI, without an async runtime (a
/// test's clean-up runs in `Drop`). Errors are ignored: there may be nothing to remove.
pub fn remove_agent_containers_blocking(agent_id: &str) {
    let listed = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!(
            "label={}={agent_id}",
            crate::runtime::label::AGENT_ID
        ))
        .output();
    if let Ok(listed) = listed {
        let ids: Vec<String> = String::from_utf8_lossy(&listed.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if !ids.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f"])
                .args(ids)
                .output();
        }
    }
}

/// The address the fake engine gives its `n`th container on the task network.
pub fn fake_address(n: u64) -> std::net::IpAddr {
    let [.., high, low] = n.to_be_bytes();
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 99, high, low))
}

/// STS as a role assumer, in memory: every role can be had but those in `denied`; each answer
/// is numbered and lasts `lifetime`.
#[derive(Debug)]
pub struct FakeRoles {
    calls: std::sync::atomic::AtomicUsize,
    lifetime: Duration,
    denied: Vec<String>,
}

impl FakeRoles {
    pub fn new(lifetime: Duration, denied: &[&str]) -> FakeRoles {
        FakeRoles {
            calls: std::sync::atomic::AtomicUsize::new(0),
            lifetime,
            denied: denied.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    /// How many times a role was assumed.
    pub fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl crate::credentials::RoleAssumer for FakeRoles {
    fn assume<'a>(
        &'a self,
        role: &'a str,
        session_name: &'a str,
    ) -> BoxFuture<'a, Result<crate::credentials::RoleCredentials, crate::credentials::AssumeError>>
    {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            if self.denied.iter().any(|d| d == role) {
                return Err(crate::credentials::AssumeError::Refused {
                    role: role.to_owned(),
                    message: "AccessDenied: the role does not trust this agent".to_owned(),
                });
            }
            Ok(crate::credentials::RoleCredentials {
                access_key_id: format!("ASIA{n}"),
                secret_access_key: "secret".to_owned(),
                session_token: format!("session-{session_name}"),
                expiration_ms: now_ms()
                    + u64::try_from(self.lifetime.as_millis()).unwrap_or(u64::MAX),
                role_arn: if role.starts_with("arn:") {
                    role.to_owned()
                } else {
                    format!("arn:aws:iam::123456789012:role/{role}")
                },
            })
        })
    }
}
