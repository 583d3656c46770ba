//! The scaler against the emulator's EC2 (launch templates, CreateFleet, DescribeInstanceTypes,
//! termination), DynamoDB and SSM: scale-up to demand within the maximum, the cool-down, the
//! minimum, drains and terminations, and two scalers at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_ec2::types::{
    Filter, InstanceStateName, InstanceType, RequestLaunchTemplateData, ResourceType, Tag,
    TagSpecification,
};
use titus_app::ScalerConfigSource as ConfigSource;
use titus_aws::clients::local_emulator_config;
use titus_aws::provision::provision;
use titus_aws::resources::{attr, scaler_pool_default, tag, DEFAULT_POOL};
use titus_aws::{
    aws_ports, AwsClients, DynamoAgentStore, DynamoJobStore, DynamoLeaseStore, DynamoScalerState,
    Names,
};
use titus_control::scaler::{ScaleSummary, ScalerConfig, LEASE_NAME};
use titus_control::{ControlError, ControlPlane, Settings};
use titus_core::ports::{
    now_ms, FnClock, Lease, LeaseStore, ScalerState, ScalerStateStore, StateError,
};
use titus_core::{
    Agent, AgentHeartbeat, AgentState, AgentStore, Job, JobId, JobStore, Limits, Ports, Resources,
    TaskId,
};

/// A scaler over some ports: a run is `titus_control::scaler::run`.
struct Scaler<P> {
    cp: ControlPlane<P>,
}

impl<P: Ports> Scaler<P> {
    async fn run(&self, config: &ScalerConfig, owner: &str) -> Result<ScaleSummary, ControlError> {
        titus_control::scaler::run(&self.cp, config, owner).await
    }
}

const MINUTE_MS: u64 = 60_000;

struct Stage {
    clients: AwsClients,
    ec2: aws_sdk_ec2::Client,
    names: Names,
    launch_template: String,
}

async fn fresh_stage() -> Stage {
    let sdk_config = local_emulator_config().await;
    let clients = AwsClients::from_config(&sdk_config);
    let ec2 = aws_sdk_ec2::Client::new(&sdk_config);
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..10];
    let names = Names::new(&format!("c{suffix}")).unwrap();
    provision(&clients, &names.definitions()).await.unwrap();
    let image = titus_aws::ec2::first_amazon_image(&ec2)
        .await
        .unwrap()
        .expect("the emulator offers an AMI");
    let launch_template = names.agent_launch_template();
    ec2.create_launch_template()
        .launch_template_name(&launch_template)
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id(image)
                .instance_type(InstanceType::M7gLarge)
                .build(),
        )
        .send()
        .await
        .unwrap();
    Stage {
        clients,
        ec2,
        names,
        launch_template,
    }
}

impl Stage {
    /// Writes the default pool's parameter: the provisioned default with `changes` merged in.
    async fn configure_pool(&self, changes: serde_json::Value) {
        let mut pool = scaler_pool_default(&self.names);
        for (key, value) in changes.as_object().unwrap() {
            pool[key] = value.clone();
        }
        pool["launch_template"] = self.launch_template.clone().into();
        self.clients
            .ssm
            .put_parameter()
            .name(self.names.scaler_pool_parameter(DEFAULT_POOL))
            .value(pool.to_string())
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .overwrite(true)
            .send()
            .await
            .unwrap();
    }

    async fn config(&self) -> ScalerConfig {
        ConfigSource::new(
            self.clients.ssm.clone(),
            &self.names,
            std::time::Duration::ZERO,
        )
        .load()
        .await
        .unwrap()
    }

    fn scaler(&self, clock: fn() -> u64) -> Scaler<titus_aws::AwsPorts> {
        let mut ports = aws_ports(&self.clients, &self.names);
        ports.fleet = titus_aws::Ec2Fleet::new(self.ec2.clone());
        ports.clock = FnClock(clock);
        Scaler {
            cp: ControlPlane::new(ports, Settings::default()),
        }
    }

