//! The context both handlers share, and the writes they both make: finishing a task (giving its
//! resources back to its agent), replacing it per policy, killing it, and finishing its job.
//!
//! Every write is conditional on the version read. Replacements have ids derived from the task
//! they replace, so making one twice (a redelivered message, the reconciler repairing what a crash
//! left undone) is a `Conflict` that means "already done".

use std::sync::Mutex;

use titus_aws::{
    AwsClients, DynamoAgentStore, DynamoAllocationStore, DynamoJobStore, Names, SqsCommandQueue,
};
use titus_core::lease::AllocationStore;
use titus_core::messages::{AgentCommand, CommandQueue, KillTask, QueueError};
use titus_core::store::PageRequest;
use titus_core::{
    AgentStore, Job, JobId, JobState, JobStore, JobType, Resources, StoreError, Task, TaskId,
    TaskReason, TaskState,
};
use tracing::{info, warn};

use crate::config::StatusConfig;
use crate::dead_letter::{DeadLetterSink, SqsDeadLetterQueue};
use crate::decide::{self, NoReplacement, Replacement};
use crate::error::StatusError;

/// How often a conditional write is re-read and retried after losing a race.
pub(crate) const MAX_WRITE_ATTEMPTS: u32 = 5;
/// Page size when reading a job's tasks.
const TASK_PAGE_SIZE: u32 = PageRequest::MAX_PAGE_SIZE;

/// What the status function and the reconciler work with: the ports and the configuration. Built
/// once per process.
#[derive(Debug)]
pub struct StatusContext<J, A, C, Q, D> {
    pub jobs: J,
    pub agents: A,
    pub allocations: C,
    /// Agents' own queues, for kills.
    pub commands: Q,
    pub dead_letters: D,
    pub config: StatusConfig,
    /// Where the reconciler's sweep of active jobs stopped; the next run goes on from there. Kept
    /// in memory: a cold start sweeps from the newest job again, which is harmless.
    pub(crate) sweep_cursor: Mutex<Option<String>>,
}

/// The context on AWS.
pub type AwsStatusContext = StatusContext<
    DynamoJobStore,
    DynamoAgentStore,
    DynamoAllocationStore,
    SqsCommandQueue,
    SqsDeadLetterQueue,
>;

impl<J, A, C, Q, D> StatusContext<J, A, C, Q, D> {
    pub fn new(
        jobs: J,
        agents: A,
        allocations: C,
        commands: Q,
        dead_letters: D,
        config: StatusConfig,
    ) -> Self {
        StatusContext {
            jobs,
            agents,
            allocations,
            commands,
            dead_letters,
            config,
            sweep_cursor: Mutex::new(None),
        }
    }
}

impl AwsStatusContext {
    /// The stage's stores and queues. Fails when the status DLQ cannot be found (the stage is not
    /// provisioned).
    pub async fn with_clients(
        clients: &AwsClients,
        config: StatusConfig,
    ) -> Result<AwsStatusContext, QueueError> {
        let names = Names::new(&config.stage).map_err(QueueError::Internal)?;
        let dead_letters = SqsDeadLetterQueue::for_stage(clients.sqs.clone(), &names).await?;
        Ok(StatusContext::new(
            DynamoJobStore::new(clients.dynamodb.clone(), &names),
            DynamoAgentStore::new(clients.dynamodb.clone(), &names),
            DynamoAllocationStore::new(clients.dynamodb.clone(), &names),
            SqsCommandQueue::new(clients.sqs.clone()),
            dead_letters,
            config,
        ))
    }
}

/// What was done after a task finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterFinished {
    /// A replacement exists now: made here (`created`), or earlier by another delivery.
    Replaced {
        task_id: TaskId,
        not_before_ms: u64,
        created: bool,
    },
    /// No replacement; and whether the job finished with this task.
    NotReplaced {
        why: NoReplacement,
        job_finished: bool,
    },
    /// The task's job does not exist (a bug or a manual deletion); nothing to decide from.
    JobMissing,
}

