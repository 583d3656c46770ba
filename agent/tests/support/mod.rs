//! Shared set-up for the agent's Docker and emulator tests: a freshly provisioned stage per test,
//! a test image built locally from Debian's busybox-static (no registry is reachable), the part
//! of the control plane an agent needs (registration, and placements for tests that restart
//! it), and a reader of the stage's status queue.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::query_parameters::{BuildImageOptionsBuilder, RemoveContainerOptionsBuilder};
use futures::StreamExt;
use titus_agent::runtime::label;
use titus_agent::DockerRuntime;
use titus_aws::provision::provision;
use titus_aws::{AwsClients, AwsPorts, Names};
use titus_control::scheduler::TickInput;
use titus_control::{ControlPlane, Settings};
use titus_core::job::{ContainerResources, JobDescriptor};
use titus_core::messages::{AgentCommand, LaunchTask, TaskStatusUpdate};
use titus_core::ports::{Clock as _, Ports as _};
use titus_core::{JobId, JobStore as _, TaskId, TaskState};
use tokio_util::sync::CancellationToken;

/// The image every test runs: `FROM scratch` with a static busybox.
pub const TEST_IMAGE: &str = "titus-test/busybox:1";
const BUSYBOX: &str = "/bin/busybox";

/// Clients for the emulator the test command started. Fails loudly rather than reaching AWS.
pub async fn clients() -> (AwsClients, aws_config::SdkConfig) {
    let config = titus_aws::clients::local_emulator_config().await;
    (AwsClients::from_config(&config), config)
}

/// A freshly provisioned stage with a unique name.
pub async fn fresh_stage() -> (AwsClients, aws_config::SdkConfig, Names) {
    let (clients, config) = clients().await;
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..10];
    let names = Names::new(&format!("a{suffix}")).expect("valid stage name");
    provision(&clients, &names.definitions())
        .await
        .expect("provisioning a fresh stage");
    (clients, config, names)
}

/// The Docker engine, with the test image built and the host fenced for tasks (the task
/// network and the firewall rules every agent installs at start).
pub async fn docker() -> DockerRuntime {
    let runtime = DockerRuntime::connect(Duration::from_secs(60)).expect("Docker answers");
    ensure_test_image(&runtime).await;
    titus_agent::isolation::prepare_host(&runtime, &titus_agent::AgentSettings::default())
        .await
        .expect("the host isolates task containers (the tests run as root)");
    runtime
}

/// Builds `TEST_IMAGE` from a tar context made here, unless it exists.
pub async fn ensure_test_image(runtime: &DockerRuntime) {
    if runtime.client().inspect_image(TEST_IMAGE).await.is_ok() {
        return;
    }
    let busybox = std::fs::read(BUSYBOX)
        .expect("Debian's busybox-static at /bin/busybox (apt-get install busybox-static)");
    let dockerfile = "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n";
    build_image(
        runtime,
        TEST_IMAGE,
        &[
            ("Dockerfile".to_owned(), dockerfile.as_bytes().to_vec()),
            ("busybox".to_owned(), busybox),
        ],
    )
    .await;
}

/// Builds `tag` from a context of `files` (name, bytes): the Dockerfile and certificates are
/// plain files, everything else executable.
pub async fn build_image(runtime: &DockerRuntime, tag: &str, files: &[(String, Vec<u8>)]) {
    let mut context = tar::Builder::new(Vec::new());
    for (name, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        let plain = name == "Dockerfile" || name.ends_with(".crt");
        header.set_mode(if plain { 0o644 } else { 0o755 });
        header.set_cksum();
        context
            .append_data(&mut header, name, bytes.as_slice())
            .unwrap();
    }
    let context = context.into_inner().unwrap();
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(tag)
        .rm(true)
        .build();
    let mut build =
        runtime
            .client()
            .build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(step) = build.next().await {
        let step = step.unwrap_or_else(|e| panic!("building image {tag}: {e}"));
        if let Some(error) = step.error_detail {
            panic!("building image {tag} failed: {error:?}");
        }
    }
}

/// Removes every container of the agent (tests clean up after themselves).
pub async fn remove_containers(runtime: &DockerRuntime, agent_id: &str) {
    use titus_agent::ContainerRuntime as _;
    let containers = runtime
        .list(&[(label::AGENT_ID, agent_id)])
        .await
        .unwrap_or_default();
    for container in containers {
        let _ = runtime
            .client()
            .remove_container(
                &container.id,
                Some(RemoveContainerOptionsBuilder::default().force(true).build()),
            )
            .await;
    }
}

