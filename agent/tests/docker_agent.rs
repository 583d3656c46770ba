//! The agent against a real Docker engine and the AWS emulator: commands go to its SQS queue, its
//! status updates are read off the stage's status queue.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::*;
use titus_agent::bootstrap::{self, AwsAgent};
use titus_agent::runtime::label;
use titus_agent::{ContainerRuntime as _, DockerRuntime, RunOutcome};
use titus_aws::{AwsClients, Names};
use titus_core::messages::{AgentCommand, KillTask, LaunchTask};
use titus_core::{TaskReason, TaskState};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const WITHIN: Duration = Duration::from_secs(60);

/// An agent running in this process against the test's stage.
struct Running {
    clients: AwsClients,
    names: Names,
    docker: DockerRuntime,
    agent: Arc<AwsAgent>,
    agent_id: String,
    queue_url: String,
    status: StatusReader,
    drain: CancellationToken,
    stop: CancellationToken,
    run: JoinHandle<Result<RunOutcome, titus_agent::AgentError>>,
    _control: InProcessControlPlane,
    _cleanup: ContainerCleanup,
}

impl Running {
    async fn start(test: &str, extra_env: &[(&str, &str)]) -> Running {
        let docker = docker().await;
        let (clients, sdk_config, names) = fresh_stage().await;
        let agent_id = agent_id(test);
        let env = agent_env(&names, &agent_id, extra_env);
        let control = InProcessControlPlane::start(&clients, &names);
        let agent = bootstrap::start(&clients, &sdk_config, &env)
            .await
            .expect("the agent starts");
        let (drain, stop) = (CancellationToken::new(), CancellationToken::new());
        let run = tokio::spawn({
            let (agent, drain, stop) = (agent.clone(), drain.clone(), stop.clone());
            async move { agent.run(drain, stop).await }
        });
        let queue_url = queue_url(&clients, &names.agent_queue(&agent_id)).await;
        let status = StatusReader::new(&clients, &names).await;
        Running {
            _control: control,
            _cleanup: ContainerCleanup(agent_id.clone()),
            clients,
            names,
            docker,
            agent,
            agent_id,
            queue_url,
            status,
            drain,
            stop,
            run,
        }
    }

    async fn send(&self, command: AgentCommand) {
        send_command(&self.clients, &self.queue_url, &command).await;
    }

    async fn launch(&self, launch: &LaunchTask) {
        self.send(AgentCommand::LaunchTask(launch.clone())).await;
    }

    async fn finished(&mut self, launch: &LaunchTask) -> titus_core::messages::TaskStatusUpdate {
        self.status
            .wait_for(&launch.task_id, TaskState::Finished, WITHIN)
            .await
    }

    async fn containers_of(&self, launch: &LaunchTask) -> usize {
        self.docker
            .list(&[(label::TASK_ID, launch.task_id.as_str())])
            .await
            .unwrap()
            .len()
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = self.run.await;
    }
}

#[tokio::test]
async fn exits_are_reported_in_order_with_their_codes_and_logs() {
    let mut agent = Running::start("exits", &[]).await;
    let ok = launch("echo hello from the task; exit 0");
    let failing = launch("echo going down >&2; exit 3");

    agent.launch(&ok).await;
    agent.launch(&failing).await;
    let ok_finished = agent.finished(&ok).await;
    let failing_finished = agent.finished(&failing).await;

    for task in [&ok, &failing] {
        assert_eq!(
            agent.status.states(&task.task_id),
            vec![
                TaskState::StartInitiated,
                TaskState::Started,
                TaskState::Finished
            ]
        );
        let stamps: Vec<u64> = agent
            .status
            .updates(&task.task_id)
            .iter()
            .map(|u| u.timestamp_ms)
            .collect();
        assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "{stamps:?}");
    }
    assert_eq!(ok_finished.reason, Some(TaskReason::Normal));
    assert_eq!(ok_finished.exit_code, Some(0));
    assert_eq!(failing_finished.reason, Some(TaskReason::Failed));
    assert_eq!(failing_finished.exit_code, Some(3));
    assert!(!failing_finished.oom_killed);
    let log = titus_agent::task_log_tail(&agent.docker, ok.task_id.as_str(), 10)
        .await
        .unwrap();
    assert!(log.contains("hello from the task"), "{log:?}");
    let log = titus_agent::task_log_tail(&agent.docker, failing.task_id.as_str(), 10)
        .await
        .unwrap();
    assert!(log.contains("going down"), "{log:?}");
    agent.stop().await;
}

