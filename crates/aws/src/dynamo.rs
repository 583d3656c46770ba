//! The job store on DynamoDB.
//!
//! Each job and task is one item: the whole record as JSON in `doc`, plus the top-level attributes
//! that keys, indexes and conditions need. Writes are optimistic: every update is conditional on
//! the `version` that was read, so a lost race is a `Conflict` and never an overwrite.

use std::collections::{HashMap, HashSet};

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, KeysAndAttributes, Put, TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use titus_core::ports::{
    CreateOutcome, IdempotencyKey, JobFilter, Page, PageRequest, MAX_INITIAL_TASKS_PER_WRITE,
};
use titus_core::{Job, JobId, JobState, JobStore, StoreError, Task, TaskId, TaskState};

use crate::resources::PENDING_TASK_SHARDS;
use crate::resources::{
    attr, index, pending_shard, pending_shard_key, Names, AWAITING_TASKS_PARTITION,
    IDEMPOTENCY_TTL_SECS,
};

type Item = HashMap<String, AttributeValue>;

pub use titus_core::ports::MAX_TRANSACTION_ITEMS;
/// DynamoDB's limit on keys in one BatchGetItem call.
const MAX_BATCH_GET_KEYS: usize = 100;
/// How many queries one page of a filtered listing may take before it returns what it has.
const MAX_QUERIES_PER_PAGE: usize = 20;

/// The job store backed by DynamoDB tables named for one stage.
#[derive(Debug, Clone)]
pub struct DynamoJobStore {
    client: Client,
    jobs_table: String,
    tasks_table: String,
    idempotency_table: String,
}

impl DynamoJobStore {
    pub fn new(client: Client, names: &Names) -> DynamoJobStore {
        DynamoJobStore {
            client,
            jobs_table: names.jobs_table(),
            tasks_table: names.tasks_table(),
            idempotency_table: names.idempotency_table(),
        }
    }

    /// Reads a job and whether it still awaits its initial tasks.
    async fn get_job_item(&self, id: &JobId) -> Result<Option<(Job, bool)>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.jobs_table)
            .key(attr::JOB_ID, s(id.as_str()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem jobs", e))?;
        match out.item {
            None => Ok(None),
            Some(item) => {
                let awaiting = item.contains_key(attr::AWAITING_TASKS);
                Ok(Some((decode_doc(&item)?, awaiting)))
            }
        }
    }

    /// The path of a repeated request: the job the first request created.
    async fn existing(&self, key: &IdempotencyKey) -> Result<CreateOutcome, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.idempotency_table)
            .key(attr::IDEMPOTENCY_KEY, s(&idempotency_item_key(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem idempotency", e))?;
        let item = out.item.ok_or_else(|| {
            StoreError::Internal(format!(
                "idempotency record for key {:?} vanished after its write was refused",
                key.key
            ))
        })?;
        let job_id = JobId::from_string(string_attr(&item, attr::JOB_ID)?);
        if string_attr(&item, attr::REQUEST_HASH)? != key.request_hash {
            return Err(StoreError::IdempotencyMismatch {
                key: key.key.clone(),
                job_id,
            });
        }
        let (job, _) = self.get_job_item(&job_id).await?.ok_or_else(|| {
            StoreError::Internal(format!("idempotency record points at missing job {job_id}"))
        })?;
        Ok(CreateOutcome::Existing(job))
    }

    /// Puts an item that must not exist yet; `Conflict` if its key is taken.
    async fn put_new(
        &self,
        table: &str,
        item: Item,
        (key_attr, entity): (&str, &'static str),
        id: &str,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#id)")
            .expression_attribute_names("#id", key_attr)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Err(StoreError::Conflict {
                    entity,
                    id: id.to_owned(),
                    detail: format!("a {entity} with this id already exists"),
                })
            }
            Err(e) => Err(sdk_error(&format!("PutItem {table}"), e)),
        }
    }

    async fn existing_task_ids(&self, ids: &[&TaskId]) -> Result<HashSet<String>, StoreError> {
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

    fn put_new_task(&self, task: &Task) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder()
            .table_name(&self.tasks_table)
            .set_item(Some(task_item(task)?))
            .condition_expression("attribute_not_exists(#id)")
            .expression_attribute_names("#id", attr::TASK_ID)
            .build()
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
        op: &str,
    ) -> Result<(), TransactFailure> {
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) => {
                if let Some(cancelled) = err
                    .as_service_error()
                    .and_then(|e| match e {
                        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c) => Some(c),
                        _ => None,
                    })
                {
                    let codes = cancelled
                        .cancellation_reasons()
                        .iter()
                        .map(|r| r.code().unwrap_or("None").to_owned())
                        .collect::<Vec<_>>();
                    if codes.iter().any(|c| c == "ConditionalCheckFailed") {
                        return Err(TransactFailure::Cancelled(codes));
                    }
                    // Cancelled for another reason (a conflicting transaction in flight, throttling).
                    return Err(TransactFailure::Other(StoreError::Unavailable(format!(
                        "{op}: transaction cancelled: {codes:?}"
                    ))));
                }
                Err(TransactFailure::Other(sdk_error(op, err)))
            }
        }
    }

    async fn query_page(
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
}

