//! AWS calls per placed task: the scheduler's ticks against the emulator, with every request
//! its DynamoDB and SQS clients send counted by an SDK interceptor.
//!
//! A fresh stage gets 20 agents and 500 pending tasks (10 jobs of 50, their tasks written before
//! counting starts, as a tick's materializing step would write them); ticks run until every
//! task is placed, once with at most 100 tasks per tick and once with the default 500, then
//! five idle ticks (one redispatch cycle). The baseline, from the same run's writes, is the naive
//! cost: one PutItem per task, one UpdateItem per task on its agent, one SendMessage per task,
//! nothing batched.
//!
//! Write units are computed, not reported: moto answers ReturnConsumedCapacity with constants.
//! They follow DynamoDB's rules on the real items (sizes by DynamoDB's item-size rules, each item
//! rounded up to 1 KB; twice that in a transaction, ConditionCheck included; a Put is charged
//! the larger of the old and new item), plus the index writes of the tasks table's sparse
//! all-projecting indexes (an entry added, removed or rewritten costs its item's size in 1 KB
//! units; a changed index key costs a removal and an addition). SQS's billed requests count
//! each request's payload in 64 KiB chunks. Requests answered with an error are listed: the
//! first tick's lease renewal is one (there is no lease yet; the tick then takes it over).
//!
//! Run with `cargo bench -p titus-scheduler --bench tick_cost` against the emulator
//! (`AWS_ENDPOINT_URL`, see `scripts/env.sh`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use aws_sdk_dynamodb::config::interceptors::{
    BeforeSerializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
    FinalizerInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::operation::delete_item::DeleteItemInput;
use aws_sdk_dynamodb::operation::put_item::PutItemInput;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsInput;
use aws_sdk_dynamodb::operation::update_item::UpdateItemInput;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::operation::send_message::SendMessageInput;
use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchInput;
use aws_smithy_types::config_bag::{Storable, StoreReplace};
use titus_aws::resources::{attr, KeySchema, TableDef};
use titus_aws::{AwsClients, Names};
use titus_control::scheduler::{tick, TickInput, TickSummary, REDISPATCH_EVERY_TICKS};
use titus_control::{ControlPlane, SchedulerSettings, Settings};
use titus_core::ports::now_ms;

const AGENTS: usize = 20;
const JOBS: u32 = 10;
const TASKS_PER_JOB: u32 = 50;
/// Room for 32 tasks of the default 512 MB on each agent: all 500 fit.
const AGENT_MEMORY_MB: u64 = 16_384;
const TICK_LIMITS: [u32; 2] = [100, 500];

type Item = HashMap<String, AttributeValue>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteKind {
    Put,
    Update,
    Delete,
    ConditionCheck,
}

/// One item written (or condition-checked) by a request.
#[derive(Debug)]
struct Write {
    table: String,
    kind: WriteKind,
    transactional: bool,
    /// The new item for a Put, the key otherwise.
    item: Item,
}

/// Everything the counted clients sent.
#[derive(Debug, Default)]
struct Ledger {
    /// Requests (attempts) by service and operation.
    requests: BTreeMap<(String, String), u64>,
    writes: Vec<Write>,
    sqs_messages: u64,
    /// SQS requests as billed: each 64 KiB of a request's payload is one.
    sqs_billed: u64,
    /// Operations answered with an error (a lost conditional write included), by operation.
    failed: BTreeMap<String, u64>,
}

/// The operation a request was for, kept in its configuration bag until it ends (the request
/// itself is gone by then).
#[derive(Debug, Clone)]
struct Operation(String);

impl Storable for Operation {
    type Storer = StoreReplace<Self>;
}

/// Records each request on the clients it is installed on.
#[derive(Debug, Clone, Default)]
struct Recorder(Arc<Mutex<Ledger>>);

