//! The job store: jobs and tasks, with the DynamoDB adapter's conditional writes and their
//! conflicts (a create with an idempotency key is a transaction with its record; initial tasks
//! are a transaction with a condition on the job), consistent reads, and the listings of
//! [`crate::listings`], served from the lagging indexes.

use std::collections::{BTreeMap, HashSet};

use titus_core::events::{Event, FeedCursor};
use titus_core::placement::PlacementResult;
use titus_core::ports::{
    check_events_write, check_placement_results_write, CreateOutcome, IdempotencyKey, JobFilter,
    Page, PageRequest, MAX_INITIAL_TASKS_PER_WRITE,
};
use titus_core::quota::{QuotaExceeded, Usage, UsageChange};
use titus_core::{Job, JobId, JobStore, StoreError, Task, TaskId};

use crate::items::JobItem;
use crate::listings;
use crate::metering::Consistency;
use crate::transaction::{refused_at, transact, Action, TableName, Transacted};
use crate::world::{IdempotencyRecord, MemoryWorld, State};

/// DynamoDB's limit on keys in one BatchGetItem call.
const MAX_BATCH_GET_KEYS: usize = 100;

/// The job store of a [`MemoryWorld`].
#[derive(Debug, Clone)]
pub struct MemoryJobStore {
    world: MemoryWorld,
}

impl MemoryJobStore {
    pub(crate) fn new(world: MemoryWorld) -> MemoryJobStore {
        MemoryJobStore { world }
    }
}

/// The idempotency record's key: the scope first, escaped, so two scopes never collide.
fn idempotency_item_key(key: &IdempotencyKey) -> String {
    format!("{}#{}", key.scope.replace('#', "##"), key.key)
}

fn conflict(entity: &'static str, id: &str, detail: String) -> StoreError {
    StoreError::Conflict {
        entity,
        id: id.to_owned(),
        detail,
    }
}

/// A consistent GetItem of a job.
fn read_job(state: &mut State, id: &str) -> Option<JobItem> {
    state.meter.request("DynamoDB.GetItem");
    let row = state.jobs.get(id).cloned();
    state
        .meter
        .read(row.as_ref().map_or(0, |r| r.size), Consistency::Strong);
    row.map(|r| (*r.doc).clone())
}

/// The path of a repeated request: the job the first request created.
fn existing(state: &mut State, key: &IdempotencyKey) -> Result<CreateOutcome, StoreError> {
    state.meter.request("DynamoDB.GetItem");
    state.meter.read(150, Consistency::Strong);
    let record = state
        .idempotency
        .get(&idempotency_item_key(key))
        .cloned()
        .ok_or_else(|| {
            StoreError::Internal(format!(
                "idempotency record for key {:?} vanished after its write was refused",
                key.key
            ))
        })?;
    let job_id = JobId::from_string(record.job_id.as_str());
    if record.request_hash != key.request_hash {
        return Err(StoreError::IdempotencyMismatch {
            key: key.key.clone(),
            job_id,
        });
    }
    let item = read_job(state, job_id.as_str()).ok_or_else(|| {
        StoreError::Internal(format!("idempotency record points at missing job {job_id}"))
    })?;
    Ok(CreateOutcome::Existing(item.job))
}

/// The quota a change passes on its own, before any use.
fn beyond_any_use(state: &State, usage: &UsageChange) -> Option<StoreError> {
    let (scope, dimension, limit) = usage.beyond_any_use()?;
    let held = state.usage.get(&scope.key()).copied().unwrap_or_default();
    Some(StoreError::QuotaExceeded(QuotaExceeded {
        scope: scope.clone(),
        dimension,
        limit,
        used: held.get(dimension),
        requested: usage.delta.get(dimension),
    }))
}

