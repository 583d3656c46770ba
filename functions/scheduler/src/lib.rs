//! The scheduler: one tick of Titus Master's scheduling loop.
//!
//! A tick renews the leader lease, reads the oldest pending tasks and the agents, asks the
//! placement engine for a plan, commits it in fenced transactions, and sends each placement to
//! its agent's queue. It also sends again any placement its agent has not acknowledged in time.
//! The Step Functions loop (`statemachines/scheduler-loop.asl.json`) calls it over and over.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use titus_aws::lease::chunk_placements;
use titus_aws::{
    AwsClients, DynamoAgentStore, DynamoAllocationStore, DynamoJobStore, DynamoLeaseStore, Names,
    SqsCommandQueue,
};
use titus_core::lease::{
    AllocationStore, CommitError, Lease, LeaseError, LeaseStore, PlacementWrite,
};
use titus_core::messages::{AgentCommand, CommandQueue, LaunchTask, QueueError};
use titus_core::store::PageRequest;
use titus_core::{
    Agent, AgentStore, Job, JobId, JobState, JobStore, StoreError, Task, TaskId, TaskReason,
    TaskState,
};
use titus_placement::{AgentView, Strategy, TaskRequest};
use tracing::{info, warn};

/// How often a tick looks for placements their agents did not acknowledge: on the first tick of a
/// run and every this many ticks after. Idle ticks come about a second apart, so a placement is
/// sent again at most a few seconds after its acknowledgement timeout.
pub const REDISPATCH_EVERY_TICKS: u64 = 5;

/// The scheduler's settings, read once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    pub stage: String,
    pub lease_name: String,
    /// How long a lease lasts without renewal; a tick renews it.
    pub lease_ttl_ms: u64,
    /// The most pending tasks one tick reads and plans.
    pub max_tasks_per_tick: u32,
    /// A placement not acknowledged by its agent within this is dispatched again.
    pub ack_timeout_ms: u64,
    /// How long one run of the loop may go on; Express workflows end at five minutes.
    pub loop_budget_ms: u64,
    pub strategy: Strategy,
}

/// A setting that could not be read, named so the operator can fix it.
#[derive(Debug, thiserror::Error)]
#[error("setting {name} is {value:?}: expected {expected}")]
pub struct ConfigError {
    pub name: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            stage: titus_aws::resources::DEFAULT_STAGE.to_owned(),
            lease_name: "scheduler".to_owned(),
            lease_ttl_ms: 15_000,
            max_tasks_per_tick: 500,
            ack_timeout_ms: 30_000,
            loop_budget_ms: 240_000,
            strategy: Strategy::BinPack,
        }
    }
}

/// The scheduler's tunables as the stage's SSM parameter holds them
/// (`/titus/{stage}/scheduler/config`, provisioned from `scheduler_config_default`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerTunables {
    pub lease_ttl_ms: u64,
    pub max_tasks_per_tick: u32,
    pub ack_timeout_ms: u64,
    pub loop_budget_ms: u64,
    /// `binpack` or `spread`.
    pub strategy: String,
}

impl Default for SchedulerTunables {
    fn default() -> Self {
        let config = SchedulerConfig::default();
        SchedulerTunables {
            lease_ttl_ms: config.lease_ttl_ms,
            max_tasks_per_tick: config.max_tasks_per_tick,
            ack_timeout_ms: config.ack_timeout_ms,
            loop_budget_ms: config.loop_budget_ms,
            strategy: "binpack".to_owned(),
        }
    }
}

impl titus_aws::config::Validate for SchedulerTunables {
    const EXPECTED: &'static str = "a JSON object with lease_ttl_ms (>= 1000), max_tasks_per_tick \
        (1-1000), ack_timeout_ms, loop_budget_ms (at most 290000, under Express's five minutes) \
        and strategy (binpack or spread)";

    fn validate(&self) -> Result<(), String> {
        if self.lease_ttl_ms < 1000 {
            return Err(format!("lease_ttl_ms is {}", self.lease_ttl_ms));
        }
        if !(1..=PageRequest::MAX_PAGE_SIZE).contains(&self.max_tasks_per_tick) {
            return Err(format!("max_tasks_per_tick is {}", self.max_tasks_per_tick));
        }
        if self.loop_budget_ms > 290_000 {
            return Err(format!("loop_budget_ms is {}", self.loop_budget_ms));
        }
        parse_strategy(&self.strategy)
            .map(|_| ())
            .ok_or_else(|| format!("strategy is {:?}", self.strategy))
    }
}

