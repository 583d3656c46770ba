//! Job descriptors in the shapes Titus' own code and clients produce (under `tests/data/titus/`,
//! written here after those shapes): each is accepted, keeps what it says, and survives a round
//! trip; Titus' negative cases get an answer that says what was wrong.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Value};
use titus_core::job::{NetworkMode, RetryPolicy};
use titus_core::{parse_descriptor, FieldError, JobDescriptor, Limits, ParseError};

const FIXTURES: [&str; 6] = [
    "cli-template",
    "testkit-batch",
    "testkit-service",
    "spinnaker-server-group",
    "spinnaker-run-job",
    "get-response-descriptor",
];

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/data/titus/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture exists"))
        .expect("fixture is JSON")
}

fn parse(value: &Value) -> Result<JobDescriptor, ParseError> {
    parse_descriptor(value.to_string().as_bytes(), &Limits::titus_defaults())
}

fn problems(value: &Value) -> Vec<FieldError> {
    match parse(value) {
        Err(error) => error.field_errors(),
        Ok(descriptor) => panic!("expected a refusal, got {descriptor:?}"),
    }
}

#[test]
fn every_titus_shaped_descriptor_is_accepted_and_survives_a_round_trip() {
    for name in FIXTURES {
        let descriptor = parse(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));

        let printed = serde_json::to_vec(&descriptor).unwrap();
        let again = parse_descriptor(&printed, &Limits::titus_defaults())
            .unwrap_or_else(|e| panic!("{name} as printed: {e}"));
        assert_eq!(again, descriptor, "{name}");
    }
}

#[test]
fn numbers_printed_as_strings_and_omitted_zeros_read_as_titus_means_them() {
    let template = parse(&fixture("cli-template")).unwrap();
    let batch = template.batch.as_ref().unwrap();
    assert_eq!((batch.size, batch.runtime_limit_sec), (2, 120));
    assert_eq!(
        batch.retry_policy,
        RetryPolicy::ExponentialBackOff {
            initial_delay_ms: 1_000,
            max_delay_interval_ms: 60_000,
            retries: 2
        }
    );
    assert_eq!(template.container.resources.cpu, 1.0);
    assert_eq!(
        template.container.resources.shm_size_mb, 64,
        "Titus' default"
    );

    let run_job = parse(&fixture("spinnaker-run-job")).unwrap();
    assert_eq!(
        run_job.batch.unwrap().retry_policy,
        RetryPolicy::Immediate { retries: 0 },
        "`immediate: {{}}` retries nothing"
    );
    assert_eq!(
        run_job.container.image.digest, None,
        "`digest: \"\"` is no digest"
    );
    assert!(run_job.container.resources.allocate_ip);

    let server_group = parse(&fixture("spinnaker-server-group")).unwrap();
    let service = server_group.service.as_ref().unwrap();
    assert_eq!(
        service.retry_policy,
        RetryPolicy::ExponentialBackOff {
            initial_delay_ms: 5_000,
            max_delay_interval_ms: 300_000,
            retries: 0
        },
        "an exponentialBackOff without retries"
    );
    assert!(service.migration_policy.unwrap().system_default.is_some());
    let budget = server_group.disruption_budget.as_ref().unwrap();
    assert_eq!(
        budget
            .availability_percentage_limit
            .unwrap()
            .percentage_of_healthy_containers,
        95.0
    );
    assert_eq!(
        budget.rate_percentage_per_interval.unwrap().interval_ms,
        600_000
    );
    assert_eq!(budget.time_windows[0].days.len(), 5);
    assert_eq!(
        server_group.network_configuration.unwrap().network_mode,
        NetworkMode::Ipv6AndIpv4
    );
    assert_eq!(
        server_group.container.attributes["titusParameter.agent.assignIPv6Address"],
        "false"
    );

    let testkit = parse(&fixture("testkit-batch")).unwrap();
    assert_eq!(testkit.container.resources.shm_size_mb, 256);
    assert_eq!(
        testkit.batch.unwrap().retry_policy,
        RetryPolicy::Delayed {
            initial_delay_ms: 0,
            delay_ms: 100,
            retries: 5
        }
    );
}

#[test]
fn enums_come_by_name_or_by_number_and_null_is_the_default() {
    let mut by_number = fixture("spinnaker-server-group");
    by_number["networkConfiguration"]["networkMode"] = json!(1);
    by_number["disruptionBudget"]["timeWindows"][0]["days"] = json!([0, "Sunday"]);
    by_number["container"]["env"] = Value::Null;
    by_number["jobGroupInfo"]["detail"] = Value::Null;

    let descriptor = parse(&by_number).unwrap();

    assert_eq!(
        descriptor.network_configuration.unwrap().network_mode,
        NetworkMode::Ipv4Only
    );
    assert_eq!(
        descriptor.disruption_budget.unwrap().time_windows[0].days,
        vec![titus_core::job::Day::Monday, titus_core::job::Day::Sunday]
    );
    assert!(descriptor.container.env.is_empty());
    assert_eq!(descriptor.job_group_info.detail, "");

    let mut unknown = fixture("spinnaker-server-group");
    unknown["networkConfiguration"]["networkMode"] = json!("Ipv5");
    let errors = problems(&unknown);
    assert_eq!(errors[0].field, "networkConfiguration.networkMode");
    assert!(errors[0].message.contains("Ipv4Only"), "{errors:?}");
}

