//! Every AWS resource Titus uses, declared once: tables (keys, indexes, TTL), queues (with their
//! dead-letter queues) and SSM parameters. Local provisioning creates them from these definitions,
//! and the CDK app's tests compare its template against them (`titus-provision --print-definitions`).

use serde::Serialize;

/// The stage used when none is configured: the local stack.
pub const DEFAULT_STAGE: &str = "local";

/// The bearer tokens of a local stack (token, identity): well known, so only
/// [`Names::local_definitions`] writes them, never a stage provisioned into AWS.
pub const LOCAL_TOKENS: [(&str, &str); 2] = [
    ("local-dev-token", "dev@titus.local"),
    ("local-admin-token", LOCAL_ADMIN),
];

/// The admin of a local stack.
pub const LOCAL_ADMIN: &str = "admin@titus.local";

/// How many shards the pending-task index spreads its writes over, so that a burst of new tasks
/// does not land on one hot partition key.
pub const PENDING_TASK_SHARDS: u32 = 16;

/// The one partition of the sparse index of jobs awaiting their initial tasks. A job is in it
/// for a moment (until the scheduler's next tick), so the index stays small; one partition takes
/// about 1,000 new jobs a second, far above what one scheduler places.
pub const AWAITING_TASKS_PARTITION: &str = "awaiting";

/// How long an idempotency record is kept, in seconds (DynamoDB TTL removes it afterwards).
pub const IDEMPOTENCY_TTL_SECS: u64 = 7 * 24 * 3600;

/// How long an agent's last heartbeat is kept after it stops sending them (DynamoDB's TTL).
pub const HEARTBEAT_TTL_SECS: u64 = 24 * 3600;

/// How long a received agent command stays hidden from other receives. The agent extends it
/// while it works on a command that takes longer (an image pull, a kill's grace period).
pub const AGENT_QUEUE_VISIBILITY_TIMEOUT_SECS: u32 = 60;

/// Receives of one agent command before SQS moves it to the agent queue's DLQ.
pub const AGENT_QUEUE_MAX_RECEIVE_COUNT: u32 = 3;

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
    pub const DISPATCH_SHARD: &str = "dispatchShard";
    pub const DISPATCH_KEY: &str = "dispatchKey";
    pub const TRANSIT_SHARD: &str = "transitShard";
    pub const TRANSIT_KEY: &str = "transitKey";
    pub const ACTIVE_JOB_ID: &str = "activeJobId";
    pub const VERSION: &str = "version";
    pub const DOC: &str = "doc";
    /// Present only on a job whose initial tasks are not written yet (`AWAITING_TASKS_PARTITION`).
    pub const AWAITING_TASKS: &str = "awaitingTasks";
    pub const REQUEST_HASH: &str = "requestHash";
    pub const EXPIRES_AT: &str = "expiresAt";
    /// The key of a rate-limit counter: `{caller}#{kind}#{window start}`.
    pub const RATE_KEY: &str = "rateKey";
    /// The key of a quota usage record: `team:{email}` or `group:{capacity group}`.
    pub const QUOTA_SCOPE: &str = "scope";
    /// The key of an agent's heartbeat item: the principal it speaks as (see `Agent::principal`).
    pub const HEARTBEAT_KEY: &str = "heartbeatKey";
    /// The partition of an event: `job#{job id}` for a job's feed, `all#{minute}#{shard}` for
    /// the feed of every job (see `titus_core::events`).
    pub const FEED_KEY: &str = "feedKey";
    /// The order of an event in its feed: `{feed ms, 13 digits}#{event id}`.
    pub const EVENT_KEY: &str = "eventKey";
}

