//! The job store port: jobs and tasks in persistent storage, independent of DynamoDB.
//!
//! Every write that can race is conditional. Losing a race is `StoreError::Conflict`, never a
//! silent overwrite: the caller re-reads and decides again.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;

use crate::events::{Event, FeedCursor};
use crate::ids::{JobId, TaskId};
use crate::job::{Job, JobState, JobType};
use crate::placement::PlacementResult;
use crate::quota::{Usage, UsageChange};
use crate::task::Task;

/// What can go wrong talking to the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A conditional write found the item changed since it was read (or already present).
    #[error("conflict on {entity} {id}: {detail}")]
    Conflict {
        entity: &'static str,
        id: String,
        detail: String,
    },
    /// An idempotency key was reused with a different request.
    #[error(
        "idempotency key {key:?} was already used for job {job_id} with a different request; \
         expected the same request, or a new key"
    )]
    IdempotencyMismatch { key: String, job_id: JobId },
    /// A pagination cursor that this store did not issue.
    #[error("invalid cursor: {0}; expected a cursor returned by a previous page")]
    InvalidCursor(String),
    /// A write would take a team or capacity group past a quota; nothing was written.
    #[error("over quota: {0}")]
    QuotaExceeded(crate::quota::QuotaExceeded),
    /// Throttled or temporarily unreachable; safe to retry.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug, a corrupt item, a misconfigured table.
    #[error("store error: {0}")]
    Internal(String),
}

impl StoreError {
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }
}

/// Makes a job creation safe to retry: the same key from the same caller returns the same job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// Who the key belongs to (the caller's identity), so two callers' keys never collide.
    pub scope: String,
    /// The key the client chose (`Idempotency-Key` header, the submit message's client token).
    pub key: String,
    /// A digest of the request, to detect a key reused for a different request.
    pub request_hash: String,
}

/// The result of creating a job.
#[derive(Debug, Clone, PartialEq)]
pub enum CreateOutcome {
    /// The job is new.
    Created(Job),
    /// The idempotency key had been used: this is the job the first request created.
    Existing(Job),
}

impl CreateOutcome {
    pub fn job(&self) -> &Job {
        match self {
            CreateOutcome::Created(job) | CreateOutcome::Existing(job) => job,
        }
    }

    pub fn into_job(self) -> Job {
        match self {
            CreateOutcome::Created(job) | CreateOutcome::Existing(job) => job,
        }
    }

    pub fn was_created(&self) -> bool {
        matches!(self, CreateOutcome::Created(_))
    }
}

/// Which jobs to list. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    pub states: Vec<JobState>,
    pub owner: Option<String>,
    pub application_name: Option<String>,
    pub job_type: Option<JobType>,
    /// Every listed attribute must be present with this value.
    pub attributes: BTreeMap<String, String>,
}

impl JobFilter {
    /// Whether a job passes the filter.
    pub fn matches(&self, job: &Job) -> bool {
        let descriptor = &job.job_descriptor;
        (self.states.is_empty() || self.states.contains(&job.status.state))
            && self
                .owner
                .as_ref()
                .is_none_or(|owner| *owner == descriptor.owner.team_email)
            && self
                .application_name
                .as_ref()
                .is_none_or(|app| *app == descriptor.application_name)
            && self.job_type.is_none_or(|t| t == job.job_type())
            && self
                .attributes
                .iter()
                .all(|(k, v)| descriptor.attributes.get(k) == Some(v))
    }
}

/// A page request: at most `page_size` items after `cursor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub page_size: u32,
    pub cursor: Option<String>,
}

impl PageRequest {
    pub const DEFAULT_PAGE_SIZE: u32 = 50;
    pub const MAX_PAGE_SIZE: u32 = 1_000;

    pub fn first(page_size: u32) -> PageRequest {
        PageRequest {
            page_size,
            cursor: None,
        }
    }
}

/// One page of results; `next_cursor` is `None` on the last page.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// DynamoDB's limit on items in one transaction; every store keeps to it.
pub const MAX_TRANSACTION_ITEMS: usize = 100;

/// The most new tasks one `write_initial_tasks` call takes: a transaction's items less the job's.
pub const MAX_INITIAL_TASKS_PER_WRITE: usize = MAX_TRANSACTION_ITEMS - 1;

/// The most placement results (and as many removals) one `put_placement_results` call takes.
pub const MAX_PLACEMENT_RESULTS_PER_WRITE: usize = 100;

/// Refuses a `put_placement_results` call past [`MAX_PLACEMENT_RESULTS_PER_WRITE`], as every
/// store does before writing anything.
/// The most events one `put_events` call writes (each is two items).
pub const MAX_EVENTS_PER_WRITE: usize = 500;

