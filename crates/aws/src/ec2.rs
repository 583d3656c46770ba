//! The fleet port on EC2: the pools' instances, instance types and subnets, launches from a
//! launch template with EC2 Fleet, and terminations.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use aws_sdk_ec2::types::{
    DefaultTargetCapacityType, FleetLaunchTemplateConfigRequest,
    FleetLaunchTemplateOverridesRequest, FleetLaunchTemplateSpecificationRequest, FleetType,
    InstanceType, ResourceType, SpotAllocationStrategy, SpotOptionsRequest, Tag, TagSpecification,
    TargetCapacitySpecificationRequest,
};
use aws_sdk_ec2::Client;
use titus_core::ports::{
    Fleet, FleetError, InstanceTypeInfo, LaunchOutcome, LaunchRequest, LaunchedInstance, Lifecycle,
    PoolInstance, Subnet,
};

use crate::resources::tag;

fn ec2_error(operation: &'static str, err: impl std::error::Error + 'static) -> FleetError {
    FleetError {
        operation,
        message: aws_sdk_ec2::error::DisplayErrorContext(err).to_string(),
    }
}

/// EC2 through aws-sdk-ec2. Instance types and subnets change rarely; they are cached for the
/// life of the process.
#[derive(Debug)]
pub struct Ec2Fleet {
    client: Client,
    types: Mutex<HashMap<String, InstanceTypeInfo>>,
    subnets: Mutex<HashMap<Vec<String>, Vec<Subnet>>>,
}