impl DynamoJobStore {
    /// Reads a sharded, sparse task index: every shard's items keyed at or before `upto_ms`,
    /// merged oldest first. Items whose task has moved on are dropped, since indexes are
    /// eventually consistent.
    async fn query_shards(
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

/// The states a task should soon leave; the `transitional` index holds tasks in them, keyed by
/// when they entered the state, for the reconciler's stuck-task timeouts.
pub const TRANSITIONAL_STATES: [TaskState; 3] = [
    TaskState::Launched,
    TaskState::StartInitiated,
    TaskState::KillInitiated,
];

/// A transaction refused by a condition (with each item's cancellation code), or another error.
#[derive(Debug)]
enum TransactFailure {
    Cancelled(Vec<String>),
    Other(StoreError),
}

impl JobStore for DynamoJobStore {
    async fn create_job(
        &self,
        job: &Job,
        idempotency: Option<&IdempotencyKey>,
    ) -> Result<CreateOutcome, StoreError> {
        let item = job_item(job, true)?;
        let Some(key) = idempotency else {
            // One conditional write. The id is freshly generated, so a refusal is a bug.
            self.put_new(
                &self.jobs_table,
                item,
                (attr::JOB_ID, "job"),
                job.id.as_str(),
            )
            .await?;
            return Ok(CreateOutcome::Created(job.clone()));
        };

        // With a key, the record and the job are written together. A repeat finds the record
        // taken and returns the first job; there is no read before the write, since most
        // requests are not repeats.
        let expires_at = job.created_at_ms / 1000 + IDEMPOTENCY_TTL_SECS;
        let record = HashMap::from([
            (
                attr::IDEMPOTENCY_KEY.to_owned(),
                s(&idempotency_item_key(key)),
            ),
            (attr::JOB_ID.to_owned(), s(job.id.as_str())),
            (attr::REQUEST_HASH.to_owned(), s(&key.request_hash)),
            (attr::EXPIRES_AT.to_owned(), n(expires_at)),
        ]);
        let items = vec![
            put_if_absent(&self.idempotency_table, record, attr::IDEMPOTENCY_KEY)?,
            put_if_absent(&self.jobs_table, item, attr::JOB_ID)?,
        ];
        match self.transact(items, "TransactWriteItems create job").await {
            Ok(()) => Ok(CreateOutcome::Created(job.clone())),
            // The record is the first item: a request with the same key came first.
            Err(TransactFailure::Cancelled(codes))
                if codes.first().map(String::as_str) == Some("ConditionalCheckFailed") =>
            {
                self.existing(key).await
            }
            Err(TransactFailure::Cancelled(codes)) => Err(StoreError::Conflict {
                entity: "job",
                id: job.id.to_string(),
                detail: format!("a job with this id already exists ({codes:?})"),
            }),
            Err(TransactFailure::Other(e)) => Err(e),
        }
    }

    async fn list_awaiting_jobs(
        &self,
        limit: u32,
        created_before_ms: u64,
    ) -> Result<Vec<JobId>, StoreError> {
        // Created keys are "{ms:013}#{job_id}": every key below "{ms:013}" is older.
        let created_before = format!("{:013}", created_before_ms.min(9_999_999_999_999));
        let out = self
            .client
            .query()
            .table_name(&self.jobs_table)
            .index_name(index::JOBS_AWAITING_TASKS)
            .key_condition_expression("#pk = :pk AND #created < :before")
            .expression_attribute_names("#pk", attr::AWAITING_TASKS)
            .expression_attribute_names("#created", attr::CREATED_KEY)
            .expression_attribute_values(":pk", s(AWAITING_TASKS_PARTITION))
            .expression_attribute_values(":before", s(&created_before))
            .projection_expression("#id")
            .expression_attribute_names("#id", attr::JOB_ID)
            .limit(limit.clamp(1, PageRequest::MAX_PAGE_SIZE) as i32)
            .send()
            .await
            .map_err(|e| sdk_error("Query jobs awaiting tasks", e))?;
        out.items
            .unwrap_or_default()
            .iter()
            .map(|item| string_attr(item, attr::JOB_ID).map(JobId::from_string))
            .collect()
    }

    async fn get_job_awaiting(&self, id: &JobId) -> Result<Option<(Job, bool)>, StoreError> {
        self.get_job_item(id).await
    }

    async fn existing_tasks(&self, ids: &[&TaskId]) -> Result<HashSet<TaskId>, StoreError> {
        Ok(self
            .existing_task_ids(ids)
            .await?
            .into_iter()
            .map(TaskId::from_string)
            .collect())
    }

    async fn write_initial_tasks(
        &self,
        job: &Job,
        tasks: &[Task],
        clear_mark: bool,
    ) -> Result<(), StoreError> {
        if tasks.len() > MAX_INITIAL_TASKS_PER_WRITE {
            return Err(StoreError::Internal(format!(
                "{} initial tasks in one write exceed {MAX_INITIAL_TASKS_PER_WRITE}; expected \
                 them written in chunks",
                tasks.len()
            )));
        }
        // Every write touches the job item once, on the same condition.
        let key = HashMap::from([(attr::JOB_ID.to_owned(), s(job.id.as_str()))]);
        let names = HashMap::from([
            ("#version".to_owned(), attr::VERSION.to_owned()),
            ("#awaiting".to_owned(), attr::AWAITING_TASKS.to_owned()),
        ]);
        let values = HashMap::from([(":version".to_owned(), n(job.version))]);
        let condition = "#version = :version AND attribute_exists(#awaiting)";
        let built = |e: aws_sdk_dynamodb::error::BuildError| StoreError::Internal(e.to_string());
        let job_op = if clear_mark {
            let update = Update::builder()
                .table_name(&self.jobs_table)
                .set_key(Some(key))
                .update_expression("REMOVE #awaiting")
                .condition_expression(condition)
                .set_expression_attribute_names(Some(names))
                .set_expression_attribute_values(Some(values))
                .build()
                .map_err(built)?;
            TransactWriteItem::builder().update(update).build()
        } else {
            let check = ConditionCheck::builder()
                .table_name(&self.jobs_table)
                .set_key(Some(key))
                .condition_expression(condition)
                .set_expression_attribute_names(Some(names))
                .set_expression_attribute_values(Some(values))
                .build()
                .map_err(built)?;
            TransactWriteItem::builder().condition_check(check).build()
        };
        let mut items = Vec::with_capacity(tasks.len() + 1);
        items.push(job_op);
        for task in tasks {
            items.push(self.put_new_task(task)?);
        }
        match self
            .transact(items, "TransactWriteItems initial tasks")
            .await
        {
            Ok(()) => Ok(()),
            Err(TransactFailure::Cancelled(codes)) => Err(StoreError::Conflict {
                entity: "job",
                id: job.id.to_string(),
                detail: format!(
                    "the job changed, is no longer awaiting its tasks, or a task exists \
                     ({codes:?})"
                ),
            }),
            Err(TransactFailure::Other(e)) => Err(e),
        }
    }

    async fn get_job(&self, id: &JobId) -> Result<Option<Job>, StoreError> {
        Ok(self.get_job_item(id).await?.map(|(job, _)| job))
    }

    async fn list_jobs(
        &self,
        filter: &JobFilter,
        page: &PageRequest,
    ) -> Result<Page<Job>, StoreError> {
        // Query the most selective index; the rest of the filter applies to what it returns.
        let (index_name, partition_attr, partitions): (&str, &str, Vec<String>) =
            if let Some(owner) = &filter.owner {
                (index::JOBS_BY_OWNER, attr::OWNER, vec![owner.clone()])
            } else if let Some(app) = &filter.application_name {
                (
                    index::JOBS_BY_APPLICATION,
                    attr::APPLICATION_NAME,
                    vec![app.clone()],
                )
            } else {
                let states = if filter.states.is_empty() {
                    JobState::ALL.to_vec()
                } else {
                    let mut states = filter.states.clone();
                    states.sort();
                    states.dedup();
                    states
                };
                (
                    index::JOBS_BY_STATE,
                    attr::JOB_STATE,
                    states.iter().map(|s| s.as_str().to_owned()).collect(),
                )
            };
        let key_attrs = [attr::JOB_ID, partition_attr, attr::CREATED_KEY];
        let mut cursor = Cursor::decode(page.cursor.as_deref(), &key_attrs)?;
        cursor.check_partition(partition_attr, partitions.get(cursor.partition))?;
        let page_size = page.page_size.clamp(1, PageRequest::MAX_PAGE_SIZE);
        let mut jobs = Vec::new();
        let mut queries = 0;
        while cursor.partition < partitions.len() {
            if queries == MAX_QUERIES_PER_PAGE {
                return Ok(Page {
                    items: jobs,
                    next_cursor: Some(cursor.encode()),
                });
            }
            queries += 1;
            let (items, last_key) = self
                .query_page(
                    index_name,
                    partition_attr,
                    &partitions[cursor.partition],
                    false,
                    page_size,
                    cursor.key_item(),
                )
                .await?;
            for item in items {
                let job: Job = decode_doc(&item)?;
                if filter.matches(&job) {
                    jobs.push(job);
                    if jobs.len() == page_size as usize {
                        cursor.key = key_of(&item, &key_attrs)?;
                        return Ok(Page {
                            items: jobs,
                            next_cursor: Some(cursor.encode()),
                        });
                    }
                }
            }
            match last_key {
                Some(key) => cursor.key = key_of(&key, &key_attrs)?,
                None => {
                    cursor.partition += 1;
                    cursor.key.clear();
                }
            }
        }
        Ok(Page {
            items: jobs,
            next_cursor: None,
        })
    }

    async fn update_job(&self, job: &Job, expected_version: u64) -> Result<(), StoreError> {
        let item = job_item(job, false)?;
        let value = |name: &str| {
            item.get(name)
                .cloned()
                .unwrap_or(AttributeValue::Null(true))
        };
        let result = self
            .client
            .update_item()
            .table_name(&self.jobs_table)
            .key(attr::JOB_ID, s(job.id.as_str()))
            .update_expression("SET #doc = :doc, #state = :state, #version = :version")
            .condition_expression("#version = :expected")
            .expression_attribute_names("#doc", attr::DOC)
            .expression_attribute_names("#state", attr::JOB_STATE)
            .expression_attribute_names("#version", attr::VERSION)
            .expression_attribute_values(":doc", value(attr::DOC))
            .expression_attribute_values(":state", value(attr::JOB_STATE))
            .expression_attribute_values(":version", n(job.version))
            .expression_attribute_values(":expected", n(expected_version))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                Err(StoreError::Conflict {
                    entity: "job",
                    id: job.id.to_string(),
                    detail: format!("expected version {expected_version}, but the job changed or does not exist"),
                })
            }
            Err(e) => Err(sdk_error("UpdateItem jobs", e)),
        }
    }

