//! The world's clock: time that moves only when a test or a simulation moves it, shared by every
//! clone, so that visibility timeouts and index lag are measured on the same time as the
//! `now_ms` the use cases read from the `Clock` port. A simulation can also have it follow
//! tokio's clock ([`ManualClock::follow_tokio_time`]), which a paused runtime moves only as its
//! timers fire.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use titus_core::ports::Clock;

/// Where a [`ManualClock`] starts unless told otherwise: 2025-11-24T16:00:00Z.
pub const DEFAULT_START_MS: u64 = 1_764_000_000_000;

/// A settable, advanceable clock; clones share one time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now_ms: Arc<AtomicU64>,
    /// Once set: the time is `now_ms` plus tokio's time since this instant.
    followed_from: Arc<OnceLock<tokio::time::Instant>>,
}

impl ManualClock {
    pub fn new(start_ms: u64) -> ManualClock {
        ManualClock {
            now_ms: Arc::new(AtomicU64::new(start_ms)),
            followed_from: Arc::new(OnceLock::new()),
        }
    }

    /// From now on the time also moves with tokio's clock (a paused runtime's virtual time in a
    /// simulation); `set` and `advance` still move it on top of that.
    pub fn follow_tokio_time(&self) {
        let _ = self.followed_from.set(tokio::time::Instant::now());
    }

    fn followed_ms(&self) -> u64 {
        self.followed_from.get().map_or(0, |from| {
            u64::try_from(from.elapsed().as_millis()).unwrap_or(u64::MAX)
        })
    }

    /// Sets the time. Moving it back is allowed (a test of a clock that jumped); index updates
    /// already due stay applied.
    pub fn set(&self, now_ms: u64) {
        self.now_ms
            .store(now_ms.saturating_sub(self.followed_ms()), Ordering::SeqCst);
    }

    /// Moves the time on by `by_ms` and returns the new time.
    pub fn advance_ms(&self, by_ms: u64) -> u64 {
        self.now_ms
            .fetch_add(by_ms, Ordering::SeqCst)
            .saturating_add(by_ms)
            .saturating_add(self.followed_ms())
    }

    /// Moves the time on by `by` (whole milliseconds) and returns the new time.
    pub fn advance(&self, by: Duration) -> u64 {
        self.advance_ms(u64::try_from(by.as_millis()).unwrap_or(u64::MAX))
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new(DEFAULT_START_MS)
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms
            .load(Ordering::SeqCst)
            .saturating_add(self.followed_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_one_time_that_moves_only_when_told() {
        let clock = ManualClock::new(1_000);
        let other = clock.clone();

        other.advance(Duration::from_millis(250));
        clock.advance_ms(5);

        assert_eq!(clock.now_ms(), 1_255);
        assert_eq!(other.now_ms(), 1_255);
        other.set(10);
        assert_eq!(clock.now_ms(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_clock_following_tokio_time_moves_with_a_paused_runtimes_timers() {
        let clock = ManualClock::new(1_000);
        clock.follow_tokio_time();
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(clock.now_ms(), 1_040);
        clock.advance_ms(5);
        assert_eq!(clock.now_ms(), 1_045);
        clock.set(2_000);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(clock.now_ms(), 2_010);
    }
}
