//! Wires the agent to AWS and Docker: reads its configuration, identifies and measures the host,
//! and starts it; it registers through the control plane, which creates its queue. `main` and the end-to-end tests both start the
//! agent through here.

use std::collections::BTreeMap;
use std::sync::Arc;

use titus_aws::{AwsClients, Names, SqsCommandSource, SqsStatusSink};
use titus_core::ports::QueueError;
use titus_core::Resources;

use tokio_util::sync::CancellationToken;

use crate::agent::{Agent, AgentError, AgentIdentity, HostServices, TaskSecrets};
use crate::aws::{load_settings, AwsLink, EcrAuth, NoRegistryAuth, RegistryAuth, StsRoles};
use crate::config::{AgentSettings, ConfigError, DEFAULT_STAGE};
use crate::credentials::{CredentialService, RoleAssumer};
use crate::docker::DockerRuntime;
use crate::host::{instance_identity, measure_capacity, HostError, IMDS_ENDPOINT};
use crate::isolation::{prepare_host, IsolationError};
use crate::runtime::RuntimeError;
use crate::secrets::AwsSecrets;

/// The agent as it runs in production: Docker, SQS and DynamoDB.
pub type AwsAgent = Agent<DockerRuntime, SqsCommandSource, SqsStatusSink, AwsLink>;

