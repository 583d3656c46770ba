//! The agent's configuration: one typed struct, read once at start from the stage's SSM
//! parameter `/titus/{stage}/agent/config` (a JSON object) and then overridden per host by
//! environment variables. Anything invalid fails the start with a message naming the parameter
//! or variable.
//!
//! Every setting `some_name` can be overridden by the variable `TITUS_AGENT_SOME_NAME` (`agent_id`
//! by `TITUS_AGENT_ID`); the stage itself comes from `TITUS_STAGE`. Booleans are `true`/`false`; optional settings are cleared
//! with an empty value.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The stage when `TITUS_STAGE` is not set.
pub const DEFAULT_STAGE: &str = "local";

/// Where task containers' output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogDriver {
    /// Docker's local JSON files, rotated by `log_max_size_mb` and `log_max_files`.
    #[serde(rename = "json-file")]
    JsonFile,
    /// CloudWatch Logs, to the group `awslogs_group`; one stream per task.
    #[serde(rename = "awslogs")]
    Awslogs,
}

/// What happens to running tasks when the agent drains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DrainPolicy {
    /// Let them run to their end (at most `drain_timeout_secs`, then hand them back).
    Finish,
    /// Stop them at once, with their grace period, reporting `transientSystemError` so that the
    /// control plane places them again elsewhere without using up their retries.
    HandBack,
}

/// Every setting of the agent. Units are in the names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentSettings {
    /// The agent's identity; when unset, the EC2 instance id from instance metadata (IMDSv2).
    /// 1 to 40 letters, digits, `-` or `_` (it is part of the agent's queue name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// When unset: instance metadata on EC2, else `local`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// When unset: instance metadata on EC2, else `local`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine_type: Option<String>,
    pub machine_group: String,
    /// Capacity overrides; when unset, measured (CPU count, /proc/meminfo, the size of the
    /// Docker root directory's file system).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_mb: Option<u64>,
    /// Not measurable from the host; the instance type's bandwidth.
    pub network_mbps: u64,
    pub gpu: u64,
    /// Whether a task may have a privileged container, the host's network, or host mounts.
    /// A launch asking for one that is not allowed finishes with `invalidRequest`.
    pub allow_privileged: bool,
    pub allow_host_network: bool,
    pub allow_host_mounts: bool,
    pub log_driver: LogDriver,
    /// json-file: rotate at this size, keep this many files.
    pub log_max_size_mb: u64,
    pub log_max_files: u32,
    /// awslogs: the log group (required) and region (default: the agent's AWS region).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub awslogs_group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub awslogs_region: Option<String>,
    /// awslogs: the CloudWatch Logs endpoint Docker writes to, when it is not AWS' own (the
    /// local emulator's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub awslogs_endpoint: Option<String>,
    /// The CloudWatch Logs group the agent writes its metrics to, as Embedded Metric Format
    /// lines in a stream named by its id (`/titus/{stage}/agents` in AWS); `None`: the metrics
    /// are only logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_log_group: Option<String>,
    /// The most processes one task container may have.
    pub pids_limit: i64,
    pub drain_policy: DrainPolicy,
    /// With `finish`, tasks still running this long after the drain began are handed back.
    pub drain_timeout_secs: u64,
    /// A pull that takes longer fails the task with `localSystemError`.
    pub image_pull_timeout_secs: u64,
    /// Every Docker call but waits, stops and pulls must answer within this.
    pub docker_timeout_secs: u64,
    pub heartbeat_interval_secs: u64,
    /// The long poll of the agent's queue, 0 to 20 (SQS's maximum).
    pub poll_wait_secs: u64,
    /// Commands worked on at once; more wait in the queue.
    pub max_concurrent_messages: u32,
    /// A finished task's container is kept this long, so its log can be read, then removed.
    pub finished_retention_secs: u64,
    /// Pull images from ECR with credentials from the instance role.
    pub ecr_auth_from_instance_role: bool,
    /// The budget for each instance metadata request.
    pub imds_timeout_millis: u64,
    /// The file system whose size is the agent's disk capacity; default: Docker's root dir.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_path: Option<String>,
    /// The Docker bridge network every task joins, and its bridge interface's name (at most 15
    /// characters): created at start with traffic between its containers off, and fenced off
    /// from the host and from instance metadata by the agent's firewall rules.
    pub task_network: String,
    /// Where the agent serves task credentials (`AWS_CONTAINER_CREDENTIALS_FULL_URI`): an
    /// address the AWS SDKs accept over plain HTTP (169.254.170.2, as on ECS), added to `lo`.
    pub credentials_address: String,
    /// Its TCP port; 0 picks a free one at start (tests only: running tasks lose their
    /// credentials when the agent restarts on another port).
    pub credentials_port: u16,
    /// Host TCP ports task containers may reach (on any host address); none in production.
    /// Locally, the emulator's port, so that tasks can call the emulated AWS as their role.
    pub host_ports_open_to_tasks: Vec<u16>,
    /// Capabilities a job may add (`container.securityContext.addCapabilities`) beyond the
    /// default `NET_BIND_SERVICE`; a launch asking for another finishes with `invalidRequest`.
    pub allowed_capabilities: Vec<String>,
}

