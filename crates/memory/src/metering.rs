//! What the in-process world's calls would have cost on AWS: DynamoDB's request units by its
//! rules, and the requests of every AWS operation, readable as a snapshot at any time.
//!
//! DynamoDB's rules (on-demand): a strongly consistent read is one read request unit (RRU) per
//! 4 KB of item, an eventually consistent one (every index read) half that; a write is one write
//! request unit (WRU) per 1 KB, of the larger of the item before and after; a transactional read
//! or write costs twice as much; an index whose entry a write adds, changes or removes costs the
//! write again for that index. A Query's or Scan's units count the whole page read, not each item.
//! A write refused by its condition still costs its units.

use std::collections::BTreeMap;

/// Bytes of item per read request unit.
pub const READ_UNIT_BYTES: usize = 4 * 1024;
/// Bytes of item per write request unit.
pub const WRITE_UNIT_BYTES: usize = 1024;
/// Bytes of message per billed SQS request (a request of up to 256 KB bills as one per 64 KB).
pub const SQS_BILLING_CHUNK_BYTES: usize = 64 * 1024;

/// The requests and units metered so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MeterSnapshot {
    /// DynamoDB read request units, tables and indexes.
    pub read_request_units: f64,
    /// DynamoDB write request units on tables.
    pub write_request_units: f64,
    /// DynamoDB write request units spent keeping global secondary indexes up to date.
    pub index_write_request_units: f64,
    /// Requests by AWS operation (`DynamoDB.Query`, `SQS.SendMessageBatch`, `EC2.CreateFleet`).
    pub requests: BTreeMap<String, u64>,
    /// SQS requests as billed: one per 64 KB of payload of each call.
    pub sqs_billed_requests: u64,
    /// Calls refused by an injected fault, by port operation.
    pub faults_injected: BTreeMap<String, u64>,
}

impl MeterSnapshot {
    /// Requests of one operation (`DynamoDB.TransactWriteItems`).
    pub fn requests_of(&self, operation: &str) -> u64 {
        self.requests.get(operation).copied().unwrap_or(0)
    }

    /// Every DynamoDB request.
    pub fn dynamodb_requests(&self) -> u64 {
        self.service_requests("DynamoDB.")
    }

    /// Every SQS request (API calls, not billed chunks).
    pub fn sqs_requests(&self) -> u64 {
        self.service_requests("SQS.")
    }

    fn service_requests(&self, prefix: &str) -> u64 {
        self.requests
            .iter()
            .filter(|(op, _)| op.starts_with(prefix))
            .map(|(_, n)| n)
            .sum()
    }

    /// What happened between `earlier` and this snapshot.
    pub fn since(&self, earlier: &MeterSnapshot) -> MeterSnapshot {
        let minus = |now: &BTreeMap<String, u64>, then: &BTreeMap<String, u64>| {
            now.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.saturating_sub(then.get(k).copied().unwrap_or(0)),
                    )
                })
                .filter(|(_, v)| *v > 0)
                .collect()
        };
        MeterSnapshot {
            read_request_units: self.read_request_units - earlier.read_request_units,
            write_request_units: self.write_request_units - earlier.write_request_units,
            index_write_request_units: self.index_write_request_units
                - earlier.index_write_request_units,
            requests: minus(&self.requests, &earlier.requests),
            sqs_billed_requests: self
                .sqs_billed_requests
                .saturating_sub(earlier.sqs_billed_requests),
            faults_injected: minus(&self.faults_injected, &earlier.faults_injected),
        }
    }
}

/// How a read is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Consistency {
    Strong,
    /// Every index read.
    Eventual,
}

/// The running totals. Read units are kept in halves and write units whole, so sums are exact.
#[derive(Debug, Default)]
pub(crate) struct Meter {
    read_half_units: u64,
    write_units: u64,
    index_write_units: u64,
    requests: BTreeMap<&'static str, u64>,
    sqs_billed_requests: u64,
    faults_injected: BTreeMap<String, u64>,
    /// The requests of the current port call, in order.
    call_requests: Vec<&'static str>,
}

