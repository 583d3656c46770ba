//! Listing tasks across jobs, over the store port's job and per-job task listings.
//!
//! Without a job id the listing walks jobs (active ones only when the wanted task states cannot
//! occur in a finished job) and each job's tasks. The cursor records where the walk stopped: the
//! current job, the job listing's cursor after it, and the task listing's cursor inside it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use titus_core::ports::{JobFilter, Page, PageRequest};
use titus_core::{JobId, JobState, JobStore, Ports, StoreError, Task, TaskState};

use crate::{ControlError, ControlPlane};

/// How many store queries one page may take before it returns what it has, with a cursor.
const MAX_QUERIES_PER_PAGE: usize = 50;

/// Which tasks to list. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    pub job_id: Option<JobId>,
    pub states: Vec<TaskState>,
}

impl TaskFilter {
    fn matches(&self, task: &Task) -> bool {
        self.states.is_empty() || self.states.contains(&task.state())
    }

    /// The job states whose jobs can hold a wanted task: a finished job has only finished tasks.
    fn job_states(&self) -> Vec<JobState> {
        if self.states.is_empty() || self.states.contains(&TaskState::Finished) {
            Vec::new()
        } else {
            vec![JobState::Accepted, JobState::KillInitiated]
        }
    }
}

/// Where a listing stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TasksCursor {
    /// The job whose tasks are being listed.
    #[serde(rename = "j", default, skip_serializing_if = "Option::is_none")]
    job: Option<String>,
    /// The task listing's cursor inside that job.
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    tasks: Option<String>,
    /// The job listing's cursor after that job.
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
    after_job: Option<String>,
    /// No job is left after the current one.
    #[serde(rename = "l", default)]
    last_job: bool,
}

impl TasksCursor {
    fn decode(text: Option<&str>) -> Result<TasksCursor, StoreError> {
        let Some(text) = text.filter(|t| !t.is_empty()) else {
            return Ok(TasksCursor::default());
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| StoreError::InvalidCursor("not base64url".to_owned()))?;
        serde_json::from_slice(&bytes)
            .map_err(|_| StoreError::InvalidCursor("not a cursor of this listing".to_owned()))
    }

    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// Lists tasks matching `filter`, oldest first within each job. A page may hold fewer than
/// `page_size` items and still have a cursor: the walk stops after a bounded number of queries.
pub async fn list_tasks<P: Ports>(
    cp: &ControlPlane<P>,
    filter: &TaskFilter,
    page: &PageRequest,
) -> Result<Page<Task>, ControlError> {
    let store = cp.ports.jobs();
    let page_size = page.page_size.clamp(1, PageRequest::MAX_PAGE_SIZE) as usize;
    let mut cursor = TasksCursor::decode(page.cursor.as_deref())?;
    if let Some(job_id) = &filter.job_id {
        if cursor.job.as_deref().is_some_and(|j| j != job_id.as_str()) {
            return Err(StoreError::InvalidCursor(
                "the cursor belongs to another job's listing".to_owned(),
            )
            .into());
        }
        // A cursor of a job listing has no job and is done; a fresh one starts at this job.
        if cursor == TasksCursor::default() {
            cursor.job = Some(job_id.to_string());
        }
        cursor.last_job = true;
        cursor.after_job = None;
    }
    let job_filter = JobFilter {
        states: filter.job_states(),
        ..JobFilter::default()
    };
    let mut items = Vec::new();
    let mut queries = 0;
    loop {
        if queries >= MAX_QUERIES_PER_PAGE {
            return Ok(Page {
                items,
                next_cursor: Some(cursor.encode()),
            });
        }
        if let Some(job) = cursor.job.clone() {
            queries += 1;
            let wanted = (page_size - items.len()) as u32;
            let result = store
                .list_job_tasks(
                    &JobId::from_string(job),
                    &PageRequest {
                        page_size: wanted,
                        cursor: cursor.tasks.take(),
                    },
                )
                .await?;
            items.extend(result.items.into_iter().filter(|t| filter.matches(t)));
            match result.next_cursor {
                Some(next) => cursor.tasks = Some(next),
                None => cursor.job = None,
            }
            if items.len() >= page_size {
                let more = cursor.job.is_some() || !cursor.last_job;
                return Ok(Page {
                    items,
                    next_cursor: more.then(|| cursor.encode()),
                });
            }
            continue;
        }
        if cursor.last_job {
            return Ok(Page {
                items,
                next_cursor: None,
            });
        }
        queries += 1;
        let jobs = store
            .list_jobs(
                &job_filter,
                &PageRequest {
                    page_size: 1,
                    cursor: cursor.after_job.take(),
                },
            )
            .await?;
        match jobs.items.into_iter().next() {
            Some(job) => {
                cursor.job = Some(job.id.to_string());
                cursor.last_job = jobs.next_cursor.is_none();
                cursor.after_job = jobs.next_cursor;
            }
            // The job listing ran out (it may also stop early with a cursor and no items).
            None => match jobs.next_cursor {
                Some(next) => cursor.after_job = Some(next),
                None => {
                    return Ok(Page {
                        items,
                        next_cursor: None,
                    })
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips() {
        let cursor = TasksCursor {
            job: Some("j".to_owned()),
            tasks: Some("t".to_owned()),
            after_job: None,
            last_job: true,
        };
        assert_eq!(TasksCursor::decode(Some(&cursor.encode())).unwrap(), cursor);
        assert!(matches!(
            TasksCursor::decode(Some("not a cursor!")),
            Err(StoreError::InvalidCursor(_))
        ));
    }

    #[test]
    fn only_active_jobs_are_walked_for_active_task_states() {
        let active = TaskFilter {
            job_id: None,
            states: vec![TaskState::Started],
        };
        assert_eq!(
            active.job_states(),
            [JobState::Accepted, JobState::KillInitiated]
        );
        let finished = TaskFilter {
            job_id: None,
            states: vec![TaskState::Finished],
        };
        assert!(finished.job_states().is_empty());
    }
}
