//! The job store on DynamoDB.
//!
//! Each job and task is one item: the whole record as JSON in `doc`, plus the top-level attributes
//! that keys, indexes and conditions need. Writes are optimistic: every update is conditional on
//! the `version` that was read, so a lost race is a `Conflict` and never an overwrite.
//!
//! Here the store and its writes; items in `codec`, the listings' cursor in `cursor`, their
//! index reads in `queries`, and conditional writes and SDK errors in `conditional`.

mod codec;
pub(crate) mod conditional;
mod cursor;
mod events;
mod queries;
mod results;
mod usage;

use std::collections::{BTreeMap, HashMap, HashSet};

use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Put, TransactWriteItem, Update};
use aws_sdk_dynamodb::Client;
use titus_core::placement::PlacementResult;
use titus_core::ports::{
    CreateOutcome, IdempotencyKey, JobFilter, Page, PageRequest, MAX_INITIAL_TASKS_PER_WRITE,
};
use titus_core::quota::{Usage, UsageChange};
use titus_core::{Job, JobId, JobState, JobStore, StoreError, Task, TaskId, TaskState};

use crate::resources::{attr, index, Names, AWAITING_TASKS_PARTITION, IDEMPOTENCY_TTL_SECS};
use codec::{decode_doc, idempotency_item_key, n, s, string_attr, Item};
use conditional::{conflict_if_refused, refused_at, transact_write, Transacted};
use cursor::{key_item, key_of, Cursor};

pub use codec::{job_item, task_item, TRANSITIONAL_STATES};
pub(crate) use conditional::sdk_error;
pub use titus_core::ports::MAX_TRANSACTION_ITEMS;

/// How many queries one page of a filtered listing may take before it returns what it has.
const MAX_QUERIES_PER_PAGE: usize = 20;

/// The job store backed by DynamoDB tables named for one stage.
#[derive(Debug, Clone)]
pub struct DynamoJobStore {
    client: Client,
    jobs_table: String,
    tasks_table: String,
    idempotency_table: String,
    usage_table: String,
    results_table: String,
    events_table: String,
}

