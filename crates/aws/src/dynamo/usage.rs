//! Quota usage records in the stage's `quota-usage` table: one item per team or capacity group
//! (`scope` = `team:{email}` / `group:{name}`) with a number per dimension. A job write that
//! changes what its job holds carries one `Update` per scope in its transaction: `ADD` of the
//! change, on condition that every increased dimension is at most `limit - increase` before it
//! (DynamoDB conditions cannot add, so the ceiling is computed here).

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};
use aws_sdk_dynamodb::Client;
use titus_core::quota::{Dimension, QuotaExceeded, QuotaScope, Usage, UsageChange};
use titus_core::StoreError;

use crate::resources::attr;

use super::codec::Item;
use super::conditional::sdk_error;

/// The attribute of each dimension.
fn attribute(dimension: Dimension) -> &'static str {
    match dimension {
        Dimension::Jobs => "jobs",
        Dimension::Tasks => "tasks",
        Dimension::Cpu => "cpuMillis",
        Dimension::MemoryMb => "memoryMb",
        Dimension::Gpu => "gpu",
    }
}

fn number(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// The transaction items that apply `change`, one per scope, in the order of `change.scopes`.
pub(super) fn updates(
    table: &str,
    change: &UsageChange,
) -> Result<Vec<TransactWriteItem>, StoreError> {
    if change.is_none() {
        return Ok(Vec::new());
    }
    let ceilings = change.ceilings();
    change
        .scopes
        .iter()
        .zip(ceilings)
        .map(|(charge, (_, ceilings))| {
            let mut names = HashMap::new();
            let mut values = HashMap::new();
            let mut adds = Vec::new();
            for (i, (dimension, delta)) in change.delta.dimensions().into_iter().enumerate() {
                if delta == 0 {
                    continue;
                }
                names.insert(format!("#d{i}"), attribute(dimension).to_owned());
                values.insert(format!(":d{i}"), number(delta));
                adds.push(format!("#d{i} :d{i}"));
            }
            let mut conditions = Vec::new();
            for (dimension, ceiling) in ceilings {
                let i = change
                    .delta
                    .dimensions()
                    .iter()
                    .position(|(d, _)| *d == dimension)
                    .unwrap_or_default();
                values.insert(format!(":max{i}"), number(ceiling));
                // A record never written holds nothing: it passes while the ceiling is not
                // negative (a request beyond the limit on its own is refused before the write).
                if ceiling >= 0 {
                    conditions.push(format!("(attribute_not_exists(#d{i}) OR #d{i} <= :max{i})"));
                } else {
                    conditions.push(format!("#d{i} <= :max{i}"));
                }
            }
            let mut update = Update::builder()
                .table_name(table)
                .key(attr::QUOTA_SCOPE, AttributeValue::S(charge.scope.key()))
                .update_expression(format!("ADD {}", adds.join(", ")))
                .set_expression_attribute_names(Some(names))
                .set_expression_attribute_values(Some(values));
            if !conditions.is_empty() {
                update = update.condition_expression(conditions.join(" AND "));
            }
            let update = update
                .build()
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            Ok(TransactWriteItem::builder().update(update).build())
        })
        .collect()
}

fn decode(item: &Item) -> Usage {
    let get = |dimension: Dimension| {
        item.get(attribute(dimension))
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse::<i64>().ok())
            .unwrap_or(0)
    };
    Usage {
        jobs: get(Dimension::Jobs),
        tasks: get(Dimension::Tasks),
        cpu_millis: get(Dimension::Cpu),
        memory_mb: get(Dimension::MemoryMb),
        gpu: get(Dimension::Gpu),
    }
}

/// One scope's record, read consistently (nothing held when it was never written).
pub(super) async fn read(
    client: &Client,
    table: &str,
    scope: &QuotaScope,
) -> Result<Usage, StoreError> {
    let out = client
        .get_item()
        .table_name(table)
        .key(attr::QUOTA_SCOPE, AttributeValue::S(scope.key()))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| sdk_error("GetItem quota-usage", e))?;
    Ok(out.item.as_ref().map(decode).unwrap_or_default())
}

/// Why the usage items of a refused transaction were refused: the first scope (in
/// `change.scopes` order) whose condition failed, with what it holds now. `first_index` is the
/// position of the first usage item in the transaction.
pub(super) async fn refusal(
    client: &Client,
    table: &str,
    change: &UsageChange,
    codes: &[String],
    first_index: usize,
) -> Result<Option<StoreError>, StoreError> {
    for (i, charge) in change.scopes.iter().enumerate() {
        if !super::conditional::refused_at(codes, first_index + i) {
            continue;
        }
        let held = read(client, table, &charge.scope).await?;
        return Ok(Some(
            match QuotaExceeded::find(change, &charge.scope, &held) {
                Some(exceeded) => StoreError::QuotaExceeded(exceeded),
                // Released between the refusal and the read: the caller may try again.
                None => StoreError::Conflict {
                    entity: "quota usage",
                    id: charge.scope.key(),
                    detail: "the usage changed while the write was refused; expected a retry"
                        .to_owned(),
                },
            },
        ));
    }
    Ok(None)
}

/// The quota the change passes on its own, before any use, as the store's error.
pub(super) async fn beyond_any_use(
    client: &Client,
    table: &str,
    change: &UsageChange,
) -> Result<Option<StoreError>, StoreError> {
    let Some((scope, dimension, limit)) = change.beyond_any_use() else {
        return Ok(None);
    };
    let held = read(client, table, scope).await?;
    Ok(Some(StoreError::QuotaExceeded(QuotaExceeded {
        scope: scope.clone(),
        dimension,
        limit,
        used: held.get(dimension),
        requested: change.delta.get(dimension),
    })))
}

/// Every record of the table.
pub(super) async fn list(
    client: &Client,
    table: &str,
) -> Result<BTreeMap<String, Usage>, StoreError> {
    let mut usage = BTreeMap::new();
    let mut start: Option<Item> = None;
    loop {
        let out = client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| sdk_error("Scan quota-usage", e))?;
        for item in out.items() {
            if let Some(AttributeValue::S(key)) = item.get(attr::QUOTA_SCOPE) {
                usage.insert(key.clone(), decode(item));
            }
        }
        match out.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return Ok(usage),
        }
    }
}
