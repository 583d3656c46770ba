//! Agent records in DynamoDB. Unlike jobs and tasks, an agent's item keeps every field as its own
//! attribute: the registrar writes identity and capacity, the scheduler adds to the allocation and
//! the status path releases it, all with atomic updates of their own attributes, so no writer
//! clobbers another.
//!
//! An agent writes nothing in the agents table. Its heartbeats and reports go to the heartbeats
//! table, under the key of the principal it was registered as (`Agent::heartbeat_key`), which in
//! AWS its role can write only as itself (DynamoDB's leading-key condition on `aws:userid`). A
//! heartbeat item counts for an agent only if it is under that agent's key and names it, so an
//! item written by anyone else is ignored.

use std::collections::HashMap;

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::{UpdateItemError, UpdateItemOutput};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use aws_sdk_dynamodb::Client;
use titus_core::ports::TaskLogs;
use titus_core::{Agent, AgentHeartbeat, AgentState, AgentStore, Resources, StoreError, TaskId};

use crate::dynamo::conditional::{condition_failed, conflict_if_refused};
use crate::dynamo::sdk_error;
use crate::resources::{attr, Names, HEARTBEAT_TTL_SECS};

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
    /// Which life of the agent this is (see `Agent::incarnation`).
    pub const INCARNATION: &str = "incarnation";
    /// The registration request that last wrote the record.
    pub const REGISTRATION_ID: &str = "registrationId";
    /// The principal the agent speaks as (`Agent::principal`), set at registration.
    pub const PRINCIPAL: &str = "principal";
    /// Where the agent sends its tasks' output (`Agent::task_logs`): the CloudWatch Logs group
    /// and its region, empty when it keeps them on the host.
    pub const LOG_GROUP: &str = "logGroup";
    pub const LOG_REGION: &str = "logRegion";
    pub const HEARTBEAT_AT_MS: &str = "heartbeatAtMs";
    /// The agent's own report (`AgentHeartbeat`), in its heartbeat item: the tasks it runs, their
    /// count, and what they use (`used` + the dimension). Written only by the agent.
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
        incarnation: match item.get(agent_attr::INCARNATION) {
            Some(_) => number_attr(item, agent_attr::INCARNATION)?,
            None => 0,
        },
        registration_id: optional_string(item, agent_attr::REGISTRATION_ID),
        principal: optional_string(item, agent_attr::PRINCIPAL),
        task_logs: Some(optional_string(item, agent_attr::LOG_GROUP))
            .filter(|group| !group.is_empty())
            .map(|group| TaskLogs {
                group,
                region: Some(optional_string(item, agent_attr::LOG_REGION))
                    .filter(|region| !region.is_empty()),
            }),
    })
}

fn optional_string(item: &Item, name: &str) -> String {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_default()
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// The agent store backed by the stage's agents and heartbeats tables.
#[derive(Debug, Clone)]
pub struct DynamoAgentStore {
    client: Client,
    table: String,
    heartbeats: String,
}

/// The agent's heartbeat item among `heartbeats` (by key), if one is under its key and names it.
fn own_heartbeat<'a>(agent: &Agent, heartbeats: &'a HashMap<String, Item>) -> Option<&'a Item> {
    heartbeats
        .get(agent.heartbeat_key())
        .filter(|item| item.get(attr::AGENT_ID).and_then(|v| v.as_s().ok()) == Some(&agent.id))
}

/// The record with the heartbeat of its heartbeat item, when that is later than the record's own
/// (its registration's).
fn with_heartbeat(mut agent: Agent, heartbeat: Option<&Item>) -> Agent {
    if let Some(at_ms) =
        heartbeat.and_then(|item| number_attr(item, agent_attr::HEARTBEAT_AT_MS).ok())
    {
        agent.heartbeat_at_ms = agent.heartbeat_at_ms.max(at_ms);
    }
    agent
}

