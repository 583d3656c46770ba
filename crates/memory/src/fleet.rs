//! EC2 in memory: instance types and subnets to choose from, instances launched from a request
//! (with the request's client token making a retry launch nothing more, as EC2's idempotency
//! does), found by their stage's tag while pending or running, and terminated.

use std::collections::{BTreeMap, HashMap};

use titus_core::ports::{
    Fleet, FleetError, InstanceTypeInfo, LaunchOutcome, LaunchRequest, LaunchedInstance, Lifecycle,
    PoolInstance, Subnet,
};

use crate::world::{MemoryWorld, State};

#[derive(Debug, Clone)]
struct Instance {
    stage: String,
    instance: PoolInstance,
    terminated: bool,
}

/// The world's EC2.
#[derive(Debug)]
pub(crate) struct FleetState {
    instance_types: BTreeMap<String, InstanceTypeInfo>,
    /// The region's default subnets.
    subnets: Vec<Subnet>,
    instances: BTreeMap<String, Instance>,
    launches_by_token: HashMap<String, LaunchOutcome>,
    next_instance: u64,
}

impl Default for FleetState {
    fn default() -> Self {
        let types = [
            ("m7g.large", 2, 8_192),
            ("m7g.xlarge", 4, 16_384),
            ("m7g.2xlarge", 8, 32_768),
            ("m5.large", 2, 8_192),
            ("c7g.4xlarge", 16, 32_768),
        ];
        FleetState {
            instance_types: types
                .into_iter()
                .map(|(name, vcpus, memory_mib)| {
                    (
                        name.to_owned(),
                        InstanceTypeInfo {
                            vcpus,
                            memory_mib,
                            gpus: 0,
                        },
                    )
                })
                .collect(),
            subnets: ["a", "b", "c"]
                .into_iter()
                .map(|zone| Subnet {
                    id: format!("subnet-{zone}"),
                    zone: format!("us-east-1{zone}"),
                })
                .collect(),
            instances: BTreeMap::new(),
            launches_by_token: HashMap::new(),
            next_instance: 1,
        }
    }
}

fn ec2_error(operation: &'static str, message: String) -> FleetError {
    FleetError { operation, message }
}

impl FleetState {
    /// Offers `name` with `info` from now on.
    pub(crate) fn add_instance_type(&mut self, name: &str, info: InstanceTypeInfo) {
        self.instance_types.insert(name.to_owned(), info);
    }

    /// Every instance ever launched, terminated ones included, by id.
    pub(crate) fn instances(&self) -> Vec<(PoolInstance, bool)> {
        self.instances
            .values()
            .map(|i| (i.instance.clone(), i.terminated))
            .collect()
    }

    fn pool_instances(&self, stage: &str) -> Vec<PoolInstance> {
        self.instances
            .values()
            .filter(|i| i.stage == stage && !i.terminated)
            .map(|i| i.instance.clone())
            .collect()
    }

    fn instance_types(
        &self,
        names: &[String],
    ) -> Result<BTreeMap<String, InstanceTypeInfo>, FleetError> {
        names
            .iter()
            .map(|name| {
                self.instance_types
                    .get(name)
                    .map(|info| (name.clone(), *info))
                    .ok_or_else(|| {
                        ec2_error(
                            "DescribeInstanceTypes",
                            format!("instance type {name:?} is not offered in this region"),
                        )
                    })
            })
            .collect()
    }

    fn subnets(&self, ids: &[String]) -> Result<Vec<Subnet>, FleetError> {
        if ids.is_empty() {
            let mut subnets = self.subnets.clone();
            subnets.sort_by(|a, b| a.zone.cmp(&b.zone));
            return Ok(subnets);
        }
        ids.iter()
            .map(|id| {
                self.subnets
                    .iter()
                    .find(|s| s.id == *id)
                    .cloned()
                    .ok_or_else(|| {
                        ec2_error(
                            "DescribeSubnets",
                            format!("InvalidSubnetID.NotFound: the subnet {id:?} does not exist"),
                        )
                    })
            })
            .collect()
    }

    fn launch(
        &mut self,
        request: &LaunchRequest,
        now_ms: u64,
    ) -> Result<LaunchOutcome, FleetError> {
        if request.on_demand + request.spot == 0 {
            return Ok(LaunchOutcome::default());
        }
        if let Some(outcome) = self.launches_by_token.get(&request.client_token) {
            return Ok(outcome.clone());
        }
        if !self.instance_types.contains_key(&request.machine_type) {
            return Err(ec2_error(
                "CreateFleet",
                format!(
                    "InvalidParameterValue: instance type {:?} is not offered",
                    request.machine_type
                ),
            ));
        }
        self.subnets(std::slice::from_ref(&request.subnet_id))
            .map_err(|e| ec2_error("CreateFleet", e.message))?;
        let mut outcome = LaunchOutcome::default();
        let lifecycles = std::iter::repeat_n(Lifecycle::OnDemand, request.on_demand as usize)
            .chain(std::iter::repeat_n(Lifecycle::Spot, request.spot as usize));
        for lifecycle in lifecycles {
            let id = format!("i-{:017x}", self.next_instance);
            self.next_instance += 1;
            let instance = PoolInstance {
                id: id.clone(),
                pool: request.pool.clone(),
                machine_type: request.machine_type.clone(),
                zone: request.zone.clone(),
                lifecycle,
                launched_at_ms: now_ms,
            };
            self.instances.insert(
                id.clone(),
                Instance {
                    stage: request.stage.clone(),
                    instance,
                    terminated: false,
                },
            );
            outcome.launched.push(LaunchedInstance {
                id,
                machine_type: request.machine_type.clone(),
                zone: request.zone.clone(),
                lifecycle,
            });
        }
        self.launches_by_token
            .insert(request.client_token.clone(), outcome.clone());
        Ok(outcome)
    }

