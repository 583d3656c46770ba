//! What the scheduler last found when it could not place a job's tasks: the reasons, counted per
//! agent, and when. Kept per job (the tasks of one job ask for the same resources under the same
//! constraints, so they get the same answer) and written only when the answer changes, so that a
//! job waiting for capacity costs one write when it starts waiting, not one per task per tick.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{JobId, TaskId};

/// The most task ids a result names; the count covers the rest.
pub const MAX_SAMPLE_TASK_IDS: usize = 10;

/// How long a result stays in the store after its last write; the scheduler rewrites results
/// that still hold well before, and the table's time to live removes those of jobs that stopped
/// waiting (placed, killed or finished) after it.
pub const RESULT_TTL_MS: u64 = 24 * 60 * 60 * 1000;

/// One reason agents were rejected, and how many agents it rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Rejection {
    /// E.g. `insufficient memory`, `hard constraint availabilityZone="us-east-1a"`, `no agents`.
    pub reason: String,
    /// Agents rejected for this reason (0 for `no agents`).
    pub agents: u32,
}

impl Rejection {
    /// The reason with its count: `insufficient memory on 37 agents`, `no agents`.
    pub fn in_words(&self) -> String {
        match self.agents {
            0 => self.reason.clone(),
            1 => format!("{} on 1 agent", self.reason),
            n => format!("{} on {n} agents", self.reason),
        }
    }
}

/// A job's last placement result: some of its pending tasks fit on no agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacementResult {
    pub job_id: JobId,
    /// Pending tasks of the job that the tick considered and could not place.
    pub unplaced_tasks: u32,
    /// Some of those tasks, at most [`MAX_SAMPLE_TASK_IDS`].
    pub task_ids: Vec<TaskId>,
    /// Why, most agents first; never empty.
    pub rejections: Vec<Rejection>,
    /// The resource dimensions short on agents that met the job's constraints: what more
    /// capacity would have to offer.
    pub insufficient: Vec<String>,
    /// When the scheduler first found this answer (unchanged since).
    pub since_ms: u64,
    /// When the scheduler last confirmed it.
    pub computed_at_ms: u64,
}

impl PlacementResult {
    /// Whether two results say the same to a user: the same reasons and dimensions. The count of
    /// unplaced tasks and the agents per reason move as capacity comes and goes; a result is
    /// rewritten for those only when it is also due for a refresh.
    pub fn same_answer(&self, other: &PlacementResult) -> bool {
        self.insufficient == other.insufficient
            && self.rejections.len() == other.rejections.len()
            && self
                .rejections
                .iter()
                .zip(&other.rejections)
                .all(|(a, b)| a.reason == b.reason)
    }

    /// The reasons in words: `insufficient memory on 37 agents`.
    pub fn reasons(&self) -> Vec<String> {
        self.rejections.iter().map(Rejection::in_words).collect()
    }
}

/// The answer of a job's dry run: what the placement engine would do with its initial tasks on
/// the agents as they are, and whether a quota would refuse the job. Nothing is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DryRun {
    /// The job's initial tasks.
    pub tasks: u32,
    /// How many of them would be placed now, and on which agents.
    pub placed: u32,
    pub placements: BTreeMap<String, u32>,
    /// How many would wait, and why (the reasons of the first that would).
    pub unplaced: u32,
    pub rejections: Vec<Rejection>,
    pub insufficient: Vec<String>,
    /// The agents the engine was offered (Active ones take placements).
    pub agents: u32,
    /// Why creating the job now would be refused by a quota, if it would.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_refusal: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(reasons: &[(&str, u32)], unplaced: u32) -> PlacementResult {
        PlacementResult {
            job_id: JobId::from_string("job-1"),
            unplaced_tasks: unplaced,
            task_ids: vec![],
            rejections: reasons
                .iter()
                .map(|(r, n)| Rejection {
                    reason: (*r).to_owned(),
                    agents: *n,
                })
                .collect(),
            insufficient: vec!["memory".to_owned()],
            since_ms: 1,
            computed_at_ms: 2,
        }
    }

    #[test]
    fn counts_do_not_change_the_answer_but_reasons_do() {
        let a = result(&[("insufficient memory", 3), ("agent draining", 1)], 5);

        assert!(a.same_answer(&result(
            &[("insufficient memory", 7), ("agent draining", 2)],
            9
        )));
        assert!(!a.same_answer(&result(&[("insufficient memory", 3)], 5)));
        assert!(!a.same_answer(&result(
            &[("agent draining", 1), ("insufficient memory", 3)],
            5
        )));
    }

    #[test]
    fn reasons_read_as_words() {
        let r = result(
            &[
                ("insufficient memory", 3),
                ("agent lost", 1),
                ("no agents", 0),
            ],
            1,
        );

        assert_eq!(
            r.reasons(),
            vec![
                "insufficient memory on 3 agents",
                "agent lost on 1 agent",
                "no agents"
            ]
        );
    }
}