/// One Update per scope of `usage`, as the DynamoDB adapter writes them: `ADD` on condition that
/// every increased dimension stays within its limit.
fn usage_actions<'a>(usage: &'a UsageChange) -> Vec<Action<'a>> {
    if usage.is_none() {
        return Vec::new();
    }
    usage
        .scopes
        .iter()
        .map(|charge| {
            let key = charge.scope.key();
            let read_key = key.clone();
            Action::write(
                TableName::QuotaUsage,
                key.clone(),
                move |s: &State| {
                    let held = s.usage.get(&read_key).copied().unwrap_or_default();
                    QuotaExceeded::find(usage, &charge.scope, &held).is_none()
                },
                move |s: &mut State| {
                    let held = s.usage.entry(key).or_default();
                    *held = held.plus(&usage.delta);
                },
            )
        })
        .collect()
}

/// Why the usage actions of a refused transaction (from `first` on) were refused.
fn usage_refusal(state: &State, usage: &UsageChange, codes: &[&str], first: usize) -> StoreError {
    for (i, charge) in usage.scopes.iter().enumerate() {
        if refused_at(codes, first + i) {
            let held = state
                .usage
                .get(&charge.scope.key())
                .copied()
                .unwrap_or_default();
            if let Some(exceeded) = QuotaExceeded::find(usage, &charge.scope, &held) {
                return StoreError::QuotaExceeded(exceeded);
            }
        }
    }
    StoreError::Internal(format!("transaction refused: {codes:?}"))
}

fn create_job(
    state: &mut State,
    job: &Job,
    idempotency: Option<&IdempotencyKey>,
    usage: &UsageChange,
) -> Result<CreateOutcome, StoreError> {
    let job_id = job.id.to_string();
    let item = JobItem {
        job: job.clone(),
        awaiting: true,
    };
    if let Some(refused) = beyond_any_use(state, usage) {
        return Err(refused);
    }
    if !usage.is_none() {
        let mut actions = Vec::new();
        if let Some(key) = idempotency {
            let record_key = idempotency_item_key(key);
            let record = IdempotencyRecord {
                job_id: job_id.clone(),
                request_hash: key.request_hash.clone(),
            };
            let check_key = record_key.clone();
            actions.push(Action::write(
                TableName::Idempotency,
                record_key.clone(),
                move |s: &State| !s.idempotency.contains_key(&check_key),
                move |s: &mut State| {
                    s.idempotency.insert(record_key, record);
                },
            ));
        }
        let job_index = actions.len();
        let check_id = job_id.clone();
        actions.push(Action::write(
            TableName::Jobs,
            job_id.as_str(),
            move |s: &State| s.jobs.get(&check_id).is_none(),
            |s: &mut State| {
                s.put_job(item);
            },
        ));
        actions.extend(usage_actions(usage));
        let outcome = transact(state, actions)
            .map_err(|e| StoreError::Internal(format!("TransactWriteItems create job: {e}")))?;
        return match outcome {
            Transacted::Committed => Ok(CreateOutcome::Created(job.clone())),
            Transacted::Refused(codes) if idempotency.is_some() && refused_at(&codes, 0) => {
                existing(state, idempotency.expect("checked"))
            }
            Transacted::Refused(codes) if refused_at(&codes, job_index) => Err(conflict(
                "job",
                &job_id,
                format!("a job with this id already exists ({codes:?})"),
            )),
            Transacted::Refused(codes) => Err(usage_refusal(state, usage, &codes, job_index + 1)),
        };
    }
    let Some(key) = idempotency else {
        state.meter.request("DynamoDB.PutItem");
        if state.jobs.get(&job_id).is_some() {
            state.meter.write(0, crate::pages::item_size(&item), false);
            return Err(conflict(
                "job",
                &job_id,
                "a job with this id already exists".to_owned(),
            ));
        }
        let (before, after) = state.put_job(item);
        state.meter.write(before, after, false);
        return Ok(CreateOutcome::Created(job.clone()));
    };
    let record_key = idempotency_item_key(key);
    let record = IdempotencyRecord {
        job_id: job_id.clone(),
        request_hash: key.request_hash.clone(),
    };
    let actions = vec![
        Action::write(
            TableName::Idempotency,
            record_key.as_str(),
            |s: &State| !s.idempotency.contains_key(&record_key),
            |s: &mut State| {
                s.idempotency.insert(record_key.clone(), record);
            },
        ),
        Action::write(
            TableName::Jobs,
            job_id.as_str(),
            |s: &State| s.jobs.get(&job_id).is_none(),
            |s: &mut State| {
                s.put_job(item);
            },
        ),
    ];
    let outcome = transact(state, actions)
        .map_err(|e| StoreError::Internal(format!("TransactWriteItems create job: {e}")))?;
    match outcome {
        Transacted::Committed => Ok(CreateOutcome::Created(job.clone())),
        // The record is the first action: a request with the same key came first.
        Transacted::Refused(codes) if refused_at(&codes, 0) => existing(state, key),
        Transacted::Refused(codes) => Err(conflict(
            "job",
            &job_id,
            format!("a job with this id already exists ({codes:?})"),
        )),
    }
}