impl Default for AgentSettings {
    fn default() -> AgentSettings {
        AgentSettings {
            agent_id: None,
            zone: None,
            machine_type: None,
            machine_group: "default".to_owned(),
            cpu_millis: None,
            memory_mb: None,
            disk_mb: None,
            network_mbps: 1000,
            gpu: 0,
            allow_privileged: false,
            allow_host_network: false,
            allow_host_mounts: false,
            log_driver: LogDriver::JsonFile,
            log_max_size_mb: 10,
            log_max_files: 3,
            awslogs_group: None,
            awslogs_region: None,
            awslogs_endpoint: None,
            metrics_log_group: None,
            pids_limit: 4096,
            drain_policy: DrainPolicy::Finish,
            drain_timeout_secs: 3600,
            image_pull_timeout_secs: 300,
            docker_timeout_secs: 120,
            heartbeat_interval_secs: 5,
            poll_wait_secs: 20,
            max_concurrent_messages: 16,
            finished_retention_secs: 3600,
            ecr_auth_from_instance_role: true,
            imds_timeout_millis: 1000,
            disk_path: None,
            task_network: "titus-tasks".to_owned(),
            credentials_address: "169.254.170.2".to_owned(),
            credentials_port: 51679,
            host_ports_open_to_tasks: Vec::new(),
            allowed_capabilities: Vec::new(),
        }
    }
}

/// Why the configuration is not usable. Each names where the bad value came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("parameter {parameter} is not valid agent configuration: {message}")]
    Parameter { parameter: String, message: String },
    #[error("environment variable {variable}={value:?} is not valid: {message}")]
    Environment {
        variable: String,
        value: String,
        message: String,
    },
    #[error("setting {setting} is not valid: {message} (set by {source_name})")]
    Invalid {
        setting: &'static str,
        message: String,
        source_name: String,
    },
    #[error("reading parameters under {path} failed: {message}")]
    Unreadable { path: String, message: String },
}

/// The environment variable that overrides a setting: `TITUS_AGENT_` and the setting's name in
/// capitals, except `agent_id`, which is `TITUS_AGENT_ID`.
pub fn env_var_name(setting: &str) -> String {
    let name = setting.strip_prefix("agent_").unwrap_or(setting);
    format!("TITUS_AGENT_{}", name.to_ascii_uppercase())
}

impl AgentSettings {
    /// Parses the stage's JSON parameter; keys left out keep their defaults.
    pub fn from_parameter(parameter: &str, json: &str) -> Result<AgentSettings, ConfigError> {
        let mut deserializer = serde_json::Deserializer::from_str(json);
        serde_path_to_error::deserialize(&mut deserializer).map_err(|e| ConfigError::Parameter {
            parameter: parameter.to_owned(),
            message: e.to_string(),
        })
    }

