//! The control plane's side of "the hosts follow the records", against the emulator: every finish
//! is sent to the agent holding the task, statuses are believed only from that agent (its
//! incarnation, and its principal when the stage names the agents' role), agents come into being
//! only through registration and are fenced when lost, and the reconciler cross-checks what each
//! agent reports running with what the records hold there.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::json;
use support::{fresh_stage, fresh_stage_with, kills, status, Stage, NOW};
use titus_control::agents::{process_requests, Outcome as RequestOutcome};
use titus_control::reconciler::reconcile;
use titus_control::status::{process_batch, Outcome};
use titus_control::InboundMessage;
use titus_core::messages::{AgentRequest, Registration, TaskStatusUpdate};
use titus_core::{
    AgentHeartbeat, AgentState, AgentStore, Resources, TaskId, TaskReason, TaskState,
};

const ROLE: &str = "AROAEXAMPLEAGENTROLE";

fn batch() -> serde_json::Value {
    json!({"batch": {"size": 1, "retryPolicy": {"immediate": {"retries": 0}}}})
}

/// One status message as SQS delivers it, sent by `sender`.
fn message(update: &TaskStatusUpdate, sender: Option<&str>) -> InboundMessage {
    InboundMessage {
        message_id: uuid::Uuid::new_v4().to_string(),
        body: serde_json::to_string(update).unwrap(),
        sender_id: sender.map(str::to_owned),
    }
}

fn registration(agent_id: &str) -> AgentRequest {
    AgentRequest::Register(Registration {
        agent_id: agent_id.to_owned(),
        registration_id: uuid::Uuid::new_v4().to_string(),
        zone: "z1".to_owned(),
        machine_type: "m5.large".to_owned(),
        machine_group: "default".to_owned(),
        capacity: Resources {
            cpu_millis: 4_000,
            memory_mb: 8_192,
            disk_mb: 100_000,
            network_mbps: 1_000,
            gpu: 0,
        },
        at_ms: NOW,
        task_logs: None,
    })
}

async fn request(stage: &Stage, request: &AgentRequest, sender: Option<&str>) -> RequestOutcome {
    let message = InboundMessage {
        message_id: uuid::Uuid::new_v4().to_string(),
        body: serde_json::to_string(request).unwrap(),
        sender_id: sender.map(str::to_owned),
    };
    process_requests(&stage.ctx, vec![message], NOW)
        .await
        .remove(0)
        .1
}

fn heartbeat(at_ms: u64, running: &[&TaskId]) -> AgentHeartbeat {
    AgentHeartbeat {
        at_ms,
        running_task_ids: running.iter().map(|id| (*id).clone()).collect(),
        used: Resources::ZERO,
    }
}

#[tokio::test]
async fn a_task_finished_as_stuck_is_killed_on_its_agent() {
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", NOW).await;
    let job = stage.job(batch()).await;
    let task = stage.place(&stage.tasks(&job).await[0], &agent, NOW).await;

    let summary = reconcile(&stage.ctx, NOW + 1_000).await.unwrap();

    assert_eq!(summary.stuck_tasks_finished, 1);
    assert_eq!(stage.task(&task.id).await.state(), TaskState::Finished);
    let sent = kills(&stage.commands(&agent).await);
    assert!(
        sent.iter().any(|(id, _)| *id == task.id),
        "the agent is told to stop the container: {sent:?}"
    );
}

#[tokio::test]
async fn a_started_that_arrives_after_the_records_finished_the_task_makes_its_agent_stop_it() {
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", NOW).await;
    let job = stage.job(batch()).await;
    let task = stage.place(&stage.tasks(&job).await[0], &agent, NOW).await;
    reconcile(&stage.ctx, NOW + 1_000).await.unwrap();
    stage.commands(&agent).await;

    // The launch was slow: the container starts after its task was finished as stuck.
    let late = stage.report(&task, TaskState::Started, NOW + 1_500).await;

    assert_eq!(late, Outcome::Duplicate);
    assert_eq!(stage.task(&task.id).await.state(), TaskState::Finished);
    let sent = kills(&stage.commands(&agent).await);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, task.id);
}