fn write_initial_tasks(
    state: &mut State,
    job: &Job,
    tasks: &[Task],
    clear_mark: bool,
) -> Result<(), StoreError> {
    if tasks.len() > MAX_INITIAL_TASKS_PER_WRITE {
        return Err(StoreError::Internal(format!(
            "{} initial tasks in one write exceed {MAX_INITIAL_TASKS_PER_WRITE}; expected them \
             written in chunks",
            tasks.len()
        )));
    }
    let job_id = job.id.to_string();
    let job_holds = |s: &State| {
        s.jobs
            .get(&job_id)
            .is_some_and(|r| r.doc.job.version == job.version && r.doc.awaiting)
    };
    let mut actions = Vec::with_capacity(tasks.len() + 1);
    actions.push(if clear_mark {
        Action::write(
            TableName::Jobs,
            job_id.as_str(),
            job_holds,
            |s: &mut State| {
                if let Some(row) = s.jobs.get(&job_id) {
                    let item = JobItem {
                        job: row.doc.job.clone(),
                        awaiting: false,
                    };
                    s.put_job(item);
                }
            },
        )
    } else {
        Action::check(TableName::Jobs, job_id.as_str(), job_holds)
    });
    for task in tasks {
        let id = task.id.to_string();
        let absent = {
            let id = id.clone();
            move |s: &State| s.tasks.get(&id).is_none()
        };
        actions.push(Action::write(
            TableName::Tasks,
            id,
            absent,
            move |s: &mut State| {
                s.put_task(task.clone());
            },
        ));
    }
    let outcome = transact(state, actions)
        .map_err(|e| StoreError::Internal(format!("TransactWriteItems initial tasks: {e}")))?;
    match outcome {
        Transacted::Committed => Ok(()),
        Transacted::Refused(codes) => Err(conflict(
            "job",
            &job_id,
            format!(
                "the job changed, is no longer awaiting its tasks, or a task exists ({codes:?})"
            ),
        )),
    }
}

