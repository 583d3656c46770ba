//! SQS in memory: named standard queues holding messages in the order they were sent; a received
//! message hidden for the queue's visibility timeout (or as long as `extend` says), with a new
//! receipt and one more receive each time it is received; moved to the queue's dead-letter queue
//! by the receive that would exceed its limit of receives.
//!
//! Receipts are opaque. Any receipt ever issued for a message still in the queue deletes it or
//! changes its visibility (as the emulator does); deleting a message already gone succeeds;
//! changing the visibility of one already gone, or using a receipt no receive issued, is
//! refused (`ReceiptHandleIsInvalid`).

use std::collections::{BTreeMap, HashMap};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use titus_core::ports::{QueueError, ReceivedMessage, MAX_BATCH_MESSAGES};

use crate::world::MemoryConfig;

/// SQS's limit on one message, and on one batch's messages together.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// The longest a message can be kept hidden.
const MAX_VISIBILITY_MS: u64 = 12 * 3600 * 1000;

/// A message as the inspection helpers show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    pub message_id: String,
    pub body: String,
    /// String message attributes.
    pub attributes: BTreeMap<String, String>,
    pub sent_at_ms: u64,
    pub receive_count: u32,
    /// Whether a receive would get it now (not in flight).
    pub visible: bool,
}

#[derive(Debug, Clone)]
struct Message {
    id: String,
    body: String,
    attributes: BTreeMap<String, String>,
    sent_at_ms: u64,
    visible_at_ms: u64,
    receive_count: u32,
}

/// Where a queue's messages go after too many receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Redrive {
    pub(crate) dead_letter_queue: String,
    pub(crate) max_receive_count: u32,
}

#[derive(Debug)]
struct Queue {
    url: String,
    visibility_timeout_ms: u64,
    redrive: Option<Redrive>,
    /// By sequence number: the order of sending.
    messages: BTreeMap<u64, Message>,
}

/// Every queue of the world.
#[derive(Debug)]
pub(crate) struct Queues {
    stage: String,
    agent_visibility_timeout_ms: u64,
    agent_max_receives: u32,
    by_name: HashMap<String, Queue>,
    next_sequence: u64,
    /// The queues sent to since the last [`Queues::take_arrivals`], for simulations.
    arrived: std::collections::BTreeSet<String>,
}

fn invalid_receipt(receipt: &str) -> QueueError {
    let shown: String = receipt.chars().take(40).collect();
    QueueError::Internal(format!(
        "ReceiptHandleIsInvalid: the receipt {shown:?} is not a valid receipt handle of this \
         queue; expected one a receive returned"
    ))
}

impl Queues {
    /// The stage's queues as provisioning creates them: submissions, rejections, statuses and
    /// agents' requests, with their dead-letter queues. Agents' queues come with
    /// `ensure_agent_queue`.
    pub(crate) fn for_stage(config: &MemoryConfig) -> Queues {
        let mut queues = Queues {
            stage: config.stage.clone(),
            agent_visibility_timeout_ms: config.agent_queue_visibility_timeout_ms,
            agent_max_receives: config.agent_queue_max_receives,
            by_name: HashMap::new(),
            next_sequence: 0,
            arrived: std::collections::BTreeSet::new(),
        };
        for (role, visibility_ms, max_receives) in [
            ("submit", 60_000, Some(5)),
            ("submit-rejected", 30_000, None),
            ("status", 60_000, Some(config.status_queue_max_receives)),
            ("registrations", 60_000, Some(5)),
        ] {
            let name = queues.name(role);
            let dead_letter = match (role, max_receives) {
                ("status", Some(_)) => Some(queues.status_dead_letter_queue()),
                (_, Some(_)) => Some(format!("{name}-dlq")),
                _ => None,
            };
            queues.ensure(&name, visibility_ms, dead_letter.zip(max_receives));
        }
        queues
    }