impl<J, A, C, Q, D> StatusContext<J, A, C, Q, D>
where
    J: JobStore,
    A: AgentStore,
    C: AllocationStore,
    Q: CommandQueue,
    D: DeadLetterSink,
{
    /// Writes `next`, the Finished form of `current`, conditional on `current`'s version. A task
    /// that held resources gives them back to its agent in the same transaction, so a duplicate
    /// releases nothing.
    pub(crate) async fn write_finished(
        &self,
        current: &Task,
        next: &Task,
    ) -> Result<(), StoreError> {
        match (
            current.state().occupies_agent(),
            current.agent_id.as_deref(),
        ) {
            (true, Some(agent_id)) => {
                self.allocations
                    .finish_and_release(
                        next,
                        current.version,
                        agent_id,
                        Resources::of_container(&current.resources),
                    )
                    .await
            }
            _ => self.jobs.update_task(next, current.version).await,
        }
    }

    /// Finishes a task the control plane gives up on (lost, stuck, killed before placement).
    /// `None` when the task changed since it was read: it is decided again on the next run.
    pub(crate) async fn finish_task(
        &self,
        task: &Task,
        reason: TaskReason,
        message: &str,
        now_ms: u64,
    ) -> Result<Option<Task>, StoreError> {
        let mut next = task.clone();
        if next
            .transition(TaskState::Finished, Some(reason), message, now_ms)
            .is_err()
        {
            return Ok(None);
        }
        match self.write_finished(task, &next).await {
            Ok(()) => {
                info!(task_id = %task.id, job_id = %task.job_id, from = %task.state(), reason = %reason, "task finished by the control plane");
                Ok(Some(next))
            }
            Err(e) if e.is_conflict() => {
                info!(task_id = %task.id, "task changed while being finished; deciding again later");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// After `task` finished: its replacement per the job's policy, or else its job's end. Safe
    /// to repeat.
    pub(crate) async fn after_finished(
        &self,
        task: &Task,
        now_ms: u64,
    ) -> Result<AfterFinished, StoreError> {
        let Some(job) = self.jobs.get_job(&task.job_id).await? else {
            warn!(task_id = %task.id, job_id = %task.job_id, "finished task's job does not exist");
            return Ok(AfterFinished::JobMissing);
        };
        match decide::replacement(&job, task, now_ms, &self.config) {
            Replacement::Replace { not_before_ms } => {
                let (task_id, created) =
                    self.insert_replacement(task, now_ms, not_before_ms).await?;
                Ok(AfterFinished::Replaced {
                    task_id,
                    not_before_ms,
                    created,
                })
            }
            Replacement::Keep(why) => {
                info!(task_id = %task.id, job_id = %job.id, why = why.as_str(), "task not replaced");
                let job_finished = self
                    .finish_job_if_done(&job, Some(&task.id), now_ms)
                    .await?;
                Ok(AfterFinished::NotReplaced { why, job_finished })
            }
        }
    }

    /// Stores the replacement of `task`; `created` is false when it existed already.
    async fn insert_replacement(
        &self,
        task: &Task,
        now_ms: u64,
        not_before_ms: u64,
    ) -> Result<(TaskId, bool), StoreError> {
        let replacement = task.replacement(now_ms, not_before_ms);
        match self.jobs.insert_task(&replacement).await {
            Ok(()) => {
                info!(
                    task_id = %replacement.id,
                    replaces = %task.id,
                    job_id = %task.job_id,
                    not_before_ms,
                    reason = ?task.status.reason_code,
                    "replacement task created"
                );
                Ok((replacement.id, true))
            }
            Err(e) if e.is_conflict() => Ok((replacement.id, false)),
            Err(e) => Err(e),
        }
    }

    /// Finishes `job` when nothing of it is left to run: a batch job whose every slot is done
    /// (`normal` or `failed`), or a job being killed whose every task is Finished (`killed`). An
    /// enabled service runs until killed. Returns whether the job was finished here.
    ///
    /// The live-task index answers the common "not yet" with one small query. When it shows
    /// nothing live, the whole history is read once, and a replacement a crash left unmade is made
    /// instead of finishing the job.
    pub(crate) async fn finish_job_if_done(
        &self,
        job: &Job,
        just_finished: Option<&TaskId>,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        match (job.status.state, job.job_type()) {
            (JobState::Finished, _) | (JobState::Accepted, JobType::Service) => return Ok(false),
            _ => {}
        }
        if self.has_live_task(&job.id, just_finished).await? {
            return Ok(false);
        }
        let tasks = self.jobs.list_all_job_tasks(&job.id).await?;
        if tasks.iter().any(|t| !t.state().is_terminal()) {
            return Ok(false);
        }
        if job.status.state == JobState::Accepted && !decide::every_slot_has_a_task(job, &tasks) {
            // A job accepted a moment ago: the scheduler has not written its tasks yet.
            return Ok(false);
        }
        if job.status.state == JobState::Accepted {
            for head in decide::chain_heads(&tasks) {
                if let Replacement::Replace { not_before_ms } =
                    decide::replacement(job, head, now_ms, &self.config)
                {
                    // A crash between a task's Finished write and its replacement, or an index
                    // that has not caught up with a replacement made a moment ago.
                    self.insert_replacement(head, now_ms, not_before_ms).await?;
                    return Ok(false);
                }
            }
        }
        let outcome = decide::batch_job_outcome(&tasks).unwrap_or("failed");
        self.finish_job(&job.id, outcome, now_ms).await
    }

    /// Whether the job has a task that is not Finished, other than `except` (which the caller
    /// just finished, and the index may not show so yet).
    async fn has_live_task(
        &self,
        job_id: &JobId,
        except: Option<&TaskId>,
    ) -> Result<bool, StoreError> {
        let mut page = PageRequest::first(10);
        loop {
            let live = self.jobs.list_active_job_tasks(job_id, &page).await?;
            for task in &live.items {
                if Some(&task.id) == except {
                    continue;
                }
                // The index lags; a consistent read settles it.
                if let Some(current) = self.jobs.get_task(&task.id).await? {
                    if !current.state().is_terminal() {
                        return Ok(true);
                    }
                }
            }
            match live.next_cursor {
                Some(cursor) => page.cursor = Some(cursor),
                None => return Ok(false),
            }
        }
    }

    /// Moves the job to Finished: `killed` if it is being killed, else `outcome`.
    async fn finish_job(
        &self,
        job_id: &JobId,
        outcome: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let Some(mut job) = self.jobs.get_job(job_id).await? else {
                return Ok(false);
            };
            let expected_version = job.version;
            let (reason, message) = match job.status.state {
                JobState::Finished => return Ok(false),
                JobState::KillInitiated => (
                    TaskReason::Killed.as_str(),
                    "all tasks finished after the job was killed".to_owned(),
                ),
                JobState::Accepted => (outcome, format!("all tasks finished ({outcome})")),
            };
            if job
                .transition(JobState::Finished, reason, &message, now_ms)
                .is_err()
            {
                return Ok(false);
            }
            match self.jobs.update_job(&job, expected_version).await {
                Ok(()) => {
                    info!(job_id = %job_id, reason, "job finished");
                    return Ok(true);
                }
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict {
            entity: "job",
            id: job_id.to_string(),
            detail: format!("kept changing while being finished ({MAX_WRITE_ATTEMPTS} attempts)"),
        })
    }

    /// A job's tasks that are not Finished.
    pub(crate) async fn live_tasks(&self, job_id: &JobId) -> Result<Vec<Task>, StoreError> {
        let mut tasks = Vec::new();
        let mut page = PageRequest::first(TASK_PAGE_SIZE);
        loop {
            let result = self.jobs.list_active_job_tasks(job_id, &page).await?;
            tasks.extend(result.items);
            match result.next_cursor {
                Some(cursor) => page.cursor = Some(cursor),
                None => return Ok(tasks),
            }
        }
    }

    /// Kills a task: an Accepted one is Finished at once (and followed up); a placed one moves to
    /// KillInitiated with `reason`, and its agent gets a `KillTask`. A task already being killed
    /// or finished is left alone. Returns whether the task was written.
    pub(crate) async fn kill_task(
        &self,
        job: &Job,
        task: &Task,
        reason: TaskReason,
        message: &str,
        now_ms: u64,
    ) -> Result<bool, StatusError> {
        match task.state() {
            TaskState::Finished | TaskState::KillInitiated => Ok(false),
            TaskState::Accepted => {
                let Some(finished) = self.finish_task(task, reason, message, now_ms).await? else {
                    return Ok(false);
                };
                self.after_finished(&finished, now_ms).await?;
                Ok(true)
            }
            TaskState::Launched | TaskState::StartInitiated | TaskState::Started => {
                let mut next = task.clone();
                if next
                    .transition(TaskState::KillInitiated, Some(reason), message, now_ms)
                    .is_err()
                {
                    return Ok(false);
                }
                match self.jobs.update_task(&next, task.version).await {
                    Ok(()) => {}
                    Err(e) if e.is_conflict() => return Ok(false),
                    Err(e) => return Err(e.into()),
                }
                info!(task_id = %task.id, job_id = %job.id, reason = %reason, "task kill initiated");
                self.send_kill(
                    &next,
                    reason,
                    job.job_descriptor.container.kill_grace_period_sec,
                )
                .await?;
                Ok(true)
            }
        }
    }

    /// Sends a `KillTask` to the task's agent. Not delivered (no agent, a queue error) is logged
    /// and left to the KillInitiated timeout, which sends it again.
    pub(crate) async fn send_kill(
        &self,
        task: &Task,
        reason: TaskReason,
        grace_period_sec: u32,
    ) -> Result<bool, StatusError> {
        let Some(agent_id) = task.agent_id.as_deref() else {
            return Ok(false);
        };
        let Some(agent) = self.agents.get_agent(agent_id).await? else {
            info!(task_id = %task.id, agent_id, "agent of a task being killed is not registered");
            return Ok(false);
        };
        let command = AgentCommand::KillTask(KillTask {
            task_id: task.id.clone(),
            reason,
            grace_period_sec,
        });
        match self
            .commands
            .send_commands(&agent.queue_url, &[command])
            .await
        {
            Ok(failures) if failures.is_empty() => Ok(true),
            Ok(failures) => {
                for failure in failures {
                    warn!(task_id = %failure.task_id, agent_id, reason = %failure.reason, "kill not delivered; the KillInitiated timeout sends it again");
                }
                Ok(false)
            }
            Err(e) => {
                warn!(task_id = %task.id, agent_id, error = %e, "kill not delivered; the KillInitiated timeout sends it again");
                Ok(false)
            }
        }
    }
}