fn update_job(
    state: &mut State,
    job: &Job,
    expected_version: u64,
    usage: &UsageChange,
) -> Result<(), StoreError> {
    let id = job.id.to_string();
    if let Some(refused) = beyond_any_use(state, usage) {
        return Err(refused);
    }
    if !usage.is_none() {
        let awaiting = state.jobs.get(&id).is_some_and(|r| r.doc.awaiting);
        let check_id = id.clone();
        let mut actions = vec![Action::write(
            TableName::Jobs,
            id.as_str(),
            move |s: &State| {
                s.jobs
                    .get(&check_id)
                    .is_some_and(|r| r.doc.job.version == expected_version)
            },
            move |s: &mut State| {
                s.put_job(JobItem {
                    job: job.clone(),
                    awaiting,
                });
            },
        )];
        actions.extend(usage_actions(usage));
        let outcome = transact(state, actions)
            .map_err(|e| StoreError::Internal(format!("TransactWriteItems update job: {e}")))?;
        return match outcome {
            Transacted::Committed => Ok(()),
            Transacted::Refused(codes) if refused_at(&codes, 0) => Err(conflict(
                "job",
                &id,
                format!(
                    "expected version {expected_version}, but the job changed or does not exist"
                ),
            )),
            Transacted::Refused(codes) => Err(usage_refusal(state, usage, &codes, 1)),
        };
    }
    state.meter.request("DynamoDB.UpdateItem");
    let current = state.jobs.get(&id).cloned();
    let Some(current) = current.filter(|r| r.doc.job.version == expected_version) else {
        state.meter.write(0, 1, false);
        return Err(conflict(
            "job",
            &id,
            format!("expected version {expected_version}, but the job changed or does not exist"),
        ));
    };
    // An update keeps the item's other attributes: the awaiting mark stays as it is.
    let (before, after) = state.put_job(JobItem {
        job: job.clone(),
        awaiting: current.doc.awaiting,
    });
    state.meter.write(before, after, false);
    Ok(())
}

fn get_task(state: &mut State, id: &TaskId) -> Option<Task> {
    state.meter.request("DynamoDB.GetItem");
    let row = state.tasks.get(id.as_str()).cloned();
    state
        .meter
        .read(row.as_ref().map_or(0, |r| r.size), Consistency::Strong);
    row.map(|r| (*r.doc).clone())
}

fn existing_tasks(state: &mut State, ids: &[&TaskId]) -> HashSet<TaskId> {
    let mut found = HashSet::new();
    for chunk in ids.chunks(MAX_BATCH_GET_KEYS) {
        state.meter.request("DynamoDB.BatchGetItem");
        for id in chunk {
            let size = state.tasks.get(id.as_str()).map(|r| r.size);
            state.meter.read(size.unwrap_or(0), Consistency::Strong);
            if size.is_some() {
                found.insert((*id).clone());
            }
        }
    }
    found
}

fn update_task(state: &mut State, task: &Task, expected_version: u64) -> Result<(), StoreError> {
    let id = task.id.to_string();
    state.meter.request("DynamoDB.PutItem");
    let holds = state
        .tasks
        .get(&id)
        .is_some_and(|r| r.doc.version == expected_version);
    if !holds {
        state.meter.write(0, crate::pages::item_size(task), false);
        return Err(conflict(
            "task",
            &id,
            format!("expected version {expected_version}, but the task changed or does not exist"),
        ));
    }
    let (before, after) = state.put_task(task.clone());
    state.meter.write(before, after, false);
    Ok(())
}

fn insert_task(state: &mut State, task: &Task) -> Result<(), StoreError> {
    let id = task.id.to_string();
    state.meter.request("DynamoDB.PutItem");
    if state.tasks.get(&id).is_some() {
        state.meter.write(0, crate::pages::item_size(task), false);
        return Err(conflict(
            "task",
            &id,
            "a task with this id already exists".to_owned(),
        ));
    }
    let (before, after) = state.put_task(task.clone());
    state.meter.write(before, after, false);
    Ok(())
}

impl JobStore for MemoryJobStore {
    async fn create_job_charged(
        &self,
        job: &Job,
        idempotency: Option<&IdempotencyKey>,
        usage: &UsageChange,
    ) -> Result<CreateOutcome, StoreError> {
        self.world
            .run("jobs.create_job", |s| {
                create_job(s, job, idempotency, usage)
            })
            .await
    }

    async fn list_usage(&self) -> Result<BTreeMap<String, Usage>, StoreError> {
        self.world
            .run("jobs.list_usage", |s| {
                s.meter.request("DynamoDB.Scan");
                s.meter.read(100 * s.usage.len(), Consistency::Strong);
                Ok(s.usage.clone())
            })
            .await
    }