    /// A batch job of `size` tasks, each asking for `cpu` CPUs and 1 GiB.
    async fn submit(&self, size: u32, cpu: f64) -> Job {
        let descriptor = serde_json::json!({
            "owner": {"teamEmail": "team@example.com"},
            "applicationName": "app",
            "container": {
                "image": {"name": "busybox", "tag": "stable"},
                "resources": {"cpu": cpu, "memoryMB": 1024}
            },
            "batch": {"size": size}
        });
        let descriptor = titus_core::parse_descriptor(
            descriptor.to_string().as_bytes(),
            &Limits::titus_defaults(),
        )
        .unwrap();
        let job = Job::new(
            JobId::generate(),
            descriptor,
            "caller@example.com".into(),
            now_ms() - 1_000,
        );
        let store = DynamoJobStore::new(self.clients.dynamodb.clone(), &self.names);
        store.create_job(&job, None).await.unwrap();
        // As the scheduler's next tick would.
        titus_control::materialize::materialize_job(
            &ControlPlane::new(aws_ports(&self.clients, &self.names), Settings::default()),
            &job.id,
        )
        .await
        .unwrap();
        job
    }

    /// The stage's instances that are pending or running, with their tags.
    async fn instances(&self) -> Vec<aws_sdk_ec2::types::Instance> {
        self.ec2
            .describe_instances()
            .filters(
                Filter::builder()
                    .name(format!("tag:{}", tag::STAGE))
                    .values(self.names.stage())
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .values("pending")
                    .values("running")
                    .build(),
            )
            .send()
            .await
            .unwrap()
            .reservations()
            .iter()
            .flat_map(|r| r.instances().to_vec())
            .collect()
    }

    async fn instance_state(&self, id: &str) -> InstanceStateName {
        self.ec2
            .describe_instances()
            .instance_ids(id)
            .send()
            .await
            .unwrap()
            .reservations()[0]
            .instances()[0]
            .state()
            .and_then(|s| s.name())
            .cloned()
            .unwrap()
    }

    /// An instance of the default pool launched outside the scaler, with its agent registered.
    async fn running_agent(&self) -> String {
        let tag = |key: &str, value: &str| Tag::builder().key(key).value(value).build();
        let out = self
            .ec2
            .run_instances()
            .launch_template(
                aws_sdk_ec2::types::LaunchTemplateSpecification::builder()
                    .launch_template_name(&self.launch_template)
                    .build(),
            )
            .min_count(1)
            .max_count(1)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .tags(tag(tag::STAGE, self.names.stage()))
                    .tags(tag(tag::POOL, DEFAULT_POOL))
                    .tags(tag(tag::MANAGED_BY, tag::SCALER))
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let instance = &out.instances()[0];
        let id = instance.instance_id().unwrap().to_owned();
        let agent = Agent {
            id: id.clone(),
            queue_url: format!("https://queue.invalid/{id}"),
            zone: instance
                .placement()
                .and_then(|p| p.availability_zone())
                .unwrap_or("us-east-1a")
                .to_owned(),
            machine_type: "m7g.large".into(),
            machine_group: DEFAULT_POOL.into(),
            state: AgentState::Active,
            capacity: Resources {
                cpu_millis: 2_000,
                memory_mb: 7_600,
                disk_mb: 40_000,
                network_mbps: 1_000,
                gpu: 0,
            },
            allocated: Resources::ZERO,
            task_count: 0,
            registered_at_ms: now_ms(),
            heartbeat_at_ms: now_ms(),
            incarnation: 0,
            registration_id: String::new(),
            principal: String::new(),
            task_logs: None,
        };
        self.agents().register_agent(&agent).await.unwrap();
        id
    }

    fn agents(&self) -> DynamoAgentStore {
        DynamoAgentStore::new(self.clients.dynamodb.clone(), &self.names)
    }

    /// Sets what tasks hold on an agent, as a placement commit and a release would.
    async fn set_agent_load(&self, id: &str, tasks: u64, cpu_millis: u64) {
        self.clients
            .dynamodb
            .update_item()
            .table_name(self.names.agents_table())
            .key(attr::AGENT_ID, AttributeValue::S(id.to_owned()))
            .update_expression("SET taskCount = :count, allocCpuMillis = :cpu")
            .expression_attribute_values(":count", AttributeValue::N(tasks.to_string()))
            .expression_attribute_values(":cpu", AttributeValue::N(cpu_millis.to_string()))
            .send()
            .await
            .unwrap();
    }
}

fn launched_count(summary: &ScaleSummary) -> usize {
    summary.launched.len()
}

