//! The whole local stack for end-to-end tests and the latency benchmark: `titus local up` in its
//! own process on a fresh stage and a free port, agents as processes of their own (so a test can
//! SIGKILL one, as a host dies), real containers on the local Docker engine, and the `titus` CLI
//! to drive it. Everything started is stopped, and its containers removed, when the stack is
//! dropped; a failing test prints the tail of every log.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use titus_core::{Agent, AgentState, Job, Task, TaskState};

/// The image every end-to-end task runs, built locally by `scripts/demo-image.sh`.
pub const IMAGE: &str = "titus-demo/busybox:latest";

/// How long a stack waits for anything it is told to wait for before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(120);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `titus` binary: `TITUS_E2E_BIN` when set (a copy, so that a long run is not disturbed by
/// a rebuild in a shared target directory), else the one cargo built with these tests.
pub fn titus_bin() -> String {
    std::env::var("TITUS_E2E_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_titus").to_owned())
}

/// A page of a list answer, as the CLI prints it with `-o json`.
#[derive(Debug, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
}

/// What one CLI run printed and how it exited.
#[derive(Debug)]
pub struct CliRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for CliRun {
    fn from(out: Output) -> Self {
        CliRun {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Settings of one stack; the defaults suit the end-to-end tests.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub agents: u32,
    pub agent_cpu_millis: u64,
    pub agent_memory_mb: u64,
    /// Network bandwidth each agent offers; every task reserves 128 Mbps unless it asks for more.
    pub agent_network_mbps: u64,
    /// Disk each agent offers; every task reserves at least 10,000 MB.
    pub agent_disk_mb: u64,
    /// An agent silent this long is declared lost (the reconciler checks every `reconcile_interval_ms`).
    pub heartbeat_timeout_ms: u64,
    /// Whether the stack runs the scaler (every 2 s) against the emulator's EC2.
    pub scaler: bool,
    /// How often the stack's reconciler runs.
    pub reconcile_interval_ms: u64,
    /// More variables for the stack's process: `TITUS_STATUS_*` and `TITUS_SCHEDULER_*` over the
    /// stage's settings (stuck timeouts, the unreported-task timeout, ...).
    pub control_env: Vec<(String, String)>,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            agents: 2,
            agent_cpu_millis: 4_000,
            agent_memory_mb: 8_192,
            agent_network_mbps: 10_000,
            agent_disk_mb: 1_000_000,
            heartbeat_timeout_ms: 6_000,
            scaler: false,
            reconcile_interval_ms: 5_000,
            control_env: Vec::new(),
        }
    }
}

struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

/// A running local stack on a stage of its own.
pub struct Stack {
    pub stage: String,
    pub url: String,
    stack: Process,
    agents: Vec<Process>,
    agent_ids: Vec<String>,
    log_dir: PathBuf,
    options: StackOptions,
}

