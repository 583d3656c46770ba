//! The real scheduler-loop ASL, executed by the emulator's Step Functions. moto's Lambda runs
//! without Docker here and answers each invocation with a queued result, so the tests script the
//! ticks' summaries and assert the path the loop takes. A queued result can also be a function
//! error (localstack/moto_server.py's failure injection), so the loop's Retry and Catch run too.
//!
//! moto keeps one queue of results per region, shared by every function there: each test deploys
//! its loop in a region of its own, so the tests can run at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{FunctionCode, Runtime};
use aws_sdk_sfn::config::Region;
use aws_sdk_sfn::types::{ExecutionStatus, HistoryEvent, HistoryEventType, StateMachineType};
use serde_json::{json, Value};
use titus_app::lambda::Failed;
use titus_control::ControlError;
use titus_core::StoreError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEFINITION: &str = include_str!("../../../statemachines/scheduler-loop.asl.json");

fn endpoint() -> String {
    titus_aws::clients::local_emulator_endpoint()
}

/// POSTs JSON to moto's control API (no HTTP client crate needed for these few calls).
async fn moto_api(path: &str, body: &Value) {
    post(path, "application/json", "", &body.to_string()).await;
}

async fn post(path: &str, content_type: &str, extra_headers: &str, body: &str) {
    let address = endpoint().trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: {content_type}\r\n{extra_headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(
        response.starts_with("HTTP/1.1 2") || response.starts_with("HTTP/1.0 2"),
        "{path}: {response}"
    );
}

fn summary(placed: u32, lease_held: bool, continue_loop: bool) -> String {
    json!({
        "owner": "loop", "startedAtMs": 1, "iteration": 1, "placed": placed, "unplaced": 0,
        "pendingLeft": 0, "leaseHeld": lease_held, "epoch": 1, "redispatched": 0, "conflicts": 0,
        "dispatchFailures": 0, "continueLoop": continue_loop
    })
    .to_string()
}

/// A tick that fails the way the scheduler Lambda does: the runtime's error payload for this
/// error, wrapped in the emulator's failure-injection marker.
fn failure(error: ControlError) -> String {
    let payload = serde_json::to_value(lambda_runtime::Diagnostic::from(Failed(error))).unwrap();
    json!({"__titusFunctionError": "Unhandled", "payload": payload}).to_string()
}

struct Loop {
    lambda: aws_sdk_lambda::Client,
    sfn: aws_sdk_sfn::Client,
    region: &'static str,
    function_name: String,
    state_machine_arn: String,
}

/// What one execution of the loop did.
#[derive(Debug)]
struct Run {
    /// The states it entered, in order.
    path: Vec<String>,
    /// Each invocation's outcome in order: `Ok(())`, or `Err(error name)` for a function error.
    invocations: Vec<Result<(), String>>,
    output: Value,
}

async fn deploy_loop(region: &'static str) -> Loop {
    let config = titus_aws::clients::load_sdk_config()
        .await
        .into_builder()
        .region(Region::new(region))
        .build();
    let lambda = aws_sdk_lambda::Client::new(&config);
    let sfn = aws_sdk_sfn::Client::new(&config);
    // Step Functions must execute for real; the emulator script switches it on at start.
    moto_api(
        "/moto-api/config",
        &json!({"stepfunctions": {"execute_state_machine": true}, "lambda": {"use_docker": false}}),
    )
    .await;
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..12];
    // moto's Lambda wants a role that exists; IAM is reached with a plain Query call.
    let role_name = format!("titus-scheduler-loop-{suffix}");
    post(
        "/",
        "application/x-www-form-urlencoded",
        "Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0\r\n",
        &format!("Action=CreateRole&Version=2010-05-08&RoleName={role_name}&AssumeRolePolicyDocument=%7B%7D"),
    )
    .await;
    let role = format!("arn:aws:iam::123456789012:role/{role_name}");
    let function_name = format!("titus-scheduler-{suffix}");
    let function = lambda
        .create_function()
        .function_name(&function_name)
        .runtime(Runtime::Providedal2023)
        .role(&role)
        .handler("bootstrap")
        .code(
            FunctionCode::builder()
                .zip_file(Blob::new(empty_zip()))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let definition =
        DEFINITION.replace("${SchedulerFunctionArn}", function.function_arn().unwrap());
    let machine = sfn
        .create_state_machine()
        .name(format!("titus-scheduler-loop-{suffix}"))
        .definition(definition)
        .role_arn(&role)
        .r#type(StateMachineType::Express)
        .send()
        .await
        .unwrap();
    let deployed = Loop {
        lambda,
        sfn,
        region,
        function_name,
        state_machine_arn: machine.state_machine_arn().to_owned(),
    };
    deployed.drain_results().await;
    deployed
}

/// A zip archive with no entries: moto stores the code but does not run it.
fn empty_zip() -> Vec<u8> {
    let mut zip = vec![0x50, 0x4b, 0x05, 0x06];
    zip.extend([0u8; 18]);
    zip
}

impl Loop {
    async fn queue_results(&self, results: &[String]) {
        moto_api(
            "/moto-api/static/lambda-simple/response",
            &json!({"results": results, "region": self.region}),
        )
        .await;
    }

    /// Empties the region's queue of results a failed earlier run may have left: with none
    /// queued, moto's Lambda echoes the invocation's payload.
    async fn drain_results(&self) {
        let marker = format!("{{\"drain\":\"{}\"}}", uuid::Uuid::new_v4());
        for _ in 0..1000 {
            let invoked = self
                .lambda
                .invoke()
                .function_name(&self.function_name)
                .payload(Blob::new(marker.as_bytes()))
                .send()
                .await
                .unwrap();
            if invoked.payload().map(Blob::as_ref) == Some(marker.as_bytes()) {
                return;
            }
        }
        panic!("more than 1000 results were left queued in {}", self.region);
    }

    /// Fails at once, with the fix, when the emulator is bare moto rather than the launcher
    /// (it would hand the marker to the loop as a tick's summary).
    async fn require_failure_injection(&self) {
        self.queue_results(&[failure(ControlError::Store(StoreError::Unavailable(
            "probe".to_owned(),
        )))])
        .await;
        let invoked = self
            .lambda
            .invoke()
            .function_name(&self.function_name)
            .send()
            .await
            .unwrap();
        assert_eq!(
            invoked.function_error(),
            Some("Unhandled"),
            "the emulator at {} cannot fail a Lambda invocation: it was started without \
             localstack/moto_server.py; restart it with localstack/emulator.sh stop && \
             localstack/emulator.sh start",
            endpoint()
        );
    }

    /// Runs the loop with these tick results queued, to its end.
    async fn run(&self, ticks: &[String]) -> Run {
        self.queue_results(ticks).await;
        let execution = self
            .sfn
            .start_execution()
            .state_machine_arn(&self.state_machine_arn)
            .name(format!("run-{}", uuid::Uuid::new_v4().simple()))
            .input("{}")
            .send()
            .await
            .unwrap();
        let arn = execution.execution_arn().to_owned();
        let mut described = None;
        // Bounded, and generous: a retried tick waits out its backoff (1 s, then 2 s).
        for _ in 0..600 {
            let d = self
                .sfn
                .describe_execution()
                .execution_arn(&arn)
                .send()
                .await
                .unwrap();
            if d.status() != &ExecutionStatus::Running {
                described = Some(d);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let described = described.expect("the loop ended within 60 s");
        assert_eq!(
            described.status(),
            &ExecutionStatus::Succeeded,
            "{described:?}"
        );
        let history = self
            .sfn
            .get_execution_history()
            .execution_arn(&arn)
            .send()
            .await
            .unwrap();
        Run {
            path: history.events().iter().filter_map(entered_state).collect(),
            invocations: history.events().iter().filter_map(invocation).collect(),
            output: serde_json::from_str(described.output().unwrap_or("null")).unwrap(),
        }
    }
}

fn entered_state(event: &HistoryEvent) -> Option<String> {
    matches!(
        event.r#type(),
        HistoryEventType::PassStateEntered
            | HistoryEventType::TaskStateEntered
            | HistoryEventType::ChoiceStateEntered
            | HistoryEventType::WaitStateEntered
            | HistoryEventType::SucceedStateEntered
    )
    .then(|| event.state_entered_event_details())
    .flatten()
    .map(|d| d.name().to_owned())
}

fn invocation(event: &HistoryEvent) -> Option<Result<(), String>> {
    match event.r#type() {
        HistoryEventType::LambdaFunctionSucceeded => Some(Ok(())),
        HistoryEventType::LambdaFunctionFailed => Some(Err(event
            .lambda_function_failed_event_details()
            .and_then(|d| d.error())
            .unwrap_or_default()
            .to_owned())),
        _ => None,
    }
}

// One test, because moto's queue of Lambda results is shared by every function in the region.
#[tokio::test]
async fn the_loop_ticks_while_it_places_waits_when_idle_and_stops_on_lease_loss_or_budget() {
    let machine = deploy_loop("us-east-1").await;

    let run = machine
        .run(&[
            summary(3, true, true),
            summary(0, true, true),
            summary(0, true, false),
        ])
        .await;
    assert_eq!(
        run.path,
        [
            "Start",
            "Tick",
            "LeaseHeld",
            "TimeLeft",
            "PlacedWork", // placed work: at once
            "Tick",
            "LeaseHeld",
            "TimeLeft",
            "PlacedWork",
            "Idle", // idle: wait, then again
            "Tick",
            "LeaseHeld",
            "TimeLeft",
            "BudgetUsed",
        ]
    );
    assert_eq!(run.output["continueLoop"], false);

    let run = machine
        .run(&[summary(2, true, true), summary(0, false, false)])
        .await;
    assert_eq!(
        run.path,
        [
            "Start",
            "Tick",
            "LeaseHeld",
            "TimeLeft",
            "PlacedWork",
            "Tick",
            "LeaseHeld",
            "LeaseLost"
        ]
    );
}

#[tokio::test]
async fn a_tick_that_fails_with_store_unavailable_is_retried_and_the_loop_goes_on() {
    let machine = deploy_loop("us-west-2").await;
    machine.require_failure_injection().await;

    let run = machine
        .run(&[
            failure(ControlError::Store(StoreError::Unavailable(
                "ProvisionedThroughputExceededException on the tasks table".to_owned(),
            ))),
            summary(2, true, true),
            summary(0, true, false),
        ])
        .await;

    assert_eq!(
        run.invocations,
        [Err("StoreUnavailable".to_owned()), Ok(()), Ok(())],
        "the failed tick is invoked again, then the loop goes on"
    );
    assert_eq!(
        run.path,
        [
            "Start",
            "Tick", // failed, retried within the state
            "LeaseHeld",
            "TimeLeft",
            "PlacedWork",
            "Tick",
            "LeaseHeld",
            "TimeLeft",
            "BudgetUsed",
        ]
    );
    assert_eq!(run.output["continueLoop"], false);
    assert!(run.output.get("error").is_none(), "{}", run.output);
}

#[tokio::test]
async fn a_tick_error_that_is_not_retried_ends_the_run_through_the_catch_with_the_error() {
    let machine = deploy_loop("eu-west-1").await;
    machine.require_failure_injection().await;
    let error = ControlError::Store(StoreError::Internal(
        "task t-1 has an unreadable state".to_owned(),
    ));
    let error_type = error.error_type();

    let run = machine.run(&[summary(1, true, true), failure(error)]).await;

    assert_eq!(
        run.invocations,
        [Ok(()), Err(error_type.to_owned())],
        "invoked once more, not retried"
    );
    assert_eq!(
        run.path,
        [
            "Start",
            "Tick",
            "LeaseHeld",
            "TimeLeft",
            "PlacedWork",
            "Tick",
            "TickFailed"
        ]
    );
    assert_eq!(run.output["error"]["Error"], error_type);
    let cause: Value =
        serde_json::from_str(run.output["error"]["Cause"].as_str().unwrap()).unwrap();
    assert_eq!(
        cause["errorMessage"],
        "store error: task t-1 has an unreadable state"
    );
    assert_eq!(
        run.output["placed"], 1,
        "the last good tick's summary is kept beside the error"
    );
}

#[test]
fn the_first_tick_gets_the_execution_name_as_lease_owner() {
    let definition: Value = serde_json::from_str(DEFINITION).unwrap();
    let start = &definition["States"]["Start"];
    assert_eq!(start["Parameters"]["owner.$"], "$$.Execution.Name");
    assert_eq!(definition["StartAt"], "Start");
    assert!(
        definition["TimeoutSeconds"].as_u64().unwrap() < 300,
        "ends before Express's 5 minutes"
    );
}

#[test]
fn lambda_service_errors_are_retried_and_anything_else_ends_the_run_cleanly() {
    // The executed tests above cover one retried and one caught error; this covers every name.
    let definition: Value = serde_json::from_str(DEFINITION).unwrap();
    let tick = &definition["States"]["Tick"];
    let retried: Vec<&str> = tick["Retry"][0]["ErrorEquals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for error in [
        "Lambda.ServiceException",
        "Lambda.TooManyRequestsException",
        "Lambda.SdkClientException",
    ] {
        assert!(retried.contains(&error), "{error} is not retried");
    }
    let store_unavailable = ControlError::Store(StoreError::Unavailable(String::new()));
    assert!(
        retried.contains(&store_unavailable.error_type()),
        "the Lambda's transient error_type is retried"
    );
    assert!(tick["Retry"][0]["MaxAttempts"].as_u64().unwrap() >= 2);
    assert_eq!(tick["Catch"][0]["ErrorEquals"][0], "States.ALL");
    let target = tick["Catch"][0]["Next"].as_str().unwrap();
    assert_eq!(definition["States"][target]["Type"], "Succeed");
}
