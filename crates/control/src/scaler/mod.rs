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

pub mod decide;
pub mod settings;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use titus_core::ports::{
    Clock, Fleet, InstanceTypeInfo, LaunchRecord, LaunchRequest, Lease, LeaseError, LeaseStore,
    Lifecycle, ScalerStateStore, StateError,
};
use titus_core::{
    Agent, AgentState, AgentStore, Job, JobId, JobState, JobStore, Ports, Resources, StoreError,
};
use titus_placement::{AgentView, TaskRequest};
use tracing::{info, warn};

pub use decide::{decide, Decision, Demand, PoolReport, Snapshot, Termination};
pub use settings::{PoolSettings, ScalerConfig, ScalerSettings};

use crate::{ControlError, ControlPlane};

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

/// One run as `owner` (unique per run, e.g. the invocation's request id).
pub async fn run<P: Ports>(
    cp: &ControlPlane<P>,
    config: &ScalerConfig,
    owner: &str,
) -> Result<ScaleSummary, ControlError> {
    Scaler { cp }.run(config, owner).await
}

/// One run's view of the ports.
struct Scaler<'a, P> {
    cp: &'a ControlPlane<P>,
}

impl<P: Ports> Scaler<'_, P> {
    /// One run as `owner` (unique per run, e.g. the invocation's request id).
    async fn run(&self, config: &ScalerConfig, owner: &str) -> Result<ScaleSummary, ControlError> {
        let ports = &self.cp.ports;
        let now = ports.clock().now_ms();
        let mut summary = ScaleSummary {
            owner: owner.to_owned(),
            ..ScaleSummary::default()
        };
        let ttl_ms = config.settings.lease_ttl_secs.saturating_mul(1000);
        let lease = match ports
            .leases()
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
        if let Err(e) = ports.leases().release(&lease).await {
            warn!(error = %e, "releasing the scaler lease failed; it expires on its own");
        }
        result?;
        let m = &self.cp.metrics;
        m.add(
            crate::metrics::AGENTS_LAUNCHED,
            summary.launched.len() as f64,
        );
        m.add(
            crate::metrics::AGENTS_TERMINATED,
            summary.terminated.len() as f64,
        );
        let held: u32 = summary.pools.iter().map(|p| p.instances).sum();
        let wanted = (u64::from(held) + summary.launched.len() as u64)
            .saturating_sub(summary.terminated.len() as u64);
        m.set(crate::metrics::POOL_AGENTS_DESIRED, wanted as f64);
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
    ) -> Result<(), ControlError> {
        let ports = &self.cp.ports;
        let state = match ports.scaler_state().load(lease).await {
            Ok(state) => state,
            Err(StateError::LeaseLost { .. }) => {
                summary.lease_held = false;
                return Ok(());
            }
            Err(StateError::Store(e)) => return Err(e.into()),
        };
        let stage = config.stage.as_str();
        let instances = ports.fleet().pool_instances(stage).await?;
        let types = self.instance_types(config).await?;
        let mut subnets = BTreeMap::new();
        for (name, pool) in &config.pools {
            let found = ports.fleet().subnets(&pool.subnet_ids).await?;
            if found.is_empty() {
                return Err(ControlError::Configuration(format!(
                    "{} is invalid: no subnet found (subnet_ids empty and no default \
                     subnets); expected subnet_ids naming subnets of the region",
                    config.source_of(name)
                )));
            }
            subnets.insert(name.clone(), found);
        }
        let agents = ports.agents().list_agents().await?;
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
        match ports.scaler_state().save(lease, &state).await {
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
            match ports
                .agents()
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
            let request = LaunchRequest {
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
            match ports.fleet().launch(&request).await {
                Ok(outcome) => {
                    for error in &outcome.errors {
                        warn!(pool = %plan.pool, machine_type = %plan.machine_type, zone = %plan.zone, %error, "part of a launch failed");
                    }
                    summary.launch_errors.extend(outcome.errors);
                    for instance in outcome.launched {
                        info!(pool = %plan.pool, instance = %instance.id, machine_type = %instance.machine_type, zone = %instance.zone, lifecycle = ?instance.lifecycle, "launched");
                        state.launched.insert(
                            instance.id.clone(),
                            LaunchRecord {
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
            if let Err(e) = ports.scaler_state().save(lease, &state).await {
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
    ) -> Result<(), ControlError> {
        let agents = self.cp.ports.agents();
        let mut ids = Vec::new();
        let mut registered = Vec::new();
        for termination in &decision.terminate {
            let id = termination.instance_id.as_str();
            // No record: the agent deregistered (after its drain); nothing of the control plane
            // runs there.
            if let Some(agent) = agents.get_agent(id).await? {
                let empty = agent.state == AgentState::Draining
                    && agent.task_count == 0
                    && agent.allocated == Resources::ZERO;
                let running = agents
                    .last_report(id)
                    .await?
                    .map(|report| report.running_task_ids)
                    .unwrap_or_default();
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
        self.cp.ports.fleet().terminate(&ids).await?;
        for id in &registered {
            agents.deregister_agent(id).await?;
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
    ) -> Result<BTreeMap<String, InstanceTypeInfo>, ControlError> {
        let mut types = BTreeMap::new();
        for (name, pool) in &config.pools {
            match self
                .cp
                .ports
                .fleet()
                .instance_types(&pool.instance_types)
                .await
            {
                Ok(found) => types.extend(found),
                // An unknown type is the pool's configuration's fault: name where it came from.
                Err(e) if e.operation == "DescribeInstanceTypes" => {
                    return Err(ControlError::Configuration(format!(
                        "{} is invalid: {}; expected instance_types offered in the region",
                        config.source_of(name),
                        e.message
                    )))
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
    ) -> Result<(Vec<TaskRequest>, Vec<AgentView>), ControlError> {
        let store = self.cp.ports.jobs();
        // Tasks that fit nowhere are deferred by the scheduler (out of its next ticks' reads for
        // a while): they are exactly the demand the pool may have to grow for, so the scaler
        // reads as far ahead as the longest deferral.
        let horizon = now + crate::scheduler::defer::MAX_BACKOFF_MS;
        let pending = store.list_pending_tasks(limit, horizon).await?;
        let job_ids: BTreeSet<&JobId> = pending.iter().map(|t| &t.job_id).collect();
        let reads = job_ids.iter().map(|id| store.get_job(id));
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
            jobs_tasks.push((job, store.list_all_job_tasks(&job.id).await?));
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
