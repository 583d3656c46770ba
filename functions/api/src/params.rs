//! Query, path and header parameters: parsed by hand so that every problem is a 400 in the API's
//! error shape, naming the parameter and quoting what was given.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use titus_control::TaskFilter;
use titus_core::events::{
    EventQuery, EventType, FeedCursor, DEFAULT_EVENTS_PER_READ, MAX_EVENTS_PER_READ, MAX_WAIT_MS,
};
use titus_core::ports::{JobFilter, PageRequest, MAX_LOG_LINES_PER_READ};
use titus_core::validation::quoted;
use titus_core::{FieldError, JobId, JobState, JobType, TaskId, TaskState};

use crate::error::ApiError;

/// The header that makes a job creation safe to retry.
/// Lines one logs read returns unless `limit` says otherwise.
pub const DEFAULT_LOG_LINES: u32 = 1_000;
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// Longest accepted idempotency key.
pub const IDEMPOTENCY_KEY_MAX_CHARS: usize = 255;
/// Longest `owner` filter: the longest team email a job can have.
pub const OWNER_FILTER_MAX_CHARS: usize = 254;
/// Longest `applicationName` filter, in bytes: the longest partition key of a DynamoDB index.
pub const APPLICATION_FILTER_MAX_BYTES: usize = 2048;
/// Most `attributes` pairs a job filter may name.
pub const ATTRIBUTE_FILTERS_MAX: usize = 16;
/// Longest `attributes` filter, in bytes: every pair together.
pub const ATTRIBUTE_FILTER_MAX_BYTES: usize = 4096;

/// The query string as a map, refusing unknown and repeated parameters.
#[derive(Debug)]
pub struct Query {
    values: BTreeMap<String, String>,
    problems: Vec<FieldError>,
}

fn problem(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_owned(),
        message: message.into(),
    }
}

