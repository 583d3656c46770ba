//! Removes what a stage created at run time, which its CloudFormation stack does not know: the
//! instances the scaler launched (tagged `titus:stage={stage}` and
//! `titus:managed-by=titus-scaler`) and the agents' own queues (`titus-{stage}-agent-{agent id}`
//! and their `-dlq`). Run before the stack is destroyed, so that no instance holds the agents'
//! subnets or security group and no queue outlives the stage. Finding is separate from removing,
//! so a dry run can show the plan and change nothing; running it again finds nothing left.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{Filter, InstanceStateName};
use aws_sdk_sqs::error::ProvideErrorMetadata as _;

use crate::clients::AwsClients;
use crate::ec2::{describe_instances, stage_filter, tag_value, terminate_instances};
use crate::resources::{tag, Names};

/// How many queue URLs one ListQueues page asks for: SQS's maximum.
pub const LIST_QUEUES_PAGE_SIZE: i32 = 1000;
/// Instance ids per DescribeInstances filter while waiting (EC2 caps a filter's values).
const DESCRIBE_BATCH: usize = 200;
/// The states of an instance that still runs or may run again: the ones teardown terminates.
const LIVE_STATES: [&str; 4] = ["pending", "running", "stopping", "stopped"];

/// Why a teardown could not finish. Each variant names what failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TeardownError {
    #[error("{operation} on {resource} failed: {message}")]
    Aws {
        operation: &'static str,
        resource: String,
        message: String,
    },
}

fn aws_error(
    operation: &'static str,
    resource: &str,
    err: impl std::error::Error + 'static,
) -> TeardownError {
    TeardownError::Aws {
        operation,
        resource: resource.to_owned(),
        message: aws_sdk_ec2::error::DisplayErrorContext(err).to_string(),
    }
}

/// One instance the stage's scaler launched, as teardown found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageInstance {
    pub id: String,
    /// The EC2 state name (`running`, `stopped`, ...).
    pub state: String,
}

/// One agent queue (or an agent queue's DLQ) of the stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentQueue {
    pub name: String,
    pub url: String,
}

/// What a teardown of the stage would remove.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TeardownPlan {
    pub instances: Vec<StageInstance>,
    pub queues: Vec<AgentQueue>,
}

impl TeardownPlan {
    pub fn is_empty(&self) -> bool {
        self.instances.is_empty() && self.queues.is_empty()
    }
}

/// What a teardown removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TeardownReport {
    /// Instances asked to terminate.
    pub terminated: Vec<String>,
    /// Of those, the ones not yet shutting down or terminated when the wait ran out.
    pub still_running: Vec<String>,
    /// Queues deleted.
    pub deleted_queues: Vec<String>,
    /// Queues listed but gone by the time they were deleted (SQS lists a deleted queue for up to
    /// a minute).
    pub already_gone: Vec<String>,
}

/// Finds what the stage's scaler and agents created: its live scaler-launched instances and its
/// agents' queues.
pub async fn plan(clients: &AwsClients, names: &Names) -> Result<TeardownPlan, TeardownError> {
    Ok(TeardownPlan {
        instances: stage_instances(&clients.ec2, names.stage()).await?,
        queues: agent_queues(&clients.sqs, names, LIST_QUEUES_PAGE_SIZE).await?,
    })
}

/// Removes what `plan` found: terminates the instances, waits up to `wait` for each to be
/// shutting down or terminated, then deletes the queues (an agent still running would find its
/// queue gone). A queue already deleted counts as gone, not as a failure.
pub async fn execute(
    clients: &AwsClients,
    plan: &TeardownPlan,
    wait: Duration,
    poll: Duration,
) -> Result<TeardownReport, TeardownError> {
    let mut report = TeardownReport::default();
    let ids: Vec<String> = plan.instances.iter().map(|i| i.id.clone()).collect();
    terminate_instances(&clients.ec2, &ids, |chunk| {
        report.terminated.extend(chunk.iter().cloned())
    })
    .await
    .map_err(|(chunk, e)| aws_error("TerminateInstances", &chunk.join(","), e))?;
    report.still_running = wait_until_stopping(&clients.ec2, &ids, wait, poll).await?;
    for queue in &plan.queues {
        match clients
            .sqs
            .delete_queue()
            .queue_url(&queue.url)
            .send()
            .await
        {
            Ok(_) => report.deleted_queues.push(queue.name.clone()),
            Err(err)
                if matches!(
                    err.code(),
                    Some("AWS.SimpleQueueService.NonExistentQueue" | "QueueDoesNotExist")
                ) =>
            {
                report.already_gone.push(queue.name.clone());
            }
            Err(err) => return Err(aws_error("DeleteQueue", &queue.name, err)),
        }
    }
    Ok(report)
}

