//! The event feed: what changed in a job or a task, derived from a record before and after a
//! write (a DynamoDB stream record in AWS and on the emulator), with a stable id per change.
//!
//! Each event is kept twice: in its job's feed (`job#{job id}`) and in the feed of every job
//! (`all#{minute}#{shard}`), both ordered by `{feed ms}#{id}`, where the feed time is when the
//! events writer wrote it. A reader only reads events older than [`SETTLE_MS`], and a writer
//! whose write landed later than [`MAX_WRITE_LAG_MS`] after its feed time writes the event again
//! with a new feed time, so an event a reader has gone past is never written behind it: nothing
//! is missed, and an event seen twice has the same id.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::job::Capacity;
use crate::placement::PlacementResult;
use crate::{Job, JobId, Task, TaskId};

/// How old an event must be (by its feed time) before readers see it.
pub const SETTLE_MS: u64 = 300;
/// A write that lands later than this after its feed time is written again (see the module).
/// The rest of [`SETTLE_MS`] is the margin for the clocks of writers and readers to differ.
pub const MAX_WRITE_LAG_MS: u64 = 150;
/// Shards of the every-job feed per minute, so that no partition takes every write.
pub const FEED_SHARDS: u32 = 4;
/// How long the feed keeps an event.
pub const EVENT_TTL_MS: u64 = 7 * 24 * 3_600_000;
/// The most events one read returns, and the default.
pub const MAX_EVENTS_PER_READ: u32 = 1_000;
pub const DEFAULT_EVENTS_PER_READ: u32 = 100;
/// The longest a read waits for an event (API Gateway answers within 29 s).
pub const MAX_WAIT_MS: u64 = 20_000;
/// The most minutes of the every-job feed one read walks before it answers with a cursor.
pub const MAX_MINUTES_PER_READ: u64 = 30;

const MINUTE_MS: u64 = 60_000;

/// What kind of change an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EventType {
    /// A job entered a state (the first is `Accepted`: the job was created).
    JobStateChange,
    /// A service job's capacity (min, desired, max) changed.
    JobCapacityChange,
    /// A job's attributes changed.
    JobAttributesChange,
    /// A task entered a state (the first is `Accepted`: the task was created).
    TaskStateChange,
    /// The scheduler found that some of a job's tasks fit nowhere, or found new reasons.
    PlacementFailure,
    /// An agent entered a state: `active` (registered, or back), `draining` (it gets no new
    /// placements), `lost` (no heartbeat: its tasks are finished as `lost` and replaced). No job.
    AgentStateChange,
}

impl EventType {
    pub const ALL: [EventType; 6] = [
        EventType::JobStateChange,
        EventType::JobCapacityChange,
        EventType::JobAttributesChange,
        EventType::TaskStateChange,
        EventType::PlacementFailure,
        EventType::AgentStateChange,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::JobStateChange => "JobStateChange",
            EventType::JobCapacityChange => "JobCapacityChange",
            EventType::JobAttributesChange => "JobAttributesChange",
            EventType::TaskStateChange => "TaskStateChange",
            EventType::PlacementFailure => "PlacementFailure",
            EventType::AgentStateChange => "AgentStateChange",
        }
    }

    pub fn parse(text: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == text)
    }
}

/// Why tasks did not fit, as a placement failure event says it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct PlacementSummary {
    pub unplaced_tasks: u32,
    /// `insufficient memory on 37 agents`, most agents first.
    pub reasons: Vec<String>,
    /// The resource dimensions short on agents that met the job's constraints.
    pub insufficient: Vec<String>,
}

/// One change of a job, a task or an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Stable: the same change always has the same id (`{task id}:state:3`).
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The job the event is about; none for an agent's event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<TaskId>,
    /// The job's owner team (its descriptor's `owner.teamEmail`).
    #[serde(default)]
    pub owner: String,
    /// When the change happened, by the record's own time.
    pub timestamp_ms: u64,
    /// When the change entered the feed.
    #[serde(default)]
    pub feed_ms: u64,
    /// Its place among the events written at the same time (in stream order).
    #[serde(default)]
    pub feed_seq: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_message: Option<String>,
    /// The agent a task event's task is placed on, or the agent of an agent's event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Capacity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<PlacementSummary>,
}

