//! Agent records in DynamoDB. Unlike jobs and tasks, an agent's item keeps every field as its own
//! attribute: the scheduler adds to the allocation, the status path releases it and the agent
//! heartbeats, all with atomic updates of their own attributes, so no writer clobbers another.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use aws_sdk_dynamodb::Client;
use titus_core::{Agent, AgentHeartbeat, AgentState, AgentStore, Resources, StoreError, TaskId};

use crate::dynamo::conditional::conflict_if_refused;
use crate::dynamo::sdk_error;
use crate::resources::{attr, Names};

type Item = HashMap<String, AttributeValue>;

/// Attribute names of an agent item.
pub mod agent_attr {
    pub const QUEUE_URL: &str = "queueUrl";
    pub const ZONE: &str = "zone";
    pub const MACHINE_TYPE: &str = "machineType";
    pub const MACHINE_GROUP: &str = "machineGroup";
    pub const STATE: &str = "agentState";
    pub const TASK_COUNT: &str = "taskCount";
    pub const REGISTERED_AT_MS: &str = "registeredAtMs";
    pub const HEARTBEAT_AT_MS: &str = "heartbeatAtMs";
    /// The agent's own report (`AgentHeartbeat`): the tasks it runs, their count, and what they
    /// use (`used` + the dimension). Written only by the agent.
    pub const RUNNING_TASK_IDS: &str = "runningTaskIds";
    pub const RUNNING_TASK_COUNT: &str = "runningTaskCount";
    /// Capacity attributes are `cap` + the dimension, allocation ones `alloc` + the dimension.
    pub const DIMENSIONS: [&str; 5] = ["CpuMillis", "MemoryMb", "DiskMb", "NetworkMbps", "Gpu"];
}

fn dimension_values(resources: &Resources) -> [u64; 5] {
    [
        resources.cpu_millis,
        resources.memory_mb,
        resources.disk_mb,
        resources.network_mbps,
        resources.gpu,
    ]
}

fn resources_from(item: &Item, prefix: &str) -> Result<Resources, StoreError> {
    let mut values = [0u64; 5];
    for (value, dimension) in values.iter_mut().zip(agent_attr::DIMENSIONS) {
        *value = number_attr(item, &format!("{prefix}{dimension}"))?;
    }
    Ok(Resources {
        cpu_millis: values[0],
        memory_mb: values[1],
        disk_mb: values[2],
        network_mbps: values[3],
        gpu: values[4],
    })
}

/// A counter's value. Counters only move by atomic ADDs of what was added before, so a negative
/// one means the accounting drifted (a store that lost a write). It is read as 0 and reported at
/// ERROR, for an operator to repair the record, rather than stopping every reader of the agent
/// (the scheduler and the reconciler would otherwise fail on every tick).
fn number_attr(item: &Item, name: &str) -> Result<u64, StoreError> {
    let text = item.get(name).and_then(|v| v.as_n().ok()).ok_or_else(|| {
        StoreError::Internal(format!(
            "agent item lacks the number attribute {name}, which every agent record has"
        ))
    })?;
    match text.parse::<i128>() {
        Ok(value) if value < 0 => {
            let agent = item
                .get(attr::AGENT_ID)
                .and_then(|v| v.as_s().ok())
                .map_or("?", String::as_str);
            tracing::error!(
                agent_id = %agent,
                attribute = name,
                value = %value,
                "agent counter is below zero; reading it as 0"
            );
            Ok(0)
        }
        Ok(value) => u64::try_from(value).map_err(|_| {
            StoreError::Internal(format!(
                "agent attribute {name} is {value}, expected at most {}",
                u64::MAX
            ))
        }),
        Err(_) => Err(StoreError::Internal(format!(
            "agent attribute {name} is {text:?}, expected a whole number"
        ))),
    }
}

fn string_attr(item: &Item, name: &str) -> Result<String, StoreError> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .cloned()
        .ok_or_else(|| StoreError::Internal(format!("agent item lacks string attribute {name}")))
}

