//! Runtime configuration from SSM against the emulator: everything under a path in pages, a
//! brief cache, and errors that name the parameter.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use aws_sdk_ssm::types::ParameterType;
use support::fresh_stage;
use titus_aws::ssm::{read_parameters_by_path, ConfigError, ParameterCache, Validate};

#[derive(Debug, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Tunables {
    lease_ttl_ms: u64,
}

impl Validate for Tunables {
    const EXPECTED: &'static str = "a JSON object with lease_ttl_ms >= 1000";
    fn validate(&self) -> Result<(), String> {
        if self.lease_ttl_ms < 1000 {
            return Err(format!("lease_ttl_ms is {}", self.lease_ttl_ms));
        }
        Ok(())
    }
}

async fn put(ssm: &aws_sdk_ssm::Client, name: &str, value: &str) {
    ssm.put_parameter()
        .name(name)
        .value(value)
        .r#type(ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn every_parameter_under_a_path_is_read_across_pages() {
    let (clients, names) = fresh_stage().await;
    let path = format!("{}/test", names.parameter_path());
    for i in 0..23 {
        put(
            &clients.ssm,
            &format!("{path}/nested/p{i:02}"),
            &format!("v{i}"),
        )
        .await;
    }

    let values = read_parameters_by_path(&clients.ssm, &path).await.unwrap();
    let stage_wide = read_parameters_by_path(&clients.ssm, &names.parameter_path())
        .await
        .unwrap();

    assert_eq!(values.len(), 23, "more than two pages of ten");
    assert_eq!(values[&format!("{path}/nested/p22")], "v22");
    assert!(
        stage_wide.contains_key(&names.scaler_config_parameter()),
        "provisioning created the scaler's parameters"
    );
    assert!(stage_wide.contains_key(&names.scheduler_config_parameter()));
}

#[tokio::test]
async fn the_cache_serves_its_copy_until_it_is_older_than_its_age() {
    let (clients, names) = fresh_stage().await;
    let name = format!("{}/test/tunables", names.parameter_path());
    put(&clients.ssm, &name, r#"{"lease_ttl_ms": 15000}"#).await;
    let cache = ParameterCache::new(
        clients.ssm.clone(),
        vec![format!("{}/test", names.parameter_path())],
        Duration::from_millis(500),
    );

    let first: Tunables = cache.get().await.unwrap().typed(&name).unwrap();
    put(&clients.ssm, &name, r#"{"lease_ttl_ms": 20000}"#).await;
    let cached: Tunables = cache.get().await.unwrap().typed(&name).unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let refreshed: Tunables = cache.get().await.unwrap().typed(&name).unwrap();

    assert_eq!(first.lease_ttl_ms, 15_000);
    assert_eq!(cached.lease_ttl_ms, 15_000, "within the cache's age");
    assert_eq!(refreshed.lease_ttl_ms, 20_000);
}

#[tokio::test]
async fn an_invalid_value_fails_naming_the_parameter() {
    let (clients, names) = fresh_stage().await;
    let name = format!("{}/test/tunables", names.parameter_path());
    put(&clients.ssm, &name, r#"{"lease_ttl_ms": 10}"#).await;
    let cache = ParameterCache::new(
        clients.ssm.clone(),
        vec![names.parameter_path()],
        Duration::from_secs(60),
    );
    let parameters = cache.get().await.unwrap();

    let invalid = parameters.typed::<Tunables>(&name).unwrap_err();
    let missing = parameters
        .typed::<Tunables>(&format!("{name}-absent"))
        .unwrap_err();

    assert_eq!(
        invalid,
        ConfigError::Invalid {
            parameter: name.clone(),
            message: "lease_ttl_ms is 10".to_owned(),
            expected: Tunables::EXPECTED.to_owned(),
        }
    );
    assert!(invalid.to_string().contains(&name), "{invalid}");
    assert_eq!(
        missing,
        ConfigError::Missing {
            parameters: vec![format!("{name}-absent")]
        }
    );
}
