//! Unit tests of the agent's logic over in-memory ports and a fake container runtime.
use std::collections::BTreeMap;

use titus_core::job::{ContainerResources, HostMount};
use titus_core::messages::TaskStatusUpdate;
use titus_core::{AgentStore as _, TaskState};

use super::*;
use crate::agent::HostServices;
use crate::runtime::{container_name, finished_container_name, ContainerSpec, ContainerStatus};
use crate::testing::{FakeRuntime, MemoryCommandSource, MemoryLink, MemoryStatusSink};

type TestAgent = Agent<FakeRuntime, MemoryCommandSource, MemoryStatusSink, MemoryLink>;

const IMAGE: &str = "titus-test/busybox:1";

struct Harness {
    agent: Arc<TestAgent>,
    runtime: FakeRuntime,
    sink: MemoryStatusSink,
    queue: MemoryCommandSource,
    link: MemoryLink,
}

fn identity() -> AgentIdentity {
    AgentIdentity {
        agent_id: "agent-1".to_owned(),
        zone: "local".to_owned(),
        machine_type: "local".to_owned(),
        machine_group: "default".to_owned(),
        capacity: Resources {
            cpu_millis: 4000,
            memory_mb: 8192,
            disk_mb: 100_000,
            network_mbps: 1000,
            gpu: 0,
        },
    }
}

async fn harness_with(runtime: FakeRuntime, link: MemoryLink, settings: AgentSettings) -> Harness {
    let sink = MemoryStatusSink::default();
    let queue = MemoryCommandSource::default();
    let mut identity = identity();
    identity.capacity.gpu = settings.gpu;
    let agent = Agent::start(
        identity,
        settings,
        runtime.clone(),
        queue.clone(),
        sink.clone(),
        link.clone(),
        HostServices::none(),
    )
    .await
    .unwrap();
    Harness {
        agent,
        runtime,
        sink,
        queue,
        link,
    }
}

async fn harness() -> Harness {
    let runtime = FakeRuntime::new();
    runtime.add_image(IMAGE);
    harness_with(runtime, MemoryLink::default(), AgentSettings::default()).await
}

fn launch(task: &str, command: &[&str]) -> LaunchTask {
    LaunchTask {
        task_id: TaskId::from_string(task),
        job_id: JobId::from_string("job-1"),
        image: IMAGE.to_owned(),
        entry_point: vec![],
        command: command.iter().map(|c| (*c).to_owned()).collect(),
        env: BTreeMap::from([("GREETING".to_owned(), "hello".to_owned())]),
        secrets: BTreeMap::new(),
        resources: ContainerResources {
            cpu: 0.5,
            gpu: 0,
            memory_mb: 512,
            disk_mb: 10_000,
            network_mbps: 128,
            ..ContainerResources::default()
        },
        kill_grace_period_sec: 7,
        runtime_limit_sec: None,
        privileged: false,
        host_network: false,
        host_mounts: vec![],
        incarnation: 1,
        placement_version: 1,
        iam_role: String::new(),
        security_groups: vec![],
        security_context: Default::default(),
    }
}

fn body(command: AgentCommand) -> String {
    serde_json::to_string(&command).unwrap()
}

fn updates(sink: &MemoryStatusSink, task: &str) -> Vec<TaskStatusUpdate> {
    sink.sent()
        .into_iter()
        .filter(|u| u.task_id.as_str() == task)
        .collect()
}

fn states(sink: &MemoryStatusSink, task: &str) -> Vec<TaskState> {
    updates(sink, task).iter().map(|u| u.state).collect()
}

