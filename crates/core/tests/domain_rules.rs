//! The small rules of the job model: retry delays, reason codes, replacements, constraints and
//! image references.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use titus_core::job::{
    Constraint, ConstraintError, ConstraintName, Constraints, Image, RetryPolicy,
};
use titus_core::{parse_descriptor, Job, JobId, Limits, Task, TaskReason, TaskState};

#[test]
fn immediate_retries_have_no_delay() {
    let policy = RetryPolicy::Immediate { retries: 3 };

    let delays: Vec<u64> = (0..5).map(|attempt| policy.delay_ms(attempt)).collect();

    assert_eq!(delays, vec![0, 0, 0, 0, 0]);
    assert_eq!(policy.retries(), 3);
}

#[test]
fn delayed_retries_wait_the_initial_delay_first_then_the_fixed_delay() {
    let policy = RetryPolicy::Delayed {
        initial_delay_ms: 100,
        delay_ms: 5_000,
        retries: 2,
    };

    let delays: Vec<u64> = (0..5).map(|attempt| policy.delay_ms(attempt)).collect();

    assert_eq!(delays, vec![100, 100, 5_000, 5_000, 5_000]);
    assert_eq!(policy.retries(), 2);
}

#[test]
fn exponential_back_off_doubles_and_caps_at_the_max_interval() {
    let policy = RetryPolicy::ExponentialBackOff {
        initial_delay_ms: 1_000,
        max_delay_interval_ms: 60_000,
        retries: 10,
    };

    let delays: Vec<u64> = (1..=8).map(|attempt| policy.delay_ms(attempt)).collect();

    assert_eq!(
        delays,
        vec![1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000]
    );
    assert_eq!(
        policy.delay_ms(u32::MAX),
        60_000,
        "no overflow on a huge attempt"
    );
    assert_eq!(policy.retries(), 10);
}

#[test]
fn reason_codes_classify_system_errors_and_retryability() {
    // (reason, is_system_error, is_retryable)
    let table = [
        (TaskReason::Normal, false, false),
        (TaskReason::Failed, false, true),
        (TaskReason::Killed, false, false),
        (TaskReason::ScaledDown, false, false),
        (TaskReason::StuckInState, true, true),
        (TaskReason::StuckInKillingState, true, true),
        (TaskReason::RuntimeLimitExceeded, false, true),
        (TaskReason::Lost, true, true),
        (TaskReason::InvalidRequest, false, false),
        (TaskReason::Crashed, true, true),
        (TaskReason::TransientSystemError, true, true),
        (TaskReason::LocalSystemError, true, true),
        (TaskReason::UnknownSystemError, true, true),
    ];
    assert_eq!(
        table.len(),
        TaskReason::ALL.len(),
        "every reason is in the table"
    );

    for (reason, system_error, retryable) in table {
        assert_eq!(reason.is_system_error(), system_error, "{reason}");
        assert_eq!(reason.is_retryable(), retryable, "{reason}");
        assert_eq!(TaskReason::parse(reason.as_str()), Some(reason));
    }
}

fn job() -> Job {
    let json = br#"{"owner": {"teamEmail": "team@example.com"}, "applicationName": "app",
        "container": {"image": {"name": "alpine"}, "resources": {"cpu": 2}}, "batch": {"size": 3}}"#;
    let descriptor = parse_descriptor(json, &Limits::titus_defaults()).expect("valid descriptor");
    Job::new(JobId::generate(), descriptor, "alice".to_owned(), 0)
}

fn finished(mut task: Task, reason: TaskReason) -> Task {
    task.transition(TaskState::Finished, Some(reason), "over", 10)
        .expect("Finished is later");
    task
}

#[test]
fn a_replacement_links_to_the_task_it_replaces_and_counts_system_resubmits() {
    let job = job();
    let first = finished(Task::initial(&job, 2, 0), TaskReason::Lost);

    let second = first.replacement(20, 30);

    assert_ne!(second.id, first.id);
    assert_eq!(second.resubmit_of.as_ref(), Some(&first.id));
    assert_eq!(second.original_id, first.id);
    assert_eq!(second.job_id, first.job_id);
    assert_eq!(second.index, 2);
    assert_eq!(second.resubmit_number, 1);
    assert_eq!(second.system_resubmit_number, 1);
    assert_eq!(
        second.user_retries_used(),
        0,
        "a lost task costs no user retry"
    );
    assert_eq!(second.state(), TaskState::Accepted);
    assert!(second.status_history.is_empty());
    assert_eq!((second.created_at_ms, second.not_before_ms), (20, 30));
    assert_eq!(second.started_at_ms, None);
    assert_eq!(second.resources, first.resources);
    assert_eq!(second.version, 1);

    let third = finished(second.clone(), TaskReason::Failed).replacement(40, 40);

    assert_eq!(third.resubmit_of.as_ref(), Some(&second.id));
    assert_eq!(
        third.original_id, first.id,
        "the chain keeps its first task"
    );
    assert_eq!(third.resubmit_number, 2);
    assert_eq!(third.system_resubmit_number, 1);
    assert_eq!(
        third.user_retries_used(),
        1,
        "a user failure costs one retry"
    );
}

