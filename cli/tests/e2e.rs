//! End-to-end: the whole local stack (`titus local up` with agents in processes of their own)
//! against the emulator and the real Docker engine, driven through the `titus` CLI, the HTTP API
//! and the SQS submit queue. Each test runs on a stage of its own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use support::{Stack, StackOptions, IMAGE};
use titus_core::{JobState, Task, TaskReason, TaskState};

fn reasons(tasks: &[Task]) -> Vec<Option<TaskReason>> {
    tasks.iter().map(|t| t.status.reason_code).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_job_of_five_tasks_runs_to_finished_normal() {
    let stack = Stack::start(StackOptions::default()).await;

    let job = stack.submit(
        &["--app", "e2e-batch", "--batch", "5", "--cpu", "0.5"],
        &["sh", "-c", "echo task $TITUS_TASK_INDEX of $TITUS_JOB_ID"],
    );
    let wait = stack.cli(&["job", "wait", &job, "--timeout-secs", "120"]);

    assert_eq!(wait.code, 0, "job wait: {}{}", wait.stderr, stack.logs());
    assert_eq!(stack.job(&job).status.state, JobState::Finished);
    let tasks = stack.tasks(&job);
    assert_eq!(tasks.len(), 5, "{tasks:?}");
    assert!(
        tasks.iter().all(|t| t.state() == TaskState::Finished
            && t.status.reason_code == Some(TaskReason::Normal)
            && t.exit_code == Some(0)),
        "{:?}",
        reasons(&tasks)
    );
    let indexes: BTreeSet<u32> = tasks.iter().map(|t| t.index).collect();
    assert_eq!(indexes, (0..5).collect());
    // Each task passed through every state on the way, in order.
    for task in &tasks {
        let states: Vec<TaskState> = task.status_history.iter().map(|s| s.state).collect();
        assert!(
            states.contains(&TaskState::Started),
            "task {} never Started: {states:?}",
            task.id
        );
    }
    // The job's story is in the event feed: `job watch` of a finished job prints it and stops,
    // `events` filters it; each task's states in order, each event once.
    let parse = |stdout: &str| -> Vec<Value> {
        stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect()
    };
    let mut watched = Vec::new();
    for _ in 0..20 {
        let watch = stack.cli(&["-o", "json", "job", "watch", &job]);
        assert_eq!(watch.code, 0, "job watch: {}", watch.stderr);
        watched = parse(&watch.stdout);
        let finished = |e: &&Value| e["state"] == "Finished";
        if watched
            .iter()
            .filter(|e| e["type"] == "TaskStateChange")
            .filter(finished)
            .count()
            == 5
            && watched
                .iter()
                .any(|e| e["type"] == "JobStateChange" && e["state"] == "Finished")
        {
            break;
        }
        // The feed shows an event once it is 300 ms old.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let ids: BTreeSet<&str> = watched.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), watched.len(), "each event once");
    for task in &tasks {
        let states: Vec<&str> = watched
            .iter()
            .filter(|e| e["taskId"] == task.id.as_str())
            .map(|e| e["state"].as_str().unwrap())
            .collect();
        assert_eq!(states.first(), Some(&"Accepted"), "{states:?}");
        assert!(states.contains(&"Started"), "{states:?}");
        assert_eq!(states.last(), Some(&"Finished"), "{states:?}");
    }
    let events = stack.cli(&[
        "-o",
        "json",
        "events",
        "--job",
        &job,
        "--type",
        "JobStateChange",
        "--since",
        "10m",
    ]);
    assert_eq!(events.code, 0, "events: {}", events.stderr);
    let job_states: Vec<String> = parse(&events.stdout)
        .iter()
        .map(|e| e["state"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        job_states.first().map(String::as_str),
        Some("Accepted"),
        "{job_states:?}"
    );
    assert_eq!(
        job_states.last().map(String::as_str),
        Some("Finished"),
        "{job_states:?}"
    );
    let bad = stack.cli(&["events", "--type", "Nope"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("TaskStateChange"), "{}", bad.stderr);

    // The task's output went to its CloudWatch Logs stream, as in AWS, and the CLI reads it
    // there through the API.
    let (clients, _) = stack.aws().await;
    let stream = clients
        .logs
        .get_log_events()
        .log_group_name(format!("/titus/{}/tasks", stack.stage))
        .log_stream_name(format!("{job}/{}", tasks[0].id))
        .start_from_head(true)
        .send()
        .await
        .expect("the task's stream in the stage's task log group");
    let written: Vec<&str> = stream.events().iter().filter_map(|e| e.message()).collect();
    assert!(
        written.iter().any(|m| m.contains(&format!("of {job}"))),
        "{written:?}"
    );
    let logs = stack.cli(&["task", "logs", tasks[0].id.as_ref()]);
    assert_eq!(logs.code, 0, "{}", logs.stderr);
    assert!(
        logs.stdout.contains(&format!("of {job}")),
        "{}",
        logs.stdout
    );
    let as_json = stack.cli(&["task", "logs", tasks[0].id.as_ref(), "-o", "json"]);
    assert_eq!(as_json.code, 0, "{}", as_json.stderr);
    let line: Value = serde_json::from_str(as_json.stdout.lines().next().unwrap_or("{}")).unwrap();
    assert!(
        line["timestampMs"].as_u64().is_some() && line["message"].is_string(),
        "{}",
        as_json.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_batch_task_is_retried_with_exponential_backoff_until_it_succeeds() {
    let stack = Stack::start(StackOptions::default()).await;
    let descriptor = json!({
        "owner": {"teamEmail": "e2e@example.com"},
        "applicationName": "e2e-retry",
        "container": {
            "image": {"name": "titus-demo/busybox", "tag": "latest"},
            // Fails on the first two attempts, succeeds on the third.
            "command": ["sh", "-c", "test \"$TITUS_TASK_RESUBMIT_NUMBER\" -ge 2"],
            "resources": {"cpu": 0.5, "memoryMB": 512}
        },
        "batch": {"size": 1, "retryPolicy": {"exponentialBackOff":
            {"initialDelayMs": 1000, "maxDelayIntervalMs": 4000, "retries": 3}}}
    });

    let job: titus_core::Job =
        serde_json::from_str(&submit_file(&stack, &descriptor, "yaml")).unwrap();
    let wait = stack.cli(&["job", "wait", job.id.as_ref(), "--timeout-secs", "120"]);

    assert_eq!(wait.code, 0, "job wait: {}", wait.stderr);
    let mut chain = stack.tasks(job.id.as_ref());
    chain.sort_by_key(|t| t.resubmit_number);
    assert_eq!(chain.len(), 3, "{chain:?}");
    assert_eq!(
        reasons(&chain),
        [
            Some(TaskReason::Failed),
            Some(TaskReason::Failed),
            Some(TaskReason::Normal)
        ]
    );
    assert_eq!(chain[0].exit_code, Some(1));
    assert_eq!(chain[1].resubmit_of.as_ref(), Some(&chain[0].id));
    assert_eq!(chain[2].resubmit_of.as_ref(), Some(&chain[1].id));
    assert!(chain.iter().all(|t| t.original_id == chain[0].id));
    // The backoff: each replacement waited the policy's delay, doubling (1 s, then 2 s).
    let delays: Vec<u64> = chain[1..]
        .iter()
        .map(|t| t.not_before_ms.saturating_sub(t.created_at_ms))
        .collect();
    assert!(
        delays[0] >= 900 && delays[1] >= 1_900,
        "replacement delays {delays:?} ms"
    );
}

/// Submits `descriptor` from a file of the given format through the CLI; returns its JSON answer.
fn submit_file(stack: &Stack, descriptor: &Value, format: &str) -> String {
    let path = std::env::temp_dir().join(format!(
        "titus-e2e-{}-{}.{format}",
        stack.stage,
        uuid::Uuid::new_v4().simple()
    ));
    let text = match format {
        "yaml" => serde_yaml::to_string(descriptor).unwrap(),
        _ => descriptor.to_string(),
    };
    std::fs::write(&path, text).unwrap();
    let run = stack.cli(&[
        "-o",
        "json",
        "job",
        "submit",
        "--file",
        path.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(run.code, 0, "submit: {}", run.stderr);
    run.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_job_scales_from_two_to_four_to_one() {
    let stack = Stack::start(StackOptions::default()).await;
    let job = stack.submit(
        &["--app", "e2e-service", "--service", "1:2:4", "--cpu", "0.5"],
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; while true; do sleep 1; done",
        ],
    );
    let running = |n: usize| {
        let (stack, job) = (&stack, job.clone());
        move || {
            let job = job.clone();
            async move { stack.tasks_in(&job, TaskState::Started).len() == n }
        }
    };
    stack.eventually("2 tasks run", running(2)).await;

    let up = stack.cli(&["job", "scale", &job, "--desired", "4"]);
    assert_eq!(up.code, 0, "{}", up.stderr);
    stack.eventually("4 tasks run", running(4)).await;

    let down = stack.cli(&["job", "scale", &job, "--desired", "1"]);
    assert_eq!(down.code, 0, "{}", down.stderr);
    stack
        .eventually("1 task runs and 3 finished as scaledDown", || async {
            let tasks = stack.tasks(&job);
            let started = tasks
                .iter()
                .filter(|t| t.state() == TaskState::Started)
                .count();
            let scaled_down = tasks
                .iter()
                .filter(|t| t.status.reason_code == Some(TaskReason::ScaledDown))
                .count();
            started == 1 && scaled_down == 3
        })
        .await;
    let job_now = stack.job(&job);
    let capacity = job_now.job_descriptor.service.as_ref().unwrap().capacity;
    assert_eq!(
        (capacity.min, capacity.desired, capacity.max),
        (1, 1, 4),
        "{job_now:?}"
    );
    // Scaled-down tasks are not replaced.
    assert_eq!(stack.tasks(&job).len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_running_job_finishes_every_task_as_killed() {
    let stack = Stack::start(StackOptions::default()).await;
    let job = stack.submit(
        &["--app", "e2e-kill", "--batch", "2", "--cpu", "0.5"],
        &["sleep", "600"],
    );
    stack
        .eventually("both tasks run", || async {
            stack.tasks_in(&job, TaskState::Started).len() == 2
        })
        .await;

    let kill = stack.cli(&["job", "kill", &job]);
    assert_eq!(kill.code, 0, "{}", kill.stderr);
    // The job finishes, and not normally: `job wait` says so with exit code 7.
    let wait = stack.cli(&["job", "wait", &job, "--timeout-secs", "120"]);

    assert_eq!(wait.code, 7, "job wait: {}{}", wait.stdout, wait.stderr);
    assert_eq!(stack.job(&job).status.state, JobState::Finished);
    let tasks = stack.tasks(&job);
    assert_eq!(tasks.len(), 2, "killed tasks are not replaced: {tasks:?}");
    assert!(
        tasks.iter().all(|t| t.state() == TaskState::Finished
            && t.status.reason_code == Some(TaskReason::Killed)),
        "{:?}",
        reasons(&tasks)
    );
    // SIGTERM, or SIGKILL after the grace period (a container's PID 1 ignores SIGTERM unless it
    // handles it).
    assert!(
        tasks
            .iter()
            .all(|t| matches!(t.exit_code, Some(137) | Some(143))),
        "{:?}",
        tasks.iter().map(|t| t.exit_code).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_tasks_of_an_agent_killed_with_sigkill_are_replaced_on_the_other_agent() {
    let mut stack = Stack::start(StackOptions::default()).await;
    let job = stack.submit(
        &[
            "--app",
            "e2e-failover",
            "--service",
            "4:4:4",
            "--cpu",
            "0.5",
        ],
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; while true; do sleep 1; done",
        ],
    );
    stack
        .eventually("4 tasks run", || async {
            stack.tasks_in(&job, TaskState::Started).len() == 4
        })
        .await;
    // Bin-packing may have put every task on one agent: kill one that runs tasks.
    let running = stack.tasks_in(&job, TaskState::Started);
    let (kill, survivor) = if running
        .iter()
        .any(|t| t.agent_id.as_deref() == Some(stack.agent_id(1).as_str()))
    {
        (1, stack.agent_id(2))
    } else {
        (2, stack.agent_id(1))
    };

    lose_agent_and_check(&mut stack, &job, kill, &survivor).await;
}

async fn lose_agent_and_check(stack: &mut Stack, job: &str, kill: u32, survivor: &str) {
    let lost_agent = stack.agent_id(kill);
    let lost_tasks: Vec<String> = stack
        .tasks_in(job, TaskState::Started)
        .into_iter()
        .filter(|t| t.agent_id.as_deref() == Some(lost_agent.as_str()))
        .map(|t| t.id.to_string())
        .collect();
    assert!(!lost_tasks.is_empty(), "no task ran on {lost_agent}");

    stack.kill_agent(kill);

    stack
        .eventually(
            "the agent is declared lost and 4 tasks run on the survivor",
            || async {
                let agents = stack.agents().await;
                let lost = agents
                    .iter()
                    .any(|a| a.id == lost_agent && a.state == titus_core::AgentState::Lost);
                let running = stack.tasks_in(job, TaskState::Started);
                lost && running.len() == 4
                    && running
                        .iter()
                        .all(|t| t.agent_id.as_deref() == Some(survivor))
            },
        )
        .await;
    let tasks = stack.tasks(job);
    let by_id: BTreeMap<String, &Task> = tasks.iter().map(|t| (t.id.to_string(), t)).collect();
    for id in &lost_tasks {
        let task = by_id[id];
        assert_eq!(task.state(), TaskState::Finished, "{task:?}");
        assert_eq!(task.status.reason_code, Some(TaskReason::Lost), "{task:?}");
        assert!(
            tasks
                .iter()
                .any(|t| t.resubmit_of.as_ref() == Some(&task.id)),
            "lost task {id} has no replacement"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_sent_to_the_sqs_submit_queue_runs_and_a_bad_one_is_rejected_with_its_reasons() {
    let stack = Stack::start(StackOptions {
        agents: 1,
        ..StackOptions::default()
    })
    .await;
    let (aws, names) = stack.aws().await;
    let queue_url = |name: String| {
        let sqs = aws.sqs.clone();
        async move {
            sqs.get_queue_url()
                .queue_name(name)
                .send()
                .await
                .unwrap()
                .queue_url
                .unwrap()
        }
    };
    let submit_url = queue_url(names.submit_queue()).await;
    let rejected_url = queue_url(names.submit_rejected_queue()).await;
    let app = format!("e2e-sqs-{}", &stack.stage);
    let good = json!({"clientToken": "e2e-1", "jobDescriptor": {
        "owner": {"teamEmail": "e2e@example.com"},
        "applicationName": app,
        "container": {"image": {"name": "titus-demo/busybox"}, "command": ["true"],
                      "resources": {"cpu": 0.5}},
        "batch": {"size": 1}
    }});
    let bad = json!({"owner": {"teamEmail": "e2e@example.com"}, "applicationName": "x",
        "container": {"image": {"name": "titus-demo/busybox"}, "resources": {"cpu": 500}},
        "batch": {"size": 1}});

    for body in [&good, &bad] {
        aws.sqs
            .send_message()
            .queue_url(&submit_url)
            .message_body(body.to_string())
            .send()
            .await
            .unwrap();
    }

    let mut jobs: Vec<titus_core::Job> = Vec::new();
    stack
        .eventually("the queued job is stored", || {
            let found: support::Page<titus_core::Job> =
                stack.cli_json(&["job", "list", "--app", &app]);
            jobs = found.items;
            std::future::ready(!jobs.is_empty())
        })
        .await;
    assert_eq!(jobs.len(), 1);
    assert!(jobs[0].created_by.starts_with("sqs:"), "{:?}", jobs[0]);
    let id = jobs[0].id.to_string();
    let wait = stack.cli(&["job", "wait", &id, "--timeout-secs", "120"]);
    assert_eq!(wait.code, 0, "{}", wait.stderr);

    let mut rejection: Option<Value> = None;
    while rejection.is_none() {
        let received = aws
            .sqs
            .receive_message()
            .queue_url(&rejected_url)
            .wait_time_seconds(5)
            .send()
            .await
            .unwrap();
        rejection = received
            .messages
            .unwrap_or_default()
            .first()
            .and_then(|m| serde_json::from_str(m.body().unwrap_or_default()).ok());
    }
    let rejection = rejection.unwrap();
    assert_eq!(rejection["reason"], "invalid", "{rejection}");
    let fields: Vec<&str> = rejection["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert!(fields.contains(&"container.resources.cpu"), "{rejection}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_from_the_cli_and_the_api_and_changes_nothing() {
    let stack = Stack::start(StackOptions {
        agents: 1,
        ..StackOptions::default()
    })
    .await;

    // The CLI refuses what it can check itself, with exit code 2.
    let capacity = stack.cli(&[
        "job",
        "submit",
        "--app",
        "a",
        "--image",
        IMAGE,
        "--service",
        "3:1",
    ]);
    assert_eq!(capacity.code, 2, "{capacity:?}");
    assert!(
        capacity.stderr.contains("MIN:DESIRED:MAX"),
        "{}",
        capacity.stderr
    );

    // The API refuses an unknown field by name, and an invalid descriptor naming every problem
    // (here: the email, the CPU over the limit and a tag inside the image name); the CLI exits 2.
    let unknown = json!({"owner": {"teamEmail": "e2e@example.com"}, "applicationName": "a",
        "container": {"image": {"name": "busybox"}}, "batch": {"size": 1}, "colour": "blue"});
    let run = stack.cli_with(
        &["job", "submit", "--file", "-"],
        Some(&unknown.to_string()),
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("unknown field \"colour\""),
        "{}",
        run.stderr
    );
    let invalid = json!({"owner": {"teamEmail": "not-an-email"}, "applicationName": "a",
        "container": {"image": {"name": IMAGE}, "resources": {"cpu": 500}},
        "batch": {"size": 1}});
    let run = stack.cli_with(
        &["job", "submit", "--file", "-"],
        Some(&invalid.to_string()),
    );
    assert_eq!(run.code, 2, "{run:?}");
    for field in [
        "owner.teamEmail",
        "container.resources.cpu",
        "container.image.name",
    ] {
        assert!(run.stderr.contains(field), "{field}: {}", run.stderr);
    }

    // An unknown id is exit 3; a batch job cannot be scaled (exit 2); an idempotency key reused
    // for another descriptor is a conflict (exit 4); a bad token is exit 5.
    let missing = stack.cli(&["job", "get", &uuid::Uuid::new_v4().to_string()]);
    assert_eq!(missing.code, 3, "{missing:?}");
    let malformed = stack.cli(&["job", "get", "no-such-job"]);
    assert_eq!(malformed.code, 2, "{malformed:?}");
    assert!(malformed.stderr.contains("UUID"), "{}", malformed.stderr);
    let key_flags = [
        "--app",
        "e2e-bad",
        "--cpu",
        "0.5",
        "--idempotency-key",
        "e2e-key",
    ];
    let batch = stack.submit(&key_flags, &["true"]);
    let scale = stack.cli(&["job", "scale", &batch, "--desired", "3"]);
    assert_eq!(scale.code, 2, "{scale:?}");
    assert!(scale.stderr.contains("batch"), "{}", scale.stderr);
    let mut reused = vec!["job", "submit", "--image", IMAGE];
    reused.extend(key_flags);
    reused.extend(["--", "false"]);
    let reused = stack.cli(&reused);
    assert_eq!(reused.code, 4, "{reused:?}");
    let mut denied = std::process::Command::new(env!("CARGO_BIN_EXE_titus"));
    denied
        .args(["job", "list"])
        .env("TITUS_URL", &stack.url)
        .env("TITUS_TOKEN", "wrong-token");
    let denied = denied.output().unwrap();
    assert_eq!(denied.status.code(), Some(5), "{denied:?}");

    // The API itself: one error shape, the right statuses, nothing stored.
    let http = reqwest::Client::new();
    let post = |body: String, content_type: &'static str| {
        http.post(format!("{}/api/v3/jobs", stack.url))
            .bearer_auth("local-dev-token")
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let answer = post("{not json".to_owned(), "application/json")
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    let error: Value = answer.json().await.unwrap();
    assert!(
        error["error"].is_string() && error["message"].is_string(),
        "{error}"
    );
    let answer = post(invalid.to_string(), "text/plain").await.unwrap();
    assert_eq!(answer.status(), 415);
    let answer = post(invalid.to_string(), "application/json").await.unwrap();
    assert_eq!(answer.status(), 400);
    let error: Value = answer.json().await.unwrap();
    assert!(error["details"].as_array().unwrap().len() >= 3, "{error}");

    let jobs: support::Page<titus_core::Job> = stack.cli_json(&["job", "list"]);
    assert_eq!(
        jobs.items.len(),
        1,
        "only the valid job is stored: {:?}",
        jobs.items
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_scaler_launches_an_instance_for_a_task_no_agent_can_take() {
    let stack = Stack::start(StackOptions {
        agents: 0,
        scaler: true,
        ..StackOptions::default()
    })
    .await;
    let clients = titus_aws::AwsClients::from_env().await;
    let instances_of_stage = || {
        let ec2 = clients.ec2.clone();
        let stage = stack.stage.clone();
        async move {
            let out = ec2
                .describe_instances()
                .filters(
                    aws_sdk_ec2::types::Filter::builder()
                        .name(format!("tag:{}", titus_aws::resources::tag::STAGE))
                        .values(stage)
                        .build(),
                )
                .send()
                .await
                .unwrap();
            out.reservations()
                .iter()
                .flat_map(|r| r.instances())
                .filter_map(|i| i.instance_id().map(str::to_owned))
                .collect::<Vec<_>>()
        }
    };
    assert!(instances_of_stage().await.is_empty());

    let job = stack.submit(&["--app", "e2e-scale", "--batch", "1"], &["true"]);

    stack
        .eventually(
            "the scaler launches an instance of the stage's pool",
            || async { !instances_of_stage().await.is_empty() },
        )
        .await;
    // Until an agent registers, the scheduler's reason for the waiting task is shown with the
    // job and with the task.
    stack
        .eventually("job get says why the task waits", || async {
            let get = stack.cli(&["job", "get", &job]);
            get.stdout
                .contains("placement: 1 pending task fit on no agent (since ")
                && get.stdout.contains("\n  no agents\n")
        })
        .await;
    let task = stack.tasks(&job).remove(0);
    let get = stack.cli(&["task", "get", task.id.as_ref()]);
    assert_eq!(get.code, 0, "{}", get.stderr);
    assert!(
        get.stdout
            .contains("placement: 1 pending task fit on no agent")
            && get.stdout.contains("\n  no agents\n"),
        "{}",
        get.stdout
    );
    let json: Task = stack.cli_json(&["task", "get", task.id.as_ref()]);
    assert_eq!(json.id, task.id, "the JSON output stays the task alone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_attributes_contexts_and_completion_work_against_the_local_stack() {
    let stack = Stack::start(StackOptions {
        agents: 1,
        ..StackOptions::default()
    })
    .await;

    // A dry run places on the agent as it is and stores nothing.
    let fits = stack.cli(&[
        "job", "plan", "--app", "e2e-plan", "--image", IMAGE, "--batch", "2", "--", "true",
    ]);
    let too_big = stack.cli(&[
        "job",
        "plan",
        "--app",
        "e2e-plan",
        "--image",
        IMAGE,
        "--memory-mb",
        "1000000",
        "--",
        "true",
    ]);
    let stored: support::Page<titus_core::Job> =
        stack.cli_json(&["job", "list", "--app", "e2e-plan"]);
    assert_eq!(fits.code, 0, "{}", fits.stderr);
    assert!(
        fits.stdout
            .starts_with("2 tasks: 2 would be placed now, 0 would wait (on 1 agent)"),
        "{}",
        fits.stdout
    );
    assert_eq!(too_big.code, 0, "{}", too_big.stderr);
    assert!(
        too_big.stdout.contains("1 would wait")
            && too_big.stdout.contains("  insufficient memory on 1 agent"),
        "{}",
        too_big.stdout
    );
    assert!(
        stored.items.is_empty(),
        "a plan stored a job: {:?}",
        stored.items
    );

    // Attributes are set and deleted by key.
    let job = stack.submit(&["--app", "e2e-attrs", "--batch", "1"], &["true"]);
    let set = stack.cli(&["job", "attributes", "set", &job, "tier=gold", "team=core"]);
    let delete = stack.cli(&["job", "attributes", "delete", &job, "tier"]);
    let bad = stack.cli(&["job", "attributes", "set", &job, "no-equals"]);
    assert_eq!(set.code, 0, "{}", set.stderr);
    assert!(
        set.stdout.contains("tier") && set.stdout.contains("gold"),
        "{}",
        set.stdout
    );
    assert_eq!(delete.code, 0, "{}", delete.stderr);
    let attributes = stack.job(&job).job_descriptor.attributes;
    assert_eq!(attributes.get("team").map(String::as_str), Some("core"));
    assert!(!attributes.contains_key("tier"), "{attributes:?}");
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.stderr.contains("expected KEY=VALUE"), "{}", bad.stderr);

    // A named context stands for the URL and token.
    let dir = std::env::temp_dir().join(format!("titus-e2e-config-{}", uuid::Uuid::new_v4()));
    let config = dir.join("config.yaml");
    let config = config.to_str().unwrap();
    let with_config = [("TITUS_CONFIG", Some(config)), ("TITUS_URL", None)];
    let set = stack.cli_env(
        &[
            "config",
            "set-context",
            "here",
            "--url",
            &stack.url,
            "--token",
            "local-dev-token",
        ],
        None,
        &with_config,
    );
    let agents = stack.cli_env(&["agent", "list"], None, &with_config);
    let list = stack.cli_env(&["config", "list"], None, &with_config);
    let unknown = stack.cli_env(
        &["--context", "elsewhere", "agent", "list"],
        None,
        &with_config,
    );
    assert_eq!(set.code, 0, "{}", set.stderr);
    assert_eq!(agents.code, 0, "{}", agents.stderr);
    assert!(agents.stdout.contains(" active "), "{}", agents.stdout);
    assert!(
        list.stdout.contains("* ") && list.stdout.contains("here"),
        "{}",
        list.stdout
    );
    assert_eq!(unknown.code, 2, "{unknown:?}");
    assert!(
        unknown.stderr.contains("no context named \"elsewhere\""),
        "{}",
        unknown.stderr
    );
    std::fs::remove_dir_all(&dir).unwrap();

    // Lists follow the API's pages up to their limit, and say where to go on.
    let five = stack.submit(&["--app", "e2e-pages", "--batch", "5"], &["true"]);
    stack
        .eventually("the job's five tasks are written", || async {
            stack.tasks(&five).len() == 5
        })
        .await;
    let all: support::Page<Task> =
        stack.cli_json(&["task", "list", "--job", &five, "--page-size", "2"]);
    let limited = stack.cli(&[
        "task",
        "list",
        "--job",
        &five,
        "--page-size",
        "2",
        "--limit",
        "3",
    ]);
    assert_eq!(all.items.len(), 5, "{:?}", all.items);
    assert_eq!(limited.code, 0, "{}", limited.stderr);
    assert_eq!(
        limited
            .stdout
            .lines()
            .filter(|l| l.contains(&five[..8]))
            .count(),
        3,
        "{}",
        limited.stdout
    );
    assert!(
        limited.stdout.contains("more: --cursor "),
        "{}",
        limited.stdout
    );

    // --watch lists again until stopped.
    let mut watch = std::process::Command::new(support::titus_bin())
        .args(["agent", "list", "--watch", "1"])
        .env("TITUS_URL", &stack.url)
        .env("TITUS_CONFIG", "/nonexistent/titus-e2e/config.yaml")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2_600)).await;
    watch.kill().unwrap();
    let watched = String::from_utf8(watch.wait_with_output().unwrap().stdout).unwrap();
    assert!(
        watched.matches("every 1s, at ").count() >= 2 && watched.matches(" active ").count() >= 2,
        "{watched}"
    );

    // Following a running task's log ends when the task does.
    let talker = stack.submit(
        &["--app", "e2e-follow", "--batch", "1"],
        &["sh", "-c", "echo first; sleep 2; echo second"],
    );
    stack
        .eventually("the talker starts", || async {
            !stack.tasks_in(&talker, TaskState::Started).is_empty()
        })
        .await;
    let task = stack.tasks(&talker).remove(0);
    let followed = stack.cli(&[
        "task",
        "logs",
        task.id.as_ref(),
        "--follow",
        "--since",
        "10m",
    ]);
    assert_eq!(followed.code, 0, "{}", followed.stderr);
    assert!(
        followed.stdout.contains("first\n") && followed.stdout.contains("second\n"),
        "{}",
        followed.stdout
    );
    let bad_since = stack.cli(&["task", "logs", task.id.as_ref(), "--since", "yesterday"]);
    assert_eq!(bad_since.code, 2, "{bad_since:?}");

    // Completion scripts name the commands.
    let bash = stack.cli(&["completion", "bash"]);
    assert_eq!(bash.code, 0, "{}", bash.stderr);
    assert!(
        bash.stdout.contains("_titus") && bash.stdout.contains("plan"),
        "completion script"
    );
}

/// A descriptor in a shape Titus' own code and clients send (`crates/core/tests/data/titus/`),
/// its image the stack's test image.
fn titus_fixture(name: &str) -> Value {
    let path = format!(
        "{}/../crates/core/tests/data/titus/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut descriptor: Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let (name, tag) = IMAGE.split_once(':').unwrap();
    descriptor["container"]["image"]["name"] = json!(name);
    descriptor["container"]["image"]["tag"] = json!(tag);
    descriptor
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptors_in_the_shapes_titus_clients_send_run_on_the_local_stack() {
    let stack = Stack::start(StackOptions::default()).await;
    let submit = |name: &str| -> String {
        let answer: Value =
            serde_json::from_str(&submit_file(&stack, &titus_fixture(name), "json"))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        answer["id"].as_str().unwrap().to_owned()
    };
    let batches: Vec<(&str, String)> = [
        "testkit-batch",
        "spinnaker-run-job",
        "cli-template",
        "get-response-descriptor",
    ]
    .into_iter()
    .map(|name| (name, submit(name)))
    .collect();
    let services: Vec<(&str, String, usize)> =
        [("spinnaker-server-group", 2), ("testkit-service", 1)]
            .into_iter()
            .map(|(name, desired)| (name, submit(name), desired))
            .collect();

    for (name, job) in &batches {
        let wait = stack.cli(&["job", "wait", job, "--timeout-secs", "120"]);
        assert_eq!(wait.code, 0, "{name}: {}{}", wait.stderr, stack.logs());
        let tasks = stack.tasks(job);
        assert!(
            !tasks.is_empty()
                && tasks
                    .iter()
                    .all(|t| t.status.reason_code == Some(TaskReason::Normal)
                        && t.exit_code == Some(0)),
            "{name}: {:?}",
            reasons(&tasks)
        );
    }
    for (name, job, desired) in &services {
        stack
            .eventually(&format!("{name}'s {desired} task(s) run"), || async {
                stack.tasks_in(job, TaskState::Started).len() == *desired
            })
            .await;
    }
    // What the job asked for, beyond what the platform acts on, is kept.
    let server_group = stack.job(&services[0].1);
    let budget = server_group
        .job_descriptor
        .disruption_budget
        .as_ref()
        .unwrap();
    assert_eq!(budget.time_windows[0].time_zone, "PST");
    for (_, job, _) in &services {
        let kill = stack.cli(&["job", "kill", job]);
        assert_eq!(kill.code, 0, "{}", kill.stderr);
    }
}
