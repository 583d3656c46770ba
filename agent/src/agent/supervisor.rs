//! A task's life, from its launch (or a container found at start) to its Finished status: the
//! supervisor that owns each task.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use titus_core::messages::{LaunchTask, TaskStatusUpdate};
use titus_core::{JobId, Resources, TaskId, TaskReason, TaskState};
use tokio::sync::watch;
use tracing::Instrument as _;

use super::{Agent, KillRequest, Outcome, Phase, Plan, TaskContext, Tombstone};
use crate::config::{AgentSettings, LogDriver};
use crate::credentials::{AssumeError, Binding, IssuedToken, FULL_URI_VAR, TOKEN_VAR};
use crate::ports::{CommandSource, ControlPlaneLink, StatusSink};
use crate::runtime::{
    container_name, finished_container_name, label, ContainerInfo, ContainerRuntime, ContainerSpec,
    ContainerStatus, LogConfig, RuntimeError, DEFAULT_CAPABILITIES,
};
use crate::secrets::{shared_prefixes, shared_with_roleless_tasks, SecretError};
use crate::time::now_ms;
use titus_core::secrets::SecretRef;

impl<R, Q, S, L> Agent<R, Q, S, L>
where
    R: ContainerRuntime,
    Q: CommandSource,
    S: StatusSink,
    L: ControlPlaneLink,
{
    pub(super) async fn supervise(
        self: Arc<Self>,
        task_id: TaskId,
        plan: Plan,
        mut kill: watch::Receiver<Option<KillRequest>>,
        phase: Arc<watch::Sender<Phase>>,
    ) {
        let (context, outcome) = match plan {
            Plan::Launch(launch) => {
                let context = TaskContext {
                    task_id: task_id.clone(),
                    job_id: launch.job_id.clone(),
                    incarnation: launch.incarnation,
                    name: container_name(task_id.as_str()),
                    grace: Duration::from_secs(u64::from(launch.kill_grace_period_sec)),
                    runtime_limit: launch.runtime_limit_sec.map(Duration::from_secs),
                    memory_mb: launch.resources.memory_mb,
                };
                let outcome = self.launch(&context, &launch, &mut kill, &phase).await;
                (context, outcome)
            }
            Plan::Adopt(info) => {
                let number = |key: &str| -> Option<u64> { info.labels.get(key)?.parse().ok() };
                let resources: Resources = info
                    .labels
                    .get(label::RESOURCES)
                    .and_then(|json| serde_json::from_str(json).ok())
                    .unwrap_or_default();
                let context = TaskContext {
                    task_id: task_id.clone(),
                    job_id: JobId::from_string(
                        info.labels.get(label::JOB_ID).cloned().unwrap_or_default(),
                    ),
                    // Re-adopted only when the records run it on this incarnation.
                    incarnation: self.incarnation(),
                    name: info.name.clone(),
                    grace: Duration::from_secs(number(label::KILL_GRACE_SECS).unwrap_or(10)),
                    runtime_limit: number(label::RUNTIME_LIMIT_SECS).map(Duration::from_secs),
                    memory_mb: resources.memory_mb,
                };
                let outcome = self.adopt(&context, info, &mut kill, &phase).await;
                (context, outcome)
            }
        };
        self.finish(&context, outcome, &phase).await;
    }

    fn status(
        &self,
        context: &TaskContext,
        state: TaskState,
        at_ms: u64,
        container_id: Option<String>,
    ) -> TaskStatusUpdate {
        TaskStatusUpdate {
            task_id: context.task_id.clone(),
            job_id: context.job_id.clone(),
            agent_id: self.identity.agent_id.clone(),
            incarnation: context.incarnation,
            state,
            reason: None,
            message: String::new(),
            timestamp_ms: at_ms,
            exit_code: None,
            oom_killed: false,
            container_id,
        }
    }

    /// Why this agent will not run the launch, if it will not: what the task asks for is
    /// delivered or refused, never ignored.
    fn refusal(&self, launch: &LaunchTask) -> Option<(TaskReason, String)> {
        let agent_id = &self.identity.agent_id;
        if !launch.secrets.is_empty() && self.secrets.is_none() {
            return Some((
                TaskReason::LocalSystemError,
                format!(
                    "the task names secrets (container.secrets) and agent {agent_id} resolves \
                     no secrets"
                ),
            ));
        }
        if !launch.iam_role.is_empty() && self.credentials.is_none() {
            return Some((
                TaskReason::LocalSystemError,
                format!(
                    "the task has an IAM role (container.securityProfile.iamRole) and agent \
                     {agent_id} serves no task credentials"
                ),
            ));
        }
        let mut refused = Vec::new();
        if launch.privileged && !self.settings.allow_privileged {
            refused.push("a privileged container (allow_privileged is false)".to_owned());
        }
        if launch.host_network && !self.settings.allow_host_network {
            refused.push("the host's network (allow_host_network is false)".to_owned());
        }
        if !launch.host_mounts.is_empty() && !self.settings.allow_host_mounts {
            refused.push("host mounts (allow_host_mounts is false)".to_owned());
        }
        if !launch.security_groups.is_empty() {
            refused.push(
                "security groups (container.securityProfile.securityGroups), which its task \
                 bridge network cannot apply"
                    .to_owned(),
            );
        }
        let extra: Vec<&str> = launch
            .security_context
            .add_capabilities
            .iter()
            .map(String::as_str)
            .filter(|c| {
                !DEFAULT_CAPABILITIES.contains(c)
                    && !self.settings.allowed_capabilities.iter().any(|a| a == c)
            })
            .collect();
        if !extra.is_empty() {
            refused.push(format!(
                "capabilities {} (container.securityContext.addCapabilities; \
                 allowed_capabilities is {:?})",
                extra.join(", "),
                self.settings.allowed_capabilities
            ));
        }
        (!refused.is_empty()).then(|| {
            (
                TaskReason::InvalidRequest,
                format!(
                    "the task asks for {}, which agent {agent_id} does not allow",
                    refused.join(" and ")
                ),
            )
        })
    }

    /// The values of the task's secrets, read with its role's credentials when it has a role,
    /// else with the agent's and only from the stage's shared space. A failure names the
    /// variable and the reference, never a value.
    async fn resolve_secrets(
        &self,
        context: &TaskContext,
        launch: &LaunchTask,
        has_role: bool,
    ) -> Result<BTreeMap<String, String>, (TaskReason, String)> {
        let mut values = BTreeMap::new();
        if launch.secrets.is_empty() {
            return Ok(values);
        }
        let Some(secrets) = &self.secrets else {
            return Err((
                TaskReason::LocalSystemError,
                "the task names secrets and this agent resolves none".to_owned(),
            ));
        };
        let role = match (&self.credentials, has_role) {
            (Some(service), true) => service.role_credentials(&context.task_id).await,
            _ => None,
        };
        for (name, reference) in &launch.secrets {
            let parsed = SecretRef::parse(reference).map_err(|problem| {
                (
                    TaskReason::InvalidRequest,
                    format!("secret {name} (container.secrets): {problem}"),
                )
            })?;
            if role.is_none() && !shared_with_roleless_tasks(&parsed, &secrets.stage) {
                let (parameters, names) = shared_prefixes(&secrets.stage);
                return Err((
                    TaskReason::InvalidRequest,
                    format!(
                        "secret {name} (container.secrets) names {reference}, which a task \
                         without an IAM role may not read; expected an SSM parameter under \
                         {parameters} or a Secrets Manager secret named {names}…, or a task \
                         role (container.securityProfile.iamRole) that may read it"
                    ),
                ));
            }
            match secrets.resolver.resolve(&parsed, role.as_ref()).await {
                Ok(value) if value.contains('\0') => {
                    return Err((
                        TaskReason::InvalidRequest,
                        format!(
                            "secret {name} ({reference}) holds a NUL byte, which an \
                             environment variable cannot"
                        ),
                    ))
                }
                Ok(value) => {
                    values.insert(name.clone(), value);
                }
                Err(e) => {
                    let reason = match e {
                        SecretError::Refused(_) => TaskReason::InvalidRequest,
                        _ => TaskReason::LocalSystemError,
                    };
                    return Err((reason, format!("secret {name} (container.secrets): {e}")));
                }
            }
        }
        tracing::info!(count = values.len(), "task secrets resolved");
        Ok(values)
    }

    fn container_spec(
        &self,
        context: &TaskContext,
        launch: &LaunchTask,
        issued: Option<&IssuedToken>,
        secrets: BTreeMap<String, String>,
    ) -> ContainerSpec {
        let resources = Resources::of_container(&launch.resources);
        let mut labels = BTreeMap::from([
            (label::AGENT_ID.to_owned(), self.identity.agent_id.clone()),
            (label::JOB_ID.to_owned(), launch.job_id.to_string()),
            (label::TASK_ID.to_owned(), launch.task_id.to_string()),
            (
                label::INCARNATION.to_owned(),
                launch.incarnation.to_string(),
            ),
            (
                label::PLACEMENT_VERSION.to_owned(),
                launch.placement_version.to_string(),
            ),
            (
                label::KILL_GRACE_SECS.to_owned(),
                launch.kill_grace_period_sec.to_string(),
            ),
            (
                label::RESOURCES.to_owned(),
                serde_json::to_string(&resources).unwrap_or_default(),
            ),
        ]);
        if let Some(limit) = launch.runtime_limit_sec {
            labels.insert(label::RUNTIME_LIMIT_SECS.to_owned(), limit.to_string());
        }
        let mut env = launch.env.clone();
        env.extend(secrets);
        // The platform's own variables win over the job's.
        env.insert("TITUS_TASK_ID".to_owned(), launch.task_id.to_string());
        env.insert("TITUS_JOB_ID".to_owned(), launch.job_id.to_string());
        if let Some(issued) = issued {
            env.insert(FULL_URI_VAR.to_owned(), issued.uri.clone());
            env.insert(TOKEN_VAR.to_owned(), issued.token.clone());
            labels.insert(label::IAM_ROLE.to_owned(), launch.iam_role.clone());
            labels.insert(label::TOKEN_SHA256.to_owned(), issued.token_sha256.clone());
        }
        let mut capabilities: Vec<String> = DEFAULT_CAPABILITIES
            .iter()
            .map(|c| (*c).to_owned())
            .collect();
        for capability in &launch.security_context.add_capabilities {
            if !capabilities.contains(capability) {
                capabilities.push(capability.clone());
            }
        }
        let mut log = self.log.clone();
        if self.settings.log_driver == LogDriver::Awslogs {
            log.options.insert(
                "awslogs-stream".to_owned(),
                format!("{}/{}", launch.job_id, launch.task_id),
            );
        }
        ContainerSpec {
            name: context.name.clone(),
            image: launch.image.clone(),
            entry_point: launch.entry_point.clone(),
            command: launch.command.clone(),
            env,
            labels,
            nano_cpus: (launch.resources.cpu * 1e9).round().max(0.0) as i64,
            memory_bytes: i64::try_from(launch.resources.memory_mb.saturating_mul(1024 * 1024))
                .unwrap_or(i64::MAX),
            pids_limit: self.settings.pids_limit,
            shm_size_bytes: i64::from(launch.resources.shm_size_mb) * 1024 * 1024,
            privileged: launch.privileged,
            network: Some(self.settings.task_network.clone()),
            host_network: launch.host_network,
            host_mounts: launch.host_mounts.clone(),
            log,
            capabilities,
            user: launch.security_context.user.clone(),
            read_only_root_filesystem: launch.security_context.read_only_root_filesystem,
            gpus: launch.resources.gpu,
        }
    }

    /// Pulls the image, or returns why the task cannot have it.
    async fn pull(
        &self,
        image: &str,
        kill: &mut watch::Receiver<Option<KillRequest>>,
    ) -> Result<(), Outcome> {
        let credentials = self
            .registry_auth
            .credentials_for(image)
            .await
            .map_err(|e| {
                Outcome::without_container(
                    TaskReason::LocalSystemError,
                    format!("no registry credentials for image {image:?}: {e}"),
                )
            })?;
        tracing::info!(image, "pulling image");
        let timeout = self.settings.image_pull_timeout();
        let pull = tokio::time::timeout(timeout, self.runtime.pull_image(image, credentials));
        let began = std::time::Instant::now();
        let pulled = tokio::select! {
            result = pull => match result {
                Ok(Ok(())) => {
                    self.metrics.max(
                        titus_core::metrics::AGENT_IMAGE_PULL_MAX,
                        began.elapsed().as_secs_f64() * 1000.0,
                    );
                    Ok(())
                }
                Ok(Err(RuntimeError::ImageNotFound { message, .. })) => Err(Outcome::without_container(
                    TaskReason::InvalidRequest,
                    format!("image {image:?} does not exist in its registry: {message}"),
                )),
                Ok(Err(e)) => Err(Outcome::without_container(
                    TaskReason::LocalSystemError,
                    format!("this host could not pull image {image:?}: {e}"),
                )),
                Err(_) => Err(Outcome::without_container(
                    TaskReason::LocalSystemError,
                    format!("pulling image {image:?} took longer than {} s", timeout.as_secs()),
                )),
            },
            request = wait_for_kill(kill) => return Err(Outcome::without_container(
                request.reason,
                format!("{}; the container was never started", request.message),
            )),
        };
        if pulled.is_err() {
            self.metrics
                .add(titus_core::metrics::AGENT_LAUNCH_FAILURES, 1.0);
        }
        pulled
    }

    async fn launch(
        self: &Arc<Self>,
        context: &TaskContext,
        launch: &LaunchTask,
        kill: &mut watch::Receiver<Option<KillRequest>>,
        phase: &Arc<watch::Sender<Phase>>,
    ) -> Outcome {
        if let Some(request) = kill.borrow().clone() {
            return Outcome::without_container(
                request.reason,
                format!("{}; the container was never started", request.message),
            );
        }
        if let Some((reason, refusal)) = self.refusal(launch) {
            tracing::warn!(refusal = %refusal, "launch refused");
            return Outcome::without_container(reason, refusal);
        }
        let _ =
            self.outbox
                .enqueue(self.status(context, TaskState::StartInitiated, now_ms(), None));

        // The role first: a role that cannot be had fails the launch, not the task's first
        // AWS call.
        let issued = match (&self.credentials, launch.iam_role.as_str()) {
            (Some(service), role) if !role.is_empty() => {
                match service.issue(&context.task_id, role).await {
                    Ok(issued) => Some(issued),
                    Err(e) => {
                        let reason = match e {
                            AssumeError::Refused { .. } => TaskReason::InvalidRequest,
                            _ => TaskReason::LocalSystemError,
                        };
                        return Outcome::without_container(
                            reason,
                            format!("the task's IAM role: {e}"),
                        );
                    }
                }
            }
            _ => None,
        };

        let secrets = match self
            .resolve_secrets(context, launch, issued.is_some())
            .await
        {
            Ok(secrets) => secrets,
            Err((reason, message)) => return Outcome::without_container(reason, message),
        };

        // Create first: the image is almost always present, and a missing one is the engine's
        // answer to the create, which saves a call on the common path.
        let spec = self.container_spec(context, launch, issued.as_ref(), secrets);
        let mut pulled = false;
        let container_id = loop {
            match self.runtime.create(&spec).await {
                Ok(id) => break id,
                Err(RuntimeError::ImageMissing { .. }) if !pulled => {
                    if let Err(outcome) = self.pull(&launch.image, kill).await {
                        return outcome;
                    }
                    pulled = true;
                }
                Err(RuntimeError::NameTaken(_)) => {
                    // Created by an earlier attempt of this launch: carry on with it.
                    return match self.runtime.inspect(&context.name).await {
                        Ok(info) => self.adopt(context, info, kill, phase).await,
                        Err(e) => Outcome::without_container(
                            TaskReason::LocalSystemError,
                            format!(
                                "container {} exists but cannot be inspected: {e}",
                                context.name
                            ),
                        ),
                    };
                }
                Err(e) => {
                    self.metrics
                        .add(titus_core::metrics::AGENT_LAUNCH_FAILURES, 1.0);
                    return Outcome::without_container(
                        TaskReason::LocalSystemError,
                        format!("creating the container failed: {e}"),
                    );
                }
            }
        };
        self.start_and_watch(context, container_id, kill, phase)
            .await
    }

    /// Starts a created container and watches it to its end.
    async fn start_and_watch(
        self: &Arc<Self>,
        context: &TaskContext,
        container_id: String,
        kill: &mut watch::Receiver<Option<KillRequest>>,
        phase: &Arc<watch::Sender<Phase>>,
    ) -> Outcome {
        if let Some(request) = kill.borrow().clone() {
            return Outcome {
                container_id: Some(container_id),
                ..Outcome::without_container(
                    request.reason,
                    format!("{}; the container was never started", request.message),
                )
            };
        }
        if let Err(e) = self.runtime.start(&context.name).await {
            self.metrics
                .add(titus_core::metrics::AGENT_LAUNCH_FAILURES, 1.0);
            let reason = match &e {
                RuntimeError::StartFailed { message, .. } if is_users_fault(message) => {
                    TaskReason::Failed
                }
                _ => TaskReason::LocalSystemError,
            };
            let exit_code = match self.runtime.inspect(&context.name).await {
                Ok(info) => info.exit_code,
                Err(_) => None,
            };
            return Outcome {
                exit_code,
                container_id: Some(container_id),
                ..Outcome::without_container(reason, format!("the container could not start: {e}"))
            };
        }
        self.bind_credentials(context, None).await;
        self.watch(context, container_id, None, kill, phase).await
    }

    /// Takes over a container that exists already: found at start, or created by an earlier
    /// attempt of the same launch.
    async fn adopt(
        self: &Arc<Self>,
        context: &TaskContext,
        info: ContainerInfo,
        kill: &mut watch::Receiver<Option<KillRequest>>,
        phase: &Arc<watch::Sender<Phase>>,
    ) -> Outcome {
        match info.status {
            ContainerStatus::Created => {
                self.adopt_credentials(context, &info);
                self.start_and_watch(context, info.id, kill, phase).await
            }
            ContainerStatus::Running | ContainerStatus::Paused => {
                self.adopt_credentials(context, &info);
                let started_at = info.started_at_ms;
                self.watch(context, info.id, started_at, kill, phase).await
            }
            ContainerStatus::Exited | ContainerStatus::Dead => {
                tracing::info!("the container exited while the agent was away; reporting it");
                exit_outcome(context, &info, None)
            }
            ContainerStatus::Other(status) => {
                let _ = self.runtime.stop(&context.name, context.grace).await;
                match self.runtime.inspect(&context.name).await {
                    Ok(info) if info.status.is_finished() => exit_outcome(context, &info, None),
                    _ => Outcome {
                        container_id: Some(info.id),
                        ..Outcome::without_container(
                            TaskReason::UnknownSystemError,
                            format!("the container was found in state {status:?}"),
                        )
                    },
                }
            }
        }
    }

    /// Reports Started and waits for the container's end, stopping it for a kill or its
    /// runtime limit.
    async fn watch(
        self: &Arc<Self>,
        context: &TaskContext,
        container_id: String,
        started_at_ms: Option<u64>,
        kill: &mut watch::Receiver<Option<KillRequest>>,
        phase: &Arc<watch::Sender<Phase>>,
    ) -> Outcome {
        let started_at_ms = started_at_ms.unwrap_or_else(now_ms);
        let delivery = self.outbox.enqueue(self.status(
            context,
            TaskState::Started,
            started_at_ms,
            Some(container_id.clone()),
        ));
        {
            let phase = phase.clone();
            tokio::spawn(async move {
                if delivery.delivered().await {
                    phase.send_if_modified(|p| {
                        let earlier = *p < Phase::Running;
                        if earlier {
                            *p = Phase::Running;
                        }
                        earlier
                    });
                }
            });
        }
        tracing::info!(container_id = %container_id, "task started");

        // The runtime limit counts from the container's start, also across agent restarts.
        let deadline = context.runtime_limit.map(|limit| {
            let elapsed = Duration::from_millis(now_ms().saturating_sub(started_at_ms));
            tokio::time::Instant::now() + limit.saturating_sub(elapsed)
        });
        let mut stopping: Option<KillRequest> = None;
        let mut wait = Box::pin(self.runtime.wait(&context.name));
        let mut kill_open = true;
        loop {
            if stopping.is_none() {
                if let Some(request) = kill.borrow_and_update().clone() {
                    self.begin_stop(context, &container_id, &request);
                    stopping = Some(request);
                }
            }
            tokio::select! {
                result = &mut wait => match result {
                    Ok(()) => break,
                    Err(RuntimeError::NotFound(_)) => {
                        return Outcome {
                            container_id: Some(container_id),
                            ..Outcome::without_container(
                                TaskReason::UnknownSystemError,
                                "the container disappeared while it ran".to_owned(),
                            )
                        };
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "waiting for the container failed; waiting again");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        wait = Box::pin(self.runtime.wait(&context.name));
                    }
                },
                changed = kill.changed(), if kill_open && stopping.is_none() => {
                    if changed.is_err() {
                        kill_open = false;
                    }
                }
                () = sleep_until(deadline), if stopping.is_none() => {
                    let limit = context.runtime_limit.unwrap_or_default().as_secs();
                    let request = KillRequest {
                        reason: TaskReason::RuntimeLimitExceeded,
                        grace: None,
                        message: format!("the task ran longer than its runtime limit of {limit} s"),
                    };
                    self.begin_stop(context, &container_id, &request);
                    stopping = Some(request);
                }
            }
        }
        match self.runtime.inspect(&context.name).await {
            Ok(info) => {
                let outcome = exit_outcome(context, &info, stopping.as_ref());
                Outcome {
                    at_ms: outcome.at_ms.max(started_at_ms),
                    ..outcome
                }
            }
            Err(e) => Outcome {
                container_id: Some(container_id),
                ..Outcome::without_container(
                    TaskReason::UnknownSystemError,
                    format!("the container exited but cannot be inspected: {e}"),
                )
            },
        }
    }

    /// Reports KillInitiated and stops the container in the background; the watch sees it end.
    fn begin_stop(
        self: &Arc<Self>,
        context: &TaskContext,
        container_id: &str,
        request: &KillRequest,
    ) {
        let grace = request.grace.unwrap_or(context.grace);
        tracing::info!(reason = %request.reason, grace_secs = grace.as_secs(), "stopping the task");
        let _ = self.outbox.enqueue(TaskStatusUpdate {
            reason: Some(request.reason),
            message: request.message.clone(),
            ..self.status(
                context,
                TaskState::KillInitiated,
                now_ms(),
                Some(container_id.to_owned()),
            )
        });
        let agent = self.clone();
        let name = context.name.clone();
        tokio::spawn(
            async move {
                for attempt in 1..=3 {
                    match agent.runtime.stop(&name, grace).await {
                        Ok(()) | Err(RuntimeError::NotFound(_)) => return,
                        Err(e) => {
                            tracing::warn!(attempt, error = %e, "stopping the container failed");
                            tokio::time::sleep(Duration::from_secs(2)).await;
                        }
                    }
                }
            }
            .in_current_span(),
        );
    }

    /// Sends Finished, then marks the container as reported (or removes it).
    /// Tells the credentials service where the task's container answers from, now that it
    /// runs (`info` when the caller has inspected it already).
    async fn bind_credentials(&self, context: &TaskContext, info: Option<&ContainerInfo>) {
        let Some(service) = &self.credentials else {
            return;
        };
        let inspected;
        let info = match info {
            Some(info) => info,
            None => match self.runtime.inspect(&context.name).await {
                Ok(found) => {
                    inspected = found;
                    &inspected
                }
                Err(e) => {
                    // Its token is then answered for no address: the task gets no credentials.
                    tracing::warn!(error = %e, "the container's address is not known");
                    return;
                }
            },
        };
        let binding = if info.ip_addresses.is_empty() {
            Binding::AnyAddress
        } else {
            Binding::Addresses(info.ip_addresses.clone())
        };
        service.bind(&context.task_id, binding);
    }

    /// A running container found at start keeps its credentials, by its token's digest.
    fn adopt_credentials(&self, context: &TaskContext, info: &ContainerInfo) {
        let (Some(service), Some(role), Some(digest)) = (
            &self.credentials,
            info.labels.get(label::IAM_ROLE),
            info.labels.get(label::TOKEN_SHA256),
        ) else {
            return;
        };
        let binding = if info.ip_addresses.is_empty() {
            Binding::AnyAddress
        } else {
            Binding::Addresses(info.ip_addresses.clone())
        };
        service.adopt(&context.task_id, role, digest, binding);
    }

    async fn finish(
        &self,
        context: &TaskContext,
        outcome: Outcome,
        phase: &Arc<watch::Sender<Phase>>,
    ) {
        // Its container has ended: its token is refused from now on.
        if let Some(service) = &self.credentials {
            service.revoke(&context.task_id);
        }
        tracing::info!(
            reason = %outcome.reason,
            exit_code = ?outcome.exit_code,
            oom_killed = outcome.oom_killed,
            message = %outcome.message,
            "task finished"
        );
        let update = TaskStatusUpdate {
            reason: Some(outcome.reason),
            message: outcome.message.clone(),
            exit_code: outcome.exit_code,
            oom_killed: outcome.oom_killed,
            ..self.status(
                context,
                TaskState::Finished,
                outcome.at_ms,
                outcome.container_id.clone(),
            )
        };
        let delivered = self.outbox.enqueue(update).delivered().await;
        if delivered && outcome.container_id.is_some() {
            self.settle_container(context).await;
        }
        self.lock_tombstones()
            .insert(context.task_id.clone(), Tombstone::Finished);
        {
            let mut tasks = self.lock_tasks();
            tasks.remove(&context.task_id);
            self.running_count.send_replace(tasks.len());
        }
        phase.send_replace(Phase::Finished);
    }

    /// After Finished was sent: rename the container, the marker that its exit was reported,
    /// and keep it for its log; or remove it when nothing is retained.
    async fn settle_container(&self, context: &TaskContext) {
        if self.settings.finished_retention_secs > 0 {
            let finished_name = finished_container_name(context.task_id.as_str());
            match self.runtime.rename(&context.name, &finished_name).await {
                Ok(()) => {
                    self.retain(&finished_name, now_ms());
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "renaming the finished container failed; removing it")
                }
            }
        }
        if let Err(e) = self.runtime.remove(&context.name).await {
            tracing::warn!(error = %e, "removing the finished container failed");
        }
    }
}

