//! The `titus-agent` binary killed with SIGKILL mid-task and started again: it re-adopts the
//! running container the records place on it, reports the exit that happened while it was down
//! exactly once, and never makes a second container for a task. Then SIGTERM drains it. The
//! control plane's registration and scheduler run in the test's process.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use support::*;
use titus_agent::runtime::{container_name, label, ContainerStatus};
use titus_agent::ContainerRuntime as _;
use titus_aws::{AwsClients, DynamoAgentStore};
use titus_core::messages::{AgentCommand, KillTask, LaunchTask};
use titus_core::{AgentStore as _, TaskReason, TaskState};
use tokio::process::{Child, Command};

const WITHIN: Duration = Duration::from_secs(60);

fn spawn_agent(env: &BTreeMap<String, String>, log: &PathBuf) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_titus-agent"))
        .env_clear()
        .envs(env)
        .env("RUST_LOG", "info")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .expect("the agent binary starts")
}

async fn wait_for_queue(clients: &AwsClients, name: &str) -> String {
    for _ in 0..100 {
        if let Ok(out) = clients.sqs.get_queue_url().queue_name(name).send().await {
            return out.queue_url().unwrap().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the agent did not create its queue {name}");
}

fn finished_count(status: &StatusReader, task: &LaunchTask) -> usize {
    status
        .states(&task.task_id)
        .iter()
        .filter(|s| **s == TaskState::Finished)
        .count()
}

#[tokio::test]
async fn an_agent_killed_mid_task_reports_each_exit_exactly_once_after_a_restart() {
    let docker = docker().await;
    let (clients, _, names) = fresh_stage().await;
    let agent_id = agent_id("restart");
    let _cleanup = ContainerCleanup(agent_id.clone());
    let env = agent_env(&names, &agent_id, &[]);
    let log = std::env::temp_dir().join(format!("titus-{agent_id}.log"));
    let mut status = StatusReader::new(&clients, &names).await;
    let control = InProcessControlPlane::start(&clients, &names);

    let mut agent = spawn_agent(&env, &log);
    let queue = wait_for_queue(&clients, &names.agent_queue(&agent_id)).await;
    wait_registered(&clients, &names, &agent_id, WITHIN).await;
    let short = control.place_batch("sleep 4", 1).await.remove(0);
    let long = control.place_batch("sleep 300", 1).await.remove(0);
    for task in [&short, &long] {
        status
            .wait_for(&task.task_id, TaskState::Started, WITHIN)
            .await;
    }

    // SIGKILL: no chance to report anything. The short task exits while the agent is away.
    agent.start_kill().unwrap();
    agent.wait().await.unwrap();
    let short_name = container_name(short.task_id.as_str());
    for _ in 0..100 {
        if docker.inspect(&short_name).await.unwrap().status == ContainerStatus::Exited {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    status.drain_for(Duration::from_secs(1)).await;
    assert_eq!(finished_count(&status, &short), 0, "nobody reported it yet");

    let mut agent = spawn_agent(&env, &log);
    let short_finished = status
        .wait_for(&short.task_id, TaskState::Finished, WITHIN)
        .await;
    assert_eq!(short_finished.reason, Some(TaskReason::Normal));
    assert_eq!(short_finished.exit_code, Some(0));
    // Redelivered launches after the restart make no second container.
    for task in [&short, &long] {
        send_command(&clients, &queue, &AgentCommand::LaunchTask(task.clone())).await;
    }
    status.drain_for(Duration::from_secs(3)).await;

    // Killed again and restarted: the short task was reported, so it is not reported again.
    agent.start_kill().unwrap();
    agent.wait().await.unwrap();
    let mut agent = spawn_agent(&env, &log);
    status.drain_for(Duration::from_secs(4)).await;
    assert_eq!(
        finished_count(&status, &short),
        1,
        "{:?}",
        status.states(&short.task_id)
    );

    // The long task was re-adopted both times: it can still be killed.
    send_command(
        &clients,
        &queue,
        &AgentCommand::KillTask(KillTask {
            task_id: long.task_id.clone(),
            reason: TaskReason::Killed,
            grace_period_sec: 2,
        }),
    )
    .await;
    let long_finished = status
        .wait_for(&long.task_id, TaskState::Finished, WITHIN)
        .await;
    assert_eq!(long_finished.reason, Some(TaskReason::Killed));

    // SIGTERM drains: nothing runs, so the agent asks to leave and exits cleanly.
    let pid = agent.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let exit = tokio::time::timeout(WITHIN, agent.wait())
        .await
        .expect("the drained agent exits")
        .unwrap();
    status.drain_for(Duration::from_secs(2)).await;

    let agent_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(exit.success(), "{exit:?}\n{agent_log}");
    assert_eq!(finished_count(&status, &short), 1, "{agent_log}");
    assert_eq!(finished_count(&status, &long), 1, "{agent_log}");
    for task in [&short, &long] {
        let states = status.states(&task.task_id);
        assert!(states.windows(2).all(|w| w[0] <= w[1]), "{states:?}");
        let containers = docker
            .list(&[(label::TASK_ID, task.task_id.as_str())])
            .await
            .unwrap();
        assert_eq!(containers.len(), 1, "{containers:?}");
    }
    // It asked to drain and to leave; the control plane keeps the record while the records
    // still hold its tasks (this test reads the statuses off the queue itself).
    let store = DynamoAgentStore::new(clients.dynamodb.clone(), &names);
    let record = store.get_agent(&agent_id).await.unwrap().unwrap();
    assert_eq!(record.state, titus_core::AgentState::Draining);
    drop(control);
    let _ = std::fs::remove_file(&log);
}