    /// Applies `TITUS_AGENT_*` overrides from `env` (the process environment in `main`).
    pub fn apply_env(&mut self, env: &BTreeMap<String, String>) -> Result<(), ConfigError> {
        let mut value = serde_json::to_value(&*self).map_err(|e| ConfigError::Parameter {
            parameter: "defaults".to_owned(),
            message: e.to_string(),
        })?;
        let defaults = serde_json::to_value(AgentSettings::default()).unwrap_or_default();
        let Some(object) = value.as_object_mut() else {
            return Ok(());
        };
        let known: Vec<String> = SETTING_NAMES.iter().map(|s| env_var_name(s)).collect();
        if let Some((variable, text)) = env
            .iter()
            .find(|(k, _)| k.starts_with("TITUS_AGENT_") && !known.contains(k))
        {
            return Err(ConfigError::Environment {
                variable: variable.clone(),
                value: text.clone(),
                message: "no such setting; expected TITUS_AGENT_ and a setting's name, \
                          e.g. TITUS_AGENT_POLL_WAIT_SECS"
                    .to_owned(),
            });
        }
        for setting in SETTING_NAMES {
            let variable = env_var_name(setting);
            let Some(text) = env.get(&variable) else {
                continue;
            };
            let parsed = if OPTIONAL_SETTINGS.contains(setting) && text.is_empty() {
                None
            } else {
                Some(env_value(defaults.get(*setting), setting, text))
            };
            match parsed {
                None => {
                    object.remove(*setting);
                }
                Some(parsed) => {
                    object.insert((*setting).to_owned(), parsed);
                }
            }
            // Check each variable on its own, so that the error names it.
            let mut single = serde_json::Map::new();
            if let Some(v) = object.get(*setting) {
                single.insert((*setting).to_owned(), v.clone());
            }
            if let Err(e) = serde_path_to_error::deserialize::<_, AgentSettings>(
                serde_json::Value::Object(single),
            ) {
                return Err(ConfigError::Environment {
                    variable,
                    value: text.clone(),
                    message: e.inner().to_string(),
                });
            }
        }
        *self = serde_json::from_value(value).map_err(|e| ConfigError::Parameter {
            parameter: "environment overrides".to_owned(),
            message: e.to_string(),
        })?;
        Ok(())
    }

    /// Checks the ranges and combinations serde cannot.
    pub fn validate(&self, source_name: &str) -> Result<(), ConfigError> {
        let invalid = |setting: &'static str, message: String| ConfigError::Invalid {
            setting,
            message,
            source_name: source_name.to_owned(),
        };
        if let Some(id) = &self.agent_id {
            if !is_valid_agent_id(id) {
                return Err(invalid(
                    "agent_id",
                    format!("{id:?}: expected 1 to 40 letters, digits, '-' or '_'"),
                ));
            }
        }
        if self.poll_wait_secs > 20 {
            return Err(invalid(
                "poll_wait_secs",
                format!(
                    "{}: expected 0 to 20 (SQS's longest poll)",
                    self.poll_wait_secs
                ),
            ));
        }
        let positive = [
            ("heartbeat_interval_secs", self.heartbeat_interval_secs),
            ("image_pull_timeout_secs", self.image_pull_timeout_secs),
            ("docker_timeout_secs", self.docker_timeout_secs),
            ("imds_timeout_millis", self.imds_timeout_millis),
            ("log_max_size_mb", self.log_max_size_mb),
            (
                "max_concurrent_messages",
                u64::from(self.max_concurrent_messages),
            ),
            ("log_max_files", u64::from(self.log_max_files)),
        ];
        for (setting, value) in positive {
            if value == 0 {
                return Err(invalid(setting, "0: expected at least 1".to_owned()));
            }
        }
        if self.pids_limit < 0 {
            return Err(invalid(
                "pids_limit",
                format!(
                    "{}: expected 0 (the engine's default) or more",
                    self.pids_limit
                ),
            ));
        }
        if self.log_driver == LogDriver::Awslogs && self.awslogs_group.is_none() {
            return Err(invalid(
                "awslogs_group",
                "missing: the awslogs log driver needs a log group".to_owned(),
            ));
        }
        let network = &self.task_network;
        if !(1..=15).contains(&network.len())
            || !network
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(invalid(
                "task_network",
                format!(
                    "{network:?}: expected 1 to 15 lowercase letters, digits, '-' or '_' (it \
                     names the network's bridge interface too)"
                ),
            ));
        }
        if self
            .credentials_address
            .parse::<std::net::Ipv4Addr>()
            .is_err()
        {
            return Err(invalid(
                "credentials_address",
                format!("{:?}: expected an IPv4 address", self.credentials_address),
            ));
        }
        if let Some(capability) = self
            .allowed_capabilities
            .iter()
            .find(|c| !titus_core::validation::CAPABILITIES.contains(&c.as_str()))
        {
            return Err(invalid(
                "allowed_capabilities",
                format!(
                    "{capability:?}: expected Linux capability names without \"CAP_\", in \
                     capitals (such as \"NET_RAW\")"
                ),
            ));
        }
        if self.machine_group.is_empty() {
            return Err(invalid(
                "machine_group",
                "empty: expected a name".to_owned(),
            ));
        }
        Ok(())
    }

    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs(self.heartbeat_interval_secs)
    }
    pub fn poll_wait(&self) -> Duration {
        Duration::from_secs(self.poll_wait_secs)
    }
    pub fn image_pull_timeout(&self) -> Duration {
        Duration::from_secs(self.image_pull_timeout_secs)
    }
    pub fn docker_timeout(&self) -> Duration {
        Duration::from_secs(self.docker_timeout_secs)
    }
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }
    pub fn finished_retention(&self) -> Duration {
        Duration::from_secs(self.finished_retention_secs)
    }
    pub fn imds_timeout(&self) -> Duration {
        Duration::from_millis(self.imds_timeout_millis)
    }
}