/// The stage's instances that the scaler launched and that are not yet shutting down or
/// terminated, sorted by id. The tags are matched exactly, by the filter and again here.
pub async fn stage_instances(
    ec2: &aws_sdk_ec2::Client,
    stage: &str,
) -> Result<Vec<StageInstance>, TeardownError> {
    let filters = vec![
        stage_filter(stage),
        Filter::builder()
            .name(format!("tag:{}", tag::MANAGED_BY))
            .values(tag::SCALER)
            .build(),
        Filter::builder()
            .name("instance-state-name")
            .set_values(Some(LIVE_STATES.iter().map(|s| (*s).to_owned()).collect()))
            .build(),
    ];
    let found = describe(ec2, filters, &format!("instances of stage {stage:?}")).await?;
    let mut instances: Vec<StageInstance> = found
        .into_iter()
        .filter(|i| {
            tag_value(i, tag::STAGE) == Some(stage)
                && tag_value(i, tag::MANAGED_BY) == Some(tag::SCALER)
                && LIVE_STATES.contains(&state_name(i).as_str())
        })
        .filter_map(|i| {
            Some(StageInstance {
                id: i.instance_id()?.to_owned(),
                state: state_name(&i),
            })
        })
        .collect();
    instances.sort_by(|a, b| a.id.cmp(&b.id));
    instances.dedup();
    Ok(instances)
}

/// Every DescribeInstances page for `filters`.
async fn describe(
    ec2: &aws_sdk_ec2::Client,
    filters: Vec<Filter>,
    what: &str,
) -> Result<Vec<aws_sdk_ec2::types::Instance>, TeardownError> {
    describe_instances(ec2, filters)
        .await
        .map_err(|e| aws_error("DescribeInstances", what, e))
}

fn state_name(instance: &aws_sdk_ec2::types::Instance) -> String {
    instance
        .state()
        .and_then(|s| s.name())
        .map(|n| n.as_str().to_owned())
        .unwrap_or_default()
}

/// Polls until every instance of `ids` is shutting down or terminated (or no longer listed), or
/// `wait` has passed; returns the ones still short of that.
async fn wait_until_stopping(
    ec2: &aws_sdk_ec2::Client,
    ids: &[String],
    wait: Duration,
    poll: Duration,
) -> Result<Vec<String>, TeardownError> {
    let started = Instant::now();
    let mut pending: Vec<String> = ids.to_vec();
    while !pending.is_empty() {
        let mut still = BTreeSet::new();
        // A filter rather than InstanceIds: an id EC2 has forgotten is not an error.
        for chunk in pending.chunks(DESCRIBE_BATCH) {
            let filter = Filter::builder()
                .name("instance-id")
                .set_values(Some(chunk.to_vec()))
                .build();
            for instance in describe(ec2, vec![filter], "terminated instances").await? {
                let gone = matches!(
                    instance.state().and_then(|s| s.name()),
                    Some(InstanceStateName::ShuttingDown | InstanceStateName::Terminated)
                );
                if let (false, Some(id)) = (gone, instance.instance_id()) {
                    still.insert(id.to_owned());
                }
            }
        }
        pending = still.into_iter().collect();
        if pending.is_empty() || started.elapsed() >= wait {
            break;
        }
        tokio::time::sleep(poll.min(wait.saturating_sub(started.elapsed()))).await;
    }
    Ok(pending)
}

