//! The job descriptor's JSON shape: Titus' field names, and a lossless round trip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use serde_json::{json, Value};
use titus_core::job::{
    AvailabilityPercentageLimit, BatchJobSpec, Capacity, Constraints, Container,
    ContainerResources, Day, DisruptionBudget, Empty, HostMount, HourlyTimeWindow, Image,
    JobGroupInfo, MigrationPolicy, NetworkConfiguration, NetworkMode, Owner, RatePerInterval,
    RetryPolicy, SecurityContext, SecurityProfile, ServiceJobProcesses, ServiceJobSpec, TimeWindow,
};
use titus_core::{
    parse_descriptor, Job, JobDescriptor, JobId, Limits, Task, TaskReason, TaskState,
};

fn full_batch_descriptor() -> JobDescriptor {
    JobDescriptor {
        owner: Owner {
            team_email: "team@example.com".to_owned(),
        },
        application_name: "encoder".to_owned(),
        capacity_group: "flex".to_owned(),
        job_group_info: JobGroupInfo {
            stack: "prod".to_owned(),
            detail: "hd".to_owned(),
            sequence: "v001".to_owned(),
        },
        attributes: BTreeMap::from([("team".to_owned(), "media".to_owned())]),
        container: Container {
            resources: ContainerResources {
                cpu: 2.5,
                gpu: 1,
                memory_mb: 4_096,
                disk_mb: 20_000,
                network_mbps: 256,
                shm_size_mb: 128,
                allocate_ip: true,
                ..ContainerResources::default()
            },
            security_profile: SecurityProfile {
                // Refused by validation: no agent can apply security groups.
                security_groups: vec![],
                iam_role: "arn:aws:iam::123456789012:role/encoder".to_owned(),
                attributes: BTreeMap::new(),
            },
            image: Image {
                name: "registry.example.com/media/encoder".to_owned(),
                tag: Some("v1.2".to_owned()),
                digest: None,
            },
            entry_point: vec!["/bin/encode".to_owned()],
            command: vec!["--fast".to_owned()],
            env: BTreeMap::from([("MODE".to_owned(), "hd".to_owned())]),
            secrets: BTreeMap::new(),
            soft_constraints: Constraints {
                constraints: BTreeMap::from([("zoneBalance".to_owned(), "true".to_owned())]),
                expression: String::new(),
            },
            hard_constraints: Constraints {
                constraints: BTreeMap::from([("machineType".to_owned(), "g4dn".to_owned())]),
                expression: String::new(),
            },
            attributes: BTreeMap::from([(
                "titusParameter.agent.assignIPv6Address".to_owned(),
                "true".to_owned(),
            )]),
            experimental: Default::default(),
            volume_mounts: Default::default(),
            kill_grace_period_sec: 30,
            privileged: false,
            host_network: false,
            host_mounts: vec![HostMount {
                host_path: "/var/cache".to_owned(),
                container_path: "/cache".to_owned(),
                read_only: true,
            }],
            security_context: SecurityContext {
                user: Some("1000:1000".to_owned()),
                read_only_root_filesystem: true,
                add_capabilities: vec!["NET_RAW".to_owned()],
            },
        },
        batch: Some(BatchJobSpec {
            size: 3,
            runtime_limit_sec: 3_600,
            retry_policy: RetryPolicy::ExponentialBackOff {
                initial_delay_ms: 1_000,
                max_delay_interval_ms: 30_000,
                retries: 4,
            },
            retry_on_runtime_limit: true,
        }),
        service: None,
        disruption_budget: Some(Box::new(DisruptionBudget {
            availability_percentage_limit: Some(AvailabilityPercentageLimit {
                percentage_of_healthy_containers: 95.0,
            }),
            rate_per_interval: Some(RatePerInterval {
                interval_ms: 600_000,
                limit_per_interval: 5,
            }),
            time_windows: vec![TimeWindow {
                days: vec![Day::Monday, Day::Friday],
                hourly_time_windows: vec![HourlyTimeWindow {
                    start_hour: 10,
                    end_hour: 16,
                }],
                time_zone: "PST".to_owned(),
            }],
            ..DisruptionBudget::default()
        })),
        network_configuration: Some(NetworkConfiguration {
            network_mode: NetworkMode::Ipv4Only,
        }),
        extra_containers: Default::default(),
        volumes: Default::default(),
        platform_sidecars: Default::default(),
    }
}