    fn terminate(&mut self, ids: &[String]) -> Result<(), FleetError> {
        if let Some(unknown) = ids.iter().find(|id| !self.instances.contains_key(*id)) {
            return Err(ec2_error(
                "TerminateInstances",
                format!("InvalidInstanceID.NotFound: the instance {unknown:?} does not exist"),
            ));
        }
        for id in ids {
            if let Some(instance) = self.instances.get_mut(id) {
                instance.terminated = true;
            }
        }
        Ok(())
    }
}

/// The fleet of a [`MemoryWorld`].
#[derive(Debug, Clone)]
pub struct MemoryFleet {
    world: MemoryWorld,
}

impl MemoryFleet {
    pub(crate) fn new(world: MemoryWorld) -> MemoryFleet {
        MemoryFleet { world }
    }
}

fn ec2<T>(
    state: &mut State,
    operation: &'static str,
    f: impl FnOnce(&mut FleetState, u64) -> Result<T, FleetError>,
) -> Result<T, FleetError> {
    state.meter.request(operation);
    let now_ms = state.now_ms;
    f(&mut state.fleet, now_ms)
}

impl Fleet for MemoryFleet {
    async fn pool_instances(&self, stage: &str) -> Result<Vec<PoolInstance>, FleetError> {
        self.world
            .run("fleet.pool_instances", |s| {
                ec2(s, "EC2.DescribeInstances", |f, _| {
                    Ok(f.pool_instances(stage))
                })
            })
            .await
    }

    async fn instance_types(
        &self,
        names: &[String],
    ) -> Result<BTreeMap<String, InstanceTypeInfo>, FleetError> {
        self.world
            .run("fleet.instance_types", |s| {
                ec2(s, "EC2.DescribeInstanceTypes", |f, _| {
                    f.instance_types(names)
                })
            })
            .await
    }

    async fn subnets(&self, ids: &[String]) -> Result<Vec<Subnet>, FleetError> {
        self.world
            .run("fleet.subnets", |s| {
                ec2(s, "EC2.DescribeSubnets", |f, _| f.subnets(ids))
            })
            .await
    }

    async fn launch(&self, request: &LaunchRequest) -> Result<LaunchOutcome, FleetError> {
        self.world
            .run("fleet.launch", |s| {
                ec2(s, "EC2.CreateFleet", |f, now| f.launch(request, now))
            })
            .await
    }

    async fn terminate(&self, ids: &[String]) -> Result<(), FleetError> {
        self.world
            .run("fleet.terminate", |s| {
                ec2(s, "EC2.TerminateInstances", |f, _| f.terminate(ids))
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(token: &str) -> LaunchRequest {
        LaunchRequest {
            stage: "memory".to_owned(),
            pool: "default".to_owned(),
            launch_template: "t".to_owned(),
            machine_type: "m7g.large".to_owned(),
            subnet_id: "subnet-a".to_owned(),
            zone: "us-east-1a".to_owned(),
            on_demand: 1,
            spot: 2,
            spot_allocation_strategy: "price-capacity-optimized".to_owned(),
            client_token: token.to_owned(),
        }
    }

    #[test]
    fn a_retried_launch_with_the_same_token_launches_nothing_more() {
        let mut fleet = FleetState::default();

        let first = fleet.launch(&request("t1"), 5).unwrap();
        let retry = fleet.launch(&request("t1"), 6).unwrap();
        fleet.launch(&request("t2"), 7).unwrap();

        assert_eq!(first, retry);
        assert_eq!(first.launched.len(), 3);
        assert_eq!(fleet.pool_instances("memory").len(), 6);
        assert_eq!(
            first
                .launched
                .iter()
                .filter(|i| i.lifecycle == Lifecycle::Spot)
                .count(),
            2
        );
    }

    #[test]
    fn terminated_instances_leave_the_pool_and_unknown_ones_are_refused() {
        let mut fleet = FleetState::default();
        let launched = fleet.launch(&request("t"), 0).unwrap();
        let first = launched.launched[0].id.clone();

        fleet.terminate(std::slice::from_ref(&first)).unwrap();
        let unknown = fleet.terminate(&["i-nope".to_owned()]);

        assert!(!fleet.pool_instances("memory").iter().any(|i| i.id == first));
        assert!(unknown.is_err());
        assert!(fleet.pool_instances("other").is_empty());
    }
}
