//! Every AWS resource Titus uses, declared once: tables (keys, indexes, TTL), queues (with their
//! dead-letter queues) and SSM parameters. Local provisioning creates them from these definitions,
//! and the CDK app's tests compare its template against them (`titus-provision --print-definitions`).

use serde::Serialize;

/// The stage used when none is configured: the local stack.
pub const DEFAULT_STAGE: &str = "local";

/// How many shards the pending-task index spreads its writes over, so that a burst of new tasks
/// does not land on one hot partition key.
pub const PENDING_TASK_SHARDS: u32 = 16;

/// How long an idempotency record is kept, in seconds (DynamoDB TTL removes it afterwards).
pub const IDEMPOTENCY_TTL_SECS: u64 = 7 * 24 * 3600;

/// Attribute names shared by the store code and the table definitions.
pub mod attr {
    pub const JOB_ID: &str = "jobId";
    pub const TASK_ID: &str = "taskId";
    pub const AGENT_ID: &str = "agentId";
    pub const LEASE_NAME: &str = "leaseName";
    pub const IDEMPOTENCY_KEY: &str = "idempotencyKey";
    pub const JOB_STATE: &str = "jobState";
    pub const TASK_STATE: &str = "taskState";
    pub const OWNER: &str = "owner";
    pub const APPLICATION_NAME: &str = "applicationName";
    pub const JOB_TYPE: &str = "jobType";
    pub const CREATED_KEY: &str = "createdKey";
    pub const PENDING_SHARD: &str = "pendingShard";
    pub const PENDING_KEY: &str = "pendingKey";
    pub const VERSION: &str = "version";
    pub const DOC: &str = "doc";
    pub const MATERIALIZED: &str = "materialized";
    pub const REQUEST_HASH: &str = "requestHash";
    pub const EXPIRES_AT: &str = "expiresAt";
}

/// Index names shared by the store code and the table definitions.
pub mod index {
    pub const JOBS_BY_STATE: &str = "byState";
    pub const JOBS_BY_OWNER: &str = "byOwner";
    pub const JOBS_BY_APPLICATION: &str = "byApplication";
    pub const TASKS_BY_JOB: &str = "byJob";
    pub const TASKS_PENDING: &str = "pending";
    pub const TASKS_BY_AGENT: &str = "byAgent";
}

/// A key attribute; all of Titus' keys are strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeySchema {
    pub partition_key: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sort_key: Option<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexDef {
    pub name: &'static str,
    #[serde(flatten)]
    pub key: KeySchema,
}

/// A DynamoDB table. Every table is on-demand; every index projects all attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TableDef {
    /// The table's role (`jobs`); the physical name adds the stage.
    pub role: &'static str,
    pub name: String,
    #[serde(flatten)]
    pub key: KeySchema,
    pub global_secondary_indexes: Vec<IndexDef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_attribute: Option<&'static str>,
}

/// An SQS queue and, when set, the dead-letter queue its failures are moved to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueDef {
    pub role: &'static str,
    pub name: String,
    pub visibility_timeout_secs: u32,
    pub message_retention_secs: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetterDef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterDef {
    pub name: String,
    pub max_receive_count: u32,
}

/// An SSM parameter and the value provisioning writes when it does not exist yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParameterDef {
    pub name: String,
    pub description: &'static str,
    pub default_value: String,
}

/// Everything for one stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Definitions {
    pub stage: String,
    pub tables: Vec<TableDef>,
    pub queues: Vec<QueueDef>,
    pub parameters: Vec<ParameterDef>,
}

const FOURTEEN_DAYS_SECS: u32 = 14 * 24 * 3600;
const FOUR_DAYS_SECS: u32 = 4 * 24 * 3600;

/// Physical names of one stage's resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    stage: String,
}

