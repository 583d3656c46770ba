//! The rate limiter's behaviours, for every implementation of `RateLimiter`. Not part of the
//! ports bundle ([`crate::Harness`]): the API holds the limiter beside it, so each implementation
//! runs [`rate_limits`] on a limiter of its own.

use titus_core::ports::{RateDecision, RateLimiter};

/// A window of one minute, starting at a round minute so that the test's times stay inside it.
const WINDOW_MS: u64 = 60_000;
const START_MS: u64 = 1_764_000_000_000 - 1_764_000_000_000 % WINDOW_MS;

/// `limit` requests fit in a window, the next is refused until the window ends, other keys and
/// the next window count afresh, and a limit of 0 refuses everything.
pub async fn rate_limits(limiter: &dyn RateLimiter) {
    let key = format!("caller-{}#requests", uuid::Uuid::new_v4().simple());
    let other = format!("{key}-other");

    let mut decisions = Vec::new();
    for i in 0..4 {
        decisions.push(
            limiter
                .take(&key, 3, WINDOW_MS, START_MS + 1_000 * i)
                .await
                .unwrap(),
        );
    }
    let other_key = limiter
        .take(&other, 3, WINDOW_MS, START_MS + 5_000)
        .await
        .unwrap();
    let still_full = limiter
        .take(&key, 3, WINDOW_MS, START_MS + 59_999)
        .await
        .unwrap();
    let next_window = limiter
        .take(&key, 3, WINDOW_MS, START_MS + WINDOW_MS)
        .await
        .unwrap();
    let closed = limiter
        .take(&other, 0, WINDOW_MS, START_MS + 10_000)
        .await
        .unwrap();

    assert_eq!(
        decisions,
        [
            RateDecision::Allowed { remaining: 2 },
            RateDecision::Allowed { remaining: 1 },
            RateDecision::Allowed { remaining: 0 },
            RateDecision::Limited {
                retry_after_ms: 57_000
            },
        ]
    );
    assert_eq!(other_key, RateDecision::Allowed { remaining: 2 });
    assert_eq!(still_full, RateDecision::Limited { retry_after_ms: 1 });
    assert_eq!(next_window, RateDecision::Allowed { remaining: 2 });
    assert_eq!(
        closed,
        RateDecision::Limited {
            retry_after_ms: 50_000
        }
    );
}

/// Concurrent takes of one key never let more than the limit through.
pub async fn concurrent_takes_respect_the_limit(limiter: &dyn RateLimiter) {
    let key = format!("caller-{}#creates", uuid::Uuid::new_v4().simple());
    let takes = (0..12).map(|_| limiter.take(&key, 5, WINDOW_MS, START_MS + 30_000));
    let decisions = futures::future::join_all(takes).await;

    let allowed = decisions
        .iter()
        .filter(|d| matches!(d, Ok(RateDecision::Allowed { .. })))
        .count();
    assert_eq!(allowed, 5, "{decisions:?}");
    assert!(decisions.iter().all(Result::is_ok), "{decisions:?}");
}
