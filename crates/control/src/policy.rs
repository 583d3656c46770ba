//! What a job may ask of its hosts: privileged containers, the host's network, host paths and
//! image registries are refused unless the platform's configuration allows them.

use serde::{Deserialize, Serialize};
use titus_core::job::JobDescriptor;
use titus_core::validation::quoted;
use titus_core::FieldError;

use crate::field_error;

/// The platform's policy for jobs, read from configuration (`/titus/{stage}/policy/jobs`). Every
/// permission defaults to off; an empty registry list allows any registry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct JobPolicy {
    pub allow_privileged: bool,
    pub allow_host_network: bool,
    pub allow_host_mounts: bool,
    /// Registries (`registry.example.com`, `docker.io`) or repository prefixes
    /// (`registry.example.com/team`) that images may come from. Empty: any.
    pub registries: Vec<String>,
    /// Capabilities jobs may add (`container.securityContext.addCapabilities`) beyond the
    /// default `NET_BIND_SERVICE`. Empty: none, Kubernetes' "restricted" level.
    pub allowed_capabilities: Vec<String>,
    /// The stage whose shared secrets a job without an IAM role may name
    /// (`/titus/{stage}/secrets/…`); not configured but set by the loader. Empty: not checked
    /// at submission (the agent still refuses such a launch).
    #[serde(skip)]
    pub stage: String,
}

/// Docker's default registry, for image names that name none (`busybox`, `team/app`).
const DEFAULT_REGISTRY: &str = "docker.io";

impl JobPolicy {
    /// Every way the descriptor breaks the policy, as field errors.
    pub fn check(&self, descriptor: &JobDescriptor) -> Vec<FieldError> {
        let container = &descriptor.container;
        let mut errors = Vec::new();
        if container.privileged && !self.allow_privileged {
            errors.push(field_error(
                "container.privileged",
                "privileged containers are not allowed by this platform's configuration; expected false",
            ));
        }
        if container.host_network && !self.allow_host_network {
            errors.push(field_error(
                "container.hostNetwork",
                "host networking is not allowed by this platform's configuration; expected false",
            ));
        }
        if !container.host_mounts.is_empty() && !self.allow_host_mounts {
            errors.push(field_error(
                "container.hostMounts",
                "host path mounts are not allowed by this platform's configuration; expected none",
            ));
        }
        for (index, capability) in container
            .security_context
            .add_capabilities
            .iter()
            .enumerate()
        {
            if capability != "NET_BIND_SERVICE" && !self.allowed_capabilities.contains(capability) {
                errors.push(field_error(
                    &format!("container.securityContext.addCapabilities[{index}]"),
                    format!(
                        "capability {} is not allowed by this platform's configuration; \
                         expected one of: NET_BIND_SERVICE{}",
                        quoted(capability),
                        self.allowed_capabilities
                            .iter()
                            .map(|c| format!(", {c}"))
                            .collect::<String>()
                    ),
                ));
            }
        }
        if !self.stage.is_empty() && container.security_profile.iam_role.is_empty() {
            let (parameters, names) = titus_core::secrets::shared_prefixes(&self.stage);
            for (name, reference) in &container.secrets {
                let Ok(parsed) = titus_core::secrets::SecretRef::parse(reference) else {
                    continue; // validation reported it
                };
                if !titus_core::secrets::shared_with_roleless_tasks(&parsed, &self.stage) {
                    errors.push(field_error(
                        &format!("container.secrets[{}]", quoted(name)),
                        format!(
                            "a job without an IAM role may name only the stage's shared \
                             secrets; expected an SSM parameter under {parameters} or a Secrets \
                             Manager secret named {names}…, or \
                             container.securityProfile.iamRole naming a role that may read it"
                        ),
                    ));
                }
            }
        }
        if !self.registries.is_empty() && !self.allows_image(&container.image.name) {
            errors.push(field_error(
                "container.image.name",
                format!(
                    "image {} is not from an allowed registry; expected an image from one of: {}",
                    quoted(&container.image.name),
                    self.registries.join(", ")
                ),
            ));
        }
        errors
    }