    async fn get_task(&self, id: &TaskId) -> Result<Option<Task>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tasks_table)
            .key(attr::TASK_ID, s(id.as_str()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem tasks", e))?;
        out.item.map(|item| decode_doc(&item)).transpose()
    }

    async fn list_job_tasks(
        &self,
        job_id: &JobId,
        page: &PageRequest,
    ) -> Result<Page<Task>, StoreError> {
        let key_attrs = [attr::TASK_ID, attr::JOB_ID, attr::CREATED_KEY];
        let cursor = Cursor::decode(page.cursor.as_deref(), &key_attrs)?;
        cursor.check_partition(attr::JOB_ID, Some(&job_id.to_string()))?;
        let page_size = page.page_size.clamp(1, PageRequest::MAX_PAGE_SIZE);
        let (items, last_key) = self
            .query_page(
                index::TASKS_BY_JOB,
                attr::JOB_ID,
                job_id.as_str(),
                true,
                page_size,
                cursor.key_item(),
            )
            .await?;
        let tasks = items
            .iter()
            .map(decode_doc)
            .collect::<Result<Vec<Task>, _>>()?;
        let next_cursor = match last_key {
            Some(key) => Some(
                Cursor {
                    partition: 0,
                    key: key_of(&key, &key_attrs)?,
                }
                .encode(),
            ),
            None => None,
        };
        Ok(Page {
            items: tasks,
            next_cursor,
        })
    }

    async fn list_pending_tasks(&self, limit: u32, now_ms: u64) -> Result<Vec<Task>, StoreError> {
        self.query_shards(
            index::TASKS_PENDING,
            (attr::PENDING_SHARD, attr::PENDING_KEY),
            limit,
            now_ms,
            &[TaskState::Accepted],
        )
        .await
    }

    async fn list_unacknowledged_tasks(
        &self,
        limit: u32,
        dispatched_before_ms: u64,
    ) -> Result<Vec<Task>, StoreError> {
        self.query_shards(
            index::TASKS_UNACKNOWLEDGED,
            (attr::DISPATCH_SHARD, attr::DISPATCH_KEY),
            limit,
            dispatched_before_ms,
            &[TaskState::Launched],
        )
        .await
    }

    async fn update_task(&self, task: &Task, expected_version: u64) -> Result<(), StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.tasks_table)
            .set_item(Some(task_item(task)?))
            .condition_expression("#version = :expected")
            .expression_attribute_names("#version", attr::VERSION)
            .expression_attribute_values(":expected", n(expected_version))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                Err(StoreError::Conflict {
                    entity: "task",
                    id: task.id.to_string(),
                    detail: format!("expected version {expected_version}, but the task changed or does not exist"),
                })
            }
            Err(e) => Err(sdk_error("PutItem tasks", e)),
        }
    }

    async fn insert_task(&self, task: &Task) -> Result<(), StoreError> {
        self.put_new(
            &self.tasks_table,
            task_item(task)?,
            (attr::TASK_ID, "task"),
            task.id.as_str(),
        )
        .await
    }

    async fn list_agent_tasks(&self, agent_id: &str) -> Result<Vec<Task>, StoreError> {
        let mut tasks = Vec::new();
        let mut start_key = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.tasks_table)
                .index_name(index::TASKS_BY_AGENT)
                .key_condition_expression("#agent = :agent")
                .expression_attribute_names("#agent", attr::AGENT_ID)
                .expression_attribute_values(":agent", s(agent_id))
                .set_exclusive_start_key(start_key)
                .send()
                .await
                .map_err(|e| sdk_error("Query tasks by agent", e))?;
            for item in out.items.unwrap_or_default() {
                let task: Task = decode_doc(&item)?;
                // The index is eventually consistent; a task finished a moment ago may still show.
                if task.state().occupies_agent() && task.agent_id.as_deref() == Some(agent_id) {
                    tasks.push(task);
                }
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start_key = Some(key),
                _ => return Ok(tasks),
            }
        }
    }

    async fn list_transitional_tasks(
        &self,
        limit: u32,
        changed_before_ms: u64,
    ) -> Result<Vec<Task>, StoreError> {
        self.query_shards(
            index::TASKS_TRANSITIONAL,
            (attr::TRANSIT_SHARD, attr::TRANSIT_KEY),
            limit,
            changed_before_ms,
            &TRANSITIONAL_STATES,
        )
        .await
    }

    async fn list_active_job_tasks(
        &self,
        job_id: &JobId,
        page: &PageRequest,
    ) -> Result<Page<Task>, StoreError> {
        let key_attrs = [attr::TASK_ID, attr::ACTIVE_JOB_ID, attr::CREATED_KEY];
        let cursor = Cursor::decode(page.cursor.as_deref(), &key_attrs)?;
        cursor.check_partition(attr::ACTIVE_JOB_ID, Some(&job_id.to_string()))?;
        let page_size = page.page_size.clamp(1, PageRequest::MAX_PAGE_SIZE);
        let (items, last_key) = self
            .query_page(
                index::TASKS_ACTIVE_BY_JOB,
                attr::ACTIVE_JOB_ID,
                job_id.as_str(),
                true,
                page_size,
                cursor.key_item(),
            )
            .await?;
        let mut tasks = Vec::with_capacity(items.len());
        for item in &items {
            let task: Task = decode_doc(item)?;
            // The index is eventually consistent; a task finished a moment ago may still show.
            if !task.state().is_terminal() {
                tasks.push(task);
            }
        }
        let next_cursor = match last_key {
            Some(key) => Some(
                Cursor {
                    partition: 0,
                    key: key_of(&key, &key_attrs)?,
                }
                .encode(),
            ),
            None => None,
        };
        Ok(Page {
            items: tasks,
            next_cursor,
        })
    }
}