/// Index names shared by the store code and the table definitions.
pub mod index {
    pub const JOBS_BY_STATE: &str = "byState";
    pub const JOBS_BY_OWNER: &str = "byOwner";
    pub const JOBS_BY_APPLICATION: &str = "byApplication";
    pub const JOBS_AWAITING_TASKS: &str = "awaitingTasks";
    pub const TASKS_BY_JOB: &str = "byJob";
    pub const TASKS_PENDING: &str = "pending";
    pub const TASKS_BY_AGENT: &str = "byAgent";
    pub const TASKS_UNACKNOWLEDGED: &str = "unacknowledged";
    pub const TASKS_TRANSITIONAL: &str = "transitional";
    pub const TASKS_ACTIVE_BY_JOB: &str = "activeByJob";
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

/// The agents' stream records that can be state changes: a registration, and any write of an
/// agent that is or was draining or lost. The allocation writes of active agents (every
/// placement's) never reach the events function.
fn agent_state_filters() -> Vec<serde_json::Value> {
    let states = [
        titus_core::AgentState::Draining,
        titus_core::AgentState::Lost,
    ];
    let in_state = |image: &str| {
        let mut attribute = serde_json::Map::new();
        attribute.insert(
            crate::agents::agent_attr::STATE.to_owned(),
            serde_json::json!({ "S": states.map(|s| s.as_str()) }),
        );
        let images = serde_json::Map::from_iter([(image.to_owned(), attribute.into())]);
        serde_json::json!({ "dynamodb": images })
    };
    vec![
        serde_json::json!({ "eventName": ["INSERT"] }),
        in_state("NewImage"),
        in_state("OldImage"),
    ]
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
    /// Whether the table has a DynamoDB stream (new and old images): its changes become events.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    /// The event source mapping's filter patterns (Lambda event filtering, any one matching): the
    /// stream records the events function is handed. None: every record.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stream_filters: Vec<serde_json::Value>,
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
    /// Agents' heartbeats and reports, keyed by the principal that writes them: the only table
    /// an agent writes to, and only under its own key.
    pub fn heartbeats_table(&self) -> String {
        self.resource("heartbeats")
    }
    pub fn leases_table(&self) -> String {
        self.resource("leases")
    }
    pub fn idempotency_table(&self) -> String {
        self.resource("idempotency")
    }
    /// Per-caller request counters of the API's rate limits, one item per caller, kind and
    /// window, expiring by TTL.
    pub fn rate_limits_table(&self) -> String {
        self.resource("rate-limits")
    }
    /// What each owner team and capacity group holds (jobs, task slots, CPU, memory, GPUs), one
    /// item per scope, changed in the same transaction as the jobs that change it.
    pub fn quota_usage_table(&self) -> String {
        self.resource("quota-usage")
    }
    /// The scheduler's last placement result per job whose tasks fit nowhere, expiring by TTL.
    pub fn placement_results_table(&self) -> String {
        self.resource("placement-results")
    }
    /// The event feed: every job's and task's changes, from the jobs', tasks' and placement
    /// results' streams, expiring by TTL.
    pub fn events_table(&self) -> String {
        self.resource("events")
    }
    /// The EventBridge bus the events function publishes every event to.
    pub fn event_bus(&self) -> String {
        self.resource("events")
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
    /// Where status messages that cannot be applied are kept: SQS's redrive after
    /// `maxReceiveCount` failures, and the status function itself for malformed messages.
    pub fn status_dead_letter_queue(&self) -> String {
        self.resource("status-dlq")
    }
    /// Where agents send their requests about their own records (register, drain, deregister),
    /// for the control plane to apply.
    pub fn registrations_queue(&self) -> String {
        self.resource("registrations")
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
    /// The platform's job policy (privileged, host network, host mounts, image registries).
    pub fn job_policy_parameter(&self) -> String {
        format!("{}/policy/jobs", self.parameter_path())
    }
    /// The API's local bearer tokens: a JSON object of token to caller identity.
    pub fn api_identities_parameter(&self) -> String {
        format!("{}/api/identities", self.parameter_path())
    }
    /// The identities that may change any job: a JSON array.
    pub fn api_admins_parameter(&self) -> String {
        format!("{}/api/admins", self.parameter_path())
    }
    /// The API's per-caller rate limits: a JSON object.
    pub fn api_rate_limits_parameter(&self) -> String {
        format!("{}/api/rate-limits", self.parameter_path())
    }
    /// The owner teams each caller belongs to: it submits jobs for them (through the API or
    /// the submit queue) and reads their jobs' environment values. A JSON object of identity to
    /// team emails.
    pub fn quota_policy_parameter(&self) -> String {
        format!("{}/policy/quotas", self.parameter_path())
    }
    pub fn team_policy_parameter(&self) -> String {
        format!("{}/policy/teams", self.parameter_path())
    }
    /// The SSM path under which the agent's parameters live.
    pub fn agent_parameter_path(&self) -> String {
        format!("{}/agent", self.parameter_path())
    }
    /// The agent's settings: one JSON object, snake_case keys with units in their names.
    pub fn agent_config_parameter(&self) -> String {
        format!("{}/config", self.agent_parameter_path())
    }
    /// The scheduler's tunables: one JSON object (`scheduler_config_default`).
    pub fn scheduler_config_parameter(&self) -> String {
        format!("{}/scheduler/config", self.parameter_path())
    }
    /// The control plane's rules: stuck-state and heartbeat timeouts, retry limits, how much one
    /// reconciler run does.
    pub fn control_rules_parameter(&self) -> String {
        format!("{}/control/rules", self.parameter_path())
    }
    /// The SSM path under which the scaler's parameters live; the scaler reads all of it.
    pub fn scaler_parameter_path(&self) -> String {
        format!("{}/scaler", self.parameter_path())
    }
    /// The scaler's own settings: one JSON object (`scaler_config_default`).
    pub fn scaler_config_parameter(&self) -> String {
        format!("{}/config", self.scaler_parameter_path())
    }
    /// The path under which each agent pool has one parameter, named after the pool.
    pub fn scaler_pools_path(&self) -> String {
        format!("{}/pools", self.scaler_parameter_path())
    }
    /// One agent pool's limits, instance types and purchase options (`scaler_pool_default`).
    pub fn scaler_pool_parameter(&self, pool: &str) -> String {
        format!("{}/{pool}", self.scaler_pools_path())
    }
    /// The EC2 launch template the scaler starts agents from (the CDK app creates it).
    pub fn agent_launch_template(&self) -> String {
        self.resource("agent")
    }

    /// An agent's own queue and its dead-letter queue. The agent creates them at start; a
    /// message it cannot process moves to the DLQ after `AGENT_QUEUE_MAX_RECEIVE_COUNT` receives.
    pub fn agent_queue_def(&self, agent_id: &str) -> QueueDef {
        let name = self.agent_queue(agent_id);
        QueueDef {
            role: "agent",
            dead_letter: Some(DeadLetterDef {
                name: format!("{name}-dlq"),
                max_receive_count: AGENT_QUEUE_MAX_RECEIVE_COUNT,
            }),
            name,
            visibility_timeout_secs: AGENT_QUEUE_VISIBILITY_TIMEOUT_SECS,
            message_retention_secs: FOUR_DAYS_SECS,
        }
    }

    /// Every table, queue and parameter of the stage, with defaults safe for any account: no
    /// bearer token and no admin, so that nobody can call a new stage's API until its operator
    /// names who may.
    pub fn definitions(&self) -> Definitions {
        Definitions {
            stage: self.stage.clone(),
            tables: self.tables(),
            queues: self.queues(),
            parameters: self.parameters(),
        }
    }

    /// The definitions of a stage on the local emulator (`titus local up`, tests): the defaults
    /// plus the local-only bearer tokens ([`LOCAL_TOKENS`]), their admin, and the local developer
    /// in every team. Never provisioned into AWS: `titus-provision` writes
    /// [`Names::definitions`].
    pub fn local_definitions(&self) -> Definitions {
        let mut definitions = self.definitions();
        for parameter in &mut definitions.parameters {
            if parameter.name == self.api_identities_parameter() {
                let tokens: serde_json::Map<String, serde_json::Value> = LOCAL_TOKENS
                    .iter()
                    .map(|(token, identity)| ((*token).to_owned(), (*identity).into()))
                    .collect();
                parameter.default_value = serde_json::Value::Object(tokens).to_string();
            } else if parameter.name == self.api_admins_parameter() {
                parameter.default_value = serde_json::json!([LOCAL_ADMIN]).to_string();
            } else if parameter.name == self.team_policy_parameter() {
                // The local developer and every local submit-queue producer file jobs for any
                // team, as demos and tests do.
                parameter.default_value =
                    serde_json::json!({LOCAL_TOKENS[0].1: ["*"], "sqs:*": ["*"]}).to_string();
            }
        }
        definitions
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
                    // Sparse: only jobs whose initial tasks are not written yet, oldest first.
                    gsi(
                        index::JOBS_AWAITING_TASKS,
                        attr::AWAITING_TASKS,
                        Some(attr::CREATED_KEY),
                    ),
                ],
                ttl_attribute: None,
                stream: true,
                stream_filters: vec![],
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
                    // Sparse: only tasks dispatched and not yet acknowledged by their agent.
                    gsi(
                        index::TASKS_UNACKNOWLEDGED,
                        attr::DISPATCH_SHARD,
                        Some(attr::DISPATCH_KEY),
                    ),
                    // Sparse: only tasks holding resources on an agent carry the agent id.
                    gsi(index::TASKS_BY_AGENT, attr::AGENT_ID, Some(attr::TASK_ID)),
                    // Sparse: only tasks in a state they should soon leave (Launched,
                    // StartInitiated, KillInitiated), sharded and keyed by when they entered it,
                    // so the reconciler finds stuck tasks without reading running ones.
                    gsi(
                        index::TASKS_TRANSITIONAL,
                        attr::TRANSIT_SHARD,
                        Some(attr::TRANSIT_KEY),
                    ),
                    // Sparse: only tasks not yet Finished, by job, so a job's live tasks are
                    // read without its history of finished ones.
                    gsi(
                        index::TASKS_ACTIVE_BY_JOB,
                        attr::ACTIVE_JOB_ID,
                        Some(attr::CREATED_KEY),
                    ),
                ],
                ttl_attribute: None,
                stream: true,
                stream_filters: vec![],
            },
            TableDef {
                role: "agents",
                name: self.agents_table(),
                key: key(attr::AGENT_ID, None),
                global_secondary_indexes: vec![],
                ttl_attribute: None,
                // For the agents' state changes (registered, draining, lost) in the event feed;
                // in AWS a filter hands the events function only records of state changes' kind.
                stream: true,
                stream_filters: agent_state_filters(),
            },
            TableDef {
                role: "heartbeats",
                name: self.heartbeats_table(),
                key: key(attr::HEARTBEAT_KEY, None),
                global_secondary_indexes: vec![],
                ttl_attribute: Some(attr::EXPIRES_AT),
                stream: false,
                stream_filters: vec![],
            },
            TableDef {
                role: "leases",
                name: self.leases_table(),
                key: key(attr::LEASE_NAME, None),
                global_secondary_indexes: vec![],
                ttl_attribute: None,
                stream: false,
                stream_filters: vec![],
            },
            TableDef {
                role: "idempotency",
                name: self.idempotency_table(),
                key: key(attr::IDEMPOTENCY_KEY, None),
                global_secondary_indexes: vec![],
                ttl_attribute: Some(attr::EXPIRES_AT),
                stream: false,
                stream_filters: vec![],
            },
            TableDef {
                role: "rate-limits",
                name: self.rate_limits_table(),
                key: key(attr::RATE_KEY, None),
                global_secondary_indexes: vec![],
                ttl_attribute: Some(attr::EXPIRES_AT),
                stream: false,
                stream_filters: vec![],
            },
            TableDef {
                role: "quota-usage",
                name: self.quota_usage_table(),
                key: key(attr::QUOTA_SCOPE, None),
                global_secondary_indexes: vec![],
                ttl_attribute: None,
                stream: false,
                stream_filters: vec![],
            },
            TableDef {
                role: "placement-results",
                name: self.placement_results_table(),
                key: key(attr::JOB_ID, None),
                global_secondary_indexes: vec![],
                ttl_attribute: Some(attr::EXPIRES_AT),
                stream: true,
                stream_filters: vec![],
            },
            TableDef {
                role: "events",
                name: self.events_table(),
                key: key(attr::FEED_KEY, Some(attr::EVENT_KEY)),
                global_secondary_indexes: vec![],
                ttl_attribute: Some(attr::EXPIRES_AT),
                stream: false,
                stream_filters: vec![],
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
                    name: self.status_dead_letter_queue(),
                    max_receive_count: 5,
                }),
            },
            QueueDef {
                role: "registrations",
                name: self.registrations_queue(),
                visibility_timeout_secs: 60,
                message_retention_secs: FOUR_DAYS_SECS,
                dead_letter: Some(DeadLetterDef {
                    name: self.resource("registrations-dlq"),
                    max_receive_count: 5,
                }),
            },
        ]
    }

    fn parameters(&self) -> Vec<ParameterDef> {
        vec![
            ParameterDef {
                name: self.job_limits_parameter(),
                description: "Limits every job descriptor is validated against (JSON, camelCase)",
                default_value: serde_json::to_string(&titus_core::Limits::titus_defaults())
                    .unwrap_or_default(),
            },
            ParameterDef {
                name: self.job_policy_parameter(),
                description:
                    "What jobs may ask of their hosts (JSON, camelCase): allowPrivileged, \
                              allowHostNetwork, allowHostMounts, registries (empty: any), \
                              allowedCapabilities (beyond NET_BIND_SERVICE; empty: none)",
                default_value: serde_json::json!({
                    "allowPrivileged": false,
                    "allowHostNetwork": false,
                    "allowHostMounts": false,
                    "registries": [],
                    "allowedCapabilities": []
                })
                .to_string(),
            },
            ParameterDef {
                name: self.api_identities_parameter(),
                description: "Bearer tokens the API accepts outside AWS (JSON object: token to \
                              identity); in AWS, API Gateway's IAM auth names the caller instead",
                default_value: "{}".to_owned(),
            },
            ParameterDef {
                name: self.api_admins_parameter(),
                description: "Identities that may kill or change any job (JSON array)",
                default_value: "[]".to_owned(),
            },
            ParameterDef {
                name: self.api_rate_limits_parameter(),
                description: "Per-caller rate limits of the API (JSON, camelCase): at most \
                              requests authenticated requests and creates job creations per \
                              caller in each window of windowSecs; callers maps an identity to \
                              its own requests and creates",
                default_value: serde_json::json!({
                    "windowSecs": 1,
                    "requests": 50,
                    "creates": 10,
                    "callers": {}
                })
                .to_string(),
            },
            ParameterDef {
                name: self.quota_policy_parameter(),
                description: "Quotas (JSON, camelCase): teams and capacityGroups map an owner \
                              team email or capacity group (\"*\": every other one) to limits \
                              on what its unfinished jobs hold at once: jobs, tasks (slots), \
                              cpu (cores), memoryMB, gpu; a limit left out is unlimited",
                default_value: quotas_default().to_string(),
            },
            ParameterDef {
                name: self.team_policy_parameter(),
                description: "The owner teams each caller belongs to (JSON object: identity, or \
                              prefix ending in *, to team emails, \"*\" for every team): a \
                              caller (an API identity, or sqs:<SenderId> on the submit queue) \
                              submits jobs only for its teams or the team named like itself, \
                              and reads the environment values of its teams' jobs",
                default_value: "{}".to_owned(),
            },
            ParameterDef {
                name: self.agent_config_parameter(),
                description: "Settings of every agent of the stage (JSON, snake_case); \
                              TITUS_AGENT_* environment variables override them per host",
                default_value: agent_config_default().to_string(),
            },
            ParameterDef {
                name: self.scheduler_config_parameter(),
                description: "Scheduler tunables (JSON, snake_case): lease, batch size, \
                              acknowledgement timeout, loop budget, strategy (binpack|spread); \
                              TITUS_SCHEDULER_* environment variables override them",
                default_value: scheduler_config_default().to_string(),
            },
            ParameterDef {
                name: self.control_rules_parameter(),
                description: "Control-plane rules (JSON, snake_case): heartbeat and stuck-state \
                              timeouts, retry limits, reconciler batch sizes; TITUS_STATUS_* \
                              environment variables override them",
                default_value: control_rules_default().to_string(),
            },
            ParameterDef {
                name: self.scaler_config_parameter(),
                description: "Capacity scaler settings (JSON, snake_case): lease, how many \
                              pending tasks it reads, registration timeout",
                default_value: scaler_config_default().to_string(),
            },
            ParameterDef {
                name: self.scaler_pool_parameter(DEFAULT_POOL),
                description: "Agent pool (JSON, snake_case): min/max agents, instance types, \
                              on-demand/spot mix, subnets (empty: default VPC), cool-down, \
                              idle threshold, launch template",
                default_value: scaler_pool_default(self).to_string(),
            },
        ]
    }
}