#[test]
fn descriptor_serializes_with_titus_field_names() {
    let descriptor = full_batch_descriptor();

    let value = serde_json::to_value(&descriptor).expect("a descriptor serializes");

    assert_eq!(value["owner"]["teamEmail"], "team@example.com");
    assert_eq!(value["applicationName"], "encoder");
    assert_eq!(value["capacityGroup"], "flex");
    assert_eq!(value["jobGroupInfo"]["sequence"], "v001");
    assert_eq!(
        value["container"]["resources"],
        json!({"cpu": 2.5, "gpu": 1, "memoryMB": 4096, "diskMB": 20000, "networkMbps": 256,
               "shmSizeMB": 128, "allocateIP": true})
    );
    assert_eq!(
        value["disruptionBudget"]["timeWindows"][0]["days"],
        json!(["Monday", "Friday"])
    );
    assert_eq!(value["networkConfiguration"]["networkMode"], "Ipv4Only");
    assert_eq!(
        value["container"]["attributes"]["titusParameter.agent.assignIPv6Address"],
        "true"
    );
    assert_eq!(
        value["container"]["securityProfile"]["iamRole"],
        "arn:aws:iam::123456789012:role/encoder"
    );
    assert_eq!(value["container"]["entryPoint"][0], "/bin/encode");
    assert_eq!(value["container"]["killGracePeriodSec"], 30);
    assert_eq!(
        value["container"]["hardConstraints"]["constraints"]["machineType"],
        "g4dn"
    );
    assert_eq!(
        value["container"]["hostMounts"][0]["hostPath"],
        "/var/cache"
    );
    assert_eq!(value["container"]["hostMounts"][0]["readOnly"], true);
    assert_eq!(
        value["container"]["securityContext"],
        json!({"user": "1000:1000", "readOnlyRootFilesystem": true, "addCapabilities": ["NET_RAW"]})
    );
    assert_eq!(value["batch"]["runtimeLimitSec"], 3600);
    assert_eq!(value["batch"]["retryOnRuntimeLimit"], true);
    assert_eq!(
        value["batch"]["retryPolicy"],
        json!({"exponentialBackOff": {"initialDelayMs": 1000, "maxDelayIntervalMs": 30000, "retries": 4}})
    );
    assert!(
        value.get("service").is_none(),
        "an absent section is left out"
    );
    assert!(value["container"]["image"].get("digest").is_none());
}

#[test]
fn descriptor_survives_a_round_trip_through_parse_descriptor() {
    let descriptor = full_batch_descriptor();
    let json = serde_json::to_vec(&descriptor).expect("a descriptor serializes");

    let parsed = parse_descriptor(&json, &Limits::titus_defaults()).expect("valid descriptor");

    assert_eq!(parsed, descriptor);
}

#[test]
fn service_descriptor_survives_a_round_trip() {
    let mut descriptor = full_batch_descriptor();
    descriptor.batch = None;
    descriptor.service = Some(ServiceJobSpec {
        capacity: Capacity {
            min: 1,
            desired: 2,
            max: 4,
        },
        enabled: false,
        retry_policy: RetryPolicy::Delayed {
            initial_delay_ms: 500,
            delay_ms: 5_000,
            retries: u32::MAX,
        },
        migration_policy: Some(MigrationPolicy {
            self_managed: Some(Empty {}),
            system_default: None,
        }),
        service_job_processes: ServiceJobProcesses {
            disable_increase_desired: true,
            disable_decrease_desired: false,
        },
    });
    let json = serde_json::to_vec(&descriptor).expect("a descriptor serializes");

    let parsed = parse_descriptor(&json, &Limits::titus_defaults()).expect("valid descriptor");

    assert_eq!(parsed, descriptor);
    let value: Value = serde_json::from_slice(&json).expect("JSON");
    assert_eq!(
        value["service"]["retryPolicy"],
        json!({"delayed": {"initialDelayMs": 500, "delayMs": 5000, "retries": u32::MAX}})
    );
    assert_eq!(
        value["service"]["capacity"],
        json!({"min": 1, "desired": 2, "max": 4})
    );
}

#[test]
fn immediate_retry_policy_is_a_one_key_object() {
    let policy = RetryPolicy::Immediate { retries: 2 };

    let value = serde_json::to_value(policy).expect("a policy serializes");

    assert_eq!(value, json!({"immediate": {"retries": 2}}));
    assert_eq!(
        serde_json::from_value::<RetryPolicy>(value).expect("a policy deserializes"),
        policy
    );
}

#[test]
fn stored_job_and_task_survive_a_round_trip() {
    let job = Job::new(
        JobId::from_string("6c1f1a4e-5d3b-4a51-9a39-0f5a9f1f2c77"),
        full_batch_descriptor(),
        "alice".to_owned(),
        1_000,
    );
    let mut task = Task::initial(&job, 2, 1_000);
    task.transition(TaskState::Launched, None, "placed", 2_000)
        .expect("forward");
    task.transition(
        TaskState::Finished,
        Some(TaskReason::Lost),
        "agent gone",
        3_000,
    )
    .expect("forward");

    let job_json = serde_json::to_string(&job).expect("a job serializes");
    let task_json = serde_json::to_string(&task).expect("a task serializes");

    assert_eq!(serde_json::from_str::<Job>(&job_json).expect("job"), job);
    assert_eq!(
        serde_json::from_str::<Task>(&task_json).expect("task"),
        task
    );
    let task_value: Value = serde_json::from_str(&task_json).expect("JSON");
    assert_eq!(task_value["status"]["state"], "Finished");
    assert_eq!(task_value["status"]["reasonCode"], "lost");
    assert_eq!(
        task_value["statusHistory"].as_array().map(Vec::len),
        Some(2)
    );
}
