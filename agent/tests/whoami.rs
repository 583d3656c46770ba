//! `titus-whoami` in its image: with the emulator's credentials it prints the caller's ARN, and
//! without network or credentials it reports the error and exits 2.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bollard::models::{ContainerCreateBody, HostConfig};

fn whoami_container(image: &str, network: &str, env: Vec<String>) -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some(image.to_owned()),
        cmd: Some(vec!["/bin/titus-whoami".to_owned()]),
        env: Some(env),
        host_config: Some(HostConfig {
            network_mode: Some(network.to_owned()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn whoami_prints_the_callers_arn_with_the_emulators_credentials() {
    let runtime = support::docker().await;
    let image = support::whoami_image(&runtime).await;
    let endpoint = titus_aws::clients::local_emulator_endpoint();
    let env = vec![
        format!("AWS_ENDPOINT_URL={endpoint}"),
        "AWS_ACCESS_KEY_ID=test".to_owned(),
        "AWS_SECRET_ACCESS_KEY=test".to_owned(),
        "AWS_REGION=us-east-1".to_owned(),
    ];
    let run = support::run_container(
        &runtime,
        &support::agent_id("whoami-arn"),
        whoami_container(&image, "host", env),
    )
    .await;
    assert!(
        run.stdout.starts_with("arn="),
        "expected arn=…, got {run:?}"
    );
    assert_eq!(run.stdout.lines().count(), 1, "one line: {run:?}");
    assert_eq!(run.exit_code, 0, "{run:?}");
}

#[tokio::test]
async fn whoami_reports_an_error_and_exits_2_without_network_or_credentials() {
    let runtime = support::docker().await;
    let image = support::whoami_image(&runtime).await;
    let run = support::run_container(
        &runtime,
        &support::agent_id("whoami-err"),
        whoami_container(&image, "none", vec!["AWS_REGION=us-east-1".to_owned()]),
    )
    .await;
    assert!(
        run.stdout.starts_with("error="),
        "expected error=…, got {run:?}"
    );
    assert_eq!(run.stdout.lines().count(), 1, "one line: {run:?}");
    assert_eq!(run.exit_code, 2, "{run:?}");
}