/// Every team's default quota: room for a large team's work, not for one tenant to take a
/// fleet of thousands of hosts; capacity groups are unlimited until configured.
pub fn quotas_default() -> serde_json::Value {
    serde_json::json!({
        "teams": {"*": {"jobs": 1000, "tasks": 10000, "cpu": 5000, "memoryMB": 20_000_000, "gpu": 64}},
        "capacityGroups": {}
    })
}

/// The stage-wide agent settings provisioning writes. The agent crate's tests check that these
/// equal the agent's built-in defaults; per-host settings (id, zone, capacity) are left out.
pub fn agent_config_default() -> serde_json::Value {
    serde_json::json!({
        "machine_group": "default",
        "network_mbps": 1000,
        "gpu": 0,
        "allow_privileged": false,
        "allow_host_network": false,
        "allow_host_mounts": false,
        "log_driver": "json-file",
        "log_max_size_mb": 10,
        "log_max_files": 3,
        "pids_limit": 4096,
        "drain_policy": "finish",
        "drain_timeout_secs": 3600,
        "image_pull_timeout_secs": 300,
        "docker_timeout_secs": 120,
        "heartbeat_interval_secs": 5,
        "poll_wait_secs": 20,
        "max_concurrent_messages": 16,
        "finished_retention_secs": 3600,
        "ecr_auth_from_instance_role": true,
        "imds_timeout_millis": 1000,
        "task_network": "titus-tasks",
        "credentials_address": "169.254.170.2",
        "credentials_port": 51679,
        "host_ports_open_to_tasks": [],
        "allowed_capabilities": []
    })
}

