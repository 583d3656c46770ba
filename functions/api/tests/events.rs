//! `GET /api/v3/events` against the emulator, fed the way the local stack feeds it: the jobs',
//! tasks', placement results' and agents' DynamoDB streams followed into the events table and onto the
//! stage's EventBridge bus, whose rule here forwards to an SQS queue the test reads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{json, Value};
use support::{batch, Api, ALICE};
use tokio_util::sync::CancellationToken;

/// Starts the stream follower over the API's stage and waits until it reads its streams.
async fn follow(api: &Api) -> CancellationToken {
    let stop = CancellationToken::new();
    let (ready, following) = tokio::sync::oneshot::channel();
    let (cp, names, stopped) = (api.control.clone(), api.names.clone(), stop.clone());
    tokio::spawn(async move {
        let config = titus_aws::clients::local_emulator_config().await;
        titus_app::streams::serve_events(cp, &config, &names, ready, stopped)
            .await
            .expect("following the streams");
    });
    tokio::time::timeout(Duration::from_secs(30), following)
        .await
        .expect("the follower starts")
        .expect("the follower starts");
    stop
}

/// Reads the feed until `done` says the events so far are enough, following the cursor.
async fn read_until(
    api: &Api,
    query: &str,
    since_ms: u64,
    done: impl Fn(&[Value]) -> bool,
) -> (Vec<Value>, String) {
    let mut events = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..30 {
        let uri = match &cursor {
            Some(c) => format!("/api/v3/events?{query}&waitMs=2000&cursor={c}"),
            None => format!("/api/v3/events?{query}&waitMs=2000&sinceMs={since_ms}"),
        };
        let reply = api.get(&uri, ALICE).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        // At least once: an event written again (its write landed late) has the same id.
        for event in reply.json["events"].as_array().unwrap() {
            if !events.iter().any(|e: &Value| e["id"] == event["id"]) {
                events.push(event.clone());
            }
        }
        cursor = Some(reply.json["cursor"].as_str().unwrap().to_owned());
        if done(&events) {
            break;
        }
    }
    (events, cursor.unwrap())
}

