//! The index reads the store's listings share: one page of a query, the merge of a sharded
//! sparse index, and which of some tasks exist.

use std::collections::{HashMap, HashSet};

use aws_sdk_dynamodb::types::KeysAndAttributes;
use titus_core::ports::PageRequest;
use titus_core::{StoreError, Task, TaskId, TaskState};

use super::codec::{decode_doc, s, string_attr, Item};
use super::conditional::sdk_error;
use super::DynamoJobStore;
use crate::resources::{attr, index, pending_shard_key, PENDING_TASK_SHARDS};

/// DynamoDB's limit on keys in one BatchGetItem call.
const MAX_BATCH_GET_KEYS: usize = 100;

impl DynamoJobStore {
    pub(super) async fn existing_task_ids(
        &self,
        ids: &[&TaskId],
    ) -> Result<HashSet<String>, StoreError> {
        let mut found = HashSet::new();
        for chunk in ids.chunks(MAX_BATCH_GET_KEYS) {
            let keys: Vec<Item> = chunk
                .iter()
                .map(|id| HashMap::from([(attr::TASK_ID.to_owned(), s(id.as_str()))]))
                .collect();
            let mut request = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(true)
                    .projection_expression("#id")
                    .expression_attribute_names("#id", attr::TASK_ID)
                    .build()
                    .map_err(|e| StoreError::Internal(e.to_string()))?,
            );
            while let Some(keys) = request.take() {
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.tasks_table, keys)
                    .send()
                    .await
                    .map_err(|e| sdk_error("BatchGetItem tasks", e))?;
                for item in out
                    .responses
                    .unwrap_or_default()
                    .remove(&self.tasks_table)
                    .unwrap_or_default()
                {
                    found.insert(string_attr(&item, attr::TASK_ID)?);
                }
                request = out
                    .unprocessed_keys
                    .unwrap_or_default()
                    .remove(&self.tasks_table)
                    .filter(|k| !k.keys.is_empty());
            }
        }
        Ok(found)
    }

    pub(super) async fn query_page(
        &self,
        index_name: &str,
        partition_attr: &str,
        partition_value: &str,
        forward: bool,
        limit: u32,
        start_key: Option<Item>,
    ) -> Result<(Vec<Item>, Option<Item>), StoreError> {
        let table = if index_name == index::TASKS_BY_JOB || index_name == index::TASKS_ACTIVE_BY_JOB
        {
            &self.tasks_table
        } else {
            &self.jobs_table
        };
        let out = self
            .client
            .query()
            .table_name(table)
            .index_name(index_name)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", partition_attr)
            .expression_attribute_values(":pk", s(partition_value))
            .scan_index_forward(forward)
            .limit(limit.clamp(1, PageRequest::MAX_PAGE_SIZE) as i32)
            .set_exclusive_start_key(start_key)
            .send()
            .await
            .map_err(|e| sdk_error("Query", e))?;
        Ok((out.items.unwrap_or_default(), out.last_evaluated_key))
    }

    /// Reads a sharded, sparse task index: every shard's items keyed at or before `upto_ms`,
    /// merged oldest first. Items whose task has moved on are dropped, since indexes are
    /// eventually consistent.
    pub(super) async fn query_shards(
        &self,
        index_name: &str,
        (shard_attr, key_attr): (&str, &str),
        limit: u32,
        upto_ms: u64,
        states: &[TaskState],
    ) -> Result<Vec<Task>, StoreError> {
        let limit = limit.clamp(1, PageRequest::MAX_PAGE_SIZE);
        // Keys are "{ms:013}#{task_id}"; '$' sorts just after '#', so this bound takes every
        // key at or before `upto_ms`.
        let upper = format!("{upto_ms:013}$");
        let queries = (0..PENDING_TASK_SHARDS).map(|shard| {
            self.client
                .query()
                .table_name(&self.tasks_table)
                .index_name(index_name)
                .key_condition_expression("#shard = :shard AND #key < :upper")
                .expression_attribute_names("#shard", shard_attr)
                .expression_attribute_names("#key", key_attr)
                .expression_attribute_values(":shard", s(&pending_shard_key(shard)))
                .expression_attribute_values(":upper", s(&upper))
                .limit(limit as i32)
                .send()
        });
        let mut found: Vec<(String, Task)> = Vec::new();
        for result in futures::future::join_all(queries).await {
            let out = result.map_err(|e| sdk_error("Query task shards", e))?;
            for item in out.items.unwrap_or_default() {
                let task: Task = decode_doc(&item)?;
                if states.contains(&task.state()) {
                    found.push((string_attr(&item, key_attr)?, task));
                }
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found.truncate(limit as usize);
        Ok(found.into_iter().map(|(_, task)| task).collect())
    }
}