impl Recorder {
    fn take(&self) -> Ledger {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl Intercept for Recorder {
    fn name(&self) -> &'static str {
        "AwsCostRecorder"
    }

    fn read_before_execution(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let input = context.input();
        let mut ledger = self.0.lock().unwrap();
        let mut write = |table: &str, kind, transactional, item: &Item| {
            ledger.writes.push(Write {
                table: table.to_owned(),
                kind,
                transactional,
                item: item.clone(),
            });
        };
        if let Some(input) = input.downcast_ref::<TransactWriteItemsInput>() {
            for item in input.transact_items() {
                if let Some(put) = item.put() {
                    write(put.table_name(), WriteKind::Put, true, put.item());
                } else if let Some(update) = item.update() {
                    write(update.table_name(), WriteKind::Update, true, update.key());
                } else if let Some(delete) = item.delete() {
                    write(delete.table_name(), WriteKind::Delete, true, delete.key());
                } else if let Some(check) = item.condition_check() {
                    write(
                        check.table_name(),
                        WriteKind::ConditionCheck,
                        true,
                        check.key(),
                    );
                }
            }
        } else if let Some(put) = input.downcast_ref::<PutItemInput>() {
            write(
                put.table_name().unwrap_or_default(),
                WriteKind::Put,
                false,
                put.item().unwrap_or(&Item::new()),
            );
        } else if let Some(update) = input.downcast_ref::<UpdateItemInput>() {
            write(
                update.table_name().unwrap_or_default(),
                WriteKind::Update,
                false,
                update.key().unwrap_or(&Item::new()),
            );
        } else if let Some(delete) = input.downcast_ref::<DeleteItemInput>() {
            write(
                delete.table_name().unwrap_or_default(),
                WriteKind::Delete,
                false,
                delete.key().unwrap_or(&Item::new()),
            );
        } else if let Some(batch) = input.downcast_ref::<SendMessageBatchInput>() {
            let bytes: usize = batch.entries().iter().map(|e| e.message_body().len()).sum();
            ledger.sqs_messages += batch.entries().len() as u64;
            ledger.sqs_billed += bytes.div_ceil(64 * 1024).max(1) as u64;
        } else if let Some(send) = input.downcast_ref::<SendMessageInput>() {
            let bytes = send.message_body().unwrap_or_default().len();
            ledger.sqs_messages += 1;
            ledger.sqs_billed += bytes.div_ceil(64 * 1024).max(1) as u64;
        }
        Ok(())
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (service, operation) = operation_of(context.request());
        cfg.interceptor_state()
            .store_put(Operation(operation.clone()));
        *self
            .0
            .lock()
            .unwrap()
            .requests
            .entry((service, operation))
            .or_default() += 1;
        Ok(())
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(Err(_)) = context.output_or_error() {
            let operation = cfg
                .load::<Operation>()
                .map_or_else(|| "unsent".to_owned(), |o| o.0.clone());
            *self.0.lock().unwrap().failed.entry(operation).or_default() += 1;
        }
        Ok(())
    }
}

/// The service and operation of a request: both services speak AWS JSON here, which names them
/// in a header (`X-Amz-Target: DynamoDB_20120810.Query`).
fn operation_of(request: &aws_sdk_dynamodb::config::http::HttpRequest) -> (String, String) {
    let target = request
        .headers()
        .get("x-amz-target")
        .unwrap_or("unknown.unknown");
    let (service, operation) = target.split_once('.').unwrap_or(("unknown", target));
    let service = if service.starts_with("DynamoDB") {
        "DynamoDB"
    } else if service.starts_with("AmazonSQS") {
        "SQS"
    } else {
        service
    };
    (service.to_owned(), operation.to_owned())
}

/// The clients the scheduler uses, with the recorder on DynamoDB and SQS.
async fn recorded_clients(recorder: &Recorder) -> AwsClients {
    let config = titus_aws::clients::load_sdk_config().await;
    AwsClients {
        dynamodb: aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&config)
                .interceptor(recorder.clone())
                .build(),
        ),
        sqs: aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::config::Builder::from(&config)
                .interceptor(recorder.clone())
                .build(),
        ),
        ssm: aws_sdk_ssm::Client::new(&config),
        ec2: aws_sdk_ec2::Client::new(&config),
        logs: aws_sdk_cloudwatchlogs::Client::new(&config),
    }
}

/// An item's size by DynamoDB's rules: attribute names plus values.
fn item_size(item: &Item) -> usize {
    item.iter()
        .map(|(name, value)| name.len() + value_size(value))
        .sum()
}

fn value_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number_size(n),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| number_size(n)).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::L(v) => 3 + v.iter().map(|e| 1 + value_size(e)).sum::<usize>(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, e)| 1 + k.len() + value_size(e))
                .sum::<usize>()
        }
        _ => 0,
    }
}

/// A number takes one byte per two significant digits, plus one.
fn number_size(n: &str) -> usize {
    let digits: String = n.chars().filter(char::is_ascii_digit).collect();
    let significant = digits.trim_start_matches('0').trim_end_matches('0').len();
    significant.div_ceil(2) + 1
}