#[tokio::test]
async fn a_task_over_its_memory_limit_is_oom_killed() {
    let mut agent = Running::start("oom", &[]).await;
    // `tail` keeps a line in memory until it ends, and /dev/zero has no line ends: it grows
    // past the 512 MB limit within a second or two.
    let hog = launch("tail /dev/zero");

    agent.launch(&hog).await;
    let finished = agent.finished(&hog).await;

    assert!(finished.oom_killed, "{finished:?}");
    assert_eq!(finished.reason, Some(TaskReason::Failed));
    assert_eq!(finished.exit_code, Some(137));
    assert!(finished.message.contains("OOM"), "{}", finished.message);
    agent.stop().await;
}

#[tokio::test]
async fn a_kill_stops_a_task_on_sigterm_and_a_trap_gets_sigkill_after_the_grace_period() {
    let mut agent = Running::start("kill", &[]).await;
    let plain = launch("sleep 300");
    let mut trapping =
        launch("trap 'echo got SIGTERM, carrying on' TERM; while true; do sleep 0.2; done");
    trapping.kill_grace_period_sec = 30;
    agent.launch(&plain).await;
    agent.launch(&trapping).await;
    agent
        .status
        .wait_for(&plain.task_id, TaskState::Started, WITHIN)
        .await;
    agent
        .status
        .wait_for(&trapping.task_id, TaskState::Started, WITHIN)
        .await;

    let grace_secs = 3;
    for task in [&plain, &trapping] {
        agent
            .send(AgentCommand::KillTask(KillTask {
                task_id: task.task_id.clone(),
                reason: TaskReason::Killed,
                grace_period_sec: grace_secs,
            }))
            .await;
    }
    let plain_finished = agent.finished(&plain).await;
    let trapping_finished = agent.finished(&trapping).await;

    for task in [&plain, &trapping] {
        assert_eq!(
            agent.status.states(&task.task_id),
            vec![
                TaskState::StartInitiated,
                TaskState::Started,
                TaskState::KillInitiated,
                TaskState::Finished
            ]
        );
    }
    assert_eq!(plain_finished.reason, Some(TaskReason::Killed));
    assert_eq!(plain_finished.exit_code, Some(143), "ended by SIGTERM");
    assert_eq!(trapping_finished.reason, Some(TaskReason::Killed));
    assert_eq!(trapping_finished.exit_code, Some(137), "ended by SIGKILL");
    // SIGKILL came no earlier than the kill's grace period after SIGTERM (not the task's own 30 s).
    let kill_initiated = agent
        .status
        .wait_for(&trapping.task_id, TaskState::KillInitiated, WITHIN)
        .await;
    let waited_ms = trapping_finished.timestamp_ms - kill_initiated.timestamp_ms;
    assert!(
        waited_ms >= grace_secs as u64 * 1000 - 100,
        "{waited_ms} ms"
    );
    let log = titus_agent::task_log_tail(&agent.docker, trapping.task_id.as_str(), 10)
        .await
        .unwrap();
    assert!(log.contains("got SIGTERM"), "{log:?}");
    agent.stop().await;
}

#[tokio::test]
async fn a_task_past_its_runtime_limit_is_stopped() {
    let mut agent = Running::start("limit", &[]).await;
    let mut long = launch("sleep 300");
    long.runtime_limit_sec = Some(2);

    agent.launch(&long).await;
    let finished = agent.finished(&long).await;

    assert_eq!(finished.reason, Some(TaskReason::RuntimeLimitExceeded));
    assert!(
        finished.message.contains("runtime limit of 2 s"),
        "{}",
        finished.message
    );
    assert_eq!(
        agent.status.states(&long.task_id),
        vec![
            TaskState::StartInitiated,
            TaskState::Started,
            TaskState::KillInitiated,
            TaskState::Finished
        ]
    );
    agent.stop().await;
}