impl Query {
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Query {
        let mut query = Query {
            values: BTreeMap::new(),
            problems: Vec::new(),
        };
        let pairs: Vec<(String, String)> = match serde_urlencoded::from_str(raw.unwrap_or_default())
        {
            Ok(pairs) => pairs,
            Err(_) => {
                query.problems.push(problem(
                    "(query)",
                    "is not a valid URL query string; expected name=value pairs joined by &",
                ));
                return query;
            }
        };
        for (name, value) in pairs {
            if !allowed.contains(&name.as_str()) {
                let expected = if allowed.is_empty() {
                    "no query parameters".to_owned()
                } else {
                    format!("one of {}", allowed.join(", "))
                };
                query.problems.push(problem(
                    &quoted(&name),
                    format!("unknown query parameter; expected {expected}"),
                ));
            } else {
                match query.values.entry(name) {
                    std::collections::btree_map::Entry::Occupied(entry) => {
                        let message = "is given more than once; expected it at most once (lists \
                                       are comma-separated)";
                        query.problems.push(problem(entry.key(), message));
                    }
                    std::collections::btree_map::Entry::Vacant(entry) => {
                        entry.insert(value);
                    }
                }
            }
        }
        query
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// A comma-separated list; absent is an empty list. Present but empty (`jobState=`) is one
    /// empty item, which the caller refuses: the OpenAPI document's reading of it.
    fn list(&self, name: &str) -> Vec<String> {
        self.get(name)
            .map(|v| v.split(',').map(|item| item.trim().to_owned()).collect())
            .unwrap_or_default()
    }

    fn push(&mut self, field: &str, message: impl Into<String>) {
        self.problems.push(problem(field, message));
    }

    /// Every problem found so far, as one 400.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid_all(self.problems))
        }
    }

    pub fn page(&mut self) -> PageRequest {
        let page_size = match self.get("pageSize") {
            None => PageRequest::DEFAULT_PAGE_SIZE,
            Some(text) => match text.parse::<u32>() {
                Ok(size) if (1..=PageRequest::MAX_PAGE_SIZE).contains(&size) => size,
                _ => {
                    let message = format!(
                        "must be an integer from 1 to {}, got {}",
                        PageRequest::MAX_PAGE_SIZE,
                        quoted(text)
                    );
                    self.push("pageSize", message);
                    PageRequest::DEFAULT_PAGE_SIZE
                }
            },
        };
        let cursor = self
            .get("cursor")
            .filter(|c| !c.is_empty())
            .map(str::to_owned);
        PageRequest { page_size, cursor }
    }

    pub fn job_filter(&mut self) -> JobFilter {
        let mut filter = JobFilter::default();
        for text in self.list("jobState") {
            match JobState::parse(&text) {
                Some(state) => filter.states.push(state),
                None => self.problems.push(problem(
                    "jobState",
                    format!(
                        "unknown job state {}; expected Accepted, KillInitiated or Finished",
                        quoted(&text)
                    ),
                )),
            }
        }
        filter.owner = self
            .get("owner")
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        if let Some(length) = filter.owner.as_ref().map(|o| o.chars().count()) {
            if length > OWNER_FILTER_MAX_CHARS {
                let message = format!(
                    "must be at most {OWNER_FILTER_MAX_CHARS} characters (a team email), got \
                     {length}"
                );
                self.push("owner", message);
            }
        }
        filter.application_name = self
            .get("applicationName")
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        if let Some(length) = filter.application_name.as_ref().map(String::len) {
            if length > APPLICATION_FILTER_MAX_BYTES {
                let message =
                    format!("must be at most {APPLICATION_FILTER_MAX_BYTES} bytes, got {length}");
                self.push("applicationName", message);
            }
        }
        if let Some(text) = self.get("jobType") {
            match JobType::parse(text) {
                Some(job_type) => filter.job_type = Some(job_type),
                None => {
                    let message = format!(
                        "unknown job type {}; expected batch or service",
                        quoted(text)
                    );
                    self.push("jobType", message);
                }
            }
        }
        let mut attributes = BTreeMap::new();
        let mut attribute_problems = Vec::new();
        let given = self.get("attributes").map_or(0, str::len);
        let pairs = self.list("attributes");
        if given > ATTRIBUTE_FILTER_MAX_BYTES || pairs.len() > ATTRIBUTE_FILTERS_MAX {
            attribute_problems.push(problem(
                "attributes",
                format!(
                    "must name at most {ATTRIBUTE_FILTERS_MAX} key:value pairs in at most \
                     {ATTRIBUTE_FILTER_MAX_BYTES} bytes, got {} pairs in {given} bytes",
                    pairs.len()
                ),
            ));
        }
        for pair in pairs {
            match pair.split_once(':') {
                Some((key, value)) if !key.is_empty() => {
                    attributes.insert(key.to_owned(), value.to_owned());
                }
                _ => attribute_problems.push(problem(
                    "attributes",
                    format!("expected key:value, got {}", quoted(&pair)),
                )),
            }
        }
        self.problems.extend(attribute_problems);
        filter.attributes = attributes;
        filter
    }

    pub fn task_filter(&mut self) -> TaskFilter {
        let mut filter = TaskFilter::default();
        if let Some(text) = self.get("jobId") {
            match normalize_uuid(text) {
                Some(id) => filter.job_id = Some(JobId::from_string(id)),
                None => {
                    let message = format!("must be a job id (a UUID), got {}", quoted(text));
                    self.push("jobId", message);
                }
            }
        }
        let mut state_problems = Vec::new();
        for text in self.list("taskStates") {
            match TaskState::parse(&text) {
                Some(state) => filter.states.push(state),
                None => state_problems.push(problem(
                    "taskStates",
                    format!(
                        "unknown task state {}; expected Accepted, Launched, StartInitiated, \
                         Started, KillInitiated or Finished",
                        quoted(&text)
                    ),
                )),
            }
        }
        self.problems.extend(state_problems);
        filter
    }

    /// `GET /api/v3/events`: the query, where to start (`cursor`, else `sinceMs`, else now) and
    /// how long to wait for an event (`waitMs`).
    pub fn event_query(&mut self, now_ms: u64) -> (EventQuery, FeedCursor, u64) {
        let mut query = EventQuery {
            limit: DEFAULT_EVENTS_PER_READ,
            ..EventQuery::default()
        };
        if let Some(text) = self.get("jobId") {
            match normalize_uuid(text) {
                Some(id) => query.job_id = Some(JobId::from_string(id)),
                None => {
                    let message = format!("must be a job id (a UUID), got {}", quoted(text));
                    self.push("jobId", message);
                }
            }
        }
        if let Some(owner) = self.get("owner").map(str::to_owned) {
            if owner.is_empty() {
                self.push("owner", "is empty; expected an owner team's email");
            }
            query.owner = Some(owner);
        }
        let mut type_problems = Vec::new();
        for text in self.list("types") {
            match EventType::parse(&text) {
                Some(kind) => query.types.push(kind),
                None => type_problems.push(problem(
                    "types",
                    format!(
                        "unknown event type {}; expected {}",
                        quoted(&text),
                        EventType::ALL.map(EventType::as_str).join(", ")
                    ),
                )),
            }
        }
        self.problems.extend(type_problems);
        let number = |q: &mut Query, name: &str, max: u64| -> Option<u64> {
            let text = q.get(name)?.to_owned();
            match text.parse::<u64>() {
                Ok(n) if n <= max => Some(n),
                _ => {
                    q.push(
                        name,
                        format!("must be an integer from 0 to {max}, got {}", quoted(&text)),
                    );
                    None
                }
            }
        };
        if let Some(limit) = number(self, "limit", u64::from(MAX_EVENTS_PER_READ)) {
            if limit == 0 {
                self.push(
                    "limit",
                    format!("must be an integer from 1 to {MAX_EVENTS_PER_READ}, got \"0\""),
                );
            }
            query.limit = limit.max(1) as u32;
        }
        let wait_ms = number(self, "waitMs", MAX_WAIT_MS).unwrap_or(0);
        let since_ms = number(self, "sinceMs", u64::MAX);
        let cursor = match self.get("cursor").filter(|c| !c.is_empty()) {
            Some(text) => match FeedCursor::decode(text) {
                Some(cursor) => {
                    if since_ms.is_some() {
                        self.push(
                            "sinceMs",
                            "cannot be given with cursor; a cursor says where to go on from",
                        );
                    }
                    cursor
                }
                None => {
                    self.push(
                        "cursor",
                        format!("is not a cursor this feed gave; expected the `cursor` of an earlier answer, got {}", quoted(text)),
                    );
                    FeedCursor::at_ms(now_ms)
                }
            },
            None => titus_control::events::start_cursor(since_ms, now_ms),
        };
        (query, cursor, wait_ms)
    }

    /// `GET /tasks/{id}/logs`' parameters: `cursor`, `sinceMs`, `tail` and `limit` (default
    /// [`DEFAULT_LOG_LINES`]); a tail and a time apply only without a cursor.
    pub fn log_read(&mut self) -> (Option<String>, Option<u64>, Option<u32>, u32) {
        let max = MAX_LOG_LINES_PER_READ;
        let count = |q: &mut Query, name: &str| -> Option<u32> {
            let text = q.get(name)?.to_owned();
            match text.parse::<u32>() {
                Ok(n) if (1..=max).contains(&n) => Some(n),
                _ => {
                    q.push(
                        name,
                        format!("must be an integer from 1 to {max}, got {}", quoted(&text)),
                    );
                    None
                }
            }
        };
        let tail = count(self, "tail");
        let limit = count(self, "limit").unwrap_or(DEFAULT_LOG_LINES);
        let since_ms = match self.get("sinceMs").map(str::to_owned) {
            None => None,
            Some(text) => match text.parse::<u64>() {
                Ok(n) => Some(n),
                Err(_) => {
                    self.push(
                        "sinceMs",
                        format!(
                            "must be a time in milliseconds since the epoch, got {}",
                            quoted(&text)
                        ),
                    );
                    None
                }
            },
        };
        let cursor = match self.get("cursor").map(str::to_owned) {
            Some(text)
                if text.is_empty() || text.len() > 512 || text.chars().any(char::is_control) =>
            {
                self.push(
                    "cursor",
                    format!(
                        "is not a log cursor; expected the `cursor` of an earlier answer, got {}",
                        quoted(&text)
                    ),
                );
                None
            }
            other => other,
        };
        if cursor.is_some() && (tail.is_some() || since_ms.is_some()) {
            self.push(
                "cursor",
                "goes on from an earlier read, which already chose where to start; give it \
                 without tail and sinceMs",
            );
        }
        (cursor, since_ms, tail, limit)
    }

    pub fn shrink(&mut self) -> bool {
        self.flag("shrink")
    }

    /// A boolean parameter, false when absent.
    pub fn flag(&mut self, name: &str) -> bool {
        match self.get(name) {
            None => false,
            Some(text) if text.eq_ignore_ascii_case("true") => true,
            Some(text) if text.eq_ignore_ascii_case("false") => false,
            Some(text) => {
                let message = format!("must be true or false, got {}", quoted(text));
                self.push(name, message);
                false
            }
        }
    }

    pub fn attribute_keys(&mut self) -> BTreeSet<String> {
        let keys: BTreeSet<String> = self.list("keys").into_iter().collect();
        if keys.contains("") {
            self.push(
                "keys",
                "has an empty key; expected a comma-separated list of attribute keys",
            );
        } else if keys.is_empty() {
            self.push(
                "keys",
                "is required; expected a comma-separated list of attribute keys to delete",
            );
        }
        keys
    }
}

