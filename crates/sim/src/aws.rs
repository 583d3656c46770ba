//! What the simulator assumes AWS takes and charges: one latency table and one price table, each
//! with its sources. Figures marked *assumed* are this project's estimates where no published
//! measurement was at hand; they are the first thing to replace with a measurement from a
//! deployed stack (CloudWatch's `SuccessfulRequestLatency`, Lambda's `Duration`).

use std::collections::HashMap;

use titus_memory::{LatencyModel, Percentiles};

const fn ms(p50_ms: f64, p99_ms: f64) -> Percentiles {
    Percentiles { p50_ms, p99_ms }
}

/// Where the latency figures come from.
pub const LATENCY_SOURCES: &str = "DynamoDB PutItem p50 8 ms and TransactWriteItems p50 25-32 ms, \
p99 95 ms: A. DeBrie, \"DynamoDB Transactions Performance Testing\" (alexdebrie.com, 2020), as \
quoted in issue 17; DynamoDB's \"single-digit millisecond\" reads: the DynamoDB developer guide; \
every other figure assumed (SQS, EventBridge, Lambda and Step Functions overheads)";

/// The latency of each AWS request the in-process ports meter, by operation name.
pub fn latency_table() -> HashMap<&'static str, Percentiles> {
    HashMap::from([
        // DynamoDB: reads single-digit ms; writes per DeBrie; transactions per DeBrie (25 items).
        ("DynamoDB.GetItem", ms(5.0, 20.0)),
        ("DynamoDB.BatchGetItem", ms(9.0, 35.0)),
        ("DynamoDB.Query", ms(8.0, 30.0)),
        ("DynamoDB.Scan", ms(15.0, 60.0)),
        ("DynamoDB.PutItem", ms(8.0, 30.0)),
        ("DynamoDB.UpdateItem", ms(8.0, 30.0)),
        ("DynamoDB.DeleteItem", ms(8.0, 30.0)),
        ("DynamoDB.BatchWriteItem", ms(15.0, 60.0)),
        ("DynamoDB.TransactWriteItems", ms(28.0, 95.0)),
        ("DynamoDB.TransactGetItems", ms(15.0, 60.0)),
        // SQS (assumed).
        ("SQS.SendMessage", ms(8.0, 30.0)),
        ("SQS.SendMessageBatch", ms(10.0, 40.0)),
        ("SQS.ReceiveMessage", ms(8.0, 30.0)),
        ("SQS.DeleteMessage", ms(6.0, 25.0)),
        ("SQS.DeleteMessageBatch", ms(8.0, 30.0)),
        ("SQS.ChangeMessageVisibility", ms(6.0, 25.0)),
        ("SQS.GetQueueUrl", ms(5.0, 20.0)),
        ("SQS.GetQueueAttributes", ms(5.0, 20.0)),
        ("SQS.CreateQueue", ms(40.0, 150.0)),
        ("SQS.SetQueueAttributes", ms(20.0, 80.0)),
        // EventBridge (assumed).
        ("EventBridge.PutEvents", ms(15.0, 60.0)),
    ])
}

/// For any request the table does not name (assumed).
pub const OTHER_REQUEST: Percentiles = ms(10.0, 40.0);

/// The overheads outside the port calls (assumed).
pub mod overhead {
    use super::{ms, Percentiles};
    /// A Step Functions Task state invoking a warm Lambda and taking its result back.
    pub const STATE_MACHINE_TICK: Percentiles = ms(25.0, 80.0);
    /// The idle tick's Wait state (`Seconds: 1` in the scheduler loop).
    pub const IDLE_WAIT_MS: u64 = 1_000;
    /// Starting a new run of the loop (a schedule's StartExecution, an Express start).
    pub const STATE_MACHINE_START: Percentiles = ms(60.0, 200.0);
    /// API Gateway (HTTP API, IAM) in front of a warm Lambda.
    pub const API_GATEWAY: Percentiles = ms(12.0, 45.0);
    /// Lambda's SQS event source handing a batch to a warm function.
    pub const SQS_EVENT_SOURCE: Percentiles = ms(20.0, 90.0);
}

/// The model the world draws from, seeded.
pub fn latency_model(seed: u64) -> LatencyModel {
    LatencyModel::new(latency_table(), OTHER_REQUEST, seed)
}

/// List prices, us-east-1, dollars.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prices {
    pub dynamodb_per_million_write_units: f64,
    pub dynamodb_per_million_read_units: f64,
    pub sqs_per_million_requests: f64,
    pub lambda_per_million_requests: f64,
    /// arm64.
    pub lambda_per_gb_second: f64,
    pub step_functions_express_per_million_requests: f64,
    pub step_functions_express_per_gb_second: f64,
    pub api_gateway_http_per_million_requests: f64,
    pub eventbridge_per_million_events: f64,
}

/// The date and sources of [`PRICES`].
pub const PRICES_AS_OF: &str =
    "list prices of us-east-1 as published on aws.amazon.com/{dynamodb,sqs,\
lambda,step-functions,api-gateway,eventbridge}/pricing, read 2026-12 (DynamoDB on-demand after \
its November 2024 reduction); no free tier";

pub const PRICES: Prices = Prices {
    dynamodb_per_million_write_units: 0.625,
    dynamodb_per_million_read_units: 0.125,
    sqs_per_million_requests: 0.40,
    lambda_per_million_requests: 0.20,
    lambda_per_gb_second: 0.000_013_333_4,
    step_functions_express_per_million_requests: 1.00,
    step_functions_express_per_gb_second: 0.000_016_67,
    api_gateway_http_per_million_requests: 1.00,
    eventbridge_per_million_events: 1.00,
};

/// The memory of each function, as the CDK app sets it (`infra/lib/titus-stack.ts`).
pub mod memory_mb {
    pub const API: f64 = 512.0;
    pub const SCHEDULER: f64 = 1024.0;
    pub const STATUS: f64 = 256.0;
    pub const RECONCILER: f64 = 512.0;
    /// An Express execution is billed in 64 MB steps; the loop's state is small.
    pub const STATE_MACHINE: f64 = 64.0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_latency_is_positive_with_a_tail_at_least_its_median() {
        for (request, p) in latency_table() {
            assert!(p.p50_ms > 0.0 && p.p99_ms >= p.p50_ms, "{request} {p:?}");
            assert!(request.contains('.'), "{request} names its service");
        }
    }
}