/// Whether the text can be an agent id (it becomes part of an SQS queue name).
pub fn is_valid_agent_id(id: &str) -> bool {
    (1..=40).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Every setting's name, for the environment overrides.
const SETTING_NAMES: &[&str] = &[
    "agent_id",
    "zone",
    "machine_type",
    "machine_group",
    "cpu_millis",
    "memory_mb",
    "disk_mb",
    "network_mbps",
    "gpu",
    "allow_privileged",
    "allow_host_network",
    "allow_host_mounts",
    "log_driver",
    "log_max_size_mb",
    "log_max_files",
    "awslogs_group",
    "awslogs_region",
    "awslogs_endpoint",
    "metrics_log_group",
    "pids_limit",
    "drain_policy",
    "drain_timeout_secs",
    "image_pull_timeout_secs",
    "docker_timeout_secs",
    "heartbeat_interval_secs",
    "poll_wait_secs",
    "max_concurrent_messages",
    "finished_retention_secs",
    "ecr_auth_from_instance_role",
    "imds_timeout_millis",
    "disk_path",
    "task_network",
    "credentials_address",
    "credentials_port",
    "host_ports_open_to_tasks",
    "allowed_capabilities",
];

const OPTIONAL_SETTINGS: &[&str] = &[
    "agent_id",
    "zone",
    "machine_type",
    "cpu_millis",
    "memory_mb",
    "disk_mb",
    "awslogs_group",
    "awslogs_region",
    "awslogs_endpoint",
    "metrics_log_group",
    "disk_path",
];

/// Numbers and booleans are given bare in the environment, strings as they are; which one a
/// variable is comes from the setting's default (optional numbers are the capacity overrides).
fn env_value(default: Option<&serde_json::Value>, setting: &str, text: &str) -> serde_json::Value {
    let numeric_optional = matches!(setting, "cpu_millis" | "memory_mb" | "disk_mb");
    let is_number = default.is_some_and(serde_json::Value::is_number) || numeric_optional;
    let is_bool = default.is_some_and(serde_json::Value::is_boolean);
    if default.is_some_and(serde_json::Value::is_array) {
        // A comma-separated list: `NET_RAW,SYS_PTRACE`, `4566`.
        let items = text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                serde_json::from_str::<serde_json::Number>(item).map_or_else(
                    |_| serde_json::Value::String(item.to_owned()),
                    serde_json::Value::Number,
                )
            })
            .collect();
        return serde_json::Value::Array(items);
    }
    if is_number || is_bool {
        serde_json::from_str(text.trim()).unwrap_or_else(|_| serde_json::Value::String(text.into()))
    } else {
        serde_json::Value::String(text.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_provisioned_default_parameter_is_the_built_in_default() {
        let provisioned = titus_aws::resources::agent_config_default().to_string();
        let parsed = AgentSettings::from_parameter("/titus/x/agent/config", &provisioned).unwrap();
        assert_eq!(parsed, AgentSettings::default());
        // And every stage-wide setting is spelled out, so operators see what they can change.
        let defaults = serde_json::to_value(AgentSettings::default()).unwrap();
        let provisioned: serde_json::Value = serde_json::from_str(&provisioned).unwrap();
        assert_eq!(provisioned, defaults);
    }

    #[test]
    fn an_unknown_key_in_the_parameter_is_refused_with_its_name() {
        let err = AgentSettings::from_parameter("/titus/x/agent/config", r#"{"poll_wait":3}"#)
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/titus/x/agent/config"), "{text}");
        assert!(text.contains("poll_wait"), "{text}");
    }

    #[test]
    fn a_wrongly_typed_value_names_its_key() {
        let err = AgentSettings::from_parameter(
            "/titus/x/agent/config",
            r#"{"heartbeat_interval_secs":"soon"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("heartbeat_interval_secs"), "{err}");
    }

    #[test]
    fn environment_variables_override_the_parameter() {
        let mut settings =
            AgentSettings::from_parameter("p", r#"{"poll_wait_secs":20,"machine_group":"batch"}"#)
                .unwrap();
        settings
            .apply_env(&env(&[
                ("TITUS_AGENT_ID", "1234"),
                ("OTHER_VARIABLE", "ignored"),
                ("TITUS_AGENT_POLL_WAIT_SECS", "1"),
                ("TITUS_AGENT_CPU_MILLIS", "2000"),
                ("TITUS_AGENT_ALLOW_PRIVILEGED", "true"),
                ("TITUS_AGENT_DRAIN_POLICY", "handBack"),
                ("TITUS_AGENT_LOG_DRIVER", "awslogs"),
                ("TITUS_AGENT_AWSLOGS_GROUP", "/titus/tasks"),
            ]))
            .unwrap();

        assert_eq!(settings.agent_id.as_deref(), Some("1234"));
        assert_eq!(settings.poll_wait_secs, 1);
        assert_eq!(settings.cpu_millis, Some(2000));
        assert!(settings.allow_privileged);
        assert_eq!(settings.drain_policy, DrainPolicy::HandBack);
        assert_eq!(settings.log_driver, LogDriver::Awslogs);
        assert_eq!(settings.machine_group, "batch");
        settings.validate("test").unwrap();
    }

    #[test]
    fn an_empty_variable_clears_an_optional_setting() {
        let mut settings = AgentSettings {
            memory_mb: Some(1),
            ..AgentSettings::default()
        };
        settings
            .apply_env(&env(&[("TITUS_AGENT_MEMORY_MB", "")]))
            .unwrap();
        assert_eq!(settings.memory_mb, None);
    }

    #[test]
    fn a_bad_variable_fails_naming_the_variable() {
        let mut settings = AgentSettings::default();
        let err = settings
            .apply_env(&env(&[("TITUS_AGENT_CPU_MILLIS", "two")]))
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("TITUS_AGENT_CPU_MILLIS"), "{text}");
        assert!(text.contains("\"two\""), "{text}");
    }

    #[test]
    fn a_misspelt_variable_is_refused() {
        let err = AgentSettings::default()
            .apply_env(&env(&[("TITUS_AGENT_POLL_WAIT", "1")]))
            .unwrap_err();
        assert!(err.to_string().contains("TITUS_AGENT_POLL_WAIT"), "{err}");
    }

    #[test]
    fn out_of_range_settings_are_refused() {
        let cases = [
            (
                AgentSettings {
                    poll_wait_secs: 21,
                    ..AgentSettings::default()
                },
                "poll_wait_secs",
            ),
            (
                AgentSettings {
                    agent_id: Some("no spaces".to_owned()),
                    ..AgentSettings::default()
                },
                "agent_id",
            ),
            (
                AgentSettings {
                    log_driver: LogDriver::Awslogs,
                    ..AgentSettings::default()
                },
                "awslogs_group",
            ),
            (
                AgentSettings {
                    heartbeat_interval_secs: 0,
                    ..AgentSettings::default()
                },
                "heartbeat_interval_secs",
            ),
        ];
        for (settings, name) in cases {
            let err = settings.validate("env").unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn every_setting_has_an_environment_variable() {
        let mut all = serde_json::to_value(AgentSettings {
            agent_id: Some("a".to_owned()),
            zone: Some("z".to_owned()),
            machine_type: Some("m".to_owned()),
            cpu_millis: Some(1),
            memory_mb: Some(1),
            disk_mb: Some(1),
            awslogs_group: Some("g".to_owned()),
            awslogs_region: Some("r".to_owned()),
            awslogs_endpoint: Some("http://127.0.0.1:4566".to_owned()),
            metrics_log_group: Some("/titus/x/agents".to_owned()),
            disk_path: Some("/".to_owned()),
            ..AgentSettings::default()
        })
        .unwrap();
        let keys: Vec<String> = all.as_object_mut().unwrap().keys().cloned().collect();
        let mut names: Vec<&str> = SETTING_NAMES.to_vec();
        names.sort_unstable();
        let mut keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, names);
    }
}
