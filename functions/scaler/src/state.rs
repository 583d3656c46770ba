//! What the scaler remembers between runs, and where: on its lease's item in the leases table,
//! written only on condition that the run still holds the lease (owner and epoch), so a scaler
//! that lost its lease changes nothing.
//!
//! EC2's DescribeInstances is eventually consistent, so the scaler does not rely on it alone to
//! know what it launched a moment ago: launches are remembered here until their agents register.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use serde::{Deserialize, Serialize};
use titus_aws::resources::{attr, Names};
use titus_core::lease::Lease;
use titus_core::StoreError;

use crate::ec2::Lifecycle;

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
#[non_exhaustive]
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

const STATE: &str = "scalerState";
const OWNER: &str = "owner";
const EPOCH: &str = "epoch";

/// The state as an attribute of the lease's item in the stage's leases table.
#[derive(Debug, Clone)]
pub struct DynamoScalerState {
    client: Client,
    table: String,
}

impl DynamoScalerState {
    pub fn new(client: Client, names: &Names) -> DynamoScalerState {
        DynamoScalerState {
            client,
            table: names.leases_table(),
        }
    }
}

fn unavailable(operation: &str, err: impl std::error::Error + 'static) -> StoreError {
    StoreError::Unavailable(format!(
        "{operation}: {}",
        aws_sdk_dynamodb::error::DisplayErrorContext(err)
    ))
}

impl ScalerStateStore for DynamoScalerState {
    async fn load(&self, lease: &Lease) -> Result<ScalerState, StateError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::LEASE_NAME, AttributeValue::S(lease.name.clone()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem scaler state", e))?;
        let item: HashMap<String, AttributeValue> = out.item.unwrap_or_default();
        let number = |key: &str| {
            item.get(key)
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse::<u64>().ok())
        };
        let owner = item.get(OWNER).and_then(|v| v.as_s().ok());
        if owner != Some(&lease.owner) || number(EPOCH) != Some(lease.epoch) {
            return Err(StateError::LeaseLost { epoch: lease.epoch });
        }
        match item.get(STATE).and_then(|v| v.as_s().ok()) {
            None => Ok(ScalerState::default()),
            Some(text) => serde_json::from_str(text).map_err(|e| {
                StateError::Store(StoreError::Internal(format!(
                    "the scaler state on lease {} does not parse: {e}",
                    lease.name
                )))
            }),
        }
    }

    async fn save(&self, lease: &Lease, state: &ScalerState) -> Result<(), StateError> {
        let text = serde_json::to_string(state)
            .map_err(|e| StoreError::Internal(format!("serializing the scaler state: {e}")))?;
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::LEASE_NAME, AttributeValue::S(lease.name.clone()))
            .update_expression("SET #state = :state")
            .condition_expression("#owner = :me AND #epoch = :epoch")
            .expression_attribute_names("#state", STATE)
            .expression_attribute_names("#owner", OWNER)
            .expression_attribute_names("#epoch", EPOCH)
            .expression_attribute_values(":state", AttributeValue::S(text))
            .expression_attribute_values(":me", AttributeValue::S(lease.owner.clone()))
            .expression_attribute_values(":epoch", AttributeValue::N(lease.epoch.to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Err(StateError::LeaseLost { epoch: lease.epoch })
            }
            Err(e) => Err(unavailable("UpdateItem scaler state", e).into()),
        }
    }
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
