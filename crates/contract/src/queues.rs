//! Agents' command queues: derived from the agent's id and created at registration; batches;
//! and the agent's side: a received message hidden for its visibility timeout, deleted,
//! released or extended by its receipt, redelivered with one more receive, and moved to the
//! dead-letter queue after too many.

use std::collections::BTreeSet;
use std::time::Duration;

use titus_core::messages::{AgentCommand, KillTask};
use titus_core::ports::{CommandQueue, CommandSource, QueueError, ReceivedMessage};
use titus_core::{Ports, TaskId, TaskReason};

use crate::{Fixture, Harness};

fn kill(task: &str) -> AgentCommand {
    AgentCommand::KillTask(KillTask {
        task_id: TaskId::from_string(task),
        reason: TaskReason::Killed,
        grace_period_sec: 10,
    })
}

fn task_of(message: &ReceivedMessage) -> String {
    let command: AgentCommand = serde_json::from_str(&message.body).unwrap();
    command.task_id().to_string()
}

/// An agent with a queue and one command on it, received once: the fixture, the agent's
/// source and the receive.
async fn received_once<H: Harness>(
    h: &H,
) -> (H::Fixture, <H::Fixture as Fixture>::Source, ReceivedMessage) {
    let fx = h.fresh().await;
    fx.ports()
        .commands()
        .ensure_agent_queue("a1")
        .await
        .unwrap();
    let failures = fx
        .ports()
        .commands()
        .send_commands("a1", &[kill("t1")])
        .await
        .unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    let source = fx.command_source("a1").await;
    let mut first = source.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(first.len(), 1, "{first:?}");
    let first = first.remove(0);
    assert_eq!((task_of(&first), first.receive_count), ("t1".to_owned(), 1));
    (fx, source, first)
}

pub async fn sending_to_an_agent_without_a_queue_is_no_such_queue<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    fx.ports()
        .commands()
        .ensure_agent_queue("a1")
        .await
        .unwrap();

    let err = fx
        .ports()
        .commands()
        .send_commands("never-registered", &[kill("t")])
        .await
        .unwrap_err();

    assert!(matches!(err, QueueError::NoSuchQueue(_)), "{err:?}");
}

pub async fn commands_sent_in_more_than_one_batch_all_reach_the_agent<H: Harness>(h: &H) {
    let fx = h.fresh().await;
    let commands = fx.ports().commands();
    let url = commands.ensure_agent_queue("a1").await.unwrap();
    let again = commands.ensure_agent_queue("a1").await.unwrap();
    let sent: Vec<AgentCommand> = (0..23).map(|i| kill(&format!("t{i}"))).collect();

    let failures = commands.send_commands("a1", &sent).await.unwrap();

    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(url, again, "ensuring a queue twice is one queue");
    let source = fx.command_source("a1").await;
    let mut received = BTreeSet::new();
    for _ in 0..20 {
        let batch = source.receive(10, Duration::ZERO).await.unwrap();
        assert!(batch.len() <= 10, "at most ten at a time");
        for message in &batch {
            received.insert(task_of(message));
            source.delete(&message.receipt).await.unwrap();
        }
        if received.len() == sent.len() {
            break;
        }
    }
    let expected: BTreeSet<String> = (0..23).map(|i| format!("t{i}")).collect();
    assert_eq!(received, expected);
}

pub async fn a_received_message_is_hidden_until_its_visibility_ends_then_comes_back_counted<
    H: Harness,
>(
    h: &H,
) {
    let (fx, source, first) = received_once(h).await;

    let while_hidden = source.receive(10, Duration::ZERO).await.unwrap();
    source
        .extend(&first.receipt, Duration::from_secs(1))
        .await
        .unwrap();
    fx.pass_time(Duration::from_millis(2_500)).await;
    let again = source.receive(10, Duration::ZERO).await.unwrap();

    assert!(while_hidden.is_empty(), "{while_hidden:?}");
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].body, first.body);
    assert_eq!(again[0].receive_count, 2);
    assert_ne!(
        again[0].receipt, first.receipt,
        "each receive has its own receipt"
    );
}

pub async fn extending_a_message_hides_it_for_the_new_time_from_now<H: Harness>(h: &H) {
    let (fx, source, first) = received_once(h).await;

    source
        .extend(&first.receipt, Duration::from_secs(1))
        .await
        .unwrap();
    source
        .extend(&first.receipt, Duration::from_secs(60))
        .await
        .unwrap();
    fx.pass_time(Duration::from_millis(2_500)).await;
    let still_hidden = source.receive(10, Duration::ZERO).await.unwrap();

    assert!(
        still_hidden.is_empty(),
        "the later extension holds: {still_hidden:?}"
    );
}

pub async fn a_released_message_is_delivered_again_at_once<H: Harness>(h: &H) {
    let (_fx, source, first) = received_once(h).await;

    source.release(&first.receipt).await.unwrap();
    let again = source.receive(10, Duration::ZERO).await.unwrap();

    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(task_of(&again[0]), "t1");
    assert_eq!(again[0].receive_count, 2, "a release counts as a receive");
}

pub async fn a_deleted_message_is_gone_and_a_receipt_no_receive_issued_is_refused<H: Harness>(
    h: &H,
) {
    let (_fx, source, first) = received_once(h).await;

    source.delete(&first.receipt).await.unwrap();
    let delete_again = source.delete(&first.receipt).await;
    let release_gone = source.release(&first.receipt).await;
    let forged_delete = source.delete("bm90LWEtcmVjZWlwdA").await;
    let forged_extend = source
        .extend("bm90LWEtcmVjZWlwdA", Duration::from_secs(5))
        .await;

    assert_eq!(delete_again, Ok(()), "deleting what is gone is done");
    assert!(
        release_gone.is_err(),
        "a deleted message cannot come back: {release_gone:?}"
    );
    assert!(forged_delete.is_err(), "{forged_delete:?}");
    assert!(forged_extend.is_err(), "{forged_extend:?}");
}

pub async fn a_message_received_more_than_the_limit_goes_to_the_dead_letter_queue<H: Harness>(
    h: &H,
) {
    // An agent queue gives up on a command after three receives.
    let (fx, source, first) = received_once(h).await;
    source.release(&first.receipt).await.unwrap();
    let mut counts = vec![first.receive_count];
    for _ in 0..2 {
        let batch = source.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(batch.len(), 1, "{batch:?}");
        counts.push(batch[0].receive_count);
        source.release(&batch[0].receipt).await.unwrap();
    }

    let fourth = source.receive(10, Duration::ZERO).await.unwrap();
    let dead = fx.drain_agent_dead_letters("a1").await;

    assert_eq!(counts, vec![1, 2, 3]);
    assert!(fourth.is_empty(), "{fourth:?}");
    assert_eq!(dead, vec![first.body]);
}