fn later_by_2_minutes() -> u64 {
    now_ms() + 2 * MINUTE_MS
}
fn later_by_3_minutes() -> u64 {
    now_ms() + 3 * MINUTE_MS
}
fn later_by_4_minutes() -> u64 {
    now_ms() + 4 * MINUTE_MS
}
fn later_by_6_minutes() -> u64 {
    now_ms() + 6 * MINUTE_MS
}
fn later_by_8_minutes() -> u64 {
    now_ms() + 8 * MINUTE_MS
}

#[tokio::test]
async fn scales_up_to_the_demand_within_the_pool_maximum() {
    let stage = fresh_stage().await;
    stage
        .configure_pool(serde_json::json!({"max_agents": 3, "instance_types": ["m7g.large"]}))
        .await;
    // Five tasks of 2 CPUs: one per m7g.large; the maximum allows three.
    stage.submit(5, 2.0).await;

    let summary = stage
        .scaler(now_ms)
        .run(&stage.config().await, "run-1")
        .await
        .unwrap();

    assert!(summary.lease_held);
    assert_eq!(summary.pending_tasks, 5);
    assert_eq!(summary.unplaced, 5);
    assert_eq!(launched_count(&summary), 3, "{summary:#?}");
    assert_eq!(summary.unschedulable, 2, "two tasks wait for room");
    let instances = stage.instances().await;
    assert_eq!(instances.len(), 3);
    for instance in &instances {
        let tags: BTreeSet<(String, String)> = instance
            .tags()
            .iter()
            .map(|t| {
                (
                    t.key().unwrap_or_default().to_owned(),
                    t.value().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        assert!(tags.contains(&(tag::STAGE.into(), stage.names.stage().into())));
        assert!(tags.contains(&(tag::POOL.into(), DEFAULT_POOL.into())));
        assert!(tags.contains(&(tag::MANAGED_BY.into(), tag::SCALER.into())));
        assert_eq!(instance.instance_type(), Some(&InstanceType::M7gLarge));
    }
    let zones: BTreeSet<&str> = instances
        .iter()
        .filter_map(|i| i.placement().and_then(|p| p.availability_zone()))
        .collect();
    assert!(zones.len() > 1, "spread over zones: {zones:?}");
}

#[tokio::test]
async fn the_cool_down_holds_further_launches_until_it_passes() {
    let stage = fresh_stage().await;
    stage
        .configure_pool(serde_json::json!({"instance_types": ["m7g.large"], "cooldown_secs": 120}))
        .await;
    let config = stage.config().await;
    stage.submit(1, 2.0).await;
    let first = stage.scaler(now_ms).run(&config, "run-1").await.unwrap();
    stage.submit(2, 2.0).await;

    let during = stage.scaler(now_ms).run(&config, "run-2").await.unwrap();
    let after = stage
        .scaler(later_by_3_minutes)
        .run(&config, "run-3")
        .await
        .unwrap();

    assert_eq!(launched_count(&first), 1);
    assert_eq!(launched_count(&during), 0, "{during:#?}");
    assert!(during.pools[0].cooling_down);
    assert_eq!(
        launched_count(&after),
        2,
        "the booting instance takes the first task: {after:#?}"
    );
    assert_eq!(stage.instances().await.len(), 3);
}

#[tokio::test]
async fn the_pool_minimum_is_kept_and_not_exceeded() {
    let stage = fresh_stage().await;
    stage
        .configure_pool(serde_json::json!({"min_agents": 2, "cooldown_secs": 60}))
        .await;
    let config = stage.config().await;

    let first = stage.scaler(now_ms).run(&config, "run-1").await.unwrap();
    let again = stage
        .scaler(later_by_2_minutes)
        .run(&config, "run-2")
        .await
        .unwrap();

    assert_eq!(launched_count(&first), 2);
    let zones: BTreeSet<&str> = first.launched.iter().map(|l| l.zone.as_str()).collect();
    assert_eq!(zones.len(), 2, "one per zone: {first:#?}");
    assert_eq!(launched_count(&again), 0, "{again:#?}");
    assert_eq!(again.pools[0].booting, 2);
    assert_eq!(stage.instances().await.len(), 2);
}

#[tokio::test]
async fn an_idle_agent_is_drained_then_terminated_only_once_empty() {
    let stage = fresh_stage().await;
    stage
        .configure_pool(serde_json::json!({"idle_threshold_secs": 60, "cooldown_secs": 60}))
        .await;
    let config = stage.config().await;
    let id = stage.running_agent().await;
    let agents = stage.agents();

    // Seen idle, then idle past the threshold: drained.
    let seen = stage.scaler(now_ms).run(&config, "run-1").await.unwrap();
    let drained = stage
        .scaler(later_by_2_minutes)
        .run(&config, "run-2")
        .await
        .unwrap();
    assert!(seen.drained.is_empty());
    assert_eq!(drained.drained, vec![id.clone()]);
    assert!(
        drained.terminated.is_empty(),
        "drained first, not terminated"
    );
    assert_eq!(
        agents.get_agent(&id).await.unwrap().unwrap().state,
        AgentState::Draining
    );

    // A placement committed just before the drain: the agent holds a task.
    stage.set_agent_load(&id, 1, 1_000).await;
    let busy = stage
        .scaler(later_by_4_minutes)
        .run(&config, "run-3")
        .await
        .unwrap();
    assert!(busy.terminated.is_empty(), "{busy:#?}");
    assert_eq!(stage.instance_state(&id).await, InstanceStateName::Running);

    // Released in the control plane, but the agent still reports a container running.
    stage.set_agent_load(&id, 0, 0).await;
    agents
        .report_heartbeat(
            &id,
            &AgentHeartbeat {
                at_ms: now_ms(),
                running_task_ids: vec![TaskId::generate()],
                used: Resources::ZERO,
            },
        )
        .await
        .unwrap();
    let reported = stage
        .scaler(later_by_6_minutes)
        .run(&config, "run-4")
        .await
        .unwrap();
    assert!(reported.terminated.is_empty(), "{reported:#?}");

    // Empty by both accounts: terminated and deregistered.
    agents
        .report_heartbeat(
            &id,
            &AgentHeartbeat {
                at_ms: now_ms(),
                running_task_ids: vec![],
                used: Resources::ZERO,
            },
        )
        .await
        .unwrap();
    let empty = stage
        .scaler(later_by_8_minutes)
        .run(&config, "run-5")
        .await
        .unwrap();
    assert_eq!(empty.terminated, vec![id.clone()]);
    assert!(matches!(
        stage.instance_state(&id).await,
        InstanceStateName::ShuttingDown | InstanceStateName::Terminated
    ));
    assert!(agents.get_agent(&id).await.unwrap().is_none());
}

#[tokio::test]
async fn an_agent_with_running_tasks_is_never_drained_nor_terminated() {
    let stage = fresh_stage().await;
    stage
        .configure_pool(serde_json::json!({"idle_threshold_secs": 60, "cooldown_secs": 60}))
        .await;
    let config = stage.config().await;
    let id = stage.running_agent().await;
    stage.set_agent_load(&id, 2, 1_000).await;

    let mut summaries = Vec::new();
    for (clock, owner) in [
        (now_ms as fn() -> u64, "run-1"),
        (later_by_4_minutes, "run-2"),
        (later_by_8_minutes, "run-3"),
    ] {
        summaries.push(stage.scaler(clock).run(&config, owner).await.unwrap());
    }

    for summary in &summaries {
        assert!(summary.drained.is_empty(), "{summary:#?}");
        assert!(summary.terminated.is_empty(), "{summary:#?}");
    }
    assert_eq!(stage.instance_state(&id).await, InstanceStateName::Running);
    assert_eq!(
        stage.agents().get_agent(&id).await.unwrap().unwrap().state,
        AgentState::Active
    );
}

#[tokio::test]
async fn two_scalers_at_once_launch_the_demand_once() {
    let stage = fresh_stage().await;
    stage
        .configure_pool(serde_json::json!({"instance_types": ["m7g.large"], "cooldown_secs": 60}))
        .await;
    let config = stage.config().await;
    stage.submit(3, 2.0).await;
    let (a, b) = (stage.scaler(now_ms), stage.scaler(now_ms));

    let (first, second) = tokio::join!(a.run(&config, "scaler-a"), b.run(&config, "scaler-b"));
    let (first, second) = (first.unwrap(), second.unwrap());
    // And once more each after the cool-down, one after the other: the launches are remembered.
    let third = stage
        .scaler(later_by_2_minutes)
        .run(&config, "scaler-c")
        .await
        .unwrap();

    assert_eq!(
        launched_count(&first) + launched_count(&second),
        3,
        "{first:#?}\n{second:#?}"
    );
    assert_eq!(launched_count(&third), 0, "{third:#?}");
    assert_eq!(stage.instances().await.len(), 3);
}

/// A state store that lets another scaler take the lease right after this one read its state,
/// as if this one had paused past its lease.
struct LeaseStolenAfterLoad {
    inner: DynamoScalerState,
    leases: DynamoLeaseStore,
    ttl_ms: u64,
}

impl ScalerStateStore for LeaseStolenAfterLoad {
    async fn load(&self, lease: &Lease) -> Result<ScalerState, StateError> {
        let state = self.inner.load(lease).await?;
        self.leases
            .acquire_or_renew(LEASE_NAME, "thief", lease.expires_at_ms + 1, self.ttl_ms)
            .await
            .unwrap();
        Ok(state)
    }

    async fn save(&self, lease: &Lease, state: &ScalerState) -> Result<(), StateError> {
        self.inner.save(lease, state).await
    }
}

#[tokio::test]
async fn a_scaler_that_loses_its_lease_mid_run_launches_nothing() {
    let stage = fresh_stage().await;
    stage.configure_pool(serde_json::json!({})).await;
    let config = stage.config().await;
    stage.submit(2, 2.0).await;
    let dynamodb = stage.clients.dynamodb.clone();
    let scaler = Scaler {
        cp: ControlPlane::new(
            aws_ports(&stage.clients, &stage.names).with_scaler_state(LeaseStolenAfterLoad {
                inner: DynamoScalerState::new(dynamodb.clone(), &stage.names),
                leases: DynamoLeaseStore::new(dynamodb, &stage.names),
                ttl_ms: config.settings.lease_ttl_secs * 1000,
            }),
            Settings::default(),
        ),
    };

    let summary = scaler.run(&config, "paused").await.unwrap();

    assert!(!summary.lease_held, "{summary:#?}");
    assert_eq!(launched_count(&summary), 0);
    assert!(stage.instances().await.is_empty());
}

#[tokio::test]
async fn a_scaler_finding_the_lease_held_does_nothing() {
    let stage = fresh_stage().await;
    stage.configure_pool(serde_json::json!({})).await;
    let config = stage.config().await;
    stage.submit(2, 2.0).await;
    DynamoLeaseStore::new(stage.clients.dynamodb.clone(), &stage.names)
        .acquire_or_renew(LEASE_NAME, "other", now_ms(), 60_000)
        .await
        .unwrap();

    let summary = stage.scaler(now_ms).run(&config, "late").await.unwrap();

    assert!(!summary.lease_held);
    assert!(stage.instances().await.is_empty());
}

#[tokio::test]
async fn the_spot_share_of_a_pool_launches_spot_instances() {
    let stage = fresh_stage().await;
    stage
        .configure_pool(serde_json::json!({
            "instance_types": ["m7g.large"],
            "on_demand_base": 1,
            "on_demand_percent_above_base": 0
        }))
        .await;
    stage.submit(3, 2.0).await;

    let summary = stage
        .scaler(now_ms)
        .run(&stage.config().await, "run-1")
        .await
        .unwrap();

    let mut lifecycles: Vec<String> = summary
        .launched
        .iter()
        .map(|l| format!("{:?}", l.lifecycle))
        .collect();
    lifecycles.sort();
    assert_eq!(lifecycles, vec!["OnDemand", "Spot", "Spot"], "{summary:#?}");
    let spot = stage
        .instances()
        .await
        .iter()
        .filter(|i| i.instance_lifecycle().is_some())
        .count();
    assert_eq!(spot, 2);
}

#[tokio::test]
async fn an_unknown_instance_type_fails_naming_the_pool_parameter() {
    let stage = fresh_stage().await;
    stage
        .configure_pool(serde_json::json!({"instance_types": ["m7g.huge9000"]}))
        .await;

    let err = stage
        .scaler(now_ms)
        .run(&stage.config().await, "run-1")
        .await
        .unwrap_err();

    assert_eq!(err.error_type(), "InvalidConfiguration");
    assert!(
        err.to_string()
            .contains(&stage.names.scaler_pool_parameter(DEFAULT_POOL)),
        "{err}"
    );
}