    /// Whether the image name (without tag or digest) is from an allowed registry or repository.
    pub fn allows_image(&self, image_name: &str) -> bool {
        let full = qualified_image_name(image_name);
        self.registries.iter().any(|allowed| {
            let allowed = allowed.trim_end_matches('/').to_ascii_lowercase();
            full == allowed
                || full
                    .strip_prefix(&allowed)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    }
}

/// The image name with its registry spelt out: Docker reads the first component as a registry only
/// when it has a `.` or `:` or is `localhost`; otherwise the image is on Docker Hub.
fn qualified_image_name(name: &str) -> String {
    let name = name.to_ascii_lowercase();
    match name.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => name,
        _ => format!("{DEFAULT_REGISTRY}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor(container: serde_json::Value) -> JobDescriptor {
        let mut json = serde_json::json!({
            "owner": {"teamEmail": "team@example.com"},
            "applicationName": "app",
            "container": {"image": {"name": "busybox"}},
            "batch": {"size": 1}
        });
        if let (Some(base), Some(extra)) =
            (json["container"].as_object_mut(), container.as_object())
        {
            base.extend(extra.clone());
        }
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn capabilities_beyond_the_default_are_refused_unless_allowed() {
        let asks = descriptor(serde_json::json!({
            "securityContext": {"addCapabilities": ["NET_BIND_SERVICE", "NET_RAW", "SYS_ADMIN"]}
        }));
        let errors = JobPolicy::default().check(&asks);
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "container.securityContext.addCapabilities[1]",
                "container.securityContext.addCapabilities[2]",
            ]
        );
        assert!(
            errors[0].message.contains("\"NET_RAW\" is not allowed"),
            "{errors:?}"
        );

        let policy = JobPolicy {
            allowed_capabilities: vec!["NET_RAW".to_owned()],
            ..JobPolicy::default()
        };
        let errors = policy.check(&asks);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].message.contains("NET_BIND_SERVICE, NET_RAW"),
            "{errors:?}"
        );
    }

    #[test]
    fn a_roleless_job_names_only_the_stages_shared_secrets() {
        let shared = "arn:aws:ssm:us-east-1:123456789012:parameter/titus/dev/secrets/db";
        let private = "arn:aws:ssm:us-east-1:123456789012:parameter/apps/db";
        let asks = descriptor(serde_json::json!({
            "secrets": {"SHARED": shared, "PRIVATE": private}
        }));
        let policy = JobPolicy {
            stage: "dev".to_owned(),
            ..JobPolicy::default()
        };
        let errors = policy.check(&asks);
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["container.secrets[\"PRIVATE\"]"]);
        assert!(
            errors[0].message.contains("/titus/dev/secrets/")
                && errors[0].message.contains("iamRole"),
            "{errors:?}"
        );

        let with_role = descriptor(serde_json::json!({
            "secrets": {"SHARED": shared, "PRIVATE": private},
            "securityProfile": {"iamRole": "app-role"}
        }));
        assert_eq!(
            policy.check(&with_role),
            vec![],
            "a role may read what it is allowed"
        );
    }

    #[test]
    fn the_default_policy_refuses_privileged_host_network_and_host_mounts() {
        let asks_everything = descriptor(serde_json::json!({
            "privileged": true,
            "hostNetwork": true,
            "hostMounts": [{"hostPath": "/etc", "containerPath": "/host-etc"}]
        }));

        let errors = JobPolicy::default().check(&asks_everything);

        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "container.privileged",
                "container.hostNetwork",
                "container.hostMounts"
            ]
        );
    }

    #[test]
    fn a_policy_that_allows_them_accepts_them() {
        let policy = JobPolicy {
            allow_privileged: true,
            allow_host_network: true,
            allow_host_mounts: true,
            registries: Vec::new(),
            allowed_capabilities: Vec::new(),
            stage: String::new(),
        };
        let asks_everything = descriptor(serde_json::json!({
            "privileged": true,
            "hostNetwork": true,
            "hostMounts": [{"hostPath": "/etc", "containerPath": "/host-etc"}]
        }));

        assert!(policy.check(&asks_everything).is_empty());
    }

    #[test]
    fn images_come_only_from_listed_registries_when_a_list_is_set() {
        let policy = JobPolicy {
            registries: vec![
                "registry.example.com/team".to_owned(),
                "docker.io".to_owned(),
            ],
            ..JobPolicy::default()
        };

        assert!(policy.allows_image("busybox"), "Docker Hub is listed");
        assert!(policy.allows_image("library/busybox"));
        assert!(policy.allows_image("registry.example.com/team/app"));
        assert!(!policy.allows_image("registry.example.com/other/app"));
        assert!(!policy.allows_image("registry.example.com/teamster/app"));
        assert!(!policy.allows_image("evil.example.com/team/app"));
        assert!(!policy.allows_image("localhost:5000/app"));
    }

    #[test]
    fn a_refused_image_is_quoted_in_the_message() {
        let policy = JobPolicy {
            registries: vec!["registry.example.com".to_owned()],
            ..JobPolicy::default()
        };
        let errors = policy.check(&descriptor(serde_json::json!({})));

        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].message.contains("\"busybox\""),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn policy_configuration_rejects_misspelt_settings() {
        let err = serde_json::from_str::<JobPolicy>(r#"{"allowPriviledged": true}"#).unwrap_err();
        assert!(err.to_string().contains("allowPriviledged"), "{err}");
        let parsed: JobPolicy = serde_json::from_str(r#"{"allowHostNetwork": true}"#).unwrap();
        assert!(parsed.allow_host_network && !parsed.allow_privileged);
    }
}
