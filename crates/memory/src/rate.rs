//! Rate limits in process: the same fixed windows as the DynamoDB adapter's counters.

use std::collections::HashMap;
use std::sync::Mutex;

use titus_core::ports::rate::BoxFuture;
use titus_core::ports::{window_of, RateDecision, RateLimiter, StoreError};

/// Counters per key and window; windows that have ended are dropped as new ones open.
#[derive(Debug, Default)]
pub struct MemoryRateLimiter {
    counts: Mutex<HashMap<String, (u64, u32)>>,
}

impl MemoryRateLimiter {
    pub fn new() -> MemoryRateLimiter {
        MemoryRateLimiter::default()
    }
}

impl RateLimiter for MemoryRateLimiter {
    fn take<'a>(
        &'a self,
        key: &'a str,
        limit: u32,
        window_ms: u64,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<RateDecision, StoreError>> {
        Box::pin(async move {
            let (start, end) = window_of(now_ms, window_ms);
            let mut counts = self
                .counts
                .lock()
                .map_err(|_| StoreError::Internal("the rate counters' lock is poisoned".into()))?;
            counts.retain(|_, (window_end, _)| *window_end > now_ms);
            let (_, count) = counts.entry(format!("{key}#{start}")).or_insert((end, 0));
            if *count >= limit {
                return Ok(RateDecision::Limited {
                    retry_after_ms: end - now_ms,
                });
            }
            *count += 1;
            Ok(RateDecision::Allowed {
                remaining: limit - *count,
            })
        })
    }
}