impl Names {
    /// Names for `stage`, which must be 1–16 lowercase letters, digits or hyphens.
    pub fn new(stage: &str) -> Result<Names, String> {
        let ok = !stage.is_empty()
            && stage.len() <= 16
            && stage
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Names {
                stage: stage.to_owned(),
            })
        } else {
            Err(format!(
                "stage {stage:?} is not valid: expected 1 to 16 lowercase letters, digits or hyphens"
            ))
        }
    }

    pub fn stage(&self) -> &str {
        &self.stage
    }

    fn resource(&self, role: &str) -> String {
        format!("titus-{}-{role}", self.stage)
    }

    pub fn jobs_table(&self) -> String {
        self.resource("jobs")
    }
    pub fn tasks_table(&self) -> String {
        self.resource("tasks")
    }
    pub fn agents_table(&self) -> String {
        self.resource("agents")
    }
    pub fn leases_table(&self) -> String {
        self.resource("leases")
    }
    pub fn idempotency_table(&self) -> String {
        self.resource("idempotency")
    }
    pub fn submit_queue(&self) -> String {
        self.resource("submit")
    }
    pub fn submit_rejected_queue(&self) -> String {
        self.resource("submit-rejected")
    }
    pub fn status_queue(&self) -> String {
        self.resource("status")
    }
    /// The queue an agent receives its placements and kills on.
    pub fn agent_queue(&self, agent_id: &str) -> String {
        self.resource(&format!("agent-{agent_id}"))
    }
    /// The SSM path under which every parameter of this stage lives.
    pub fn parameter_path(&self) -> String {
        format!("/titus/{}", self.stage)
    }
    pub fn job_limits_parameter(&self) -> String {
        format!("{}/limits/job", self.parameter_path())
    }

    /// Every table, queue and parameter of the stage.
    pub fn definitions(&self) -> Definitions {
        Definitions {
            stage: self.stage.clone(),
            tables: self.tables(),
            queues: self.queues(),
            parameters: self.parameters(),
        }
    }

    fn tables(&self) -> Vec<TableDef> {
        let key = |partition_key, sort_key| KeySchema {
            partition_key,
            sort_key,
        };
        let gsi = |name, partition_key, sort_key| IndexDef {
            name,
            key: key(partition_key, sort_key),
        };
        vec![
            TableDef {
                role: "jobs",
                name: self.jobs_table(),
                key: key(attr::JOB_ID, None),
                global_secondary_indexes: vec![
                    gsi(
                        index::JOBS_BY_STATE,
                        attr::JOB_STATE,
                        Some(attr::CREATED_KEY),
                    ),
                    gsi(index::JOBS_BY_OWNER, attr::OWNER, Some(attr::CREATED_KEY)),
                    gsi(
                        index::JOBS_BY_APPLICATION,
                        attr::APPLICATION_NAME,
                        Some(attr::CREATED_KEY),
                    ),
                ],
                ttl_attribute: None,
            },
            TableDef {
                role: "tasks",
                name: self.tasks_table(),
                key: key(attr::TASK_ID, None),
                global_secondary_indexes: vec![
                    gsi(index::TASKS_BY_JOB, attr::JOB_ID, Some(attr::CREATED_KEY)),
                    // Sparse: only tasks waiting for placement carry the shard attribute.
                    gsi(
                        index::TASKS_PENDING,
                        attr::PENDING_SHARD,
                        Some(attr::PENDING_KEY),
                    ),
                    // Sparse: only tasks holding resources on an agent carry the agent id.
                    gsi(index::TASKS_BY_AGENT, attr::AGENT_ID, Some(attr::TASK_ID)),
                ],
                ttl_attribute: None,
            },
            TableDef {
                role: "agents",
                name: self.agents_table(),
                key: key(attr::AGENT_ID, None),
                global_secondary_indexes: vec![],
                ttl_attribute: None,
            },
            TableDef {
                role: "leases",
                name: self.leases_table(),
                key: key(attr::LEASE_NAME, None),
                global_secondary_indexes: vec![],
                ttl_attribute: None,
            },
            TableDef {
                role: "idempotency",
                name: self.idempotency_table(),
                key: key(attr::IDEMPOTENCY_KEY, None),
                global_secondary_indexes: vec![],
                ttl_attribute: Some(attr::EXPIRES_AT),
            },
        ]
    }

    fn queues(&self) -> Vec<QueueDef> {
        vec![
            QueueDef {
                role: "submit",
                name: self.submit_queue(),
                visibility_timeout_secs: 60,
                message_retention_secs: FOUR_DAYS_SECS,
                dead_letter: Some(DeadLetterDef {
                    name: self.resource("submit-dlq"),
                    max_receive_count: 5,
                }),
            },
            // Producers read why their descriptors were refused here; nothing consumes it.
            QueueDef {
                role: "submit-rejected",
                name: self.submit_rejected_queue(),
                visibility_timeout_secs: 30,
                message_retention_secs: FOURTEEN_DAYS_SECS,
                dead_letter: None,
            },
            QueueDef {
                role: "status",
                name: self.status_queue(),
                visibility_timeout_secs: 60,
                message_retention_secs: FOUR_DAYS_SECS,
                dead_letter: Some(DeadLetterDef {
                    name: self.resource("status-dlq"),
                    max_receive_count: 5,
                }),
            },
        ]
    }

    fn parameters(&self) -> Vec<ParameterDef> {
        vec![ParameterDef {
            name: self.job_limits_parameter(),
            description: "Limits every job descriptor is validated against (JSON, camelCase)",
            default_value: serde_json::to_string(&titus_core::Limits::titus_defaults())
                .unwrap_or_default(),
        }]
    }
}

/// Which pending-index shard a task's writes go to: a stable hash of its id (FNV-1a), so every
/// writer agrees without coordination.
pub fn pending_shard(task_id: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in task_id.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % PENDING_TASK_SHARDS
}

/// The shard's partition key value in the pending index.
pub fn pending_shard_key(shard: u32) -> String {
    format!("p{shard:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_names_are_checked() {
        assert!(Names::new("local").is_ok());
        assert!(Names::new("prod-eu1").is_ok());
        let err = Names::new("Prod").unwrap_err();
        assert!(err.contains("\"Prod\""), "{err}");
        assert!(Names::new("").is_err());
        assert!(Names::new("a-very-long-stage-name").is_err());
    }

    #[test]
    fn every_resource_name_carries_the_stage() {
        let defs = Names::new("ci").unwrap().definitions();
        for table in &defs.tables {
            assert!(table.name.starts_with("titus-ci-"), "{}", table.name);
        }
        for queue in &defs.queues {
            assert!(queue.name.starts_with("titus-ci-"), "{}", queue.name);
        }
        for parameter in &defs.parameters {
            assert!(
                parameter.name.starts_with("/titus/ci/"),
                "{}",
                parameter.name
            );
        }
    }

    #[test]
    fn pending_shards_spread_task_ids() {
        let mut counts = [0u32; PENDING_TASK_SHARDS as usize];
        for i in 0..1_600 {
            let id = titus_core::TaskId::generate();
            let _ = i;
            counts[pending_shard(id.as_str()) as usize] += 1;
        }
        // Uniform would be 100 per shard; a hot shard would take far more.
        assert!(
            counts.iter().all(|&c| (40..=200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn the_same_task_always_maps_to_the_same_shard() {
        assert_eq!(pending_shard("abc"), pending_shard("abc"));
        assert_eq!(pending_shard_key(3), "p03");
    }
}
