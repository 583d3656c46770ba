//! Secrets by reference: what a job's `container.secrets` may name, parsed once for the API's
//! validation and the agent's resolution.
//!
//! A reference is an ARN of one of two kinds:
//! - an SSM parameter, `arn:{partition}:ssm:{region}:{account}:parameter/{name}` (a SecureString
//!   is decrypted; a String or StringList is taken as it is);
//! - a Secrets Manager secret, `arn:{partition}:secretsmanager:{region}:{account}:secret:{name}`
//!   (its current `SecretString`).
//!
//! An error never repeats the reference: a value pasted where a reference belongs stays out of
//! the answer and the logs. Only the reference is stored with the job; the value exists on the agent's host, for the
//! time of the launch, and in the container's environment.

/// The longest reference accepted (an ARN of a long parameter name fits).
pub const SECRET_REF_MAX_LEN: usize = 2_048;

/// Which service holds a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretSource {
    SsmParameter,
    SecretsManager,
}

/// A parsed secret reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    pub source: SecretSource,
    /// The whole ARN, as the services take it.
    pub arn: String,
    pub region: String,
    pub account: String,
    /// The parameter's name (with its leading `/` when it has one) or the secret's name.
    pub name: String,
}

impl SecretRef {
    /// Parses `reference`, or says what is wrong with it and what is expected.
    pub fn parse(reference: &str) -> Result<SecretRef, String> {
        const EXPECTED: &str = "expected an SSM parameter ARN \
             (arn:aws:ssm:{region}:{account}:parameter/{name}) or a Secrets Manager secret ARN \
             (arn:aws:secretsmanager:{region}:{account}:secret:{name})";
        if reference.len() > SECRET_REF_MAX_LEN {
            return Err(format!(
                "reference must be at most {SECRET_REF_MAX_LEN} bytes, got {}; {EXPECTED}",
                reference.len()
            ));
        }
        if reference
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(format!(
                "reference must not contain spaces or control characters; {EXPECTED}"
            ));
        }
        let parts: Vec<&str> = reference.splitn(6, ':').collect();
        let [arn, partition, service, region, account, resource] = parts[..] else {
            return Err(format!("the reference is not an ARN; {EXPECTED}"));
        };
        if arn != "arn" || !partition.starts_with("aws") {
            return Err(format!("the reference is not an AWS ARN; {EXPECTED}"));
        }
        if region.is_empty()
            || !region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(format!("the reference has no valid region; {EXPECTED}"));
        }
        if account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!(
                "the reference has no 12-digit account id; {EXPECTED}"
            ));
        }
        let (source, name) = match service {
            "ssm" => {
                let Some(name) = resource.strip_prefix("parameter") else {
                    return Err(format!("the reference is not a parameter ARN; {EXPECTED}"));
                };
                // `parameter/app/db` names `/app/db`; `parameter/db` names `db`.
                let bare = name.strip_prefix('/').unwrap_or_default();
                let name = if bare.contains('/') {
                    name.to_owned()
                } else {
                    bare.to_owned()
                };
                let valid = |c: char| c.is_ascii_alphanumeric() || "_.-/".contains(c);
                if bare.is_empty() || !name.chars().all(valid) || name.contains("//") {
                    return Err(format!(
                        "the reference has no valid parameter name (letters, digits, '_', '.', \
                         '-' and '/'); {EXPECTED}"
                    ));
                }
                (SecretSource::SsmParameter, name)
            }
            "secretsmanager" => {
                let Some(name) = resource.strip_prefix("secret:") else {
                    return Err(format!("the reference is not a secret ARN; {EXPECTED}"));
                };
                let valid = |c: char| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c);
                if name.is_empty() || !name.chars().all(valid) {
                    return Err(format!(
                        "the reference has no valid secret name (letters, digits and \
                         '/_+=.@-'); {EXPECTED}"
                    ));
                }
                (SecretSource::SecretsManager, name.to_owned())
            }
            _ => return Err(format!("the reference names another service; {EXPECTED}")),
        };
        Ok(SecretRef {
            source,
            arn: reference.to_owned(),
            region: region.to_owned(),
            account: account.to_owned(),
            name,
        })
    }
}

/// Where the secrets of a task without an IAM role may live in stage `stage` (the agent reads
/// them with its own credentials, which the deployment scopes to these): SSM parameters under
/// the first prefix, Secrets Manager secrets named with the second.
pub fn shared_prefixes(stage: &str) -> (String, String) {
    (
        format!("/titus/{stage}/secrets/"),
        format!("titus/{stage}/secrets/"),
    )
}

/// Whether a task without an IAM role may name `reference` in stage `stage`.
pub fn shared_with_roleless_tasks(reference: &SecretRef, stage: &str) -> bool {
    let (parameters, secrets) = shared_prefixes(stage);
    match reference.source {
        SecretSource::SsmParameter => reference.name.starts_with(&parameters),
        SecretSource::SecretsManager => reference.name.starts_with(&secrets),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_and_secret_arns_parse() {
        let param = SecretRef::parse("arn:aws:ssm:us-east-1:123456789012:parameter/app/db-pass")
            .expect("parameter");
        assert_eq!(param.source, SecretSource::SsmParameter);
        assert_eq!(param.name, "/app/db-pass");
        assert_eq!(param.region, "us-east-1");
        let flat = SecretRef::parse("arn:aws:ssm:eu-west-1:123456789012:parameter/token")
            .expect("flat parameter");
        assert_eq!(flat.name, "token");
        let secret =
            SecretRef::parse("arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf")
                .expect("secret");
        assert_eq!(secret.source, SecretSource::SecretsManager);
        assert_eq!(secret.name, "prod/db-AbCdEf");
        assert_eq!(secret.account, "123456789012");
    }

    #[test]
    fn bad_references_say_what_is_expected() {
        for bad in [
            "",
            "/app/db-pass",
            "arn:aws:s3:::bucket/key",
            "arn:aws:ssm:us-east-1:123456789012:document/x",
            "arn:aws:ssm:us-east-1:12345:parameter/x",
            "arn:aws:ssm::123456789012:parameter/x",
            "arn:aws:ssm:us-east-1:123456789012:parameter/",
            "arn:aws:ssm:us-east-1:123456789012:parameter/a b",
            "arn:aws:ssm:us-east-1:123456789012:parameter/a//b",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:x\u{1b}[31m",
            "arn:other:ssm:us-east-1:123456789012:parameter/x",
        ] {
            let error = SecretRef::parse(bad).expect_err(bad);
            assert!(
                error.contains("expected an SSM parameter ARN"),
                "{bad}: {error}"
            );
        }
        let long = format!(
            "arn:aws:ssm:us-east-1:123456789012:parameter/{}",
            "a".repeat(SECRET_REF_MAX_LEN)
        );
        assert!(SecretRef::parse(&long)
            .unwrap_err()
            .contains("at most 2048 bytes"));
    }
}
