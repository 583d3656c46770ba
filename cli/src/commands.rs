//! The `job`, `task` and `agent` subcommands.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use titus_core::placement::Rejection;
use titus_core::{Agent, Job, JobState, Task, TaskReason, TaskState};

use crate::client::{CliError, Client};
use crate::output::{emit, table, time};
use crate::Output;

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Submit a job from a JSON or YAML file, or from flags.
    Submit(SubmitArgs),
    /// List jobs, newest first.
    List(ListJobsArgs),
    /// Show one job.
    Get { id: String },
    /// Kill a job and all its tasks.
    Kill { id: String },
    /// Change a service job's capacity.
    Scale {
        id: String,
        #[arg(long)]
        min: Option<u32>,
        #[arg(long)]
        desired: Option<u32>,
        #[arg(long)]
        max: Option<u32>,
    },
    /// Let a service job's capacity changes take effect.
    Enable { id: String },
    /// Keep a service job's tasks but ignore capacity changes.
    Disable { id: String },
    /// A dry run: validate a descriptor (a file or the submit flags) and show where its tasks
    /// would be placed on the agents as they are now, and why the others would wait. Stores
    /// nothing.
    Plan(SubmitArgs),
    /// Set or delete a job's attributes.
    #[command(subcommand)]
    Attributes(AttributesCommand),
    /// Print the job's events from its creation, then follow them until it finishes.
    Watch { id: String },
    /// Wait until the job finishes, with a progress bar. Exit 7 if a task did not end normally.
    /// Follows the job's events (falling back to polling where the API has none).
    Wait {
        id: String,
        /// Give up after this many seconds (exit 8).
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum AttributesCommand {
    /// Set attributes, `KEY=VALUE`; others are kept.
    Set {
        id: String,
        #[arg(required = true)]
        pairs: Vec<String>,
    },
    /// Delete attributes by key.
    Delete {
        id: String,
        #[arg(required = true)]
        keys: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// A job descriptor (JSON, or YAML when the name ends in .yaml or .yml); `-` reads stdin.
    #[arg(long, short, conflicts_with_all = ["image", "app"])]
    file: Option<String>,
    /// The image, `name[:tag]` or `name@digest`.
    #[arg(long)]
    image: Option<String>,
    /// The application name.
    #[arg(long)]
    app: Option<String>,
    /// The owner's team email.
    #[arg(long, env = "TITUS_OWNER", default_value = "dev@titus.local")]
    owner: String,
    #[arg(long)]
    cpu: Option<f64>,
    #[arg(long)]
    memory_mb: Option<u64>,
    /// A batch job of this many tasks (the default is one).
    #[arg(long, conflicts_with = "service")]
    batch: Option<u32>,
    /// A service job with capacity `MIN:DESIRED:MAX`.
    #[arg(long)]
    service: Option<String>,
    /// Environment variables, `NAME=VALUE`; repeatable.
    #[arg(long = "env", short = 'e')]
    env: Vec<String>,
    /// Makes a retried submission return the same job.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// The command to run, after `--`.
    #[arg(last = true)]
    command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ListJobsArgs {
    /// Comma-separated states: Accepted, KillInitiated, Finished.
    #[arg(long)]
    state: Option<String>,
    #[arg(long)]
    owner: Option<String>,
    #[arg(long)]
    app: Option<String>,
    /// batch or service.
    #[arg(long = "type")]
    job_type: Option<String>,
    /// Jobs per request; pages are followed until --limit.
    #[arg(long, default_value_t = 100)]
    page_size: u32,
    /// The most jobs to list, following the API's pages.
    #[arg(long, default_value_t = 1_000)]
    limit: u32,
    /// Start from a cursor a previous listing printed.
    #[arg(long)]
    cursor: Option<String>,
    /// List again every this many seconds, until Ctrl-C.
    #[arg(long, value_name = "SECS")]
    watch: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// List tasks.
    List {
        #[arg(long)]
        job: Option<String>,
        /// Comma-separated states.
        #[arg(long)]
        state: Option<String>,
        /// Tasks per request; pages are followed until --limit.
        #[arg(long, default_value_t = 100)]
        page_size: u32,
        /// The most tasks to list, following the API's pages.
        #[arg(long, default_value_t = 1_000)]
        limit: u32,
        /// Start from a cursor a previous listing printed.
        #[arg(long)]
        cursor: Option<String>,
        /// List again every this many seconds, until Ctrl-C.
        #[arg(long, value_name = "SECS")]
        watch: Option<u64>,
    },
    /// Show one task with its history.
    Get { id: String },
    /// Kill a task. With --shrink a service job's desired count drops by one; without, the task
    /// is replaced.
    Kill {
        id: String,
        #[arg(long)]
        shrink: bool,
    },
    /// Print a task's output: its CloudWatch Logs stream (`{job id}/{task id}` in its agent's
    /// group) through the API, or the local Docker engine for an agent that keeps it on the host.
    Logs {
        id: String,
        /// Lines from the end to start with.
        #[arg(long, default_value_t = 100)]
        tail: u32,
        /// Only lines since this time: a duration (`10m`, `1h`) or an RFC 3339 timestamp.
        #[arg(long)]
        since: Option<String>,
        /// Follow the output until the task is Finished.
        #[arg(long, short)]
        follow: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// List the agents.
    List {
        /// List again every this many seconds, until Ctrl-C.
        #[arg(long, value_name = "SECS")]
        watch: Option<u64>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct Page<T> {
    items: Vec<T>,
    #[serde(default)]
    pagination: Option<Value>,
}

/// How a listing follows the API's pages.
struct Paging {
    page_size: u32,
    limit: u32,
    cursor: Option<String>,
}

/// Up to `paging.limit` items, page after page from `paging.cursor`. The answer's pagination is
/// the last page's, so its cursor goes on where the listing stopped.
async fn all_pages<T: serde::de::DeserializeOwned>(
    client: &Client,
    path: &str,
    query: &[(&str, String)],
    paging: &Paging,
) -> Result<Page<T>, CliError> {
    let mut items = Vec::new();
    let mut cursor = paging.cursor.clone();
    loop {
        let want = paging.limit.saturating_sub(items.len() as u32);
        let mut q = query.to_vec();
        q.push(("pageSize", paging.page_size.min(want).max(1).to_string()));
        if let Some(c) = &cursor {
            q.push(("cursor", c.clone()));
        }
        let page: Page<T> = client.get(path, &q).await?;
        items.extend(page.items);
        cursor = page
            .pagination
            .as_ref()
            .and_then(|p| p["cursor"].as_str())
            .filter(|c| !c.is_empty())
            .map(str::to_owned);
        if cursor.is_none() || items.len() as u32 >= paging.limit {
            return Ok(Page {
                items,
                pagination: page.pagination,
            });
        }
    }
}

/// Where a listing stopped at its limit, to go on from.
fn print_more<T>(page: &Page<T>) {
    if let Some(cursor) = page
        .pagination
        .as_ref()
        .and_then(|p| p["cursor"].as_str())
        .filter(|c| !c.is_empty())
    {
        println!("more: --cursor {cursor}");
    }
}

/// Runs `list` once, or every `watch` seconds until Ctrl-C, clearing the screen before each
/// table. A failed round is shown and the next one tried.
async fn watching<F, Fut>(watch: Option<u64>, output: Output, list: F) -> Result<(), CliError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), CliError>>,
{
    let Some(secs) = watch else {
        return list().await;
    };
    let every = Duration::from_secs(secs.max(1));
    loop {
        if output == Output::Table {
            print!("\x1b[2J\x1b[H");
            println!("every {}s, at {}\n", every.as_secs(), time(now_ms()));
        }
        if let Err(e) = list().await {
            eprintln!("titus: {e}");
        }
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub async fn job(client: &Client, command: JobCommand, output: Output) -> Result<(), CliError> {
    match command {
        JobCommand::Submit(args) => submit(client, args, output).await,
        JobCommand::List(args) => {
            let mut query = Vec::new();
            for (name, value) in [
                ("jobState", args.state),
                ("owner", args.owner),
                ("applicationName", args.app),
                ("jobType", args.job_type),
            ] {
                if let Some(value) = value {
                    query.push((name, value));
                }
            }
            let paging = Paging {
                page_size: args.page_size,
                limit: args.limit,
                cursor: args.cursor,
            };
            watching(args.watch, output, || async {
                let page: Page<Job> = all_pages(client, "/api/v3/jobs", &query, &paging).await?;
                emit(output, &page, |page| {
                    print_jobs(&page.items);
                    print_more(page);
                })
            })
            .await
        }
        JobCommand::Get { id } => {
            let job: Job = client.get(&format!("/api/v3/jobs/{id}"), &[]).await?;
            let placement = match (output, job.status.state) {
                (Output::Table, JobState::Accepted) => placement_lines(client, &id).await,
                _ => Vec::new(),
            };
            emit(output, &job, |job| {
                print_jobs(std::slice::from_ref(job));
                print_placement(&placement);
            })
        }
        JobCommand::Kill { id } => {
            let answer: Value = client
                .send(
                    Method::DELETE,
                    &format!("/api/v3/jobs/{id}"),
                    &[],
                    None,
                    &[],
                )
                .await?;
            emit(output, &answer, |_| println!("job {id}: kill requested"))
        }
        JobCommand::Scale {
            id,
            min,
            desired,
            max,
        } => {
            if min.is_none() && desired.is_none() && max.is_none() {
                return Err(CliError::Invalid(
                    "job scale needs at least one of --min, --desired, --max".to_owned(),
                ));
            }
            let body = json!({"min": min, "desired": desired, "max": max});
            let answer: Value = client
                .send(
                    Method::PUT,
                    &format!("/api/v3/jobs/{id}/instances"),
                    &[],
                    Some(&body),
                    &[],
                )
                .await?;
            emit(output, &answer, |_| println!("job {id}: capacity updated"))
        }
        JobCommand::Enable { id } => job_toggle(client, &id, true, output).await,
        JobCommand::Disable { id } => job_toggle(client, &id, false, output).await,
        JobCommand::Wait { id, timeout_secs } => wait(client, &id, timeout_secs, output).await,
        JobCommand::Watch { id } => {
            let job: Job = client.get(&format!("/api/v3/jobs/{id}"), &[]).await?;
            let feed = crate::events::Feed {
                job: Some(job.id.to_string()),
                ..crate::events::Feed::default()
            };
            if job.status.state == JobState::Finished {
                // Its whole story, then stop.
                return crate::events::show(
                    client,
                    feed,
                    Some(job.created_at_ms),
                    false,
                    output,
                    |_| false,
                )
                .await;
            }
            crate::events::show(
                client,
                feed,
                Some(job.created_at_ms),
                true,
                output,
                |event| {
                    event.kind == titus_core::events::EventType::JobStateChange
                        && event.state.as_deref() == Some("Finished")
                },
            )
            .await
        }
        JobCommand::Plan(args) => plan(client, args, output).await,
        JobCommand::Attributes(command) => attributes(client, command, output).await,
    }
}

async fn attributes(
    client: &Client,
    command: AttributesCommand,
    output: Output,
) -> Result<(), CliError> {
    let job: Job = match &command {
        AttributesCommand::Set { id, pairs } => {
            let mut attributes = BTreeMap::new();
            for pair in pairs {
                let (key, value) = pair.split_once('=').ok_or_else(|| {
                    CliError::Invalid(format!("attribute {pair:?}: expected KEY=VALUE"))
                })?;
                attributes.insert(key.to_owned(), value.to_owned());
            }
            let body = json!({ "attributes": attributes });
            client
                .send(
                    Method::PUT,
                    &format!("/api/v3/jobs/{id}/attributes"),
                    &[],
                    Some(&body),
                    &[],
                )
                .await?
        }
        AttributesCommand::Delete { id, keys } => {
            client
                .send(
                    Method::DELETE,
                    &format!("/api/v3/jobs/{id}/attributes"),
                    &[("keys", keys.join(","))],
                    None,
                    &[],
                )
                .await?
        }
    };
    emit(output, &job, |job| {
        let rows: Vec<Vec<String>> = job
            .job_descriptor
            .attributes
            .iter()
            .map(|(k, v)| vec![k.clone(), v.clone()])
            .collect();
        table(&["KEY", "VALUE"], &rows);
    })
}

async fn plan(client: &Client, args: SubmitArgs, output: Output) -> Result<(), CliError> {
    let descriptor = match &args.file {
        Some(path) => read_descriptor(path)?,
        None => descriptor_from_flags(&args)?,
    };
    let plan: Value = client
        .send(
            Method::POST,
            "/api/v3/scheduler/plan",
            &[],
            Some(&descriptor),
            &[],
        )
        .await?;
    emit(output, &plan, |plan| {
        plan_lines(plan).iter().for_each(|l| println!("{l}"))
    })
}

/// A reason and its count of agents, from an answer that names the count `count_field`.
fn rejection(value: &Value, count_field: &str) -> Rejection {
    Rejection {
        reason: value["reason"].as_str().unwrap_or_default().to_owned(),
        agents: u32::try_from(value[count_field].as_u64().unwrap_or_default()).unwrap_or(u32::MAX),
    }
}

/// A dry run's answer as lines.
fn plan_lines(plan: &Value) -> Vec<String> {
    let n = |field: &str| plan[field].as_u64().unwrap_or_default();
    let mut lines = vec![format!(
        "{} task{}: {} would be placed now, {} would wait (on {} agent{})",
        n("tasks"),
        if n("tasks") == 1 { "" } else { "s" },
        n("placed"),
        n("unplaced"),
        n("agents"),
        if n("agents") == 1 { "" } else { "s" },
    )];
    if let Some(placements) = plan["placements"].as_object().filter(|p| !p.is_empty()) {
        lines.push("placements:".to_owned());
        for (agent, count) in placements {
            lines.push(format!("  {agent}: {}", count.as_u64().unwrap_or_default()));
        }
    }
    if let Some(rejections) = plan["rejections"].as_array().filter(|r| !r.is_empty()) {
        lines.push("would wait because:".to_owned());
        for r in rejections {
            lines.push(format!("  {}", rejection(r, "agents").in_words()));
        }
    }
    if let Some(short) = plan["insufficient"].as_array().filter(|a| !a.is_empty()) {
        let names: Vec<&str> = short.iter().filter_map(Value::as_str).collect();
        lines.push(format!("  more capacity would need: {}", names.join(", ")));
    }
    if let Some(refusal) = plan["quotaRefusal"].as_str() {
        lines.push(format!("a submission now would be refused: {refusal}"));
    }
    lines
}

async fn job_toggle(
    client: &Client,
    id: &str,
    enable: bool,
    output: Output,
) -> Result<(), CliError> {
    let verb = if enable { "enable" } else { "disable" };
    let answer: Value = client
        .send(
            Method::POST,
            &format!("/api/v3/jobs/{id}/{verb}"),
            &[],
            None,
            &[],
        )
        .await?;
    emit(output, &answer, |_| println!("job {id}: {verb}d"))
}

fn print_jobs(jobs: &[Job]) {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|job| {
            let d = &job.job_descriptor;
            let size = match (&d.batch, &d.service) {
                (Some(batch), _) => format!("batch {}", batch.size),
                (None, Some(service)) => format!(
                    "service {}/{}/{}",
                    service.capacity.min, service.capacity.desired, service.capacity.max
                ),
                _ => "-".to_owned(),
            };
            vec![
                job.id.to_string(),
                d.application_name.clone(),
                size,
                job.status.state.to_string(),
                job.status.reason_code.clone(),
                time(job.created_at_ms),
            ]
        })
        .collect();
    table(&["ID", "APP", "TYPE", "STATE", "REASON", "CREATED"], &rows);
}

async fn submit(client: &Client, args: SubmitArgs, output: Output) -> Result<(), CliError> {
    let descriptor = match &args.file {
        Some(path) => read_descriptor(path)?,
        None => descriptor_from_flags(&args)?,
    };
    let mut headers = Vec::new();
    if let Some(key) = &args.idempotency_key {
        headers.push(("idempotency-key", key.clone()));
    }
    let job: Job = client
        .send(
            Method::POST,
            "/api/v3/jobs",
            &[],
            Some(&descriptor),
            &headers,
        )
        .await?;
    emit(output, &job, |job| println!("{}", job.id))
}

fn read_descriptor(path: &str) -> Result<Value, CliError> {
    let text = if path == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| CliError::Invalid(format!("cannot read stdin: {e}")))?
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| CliError::Invalid(format!("cannot read {path:?}: {e}")))?
    };
    if path.ends_with(".yaml") || path.ends_with(".yml") {
        serde_yaml::from_str(&text)
            .map_err(|e| CliError::Invalid(format!("{path:?} is not valid YAML: {e}")))
    } else {
        serde_json::from_str(&text)
            .map_err(|e| CliError::Invalid(format!("{path:?} is not valid JSON: {e}")))
    }
}

fn descriptor_from_flags(args: &SubmitArgs) -> Result<Value, CliError> {
    let image = args.image.as_deref().ok_or_else(|| {
        CliError::Invalid("job submit needs --file, or --image and --app".to_owned())
    })?;
    let app = args
        .app
        .as_deref()
        .ok_or_else(|| CliError::Invalid("job submit needs --app with --image".to_owned()))?;
    let (name, tag, digest) = split_image(image);
    let mut env = BTreeMap::new();
    for pair in &args.env {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| CliError::Invalid(format!("--env {pair:?}: expected NAME=VALUE")))?;
        env.insert(key.to_owned(), value.to_owned());
    }
    let mut resources = serde_json::Map::new();
    if let Some(cpu) = args.cpu {
        resources.insert("cpu".to_owned(), json!(cpu));
    }
    if let Some(memory) = args.memory_mb {
        resources.insert("memoryMB".to_owned(), json!(memory));
    }
    let mut image_json = json!({"name": name});
    if let Some(tag) = tag {
        image_json["tag"] = json!(tag);
    }
    if let Some(digest) = digest {
        image_json["digest"] = json!(digest);
    }
    let mut descriptor = json!({
        "owner": {"teamEmail": args.owner},
        "applicationName": app,
        "container": {
            "image": image_json,
            "resources": resources,
            "env": env,
            "command": args.command,
        },
    });
    match &args.service {
        Some(capacity) => {
            let parts: Vec<&str> = capacity.split(':').collect();
            let numbers: Option<Vec<u32>> = parts.iter().map(|p| p.parse().ok()).collect();
            let Some([min, desired, max]) = numbers
                .as_deref()
                .and_then(|n| <[u32; 3]>::try_from(n).ok())
            else {
                return Err(CliError::Invalid(format!(
                    "--service {capacity:?}: expected MIN:DESIRED:MAX, e.g. 1:2:4"
                )));
            };
            descriptor["service"] =
                json!({"capacity": {"min": min, "desired": desired, "max": max}});
        }
        None => descriptor["batch"] = json!({"size": args.batch.unwrap_or(1)}),
    }
    Ok(descriptor)
}

/// `name:tag`, `name@digest` or `name`; a `:` inside a registry host (`host:5000/x`) is not a tag.
fn split_image(image: &str) -> (&str, Option<&str>, Option<&str>) {
    if let Some((name, digest)) = image.split_once('@') {
        return (name, None, Some(digest));
    }
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, Some(tag), None),
        _ => (image, None, None),
    }
}

