//! The messages that cross SQS between the scheduler, the agents and the status function. Defined
//! once here so every side agrees on the wire format.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{JobId, TaskId};
use crate::job::{ContainerResources, HostMount, Job, SecurityContext};
use crate::state::{TaskReason, TaskState};
use crate::task::Task;
use crate::validation::FieldError;

/// A message on an agent's own queue.
// Commands are built and sent one at a time, as JSON; boxing the launch would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum AgentCommand {
    LaunchTask(LaunchTask),
    KillTask(KillTask),
}

impl AgentCommand {
    pub fn task_id(&self) -> &TaskId {
        match self {
            AgentCommand::LaunchTask(launch) => &launch.task_id,
            AgentCommand::KillTask(kill) => &kill.task_id,
        }
    }
}

/// Run this task's container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LaunchTask {
    pub task_id: TaskId,
    pub job_id: JobId,
    /// The agent's incarnation the task was placed on: an agent runs a launch only for its own.
    #[serde(default)]
    pub incarnation: u64,
    /// The task record's version when it was placed: which placement of the task this launch
    /// is, for the container's labels and the agent's logs.
    #[serde(default)]
    pub placement_version: u64,
    /// `name:tag` or `name@digest`.
    pub image: String,
    #[serde(default)]
    pub entry_point: Vec<String>,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Variables the agent sets from secrets it resolves at launch: name → SSM parameter or
    /// Secrets Manager ARN (see `Container::secrets`). References only, never values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    pub resources: ContainerResources,
    pub kill_grace_period_sec: u32,
    /// Batch tasks only: the agent kills the container with `runtimeLimitExceeded` after this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_limit_sec: Option<u64>,
    #[serde(default)]
    pub privileged: bool,
    #[serde(default)]
    pub host_network: bool,
    #[serde(default)]
    pub host_mounts: Vec<HostMount>,
    /// The IAM role whose credentials the task's container gets (an ARN or a role name); none
    /// when empty, and then the container gets no AWS credentials at all.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub iam_role: String,
    /// Kept so that an agent that cannot apply them refuses the task rather than ignoring them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<String>,
    #[serde(default, skip_serializing_if = "SecurityContext::is_default")]
    pub security_context: SecurityContext,
}

impl LaunchTask {
    /// The launch of `task` with its job's container settings. The platform adds to the
    /// environment (users may not set `TITUS_` names): `TITUS_TASK_ID`, `TITUS_JOB_ID`,
    /// `TITUS_TASK_INDEX` (the task's slot), `TITUS_TASK_ORIGINAL_ID` (the first task of the
    /// slot) and `TITUS_TASK_RESUBMIT_NUMBER` (how many tasks of the slot ran before this one).
    pub fn for_task(task: &Task, job: &Job) -> LaunchTask {
        let container = &job.job_descriptor.container;
        let mut env = container.env.clone();
        env.insert("TITUS_TASK_ID".to_owned(), task.id.to_string());
        env.insert("TITUS_JOB_ID".to_owned(), job.id.to_string());
        env.insert("TITUS_TASK_INDEX".to_owned(), task.index.to_string());
        env.insert(
            "TITUS_TASK_ORIGINAL_ID".to_owned(),
            task.original_id.to_string(),
        );
        env.insert(
            "TITUS_TASK_RESUBMIT_NUMBER".to_owned(),
            task.resubmit_number.to_string(),
        );
        LaunchTask {
            task_id: task.id.clone(),
            job_id: job.id.clone(),
            incarnation: task.agent_incarnation.unwrap_or_default(),
            placement_version: task.version,
            image: container.image.reference(),
            entry_point: container.entry_point.clone(),
            command: container.command.clone(),
            env,
            secrets: container.secrets.clone(),
            resources: task.resources,
            kill_grace_period_sec: container.kill_grace_period_sec,
            runtime_limit_sec: job
                .job_descriptor
                .batch
                .as_ref()
                .map(|b| b.runtime_limit_sec),
            privileged: container.privileged,
            host_network: container.host_network,
            host_mounts: container.host_mounts.clone(),
            iam_role: container.security_profile.iam_role.clone(),
            security_groups: container.security_profile.security_groups.clone(),
            security_context: container.security_context.clone(),
        }
    }
}

/// Stop this task's container: SIGTERM, then SIGKILL after the grace period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KillTask {
    pub task_id: TaskId,
    pub reason: TaskReason,
    pub grace_period_sec: u32,
}

/// A task's new state as an agent saw it, on the status queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskStatusUpdate {
    pub task_id: TaskId,
    pub job_id: JobId,
    pub agent_id: String,
    /// The sending agent's incarnation: the status is believed only from the incarnation the
    /// task was placed on.
    #[serde(default)]
    pub incarnation: u64,
    pub state: TaskState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<TaskReason>,
    #[serde(default)]
    pub message: String,
    pub timestamp_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    #[serde(default)]
    pub oom_killed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
}

/// What an agent asks of the control plane about its own record, on the stage's agent-requests
/// queue: agents never write the fields the control plane decides (state, capacity, incarnation,
/// allocation) nor create queues; the control plane applies these requests, after checking
/// that they come from the agent they name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum AgentRequest {
    /// Register (or, after a restart or a fence, register again).
    Register(Registration),
    /// Stop placing tasks here: the agent is draining.
    Drain { agent_id: String },
    /// The agent drained and leaves: remove its record.
    Deregister { agent_id: String },
}