/// The agent pool (machine group) provisioning configures; agents join it by default.
pub const DEFAULT_POOL: &str = "default";

/// EC2 tags on the instances the scaler launches: how the scaler finds its pool's instances and
/// how an agent learns its pool (instance metadata tags).
pub mod tag {
    pub const STAGE: &str = "titus:stage";
    pub const POOL: &str = "titus:pool";
    pub const MANAGED_BY: &str = "titus:managed-by";
    /// The value of `MANAGED_BY` on instances the scaler launched.
    pub const SCALER: &str = "titus-scaler";
}

/// The scheduler tunables provisioning writes; equal to the scheduler's built-in defaults (its
/// tests check it).
pub fn scheduler_config_default() -> serde_json::Value {
    serde_json::json!({
        "lease_ttl_ms": 15_000,
        "max_tasks_per_tick": 500,
        "ack_timeout_ms": 30_000,
        "loop_budget_ms": 240_000,
        "strategy": "binpack"
    })
}

/// The control-plane rules provisioning writes; equal to the application layer's built-in
/// defaults (its tests check it).
pub fn control_rules_default() -> serde_json::Value {
    serde_json::json!({
        "agent_heartbeat_timeout_ms": 30_000,
        "launched_timeout_ms": 300_000,
        "start_initiated_batch_timeout_ms": 720_000,
        "start_initiated_service_timeout_ms": 300_000,
        "kill_initiated_timeout_ms": 600_000,
        "runtime_limit_slack_ms": 60_000,
        "max_system_retries": 10,
        "service_backoff_reset_after_ms": 600_000,
        "max_tasks_per_run": 500,
        "sweep_jobs_per_run": 100,
        "agent_role_id": "",
        "unreported_task_timeout_ms": 60_000,
        "stray_kill_backoff_ms": 5_000
    })
}

