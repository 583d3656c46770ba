//! Docker's image reference grammar: what `container.image`'s name, tag and digest may be.

/// Docker's limit on a whole image name, registry included.
const IMAGE_NAME_MAX_CHARS: usize = 255;
pub(super) const IMAGE_TAG_MAX_CHARS: usize = 128;

/// Docker's reference grammar, simplified: an optional registry host, then `/`-separated path
/// components of letters and digits joined by `.`, `_`, `__` or runs of `-`. Titus accepts
/// capitals (`platform/webUI`), so this does too, though Docker itself refuses to pull such a
/// name: a task of such an image fails at launch with Docker's reason.
pub(super) fn check_image_name(name: &str) -> Result<(), String> {
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
            "each path component must be letters and digits, joined by '.', '_', '__' \
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
    let is_alphanumeric = |b: u8| b.is_ascii_alphanumeric();
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

pub(super) fn is_image_tag(tag: &str) -> bool {
    tag.len() <= IMAGE_TAG_MAX_CHARS
        && tag
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

pub(super) fn is_lowercase_hex(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub(super) fn is_sha256_digest(digest: &str) -> bool {
    digest
        .strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && is_lowercase_hex(hex))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::validation::test_support::validate_image;

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
            ("Alpine", true),
            ("platform/webUI", true),
            ("team/App", true),
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
    fn image_tags_follow_the_docker_grammar() {
        let long_tag = "t".repeat(129);
        let cases = [
            ("latest", true),
            ("v1.2.3-rc_1", true),
            ("_private", true),
            (&long_tag[1..], true),
            // Titus prints an absent tag as "": not set, so `latest`.
            ("", true),
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
}
