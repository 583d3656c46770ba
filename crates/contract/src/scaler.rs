//! The scaler's memory between runs, read and written only under its lease.

use titus_core::ports::{
    LaunchRecord, LeaseStore, Lifecycle, ScalerState, ScalerStateStore, StateError,
};
use titus_core::Ports;

use crate::fixtures::{NOW_MS, TTL_MS};
use crate::{Fixture, Harness};

const SCALER: &str = "scaler";

fn state() -> ScalerState {
    let mut state = ScalerState::default();
    state.last_launch_at_ms.insert("default".to_owned(), NOW_MS);
    state.idle_since_ms.insert("i-1".to_owned(), NOW_MS - 5_000);
    state.launched.insert(
        "i-2".to_owned(),
        LaunchRecord {
            pool: "default".to_owned(),
            machine_type: "m7g.large".to_owned(),
            zone: "us-east-1a".to_owned(),
            lifecycle: Lifecycle::Spot,
            launched_at_ms: NOW_MS,
        },
    );
    state
}

pub async fn scaler_state_saved_under_its_lease_loads_back<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let lease = fx
        .ports()
        .leases()
        .acquire_or_renew(SCALER, "run-1", NOW_MS, TTL_MS)
        .await
        .unwrap();
    let store = fx.ports().scaler_state();

    let fresh = store.load(&lease).await.unwrap();
    store.save(&lease, &state()).await.unwrap();
    let loaded = store.load(&lease).await.unwrap();

    assert_eq!(fresh, ScalerState::default());
    assert_eq!(loaded, state());
}

pub async fn scaler_state_is_refused_to_a_run_that_lost_its_lease<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let leases = fx.ports().leases();
    let store = fx.ports().scaler_state();
    let old = leases
        .acquire_or_renew(SCALER, "run-1", NOW_MS, TTL_MS)
        .await
        .unwrap();
    store.save(&old, &state()).await.unwrap();
    let new = leases
        .acquire_or_renew(SCALER, "run-2", NOW_MS + TTL_MS + 1, TTL_MS)
        .await
        .unwrap();

    let stale_load = store.load(&old).await;
    let stale_save = store.save(&old, &ScalerState::default()).await;
    let inherited = store.load(&new).await.unwrap();

    assert_eq!(stale_load, Err(StateError::LeaseLost { epoch: old.epoch }));
    assert_eq!(stale_save, Err(StateError::LeaseLost { epoch: old.epoch }));
    assert_eq!(
        inherited,
        state(),
        "the next run goes on from the last saved state"
    );
}