#[tokio::test]
async fn a_status_from_another_incarnation_of_its_agent_is_dead_lettered_and_changes_nothing() {
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", NOW).await;
    let job = stage.job(batch()).await;
    let task = stage.run(&stage.tasks(&job).await[0], &agent, NOW).await;
    let from_another_life = TaskStatusUpdate {
        incarnation: agent.incarnation + 1,
        reason: Some(TaskReason::Failed),
        exit_code: Some(1),
        ..status(&task, TaskState::Finished, NOW + 10)
    };

    let outcome = stage.send(&[from_another_life], NOW + 10).await.remove(0);

    assert!(
        matches!(&outcome, Outcome::DeadLettered { reason }
            if reason.contains("(incarnation 2)") && reason.contains("(incarnation 1)")),
        "{outcome:?}"
    );
    assert_eq!(stage.task(&task.id).await, task);
    assert_eq!(stage.get_agent("a1").await.task_count, 1);
}

#[tokio::test]
async fn an_agent_that_says_it_runs_a_task_held_elsewhere_is_told_to_stop_it() {
    let stage = fresh_stage().await;
    let a1 = stage.agent("a1", NOW).await;
    let a2 = stage.agent("a2", NOW).await;
    let job = stage.job(batch()).await;
    let task = stage.run(&stage.tasks(&job).await[0], &a1, NOW).await;
    stage.commands(&a1).await;
    let from_a2 = TaskStatusUpdate {
        agent_id: "a2".to_owned(),
        ..status(&task, TaskState::Started, NOW + 10)
    };

    let outcome = stage.send(&[from_a2], NOW + 10).await.remove(0);

    assert!(
        matches!(&outcome, Outcome::DeadLettered { .. }),
        "{outcome:?}"
    );
    assert_eq!(
        stage.task(&task.id).await,
        task,
        "the holder's task is untouched"
    );
    assert_eq!(
        kills(&stage.commands(&a2).await)
            .into_iter()
            .map(|(id, _)| id)
            .collect::<Vec<_>>(),
        vec![task.id.clone()]
    );
    assert!(
        stage.commands(&a1).await.is_empty(),
        "the holder is not told anything"
    );
}

#[tokio::test]
async fn a_status_whose_sqs_sender_is_not_its_agent_is_dead_lettered() {
    let stage = fresh_stage_with(|rules| rules.agent_role_id = ROLE.to_owned()).await;
    let agent = stage.agent("a1", NOW).await;
    let job = stage.job(batch()).await;
    let task = stage.place(&stage.tasks(&job).await[0], &agent, NOW).await;
    let started = status(&task, TaskState::Started, NOW + 10);

    let forged = process_batch(
        &stage.ctx,
        vec![
            message(&started, Some(&format!("{ROLE}:a2"))),
            message(&started, None),
        ],
        NOW + 10,
    )
    .await;
    let unchanged = stage.task(&task.id).await;
    let genuine = process_batch(
        &stage.ctx,
        vec![message(&started, Some(&format!("{ROLE}:a1")))],
        NOW + 10,
    )
    .await;

    for (_, outcome) in &forged {
        assert!(
            matches!(outcome, Outcome::DeadLettered { reason }
                if reason.contains(&format!("expected the sender \"{ROLE}:a1\""))),
            "{outcome:?}"
        );
    }
    assert_eq!(unchanged.state(), TaskState::Launched);
    assert!(
        matches!(
            genuine[0].1,
            Outcome::Applied {
                to: TaskState::Started,
                ..
            }
        ),
        "{genuine:?}"
    );
    assert_eq!(stage.task(&task.id).await.state(), TaskState::Started);
}

