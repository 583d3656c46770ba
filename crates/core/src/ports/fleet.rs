//! The scaler's ports: the EC2 fleet (the pools' instances, instance types and subnets,
//! launching from a launch template, terminating) and the scaler's own memory between runs,
//! fenced by its lease.

use std::collections::BTreeMap;
use std::future::Future;

use serde::{Deserialize, Serialize};

use crate::ports::lease::Lease;
use crate::ports::store::StoreError;

/// How an instance is paid for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Lifecycle {
    OnDemand,
    Spot,
}

/// A running or starting instance of one of the stage's pools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolInstance {
    /// The instance id, which is also its agent's id.
    pub id: String,
    pub pool: String,
    pub machine_type: String,
    pub zone: String,
    pub lifecycle: Lifecycle,
    pub launched_at_ms: u64,
}

/// What an instance type offers, as EC2 describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceTypeInfo {
    pub vcpus: u32,
    pub memory_mib: u64,
    pub gpus: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    pub id: String,
    pub zone: String,
}

/// Instances of one type in one subnet, for one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchRequest {
    pub stage: String,
    pub pool: String,
    pub launch_template: String,
    pub machine_type: String,
    pub subnet_id: String,
    /// The subnet's availability zone.
    pub zone: String,
    pub on_demand: u32,
    pub spot: u32,
    pub spot_allocation_strategy: String,
    /// Makes a retried request launch nothing more (EC2's idempotency token, at most 64 chars).
    pub client_token: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LaunchedInstance {
    pub id: String,
    pub machine_type: String,
    pub zone: String,
    pub lifecycle: Lifecycle,
}

/// What a launch started, and why any part of it did not start (e.g. no spot capacity).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaunchOutcome {
    pub launched: Vec<LaunchedInstance>,
    pub errors: Vec<String>,
}

/// An EC2 call that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("EC2 {operation} failed: {message}")]
pub struct FleetError {
    pub operation: &'static str,
    pub message: String,
}

/// What the scaler needs from EC2.
pub trait Fleet: Send + Sync {
    /// The stage's pool instances that are pending or running.
    fn pool_instances(
        &self,
        stage: &str,
    ) -> impl Future<Output = Result<Vec<PoolInstance>, FleetError>> + Send;

    /// The named instance types; an unknown name is an error.
    fn instance_types(
        &self,
        names: &[String],
    ) -> impl Future<Output = Result<BTreeMap<String, InstanceTypeInfo>, FleetError>> + Send;

    /// The named subnets in the given order, or the region's default subnets when none is named.
    fn subnets(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<Subnet>, FleetError>> + Send;

    fn launch(
        &self,
        request: &LaunchRequest,
    ) -> impl Future<Output = Result<LaunchOutcome, FleetError>> + Send;

    fn terminate(&self, ids: &[String]) -> impl Future<Output = Result<(), FleetError>> + Send;
}

/// An instance the scaler launched whose agent has not registered yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LaunchRecord {
    pub pool: String,
    pub machine_type: String,
    pub zone: String,
    pub lifecycle: Lifecycle,
    pub launched_at_ms: u64,
}

/// The scaler's memory. Small: idle agents, recent launches and drains only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ScalerState {
    /// When each pool last launched instances: the start of its cool-down.
    pub last_launch_at_ms: BTreeMap<String, u64>,
    /// Since when each idle agent has had no tasks.
    pub idle_since_ms: BTreeMap<String, u64>,
    /// Launches not yet registered, by instance id.
    pub launched: BTreeMap<String, LaunchRecord>,
    /// Instances the scaler drained, by instance id, with when: terminated once their agent is
    /// empty or has deregistered.
    pub drained_at_ms: BTreeMap<String, u64>,
    /// Since when each instance without an agent has had none.
    pub unregistered_since_ms: BTreeMap<String, u64>,
}

/// Why the state could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The lease changed hands: this run must stop.
    #[error("the scaler lease is no longer held at epoch {epoch}")]
    LeaseLost { epoch: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reads and writes the scaler's state, fenced by its lease.
pub trait ScalerStateStore: Send + Sync {
    fn load(&self, lease: &Lease) -> impl Future<Output = Result<ScalerState, StateError>> + Send;

    /// Writes the state if `lease` is still held (same owner and epoch).
    fn save(
        &self,
        lease: &Lease,
        state: &ScalerState,
    ) -> impl Future<Output = Result<(), StateError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_through_json_and_tolerates_missing_fields() {
        let mut state = ScalerState::default();
        state.last_launch_at_ms.insert("default".into(), 5);
        state.launched.insert(
            "i-1".into(),
            LaunchRecord {
                pool: "default".into(),
                machine_type: "m7g.large".into(),
                zone: "us-east-1a".into(),
                lifecycle: Lifecycle::Spot,
                launched_at_ms: 7,
            },
        );
        let text = serde_json::to_string(&state).unwrap();
        assert_eq!(serde_json::from_str::<ScalerState>(&text).unwrap(), state);
        assert_eq!(
            serde_json::from_str::<ScalerState>("{}").unwrap(),
            ScalerState::default()
        );
    }
}
