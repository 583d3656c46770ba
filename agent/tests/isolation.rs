//! What a task's container can reach and who it is, with real containers on the Docker engine
//! and STS on the emulator: the agent runs in this process with in-memory queues, and each
//! test's tasks print what they could reach, which the test reads from their logs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bollard::models::ContainerCreateBody;
use support::*;
use titus_agent::agent::AgentIdentity;
use titus_agent::aws::StsRoles;
use titus_agent::credentials::{FULL_URI_VAR, TOKEN_VAR};
use titus_agent::testing::{MemoryCommandSource, MemoryLink, MemoryStatusSink};
use titus_agent::{Agent, AgentSettings, DockerRuntime, HostServices};
use titus_core::job::SecurityContext;
use titus_core::messages::{AgentCommand, LaunchTask, TaskStatusUpdate};
use titus_core::{Resources, TaskReason, TaskState};

type TestAgent = Agent<DockerRuntime, MemoryCommandSource, MemoryStatusSink, MemoryLink>;

const WITHIN: Duration = Duration::from_secs(60);
/// The emulator's port (from `AWS_ENDPOINT_URL`), which the credentials test opens to its tasks
/// (locally, the emulator stands in for AWS's endpoints).
fn emulator_port() -> u16 {
    std::env::var("AWS_ENDPOINT_URL")
        .ok()
        .and_then(|url| url.rsplit(':').next()?.trim_end_matches('/').parse().ok())
        .unwrap_or(4566)
}

struct Host {
    agent: Arc<TestAgent>,
    sink: MemoryStatusSink,
    runtime: DockerRuntime,
    agent_id: String,
    _cleanup: ContainerCleanup,
}

impl Host {
    async fn start(test: &str, settings: AgentSettings, services: HostServices) -> Host {
        let runtime = docker().await;
        titus_agent::isolation::prepare_host(&runtime, &settings)
            .await
            .expect("the host isolates task containers");
        let agent_id = agent_id(test);
        let settings = AgentSettings {
            agent_id: Some(agent_id.clone()),
            finished_retention_secs: 600,
            ..settings
        };
        let sink = MemoryStatusSink::default();
        let agent = Agent::start(
            AgentIdentity {
                agent_id: agent_id.clone(),
                zone: "local".to_owned(),
                machine_type: "local".to_owned(),
                machine_group: "default".to_owned(),
                capacity: Resources {
                    cpu_millis: 64_000,
                    memory_mb: 65_536,
                    disk_mb: 100_000,
                    network_mbps: 1000,
                    gpu: settings.gpu,
                },
            },
            settings,
            runtime.clone(),
            MemoryCommandSource::default(),
            sink.clone(),
            MemoryLink::default(),
            services,
        )
        .await
        .expect("the agent starts");
        Host {
            agent,
            sink,
            runtime,
            _cleanup: ContainerCleanup(agent_id.clone()),
            agent_id,
        }
    }

    async fn launch(&self, launch: &LaunchTask) {
        let body = serde_json::to_string(&AgentCommand::LaunchTask(launch.clone())).unwrap();
        self.agent.handle_message(&body).await;
    }

