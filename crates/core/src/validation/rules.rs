//! The rules a well-formed descriptor must meet; each broken rule becomes one [`FieldError`].

use std::collections::BTreeMap;

use super::image::{
    check_image_name, is_image_tag, is_lowercase_hex, is_sha256_digest, IMAGE_TAG_MAX_CHARS,
};
use super::{quoted, FieldError, Limits, ROOT_FIELD};
use crate::job::{
    BatchJobSpec, Constraint, ConstraintError, ConstraintName, Constraints, Container,
    ContainerResources, DisruptionBudget, HostMount, Image, JobDescriptor, NetworkMode,
    RetryPolicy, SecurityContext, SecurityProfile, ServiceJobSpec,
};
use crate::proto_json::Unsupported;

/// Titus' shortest batch runtime limit.
const RUNTIME_LIMIT_SEC_MIN: u64 = 5;

const EMAIL_MAX_CHARS: usize = 254;
const SECURITY_GROUPS_MAX: usize = 16;
const IAM_ROLE_MAX_CHARS: usize = 2_048;
/// Environment names the platform sets itself; a job must not override them.
const RESERVED_ENV_PREFIX: &str = "TITUS_";

/// Checks every rule and returns every problem at once, or `Ok`.
pub fn validate(descriptor: &JobDescriptor, limits: &Limits) -> Result<(), Vec<FieldError>> {
    Problems::collect(limits, |problems| problems.check_descriptor(descriptor))
}

/// Checks a disruption budget alone, as a change of a job's budget gives it.
pub fn validate_disruption_budget(
    budget: &DisruptionBudget,
    limits: &Limits,
) -> Result<(), Vec<FieldError>> {
    Problems::collect(limits, |problems| problems.check_disruption_budget(budget))
}

struct Problems<'a> {
    errors: Vec<FieldError>,
    limits: &'a Limits,
}

impl<'a> Problems<'a> {
    /// Runs `check` and returns what it found, or `Ok`.
    fn collect(limits: &'a Limits, check: impl FnOnce(&mut Self)) -> Result<(), Vec<FieldError>> {
        let mut problems = Problems {
            errors: Vec::new(),
            limits,
        };
        check(&mut problems);
        if problems.errors.is_empty() {
            Ok(())
        } else {
            Err(problems.errors)
        }
    }

    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    fn check_descriptor(&mut self, descriptor: &JobDescriptor) {
        self.check_email("owner.teamEmail", &descriptor.owner.team_email);
        self.check_name("applicationName", &descriptor.application_name);
        self.check_name("capacityGroup", &descriptor.capacity_group);
        let group = &descriptor.job_group_info;
        self.check_group_part("jobGroupInfo.stack", &group.stack);
        self.check_group_part("jobGroupInfo.detail", &group.detail);
        self.check_group_part("jobGroupInfo.sequence", &group.sequence);
        self.check_attributes("attributes", &descriptor.attributes);
        self.check_container(&descriptor.container);
        self.check_titus_extras(descriptor);
        match (&descriptor.batch, &descriptor.service) {
            (Some(batch), None) => self.check_batch(batch),
            (None, Some(service)) => self.check_service(service),
            (Some(_), Some(_)) => self.push(
                ROOT_FIELD,
                "exactly one of \"batch\" or \"service\" must be set, got both",
            ),
            (None, None) => self.push(
                ROOT_FIELD,
                "exactly one of \"batch\" or \"service\" must be set, got neither",
            ),
        }
    }

    fn check_email(&mut self, field: &str, email: &str) {
        let length = email.chars().count();
        if email.is_empty() {
            self.push(
                field,
                "is required, expected an email address such as \"team@example.com\"",
            );
        } else if length > EMAIL_MAX_CHARS {
            self.push(
                field,
                format!("must be at most {EMAIL_MAX_CHARS} characters, got {length}"),
            );
        } else if !is_email_like(email) {
            self.push(
                field,
                format!(
                    "must be an email address such as \"team@example.com\", got {}",
                    quoted(email)
                ),
            );
        }
    }