/// The agent's own report in its item, if it ever sent one.
fn report_from_item(item: &Item) -> Result<Option<AgentHeartbeat>, StoreError> {
    let Some(list) = item.get(agent_attr::RUNNING_TASK_IDS) else {
        return Ok(None);
    };
    let running_task_ids = list
        .as_l()
        .map(|list| {
            list.iter()
                .filter_map(|v| v.as_s().ok())
                .map(|id| TaskId::from_string(id.as_str()))
                .collect()
        })
        .unwrap_or_default();
    Ok(Some(AgentHeartbeat {
        at_ms: number_attr(item, agent_attr::HEARTBEAT_AT_MS)?,
        running_task_ids,
        used: resources_from(item, "used")?,
    }))
}

/// The record a registration wrote, or why it failed.
fn decode_registered(
    result: Result<UpdateItemOutput, SdkError<UpdateItemError, HttpResponse>>,
) -> Result<Agent, StoreError> {
    let out = result.map_err(|e| sdk_error("UpdateItem agents register", e))?;
    agent_from_item(&out.attributes.unwrap_or_default())
}

impl DynamoAgentStore {
    /// One registration write. The first kind (`relive` false) creates the record or refreshes
    /// one that is not lost; the second brings a lost agent back as a new incarnation, on
    /// condition that none of its tasks hold resources any more.
    async fn write_registration(
        &self,
        agent: &Agent,
        relive: bool,
    ) -> Result<UpdateItemOutput, SdkError<UpdateItemError, HttpResponse>> {
        let mut sets = vec![
            "#queue = :queue",
            "#zone = :zone",
            "#type = :type",
            "#group = :group",
            "#heartbeat = :heartbeat",
            "#registration = :registration",
            "#principal = :principal",
            "#logGroup = :logGroup",
            "#logRegion = :logRegion",
            "#registered = if_not_exists(#registered, :heartbeat)",
            "#count = if_not_exists(#count, :zero)",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        let (condition, adds) = if relive {
            sets.push("#state = :active".to_owned());
            (
                "#state = :lost AND #count = :zero",
                " ADD #incarnation :one",
            )
        } else {
            sets.push("#state = if_not_exists(#state, :active)".to_owned());
            sets.push("#incarnation = if_not_exists(#incarnation, :one)".to_owned());
            ("attribute_not_exists(#id) OR #state <> :lost", "")
        };
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::AGENT_ID, s(&agent.id))
            .condition_expression(condition)
            .expression_attribute_names("#queue", agent_attr::QUEUE_URL)
            .expression_attribute_names("#zone", agent_attr::ZONE)
            .expression_attribute_names("#type", agent_attr::MACHINE_TYPE)
            .expression_attribute_names("#group", agent_attr::MACHINE_GROUP)
            .expression_attribute_names("#heartbeat", agent_attr::HEARTBEAT_AT_MS)
            .expression_attribute_names("#registration", agent_attr::REGISTRATION_ID)
            .expression_attribute_names("#principal", agent_attr::PRINCIPAL)
            .expression_attribute_names("#logGroup", agent_attr::LOG_GROUP)
            .expression_attribute_names("#logRegion", agent_attr::LOG_REGION)
            .expression_attribute_names("#registered", agent_attr::REGISTERED_AT_MS)
            .expression_attribute_names("#state", agent_attr::STATE)
            .expression_attribute_names("#count", agent_attr::TASK_COUNT)
            .expression_attribute_names("#incarnation", agent_attr::INCARNATION)
            .expression_attribute_values(":queue", s(&agent.queue_url))
            .expression_attribute_values(":zone", s(&agent.zone))
            .expression_attribute_values(":type", s(&agent.machine_type))
            .expression_attribute_values(":group", s(&agent.machine_group))
            .expression_attribute_values(":heartbeat", n(agent.heartbeat_at_ms))
            .expression_attribute_values(":registration", s(&agent.registration_id))
            .expression_attribute_values(":principal", s(&agent.principal))
            .expression_attribute_values(
                ":logGroup",
                s(agent.task_logs.as_ref().map_or("", |l| l.group.as_str())),
            )
            .expression_attribute_values(
                ":logRegion",
                s(agent
                    .task_logs
                    .as_ref()
                    .and_then(|l| l.region.as_deref())
                    .unwrap_or("")),
            )
            .expression_attribute_values(":active", s(AgentState::Active.as_str()))
            .expression_attribute_values(":lost", s(AgentState::Lost.as_str()))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1));
        if !relive {
            request = request.expression_attribute_names("#id", attr::AGENT_ID);
        }
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
        request
            .update_expression(format!("SET {}{adds}", sets.join(", ")))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
    }

    /// Every item of `table`, page by page (a Scan, with strong consistency).
    async fn scan_all(&self, table: &str) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start_key = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(table)
                .consistent_read(true)
                .set_exclusive_start_key(start_key)
                .send()
                .await
                .map_err(|e| sdk_error("Scan agents/heartbeats", e))?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start_key = Some(key),
                _ => return Ok(items),
            }
        }
    }

    /// Every record of the agents table, in id order, without their heartbeat items.
    async fn list_records(&self) -> Result<Vec<Agent>, StoreError> {
        let mut agents = Vec::new();
        for item in self.scan_all(&self.table).await? {
            // One item that is not a whole agent record (written by hand) must not stop every
            // reader.
            match agent_from_item(&item) {
                Ok(agent) => agents.push(agent),
                Err(e) => tracing::warn!(
                    agent_id = ?item.get(attr::AGENT_ID),
                    error = %e,
                    "agent item is not a whole record; left out"
                ),
            }
        }
        agents.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(agents)
    }

    /// Every heartbeat item, by key.
    async fn heartbeat_items(&self) -> Result<HashMap<String, Item>, StoreError> {
        Ok(self
            .scan_all(&self.heartbeats)
            .await?
            .into_iter()
            .filter_map(|item| {
                let key = item.get(attr::HEARTBEAT_KEY)?.as_s().ok()?.clone();
                Some((key, item))
            })
            .collect())
    }

    /// The agent's record as the agents table has it (without its heartbeat item).
    async fn record(&self, id: &str) -> Result<Option<Agent>, StoreError> {
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

    /// The heartbeat item of `agent`, if it has one of its own.
    async fn heartbeat_item(&self, agent: &Agent) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.heartbeats)
            .key(attr::HEARTBEAT_KEY, s(agent.heartbeat_key()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem heartbeats", e))?;
        let heartbeats = out
            .item
            .map(|item| HashMap::from([(agent.heartbeat_key().to_owned(), item)]))
            .unwrap_or_default();
        Ok(own_heartbeat(agent, &heartbeats).cloned())
    }

    pub fn new(client: Client, names: &Names) -> DynamoAgentStore {
        DynamoAgentStore {
            client,
            table: names.agents_table(),
            heartbeats: names.heartbeats_table(),
        }
    }

    pub fn table_name(&self) -> &str {
        &self.table
    }
}