    async fn put_placement_results(
        &self,
        results: &[PlacementResult],
        cleared: &[JobId],
    ) -> Result<(), StoreError> {
        check_placement_results_write(results.len(), cleared.len())?;
        self.world
            .run("jobs.put_placement_results", |s| {
                // BatchWriteItem, 25 requests per call.
                let calls = (results.len() + cleared.len()).div_ceil(25);
                (0..calls).for_each(|_| s.meter.request("DynamoDB.BatchWriteItem"));
                for result in results {
                    let size = serde_json::to_vec(result).map_or(0, |doc| doc.len() + 64);
                    let key = result.job_id.to_string();
                    let before = s.placement_results.get(&key).map_or(0, |(_, n)| *n);
                    s.meter.write(before, size, false);
                    s.placement_results.insert(key, (result.clone(), size));
                }
                // A job both cleared and written keeps the result: results are what a tick found.
                for job_id in cleared
                    .iter()
                    .filter(|id| !results.iter().any(|r| r.job_id == **id))
                {
                    let before = s
                        .placement_results
                        .remove(job_id.as_str())
                        .map_or(0, |(_, n)| n);
                    s.meter.write(before, 0, false);
                }
                Ok(())
            })
            .await
    }

    async fn put_events(&self, events: &[Event]) -> Result<(), StoreError> {
        check_events_write(events.len())?;
        self.world
            .run("jobs.put_events", |s| {
                // BatchWriteItem, 25 items (12 events of two items) per call.
                (0..(events.len() * 2).div_ceil(25))
                    .for_each(|_| s.meter.request("DynamoDB.BatchWriteItem"));
                for event in events {
                    let size = serde_json::to_vec(event).map_or(0, |doc| doc.len() + 96);
                    for feed_key in event.feed_keys() {
                        let key = (feed_key, event.event_key());
                        let before = s.events.get(&key).map_or(0, |(_, n)| *n);
                        s.meter.write(before, size, false);
                        s.events.insert(key, (event.clone(), size));
                    }
                }
                Ok(())
            })
            .await
    }

    async fn read_events(
        &self,
        feed_key: &str,
        after: &FeedCursor,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        self.world
            .run("jobs.read_events", |s| {
                s.meter.request("DynamoDB.Query");
                let from = (feed_key.to_owned(), after.as_str().to_owned());
                let rows: Vec<&(Event, usize)> = s
                    .events
                    .range((std::ops::Bound::Excluded(from), std::ops::Bound::Unbounded))
                    .take_while(|((key, _), _)| key == feed_key)
                    .take(limit as usize)
                    .map(|(_, row)| row)
                    .collect();
                s.meter
                    .read(rows.iter().map(|(_, n)| *n).sum(), Consistency::Strong);
                Ok(rows.into_iter().map(|(event, _)| event.clone()).collect())
            })
            .await
    }

    async fn get_placement_result(
        &self,
        job_id: &JobId,
    ) -> Result<Option<PlacementResult>, StoreError> {
        self.world
            .run("jobs.get_placement_result", |s| {
                s.meter.request("DynamoDB.GetItem");
                let row = s.placement_results.get(job_id.as_str()).cloned();
                s.meter
                    .read(row.as_ref().map_or(0, |(_, n)| *n), Consistency::Eventual);
                Ok(row.map(|(result, _)| result))
            })
            .await
    }

    async fn list_awaiting_jobs(
        &self,
        limit: u32,
        created_before_ms: u64,
    ) -> Result<Vec<JobId>, StoreError> {
        self.world
            .run("jobs.list_awaiting_jobs", |s| {
                Ok(listings::awaiting_jobs(s, limit, created_before_ms))
            })
            .await
    }

    async fn get_job_awaiting(&self, id: &JobId) -> Result<Option<(Job, bool)>, StoreError> {
        self.world
            .run("jobs.get_job_awaiting", |s| {
                Ok(read_job(s, id.as_str()).map(|item| (item.job, item.awaiting)))
            })
            .await
    }

