//! The stage queues every side writes to: status updates from the agents, dead letters with
//! their reasons, refused submissions, and the agents' requests about their own records.

use titus_core::messages::{AgentRequest, Registration, Rejection, TaskStatusUpdate};
use titus_core::ports::{AgentRequestSink, DeadLetter, DeadLetterSink, RejectionSink, StatusSink};
use titus_core::{FieldError, JobId, Ports, TaskId, TaskState};

use crate::fixtures::{capacity, NOW_MS};
use crate::{Fixture, Harness};

fn update(task: &str, state: TaskState, at_ms: u64) -> TaskStatusUpdate {
    TaskStatusUpdate {
        task_id: TaskId::from_string(task),
        job_id: JobId::from_string("job-1"),
        agent_id: "a1".to_owned(),
        incarnation: 1,
        state,
        reason: None,
        message: "container started".to_owned(),
        timestamp_ms: at_ms,
        exit_code: None,
        oom_killed: false,
        container_id: Some(format!("c-{task}")),
    }
}

pub async fn status_updates_reach_the_status_queue_each_accepted<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let sink = fx.status_sink().await;
    let updates = vec![
        update("t1", TaskState::StartInitiated, NOW_MS),
        update("t1", TaskState::Started, NOW_MS + 1),
        update("t2", TaskState::Started, NOW_MS + 2),
    ];

    let accepted = sink.send(&updates).await.unwrap();
    let mut received = fx.drain_status_updates().await;

    assert_eq!(accepted, vec![true, true, true]);
    received.sort_by_key(|u| u.timestamp_ms);
    assert_eq!(received, updates);
}

pub async fn a_dead_letter_keeps_its_body_reason_and_source_message_id<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let sink = fx.ports().dead_letters();
    let malformed = DeadLetter {
        message_id: "m-1".to_owned(),
        body: "{not json".to_owned(),
        reason: "not a task status update: expected JSON".to_owned(),
        dead_lettered_at_ms: NOW_MS,
    };
    let empty = DeadLetter {
        message_id: "m-2".to_owned(),
        body: String::new(),
        reason: "x".repeat(1_500),
        dead_lettered_at_ms: NOW_MS + 1,
    };

    sink.send(&malformed).await.unwrap();
    sink.send(&empty).await.unwrap();
    let mut kept = fx.drain_dead_letters().await;
    kept.sort_by(|a, b| a.message_id.cmp(&b.message_id));

    assert_eq!(kept.len(), 2, "{kept:?}");
    assert_eq!(kept[0], malformed);
    assert_eq!(kept[1].message_id, "m-2");
    assert!(
        !kept[1].body.is_empty(),
        "an empty body is kept as a placeholder"
    );
    assert_eq!(
        kept[1].reason.chars().count(),
        1_000,
        "a long reason is cut to fit"
    );
    assert_eq!(kept[1].dead_lettered_at_ms, NOW_MS + 1);
}

pub async fn a_rejection_is_kept_with_its_reason_and_errors<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let rejection = Rejection {
        message_id: "m-9".to_owned(),
        client_token: Some("token-1".to_owned()),
        rejected_at_ms: NOW_MS,
        reason: "invalid".to_owned(),
        errors: vec![FieldError {
            field: "container.image.name".to_owned(),
            message: "is empty; expected an image name".to_owned(),
        }],
        body: "{\"applicationName\":\"a\"}".to_owned(),
        body_truncated: false,
    };

    fx.ports().rejections().reject(&rejection).await.unwrap();

    assert_eq!(fx.drain_rejections().await, vec![rejection]);
}

pub async fn agent_requests_reach_the_agent_requests_queue<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let sink = fx.agent_request_sink().await;
    let register = AgentRequest::Register(Registration {
        agent_id: "a1".to_owned(),
        registration_id: "r-1".to_owned(),
        zone: "us-east-1a".to_owned(),
        machine_type: "m5.large".to_owned(),
        machine_group: "default".to_owned(),
        capacity: capacity(8_192),
        at_ms: NOW_MS,
        task_logs: None,
    });
    let drain = AgentRequest::Drain {
        agent_id: "a2".to_owned(),
    };

    sink.send(&register).await.unwrap();
    sink.send(&drain).await.unwrap();
    let mut received = fx.drain_agent_requests().await;
    received.sort_by(|a, b| a.agent_id().cmp(b.agent_id()));

    assert_eq!(received, vec![register, drain]);
}
