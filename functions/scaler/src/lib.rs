//! The capacity scaler: a scheduled function that grows the agent pools to meet the demand the
//! agents cannot take, and drains and terminates agents that stay idle.
//!
//! One run: take the scaler lease (so two scalers never act at once), read the pools'
//! instances from EC2, the agents, the pending tasks and the scaler's memory, decide
//! ([`decide`]), keep the decision's state under the lease (the fence: a run that lost its lease
//! acts on nothing), then terminate, drain and launch.
//!
//! Scale-down is two steps. An agent idle for a pool's `idle_threshold_secs` is marked draining
//! (conditionally, only if still active), so the scheduler places nothing more on it (its
//! commits require an active agent). A later run terminates it once it is draining with no task
//! holding resources, confirmed by a fresh consistent read and by the agent's own report of its
//! running containers; or once its agent has deregistered after the drain. An agent with tasks
//! is never terminated, nor one drained by someone else. An instance without a registered agent
//! for the registration timeout (from launch, or from when it was first seen without one, since
//! an agent restarting deregisters for a moment) is terminated.

pub mod config;
pub mod decide;
pub mod ec2;
pub mod state;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use titus_aws::config::{ConfigError, ParameterCache};
use titus_aws::{AwsClients, DynamoAgentStore, DynamoJobStore, DynamoLeaseStore, Names};
use titus_core::lease::{Lease, LeaseError, LeaseStore};
use titus_core::{
    Agent, AgentState, AgentStore, Job, JobId, JobState, JobStore, Resources, StoreError, TaskId,
};
use titus_placement::{AgentView, TaskRequest};
use tracing::{info, warn};

pub use crate::config::{PoolSettings, ScalerConfig, ScalerSettings};
pub use crate::decide::{decide, Decision, Demand, PoolReport, Snapshot, Termination};
pub use crate::ec2::{Ec2Api, Ec2Error, Ec2Fleet, Lifecycle};
pub use crate::state::{DynamoScalerState, ScalerState, ScalerStateStore, StateError};

/// The lease every scaler of a stage takes; distinct from the scheduler's.
pub const LEASE_NAME: &str = "scaler";

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleSummary {
    pub owner: String,
    /// False when another scaler held the lease (or took it mid-run): this run did nothing.
    pub lease_held: bool,
    pub epoch: u64,
    pub pending_tasks: u32,
    /// Pending tasks the agents as they are cannot take.
    pub unplaced: u32,
    /// Of those, tasks no instance the scaler may launch now would take.
    pub unschedulable: u32,
    pub demand: Vec<DemandSummary>,
    pub launched: Vec<LaunchedSummary>,
    pub launch_errors: Vec<String>,
    /// Agents marked draining.
    pub drained: Vec<String>,
    pub terminated: Vec<String>,
    pub pools: Vec<PoolSummary>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DemandSummary {
    pub pool: String,
    pub machine_type: String,
    pub zone: String,
    pub tasks: u32,
    pub resources: Resources,
    pub booting: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LaunchedSummary {
    pub pool: String,
    pub instance_id: String,
    pub machine_type: String,
    pub zone: String,
    pub lifecycle: Lifecycle,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolSummary {
    pub pool: String,
    pub instances: u32,
    pub active: u32,
    pub idle: u32,
    pub booting: u32,
    pub draining: u32,
    pub lost: u32,
    pub unregistered: u32,
    pub cooling_down: bool,
}

/// Why a run failed. `error_type` names are stable (alarms and retries match them).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScalerError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("store unavailable: {0}")]
    StoreUnavailable(String),
    #[error("store error: {0}")]
    Store(StoreError),
    #[error(transparent)]
    Ec2(#[from] Ec2Error),
}

impl ScalerError {
    pub fn error_type(&self) -> &'static str {
        match self {
            ScalerError::Config(_) => "InvalidConfiguration",
            ScalerError::StoreUnavailable(_) => "StoreUnavailable",
            ScalerError::Store(_) => "StoreError",
            ScalerError::Ec2(_) => "Ec2Error",
        }
    }
}

impl From<StoreError> for ScalerError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(message) => ScalerError::StoreUnavailable(message),
            other => ScalerError::Store(other),
        }
    }
}

impl From<ScalerError> for lambda_runtime::Diagnostic {
    fn from(err: ScalerError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: err.error_type().to_owned(),
            error_message: err.to_string(),
        }
    }
}

/// What an agent itself last reported running: a second opinion before terminating it.
pub trait AgentReports: Send + Sync {
    /// The task ids the agent last reported running; `None` if it never reported.
    fn running_task_ids(
        &self,
        agent_id: &str,
    ) -> impl Future<Output = Result<Option<Vec<TaskId>>, StoreError>> + Send;
}