/// Removes the agent's containers when dropped, also when the test failed (with the Docker CLI,
/// since a drop cannot await).
#[derive(Debug)]
pub struct ContainerCleanup(pub String);

impl Drop for ContainerCleanup {
    fn drop(&mut self) {
        titus_agent::testing::remove_agent_containers_blocking(&self.0);
    }
}

/// Settings for an agent under test: quick polls and heartbeats, no instance metadata.
pub fn agent_env(
    names: &Names,
    agent_id: &str,
    extra: &[(&str, &str)],
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| !k.starts_with("TITUS_"))
        .collect();
    for (key, value) in [
        ("TITUS_STAGE", names.stage()),
        ("TITUS_AGENT_ID", agent_id),
        ("TITUS_AGENT_POLL_WAIT_SECS", "1"),
        ("TITUS_AGENT_HEARTBEAT_INTERVAL_SECS", "1"),
        ("TITUS_AGENT_IMAGE_PULL_TIMEOUT_SECS", "30"),
        ("TITUS_AGENT_ECR_AUTH_FROM_INSTANCE_ROLE", "false"),
        ("TITUS_AGENT_CPU_MILLIS", "64000"),
        ("TITUS_AGENT_MEMORY_MB", "65536"),
        // Several agents share this host: each serves task credentials on a port of its own.
        ("TITUS_AGENT_CREDENTIALS_PORT", "0"),
    ] {
        env.insert(key.to_owned(), value.to_owned());
    }
    for (key, value) in extra {
        env.insert((*key).to_owned(), (*value).to_owned());
    }
    env
}

