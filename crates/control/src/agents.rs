//! Agents' requests about their own records, from the registrations queue: register (the
//! record and the agent's queue come into being only here), drain, deregister. An agent never
//! writes what the control plane decides — its state, capacity, incarnation, allocation — nor
//! creates queues.
//!
//! In AWS a request is believed only from the agent it names: SQS reports the sender of each
//! message, and an agent's instance role session is named after its instance id, so the sender
//! must be `{agent role id}:{agent id}` (`Rules::agent_role_id`; unset locally, where every
//! process shares the emulator's credentials). Anything else is kept on the DLQ with its reason.

use futures::stream::{self, StreamExt};
use titus_core::messages::{AgentRequest, Registration};
use titus_core::ports::{CommandQueue, DeadLetter, DeadLetterSink};
use titus_core::validation::quoted;
use titus_core::{AgentState, AgentStore, Ports, Resources};
use tracing::{info, warn};

use crate::{ControlError, ControlPlane, InboundMessage, MessageOutcome};

/// How many requests are applied at once.
const CONCURRENT_REQUESTS: usize = 8;

/// What became of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The record was written (registered, draining, removed).
    Applied,
    /// Nothing to do now: the agent asks again (a lost agent whose tasks are still being
    /// finished, a deregistration with tasks left, a drain of an agent not active).
    Deferred { why: String },
    /// Kept on the DLQ with its reason.
    DeadLettered { reason: String },
    /// To be redelivered.
    Failed,
}

impl MessageOutcome for Outcome {
    fn must_redeliver(&self) -> bool {
        *self == Outcome::Failed
    }
}

/// Applies a batch of the registrations queue's messages; says what became of each, in order.
pub async fn process_requests<P: Ports>(
    cp: &ControlPlane<P>,
    messages: Vec<InboundMessage>,
    now_ms: u64,
) -> Vec<(String, Outcome)> {
    stream::iter(messages)
        .map(|message| async move {
            let outcome = match read(cp, &message) {
                Ok(request) => match apply(cp, &request, now_ms).await {
                    Ok(outcome) => outcome,
                    Err(e) => {
                        warn!(message_id = %message.message_id, error = %e, "agent request not applied; SQS will redeliver it");
                        Outcome::Failed
                    }
                },
                Err(reason) => dead_letter(cp, &message, reason, now_ms).await,
            };
            (message.message_id, outcome)
        })
        .buffered(CONCURRENT_REQUESTS)
        .collect()
        .await
}

/// The request in a message, if it is one, from the agent it names.
fn read<P: Ports>(cp: &ControlPlane<P>, message: &InboundMessage) -> Result<AgentRequest, String> {
    let request: AgentRequest = serde_json::from_str(&message.body).map_err(|e| {
        format!(
            "not an agent request: {e}; expected the JSON of an AgentRequest \
             (type register, drain or deregister)"
        )
    })?;
    let agent_id = request.agent_id();
    if !valid_agent_id(agent_id) {
        return Err(format!(
            "agent id {} is not valid; expected 1 to 40 letters, digits, '-' or '_'",
            quoted(agent_id)
        ));
    }
    check_sender(cp, agent_id, message.sender_id.as_deref())?;
    Ok(request)
}

/// Whether `sender` (SQS's sender id of a message) may speak for `agent_id`. Only checked when
/// the stage names its agents' role.
pub(crate) fn check_sender<P: Ports>(
    cp: &ControlPlane<P>,
    agent_id: &str,
    sender: Option<&str>,
) -> Result<(), String> {
    let expected = principal(cp, agent_id);
    if expected.is_empty() {
        return Ok(());
    }
    match sender {
        Some(sender) if sender == expected => Ok(()),
        other => Err(format!(
            "sent by {}, which is not agent {}; expected the sender {}",
            quoted(other.unwrap_or("nobody")),
            quoted(agent_id),
            quoted(&expected)
        )),
    }
}

/// The principal agent `agent_id` speaks as: `{agent role id}:{agent id}`, or empty where the
/// stage names no agents' role.
pub(crate) fn principal<P: Ports>(cp: &ControlPlane<P>, agent_id: &str) -> String {
    let role_id = &cp.settings.rules.agent_role_id;
    if role_id.is_empty() {
        String::new()
    } else {
        format!("{role_id}:{agent_id}")
    }
}

/// Agent ids are instance ids in AWS, configured ids locally: they become queue names.
pub fn valid_agent_id(id: &str) -> bool {
    (1..=40).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

async fn apply<P: Ports>(
    cp: &ControlPlane<P>,
    request: &AgentRequest,
    now_ms: u64,
) -> Result<Outcome, ControlError> {
    let agents = cp.ports.agents();
    match request {
        AgentRequest::Register(registration) => register(cp, registration, now_ms).await,
        AgentRequest::Drain { agent_id } => {
            match agents
                .set_agent_state(agent_id, AgentState::Active, AgentState::Draining)
                .await
            {
                Ok(()) => {
                    info!(agent_id, "agent draining, at its request");
                    Ok(Outcome::Applied)
                }
                Err(e) if e.is_conflict() => Ok(Outcome::Deferred {
                    why: "the agent is not active".to_owned(),
                }),
                Err(e) => Err(e.into()),
            }
        }
        AgentRequest::Deregister { agent_id } => match agents.get_agent(agent_id).await? {
            None => Ok(Outcome::Applied),
            Some(agent) if agent.task_count > 0 || agent.allocated != Resources::ZERO => {
                Ok(Outcome::Deferred {
                    why: format!("{} tasks still hold resources there", agent.task_count),
                })
            }
            Some(_) => {
                agents.deregister_agent(agent_id).await?;
                info!(agent_id, "agent deregistered, at its request");
                Ok(Outcome::Applied)
            }
        },
    }
}

/// Creates the agent's queue, then writes its record: a new agent, a restart (same
/// incarnation), or a fenced agent coming back (the next incarnation, once its old tasks are
/// finished).
async fn register<P: Ports>(
    cp: &ControlPlane<P>,
    registration: &Registration,
    now_ms: u64,
) -> Result<Outcome, ControlError> {
    let queue_url = cp
        .ports
        .commands()
        .ensure_agent_queue(&registration.agent_id)
        .await?;
    let record = registration.record(queue_url, principal(cp, &registration.agent_id), now_ms);
    match cp.ports.agents().register_agent(&record).await {
        Ok(registered) => {
            info!(agent_id = %registered.id, incarnation = registered.incarnation, state = %registered.state, "agent registered");
            Ok(Outcome::Applied)
        }
        Err(e) if e.is_conflict() => {
            info!(agent_id = %record.id, error = %e, "registration deferred");
            Ok(Outcome::Deferred { why: e.to_string() })
        }
        Err(e) => Err(e.into()),
    }
}

async fn dead_letter<P: Ports>(
    cp: &ControlPlane<P>,
    message: &InboundMessage,
    reason: String,
    now_ms: u64,
) -> Outcome {
    let letter = DeadLetter {
        message_id: message.message_id.clone(),
        body: message.body.clone(),
        reason: format!("agent request refused: {reason}"),
        dead_lettered_at_ms: now_ms,
    };
    match cp.ports.dead_letters().send(&letter).await {
        Ok(()) => {
            warn!(reason = %letter.reason, "agent request sent to the DLQ");
            Outcome::DeadLettered {
                reason: letter.reason,
            }
        }
        Err(e) => {
            warn!(error = %e, "agent request could not be sent to the DLQ; SQS will redeliver it");
            Outcome::Failed
        }
    }
}