    async fn existing_tasks(&self, ids: &[&TaskId]) -> Result<HashSet<TaskId>, StoreError> {
        self.world
            .run("jobs.existing_tasks", |s| Ok(existing_tasks(s, ids)))
            .await
    }

    async fn write_initial_tasks(
        &self,
        job: &Job,
        tasks: &[Task],
        clear_mark: bool,
    ) -> Result<(), StoreError> {
        self.world
            .run("jobs.write_initial_tasks", |s| {
                write_initial_tasks(s, job, tasks, clear_mark)
            })
            .await
    }

    async fn get_job(&self, id: &JobId) -> Result<Option<Job>, StoreError> {
        self.world
            .run("jobs.get_job", |s| {
                Ok(read_job(s, id.as_str()).map(|item| item.job))
            })
            .await
    }

    async fn list_jobs(
        &self,
        filter: &JobFilter,
        page: &PageRequest,
    ) -> Result<Page<Job>, StoreError> {
        self.world
            .run("jobs.list_jobs", |s| listings::jobs(s, filter, page))
            .await
    }

    async fn update_job_charged(
        &self,
        job: &Job,
        expected_version: u64,
        usage: &UsageChange,
    ) -> Result<(), StoreError> {
        self.world
            .run("jobs.update_job", |s| {
                update_job(s, job, expected_version, usage)
            })
            .await
    }

    async fn get_task(&self, id: &TaskId) -> Result<Option<Task>, StoreError> {
        self.world
            .run("jobs.get_task", |s| Ok(get_task(s, id)))
            .await
    }

    async fn list_job_tasks(
        &self,
        job_id: &JobId,
        page: &PageRequest,
    ) -> Result<Page<Task>, StoreError> {
        self.world
            .run("jobs.list_job_tasks", |s| {
                listings::job_tasks(s, job_id, page, false)
            })
            .await
    }

    async fn list_pending_tasks(&self, limit: u32, now_ms: u64) -> Result<Vec<Task>, StoreError> {
        self.world
            .run("jobs.list_pending_tasks", |s| {
                Ok(listings::pending_tasks(s, limit, now_ms))
            })
            .await
    }

    async fn list_unacknowledged_tasks(
        &self,
        limit: u32,
        dispatched_before_ms: u64,
    ) -> Result<Vec<Task>, StoreError> {
        self.world
            .run("jobs.list_unacknowledged_tasks", |s| {
                Ok(listings::unacknowledged_tasks(
                    s,
                    limit,
                    dispatched_before_ms,
                ))
            })
            .await
    }

    async fn update_task(&self, task: &Task, expected_version: u64) -> Result<(), StoreError> {
        self.world
            .run("jobs.update_task", |s| {
                update_task(s, task, expected_version)
            })
            .await
    }

    async fn insert_task(&self, task: &Task) -> Result<(), StoreError> {
        self.world
            .run("jobs.insert_task", |s| insert_task(s, task))
            .await
    }

    async fn list_agent_tasks(&self, agent_id: &str) -> Result<Vec<Task>, StoreError> {
        self.world
            .run("jobs.list_agent_tasks", |s| {
                Ok(listings::agent_tasks(s, agent_id))
            })
            .await
    }

    async fn list_transitional_tasks(
        &self,
        limit: u32,
        changed_before_ms: u64,
    ) -> Result<Vec<Task>, StoreError> {
        self.world
            .run("jobs.list_transitional_tasks", |s| {
                Ok(listings::transitional_tasks(s, limit, changed_before_ms))
            })
            .await
    }

    async fn list_active_job_tasks(
        &self,
        job_id: &JobId,
        page: &PageRequest,
    ) -> Result<Page<Task>, StoreError> {
        self.world
            .run("jobs.list_active_job_tasks", |s| {
                listings::job_tasks(s, job_id, page, true)
            })
            .await
    }
}
