//! Per-caller rate limits: a counter per caller, kind of request and fixed time window, taken
//! with one conditional write, so that every API process (every Lambda instance) counts against
//! the same limit.

use std::future::Future;
use std::pin::Pin;

use crate::ports::StoreError;

/// A boxed future, so that the port can be held as a trait object beside the other ports.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What taking one request from a window came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    /// Counted: this many more fit in the window.
    Allowed { remaining: u32 },
    /// The window is full: the next one opens in this many milliseconds.
    Limited { retry_after_ms: u64 },
}

/// The window of length `window_ms` that `now_ms` falls in: its start and its end.
pub fn window_of(now_ms: u64, window_ms: u64) -> (u64, u64) {
    let window_ms = window_ms.max(1);
    let start = now_ms - now_ms % window_ms;
    (start, start + window_ms)
}

/// Counters of requests per key and window.
pub trait RateLimiter: Send + Sync + std::fmt::Debug {
    /// Counts one request of `key` in the window of `window_ms` that `now_ms` falls in, if
    /// fewer than `limit` were counted there; otherwise counts nothing and says when the next
    /// window opens. Windows of different keys are independent.
    fn take<'a>(
        &'a self,
        key: &'a str,
        limit: u32,
        window_ms: u64,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<RateDecision, StoreError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_aligned_and_end_where_the_next_starts() {
        assert_eq!(window_of(1_000, 1_000), (1_000, 2_000));
        assert_eq!(window_of(1_999, 1_000), (1_000, 2_000));
        assert_eq!(window_of(61_500, 60_000), (60_000, 120_000));
        assert_eq!(window_of(5, 0), (5, 6), "a zero window is one millisecond");
    }
}