fn units(bytes: usize, per: usize) -> u64 {
    (bytes.max(1).div_ceil(per)) as u64
}

impl Meter {
    pub(crate) fn request(&mut self, operation: &'static str) {
        *self.requests.entry(operation).or_default() += 1;
        self.call_requests.push(operation);
    }

    /// A port call begins: the requests it makes are collected for its latency.
    pub(crate) fn start_call(&mut self) {
        self.call_requests.clear();
    }

    /// The requests of the port call that began last.
    pub(crate) fn take_call_requests(&mut self) -> Vec<&'static str> {
        std::mem::take(&mut self.call_requests)
    }

    /// A read of `bytes` in one go (one item, or one page of a Query or Scan).
    pub(crate) fn read(&mut self, bytes: usize, consistency: Consistency) {
        let halves = match consistency {
            Consistency::Strong => 2,
            Consistency::Eventual => 1,
        };
        self.read_half_units += halves * units(bytes, READ_UNIT_BYTES);
    }

    /// A write of an item that was `before` bytes and is `after` bytes (0 when absent).
    pub(crate) fn write(&mut self, before: usize, after: usize, transactional: bool) {
        let factor = if transactional { 2 } else { 1 };
        self.write_units += factor * units(before.max(after), WRITE_UNIT_BYTES);
    }

    /// A write to one index: an entry of `bytes` added, changed or removed.
    pub(crate) fn index_write(&mut self, bytes: usize) {
        self.index_write_units += units(bytes, WRITE_UNIT_BYTES);
    }

    /// One SQS call carrying `payload_bytes` of messages.
    pub(crate) fn sqs(&mut self, operation: &'static str, payload_bytes: usize) {
        self.request(operation);
        self.sqs_billed_requests += units(payload_bytes, SQS_BILLING_CHUNK_BYTES);
    }

    pub(crate) fn fault(&mut self, operation: &str) {
        *self
            .faults_injected
            .entry(operation.to_owned())
            .or_default() += 1;
    }

    pub(crate) fn snapshot(&self) -> MeterSnapshot {
        MeterSnapshot {
            read_request_units: self.read_half_units as f64 / 2.0,
            write_request_units: self.write_units as f64,
            index_write_request_units: self.index_write_units as f64,
            requests: self
                .requests
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            sqs_billed_requests: self.sqs_billed_requests,
            faults_injected: self.faults_injected.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cost_a_unit_per_4_kb_and_half_that_when_eventually_consistent() {
        let mut meter = Meter::default();

        meter.read(100, Consistency::Strong);
        meter.read(4 * 1024 + 1, Consistency::Strong);
        meter.read(9 * 1024, Consistency::Eventual);

        assert_eq!(meter.snapshot().read_request_units, 1.0 + 2.0 + 1.5);
    }

    #[test]
    fn writes_cost_a_unit_per_kb_of_the_larger_image_and_twice_in_a_transaction() {
        let mut meter = Meter::default();

        meter.write(0, 500, false);
        meter.write(3 * 1024, 1024, false);
        meter.write(0, 1500, true);

        assert_eq!(meter.snapshot().write_request_units, 1.0 + 3.0 + 4.0);
    }

    #[test]
    fn a_snapshot_since_another_holds_only_what_happened_between() {
        let mut meter = Meter::default();
        meter.request("DynamoDB.GetItem");
        let before = meter.snapshot();
        meter.request("DynamoDB.GetItem");
        meter.sqs("SQS.SendMessageBatch", 130 * 1024);

        let delta = meter.snapshot().since(&before);

        assert_eq!(delta.requests_of("DynamoDB.GetItem"), 1);
        assert_eq!(delta.sqs_requests(), 1);
        assert_eq!(delta.sqs_billed_requests, 3);
    }
}