fn states(events: &[Value], kind: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == kind)
        .map(|e| e["state"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn a_jobs_changes_reach_its_feed_every_jobs_feed_and_the_bus_in_order() {
    let api = Api::new().await;
    let config = titus_aws::clients::local_emulator_config().await;
    let bus = aws_sdk_eventbridge::Client::new(&config);
    let stop = follow(&api).await;
    // A rule on the stage's bus forwarding everything of Titus to a queue.
    let queue = format!("{}-bus-copy", api.names.stage());
    let queue_url = api
        .clients
        .sqs
        .create_queue()
        .queue_name(&queue)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let queue_arn = format!("arn:aws:sqs:us-east-1:123456789012:{queue}");
    bus.put_rule()
        .name("all-titus")
        .event_bus_name(api.names.event_bus())
        .event_pattern(json!({"source": ["titus"]}).to_string())
        .send()
        .await
        .unwrap();
    bus.put_targets()
        .rule("all-titus")
        .event_bus_name(api.names.event_bus())
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("queue")
                .arn(&queue_arn)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    let since = titus_core::ports::now_ms();
    let created = api.post_json("/api/v3/jobs", ALICE, &batch(2)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let job_id = created.json["id"].as_str().unwrap().to_owned();
    // The scheduler's materializing writes the tasks; a kill moves the job and its tasks on.
    titus_control::materialize::materialize_job(
        &api.control,
        &titus_core::JobId::from_string(job_id.clone()),
    )
    .await
    .unwrap();
    let killed = api.delete(&format!("/api/v3/jobs/{job_id}"), ALICE).await;
    assert!(killed.status.is_success(), "{}", killed.text);

    let (events, cursor) = read_until(&api, &format!("jobId={job_id}"), since, |events| {
        states(events, "JobStateChange").contains(&"Finished".to_owned())
            && states(events, "TaskStateChange")
                .iter()
                .filter(|s| *s == "Finished")
                .count()
                == 2
    })
    .await;
    let job_states = states(&events, "JobStateChange");
    assert_eq!(
        job_states.first().map(String::as_str),
        Some("Accepted"),
        "{events:#?}"
    );
    assert_eq!(
        job_states.last().map(String::as_str),
        Some("Finished"),
        "{events:#?}"
    );
    let task_states = states(&events, "TaskStateChange");
    assert_eq!(
        task_states.iter().filter(|s| *s == "Accepted").count(),
        2,
        "{task_states:?}"
    );
    assert_eq!(
        task_states.iter().filter(|s| *s == "Finished").count(),
        2,
        "{task_states:?}"
    );
    assert!(events
        .iter()
        .all(|e| e["owner"] == "team@example.com" && e["jobId"] == job_id.as_str()));
    // Each task's own changes come in the order they happened.
    for task in events
        .iter()
        .filter_map(|e| e["taskId"].as_str())
        .collect::<BTreeSet<_>>()
    {
        let numbers: Vec<u64> = events
            .iter()
            .filter(|e| e["taskId"] == task)
            .map(|e| {
                e["id"]
                    .as_str()
                    .unwrap()
                    .rsplit(':')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        let mut sorted = numbers.clone();
        sorted.sort_unstable();
        assert_eq!(numbers, sorted, "task {task}'s events in order");
    }
    let ids: BTreeSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    // Read on from the cursor: nothing new, and nothing after a short wait either.
    let again = api
        .get(
            &format!("/api/v3/events?jobId={job_id}&cursor={cursor}&waitMs=300"),
            ALICE,
        )
        .await;
    assert_eq!(again.json["events"], json!([]), "{}", again.text);

    // Every job's feed, filtered by owner and type, has the job's state changes.
    let (all, _) = read_until(
        &api,
        "owner=team%40example.com&types=JobStateChange",
        since,
        |events| states(events, "JobStateChange").contains(&"Finished".to_owned()),
    )
    .await;
    assert!(all.iter().all(|e| e["type"] == "JobStateChange"));
    assert_eq!(states(&all, "JobStateChange"), job_states);

    // The bus had every event, each with its id in the detail.
    let mut on_bus = BTreeSet::new();
    for _ in 0..20 {
        let received = api
            .clients
            .sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for message in received.messages() {
            let envelope: Value = serde_json::from_str(message.body().unwrap()).unwrap();
            assert_eq!(envelope["source"], "titus");
            assert_eq!(envelope["detail-type"], envelope["detail"]["type"]);
            on_bus.insert(envelope["detail"]["id"].as_str().unwrap().to_owned());
        }
        if ids.iter().all(|id| on_bus.contains(*id)) {
            break;
        }
    }
    let missing: Vec<&&str> = ids.iter().filter(|id| !on_bus.contains(**id)).collect();
    assert!(missing.is_empty(), "not on the bus: {missing:?}");
    stop.cancel();
}

#[tokio::test]
async fn a_bad_event_query_gets_400_listing_every_problem() {
    let api = Api::new().await;
    let reply = api
        .get(
            "/api/v3/events?jobId=nope&types=JobStateChange,Bogus&limit=0&waitMs=99999&cursor=xyz",
            ALICE,
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    let fields: BTreeSet<String> = reply.json["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        fields,
        ["cursor", "jobId", "limit", "types", "waitMs"]
            .map(String::from)
            .into()
    );
    let unknown = api.get("/api/v3/events?since=1", ALICE).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    let unauthenticated = api.get("/api/v3/events", "no-such-token").await;
    assert_eq!(unauthenticated.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_agents_state_changes_reach_every_jobs_feed_and_its_other_writes_do_not() {
    use titus_core::{AgentState, AgentStore};
    let api = Api::new().await;
    let stop = follow(&api).await;
    let since = titus_core::ports::now_ms();
    let id = format!("agent-{}", uuid::Uuid::new_v4().simple());
    let agents = &api.agents;
    agents
        .register_agent(&titus_contract::fixtures::agent(&id, 4_096, since))
        .await
        .unwrap();
    // A write that is not a state change (the record's own heartbeat) is no event.
    agents.heartbeat(&id, since + 1).await.unwrap();
    agents
        .set_agent_state(&id, AgentState::Active, AgentState::Draining)
        .await
        .unwrap();
    agents
        .set_agent_state(&id, AgentState::Draining, AgentState::Lost)
        .await
        .unwrap();

    let mine = |events: &[Value]| -> Vec<Value> {
        events
            .iter()
            .filter(|e| e["agentId"] == id.as_str())
            .cloned()
            .collect()
    };
    let (events, _) = read_until(&api, "types=AgentStateChange", since, |events| {
        mine(events).iter().any(|e| e["state"] == "lost")
    })
    .await;
    let events = mine(&events);
    let states: Vec<&str> = events
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["active", "draining", "lost"], "{events:#?}");
    for event in &events {
        assert_eq!(event["type"], "AgentStateChange");
        assert!(event.get("jobId").is_none(), "{event}");
        assert!(event["id"]
            .as_str()
            .unwrap()
            .starts_with(&format!("agent:{id}:")));
    }
    assert!(
        events[2]["reasonMessage"]
            .as_str()
            .unwrap()
            .contains("agent lost (was draining)"),
        "{events:#?}"
    );
    // A reader of one owner's events is not shown agents.
    let owners = api
        .get(
            &format!(
                "/api/v3/events?owner=team%40example.com&types=AgentStateChange&sinceMs={since}"
            ),
            ALICE,
        )
        .await;
    assert_eq!(owners.status, StatusCode::OK, "{}", owners.text);
    assert_eq!(owners.json["events"], json!([]), "{}", owners.text);
    stop.cancel();
}