async fn finished(sink: &MemoryStatusSink, task: &str) -> TaskStatusUpdate {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(update) = updates(sink, task)
                .into_iter()
                .find(|u| u.state == TaskState::Finished)
            {
                return update;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the task finishes")
}

#[tokio::test]
async fn a_task_that_exits_zero_is_reported_in_order_and_finishes_normal() {
    let h = harness().await;

    let disposition = h
        .agent
        .handle_message(&body(AgentCommand::LaunchTask(launch(
            "t1",
            &["exit", "0"],
        ))))
        .await;
    let finished = finished(&h.sink, "t1").await;

    assert_eq!(disposition, Disposition::Delete);
    assert_eq!(
        states(&h.sink, "t1"),
        vec![
            TaskState::StartInitiated,
            TaskState::Started,
            TaskState::Finished
        ]
    );
    assert_eq!(finished.reason, Some(TaskReason::Normal));
    assert_eq!(finished.exit_code, Some(0));
    assert_eq!(finished.agent_id, "agent-1");
    assert!(!finished.oom_killed);
}

#[tokio::test]
async fn a_non_zero_exit_finishes_failed_with_its_code() {
    let h = harness().await;

    h.agent
        .handle_message(&body(AgentCommand::LaunchTask(launch(
            "t1",
            &["exit", "3"],
        ))))
        .await;
    let finished = finished(&h.sink, "t1").await;

    assert_eq!(finished.reason, Some(TaskReason::Failed));
    assert_eq!(finished.exit_code, Some(3));
    assert!(finished.message.contains("code 3"), "{}", finished.message);
}

#[tokio::test]
async fn an_oom_kill_finishes_failed_with_the_oom_flag() {
    let h = harness().await;

    h.agent
        .handle_message(&body(AgentCommand::LaunchTask(launch("t1", &["oom"]))))
        .await;
    let finished = finished(&h.sink, "t1").await;

    assert_eq!(finished.reason, Some(TaskReason::Failed));
    assert!(finished.oom_killed);
    assert!(finished.message.contains("OOM"), "{}", finished.message);
}

#[tokio::test]
async fn the_container_gets_the_tasks_settings_and_labels() {
    let h = harness().await;

    h.agent
        .handle_message(&body(AgentCommand::LaunchTask(LaunchTask {
            runtime_limit_sec: Some(600),
            placement_version: 4,
            ..launch("t1", &["sleep", "100"])
        })))
        .await;
    let spec = h.runtime.spec("titus-t1").unwrap();

    assert_eq!(spec.image, IMAGE);
    assert_eq!(spec.nano_cpus, 500_000_000);
    assert_eq!(spec.memory_bytes, 512 * 1024 * 1024);
    assert_eq!(spec.pids_limit, 4096);
    assert!(!spec.privileged && !spec.host_network && spec.host_mounts.is_empty());
    assert_eq!(spec.labels[label::AGENT_ID], "agent-1");
    assert_eq!(spec.labels[label::JOB_ID], "job-1");
    assert_eq!(spec.labels[label::TASK_ID], "t1");
    assert_eq!(spec.labels[label::RUNTIME_LIMIT_SECS], "600");
    assert_eq!(spec.labels[label::INCARNATION], "1");
    assert_eq!(spec.labels[label::PLACEMENT_VERSION], "4");
    assert_eq!(spec.env["GREETING"], "hello");
    assert_eq!(spec.env["TITUS_TASK_ID"], "t1");
    assert_eq!(spec.log.driver, "json-file");
    h.agent.shutdown();
}

#[tokio::test]
async fn a_privileged_launch_is_refused_without_a_container() {
    let h = harness().await;
    let mut request = launch("t1", &["exit", "0"]);
    request.privileged = true;
    request.host_mounts = vec![HostMount {
        host_path: "/etc".to_owned(),
        container_path: "/host-etc".to_owned(),
        read_only: true,
    }];

    let disposition = h
        .agent
        .handle_message(&body(AgentCommand::LaunchTask(request)))
        .await;
    let finished = finished(&h.sink, "t1").await;

    assert_eq!(disposition, Disposition::Delete);
    assert_eq!(finished.reason, Some(TaskReason::InvalidRequest));
    assert!(
        finished.message.contains("privileged"),
        "{}",
        finished.message
    );
    assert!(
        finished.message.contains("host mounts"),
        "{}",
        finished.message
    );
    assert_eq!(states(&h.sink, "t1"), vec![TaskState::Finished]);
    assert!(h.runtime.container_names().is_empty());
}

#[tokio::test]
async fn privileges_are_granted_when_configured() {
    let runtime = FakeRuntime::new();
    runtime.add_image(IMAGE);
    let settings = AgentSettings {
        allow_privileged: true,
        allow_host_network: true,
        ..AgentSettings::default()
    };
    let h = harness_with(runtime, MemoryLink::default(), settings).await;
    let mut request = launch("t1", &["sleep", "100"]);
    request.privileged = true;
    request.host_network = true;

    h.agent
        .handle_message(&body(AgentCommand::LaunchTask(request)))
        .await;

    let spec = h.runtime.spec("titus-t1").unwrap();
    assert!(spec.privileged && spec.host_network);
    h.agent.shutdown();
}

#[tokio::test]
async fn a_duplicate_launch_creates_no_second_container() {
    let h = harness().await;
    let message = body(AgentCommand::LaunchTask(launch("t1", &["sleep", "100"])));

    let (first, second) = tokio::join!(
        h.agent.handle_message(&message),
        h.agent.handle_message(&message)
    );
    let third = h.agent.handle_message(&message).await;

    assert_eq!(
        (first, second, third),
        (
            Disposition::Delete,
            Disposition::Delete,
            Disposition::Delete
        )
    );
    let creates = h
        .runtime
        .calls()
        .iter()
        .filter(|c| c.starts_with("create"))
        .count();
    assert_eq!(creates, 1);
    assert_eq!(h.runtime.container_names(), vec!["titus-t1"]);
    h.agent.shutdown();
}

#[tokio::test]
async fn a_launch_of_a_finished_task_is_ignored() {
    let h = harness().await;
    let message = body(AgentCommand::LaunchTask(launch("t1", &["exit", "0"])));
    h.agent.handle_message(&message).await;
    finished(&h.sink, "t1").await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    let again = h.agent.handle_message(&message).await;

    assert_eq!(again, Disposition::Delete);
    let creates = h
        .runtime
        .calls()
        .iter()
        .filter(|c| c.starts_with("create"))
        .count();
    assert_eq!(creates, 1);
    assert_eq!(states(&h.sink, "t1").len(), 3);
}

#[tokio::test]
async fn a_missing_image_is_pulled_then_run() {
    let runtime = FakeRuntime::new();
    let h = harness_with(runtime, MemoryLink::default(), AgentSettings::default()).await;

    h.agent
        .handle_message(&body(AgentCommand::LaunchTask(launch(
            "t1",
            &["exit", "0"],
        ))))
        .await;
    let finished = finished(&h.sink, "t1").await;

    assert_eq!(finished.reason, Some(TaskReason::Normal));
    let calls = h.runtime.calls();
    assert_eq!(
        &calls[..3],
        &[
            "create titus-t1",
            format!("pull {IMAGE}").as_str(),
            "create titus-t1"
        ]
    );
}

#[tokio::test]
async fn an_unreachable_registry_finishes_the_task_with_a_local_system_error() {
    let runtime = FakeRuntime::new();
    runtime.fail_pull(
        IMAGE,
        RuntimeError::PullFailed {
            image: IMAGE.to_owned(),
            message: "dial tcp: lookup registry: no such host".to_owned(),
        },
    );
    let h = harness_with(runtime, MemoryLink::default(), AgentSettings::default()).await;

    let disposition = h
        .agent
        .handle_message(&body(AgentCommand::LaunchTask(launch(
            "t1",
            &["exit", "0"],
        ))))
        .await;
    let finished = finished(&h.sink, "t1").await;

    assert_eq!(disposition, Disposition::Delete);
    assert_eq!(finished.reason, Some(TaskReason::LocalSystemError));
    assert!(
        finished.message.contains("could not pull image"),
        "{}",
        finished.message
    );
    assert_eq!(finished.exit_code, None);
    assert!(h.runtime.container_names().is_empty());
}

#[tokio::test]
async fn an_image_the_registry_does_not_have_is_an_invalid_request() {
    let runtime = FakeRuntime::new();
    runtime.fail_pull(
        IMAGE,
        RuntimeError::ImageNotFound {
            image: IMAGE.to_owned(),
            message: "manifest unknown".to_owned(),
        },
    );
    let h = harness_with(runtime, MemoryLink::default(), AgentSettings::default()).await;

    h.agent
        .handle_message(&body(AgentCommand::LaunchTask(launch(
            "t1",
            &["exit", "0"],
        ))))
        .await;

    assert_eq!(
        finished(&h.sink, "t1").await.reason,
        Some(TaskReason::InvalidRequest)
    );
}

#[tokio::test]
async fn a_kill_reports_kill_initiated_then_finished_killed_with_its_grace_period() {
    let h = harness().await;
    h.agent
        .handle_message(&body(AgentCommand::LaunchTask(launch(
            "t1",
            &["sleep", "100"],
        ))))
        .await;

    let disposition = h
        .agent
        .handle_message(&body(AgentCommand::KillTask(KillTask {
            task_id: TaskId::from_string("t1"),
            reason: TaskReason::Killed,
            grace_period_sec: 3,
        })))
        .await;

    assert_eq!(disposition, Disposition::Delete);
    assert_eq!(
        states(&h.sink, "t1"),
        vec![
            TaskState::StartInitiated,
            TaskState::Started,
            TaskState::KillInitiated,
            TaskState::Finished
        ]
    );
    let finished = finished(&h.sink, "t1").await;
    assert_eq!(finished.reason, Some(TaskReason::Killed));
    assert_eq!(finished.exit_code, Some(143));
    assert!(h.runtime.calls().contains(&"stop titus-t1 3".to_owned()));
    assert!(h.agent.running_tasks().is_empty());
}

#[tokio::test]
async fn a_kill_that_arrives_before_its_launch_stops_the_launch() {
    let h = harness().await;

    let kill = h
        .agent
        .handle_message(&body(AgentCommand::KillTask(KillTask {
            task_id: TaskId::from_string("t1"),
            reason: TaskReason::ScaledDown,
            grace_period_sec: 10,
        })))
        .await;
    let launch = h
        .agent
        .handle_message(&body(AgentCommand::LaunchTask(launch(
            "t1",
            &["sleep", "100"],
        ))))
        .await;
    let finished = finished(&h.sink, "t1").await;

    assert_eq!((kill, launch), (Disposition::Delete, Disposition::Delete));
    assert_eq!(finished.reason, Some(TaskReason::ScaledDown));
    assert_eq!(states(&h.sink, "t1"), vec![TaskState::Finished]);
    assert!(h.runtime.container_names().is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_runtime_limit_stops_the_task() {
    let h = harness().await;
    let mut request = launch("t1", &["sleep", "100"]);
    request.runtime_limit_sec = Some(5);

    h.agent
        .handle_message(&body(AgentCommand::LaunchTask(request)))
        .await;
    let finished = finished(&h.sink, "t1").await;

    assert_eq!(finished.reason, Some(TaskReason::RuntimeLimitExceeded));
    assert!(finished.message.contains("5 s"), "{}", finished.message);
    assert_eq!(
        states(&h.sink, "t1"),
        vec![
            TaskState::StartInitiated,
            TaskState::Started,
            TaskState::KillInitiated,
            TaskState::Finished
        ]
    );
    assert!(h.runtime.calls().contains(&"stop titus-t1 7".to_owned()));
}

#[tokio::test]
async fn a_malformed_command_is_kept_on_the_dead_letter_queue_with_its_reason() {
    let h = harness().await;

    let disposition = h
        .agent
        .handle_message("{\"type\":\"launchTask\",\"taskId\":3}")
        .await;

    assert_eq!(disposition, Disposition::Delete);
    assert!(h.sink.sent().is_empty());
    let letters = h.link.dead_letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].body, "{\"type\":\"launchTask\",\"taskId\":3}");
    assert!(
        letters[0].reason.contains("not an agent command"),
        "{}",
        letters[0].reason
    );
}

#[tokio::test]
async fn a_finished_container_is_renamed_after_its_status_was_sent() {
    let h = harness().await;

    h.agent
        .handle_message(&body(AgentCommand::LaunchTask(launch(
            "t1",
            &["exit", "0"],
        ))))
        .await;
    finished(&h.sink, "t1").await;
    tokio::time::timeout(Duration::from_secs(5), async {
        while !h.agent.running_tasks().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();

    assert_eq!(h.runtime.container_names(), vec!["titus-t1-finished"]);
    let tail = task_log_tail(&h.runtime, "t1", 10).await.unwrap();
    assert!(tail.contains("titus-t1-finished"), "{tail}");
}

fn leftover(
    task: &str,
    runtime: &FakeRuntime,
    name: String,
    status: ContainerStatus,
    exit_code: Option<i64>,
) {
    let mut spec = ContainerSpec {
        name,
        image: IMAGE.to_owned(),
        entry_point: vec![],
        command: vec!["sleep".to_owned(), "100".to_owned()],
        env: BTreeMap::new(),
        labels: BTreeMap::new(),
        nano_cpus: 1,
        memory_bytes: 1,
        pids_limit: 0,
        shm_size_bytes: 0,
        privileged: false,
        network: None,
        host_network: false,
        host_mounts: vec![],
        log: LogConfig {
            driver: "json-file".to_owned(),
            options: BTreeMap::new(),
        },
        capabilities: vec![],
        user: None,
        read_only_root_filesystem: false,
        gpus: 0,
    };
    spec.labels
        .insert(label::AGENT_ID.to_owned(), "agent-1".to_owned());
    spec.labels
        .insert(label::JOB_ID.to_owned(), "job-1".to_owned());
    spec.labels
        .insert(label::TASK_ID.to_owned(), task.to_owned());
    runtime.insert_container(spec, status, exit_code);
}

#[tokio::test]
async fn a_restart_reports_exits_once_and_readopts_running_containers() {
    let runtime = FakeRuntime::new();
    runtime.add_image(IMAGE);
    leftover(
        "exited",
        &runtime,
        container_name("exited"),
        ContainerStatus::Exited,
        Some(2),
    );
    leftover(
        "running",
        &runtime,
        container_name("running"),
        ContainerStatus::Running,
        None,
    );
    leftover(
        "reported",
        &runtime,
        finished_container_name("reported"),
        ContainerStatus::Exited,
        Some(0),
    );
    leftover(
        "other-agent",
        &runtime,
        container_name("other"),
        ContainerStatus::Exited,
        Some(0),
    );

    let link = MemoryLink::default();
    link.place("exited", "agent-1", 1);
    link.place("running", "agent-1", 1);
    let h = harness_with(runtime, link, AgentSettings::default()).await;
    let exited = finished(&h.sink, "exited").await;

    assert_eq!(exited.reason, Some(TaskReason::Failed));
    assert_eq!(exited.exit_code, Some(2));
    assert_eq!(states(&h.sink, "exited"), vec![TaskState::Finished]);
    assert_eq!(
        h.agent.running_tasks(),
        vec![TaskId::from_string("running")]
    );
    assert!(
        states(&h.sink, "reported").is_empty(),
        "reported before the restart"
    );

    // The re-adopted task is watched: its exit is reported.
    h.runtime.exit("titus-running", 0, false);
    let running = finished(&h.sink, "running").await;
    assert_eq!(running.reason, Some(TaskReason::Normal));
    assert_eq!(
        states(&h.sink, "running"),
        vec![TaskState::Started, TaskState::Finished]
    );

    // A redelivered launch of a reported task starts nothing.
    let again = h
        .agent
        .handle_message(&body(AgentCommand::LaunchTask(launch(
            "reported",
            &["exit", "0"],
        ))))
        .await;
    assert_eq!(again, Disposition::Delete);
    assert!(!h
        .runtime
        .calls()
        .iter()
        .any(|c| c == "create titus-reported"));
}

#[tokio::test]
async fn heartbeats_report_running_tasks_and_a_draining_record_starts_a_drain() {
    let runtime = FakeRuntime::new();
    runtime.add_image(IMAGE);
    let settings = AgentSettings {
        heartbeat_interval_secs: 1,
        poll_wait_secs: 0,
        drain_policy: DrainPolicy::HandBack,
        ..AgentSettings::default()
    };
    let h = harness_with(runtime, MemoryLink::default(), settings).await;
    h.queue.push(body(AgentCommand::LaunchTask(launch(
        "t1",
        &["sleep", "100"],
    ))));
    let run = tokio::spawn({
        let agent = h.agent.clone();
        async move {
            agent
                .run(CancellationToken::new(), CancellationToken::new())
                .await
        }
    });
    tokio::time::timeout(Duration::from_secs(10), async {
        while h
            .link
            .store
            .report("agent-1")
            .is_none_or(|r| r.running_task_ids.is_empty())
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    let report = h.link.store.report("agent-1").unwrap();
    assert_eq!(report.running_task_ids, vec![TaskId::from_string("t1")]);
    assert_eq!(report.used.cpu_millis, 500);

    // An operator marks the agent draining; the next heartbeat sees it.
    h.link
        .store
        .set_agent_state("agent-1", AgentState::Active, AgentState::Draining)
        .await
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    assert_eq!(outcome, RunOutcome::Drained);
    let finished = finished(&h.sink, "t1").await;
    assert_eq!(finished.reason, Some(TaskReason::TransientSystemError));
    assert!(
        finished.message.contains("handed back"),
        "{}",
        finished.message
    );
    assert_eq!(
        h.link.store.get_agent("agent-1").await.unwrap(),
        None,
        "deregistered"
    );
    assert_eq!(h.queue.deleted().len(), 1);
}

#[tokio::test]
async fn a_drain_that_finishes_tasks_hands_back_new_launches() {
    let runtime = FakeRuntime::new();
    runtime.add_image(IMAGE);
    let settings = AgentSettings {
        poll_wait_secs: 0,
        ..AgentSettings::default()
    };
    let h = harness_with(runtime, MemoryLink::default(), settings).await;
    h.agent
        .handle_message(&body(AgentCommand::LaunchTask(launch(
            "running",
            &["sleep", "100"],
        ))))
        .await;
    let drain = CancellationToken::new();
    let run = tokio::spawn({
        let agent = h.agent.clone();
        let drain = drain.clone();
        async move { agent.run(drain, CancellationToken::new()).await }
    });

    drain.cancel();
    h.queue.push(body(AgentCommand::LaunchTask(launch(
        "late",
        &["sleep", "100"],
    ))));
    let late = finished(&h.sink, "late").await;
    assert!(!run.is_finished(), "the running task holds the drain");
    h.runtime.exit("titus-running", 0, false);
    let outcome = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    assert_eq!(outcome, RunOutcome::Drained);
    assert_eq!(late.reason, Some(TaskReason::TransientSystemError));
    assert_eq!(states(&h.sink, "late"), vec![TaskState::Finished]);
    assert_eq!(
        finished(&h.sink, "running").await.reason,
        Some(TaskReason::Normal)
    );
    assert!(!h.runtime.calls().iter().any(|c| c == "create titus-late"));
}

#[tokio::test]
async fn a_stop_leaves_containers_running() {
    let h = harness().await;
    h.agent
        .handle_message(&body(AgentCommand::LaunchTask(launch(
            "t1",
            &["sleep", "100"],
        ))))
        .await;
    let stop = CancellationToken::new();
    stop.cancel();

    let outcome = h.agent.run(CancellationToken::new(), stop).await.unwrap();

    assert_eq!(outcome, RunOutcome::Stopped);
    assert!(!h.runtime.calls().iter().any(|c| c.starts_with("stop")));
    assert!(h.link.store.get_agent("agent-1").await.unwrap().is_some());
}

/// Waits until `check` holds, for up to ten seconds.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
}

#[tokio::test]
async fn a_launch_for_another_incarnation_is_refused_and_reported_without_a_container() {
    let h = harness().await;
    let stale = LaunchTask {
        incarnation: 2,
        ..launch("t1", &["sleep", "100"])
    };

    let disposition = h
        .agent
        .handle_message(&body(AgentCommand::LaunchTask(stale)))
        .await;
    let update = finished(&h.sink, "t1").await;

    assert_eq!(disposition, Disposition::Delete);
    assert!(h.runtime.container_names().is_empty(), "no container");
    assert_eq!(update.reason, Some(TaskReason::TransientSystemError));
    assert!(
        update.message.contains("launch for incarnation 2")
            && update.message.contains("runs as incarnation 1"),
        "{}",
        update.message
    );
    h.agent.shutdown();
}

#[tokio::test]
async fn a_launch_beyond_the_agents_capacity_is_refused_with_its_reason() {
    let h = harness().await;
    let big = |task: &str| {
        let mut request = launch(task, &["sleep", "100"]);
        request.resources.memory_mb = 5_000;
        request
    };

    h.agent
        .handle_message(&body(AgentCommand::LaunchTask(big("fits"))))
        .await;
    h.agent
        .handle_message(&body(AgentCommand::LaunchTask(big("too-much"))))
        .await;
    let refused = finished(&h.sink, "too-much").await;

    assert_eq!(h.agent.running_tasks(), vec![TaskId::from_string("fits")]);
    assert_eq!(h.runtime.container_names(), vec!["titus-fits".to_owned()]);
    assert_eq!(refused.reason, Some(TaskReason::TransientSystemError));
    assert!(
        refused.message.contains("past its capacity in memory"),
        "{}",
        refused.message
    );
    h.agent.shutdown();
}

#[tokio::test]
async fn a_fenced_agent_stops_its_containers_and_registers_as_its_next_incarnation() {
    let h = harness().await;
    h.agent
        .handle_message(&body(AgentCommand::LaunchTask(launch(
            "t1",
            &["sleep", "100"],
        ))))
        .await;
    assert_eq!(h.agent.incarnation(), 1);
    // The control plane declared the agent lost (and finished its tasks).
    h.link
        .store
        .set_agent_state("agent-1", AgentState::Active, AgentState::Lost)
        .await
        .unwrap();

    h.agent.heartbeat().await;
    let stopped = finished(&h.sink, "t1").await;
    until("registered as incarnation 2", || h.agent.incarnation() == 2).await;

    assert_eq!(stopped.reason, Some(TaskReason::Lost));
    assert!(
        h.runtime
            .calls()
            .iter()
            .any(|c| c.starts_with("stop titus-t1")),
        "{:?}",
        h.runtime.calls()
    );
    let record = h.link.store.get_agent("agent-1").await.unwrap().unwrap();
    assert_eq!((record.state, record.incarnation), (AgentState::Active, 2));
    // Launches placed on its old life are refused; its new one runs.
    h.agent
        .handle_message(&body(AgentCommand::LaunchTask(launch(
            "old",
            &["sleep", "100"],
        ))))
        .await;
    h.agent
        .handle_message(&body(AgentCommand::LaunchTask(LaunchTask {
            incarnation: 2,
            ..launch("new", &["sleep", "100"])
        })))
        .await;
    assert_eq!(h.agent.running_tasks(), vec![TaskId::from_string("new")]);
    h.agent.shutdown();
}

#[tokio::test]
async fn a_restarted_agent_stops_containers_whose_task_is_finished_or_held_elsewhere() {
    let runtime = FakeRuntime::new();
    runtime.add_image(IMAGE);
    for task in ["mine", "done", "elsewhere", "old-life", "unknown"] {
        leftover(
            task,
            &runtime,
            container_name(task),
            ContainerStatus::Running,
            None,
        );
    }
    let link = MemoryLink::default();
    link.place("mine", "agent-1", 1);
    link.place("done", "agent-1", 1);
    link.finish("done");
    link.place("elsewhere", "agent-2", 1);
    link.place("old-life", "agent-1", 7);

    let h = harness_with(runtime, link, AgentSettings::default()).await;
    let stopped = ["done", "elsewhere", "old-life", "unknown"];
    let stop_of = |task: &str| format!("stop {} ", container_name(task));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let calls = h.runtime.calls();
    for task in stopped {
        assert!(
            calls.iter().any(|c| c.starts_with(&stop_of(task))),
            "{task} stopped: {calls:?}"
        );
    }
    assert!(!calls.iter().any(|c| c.starts_with(&stop_of("mine"))));

    assert_eq!(h.agent.running_tasks(), vec![TaskId::from_string("mine")]);
    for task in stopped {
        assert!(
            states(&h.sink, task).is_empty(),
            "{task}: the agent does not speak for a task it does not hold"
        );
    }
    h.agent.shutdown();
}

#[tokio::test]
async fn a_late_launch_of_a_task_the_records_finished_or_placed_elsewhere_starts_no_container() {
    let h = harness().await;
    h.link.place("finished", "agent-1", 1);
    h.link.finish("finished");
    h.link.place("elsewhere", "agent-2", 1);
    h.link.place("mine", "agent-1", 1);

    for task in ["finished", "elsewhere"] {
        let disposition = h
            .agent
            .handle_message(&body(AgentCommand::LaunchTask(launch(
                task,
                &["sleep", "100"],
            ))))
            .await;
        assert_eq!(disposition, Disposition::Delete, "{task}");
    }
    h.agent
        .handle_message(&body(AgentCommand::LaunchTask(launch(
            "mine",
            &["sleep", "100"],
        ))))
        .await;

    let calls = h.runtime.calls();
    for task in ["finished", "elsewhere"] {
        let create = format!("create {}", container_name(task));
        assert!(!calls.contains(&create), "{task}: {calls:?}");
        assert!(
            states(&h.sink, task).is_empty(),
            "{task}: the agent does not speak for a task it does not hold"
        );
    }
    assert_eq!(h.agent.running_tasks(), vec![TaskId::from_string("mine")]);
    h.agent.shutdown();
}

async fn harness_with_credentials(settings: AgentSettings) -> (Harness, Arc<CredentialService>) {
    let runtime = FakeRuntime::new();
    runtime.add_image(IMAGE);
    let service = Arc::new(CredentialService::new(
        Arc::new(crate::testing::FakeRoles::new(
            Duration::from_secs(3600),
            &["denied"],
        )),
        "169.254.170.2:51679".parse().unwrap(),
    ));
    let sink = MemoryStatusSink::default();
    let queue = MemoryCommandSource::default();
    let link = MemoryLink::default();
    let agent = Agent::start(
        identity(),
        settings,
        runtime.clone(),
        queue.clone(),
        sink.clone(),
        link.clone(),
        HostServices {
            registry_auth: Arc::new(crate::aws::NoRegistryAuth),
            credentials: Some(service.clone()),
            secrets: None,
            metrics: None,
        },
    )
    .await
    .unwrap();
    (
        Harness {
            agent,
            runtime,
            sink,
            queue,
            link,
        },
        service,
    )
}

#[tokio::test]
async fn every_container_gets_the_restricted_defaults_on_the_task_network() {
    let h = harness().await;
    h.agent
        .handle_message(&body(AgentCommand::LaunchTask(launch(
            "t1",
            &["sleep", "100"],
        ))))
        .await;
    let spec = h.runtime.spec("titus-t1").unwrap();

    assert_eq!(spec.capabilities, vec!["NET_BIND_SERVICE".to_owned()]);
    assert_eq!(spec.network.as_deref(), Some("titus-tasks"));
    assert_eq!(spec.user, None);
    assert!(!spec.read_only_root_filesystem);
    assert_eq!(spec.gpus, 0);
    // No role: no credentials variables at all.
    assert!(!spec.env.contains_key(crate::credentials::FULL_URI_VAR));
    assert!(!spec.env.contains_key(crate::credentials::TOKEN_VAR));
    h.agent.shutdown();
}

#[tokio::test]
async fn a_security_context_is_delivered_when_the_agent_allows_it() {
    let settings = AgentSettings {
        allowed_capabilities: vec!["NET_RAW".to_owned()],
        ..AgentSettings::default()
    };
    let h = harness_with(FakeRuntime::new(), MemoryLink::default(), settings).await;
    h.runtime.add_image(IMAGE);
    let mut request = launch("t1", &["sleep", "100"]);
    request.security_context = titus_core::job::SecurityContext {
        user: Some("1000:1000".to_owned()),
        read_only_root_filesystem: true,
        add_capabilities: vec!["NET_RAW".to_owned(), "NET_BIND_SERVICE".to_owned()],
    };
    h.agent
        .handle_message(&body(AgentCommand::LaunchTask(request)))
        .await;
    let spec = h.runtime.spec("titus-t1").unwrap();

    assert_eq!(
        spec.capabilities,
        vec!["NET_BIND_SERVICE".to_owned(), "NET_RAW".to_owned()]
    );
    assert_eq!(spec.user.as_deref(), Some("1000:1000"));
    assert!(spec.read_only_root_filesystem);
    h.agent.shutdown();
}

#[tokio::test]
async fn what_the_agent_cannot_deliver_is_refused_naming_the_field() {
    let h = harness().await;
    let mut capabilities = launch("caps", &["exit", "0"]);
    capabilities.security_context.add_capabilities = vec!["SYS_ADMIN".to_owned()];
    let mut groups = launch("groups", &["exit", "0"]);
    groups.security_groups = vec!["sg-0123abcd".to_owned()];
    let mut gpus = launch("gpus", &["exit", "0"]);
    gpus.resources.gpu = 1;
    let mut role = launch("role", &["exit", "0"]);
    role.iam_role = "arn:aws:iam::123456789012:role/app".to_owned();

    for request in [capabilities, groups, gpus, role] {
        h.agent
            .handle_message(&body(AgentCommand::LaunchTask(request)))
            .await;
    }
    // Another host may have GPUs or serve credentials: not the task's fault, so a GPU task is
    // placed again without using up its retries.
    for (task, reason, names) in [
        (
            "caps",
            TaskReason::InvalidRequest,
            "SYS_ADMIN (container.securityContext.addCapabilities",
        ),
        (
            "groups",
            TaskReason::InvalidRequest,
            "container.securityProfile.securityGroups",
        ),
        (
            "gpus",
            TaskReason::TransientSystemError,
            "past its capacity in gpu",
        ),
        (
            "role",
            TaskReason::LocalSystemError,
            "serves no task credentials",
        ),
    ] {
        let finished = finished(&h.sink, task).await;
        assert_eq!(finished.reason, Some(reason), "{task}");
        assert!(
            finished.message.contains(names),
            "{task}: {}",
            finished.message
        );
    }
    for task in ["caps", "groups", "gpus", "role"] {
        assert!(h.runtime.spec(&container_name(task)).is_none(), "{task}");
    }
    h.agent.shutdown();
}

#[tokio::test]
async fn gpus_are_asked_of_the_engine_on_a_host_that_has_them() {
    let settings = AgentSettings {
        gpu: 2,
        ..AgentSettings::default()
    };
    let h = harness_with(FakeRuntime::new(), MemoryLink::default(), settings).await;
    h.runtime.add_image(IMAGE);
    let mut request = launch("t1", &["sleep", "100"]);
    request.resources.gpu = 2;
    h.agent
        .handle_message(&body(AgentCommand::LaunchTask(request)))
        .await;
    assert_eq!(h.runtime.spec("titus-t1").map(|s| s.gpus), Some(2));
    h.agent.shutdown();
}

#[tokio::test]
async fn a_task_with_a_role_gets_its_own_token_until_it_finishes() {
    let (h, service) = harness_with_credentials(AgentSettings::default()).await;
    let mut request = launch("t1", &["sleep", "100"]);
    request.iam_role = "arn:aws:iam::123456789012:role/app".to_owned();
    h.agent
        .handle_message(&body(AgentCommand::LaunchTask(request)))
        .await;
    let spec = h.runtime.spec("titus-t1").unwrap();
    let token = spec.env[crate::credentials::TOKEN_VAR].clone();

    assert_eq!(
        spec.env[crate::credentials::FULL_URI_VAR],
        "http://169.254.170.2:51679/v1/credentials"
    );
    assert_eq!(
        spec.labels[label::IAM_ROLE],
        "arn:aws:iam::123456789012:role/app"
    );
    assert_eq!(
        spec.labels[label::TOKEN_SHA256],
        crate::credentials::token_digest(&token)
    );
    // The fake engine's container address is bound once it runs; another address is refused.
    let own = crate::testing::fake_address(1);
    let got = service.answer(Some(&token), own).await.unwrap();
    assert_eq!(got.role_arn, "arn:aws:iam::123456789012:role/app");
    let other = crate::testing::fake_address(2);
    assert_eq!(
        service.answer(Some(&token), other).await.unwrap_err().code,
        "WrongTask"
    );

    h.runtime.exit("titus-t1", 0, false);
    finished(&h.sink, "t1").await;
    assert_eq!(
        service.answer(Some(&token), own).await.unwrap_err().code,
        "UnknownToken"
    );
    h.agent.shutdown();
}

#[tokio::test]
async fn a_role_that_cannot_be_assumed_fails_the_launch_without_a_container() {
    let (h, service) = harness_with_credentials(AgentSettings::default()).await;
    let mut request = launch("t1", &["sleep", "100"]);
    request.iam_role = "denied".to_owned();
    h.agent
        .handle_message(&body(AgentCommand::LaunchTask(request)))
        .await;
    let finished = finished(&h.sink, "t1").await;

    assert_eq!(finished.reason, Some(TaskReason::InvalidRequest));
    assert!(
        finished.message.contains("IAM role"),
        "{}",
        finished.message
    );
    assert!(h.runtime.spec("titus-t1").is_none());
    assert_eq!(service.tokens(), 0);
    h.agent.shutdown();
}

/// The agent's metrics reach the stage's agents log group as EMF lines CloudWatch reads: a
/// failed launch and the tasks running, under the stage's dimension (the emulator's Logs).
#[tokio::test]
async fn a_failed_launch_is_counted_and_reported_as_an_emf_line_in_the_agents_log_group() {
    let config = titus_aws::clients::local_emulator_config().await;
    let logs = aws_sdk_cloudwatchlogs::Client::new(&config);
    let stage = format!("m{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let group = format!("/titus/{stage}/agents");
    titus_aws::logs::ensure_log_group(&logs, &group)
        .await
        .unwrap();
    let runtime = FakeRuntime::new();
    runtime.fail_pull(
        IMAGE,
        RuntimeError::PullFailed {
            image: IMAGE.to_owned(),
            message: "dial tcp: lookup registry: no such host".to_owned(),
        },
    );
    let agent = Agent::start(
        identity(),
        AgentSettings::default(),
        runtime,
        MemoryCommandSource::default(),
        MemoryStatusSink::default(),
        MemoryLink::default(),
        HostServices {
            metrics: Some(crate::metrics::EmfWriter::new(
                logs.clone(),
                &group,
                "agent-1",
                &stage,
            )),
            ..HostServices::none()
        },
    )
    .await
    .unwrap();
    agent
        .handle_message(&body(AgentCommand::LaunchTask(launch(
            "t1",
            &["exit", "0"],
        ))))
        .await;
    // The launch runs in its own task: wait until it has been counted.
    for _ in 0..100 {
        if agent
            .metrics
            .get(titus_core::metrics::AGENT_LAUNCH_FAILURES)
            > 0.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let line = agent.report_metrics().await.expect("an EMF line");

    let written = logs
        .get_log_events()
        .log_group_name(&group)
        .log_stream_name("agent-1")
        .start_from_head(true)
        .send()
        .await
        .unwrap();
    let messages: Vec<&str> = written
        .events()
        .iter()
        .filter_map(|e| e.message())
        .collect();
    assert_eq!(messages, [line.as_str()], "one line, in the agent's stream");
    let emf: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(emf["AgentLaunchFailures"], 1.0, "{line}");
    assert_eq!(emf["AgentTasksRunning"], 0.0, "{line}");
    assert_eq!(emf["Stage"], stage.as_str());
    let directive = &emf["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(directive["Namespace"], "Titus");
    assert_eq!(directive["Dimensions"], serde_json::json!([["Stage"]]));
    let again: serde_json::Value =
        serde_json::from_str(&agent.report_metrics().await.expect("the gauge again")).unwrap();
    assert!(
        again.get("AgentLaunchFailures").is_none(),
        "a counter's increase is reported once: {again}"
    );
}