fn put_if_absent(table: &str, item: Item, key_attr: &str) -> Result<TransactWriteItem, StoreError> {
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(#key)")
        .expression_attribute_names("#key", key_attr)
        .build()
        .map_err(|e| StoreError::Internal(e.to_string()))?;
    Ok(TransactWriteItem::builder().put(put).build())
}

fn idempotency_item_key(key: &IdempotencyKey) -> String {
    // The scope comes first and cannot contain the separator's escape, so scopes never collide.
    format!("{}#{}", key.scope.replace('#', "##"), key.key)
}

/// Sorts by creation time, then id: `0001732500000000#<id>`.
fn created_key(created_at_ms: u64, suffix: &str) -> String {
    format!("{created_at_ms:013}#{suffix}")
}

/// A job's item. `awaiting_tasks` puts it in the sparse index of jobs whose initial tasks are
/// not written yet. Public so that benchmarks write exactly what the store writes.
pub fn job_item(job: &Job, awaiting_tasks: bool) -> Result<Item, StoreError> {
    let descriptor = &job.job_descriptor;
    let mut item = HashMap::from([
        (attr::JOB_ID.to_owned(), s(job.id.as_str())),
        (attr::JOB_STATE.to_owned(), s(job.status.state.as_str())),
        (attr::OWNER.to_owned(), s(&descriptor.owner.team_email)),
        (
            attr::APPLICATION_NAME.to_owned(),
            s(&descriptor.application_name),
        ),
        (attr::JOB_TYPE.to_owned(), s(job.job_type().as_str())),
        (
            attr::CREATED_KEY.to_owned(),
            s(&created_key(job.created_at_ms, job.id.as_str())),
        ),
        (attr::VERSION.to_owned(), n(job.version)),
        (attr::DOC.to_owned(), s(&encode_doc(job)?)),
    ]);
    if awaiting_tasks {
        item.insert(attr::AWAITING_TASKS.to_owned(), s(AWAITING_TASKS_PARTITION));
    }
    Ok(item)
}

/// A task's item, with the sparse index attributes its state calls for.
pub fn task_item(task: &Task) -> Result<Item, StoreError> {
    let mut item = HashMap::from([
        (attr::TASK_ID.to_owned(), s(task.id.as_str())),
        (attr::JOB_ID.to_owned(), s(task.job_id.as_str())),
        (attr::TASK_STATE.to_owned(), s(task.state().as_str())),
        (
            attr::CREATED_KEY.to_owned(),
            s(&created_key(
                task.created_at_ms,
                &format!("{:06}#{}", task.index, task.id),
            )),
        ),
        (attr::VERSION.to_owned(), n(task.version)),
        (attr::DOC.to_owned(), s(&encode_doc(task)?)),
    ]);
    // The sparse indexes: a task is in the pending index only while it waits for placement, and
    // in the by-agent index only while it holds resources there.
    if task.state() == TaskState::Accepted {
        let eligible_ms = task.created_at_ms.max(task.not_before_ms);
        item.insert(
            attr::PENDING_SHARD.to_owned(),
            s(&pending_shard_key(pending_shard(task.id.as_str()))),
        );
        item.insert(
            attr::PENDING_KEY.to_owned(),
            s(&created_key(eligible_ms, task.id.as_str())),
        );
    }
    if let (TaskState::Launched, Some(dispatched_ms)) = (task.state(), task.dispatched_at_ms) {
        item.insert(
            attr::DISPATCH_SHARD.to_owned(),
            s(&pending_shard_key(pending_shard(task.id.as_str()))),
        );
        item.insert(
            attr::DISPATCH_KEY.to_owned(),
            s(&created_key(dispatched_ms, task.id.as_str())),
        );
    }
    if let (true, Some(agent)) = (task.state().occupies_agent(), &task.agent_id) {
        item.insert(attr::AGENT_ID.to_owned(), s(agent));
    }
    // The reconciler's sparse indexes: tasks in a state they should soon leave, keyed by when
    // they entered it; and every task not yet Finished, by job.
    if TRANSITIONAL_STATES.contains(&task.state()) {
        item.insert(
            attr::TRANSIT_SHARD.to_owned(),
            s(&pending_shard_key(pending_shard(task.id.as_str()))),
        );
        item.insert(
            attr::TRANSIT_KEY.to_owned(),
            s(&created_key(task.status.timestamp_ms, task.id.as_str())),
        );
    }
    if !task.state().is_terminal() {
        item.insert(attr::ACTIVE_JOB_ID.to_owned(), s(task.job_id.as_str()));
    }
    Ok(item)
}

fn encode_doc<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Internal(format!("cannot encode record: {e}")))
}

