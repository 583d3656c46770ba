//! The Docker adapter of the container runtime port, through bollard. The only module of the
//! project that talks to a Docker engine.
//!
//! Facts about Debian's docker.io 20.10 (API 1.41) with bollard 0.21 that shape this code:
//! bollard sends no API version prefix, so options newer than the engine are silently ignored
//! (the agent uses only 1.41 ones); `wait` reports a non-zero exit as
//! `Err(DockerContainerWaitError)`, which is an exit, not a failure; a pull with no registry
//! reachable fails with a 500 within milliseconds.

use std::collections::HashMap;
use std::time::Duration;

use bollard::auth::DockerCredentials;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, DeviceRequest, HostConfig, HostConfigLogConfig, NetworkCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, RenameContainerOptionsBuilder,
    StopContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;

use crate::runtime::{
    ContainerInfo, ContainerRuntime, ContainerSpec, ContainerStatus, ContainerSummary,
    RegistryCredentials, RuntimeError,
};
use crate::time::parse_docker_time;

/// What the engine says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInfo {
    pub version: String,
    pub api_version: String,
    /// Where the engine keeps images and containers: the disk whose size is the agent's.
    pub root_dir: String,
}

/// A Docker network as the agent needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInfo {
    pub id: String,
    pub name: String,
    /// The bridge interface on the host (`com.docker.network.bridge.name`).
    pub bridge: String,
    /// Whether containers on it may talk to each other (`enable_icc`).
    pub inter_container_traffic: bool,
    /// The host's address on the bridge.
    pub gateway: Option<std::net::IpAddr>,
    pub subnet: Option<String>,
}

/// Docker's bridge driver options the task network is made with.
const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";
const ICC_OPTION: &str = "com.docker.network.bridge.enable_icc";

/// The container runtime backed by a Docker engine.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    docker: Docker,
    timeout: Duration,
}

impl DockerRuntime {
    /// Connects the way the Docker CLI does (`DOCKER_HOST`, else the local socket). Every call
    /// but `wait`, `stop` and `pull_image` must answer within `timeout`.
    pub fn connect(timeout: Duration) -> Result<DockerRuntime, RuntimeError> {
        let docker = Docker::connect_with_defaults().map_err(|e| RuntimeError::Engine {
            operation: "connect to Docker",
            message: e.to_string(),
        })?;
        Ok(DockerRuntime::from_client(docker, timeout))
    }

    pub fn from_client(docker: Docker, timeout: Duration) -> DockerRuntime {
        DockerRuntime {
            docker: docker.with_timeout(timeout),
            timeout,
        }
    }

    /// The underlying client, for tests and benchmarks that compare against plain Docker.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// The engine's version and root directory; fails when no engine answers.
    pub async fn engine_info(&self) -> Result<EngineInfo, RuntimeError> {
        let version = self
            .docker
            .version()
            .await
            .map_err(|e| self.error("GET /version", e))?;
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| self.error("GET /info", e))?;
        Ok(EngineInfo {
            version: version.version.unwrap_or_default(),
            api_version: version.api_version.unwrap_or_default(),
            root_dir: info.docker_root_dir.unwrap_or_default(),
        })
    }

    /// The bridge network `name` (also its interface's name), created with traffic between its
    /// containers off when it does not exist. Agents sharing a host share it.
    pub async fn ensure_task_network(&self, name: &str) -> Result<NetworkInfo, RuntimeError> {
        if let Some(info) = self.network(name).await? {
            return Ok(info);
        }
        let request = NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".to_owned()),
            options: Some(HashMap::from([
                (BRIDGE_NAME_OPTION.to_owned(), name.to_owned()),
                (ICC_OPTION.to_owned(), "false".to_owned()),
            ])),
            labels: Some(HashMap::from([(
                "titus.network".to_owned(),
                "tasks".to_owned(),
            )])),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            Ok(_) => {}
            // Another agent on this host made it first (the bridge name is taken).
            Err(e) if status_code(&e).is_some_and(|code| code == 409 || code == 403) => {}
            Err(e) => return Err(self.error("create network", e)),
        }
        self.network(name)
            .await?
            .ok_or_else(|| RuntimeError::Engine {
                operation: "create network",
                message: format!("network {name:?} was created but cannot be found"),
            })
    }

    async fn network(&self, name: &str) -> Result<Option<NetworkInfo>, RuntimeError> {
        let inspected = match self.docker.inspect_network(name, None).await {
            Ok(inspected) => inspected,
            Err(e) if status_code(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(self.error("inspect network", e)),
        };
        let options = inspected.options.unwrap_or_default();
        let ipam = inspected
            .ipam
            .and_then(|ipam| ipam.config)
            .unwrap_or_default();
        let first = ipam.into_iter().find(|c| {
            c.subnet
                .as_deref()
                .is_some_and(|subnet| !subnet.contains(':'))
        });
        Ok(Some(NetworkInfo {
            id: inspected.id.unwrap_or_default(),
            name: inspected.name.unwrap_or_default(),
            bridge: options.get(BRIDGE_NAME_OPTION).cloned().unwrap_or_default(),
            inter_container_traffic: options.get(ICC_OPTION).map(String::as_str) != Some("false"),
            gateway: first
                .as_ref()
                .and_then(|c| c.gateway.as_deref())
                .and_then(|g| g.parse().ok()),
            subnet: first.and_then(|c| c.subnet),
        }))
    }

    fn error(&self, operation: &'static str, err: BollardError) -> RuntimeError {
        match err {
            BollardError::RequestTimeoutError => RuntimeError::Timeout {
                operation,
                secs: self.timeout.as_secs(),
            },
            other => RuntimeError::Engine {
                operation,
                message: other.to_string(),
            },
        }
    }
}

