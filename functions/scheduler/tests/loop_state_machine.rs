//! The real scheduler-loop ASL, executed by the emulator's Step Functions. moto's Lambda runs
//! without Docker here and answers each invocation with a queued result, so the tests script the
//! ticks' summaries and assert the path the loop takes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{FunctionCode, Runtime};
use aws_sdk_sfn::types::{ExecutionStatus, HistoryEventType, StateMachineType};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEFINITION: &str = include_str!("../../../statemachines/scheduler-loop.asl.json");

fn endpoint() -> String {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    assert!(
        endpoint.starts_with("http://127.0.0.1"),
        "run through scripts/test.sh (AWS_ENDPOINT_URL={endpoint:?})"
    );
    endpoint
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

struct Loop {
    sfn: aws_sdk_sfn::Client,
    state_machine_arn: String,
}

async fn deploy_loop() -> Loop {
    let config = titus_aws::clients::load_sdk_config().await;
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
    let function = lambda
        .create_function()
        .function_name(format!("titus-scheduler-{suffix}"))
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
    Loop {
        sfn,
        state_machine_arn: machine.state_machine_arn().to_owned(),
    }
}

/// A zip archive with no entries: moto stores the code but does not run it.
fn empty_zip() -> Vec<u8> {
    let mut zip = vec![0x50, 0x4b, 0x05, 0x06];
    zip.extend([0u8; 18]);
    zip
}

impl Loop {
    /// Runs the loop with these tick results queued; returns the states it entered, in order.
    async fn run(&self, ticks: &[String]) -> (Vec<String>, Value) {
        moto_api(
            "/moto-api/static/lambda-simple/response",
            &json!({"results": ticks, "region": "us-east-1"}),
        )
        .await;
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
        for _ in 0..100 {
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
        let described = described.expect("the loop ended within 10 s");
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
        let entered = history
            .events()
            .iter()
            .filter(|e| {
                matches!(
                    e.r#type(),
                    HistoryEventType::PassStateEntered
                        | HistoryEventType::TaskStateEntered
                        | HistoryEventType::ChoiceStateEntered
                        | HistoryEventType::WaitStateEntered
                        | HistoryEventType::SucceedStateEntered
                )
            })
            .filter_map(|e| e.state_entered_event_details().map(|d| d.name().to_owned()))
            .collect();
        let output = serde_json::from_str(described.output().unwrap_or("null")).unwrap();
        (entered, output)
    }
}

// One test, because moto's queue of Lambda results is shared by every function in the region.
#[tokio::test]
async fn the_loop_ticks_while_it_places_waits_when_idle_and_stops_on_lease_loss_or_budget() {
    let machine = deploy_loop().await;

    let (path, output) = machine
        .run(&[
            summary(3, true, true),
            summary(0, true, true),
            summary(0, true, false),
        ])
        .await;
    assert_eq!(
        path,
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
    assert_eq!(output["continueLoop"], false);

    let (path, _) = machine
        .run(&[summary(2, true, true), summary(0, false, false)])
        .await;
    assert_eq!(
        path,
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
    // moto's Lambda without Docker cannot fail an invocation, so the retry path is checked on
    // the definition itself rather than executed.
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
    let store_unavailable = titus_scheduler::SchedulerError::StoreUnavailable(String::new());
    assert!(
        retried.contains(&store_unavailable.error_type()),
        "the Lambda's transient error_type is retried"
    );
    assert!(tick["Retry"][0]["MaxAttempts"].as_u64().unwrap() >= 2);
    assert_eq!(tick["Catch"][0]["ErrorEquals"][0], "States.ALL");
    let target = tick["Catch"][0]["Next"].as_str().unwrap();
    assert_eq!(definition["States"][target]["Type"], "Succeed");
}