impl Stack {
    /// Starts the stack and its agents and waits until every agent is Active.
    pub async fn start(options: StackOptions) -> Stack {
        titus_aws::clients::local_emulator_endpoint();
        build_image();
        let stage = format!("e{}", &uuid::Uuid::new_v4().simple().to_string()[..9]);
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let log_dir = std::env::temp_dir().join(format!("titus-e2e-{stage}"));
        std::fs::create_dir_all(&log_dir).unwrap();

        let mut command = Command::new(titus_bin());
        command
            .args(["local", "up", "--stage", &stage, "--agents", "0"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args([
                "--reconcile-interval-ms",
                &options.reconcile_interval_ms.to_string(),
            ])
            .env(
                "TITUS_STATUS_AGENT_HEARTBEAT_TIMEOUT_MS",
                options.heartbeat_timeout_ms.to_string(),
            )
            .envs(options.control_env.iter().cloned());
        if options.scaler {
            command.args(["--scaler", "--scaler-interval-secs", "2"]);
        }
        let stack = spawn("stack", command, &log_dir);
        let mut this = Stack {
            stage,
            url,
            stack,
            agents: Vec::new(),
            agent_ids: Vec::new(),
            log_dir,
            options: options.clone(),
        };
        this.wait_healthy().await;
        for n in 1..=options.agents {
            this.add_agent(n).await;
        }
        let ids = this.agent_ids.clone();
        this.eventually("every agent registers as Active", || async {
            let agents = this.agents().await;
            ids.iter().all(|id| {
                agents
                    .iter()
                    .any(|a| &a.id == id && a.state == AgentState::Active)
            })
        })
        .await;
        this
    }

    async fn wait_healthy(&mut self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let health = client
                .get(format!("{}/healthz", self.url))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if matches!(&health, Ok(r) if r.status().is_success()) {
                return;
            }
            if let Ok(Some(status)) = self.stack.child.try_wait() {
                panic!(
                    "the local stack exited at start ({status})\n{}",
                    tail(&self.stack.log, 40)
                );
            }
            assert!(
                Instant::now() < deadline,
                "the local stack did not answer within {PATIENCE:?}\n{}",
                tail(&self.stack.log, 40)
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Where every process's log is (`{name}.log`).
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// The id of agent `n` (1-based).
    pub fn agent_id(&self, n: u32) -> String {
        format!("{}-a{n}", self.stage)
    }

    /// The command that runs agent `n`, the same at every start.
    fn agent_command(&self, n: u32) -> Command {
        let id = self.agent_id(n);
        let mut command = Command::new(titus_bin());
        command
            .args(["local", "agent", "--stage", &self.stage, "--id", &id])
            .args(["--zone", &format!("local-{}", (n - 1) % 2 + 1)])
            .args(["--cpu-millis", &self.options.agent_cpu_millis.to_string()])
            .args(["--memory-mb", &self.options.agent_memory_mb.to_string()])
            .args([
                "--network-mbps",
                &self.options.agent_network_mbps.to_string(),
            ])
            .args(["--disk-mb", &self.options.agent_disk_mb.to_string()])
            .env("TITUS_AGENT_HEARTBEAT_INTERVAL_SECS", "1")
            .env("TITUS_AGENT_FINISHED_RETENTION_SECS", "600");
        command
    }

    async fn add_agent(&mut self, n: u32) {
        let id = self.agent_id(n);
        let command = self.agent_command(n);
        self.agents.push(spawn(&id, command, &self.log_dir));
        self.agent_ids.push(id);
    }

    fn agent_process(&mut self, n: u32) -> &mut Process {
        let id = self.agent_id(n);
        self.agents
            .iter_mut()
            .find(|p| p.name == id)
            .expect("a started agent")
    }

    /// Kills agent `n` with SIGKILL, as a host that dies.
    pub fn kill_agent(&mut self, n: u32) {
        self.crash_agent(n);
        // Its containers would have died with the host.
        remove_containers(&self.agent_id(n));
    }

    /// Kills agent `n`'s process with SIGKILL and leaves its containers running, as an agent
    /// that crashes on a host that does not.
    pub fn crash_agent(&mut self, n: u32) {
        let process = self.agent_process(n);
        process.child.kill().expect("SIGKILL the agent");
        process.child.wait().unwrap();
    }

    /// Stops agent `n` with SIGTERM and waits for its process to exit; its containers go on.
    pub fn stop_agent(&mut self, n: u32) {
        let process = self.agent_process(n);
        signal(&process.child, "TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        while process.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                process.child.kill().unwrap();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts agent `n` again, with the same id and settings, once its process has exited.
    pub fn restart_agent(&mut self, n: u32) {
        let command = self.agent_command(n);
        let log_dir = self.log_dir.clone();
        let process = self.agent_process(n);
        assert!(
            process.child.try_wait().unwrap().is_some(),
            "agent {} still runs; stop it before starting it again",
            process.name
        );
        *process = spawn(&process.name.clone(), command, &log_dir);
    }

    /// Freezes agent `n`'s process (SIGSTOP), as a host that stops answering; its containers go
    /// on running.
    pub fn pause_agent(&mut self, n: u32) {
        signal(&self.agent_process(n).child, "STOP");
    }

    /// Lets a paused agent `n` run on (SIGCONT).
    pub fn resume_agent(&mut self, n: u32) {
        signal(&self.agent_process(n).child, "CONT");
    }

    /// Runs the CLI against this stack.
    pub fn cli(&self, args: &[&str]) -> CliRun {
        self.cli_with(args, None)
    }

    /// Runs the CLI with `stdin` as its standard input.
    pub fn cli_with(&self, args: &[&str], stdin: Option<&str>) -> CliRun {
        self.cli_env(args, stdin, &[])
    }

    /// Runs the CLI with environment changes: `Some` sets a variable, `None` removes it. Without
    /// changes it talks to the stack by `TITUS_URL`, with no token and no config file.
    pub fn cli_env(
        &self,
        args: &[&str],
        stdin: Option<&str>,
        env: &[(&str, Option<&str>)],
    ) -> CliRun {
        let mut command = Command::new(titus_bin());
        command
            .args(args)
            .env("TITUS_URL", &self.url)
            .env_remove("TITUS_TOKEN")
            .env_remove("TITUS_CONTEXT")
            .env("TITUS_CONFIG", "/nonexistent/titus-e2e/config.yaml");
        for (name, value) in env {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("running the titus CLI");
        {
            use std::io::Write as _;
            let mut input = child.stdin.take().unwrap();
            if let Some(text) = stdin {
                input.write_all(text.as_bytes()).unwrap();
            }
        }
        child.wait_with_output().unwrap().into()
    }

    /// Runs the CLI with `-o json`, expects success and parses what it printed.
    pub fn cli_json<T: DeserializeOwned>(&self, args: &[&str]) -> T {
        // Before the arguments: anything after a `--` belongs to the job's command.
        let mut all = vec!["-o", "json"];
        all.extend(args);
        let run = self.cli(&all);
        assert_eq!(
            run.code, 0,
            "titus {args:?} failed: {}\n{}",
            run.stderr, run.stdout
        );
        serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("titus {args:?} printed no JSON ({e}): {}", run.stdout))
    }

    /// Submits a job with CLI flags (`--app`, `--batch` ...), returning its id.
    pub fn submit(&self, flags: &[&str], command: &[&str]) -> String {
        let mut args = vec!["job", "submit", "--image", IMAGE];
        args.extend(flags);
        args.push("--");
        args.extend(command);
        let job: Job = self.cli_json(&args);
        job.id.to_string()
    }

    pub fn job(&self, id: &str) -> Job {
        self.cli_json(&["job", "get", id])
    }

    pub fn tasks(&self, job_id: &str) -> Vec<Task> {
        let page: Page<Task> =
            self.cli_json(&["task", "list", "--job", job_id, "--page-size", "500"]);
        page.items
    }

    pub fn tasks_in(&self, job_id: &str, state: TaskState) -> Vec<Task> {
        self.tasks(job_id)
            .into_iter()
            .filter(|t| t.state() == state)
            .collect()
    }

    pub async fn agents(&self) -> Vec<Agent> {
        let page: Page<Agent> = self.cli_json(&["agent", "list"]);
        page.items
    }

    /// Waits until `check` holds, polling; fails the test with `what` and the logs' tails after
    /// `PATIENCE`.
    pub async fn eventually<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + PATIENCE;
        while !check().await {
            assert!(
                Instant::now() < deadline,
                "timed out after {PATIENCE:?} waiting until {what}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// The tail of every process's log.
    pub fn logs(&self) -> String {
        std::iter::once(&self.stack)
            .chain(&self.agents)
            .map(|p| format!("--- {} ---\n{}", p.name, tail(&p.log, 30)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The stage's AWS clients (for the SQS submit queue).
    pub async fn aws(&self) -> (titus_aws::AwsClients, titus_aws::Names) {
        let config = titus_aws::clients::load_sdk_config().await;
        (
            titus_aws::AwsClients::from_config(&config),
            titus_aws::Names::new(&self.stage).unwrap(),
        )
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for agent in &mut self.agents {
            // A paused agent is killed as well: SIGKILL needs no SIGCONT.
            let _ = agent.child.kill();
            let _ = agent.child.wait();
        }
        for id in &self.agent_ids {
            remove_containers(id);
        }
        // SIGINT stops the stack cleanly; a stack that does not stop soon is killed.
        let pid = self.stack.child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.stack.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.stack.child.kill();
        let _ = self.stack.child.wait();
    }
}

/// Sends `signal` (a name `kill` knows: TERM, STOP, CONT, INT) to a child process.
fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{signal} {} failed", child.id());
}

/// Starts a process with its output in `{name}.log`, appended to at every start of that name.
fn spawn(name: &str, mut command: Command, log_dir: &Path) -> Process {
    let log = log_dir.join(format!("{name}.log"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    let child = command
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name}: {e}"));
    Process {
        name: name.to_owned(),
        child,
        log,
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Builds the task image with the project's script (quick when it exists).
fn build_image() {
    let status = Command::new(repo_root().join("scripts/demo-image.sh"))
        .env("TITUS_DEMO_IMAGE", IMAGE)
        .status()
        .expect("running scripts/demo-image.sh");
    assert!(status.success(), "building {IMAGE} failed");
}

fn remove_containers(agent_id: &str) {
    titus_agent::testing::remove_agent_containers_blocking(agent_id);
}