async fn all_tasks(client: &Client, job_id: &str) -> Result<Vec<Task>, CliError> {
    let mut tasks = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = vec![("jobId", job_id.to_owned()), ("pageSize", "500".to_owned())];
        if let Some(cursor) = &cursor {
            query.push(("cursor", cursor.clone()));
        }
        let page: Page<Task> = client.get("/api/v3/tasks", &query).await?;
        tasks.extend(page.items);
        cursor = page
            .pagination
            .as_ref()
            .and_then(|p| p["cursor"].as_str())
            .map(str::to_owned);
        if cursor.is_none() {
            return Ok(tasks);
        }
    }
}

/// The tasks nothing replaced: the last of each slot's chain.
fn latest_tasks(tasks: &[Task]) -> Vec<&Task> {
    let replaced: HashSet<&str> = tasks
        .iter()
        .filter_map(|t| t.resubmit_of.as_ref().map(|id| id.as_str()))
        .collect();
    tasks
        .iter()
        .filter(|t| !replaced.contains(t.id.as_str()))
        .collect()
}

async fn wait(
    client: &Client,
    id: &str,
    timeout_secs: u64,
    output: Output,
) -> Result<(), CliError> {
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    let bar = match output {
        Output::Table => indicatif::ProgressBar::new(0),
        Output::Json => indicatif::ProgressBar::hidden(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} finished")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    // The feed's cursor is taken before the state is read: no change after the read is missed.
    let mut follower = crate::events::Follower::new(
        client,
        crate::events::Feed {
            job: Some(id.to_owned()),
            ..crate::events::Feed::default()
        },
        None,
    );
    let mut feed = match follower.next(0).await {
        Ok(_) => Some(follower),
        // An API without the feed: poll.
        Err(CliError::NotFound(_)) => None,
        Err(e) => return Err(e),
    };
    loop {
        let job: Job = client.get(&format!("/api/v3/jobs/{id}"), &[]).await?;
        let tasks = all_tasks(client, id).await?;
        let latest = latest_tasks(&tasks);
        let finished = latest
            .iter()
            .filter(|t| t.state() == TaskState::Finished)
            .count();
        let started = latest
            .iter()
            .filter(|t| t.state() == TaskState::Started)
            .count();
        bar.set_length(latest.len() as u64);
        bar.set_position(finished as u64);
        bar.set_message(format!(
            "job {} {}, {started} running",
            short(id),
            job.status.state
        ));
        if job.status.state == JobState::Finished {
            bar.finish_and_clear();
            let failed: Vec<&&Task> = latest
                .iter()
                .filter(|t| t.status.reason_code != Some(TaskReason::Normal))
                .collect();
            emit(output, &job, |job| {
                println!("job {} finished: {}", job.id, job.status.reason_code);
            })?;
            if failed.is_empty() {
                return Ok(());
            }
            return Err(CliError::JobFailed(format!(
                "job {id} finished with {} of {} tasks not ending normally",
                failed.len(),
                latest.len()
            )));
        }
        if Instant::now() >= deadline {
            bar.abandon();
            return Err(CliError::Timeout(format!(
                "job {id} still {} after {timeout_secs} s",
                job.status.state
            )));
        }
        match feed.as_mut() {
            Some(follower) => {
                crate::events::next_change(follower, deadline).await?;
            }
            None => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

pub async fn task(client: &Client, command: TaskCommand, output: Output) -> Result<(), CliError> {
    match command {
        TaskCommand::List {
            job,
            state,
            page_size,
            limit,
            cursor,
            watch,
        } => {
            let mut query = Vec::new();
            for (name, value) in [("jobId", job), ("taskStates", state)] {
                if let Some(value) = value {
                    query.push((name, value));
                }
            }
            let paging = Paging {
                page_size,
                limit,
                cursor,
            };
            watching(watch, output, || async {
                let page: Page<Task> = all_pages(client, "/api/v3/tasks", &query, &paging).await?;
                emit(output, &page, |page| {
                    print_tasks(&page.items);
                    print_more(page);
                })
            })
            .await
        }
        TaskCommand::Get { id } => {
            let task: Task = client.get(&format!("/api/v3/tasks/{id}"), &[]).await?;
            let placement = match output {
                Output::Table if !task.state().is_terminal() => placement_lines(client, &id).await,
                _ => Vec::new(),
            };
            emit(output, &task, |task| {
                print_tasks(std::slice::from_ref(task));
                print_placement(&placement);
                println!();
                let mut history = task.status_history.clone();
                history.push(task.status.clone());
                let rows: Vec<Vec<String>> = history
                    .iter()
                    .map(|s| {
                        vec![
                            time(s.timestamp_ms),
                            s.state.to_string(),
                            s.reason_code.map(|r| r.to_string()).unwrap_or_default(),
                            s.reason_message.clone(),
                        ]
                    })
                    .collect();
                table(&["TIME", "STATE", "REASON", "MESSAGE"], &rows);
            })
        }
        TaskCommand::Kill { id, shrink } => {
            let answer: Value = client
                .send(
                    Method::DELETE,
                    &format!("/api/v3/tasks/{id}"),
                    &[("shrink", shrink.to_string())],
                    None,
                    &[],
                )
                .await?;
            emit(output, &answer, |_| println!("task {id}: kill requested"))
        }
        TaskCommand::Logs {
            id,
            tail,
            since,
            follow,
        } => logs(client, &id, tail, since.as_deref(), follow, output).await,
    }
}

fn print_tasks(tasks: &[Task]) {
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            vec![
                t.id.to_string(),
                short(t.job_id.as_str()).to_owned(),
                t.index.to_string(),
                t.state().to_string(),
                t.status
                    .reason_code
                    .map(|r| r.to_string())
                    .unwrap_or_default(),
                t.agent_id.clone().unwrap_or_else(|| "-".to_owned()),
                t.exit_code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".to_owned()),
                time(t.status.timestamp_ms),
            ]
        })
        .collect();
    table(
        &[
            "ID", "JOB", "SLOT", "STATE", "REASON", "AGENT", "EXIT", "SINCE",
        ],
        &rows,
    );
}

/// A task's output through the API (CloudWatch Logs): the last `tail` lines (since `since`),
/// then with `follow` every line written after, until the task is Finished and its last lines are
/// read. An agent that keeps its tasks' output on its host (json-file) is read through this
/// machine's Docker engine instead, which works for the local stack.
async fn logs(
    client: &Client,
    id: &str,
    tail: u32,
    since: Option<&str>,
    follow: bool,
    output: Output,
) -> Result<(), CliError> {
    /// How often a follow reads again.
    const POLL: std::time::Duration = std::time::Duration::from_secs(1);
    let since_ms = since.map(since_ms).transpose()?;
    let path = format!("/api/v3/tasks/{id}/logs");
    let mut query = vec![("tail", tail.max(1).to_string())];
    if let Some(since_ms) = since_ms {
        query.push(("sinceMs", since_ms.to_string()));
    }
    let mut finished_reads = 0;
    loop {
        let page: Value = match client.send(Method::GET, &path, &query, None, &[]).await {
            Ok(page) => page,
            Err(CliError::NotFound(message)) if message.contains("json-file") => {
                return docker_logs(id, tail, since, follow);
            }
            Err(e) => return Err(e),
        };
        let lines = page["lines"].as_array().cloned().unwrap_or_default();
        for line in &lines {
            match output {
                Output::Json => println!("{line}"),
                Output::Table => println!("{}", line["message"].as_str().unwrap_or_default()),
            }
        }
        if !follow {
            return Ok(());
        }
        // The agent reports Finished once the container stopped, when its driver has flushed:
        // read until a read after that returns nothing.
        if page["taskFinished"] == true {
            finished_reads += 1;
            if lines.is_empty() && finished_reads > 1 {
                return Ok(());
            }
        }
        query = match page["cursor"].as_str() {
            Some(cursor) => vec![("cursor", cursor.to_owned())],
            // No stream yet (the task has not started): from its first line, next time.
            None => since_ms
                .map(|since| vec![("sinceMs", since.to_string())])
                .unwrap_or_default(),
        };
        tokio::time::sleep(POLL).await;
    }
}

/// `--since` as a time: a duration before now, or a UTC timestamp or date.
fn since_ms(since: &str) -> Result<u64, CliError> {
    check_since(since)?;
    crate::events::duration_ms(since)
        .map(|ago| now_ms().saturating_sub(ago))
        .or_else(|| crate::output::parse_utc_ms(since))
        .ok_or_else(|| {
            CliError::Invalid(format!(
                "--since {since:?}: expected a duration such as 10m or 1h30m, or a UTC time such \
                 as 2026-12-01T10:00:00Z"
            ))
        })
}

/// A task's output from the local Docker engine (json-file agents of the local stack).
fn docker_logs(id: &str, tail: u32, since: Option<&str>, follow: bool) -> Result<(), CliError> {
    if let Some(since) = since {
        check_since(since)?;
    }
    let found = std::process::Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=titus.task.id={id}"),
        ])
        .output()
        .map_err(|e| CliError::Unavailable(format!("cannot run docker: {e}")))?;
    let container = String::from_utf8_lossy(&found.stdout)
        .lines()
        .next()
        .map(str::to_owned);
    let Some(container) = container else {
        return Err(CliError::NotFound(format!(
            "no container of task {id} on this machine's Docker engine"
        )));
    };
    let mut args = vec!["logs".to_owned(), "--tail".to_owned(), tail.to_string()];
    if let Some(since) = since {
        args.extend(["--since".to_owned(), since.to_owned()]);
    }
    if follow {
        // Docker ends a follow when the container stops, i.e. when the task finishes.
        args.push("--follow".to_owned());
    }
    args.push(container);
    let status = std::process::Command::new("docker")
        .args(&args)
        .status()
        .map_err(|e| CliError::Unavailable(format!("cannot run docker: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(CliError::Unavailable(format!(
            "docker logs failed for task {id}"
        )))
    }
}

