//! The submit function against the emulator, fed a recorded-shape SQS event that mixes valid,
//! invalid and duplicate messages: the stored jobs, the rejection queue and the batch item
//! failures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use titus_app::lambda::{batch_response, sqs_messages};
use titus_aws::provision::provision;
use titus_aws::{aws_ports, AwsClients, AwsPorts, DynamoJobStore, Names, SqsRejectionQueue};
use titus_control::submit::{process_batch, Outcome};
use titus_control::{Admission, ControlPlane, Settings};
use titus_core::messages::Rejection;
use titus_core::ports::{JobFilter, PageRequest};
use titus_core::{JobStore, Ports};

const NOW_MS: u64 = 1_764_000_001_000;

struct Stage {
    clients: AwsClients,
    names: Names,
    store: DynamoJobStore,
    rejected_queue_url: String,
}

async fn clients() -> AwsClients {
    AwsClients::local_emulator().await
}

async fn fresh_stage() -> Stage {
    let clients = clients().await;
    let names = Names::new(&format!(
        "s{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    ))
    .unwrap();
    provision(&clients, &names.definitions()).await.unwrap();
    let rejected_queue_url = aws_ports(&clients, &names)
        .rejections
        .queue_url()
        .await
        .unwrap()
        .to_owned();
    Stage {
        store: DynamoJobStore::new(clients.dynamodb.clone(), &names),
        rejected_queue_url,
        clients,
        names,
    }
}

/// Handles one SQS batch as the submit Lambda does; the response lists what SQS must redeliver.
async fn handle_batch<P: Ports>(
    cp: &ControlPlane<P>,
    event: SqsEvent,
    now_ms: u64,
) -> SqsBatchResponse {
    batch_response(&process_batch(cp, sqs_messages(event), now_ms).await)
}

impl Stage {
    /// The control plane over the stage's ports, checking submissions against `admission`.
    fn control(&self, admission: Admission) -> ControlPlane<AwsPorts> {
        self.control_over(aws_ports(&self.clients, &self.names), admission)
    }

    fn control_over(&self, ports: AwsPorts, admission: Admission) -> ControlPlane<AwsPorts> {
        ControlPlane::new(
            ports,
            Settings {
                admission,
                ..Settings::default()
            },
        )
    }

    async fn jobs(&self) -> Vec<titus_core::Job> {
        self.store
            .list_jobs(&JobFilter::default(), &PageRequest::first(100))
            .await
            .unwrap()
            .items
    }

    async fn rejected(&self) -> Vec<Rejection> {
        let mut rejections = Vec::new();
        loop {
            let out = self
                .clients
                .sqs
                .receive_message()
                .queue_url(&self.rejected_queue_url)
                .max_number_of_messages(10)
                .send()
                .await
                .unwrap();
            let messages = out.messages.unwrap_or_default();
            if messages.is_empty() {
                rejections.sort_by(|a: &Rejection, b| a.message_id.cmp(&b.message_id));
                return rejections;
            }
            for message in messages {
                rejections.push(serde_json::from_str(message.body().unwrap()).unwrap());
                self.clients
                    .sqs
                    .delete_message()
                    .queue_url(&self.rejected_queue_url)
                    .receipt_handle(message.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
    }
}

/// The recorded batch's producer, `sqs:AIDAEXAMPLEPRODUCER`, in the team its jobs name.
fn producer_admission() -> Admission {
    Admission {
        teams: titus_control::Teams::default()
            .with("sqs:AIDAEXAMPLEPRODUCER", &["team@example.com"]),
        ..Admission::default()
    }
}

fn recorded_batch() -> SqsEvent {
    let path = format!(
        "{}/tests/data/sqs-submit-batch.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn id(n: u32) -> String {
    format!("0a6d2c4e-5f1b-4d8e-9c3a-1b2e3f4a5b{n:02}")
}

#[tokio::test]
async fn a_mixed_batch_stores_the_valid_once_and_rejects_the_invalid_with_their_errors() {
    let stage = fresh_stage().await;
    let admission = producer_admission();

    let outcomes = process_batch(
        &stage.control(admission),
        sqs_messages(recorded_batch()),
        NOW_MS,
    )
    .await;

    let Outcome::Stored {
        job_id: plain,
        created: true,
    } = &outcomes[0].1
    else {
        panic!("{outcomes:?}")
    };
    let Outcome::Stored {
        job_id: by_token,
        created: true,
    } = &outcomes[1].1
    else {
        panic!("{outcomes:?}")
    };
    assert_eq!(
        outcomes[2].1,
        Outcome::Stored {
            job_id: by_token.clone(),
            created: false
        },
        "the same client token is the same job"
    );
    assert_eq!(outcomes[3].1, Outcome::Rejected);
    assert_eq!(outcomes[4].1, Outcome::Rejected);
    assert_eq!(
        outcomes[5].1,
        Outcome::Rejected,
        "token reused for another descriptor"
    );
    let ids: Vec<&str> = outcomes.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, (1..=6).map(id).collect::<Vec<_>>());

    let jobs = stage.jobs().await;
    assert_eq!(
        jobs.iter()
            .map(|j| j.id.to_string())
            .collect::<HashSet<_>>(),
        HashSet::from([plain.clone(), by_token.clone()])
    );
    assert!(jobs
        .iter()
        .all(|j| j.created_by == "sqs:AIDAEXAMPLEPRODUCER"));

    let rejected = stage.rejected().await;
    assert_eq!(
        rejected
            .iter()
            .map(|r| r.message_id.clone())
            .collect::<Vec<_>>(),
        [id(4), id(5), id(6)]
    );
    let invalid = &rejected[0];
    assert_eq!(invalid.reason, "invalid");
    let fields: HashSet<&str> = invalid.errors.iter().map(|e| e.field.as_str()).collect();
    assert!(fields.contains("container.resources.cpu"), "{fields:?}");
    assert!(fields.contains("container.privileged"), "{fields:?}");
    assert!(
        invalid.body.contains("\"privileged\": true"),
        "the original body is kept"
    );
    assert_eq!(invalid.rejected_at_ms, NOW_MS);
    assert!(
        rejected[1].errors[0].message.contains("not valid JSON"),
        "{:?}",
        rejected[1]
    );
    assert_eq!(rejected[1].body, "run busybox please");
    assert_eq!(rejected[2].reason, "idempotencyMismatch");
    assert_eq!(rejected[2].client_token.as_deref(), Some("order-7731"));
}

#[tokio::test]
async fn a_redelivered_batch_stores_nothing_twice_and_reports_no_failures() {
    let stage = fresh_stage().await;
    let admission = producer_admission();
    handle_batch(&stage.control(admission.clone()), recorded_batch(), NOW_MS).await;
    let first_jobs = stage.jobs().await;
    stage.rejected().await;

    let response = handle_batch(
        &stage.control(admission.clone()),
        recorded_batch(),
        NOW_MS + 60_000,
    )
    .await;

    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    assert_eq!(
        stage.jobs().await,
        first_jobs,
        "no new job, nothing changed"
    );
    assert_eq!(
        stage.rejected().await.len(),
        3,
        "refusals are reported again: the producer may not have seen the first ones"
    );
}

#[tokio::test]
async fn a_store_failure_is_a_batch_item_failure_for_sqs_to_redeliver() {
    let stage = fresh_stage().await;
    // The job tables of another, never provisioned stage: every write fails inside DynamoDB.
    let missing = Names::new(&format!(
        "m{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    ))
    .unwrap();
    let mut ports = aws_ports(&stage.clients, &stage.names);
    ports.jobs = DynamoJobStore::new(stage.clients.dynamodb.clone(), &missing);

    let response = handle_batch(
        &stage.control_over(ports, producer_admission()),
        recorded_batch(),
        NOW_MS,
    )
    .await;

    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(
        failed.len(),
        4,
        "every message that needed the store: {failed:?}"
    );
    for n in [1, 2, 3, 6] {
        assert!(
            failed.contains(&id(n).as_str()),
            "{n} not redelivered: {failed:?}"
        );
    }
    assert_eq!(
        stage.rejected().await.len(),
        2,
        "the invalid ones need no store and were rejected"
    );
    let json = serde_json::to_value(&response).unwrap();
    assert_eq!(
        json["batchItemFailures"][0]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["itemIdentifier"],
        "the shape Lambda's ReportBatchItemFailures reads"
    );
    let _ = stage.names;
}

#[tokio::test]
async fn a_rejection_that_cannot_be_sent_is_redelivered_rather_than_dropped() {
    let stage = fresh_stage().await;
    let mut ports = aws_ports(&stage.clients, &stage.names);
    ports.rejections = SqsRejectionQueue::new(
        stage.clients.sqs.clone(),
        format!("{}-gone", stage.rejected_queue_url),
    );

    let response = handle_batch(
        &stage.control_over(ports, producer_admission()),
        recorded_batch(),
        NOW_MS,
    )
    .await;

    let failed: HashSet<String> = response
        .batch_item_failures
        .into_iter()
        .map(|f| f.item_identifier)
        .collect();
    assert_eq!(failed, HashSet::from([id(4), id(5), id(6)]));
    assert_eq!(stage.jobs().await.len(), 2);
}

#[tokio::test]
async fn the_policy_applies_to_submissions_too() {
    let stage = fresh_stage().await;
    let admission = Admission {
        policy: titus_control::JobPolicy {
            registries: vec!["registry.example.com".to_owned()],
            ..titus_control::JobPolicy::default()
        },
        ..producer_admission()
    };

    let outcomes = process_batch(
        &stage.control(admission),
        sqs_messages(recorded_batch()),
        NOW_MS,
    )
    .await;

    assert!(
        outcomes.iter().all(|(_, o)| *o == Outcome::Rejected),
        "{outcomes:?}"
    );
    assert!(stage.jobs().await.is_empty());
    let rejected = stage.rejected().await;
    assert_eq!(rejected.len(), 6);
    assert_eq!(
        rejected[1].errors[0].field,
        "jobDescriptor.container.image.name"
    );
}

#[tokio::test]
async fn quotas_apply_to_submissions_and_what_does_not_fit_is_rejected_with_the_quota() {
    let stage = fresh_stage().await;
    let admission = Admission {
        quotas: serde_json::from_value(serde_json::json!({
            "teams": {"team@example.com": {"jobs": 1}}
        }))
        .unwrap(),
        ..producer_admission()
    };
    let unlimited = stage.control(producer_admission());
    let mut everything = process_batch(&unlimited, sqs_messages(recorded_batch()), NOW_MS).await;
    // Two deliveries of one client token racing may cancel each other's transaction (retried
    // by SQS): deliver the batch again, as SQS would, until nothing fails.
    for _ in 0..3 {
        if everything.iter().all(|(_, o)| *o != Outcome::Failed) {
            break;
        }
        everything = process_batch(&unlimited, sqs_messages(recorded_batch()), NOW_MS).await;
    }
    // Without the quota, the batch makes two jobs (one of them sent twice with its client token).
    assert_eq!(stage.jobs().await.len(), 2, "{everything:?}");
    // The messages that make a job: those stored, and those that lost the race for a client
    // token to another body (the batch's messages are handled concurrently, so which of the
    // token's bodies wins differs from one delivery to the next).
    let mut storing: HashSet<String> = everything
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Stored { .. }))
        .map(|(id, _)| id.clone())
        .collect();
    storing.extend(
        stage
            .rejected()
            .await
            .into_iter()
            .filter(|r| r.reason == "idempotencyMismatch")
            .map(|r| r.message_id),
    );

    let stage = fresh_stage().await;
    let control = stage.control(admission);
    let mut outcomes = process_batch(&control, sqs_messages(recorded_batch()), NOW_MS).await;
    // Two creates racing on one usage record may cancel each other's transaction (retried by
    // SQS): deliver the batch again, as SQS would, until nothing fails.
    for _ in 0..3 {
        if outcomes.iter().all(|(_, o)| *o != Outcome::Failed) {
            break;
        }
        outcomes = process_batch(&control, sqs_messages(recorded_batch()), NOW_MS).await;
    }

    assert_eq!(stage.jobs().await.len(), 1, "{outcomes:?}");
    // Read once: reading the rejection queue hides what it read.
    let rejected = stage.rejected().await;
    let mut over: Vec<_> = rejected
        .iter()
        .filter(|r| r.reason == "quotaExceeded")
        .cloned()
        .collect();
    over.sort_by(|a, b| a.message_id.cmp(&b.message_id));
    over.dedup_by(|a, b| a.message_id == b.message_id);
    // The job that lost is rejected as often as it was sent (once, or twice with its token).
    assert!(!over.is_empty(), "the second job is rejected: {outcomes:?}");
    assert!(
        over.iter().all(|r| storing.contains(&r.message_id)),
        "only valid jobs are over quota: {over:?}"
    );
    // Every message that makes a job is now stored, over quota, or lost its token's race.
    let mut accounted: HashSet<String> = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Stored { .. }))
        .map(|(id, _)| id.clone())
        .collect();
    accounted.extend(over.iter().map(|r| r.message_id.clone()));
    accounted.extend(
        rejected
            .iter()
            .filter(|r| r.reason == "idempotencyMismatch")
            .map(|r| r.message_id.clone()),
    );
    assert_eq!(accounted, storing, "{outcomes:?}");
    assert_eq!(over[0].errors[0].field, "quota");
    assert!(
        over[0].errors[0]
            .message
            .contains("the jobs quota of team team@example.com is 1, 1 in use"),
        "{:?}",
        over[0].errors
    );
    assert!(
        !over[0].body.is_empty(),
        "the body is kept for a resubmission"
    );
}

/// The recorded batch as `sender` sent it.
fn batch_from(sender: &str) -> SqsEvent {
    let mut event = recorded_batch();
    for record in &mut event.records {
        record
            .attributes
            .insert("SenderId".to_owned(), sender.to_owned());
    }
    event
}

#[tokio::test]
async fn producers_submit_only_for_their_teams_and_their_client_tokens_are_their_own() {
    let stage = fresh_stage().await;
    let admission = Admission {
        teams: producer_admission()
            .teams
            .with("sqs:AIDASECONDPRODUCER", &["team@example.com"]),
        ..Admission::default()
    };
    let cp = stage.control(admission);

    let first = process_batch(&cp, sqs_messages(recorded_batch()), NOW_MS).await;
    let outsider = process_batch(&cp, sqs_messages(batch_from("AIDAOUTSIDER")), NOW_MS).await;
    // The same messages (and client tokens) from a second producer of the team: its own jobs.
    let mut second_batch = batch_from("AIDASECONDPRODUCER");
    for record in &mut second_batch.records {
        record.message_id = record.message_id.as_ref().map(|m| format!("{m}-second"));
    }
    let second = process_batch(&cp, sqs_messages(second_batch), NOW_MS).await;

    let token_job = |outcomes: &[(String, Outcome)]| match &outcomes[1].1 {
        Outcome::Stored { job_id, created } => (job_id.clone(), *created),
        other => panic!("{other:?}"),
    };
    let (first_token_job, _) = token_job(&first);
    let (second_token_job, second_created) = token_job(&second);
    assert_ne!(
        first_token_job, second_token_job,
        "a client token answers only its own producer"
    );
    assert!(second_created);
    assert!(
        outsider.iter().all(|(_, o)| *o == Outcome::Rejected),
        "{outsider:?}"
    );
    let rejected = stage.rejected().await;
    let forbidden: Vec<&Rejection> = rejected
        .iter()
        .filter(|r| r.reason == "forbidden")
        .collect();
    // The outsider's four valid descriptors are refused for the team; its two invalid ones as
    // invalid, as every producer's are.
    assert_eq!(forbidden.len(), 4, "{rejected:?}");
    assert_eq!(forbidden[0].errors[0].field, "owner.teamEmail");
    assert_eq!(
        forbidden[1].errors[0].field,
        "jobDescriptor.owner.teamEmail"
    );
    assert!(
        forbidden[0].errors[0]
            .message
            .contains("\"team@example.com\""),
        "{:?}",
        forbidden[0].errors
    );
    let jobs = stage.jobs().await;
    assert_eq!(jobs.len(), 4, "two jobs of each producer of the team");
    assert!(jobs.iter().all(|j| j.created_by != "sqs:AIDAOUTSIDER"));
}