impl Event {
    fn new(id: String, kind: EventType, job_id: Option<JobId>, timestamp_ms: u64) -> Event {
        Event {
            id,
            kind,
            job_id,
            task_id: None,
            owner: String::new(),
            timestamp_ms,
            feed_ms: 0,
            feed_seq: 0,
            state: None,
            reason_code: None,
            reason_message: None,
            agent_id: None,
            capacity: None,
            attributes: None,
            placement: None,
        }
    }

    /// The event's place in its feeds: `{feed ms, 13 digits}.{feed seq, 4 digits}#{id}`.
    pub fn event_key(&self) -> String {
        format!("{:013}.{:04}#{}", self.feed_ms, self.feed_seq, self.id)
    }

    /// The partitions the event is kept in: its job's feed (when it has a job) and its minute
    /// of every job's (sharded by job, or by agent for an agent's event).
    pub fn feed_keys(&self) -> Vec<String> {
        let shard_by = match (&self.job_id, &self.agent_id) {
            (Some(job_id), _) => job_id.as_str(),
            (None, Some(agent_id)) => agent_id.as_str(),
            (None, None) => self.id.as_str(),
        };
        let every_job = all_feed_key(self.feed_ms / MINUTE_MS, shard_of(shard_by));
        match &self.job_id {
            Some(job_id) => vec![job_feed_key(job_id), every_job],
            None => vec![every_job],
        }
    }

    /// When the feed may forget the event (seconds, for DynamoDB's time to live).
    pub fn expires_at_secs(&self) -> u64 {
        (self.feed_ms + EVENT_TTL_MS) / 1000
    }
}

pub fn job_feed_key(job_id: &JobId) -> String {
    format!("job#{job_id}")
}

pub fn all_feed_key(minute: u64, shard: u32) -> String {
    format!("all#{minute}#{shard}")
}

/// FNV-1a of the job id (or an agent's): a job's events always go to the same shard.
fn shard_of(key: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in key.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % FEED_SHARDS
}

/// The events a write of a job made: each new status, a capacity change, an attributes change.
pub fn job_events(old: Option<&Job>, new: &Job) -> Vec<Event> {
    let mut events = Vec::new();
    let old_statuses = old.map_or(0, |j| j.status_history.len() + 1);
    let statuses = new
        .status_history
        .iter()
        .chain(std::iter::once(&new.status));
    for (n, status) in statuses.enumerate().skip(old_statuses) {
        let mut event = Event::new(
            format!("{}:state:{n}", new.id),
            EventType::JobStateChange,
            Some(new.id.clone()),
            status.timestamp_ms,
        );
        event.state = Some(status.state.as_str().to_owned());
        event.reason_code = Some(status.reason_code.clone());
        event.reason_message = Some(status.reason_message.clone());
        events.push(event);
    }
    if let Some(old) = old {
        let when = new.status.timestamp_ms.max(old.status.timestamp_ms);
        let capacity = |job: &Job| job.job_descriptor.service.as_ref().map(|s| s.capacity);
        if let (Some(before), Some(after)) = (capacity(old), capacity(new)) {
            if before != after {
                let mut event = Event::new(
                    format!("{}:capacity:{}", new.id, new.version),
                    EventType::JobCapacityChange,
                    Some(new.id.clone()),
                    when,
                );
                event.capacity = Some(after);
                events.push(event);
            }
        }
        if old.job_descriptor.attributes != new.job_descriptor.attributes {
            let mut event = Event::new(
                format!("{}:attributes:{}", new.id, new.version),
                EventType::JobAttributesChange,
                Some(new.id.clone()),
                when,
            );
            event.attributes = Some(new.job_descriptor.attributes.clone());
            events.push(event);
        }
    }
    let owner = &new.job_descriptor.owner.team_email;
    for event in &mut events {
        event.owner.clone_from(owner);
    }
    events
}