/// Write units of one item: each 1 KB or part of it.
fn units(size: usize) -> u64 {
    size.div_ceil(1024).max(1) as u64
}

/// The item's values of these key attributes; `None` when it lacks one (not in a sparse index).
fn key_values<'i>(schema: &KeySchema, item: &'i Item) -> Option<Vec<&'i AttributeValue>> {
    [Some(schema.partition_key), schema.sort_key]
        .into_iter()
        .flatten()
        .map(|k| item.get(k))
        .collect()
}

/// The item's primary key as one string (every key attribute is a string).
fn key_of(table: &TableDef, item: &Item) -> String {
    key_values(&table.key, item)
        .unwrap_or_default()
        .iter()
        .map(|v| v.as_s().map(String::as_str).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\u{0}")
}

/// Index write units of a Put that turns `before` into `after` on a table whose indexes project
/// every attribute.
fn index_units(table: &TableDef, before: Option<&Item>, after: &Item) -> u64 {
    table
        .global_secondary_indexes
        .iter()
        .map(|index| {
            let old = before.and_then(|b| key_values(&index.key, b));
            let new = key_values(&index.key, after);
            let old_units = before.map_or(0, |b| units(item_size(b)));
            match (old, new) {
                (None, None) => 0,
                (Some(_), None) => old_units,
                (None, Some(_)) => units(item_size(after)),
                (Some(old), Some(new)) if old != new => old_units + units(item_size(after)),
                (Some(_), Some(_)) => units(item_size(after)),
            }
        })
        .sum()
}

/// Write units of the ledger's writes: measured, and with every transaction item written on its
/// own (the naive baseline: each task's Put and an UpdateItem of its agent, no lease check).
#[derive(Debug, Default, Clone, Copy)]
struct WriteUnits {
    table: u64,
    index: u64,
    naive_table: u64,
    naive_index: u64,
    task_puts: u64,
}

async fn write_units(
    plain: &AwsClients,
    names: &Names,
    ledger: &Ledger,
    stored: &mut HashMap<(String, String), Item>,
) -> WriteUnits {
    let definitions = names.definitions();
    let table_of = |name: &str| {
        definitions
            .tables
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("a write to {name}, which is not one of the stage's"))
    };
    let mut total = WriteUnits::default();
    for write in &ledger.writes {
        let table = table_of(&write.table);
        let key = (write.table.clone(), key_of(table, &write.item));
        let factor = if write.transactional { 2 } else { 1 };
        if write.kind == WriteKind::Put {
            let before = stored.get(&key);
            let size = item_size(&write.item).max(before.map_or(0, item_size));
            let index = index_units(table, before, &write.item);
            total.table += factor * units(size);
            total.index += index;
            total.naive_table += units(size);
            total.naive_index += index;
            if write.transactional && write.table == names.tasks_table() {
                total.task_puts += 1;
                // The naive scheduler updates the task's agent once per task.
                if let Some(AttributeValue::S(agent)) = write.item.get(attr::AGENT_ID) {
                    let key = Item::from([(attr::AGENT_ID.to_owned(), s(agent))]);
                    let table = names.agents_table();
                    let agent = current_item(plain, stored, &table, agent, &key).await;
                    total.naive_table += units(item_size(&agent));
                }
            }
            stored.insert(key, write.item.clone());
            continue;
        }
        // Updates, deletes and checks carry only the key: the item's size is the stored one.
        let size = item_size(&current_item(plain, stored, &write.table, &key.1, &write.item).await);
        let index = match stored.get(&key) {
            Some(item) if write.kind == WriteKind::Update => index_units(table, Some(item), item),
            _ => 0,
        };
        total.table += factor * units(size);
        total.index += index;
        if !write.transactional {
            total.naive_table += units(size);
            total.naive_index += index;
        }
    }
    total
}