/// The `{id}` path segment, as text; a segment that is not UTF-8 once percent-decoded is a 400 in
/// the API's error shape (axum's own rejection would be plain text).
#[derive(Debug, Clone)]
pub struct IdParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<IdParam, ApiError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(id)) => Ok(IdParam(id)),
            Err(_) => Err(ApiError::invalid(
                "id",
                "must be a UUID; the path segment is not valid UTF-8 once percent-decoded",
            )),
        }
    }
}

/// The canonical (lowercase, hyphenated) form of a UUID.
fn normalize_uuid(text: &str) -> Option<String> {
    uuid::Uuid::try_parse(text)
        .ok()
        .map(|u| u.hyphenated().to_string())
}

pub fn job_id(text: &str) -> Result<JobId, ApiError> {
    normalize_uuid(text).map(JobId::from_string).ok_or_else(|| {
        ApiError::invalid(
            "id",
            format!("must be a job id (a UUID), got {}", quoted(text)),
        )
    })
}

pub fn task_id(text: &str) -> Result<TaskId, ApiError> {
    normalize_uuid(text)
        .map(TaskId::from_string)
        .ok_or_else(|| {
            ApiError::invalid(
                "id",
                format!("must be a task id (a UUID), got {}", quoted(text)),
            )
        })
}