pub fn check_events_write(events: usize) -> Result<(), StoreError> {
    if events > MAX_EVENTS_PER_WRITE {
        return Err(StoreError::Internal(format!(
            "{events} events in one write; at most {MAX_EVENTS_PER_WRITE}"
        )));
    }
    Ok(())
}

pub fn check_placement_results_write(results: usize, cleared: usize) -> Result<(), StoreError> {
    if results > MAX_PLACEMENT_RESULTS_PER_WRITE || cleared > MAX_PLACEMENT_RESULTS_PER_WRITE {
        return Err(StoreError::Internal(format!(
            "{results} placement results and {cleared} removals in one write; expected at most \
             {MAX_PLACEMENT_RESULTS_PER_WRITE} of each"
        )));
    }
    Ok(())
}

/// Storage of jobs and tasks.
pub trait JobStore: Send + Sync {
    /// Stores a new job, marked as awaiting its initial tasks (the application layer's
    /// materializing writes them). With an idempotency key, a repeat of the same request returns
    /// the first job (`Existing`).
    ///
    /// Accepting a job is one write, as in Titus, where the gateway stores the job and the job's
    /// reconciliation creates its tasks: a request is answered at the cost of one item, however
    /// many tasks the job has.
    ///
    /// Changes no usage record: jobs the application layer accepts go through
    /// [`JobStore::create_job_charged`].
    fn create_job(
        &self,
        job: &Job,
        idempotency: Option<&IdempotencyKey>,
    ) -> impl Future<Output = Result<CreateOutcome, StoreError>> + Send {
        self.create_job_charged(job, idempotency, &crate::quota::NO_CHANGE)
    }

    /// `create_job`, with `usage` applied to the usage records in the same write, on condition
    /// that no increased dimension passes its limit: `QuotaExceeded` (naming the quota, its
    /// limit and the use read after the refusal) and nothing written otherwise. A repeat of an
    /// idempotent request changes no usage.
    fn create_job_charged(
        &self,
        job: &Job,
        idempotency: Option<&IdempotencyKey>,
        usage: &UsageChange,
    ) -> impl Future<Output = Result<CreateOutcome, StoreError>> + Send;

    /// What the usage records hold, by record key (`team:{email}`, `group:{name}`); records
    /// never written are absent.
    fn list_usage(
        &self,
    ) -> impl Future<Output = Result<BTreeMap<String, Usage>, StoreError>> + Send;

    /// Up to `limit` ids of jobs still marked as awaiting their initial tasks that were created
    /// before `created_before_ms`, oldest first. An index read: a job whose mark was cleared a
    /// moment ago may still show.
    fn list_awaiting_jobs(
        &self,
        limit: u32,
        created_before_ms: u64,
    ) -> impl Future<Output = Result<Vec<JobId>, StoreError>> + Send;

    /// A job, read consistently, and whether it still awaits its initial tasks.
    fn get_job_awaiting(
        &self,
        id: &JobId,
    ) -> impl Future<Output = Result<Option<(Job, bool)>, StoreError>> + Send;

    /// Which of `ids` name stored tasks.
    fn existing_tasks(
        &self,
        ids: &[&TaskId],
    ) -> impl Future<Output = Result<HashSet<TaskId>, StoreError>> + Send;