/// The item as this run last wrote it, or else as the table holds it now.
async fn current_item(
    plain: &AwsClients,
    stored: &mut HashMap<(String, String), Item>,
    table: &str,
    key_string: &str,
    key: &Item,
) -> Item {
    let cache_key = (table.to_owned(), key_string.to_owned());
    if let Some(item) = stored.get(&cache_key) {
        return item.clone();
    }
    let item = plain
        .dynamodb
        .get_item()
        .table_name(table)
        .set_key(Some(key.clone()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap_or_default();
    stored.insert(cache_key, item.clone());
    item
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

/// Every item of the stage's tasks table, as the ticks will find it.
async fn snapshot_tasks(plain: &AwsClients, names: &Names) -> HashMap<(String, String), Item> {
    let table = names.tasks_table();
    let mut items = HashMap::new();
    let mut start = None;
    loop {
        let page = plain
            .dynamodb
            .scan()
            .table_name(&table)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        for item in page.items() {
            if let Some(AttributeValue::S(id)) = item.get(attr::TASK_ID) {
                items.insert((table.clone(), id.clone()), item.clone());
            }
        }
        match page.last_evaluated_key {
            Some(key) => start = Some(key),
            None => break,
        }
    }
    items
}

/// One scenario's numbers.
struct Measured {
    tick_limit: u32,
    ticks: u64,
    placed: u64,
    seconds: f64,
    ledger: Ledger,
    units: WriteUnits,
    idle: Ledger,
}

async fn measure(tick_limit: u32) -> Measured {
    let (plain, names) = support::fresh_stage().await;
    for i in 0..AGENTS {
        support::add_agent(&plain, &names, &format!("a{i:02}"), AGENT_MEMORY_MB).await;
    }
    for _ in 0..JOBS {
        support::submit(&plain, &names, TASKS_PER_JOB, serde_json::json!({})).await;
    }
    // The jobs' tasks are written before counting starts: this measures placing them.
    titus_control::materialize::materialize_jobs(
        &ControlPlane::new(titus_aws::aws_ports(&plain, &names), Settings::default()),
        u32::MAX,
        u64::MAX,
    )
    .await
    .unwrap();
    let mut stored = snapshot_tasks(&plain, &names).await;
    assert_eq!(stored.len(), (JOBS * TASKS_PER_JOB) as usize);

    let recorder = Recorder::default();
    let clients = recorded_clients(&recorder).await;
    let scheduler = ControlPlane::new(
        titus_aws::aws_ports(&clients, &names),
        Settings {
            scheduler: SchedulerSettings {
                max_tasks_per_tick: tick_limit,
                ..SchedulerSettings::default()
            },
            ..Settings::default()
        },
    );
    let started_at_ms = now_ms();
    let tick = |iteration| {
        tick(
            &scheduler,
            TickInput {
                owner: "bench".to_owned(),
                started_at_ms: Some(started_at_ms),
                iteration,
            },
        )
    };

    let started = Instant::now();
    let (mut ticks, mut placed) = (0u64, 0u64);
    while placed < u64::from(JOBS * TASKS_PER_JOB) {
        let summary: TickSummary = tick(ticks).await.unwrap();
        assert!(summary.lease_held, "{summary:?}");
        assert!(
            summary.placed > 0,
            "a tick placed nothing with {placed} placed: {summary:?}"
        );
        ticks += 1;
        placed += u64::from(summary.placed);
    }
    let seconds = started.elapsed().as_secs_f64();
    let ledger = recorder.take();
    let units = write_units(&plain, &names, &ledger, &mut stored).await;
    assert_eq!(units.task_puts, placed, "one task write per placement");

    // Idle ticks, as many as make one redispatch cycle: all but one skip the unacknowledged
    // index, so their average is what an idle scheduler costs.
    for i in 0..REDISPATCH_EVERY_TICKS {
        let idle_summary = tick(ticks + i).await.unwrap();
        assert_eq!(idle_summary.placed + idle_summary.redispatched, 0);
    }
    let idle = recorder.take();

    for i in 0..AGENTS {
        let url = plain
            .sqs
            .get_queue_url()
            .queue_name(names.agent_queue(&format!("a{i:02}")))
            .send()
            .await
            .unwrap();
        // The emulator keeps every message in memory: leave nothing behind.
        plain
            .sqs
            .delete_queue()
            .queue_url(url.queue_url().unwrap())
            .send()
            .await
            .unwrap();
    }
    Measured {
        tick_limit,
        ticks,
        placed,
        seconds,
        ledger,
        units,
        idle,
    }
}

fn row(label: &str, measured: f64, naive: f64) {
    let ratio = if measured > 0.0 && naive > 0.0 {
        format!("{:.1}×", naive / measured)
    } else {
        "—".to_owned()
    };
    println!("| {label:<34} | {measured:>9.4} | {naive:>9.4} | {ratio:>14} |");
}

fn report(m: &Measured) {
    let per_task = |n: u64| n as f64 / m.placed as f64;
    let l = &m.ledger;
    // The naive scheduler: the same reads and lease renewals; each transaction's task writes as
    // PutItems with an UpdateItem of the agent each, and each message sent on its own.
    let mut naive = l.requests.clone();
    let mut adjust = |service: &str, operation: &str, by: i64| {
        let n = naive
            .entry((service.to_owned(), operation.to_owned()))
            .or_default();
        *n = n.saturating_add_signed(by);
    };
    let transactions = l
        .requests
        .get(&("DynamoDB".to_owned(), "TransactWriteItems".to_owned()));
    let batches = l
        .requests
        .get(&("SQS".to_owned(), "SendMessageBatch".to_owned()));
    adjust(
        "DynamoDB",
        "TransactWriteItems",
        -(transactions.copied().unwrap_or(0) as i64),
    );
    adjust("DynamoDB", "PutItem", m.units.task_puts as i64);
    adjust("DynamoDB", "UpdateItem", m.units.task_puts as i64);
    adjust(
        "SQS",
        "SendMessageBatch",
        -(batches.copied().unwrap_or(0) as i64),
    );
    adjust("SQS", "SendMessage", l.sqs_messages as i64);
    let service_rows = |service: &str| {
        naive
            .iter()
            .filter(|((s, _), _)| s == service)
            .map(|((_, operation), n)| {
                let measured = l
                    .requests
                    .get(&(service.to_owned(), operation.clone()))
                    .copied()
                    .unwrap_or(0);
                (operation.clone(), measured, *n)
            })
            .collect::<Vec<_>>()
    };

    println!(
        "\nat most {} tasks per tick: {} ticks placed {} tasks on {AGENTS} agents in {:.1} s; \
         answered with an error (lost conditions included): {:?}",
        m.tick_limit, m.ticks, m.placed, m.seconds, l.failed
    );
    println!(
        "| {:<34} | {:>9} | {:>9} | {:>14} |",
        "per placed task", "measured", "naive", "naive/measured"
    );
    println!("| {:-<34} | {:->9} | {:->9} | {:->14} |", "", "", "", "");
    let mut calls = (0, 0);
    for service in ["DynamoDB", "SQS"] {
        let rows = service_rows(service);
        let measured: u64 = rows.iter().map(|r| r.1).sum();
        let naive: u64 = rows.iter().map(|r| r.2).sum();
        calls = (calls.0 + measured, calls.1 + naive);
        row(
            &format!("{service} requests"),
            per_task(measured),
            per_task(naive),
        );
        for (operation, measured, naive) in rows {
            row(
                &format!("  {operation}"),
                per_task(measured),
                per_task(naive),
            );
        }
        if service == "DynamoDB" {
            row(
                "DynamoDB write units (table)",
                per_task(m.units.table),
                per_task(m.units.naive_table),
            );
            row(
                "DynamoDB write units (indexes)",
                per_task(m.units.index),
                per_task(m.units.naive_index),
            );
            row(
                "DynamoDB write units (total)",
                per_task(m.units.table + m.units.index),
                per_task(m.units.naive_table + m.units.naive_index),
            );
        } else {
            row(
                "SQS billed requests (64 KiB each)",
                per_task(l.sqs_billed),
                per_task(l.sqs_messages),
            );
        }
    }
    row(
        "AWS calls per tick",
        calls.0 as f64 / m.ticks as f64,
        calls.1 as f64 / m.ticks as f64,
    );
    let idle: Vec<String> = m
        .idle
        .requests
        .iter()
        .map(|((_, operation), n)| format!("{n} {operation}"))
        .collect();
    println!(
        "idle: {:.1} AWS calls per tick, averaged over {} ticks ({} in all: {})",
        m.idle.requests.values().sum::<u64>() as f64 / REDISPATCH_EVERY_TICKS as f64,
        REDISPATCH_EVERY_TICKS,
        m.idle.requests.values().sum::<u64>(),
        idle.join(", ")
    );
}

#[tokio::main]
async fn main() {
    println!(
        "AWS calls per placed task: {} tasks, {AGENTS} agents, emulator {}; write units computed \
         from the items' sizes (moto reports no consumed capacity)",
        JOBS * TASKS_PER_JOB,
        std::env::var("AWS_ENDPOINT_URL").unwrap_or_default()
    );
    for limit in TICK_LIMITS {
        let measured = measure(limit).await;
        report(&measured);
    }
}