#[test]
fn replacing_the_same_task_twice_gives_the_same_task_id() {
    let task = finished(Task::initial(&job(), 0, 0), TaskReason::Failed);

    let once = task.replacement(20, 20);
    let twice = task.replacement(25, 25);

    assert_eq!(once.id, twice.id);
}

#[test]
fn initial_tasks_are_one_per_slot_with_the_job_resources() {
    let job = job();

    let tasks = Task::initial_tasks_of(&job);

    assert_eq!(
        tasks.iter().map(|t| t.index).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert!(tasks
        .iter()
        .all(|t| t.resources.cpu == 2.0 && t.original_id == t.id));
    assert_eq!(
        Task::initial_tasks_of(&job),
        tasks,
        "building twice gives the same tasks"
    );
}

/// What parsing one entry should give; `Err(())` when any error will do.
type Parsed = Result<Option<Constraint>, ()>;

#[test]
fn constraint_entries_parse_ignoring_case() {
    let cases: [(&str, &str, Parsed); 11] = [
        ("uniqueHost", "true", Ok(Some(Constraint::UniqueHost))),
        ("UNIQUEHOST", " TRUE ", Ok(Some(Constraint::UniqueHost))),
        ("exclusiveHost", "false", Ok(None)),
        ("zoneBalance", "True", Ok(Some(Constraint::ZoneBalance))),
        ("activehost", "true", Ok(Some(Constraint::ActiveHost))),
        (
            "availabilityZone",
            " us-east-1a ",
            Ok(Some(Constraint::AvailabilityZone("us-east-1a".to_owned()))),
        ),
        (
            "machineId",
            "i-1",
            Ok(Some(Constraint::MachineId("i-1".to_owned()))),
        ),
        (
            "machineGroup",
            "g",
            Ok(Some(Constraint::MachineGroup("g".to_owned()))),
        ),
        (
            "machineType",
            "m5",
            Ok(Some(Constraint::MachineType("m5".to_owned()))),
        ),
        (" uniqueHost ", "true", Ok(Some(Constraint::UniqueHost))),
        ("uniqueHosts", "true", Err(())),
    ];
    for (name, value, expected) in cases {
        let parsed = Constraint::parse_entry(name, value).map_err(|_| ());

        assert_eq!(parsed, expected, "{name:?}={value:?}");
    }
}

#[test]
fn constraint_entry_errors_say_what_was_expected() {
    let unknown = Constraint::parse_entry("fooBar", "true").expect_err("unknown");
    let not_boolean = Constraint::parse_entry("uniqueHost", "yes").expect_err("not boolean");
    let empty = Constraint::parse_entry("machineType", "  ").expect_err("empty");

    assert!(matches!(unknown, ConstraintError::UnknownName { .. }));
    assert_eq!(
        unknown.to_string(),
        "unknown constraint \"fooBar\", expected one of uniqueHost, exclusiveHost, zoneBalance, \
         activeHost, availabilityZone, machineId, machineGroup, machineType"
    );
    assert_eq!(
        not_boolean,
        ConstraintError::NotBoolean {
            name: ConstraintName::UniqueHost,
            value: "yes".to_owned()
        }
    );
    assert_eq!(
        empty,
        ConstraintError::EmptyValue {
            name: ConstraintName::MachineType
        }
    );
}

#[test]
fn parsed_constraints_skip_unknown_and_switched_off_entries() {
    let constraints = Constraints {
        constraints: [
            ("uniqueHost", "false"),
            ("fooBar", "true"),
            ("machineType", "m5"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        expression: String::new(),
    };

    assert_eq!(
        constraints.parsed(),
        vec![Constraint::MachineType("m5".to_owned())]
    );
}

#[test]
fn image_reference_prefers_the_digest_then_the_tag_then_latest() {
    let digest = format!("sha256:{}", "a".repeat(64));
    let image = |tag: Option<&str>, digest: Option<&str>| Image {
        name: "registry.example.com/app".to_owned(),
        tag: tag.map(str::to_owned),
        digest: digest.map(str::to_owned),
    };

    assert_eq!(
        image(None, None).reference(),
        "registry.example.com/app:latest"
    );
    assert_eq!(
        image(Some("v1"), None).reference(),
        "registry.example.com/app:v1"
    );
    assert_eq!(
        image(None, Some(&digest)).reference(),
        format!("registry.example.com/app@{digest}")
    );
    assert_eq!(
        image(Some("v1"), Some(&digest)).reference(),
        format!("registry.example.com/app@{digest}")
    );
}