    /// Stores at most [`MAX_INITIAL_TASKS_PER_WRITE`] new tasks of `job`, all or none, on
    /// condition that the job is still at `job.version` and awaiting its tasks; with
    /// `clear_mark` the job stops awaiting them in the same write (an empty `tasks` only clears
    /// the mark). `Conflict` when the job changed, was no longer marked, or a task existed.
    fn write_initial_tasks(
        &self,
        job: &Job,
        tasks: &[Task],
        clear_mark: bool,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn get_job(&self, id: &JobId) -> impl Future<Output = Result<Option<Job>, StoreError>> + Send;

    fn list_jobs(
        &self,
        filter: &JobFilter,
        page: &PageRequest,
    ) -> impl Future<Output = Result<Page<Job>, StoreError>> + Send;

    /// Writes a changed job; `Conflict` unless the stored job still has `expected_version`.
    /// Changes no usage record (see [`JobStore::update_job_charged`]).
    fn update_job(
        &self,
        job: &Job,
        expected_version: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.update_job_charged(job, expected_version, &crate::quota::NO_CHANGE)
    }

    /// `update_job`, with `usage` applied to the usage records in the same write, as in
    /// `create_job_charged`: a capacity change or a job's finish moves what it holds.
    fn update_job_charged(
        &self,
        job: &Job,
        expected_version: u64,
        usage: &UsageChange,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn get_task(
        &self,
        id: &TaskId,
    ) -> impl Future<Output = Result<Option<Task>, StoreError>> + Send;

    /// A job's tasks, replacements included, oldest first.
    fn list_job_tasks(
        &self,
        job_id: &JobId,
        page: &PageRequest,
    ) -> impl Future<Output = Result<Page<Task>, StoreError>> + Send;

    /// Every task of a job, replacements included, oldest first: `list_job_tasks` page by page.
    fn list_all_job_tasks(
        &self,
        job_id: &JobId,
    ) -> impl Future<Output = Result<Vec<Task>, StoreError>> + Send {
        async move {
            let mut tasks = Vec::new();
            let mut page = PageRequest::first(PageRequest::MAX_PAGE_SIZE);
            loop {
                let result = self.list_job_tasks(job_id, &page).await?;
                tasks.extend(result.items);
                match result.next_cursor {
                    Some(cursor) => page.cursor = Some(cursor),
                    None => return Ok(tasks),
                }
            }
        }
    }

    /// Up to `limit` tasks waiting for placement and eligible by `now_ms`, oldest first.
    fn list_pending_tasks(
        &self,
        limit: u32,
        now_ms: u64,
    ) -> impl Future<Output = Result<Vec<Task>, StoreError>> + Send;

    /// Up to `limit` tasks in Launched that were dispatched before `dispatched_before_ms` and not
    /// acknowledged by their agent since: candidates to dispatch again. Oldest dispatch first.
    fn list_unacknowledged_tasks(
        &self,
        limit: u32,
        dispatched_before_ms: u64,
    ) -> impl Future<Output = Result<Vec<Task>, StoreError>> + Send;

    /// Writes a changed task; `Conflict` unless the stored task still has `expected_version`.
    fn update_task(
        &self,
        task: &Task,
        expected_version: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stores a new task (a replacement); `Conflict` if a task with its id exists.
    fn insert_task(&self, task: &Task) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The tasks holding resources on agent `agent_id` (Launched to KillInitiated), for the
    /// reconciler to finish when the agent is lost. An index read: a task that moved on a moment
    /// ago may still show, so callers write conditionally on its version. The default refuses:
    /// only stores that index tasks by agent support it.
    fn list_agent_tasks(
        &self,
        agent_id: &str,
    ) -> impl Future<Output = Result<Vec<Task>, StoreError>> + Send {
        async move {
            Err(StoreError::Internal(format!(
                "this store cannot list the tasks of agent {agent_id}; expected a store that \
                 indexes tasks by agent"
            )))
        }
    }

    /// Up to `limit` tasks in a state they should soon leave (Launched, StartInitiated,
    /// KillInitiated) that entered it at or before `changed_before_ms`, oldest first: the
    /// reconciler's candidates for stuck tasks. An index read, like `list_agent_tasks`. The
    /// default refuses: only stores with such an index support it.
    fn list_transitional_tasks(
        &self,
        limit: u32,
        changed_before_ms: u64,
    ) -> impl Future<Output = Result<Vec<Task>, StoreError>> + Send {
        async move {
            Err(StoreError::Internal(format!(
                "this store cannot list tasks stuck since {changed_before_ms} (limit {limit}); \
                 expected a store that indexes tasks by state and time"
            )))
        }
    }

    /// Stores each job's placement result in place of its last one, and removes those of the
    /// `cleared` jobs (whose tasks now fit). Unconditional and idempotent: only the scheduler's
    /// leader writes results, and each write says what one tick found. At most
    /// [`MAX_PLACEMENT_RESULTS_PER_WRITE`] results and as many removals per call.
    fn put_placement_results(
        &self,
        results: &[PlacementResult],
        cleared: &[JobId],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// A job's last placement result, if the scheduler found some of its tasks fit nowhere and
    /// has not cleared it since.
    fn get_placement_result(
        &self,
        job_id: &JobId,
    ) -> impl Future<Output = Result<Option<PlacementResult>, StoreError>> + Send;

    /// Keeps events in the feed, each in its two partitions ([`Event::feed_keys`]) under its
    /// key ([`Event::event_key`]). Idempotent: an event written again with the same feed time
    /// replaces itself. At most [`MAX_EVENTS_PER_WRITE`] events per call.
    fn put_events(&self, events: &[Event]) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Up to `limit` events of one feed partition after `after`, in feed order. A strongly
    /// consistent read: every event written before the call is seen.
    fn read_events(
        &self,
        feed_key: &str,
        after: &FeedCursor,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Event>, StoreError>> + Send;

    /// A job's tasks that are not Finished, oldest first, without its finished history. An index
    /// read, like `list_agent_tasks`. The default filters `list_job_tasks`, so a page may hold
    /// fewer than `page_size` tasks and still have a cursor.
    fn list_active_job_tasks(
        &self,
        job_id: &JobId,
        page: &PageRequest,
    ) -> impl Future<Output = Result<Page<Task>, StoreError>> + Send {
        async move {
            let mut tasks = self.list_job_tasks(job_id, page).await?;
            tasks.items.retain(|t| !t.state().is_terminal());
            Ok(tasks)
        }
    }
}