fn parse_strategy(text: &str) -> Option<Strategy> {
    match text.to_ascii_lowercase().as_str() {
        "binpack" | "bin-pack" => Some(Strategy::BinPack),
        "spread" => Some(Strategy::Spread),
        _ => None,
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadConfigError {
    #[error(transparent)]
    Parameter(#[from] titus_aws::config::ConfigError),
    #[error(transparent)]
    Setting(#[from] ConfigError),
    #[error("TITUS_STAGE: {0}")]
    Stage(String),
}

impl SchedulerConfig {
    /// The tunables replace the defaults.
    pub fn with_tunables(mut self, tunables: &SchedulerTunables) -> SchedulerConfig {
        self.lease_ttl_ms = tunables.lease_ttl_ms;
        self.max_tasks_per_tick = tunables.max_tasks_per_tick;
        self.ack_timeout_ms = tunables.ack_timeout_ms;
        self.loop_budget_ms = tunables.loop_budget_ms;
        if let Some(strategy) = parse_strategy(&tunables.strategy) {
            self.strategy = strategy;
        }
        self
    }

    /// Read once at cold start: the stage (`TITUS_STAGE`), the tunables from the stage's SSM
    /// parameter, then any `TITUS_SCHEDULER_*` variable over them.
    pub async fn load(clients: &AwsClients) -> Result<SchedulerConfig, LoadConfigError> {
        let stage = std::env::var("TITUS_STAGE")
            .unwrap_or_else(|_| titus_aws::resources::DEFAULT_STAGE.to_owned());
        let names = Names::new(&stage).map_err(LoadConfigError::Stage)?;
        let parameter = names.scheduler_config_parameter();
        let values =
            titus_aws::parameters::get_parameters(&clients.ssm, std::slice::from_ref(&parameter))
                .await
                .map_err(|e| match e {
                    titus_aws::parameters::ParameterError::Missing { .. } => {
                        titus_aws::config::ConfigError::Missing {
                            parameter: parameter.clone(),
                        }
                    }
                    other => titus_aws::config::ConfigError::Aws {
                        path: parameter.clone(),
                        message: other.to_string(),
                    },
                })?;
        let tunables: SchedulerTunables = titus_aws::config::parse_typed(
            &parameter,
            values
                .get(&parameter)
                .map(String::as_str)
                .unwrap_or_default(),
        )?;
        let config = SchedulerConfig {
            stage,
            ..SchedulerConfig::default()
        };
        Ok(config.with_tunables(&tunables).apply_env()?)
    }
    /// Defaults overridden by `TITUS_STAGE` and `TITUS_SCHEDULER_*` variables.
    pub fn from_env() -> Result<SchedulerConfig, ConfigError> {
        SchedulerConfig::default().apply_env()
    }

    /// This configuration overridden by `TITUS_STAGE` and `TITUS_SCHEDULER_*` variables.
    pub fn apply_env(self) -> Result<SchedulerConfig, ConfigError> {
        let mut config = self;
        if let Ok(stage) = std::env::var("TITUS_STAGE") {
            config.stage = stage;
        }
        let number = |name: &'static str, default: u64| -> Result<u64, ConfigError> {
            match std::env::var(name) {
                Err(_) => Ok(default),
                Ok(value) => value.trim().parse().map_err(|_| ConfigError {
                    name,
                    value,
                    expected: "a whole number",
                }),
            }
        };
        config.lease_ttl_ms = number("TITUS_SCHEDULER_LEASE_TTL_MS", config.lease_ttl_ms)?;
        config.ack_timeout_ms = number("TITUS_SCHEDULER_ACK_TIMEOUT_MS", config.ack_timeout_ms)?;
        config.loop_budget_ms = number("TITUS_SCHEDULER_LOOP_BUDGET_MS", config.loop_budget_ms)?;
        let max = number(
            "TITUS_SCHEDULER_MAX_TASKS_PER_TICK",
            u64::from(config.max_tasks_per_tick),
        )?;
        config.max_tasks_per_tick = u32::try_from(max)
            .ok()
            .filter(|m| (1..=PageRequest::MAX_PAGE_SIZE).contains(m))
            .ok_or(ConfigError {
                name: "TITUS_SCHEDULER_MAX_TASKS_PER_TICK",
                value: max.to_string(),
                expected: "between 1 and 1000",
            })?;
        if let Ok(value) = std::env::var("TITUS_SCHEDULER_STRATEGY") {
            config.strategy = match value.to_ascii_lowercase().as_str() {
                "binpack" | "bin-pack" => Strategy::BinPack,
                "spread" => Strategy::Spread,
                _ => {
                    return Err(ConfigError {
                        name: "TITUS_SCHEDULER_STRATEGY",
                        value,
                        expected: "binpack or spread",
                    })
                }
            };
        }
        Ok(config)
    }
}

/// What the loop passes to each tick.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TickInput {
    /// Who asks for the lease: the loop's execution name, the same for every tick of one run.
    pub owner: String,
    /// When the loop's run started, to end it before its time limit; absent or 0 on the first
    /// tick, which starts the clock.
    #[serde(default)]
    pub started_at_ms: Option<u64>,
    #[serde(default)]
    pub iteration: u64,
}

/// What a tick did; the loop decides from it whether to go on at once, wait, or stop.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TickSummary {
    /// The lease owner, passed on to the next tick.
    pub owner: String,
    /// When the loop's run started, passed on to the next tick.
    pub started_at_ms: u64,
    /// Initial tasks this tick wrote for newly accepted jobs (before placing them).
    #[serde(default)]
    pub materialized: u32,
    pub placed: u32,
    pub unplaced: u32,
    /// Pending tasks left after this tick (at least; a tick reads a bounded number).
    pub pending_left: u32,
    pub lease_held: bool,
    pub epoch: u64,
    /// Placements sent again because their agent did not acknowledge them.
    pub redispatched: u32,
    /// Placements refused by a conditional write (a lost race); re-planned next tick.
    pub conflicts: u32,
    /// Placements committed but not delivered; sent again after the acknowledgement timeout.
    pub dispatch_failures: u32,
    /// The next tick's iteration number.
    pub iteration: u64,
    /// Whether the loop should tick again: the lease is held and the run has time left.
    pub continue_loop: bool,
}

/// Why a tick failed. `error_type` names are stable: the state machine retries on them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerError {
    #[error("store unavailable: {0}")]
    StoreUnavailable(String),
    #[error("store error: {0}")]
    Store(StoreError),
    #[error("queue error: {0}")]
    Queue(QueueError),
    #[error("invalid tick input: {0}")]
    InvalidInput(String),
}