impl DynamoJobStore {
    pub fn new(client: Client, names: &Names) -> DynamoJobStore {
        DynamoJobStore {
            client,
            jobs_table: names.jobs_table(),
            tasks_table: names.tasks_table(),
            idempotency_table: names.idempotency_table(),
            usage_table: names.quota_usage_table(),
            results_table: names.placement_results_table(),
            events_table: names.events_table(),
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
        conflict_if_refused(result, &format!("PutItem {table}"), (entity, id), || {
            format!("a {entity} with this id already exists")
        })?;
        Ok(())
    }

    /// A create that changes usage: the idempotency record (with a key), the job and the usage
    /// records in one transaction.
    async fn create_charged(
        &self,
        job: &Job,
        item: Item,
        idempotency: Option<&IdempotencyKey>,
        usage: &UsageChange,
    ) -> Result<CreateOutcome, StoreError> {
        if let Some(refused) = usage::beyond_any_use(&self.client, &self.usage_table, usage).await?
        {
            return Err(refused);
        }
        let mut items = Vec::new();
        if let Some(key) = idempotency {
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
            items.push(put_if_absent(
                &self.idempotency_table,
                record,
                attr::IDEMPOTENCY_KEY,
            )?);
        }
        let job_index = items.len();
        items.push(put_if_absent(&self.jobs_table, item, attr::JOB_ID)?);
        items.extend(usage::updates(&self.usage_table, usage)?);
        match transact_write(&self.client, items, "TransactWriteItems create job").await? {
            Transacted::Committed => Ok(CreateOutcome::Created(job.clone())),
            // A request with the same key came first: it was charged then.
            Transacted::Refused(codes) if idempotency.is_some() && refused_at(&codes, 0) => {
                self.existing(idempotency.expect("checked")).await
            }
            Transacted::Refused(codes) if refused_at(&codes, job_index) => {
                Err(StoreError::Conflict {
                    entity: "job",
                    id: job.id.to_string(),
                    detail: format!("a job with this id already exists ({codes:?})"),
                })
            }
            Transacted::Refused(codes) => Err(usage::refusal(
                &self.client,
                &self.usage_table,
                usage,
                &codes,
                job_index + 1,
            )
            .await?
            .unwrap_or_else(|| StoreError::Internal(format!("create job refused: {codes:?}")))),
        }
    }

    /// A job update that changes usage: the job on its version and the usage records in one
    /// transaction.
    async fn update_charged(
        &self,
        job: &Job,
        expected_version: u64,
        usage: &UsageChange,
    ) -> Result<(), StoreError> {
        if let Some(refused) = usage::beyond_any_use(&self.client, &self.usage_table, usage).await?
        {
            return Err(refused);
        }
        let item = job_item(job, false)?;
        let value = |name: &str| {
            item.get(name)
                .cloned()
                .unwrap_or(AttributeValue::Null(true))
        };
        let update = Update::builder()
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
            .build()
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let mut items = vec![TransactWriteItem::builder().update(update).build()];
        items.extend(usage::updates(&self.usage_table, usage)?);
        match transact_write(&self.client, items, "TransactWriteItems update job").await? {
            Transacted::Committed => Ok(()),
            Transacted::Refused(codes) if refused_at(&codes, 0) => Err(StoreError::Conflict {
                entity: "job",
                id: job.id.to_string(),
                detail: format!(
                    "expected version {expected_version}, but the job changed or does not exist"
                ),
            }),
            Transacted::Refused(codes) => {
                Err(
                    usage::refusal(&self.client, &self.usage_table, usage, &codes, 1)
                        .await?
                        .unwrap_or_else(|| {
                            StoreError::Internal(format!("update job refused: {codes:?}"))
                        }),
                )
            }
        }
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
}

impl JobStore for DynamoJobStore {
    async fn put_events(&self, events: &[titus_core::events::Event]) -> Result<(), StoreError> {
        events::write(&self.client, &self.events_table, events).await
    }

    async fn read_events(
        &self,
        feed_key: &str,
        after: &titus_core::events::FeedCursor,
        limit: u32,
    ) -> Result<Vec<titus_core::events::Event>, StoreError> {
        events::read(&self.client, &self.events_table, feed_key, after, limit).await
    }

    async fn put_placement_results(
        &self,
        results: &[PlacementResult],
        cleared: &[JobId],
    ) -> Result<(), StoreError> {
        results::write(&self.client, &self.results_table, results, cleared).await
    }

    async fn get_placement_result(
        &self,
        job_id: &JobId,
    ) -> Result<Option<PlacementResult>, StoreError> {
        results::read(&self.client, &self.results_table, job_id).await
    }

    async fn create_job_charged(
        &self,
        job: &Job,
        idempotency: Option<&IdempotencyKey>,
        usage: &UsageChange,
    ) -> Result<CreateOutcome, StoreError> {
        let item = job_item(job, true)?;
        if !usage.is_none() {
            return self.create_charged(job, item, idempotency, usage).await;
        }
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
        match transact_write(&self.client, items, "TransactWriteItems create job").await? {
            Transacted::Committed => Ok(CreateOutcome::Created(job.clone())),
            // The record is the first item: a request with the same key came first.
            Transacted::Refused(codes) if refused_at(&codes, 0) => self.existing(key).await,
            Transacted::Refused(codes) => Err(StoreError::Conflict {
                entity: "job",
                id: job.id.to_string(),
                detail: format!("a job with this id already exists ({codes:?})"),
            }),
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
        match transact_write(&self.client, items, "TransactWriteItems initial tasks").await? {
            Transacted::Committed => Ok(()),
            Transacted::Refused(codes) => Err(StoreError::Conflict {
                entity: "job",
                id: job.id.to_string(),
                detail: format!(
                    "the job changed, is no longer awaiting its tasks, or a task exists \
                     ({codes:?})"
                ),
            }),
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
        cursor.check_partition(
            partition_attr,
            partitions.get(cursor.partition).map(String::as_str),
        )?;
        let page_size = page.page_size.clamp(1, PageRequest::MAX_PAGE_SIZE);
        let mut jobs = Vec::new();
        // Once the page is full, where it ends: the listing reads on for one more match, so a
        // page says it has more only when it has (a walk never ends with an empty page).
        let mut full_at: Option<Cursor> = None;
        let mut queries = 0;
        while cursor.partition < partitions.len() {
            if queries == MAX_QUERIES_PER_PAGE {
                // Out of reads for this answer: a next page may turn out empty.
                return Ok(Page {
                    items: jobs,
                    next_cursor: Some(full_at.unwrap_or(cursor).encode()),
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
                    key_item(&cursor),
                )
                .await?;
            for item in items {
                let job: Job = decode_doc(&item)?;
                if filter.matches(&job) {
                    if let Some(end) = full_at {
                        return Ok(Page {
                            items: jobs,
                            next_cursor: Some(end.encode()),
                        });
                    }
                    jobs.push(job);
                    if jobs.len() == page_size as usize {
                        full_at = Some(Cursor {
                            partition: cursor.partition,
                            key: key_of(&item, &key_attrs)?,
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

    async fn list_usage(&self) -> Result<BTreeMap<String, Usage>, StoreError> {
        usage::list(&self.client, &self.usage_table).await
    }

    async fn update_job_charged(
        &self,
        job: &Job,
        expected_version: u64,
        usage: &UsageChange,
    ) -> Result<(), StoreError> {
        if !usage.is_none() {
            return self.update_charged(job, expected_version, usage).await;
        }
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
        conflict_if_refused(result, "UpdateItem jobs", ("job", job.id.as_str()), || {
            format!("expected version {expected_version}, but the job changed or does not exist")
        })?;
        Ok(())
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
        cursor.check_partition(attr::JOB_ID, Some(job_id.as_str()))?;
        let page_size = page.page_size.clamp(1, PageRequest::MAX_PAGE_SIZE);
        // One item more than the page, so a page says it has more only when it has.
        let (mut items, last_key) = self
            .query_page(
                index::TASKS_BY_JOB,
                attr::JOB_ID,
                job_id.as_str(),
                true,
                page_size + 1,
                key_item(&cursor),
            )
            .await?;
        let end = if items.len() > page_size as usize {
            items.truncate(page_size as usize);
            items.last().cloned()
        } else {
            // Fewer than asked and a key: DynamoDB stopped at its 1 MB limit.
            last_key
        };
        let tasks = items
            .iter()
            .map(decode_doc)
            .collect::<Result<Vec<Task>, _>>()?;
        let next_cursor = match end {
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
        conflict_if_refused(result, "PutItem tasks", ("task", task.id.as_str()), || {
            format!("expected version {expected_version}, but the task changed or does not exist")
        })?;
        Ok(())
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
        cursor.check_partition(attr::ACTIVE_JOB_ID, Some(job_id.as_str()))?;
        let page_size = page.page_size.clamp(1, PageRequest::MAX_PAGE_SIZE);
        let (items, last_key) = self
            .query_page(
                index::TASKS_ACTIVE_BY_JOB,
                attr::ACTIVE_JOB_ID,
                job_id.as_str(),
                true,
                page_size,
                key_item(&cursor),
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