async fn wait_for_kill(kill: &mut watch::Receiver<Option<KillRequest>>) -> KillRequest {
    loop {
        if let Some(request) = kill.borrow_and_update().clone() {
            return request;
        }
        if kill.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// A start failure caused by the task's own command rather than the host.
fn is_users_fault(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    [
        "executable file not found",
        "no such file or directory",
        "permission denied",
        "not a directory",
    ]
    .iter()
    .any(|marker| message.contains(marker))
}

/// The Finished status of an exited container.
fn exit_outcome(
    context: &TaskContext,
    info: &ContainerInfo,
    stopping: Option<&KillRequest>,
) -> Outcome {
    let code = info.exit_code;
    let code_text = match code {
        Some(code) if code > 128 => format!("exited with code {code} (signal {})", code - 128),
        Some(code) => format!("exited with code {code}"),
        None => "exited without an exit code".to_owned(),
    };
    let (reason, message) = if let Some(request) = stopping {
        (request.reason, format!("{}; {code_text}", request.message))
    } else if info.oom_killed {
        (
            TaskReason::Failed,
            format!(
                "killed by the kernel's OOM killer at its memory limit of {} MB; {code_text}",
                context.memory_mb
            ),
        )
    } else if info.status == ContainerStatus::Dead || !info.error.is_empty() {
        (
            TaskReason::Crashed,
            format!(
                "the container runtime failed: {:?}; {code_text}",
                info.error
            ),
        )
    } else if code == Some(0) {
        (TaskReason::Normal, code_text)
    } else {
        (TaskReason::Failed, code_text)
    };
    Outcome {
        reason,
        message,
        exit_code: code,
        oom_killed: info.oom_killed,
        // Docker stamps a fast exit's FinishedAt a little before its StartedAt; a task's
        // timestamps should not go backwards.
        at_ms: info
            .finished_at_ms
            .unwrap_or_else(now_ms)
            .max(info.started_at_ms.unwrap_or(0)),
        container_id: Some(info.id.clone()),
    }
}

/// Where this agent's tasks' output goes, as it registers it: the CloudWatch Logs group of the
/// awslogs driver, or nothing when it stays on the host.
pub(super) fn task_logs_of(settings: &AgentSettings) -> Option<titus_core::ports::TaskLogs> {
    match settings.log_driver {
        LogDriver::JsonFile => None,
        LogDriver::Awslogs => {
            settings
                .awslogs_group
                .clone()
                .map(|group| titus_core::ports::TaskLogs {
                    group,
                    region: settings.awslogs_region.clone(),
                })
        }
    }
}

/// The Docker log settings for the configured driver.
pub(super) fn log_config(settings: &AgentSettings) -> LogConfig {
    match settings.log_driver {
        LogDriver::JsonFile => LogConfig {
            driver: "json-file".to_owned(),
            options: BTreeMap::from([
                (
                    "max-size".to_owned(),
                    format!("{}m", settings.log_max_size_mb),
                ),
                ("max-file".to_owned(), settings.log_max_files.to_string()),
            ]),
        },
        LogDriver::Awslogs => {
            let mut options = BTreeMap::from([(
                "awslogs-group".to_owned(),
                settings.awslogs_group.clone().unwrap_or_default(),
            )]);
            if let Some(region) = &settings.awslogs_region {
                options.insert("awslogs-region".to_owned(), region.clone());
            }
            if let Some(endpoint) = &settings.awslogs_endpoint {
                options.insert("awslogs-endpoint".to_owned(), endpoint.clone());
            }
            LogConfig {
                driver: "awslogs".to_owned(),
                options,
            }
        }
    }
}
