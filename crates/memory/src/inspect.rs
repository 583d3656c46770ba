//! What tests read back from a world without going through a port (so without metering or
//! faults): the queues' messages, typed for the stage's queues, and the fleet's instances.
//! `*_messages` and the typed readers leave the messages where they are; `drain_*` removes them.

use titus_core::messages::{AgentCommand, AgentRequest, Rejection, TaskStatusUpdate};
use titus_core::ports::{DeadLetter, InstanceTypeInfo, PoolInstance};

use crate::queues::QueuedMessage;
use crate::sinks::{DEAD_LETTERED_AT_ATTRIBUTE, REASON_ATTRIBUTE, SOURCE_MESSAGE_ID_ATTRIBUTE};
use crate::world::MemoryWorld;

fn parsed<T: serde::de::DeserializeOwned>(messages: Vec<QueuedMessage>) -> Vec<T> {
    messages
        .into_iter()
        .filter_map(|m| serde_json::from_str(&m.body).ok())
        .collect()
}

fn letter(message: QueuedMessage) -> DeadLetter {
    let attribute = |name: &str| message.attributes.get(name).cloned().unwrap_or_default();
    DeadLetter {
        message_id: attribute(SOURCE_MESSAGE_ID_ATTRIBUTE),
        reason: attribute(REASON_ATTRIBUTE),
        dead_lettered_at_ms: attribute(DEAD_LETTERED_AT_ATTRIBUTE).parse().unwrap_or(0),
        body: message.body,
    }
}

impl MemoryWorld {
    /// The names of the queues sent to since the last call, so that a simulation of many
    /// agents receives only from queues that have something (a real agent long-polls its own).
    pub fn take_arrivals(&self) -> Vec<String> {
        self.lock().queues.take_arrivals()
    }

    /// How many stored tasks are in each state.
    pub fn task_states(&self) -> std::collections::BTreeMap<titus_core::TaskState, usize> {
        let state = self.lock();
        let mut counts = std::collections::BTreeMap::new();
        for task in state.tasks.values() {
            *counts.entry(task.state()).or_default() += 1;
        }
        counts
    }

    /// Every stored task (a copy), for a simulation's final checks.
    pub fn all_tasks(&self) -> Vec<titus_core::Task> {
        self.lock().tasks.values().cloned().collect()
    }

    /// Every stored job (a copy).
    pub fn all_jobs(&self) -> Vec<titus_core::Job> {
        self.lock()
            .jobs
            .values()
            .map(|item| item.job.clone())
            .collect()
    }

    /// Every agent record as the agents table has it.
    pub fn all_agents(&self) -> Vec<titus_core::Agent> {
        self.lock()
            .agents
            .iter()
            .map(|(id, row)| row.to_agent(id))
            .collect()
    }

    /// The name of agent `agent_id`'s queue (its dead-letter queue adds `-dlq`).
    pub fn agent_queue_name(&self, agent_id: &str) -> String {
        self.lock().queues.agent_queue(agent_id)
    }

    /// The names of the stage's status queue and its dead-letter queue.
    pub fn status_queue_names(&self) -> (String, String) {
        let state = self.lock();
        (
            state.queues.status_queue(),
            state.queues.status_dead_letter_queue(),
        )
    }

    /// The URL of queue `name`, if it exists.
    pub fn queue_url(&self, name: &str) -> Option<String> {
        self.lock().queues.url(name)
    }

    /// Every message of queue `name`, in flight or not, oldest first.
    pub fn queue_messages(&self, name: &str) -> Vec<QueuedMessage> {
        self.inspect(|s| s.queues.messages(name, s.now_ms))
    }

    /// Removes and returns every message of queue `name`.
    pub fn drain_queue(&self, name: &str) -> Vec<QueuedMessage> {
        self.inspect(|s| s.queues.drain(name, s.now_ms))
    }

    /// The commands waiting on (or in flight from) agent `agent_id`'s queue.
    pub fn agent_commands(&self, agent_id: &str) -> Vec<AgentCommand> {
        parsed(self.queue_messages(&self.agent_queue_name(agent_id)))
    }

    /// The messages agent `agent_id`'s queue gave up on.
    pub fn agent_dead_letters(&self, agent_id: &str) -> Vec<QueuedMessage> {
        self.queue_messages(&format!("{}-dlq", self.agent_queue_name(agent_id)))
    }

    /// The updates on the status queue.
    pub fn status_updates(&self) -> Vec<TaskStatusUpdate> {
        parsed(self.queue_messages(&self.status_queue_names().0))
    }

    /// The status queue's dead letters, with their reasons.
    pub fn status_dead_letters(&self) -> Vec<DeadLetter> {
        self.queue_messages(&self.status_queue_names().1)
            .into_iter()
            .map(letter)
            .collect()
    }

    /// Removes and returns the status queue's dead letters.
    pub fn drain_status_dead_letters(&self) -> Vec<DeadLetter> {
        self.drain_queue(&self.status_queue_names().1)
            .into_iter()
            .map(letter)
            .collect()
    }

    /// The refused submissions.
    pub fn rejected_submissions(&self) -> Vec<Rejection> {
        let name = self.lock().queues.rejection_queue();
        parsed(self.queue_messages(&name))
    }

    /// The name of the rejected-submissions queue.
    pub fn rejection_queue_name(&self) -> String {
        self.lock().queues.rejection_queue()
    }

    /// The name of the agent-requests queue.
    pub fn agent_requests_queue_name(&self) -> String {
        self.lock().queues.registrations_queue()
    }

    /// The requests on the agent-requests queue.
    pub fn sent_agent_requests(&self) -> Vec<AgentRequest> {
        parsed(self.queue_messages(&self.agent_requests_queue_name()))
    }

    /// Every instance ever launched, with whether it was terminated.
    pub fn fleet_instances(&self) -> Vec<(PoolInstance, bool)> {
        self.lock().fleet.instances()
    }

    /// Offers instance type `name` from now on.
    pub fn add_instance_type(&self, name: &str, info: InstanceTypeInfo) {
        self.lock().fleet.add_instance_type(name, info);
    }
}
