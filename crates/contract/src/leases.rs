//! The scheduler's lease: renewed by its owner at the same epoch, taken by another only once it
//! expired or was released, at the next epoch.

use titus_core::ports::{LeaseError, LeaseStore};
use titus_core::Ports;

use crate::fixtures::{LEASE, NOW_MS, TTL_MS};
use crate::{Fixture, Harness};

pub async fn a_free_lease_is_taken_at_epoch_1_and_renewed_by_its_owner_at_the_same_epoch<
    H: Harness,
>(
    h: &H,
) {
    let fx = h.fresh().await;
    let leases = fx.ports().leases();

    let first = leases
        .acquire_or_renew(LEASE, "a", NOW_MS, TTL_MS)
        .await
        .unwrap();
    let renewed = leases
        .acquire_or_renew(LEASE, "a", NOW_MS + 5_000, TTL_MS)
        .await
        .unwrap();
    // Lapsed but not taken: the owner's epoch is still the newest.
    let lapsed = leases
        .acquire_or_renew(LEASE, "a", NOW_MS + 60_000, TTL_MS)
        .await
        .unwrap();

    assert_eq!((first.owner.as_str(), first.epoch), ("a", 1));
    assert_eq!(first.expires_at_ms, NOW_MS + TTL_MS);
    assert_eq!(renewed.epoch, 1, "renewal keeps the epoch");
    assert_eq!(renewed.expires_at_ms, NOW_MS + 5_000 + TTL_MS);
    assert_eq!(lapsed.epoch, 1);
}

pub async fn a_held_lease_is_refused_to_others_until_it_expires_then_taken_at_a_new_epoch<
    H: Harness,
>(
    h: &H,
) {
    let fx = h.fresh().await;
    let leases = fx.ports().leases();
    leases
        .acquire_or_renew(LEASE, "a", NOW_MS, TTL_MS)
        .await
        .unwrap();

    let refused = leases
        .acquire_or_renew(LEASE, "b", NOW_MS + TTL_MS - 1, TTL_MS)
        .await;
    let taken = leases
        .acquire_or_renew(LEASE, "b", NOW_MS + TTL_MS + 1, TTL_MS)
        .await
        .unwrap();
    let old_owner = leases
        .acquire_or_renew(LEASE, "a", NOW_MS + TTL_MS + 2, TTL_MS)
        .await;
    let other_name = leases
        .acquire_or_renew("scaler", "a", NOW_MS + TTL_MS + 2, TTL_MS)
        .await
        .unwrap();

    assert_eq!(
        refused,
        Err(LeaseError::HeldByOther {
            name: LEASE.to_owned(),
            owner: "a".to_owned(),
            epoch: 1,
            expires_at_ms: NOW_MS + TTL_MS,
        })
    );
    assert_eq!(
        (taken.owner.as_str(), taken.epoch),
        ("b", 2),
        "a new owner, a new epoch"
    );
    assert!(
        matches!(&old_owner, Err(LeaseError::HeldByOther { owner, epoch: 2, .. }) if owner == "b"),
        "{old_owner:?}"
    );
    assert_eq!(other_name.epoch, 1, "each lease has its own epoch");
}

pub async fn a_released_lease_is_taken_at_once_and_a_stale_release_changes_nothing<H: Harness>(
    h: &H,
) {
    let fx = h.fresh().await;
    let leases = fx.ports().leases();
    let held = leases
        .acquire_or_renew(LEASE, "a", NOW_MS, TTL_MS)
        .await
        .unwrap();

    leases.release(&held).await.unwrap();
    let taken = leases
        .acquire_or_renew(LEASE, "b", NOW_MS + 1, TTL_MS)
        .await
        .unwrap();
    let stale_release = leases.release(&held).await;
    let third = leases
        .acquire_or_renew(LEASE, "c", NOW_MS + 2, TTL_MS)
        .await;

    assert_eq!((taken.owner.as_str(), taken.epoch), ("b", 2));
    assert_eq!(
        stale_release,
        Ok(()),
        "releasing what another holds is not an error"
    );
    assert!(
        matches!(&third, Err(LeaseError::HeldByOther { owner, .. }) if owner == "b"),
        "the stale release left b holding it: {third:?}"
    );
}