fn status_code(err: &BollardError) -> Option<u16> {
    match err {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Docker wants `name:tag`; a bare name would pull every tag.
fn pull_reference(image: &str) -> String {
    let last_component = image.rsplit('/').next().unwrap_or(image);
    if last_component.contains(':') || last_component.contains('@') {
        image.to_owned()
    } else {
        format!("{image}:latest")
    }
}

/// Whether a pull failure means the image does not exist (the request's fault), as opposed to a
/// registry that could not be reached (the host's).
fn is_image_not_found(err: &BollardError) -> bool {
    let message = match err {
        BollardError::DockerResponseServerError {
            status_code: 404, ..
        } => return true,
        BollardError::DockerResponseServerError { message, .. } => message,
        BollardError::DockerStreamError { error } => error,
        _ => return false,
    };
    let message = message.to_ascii_lowercase();
    ["manifest unknown", "not found", "repository does not exist"]
        .iter()
        .any(|marker| message.contains(marker))
}

fn strip_slash(name: &str) -> String {
    name.strip_prefix('/').unwrap_or(name).to_owned()
}

impl ContainerRuntime for DockerRuntime {
    async fn image_present(&self, image: &str) -> Result<bool, RuntimeError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if status_code(&e) == Some(404) => Ok(false),
            Err(e) => Err(self.error("inspect image", e)),
        }
    }

    async fn pull_image(
        &self,
        image: &str,
        credentials: Option<RegistryCredentials>,
    ) -> Result<(), RuntimeError> {
        let options = CreateImageOptionsBuilder::default()
            .from_image(&pull_reference(image))
            .build();
        let credentials = credentials.map(|c| DockerCredentials {
            username: Some(c.username),
            password: Some(c.password),
            serveraddress: Some(c.server),
            ..Default::default()
        });
        let mut progress = self.docker.create_image(Some(options), None, credentials);
        while let Some(item) = progress.next().await {
            if let Err(e) = item {
                let message = e.to_string();
                return Err(if is_image_not_found(&e) {
                    RuntimeError::ImageNotFound {
                        image: image.to_owned(),
                        message,
                    }
                } else {
                    RuntimeError::PullFailed {
                        image: image.to_owned(),
                        message,
                    }
                });
            }
        }
        Ok(())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let binds: Vec<String> = spec
            .host_mounts
            .iter()
            .map(|m| {
                let mode = if m.read_only { "ro" } else { "rw" };
                format!("{}:{}:{mode}", m.host_path, m.container_path)
            })
            .collect();
        let network_mode = if spec.host_network {
            Some("host".to_owned())
        } else {
            spec.network.clone()
        };
        let host_config = HostConfig {
            nano_cpus: Some(spec.nano_cpus),
            memory: Some(spec.memory_bytes),
            // Equal to the memory limit: no swap, so the limit is the limit.
            memory_swap: Some(spec.memory_bytes),
            pids_limit: (spec.pids_limit > 0).then_some(spec.pids_limit),
            shm_size: (spec.shm_size_bytes > 0).then_some(spec.shm_size_bytes),
            privileged: Some(spec.privileged),
            network_mode,
            binds: (!binds.is_empty()).then_some(binds),
            // No process may gain privileges it was not started with (setuid binaries, file
            // capabilities), and only the listed capabilities are kept.
            security_opt: Some(vec!["no-new-privileges:true".to_owned()]),
            cap_drop: (!spec.privileged).then(|| vec!["ALL".to_owned()]),
            cap_add: (!spec.privileged && !spec.capabilities.is_empty())
                .then(|| spec.capabilities.clone()),
            readonly_rootfs: Some(spec.read_only_root_filesystem),
            tmpfs: spec.read_only_root_filesystem.then(|| {
                HashMap::from([("/tmp".to_owned(), "rw,nosuid,nodev,size=64m".to_owned())])
            }),
            device_requests: (spec.gpus > 0).then(|| {
                vec![DeviceRequest {
                    count: Some(i64::from(spec.gpus)),
                    capabilities: Some(vec![vec!["gpu".to_owned()]]),
                    ..Default::default()
                }]
            }),
            log_config: Some(HostConfigLogConfig {
                typ: Some(spec.log.driver.clone()),
                config: Some(spec.log.options.clone().into_iter().collect()),
            }),
            // Never: an auto-removed container loses its exit code and OOM flag.
            auto_remove: Some(false),
            // Docker's tini as PID 1: it forwards SIGTERM to the task's process (the kernel
            // ignores signals a PID 1 has no handler for) and reaps zombies.
            init: Some(true),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            entrypoint: (!spec.entry_point.is_empty()).then(|| spec.entry_point.clone()),
            cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(spec.labels.clone().into_iter().collect()),
            user: spec.user.clone(),
            host_config: Some(host_config),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default()
            .name(&spec.name)
            .build();
        match self.docker.create_container(Some(options), body).await {
            Ok(created) => Ok(created.id),
            Err(e) if status_code(&e) == Some(409) => {
                Err(RuntimeError::NameTaken(spec.name.clone()))
            }
            Err(e) if status_code(&e) == Some(404) => Err(RuntimeError::ImageMissing {
                image: spec.image.clone(),
            }),
            Err(e) => Err(self.error("create container", e)),
        }
    }

    async fn start(&self, name: &str) -> Result<(), RuntimeError> {
        match self.docker.start_container(name, None).await {
            Ok(()) => Ok(()),
            // 304: it runs already.
            Err(e) if status_code(&e) == Some(304) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Err(RuntimeError::NotFound(name.to_owned())),
            Err(BollardError::DockerResponseServerError { message, .. }) => {
                Err(RuntimeError::StartFailed {
                    name: name.to_owned(),
                    message,
                })
            }
            Err(e) => Err(self.error("start container", e)),
        }
    }

    async fn wait(&self, name: &str) -> Result<(), RuntimeError> {
        // `not-running` is answered from the container's state: an exit that happened before
        // this call returns at once with its code.
        let options = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        let mut stream = self.docker.wait_container(name, Some(options));
        match stream.next().await {
            None | Some(Ok(_)) => Ok(()),
            // A non-zero exit code: an exit, not a failure.
            Some(Err(BollardError::DockerContainerWaitError { .. })) => Ok(()),
            Some(Err(e)) if status_code(&e) == Some(404) => {
                Err(RuntimeError::NotFound(name.to_owned()))
            }
            Some(Err(e)) => Err(self.error("wait for container", e)),
        }
    }

    async fn stop(&self, name: &str, grace: Duration) -> Result<(), RuntimeError> {
        let grace_secs = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::default().t(grace_secs).build();
        // The engine answers once the container stopped, up to the grace period after SIGTERM.
        let docker = self.docker.clone().with_timeout(self.timeout + grace);
        match docker.stop_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if status_code(&e) == Some(304) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Err(RuntimeError::NotFound(name.to_owned())),
            Err(e) => Err(self.error("stop container", e)),
        }
    }

    async fn inspect(&self, name: &str) -> Result<ContainerInfo, RuntimeError> {
        let inspected = match self.docker.inspect_container(name, None).await {
            Ok(inspected) => inspected,
            Err(e) if status_code(&e) == Some(404) => {
                return Err(RuntimeError::NotFound(name.to_owned()))
            }
            Err(e) => return Err(self.error("inspect container", e)),
        };
        let state = inspected.state.unwrap_or_default();
        let status = state
            .status
            .map(|s| ContainerStatus::parse(s.as_ref()))
            .unwrap_or(ContainerStatus::Other(String::new()));
        let labels = inspected
            .config
            .and_then(|c| c.labels)
            .unwrap_or_default()
            .into_iter()
            .collect();
        let ip_addresses = inspected
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default()
            .into_values()
            .filter_map(|endpoint| endpoint.ip_address?.parse().ok())
            .collect();
        Ok(ContainerInfo {
            id: inspected.id.unwrap_or_default(),
            name: strip_slash(&inspected.name.unwrap_or_default()),
            labels,
            exit_code: if status.is_finished() {
                state.exit_code
            } else {
                None
            },
            status,
            oom_killed: state.oom_killed.unwrap_or(false),
            started_at_ms: state.started_at.as_deref().and_then(parse_docker_time),
            finished_at_ms: state.finished_at.as_deref().and_then(parse_docker_time),
            error: state.error.unwrap_or_default(),
            ip_addresses,
        })
    }

    async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerSummary>, RuntimeError> {
        let mut filters: HashMap<String, Vec<String>> = HashMap::new();
        filters.insert(
            "label".to_owned(),
            labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        );
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| self.error("list containers", e))?;
        Ok(containers
            .into_iter()
            .map(|c| ContainerSummary {
                id: c.id.unwrap_or_default(),
                name: c
                    .names
                    .unwrap_or_default()
                    .first()
                    .map(|n| strip_slash(n))
                    .unwrap_or_default(),
                labels: c.labels.unwrap_or_default().into_iter().collect(),
                status: c
                    .state
                    .map(|s| ContainerStatus::parse(s.as_ref()))
                    .unwrap_or(ContainerStatus::Other(String::new())),
            })
            .collect())
    }

    async fn rename(&self, name: &str, new_name: &str) -> Result<(), RuntimeError> {
        let options = RenameContainerOptionsBuilder::default()
            .name(new_name)
            .build();
        match self.docker.rename_container(name, options).await {
            Ok(()) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Err(RuntimeError::NotFound(name.to_owned())),
            Err(e) if status_code(&e) == Some(409) => {
                Err(RuntimeError::NameTaken(new_name.to_owned()))
            }
            Err(e) => Err(self.error("rename container", e)),
        }
    }

    async fn remove(&self, name: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        match self.docker.remove_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(self.error("remove container", e)),
        }
    }

    async fn logs_tail(&self, name: &str, lines: usize) -> Result<String, RuntimeError> {
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .follow(false)
            .tail(&lines.to_string())
            .build();
        let mut stream = self.docker.logs(name, Some(options));
        let mut text = String::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(output) => text.push_str(&String::from_utf8_lossy(&output.into_bytes())),
                Err(e) if status_code(&e) == Some(404) => {
                    return Err(RuntimeError::NotFound(name.to_owned()))
                }
                Err(e) => return Err(self.error("read container logs", e)),
            }
        }
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_image_name_is_pulled_as_latest() {
        assert_eq!(pull_reference("busybox"), "busybox:latest");
        assert_eq!(pull_reference("busybox:1.36"), "busybox:1.36");
        assert_eq!(
            pull_reference("localhost:5000/team/app"),
            "localhost:5000/team/app:latest"
        );
        assert_eq!(pull_reference("app@sha256:abc"), "app@sha256:abc");
    }

    #[test]
    fn pull_failures_are_told_apart() {
        let unreachable = BollardError::DockerResponseServerError {
            status_code: 500,
            message: "Get \"https://registry-1.docker.io/v2/\": dial tcp: lookup \
                      registry-1.docker.io: no such host"
                .to_owned(),
        };
        let missing = BollardError::DockerStreamError {
            error: "manifest for app:9 not found: manifest unknown".to_owned(),
        };
        assert!(!is_image_not_found(&unreachable));
        assert!(is_image_not_found(&missing));
    }
}
