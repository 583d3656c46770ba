//! Request bodies: a JSON content type (415 otherwise), a size limit (413), and the small bodies
//! of capacity and attribute changes read field by field so that every problem is reported with
//! user text only ever quoted.

use std::collections::BTreeMap;

use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use bytes::Bytes;
use serde_json::Value;
use titus_control::CapacityUpdate;
use titus_core::validation::quoted;
use titus_core::FieldError;

use crate::error::ApiError;

/// A request body declared as JSON. The size limit is the router's `DefaultBodyLimit`.
#[derive(Debug, Clone)]
pub struct JsonBody(pub Bytes);

/// Whether a Content-Type names JSON: `application/json` or `application/<anything>+json`, with
/// any parameters.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|subtype| subtype.ends_with("+json"))
}

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<JsonBody, ApiError> {
        let content_type = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !is_json(content_type) {
            return Err(ApiError::unsupported_media_type(format!(
                "the body's Content-Type is {}; expected application/json",
                if content_type.is_empty() {
                    "missing".to_owned()
                } else {
                    quoted(content_type)
                }
            )));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::payload_too_large(
                        "the request body is larger than this API accepts; expected at most the \
                         job descriptor size limit",
                    )
                } else {
                    ApiError::invalid("(body)", "could not be read")
                }
            })?;
        Ok(JsonBody(bytes))
    }
}

fn problem(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// Parses a JSON object, or a 400 saying why not. serde_json's syntax messages carry only
/// positions, never the input.
fn object(body: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::invalid("(root)", "must be a JSON object")),
        Err(e) => Err(ApiError::invalid("(root)", format!("not valid JSON: {e}"))),
    }
}

fn unknown_fields(
    map: &serde_json::Map<String, Value>,
    known: &[&str],
    problems: &mut Vec<FieldError>,
) {
    for name in map.keys().filter(|k| !known.contains(&k.as_str())) {
        problems.push(problem(
            &quoted(name),
            format!("unknown field; expected only {}", known.join(", ")),
        ));
    }
}

/// `{"min"?, "desired"?, "max"?}`: each an integer from 0 to 4294967295, or null/absent to keep
/// the current value.
pub fn capacity_update(body: &[u8]) -> Result<CapacityUpdate, ApiError> {
    let map = object(body)?;
    let mut problems = Vec::new();
    unknown_fields(&map, &["min", "desired", "max"], &mut problems);
    let mut field = |name: &str| match map.get(name) {
        None | Some(Value::Null) => None,
        Some(value) => match value.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) => Some(n),
            None => {
                problems.push(problem(
                    name,
                    format!(
                        "must be an integer from 0 to {}, got {}",
                        u32::MAX,
                        short(value)
                    ),
                ));
                None
            }
        },
    };
    let update = CapacityUpdate {
        min: field("min"),
        desired: field("desired"),
        max: field("max"),
    };
    if problems.is_empty() {
        Ok(update)
    } else {
        Err(ApiError::invalid_all(problems))
    }
}

/// `{"attributes": {"key": "value", ...}}` with string values.
pub fn attributes_update(body: &[u8]) -> Result<BTreeMap<String, String>, ApiError> {
    let map = object(body)?;
    let mut problems = Vec::new();
    unknown_fields(&map, &["attributes"], &mut problems);
    let mut attributes = BTreeMap::new();
    match map.get("attributes") {
        Some(Value::Object(entries)) => {
            for (key, value) in entries {
                match value {
                    Value::String(text) => {
                        attributes.insert(key.clone(), text.clone());
                    }
                    other => problems.push(problem(
                        &format!("attributes[{}]", quoted(key)),
                        format!("must be a string, got {}", short(other)),
                    )),
                }
            }
        }
        Some(other) => problems.push(problem(
            "attributes",
            format!("must be an object of string values, got {}", short(other)),
        )),
        None => problems.push(problem(
            "attributes",
            "is required; expected an object of attribute keys to string values",
        )),
    }
    if problems.is_empty() {
        Ok(attributes)
    } else {
        Err(ApiError::invalid_all(problems))
    }
}

/// A JSON value for a message: its JSON text, quoted and cut short.
fn short(value: &Value) -> String {
    quoted(&value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types_are_recognized() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json(""));
        assert!(!is_json("application/jsonx"));
    }

    #[test]
    fn a_capacity_update_keeps_omitted_fields() {
        let update = capacity_update(br#"{"desired": 3, "max": null}"#).unwrap();
        assert_eq!(
            update,
            CapacityUpdate {
                min: None,
                desired: Some(3),
                max: None
            }
        );
    }

    #[test]
    fn a_bad_capacity_update_reports_every_problem() {
        let err = capacity_update(br#"{"min": -1, "desired": "x", "maks": 3}"#).unwrap_err();
        assert_eq!(err.status(), 400);
        let err = capacity_update(b"[1]").unwrap_err();
        assert_eq!(err.status(), 400);
        let err = capacity_update(b"{").unwrap_err();
        assert_eq!(err.status(), 400);
    }

    #[test]
    fn attribute_values_must_be_strings() {
        assert_eq!(
            attributes_update(br#"{"attributes": {"a": "1"}}"#).unwrap(),
            BTreeMap::from([("a".to_owned(), "1".to_owned())])
        );
        assert!(attributes_update(br#"{"attributes": {"a": 1}}"#).is_err());
        assert!(attributes_update(br#"{}"#).is_err());
    }
}