#[tokio::test]
async fn an_agent_comes_into_being_only_through_its_registration_with_a_queue_named_after_it() {
    let stage = fresh_stage_with(|rules| rules.agent_role_id = ROLE.to_owned()).await;

    let forged = request(&stage, &registration("a9"), Some(&format!("{ROLE}:a8"))).await;
    let none_yet = stage.agents.get_agent("a9").await.unwrap();
    let genuine = request(&stage, &registration("a9"), Some(&format!("{ROLE}:a9"))).await;

    assert!(
        matches!(&forged, RequestOutcome::DeadLettered { reason } if reason.contains("is not agent \"a9\"")),
        "{forged:?}"
    );
    assert_eq!(none_yet, None);
    assert_eq!(genuine, RequestOutcome::Applied);
    let record = stage.get_agent("a9").await;
    assert_eq!((record.state, record.incarnation), (AgentState::Active, 1));
    assert_eq!(record.principal, format!("{ROLE}:a9"));
    let queue = stage
        .clients
        .sqs
        .get_queue_url()
        .queue_name(stage.names.agent_queue("a9"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    assert_eq!(record.queue_url, queue);
}

#[tokio::test]
async fn a_lost_agent_registers_again_as_its_next_incarnation_only_once_its_tasks_are_finished() {
    let stage = fresh_stage().await;
    assert_eq!(
        request(&stage, &registration("a1"), None).await,
        RequestOutcome::Applied
    );
    let agent = stage.get_agent("a1").await;
    let job = stage.job(batch()).await;
    let task = stage.run(&stage.tasks(&job).await[0], &agent, NOW).await;
    stage
        .agents
        .set_agent_state("a1", AgentState::Active, AgentState::Lost)
        .await
        .unwrap();

    let too_soon = request(&stage, &registration("a1"), None).await;
    let still_lost = stage.get_agent("a1").await;
    // The reconciler finishes the lost agent's tasks (and tells it to stop them).
    reconcile(&stage.ctx, NOW + 100).await.unwrap();
    let again = request(&stage, &registration("a1"), None).await;

    assert!(
        matches!(too_soon, RequestOutcome::Deferred { .. }),
        "{too_soon:?}"
    );
    assert_eq!(
        (still_lost.state, still_lost.incarnation),
        (AgentState::Lost, 1)
    );
    assert_eq!(
        stage.task(&task.id).await.status.reason_code,
        Some(TaskReason::Lost)
    );
    assert_eq!(again, RequestOutcome::Applied);
    let record = stage.get_agent("a1").await;
    assert_eq!(
        (record.state, record.incarnation, record.task_count),
        (AgentState::Active, 2, 0)
    );
}

#[tokio::test]
async fn a_container_an_agent_reports_but_the_records_do_not_hold_there_is_killed_with_backoff() {
    let stage = fresh_stage().await;
    let agent = stage.agent("a1", NOW).await;
    let ghost = TaskId::from_string("ghost-task");
    stage
        .agents
        .report_heartbeat("a1", &heartbeat(NOW + 1, &[&ghost]))
        .await
        .unwrap();
    let backoff = stage.ctx.settings.rules.stray_kill_backoff_ms;

    let mut sent = Vec::new();
    for at in [
        NOW + 10,
        NOW + 10 + backoff,
        NOW + 20 + backoff,
        NOW + 10 + 3 * backoff,
    ] {
        let summary = reconcile(&stage.ctx, at).await.unwrap();
        sent.push(summary.stray_kills_sent);
    }

    assert_eq!(
        sent,
        vec![0, 1, 0, 1],
        "one back-off after it is first seen, then a doubling one"
    );
    let commands = kills(&stage.commands(&agent).await);
    assert_eq!(commands.len(), 2, "{commands:?}");
    assert!(commands.iter().all(|(id, _)| *id == ghost));
}

#[tokio::test]
async fn a_started_task_its_agent_no_longer_reports_is_finished_lost_and_replaced() {
    let stage = fresh_stage_with(|rules| rules.unreported_task_timeout_ms = 5_000).await;
    let agent = stage.agent("a1", NOW).await;
    let job = stage
        .job(
            json!({"service": {"capacity": {"min": 0, "desired": 1, "max": 1},
            "retryPolicy": {"immediate": {"retries": 3}}}}),
        )
        .await;
    let task = stage.run(&stage.tasks(&job).await[0], &agent, NOW).await;
    stage
        .agents
        .report_heartbeat("a1", &heartbeat(NOW + 100, &[]))
        .await
        .unwrap();

    let first = reconcile(&stage.ctx, NOW + 200).await.unwrap();
    stage
        .agents
        .report_heartbeat("a1", &heartbeat(NOW + 5_000, &[]))
        .await
        .unwrap();
    let later = reconcile(&stage.ctx, NOW + 5_200).await.unwrap();

    assert_eq!(first.unreported_tasks_finished, 0, "not at once");
    assert_eq!(later.unreported_tasks_finished, 1);
    let finished = stage.task(&task.id).await;
    assert_eq!(finished.state(), TaskState::Finished);
    assert_eq!(finished.status.reason_code, Some(TaskReason::Lost));
    let live = stage.live(&job).await;
    assert_eq!(live.len(), 1, "replaced: {live:?}");
    assert_ne!(live[0].id, task.id);
    assert_eq!(stage.get_agent("a1").await.task_count, 0, "released");
}