impl AgentReports for DynamoAgentStore {
    async fn running_task_ids(&self, agent_id: &str) -> Result<Option<Vec<TaskId>>, StoreError> {
        Ok(self
            .heartbeat_report(agent_id)
            .await?
            .map(|report| report.running_task_ids))
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The scaler over its ports.
#[derive(Debug)]
pub struct Scaler<J, A, L, S, E> {
    pub names: Names,
    pub jobs: J,
    pub agents: A,
    pub leases: L,
    pub state: S,
    pub ec2: E,
    pub clock: fn() -> u64,
}

/// The scaler on AWS.
pub type AwsScaler =
    Scaler<DynamoJobStore, DynamoAgentStore, DynamoLeaseStore, DynamoScalerState, Ec2Fleet>;

impl AwsScaler {
    pub fn with_clients(
        clients: &AwsClients,
        ec2: aws_sdk_ec2::Client,
        names: &Names,
    ) -> AwsScaler {
        Scaler {
            names: names.clone(),
            jobs: DynamoJobStore::new(clients.dynamodb.clone(), names),
            agents: DynamoAgentStore::new(clients.dynamodb.clone(), names),
            leases: DynamoLeaseStore::new(clients.dynamodb.clone(), names),
            state: DynamoScalerState::new(clients.dynamodb.clone(), names),
            ec2: Ec2Fleet::new(ec2),
            clock: now_ms,
        }
    }
}

/// The scaler's parameters, read at cold start and again once older than the configured age.
#[derive(Debug)]
pub struct ConfigSource {
    names: Names,
    cache: ParameterCache,
}

impl ConfigSource {
    pub fn new(ssm: aws_sdk_ssm::Client, names: &Names, max_age: Duration) -> ConfigSource {
        ConfigSource {
            names: names.clone(),
            cache: ParameterCache::new(ssm, vec![names.scaler_parameter_path()], max_age),
        }
    }

    /// The same source with another maximum age (the configured `config_max_age_secs`).
    pub fn with_max_age(self, max_age: Duration) -> ConfigSource {
        ConfigSource {
            names: self.names,
            cache: self.cache.with_max_age(max_age),
        }
    }

    pub async fn load(&self) -> Result<ScalerConfig, ConfigError> {
        let parameters = self.cache.get().await?;
        ScalerConfig::from_parameters(&self.names, &parameters)
    }
}

impl<J, A, L, S, E> Scaler<J, A, L, S, E>
where
    J: JobStore,
    A: AgentStore + AgentReports,
    L: LeaseStore,
    S: ScalerStateStore,
    E: Ec2Api,
{
    /// One run as `owner` (unique per run, e.g. the invocation's request id).
    pub async fn run(
        &self,
        config: &ScalerConfig,
        owner: &str,
    ) -> Result<ScaleSummary, ScalerError> {
        let now = (self.clock)();
        let mut summary = ScaleSummary {
            owner: owner.to_owned(),
            ..ScaleSummary::default()
        };
        let ttl_ms = config.settings.lease_ttl_secs.saturating_mul(1000);
        let lease = match self
            .leases
            .acquire_or_renew(LEASE_NAME, owner, now, ttl_ms)
            .await
        {
            Ok(lease) => lease,
            Err(LeaseError::HeldByOther { owner, epoch, .. }) => {
                info!(holder = %owner, epoch, "another scaler is running; nothing to do");
                summary.epoch = epoch;
                return Ok(summary);
            }
            Err(LeaseError::Store(e)) => return Err(e.into()),
            Err(other) => return Err(StoreError::Internal(other.to_string()).into()),
        };
        summary.lease_held = true;
        summary.epoch = lease.epoch;
        let result = self.run_leased(config, &lease, now, &mut summary).await;
        if let Err(e) = self.leases.release(&lease).await {
            warn!(error = %e, "releasing the scaler lease failed; it expires on its own");
        }
        result?;
        info!(
            epoch = summary.epoch,
            pending = summary.pending_tasks,
            unplaced = summary.unplaced,
            unschedulable = summary.unschedulable,
            launched = summary.launched.len(),
            drained = summary.drained.len(),
            terminated = summary.terminated.len(),
            "scaler run"
        );
        Ok(summary)
    }

    async fn run_leased(
        &self,
        config: &ScalerConfig,
        lease: &Lease,
        now: u64,
        summary: &mut ScaleSummary,
    ) -> Result<(), ScalerError> {
        let state = match self.state.load(lease).await {
            Ok(state) => state,
            Err(StateError::LeaseLost { .. }) => {
                summary.lease_held = false;
                return Ok(());
            }
            Err(StateError::Store(e)) => return Err(e.into()),
        };
        let stage = self.names.stage();
        let instances = self.ec2.pool_instances(stage).await?;
        let types = self.instance_types(config).await?;
        let mut subnets = BTreeMap::new();
        for (name, pool) in &config.pools {
            let found = self.ec2.subnets(&pool.subnet_ids).await?;
            if found.is_empty() {
                return Err(ConfigError::Invalid {
                    parameter: self.names.scaler_pool_parameter(name),
                    message: "no subnet found (subnet_ids empty and no default subnets)".to_owned(),
                    expected: "subnet_ids naming subnets of the region".to_owned(),
                }
                .into());
            }
            subnets.insert(name.clone(), found);
        }
        let agents = self.agents.list_agents().await?;
        let (tasks, views) = self
            .demand_inputs(&agents, now, config.settings.max_pending_tasks)
            .await?;
        summary.pending_tasks = tasks.len() as u32;

        let decision = decide(&Snapshot {
            now_ms: now,
            config,
            instances: &instances,
            agents: &agents,
            state: &state,
            types: &types,
            subnets: &subnets,
            tasks: &tasks,
            views: &views,
        });
        summarize(&decision, summary);
        for (task, reasons) in &decision.unschedulable_examples {
            info!(task = %task, reasons = ?reasons, "no instance the scaler may launch would take this task");
        }

        // The fence: cool-down starts and drains are kept before anything is done, and only
        // while the lease is held.
        let mut state = decision.state.clone();
        match self.state.save(lease, &state).await {
            Ok(()) => {}
            Err(StateError::LeaseLost { epoch }) => {
                warn!(epoch, "scaler lease lost before acting; doing nothing");
                summary.lease_held = false;
                return Ok(());
            }
            Err(StateError::Store(e)) => return Err(e.into()),
        }

        self.terminate(&decision, summary).await?;
        for (agent_id, pool) in &decision.drain {
            match self
                .agents
                .set_agent_state(agent_id, AgentState::Active, AgentState::Draining)
                .await
            {
                Ok(()) => {
                    info!(agent = %agent_id, pool = %pool, "idle agent marked draining");
                    summary.drained.push(agent_id.clone());
                }
                Err(e) if e.is_conflict() => {
                    info!(agent = %agent_id, "agent changed state before its drain; left alone");
                }
                Err(e) => return Err(e.into()),
            }
        }

        for (index, plan) in decision.launch.iter().enumerate() {
            let Some(pool) = config.pools.get(&plan.pool) else {
                continue;
            };
            let request = ec2::LaunchRequest {
                stage: stage.to_owned(),
                pool: plan.pool.clone(),
                launch_template: pool.launch_template.clone(),
                machine_type: plan.machine_type.clone(),
                subnet_id: plan.subnet_id.clone(),
                zone: plan.zone.clone(),
                on_demand: plan.on_demand,
                spot: plan.spot,
                spot_allocation_strategy: pool.spot_allocation_strategy.clone(),
                client_token: format!("{stage}-{}-{now}-{index}", lease.epoch),
            };
            match self.ec2.launch(&request).await {
                Ok(outcome) => {
                    for error in &outcome.errors {
                        warn!(pool = %plan.pool, machine_type = %plan.machine_type, zone = %plan.zone, %error, "part of a launch failed");
                    }
                    summary.launch_errors.extend(outcome.errors);
                    for instance in outcome.launched {
                        info!(pool = %plan.pool, instance = %instance.id, machine_type = %instance.machine_type, zone = %instance.zone, lifecycle = ?instance.lifecycle, "launched");
                        state.launched.insert(
                            instance.id.clone(),
                            state::LaunchRecord {
                                pool: plan.pool.clone(),
                                machine_type: instance.machine_type.clone(),
                                zone: instance.zone.clone(),
                                lifecycle: instance.lifecycle,
                                launched_at_ms: now,
                            },
                        );
                        summary.launched.push(LaunchedSummary {
                            pool: plan.pool.clone(),
                            instance_id: instance.id,
                            machine_type: instance.machine_type,
                            zone: instance.zone,
                            lifecycle: instance.lifecycle,
                        });
                    }
                }
                Err(e) => {
                    warn!(pool = %plan.pool, error = %e, "launch failed; the next run tries again");
                    summary.launch_errors.push(e.to_string());
                }
            }
        }
        if !summary.launched.is_empty() {
            if let Err(e) = self.state.save(lease, &state).await {
                // The instances carry the pool's tags: the next run finds them in EC2.
                warn!(error = %e, "remembering the launches failed");
            }
        }
        Ok(())
    }

    /// Terminates what the decision says, re-checking each drained agent first: draining, no
    /// task holding resources (consistent read), and no container it reports running.
    async fn terminate(
        &self,
        decision: &Decision,
        summary: &mut ScaleSummary,
    ) -> Result<(), ScalerError> {
        let mut ids = Vec::new();
        let mut registered = Vec::new();
        for termination in &decision.terminate {
            let id = termination.instance_id.as_str();
            // No record: the agent deregistered (after its drain); nothing of the control plane
            // runs there.
            if let Some(agent) = self.agents.get_agent(id).await? {
                let empty = agent.state == AgentState::Draining
                    && agent.task_count == 0
                    && agent.allocated == Resources::ZERO;
                let running = self.agents.running_task_ids(id).await?.unwrap_or_default();
                if !empty || !running.is_empty() {
                    info!(agent = %id, state = %agent.state, tasks = agent.task_count, reported_running = running.len(), "not terminating: the agent is not empty");
                    continue;
                }
                registered.push(id.to_owned());
            }
            ids.push(id.to_owned());
        }
        if ids.is_empty() {
            return Ok(());
        }
        self.ec2.terminate(&ids).await?;
        for id in &registered {
            self.agents.deregister_agent(id).await?;
        }
        for termination in &decision.terminate {
            if ids.contains(&termination.instance_id) {
                info!(instance = %termination.instance_id, pool = %termination.pool, reason = ?termination.reason, "terminated");
            }
        }
        summary.terminated = ids;
        Ok(())
    }

    async fn instance_types(
        &self,
        config: &ScalerConfig,
    ) -> Result<BTreeMap<String, ec2::InstanceTypeInfo>, ScalerError> {
        let mut types = BTreeMap::new();
        for (name, pool) in &config.pools {
            match self.ec2.instance_types(&pool.instance_types).await {
                Ok(found) => types.extend(found),
                // An unknown type is the pool's configuration's fault: name the parameter.
                Err(e) if e.operation == "DescribeInstanceTypes" => {
                    return Err(ConfigError::Invalid {
                        parameter: self.names.scaler_pool_parameter(name),
                        message: e.message,
                        expected: "instance_types offered in the region".to_owned(),
                    }
                    .into())
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(types)
    }

    /// The pending tasks of accepted jobs as the engine's requests, and the agents as the engine
    /// sees them (with where constrained jobs already run).
    async fn demand_inputs(
        &self,
        agents: &[Agent],
        now: u64,
        limit: u32,
    ) -> Result<(Vec<TaskRequest>, Vec<AgentView>), ScalerError> {
        let pending = self.jobs.list_pending_tasks(limit, now).await?;
        let job_ids: BTreeSet<&JobId> = pending.iter().map(|t| &t.job_id).collect();
        let reads = job_ids.iter().map(|id| self.jobs.get_job(id));
        let mut jobs: HashMap<JobId, Job> = HashMap::new();
        for (id, result) in job_ids.iter().zip(futures::future::join_all(reads).await) {
            if let Some(job) = result? {
                jobs.insert((*id).clone(), job);
            }
        }
        let requests: Vec<TaskRequest> = pending
            .iter()
            .filter_map(|task| {
                let job = jobs.get(&task.job_id)?;
                (job.status.state == JobState::Accepted).then(|| TaskRequest::for_task(task, job))
            })
            .collect();

        let mut jobs_tasks = Vec::new();
        for job in jobs
            .values()
            .filter(|job| titus_placement::needs_job_counts(job))
        {
            jobs_tasks.push((job, self.jobs.list_all_job_tasks(&job.id).await?));
        }
        let views = titus_placement::agent_views(
            agents,
            jobs_tasks
                .iter()
                .map(|(job, tasks)| (*job, tasks.as_slice())),
        );
        Ok((requests, views))
    }
}

fn summarize(decision: &Decision, summary: &mut ScaleSummary) {
    summary.unplaced = decision.unplaced;
    summary.unschedulable = decision.unschedulable;
    summary.demand = decision
        .demand
        .iter()
        .map(|d| DemandSummary {
            pool: d.pool.clone(),
            machine_type: d.machine_type.clone(),
            zone: d.zone.clone(),
            tasks: d.tasks,
            resources: d.resources,
            booting: d.booting,
        })
        .collect();
    summary.pools = decision
        .pools
        .iter()
        .map(|p| PoolSummary {
            pool: p.pool.clone(),
            instances: p.instances,
            active: p.active,
            idle: p.idle,
            booting: p.booting,
            draining: p.draining,
            lost: p.lost,
            unregistered: p.unregistered,
            cooling_down: p.cooling_down,
        })
        .collect();
}