/// The stage's agent queues and their DLQs, by name, every ListQueues page of the prefix
/// `titus-{stage}-agent-` (`page_size` URLs a page). A prefix is not a stage: stage `a` lists
/// `titus-a-agent-...` only, never stage `ab`'s queues, but a stage named `a-agent-x` has queues
/// under the same prefix (`titus-a-agent-x-submit`); every queue of such a stage, found by its
/// fixed queues among the listed ones, is left out.
pub async fn agent_queues(
    sqs: &aws_sdk_sqs::Client,
    names: &Names,
    page_size: i32,
) -> Result<Vec<AgentQueue>, TeardownError> {
    let prefix = names.agent_queue("");
    let mut listed = Vec::new();
    let mut next_token = None;
    loop {
        let out = sqs
            .list_queues()
            .queue_name_prefix(&prefix)
            .max_results(page_size)
            .set_next_token(next_token)
            .send()
            .await
            .map_err(|e| aws_error("ListQueues", &format!("{prefix}*"), e))?;
        for url in out.queue_urls() {
            let name = url.rsplit('/').next().unwrap_or_default();
            listed.push(AgentQueue {
                name: name.to_owned(),
                url: url.clone(),
            });
        }
        match out.next_token {
            Some(token) if !token.is_empty() => next_token = Some(token),
            _ => break,
        }
    }
    let names_listed: Vec<&str> = listed.iter().map(|q| q.name.as_str()).collect();
    let foreign = foreign_stages(names, &names_listed);
    let mut queues: Vec<AgentQueue> = listed
        .into_iter()
        .filter(|q| is_agent_queue_of(names, &q.name))
        .filter(|q| {
            !foreign
                .iter()
                .any(|other| q.name.starts_with(&format!("titus-{other}-")))
        })
        .collect();
    queues.sort_by(|a, b| a.name.cmp(&b.name));
    queues.dedup_by(|a, b| a.name == b.name);
    Ok(queues)
}

/// Whether `queue` is named like an agent queue of the stage, or its DLQ:
/// `titus-{stage}-agent-{agent id}[-dlq]`, the agent id 1 to 40 letters, digits, `-` or `_`.
pub fn is_agent_queue_of(names: &Names, queue: &str) -> bool {
    let Some(rest) = queue.strip_prefix(&names.agent_queue("")) else {
        return false;
    };
    let id = rest.strip_suffix("-dlq").unwrap_or(rest);
    (1..=40).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The other stages whose fixed queues (`titus-{other}-submit`, ...) are among `listed`: stages
/// named `{stage}-agent-...`, whose names share the stage's agent-queue prefix.
fn foreign_stages(names: &Names, listed: &[&str]) -> BTreeSet<String> {
    const PROBE: &str = "probe";
    let probe = Names::new(PROBE).expect("the probe stage name is valid");
    let probe_prefix = format!("titus-{PROBE}-");
    let fixed_suffixes: Vec<String> = probe
        .definitions()
        .queues
        .iter()
        .flat_map(|q| {
            std::iter::once(q.name.clone()).chain(q.dead_letter.as_ref().map(|d| d.name.clone()))
        })
        .filter_map(|name| name.strip_prefix(&probe_prefix).map(|s| format!("-{s}")))
        .collect();
    let own_prefix = names.agent_queue("");
    listed
        .iter()
        .filter(|name| name.starts_with(&own_prefix))
        .flat_map(|name| {
            fixed_suffixes.iter().filter_map(move |suffix| {
                let other = name.strip_prefix("titus-")?.strip_suffix(suffix.as_str())?;
                (other != names.stage() && Names::new(other).is_ok()).then(|| other.to_owned())
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_queues_are_named_after_the_stage_and_a_valid_agent_id() {
        let names = Names::new("s1").unwrap();
        assert!(is_agent_queue_of(
            &names,
            "titus-s1-agent-i-0123456789abcdef0"
        ));
        assert!(is_agent_queue_of(
            &names,
            "titus-s1-agent-i-0123456789abcdef0-dlq"
        ));
        assert!(is_agent_queue_of(&names, "titus-s1-agent-s1-agent-1"));
        assert!(!is_agent_queue_of(&names, "titus-s1x-agent-i-1"));
        assert!(!is_agent_queue_of(&names, "titus-s1-agent-"));
        assert!(!is_agent_queue_of(&names, "titus-s1-status"));
        assert!(!is_agent_queue_of(&names, "titus-s1-agent-a.b"));
    }

    #[test]
    fn a_stage_named_like_an_agent_queue_is_foreign() {
        let names = Names::new("s1").unwrap();
        let listed = [
            "titus-s1-agent-i-1",
            "titus-s1-agent-x-submit",
            "titus-s1-agent-x-status-dlq",
            "titus-s1-agent-x-agent-i-2",
        ];
        assert_eq!(
            foreign_stages(&names, &listed)
                .into_iter()
                .collect::<Vec<_>>(),
            vec!["s1-agent-x".to_owned()]
        );
    }
}