    fn name(&self, role: &str) -> String {
        format!("titus-{}-{role}", self.stage)
    }

    pub(crate) fn agent_queue(&self, agent_id: &str) -> String {
        self.name(&format!("agent-{agent_id}"))
    }

    pub(crate) fn status_queue(&self) -> String {
        self.name("status")
    }

    pub(crate) fn status_dead_letter_queue(&self) -> String {
        self.name("status-dlq")
    }

    pub(crate) fn rejection_queue(&self) -> String {
        self.name("submit-rejected")
    }

    pub(crate) fn registrations_queue(&self) -> String {
        self.name("registrations")
    }

    pub(crate) fn exists(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    pub(crate) fn url(&self, name: &str) -> Option<String> {
        self.by_name.get(name).map(|q| q.url.clone())
    }

    /// Creates the queue (and its dead-letter queue first) unless it exists, or sets its
    /// attributes if it does; returns its URL.
    pub(crate) fn ensure(
        &mut self,
        name: &str,
        visibility_timeout_ms: u64,
        dead_letter: Option<(String, u32)>,
    ) -> String {
        let redrive = dead_letter.map(|(dead_letter_queue, max_receive_count)| {
            self.ensure(&dead_letter_queue, 30_000, None);
            Redrive {
                dead_letter_queue,
                max_receive_count,
            }
        });
        let queue = self
            .by_name
            .entry(name.to_owned())
            .or_insert_with(|| Queue {
                url: format!("https://sqs.memory.localhost/000000000000/{name}"),
                visibility_timeout_ms,
                redrive: None,
                messages: BTreeMap::new(),
            });
        queue.visibility_timeout_ms = visibility_timeout_ms;
        queue.redrive = redrive;
        queue.url.clone()
    }

    /// Creates agent `agent_id`'s queue and its dead-letter queue unless they exist.
    pub(crate) fn ensure_agent_queue(&mut self, agent_id: &str) -> String {
        let name = self.agent_queue(agent_id);
        let dead_letter = (format!("{name}-dlq"), self.agent_max_receives);
        self.ensure(&name, self.agent_visibility_timeout_ms, Some(dead_letter))
    }

    fn queue_mut(&mut self, name: &str) -> Result<&mut Queue, QueueError> {
        self.by_name
            .get_mut(name)
            .ok_or_else(|| QueueError::NoSuchQueue(name.to_owned()))
    }

    /// Sends one message; returns its id.
    pub(crate) fn send(
        &mut self,
        name: &str,
        body: String,
        attributes: BTreeMap<String, String>,
        now_ms: u64,
    ) -> Result<String, QueueError> {
        if body.is_empty() || body.len() > MAX_MESSAGE_BYTES {
            return Err(QueueError::Internal(format!(
                "{name}: InvalidParameterValue: a message body of {} bytes; expected 1 to \
                 {MAX_MESSAGE_BYTES}",
                body.len()
            )));
        }
        let sequence = self.next_sequence;
        let queue = self.queue_mut(name)?;
        let id = format!("m-{sequence:016x}");
        queue.messages.insert(
            sequence,
            Message {
                id: id.clone(),
                body,
                attributes,
                sent_at_ms: now_ms,
                visible_at_ms: now_ms,
                receive_count: 0,
            },
        );
        self.next_sequence += 1;
        self.arrived.insert(name.to_owned());
        Ok(id)
    }

    /// The queues sent to since the last call.
    pub(crate) fn take_arrivals(&mut self) -> Vec<String> {
        std::mem::take(&mut self.arrived).into_iter().collect()
    }

    /// Checks one SendMessageBatch's entries before any is sent.
    pub(crate) fn check_batch(name: &str, bodies: &[String]) -> Result<(), QueueError> {
        let total: usize = bodies.iter().map(String::len).sum();
        if bodies.is_empty() || bodies.len() > MAX_BATCH_MESSAGES || total > MAX_MESSAGE_BYTES {
            return Err(QueueError::Internal(format!(
                "{name}: a batch of {} messages, {total} bytes; expected 1 to \
                 {MAX_BATCH_MESSAGES} messages of at most {MAX_MESSAGE_BYTES} bytes together",
                bodies.len()
            )));
        }
        Ok(())
    }

    /// One receive of up to `max` visible messages, oldest first. A visible message already
    /// received as often as its queue allows moves to the dead-letter queue instead.
    pub(crate) fn receive(
        &mut self,
        name: &str,
        max: u32,
        now_ms: u64,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        let max = max.clamp(1, MAX_BATCH_MESSAGES as u32) as usize;
        let queue = self.queue_mut(name)?;
        let mut received = Vec::new();
        let mut dead = Vec::new();
        for (sequence, message) in queue.messages.iter_mut() {
            if received.len() == max {
                break;
            }
            if message.visible_at_ms > now_ms {
                continue;
            }
            if let Some(redrive) = &queue.redrive {
                if message.receive_count >= redrive.max_receive_count {
                    dead.push(*sequence);
                    continue;
                }
            }
            message.receive_count += 1;
            message.visible_at_ms = now_ms.saturating_add(queue.visibility_timeout_ms);
            received.push(ReceivedMessage {
                body: message.body.clone(),
                receipt: encode_receipt(name, *sequence, message.receive_count),
                receive_count: message.receive_count,
            });
        }
        let redrive = queue.redrive.clone();
        let moved: Vec<Message> = dead
            .into_iter()
            .filter_map(|sequence| queue.messages.remove(&sequence))
            .collect();
        if let Some(redrive) = redrive {
            for mut message in moved {
                tracing::info!(queue = name, message_id = %message.id, receives = message.receive_count, "message moved to the dead-letter queue");
                message.visible_at_ms = now_ms;
                message.receive_count = 0;
                let sequence = self.next_sequence;
                self.next_sequence += 1;
                if let Some(dlq) = self.by_name.get_mut(&redrive.dead_letter_queue) {
                    dlq.messages.insert(sequence, message);
                }
            }
        }
        Ok(received)
    }

    /// The message a receipt names in queue `name`: `Ok(None)` when it is gone.
    fn receipt_target(&self, name: &str, receipt: &str) -> Result<Option<u64>, QueueError> {
        let (queue_name, sequence, receive) =
            decode_receipt(receipt).ok_or_else(|| invalid_receipt(receipt))?;
        if queue_name != name || sequence >= self.next_sequence {
            return Err(invalid_receipt(receipt));
        }
        let queue = self
            .by_name
            .get(name)
            .ok_or_else(|| QueueError::NoSuchQueue(name.to_owned()))?;
        match queue.messages.get(&sequence) {
            None => Ok(None),
            Some(message) if receive >= 1 && receive <= message.receive_count => Ok(Some(sequence)),
            Some(_) => Err(invalid_receipt(receipt)),
        }
    }

    pub(crate) fn delete(&mut self, name: &str, receipt: &str) -> Result<(), QueueError> {
        if let Some(sequence) = self.receipt_target(name, receipt)? {
            self.queue_mut(name)?.messages.remove(&sequence);
        }
        Ok(())
    }

    /// Hides the message for `hidden_for_ms` from now (0: visible at once).
    pub(crate) fn change_visibility(
        &mut self,
        name: &str,
        receipt: &str,
        hidden_for_ms: u64,
        now_ms: u64,
    ) -> Result<(), QueueError> {
        let sequence = self
            .receipt_target(name, receipt)?
            .ok_or_else(|| invalid_receipt(receipt))?;
        if let Some(message) = self.queue_mut(name)?.messages.get_mut(&sequence) {
            message.visible_at_ms = now_ms.saturating_add(hidden_for_ms.min(MAX_VISIBILITY_MS));
        }
        Ok(())
    }

    /// Every message of the queue, in flight or not, oldest first.
    pub(crate) fn messages(&self, name: &str, now_ms: u64) -> Vec<QueuedMessage> {
        self.by_name
            .get(name)
            .map(|queue| {
                queue
                    .messages
                    .values()
                    .map(|m| QueuedMessage {
                        message_id: m.id.clone(),
                        body: m.body.clone(),
                        attributes: m.attributes.clone(),
                        sent_at_ms: m.sent_at_ms,
                        receive_count: m.receive_count,
                        visible: m.visible_at_ms <= now_ms,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Removes and returns every message of the queue.
    pub(crate) fn drain(&mut self, name: &str, now_ms: u64) -> Vec<QueuedMessage> {
        let messages = self.messages(name, now_ms);
        if let Some(queue) = self.by_name.get_mut(name) {
            queue.messages.clear();
        }
        messages
    }
}

fn encode_receipt(queue: &str, sequence: u64, receive: u32) -> String {
    URL_SAFE_NO_PAD.encode(format!("{queue}\n{sequence}\n{receive}"))
}

fn decode_receipt(receipt: &str) -> Option<(String, u64, u32)> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(receipt).ok()?).ok()?;
    let mut parts = text.split('\n');
    let queue = parts.next()?.to_owned();
    let sequence = parts.next()?.parse().ok()?;
    let receive = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((queue, sequence, receive))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queues() -> Queues {
        let mut queues = Queues::for_stage(&MemoryConfig::default());
        queues.ensure_agent_queue("a1");
        queues
    }

    fn send(queues: &mut Queues, body: &str) {
        let name = queues.agent_queue("a1");
        queues
            .send(&name, body.to_owned(), BTreeMap::new(), 0)
            .unwrap();
    }

    #[test]
    fn a_message_moves_to_the_dead_letter_queue_on_the_receive_past_its_limit() {
        let mut queues = queues();
        let name = queues.agent_queue("a1");
        send(&mut queues, "m");

        let counts: Vec<u32> = (0..3)
            .map(|i| {
                let now = i * 61_000;
                queues.receive(&name, 10, now).unwrap()[0].receive_count
            })
            .collect();
        let fourth = queues.receive(&name, 10, 4 * 61_000).unwrap();

        assert_eq!(counts, vec![1, 2, 3]);
        assert!(fourth.is_empty());
        let dead = queues.messages(&format!("{name}-dlq"), 0);
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].body, "m");
    }

    #[test]
    fn a_stale_receipt_still_deletes_and_a_forged_one_is_refused() {
        let mut queues = queues();
        let name = queues.agent_queue("a1");
        send(&mut queues, "m");
        let first = queues.receive(&name, 1, 0).unwrap().remove(0);
        queues.receive(&name, 1, 60_000).unwrap();

        let forged = queues.delete(&name, "bm90IGEgcmVjZWlwdA");
        queues.delete(&name, &first.receipt).unwrap();
        let again = queues.delete(&name, &first.receipt);
        let extend_gone = queues.change_visibility(&name, &first.receipt, 0, 0);

        assert!(matches!(forged, Err(QueueError::Internal(_))), "{forged:?}");
        assert!(queues.messages(&name, 0).is_empty());
        assert_eq!(again, Ok(()), "deleting what is gone succeeds");
        assert!(matches!(extend_gone, Err(QueueError::Internal(_))));
    }

    #[test]
    fn a_batch_is_at_most_ten_messages_of_256_kb_together() {
        let ten: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        let eleven: Vec<String> = (0..11).map(|i| i.to_string()).collect();
        let large = vec!["x".repeat(200 * 1024), "y".repeat(100 * 1024)];

        assert!(Queues::check_batch("q", &ten).is_ok());
        assert!(Queues::check_batch("q", &eleven).is_err());
        assert!(Queues::check_batch("q", &large).is_err());
        assert!(Queues::check_batch("q", &[]).is_err());
    }
}
