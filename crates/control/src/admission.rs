//! Admission of a submitted job descriptor: the platform's limits, then its policy, with every
//! problem reported at once; and the digest that ties an idempotency key to one request.

use sha2::{Digest, Sha256};
use titus_core::job::JobDescriptor;
use titus_core::{parse_descriptor, Limits, ParseError};

use crate::policy::JobPolicy;

/// Parses and validates `body` against `limits`, then checks it against `policy`. A descriptor
/// that breaks both the limits and the policy gets both lists of problems in one
/// `ParseError::Invalid`.
pub fn admit(
    body: &[u8],
    limits: &Limits,
    policy: &JobPolicy,
) -> Result<JobDescriptor, ParseError> {
    match parse_descriptor(body, limits) {
        Ok(descriptor) => {
            let refused = policy.check(&descriptor);
            if refused.is_empty() {
                Ok(descriptor)
            } else {
                Err(ParseError::Invalid(refused))
            }
        }
        Err(ParseError::Invalid(mut errors)) => {
            // Validation runs only on a document that deserialized, so this parses again.
            if let Ok(descriptor) = serde_json::from_slice::<JobDescriptor>(body) {
                errors.extend(policy.check(&descriptor));
            }
            Err(ParseError::Invalid(errors))
        }
        Err(other) => Err(other),
    }
}

/// A digest of the descriptor as the platform understood it (defaults filled in, maps in key
/// order), so that the same request spelt differently has the same digest: lowercase hex SHA-256.
pub fn request_hash(descriptor: &JobDescriptor) -> String {
    let canonical = serde_json::to_vec(descriptor).unwrap_or_default();
    let digest = Sha256::digest(&canonical);
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"{"owner":{"teamEmail":"team@example.com"},"applicationName":"app",
        "container":{"image":{"name":"busybox"}},"batch":{"size":1}}"#;

    #[test]
    fn limits_and_policy_problems_are_reported_together() {
        let body = r#"{"owner":{"teamEmail":"team@example.com"},"applicationName":"app",
            "container":{"image":{"name":"busybox"},"privileged":true,
                         "resources":{"cpu":1000}},"batch":{"size":1}}"#;

        let err = admit(body.as_bytes(), &Limits::default(), &JobPolicy::default()).unwrap_err();

        let fields: Vec<String> = err.field_errors().into_iter().map(|e| e.field).collect();
        assert!(
            fields.contains(&"container.resources.cpu".to_owned()),
            "{fields:?}"
        );
        assert!(
            fields.contains(&"container.privileged".to_owned()),
            "{fields:?}"
        );
    }

    #[test]
    fn a_valid_descriptor_is_admitted() {
        let descriptor = admit(BASE.as_bytes(), &Limits::default(), &JobPolicy::default()).unwrap();
        assert_eq!(descriptor.application_name, "app");
    }

    #[test]
    fn the_same_request_spelt_differently_has_the_same_hash() {
        let reordered = r#"{"batch":{"size":1},"applicationName":"app",
            "container":{"image":{"name":"busybox"},"killGracePeriodSec":10},
            "owner":{"teamEmail":"team@example.com"}}"#;
        let a = admit(BASE.as_bytes(), &Limits::default(), &JobPolicy::default()).unwrap();
        let b = admit(
            reordered.as_bytes(),
            &Limits::default(),
            &JobPolicy::default(),
        )
        .unwrap();
        let mut c = a.clone();
        c.application_name = "other".to_owned();

        assert_eq!(request_hash(&a), request_hash(&b));
        assert_ne!(request_hash(&a), request_hash(&c));
        assert_eq!(request_hash(&a).len(), 64);
    }
}