    /// applicationName and capacityGroup.
    fn check_name(&mut self, field: &str, name: &str) {
        let max = self.limits.name_max_len;
        let length = name.chars().count();
        let valid_chars = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if name.is_empty() {
            self.push(
                field,
                format!(
                    "is required, expected 1 to {max} letters, digits, '_', '.' or '-', \
                     starting with a letter or digit"
                ),
            );
        } else if length > max {
            self.push(
                field,
                format!("must be at most {max} characters, got {length}"),
            );
        } else if !valid_chars || !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            self.push(
                field,
                format!(
                    "must be letters, digits, '_', '.' or '-', starting with a letter or digit, \
                     got {}",
                    quoted(name)
                ),
            );
        }
    }

    /// stack, detail and sequence: no '-', because '-' joins them into the job group's name.
    fn check_group_part(&mut self, field: &str, part: &str) {
        let max = self.limits.name_max_len;
        let length = part.chars().count();
        if length > max {
            self.push(
                field,
                format!("must be at most {max} characters, got {length}"),
            );
        } else if !part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.'))
        {
            self.push(
                field,
                format!(
                    "must be empty or letters, digits, '_' or '.', got {}",
                    quoted(part)
                ),
            );
        }
    }

    fn check_attributes(&mut self, field: &str, attributes: &BTreeMap<String, String>) {
        let limits = self.limits;
        self.check_count(field, attributes.len(), limits.attributes_max_count);
        for (key, value) in attributes {
            let entry = format!("{field}[{}]", quoted(key));
            let key_length = key.chars().count();
            let value_length = value.chars().count();
            if key.is_empty() {
                self.push(&entry, "key must not be empty");
            } else if key_length > limits.attribute_key_max_len {
                self.push(
                    &entry,
                    format!(
                        "key must be at most {} characters, got {key_length}",
                        limits.attribute_key_max_len
                    ),
                );
            }
            if value_length > limits.attribute_value_max_len {
                self.push(
                    &entry,
                    format!(
                        "value must be at most {} characters, got {value_length}",
                        limits.attribute_value_max_len
                    ),
                );
            }
            for (part, text) in [("key", key), ("value", value)] {
                if let Some(at) = text.chars().position(char::is_control) {
                    self.push(
                        &entry,
                        format!(
                            "{part} must not contain control characters (NUL, escape sequences, \
                             line breaks), found one at character {at}; expected printable text"
                        ),
                    );
                }
            }
        }
    }

    fn check_count(&mut self, field: &str, count: usize, max: usize) {
        if count > max {
            self.push(
                field,
                format!("must have at most {max} entries, got {count}"),
            );
        }
    }

    fn check_container(&mut self, container: &Container) {
        let limits = self.limits;
        self.check_resources(&container.resources);
        self.check_image(&container.image);
        self.check_args("container.entryPoint", &container.entry_point);
        self.check_args("container.command", &container.command);
        self.check_env(&container.env);
        self.check_secrets(&container.secrets, &container.env);
        self.check_constraints(&container.soft_constraints, &container.hard_constraints);
        self.check_security_profile(&container.security_profile);
        self.check_attributes("container.attributes", &container.attributes);
        if container.kill_grace_period_sec > limits.kill_grace_period_sec_max {
            self.push(
                "container.killGracePeriodSec",
                format!(
                    "must be at most {}, got {}",
                    limits.kill_grace_period_sec_max, container.kill_grace_period_sec
                ),
            );
        }
        self.check_host_mounts(&container.host_mounts);
        self.check_security_context(&container.security_context);
    }

    fn check_security_context(&mut self, context: &SecurityContext) {
        if let Some(user) = &context.user {
            if !is_numeric_user(user) {
                self.push(
                    "container.securityContext.user",
                    format!(
                        "must be a numeric UID or UID:GID (each at most {}), got {}",
                        i32::MAX,
                        quoted(user)
                    ),
                );
            }
        }
        let field = "container.securityContext.addCapabilities";
        self.check_count(field, context.add_capabilities.len(), CAPABILITIES.len());
        for (index, capability) in context.add_capabilities.iter().enumerate() {
            if !CAPABILITIES.contains(&capability.as_str()) {
                self.push(
                    format!("{field}[{index}]"),
                    format!(
                        "must be a Linux capability name without \"CAP_\" in capitals (such as \
                         \"NET_RAW\"), got {}",
                        quoted(capability)
                    ),
                );
            }
        }
    }

    fn check_resources(&mut self, resources: &ContainerResources) {
        let limits = self.limits;
        let cpu = resources.cpu;
        // NaN fails both comparisons; infinities are out of any finite range but are named anyway.
        if !(cpu.is_finite() && cpu >= limits.cpu_min && cpu <= limits.cpu_max) {
            self.push(
                "container.resources.cpu",
                format!(
                    "must be between {} and {}, got {cpu}",
                    limits.cpu_min, limits.cpu_max
                ),
            );
        }
        if resources.gpu > limits.gpu_max {
            self.push(
                "container.resources.gpu",
                format!("must be at most {}, got {}", limits.gpu_max, resources.gpu),
            );
        }
        self.check_range(
            "container.resources.memoryMB",
            resources.memory_mb,
            limits.memory_mb_min,
            limits.memory_mb_max,
        );
        self.check_range(
            "container.resources.diskMB",
            resources.disk_mb,
            limits.disk_mb_min,
            limits.disk_mb_max,
        );
        self.check_range(
            "container.resources.networkMbps",
            resources.network_mbps,
            limits.network_mbps_min,
            limits.network_mbps_max,
        );
    }

    fn check_range(&mut self, field: &str, value: u64, min: u64, max: u64) {
        if !(min..=max).contains(&value) {
            self.push(
                field,
                format!("must be between {min} and {max}, got {value}"),
            );
        }
    }

    fn check_image(&mut self, image: &Image) {
        if image.name.is_empty() {
            self.push(
                "container.image.name",
                "is required, expected a Docker image name such as \"registry.example.com/team/app\"",
            );
        } else if let Err(reason) = check_image_name(&image.name) {
            self.push(
                "container.image.name",
                format!(
                    "must be a Docker image name such as \"registry.example.com/team/app\": \
                     {reason}, got {}",
                    quoted(&image.name)
                ),
            );
        }
        if let Some(tag) = &image.tag {
            if !is_image_tag(tag) {
                self.push(
                    "container.image.tag",
                    format!(
                        "must be 1 to {IMAGE_TAG_MAX_CHARS} letters, digits, '_', '.' or '-', \
                         not starting with '.' or '-', got {}",
                        quoted(tag)
                    ),
                );
            }
        }
        if let Some(digest) = &image.digest {
            if !is_sha256_digest(digest) {
                self.push(
                    "container.image.digest",
                    format!(
                        "must be \"sha256:\" followed by 64 lowercase hex digits, got {}",
                        quoted(digest)
                    ),
                );
            }
        }
        if image.tag.is_some() && image.digest.is_some() {
            self.push(
                "container.image",
                "set \"tag\" or \"digest\", not both: a digest already names one exact image",
            );
        }
    }

    fn check_args(&mut self, field: &str, args: &[String]) {
        let limits = self.limits;
        self.check_count(field, args.len(), limits.args_max_count);
        let total_bytes: usize = args.iter().map(String::len).sum();
        if total_bytes > limits.args_max_bytes {
            self.push(
                field,
                format!(
                    "must total at most {} bytes, got {total_bytes}",
                    limits.args_max_bytes
                ),
            );
        }
        for (index, arg) in args.iter().enumerate() {
            if arg.contains('\0') {
                self.push(
                    format!("{field}[{index}]"),
                    "must not contain a NUL byte, expected text a process argument can hold",
                );
            }
        }
    }

    fn check_env(&mut self, env: &BTreeMap<String, String>) {
        let limits = self.limits;
        let field = "container.env";
        self.check_count(field, env.len(), limits.env_max_count);
        let total_bytes: usize = env.iter().map(|(key, value)| key.len() + value.len()).sum();
        if total_bytes > limits.env_max_bytes {
            self.push(
                field,
                format!(
                    "names and values must total at most {} bytes, got {total_bytes}",
                    limits.env_max_bytes
                ),
            );
        }
        for (key, value) in env {
            let entry = format!("{field}[{}]", quoted(key));
            if !is_env_name(key) {
                self.push(
                    &entry,
                    "name must start with a letter or '_' and hold only letters, digits and '_'",
                );
            } else if key.starts_with(RESERVED_ENV_PREFIX) {
                self.push(
                    &entry,
                    format!(
                        "names starting with {RESERVED_ENV_PREFIX:?} are reserved for the \
                         platform, expected another name"
                    ),
                );
            }
            if value.contains('\0') {
                self.push(
                    &entry,
                    "value must not contain a NUL byte, expected text an environment can hold",
                );
            }
        }
    }

    fn check_secrets(
        &mut self,
        secrets: &BTreeMap<String, String>,
        env: &BTreeMap<String, String>,
    ) {
        let field = "container.secrets";
        self.check_count(field, secrets.len(), self.limits.secrets_max_count);
        for (name, reference) in secrets {
            let entry = format!("{field}[{}]", quoted(name));
            if !is_env_name(name) {
                self.push(
                    &entry,
                    "name must start with a letter or '_' and hold only letters, digits and '_'",
                );
            } else if name.starts_with(RESERVED_ENV_PREFIX) {
                self.push(
                    &entry,
                    format!(
                        "names starting with {RESERVED_ENV_PREFIX:?} are reserved for the \
                         platform, expected another name"
                    ),
                );
            } else if env.contains_key(name) {
                self.push(
                    &entry,
                    "is also set in container.env; expected each variable in one of env or \
                     secrets",
                );
            }
            if let Err(problem) = crate::secrets::SecretRef::parse(reference) {
                self.push(&entry, problem);
            }
        }
    }

    fn check_constraints(&mut self, soft: &Constraints, hard: &Constraints) {
        let soft_names = self.check_constraint_set("container.softConstraints.constraints", soft);
        let hard_names = self.check_constraint_set("container.hardConstraints.constraints", hard);
        for (name, soft_key) in &soft_names {
            if hard_names.contains_key(name) {
                self.push(
                    format!(
                        "container.softConstraints.constraints[{}]",
                        quoted(soft_key)
                    ),
                    format!(
                        "constraint {name} is also a hard constraint, expected it as hard or \
                         soft, not both"
                    ),
                );
            }
        }
    }

    /// Checks one constraint map; returns its known names with the key each was given as.
    fn check_constraint_set<'c>(
        &mut self,
        field: &str,
        constraints: &'c Constraints,
    ) -> BTreeMap<ConstraintName, &'c str> {
        let limits = self.limits;
        self.check_count(field, constraints.constraints.len(), limits.constraints_max);
        let mut known: BTreeMap<ConstraintName, &'c str> = BTreeMap::new();
        for (key, value) in &constraints.constraints {
            let entry = format!("{field}[{}]", quoted(key));
            if let Err(error) = Constraint::parse_entry(key, value) {
                self.push(&entry, constraint_message(&error));
            }
            let Some(name) = ConstraintName::parse(key) else {
                continue;
            };
            // Names ignore case, so two keys can name one constraint with conflicting values.
            if let Some(first_key) = known.insert(name, key) {
                self.push(
                    &entry,
                    format!(
                        "constraint {name} is already set as {} (names ignore case), expected it \
                         once",
                        quoted(first_key)
                    ),
                );
            }
        }
        known
    }

    fn check_security_profile(&mut self, profile: &SecurityProfile) {
        let field = "container.securityProfile.securityGroups";
        let errors_before = self.errors.len();
        self.check_count(field, profile.security_groups.len(), SECURITY_GROUPS_MAX);
        for (index, group) in profile.security_groups.iter().enumerate() {
            if !is_security_group_id(group) {
                self.push(
                    format!("{field}[{index}]"),
                    format!(
                        "must be a security group id, \"sg-\" followed by 8 or 17 lowercase hex \
                         digits, got {}",
                        quoted(group)
                    ),
                );
            }
        }
        // Well-formed or not, no agent can apply them: refused rather than ignored.
        if !profile.security_groups.is_empty() && self.errors.len() == errors_before {
            self.push(
                field,
                "cannot be honoured: agents run tasks on an isolated Docker bridge network, \
                 where EC2 security groups do not apply (the host's security group governs \
                 the task's traffic); expected no security groups",
            );
        }
        let role = &profile.iam_role;
        let role_length = role.chars().count();
        if role_length > IAM_ROLE_MAX_CHARS {
            self.push(
                "container.securityProfile.iamRole",
                format!("must be at most {IAM_ROLE_MAX_CHARS} characters, got {role_length}"),
            );
        } else if role.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.push(
                "container.securityProfile.iamRole",
                format!(
                    "must be a role name or ARN without whitespace, got {}",
                    quoted(role)
                ),
            );
        }
        self.check_attributes("container.securityProfile.attributes", &profile.attributes);
    }

    fn check_host_mounts(&mut self, mounts: &[HostMount]) {
        let field = "container.hostMounts";
        self.check_count(field, mounts.len(), self.limits.host_mounts_max);
        for (index, mount) in mounts.iter().enumerate() {
            self.check_mount_path(&format!("{field}[{index}].hostPath"), &mount.host_path);
            self.check_mount_path(
                &format!("{field}[{index}].containerPath"),
                &mount.container_path,
            );
        }
    }

    fn check_mount_path(&mut self, field: &str, path: &str) {
        if path.contains('\0') {
            self.push(
                field,
                format!(
                    "must not contain a NUL byte, expected an absolute path, got {}",
                    quoted(path)
                ),
            );
        } else if !path.starts_with('/') {
            self.push(
                field,
                format!(
                    "must be an absolute path starting with '/', got {}",
                    quoted(path)
                ),
            );
        } else if path.split('/').any(|component| component == "..") {
            // ".." would let a mount escape the directory it names.
            self.push(
                field,
                format!(
                    "must not contain a \"..\" component, expected a direct path, got {}",
                    quoted(path)
                ),
            );
        }
    }

    fn check_batch(&mut self, batch: &BatchJobSpec) {
        let limits = self.limits;
        if !(1..=limits.batch_size_max).contains(&batch.size) {
            self.push(
                "batch.size",
                format!(
                    "must be between 1 and {}, got {}",
                    limits.batch_size_max, batch.size
                ),
            );
        }
        self.check_range(
            "batch.runtimeLimitSec",
            batch.runtime_limit_sec,
            RUNTIME_LIMIT_SEC_MIN,
            limits.runtime_limit_sec_max,
        );
        self.check_retry_policy(
            "batch.retryPolicy",
            &batch.retry_policy,
            Some(limits.retries_max),
        );
    }

    fn check_service(&mut self, service: &ServiceJobSpec) {
        let limits = self.limits;
        let capacity = service.capacity;
        if capacity.min > capacity.max {
            self.push(
                "service.capacity.min",
                format!("must be at most max {}, got {}", capacity.max, capacity.min),
            );
        } else if !(capacity.min..=capacity.max).contains(&capacity.desired) {
            self.push(
                "service.capacity.desired",
                format!(
                    "must be between min {} and max {}, got {}",
                    capacity.min, capacity.max, capacity.desired
                ),
            );
        }
        if capacity.max > limits.service_max {
            self.push(
                "service.capacity.max",
                format!(
                    "must be at most {}, got {}",
                    limits.service_max, capacity.max
                ),
            );
        }
        // Services are always replaced, so their retry count is not limited.
        self.check_retry_policy("service.retryPolicy", &service.retry_policy, None);
        if let Some(policy) = &service.migration_policy {
            if policy.system_default.is_some() && policy.self_managed.is_some() {
                self.push(
                    "service.migrationPolicy",
                    "is a oneof: expected at most one of systemDefault and selfManaged, got both",
                );
            }
        }
    }

    /// Titus' fields the platform stores or refuses: each refusal says why, so a user does not
    /// believe a setting took effect that did not.
    fn check_titus_extras(&mut self, descriptor: &JobDescriptor) {
        let container = &descriptor.container;
        let resources = &container.resources;
        let refusals: [(&str, Unsupported, &str); 9] = [
            (
                "extraContainers",
                descriptor.extra_containers,
                "a task runs one container on this platform; expected none",
            ),
            (
                "volumes",
                descriptor.volumes,
                "this platform has no shared or SaaS volumes; expected none",
            ),
            (
                "platformSidecars",
                descriptor.platform_sidecars,
                "this platform runs no platform sidecars; expected none",
            ),
            (
                "container.experimental",
                container.experimental,
                "experimental settings are not supported; expected it absent",
            ),
            (
                "container.volumeMounts",
                container.volume_mounts,
                "this platform has no volumes to mount; expected none",
            ),
            (
                "container.resources.efsMounts",
                resources.efs_mounts,
                "the agents mount no EFS file systems; expected none",
            ),
            (
                "container.resources.signedAddressAllocations",
                resources.signed_address_allocations,
                "this platform assigns no static IP addresses; expected none",
            ),
            (
                "container.resources.pool",
                resources.pool,
                "this platform assigns no static IP addresses; expected it absent",
            ),
            (
                "container.resources.staticIPAddressIDs",
                resources.static_ip_address_ids,
                "this platform assigns no static IP addresses; expected it absent",
            ),
        ];
        for (field, value, why) in refusals {
            if value.set {
                self.push(field, why);
            }
        }
        if u64::from(resources.shm_size_mb) > resources.memory_mb {
            self.push(
                "container.resources.shmSizeMB",
                format!(
                    "is {} MB, more than the container's memory; expected at most memoryMB ({})",
                    resources.shm_size_mb, resources.memory_mb
                ),
            );
        }
        for (field, constraints) in [
            (
                "container.softConstraints.expression",
                &container.soft_constraints,
            ),
            (
                "container.hardConstraints.expression",
                &container.hard_constraints,
            ),
        ] {
            if !constraints.expression.is_empty() {
                self.push(
                    field,
                    "constraint expressions are not supported; expected \"\" and the \
                     constraints as a map",
                );
            }
        }
        if let Some(network) = &descriptor.network_configuration {
            if network.network_mode == NetworkMode::Ipv6Only {
                self.push(
                    "networkConfiguration.networkMode",
                    "tasks get an IPv4 address on this platform, so Ipv6Only cannot be honoured; \
                     expected Ipv4Only, Ipv6AndIpv4, Ipv6AndIpv4Fallback, HighScale or \
                     UnknownNetworkMode",
                );
            }
        }
        if let Some(budget) = &descriptor.disruption_budget {
            self.check_disruption_budget(budget);
        }
    }

    fn check_disruption_budget(&mut self, budget: &DisruptionBudget) {
        for (members, what) in [
            (budget.policies_set(), "policy"),
            (budget.rates_set(), "rate"),
        ] {
            if members.len() > 1 {
                self.push(
                    "disruptionBudget",
                    format!(
                        "sets {} members of the {what} oneof ({}); expected at most one",
                        members.len(),
                        members.join(", ")
                    ),
                );
            }
        }
        let percentages = [
            (
                "disruptionBudget.availabilityPercentageLimit.percentageOfHealthyContainers",
                budget
                    .availability_percentage_limit
                    .map(|limit| limit.percentage_of_healthy_containers),
            ),
            (
                "disruptionBudget.ratePercentagePerHour.maxPercentageOfContainersRelocatedInHour",
                budget
                    .rate_percentage_per_hour
                    .map(|rate| rate.max_percentage_of_containers_relocated_in_hour),
            ),
            (
                "disruptionBudget.ratePercentagePerInterval.percentageLimitPerInterval",
                budget
                    .rate_percentage_per_interval
                    .map(|rate| rate.percentage_limit_per_interval),
            ),
        ];
        for (field, value) in percentages {
            if let Some(value) = value {
                if !(0.0..=100.0).contains(&value) {
                    self.push(
                        field,
                        format!("must be a percentage, 0 to 100, got {value}"),
                    );
                }
            }
        }
        for (index, window) in budget.time_windows.iter().enumerate() {
            for (hour_index, hours) in window.hourly_time_windows.iter().enumerate() {
                if hours.start_hour > 24 || hours.end_hour > 24 || hours.start_hour > hours.end_hour
                {
                    self.push(
                        format!(
                            "disruptionBudget.timeWindows[{index}].hourlyTimeWindows[{hour_index}]"
                        ),
                        format!(
                            "expected 0 <= startHour <= endHour <= 24, got {} to {}",
                            hours.start_hour, hours.end_hour
                        ),
                    );
                }
            }
        }
    }

    fn check_retry_policy(&mut self, field: &str, policy: &RetryPolicy, retries_max: Option<u32>) {
        let delay_max = self.limits.retry_delay_ms_max;
        let (variant, retries) = match *policy {
            RetryPolicy::Immediate { retries } => ("immediate", retries),
            RetryPolicy::Delayed {
                initial_delay_ms,
                delay_ms,
                retries,
            } => {
                self.check_at_most(
                    &format!("{field}.delayed.initialDelayMs"),
                    initial_delay_ms,
                    delay_max,
                );
                self.check_at_most(&format!("{field}.delayed.delayMs"), delay_ms, delay_max);
                ("delayed", retries)
            }
            RetryPolicy::ExponentialBackOff {
                initial_delay_ms,
                max_delay_interval_ms,
                retries,
            } => {
                let initial_field = format!("{field}.exponentialBackOff.initialDelayMs");
                if initial_delay_ms == 0 {
                    // Doubling zero stays zero: the policy would retry at once, forever.
                    self.push(
                        &initial_field,
                        "must be at least 1, got 0: a zero delay never backs off",
                    );
                } else if initial_delay_ms > max_delay_interval_ms {
                    self.push(
                        &initial_field,
                        format!(
                            "must be at most maxDelayIntervalMs {max_delay_interval_ms}, \
                             got {initial_delay_ms}"
                        ),
                    );
                }
                self.check_at_most(
                    &format!("{field}.exponentialBackOff.maxDelayIntervalMs"),
                    max_delay_interval_ms,
                    delay_max,
                );
                ("exponentialBackOff", retries)
            }
        };
        if let Some(max) = retries_max {
            if retries > max {
                self.push(
                    format!("{field}.{variant}.retries"),
                    format!("must be at most {max}, got {retries}"),
                );
            }
        }
    }

    fn check_at_most(&mut self, field: &str, value: u64, max: u64) {
        if value > max {
            self.push(field, format!("must be at most {max}, got {value}"));
        }
    }
}

