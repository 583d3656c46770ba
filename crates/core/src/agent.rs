//! Agents: the hosts that run tasks, as the scheduler, the scaler and the reconciler see them.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::job::ContainerResources;

/// An amount of each schedulable resource. CPU is in millicores so sums are exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    pub cpu_millis: u64,
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub network_mbps: u64,
    pub gpu: u64,
}

impl Resources {
    pub const ZERO: Resources = Resources {
        cpu_millis: 0,
        memory_mb: 0,
        disk_mb: 0,
        network_mbps: 0,
        gpu: 0,
    };

    /// What a container asks for; fractional CPU rounds up to the next millicore.
    pub fn of_container(resources: &ContainerResources) -> Resources {
        Resources {
            cpu_millis: (resources.cpu * 1000.0).ceil().max(0.0) as u64,
            memory_mb: resources.memory_mb,
            disk_mb: resources.disk_mb,
            network_mbps: resources.network_mbps,
            gpu: u64::from(resources.gpu),
        }
    }

    pub fn saturating_add(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_mb: self.memory_mb.saturating_add(other.memory_mb),
            disk_mb: self.disk_mb.saturating_add(other.disk_mb),
            network_mbps: self.network_mbps.saturating_add(other.network_mbps),
            gpu: self.gpu.saturating_add(other.gpu),
        }
    }

    pub fn saturating_sub(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
            memory_mb: self.memory_mb.saturating_sub(other.memory_mb),
            disk_mb: self.disk_mb.saturating_sub(other.disk_mb),
            network_mbps: self.network_mbps.saturating_sub(other.network_mbps),
            gpu: self.gpu.saturating_sub(other.gpu),
        }
    }

    /// Whether every resource of `self` is at most `other`'s.
    pub fn fits_within(&self, other: &Resources) -> bool {
        self.cpu_millis <= other.cpu_millis
            && self.memory_mb <= other.memory_mb
            && self.disk_mb <= other.disk_mb
            && self.network_mbps <= other.network_mbps
            && self.gpu <= other.gpu
    }

    /// The names of the resources in which `self` exceeds `other`.
    pub fn shortfalls(&self, other: &Resources) -> Vec<&'static str> {
        let mut short = Vec::new();
        if self.cpu_millis > other.cpu_millis {
            short.push("cpu");
        }
        if self.memory_mb > other.memory_mb {
            short.push("memory");
        }
        if self.disk_mb > other.disk_mb {
            short.push("disk");
        }
        if self.network_mbps > other.network_mbps {
            short.push("network");
        }
        if self.gpu > other.gpu {
            short.push("gpu");
        }
        short
    }
}

/// An agent's life: Active agents get placements; Draining ones finish their work and get none;
/// Lost ones stopped heartbeating and their tasks are replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub enum AgentState {
    Active,
    Draining,
    Lost,
}

impl AgentState {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Active => "active",
            AgentState::Draining => "draining",
            AgentState::Lost => "lost",
        }
    }

    pub fn parse(text: &str) -> Option<AgentState> {
        [AgentState::Active, AgentState::Draining, AgentState::Lost]
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(text))
    }
}

impl fmt::Display for AgentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An agent's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    /// Stable across restarts: the EC2 instance id, or a configured id locally.
    pub id: String,
    /// The SQS queue the agent receives its launches and kills on.
    pub queue_url: String,
    pub zone: String,
    pub machine_type: String,
    /// The pool the agent belongs to (Titus' machine group / capacity group).
    pub machine_group: String,
    pub state: AgentState,
    /// What the agent offers to tasks.
    pub capacity: Resources,
    /// What placed and not yet finished tasks hold. Only the scheduler adds and the status path
    /// releases, both atomically, so concurrent writers commute.
    pub allocated: Resources,
    /// How many tasks hold resources here.
    pub task_count: u64,
    pub registered_at_ms: u64,
    pub heartbeat_at_ms: u64,
    /// Which life of the agent this is: 1 at its first registration, one more each time it
    /// registers again after being declared lost. Tasks are placed on one incarnation; an agent
    /// runs only the tasks placed on its own, and its status reports are believed only for them.
    #[serde(default)]
    pub incarnation: u64,
    /// The id of the registration request that wrote this record, so that the agent that asked
    /// can tell its registration was applied.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub registration_id: String,
    /// The AWS principal the agent speaks as, set by the control plane when it registers the
    /// agent: its instance role's session, `{role id}:{instance id}`, which SQS reports as the
    /// sender of its messages and DynamoDB's leading-key condition checks on its heartbeats.
    /// Empty where the stage names no agents' role (locally, where every process shares the
    /// emulator's credentials).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub principal: String,
    /// Where the agent sends its tasks' output, as it registered: a CloudWatch Logs group (one
    /// stream per task, `{jobId}/{taskId}`). `None`: it keeps them on the host (json-file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_logs: Option<crate::ports::TaskLogs>,
}

impl Agent {
    /// The key of the agent's heartbeat item: its principal, or its id where it has none. Only
    /// the agent's own principal can write there.
    pub fn heartbeat_key(&self) -> &str {
        if self.principal.is_empty() {
            &self.id
        } else {
            &self.principal
        }
    }

    pub fn free(&self) -> Resources {
        self.capacity.saturating_sub(self.allocated)
    }
}

/// What an agent reports with each heartbeat: the tasks whose containers it runs and what they
/// use. Informational for the reconciler; the allocation stays the control plane's to keep.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentHeartbeat {
    pub at_ms: u64,
    /// The tasks with a container on the agent that has not finished, sorted.
    pub running_task_ids: Vec<crate::ids::TaskId>,
    /// The sum of the running tasks' resources.
    pub used: Resources,
}

/// How many heartbeat intervals an unchanged report may go unwritten: an agent writes its report
/// when the tasks it runs change, and otherwise every this many intervals (10 s at the default
/// 5 s, against a 30 s timeout before an agent is declared lost, so one failed write is not
/// enough to lose it).
pub const UNCHANGED_REPORT_EVERY_INTERVALS: u64 = 2;

impl AgentHeartbeat {
    /// Whether this report should be written, given the last one written (`None`: none yet, or
    /// the last write failed) and the heartbeat interval.
    pub fn is_due(&self, last_written: Option<&AgentHeartbeat>, interval_ms: u64) -> bool {
        let Some(last) = last_written else {
            return true;
        };
        last.running_task_ids != self.running_task_ids
            || last.used != self.used
            || self.at_ms.saturating_sub(last.at_ms)
                >= interval_ms.saturating_mul(UNCHANGED_REPORT_EVERY_INTERVALS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::TaskId;

    fn report(at_ms: u64, tasks: &[&str]) -> AgentHeartbeat {
        AgentHeartbeat {
            at_ms,
            running_task_ids: tasks.iter().map(|t| TaskId::from_string(*t)).collect(),
            used: Resources {
                cpu_millis: 100 * tasks.len() as u64,
                ..Resources::ZERO
            },
        }
    }

    #[test]
    fn a_report_is_written_when_it_changes_and_otherwise_every_other_interval() {
        let first = report(0, &["a"]);
        assert!(first.is_due(None, 5_000));
        assert!(!report(5_000, &["a"]).is_due(Some(&first), 5_000));
        assert!(report(10_000, &["a"]).is_due(Some(&first), 5_000));
        assert!(report(5_000, &["a", "b"]).is_due(Some(&first), 5_000));
        assert!(report(5_000, &[]).is_due(Some(&first), 5_000));
    }
}