/// A `--since` value Docker takes: a duration of digits and `s`, `m` or `h` (`90s`, `1h30m`),
/// or a timestamp (`2026-12-01T10:00:00Z`).
fn check_since(since: &str) -> Result<(), CliError> {
    let duration = !since.is_empty()
        && since.split_inclusive(['s', 'm', 'h']).all(|part| {
            part.len() > 1
                && part[..part.len() - 1].bytes().all(|b| b.is_ascii_digit())
                && part.ends_with(['s', 'm', 'h'])
        });
    let timestamp = since.len() >= 10
        && since.as_bytes()[4] == b'-'
        && since
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-:.+".contains(&b));
    if duration || timestamp {
        Ok(())
    } else {
        Err(CliError::Invalid(format!(
            "--since {since:?}: expected a duration such as 10m or 1h30m, or a timestamp such as \
             2026-12-01T10:00:00Z"
        )))
    }
}

pub async fn agent(client: &Client, command: AgentCommand, output: Output) -> Result<(), CliError> {
    match command {
        AgentCommand::List { watch } => {
            watching(watch, output, || agent_list(client, output)).await
        }
    }
}

async fn agent_list(client: &Client, output: Output) -> Result<(), CliError> {
    let list: Page<Agent> = client.get("/api/v3/agents", &[]).await?;
    emit(output, &list, |list| {
        let rows: Vec<Vec<String>> = list
            .items
            .iter()
            .map(|a| {
                vec![
                    a.id.clone(),
                    a.state.to_string(),
                    a.zone.clone(),
                    a.machine_type.clone(),
                    format!("{}/{}", a.allocated.cpu_millis, a.capacity.cpu_millis),
                    format!("{}/{}", a.allocated.memory_mb, a.capacity.memory_mb),
                    a.task_count.to_string(),
                    time(a.heartbeat_at_ms),
                ]
            })
            .collect();
        table(
            &[
                "ID",
                "STATE",
                "ZONE",
                "TYPE",
                "CPU(m)",
                "MEMORY(MB)",
                "TASKS",
                "HEARTBEAT",
            ],
            &rows,
        );
    })
}