/// [`ConstraintError`]'s own messages quote user text but do not bound it, so they are rebuilt
/// here with [`quoted`].
fn constraint_message(error: &ConstraintError) -> String {
    match error {
        ConstraintError::UnknownName { name, expected } => format!(
            "unknown constraint {}, expected one of {expected} (case-insensitive)",
            quoted(name)
        ),
        ConstraintError::NotBoolean { name, value } => format!(
            "constraint {name} takes \"true\" or \"false\", got {}",
            quoted(value)
        ),
        ConstraintError::EmptyValue { name } => {
            format!("constraint {name} needs a non-empty value, got an empty one")
        }
    }
}

fn is_email_like(email: &str) -> bool {
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && domain.split('.').all(|label| !label.is_empty())
}

/// Linux capabilities by the names Docker takes (without `CAP_`).
pub const CAPABILITIES: [&str; 41] = [
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "SYSLOG",
    "WAKE_ALARM",
];

/// `UID` or `UID:GID`, each a number Docker accepts.
fn is_numeric_user(user: &str) -> bool {
    let id = |part: &str| {
        !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) && part.parse::<i32>().is_ok()
    };
    match user.split_once(':') {
        Some((uid, gid)) => id(uid) && id(gid),
        None => id(user),
    }
}

fn is_security_group_id(group: &str) -> bool {
    group
        .strip_prefix("sg-")
        .is_some_and(|hex| matches!(hex.len(), 8 | 17) && is_lowercase_hex(hex))
}