/// The `Idempotency-Key` header, if given: 1 to 255 visible ASCII characters.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::invalid(
            "Idempotency-Key",
            format!(
                "must be 1 to {IDEMPOTENCY_KEY_MAX_CHARS} visible ASCII characters, given once"
            ),
        )
    };
    if values.next().is_some() {
        return Err(invalid());
    }
    let text = value.to_str().map_err(|_| invalid())?.trim();
    if text.is_empty()
        || text.len() > IDEMPOTENCY_KEY_MAX_CHARS
        || !text.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(invalid());
    }
    Ok(Some(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_repeated_parameters_are_each_reported() {
        let query = Query::parse(Some("pageSize=5&bogus=1&pageSize=6"), &["pageSize"]);
        let err = query.finish().unwrap_err();
        assert_eq!(err.status(), 400);
    }

    #[test]
    fn a_page_size_out_of_range_is_refused() {
        for bad in ["0", "1001", "-1", "ten", ""] {
            let mut query = Query::parse(Some(&format!("pageSize={bad}")), &["pageSize"]);
            query.page();
            assert!(query.finish().is_err(), "pageSize={bad:?} was accepted");
        }
        let mut query = Query::parse(Some("pageSize=1000&cursor=abc"), &["pageSize", "cursor"]);
        let page = query.page();
        assert!(query.finish().is_ok());
        assert_eq!(page.page_size, 1000);
        assert_eq!(page.cursor.as_deref(), Some("abc"));
    }

    #[test]
    fn job_filters_parse_lists_and_attributes() {
        let mut query = Query::parse(
            Some("jobState=accepted,Finished&jobType=SERVICE&attributes=a:1,b:x:y&owner=t@e.com"),
            &["jobState", "jobType", "attributes", "owner"],
        );
        let filter = query.job_filter();
        assert!(query.finish().is_ok());
        assert_eq!(filter.states, [JobState::Accepted, JobState::Finished]);
        assert_eq!(filter.job_type, Some(JobType::Service));
        assert_eq!(filter.attributes.get("b").map(String::as_str), Some("x:y"));
        assert_eq!(filter.owner.as_deref(), Some("t@e.com"));
    }

    #[test]
    fn job_filters_are_bounded() {
        let allowed = ["owner", "applicationName", "attributes"];
        let long_owner = format!("owner={}@e.com", "a".repeat(250));
        let long_application = format!("applicationName={}", "a".repeat(2049));
        let many_pairs = format!(
            "attributes={}",
            (0..17)
                .map(|i| format!("k{i}:v"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let long_pairs = format!("attributes=k:{}", "v".repeat(4096));
        for (raw, field) in [
            (long_owner.as_str(), "owner"),
            (long_application.as_str(), "applicationName"),
            (many_pairs.as_str(), "attributes"),
            (long_pairs.as_str(), "attributes"),
        ] {
            let mut query = Query::parse(Some(raw), &allowed);
            query.job_filter();
            let problems: Vec<&str> = query.problems.iter().map(|p| p.field.as_str()).collect();
            assert_eq!(problems, [field], "{}", &raw[..40]);
        }

        let at_the_limit = format!(
            "owner={}@e.com&applicationName={}",
            "a".repeat(248),
            "a".repeat(2048)
        );
        let mut query = Query::parse(Some(&at_the_limit), &allowed);
        query.job_filter();
        assert!(query.finish().is_ok());
    }

    #[test]
    fn ids_are_uuids_in_canonical_form() {
        let id = job_id("1B4E28BA-2FA1-11D2-883F-0016D3CCA427").unwrap();
        assert_eq!(id.as_str(), "1b4e28ba-2fa1-11d2-883f-0016d3cca427");
        assert_eq!(job_id("nope").unwrap_err().status(), 400);
    }

    #[test]
    fn idempotency_keys_are_bounded_visible_ascii() {
        let mut headers = HeaderMap::new();
        assert_eq!(idempotency_key(&headers).unwrap(), None);
        headers.insert(IDEMPOTENCY_KEY_HEADER, "order-42".parse().unwrap());
        assert_eq!(
            idempotency_key(&headers).unwrap().as_deref(),
            Some("order-42")
        );
        headers.insert(IDEMPOTENCY_KEY_HEADER, "a b".parse().unwrap());
        assert!(idempotency_key(&headers).is_err());
        headers.insert(IDEMPOTENCY_KEY_HEADER, "x".repeat(256).parse().unwrap());
        assert!(idempotency_key(&headers).is_err());
    }
}