fn decode_doc<T: for<'de> Deserialize<'de>>(item: &Item) -> Result<T, StoreError> {
    let doc = string_attr(item, attr::DOC)?;
    serde_json::from_str(&doc)
        .map_err(|e| StoreError::Internal(format!("corrupt stored record: {e}")))
}

fn string_attr(item: &Item, name: &str) -> Result<String, StoreError> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .cloned()
        .ok_or_else(|| StoreError::Internal(format!("stored item lacks string attribute {name}")))
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn key_of(item: &Item, key_attrs: &[&str]) -> Result<Vec<(String, String)>, StoreError> {
    key_attrs
        .iter()
        .map(|name| Ok(((*name).to_owned(), string_attr(item, name)?)))
        .collect()
}

/// Where a listing stopped: which partition of the query plan, and the last key returned there.
/// Encoded as URL-safe base64 of JSON, so it is opaque to clients but checkable on the way back.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Cursor {
    #[serde(rename = "p")]
    partition: usize,
    #[serde(rename = "k")]
    key: Vec<(String, String)>,
}

impl Cursor {
    fn decode(text: Option<&str>, key_attrs: &[&str]) -> Result<Cursor, StoreError> {
        let Some(text) = text.filter(|t| !t.is_empty()) else {
            return Ok(Cursor::default());
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| StoreError::InvalidCursor("not base64url".to_owned()))?;
        let cursor: Cursor = serde_json::from_slice(&bytes)
            .map_err(|_| StoreError::InvalidCursor("not a cursor of this listing".to_owned()))?;
        let names: Vec<&str> = cursor.key.iter().map(|(k, _)| k.as_str()).collect();
        if names != key_attrs {
            return Err(StoreError::InvalidCursor(
                "not a cursor of this listing".to_owned(),
            ));
        }
        Ok(cursor)
    }

    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// A cursor from a listing with other filters (or forged) must not reach DynamoDB, which
    /// refuses a start key outside the queried partition with a ValidationException.
    fn check_partition(&self, attribute: &str, queried: Option<&String>) -> Result<(), StoreError> {
        if self.key.is_empty() {
            return Ok(());
        }
        let value = self
            .key
            .iter()
            .find(|(k, _)| k == attribute)
            .map(|(_, v)| v);
        if value.is_none() || value != queried {
            return Err(StoreError::InvalidCursor(
                "it belongs to a listing with other filters".to_owned(),
            ));
        }
        Ok(())
    }