impl AgentRequest {
    pub fn agent_id(&self) -> &str {
        match self {
            AgentRequest::Register(registration) => &registration.agent_id,
            AgentRequest::Drain { agent_id } | AgentRequest::Deregister { agent_id } => agent_id,
        }
    }
}

/// An agent's registration request: who it is and what it offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    pub agent_id: String,
    /// Chosen by the agent for this request: the record it waits for carries it.
    pub registration_id: String,
    pub zone: String,
    pub machine_type: String,
    pub machine_group: String,
    pub capacity: crate::agent::Resources,
    pub at_ms: u64,
    /// Where the agent sends its tasks' output (see `Agent::task_logs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_logs: Option<crate::ports::TaskLogs>,
}

impl Registration {
    /// The record this registration asks for, on queue `queue_url` at `now_ms`, for the agent
    /// speaking as `principal` (see `Agent::principal`): active, holding nothing. The store
    /// decides the incarnation and keeps what a restart must not reset.
    pub fn record(&self, queue_url: String, principal: String, now_ms: u64) -> crate::agent::Agent {
        crate::agent::Agent {
            id: self.agent_id.clone(),
            queue_url,
            zone: self.zone.clone(),
            machine_type: self.machine_type.clone(),
            machine_group: self.machine_group.clone(),
            state: crate::agent::AgentState::Active,
            capacity: self.capacity,
            allocated: crate::agent::Resources::ZERO,
            task_count: 0,
            registered_at_ms: now_ms,
            heartbeat_at_ms: now_ms,
            incarnation: 0,
            registration_id: self.registration_id.clone(),
            principal,
            task_logs: self.task_logs.clone(),
        }
    }
}

/// Why a message on the submit queue was refused, as sent to the `submit-rejected` queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejection {
    pub message_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
    pub rejected_at_ms: u64,
    /// `invalid` (the body or descriptor), `forbidden` (the producer is not in the job's owner
    /// team) or `idempotencyMismatch` (a client token reused for another descriptor).
    pub reason: String,
    pub errors: Vec<FieldError>,
    /// The message body as received, cut to fit one SQS message.
    pub body: String,
    #[serde(default)]
    pub body_truncated: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_carry_a_type_tag() {
        let kill = AgentCommand::KillTask(KillTask {
            task_id: TaskId::from_string("t1"),
            reason: TaskReason::Killed,
            grace_period_sec: 10,
        });
        let json = serde_json::to_value(&kill).unwrap();
        assert_eq!(json["type"], "killTask");
        assert_eq!(json["reason"], "killed");
        let back: AgentCommand = serde_json::from_value(json).unwrap();
        assert_eq!(back, kill);
    }

    #[test]
    fn a_launch_tells_the_container_its_task_slot_and_attempt() {
        let json = br#"{"owner":{"teamEmail":"t@example.com"},"applicationName":"a",
            "container":{"image":{"name":"busybox"},"env":{"GREETING":"hi"}},"batch":{"size":2}}"#;
        let descriptor =
            crate::validation::parse_descriptor(json, &crate::validation::Limits::default())
                .unwrap();
        let job = Job::new(JobId::from_string("j1"), descriptor, "me".to_owned(), 1);
        let first = Task::initial(&job, 1, 1);
        let retry = first.replacement(2, 2).replacement(3, 3);

        let env = LaunchTask::for_task(&retry, &job).env;

        assert_eq!(env["GREETING"], "hi");
        assert_eq!(env["TITUS_JOB_ID"], "j1");
        assert_eq!(env["TITUS_TASK_ID"], retry.id.to_string());
        assert_eq!(env["TITUS_TASK_INDEX"], "1");
        assert_eq!(env["TITUS_TASK_ORIGINAL_ID"], first.id.to_string());
        assert_eq!(env["TITUS_TASK_RESUBMIT_NUMBER"], "2");
    }

    #[test]
    fn agent_requests_carry_a_type_tag_and_round_trip() {
        let register = AgentRequest::Register(Registration {
            agent_id: "i-1".to_owned(),
            registration_id: "r-1".to_owned(),
            zone: "z".to_owned(),
            machine_type: "m".to_owned(),
            machine_group: "default".to_owned(),
            capacity: crate::agent::Resources::ZERO,
            at_ms: 5,
            task_logs: None,
        });
        let json = serde_json::to_value(&register).unwrap();
        assert_eq!(json["type"], "register");
        assert_eq!(json["agentId"], "i-1");
        assert_eq!(
            serde_json::from_value::<AgentRequest>(json).unwrap(),
            register
        );
        let drain: AgentRequest =
            serde_json::from_str(r#"{"type":"drain","agentId":"i-2"}"#).unwrap();
        assert_eq!(drain.agent_id(), "i-2");
        assert!(serde_json::from_str::<AgentRequest>(r#"{"type":"steal","agentId":"x"}"#).is_err());
    }

    #[test]
    fn a_status_update_with_an_unknown_field_is_refused() {
        let text = r#"{"taskId":"t","jobId":"j","agentId":"a","state":"Started","timestampMs":1,"bogus":1}"#;
        let err = serde_json::from_str::<TaskStatusUpdate>(text).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }
}
