//! Latencies for the AWS requests of port calls, so that a simulation over the in-process world
//! can tell how long its steps would take on AWS. A model maps each request (`DynamoDB.Query`,
//! `SQS.SendMessageBatch`) to a distribution and draws from it with a seeded generator: the same
//! seed gives the same draws in the same order. The distributions are the caller's (the
//! simulator keeps its table of published figures).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A log-normal latency given by its median and 99th percentile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The standard normal's 99th percentile.
const Z99: f64 = 2.326_347_874;

impl Percentiles {
    /// The latency at standard normal deviate `z`.
    pub fn at(&self, z: f64) -> f64 {
        let sigma = (self.p99_ms.max(self.p50_ms) / self.p50_ms.max(1e-9)).ln() / Z99;
        self.p50_ms * (sigma * z).exp()
    }
}

/// Request → distribution, with one for requests the table does not name.
#[derive(Clone)]
pub struct LatencyModel {
    table: Arc<HashMap<&'static str, Percentiles>>,
    otherwise: Percentiles,
    state: Arc<AtomicU64>,
}

impl fmt::Debug for LatencyModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencyModel")
            .field("requests", &self.table.len())
            .field("otherwise", &self.otherwise)
            .finish_non_exhaustive()
    }
}

impl LatencyModel {
    pub fn new(
        table: HashMap<&'static str, Percentiles>,
        otherwise: Percentiles,
        seed: u64,
    ) -> LatencyModel {
        LatencyModel {
            table: Arc::new(table),
            otherwise,
            state: Arc::new(AtomicU64::new(seed | 1)),
        }
    }

    /// A uniform draw in (0, 1): splitmix64 over a shared counter, so concurrent draws never
    /// repeat one another.
    fn uniform(&self) -> f64 {
        let mut z = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// A standard normal deviate (Box–Muller).
    fn normal(&self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// One draw of `request`'s latency.
    pub fn latency(&self, request: &str) -> Duration {
        let dist = self.table.get(request).copied().unwrap_or(self.otherwise);
        self.draw(dist)
    }

    /// One draw from `dist`, with this model's generator (for latencies outside the ports:
    /// a Lambda invocation, a state machine's transition).
    pub fn draw(&self, dist: Percentiles) -> Duration {
        Duration::from_secs_f64(dist.at(self.normal()).max(0.0) / 1000.0)
    }

    /// The distribution of `request`.
    pub fn percentiles(&self, request: &str) -> Percentiles {
        self.table.get(request).copied().unwrap_or(self.otherwise)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_follow_the_given_median_and_99th_percentile_and_repeat_with_the_seed() {
        let table = HashMap::from([(
            "DynamoDB.PutItem",
            Percentiles {
                p50_ms: 8.0,
                p99_ms: 30.0,
            },
        )]);
        let otherwise = Percentiles {
            p50_ms: 1.0,
            p99_ms: 1.0,
        };
        let model = LatencyModel::new(table.clone(), otherwise, 7);
        let mut draws: Vec<f64> = (0..20_000)
            .map(|_| model.latency("DynamoDB.PutItem").as_secs_f64() * 1000.0)
            .collect();
        draws.sort_by(f64::total_cmp);
        let (p50, p99) = (draws[10_000], draws[19_800]);
        assert!((7.5..8.5).contains(&p50), "p50 {p50}");
        assert!((26.0..34.0).contains(&p99), "p99 {p99}");
        let (one, other) = (
            LatencyModel::new(table.clone(), otherwise, 11),
            LatencyModel::new(table, otherwise, 11),
        );
        let draws = |m: &LatencyModel| -> Vec<Duration> {
            (0..5).map(|_| m.latency("DynamoDB.PutItem")).collect()
        };
        assert_eq!(draws(&one), draws(&other));
        let first = LatencyModel::new(HashMap::new(), otherwise, 7);
        assert_eq!(first.latency("SQS.SendMessage"), Duration::from_millis(1));
    }
}