/// The scaler settings provisioning writes; equal to the scaler's built-in defaults.
pub fn scaler_config_default() -> serde_json::Value {
    serde_json::json!({
        "lease_ttl_secs": 120,
        "max_pending_tasks": 1_000,
        "registration_timeout_secs": 600,
        "config_max_age_secs": 60
    })
}

/// The default pool provisioning writes: on-demand Graviton instances from the stage's launch
/// template in the default VPC's subnets, none kept when idle, at most ten.
pub fn scaler_pool_default(names: &Names) -> serde_json::Value {
    serde_json::json!({
        "min_agents": 0,
        "max_agents": 10,
        "instance_types": ["m7g.large", "m7g.xlarge", "m7g.2xlarge"],
        "launch_template": names.agent_launch_template(),
        "subnet_ids": [],
        "on_demand_base": 0,
        "on_demand_percent_above_base": 100,
        "spot_allocation_strategy": "price-capacity-optimized",
        "cooldown_secs": 120,
        "idle_threshold_secs": 600,
        "max_launches_per_run": 20,
        "memory_reserved_mb": 512,
        "disk_mb": 40_000,
        "network_mbps": 1000
    })
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
    fn only_local_definitions_carry_the_local_tokens() {
        let names = Names::new("ci").unwrap();
        let value = |defs: &Definitions, name: String| {
            defs.parameters
                .iter()
                .find(|p| p.name == name)
                .map(|p| p.default_value.clone())
                .unwrap()
        };

        let defaults = names.definitions();
        assert_eq!(value(&defaults, names.api_identities_parameter()), "{}");
        assert_eq!(value(&defaults, names.api_admins_parameter()), "[]");

        let local = names.local_definitions();
        let tokens: serde_json::Value =
            serde_json::from_str(&value(&local, names.api_identities_parameter())).unwrap();
        assert_eq!(tokens["local-dev-token"], "dev@titus.local");
        assert_eq!(tokens["local-admin-token"], "admin@titus.local");
        assert_eq!(
            value(&local, names.api_admins_parameter()),
            r#"["admin@titus.local"]"#
        );
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
