//! The leader lease and fenced allocation writes on DynamoDB.
//!
//! A placement commit is one TransactWriteItems: a ConditionCheck that the lease epoch is still
//! ours, each task's move to Launched conditional on its version, and each agent's allocation
//! added with a condition that it stays within capacity. Either all of it applies or none does.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Put, ReturnValue, TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;
use titus_core::ports::{
    AllocationStore, CommitError, Lease, LeaseError, LeaseStore, PlacementWrite,
};
use titus_core::{AgentState, Resources, StoreError, Task};

use crate::agents::agent_attr;
use crate::dynamo::conditional::{
    condition_failed, refused_at, refused_count, transact_write, Transacted,
};
use crate::dynamo::{sdk_error, task_item, MAX_TRANSACTION_ITEMS};
use crate::resources::{attr, Names};

const OWNER: &str = "owner";
const EPOCH: &str = "epoch";
const EXPIRES_AT_MS: &str = "expiresAtMs";

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn signed(value: i128) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn built<T, E: std::fmt::Display>(result: Result<T, E>) -> Result<T, StoreError> {
    result.map_err(|e| StoreError::Internal(format!("building a DynamoDB request: {e}")))
}

/// Leases in the stage's leases table.
#[derive(Debug, Clone)]
pub struct DynamoLeaseStore {
    client: Client,
    table: String,
}

impl DynamoLeaseStore {
    pub fn new(client: Client, names: &Names) -> DynamoLeaseStore {
        DynamoLeaseStore {
            client,
            table: names.leases_table(),
        }
    }

    fn lease_from(&self, name: &str, item: &HashMap<String, AttributeValue>) -> Lease {
        let number = |key: &str| {
            item.get(key)
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Lease {
            name: name.to_owned(),
            owner: item
                .get(OWNER)
                .and_then(|v| v.as_s().ok())
                .cloned()
                .unwrap_or_default(),
            epoch: number(EPOCH),
            expires_at_ms: number(EXPIRES_AT_MS),
        }
    }
}

impl LeaseStore for DynamoLeaseStore {
    async fn acquire_or_renew(
        &self,
        name: &str,
        owner: &str,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<Lease, LeaseError> {
        let expires = now_ms.saturating_add(ttl_ms);
        // Renewal: we hold it (even if it lapsed, nobody took it, so our epoch is still the
        // newest and need not change).
        let renewed = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::LEASE_NAME, s(name))
            .update_expression("SET #expires = :expires")
            .condition_expression("#owner = :me")
            .expression_attribute_names("#expires", EXPIRES_AT_MS)
            .expression_attribute_names("#owner", OWNER)
            .expression_attribute_values(":expires", n(expires))
            .expression_attribute_values(":me", s(owner))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match renewed {
            Ok(out) => return Ok(self.lease_from(name, &out.attributes.unwrap_or_default())),
            Err(e) if condition_failed(&e) => {}
            Err(e) => return Err(sdk_error("UpdateItem lease renew", e).into()),
        }
        // Takeover: free or expired. A new owner means a new epoch.
        let acquired = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::LEASE_NAME, s(name))
            .update_expression("SET #owner = :me, #expires = :expires ADD #epoch :one")
            .condition_expression("attribute_not_exists(#name) OR #expires <= :now")
            .expression_attribute_names("#owner", OWNER)
            .expression_attribute_names("#expires", EXPIRES_AT_MS)
            .expression_attribute_names("#epoch", EPOCH)
            .expression_attribute_names("#name", attr::LEASE_NAME)
            .expression_attribute_values(":me", s(owner))
            .expression_attribute_values(":expires", n(expires))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":now", n(now_ms))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match acquired {
            Ok(out) => Ok(self.lease_from(name, &out.attributes.unwrap_or_default())),
            Err(e) if condition_failed(&e) => {
                let current = self
                    .client
                    .get_item()
                    .table_name(&self.table)
                    .key(attr::LEASE_NAME, s(name))
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(|e| sdk_error("GetItem lease", e))?;
                let held = self.lease_from(name, &current.item.unwrap_or_default());
                Err(LeaseError::HeldByOther {
                    name: name.to_owned(),
                    owner: held.owner,
                    epoch: held.epoch,
                    expires_at_ms: held.expires_at_ms,
                })
            }
            Err(e) => Err(sdk_error("UpdateItem lease acquire", e).into()),
        }
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::LEASE_NAME, s(&lease.name))
            .update_expression("SET #expires = :zero")
            .condition_expression("#owner = :me AND #epoch = :epoch")
            .expression_attribute_names("#expires", EXPIRES_AT_MS)
            .expression_attribute_names("#owner", OWNER)
            .expression_attribute_names("#epoch", EPOCH)
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":me", s(&lease.owner))
            .expression_attribute_values(":epoch", n(lease.epoch))
            .send()
            .await;
        match result {
            // Someone else holds it already: nothing of ours to release.
            Err(e) if condition_failed(&e) => Ok(()),
            Err(e) => Err(sdk_error("UpdateItem lease release", e)),
            Ok(_) => Ok(()),
        }
    }
}

