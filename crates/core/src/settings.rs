//! Typed settings: what a settings value checks beyond its JSON shape, and environment variables
//! that override single fields of it. The SSM loader in `titus-aws` parses each parameter into
//! such a type and names the parameter when it is wrong; the overrides name the variable.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A settings value that checks more than its JSON shape can say.
pub trait Validate {
    /// What the value should hold, for error messages.
    const EXPECTED: &'static str;

    /// The first thing wrong with the value, if any.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

impl Validate for crate::validation::Limits {
    const EXPECTED: &'static str = "a JSON object of job limits in camelCase (see Limits)";
}

impl Validate for crate::quota::Quotas {
    const EXPECTED: &'static str = "a JSON object with teams and capacityGroups, each mapping a \
         name (or \"*\") to limits jobs, tasks, cpu (cores), memoryMB and gpu";

    fn validate(&self) -> Result<(), String> {
        crate::quota::Quotas::validate(self)
    }
}

/// An environment variable that could not override its setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("setting {variable} is {value:?}: {message}; expected {expected}")]
pub struct OverrideError {
    pub variable: String,
    pub value: String,
    pub message: String,
    pub expected: String,
}

/// `settings` with each top-level field replaced by the variable `{prefix}{FIELD}` (the field's
/// name in capitals) where `lookup` has it: `TITUS_SCHEDULER_LEASE_TTL_MS` overrides
/// `lease_ttl_ms` with prefix `TITUS_SCHEDULER_`. A value is read as JSON (numbers, booleans)
/// and otherwise as a string. The result is validated again.
pub fn apply_overrides<T>(
    settings: T,
    prefix: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<T, OverrideError>
where
    T: Serialize + DeserializeOwned + Validate,
{
    let mut value = serde_json::to_value(&settings).map_err(|e| OverrideError {
        variable: prefix.to_owned(),
        value: String::new(),
        message: format!("the settings do not serialize: {e}"),
        expected: T::EXPECTED.to_owned(),
    })?;
    let Some(fields) = value.as_object_mut() else {
        return Ok(settings);
    };
    let mut applied = Vec::new();
    for (field, slot) in fields.iter_mut() {
        let variable = format!("{prefix}{}", field.to_ascii_uppercase());
        if let Some(text) = lookup(&variable) {
            *slot = serde_json::from_str(text.trim())
                .unwrap_or_else(|_| serde_json::Value::String(text.clone()));
            applied.push((variable, text));
        }
    }
    if applied.is_empty() {
        return Ok(settings);
    }
    let failed = |message: String| {
        let (variable, value) = applied.last().cloned().unwrap_or_default();
        let names: Vec<&str> = applied.iter().map(|(v, _)| v.as_str()).collect();
        OverrideError {
            variable: if applied.len() == 1 {
                variable
            } else {
                names.join(", ")
            },
            value,
            message,
            expected: T::EXPECTED.to_owned(),
        }
    };
    let overridden: T = serde_json::from_value(value).map_err(|e| failed(e.to_string()))?;
    overridden.validate().map_err(failed)?;
    Ok(overridden)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Tunables {
        ttl_ms: u64,
        mode: String,
    }

    impl Validate for Tunables {
        const EXPECTED: &'static str = "ttl_ms in milliseconds (at least 10)";
        fn validate(&self) -> Result<(), String> {
            if self.ttl_ms < 10 {
                return Err(format!("ttl_ms is {}", self.ttl_ms));
            }
            Ok(())
        }
    }

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    fn base() -> Tunables {
        Tunables {
            ttl_ms: 100,
            mode: "fast".to_owned(),
        }
    }

    #[test]
    fn a_variable_replaces_its_field_and_others_keep_theirs() {
        let out = apply_overrides(base(), "T_", lookup(&[("T_MODE", "slow")])).unwrap();
        assert_eq!(
            out,
            Tunables {
                ttl_ms: 100,
                mode: "slow".to_owned()
            }
        );
        let out = apply_overrides(base(), "T_", lookup(&[("T_TTL_MS", " 250 ")])).unwrap();
        assert_eq!(out.ttl_ms, 250);
    }

    #[test]
    fn a_bad_value_names_the_variable_and_what_was_expected() {
        let err = apply_overrides(base(), "T_", lookup(&[("T_TTL_MS", "10m")])).unwrap_err();
        assert_eq!(err.variable, "T_TTL_MS");
        let text = err.to_string();
        assert!(text.contains("\"10m\""), "{text}");
        assert!(text.contains("milliseconds"), "{text}");

        let err = apply_overrides(base(), "T_", lookup(&[("T_TTL_MS", "3")])).unwrap_err();
        assert!(err.to_string().contains("ttl_ms is 3"), "{err}");
    }
}
