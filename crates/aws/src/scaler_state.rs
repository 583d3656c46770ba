//! The scaler's memory on DynamoDB: an attribute of its lease's item in the leases table,
//! written only on condition that the run still holds the lease (owner and epoch), so a scaler
//! that lost its lease changes nothing.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use titus_core::ports::{Lease, ScalerState, ScalerStateStore, StateError};
use titus_core::StoreError;

use crate::dynamo::conditional::condition_failed;
use crate::resources::{attr, Names};

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
            Err(e) if condition_failed(&e) => Err(StateError::LeaseLost { epoch: lease.epoch }),
            Err(e) => Err(unavailable("UpdateItem scaler state", e).into()),
        }
    }
}