/// What `GET /api/v3/quotas` answers, as the CLI reads it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct QuotaList {
    items: Vec<QuotaRow>,
    #[serde(default)]
    default_team_limits: Value,
    #[serde(default)]
    default_capacity_group_limits: Value,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct QuotaRow {
    kind: String,
    name: String,
    limits: Value,
    used: Value,
}

/// `used/limit` of one dimension, `-` for no limit.
fn used_of(row: &QuotaRow, dimension: &str) -> String {
    let used = row
        .used
        .get(dimension)
        .map_or("0".to_owned(), Value::to_string);
    let limit = row
        .limits
        .get(dimension)
        .map_or("-".to_owned(), Value::to_string);
    format!("{used}/{limit}")
}

/// Shows the quotas the caller may see, with what each holds.
pub async fn quota(client: &Client, output: Output) -> Result<(), CliError> {
    let list: QuotaList = client.get("/api/v3/quotas", &[]).await?;
    emit(output, &list, |list| {
        let rows: Vec<Vec<String>> = list
            .items
            .iter()
            .map(|row| {
                vec![
                    row.kind.clone(),
                    row.name.clone(),
                    used_of(row, "jobs"),
                    used_of(row, "tasks"),
                    used_of(row, "cpu"),
                    used_of(row, "memoryMB"),
                    used_of(row, "gpu"),
                ]
            })
            .collect();
        table(
            &["KIND", "NAME", "JOBS", "TASKS", "CPU", "MEMORY(MB)", "GPU"],
            &rows,
        );
        println!(
            "defaults: team {}, capacity group {} (used/limit; - is no limit)",
            list.default_team_limits, list.default_capacity_group_limits
        );
    })
}

