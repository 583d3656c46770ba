//! The bill: what a run's requests and request units cost at [`crate::aws::PRICES`], per
//! million tasks, and what an idle stage costs a day.

use titus_memory::MeterSnapshot;

use crate::aws::{memory_mb, Prices};
use crate::run::Report;

/// Dollars of one meter reading: DynamoDB units and SQS requests.
pub fn store_dollars(meter: &MeterSnapshot, prices: &Prices) -> f64 {
    (meter.write_request_units + meter.index_write_request_units)
        * prices.dynamodb_per_million_write_units
        / 1e6
        + meter.read_request_units * prices.dynamodb_per_million_read_units / 1e6
        + meter.sqs_billed_requests.max(meter.sqs_requests()) as f64
            * prices.sqs_per_million_requests
            / 1e6
}

/// Lambda dollars for `invocations` of `memory_mb` lasting `ms` each.
pub fn lambda_dollars(invocations: f64, ms: f64, memory_mb: f64, prices: &Prices) -> f64 {
    invocations * prices.lambda_per_million_requests / 1e6
        + invocations * (ms / 1000.0) * (memory_mb / 1024.0) * prices.lambda_per_gb_second
}

/// What one event of the feed costs: its two items (its job's feed and every job's, 1 write
/// unit each at under 1 KB) and its PutEvents entry. The feed is fed from the tables' streams,
/// which the in-process world has not, so its cost is counted here per state change.
pub fn event_dollars(events: f64, prices: &Prices) -> f64 {
    events * (2.0 * prices.dynamodb_per_million_write_units + prices.eventbridge_per_million_events)
        / 1e6
}

/// A run's bill, per million tasks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TaskBill {
    pub dynamodb_and_sqs: f64,
    pub lambda: f64,
    pub api_gateway: f64,
    pub events: f64,
    pub total: f64,
    pub write_units_per_task: f64,
    pub read_units_per_task: f64,
}

pub fn per_million_tasks(report: &Report, prices: &Prices) -> TaskBill {
    let tasks = report.tasks.max(1) as f64;
    let scale = 1e6 / tasks;
    let store = store_dollars(&report.meter, prices);
    let tick_ms = report.projected_ms as f64 / report.ticks.max(1) as f64;
    let lambda = lambda_dollars(report.ticks as f64, tick_ms, memory_mb::SCHEDULER, prices)
        + lambda_dollars(
            report.status_batches as f64,
            300.0,
            memory_mb::STATUS,
            prices,
        )
        + lambda_dollars(report.api_requests as f64, 50.0, memory_mb::API, prices);
    let api_gateway =
        report.api_requests as f64 * prices.api_gateway_http_per_million_requests / 1e6;
    // Accepted, Launched, StartInitiated, Started: four state changes a started task.
    let events = event_dollars(4.0 * tasks, prices);
    let total = store + lambda + api_gateway + events;
    TaskBill {
        dynamodb_and_sqs: store * scale,
        lambda: lambda * scale,
        api_gateway: api_gateway * scale,
        events: events * scale,
        total: total * scale,
        write_units_per_task: (report.meter.write_request_units
            + report.meter.index_write_request_units)
            / tasks,
        read_units_per_task: report.meter.read_request_units / tasks,
    }
}

/// An idle stage's bill a day, for the agents of `report` (a run with no jobs, or the idle
/// ticks after one).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IdleBill {
    pub agents: u32,
    pub ticks_per_day: f64,
    pub scheduler: f64,
    pub state_machine: f64,
    pub heartbeats: f64,
    /// The agents' long polls of their own queues (one ReceiveMessage each per 20 s).
    pub agent_polls: f64,
    pub total: f64,
}

const DAY_SECS: f64 = 86_400.0;

pub fn idle_per_day(report: &Report, prices: &Prices) -> IdleBill {
    // An idle loop: the tick, the 1 s Wait, the Task state's overhead.
    let cycle_ms = report.idle_tick_ms + crate::aws::overhead::IDLE_WAIT_MS as f64 + 25.0;
    let ticks_per_day = DAY_SECS * 1000.0 / cycle_ms;
    let scheduler = ticks_per_day
        * (store_dollars(&report.idle_tick, prices)
            + lambda_dollars(1.0, report.idle_tick_ms, memory_mb::SCHEDULER, prices));
    // One long run at a time (started every minute; the runs that find the lease held end at
    // once): a day of 64 MB execution, and 1,440 starts.
    let state_machine = DAY_SECS
        * (memory_mb::STATE_MACHINE / 1024.0)
        * prices.step_functions_express_per_gb_second
        + 1_440.0 * prices.step_functions_express_per_million_requests / 1e6;
    let agents = f64::from(report.agents);
    let heartbeats =
        agents * (DAY_SECS / 30.0) * store_dollars(&report.heartbeat_per_agent_30s, prices);
    let agent_polls = agents * (DAY_SECS / 20.0) * prices.sqs_per_million_requests / 1e6;
    IdleBill {
        agents: report.agents,
        ticks_per_day,
        scheduler,
        state_machine,
        heartbeats,
        agent_polls,
        total: scheduler + state_machine + heartbeats + agent_polls,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::PRICES;

    #[test]
    fn a_million_write_units_cost_the_list_price() {
        let meter = MeterSnapshot {
            write_request_units: 1e6,
            ..MeterSnapshot::default()
        };
        assert!((store_dollars(&meter, &PRICES) - 0.625).abs() < 1e-9);
        // A million 1 GB-second invocations.
        let lambda = lambda_dollars(1e6, 1000.0, 1024.0, &PRICES);
        assert!((lambda - (0.20 + 13.3334)).abs() < 1e-3, "{lambda}");
    }
}