/// Task placements and releases against the stage's tasks, agents and leases tables.
#[derive(Debug, Clone)]
pub struct DynamoAllocationStore {
    client: Client,
    tasks_table: String,
    agents_table: String,
    leases_table: String,
}

impl DynamoAllocationStore {
    pub fn new(client: Client, names: &Names) -> DynamoAllocationStore {
        DynamoAllocationStore {
            client,
            tasks_table: names.tasks_table(),
            agents_table: names.agents_table(),
            leases_table: names.leases_table(),
        }
    }

    fn put_task(
        &self,
        task: &Task,
        expected_version: u64,
    ) -> Result<TransactWriteItem, StoreError> {
        let put = built(
            Put::builder()
                .table_name(&self.tasks_table)
                .set_item(Some(task_item(task)?))
                .condition_expression("#version = :expected")
                .expression_attribute_names("#version", attr::VERSION)
                .expression_attribute_values(":expected", n(expected_version))
                .build(),
        )?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// Adds (or with `sign` -1 gives back) resources on an agent. Adding (`placing` is the
    /// capacity and incarnation the scheduler read) is conditional on the agent being active at
    /// that incarnation, its capacity unchanged, and the new total within it.
    fn update_agent(
        &self,
        agent_id: &str,
        delta: Resources,
        task_delta: i64,
        placing: Option<(Resources, u64)>,
    ) -> Result<TransactWriteItem, StoreError> {
        let values = [
            delta.cpu_millis,
            delta.memory_mb,
            delta.disk_mb,
            delta.network_mbps,
            delta.gpu,
        ];
        let sign: i128 = if task_delta < 0 { -1 } else { 1 };
        let mut adds = vec!["#count :count".to_owned()];
        let mut update = Update::builder()
            .table_name(&self.agents_table)
            .key(attr::AGENT_ID, s(agent_id))
            .expression_attribute_names("#count", agent_attr::TASK_COUNT)
            .expression_attribute_values(":count", signed(i128::from(task_delta)));
        let mut conditions = vec!["attribute_exists(#id)".to_owned()];
        update = update.expression_attribute_names("#id", attr::AGENT_ID);
        for (dimension, value) in agent_attr::DIMENSIONS.iter().zip(values) {
            adds.push(format!("#alloc{dimension} :d{dimension}"));
            update = update
                .expression_attribute_names(
                    format!("#alloc{dimension}"),
                    format!("alloc{dimension}"),
                )
                .expression_attribute_values(
                    format!(":d{dimension}"),
                    signed(sign * i128::from(value)),
                );
        }
        if let Some((capacity, incarnation)) = placing {
            conditions.push("#incarnation = :incarnation".to_owned());
            update = update
                .expression_attribute_names("#incarnation", agent_attr::INCARNATION)
                .expression_attribute_values(":incarnation", n(incarnation));
            let caps = [
                capacity.cpu_millis,
                capacity.memory_mb,
                capacity.disk_mb,
                capacity.network_mbps,
                capacity.gpu,
            ];
            conditions.push("#state = :active".to_owned());
            update = update
                .expression_attribute_names("#state", agent_attr::STATE)
                .expression_attribute_values(":active", s(AgentState::Active.as_str()));
            for ((dimension, value), cap) in agent_attr::DIMENSIONS.iter().zip(values).zip(caps) {
                let limit = cap.saturating_sub(value);
                conditions.push(format!(
                    "#cap{dimension} = :cap{dimension} AND #alloc{dimension} <= :limit{dimension}"
                ));
                update = update
                    .expression_attribute_names(
                        format!("#cap{dimension}"),
                        format!("cap{dimension}"),
                    )
                    .expression_attribute_values(format!(":cap{dimension}"), n(cap))
                    .expression_attribute_values(format!(":limit{dimension}"), n(limit));
            }
        }
        let update = built(
            update
                .update_expression(format!("ADD {}", adds.join(", ")))
                .condition_expression(conditions.join(" AND "))
                .build(),
        )?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// Every allocation write goes through here, under one operation name.
    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<Transacted, StoreError> {
        transact_write(&self.client, items, "TransactWriteItems").await
    }
}

impl AllocationStore for DynamoAllocationStore {
    async fn commit_placements(
        &self,
        lease: &Lease,
        placements: &[PlacementWrite],
    ) -> Result<(), CommitError> {
        if placements.is_empty() {
            return Ok(());
        }
        let check = built(
            ConditionCheck::builder()
                .table_name(&self.leases_table)
                .key(attr::LEASE_NAME, s(&lease.name))
                .condition_expression("#owner = :me AND #epoch = :epoch")
                .expression_attribute_names("#owner", OWNER)
                .expression_attribute_names("#epoch", EPOCH)
                .expression_attribute_values(":me", s(&lease.owner))
                .expression_attribute_values(":epoch", n(lease.epoch))
                .build(),
        )?;
        let mut items = vec![TransactWriteItem::builder().condition_check(check).build()];
        let mut per_agent: BTreeMap<&str, (Resources, i64, Resources, u64)> = BTreeMap::new();
        for placement in placements {
            items.push(self.put_task(&placement.task, placement.expected_version)?);
            let entry = per_agent.entry(&placement.agent_id).or_insert((
                Resources::ZERO,
                0,
                placement.agent_capacity,
                placement.agent_incarnation,
            ));
            entry.0 = entry.0.saturating_add(placement.resources);
            entry.1 += 1;
        }
        for (agent_id, (sum, count, capacity, incarnation)) in &per_agent {
            if !sum.fits_within(capacity) {
                return Err(CommitError::Conflict(format!(
                    "placements on agent {agent_id} need more {} than its capacity",
                    sum.shortfalls(capacity).join(", ")
                )));
            }
            items.push(self.update_agent(
                agent_id,
                *sum,
                *count,
                Some((*capacity, *incarnation)),
            )?);
        }
        if items.len() > MAX_TRANSACTION_ITEMS {
            return Err(CommitError::Store(StoreError::Internal(format!(
                "{} items exceed a transaction's {MAX_TRANSACTION_ITEMS}; expected the placements in chunks that fit",
                items.len()
            ))));
        }
        match self.transact(items).await? {
            Transacted::Committed => Ok(()),
            // The lease check is the first item.
            Transacted::Refused(codes) if refused_at(&codes, 0) => {
                Err(CommitError::LeaseLost { epoch: lease.epoch })
            }
            Transacted::Refused(codes) => {
                let tasks_failed = refused_count(&codes[1..=placements.len()]);
                let agents_failed = refused_count(&codes[placements.len() + 1..]);
                Err(CommitError::Conflict(format!(
                    "{tasks_failed} tasks changed and {agents_failed} agents lacked room or changed"
                )))
            }
        }
    }

    async fn finish_and_release(
        &self,
        task: &Task,
        expected_version: u64,
        agent_id: &str,
        resources: Resources,
    ) -> Result<(), StoreError> {
        let items = vec![
            self.put_task(task, expected_version)?,
            self.update_agent(agent_id, resources, -1, None)?,
        ];
        match self.transact(items).await? {
            Transacted::Committed => Ok(()),
            Transacted::Refused(codes) if refused_at(&codes, 0) => Err(StoreError::Conflict {
                entity: "task",
                id: task.id.to_string(),
                detail: format!("expected version {expected_version}; the task changed"),
            }),
            // The agent's record is gone (it deregistered): there is nothing to give back to.
            Transacted::Refused(_) => {
                let put = self.put_task(task, expected_version)?;
                match self.transact(vec![put]).await? {
                    Transacted::Committed => Ok(()),
                    Transacted::Refused(_) => Err(StoreError::Conflict {
                        entity: "task",
                        id: task.id.to_string(),
                        detail: format!("expected version {expected_version}; the task changed"),
                    }),
                }
            }
        }
    }
}
