//! `titus events`, `titus job watch` and the event side of `titus job wait`: reads of
//! `GET /api/v3/events`, long polls that follow its cursor.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde::Deserialize;
use titus_core::events::{Event, EventType};

use crate::client::{CliError, Client};
use crate::output::time;
use crate::Output;

/// How long one read waits for an event.
pub const WAIT_MS: u64 = 15_000;

/// The answer of `GET /api/v3/events`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventList {
    pub events: Vec<Event>,
    pub cursor: String,
    pub has_more: bool,
}

/// What to read: a job's feed or every job's, filtered.
#[derive(Debug, Clone, Default)]
pub struct Feed {
    pub job: Option<String>,
    pub owner: Option<String>,
    pub types: Vec<EventType>,
}

impl Feed {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        if let Some(job) = &self.job {
            query.push(("jobId", job.clone()));
        }
        if let Some(owner) = &self.owner {
            query.push(("owner", owner.clone()));
        }
        if !self.types.is_empty() {
            let types: Vec<&str> = self.types.iter().map(|t| t.as_str()).collect();
            query.push(("types", types.join(",")));
        }
        query
    }
}

/// Where a follow is: the cursor, and the ids already shown (an event may come twice).
pub struct Follower<'a> {
    client: &'a Client,
    feed: Feed,
    cursor: Option<String>,
    since_ms: Option<u64>,
    seen: HashSet<String>,
}

impl<'a> Follower<'a> {
    /// From `since_ms`, or from now when unset.
    pub fn new(client: &'a Client, feed: Feed, since_ms: Option<u64>) -> Follower<'a> {
        Follower {
            client,
            feed,
            cursor: None,
            since_ms,
            seen: HashSet::new(),
        }
    }

    /// The next events (none shown before), waiting up to `wait_ms` for one; with `has_more`.
    pub async fn next(&mut self, wait_ms: u64) -> Result<(Vec<Event>, bool), CliError> {
        let mut query = self.feed.query();
        query.push(("waitMs", wait_ms.to_string()));
        match (&self.cursor, self.since_ms) {
            (Some(cursor), _) => query.push(("cursor", cursor.clone())),
            (None, Some(since)) => query.push(("sinceMs", since.to_string())),
            (None, None) => {}
        }
        let page: EventList = self.client.get("/api/v3/events", &query).await?;
        self.cursor = Some(page.cursor);
        let fresh = page
            .events
            .into_iter()
            .filter(|e| self.seen.insert(e.id.clone()))
            .collect();
        Ok((fresh, page.has_more))
    }
}

/// A duration such as `90s`, `10m`, `1h30m` or `2d`, in milliseconds.
pub fn duration_ms(text: &str) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1_000,
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => 86_400_000,
            _ => return None,
        };
        let n: u64 = number.parse().ok()?;
        total = total.checked_add(n.checked_mul(unit)?)?;
        number.clear();
    }
    number.is_empty().then_some(total)
}

fn print_event(output: Output, event: &Event) -> Result<(), CliError> {
    match output {
        Output::Json => {
            let line = serde_json::to_string(event)
                .map_err(|e| CliError::Unavailable(format!("cannot print an event: {e}")))?;
            println!("{line}");
        }
        Output::Table => {
            let what = match (&event.state, &event.capacity, &event.placement) {
                (Some(state), _, _) => state.clone(),
                (_, Some(c), _) => format!("min {} desired {} max {}", c.min, c.desired, c.max),
                (_, _, Some(p)) => format!("{} tasks fit nowhere", p.unplaced_tasks),
                _ => String::new(),
            };
            let why = match &event.placement {
                Some(p) => p.reasons.join("; "),
                None => [event.reason_code.clone(), event.reason_message.clone()]
                    .into_iter()
                    .flatten()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(": "),
            };
            let subject = match (&event.task_id, &event.job_id, &event.agent_id) {
                (Some(task), _, _) => format!("task {task}"),
                (None, Some(job), _) => format!("job {job}"),
                (None, None, Some(agent)) => format!("agent {agent}"),
                (None, None, None) => String::new(),
            };
            let line = format!(
                "{}  {:<19}  {subject:<41}  {what:<14}  {why}",
                time(event.timestamp_ms),
                event.kind.as_str()
            );
            println!("{}", line.trim_end());
        }
    }
    Ok(())
}

/// `titus events` and `titus job watch`: prints the feed's events; with `follow`, waits for
/// more until `until` says an event ends it, or Ctrl-C.
pub async fn show(
    client: &Client,
    feed: Feed,
    since_ms: Option<u64>,
    follow: bool,
    output: Output,
    until: impl Fn(&Event) -> bool,
) -> Result<(), CliError> {
    let mut follower = Follower::new(client, feed, since_ms);
    loop {
        let wait = if follow { WAIT_MS } else { 0 };
        let next = tokio::select! {
            next = follower.next(wait) => next?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let (events, has_more) = next;
        for event in &events {
            print_event(output, event)?;
            if until(event) {
                return Ok(());
            }
        }
        if !follow && !has_more {
            return Ok(());
        }
    }
}

/// Waits for the job's next event, up to `deadline`: true if one came (or the feed is missing
/// and the caller should look again anyway), false at the deadline.
pub async fn next_change(follower: &mut Follower<'_>, deadline: Instant) -> Result<bool, CliError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Ok(false);
    }
    let wait = left.min(Duration::from_millis(WAIT_MS)).as_millis() as u64;
    let (events, has_more) = follower.next(wait).await?;
    Ok(!events.is_empty() || has_more)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_read_in_their_units_and_anything_else_is_refused() {
        assert_eq!(duration_ms("90s"), Some(90_000));
        assert_eq!(duration_ms("1h30m"), Some(5_400_000));
        assert_eq!(duration_ms("2d"), Some(172_800_000));
        for bad in ["", "10", "m", "1x", "1h30", "-1m"] {
            assert_eq!(duration_ms(bad), None, "{bad:?}");
        }
    }
}