#[test]
fn every_unknown_and_unreadable_field_is_reported_at_once_with_what_validation_finds() {
    let mut descriptor = fixture("testkit-batch");
    descriptor["container"]["resources"]["cpuBurst"] = json!(true);
    descriptor["container"]["hostName"] = json!("h");
    descriptor["jobGroup"] = json!("x");
    descriptor["batch"]["runtimeLimitSec"] = json!("sixty");
    descriptor["applicationName"] = json!("");

    let errors = problems(&descriptor);

    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    for expected in [
        "container.resources",
        "container",
        "(root)",
        "batch.runtimeLimitSec",
        "applicationName",
    ] {
        assert!(fields.contains(&expected), "{expected} in {errors:#?}");
    }
    assert!(
        errors.iter().any(|e| e
            .message
            .starts_with("unknown field \"cpuBurst\", expected one of")),
        "{errors:#?}"
    );
    assert_eq!(errors.len(), 5, "{errors:#?}");
}

#[test]
fn titus_refusals_are_titus_refusals() {
    let mut four_seconds = fixture("spinnaker-run-job");
    four_seconds["batch"]["runtimeLimitSec"] = json!("4");
    let mut no_size = fixture("spinnaker-run-job");
    no_size["batch"].as_object_mut().unwrap().remove("size");

    assert_eq!(
        problems(&four_seconds),
        vec![FieldError::new(
            "batch.runtimeLimitSec",
            "must be between 5 and 864000, got 4"
        )]
    );
    assert_eq!(
        problems(&no_size),
        vec![FieldError::new(
            "batch.size",
            "must be between 1 and 1000, got 0"
        )]
    );
}

#[test]
fn fields_the_platform_cannot_honour_are_refused_saying_why() {
    let mut asks = fixture("spinnaker-server-group");
    asks["container"]["resources"]["efsMounts"] =
        json!([{"efsId": "fs-1", "mountPoint": "/data", "mountPerm": "RW"}]);
    asks["container"]["resources"]["pool"] = json!("static-pool");
    asks["container"]["softConstraints"]["expression"] = json!("zone == 'a'");
    asks["container"]["securityProfile"]["securityGroups"] = json!(["sg-0123abcd"]);
    asks["extraContainers"] = json!([{"name": "sidecar", "image": {"name": "envoy"}}]);
    asks["platformSidecars"] = json!([{"name": "logging", "channel": "stable"}]);
    asks["networkConfiguration"]["networkMode"] = json!("Ipv6Only");
    asks["container"]["resources"]["shmSizeMB"] = json!(2048);

    let errors = problems(&asks);

    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        vec![
            "container.securityProfile.securityGroups",
            "extraContainers",
            "platformSidecars",
            "container.resources.efsMounts",
            "container.resources.pool",
            "container.resources.shmSizeMB",
            "container.softConstraints.expression",
            "networkConfiguration.networkMode",
        ],
        "{errors:#?}"
    );
    assert!(
        errors.iter().all(|e| e.message.contains("expected")),
        "{errors:#?}"
    );
}

#[test]
fn empty_forms_of_refused_fields_are_fine() {
    let mut empty = fixture("spinnaker-run-job");
    empty["container"]["resources"]["efsMounts"] = json!([]);
    empty["container"]["resources"]["pool"] = json!("");
    empty["container"]["experimental"] = Value::Null;
    empty["container"]["volumeMounts"] = json!([]);
    empty["volumes"] = json!(null);

    assert!(parse(&empty).is_ok());
}

#[test]
fn a_disruption_budget_sets_at_most_one_policy_and_one_rate() {
    let mut two = fixture("testkit-service");
    two["disruptionBudget"]["relocationLimit"] = json!({"limit": 2});
    two["disruptionBudget"]["ratePerInterval"] =
        json!({"intervalMs": "1000", "limitPerInterval": 1});
    two["disruptionBudget"]["availabilityPercentageLimit"] =
        json!({"percentageOfHealthyContainers": 120});

    let errors = problems(&two);

    assert_eq!(
        errors,
        vec![
            FieldError::new(
                "disruptionBudget",
                "sets 3 members of the policy oneof (selfManaged, \
                 availabilityPercentageLimit, relocationLimit); expected at most one"
            ),
            FieldError::new(
                "disruptionBudget",
                "sets 2 members of the rate oneof (rateUnlimited, ratePerInterval); expected \
                 at most one"
            ),
            FieldError::new(
                "disruptionBudget.availabilityPercentageLimit.percentageOfHealthyContainers",
                "must be a percentage, 0 to 100, got 120"
            ),
        ]
    );
}

#[test]
fn a_message_given_as_a_list_or_a_list_given_as_an_object_is_refused() {
    // Found by schemathesis: serde reads a struct from a list of its fields' values.
    for (field, value) in [
        ("jobGroupInfo", json!([null, null])),
        ("owner", json!(["team@example.com"])),
        ("volumes", json!({})),
        ("disruptionBudget", json!([])),
    ] {
        let mut descriptor = fixture("spinnaker-run-job");
        descriptor[field] = value.clone();

        let errors = problems(&descriptor);

        // First the field that could not be read; then what validation finds without it.
        assert_eq!(errors[0].field, field, "{errors:#?}");
        assert!(errors[0].message.contains("expected a JSON"), "{errors:#?}");
    }
}