    async fn finished(&self, launch: &LaunchTask) -> TaskStatusUpdate {
        tokio::time::timeout(WITHIN, async {
            loop {
                if let Some(update) = self
                    .sink
                    .sent()
                    .into_iter()
                    .find(|u| u.task_id == launch.task_id && u.state == TaskState::Finished)
                {
                    return update;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the task finishes")
    }

    /// Runs the task to its end and returns its Finished status and its output.
    async fn run(&self, launch: &LaunchTask) -> (TaskStatusUpdate, String) {
        self.launch(launch).await;
        let finished = self.finished(launch).await;
        let log = titus_agent::task_log_tail(&self.runtime, launch.task_id.as_str(), 200)
            .await
            .unwrap_or_default();
        (finished, log)
    }

    async fn inspect(&self, launch: &LaunchTask) -> bollard::models::ContainerInspectResponse {
        self.runtime
            .client()
            .inspect_container(&format!("titus-{}", launch.task_id), None)
            .await
            .expect("the task's container exists")
    }

    async fn wait_running(&self, launch: &LaunchTask) {
        tokio::time::timeout(WITHIN, async {
            while !self
                .sink
                .sent()
                .iter()
                .any(|u| u.task_id == launch.task_id && u.state == TaskState::Started)
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the task starts");
    }
}

/// The value a task printed as `key=value`, empty when it printed the key with nothing.
fn printed<'a>(log: &'a str, key: &str) -> Option<&'a str> {
    log.lines()
        .find_map(|line| line.trim().strip_prefix(&format!("{key}=")))
}

/// A shell script that tries each `name url` and prints `name=<body or nothing>`.
fn reach_script(targets: &[(&str, String)]) -> String {
    targets
        .iter()
        .map(|(name, url)| format!("echo \"{name}=$(timeout 5 wget -q -O - {url} 2>/dev/null)\""))
        .collect::<Vec<_>>()
        .join("; ")
}

#[tokio::test]
async fn a_task_reaches_the_outside_but_not_metadata_the_host_or_another_task() {
    let host = Host::start("fence", AgentSettings::default(), HostServices::none()).await;
    let network = host
        .runtime
        .ensure_task_network("titus-tasks")
        .await
        .unwrap();
    let gateway = network.gateway.expect("the task network has a gateway");

    // A stand-in for instance metadata on its address, a service on every host address, and
    // a host outside this one that tasks route to.
    ensure_loopback_address(titus_agent::isolation::IMDS_V4);
    let metadata = HttpProbe::bind("169.254.169.254:0".parse().unwrap()).await;
    let host_service = HttpProbe::bind("0.0.0.0:0".parse().unwrap()).await;
    let outside = OutsideHost::start().await;

    // Another tenant's task serving HTTP.
    let server = launch(
        "mkdir -p /tmp/www && echo peer-ok > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www",
    );
    host.launch(&server).await;
    host.wait_running(&server).await;
    let server_ip = host
        .inspect(&server)
        .await
        .network_settings
        .and_then(|n| n.networks)
        .and_then(|n| n.get("titus-tasks").cloned())
        .and_then(|e| e.ip_address)
        .expect("the server task has an address on the task network");

    let targets = |gateway: String| {
        vec![
            (
                "metadata",
                format!("http://169.254.169.254:{}/", metadata.addr().port()),
            ),
            (
                "host",
                format!("http://{gateway}:{}/", host_service.addr().port()),
            ),
            ("peer", format!("http://{server_ip}:8080/")),
            ("outside", outside.url()),
        ]
    };
    let client = launch(&reach_script(&targets(gateway.to_string())));
    let (finished, log) = host.run(&client).await;
    assert_eq!(finished.reason, Some(TaskReason::Normal), "{log}");

    assert_eq!(printed(&log, "outside"), Some(OUTSIDE_BODY), "{log}");
    assert_eq!(printed(&log, "metadata"), Some(""), "{log}");
    assert_eq!(printed(&log, "host"), Some(""), "{log}");
    assert_eq!(printed(&log, "peer"), Some(""), "{log}");

    // The same script in a container on Docker's default bridge, which the agent does not
    // fence: metadata and the host answer there, so it is the agent's rules that held them.
    let default_gateway = host
        .runtime
        .client()
        .inspect_network("bridge", None)
        .await
        .unwrap()
        .ipam
        .and_then(|i| i.config)
        .and_then(|c| c.into_iter().find_map(|c| c.gateway.or(c.subnet)))
        .map(|address| {
            // Docker 20.10 names only the subnet of its default bridge: the gateway is its
            // first address.
            let network = address.split('/').next().unwrap_or_default();
            let ip: std::net::Ipv4Addr = network.parse().expect("an IPv4 bridge");
            if address.contains('/') {
                std::net::Ipv4Addr::from(u32::from(ip) + 1).to_string()
            } else {
                ip.to_string()
            }
        })
        .expect("Docker's default bridge has a gateway");
    let control = run_container(
        &host.runtime,
        &format!("{}-control", host.agent_id),
        ContainerCreateBody {
            image: Some(TEST_IMAGE.to_owned()),
            cmd: Some(vec![
                "sh".to_owned(),
                "-c".to_owned(),
                reach_script(&targets(default_gateway)),
            ]),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        printed(&control.stdout, "metadata"),
        Some("probe-ok"),
        "{control:?}"
    );
    assert_eq!(
        printed(&control.stdout, "host"),
        Some("probe-ok"),
        "{control:?}"
    );
    assert_eq!(
        printed(&control.stdout, "outside"),
        Some(OUTSIDE_BODY),
        "{control:?}"
    );
    host.agent.shutdown();
}

#[tokio::test]
async fn containers_run_with_restricted_defaults_and_what_the_job_asks_for() {
    let settings = AgentSettings {
        allowed_capabilities: vec!["NET_RAW".to_owned()],
        ..AgentSettings::default()
    };
    let host = Host::start("restricted", settings, HostServices::none()).await;
    let probe = "grep -E '^(CapEff|CapBnd|NoNewPrivs):' /proc/self/status | tr -d '\\t' | sed 's/:/=/'; \
                 echo \"pids=$(cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max)\"; \
                 echo \"uid=$(id -u)\"; \
                 echo \"shm=$(df -k /dev/shm | tail -n 1 | awk '{print $2}')\"; \
                 if touch /probe 2>/dev/null; then echo rootfs=rw; else echo rootfs=ro; fi; \
                 if touch /tmp/probe 2>/dev/null; then echo tmp=rw; else echo tmp=ro; fi";

    let plain = launch(probe);
    let (finished, log) = host.run(&plain).await;
    assert_eq!(finished.reason, Some(TaskReason::Normal), "{log}");
    // NET_BIND_SERVICE (bit 10) alone.
    assert_eq!(printed(&log, "CapBnd"), Some("0000000000000400"), "{log}");
    assert_eq!(printed(&log, "CapEff"), Some("0000000000000400"), "{log}");
    assert_eq!(printed(&log, "NoNewPrivs"), Some("1"), "{log}");
    assert_eq!(printed(&log, "pids"), Some("4096"), "{log}");
    assert_eq!(printed(&log, "uid"), Some("0"), "{log}");
    assert_eq!(printed(&log, "rootfs"), Some("rw"), "{log}");
    // Titus' default /dev/shm, in KiB.
    assert_eq!(printed(&log, "shm"), Some("65536"), "{log}");

    let mut asking = launch(probe);
    asking.resources.shm_size_mb = 256;
    asking.security_context = SecurityContext {
        user: Some("1000:1000".to_owned()),
        read_only_root_filesystem: true,
        add_capabilities: vec!["NET_RAW".to_owned()],
    };
    let (finished, log) = host.run(&asking).await;
    assert_eq!(finished.reason, Some(TaskReason::Normal), "{log}");
    // NET_RAW (bit 13) joins the bounding set; a non-root process holds none effectively.
    assert_eq!(printed(&log, "CapBnd"), Some("0000000000002400"), "{log}");
    assert_eq!(printed(&log, "CapEff"), Some("0000000000000000"), "{log}");
    assert_eq!(printed(&log, "uid"), Some("1000"), "{log}");
    assert_eq!(printed(&log, "rootfs"), Some("ro"), "{log}");
    assert_eq!(printed(&log, "tmp"), Some("rw"), "{log}");
    assert_eq!(printed(&log, "shm"), Some("262144"), "{log}");

    let mut refused = launch("exit 0");
    refused.security_context.add_capabilities = vec!["SYS_ADMIN".to_owned()];
    let (finished, _) = host.run(&refused).await;
    assert_eq!(finished.reason, Some(TaskReason::InvalidRequest));
    assert!(
        finished.message.contains("SYS_ADMIN"),
        "{}",
        finished.message
    );
    host.agent.shutdown();
}

#[tokio::test]
async fn gpus_are_asked_of_docker_and_refused_where_there_are_none() {
    // This host has no GPU driver: an agent that claims one hands the request to Docker, which
    // refuses it, and the task finishes saying so; an agent without GPUs refuses it itself.
    let claims = Host::start(
        "gpu",
        AgentSettings {
            gpu: 1,
            ..AgentSettings::default()
        },
        HostServices::none(),
    )
    .await;
    let mut task = launch("exit 0");
    task.resources.gpu = 1;
    let (finished, _) = claims.run(&task).await;
    assert_ne!(finished.reason, Some(TaskReason::Normal));
    assert!(
        finished.message.to_ascii_lowercase().contains("gpu"),
        "Docker's refusal names the GPU request: {}",
        finished.message
    );
    claims.agent.shutdown();

    let none = Host::start("nogpu", AgentSettings::default(), HostServices::none()).await;
    let mut task = launch("exit 0");
    task.resources.gpu = 1;
    let (finished, _) = none.run(&task).await;
    assert_eq!(finished.reason, Some(TaskReason::TransientSystemError));
    assert!(
        finished.message.contains("capacity in gpu"),
        "{}",
        finished.message
    );
    assert!(finished.container_id.is_none());
    none.agent.shutdown();
}

/// Relays `listen` to the emulator on the host's loopback: the emulator stands in for AWS's
/// endpoints, which tasks reach over the network.
async fn relay_to_emulator(listen: SocketAddr) -> tokio::task::JoinHandle<()> {
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(e) => panic!("the emulator relay cannot listen on {listen}: {e}"),
    };
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) =
                    tokio::net::TcpStream::connect(("127.0.0.1", emulator_port())).await
                {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

#[tokio::test]
async fn a_task_is_its_role_and_no_one_else_and_a_roleless_task_is_no_one() {
    let (_, sdk_config) = clients().await;
    let settings = AgentSettings {
        credentials_port: 0,
        host_ports_open_to_tasks: vec![emulator_port()],
        ..AgentSettings::default()
    };
    let credentials =
        titus_agent::bootstrap::serve_credentials(&settings, Arc::new(StsRoles::new(&sdk_config)))
            .await
            .expect("the credentials endpoint listens");
    let host = Host::start(
        "roles",
        settings,
        HostServices {
            registry_auth: Arc::new(titus_agent::aws::NoRegistryAuth),
            credentials: Some(credentials.clone()),
            secrets: None,
            metrics: None,
        },
    )
    .await;
    let image = whoami_image(&host.runtime).await;
    let gateway = host
        .runtime
        .ensure_task_network("titus-tasks")
        .await
        .unwrap()
        .gateway
        .expect("the task network has a gateway");
    let _relay = relay_to_emulator(SocketAddr::new(gateway, emulator_port())).await;
    let aws_env = |launch: &mut LaunchTask| {
        launch.image = image.clone();
        launch.env.insert(
            "AWS_ENDPOINT_URL".to_owned(),
            format!("http://{gateway}:{}", emulator_port()),
        );
        launch
            .env
            .insert("AWS_REGION".to_owned(), "us-east-1".to_owned());
    };

    // Task A has a role: it is that role, in a session named after it. It keeps running so
    // that its token can be tried by another task.
    let mut a = launch("titus-whoami; sleep 300");
    aws_env(&mut a);
    a.iam_role = "arn:aws:iam::123456789012:role/titus-test-a".to_owned();
    host.launch(&a).await;
    host.wait_running(&a).await;
    let arn = tokio::time::timeout(WITHIN, async {
        loop {
            let log = titus_agent::task_log_tail(&host.runtime, a.task_id.as_str(), 50)
                .await
                .unwrap_or_default();
            if let Some(line) = log
                .lines()
                .find(|l| l.starts_with("arn=") || l.starts_with("error="))
            {
                return line.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("task A prints who it is");
    assert_eq!(
        arn,
        format!(
            "arn=arn:aws:sts::123456789012:assumed-role/titus-test-a/titus-{}",
            a.task_id
        )
    );
    let env = host.inspect(&a).await.config.unwrap().env.unwrap();
    let var = |name: &str| {
        env.iter()
            .find_map(|e| e.strip_prefix(&format!("{name}=")))
            .unwrap()
            .to_owned()
    };
    let (uri, token) = (var(FULL_URI_VAR), var(TOKEN_VAR));
    assert!(uri.starts_with("http://169.254.170.2:"), "{uri}");

    // Task B has no role and presents A's token (a job can set any variable): refused.
    let mut b = launch("titus-whoami");
    aws_env(&mut b);
    b.env.insert(FULL_URI_VAR.to_owned(), uri.clone());
    b.env.insert(TOKEN_VAR.to_owned(), token.clone());
    let (_, log) = host.run(&b).await;
    assert!(printed(&log, "arn").is_none(), "B got credentials: {log}");
    assert!(printed(&log, "error").is_some(), "{log}");

    // Task C has no role and no token: no credentials at all (no metadata to fall back on).
    let mut c = launch("env | grep AWS_CONTAINER_ || echo no-container-credentials; titus-whoami");
    aws_env(&mut c);
    let (_, log) = host.run(&c).await;
    assert!(log.contains("no-container-credentials"), "{log}");
    assert!(printed(&log, "arn").is_none(), "C got credentials: {log}");
    assert!(printed(&log, "error").is_some(), "{log}");

    // Once A has finished its token is refused, even to a container at its old address.
    assert_eq!(credentials.tokens(), 1);
    let kill = AgentCommand::KillTask(titus_core::messages::KillTask {
        task_id: a.task_id.clone(),
        reason: TaskReason::Killed,
        grace_period_sec: 1,
    });
    host.agent
        .handle_message(&serde_json::to_string(&kill).unwrap())
        .await;
    host.finished(&a).await;
    assert_eq!(credentials.tokens(), 0);
    let mut d = launch("titus-whoami");
    aws_env(&mut d);
    d.env.insert(FULL_URI_VAR.to_owned(), uri);
    d.env.insert(TOKEN_VAR.to_owned(), token);
    let (_, log) = host.run(&d).await;
    assert!(
        printed(&log, "arn").is_none(),
        "D got A's credentials: {log}"
    );
    host.agent.shutdown();
}

#[tokio::test]
async fn an_existing_network_that_lets_containers_talk_is_not_used() {
    let runtime = docker().await;
    let name = format!("titus-u{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    runtime
        .client()
        .create_network(bollard::models::NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".to_owned()),
            ..Default::default()
        })
        .await
        .unwrap();
    let settings = AgentSettings {
        task_network: name.clone(),
        ..AgentSettings::default()
    };
    let error = titus_agent::isolation::prepare_host(&runtime, &settings)
        .await
        .unwrap_err();
    let _ = runtime.client().remove_network(&name).await;
    let message = error.to_string();
    assert!(message.contains("talk to each other"), "{message}");
    assert!(
        message.contains(&format!("docker network rm {name}")),
        "{message}"
    );
}

/// A resolver that notes whose credentials each read used, then reads for real.
#[derive(Debug)]
struct NotingResolver {
    inner: titus_agent::secrets::AwsSecrets,
    reads: std::sync::Mutex<Vec<(String, Option<String>)>>,
}

impl titus_agent::secrets::SecretResolver for NotingResolver {
    fn resolve<'a>(
        &'a self,
        reference: &'a titus_core::secrets::SecretRef,
        role: Option<&'a titus_agent::credentials::RoleCredentials>,
    ) -> futures::future::BoxFuture<'a, Result<String, titus_agent::secrets::SecretError>> {
        self.reads
            .lock()
            .unwrap()
            .push((reference.arn.clone(), role.map(|r| r.role_arn.clone())));
        self.inner.resolve(reference, role)
    }
}

/// Captures the agent's log lines (the test's runtime is on one thread, so the default
/// subscriber set here sees the agent's and its supervisors' events).
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn secrets_reach_the_container_and_nothing_else() {
    let captured = Captured::default();
    let _logs = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(captured.clone())
            .finish(),
    );
    let (clients, sdk_config) = clients().await;
    let ssm = &clients.ssm;
    let secrets_manager = aws_sdk_secretsmanager::Client::new(&sdk_config);
    let run = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let stage = format!("s{run}");
    // Values with what a shell or a log line might mangle.
    let shared_value = format!("pa$$ 'w\"rd {run}\n2nd line");
    let manager_value = format!("{{\"api\": \"key-{run}\"}}");
    let private_value = format!("private-{run}");
    let shared_name = format!("/titus/{stage}/secrets/db");
    ssm.put_parameter()
        .name(&shared_name)
        .value(&shared_value)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    let private_name = format!("/apps/{run}/token");
    ssm.put_parameter()
        .name(&private_name)
        .value(&private_value)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    let manager_arn = secrets_manager
        .create_secret()
        .name(format!("titus/{stage}/secrets/api"))
        .secret_string(&manager_value)
        .send()
        .await
        .unwrap()
        .arn()
        .unwrap()
        .to_owned();
    let parameter_arn = |name: &str| format!("arn:aws:ssm:us-east-1:123456789012:parameter{name}");

    let settings = AgentSettings {
        credentials_port: 0,
        ..AgentSettings::default()
    };
    let credentials =
        titus_agent::bootstrap::serve_credentials(&settings, Arc::new(StsRoles::new(&sdk_config)))
            .await
            .expect("the credentials endpoint listens");
    let resolver = Arc::new(NotingResolver {
        inner: titus_agent::secrets::AwsSecrets::new(sdk_config.clone()),
        reads: std::sync::Mutex::new(Vec::new()),
    });
    let host = Host::start(
        "secrets",
        settings,
        HostServices {
            registry_auth: Arc::new(titus_agent::aws::NoRegistryAuth),
            credentials: Some(credentials),
            secrets: Some(titus_agent::TaskSecrets {
                resolver: resolver.clone(),
                stage: stage.clone(),
            }),
            metrics: None,
        },
    )
    .await;
    let checksums = "for v in DB_PASSWORD API_KEY TOKEN; do \
                     eval \"x=\\${$v-unset}\"; printf '%s' \"$x\" | sha256sum | sed \"s/ .*//;s/^/$v=/\"; done";

    // A roleless task reads the stage's shared secrets with the agent's credentials.
    let mut shared = launch(checksums);
    shared
        .secrets
        .insert("DB_PASSWORD".to_owned(), parameter_arn(&shared_name));
    shared
        .secrets
        .insert("API_KEY".to_owned(), manager_arn.clone());
    let (finished, log) = host.run(&shared).await;
    assert_eq!(
        finished.reason,
        Some(TaskReason::Normal),
        "{finished:?} {log}"
    );
    let shared_container = finished.container_id.clone().expect("a container ran");
    assert!(
        log.contains(&format!("DB_PASSWORD={}", sha256_hex(&shared_value))),
        "{log}"
    );
    assert!(
        log.contains(&format!("API_KEY={}", sha256_hex(&manager_value))),
        "{log}"
    );
    assert!(
        log.contains(&format!("TOKEN={}", sha256_hex("unset"))),
        "{log}"
    );

    // A task with a role reads a secret outside the shared space, with its role's credentials.
    let role = "arn:aws:iam::123456789012:role/titus-test-secrets";
    let mut private = launch(checksums);
    private.iam_role = role.to_owned();
    private
        .secrets
        .insert("TOKEN".to_owned(), parameter_arn(&private_name));
    let (finished, log) = host.run(&private).await;
    assert_eq!(
        finished.reason,
        Some(TaskReason::Normal),
        "{finished:?} {log}"
    );
    assert!(
        log.contains(&format!("TOKEN={}", sha256_hex(&private_value))),
        "{log}"
    );
    let reads = resolver.reads.lock().unwrap().clone();
    assert_eq!(
        reads.last(),
        Some(&(parameter_arn(&private_name), Some(role.to_owned()))),
        "the role's read: {reads:?}"
    );
    assert!(
        reads[..2].iter().all(|(_, role)| role.is_none()),
        "the roleless task's reads used the agent's credentials: {reads:?}"
    );

    // Without a role, that secret is refused before anything is read or created.
    let mut roleless = launch(checksums);
    roleless
        .secrets
        .insert("TOKEN".to_owned(), parameter_arn(&private_name));
    let (finished, _) = host.run(&roleless).await;
    assert_eq!(finished.reason, Some(TaskReason::InvalidRequest));
    assert!(finished.container_id.is_none(), "{finished:?}");
    assert!(
        finished.message.contains("TOKEN")
            && finished
                .message
                .contains(&format!("/titus/{stage}/secrets/")),
        "the refusal names the variable and the shared space: {}",
        finished.message
    );
    assert_eq!(
        resolver.reads.lock().unwrap().len(),
        3,
        "nothing read for it"
    );

    // A secret that does not exist fails the launch, naming the variable and the reference.
    let missing_arn = parameter_arn(&format!("/titus/{stage}/secrets/missing"));
    let mut missing = launch(checksums);
    missing
        .secrets
        .insert("DB_PASSWORD".to_owned(), missing_arn.clone());
    let (finished, _) = host.run(&missing).await;
    assert_eq!(finished.reason, Some(TaskReason::InvalidRequest));
    assert!(finished.container_id.is_none());
    assert!(
        finished.message.contains("DB_PASSWORD") && finished.message.contains(&missing_arn),
        "{}",
        finished.message
    );

    // The values are in the containers' environments and nowhere else the platform writes.
    let config = host
        .runtime
        .client()
        .inspect_container(&shared_container, None)
        .await
        .expect("the finished container is kept")
        .config
        .unwrap();
    let env = config.env.unwrap();
    assert!(
        env.contains(&format!("DB_PASSWORD={shared_value}")),
        "{env:?}"
    );
    let labels = config.labels.unwrap();
    let statuses = format!("{:?}", host.sink.sent());
    let agent_log = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(
        agent_log.contains("task secrets resolved"),
        "the capture works: {agent_log}"
    );
    for value in [&shared_value, &manager_value, &private_value] {
        let first_line = value.lines().next().unwrap();
        assert!(!statuses.contains(first_line), "a status holds a secret");
        assert!(
            !agent_log.contains(first_line),
            "the agent's log holds a secret"
        );
        assert!(
            !labels.values().any(|l| l.contains(first_line)),
            "a label holds a secret"
        );
    }
    host.agent.shutdown();
}