    fn key_item(&self) -> Option<Item> {
        (!self.key.is_empty()).then(|| self.key.iter().map(|(k, v)| (k.clone(), s(v))).collect())
    }
}

/// Maps an SDK error to the store's error: throttling and transport trouble are retryable
/// (`Unavailable`), and so is any HTTP 5xx answer, whose body may not even name an error code;
/// anything else is `Internal` with the operation and AWS's code.
pub(crate) fn sdk_error<E>(
    op: &str,
    err: SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    const RETRYABLE: [&str; 6] = [
        "ThrottlingException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionInProgressException",
    ];
    match &err {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            StoreError::Unavailable(format!(
                "{op}: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(&err)
            ))
        }
        _ => {
            let code = err.code().unwrap_or("Unknown").to_owned();
            let message = err.message().unwrap_or_default().to_owned();
            let server_error = err
                .raw_response()
                .is_some_and(|response| response.status().is_server_error());
            if server_error || RETRYABLE.contains(&code.as_str()) {
                StoreError::Unavailable(format!("{op}: {code}: {message}"))
            } else {
                StoreError::Internal(format!("{op}: {code}: {message}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_a_foreign_one_is_refused() {
        let attrs = [attr::JOB_ID, attr::JOB_STATE, attr::CREATED_KEY];
        let cursor = Cursor {
            partition: 2,
            key: attrs
                .iter()
                .map(|a| ((*a).to_owned(), "v".to_owned()))
                .collect(),
        };
        let decoded = Cursor::decode(Some(&cursor.encode()), &attrs).unwrap();
        assert_eq!(decoded.partition, 2);
        assert_eq!(decoded.key, cursor.key);

        let other = [attr::TASK_ID, attr::JOB_ID, attr::CREATED_KEY];
        assert!(matches!(
            Cursor::decode(Some(&cursor.encode()), &other),
            Err(StoreError::InvalidCursor(_))
        ));
        assert!(matches!(
            Cursor::decode(Some("!!!"), &attrs),
            Err(StoreError::InvalidCursor(_))
        ));
        assert!(matches!(
            Cursor::decode(Some(&URL_SAFE_NO_PAD.encode(b"{}")), &attrs),
            Err(StoreError::InvalidCursor(_))
        ));
    }

    #[test]
    fn idempotency_scopes_cannot_collide() {
        let key = |scope: &str, key: &str| IdempotencyKey {
            scope: scope.to_owned(),
            key: key.to_owned(),
            request_hash: String::new(),
        };
        assert_ne!(
            idempotency_item_key(&key("a#b", "c")),
            idempotency_item_key(&key("a", "b#c"))
        );
    }
}