impl SchedulerError {
    pub fn error_type(&self) -> &'static str {
        match self {
            SchedulerError::StoreUnavailable(_) => "StoreUnavailable",
            SchedulerError::Store(_) => "StoreError",
            SchedulerError::Queue(_) => "QueueError",
            SchedulerError::InvalidInput(_) => "InvalidInput",
        }
    }
}

impl From<StoreError> for SchedulerError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(message) => SchedulerError::StoreUnavailable(message),
            other => SchedulerError::Store(other),
        }
    }
}

impl From<SchedulerError> for lambda_runtime::Diagnostic {
    fn from(err: SchedulerError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: err.error_type().to_owned(),
            error_message: err.to_string(),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The scheduler over its ports.
#[derive(Debug)]
pub struct Scheduler<J, A, L, C, Q> {
    pub jobs: J,
    pub agents: A,
    pub leases: L,
    pub allocations: C,
    pub queue: Q,
    pub config: SchedulerConfig,
    pub clock: fn() -> u64,
}

/// The scheduler on AWS.
pub type AwsScheduler = Scheduler<
    DynamoJobStore,
    DynamoAgentStore,
    DynamoLeaseStore,
    DynamoAllocationStore,
    SqsCommandQueue,
>;

impl AwsScheduler {
    /// Builds the AWS clients once, from the environment.
    pub async fn from_env(config: SchedulerConfig) -> AwsScheduler {
        let clients = AwsClients::from_env().await;
        Self::with_clients(&clients, config)
    }

    pub fn with_clients(clients: &AwsClients, config: SchedulerConfig) -> AwsScheduler {
        // The stage name was checked when the configuration was read or provisioned.
        let names = Names::new(&config.stage).unwrap_or_else(|_| {
            Names::new(titus_aws::resources::DEFAULT_STAGE).expect("the default stage is valid")
        });
        Scheduler {
            jobs: DynamoJobStore::new(clients.dynamodb.clone(), &names),
            agents: DynamoAgentStore::new(clients.dynamodb.clone(), &names),
            leases: DynamoLeaseStore::new(clients.dynamodb.clone(), &names),
            allocations: DynamoAllocationStore::new(clients.dynamodb.clone(), &names),
            queue: SqsCommandQueue::new(clients.sqs.clone()),
            config,
            clock: now_ms,
        }
    }
}

impl<J, A, L, C, Q> Scheduler<J, A, L, C, Q>
where
    J: JobStore,
    A: AgentStore,
    L: LeaseStore,
    C: AllocationStore,
    Q: CommandQueue,
{
    /// One tick. Losing the lease is not an error: the summary says `leaseHeld: false` and the
    /// loop stops.
    pub async fn tick(&self, input: TickInput) -> Result<TickSummary, SchedulerError> {
        if input.owner.trim().is_empty() {
            return Err(SchedulerError::InvalidInput(
                "owner is empty; expected the loop's execution name".to_owned(),
            ));
        }
        let now = (self.clock)();
        let started_at_ms = input.started_at_ms.filter(|&s| s > 0).unwrap_or(now);
        let mut summary = TickSummary {
            owner: input.owner.clone(),
            started_at_ms,
            iteration: input.iteration + 1,
            ..TickSummary::default()
        };
        // The lease and the snapshot are read at once, which takes a round trip off every
        // placement. Reading before the lease is confirmed is harmless: nothing is written
        // without it, and every placement commit checks its epoch.
        let limit = self.config.max_tasks_per_tick;
        // (Boxed, so that the tick's own future stays small.)
        let (lease, agents, pending) = futures::join!(
            Box::pin(self.leases.acquire_or_renew(
                &self.config.lease_name,
                &input.owner,
                now,
                self.config.lease_ttl_ms,
            )),
            Box::pin(self.agents.list_agents()),
            Box::pin(self.jobs.list_pending_tasks(limit + 1, now)),
        );
        let lease = match lease {
            Ok(lease) => lease,
            Err(LeaseError::HeldByOther { owner, epoch, .. }) => {
                info!(holder = %owner, epoch, "another scheduler holds the lease; stopping");
                summary.epoch = epoch;
                return Ok(summary);
            }
            Err(LeaseError::Store(e)) => return Err(e.into()),
            Err(other) => {
                return Err(SchedulerError::Store(StoreError::Internal(
                    other.to_string(),
                )))
            }
        };
        summary.lease_held = true;
        summary.epoch = lease.epoch;

        let agents = agents?;
        let agents_by_id: HashMap<&str, &Agent> =
            agents.iter().map(|a| (a.id.as_str(), a)).collect();
        let mut jobs: HashMap<JobId, Option<Job>> = HashMap::new();

        // Unacknowledged placements wait at least the acknowledgement timeout, so their index
        // need not be read on every tick: on a run's first tick and every few after.
        if summary.iteration % REDISPATCH_EVERY_TICKS == 1 {
            summary.redispatched = self.redispatch(now, &agents_by_id, &mut jobs).await?;
        }

        // Newly accepted jobs get their tasks now, so they are placed in this same tick. The
        // tasks are taken from the write, not from the pending index, which may lag it.
        let mut pending = pending?;
        let materialized = match self.jobs.materialize_jobs(limit, u64::MAX).await {
            Ok(tasks) => tasks,
            // The tasks already waiting are still placed; the new jobs wait for the next tick.
            Err(e) => {
                warn!(error = %e, "could not read the jobs awaiting their tasks");
                Vec::new()
            }
        };
        summary.materialized = materialized.len() as u32;
        if !materialized.is_empty() {
            let known: HashSet<TaskId> = pending.iter().map(|t| t.id.clone()).collect();
            pending.extend(
                materialized
                    .into_iter()
                    .filter(|t| !known.contains(&t.id) && t.not_before_ms <= now),
            );
            // Oldest first, as the pending index orders them.
            pending.sort_by(|a, b| {
                (a.created_at_ms.max(a.not_before_ms), a.id.as_str())
                    .cmp(&(b.created_at_ms.max(b.not_before_ms), b.id.as_str()))
            });
        }
        let more_than_read = pending.len() > limit as usize;
        pending.truncate(limit as usize);
        self.load_jobs(pending.iter().map(|t| &t.job_id), &mut jobs)
            .await?;
        self.finish_orphans(&pending, &jobs, now).await?;
        // Tasks whose job is being killed or gone are finished by the kill path, not placed.
        pending.retain(|t| {
            jobs.get(&t.job_id)
                .and_then(Option::as_ref)
                .is_some_and(|j| j.status.state == JobState::Accepted)
        });

        if !pending.is_empty() {
            let views = self.agent_views(&agents, &pending, &jobs).await?;
            let requests: Vec<TaskRequest> = pending
                .iter()
                .filter_map(|t| {
                    let job = jobs.get(&t.job_id)?.as_ref()?;
                    Some(TaskRequest::for_task(t, job))
                })
                .collect();
            let plan = titus_placement::plan(&requests, &views, self.config.strategy);
            summary.unplaced = plan.unplaced.len() as u32;
            for unplaced in plan.unplaced.iter().take(5) {
                info!(task = %unplaced.task_id, reasons = ?unplaced.reasons, "task not placed");
            }
            let by_id: HashMap<&str, &Task> = pending.iter().map(|t| (t.id.as_str(), t)).collect();
            let mut writes = Vec::with_capacity(plan.placements.len());
            for placement in &plan.placements {
                let (Some(task), Some(agent)) = (
                    by_id.get(placement.task_id.as_str()),
                    agents_by_id.get(placement.agent_id.as_str()),
                ) else {
                    continue;
                };
                let mut launched = (*task).clone();
                launched.agent_id = Some(agent.id.clone());
                launched.dispatched_at_ms = Some(now);
                if launched
                    .transition(
                        TaskState::Launched,
                        None,
                        &format!("placed on agent {}", agent.id),
                        now,
                    )
                    .is_err()
                {
                    continue;
                }
                writes.push(PlacementWrite {
                    task: launched,
                    expected_version: task.version,
                    agent_id: agent.id.clone(),
                    resources: placement.resources,
                    agent_capacity: agent.capacity,
                });
            }

            let (committed, outcome) = self.commit(&lease, &writes, &mut summary).await;
            summary.placed = committed.len() as u32;
            summary.dispatch_failures = self.dispatch(&committed, &agents_by_id, &jobs).await?;
            outcome?;
        }

        summary.pending_left =
            (pending.len() as u32).saturating_sub(summary.placed) + u32::from(more_than_read);
        let deadline = started_at_ms.saturating_add(self.config.loop_budget_ms);
        summary.continue_loop = summary.lease_held && now < deadline;
        if summary.lease_held && !summary.continue_loop {
            // The run ends: let the next scheduled run take over without waiting for expiry.
            self.leases.release(&lease).await?;
        }
        if summary.materialized
            + summary.placed
            + summary.unplaced
            + summary.redispatched
            + summary.conflicts
            == 0
        {
            tracing::debug!(
                epoch = summary.epoch,
                lease_held = summary.lease_held,
                "idle tick"
            );
        } else {
            info!(
                materialized = summary.materialized,
                placed = summary.placed,
                unplaced = summary.unplaced,
                pending_left = summary.pending_left,
                conflicts = summary.conflicts,
                redispatched = summary.redispatched,
                epoch = summary.epoch,
                lease_held = summary.lease_held,
                "tick"
            );
        }
        Ok(summary)
    }

    /// Finishes waiting tasks of jobs that are already Finished: tasks written just as their job
    /// was killed (a replacement, a new slot), which no kill will reach, and which would otherwise
    /// stay in the pending index for good.
    async fn finish_orphans(
        &self,
        pending: &[Task],
        jobs: &HashMap<JobId, Option<Job>>,
        now: u64,
    ) -> Result<(), SchedulerError> {
        let job_finished = |t: &Task| {
            jobs.get(&t.job_id)
                .and_then(Option::as_ref)
                .is_some_and(|j| j.status.state == JobState::Finished)
        };
        for task in pending.iter().filter(|t| job_finished(t)) {
            let mut finished = task.clone();
            if finished
                .transition(
                    TaskState::Finished,
                    Some(TaskReason::Killed),
                    "its job had already finished",
                    now,
                )
                .is_err()
            {
                continue;
            }
            match self.jobs.update_task(&finished, task.version).await {
                Ok(()) => {
                    info!(task = %task.id, job = %task.job_id, "finished a task of a finished job")
                }
                // It moved on meanwhile; the next tick sees where it went.
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Commits the placements chunk by chunk. A chunk that lost a race is skipped (its tasks are
    /// re-planned next tick); a lost lease stops everything.
    async fn commit(
        &self,
        lease: &Lease,
        writes: &[PlacementWrite],
        summary: &mut TickSummary,
    ) -> (Vec<PlacementWrite>, Result<(), SchedulerError>) {
        let mut committed = Vec::new();
        for chunk in chunk_placements(writes) {
            match self.allocations.commit_placements(lease, &chunk).await {
                Ok(()) => committed.extend(chunk),
                Err(CommitError::LeaseLost { epoch }) => {
                    warn!(epoch, "lease lost mid-tick; committing nothing more");
                    summary.lease_held = false;
                    break;
                }
                Err(CommitError::Conflict(detail)) => {
                    info!(%detail, tasks = chunk.len(), "placement chunk lost a race");
                    summary.conflicts += chunk.len() as u32;
                }
                Err(CommitError::Store(e)) => return (committed, Err(e.into())),
                Err(other) => {
                    return (
                        committed,
                        Err(SchedulerError::Store(StoreError::Internal(
                            other.to_string(),
                        ))),
                    )
                }
            }
        }
        (committed, Ok(()))
    }

    /// Sends each committed placement to its agent's queue. Returns how many were not delivered:
    /// they stay Launched and are sent again once the acknowledgement timeout passes.
    async fn dispatch(
        &self,
        committed: &[PlacementWrite],
        agents: &HashMap<&str, &Agent>,
        jobs: &HashMap<JobId, Option<Job>>,
    ) -> Result<u32, SchedulerError> {
        let mut per_queue: BTreeMap<&str, Vec<AgentCommand>> = BTreeMap::new();
        for write in committed {
            let (Some(agent), Some(Some(job))) = (
                agents.get(write.agent_id.as_str()),
                jobs.get(&write.task.job_id),
            ) else {
                continue;
            };
            per_queue
                .entry(agent.queue_url.as_str())
                .or_default()
                .push(AgentCommand::LaunchTask(LaunchTask::for_task(
                    &write.task,
                    job,
                )));
        }
        let sends = per_queue
            .iter()
            .map(|(url, commands)| self.queue.send_commands(url, commands));
        let mut failed = 0u32;
        for (result, (url, commands)) in futures::future::join_all(sends)
            .await
            .into_iter()
            .zip(&per_queue)
        {
            match result {
                Ok(failures) => failed += failures.len() as u32,
                Err(e) => {
                    warn!(queue = %url, error = %e, "dispatch failed; will send again after the acknowledgement timeout");
                    failed += commands.len() as u32;
                }
            }
        }
        Ok(failed)
    }

    /// Sends again the placements whose agents have not acknowledged them in time.
    async fn redispatch(
        &self,
        now: u64,
        agents: &HashMap<&str, &Agent>,
        jobs: &mut HashMap<JobId, Option<Job>>,
    ) -> Result<u32, SchedulerError> {
        let stale = self
            .jobs
            .list_unacknowledged_tasks(
                self.config.max_tasks_per_tick,
                now.saturating_sub(self.config.ack_timeout_ms),
            )
            .await?;
        if stale.is_empty() {
            return Ok(0);
        }
        self.load_jobs(stale.iter().map(|t| &t.job_id), jobs)
            .await?;
        let mut resent = Vec::new();
        for task in stale {
            let Some(agent_id) = task.agent_id.as_deref() else {
                continue;
            };
            if !agents.contains_key(agent_id) {
                // The agent is gone; the reconciler declares its tasks lost.
                continue;
            }
            let mut updated = task.clone();
            updated.dispatched_at_ms = Some(now);
            updated.version += 1;
            match self.jobs.update_task(&updated, task.version).await {
                Ok(()) => resent.push(PlacementWrite {
                    agent_id: agent_id.to_owned(),
                    resources: titus_core::Resources::of_container(&updated.resources),
                    agent_capacity: titus_core::Resources::ZERO,
                    expected_version: task.version,
                    task: updated,
                }),
                // The agent acknowledged in the meantime.
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e.into()),
            }
        }
        let failed = self.dispatch(&resent, agents, jobs).await?;
        if !resent.is_empty() {
            info!(
                count = resent.len(),
                failed, "sent unacknowledged placements again"
            );
        }
        Ok(resent.len() as u32)
    }

    async fn load_jobs<'a>(
        &self,
        ids: impl Iterator<Item = &'a JobId>,
        jobs: &mut HashMap<JobId, Option<Job>>,
    ) -> Result<(), SchedulerError> {
        let missing: BTreeSet<&JobId> = ids.filter(|id| !jobs.contains_key(*id)).collect();
        let reads = missing.iter().map(|id| self.jobs.get_job(id));
        for (id, result) in missing.iter().zip(futures::future::join_all(reads).await) {
            jobs.insert((*id).clone(), result?);
        }
        Ok(())
    }

    /// The agents as the engine sees them, with where the constrained jobs' tasks already run.
    async fn agent_views(
        &self,
        agents: &[Agent],
        pending: &[Task],
        jobs: &HashMap<JobId, Option<Job>>,
    ) -> Result<Vec<AgentView>, SchedulerError> {
        let job_ids: BTreeSet<&JobId> = pending.iter().map(|t| &t.job_id).collect();
        let mut jobs_tasks = Vec::new();
        for job in job_ids
            .into_iter()
            .filter_map(|id| jobs.get(id).and_then(Option::as_ref))
            .filter(|job| titus_placement::needs_job_counts(job))
        {
            jobs_tasks.push((job, self.jobs.list_all_job_tasks(&job.id).await?));
        }
        Ok(titus_placement::agent_views(
            agents,
            jobs_tasks
                .iter()
                .map(|(job, tasks)| (*job, tasks.as_slice())),
        ))
    }
}

#[cfg(test)]
mod config_tests {
    use super::*;

    #[test]
    fn the_provisioned_tunables_are_the_built_in_defaults() {
        let provisioned: SchedulerTunables =
            serde_json::from_value(titus_aws::resources::scheduler_config_default()).unwrap();
        assert_eq!(provisioned, SchedulerTunables::default());
        assert_eq!(
            SchedulerConfig::default().with_tunables(&provisioned),
            SchedulerConfig::default()
        );
    }

    #[test]
    fn invalid_tunables_name_the_parameter() {
        let err = titus_aws::config::parse_typed::<SchedulerTunables>(
            "/titus/x/scheduler/config",
            r#"{"strategy": "random"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/titus/x/scheduler/config"), "{err}");
        assert!(err.contains("\"random\""), "{err}");
    }
}
