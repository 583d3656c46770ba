//! The job store's listings, each served from an index as the DynamoDB adapter serves it (so they
//! lag the table as its indexes do, and return the items as the index holds them): the same query
//! plan, the same order, pages of at most the page size or 1 MB, and the same cursors.

use titus_core::ports::{JobFilter, Page, PageRequest};
use titus_core::{Job, JobId, JobState, StoreError, Task, TaskState};

use crate::index::{Indexed, QueryPage, Range, Table};
use crate::items::{job_index, shard_key, task_index, TASK_SHARDS, TRANSITIONAL_STATES};
use crate::metering::{Consistency, Meter};
use crate::pages::Cursor;
use crate::world::State;

/// How many queries one page of a filtered job listing may take before it returns what it has.
const MAX_QUERIES_PER_PAGE: usize = 20;

/// One metered Query of an index.
fn query<T: Indexed + serde::Serialize>(
    table: &mut Table<T>,
    meter: &mut Meter,
    now_ms: u64,
    (index, partition): (usize, &str),
    range: Range<'_>,
    limit: usize,
) -> QueryPage<T> {
    meter.request("DynamoDB.Query");
    let page = table.query(index, now_ms, partition, range, limit);
    meter.read(page.bytes, Consistency::Eventual);
    page
}

fn page_size(page: &PageRequest) -> usize {
    page.page_size.clamp(1, PageRequest::MAX_PAGE_SIZE) as usize
}

/// The key a cursor holds for an index entry: the item's id, the partition, the sort key.
fn cursor_key(
    attrs: [&str; 3],
    (partition, sort): &(String, String),
    id: &str,
) -> Vec<(String, String)> {
    vec![
        (attrs[0].to_owned(), id.to_owned()),
        (attrs[1].to_owned(), partition.clone()),
        (attrs[2].to_owned(), sort.clone()),
    ]
}

/// Where a cursor says to go on: after this sort key and id.
fn resume_after(cursor: &Cursor, attrs: [&str; 3]) -> Option<(String, String)> {
    Some((
        cursor.value(attrs[2])?.to_owned(),
        cursor.value(attrs[0])?.to_owned(),
    ))
}

pub(crate) fn awaiting_jobs(state: &mut State, limit: u32, created_before_ms: u64) -> Vec<JobId> {
    let below = format!("{:013}", created_before_ms.min(9_999_999_999_999));
    let page = query(
        &mut state.jobs,
        &mut state.meter,
        state.now_ms,
        (job_index::AWAITING, crate::items::AWAITING_PARTITION),
        Range {
            below: Some(&below),
            ..Range::default()
        },
        limit.clamp(1, PageRequest::MAX_PAGE_SIZE) as usize,
    );
    page.items
        .into_iter()
        .map(|(_, _, item)| item.job.id.clone())
        .collect()
}

/// Which index a job listing reads, its partition attribute, and the partitions in order: the
/// most selective of owner, application, else one partition per state.
fn job_plan(filter: &JobFilter) -> (usize, &'static str, Vec<String>) {
    if let Some(owner) = &filter.owner {
        (job_index::BY_OWNER, "owner", vec![owner.clone()])
    } else if let Some(app) = &filter.application_name {
        (
            job_index::BY_APPLICATION,
            "applicationName",
            vec![app.clone()],
        )
    } else {
        let mut states = if filter.states.is_empty() {
            JobState::ALL.to_vec()
        } else {
            filter.states.clone()
        };
        states.sort();
        states.dedup();
        (
            job_index::BY_STATE,
            "jobState",
            states.iter().map(|s| s.as_str().to_owned()).collect(),
        )
    }
}