/// The scheduler's word on a task, or on a job's pending tasks, as lines for the table output:
/// where it was placed, or why it waits. Empty when the API cannot say (an older API, or a
/// failed call): the rest of the output stands without it.
async fn placement_lines(client: &Client, id: &str) -> Vec<String> {
    match client
        .get::<Value>(&format!("/api/v3/scheduler/results/{id}"), &[])
        .await
    {
        Ok(result) => placement_lines_of(&result),
        Err(_) => Vec::new(),
    }
}

/// The lines of one `GET /api/v3/scheduler/results/{id}` answer.
fn placement_lines_of(result: &Value) -> Vec<String> {
    if let Some(message) = result["success"]["message"].as_str() {
        return vec![format!("placement: {message}")];
    }
    if let Some(failures) = result["failures"]["failures"].as_array() {
        let tasks = result["unplacedTasks"].as_u64().unwrap_or_default();
        let stale = if result["stale"] == true {
            ", not confirmed since: the scheduler has not reconsidered it"
        } else {
            ""
        };
        let mut lines = vec![format!(
            "placement: {tasks} pending task{} fit on no agent (since {}, checked {}{stale})",
            if tasks == 1 { "" } else { "s" },
            time(result["sinceMs"].as_u64().unwrap_or_default()),
            time(result["computedAtMs"].as_u64().unwrap_or_default()),
        )];
        for failure in failures {
            lines.push(format!(
                "  {}",
                rejection(failure, "failureCount").in_words()
            ));
        }
        if let Some(short) = result["insufficient"].as_array().filter(|a| !a.is_empty()) {
            let names: Vec<&str> = short.iter().filter_map(Value::as_str).collect();
            lines.push(format!("  more capacity would need: {}", names.join(", ")));
        }
        return lines;
    }
    result["message"]
        .as_str()
        .map(|m| vec![format!("placement: {m}")])
        .unwrap_or_default()
}