fn is_env_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::validate;
    use crate::validation::test_support::{
        batch_with, message_for, parse, problems_of, validate_image,
    };
    use crate::validation::{parse_descriptor, FieldError, Limits, ParseError};

    #[test]
    fn cpu_over_the_limit_names_the_range_and_the_value() {
        let errors = problems_of(json!({"container": {"resources": {"cpu": 500}}}));

        assert_eq!(
            errors,
            vec![FieldError::new(
                "container.resources.cpu",
                "must be between 0.1 and 96, got 500"
            )]
        );
        assert_eq!(
            errors[0].to_string(),
            "container.resources.cpu: must be between 0.1 and 96, got 500"
        );
    }

    #[test]
    fn non_finite_cpu_is_rejected() {
        let limits = Limits::titus_defaults();
        for cpu in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut descriptor = parse(&batch_with(json!({}))).expect("valid");
            descriptor.container.resources.cpu = cpu;

            let errors = validate(&descriptor, &limits).expect_err("non-finite cpu");

            assert_eq!(errors.len(), 1, "{cpu}: {errors:?}");
            assert_eq!(errors[0].field, "container.resources.cpu");
        }
    }

    #[test]
    fn every_problem_in_a_descriptor_is_reported_at_once() {
        let errors = problems_of(json!({
            "owner": {"teamEmail": "not an email"},
            "applicationName": "-bad",
            "container": {
                "resources": {"cpu": -1, "gpu": 17, "memoryMB": 1, "diskMB": 1, "networkMbps": 1},
                "image": {"name": "al pine"},
                "killGracePeriodSec": 601
            },
            "batch": {"size": 0, "runtimeLimitSec": 4}
        }));

        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "owner.teamEmail",
                "applicationName",
                "container.resources.cpu",
                "container.resources.gpu",
                "container.resources.memoryMB",
                "container.resources.diskMB",
                "container.resources.networkMbps",
                "container.image.name",
                "container.killGracePeriodSec",
                "container.resources.shmSizeMB",
                "batch.size",
                "batch.runtimeLimitSec",
            ]
        );
        assert_eq!(
            message_for(&errors, "container.resources.memoryMB"),
            "must be between 512 and 1152000, got 1"
        );
        assert_eq!(
            message_for(&errors, "batch.size"),
            "must be between 1 and 1000, got 0"
        );
    }

    #[test]
    fn both_batch_and_service_is_rejected() {
        let errors = problems_of(json!({
            "service": {"capacity": {"desired": 1, "max": 1}}
        }));

        assert_eq!(
            errors,
            vec![FieldError::new(
                "(root)",
                "exactly one of \"batch\" or \"service\" must be set, got both"
            )]
        );
    }

    #[test]
    fn neither_batch_nor_service_is_rejected() {
        let errors = problems_of(json!({"batch": null}));

        assert_eq!(
            errors,
            vec![FieldError::new(
                "(root)",
                "exactly one of \"batch\" or \"service\" must be set, got neither"
            )]
        );
    }

    #[test]
    fn unknown_constraint_name_is_quoted_and_the_known_names_listed() {
        let errors = problems_of(json!({
            "container": {"hardConstraints": {"constraints": {"fooBar": "true"}}}
        }));

        assert_eq!(
            errors,
            vec![FieldError::new(
                "container.hardConstraints.constraints[\"fooBar\"]",
                "unknown constraint \"fooBar\", expected one of uniqueHost, exclusiveHost, \
                 zoneBalance, activeHost, availabilityZone, machineId, machineGroup, \
                 machineType (case-insensitive)"
            )]
        );
    }

    #[test]
    fn boolean_constraint_with_another_value_is_rejected() {
        let errors = problems_of(json!({
            "container": {"softConstraints": {"constraints": {"uniqueHost": "yes"}}}
        }));

        assert_eq!(
            errors,
            vec![FieldError::new(
                "container.softConstraints.constraints[\"uniqueHost\"]",
                "constraint uniqueHost takes \"true\" or \"false\", got \"yes\""
            )]
        );
    }

    #[test]
    fn valued_constraint_with_an_empty_value_is_rejected() {
        let errors = problems_of(json!({
            "container": {"hardConstraints": {"constraints": {"machineType": " "}}}
        }));

        assert_eq!(
            errors,
            vec![FieldError::new(
                "container.hardConstraints.constraints[\"machineType\"]",
                "constraint machineType needs a non-empty value, got an empty one"
            )]
        );
    }

    #[test]
    fn too_many_constraints_are_rejected() {
        let constraints: serde_json::Map<String, Value> =
            (0..17).map(|i| (format!("c{i}"), json!("true"))).collect();
        let limits = Limits {
            constraints_max: 16,
            ..Limits::titus_defaults()
        };
        let json = batch_with(json!({
            "container": {"softConstraints": {"constraints": constraints}}
        }));

        let errors = match parse_descriptor(&json, &limits) {
            Err(ParseError::Invalid(errors)) => errors,
            other => panic!("expected Invalid, got {other:?}"),
        };

        assert_eq!(
            message_for(&errors, "container.softConstraints.constraints"),
            "must have at most 16 entries, got 17"
        );
    }

    #[test]
    fn the_same_constraint_as_hard_and_soft_is_rejected_ignoring_case() {
        let errors = problems_of(json!({
            "container": {
                "hardConstraints": {"constraints": {"UNIQUEHOST": "true"}},
                "softConstraints": {"constraints": {"uniqueHost": "true"}}
            }
        }));

        assert_eq!(
            errors,
            vec![FieldError::new(
                "container.softConstraints.constraints[\"uniqueHost\"]",
                "constraint uniqueHost is also a hard constraint, expected it as hard or soft, \
                 not both"
            )]
        );
    }

    #[test]
    fn the_same_constraint_twice_in_one_set_is_rejected() {
        let errors = problems_of(json!({
            "container": {
                "hardConstraints": {"constraints": {"machineType": "m5", "MachineType": "r5"}}
            }
        }));

        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].message.contains("already set"), "{errors:?}");
    }

    #[test]
    fn exclusive_host_and_unique_host_together_as_hard_constraints_are_fine() {
        let json = batch_with(json!({
            "container": {
                "hardConstraints": {"constraints": {"exclusiveHost": "true", "uniqueHost": "true"}},
                "softConstraints": {"constraints": {"zoneBalance": "true", "machineType": "m5"}}
            }
        }));

        assert!(parse(&json).is_ok());
    }

    #[test]
    fn missing_image_name_is_required() {
        let errors = validate_image(json!({"name": ""}));

        assert_eq!(errors[0].field, "container.image.name");
        assert!(errors[0].message.starts_with("is required"));
    }

    #[test]
    fn image_with_both_tag_and_digest_is_rejected() {
        let digest = format!("sha256:{}", "a".repeat(64));

        let errors = validate_image(json!({"name": "app", "tag": "v1", "digest": digest}));

        assert_eq!(
            errors,
            vec![FieldError::new(
                "container.image",
                "set \"tag\" or \"digest\", not both: a digest already names one exact image"
            )]
        );
    }

    fn service_with_capacity(min: u32, desired: u32, max: u32) -> Vec<FieldError> {
        problems_of(json!({
            "batch": null,
            "service": {"capacity": {"min": min, "desired": desired, "max": max}}
        }))
    }

    #[test]
    fn desired_capacity_outside_min_and_max_is_rejected() {
        let errors = service_with_capacity(2, 7, 5);

        assert_eq!(
            errors,
            vec![FieldError::new(
                "service.capacity.desired",
                "must be between min 2 and max 5, got 7"
            )]
        );
        assert_eq!(
            service_with_capacity(2, 1, 5)[0].message,
            "must be between min 2 and max 5, got 1"
        );
    }

    #[test]
    fn min_capacity_above_max_is_rejected() {
        let errors = service_with_capacity(6, 5, 5);

        assert_eq!(
            errors,
            vec![FieldError::new(
                "service.capacity.min",
                "must be at most max 5, got 6"
            )]
        );
    }

    #[test]
    fn max_capacity_above_the_service_limit_is_rejected() {
        let errors = service_with_capacity(0, 1, 10_001);

        assert_eq!(
            errors,
            vec![FieldError::new(
                "service.capacity.max",
                "must be at most 10000, got 10001"
            )]
        );
    }

    #[test]
    fn capacity_at_the_limits_is_fine() {
        let json = batch_with(json!({
            "batch": null,
            "service": {"capacity": {"min": 10_000, "desired": 10_000, "max": 10_000}}
        }));

        assert!(parse(&json).is_ok());
    }

    #[test]
    fn env_rules_are_enforced() {
        let errors = problems_of(json!({
            "container": {"env": {
                "GOOD_NAME": "ok",
                "_ALSO_GOOD1": "ok",
                "9LIVES": "x",
                "HAS-DASH": "x",
                "": "x",
                "TITUS_TASK_ID": "x",
                "NUL": "a\u{0}b"
            }}
        }));

        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "container.env[\"\"]",
                "container.env[\"9LIVES\"]",
                "container.env[\"HAS-DASH\"]",
                "container.env[\"NUL\"]",
                "container.env[\"TITUS_TASK_ID\"]",
            ]
        );
        assert_eq!(
            message_for(&errors, "container.env[\"TITUS_TASK_ID\"]"),
            "names starting with \"TITUS_\" are reserved for the platform, expected another name"
        );
        assert!(message_for(&errors, "container.env[\"NUL\"]").contains("NUL byte"));
    }

    #[test]
    fn secrets_name_references_and_stay_apart_from_env() {
        let param = "arn:aws:ssm:us-east-1:123456789012:parameter/app/db";
        let errors = problems_of(json!({
            "container": {
                "env": {"BOTH": "plain"},
                "secrets": {
                    "DB_PASSWORD": param,
                    "BOTH": param,
                    "TITUS_SECRET": param,
                    "BAD-NAME": param,
                    "RAW": "hunter2"
                }
            }
        }));

        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "container.secrets[\"BAD-NAME\"]",
                "container.secrets[\"BOTH\"]",
                "container.secrets[\"RAW\"]",
                "container.secrets[\"TITUS_SECRET\"]",
            ]
        );
        assert!(message_for(&errors, "container.secrets[\"BOTH\"]").contains("container.env"));
        let raw = message_for(&errors, "container.secrets[\"RAW\"]");
        assert!(raw.contains("expected an SSM parameter ARN"), "{raw}");
        assert!(
            !raw.contains("hunter2"),
            "a value given where a reference belongs is not echoed: {raw}"
        );
    }

    #[test]
    fn env_count_and_size_are_limited() {
        let env: serde_json::Map<String, Value> = (0..3)
            .map(|i| (format!("K{i}"), json!("0123456789")))
            .collect();
        let limits = Limits {
            env_max_count: 2,
            env_max_bytes: 30,
            ..Limits::titus_defaults()
        };
        let json = batch_with(json!({"container": {"env": env}}));

        let errors = match parse_descriptor(&json, &limits) {
            Err(ParseError::Invalid(errors)) => errors,
            other => panic!("expected Invalid, got {other:?}"),
        };

        assert_eq!(
            errors,
            vec![
                FieldError::new("container.env", "must have at most 2 entries, got 3"),
                FieldError::new(
                    "container.env",
                    "names and values must total at most 30 bytes, got 36"
                ),
            ]
        );
    }

    #[test]
    fn arguments_are_limited_in_count_size_and_content() {
        let limits = Limits {
            args_max_count: 2,
            args_max_bytes: 8,
            ..Limits::titus_defaults()
        };
        let json = batch_with(json!({
            "container": {"entryPoint": ["a", "b", "c"], "command": ["12345", "a\u{0}"]}
        }));

        let errors = match parse_descriptor(&json, &limits) {
            Err(ParseError::Invalid(errors)) => errors,
            other => panic!("expected Invalid, got {other:?}"),
        };

        assert_eq!(
            errors.iter().map(|e| e.field.as_str()).collect::<Vec<_>>(),
            vec!["container.entryPoint", "container.command[1]"]
        );
        assert_eq!(errors[0].message, "must have at most 2 entries, got 3");
        assert!(errors[1].message.starts_with("must not contain a NUL byte"));
    }

    #[test]
    fn arguments_over_the_byte_limit_are_rejected() {
        let limits = Limits {
            args_max_bytes: 8,
            ..Limits::titus_defaults()
        };
        let json = batch_with(json!({"container": {"command": ["12345", "6789"]}}));

        let errors = match parse_descriptor(&json, &limits) {
            Err(ParseError::Invalid(errors)) => errors,
            other => panic!("expected Invalid, got {other:?}"),
        };

        assert_eq!(
            errors,
            vec![FieldError::new(
                "container.command",
                "must total at most 8 bytes, got 9"
            )]
        );
    }

    #[test]
    fn host_mount_paths_must_be_absolute_and_direct() {
        let errors = problems_of(json!({
            "container": {"hostMounts": [
                {"hostPath": "/var/log", "containerPath": "/logs"},
                {"hostPath": "relative", "containerPath": "/data/../etc"},
                {"hostPath": "/a\u{0}", "containerPath": ""}
            ]}
        }));

        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "container.hostMounts[1].hostPath",
                "container.hostMounts[1].containerPath",
                "container.hostMounts[2].hostPath",
                "container.hostMounts[2].containerPath",
            ]
        );
        assert!(errors[0].message.starts_with("must be an absolute path"));
        assert!(errors[1].message.starts_with("must not contain a \"..\""));
        assert!(errors[2].message.starts_with("must not contain a NUL byte"));
    }

    #[test]
    fn security_profile_is_checked() {
        let errors = problems_of(json!({
            "container": {"securityProfile": {
                "securityGroups": ["sg-0123abcd", "sg-0123456789abcdef0", "sg-0123ABCD", "sg-123"],
                "iamRole": "arn:aws:iam::123:role/has space"
            }}
        }));

        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "container.securityProfile.securityGroups[2]",
                "container.securityProfile.securityGroups[3]",
                "container.securityProfile.iamRole",
            ]
        );
    }

    #[test]
    fn security_groups_are_refused_because_no_agent_can_apply_them() {
        let errors = problems_of(json!({
            "container": {"securityProfile": {"securityGroups": ["sg-0123abcd"]}}
        }));

        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, "container.securityProfile.securityGroups");
        assert!(
            errors[0].message.starts_with("cannot be honoured"),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn security_context_is_checked() {
        let errors = problems_of(json!({
            "container": {"securityContext": {
                "user": "nobody",
                "readOnlyRootFilesystem": true,
                "addCapabilities": ["NET_RAW", "CAP_SYS_ADMIN", "net_admin"]
            }}
        }));

        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "container.securityContext.user",
                "container.securityContext.addCapabilities[1]",
                "container.securityContext.addCapabilities[2]",
            ]
        );
        for good in ["1000", "1000:1000", "0:0"] {
            let json = batch_with(json!({"container": {"securityContext": {"user": good}}}));
            assert!(parse(&json).is_ok(), "{good} must be accepted");
        }
        for bad in ["", ":1", "1:", "-1", "99999999999", "1000:1000:1"] {
            let errors = problems_of(json!({"container": {"securityContext": {"user": bad}}}));
            assert_eq!(errors.len(), 1, "{bad:?} must be refused");
        }
    }

    #[test]
    fn more_than_16_security_groups_are_rejected() {
        let groups: Vec<String> = (0..17).map(|i| format!("sg-{i:08x}")).collect();

        let errors = problems_of(json!({
            "container": {"securityProfile": {"securityGroups": groups}}
        }));

        assert_eq!(
            errors,
            vec![FieldError::new(
                "container.securityProfile.securityGroups",
                "must have at most 16 entries, got 17"
            )]
        );
    }

    #[test]
    fn attributes_refuse_control_characters() {
        let json = batch_with(json!({
            "attributes": {"colour": "\u{1b}[31mred", "nul\u{0}key": "v", "fine": "ok"}
        }));

        let errors = match parse_descriptor(&json, &Limits::titus_defaults()) {
            Err(ParseError::Invalid(errors)) => errors,
            other => panic!("expected Invalid, got {other:?}"),
        };

        let messages: Vec<(&str, &str)> = errors
            .iter()
            .map(|e| (e.field.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert_eq!(messages[0].0, "attributes[\"colour\"]");
        assert!(messages[0]
            .1
            .starts_with("value must not contain control characters"));
        assert!(messages[0].1.contains("at character 0"), "{messages:?}");
        assert_eq!(messages[1].0, "attributes[\"nul\\0key\"]");
        assert!(messages[1]
            .1
            .starts_with("key must not contain control characters"));
    }

    #[test]
    fn attributes_are_limited() {
        let limits = Limits {
            attributes_max_count: 2,
            attribute_key_max_len: 3,
            attribute_value_max_len: 4,
            ..Limits::titus_defaults()
        };
        let json = batch_with(json!({
            "attributes": {"": "v", "long": "v", "k": "value"}
        }));

        let errors = match parse_descriptor(&json, &limits) {
            Err(ParseError::Invalid(errors)) => errors,
            other => panic!("expected Invalid, got {other:?}"),
        };

        assert_eq!(
            errors,
            vec![
                FieldError::new("attributes", "must have at most 2 entries, got 3"),
                FieldError::new("attributes[\"\"]", "key must not be empty"),
                FieldError::new(
                    "attributes[\"k\"]",
                    "value must be at most 4 characters, got 5"
                ),
                FieldError::new(
                    "attributes[\"long\"]",
                    "key must be at most 3 characters, got 4"
                ),
            ]
        );
    }

    #[test]
    fn team_email_must_look_like_an_address() {
        let cases = [
            ("team@example.com", true),
            ("first.last+tag@mail.example.co.uk", true),
            ("", false),
            ("team", false),
            ("team@example", false),
            ("@example.com", false),
            ("team@@example.com", false),
            ("a@b@example.com", false),
            ("team @example.com", false),
            ("team@example..com", false),
            ("team@example.com.", false),
        ];
        for (email, valid) in cases {
            let json = batch_with(json!({"owner": {"teamEmail": email}}));

            assert_eq!(parse(&json).is_ok(), valid, "{email:?}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(
            problems_of(json!({"owner": {"teamEmail": long}}))[0].message,
            "must be at most 254 characters, got 262"
        );
    }

    #[test]
    fn names_and_group_parts_follow_their_character_rules() {
        let cases = [
            (json!({"applicationName": "my_app.v2-x"}), true),
            (json!({"applicationName": "9app"}), true),
            (json!({"applicationName": "_app"}), false),
            (json!({"applicationName": "a".repeat(65)}), false),
            (json!({"applicationName": "a".repeat(64)}), true),
            (json!({"capacityGroup": "flex-1"}), true),
            // Absent or empty, as proto3 prints it: the default group.
            (json!({"capacityGroup": ""}), true),
            (json!({"capacityGroup": ".x"}), false),
            (
                json!({"jobGroupInfo": {"stack": "", "detail": "", "sequence": ""}}),
                true,
            ),
            (
                json!({"jobGroupInfo": {"stack": "prod_1.a", "sequence": "v001"}}),
                true,
            ),
            (json!({"jobGroupInfo": {"stack": "prod-1"}}), false),
            (json!({"jobGroupInfo": {"detail": "a".repeat(65)}}), false),
        ];
        for (patch, valid) in cases {
            let json = batch_with(patch.clone());

            assert_eq!(parse(&json).is_ok(), valid, "{patch}");
        }
    }

    #[test]
    fn batch_limits_and_retry_policy_are_checked() {
        let errors = problems_of(json!({
            "batch": {
                "size": 1_001,
                "runtimeLimitSec": 864_001,
                "retryPolicy": {"delayed": {"initialDelayMs": 86_400_001, "delayMs": 86_400_001, "retries": 1_001}}
            }
        }));

        assert_eq!(
            errors,
            vec![
                FieldError::new("batch.size", "must be between 1 and 1000, got 1001"),
                FieldError::new(
                    "batch.runtimeLimitSec",
                    "must be between 5 and 864000, got 864001"
                ),
                FieldError::new(
                    "batch.retryPolicy.delayed.initialDelayMs",
                    "must be at most 86400000, got 86400001"
                ),
                FieldError::new(
                    "batch.retryPolicy.delayed.delayMs",
                    "must be at most 86400000, got 86400001"
                ),
                FieldError::new(
                    "batch.retryPolicy.delayed.retries",
                    "must be at most 1000, got 1001"
                ),
            ]
        );
    }

    #[test]
    fn exponential_back_off_needs_a_start_and_a_cap_above_it() {
        let zero = problems_of(json!({"batch": {"retryPolicy": {"exponentialBackOff":
            {"initialDelayMs": 0, "maxDelayIntervalMs": 1_000, "retries": 3}}}}));
        let inverted = problems_of(json!({"batch": {"retryPolicy": {"exponentialBackOff":
            {"initialDelayMs": 2_000, "maxDelayIntervalMs": 1_000, "retries": 3}}}}));
        let over = problems_of(json!({"batch": {"retryPolicy": {"exponentialBackOff":
            {"initialDelayMs": 1, "maxDelayIntervalMs": 86_400_001, "retries": 3}}}}));

        assert_eq!(
            zero[0].field,
            "batch.retryPolicy.exponentialBackOff.initialDelayMs"
        );
        assert!(zero[0].message.starts_with("must be at least 1, got 0"));
        assert_eq!(
            inverted,
            vec![FieldError::new(
                "batch.retryPolicy.exponentialBackOff.initialDelayMs",
                "must be at most maxDelayIntervalMs 1000, got 2000"
            )]
        );
        assert_eq!(
            over[0].field,
            "batch.retryPolicy.exponentialBackOff.maxDelayIntervalMs"
        );
    }

    #[test]
    fn service_retries_are_not_limited_but_delays_are() {
        let unlimited = batch_with(json!({
            "batch": null,
            "service": {
                "capacity": {"desired": 1, "max": 1},
                "retryPolicy": {"immediate": {"retries": 4_000_000_000u32}}
            }
        }));
        let delays = problems_of(json!({
            "batch": null,
            "service": {
                "capacity": {"desired": 1, "max": 1},
                "retryPolicy": {"delayed": {"initialDelayMs": 1, "delayMs": 86_400_001, "retries": 5}}
            }
        }));

        assert!(parse(&unlimited).is_ok());
        assert_eq!(
            delays,
            vec![FieldError::new(
                "service.retryPolicy.delayed.delayMs",
                "must be at most 86400000, got 86400001"
            )]
        );
    }

    #[test]
    fn kill_grace_period_is_limited() {
        let errors = problems_of(json!({"container": {"killGracePeriodSec": 601}}));

        assert_eq!(
            errors,
            vec![FieldError::new(
                "container.killGracePeriodSec",
                "must be at most 600, got 601"
            )]
        );
    }
}
