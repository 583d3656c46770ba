//! The agent's logic, over its ports: receiving commands, running each task's container through
//! its life, reporting every step, heartbeats, drains, and picking up its containers again after
//! a restart.
//!
//! Each task has a supervisor (a tokio task) that owns it from launch to its Finished status.
//! Its container is named after the task, so a second launch of the same task finds the name
//! taken, and it is renamed once its Finished status was sent: a container still under its
//! first name is one whose exit has not been reported. After a restart the agent lists its
//! containers by label, re-adopts the running ones, reports those that exited while it was down,
//! and removes what is past its retention.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use titus_core::messages::{AgentCommand, KillTask, LaunchTask, Registration, TaskStatusUpdate};
use titus_core::ports::DeadLetter;
use titus_core::{
    Agent as AgentRecord, AgentHeartbeat, AgentState, JobId, Resources, StoreError, TaskId,
    TaskReason, TaskState,
};
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::aws::RegistryAuth;
use crate::config::{AgentSettings, DrainPolicy};
use crate::credentials::CredentialService;
use crate::outbox::Outbox;
use crate::ports::{
    CommandSource, ControlPlaneLink, LinkError, Placement, ReceivedMessage, StatusSink,
};
use crate::runtime::{
    label, ContainerInfo, ContainerRuntime, LogConfig, RuntimeError, FINISHED_SUFFIX,
};
use crate::secrets::SecretResolver;
use crate::time::now_ms;
use supervisor::{log_config, task_logs_of};

mod supervisor;

/// Tasks remembered after they finished (or were killed before their launch arrived), so that a
/// late or duplicated launch does not run them again.
const TOMBSTONES: usize = 10_000;
/// Status senders working at once; a task's updates are still sent one at a time.
const STATUS_SENDERS: usize = 4;
/// How often registration is asked for at start before the agent gives up.
const REGISTRATION_ATTEMPTS: u32 = 10;
/// How long the agent waits between registration attempts.
const REGISTRATION_RETRY: Duration = Duration::from_secs(2);
/// Stray containers stopped at once at start-up.
const STRAY_STOPS: usize = 8;
/// How long a fenced agent waits for its containers to stop before it registers again anyway.
const FENCE_STOP_WAIT: Duration = Duration::from_secs(120);
/// How long a received command stays hidden; the agent extends it at half this while it works.
const VISIBILITY: Duration =
    Duration::from_secs(titus_aws::resources::AGENT_QUEUE_VISIBILITY_TIMEOUT_SECS as u64);

/// Who the agent is and what it offers, settled at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentIdentity {
    pub agent_id: String,
    pub zone: String,
    pub machine_type: String,
    pub machine_group: String,
    pub capacity: Resources,
}

/// What became of a received command's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Its work is safe: delete it.
    Delete,
    /// It cannot be processed: make it visible again at once, so that after the queue's
    /// maximum receives it moves to the dead-letter queue.
    Release,
}

/// Why `run` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// Drained and deregistered.
    Drained,
    /// Stopped on request, leaving its containers running for the next start to re-adopt.
    Stopped,
}

/// Errors that stop the agent from starting or running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    #[error("registering agent {agent_id} failed: {source}")]
    Register { agent_id: String, source: LinkError },
    #[error("listing this agent's containers failed: {0}")]
    Reconcile(RuntimeError),
    #[error("reading where the records place task {task_id} failed: {source}")]
    Records { task_id: TaskId, source: StoreError },
    #[error("deregistering agent {agent_id} failed: {source}")]
    Deregister { agent_id: String, source: LinkError },
}

/// How far a task has got, as its command handlers need to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Starting,
    /// Its Started status was sent: a launch message can be deleted.
    Running,
    /// Its Finished status was sent.
    Finished,
}

/// A request to stop a task, from a kill command, its runtime limit, a drain or a lost agent.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KillRequest {
    reason: TaskReason,
    /// SIGTERM to SIGKILL; `None` takes the task's own grace period.
    grace: Option<Duration>,
    message: String,
}

#[derive(Debug)]
struct TaskHandle {
    resources: Resources,
    kill: watch::Sender<Option<KillRequest>>,
    phase: watch::Receiver<Phase>,
}

impl TaskHandle {
    /// Asks the supervisor to stop the task; the first request wins.
    fn request_kill(&self, request: KillRequest) {
        self.kill.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(request);
                true
            } else {
                false
            }
        });
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tombstone {
    Finished,
    /// A kill arrived before the task's launch (SQS does not keep order).
    KilledBeforeLaunch(KillRequest),
}

#[derive(Debug, Default)]
struct Tombstones {
    entries: HashMap<TaskId, Tombstone>,
    order: VecDeque<TaskId>,
}

