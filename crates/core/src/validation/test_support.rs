//! Descriptors for the validation tests: the minimal batch job, patched per test, and its errors.

use serde_json::{json, Value};

use super::{parse_descriptor, FieldError, Limits, ParseError};
use crate::job::JobDescriptor;

fn minimal_batch() -> Value {
    json!({
        "owner": {"teamEmail": "team@example.com"},
        "applicationName": "myapp",
        "container": {"image": {"name": "alpine"}},
        "batch": {"size": 1}
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

pub(super) fn batch_with(patch: Value) -> Vec<u8> {
    let mut document = minimal_batch();
    merge(&mut document, patch);
    serde_json::to_vec(&document).expect("a Value serializes")
}

pub(super) fn parse(json: &[u8]) -> Result<JobDescriptor, ParseError> {
    parse_descriptor(json, &Limits::titus_defaults())
}

/// The field errors of a descriptor that must be well-formed but invalid.
pub(super) fn problems_of(patch: Value) -> Vec<FieldError> {
    match parse(&batch_with(patch)) {
        Err(ParseError::Invalid(errors)) => errors,
        other => panic!("expected ParseError::Invalid, got {other:?}"),
    }
}

pub(super) fn message_for<'e>(errors: &'e [FieldError], field: &str) -> &'e str {
    errors
        .iter()
        .find(|error| error.field == field)
        .map(|error| error.message.as_str())
        .unwrap_or_else(|| panic!("no error for {field} in {errors:#?}"))
}

pub(super) fn malformed(json: &[u8]) -> (String, String) {
    match parse(json) {
        Err(ParseError::Malformed { field, message }) => (field, message),
        other => panic!("expected ParseError::Malformed, got {other:?}"),
    }
}

pub(super) fn validate_image(image: Value) -> Vec<FieldError> {
    let json = batch_with(json!({"container": {"image": image}}));
    match parse(&json) {
        Ok(_) => Vec::new(),
        Err(ParseError::Invalid(errors)) => errors,
        Err(other) => panic!("expected a well-formed descriptor, got {other:?}"),
    }
}