impl AgentStore for DynamoAgentStore {
    async fn last_report(&self, id: &str) -> Result<Option<AgentHeartbeat>, StoreError> {
        let Some(agent) = self.record(id).await? else {
            return Ok(None);
        };
        match self.heartbeat_item(&agent).await? {
            Some(item) => report_from_item(&item),
            None => Ok(None),
        }
    }

    async fn list_reports(&self) -> Result<Vec<(String, AgentHeartbeat)>, StoreError> {
        let heartbeats = self.heartbeat_items().await?;
        let mut reports = Vec::new();
        for agent in self.list_records().await? {
            if let Some(Ok(Some(report))) = own_heartbeat(&agent, &heartbeats).map(report_from_item)
            {
                reports.push((agent.id, report));
            }
        }
        Ok(reports)
    }

    async fn register_agent(&self, agent: &Agent) -> Result<Agent, StoreError> {
        // An agent that restarts keeps its incarnation, its allocation and a draining state (they
        // are the control plane's). One that was declared lost is fenced: it comes back as a new
        // incarnation, and only once the control plane has finished every task of its old one.
        match self.write_registration(agent, false).await {
            Err(e) if condition_failed(&e) => {}
            other => return decode_registered(other),
        }
        match self.write_registration(agent, true).await {
            Err(e) if condition_failed(&e) => Err(StoreError::Conflict {
                entity: "agent",
                id: agent.id.clone(),
                detail: "it was declared lost and the tasks of its last incarnation are still \
                         being finished; expected to register again once they are"
                    .to_owned(),
            }),
            other => decode_registered(other),
        }
    }