fn print_placement(lines: &[String]) {
    if !lines.is_empty() {
        println!();
        lines.iter().for_each(|line| println!("{line}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_and_timestamps_only() {
        for ok in ["10m", "90s", "1h30m", "2026-12-01T10:00:00Z", "2026-12-01"] {
            assert!(check_since(ok).is_ok(), "{ok}");
        }
        for bad in ["", "m", "10", "10x", "yesterday", "1h;rm"] {
            let err = check_since(bad).unwrap_err().to_string();
            assert!(err.contains("expected a duration"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_dry_run_reads_as_lines() {
        let plan = json!({
            "tasks": 3, "placed": 2, "placements": {"a1": 2}, "unplaced": 1,
            "rejections": [{"reason": "insufficient memory", "agents": 1}],
            "insufficient": ["memory"], "agents": 1,
            "quotaRefusal": "team t@x: tasks 10 of 10 used, 3 asked"
        });

        assert_eq!(
            plan_lines(&plan),
            vec![
                "3 tasks: 2 would be placed now, 1 would wait (on 1 agent)",
                "placements:",
                "  a1: 2",
                "would wait because:",
                "  insufficient memory on 1 agent",
                "  more capacity would need: memory",
                "a submission now would be refused: team t@x: tasks 10 of 10 used, 3 asked",
            ]
        );
    }

    #[test]
    fn placement_results_read_as_lines() {
        let waiting = json!({
            "jobId": "j",
            "failures": {"failures": [
                {"reason": "insufficient memory", "failureCount": 37},
                {"reason": "agent draining", "failureCount": 1}
            ]},
            "unplacedTasks": 3,
            "insufficient": ["memory"],
            "sinceMs": 1_764_547_200_000_u64,
            "computedAtMs": 1_764_547_260_000_u64,
            "stale": true
        });

        assert_eq!(
            placement_lines_of(&waiting),
            vec![
                "placement: 3 pending tasks fit on no agent (since 2025-12-01 00:00:00, checked \
                 2025-12-01 00:01:00, not confirmed since: the scheduler has not reconsidered it)",
                "  insufficient memory on 37 agents",
                "  agent draining on 1 agent",
                "  more capacity would need: memory",
            ]
        );
        assert_eq!(
            placement_lines_of(&json!({"success": {"message": "placed on agent a1 at 5"}})),
            vec!["placement: placed on agent a1 at 5"]
        );
        assert_eq!(
            placement_lines_of(&json!({"message": "pending"})),
            vec!["placement: pending"]
        );
        assert!(placement_lines_of(&json!({})).is_empty());
    }

    #[test]
    fn image_references_split_into_name_tag_and_digest() {
        assert_eq!(split_image("busybox"), ("busybox", None, None));
        assert_eq!(split_image("busybox:1.36"), ("busybox", Some("1.36"), None));
        assert_eq!(
            split_image("reg:5000/team/app"),
            ("reg:5000/team/app", None, None)
        );
        assert_eq!(
            split_image("reg:5000/app:v2"),
            ("reg:5000/app", Some("v2"), None)
        );
        assert_eq!(
            split_image("app@sha256:ab"),
            ("app", None, Some("sha256:ab"))
        );
    }

    #[test]
    fn flags_make_a_service_descriptor() {
        let args = SubmitArgs {
            file: None,
            image: Some("busybox:1".to_owned()),
            app: Some("web".to_owned()),
            owner: "me@example.com".to_owned(),
            cpu: Some(0.5),
            memory_mb: None,
            batch: None,
            service: Some("1:2:4".to_owned()),
            env: vec!["A=b=c".to_owned()],
            idempotency_key: None,
            command: vec!["sleep".to_owned(), "5".to_owned()],
        };
        let descriptor = descriptor_from_flags(&args).unwrap();
        assert_eq!(descriptor["service"]["capacity"]["desired"], 2);
        assert_eq!(descriptor["container"]["env"]["A"], "b=c");
        assert_eq!(descriptor["container"]["resources"]["cpu"], 0.5);
        assert_eq!(descriptor["container"]["image"]["tag"], "1");
        assert!(descriptor.get("batch").is_none());
    }

    #[test]
    fn a_bad_service_capacity_says_what_is_expected() {
        let args = SubmitArgs {
            file: None,
            image: Some("busybox".to_owned()),
            app: Some("web".to_owned()),
            owner: "me@example.com".to_owned(),
            cpu: None,
            memory_mb: None,
            batch: None,
            service: Some("2:x".to_owned()),
            env: vec![],
            idempotency_key: None,
            command: vec![],
        };
        let err = descriptor_from_flags(&args).unwrap_err();
        assert!(
            err.to_string().contains("expected MIN:DESIRED:MAX"),
            "{err}"
        );
        assert_eq!(err.exit_code(), 2);
    }
}