/// A unique agent id for a test.
pub fn agent_id(test: &str) -> String {
    format!(
        "test-{test}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    )
}

/// A launch of the test image running `command` under `sh -c`.
pub fn launch(script: &str) -> LaunchTask {
    LaunchTask {
        task_id: TaskId::generate(),
        job_id: JobId::generate(),
        image: TEST_IMAGE.to_owned(),
        entry_point: vec![],
        command: vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()],
        env: BTreeMap::new(),
        secrets: BTreeMap::new(),
        resources: ContainerResources {
            cpu: 0.5,
            gpu: 0,
            memory_mb: 512,
            disk_mb: 10_000,
            network_mbps: 128,
            ..ContainerResources::default()
        },
        kill_grace_period_sec: 10,
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

pub async fn queue_url(clients: &AwsClients, name: &str) -> String {
    clients
        .sqs
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("queue {name}: {e:?}"))
        .queue_url()
        .unwrap()
        .to_owned()
}

/// Sends a message body to a queue.
pub async fn send_body(clients: &AwsClients, url: &str, body: &str) {
    clients
        .sqs
        .send_message()
        .queue_url(url)
        .message_body(body)
        .send()
        .await
        .unwrap();
}

pub async fn send_command(clients: &AwsClients, url: &str, command: &AgentCommand) {
    send_body(clients, url, &serde_json::to_string(command).unwrap()).await;
}

/// Reads the stage's status queue, keeping every update it saw in order.
#[derive(Debug)]
pub struct StatusReader {
    sqs: aws_sdk_sqs::Client,
    url: String,
    pub seen: Vec<TaskStatusUpdate>,
}

impl StatusReader {
    pub async fn new(clients: &AwsClients, names: &Names) -> StatusReader {
        StatusReader {
            sqs: clients.sqs.clone(),
            url: queue_url(clients, &names.status_queue()).await,
            seen: Vec::new(),
        }
    }

    /// Receives whatever is there (waiting up to a second) and deletes it.
    pub async fn poll(&mut self) {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for message in out.messages() {
            let update: TaskStatusUpdate = serde_json::from_str(message.body().unwrap())
                .expect("the agent sends valid status updates");
            self.seen.push(update);
            self.sqs
                .delete_message()
                .queue_url(&self.url)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }

    /// Polls until the task has reached `state`, for at most `within`.
    pub async fn wait_for(
        &mut self,
        task: &TaskId,
        state: TaskState,
        within: Duration,
    ) -> TaskStatusUpdate {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(update) = self.updates(task).into_iter().find(|u| u.state == state) {
                return update;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "task {task} did not reach {state} within {within:?}; saw {:?}",
                self.states(task)
            );
            self.poll().await;
        }
    }

    /// Polls for `period`, collecting whatever arrives.
    pub async fn drain_for(&mut self, period: Duration) {
        let deadline = tokio::time::Instant::now() + period;
        while tokio::time::Instant::now() < deadline {
            self.poll().await;
        }
    }

    pub fn updates(&self, task: &TaskId) -> Vec<TaskStatusUpdate> {
        self.seen
            .iter()
            .filter(|u| &u.task_id == task)
            .cloned()
            .collect()
    }

    pub fn states(&self, task: &TaskId) -> Vec<TaskState> {
        self.updates(task).iter().map(|u| u.state).collect()
    }
}

/// The stage's control plane, in this process: it applies the agents' registration requests as
/// the status function does (an agent starts only once registered), and places jobs with the
/// scheduler's real ticks, so that the records hold what an agent reconciles with. Stops when
/// dropped.
pub struct InProcessControlPlane {
    pub cp: Arc<ControlPlane<AwsPorts>>,
    stop: CancellationToken,
}

impl InProcessControlPlane {
    pub fn start(clients: &AwsClients, names: &Names) -> InProcessControlPlane {
        let cp = Arc::new(ControlPlane::new(
            titus_aws::aws_ports(clients, names),
            Settings::default(),
        ));
        let stop = CancellationToken::new();
        tokio::spawn({
            let (cp, clients, names, stop) =
                (cp.clone(), clients.clone(), names.clone(), stop.clone());
            async move {
                titus_app::pump::serve_agent_requests(cp, &clients, &names, stop)
                    .await
                    .expect("the registrations queue exists");
            }
        });
        InProcessControlPlane { cp, stop }
    }

    /// Accepts a batch job of `count` tasks running `script` under `sh -c`, and ticks the
    /// scheduler until every task is placed (and its launch sent to its agent's queue). Returns
    /// the launches as sent.
    pub async fn place_batch(&self, script: &str, count: u32) -> Vec<LaunchTask> {
        let descriptor: JobDescriptor = serde_json::from_value(serde_json::json!({
            "owner": {"teamEmail": "team@example.com"},
            "applicationName": "agent-test",
            "container": {
                "image": {"name": "titus-test/busybox", "tag": "1"},
                "command": ["sh", "-c", script],
                "resources": {"cpu": 0.5, "memoryMB": 512, "diskMB": 10000, "networkMbps": 128},
                "killGracePeriodSec": 10
            },
            "batch": {"size": count}
        }))
        .expect("a valid descriptor");
        let now = self.cp.ports().clock().now_ms();
        let job = titus_control::jobs::create_job(&self.cp, descriptor, "test", None, now)
            .await
            .unwrap()
            .into_job();
        for iteration in 0..30 {
            let input = TickInput {
                owner: "agent-test".to_owned(),
                started_at_ms: None,
                iteration,
            };
            titus_control::scheduler::tick(&self.cp, input)
                .await
                .unwrap();
            let tasks = self
                .cp
                .ports()
                .jobs()
                .list_all_job_tasks(&job.id)
                .await
                .unwrap();
            if tasks.len() == count as usize && tasks.iter().all(|t| t.agent_id.is_some()) {
                return tasks
                    .iter()
                    .map(|task| LaunchTask::for_task(task, &job))
                    .collect();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "the scheduler did not place the {count} tasks of job {}",
            job.id
        );
    }
}

impl Drop for InProcessControlPlane {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Polls the agents table until `agent_id` has a record (registered), for at most `within`.
pub async fn wait_registered(
    clients: &AwsClients,
    names: &Names,
    agent_id: &str,
    within: Duration,
) {
    use titus_core::AgentStore as _;
    let store = titus_aws::DynamoAgentStore::new(clients.dynamodb.clone(), names);
    let deadline = tokio::time::Instant::now() + within;
    while store.get_agent(agent_id).await.unwrap().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "agent {agent_id} was not registered within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Counts receives of a queue's messages: how many are in its dead-letter queue.
pub async fn messages_in(clients: &AwsClients, url: &str) -> Vec<String> {
    messages_with_reasons(clients, url)
        .await
        .into_iter()
        .map(|(body, _)| body)
        .collect()
}

/// The messages waiting on a queue (received, so hidden for a while), each with its `reason`
/// attribute (empty when it has none).
pub async fn messages_with_reasons(clients: &AwsClients, url: &str) -> Vec<(String, String)> {
    let out = clients
        .sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .message_attribute_names("All")
        .send()
        .await
        .unwrap();
    out.messages()
        .iter()
        .map(|m| {
            let reason = m
                .message_attributes()
                .and_then(|attributes| attributes.get("reason"))
                .and_then(|value| value.string_value())
                .unwrap_or_default()
                .to_owned();
            (m.body().unwrap_or_default().to_owned(), reason)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The identity probe image, a stand-in for the internet, and small network fixtures.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{InspectContainerOptions, LogsOptionsBuilder};

/// The host's CA bundle, copied into the whoami image at the same path.
const CA_CERTIFICATES: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The `titus-whoami` binary Cargo built for these tests.
pub const WHOAMI_BINARY: &str = env!("CARGO_BIN_EXE_titus-whoami");

/// Builds (unless present) and returns the tag of an image holding `titus-whoami` at
/// `/bin/titus-whoami`: `FROM scratch` with the static busybox of `TEST_IMAGE`, the binary,
/// every shared library `ldd` lists for it (the dynamic loader too) at the same absolute paths,
/// so that the glibc-linked binary runs, and the host's CA bundle (the SDK needs one). The tag is `titus-test/whoami:<12 hex of the binary's
/// SHA-256>`, so a rebuilt binary gets a new image.
pub async fn whoami_image(runtime: &DockerRuntime) -> String {
    use sha2::Digest as _;
    let binary =
        std::fs::read(WHOAMI_BINARY).unwrap_or_else(|e| panic!("reading {WHOAMI_BINARY}: {e}"));
    let digest = sha2::Sha256::digest(&binary);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let tag = format!("titus-test/whoami:{}", &hex[..12]);
    if runtime.client().inspect_image(&tag).await.is_ok() {
        return tag;
    }
    let busybox = std::fs::read(BUSYBOX)
        .expect("Debian's busybox-static at /bin/busybox (apt-get install busybox-static)");
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("busybox".to_owned(), busybox),
        ("root/bin/titus-whoami".to_owned(), binary),
    ];
    for library in shared_libraries(WHOAMI_BINARY) {
        let bytes = std::fs::read(&library).unwrap_or_else(|e| panic!("reading {library}: {e}"));
        files.push((format!("root{library}"), bytes));
    }
    // The SDK's HTTPS client wants CA certificates (it panics without), even to talk plain
    // HTTP to the emulator; a real task image has them too.
    let certificates = std::fs::read(CA_CERTIFICATES).unwrap_or_else(|e| {
        panic!("reading {CA_CERTIFICATES} (apt-get install ca-certificates): {e}")
    });
    files.push((format!("root{CA_CERTIFICATES}"), certificates));
    let dockerfile = "FROM scratch\nCOPY busybox /bin/busybox\n\
                      RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nCOPY root/ /\n";
    files.push(("Dockerfile".to_owned(), dockerfile.as_bytes().to_vec()));
    build_image(runtime, &tag, &files).await;
    tag
}

/// The absolute paths of the shared libraries (and the loader) `ldd` lists for a binary.
fn shared_libraries(binary: &str) -> Vec<String> {
    let out = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .expect("ldd runs");
    assert!(
        out.status.success(),
        "ldd {binary}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut libraries = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)`, `/lib64/ld-linux-x86-64.so.2
        // (0x...)`, or `linux-vdso.so.1 (0x...)` (in the kernel, nothing to copy).
        let target = match line.split_once("=>") {
            Some((name, target)) => {
                let target = target.trim();
                assert!(
                    !target.starts_with("not found"),
                    "ldd {binary}: {} not found",
                    name.trim()
                );
                target
            }
            None => line.trim(),
        };
        let path = target.split_whitespace().next().unwrap_or_default();
        if path.starts_with('/') {
            libraries.push(path.to_owned());
        }
    }
    assert!(!libraries.is_empty(), "ldd lists no libraries for {binary}");
    libraries
}

/// What a container run to its end left: its exit code, stdout and stderr.
#[derive(Debug, Clone)]
pub struct ContainerRun {
    pub exit_code: i64,
    pub stdout: String,
    pub stderr: String,
}

/// Creates, starts and waits for a container made from `body` (labelled with `agent_id`, so
/// that `ContainerCleanup` removes it too should this panic), reads its output and removes it.
pub async fn run_container(
    runtime: &DockerRuntime,
    agent_id: &str,
    mut body: ContainerCreateBody,
) -> ContainerRun {
    use bollard::container::LogOutput;
    let _cleanup = ContainerCleanup(agent_id.to_owned());
    body.labels
        .get_or_insert_with(Default::default)
        .insert(label::AGENT_ID.to_owned(), agent_id.to_owned());
    let docker = runtime.client();
    let created = docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            body,
        )
        .await
        .expect("creating the container");
    docker
        .start_container(&created.id, None)
        .await
        .expect("starting the container");
    // A non-zero exit is reported as an error; the exit code is read from the state below.
    let _ = docker
        .wait_container(&created.id, None)
        .collect::<Vec<_>>()
        .await;
    let state = docker
        .inspect_container(&created.id, None::<InspectContainerOptions>)
        .await
        .expect("inspecting the container")
        .state
        .unwrap_or_default();
    let mut run = ContainerRun {
        exit_code: state
            .exit_code
            .expect("an exited container has an exit code"),
        stdout: String::new(),
        stderr: String::new(),
    };
    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .build();
    let mut logs = docker.logs(&created.id, Some(options));
    while let Some(item) = logs.next().await {
        match item.expect("reading the container's logs") {
            LogOutput::StdOut { message } => {
                run.stdout.push_str(&String::from_utf8_lossy(&message))
            }
            LogOutput::StdErr { message } => {
                run.stderr.push_str(&String::from_utf8_lossy(&message))
            }
            _ => {}
        }
    }
    let _ = docker
        .remove_container(
            &created.id,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await;
    run
}

/// Runs a command (`ip` mostly), returning its stderr when it fails.
fn run_command(program: &str, args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn must(program: &str, args: &[&str]) {
    if let Err(e) = run_command(program, args) {
        panic!("{e}");
    }
}

/// A stand-in for "the internet" that a task container routes to: a network namespace joined
/// to the host by a veth pair on a /30 of 10.201.N.0 (host end .1, namespace end .2, default
/// route in the namespace via the host end), with `busybox httpd` serving `outside-ok` on port
/// 8080 inside it. Dropping it stops the server and removes the namespace and the veth pair.
#[derive(Debug)]
pub struct OutsideHost {
    namespace: String,
    host_veth: String,
    address: Ipv4Addr,
    httpd: Option<std::process::Child>,
    root: PathBuf,
}

/// What `OutsideHost` serves at `/`.
pub const OUTSIDE_BODY: &str = "outside-ok";

impl OutsideHost {
    pub async fn start() -> OutsideHost {
        ensure_ip_forward();
        for _attempt in 0..30 {
            let random = uuid::Uuid::new_v4();
            let n = random.as_bytes()[0] % 250 + 1;
            if subnet_in_use(n) {
                continue;
            }
            let suffix = &random.simple().to_string()[..10];
            let namespace = format!("titus-out-{suffix}");
            // The host end's name is keyed by N: creating it claims the /30 against other
            // outside hosts (of concurrent test processes) atomically.
            let host_veth = format!("tout{n}h");
            let peer = format!("tout{n}n");
            must("ip", &["netns", "add", &namespace]);
            if run_command(
                "ip",
                &[
                    "link", "add", &host_veth, "type", "veth", "peer", "name", &peer,
                ],
            )
            .is_err()
            {
                let _ = run_command("ip", &["netns", "del", &namespace]);
                continue;
            }
            let root = std::env::temp_dir().join(&namespace);
            let mut outside = OutsideHost {
                namespace,
                host_veth,
                address: Ipv4Addr::new(10, 201, n, 2),
                httpd: None,
                root,
            };
            let ns = outside.namespace.clone();
            let host_end = format!("10.201.{n}.1");
            must("ip", &["link", "set", &peer, "netns", &ns]);
            must(
                "ip",
                &[
                    "addr",
                    "add",
                    &format!("{host_end}/30"),
                    "dev",
                    &outside.host_veth,
                ],
            );
            must("ip", &["link", "set", &outside.host_veth, "up"]);
            must(
                "ip",
                &[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("10.201.{n}.2/30"),
                    "dev",
                    &peer,
                ],
            );
            must("ip", &["-n", &ns, "link", "set", "lo", "up"]);
            must("ip", &["-n", &ns, "link", "set", &peer, "up"]);
            must(
                "ip",
                &["-n", &ns, "route", "add", "default", "via", &host_end],
            );
            std::fs::create_dir_all(&outside.root).unwrap();
            std::fs::write(outside.root.join("index.html"), OUTSIDE_BODY).unwrap();
            let root = outside.root.to_str().unwrap().to_owned();
            outside.httpd = Some(
                std::process::Command::new("ip")
                    .args(["netns", "exec", &ns, BUSYBOX, "httpd", "-f", "-p", "8080"])
                    .args(["-h", &root])
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .expect("starting busybox httpd in the namespace"),
            );
            outside.wait_listening().await;
            return outside;
        }
        panic!("found no free 10.201.N.0/30 for an outside host");
    }

    /// `http://10.201.N.2:8080/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.socket_addr())
    }

    /// The server's address, `10.201.N.2:8080`.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::from((self.address, 8080))
    }

    /// The namespace's name (for `ip netns exec`).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    async fn wait_listening(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let attempt = tokio::time::timeout(
                Duration::from_secs(1),
                tokio::net::TcpStream::connect(self.socket_addr()),
            )
            .await;
            if let Ok(Ok(_)) = attempt {
                return;
            }
            if let Some(status) = self
                .httpd
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("busybox httpd in {} exited: {status}", self.namespace);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "busybox httpd in {} did not listen on {} within 10s",
                self.namespace,
                self.socket_addr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for OutsideHost {
    fn drop(&mut self) {
        if let Some(mut httpd) = self.httpd.take() {
            let _ = httpd.kill();
            let _ = httpd.wait();
        }
        // httpd's children still serving a connection, which would keep the namespace alive.
        if let Ok(out) = std::process::Command::new("ip")
            .args(["netns", "pids", &self.namespace])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = run_command("kill", &["-KILL", pid]);
            }
        }
        // Deleting the namespace destroys its veth end, and so the pair; the second is for a
        // pair whose end never moved.
        let _ = run_command("ip", &["netns", "del", &self.namespace]);
        let _ = run_command("ip", &["link", "del", &self.host_veth]);
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Whether an address or a route of the host lies in 10.201.N.0/30.
fn subnet_in_use(n: u8) -> bool {
    let wanted = [0u8, 1, 2, 3].map(|last| format!("10.201.{n}.{last}"));
    ["addr", "route"].iter().any(|object| {
        let out = std::process::Command::new("ip")
            .args(["-4", "-o", object, "show"])
            .output()
            .expect("ip runs");
        String::from_utf8_lossy(&out.stdout)
            .split(|c: char| c.is_whitespace() || c == '/')
            .any(|word| wanted.iter().any(|w| w == word))
    })
}

/// Turns IPv4 forwarding on unless it is (Docker turns it on).
fn ensure_ip_forward() {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    let current = std::fs::read_to_string(PATH).unwrap_or_default();
    if current.trim() != "1" {
        std::fs::write(PATH, "1").unwrap_or_else(|e| panic!("enabling {PATH}: {e}"));
    }
}

/// Adds `ip/32` to `lo` unless it is there (for servers that tests bind on a fixed address).
pub fn ensure_loopback_address(ip: &str) {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", "lo"])
        .output()
        .expect("ip runs");
    let wanted = format!("{ip}/32");
    if String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .any(|word| word == wanted)
    {
        return;
    }
    if let Err(e) = run_command("ip", &["addr", "add", &wanted, "dev", "lo"]) {
        // Another test added it meanwhile.
        assert!(e.contains("File exists"), "{e}");
    }
}

/// A tiny HTTP server in the test process: answers every request with `200 OK` and the body
/// `probe-ok`, and counts the connections it accepted. Stops when dropped.
#[derive(Debug)]
pub struct HttpProbe {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    server: tokio::task::AbortHandle,
}

/// What `HttpProbe` answers.
pub const PROBE_RESPONSE: &[u8] = b"HTTP/1.0 200 OK\r\n\r\nprobe-ok";

impl HttpProbe {
    /// Listens on `addr` (port 0 picks one; `addr()` tells which).
    pub async fn bind(addr: SocketAddr) -> HttpProbe {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("binding a probe on {addr}: {e}"));
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        let server = tokio::spawn(async move {
            // Dropped with the server when it is aborted, which aborts the open connections.
            let mut open = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                while open.try_join_next().is_some() {}
                open.spawn(answer_probe(stream));
            }
        })
        .abort_handle();
        HttpProbe {
            addr,
            connections,
            server,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many connections it has accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for HttpProbe {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Reads the request's head (for at most two seconds) and answers it.
async fn answer_probe(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut request = Vec::new();
    let mut buffer = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => request.extend_from_slice(&buffer[..read]),
            }
        }
    })
    .await;
    let _ = stream.write_all(PROBE_RESPONSE).await;
    let _ = stream.shutdown().await;
}
