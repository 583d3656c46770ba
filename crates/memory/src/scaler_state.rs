//! The scaler's memory, kept as JSON on its lease's item as the DynamoDB adapter keeps it: read
//! and written only while the run still holds the lease (same owner and epoch).

use titus_core::ports::{Lease, ScalerState, ScalerStateStore, StateError};
use titus_core::StoreError;

use crate::metering::Consistency;
use crate::world::{MemoryWorld, State};

/// The scaler's state store of a [`MemoryWorld`].
#[derive(Debug, Clone)]
pub struct MemoryScalerState {
    world: MemoryWorld,
}

impl MemoryScalerState {
    pub(crate) fn new(world: MemoryWorld) -> MemoryScalerState {
        MemoryScalerState { world }
    }
}

fn load(state: &mut State, lease: &Lease) -> Result<ScalerState, StateError> {
    state.meter.request("DynamoDB.GetItem");
    let row = state.leases.get(&lease.name).cloned();
    state
        .meter
        .read(row.as_ref().map_or(0, |r| r.size()), Consistency::Strong);
    let row = row
        .filter(|r| r.held_by(lease))
        .ok_or(StateError::LeaseLost { epoch: lease.epoch })?;
    match row.scaler_state {
        None => Ok(ScalerState::default()),
        Some(text) => serde_json::from_str(&text).map_err(|e| {
            StateError::Store(StoreError::Internal(format!(
                "the scaler state on lease {} does not parse: {e}",
                lease.name
            )))
        }),
    }
}

fn save(state: &mut State, lease: &Lease, scaler: &ScalerState) -> Result<(), StateError> {
    let text = serde_json::to_string(scaler)
        .map_err(|e| StoreError::Internal(format!("serializing the scaler state: {e}")))?;
    state.meter.request("DynamoDB.UpdateItem");
    let Some(row) = state
        .leases
        .get_mut(&lease.name)
        .filter(|r| r.held_by(lease))
    else {
        state.meter.write(0, 1, false);
        return Err(StateError::LeaseLost { epoch: lease.epoch });
    };
    let before = row.size();
    row.scaler_state = Some(text);
    let after = row.size();
    state.meter.write(before, after, false);
    Ok(())
}

impl ScalerStateStore for MemoryScalerState {
    async fn load(&self, lease: &Lease) -> Result<ScalerState, StateError> {
        self.world
            .run("scaler_state.load", |s| load(s, lease))
            .await
    }

    async fn save(&self, lease: &Lease, state: &ScalerState) -> Result<(), StateError> {
        self.world
            .run("scaler_state.save", |s| save(s, lease, state))
            .await
    }
}