/// Decodes an agent item.
pub fn agent_from_item(item: &Item) -> Result<Agent, StoreError> {
    let state_text = string_attr(item, agent_attr::STATE)?;
    Ok(Agent {
        id: string_attr(item, attr::AGENT_ID)?,
        queue_url: string_attr(item, agent_attr::QUEUE_URL)?,
        zone: string_attr(item, agent_attr::ZONE)?,
        machine_type: string_attr(item, agent_attr::MACHINE_TYPE)?,
        machine_group: string_attr(item, agent_attr::MACHINE_GROUP)?,
        state: AgentState::parse(&state_text)
            .ok_or_else(|| StoreError::Internal(format!("agent item has state {state_text:?}")))?,
        capacity: resources_from(item, "cap")?,
        allocated: resources_from(item, "alloc")?,
        task_count: number_attr(item, agent_attr::TASK_COUNT)?,
        registered_at_ms: number_attr(item, agent_attr::REGISTERED_AT_MS)?,
        heartbeat_at_ms: number_attr(item, agent_attr::HEARTBEAT_AT_MS)?,
    })
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// The agent store backed by the stage's agents table.
#[derive(Debug, Clone)]
pub struct DynamoAgentStore {
    client: Client,
    table: String,
}

impl DynamoAgentStore {
    pub fn new(client: Client, names: &Names) -> DynamoAgentStore {
        DynamoAgentStore {
            client,
            table: names.agents_table(),
        }
    }

    pub fn table_name(&self) -> &str {
        &self.table
    }
}

impl AgentStore for DynamoAgentStore {
    async fn last_report(&self, id: &str) -> Result<Option<AgentHeartbeat>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::AGENT_ID, s(id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem agents", e))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        if !item.contains_key(agent_attr::RUNNING_TASK_IDS) {
            return Ok(None);
        }
        let running_task_ids = item
            .get(agent_attr::RUNNING_TASK_IDS)
            .and_then(|v| v.as_l().ok())
            .map(|list| {
                list.iter()
                    .filter_map(|v| v.as_s().ok())
                    .map(|id| TaskId::from_string(id.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Some(AgentHeartbeat {
            at_ms: number_attr(&item, agent_attr::HEARTBEAT_AT_MS)?,
            running_task_ids,
            used: resources_from(&item, "used")?,
        }))
    }

    async fn register_agent(&self, agent: &Agent) -> Result<Agent, StoreError> {
        // Identity, capacity and heartbeat are the agent's to set; allocation, task count and a
        // draining state belong to the control plane and survive a restart.
        let mut sets = vec![
            "#queue = :queue",
            "#zone = :zone",
            "#type = :type",
            "#group = :group",
            "#heartbeat = :heartbeat",
            "#registered = if_not_exists(#registered, :heartbeat)",
            "#state = if_not_exists(#state, :active)",
            "#count = if_not_exists(#count, :zero)",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::AGENT_ID, s(&agent.id))
            .expression_attribute_names("#queue", agent_attr::QUEUE_URL)
            .expression_attribute_names("#zone", agent_attr::ZONE)
            .expression_attribute_names("#type", agent_attr::MACHINE_TYPE)
            .expression_attribute_names("#group", agent_attr::MACHINE_GROUP)
            .expression_attribute_names("#heartbeat", agent_attr::HEARTBEAT_AT_MS)
            .expression_attribute_names("#registered", agent_attr::REGISTERED_AT_MS)
            .expression_attribute_names("#state", agent_attr::STATE)
            .expression_attribute_names("#count", agent_attr::TASK_COUNT)
            .expression_attribute_values(":queue", s(&agent.queue_url))
            .expression_attribute_values(":zone", s(&agent.zone))
            .expression_attribute_values(":type", s(&agent.machine_type))
            .expression_attribute_values(":group", s(&agent.machine_group))
            .expression_attribute_values(":heartbeat", n(agent.heartbeat_at_ms))
            .expression_attribute_values(":active", s(AgentState::Active.as_str()))
            .expression_attribute_values(":zero", n(0));
        for (dimension, value) in agent_attr::DIMENSIONS
            .iter()
            .zip(dimension_values(&agent.capacity))
        {
            sets.push(format!("#cap{dimension} = :cap{dimension}"));
            sets.push(format!(
                "#alloc{dimension} = if_not_exists(#alloc{dimension}, :zero)"
            ));
            request = request
                .expression_attribute_names(format!("#cap{dimension}"), format!("cap{dimension}"))
                .expression_attribute_names(
                    format!("#alloc{dimension}"),
                    format!("alloc{dimension}"),
                )
                .expression_attribute_values(format!(":cap{dimension}"), n(value));
        }
        let out = request
            .update_expression(format!("SET {}", sets.join(", ")))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(|e| sdk_error("UpdateItem agents register", e))?;
        let registered = agent_from_item(&out.attributes.unwrap_or_default())?;
        // An agent that was declared lost and comes back is a working host again; its old tasks
        // were already replaced.
        if registered.state == AgentState::Lost {
            match self
                .set_agent_state(&agent.id, AgentState::Lost, AgentState::Active)
                .await
            {
                Ok(()) | Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
            return self
                .get_agent(&agent.id)
                .await?
                .ok_or_else(|| StoreError::Internal(format!("agent {} vanished", agent.id)));
        }
        Ok(registered)
    }

    async fn get_agent(&self, id: &str) -> Result<Option<Agent>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::AGENT_ID, s(id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem agents", e))?;
        out.item.as_ref().map(agent_from_item).transpose()
    }

    async fn list_agents(&self) -> Result<Vec<Agent>, StoreError> {
        let mut agents = Vec::new();
        let mut start_key = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start_key)
                .send()
                .await
                .map_err(|e| sdk_error("Scan agents", e))?;
            for item in out.items() {
                agents.push(agent_from_item(item)?);
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start_key = Some(key),
                _ => break,
            }
        }
        agents.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(agents)
    }

    async fn heartbeat(&self, id: &str, now_ms: u64) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::AGENT_ID, s(id))
            .update_expression("SET #heartbeat = :now")
            .condition_expression("attribute_exists(#id)")
            .expression_attribute_names("#heartbeat", agent_attr::HEARTBEAT_AT_MS)
            .expression_attribute_names("#id", attr::AGENT_ID)
            .expression_attribute_values(":now", n(now_ms))
            .send()
            .await;
        conflict_if_refused(result, "UpdateItem agents heartbeat", ("agent", id), || {
            "not registered".to_owned()
        })?;
        Ok(())
    }

    async fn set_agent_state(
        &self,
        id: &str,
        from: AgentState,
        to: AgentState,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::AGENT_ID, s(id))
            .update_expression("SET #state = :to")
            .condition_expression("#state = :from")
            .expression_attribute_names("#state", agent_attr::STATE)
            .expression_attribute_values(":to", s(to.as_str()))
            .expression_attribute_values(":from", s(from.as_str()))
            .send()
            .await;
        conflict_if_refused(result, "UpdateItem agents state", ("agent", id), || {
            format!("expected state {from}, found another or no agent")
        })?;
        Ok(())
    }

    async fn report_heartbeat(
        &self,
        id: &str,
        report: &AgentHeartbeat,
    ) -> Result<AgentState, StoreError> {
        let mut sets = vec![
            "#heartbeat = :now".to_owned(),
            "#running = :running".to_owned(),
            "#runningCount = :runningCount".to_owned(),
        ];
        let running = report
            .running_task_ids
            .iter()
            .map(|id| s(id.as_str()))
            .collect();
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::AGENT_ID, s(id))
            .condition_expression("attribute_exists(#id)")
            .expression_attribute_names("#id", attr::AGENT_ID)
            .expression_attribute_names("#heartbeat", agent_attr::HEARTBEAT_AT_MS)
            .expression_attribute_names("#running", agent_attr::RUNNING_TASK_IDS)
            .expression_attribute_names("#runningCount", agent_attr::RUNNING_TASK_COUNT)
            .expression_attribute_values(":now", n(report.at_ms))
            .expression_attribute_values(":running", AttributeValue::L(running))
            .expression_attribute_values(":runningCount", n(report.running_task_ids.len() as u64));
        for (dimension, value) in agent_attr::DIMENSIONS
            .iter()
            .zip(dimension_values(&report.used))
        {
            sets.push(format!("#used{dimension} = :used{dimension}"));
            request = request
                .expression_attribute_names(format!("#used{dimension}"), format!("used{dimension}"))
                .expression_attribute_values(format!(":used{dimension}"), n(value));
        }
        let result = request
            .update_expression(format!("SET {}", sets.join(", ")))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        let out = conflict_if_refused(
            result,
            "UpdateItem agents heartbeat report",
            ("agent", id),
            || "not registered".to_owned(),
        )?;
        let item = out.attributes.unwrap_or_default();
        let state_text = string_attr(&item, agent_attr::STATE)?;
        AgentState::parse(&state_text)
            .ok_or_else(|| StoreError::Internal(format!("agent item has state {state_text:?}")))
    }

    async fn deregister_agent(&self, id: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key(attr::AGENT_ID, s(id))
            .send()
            .await
            .map_err(|e| sdk_error("DeleteItem agents", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(name: &str, value: AttributeValue) -> Item {
        HashMap::from([
            (
                attr::AGENT_ID.to_owned(),
                AttributeValue::S("a1".to_owned()),
            ),
            (name.to_owned(), value),
        ])
    }

    #[test]
    fn a_counter_below_zero_reads_as_zero_and_other_bad_numbers_are_named() {
        let n = |text: &str| AttributeValue::N(text.to_owned());

        assert_eq!(
            number_attr(&item("allocMemoryMb", n("-512")), "allocMemoryMb").unwrap(),
            0
        );
        assert_eq!(
            number_attr(&item("allocMemoryMb", n("512")), "allocMemoryMb").unwrap(),
            512
        );
        let fraction = number_attr(&item("allocMemoryMb", n("1.5")), "allocMemoryMb").unwrap_err();
        assert!(fraction.to_string().contains("\"1.5\""), "{fraction}");
        let missing = number_attr(&item("other", n("1")), "allocMemoryMb").unwrap_err();
        assert!(missing.to_string().contains("allocMemoryMb"), "{missing}");
    }
}