/// How long a registration request is waited for before it is sent again.
const REGISTRATION_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// The lowest Docker API version whose options the agent uses (Debian's docker.io 20.10).
const MIN_DOCKER_API: (u32, u32) = (1, 41);

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootstrapError {
    #[error("TITUS_STAGE={stage:?} is not valid: {message}")]
    Stage { stage: String, message: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("the Docker engine is not usable: {0}")]
    Docker(RuntimeError),
    #[error("the status queue is not usable: {0}; is the stage provisioned?")]
    StatusQueue(QueueError),
    #[error("this host cannot isolate task containers: {0}")]
    Isolation(#[from] IsolationError),
    #[error("the task credentials endpoint cannot listen on {address}: {message}")]
    Credentials { address: String, message: String },
    #[error(transparent)]
    Agent(#[from] AgentError),
}

/// The stage and the agent's settings: the stage's SSM parameter with `env`'s overrides.
pub async fn read_settings(
    clients: &AwsClients,
    env: &BTreeMap<String, String>,
) -> Result<(Names, AgentSettings), BootstrapError> {
    let stage = env
        .get("TITUS_STAGE")
        .map(String::as_str)
        .unwrap_or(DEFAULT_STAGE);
    let names = Names::new(stage).map_err(|message| BootstrapError::Stage {
        stage: stage.to_owned(),
        message,
    })?;
    let mut settings = load_settings(&clients.ssm, &names).await?;
    settings.apply_env(env)?;
    settings.validate(&format!(
        "parameter {} or its TITUS_AGENT_* environment variable",
        names.agent_config_parameter()
    ))?;
    Ok((names, settings))
}

/// Starts the agent: identity, capacity, registration and reconciliation.
pub async fn start(
    clients: &AwsClients,
    sdk_config: &aws_config::SdkConfig,
    env: &BTreeMap<String, String>,
) -> Result<Arc<AwsAgent>, BootstrapError> {
    let (names, settings) = read_settings(clients, env).await?;

    let runtime =
        DockerRuntime::connect(settings.docker_timeout()).map_err(BootstrapError::Docker)?;
    let engine = runtime
        .engine_info()
        .await
        .map_err(BootstrapError::Docker)?;
    if api_version(&engine.api_version) < MIN_DOCKER_API {
        tracing::warn!(api_version = %engine.api_version, "the Docker engine is older than API 1.41; some container options may be ignored");
    }
    tracing::info!(version = %engine.version, api_version = %engine.api_version, root_dir = %engine.root_dir, "Docker engine answers");

    let (agent_id, zone, machine_type) = match &settings.agent_id {
        Some(id) => (
            id.clone(),
            settings.zone.clone().unwrap_or_else(|| "local".to_owned()),
            settings
                .machine_type
                .clone()
                .unwrap_or_else(|| "local".to_owned()),
        ),
        None => {
            let endpoint = env
                .get("AWS_EC2_METADATA_SERVICE_ENDPOINT")
                .map(String::as_str)
                .unwrap_or(IMDS_ENDPOINT);
            let identity = instance_identity(endpoint, settings.imds_timeout()).await?;
            (
                identity.instance_id,
                settings.zone.clone().unwrap_or(identity.zone),
                settings
                    .machine_type
                    .clone()
                    .unwrap_or(identity.instance_type),
            )
        }
    };

    let capacity = capacity(&settings, &engine.root_dir)?;
    let status = SqsStatusSink::for_stage(clients.sqs.clone(), &names)
        .await
        .map_err(BootstrapError::StatusQueue)?;
    let registry_auth: Arc<dyn RegistryAuth> = if settings.ecr_auth_from_instance_role {
        Arc::new(EcrAuth::new(sdk_config.clone()))
    } else {
        Arc::new(NoRegistryAuth)
    };
    // No task runs on a host whose isolation is not in place.
    prepare_host(&runtime, &settings).await?;
    let credentials = serve_credentials(&settings, Arc::new(StsRoles::new(sdk_config))).await?;
    let identity = AgentIdentity {
        agent_id: agent_id.clone(),
        zone,
        machine_type,
        machine_group: settings.machine_group.clone(),
        capacity,
    };
    let metrics_writer = settings.metrics_log_group.as_deref().map(|group| {
        crate::metrics::EmfWriter::new(clients.logs.clone(), group, &agent_id, names.stage())
    });
    let agent = Agent::start(
        identity,
        settings,
        runtime,
        SqsCommandSource::named(clients.sqs.clone(), names.agent_queue(&agent_id)),
        status,
        AwsLink::for_agent(clients, &names, &agent_id, REGISTRATION_WAIT),
        HostServices {
            registry_auth,
            credentials: Some(credentials),
            secrets: Some(TaskSecrets {
                resolver: Arc::new(AwsSecrets::new(sdk_config.clone())),
                stage: names.stage().to_owned(),
            }),
            metrics: metrics_writer,
        },
    )
    .await?;
    Ok(agent)
}

/// Listens for task containers' credential requests on the configured address and port, and
/// serves them for as long as the process lives.
pub async fn serve_credentials(
    settings: &AgentSettings,
    roles: Arc<dyn RoleAssumer>,
) -> Result<Arc<CredentialService>, BootstrapError> {
    let address = format!(
        "{}:{}",
        settings.credentials_address, settings.credentials_port
    );
    let listener =
        tokio::net::TcpListener::bind(&address)
            .await
            .map_err(|e| BootstrapError::Credentials {
                address: address.clone(),
                message: e.to_string(),
            })?;
    let bound = listener
        .local_addr()
        .map_err(|e| BootstrapError::Credentials {
            address: address.clone(),
            message: e.to_string(),
        })?;
    let service = Arc::new(CredentialService::new(roles, bound));
    tracing::info!(uri = %service.uri(), "serving task credentials");
    let server = service.clone();
    tokio::spawn(async move {
        if let Err(e) = server.serve(listener, CancellationToken::new()).await {
            tracing::error!(error = %e, "the task credentials endpoint stopped");
        }
    });
    Ok(service)
}

/// The measured capacity with the configured overrides.
fn capacity(settings: &AgentSettings, docker_root_dir: &str) -> Result<Resources, HostError> {
    let all_configured =
        settings.cpu_millis.is_some() && settings.memory_mb.is_some() && settings.disk_mb.is_some();
    let measured = if all_configured {
        Resources::ZERO
    } else {
        let disk_path = settings
            .disk_path
            .as_deref()
            .unwrap_or(if docker_root_dir.is_empty() {
                "/"
            } else {
                docker_root_dir
            });
        // The agent may run in a container that does not see Docker's root directory.
        measure_capacity(disk_path).or_else(|_| measure_capacity("/"))?
    };
    Ok(Resources {
        cpu_millis: settings.cpu_millis.unwrap_or(measured.cpu_millis),
        memory_mb: settings.memory_mb.unwrap_or(measured.memory_mb),
        disk_mb: settings.disk_mb.unwrap_or(measured.disk_mb),
        network_mbps: settings.network_mbps,
        gpu: settings.gpu,
    })
}

fn api_version(text: &str) -> (u32, u32) {
    let mut parts = text.split('.').map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_compare_numerically() {
        assert!(api_version("1.41") >= MIN_DOCKER_API);
        assert!(api_version("1.9") < MIN_DOCKER_API);
        assert!(api_version("1.100") > MIN_DOCKER_API);
    }

    #[test]
    fn configured_capacity_wins_over_measured() {
        let settings = AgentSettings {
            cpu_millis: Some(1500),
            memory_mb: Some(2048),
            disk_mb: Some(10_000),
            network_mbps: 500,
            ..AgentSettings::default()
        };
        let capacity = capacity(&settings, "/nowhere").unwrap();
        assert_eq!(
            capacity,
            Resources {
                cpu_millis: 1500,
                memory_mb: 2048,
                disk_mb: 10_000,
                network_mbps: 500,
                gpu: 0
            }
        );
    }
}