#[tokio::test]
async fn a_missing_image_that_cannot_be_pulled_finishes_the_task_within_seconds() {
    let mut agent = Running::start("noimage", &[]).await;
    let mut missing = launch("true");
    missing.image = "titus-test/does-not-exist:1".to_owned();

    agent.launch(&missing).await;
    let finished = agent
        .status
        .wait_for(
            &missing.task_id,
            TaskState::Finished,
            Duration::from_secs(20),
        )
        .await;

    assert_eq!(finished.reason, Some(TaskReason::LocalSystemError));
    assert!(
        finished
            .message
            .contains("could not pull image \"titus-test/does-not-exist:1\""),
        "{}",
        finished.message
    );
    assert_eq!(
        agent.status.states(&missing.task_id),
        vec![TaskState::StartInitiated, TaskState::Finished]
    );
    assert_eq!(agent.containers_of(&missing).await, 0);
    agent.stop().await;
}

#[tokio::test]
async fn a_malformed_command_goes_to_the_dead_letter_queue_and_the_agent_keeps_working() {
    let mut agent = Running::start("dlq", &[]).await;
    let dlq_url = queue_url(
        &agent.clients,
        &format!("{}-dlq", agent.names.agent_queue(&agent.agent_id)),
    )
    .await;

    send_body(
        &agent.clients,
        &agent.queue_url,
        "{\"type\":\"launchTask\",\"oops\":",
    )
    .await;
    let mut dead = Vec::new();
    for _ in 0..30 {
        dead = messages_with_reasons(&agent.clients, &dlq_url).await;
        if !dead.is_empty() {
            break;
        }
    }
    let after = launch("exit 0");
    agent.launch(&after).await;
    let finished = agent.finished(&after).await;

    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0, "{\"type\":\"launchTask\",\"oops\":");
    assert!(
        dead[0].1.contains("not an agent command"),
        "kept with its reason: {:?}",
        dead[0].1
    );
    assert_eq!(finished.reason, Some(TaskReason::Normal));
    assert!(!agent.run.is_finished());
    agent.stop().await;
}

#[tokio::test]
async fn a_duplicated_launch_runs_one_container() {
    let mut agent = Running::start("dup", &[]).await;
    let task = launch("sleep 2");

    agent.launch(&task).await;
    agent.launch(&task).await;
    agent
        .status
        .wait_for(&task.task_id, TaskState::Started, WITHIN)
        .await;
    let finished = agent.finished(&task).await;
    agent.launch(&task).await;
    agent.status.drain_for(Duration::from_secs(3)).await;

    assert_eq!(finished.reason, Some(TaskReason::Normal));
    assert_eq!(agent.containers_of(&task).await, 1);
    let finished_count = agent
        .status
        .states(&task.task_id)
        .iter()
        .filter(|s| **s == TaskState::Finished)
        .count();
    assert_eq!(finished_count, 1);
    agent.stop().await;
}

#[tokio::test]
async fn a_privileged_launch_is_refused_unless_allowed() {
    let mut agent = Running::start("priv", &[]).await;
    let mut privileged = launch("true");
    privileged.privileged = true;

    agent.launch(&privileged).await;
    let finished = agent.finished(&privileged).await;

    assert_eq!(finished.reason, Some(TaskReason::InvalidRequest));
    assert!(
        finished.message.contains("privileged"),
        "{}",
        finished.message
    );
    assert_eq!(agent.containers_of(&privileged).await, 0);
    agent.stop().await;
}

#[tokio::test]
async fn a_drain_lets_running_tasks_finish_then_deregisters() {
    let mut agent = Running::start("drain", &[]).await;
    let task = launch("sleep 3");
    agent.launch(&task).await;
    agent
        .status
        .wait_for(&task.task_id, TaskState::Started, WITHIN)
        .await;

    agent.drain.cancel();
    let finished = agent.finished(&task).await;
    let outcome = tokio::time::timeout(WITHIN, &mut agent.run)
        .await
        .expect("the drain completes")
        .unwrap()
        .unwrap();

    assert_eq!(finished.reason, Some(TaskReason::Normal));
    assert_eq!(outcome, RunOutcome::Drained);
    assert!(agent.agent.running_tasks().is_empty());
    let store = titus_aws::DynamoAgentStore::new(agent.clients.dynamodb.clone(), &agent.names);
    use titus_core::AgentStore as _;
    let deadline = tokio::time::Instant::now() + WITHIN;
    while store.get_agent(&agent.agent_id).await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the control plane did not deregister the drained agent"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