/// The events a write of a task made: each status it entered since the last write.
pub fn task_events(old: Option<&Task>, new: &Task) -> Vec<Event> {
    let old_statuses = old.map_or(0, |t| t.status_history.len() + 1);
    new.status_history
        .iter()
        .chain(std::iter::once(&new.status))
        .enumerate()
        .skip(old_statuses)
        .map(|(n, status)| {
            let mut event = Event::new(
                format!("{}:state:{n}", new.id),
                EventType::TaskStateChange,
                Some(new.job_id.clone()),
                status.timestamp_ms,
            );
            event.task_id = Some(new.id.clone());
            event.state = Some(status.state.as_str().to_owned());
            event.reason_code = status.reason_code.map(|r| r.as_str().to_owned());
            event.reason_message = Some(status.reason_message.clone());
            event.agent_id.clone_from(&new.agent_id);
            event
        })
        .collect()
}

/// The event a write of a placement result made: one when the scheduler's answer is new or
/// changed, none when it only confirmed it.
pub fn placement_events(old: Option<&PlacementResult>, new: &PlacementResult) -> Vec<Event> {
    if old.is_some_and(|old| old.since_ms == new.since_ms && old.same_answer(new)) {
        return Vec::new();
    }
    let mut event = Event::new(
        format!("{}:placement:{}", new.job_id, new.since_ms),
        EventType::PlacementFailure,
        Some(new.job_id.clone()),
        new.computed_at_ms,
    );
    event.placement = Some(PlacementSummary {
        unplaced_tasks: new.unplaced_tasks,
        reasons: new.rejections.iter().map(|r| r.in_words()).collect(),
        insufficient: new.insufficient.clone(),
    });
    vec![event]
}

/// What an agent's stream record says of it: the part of the agent an event reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentRecord {
    pub id: String,
    /// `active`, `draining` or `lost` (as the agent's record keeps it).
    pub state: String,
    #[serde(default)]
    pub task_count: u64,
    #[serde(default)]
    pub zone: String,
    #[serde(default)]
    pub machine_group: String,
}

/// The event a write of an agent's record made: one when its state changed (or it was first
/// registered), none for the writes of its allocation. The stream record's sequence number makes
/// the id: the same record delivered twice is the same event, and an agent that drains twice in
/// its life gives two.
pub fn agent_events(
    old: Option<&AgentRecord>,
    new: &AgentRecord,
    sequence: &str,
    now_ms: u64,
) -> Vec<Event> {
    if old.is_some_and(|old| old.state == new.state) {
        return Vec::new();
    }
    let mut event = Event::new(
        format!("agent:{}:{}:{sequence}", new.id, new.state),
        EventType::AgentStateChange,
        None,
        now_ms,
    );
    event.agent_id = Some(new.id.clone());
    event.state = Some(new.state.clone());
    event.reason_message = Some(match (old.map(|o| o.state.as_str()), new.state.as_str()) {
        (None, _) => format!(
            "agent registered in zone {} (machine group {})",
            new.zone, new.machine_group
        ),
        (Some(was), "lost") => format!(
            "agent lost (was {was}): no heartbeat; its {} tasks are finished as lost and replaced",
            new.task_count
        ),
        (Some(was), "draining") => format!(
            "agent draining (was {was}): no new placements; its {} tasks run on",
            new.task_count
        ),
        (Some(was), now) => format!("agent {now} (was {was})"),
    });
    vec![event]
}

/// The table a stream record comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeSource {
    Jobs,
    Tasks,
    PlacementResults,
    Agents,
}

impl ChangeSource {
    /// The source of a stream whose table has this role (`jobs`, `tasks`, `placement-results`,
    /// `agents`).
    pub fn of_table_role(role: &str) -> Option<ChangeSource> {
        match role {
            "jobs" => Some(ChangeSource::Jobs),
            "tasks" => Some(ChangeSource::Tasks),
            "placement-results" => Some(ChangeSource::PlacementResults),
            "agents" => Some(ChangeSource::Agents),
            _ => None,
        }
    }
}

/// One stream record: a record's JSON (`doc`) before and after a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamChange {
    pub source: ChangeSource,
    /// The stream's sequence number: what a failed batch reports to be delivered again.
    pub sequence: String,
    pub old_doc: Option<String>,
    pub new_doc: Option<String>,
}