impl Tombstones {
    fn insert(&mut self, task: TaskId, tombstone: Tombstone) {
        if self.entries.insert(task.clone(), tombstone).is_none() {
            self.order.push_back(task);
        }
        while self.order.len() > TOMBSTONES {
            if let Some(old) = self.order.pop_front() {
                self.entries.remove(&old);
            }
        }
    }
}

/// What a task's supervisor starts from.
#[derive(Debug)]
enum Plan {
    Launch(Box<LaunchTask>),
    /// A container found at start.
    Adopt(ContainerInfo),
}

/// The task's fixed facts, from its launch or its container's labels.
#[derive(Debug, Clone)]
struct TaskContext {
    task_id: TaskId,
    job_id: JobId,
    /// The agent's incarnation the task was placed on; its statuses say so.
    incarnation: u64,
    name: String,
    grace: Duration,
    runtime_limit: Option<Duration>,
    memory_mb: u64,
}

/// How a task ended.
#[derive(Debug, Clone)]
struct Outcome {
    reason: TaskReason,
    message: String,
    exit_code: Option<i64>,
    oom_killed: bool,
    at_ms: u64,
    /// The container, when one was created.
    container_id: Option<String>,
}

impl Outcome {
    fn without_container(reason: TaskReason, message: String) -> Outcome {
        Outcome {
            reason,
            message,
            exit_code: None,
            oom_killed: false,
            at_ms: now_ms(),
            container_id: None,
        }
    }
}

/// What the agent uses besides its ports.
#[derive(Clone)]
pub struct HostServices {
    /// Registry credentials for pulls.
    pub registry_auth: Arc<dyn RegistryAuth>,
    /// Hands task containers their role's credentials; `None` refuses tasks with a role.
    pub credentials: Option<Arc<CredentialService>>,
    /// Resolves tasks' secrets at launch; `None` refuses tasks that name secrets.
    pub secrets: Option<TaskSecrets>,
    /// Where the agent's metrics go besides its log (`metrics_log_group`); `None`: only logged.
    pub metrics: Option<crate::metrics::EmfWriter>,
}

/// How the agent reads tasks' secrets, and the stage whose shared secrets roleless tasks may
/// name (see [`crate::secrets`]).
#[derive(Clone, Debug)]
pub struct TaskSecrets {
    pub resolver: Arc<dyn SecretResolver>,
    pub stage: String,
}

impl HostServices {
    /// No registry credentials and no task credentials (tests, and hosts that need neither).
    pub fn none() -> HostServices {
        HostServices {
            registry_auth: Arc::new(crate::aws::NoRegistryAuth),
            credentials: None,
            secrets: None,
            metrics: None,
        }
    }
}

impl std::fmt::Debug for HostServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostServices")
            .field("credentials", &self.credentials)
            .field("secrets", &self.secrets)
            .finish_non_exhaustive()
    }
}

/// The agent. Shared as `Arc<Agent<..>>` between its loops and its tasks' supervisors.
#[derive(Debug)]
pub struct Agent<R, Q, S, L> {
    identity: AgentIdentity,
    settings: AgentSettings,
    runtime: R,
    commands: Q,
    link: L,
    /// This life of the agent, as the control plane registered it; 0 while it is fenced (declared
    /// lost) and not registered again: then it runs no launch.
    incarnation: AtomicU64,
    /// Whether a fence is being handled (one at a time).
    fencing: AtomicBool,
    outbox: Outbox<S>,
    registry_auth: Arc<dyn RegistryAuth>,
    /// Serves tasks their role's credentials; without it, a task with a role is refused.
    credentials: Option<Arc<CredentialService>>,
    /// Resolves tasks' secrets; without it, a task that names secrets is refused.
    secrets: Option<TaskSecrets>,
    log: LogConfig,
    /// What the agent counts, reported once a minute (see [`crate::metrics`]).
    pub(crate) metrics: titus_core::metrics::Metrics,
    metrics_writer: Option<crate::metrics::EmfWriter>,
    tasks: Mutex<HashMap<TaskId, TaskHandle>>,
    tombstones: Mutex<Tombstones>,
    /// Finished containers kept for their logs, with when to remove them.
    retained: Mutex<VecDeque<(String, u64)>>,
    running_count: watch::Sender<usize>,
    draining: AtomicBool,
    drain_requested: CancellationToken,
    /// The last report written, with the incarnation it was written for: an unchanged report is
    /// written only every few heartbeat intervals.
    last_report: Mutex<Option<(u64, AgentHeartbeat)>>,
    /// Stops the status senders, which run from `start` on.
    outbox_stop: CancellationToken,
}