pub(crate) fn jobs(
    state: &mut State,
    filter: &JobFilter,
    page: &PageRequest,
) -> Result<Page<Job>, StoreError> {
    let (index, partition_attr, partitions) = job_plan(filter);
    let attrs = ["jobId", partition_attr, "createdKey"];
    let mut cursor = Cursor::decode(page.cursor.as_deref(), &attrs)?;
    cursor.check_partition(
        partition_attr,
        partitions.get(cursor.partition).map(String::as_str),
    )?;
    let page_size = page_size(page);
    let mut jobs = Vec::new();
    // As the DynamoDB store: a full page reads on for one more match before it says it has more.
    let mut full_at: Option<Cursor> = None;
    let mut queries = 0;
    while cursor.partition < partitions.len() {
        if queries == MAX_QUERIES_PER_PAGE {
            return Ok(Page {
                items: jobs,
                next_cursor: Some(full_at.unwrap_or(cursor).encode()),
            });
        }
        queries += 1;
        let after = resume_after(&cursor, attrs);
        let result = query(
            &mut state.jobs,
            &mut state.meter,
            state.now_ms,
            (index, &partitions[cursor.partition]),
            Range {
                backward: true,
                after: after.as_ref().map(|(s, id)| (s.as_str(), id.as_str())),
                below: None,
            },
            page_size,
        );
        for (key, id, item) in &result.items {
            if filter.matches(&item.job) {
                if let Some(end) = full_at {
                    return Ok(Page {
                        items: jobs,
                        next_cursor: Some(end.encode()),
                    });
                }
                jobs.push(item.job.clone());
                if jobs.len() == page_size {
                    full_at = Some(Cursor {
                        partition: cursor.partition,
                        key: cursor_key(attrs, key, id),
                    });
                }
            }
        }
        match result.last {
            Some((key, id)) => cursor.key = cursor_key(attrs, &key, &id),
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

/// A job's tasks, oldest first; with `active_only`, from the index of tasks not yet Finished.
pub(crate) fn job_tasks(
    state: &mut State,
    job_id: &JobId,
    page: &PageRequest,
    active_only: bool,
) -> Result<Page<Task>, StoreError> {
    let (index, attrs) = if active_only {
        (
            task_index::ACTIVE_BY_JOB,
            ["taskId", "activeJobId", "createdKey"],
        )
    } else {
        (task_index::BY_JOB, ["taskId", "jobId", "createdKey"])
    };
    let cursor = Cursor::decode(page.cursor.as_deref(), &attrs)?;
    cursor.check_partition(attrs[1], Some(job_id.as_str()))?;
    let after = resume_after(&cursor, attrs);
    let page_size = page_size(page);
    // One item more than the page, as the DynamoDB store reads, so a page says it has more only
    // when it has.
    let mut result = query(
        &mut state.tasks,
        &mut state.meter,
        state.now_ms,
        (index, job_id.as_str()),
        Range {
            after: after.as_ref().map(|(s, id)| (s.as_str(), id.as_str())),
            ..Range::default()
        },
        page_size + 1,
    );
    let end = if result.items.len() > page_size {
        result.items.truncate(page_size);
        result
            .items
            .last()
            .map(|(key, id, _)| (key.clone(), id.clone()))
    } else {
        result.last
    };
    let items = result
        .items
        .iter()
        // The index lags: a task finished a moment ago may still show in the live index.
        .filter(|(_, _, task)| !active_only || !task.state().is_terminal())
        .map(|(_, _, task)| (**task).clone())
        .collect();
    let next_cursor = end.map(|(key, id)| {
        Cursor {
            partition: 0,
            key: cursor_key(attrs, &key, &id),
        }
        .encode()
    });
    Ok(Page { items, next_cursor })
}

/// Reads a sharded, sparse task index: every shard's entries keyed at or before `upto_ms`, merged
/// oldest first, keeping tasks (as the index holds them) in `states`.
fn shards(
    state: &mut State,
    index: usize,
    limit: u32,
    upto_ms: u64,
    states: &[TaskState],
) -> Vec<Task> {
    let limit = limit.clamp(1, PageRequest::MAX_PAGE_SIZE) as usize;
    // Keys are "{ms:013}#{task_id}"; '$' sorts just after '#'.
    let upper = format!("{upto_ms:013}$");
    let mut found = Vec::new();
    for shard in 0..TASK_SHARDS {
        let result = query(
            &mut state.tasks,
            &mut state.meter,
            state.now_ms,
            (index, &shard_key(shard)),
            Range {
                below: Some(&upper),
                ..Range::default()
            },
            limit,
        );
        for ((_, sort), _, task) in result.items {
            if states.contains(&task.state()) {
                found.push((sort, task));
            }
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found.truncate(limit);
    found.into_iter().map(|(_, task)| (*task).clone()).collect()
}

pub(crate) fn pending_tasks(state: &mut State, limit: u32, now_ms: u64) -> Vec<Task> {
    shards(
        state,
        task_index::PENDING,
        limit,
        now_ms,
        &[TaskState::Accepted],
    )
}

pub(crate) fn unacknowledged_tasks(
    state: &mut State,
    limit: u32,
    dispatched_before_ms: u64,
) -> Vec<Task> {
    shards(
        state,
        task_index::UNACKNOWLEDGED,
        limit,
        dispatched_before_ms,
        &[TaskState::Launched],
    )
}

pub(crate) fn transitional_tasks(
    state: &mut State,
    limit: u32,
    changed_before_ms: u64,
) -> Vec<Task> {
    shards(
        state,
        task_index::TRANSITIONAL,
        limit,
        changed_before_ms,
        &TRANSITIONAL_STATES,
    )
}

/// Every task holding resources on the agent, page by page (1 MB each).
pub(crate) fn agent_tasks(state: &mut State, agent_id: &str) -> Vec<Task> {
    let mut tasks = Vec::new();
    let mut after: Option<(String, String)> = None;
    loop {
        let result = query(
            &mut state.tasks,
            &mut state.meter,
            state.now_ms,
            (task_index::BY_AGENT, agent_id),
            Range {
                after: after.as_ref().map(|(s, id)| (s.as_str(), id.as_str())),
                ..Range::default()
            },
            usize::MAX,
        );
        for (_, _, task) in &result.items {
            // The index lags: a task that moved on a moment ago may still show.
            if task.state().occupies_agent() && task.agent_id.as_deref() == Some(agent_id) {
                tasks.push((**task).clone());
            }
        }
        match result.last {
            Some(((_, sort), id)) => after = Some((sort, id)),
            None => return tasks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_with_no_filter_reads_one_partition_per_state_in_state_order() {
        let (index, attr, partitions) = job_plan(&JobFilter::default());

        assert_eq!(index, job_index::BY_STATE);
        assert_eq!(attr, "jobState");
        assert_eq!(partitions, vec!["Accepted", "KillInitiated", "Finished"]);
    }
}