/// A position in a feed: the key of the last event read, or a time up to which everything was
/// read. Opaque to users; it is an event key, or `{ms}.9999#~` for a time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FeedCursor(String);

impl FeedCursor {
    /// Everything up to and including `ms` has been read.
    pub fn at_ms(ms: u64) -> FeedCursor {
        FeedCursor(format!("{ms:013}.9999#~"))
    }

    /// Just after the event with this key.
    pub fn after_key(key: &str) -> FeedCursor {
        FeedCursor(key.to_owned())
    }

    /// A cursor a reader gave back; `None` when it is not one this feed handed out.
    pub fn parse(text: &str) -> Option<FeedCursor> {
        let (position, rest) = text.split_once('#')?;
        let (ms, seq) = position.split_once('.')?;
        let valid = ms.len() == 13
            && seq.len() == 4
            && ms.bytes().chain(seq.bytes()).all(|b| b.is_ascii_digit())
            && !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_:.~".contains(&b));
        valid.then(|| FeedCursor(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The cursor as a reader is given it: base64url, safe in a URL's query.
    pub fn encode(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.0.as_bytes())
    }

    /// A cursor a reader gave back ([`FeedCursor::encode`]); `None` when it is not one.
    pub fn decode(text: &str) -> Option<FeedCursor> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()?;
        FeedCursor::parse(std::str::from_utf8(&bytes).ok()?)
    }

    /// The feed time the cursor is at.
    pub fn ms(&self) -> u64 {
        self.0[..13].parse().unwrap_or(0)
    }
}

impl std::fmt::Display for FeedCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a reader asks of the feed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventQuery {
    /// One job's feed; every job's when unset.
    pub job_id: Option<JobId>,
    pub owner: Option<String>,
    /// Only these kinds; every kind when empty.
    pub types: Vec<EventType>,
    pub limit: u32,
}

impl EventQuery {
    pub fn matches(&self, event: &Event) -> bool {
        self.job_id
            .as_ref()
            .is_none_or(|j| event.job_id.as_ref() == Some(j))
            && self.owner.as_ref().is_none_or(|o| *o == event.owner)
            && (self.types.is_empty() || self.types.contains(&event.kind))
    }
}

/// The feed partitions a read from `cursor` looks at, oldest first, up to `horizon_ms`: the
/// job's one partition, or the every-job shards of each minute (at most
/// [`MAX_MINUTES_PER_READ`] minutes; the read answers with a cursor at the last minute it read).
pub fn partitions(
    job_id: Option<&JobId>,
    cursor: &FeedCursor,
    horizon_ms: u64,
) -> Vec<Vec<String>> {
    match job_id {
        Some(job) => vec![vec![job_feed_key(job)]],
        None => {
            let first = cursor.ms() / MINUTE_MS;
            let last = (horizon_ms / MINUTE_MS).min(first + MAX_MINUTES_PER_READ - 1);
            (first..=last)
                .map(|minute| {
                    (0..FEED_SHARDS)
                        .map(|shard| all_feed_key(minute, shard))
                        .collect()
                })
                .collect()
        }
    }
}

/// The last moment of a minute of the every-job feed.
pub fn minute_end_ms(feed_key: &str) -> Option<u64> {
    let minute: u64 = feed_key
        .strip_prefix("all#")?
        .split('#')
        .next()?
        .parse()
        .ok()?;
    Some((minute + 1) * MINUTE_MS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobStatus;
    use crate::placement::Rejection;
    use crate::{JobState, TaskStatus};

    fn job() -> Job {
        let descriptor: crate::JobDescriptor = serde_json::from_value(serde_json::json!({
            "owner": {"teamEmail": "team@example.com"},
            "applicationName": "app",
            "container": {"image": {"name": "busybox"}, "resources": {"cpu": 1.0, "memoryMB": 128, "diskMB": 100, "networkMbps": 10}},
            "service": {"capacity": {"min": 0, "desired": 2, "max": 4}}
        }))
        .expect("descriptor");
        Job::new(JobId::generate(), descriptor, "caller".into(), 1_000)
    }

    #[test]
    fn a_new_job_is_one_state_event_and_a_changed_one_reports_what_changed() {
        let created = job();
        let events = job_events(None, &created);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, EventType::JobStateChange);
        assert_eq!(events[0].state.as_deref(), Some("Accepted"));
        assert_eq!(events[0].owner, "team@example.com");
        assert_eq!(events[0].id, format!("{}:state:0", created.id));

        let mut changed = created.clone();
        changed.version = 2;
        if let Some(service) = changed.job_descriptor.service.as_mut() {
            service.capacity.desired = 3;
        }
        changed
            .job_descriptor
            .attributes
            .insert("team".into(), "blue".into());
        changed.status_history.push(changed.status.clone());
        changed.status = JobStatus {
            state: JobState::KillInitiated,
            reason_code: "killed".into(),
            reason_message: "killed by caller".into(),
            timestamp_ms: 2_000,
        };
        let events = job_events(Some(&created), &changed);
        let kinds: Vec<EventType> = events.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                EventType::JobStateChange,
                EventType::JobCapacityChange,
                EventType::JobAttributesChange
            ]
        );
        assert_eq!(events[0].id, format!("{}:state:1", created.id));
        assert_eq!(events[1].capacity.as_ref().map(|c| c.desired), Some(3));
        // The same write seen again gives the same ids; an unchanged write gives none.
        assert_eq!(job_events(Some(&created), &changed), events);
        assert!(job_events(Some(&changed), &changed).is_empty());
    }

    #[test]
    fn a_task_write_gives_one_event_per_state_it_entered() {
        let created = job();
        let mut task = Task::initial(&created, 0, 1_000);
        let first = task_events(None, &task);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].task_id.as_ref(), Some(&task.id));
        let before = task.clone();
        for (state, at) in [
            (crate::TaskState::Launched, 1_100),
            (crate::TaskState::StartInitiated, 1_200),
        ] {
            task.status_history.push(task.status.clone());
            task.status = TaskStatus {
                state,
                reason_code: None,
                reason_message: String::new(),
                timestamp_ms: at,
            };
        }
        task.agent_id = Some("agent-1".into());
        let events = task_events(Some(&before), &task);
        let states: Vec<_> = events.iter().map(|e| e.state.clone().unwrap()).collect();
        assert_eq!(states, ["Launched", "StartInitiated"]);
        assert_eq!(events[1].id, format!("{}:state:2", task.id));
        assert_eq!(events[1].agent_id.as_deref(), Some("agent-1"));
        assert!(task_events(Some(&task), &task).is_empty());
    }

    #[test]
    fn a_placement_result_is_an_event_only_when_its_answer_is_new_or_changed() {
        let job_id = JobId::generate();
        let result = PlacementResult {
            job_id: job_id.clone(),
            unplaced_tasks: 3,
            task_ids: vec![],
            rejections: vec![Rejection {
                reason: "insufficient memory".into(),
                agents: 2,
            }],
            insufficient: vec!["memory".into()],
            since_ms: 5_000,
            computed_at_ms: 5_000,
        };
        let events = placement_events(None, &result);
        assert_eq!(events.len(), 1);
        let summary = events[0].placement.as_ref().unwrap();
        assert_eq!(summary.reasons, ["insufficient memory on 2 agents"]);
        let mut refreshed = result.clone();
        refreshed.computed_at_ms = 65_000;
        assert!(placement_events(Some(&result), &refreshed).is_empty());
        let mut changed = refreshed.clone();
        changed.since_ms = 70_000;
        changed.rejections[0].reason = "insufficient cpu".into();
        assert_eq!(placement_events(Some(&refreshed), &changed).len(), 1);
    }

    #[test]
    fn an_agent_record_is_an_event_only_when_its_state_changes_and_lives_only_in_every_jobs_feed() {
        let active = AgentRecord {
            id: "agent-7".into(),
            state: "active".into(),
            task_count: 3,
            zone: "us-east-1a".into(),
            machine_group: "default".into(),
        };
        let registered = agent_events(None, &active, "100", 1_000);
        assert_eq!(registered.len(), 1);
        assert_eq!(registered[0].kind, EventType::AgentStateChange);
        assert!(registered[0].job_id.is_none());
        // An allocation write (the task count changes, the state does not) is no event.
        let busier = AgentRecord {
            task_count: 4,
            ..active.clone()
        };
        assert!(agent_events(Some(&active), &busier, "101", 1_100).is_empty());
        let lost = AgentRecord {
            state: "lost".into(),
            ..busier.clone()
        };
        let mut events = agent_events(Some(&busier), &lost, "102", 1_200);
        assert_eq!(events.len(), 1);
        let event = &mut events[0];
        assert_eq!(event.id, "agent:agent-7:lost:102");
        assert_eq!(event.state.as_deref(), Some("lost"));
        assert_eq!(event.agent_id.as_deref(), Some("agent-7"));
        assert!(event
            .reason_message
            .as_deref()
            .unwrap()
            .contains("its 4 tasks are finished as lost"));
        // Delivered again, the same record is the same event.
        assert_eq!(
            agent_events(Some(&busier), &lost, "102", 9_999)[0].id,
            event.id
        );
        event.feed_ms = 125_000;
        let keys = event.feed_keys();
        assert_eq!(keys.len(), 1, "{keys:?}");
        assert!(keys[0].starts_with("all#2#"));
        assert!(FeedCursor::parse(&event.event_key()).is_some());
        // A job's reader never sees it; every-job readers do, unless they ask for an owner.
        let job_reader = EventQuery {
            job_id: Some(JobId::generate()),
            ..EventQuery::default()
        };
        assert!(!job_reader.matches(event));
        assert!(EventQuery::default().matches(event));
        let owner_reader = EventQuery {
            owner: Some("team@example.com".into()),
            ..EventQuery::default()
        };
        assert!(!owner_reader.matches(event));
    }

    #[test]
    fn events_are_kept_in_their_jobs_feed_and_in_a_shard_of_their_minute() {
        let mut event = job_events(None, &job()).remove(0);
        event.feed_ms = 125_000;
        let [job_key, all_key] = <[String; 2]>::try_from(event.feed_keys()).expect("two keys");
        assert_eq!(job_key, format!("job#{}", event.job_id.clone().unwrap()));
        assert!(all_key.starts_with("all#2#"), "{all_key}");
        assert_eq!(minute_end_ms(&all_key), Some(179_999));
        assert_eq!(
            event.event_key(),
            format!("0000000125000.0000#{}", event.id)
        );
        assert!(FeedCursor::after_key(&event.event_key()) > FeedCursor::at_ms(124_999));
        assert!(FeedCursor::after_key(&event.event_key()) < FeedCursor::at_ms(125_000));
    }

    #[test]
    fn a_cursor_is_checked_and_reads_walk_bounded_minutes() {
        assert!(FeedCursor::parse("0000000125000.0002#abc:state:1").is_some());
        assert!(FeedCursor::parse("0000000125000.9999#~").is_some());
        let cursor = FeedCursor::parse("0000000125000.0002#abc:state:1").unwrap();
        assert_eq!(FeedCursor::decode(&cursor.encode()), Some(cursor.clone()));
        assert!(cursor
            .encode()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)));
        assert_eq!(FeedCursor::decode("0000000125000.0002#abc"), None);
        for bad in [
            "",
            "12#x",
            "0000000125000.0000#",
            "0000000125000#abc",
            "0000000125000.0000#a b",
            "x000000125000.0000#a",
        ] {
            assert!(FeedCursor::parse(bad).is_none(), "{bad:?}");
        }
        let cursor = FeedCursor::at_ms(0);
        let walked = partitions(None, &cursor, 10 * 3_600_000);
        assert_eq!(walked.len() as u64, MAX_MINUTES_PER_READ);
        assert_eq!(walked[0].len() as u32, FEED_SHARDS);
        let job = JobId::generate();
        assert_eq!(
            partitions(Some(&job), &cursor, 0),
            vec![vec![job_feed_key(&job)]]
        );
    }
}