impl<R, Q, S, L> Agent<R, Q, S, L>
where
    R: ContainerRuntime,
    Q: CommandSource,
    S: StatusSink,
    L: ControlPlaneLink,
{
    /// Registers the agent (through the control plane), stops the containers its records do not
    /// run here, and takes over those they do. The caller then `run`s it.
    pub async fn start(
        identity: AgentIdentity,
        settings: AgentSettings,
        runtime: R,
        commands: Q,
        status: S,
        link: L,
        services: HostServices,
    ) -> Result<Arc<Self>, AgentError> {
        let log = log_config(&settings);
        let HostServices {
            registry_auth,
            credentials,
            secrets,
            metrics: metrics_writer,
        } = services;
        let agent = Arc::new(Agent {
            identity,
            settings,
            runtime,
            commands,
            link,
            incarnation: AtomicU64::new(0),
            fencing: AtomicBool::new(false),
            outbox: Outbox::new(status),
            registry_auth,
            credentials,
            secrets,
            log,
            metrics: titus_core::metrics::Metrics::default(),
            metrics_writer,
            tasks: Mutex::new(HashMap::new()),
            tombstones: Mutex::new(Tombstones::default()),
            retained: Mutex::new(VecDeque::new()),
            running_count: watch::Sender::new(0),
            draining: AtomicBool::new(false),
            drain_requested: CancellationToken::new(),
            last_report: Mutex::new(None),
            outbox_stop: CancellationToken::new(),
        });
        for _ in 0..STATUS_SENDERS {
            let sender = agent.clone();
            tokio::spawn(async move { sender.outbox.run(sender.outbox_stop.clone()).await });
        }
        let registered = agent.register_patiently(REGISTRATION_ATTEMPTS).await?;
        tracing::info!(
            agent_id = %agent.identity.agent_id,
            incarnation = registered.incarnation,
            state = %registered.state,
            cpu_millis = registered.capacity.cpu_millis,
            memory_mb = registered.capacity.memory_mb,
            disk_mb = registered.capacity.disk_mb,
            "agent registered"
        );
        agent.reconcile().await?;
        if registered.state == AgentState::Draining {
            agent.begin_drain("its record is marked draining");
        }
        Ok(agent)
    }

    pub fn identity(&self) -> &AgentIdentity {
        &self.identity
    }

    pub fn settings(&self) -> &AgentSettings {
        &self.settings
    }

    pub fn runtime(&self) -> &R {
        &self.runtime
    }

    /// Stops sending status updates; for tests and benchmarks that drive the agent without
    /// `run`.
    pub fn shutdown(&self) {
        self.outbox_stop.cancel();
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// The incarnation this agent runs as; 0 while fenced.
    pub fn incarnation(&self) -> u64 {
        self.incarnation.load(Ordering::SeqCst)
    }

    /// The tasks whose containers have not finished, sorted.
    pub fn running_tasks(&self) -> Vec<TaskId> {
        let mut ids: Vec<TaskId> = self.lock_tasks().keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Status updates not yet accepted by the status queue.
    pub fn pending_status_updates(&self) -> usize {
        self.outbox.pending()
    }

    fn lock_tasks(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, TaskHandle>> {
        // Every mutation under these locks is a single insert or remove, so a poisoned lock
        // still guards a consistent map.
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_tombstones(&self) -> std::sync::MutexGuard<'_, Tombstones> {
        self.tombstones.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the control plane to register this agent and takes the incarnation it gives.
    async fn register(&self) -> Result<AgentRecord, LinkError> {
        let registration = Registration {
            agent_id: self.identity.agent_id.clone(),
            registration_id: uuid::Uuid::new_v4().to_string(),
            zone: self.identity.zone.clone(),
            machine_type: self.identity.machine_type.clone(),
            machine_group: self.identity.machine_group.clone(),
            capacity: self.identity.capacity,
            at_ms: now_ms(),
            task_logs: task_logs_of(&self.settings),
        };
        let record = self.link.register(&registration).await?;
        self.incarnation.store(record.incarnation, Ordering::SeqCst);
        Ok(record)
    }

    /// Registers, asking again up to `attempts` times (a fenced agent is registered again only
    /// once the control plane has finished the tasks of its last incarnation).
    async fn register_patiently(&self, attempts: u32) -> Result<AgentRecord, AgentError> {
        let mut attempt = 1;
        loop {
            match self.register().await {
                Ok(record) => return Ok(record),
                Err(e) if attempt < attempts => {
                    tracing::warn!(error = %e, attempt, "registration not applied yet; asking again");
                    tokio::time::sleep(REGISTRATION_RETRY).await;
                    attempt += 1;
                }
                Err(source) => {
                    return Err(AgentError::Register {
                        agent_id: self.identity.agent_id.clone(),
                        source,
                    })
                }
            }
        }
    }

    // ---- the loops -------------------------------------------------------------------------

    /// Works until `stop` (leave the containers running) or a drain completes. A drain starts
    /// when `drain` is cancelled (SIGTERM) or the agent's record is marked draining.
    pub async fn run(
        self: &Arc<Self>,
        drain: CancellationToken,
        stop: CancellationToken,
    ) -> Result<RunOutcome, AgentError> {
        let outbox_stop = self.outbox_stop.clone();
        let mut background = tokio::task::JoinSet::new();
        let poll_stop = CancellationToken::new();
        let handlers = TaskTracker::new();
        {
            let agent = self.clone();
            let token = poll_stop.clone();
            let handlers = handlers.clone();
            background.spawn(async move { agent.poll_loop(token, handlers).await });
        }
        let heartbeat_stop = CancellationToken::new();
        {
            let agent = self.clone();
            let token = heartbeat_stop.clone();
            background.spawn(async move { agent.heartbeat_loop(token).await });
            let (agent, token) = (self.clone(), heartbeat_stop.clone());
            background.spawn(async move { agent.metrics_loop(token).await });
        }

        let stopped = tokio::select! {
            () = stop.cancelled() => true,
            () = drain.cancelled() => {
                self.begin_drain("the agent received SIGTERM");
                false
            }
            () = self.drain_requested.cancelled() => false,
        };
        if stopped {
            tracing::info!(
                "stopping; containers keep running and are re-adopted at the next start"
            );
            poll_stop.cancel();
            heartbeat_stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), self.outbox.flushed()).await;
            outbox_stop.cancel();
            background.shutdown().await;
            return Ok(RunOutcome::Stopped);
        }

        // Draining: launches are handed back as they arrive, kills still work. Wait for the
        // tasks to end, then for the commands in hand, then for their statuses to be sent.
        let finished = async {
            self.wait_for_no_tasks().await;
            poll_stop.cancel();
            handlers.close();
            handlers.wait().await;
            self.wait_for_no_tasks().await;
            self.outbox.flushed().await;
        };
        tokio::select! {
            () = finished => {}
            () = stop.cancelled() => {
                poll_stop.cancel();
                heartbeat_stop.cancel();
                outbox_stop.cancel();
                background.shutdown().await;
                return Ok(RunOutcome::Stopped);
            }
        }
        heartbeat_stop.cancel();
        outbox_stop.cancel();
        background.shutdown().await;
        self.link
            .request_deregister(&self.identity.agent_id)
            .await
            .map_err(|source| AgentError::Deregister {
                agent_id: self.identity.agent_id.clone(),
                source,
            })?;
        tracing::info!(agent_id = %self.identity.agent_id, "drained and deregistered");
        Ok(RunOutcome::Drained)
    }

    async fn wait_for_no_tasks(&self) {
        let mut count = self.running_count.subscribe();
        let _ = count.wait_for(|&n| n == 0).await;
    }

    async fn poll_loop(self: Arc<Self>, stop: CancellationToken, handlers: TaskTracker) {
        let permits = Arc::new(Semaphore::new(
            self.settings.max_concurrent_messages as usize,
        ));
        let mut backoff = Duration::from_millis(200);
        loop {
            let first = tokio::select! {
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
                () = stop.cancelled() => return,
            };
            let room = 1 + permits.available_permits().min(9) as u32;
            let received = tokio::select! {
                received = self.commands.receive(room, self.settings.poll_wait()) => received,
                () = stop.cancelled() => return,
            };
            let messages = match received {
                Ok(messages) => {
                    backoff = Duration::from_millis(200);
                    messages
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "receiving commands failed");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = stop.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            let mut first = Some(first);
            for message in messages {
                let permit = match first.take() {
                    Some(permit) => permit,
                    None => match permits.clone().acquire_owned().await {
                        Ok(permit) => permit,
                        Err(_) => return,
                    },
                };
                let agent = self.clone();
                handlers.spawn(async move {
                    agent.handle_received(message).await;
                    drop(permit);
                });
            }
        }
    }

    /// Works on one received message, keeping it hidden while the work goes on, then deletes or
    /// releases it.
    async fn handle_received(self: Arc<Self>, message: ReceivedMessage) {
        let work = self.handle_message(&message.body);
        tokio::pin!(work);
        let disposition = loop {
            tokio::select! {
                disposition = &mut work => break disposition,
                () = tokio::time::sleep(VISIBILITY / 2) => {
                    if let Err(e) = self.commands.extend(&message.receipt, VISIBILITY).await {
                        tracing::warn!(error = %e, "extending a command's visibility failed");
                    }
                }
            }
        };
        let result = match disposition {
            Disposition::Delete => {
                let mut result = self.commands.delete(&message.receipt).await;
                for attempt in 1..=3 {
                    if result.is_ok() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                    result = self.commands.delete(&message.receipt).await;
                }
                result
            }
            Disposition::Release => self.commands.release(&message.receipt).await,
        };
        if let Err(e) = result {
            // The message comes back after its visibility timeout; handling it again is safe.
            tracing::warn!(error = %e, ?disposition, "settling a command message failed");
        }
    }

    /// Handles one command. Public so that tests and benchmarks can drive the agent without a
    /// queue.
    pub async fn handle_message(self: &Arc<Self>, body: &str) -> Disposition {
        let command: AgentCommand = match serde_json::from_str(body) {
            Ok(command) => command,
            Err(e) => {
                let preview: String = body.chars().take(200).collect();
                let letter = DeadLetter {
                    message_id: String::new(),
                    body: body.to_owned(),
                    reason: format!(
                        "not an agent command: {e}; expected the JSON of an AgentCommand \
                         (type launchTask or killTask)"
                    ),
                    dead_lettered_at_ms: now_ms(),
                };
                return match self.link.dead_letter(&letter).await {
                    Ok(()) => {
                        tracing::warn!(error = %e, body = %preview, "command is not valid; kept on the dead-letter queue with its reason");
                        Disposition::Delete
                    }
                    Err(send) => {
                        tracing::warn!(error = %e, dead_letter_error = %send, body = %preview, "command is not valid; it goes to the dead-letter queue after its last receive");
                        Disposition::Release
                    }
                };
            }
        };
        match command {
            AgentCommand::LaunchTask(launch) => self.handle_launch(launch).await,
            AgentCommand::KillTask(kill) => self.handle_kill(kill).await,
        }
    }

    async fn handle_launch(self: &Arc<Self>, launch: LaunchTask) -> Disposition {
        let task_id = launch.task_id.clone();
        if let Some(refusal) = self.refuse_launch(&launch) {
            tracing::warn!(task_id = %task_id, refusal = %refusal, "launch refused");
            self.lock_tombstones()
                .insert(task_id.clone(), Tombstone::Finished);
            let _ = self.outbox.enqueue(TaskStatusUpdate {
                task_id: launch.task_id.clone(),
                job_id: launch.job_id.clone(),
                agent_id: self.identity.agent_id.clone(),
                incarnation: launch.incarnation,
                state: TaskState::Finished,
                reason: Some(TaskReason::TransientSystemError),
                message: refusal,
                timestamp_ms: now_ms(),
                exit_code: None,
                oom_killed: false,
                container_id: None,
            });
            return Disposition::Delete;
        }
        if let Some(placement) = self.stale_launch(&launch).await {
            tracing::warn!(task_id = %task_id, ?placement, "launch of a task the records no longer run here; not started");
            self.lock_tombstones()
                .insert(task_id.clone(), Tombstone::Finished);
            return Disposition::Delete;
        }
        let mut phase = {
            let mut tasks = self.lock_tasks();
            if let Some(handle) = tasks.get(&task_id) {
                tracing::info!(task_id = %task_id, "launch of a task this agent already runs; no second container");
                handle.phase.clone()
            } else {
                let mut kill = None;
                match self.lock_tombstones().entries.get(&task_id) {
                    Some(Tombstone::Finished) => {
                        tracing::info!(task_id = %task_id, "launch of a task that already finished here; ignored");
                        return Disposition::Delete;
                    }
                    Some(Tombstone::KilledBeforeLaunch(request)) => kill = Some(request.clone()),
                    None => {}
                }
                if kill.is_none() && self.is_draining() {
                    kill = Some(KillRequest {
                        reason: TaskReason::TransientSystemError,
                        grace: None,
                        message: format!(
                            "handed back: agent {} is draining",
                            self.identity.agent_id
                        ),
                    });
                }
                let resources = Resources::of_container(&launch.resources);
                self.spawn_supervisor(
                    &mut tasks,
                    task_id.clone(),
                    resources,
                    kill,
                    Plan::Launch(Box::new(launch)),
                )
            }
        };
        let settled = phase.wait_for(|p| *p >= Phase::Running).await.is_ok();
        if settled {
            Disposition::Delete
        } else {
            tracing::error!(task_id = %task_id, "the task's supervisor ended without reporting; the launch goes back to the queue");
            Disposition::Release
        }
    }

    async fn handle_kill(self: &Arc<Self>, kill: KillTask) -> Disposition {
        let request = KillRequest {
            reason: kill.reason,
            grace: Some(Duration::from_secs(u64::from(kill.grace_period_sec))),
            message: format!("killed on request ({})", kill.reason),
        };
        let phase = {
            let tasks = self.lock_tasks();
            match tasks.get(&kill.task_id) {
                Some(handle) => {
                    handle.request_kill(request);
                    Some(handle.phase.clone())
                }
                None => {
                    let mut tombstones = self.lock_tombstones();
                    if tombstones.entries.get(&kill.task_id) != Some(&Tombstone::Finished) {
                        tracing::info!(task_id = %kill.task_id, "kill of a task this agent does not run; remembered in case its launch arrives");
                        tombstones
                            .insert(kill.task_id.clone(), Tombstone::KilledBeforeLaunch(request));
                    }
                    None
                }
            }
        };
        if let Some(mut phase) = phase {
            if phase.wait_for(|p| *p == Phase::Finished).await.is_err() {
                tracing::error!(task_id = %kill.task_id, "the task's supervisor ended without reporting; the kill goes back to the queue");
                return Disposition::Release;
            }
        }
        Disposition::Delete
    }

    /// Why this agent will not take `launch`, before anything runs: it was placed on another
    /// incarnation (this agent was declared lost since, or the launch is not the control
    /// plane's), or it would take more than the agent offers. The refusal is reported as the
    /// task's end, which the control plane believes only from the task's holder.
    fn refuse_launch(&self, launch: &LaunchTask) -> Option<String> {
        if self.lock_tasks().contains_key(&launch.task_id) {
            return None;
        }
        let incarnation = self.incarnation();
        if launch.incarnation != incarnation {
            return Some(format!(
                "launch for incarnation {} of agent {}, which runs as incarnation {incarnation}; \
                 expected a launch placed on this incarnation",
                launch.incarnation, self.identity.agent_id
            ));
        }
        let asked = Resources::of_container(&launch.resources);
        let used = self
            .lock_tasks()
            .values()
            .fold(Resources::ZERO, |sum, t| sum.saturating_add(t.resources));
        let after = used.saturating_add(asked);
        if !after.fits_within(&self.identity.capacity) {
            return Some(format!(
                "launch would take agent {} past its capacity in {} (it runs {} tasks); \
                 expected placements within what it offers",
                self.identity.agent_id,
                after.shortfalls(&self.identity.capacity).join(", "),
                self.lock_tasks().len()
            ));
        }
        None
    }

    /// Where the records place a launch's task, when that is not on this agent and incarnation:
    /// the task finished (stuck, lost, killed) or was placed elsewhere since the launch was sent.
    /// A launch comes late when it was received by a process of this agent that died before
    /// running it (SQS gives it again after its visibility timeout, to a process that never saw
    /// its kill) or while the agent was frozen; starting it would run a task the records have
    /// replaced. Read only for a task this agent does not run yet. A task the records do not have
    /// at all, or records that cannot be read, leave the launch to run as sent: the control plane
    /// still tells a sender it does not believe to stop.
    async fn stale_launch(&self, launch: &LaunchTask) -> Option<Placement> {
        if self.lock_tasks().contains_key(&launch.task_id)
            || self.lock_tombstones().entries.contains_key(&launch.task_id)
        {
            return None;
        }
        match self.link.placement(&launch.task_id).await {
            Ok(Some(placement))
                if !placement.runs_on(&self.identity.agent_id, launch.incarnation) =>
            {
                Some(placement)
            }
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(task_id = %launch.task_id, error = %e, "reading where the records place a launched task failed; launching it as sent");
                None
            }
        }
    }

    /// Registers the task and starts its supervisor. The caller holds the task map's lock, so
    /// that checking for the task and adding it are one step.
    fn spawn_supervisor(
        self: &Arc<Self>,
        tasks: &mut HashMap<TaskId, TaskHandle>,
        task_id: TaskId,
        resources: Resources,
        kill: Option<KillRequest>,
        plan: Plan,
    ) -> watch::Receiver<Phase> {
        let (kill_tx, kill_rx) = watch::channel(kill);
        let (phase_tx, phase_rx) = watch::channel(Phase::Starting);
        tasks.insert(
            task_id.clone(),
            TaskHandle {
                resources,
                kill: kill_tx,
                phase: phase_rx.clone(),
            },
        );
        self.running_count.send_replace(tasks.len());
        let agent = self.clone();
        let span = tracing::info_span!("task", task_id = %task_id);
        tokio::spawn(
            async move {
                agent
                    .supervise(task_id, plan, kill_rx, Arc::new(phase_tx))
                    .await
            }
            .instrument(span),
        );
        phase_rx
    }

    fn kill_all(&self, reason: TaskReason, message: &str) {
        for handle in self.lock_tasks().values() {
            handle.request_kill(KillRequest {
                reason,
                grace: None,
                message: message.to_owned(),
            });
        }
    }

    /// Starts draining: no new work, the running tasks finish or are handed back.
    pub fn begin_drain(self: &Arc<Self>, why: &str) {
        if self.draining.swap(true, Ordering::SeqCst) {
            return;
        }
        tracing::info!(why, policy = ?self.settings.drain_policy, tasks = self.lock_tasks().len(), "draining");
        let agent = self.clone();
        tokio::spawn(async move {
            if let Err(e) = agent.link.request_drain(&agent.identity.agent_id).await {
                tracing::warn!(error = %e, "asking the control plane to drain this agent failed");
            }
        });
        match self.settings.drain_policy {
            DrainPolicy::HandBack => self.kill_all(
                TaskReason::TransientSystemError,
                "handed back: the agent is draining",
            ),
            DrainPolicy::Finish => {
                let agent = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(agent.settings.drain_timeout()).await;
                    agent.kill_all(
                        TaskReason::TransientSystemError,
                        "handed back: the agent's drain timed out",
                    );
                });
            }
        }
        self.drain_requested.cancel();
    }

    async fn heartbeat_loop(self: Arc<Self>, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(self.settings.heartbeat_interval());
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = stop.cancelled() => return,
            }
            self.heartbeat().await;
            self.remove_expired_containers().await;
        }
    }

    async fn heartbeat(self: &Arc<Self>) {
        let report = {
            let tasks = self.lock_tasks();
            let mut running_task_ids: Vec<TaskId> = tasks.keys().cloned().collect();
            running_task_ids.sort();
            AgentHeartbeat {
                at_ms: now_ms(),
                running_task_ids,
                used: tasks
                    .values()
                    .fold(Resources::ZERO, |sum, t| sum.saturating_add(t.resources)),
            }
        };
        let incarnation = self.incarnation();
        let interval_ms = self.settings.heartbeat_interval().as_millis() as u64;
        {
            let last = self.last_report.lock().unwrap_or_else(|p| p.into_inner());
            let written = last
                .as_ref()
                .filter(|(i, _)| *i == incarnation)
                .map(|(_, r)| r);
            if !report.is_due(written, interval_ms) {
                return;
            }
        }
        let result = self.link.heartbeat(&self.identity.agent_id, &report).await;
        *self.last_report.lock().unwrap_or_else(|p| p.into_inner()) =
            result.is_ok().then_some((incarnation, report));
        match result {
            Ok(record)
                if record.state == AgentState::Lost || record.incarnation != self.incarnation() =>
            {
                self.fence(&record);
            }
            Ok(record) if record.state == AgentState::Draining => {
                self.begin_drain("its record is marked draining")
            }
            Ok(_) => {}
            Err(StoreError::Conflict { .. }) if !self.is_draining() => {
                tracing::warn!("the agent's record is gone; registering again");
                let agent = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = agent.register_patiently(u32::MAX).await {
                        tracing::warn!(error = %e, "registering again failed");
                    }
                });
            }
            Err(e) => {
                self.metrics
                    .add(titus_core::metrics::AGENT_HEARTBEAT_FAILURES, 1.0);
                tracing::warn!(error = %e, "heartbeat failed");
            }
        }
    }

    /// Reports the agent's metrics every [`crate::metrics::REPORT_INTERVAL`] until `stop`.
    async fn metrics_loop(self: Arc<Self>, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(crate::metrics::REPORT_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            self.report_metrics().await;
        }
    }

    /// Writes one EMF line of what changed since the last, with the tasks running now, and
    /// returns it; `None` without a writer (the counts stay in the registry) or when nothing
    /// changed.
    pub async fn report_metrics(&self) -> Option<String> {
        let writer = self.metrics_writer.as_ref()?;
        let running = self.lock_tasks().len();
        self.metrics
            .set(titus_core::metrics::AGENT_TASKS_RUNNING, running as f64);
        let at_ms = now_ms();
        let line = self.metrics.emf(&[("Stage", writer.stage())], at_ms)?;
        if let Err(e) = writer.write(&line, at_ms).await {
            tracing::warn!(error = %e, group = writer.group(), "writing the agent's metrics failed");
        }
        Some(line)
    }

    /// This agent was declared lost (or its record names another incarnation): the control
    /// plane finished its tasks and replaced them, so running them on would run them twice. It
    /// stops every container, runs no launch, registers again as a new incarnation once the
    /// control plane allows it, and then checks its containers against the records.
    fn fence(self: &Arc<Self>, record: &AgentRecord) {
        if self.fencing.swap(true, Ordering::SeqCst) {
            return;
        }
        tracing::warn!(
            state = %record.state,
            recorded_incarnation = record.incarnation,
            incarnation = self.incarnation(),
            "this agent was declared lost; stopping its tasks and registering again"
        );
        self.incarnation.store(0, Ordering::SeqCst);
        self.kill_all(
            TaskReason::Lost,
            "the agent was declared lost; the task was replaced",
        );
        let agent = self.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(FENCE_STOP_WAIT, agent.wait_for_no_tasks()).await;
            match agent.register_patiently(u32::MAX).await {
                Ok(record) => {
                    tracing::info!(
                        incarnation = record.incarnation,
                        "registered again after a fence"
                    );
                    if let Err(e) = agent.reconcile().await {
                        tracing::warn!(error = %e, "checking containers against the records failed");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "registering again failed"),
            }
            agent.fencing.store(false, Ordering::SeqCst);
        });
    }

    // ---- start-up reconciliation -------------------------------------------------------------

    async fn reconcile(self: &Arc<Self>) -> Result<(), AgentError> {
        let containers = self
            .runtime
            .list(&[(label::AGENT_ID, &self.identity.agent_id)])
            .await
            .map_err(AgentError::Reconcile)?;
        let (mut adopted, mut retained) = (0, 0);
        let mut strays = Vec::new();
        for summary in containers {
            let Some(task_id) = summary.labels.get(label::TASK_ID).map(TaskId::from_string) else {
                continue;
            };
            if summary.name.ends_with(FINISHED_SUFFIX) {
                // Reported already; kept for its log until the retention ends.
                let finished_at = match self.runtime.inspect(&summary.name).await {
                    Ok(info) => info.finished_at_ms.unwrap_or_else(now_ms),
                    Err(_) => now_ms(),
                };
                self.retain(&summary.name, finished_at);
                self.lock_tombstones().insert(task_id, Tombstone::Finished);
                retained += 1;
                continue;
            }
            let info = match self.runtime.inspect(&summary.name).await {
                Ok(info) => info,
                Err(RuntimeError::NotFound(_)) => continue,
                Err(e) => return Err(AgentError::Reconcile(e)),
            };
            if self.lock_tasks().contains_key(&task_id) {
                continue;
            }
            // Only what the records run on this incarnation is taken over; any other container
            // (its task finished, placed elsewhere, or on an earlier life of this agent) stops.
            let incarnation = self.incarnation();
            let placement =
                self.link
                    .placement(&task_id)
                    .await
                    .map_err(|source| AgentError::Records {
                        task_id: task_id.clone(),
                        source,
                    })?;
            if !placement
                .as_ref()
                .is_some_and(|p| p.runs_on(&self.identity.agent_id, incarnation))
            {
                tracing::warn!(task_id = %task_id, ?placement, incarnation, "a container the records do not run here; stopping it");
                let grace = info
                    .labels
                    .get(label::KILL_GRACE_SECS)
                    .and_then(|g| g.parse().ok())
                    .map_or(Duration::from_secs(10), Duration::from_secs);
                self.lock_tombstones()
                    .insert(task_id.clone(), Tombstone::Finished);
                strays.push((task_id, summary.name, grace));
                continue;
            }
            let resources = info
                .labels
                .get(label::RESOURCES)
                .and_then(|json| serde_json::from_str(json).ok())
                .unwrap_or_default();
            tracing::info!(task_id = %task_id, status = ?info.status, "re-adopting a container");
            let mut tasks = self.lock_tasks();
            if !tasks.contains_key(&task_id) {
                self.spawn_supervisor(&mut tasks, task_id, resources, None, Plan::Adopt(info));
                adopted += 1;
            }
        }
        let stopped = strays.len();
        tracing::info!(
            adopted,
            retained,
            stopped,
            "reconciled this agent's containers with the records"
        );
        futures::stream::iter(strays)
            .for_each_concurrent(STRAY_STOPS, |(task_id, name, grace)| async move {
                self.stop_stray(&task_id, &name, grace).await;
            })
            .await;
        Ok(())
    }

    /// Stops a container the records do not run here and keeps it, renamed as reported, for its
    /// log until the retention ends: its task's end is the control plane's to record.
    async fn stop_stray(&self, task_id: &TaskId, name: &str, grace: Duration) {
        if let Err(e) = self.runtime.stop(name, grace).await {
            tracing::warn!(task_id = %task_id, error = %e, "stopping a stray container failed");
            return;
        }
        let finished_name = format!("{name}{FINISHED_SUFFIX}");
        match self.runtime.rename(name, &finished_name).await {
            Ok(()) => self.retain(&finished_name, now_ms()),
            Err(e) => {
                tracing::warn!(task_id = %task_id, error = %e, "renaming a stopped stray container failed; removing it");
                let _ = self.runtime.remove(name).await;
            }
        }
    }

    fn retain(&self, name: &str, finished_at_ms: u64) {
        let expires = finished_at_ms.saturating_add(self.settings.finished_retention_secs * 1000);
        let mut retained = self.retained.lock().unwrap_or_else(|p| p.into_inner());
        let position = retained.partition_point(|(_, e)| *e <= expires);
        retained.insert(position, (name.to_owned(), expires));
    }

    async fn remove_expired_containers(&self) {
        let now = now_ms();
        loop {
            let expired = {
                let mut retained = self.retained.lock().unwrap_or_else(|p| p.into_inner());
                match retained.front() {
                    Some((_, expires)) if *expires <= now => retained.pop_front(),
                    _ => None,
                }
            };
            let Some((name, _)) = expired else {
                return;
            };
            if let Err(e) = self.runtime.remove(&name).await {
                tracing::warn!(container = %name, error = %e, "removing a finished container failed");
            }
        }
    }
}

/// The tail of a task's container log, running or finished (while it is retained).
pub async fn task_log_tail<R: ContainerRuntime>(
    runtime: &R,
    task_id: &str,
    lines: usize,
) -> Result<String, RuntimeError> {
    let containers = runtime.list(&[(label::TASK_ID, task_id)]).await?;
    let container = containers
        .first()
        .ok_or_else(|| RuntimeError::NotFound(format!("a container of task {task_id}")))?;
    runtime.logs_tail(&container.id, lines).await
}

#[cfg(test)]
mod tests;