    async fn get_agent(&self, id: &str) -> Result<Option<Agent>, StoreError> {
        let Some(agent) = self.record(id).await? else {
            return Ok(None);
        };
        let heartbeat = self.heartbeat_item(&agent).await?;
        Ok(Some(with_heartbeat(agent, heartbeat.as_ref())))
    }

    async fn list_agents(&self) -> Result<Vec<Agent>, StoreError> {
        let heartbeats = self.heartbeat_items().await?;
        Ok(self
            .list_records()
            .await?
            .into_iter()
            .map(|agent| {
                let heartbeat = own_heartbeat(&agent, &heartbeats);
                with_heartbeat(agent, heartbeat)
            })
            .collect())
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
    ) -> Result<Agent, StoreError> {
        let Some(agent) = self.record(id).await? else {
            return Err(StoreError::Conflict {
                entity: "agent",
                id: id.to_owned(),
                detail: "not registered".to_owned(),
            });
        };
        let running = report
            .running_task_ids
            .iter()
            .map(|id| s(id.as_str()))
            .collect();
        let mut item = Item::from([
            (attr::HEARTBEAT_KEY.to_owned(), s(agent.heartbeat_key())),
            (attr::AGENT_ID.to_owned(), s(id)),
            (agent_attr::HEARTBEAT_AT_MS.to_owned(), n(report.at_ms)),
            (
                agent_attr::RUNNING_TASK_IDS.to_owned(),
                AttributeValue::L(running),
            ),
            (
                agent_attr::RUNNING_TASK_COUNT.to_owned(),
                n(report.running_task_ids.len() as u64),
            ),
            (
                attr::EXPIRES_AT.to_owned(),
                n(report.at_ms / 1000 + HEARTBEAT_TTL_SECS),
            ),
        ]);
        for (dimension, value) in agent_attr::DIMENSIONS
            .iter()
            .zip(dimension_values(&report.used))
        {
            item.insert(format!("used{dimension}"), n(value));
        }
        self.client
            .put_item()
            .table_name(&self.heartbeats)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| sdk_error("PutItem heartbeats", e))?;
        let mut agent = agent;
        agent.heartbeat_at_ms = agent.heartbeat_at_ms.max(report.at_ms);
        Ok(agent)
    }

    async fn deregister_agent(&self, id: &str) -> Result<(), StoreError> {
        let record = self.record(id).await?;
        self.client
            .delete_item()
            .table_name(&self.table)
            .key(attr::AGENT_ID, s(id))
            .send()
            .await
            .map_err(|e| sdk_error("DeleteItem agents", e))?;
        let Some(agent) = record else {
            return Ok(());
        };
        // Its last heartbeat goes too, unless the item is another agent's by now.
        let result = self
            .client
            .delete_item()
            .table_name(&self.heartbeats)
            .key(attr::HEARTBEAT_KEY, s(agent.heartbeat_key()))
            .condition_expression("#id = :id")
            .expression_attribute_names("#id", attr::AGENT_ID)
            .expression_attribute_values(":id", s(id))
            .send()
            .await;
        match result {
            Err(e) if condition_failed(&e) => Ok(()),
            other => other
                .map(|_| ())
                .map_err(|e| sdk_error("DeleteItem heartbeats", e)),
        }
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