impl Ec2Fleet {
    pub fn new(client: Client) -> Ec2Fleet {
        Ec2Fleet {
            client,
            types: Mutex::new(HashMap::new()),
            subnets: Mutex::new(HashMap::new()),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

fn instance_tags(request: &LaunchRequest) -> TagSpecification {
    let tag = |key: &str, value: &str| Tag::builder().key(key).value(value).build();
    TagSpecification::builder()
        .resource_type(ResourceType::Instance)
        .tags(tag(tag::STAGE, &request.stage))
        .tags(tag(tag::POOL, &request.pool))
        .tags(tag(tag::MANAGED_BY, tag::SCALER))
        .tags(tag(
            "Name",
            &format!("titus-{}-{}", request.stage, request.pool),
        ))
        .build()
}

fn millis(time: Option<&aws_sdk_ec2::primitives::DateTime>) -> u64 {
    time.and_then(|t| t.to_millis().ok())
        .and_then(|ms| u64::try_from(ms).ok())
        .unwrap_or(0)
}

impl Fleet for Ec2Fleet {
    async fn pool_instances(&self, stage: &str) -> Result<Vec<PoolInstance>, FleetError> {
        use aws_sdk_ec2::types::Filter;
        let filters = vec![
            stage_filter(stage),
            Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .build(),
        ];
        let found = describe_instances(&self.client, filters)
            .await
            .map_err(|e| ec2_error("DescribeInstances", e))?;
        let mut instances: Vec<PoolInstance> = found
            .iter()
            .filter_map(|instance| {
                let id = instance.instance_id()?;
                let pool = tag_value(instance, tag::POOL)?;
                let lifecycle = match instance.instance_lifecycle() {
                    Some(aws_sdk_ec2::types::InstanceLifecycleType::Spot) => Lifecycle::Spot,
                    _ => Lifecycle::OnDemand,
                };
                Some(PoolInstance {
                    id: id.to_owned(),
                    pool: pool.to_owned(),
                    machine_type: instance
                        .instance_type()
                        .map(|t| t.as_str().to_owned())
                        .unwrap_or_default(),
                    zone: instance
                        .placement()
                        .and_then(|p| p.availability_zone())
                        .unwrap_or_default()
                        .to_owned(),
                    lifecycle,
                    launched_at_ms: millis(instance.launch_time()),
                })
            })
            .collect();
        instances.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(instances)
    }

    async fn instance_types(
        &self,
        names: &[String],
    ) -> Result<BTreeMap<String, InstanceTypeInfo>, FleetError> {
        let missing: Vec<String> = {
            let cache = self.types.lock().unwrap_or_else(|e| e.into_inner());
            names
                .iter()
                .filter(|n| !cache.contains_key(*n))
                .cloned()
                .collect()
        };
        if !missing.is_empty() {
            let out = self
                .client
                .describe_instance_types()
                .set_instance_types(Some(
                    missing
                        .iter()
                        .map(|n| InstanceType::from(n.as_str()))
                        .collect(),
                ))
                .send()
                .await
                .map_err(|e| ec2_error("DescribeInstanceTypes", e))?;
            let mut cache = self.types.lock().unwrap_or_else(|e| e.into_inner());
            for info in out.instance_types() {
                let Some(name) = info.instance_type() else {
                    continue;
                };
                let gpus = info
                    .gpu_info()
                    .map(|g| {
                        g.gpus()
                            .iter()
                            .map(|d| d.count().unwrap_or(0).max(0) as u32)
                            .sum()
                    })
                    .unwrap_or(0);
                cache.insert(
                    name.as_str().to_owned(),
                    InstanceTypeInfo {
                        vcpus: info
                            .v_cpu_info()
                            .and_then(|v| v.default_v_cpus())
                            .unwrap_or(0)
                            .max(0) as u32,
                        memory_mib: info
                            .memory_info()
                            .and_then(|m| m.size_in_mib())
                            .unwrap_or(0)
                            .max(0) as u64,
                        gpus,
                    },
                );
            }
        }
        let cache = self.types.lock().unwrap_or_else(|e| e.into_inner());
        names
            .iter()
            .map(|n| {
                cache
                    .get(n)
                    .map(|info| (n.clone(), *info))
                    .ok_or_else(|| FleetError {
                        operation: "DescribeInstanceTypes",
                        message: format!("instance type {n:?} is not offered in this region"),
                    })
            })
            .collect()
    }

    async fn subnets(&self, ids: &[String]) -> Result<Vec<Subnet>, FleetError> {
        if let Some(subnets) = self
            .subnets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(ids)
        {
            return Ok(subnets.clone());
        }
        let mut request = self.client.describe_subnets();
        if ids.is_empty() {
            request = request.filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("default-for-az")
                    .values("true")
                    .build(),
            );
        } else {
            request = request.set_subnet_ids(Some(ids.to_vec()));
        }
        let out = request
            .send()
            .await
            .map_err(|e| ec2_error("DescribeSubnets", e))?;
        let mut subnets: Vec<Subnet> = out
            .subnets()
            .iter()
            .filter_map(|s| {
                Some(Subnet {
                    id: s.subnet_id()?.to_owned(),
                    zone: s.availability_zone()?.to_owned(),
                })
            })
            .collect();
        if ids.is_empty() {
            subnets.sort_by(|a, b| a.zone.cmp(&b.zone));
        } else {
            // The configured order is the order of preference.
            subnets.sort_by_key(|s| ids.iter().position(|id| *id == s.id));
        }
        self.subnets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ids.to_vec(), subnets.clone());
        Ok(subnets)
    }

    async fn launch(&self, request: &LaunchRequest) -> Result<LaunchOutcome, FleetError> {
        let total = request.on_demand + request.spot;
        if total == 0 {
            return Ok(LaunchOutcome::default());
        }
        let default_type = if request.on_demand >= request.spot {
            DefaultTargetCapacityType::OnDemand
        } else {
            DefaultTargetCapacityType::Spot
        };
        let mut fleet = self
            .client
            .create_fleet()
            .r#type(FleetType::Instant)
            .client_token(&request.client_token)
            .launch_template_configs(
                FleetLaunchTemplateConfigRequest::builder()
                    .launch_template_specification(
                        FleetLaunchTemplateSpecificationRequest::builder()
                            .launch_template_name(&request.launch_template)
                            .version("$Latest")
                            .build(),
                    )
                    .overrides(
                        FleetLaunchTemplateOverridesRequest::builder()
                            .instance_type(InstanceType::from(request.machine_type.as_str()))
                            .subnet_id(&request.subnet_id)
                            .build(),
                    )
                    .build(),
            )
            .target_capacity_specification(
                TargetCapacitySpecificationRequest::builder()
                    .total_target_capacity(total as i32)
                    .on_demand_target_capacity(request.on_demand as i32)
                    .spot_target_capacity(request.spot as i32)
                    .default_target_capacity_type(default_type)
                    .build(),
            )
            .tag_specifications(instance_tags(request));
        if request.spot > 0 {
            fleet = fleet.spot_options(
                SpotOptionsRequest::builder()
                    .allocation_strategy(SpotAllocationStrategy::from(
                        request.spot_allocation_strategy.as_str(),
                    ))
                    .build(),
            );
        }
        let out = fleet
            .send()
            .await
            .map_err(|e| ec2_error("CreateFleet", e))?;
        let mut outcome = LaunchOutcome::default();
        for group in out.instances() {
            let lifecycle = match group.lifecycle() {
                Some(aws_sdk_ec2::types::InstanceLifecycle::Spot) => Lifecycle::Spot,
                _ => Lifecycle::OnDemand,
            };
            for id in group.instance_ids() {
                outcome.launched.push(LaunchedInstance {
                    id: id.clone(),
                    machine_type: request.machine_type.clone(),
                    zone: request.zone.clone(),
                    lifecycle,
                });
            }
        }
        for error in out.errors() {
            outcome.errors.push(format!(
                "{}: {}",
                error.error_code().unwrap_or("error"),
                error.error_message().unwrap_or_default()
            ));
        }
        Ok(outcome)
    }

    async fn terminate(&self, ids: &[String]) -> Result<(), FleetError> {
        terminate_instances(&self.client, ids, |_| {})
            .await
            .map_err(|(_, e)| ec2_error("TerminateInstances", e))
    }
}

/// TerminateInstances takes at most this many ids.
const TERMINATE_BATCH: usize = 1000;

/// Every DescribeInstances page for `filters`, in the order EC2 lists them.
pub(crate) async fn describe_instances(
    client: &Client,
    filters: Vec<aws_sdk_ec2::types::Filter>,
) -> Result<Vec<aws_sdk_ec2::types::Instance>, DescribeInstancesSdkError> {
    let mut instances = Vec::new();
    let mut next_token = None;
    loop {
        let out = client
            .describe_instances()
            .set_filters(Some(filters.clone()))
            .set_next_token(next_token)
            .send()
            .await?;
        instances.extend(
            out.reservations()
                .iter()
                .flat_map(|r| r.instances())
                .cloned(),
        );
        match out.next_token {
            Some(token) if !token.is_empty() => next_token = Some(token),
            _ => return Ok(instances),
        }
    }
}

pub(crate) type DescribeInstancesSdkError = aws_sdk_ec2::error::SdkError<
    aws_sdk_ec2::operation::describe_instances::DescribeInstancesError,
    aws_sdk_ec2::config::http::HttpResponse,
>;

pub(crate) type TerminateInstancesSdkError = aws_sdk_ec2::error::SdkError<
    aws_sdk_ec2::operation::terminate_instances::TerminateInstancesError,
    aws_sdk_ec2::config::http::HttpResponse,
>;

/// Terminates `ids` in batches EC2 accepts, calling `terminated` with each batch once EC2 has
/// taken it. On a failure, returns the failed batch with the error; earlier batches stand.
pub(crate) async fn terminate_instances(
    client: &Client,
    ids: &[String],
    mut terminated: impl FnMut(&[String]),
) -> Result<(), (Vec<String>, TerminateInstancesSdkError)> {
    for chunk in ids.chunks(TERMINATE_BATCH) {
        client
            .terminate_instances()
            .set_instance_ids(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(|e| (chunk.to_vec(), e))?;
        terminated(chunk);
    }
    Ok(())
}

/// The DescribeInstances filter for the instances tagged with `stage`.
pub(crate) fn stage_filter(stage: &str) -> aws_sdk_ec2::types::Filter {
    aws_sdk_ec2::types::Filter::builder()
        .name(format!("tag:{}", tag::STAGE))
        .values(stage)
        .build()
}

/// The value of the instance's tag `key`, if it has one.
pub(crate) fn tag_value<'a>(
    instance: &'a aws_sdk_ec2::types::Instance,
    key: &str,
) -> Option<&'a str> {
    instance
        .tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

/// The first image owned by Amazon that the region offers, if any: what the emulator's launch
/// templates and test instances boot (a real stage's template names its AMI explicitly).
pub async fn first_amazon_image(
    client: &Client,
) -> Result<
    Option<String>,
    aws_sdk_ec2::error::SdkError<
        aws_sdk_ec2::operation::describe_images::DescribeImagesError,
        aws_sdk_ec2::config::http::HttpResponse,
    >,
> {
    let out = client.describe_images().owners("amazon").send().await?;
    Ok(out
        .images()
        .iter()
        .find_map(|i| i.image_id().map(str::to_owned)))
}
