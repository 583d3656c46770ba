//! Launches: the demand's picks topped up to each pool's minimum (within its headroom, per-run
//! limit and cool-down), then grouped into plans by type and subnet with the pool's
//! on-demand/spot mix.

use std::collections::BTreeMap;

use titus_core::ports::{Lifecycle, Subnet};

use super::terminate::launch_cap;
use super::{Cooling, Headroom, LaunchPlan, Member, Members, Picks, PoolSettings, Snapshot};

/// Adds to `picks` what each pool needs to reach its minimum: the first type, in the zones with
/// the fewest instances. A pool that cools down, or lacks subnets or its first type, gets none.
pub(super) fn top_up_to_minimum<'a>(
    s: &Snapshot<'a>,
    members: &Members<'a>,
    cooling: &Cooling<'a>,
    headroom: &Headroom<'a>,
    picks: &mut Picks<'a>,
) {
    for (&pool, pool_members) in members {
        let pool_settings = &s.config.pools[pool];
        if cooling[pool] {
            continue;
        }
        let subnets = s.subnets.get(pool).map(Vec::as_slice).unwrap_or_default();
        if subnets.is_empty() || !s.types.contains_key(&pool_settings.instance_types[0]) {
            continue;
        }
        let planned = picks.get(pool).map(Vec::as_slice).unwrap_or_default();
        let planned_count = planned.len() as u32;
        let working = pool_members.iter().filter(|m| m.works()).count() as u32;
        let cap = launch_cap(s, headroom, pool).saturating_sub(planned_count);
        let need = pool_settings
            .min_agents
            .saturating_sub(working + planned_count)
            .min(cap);
        for subnet_index in emptiest_subnets(subnets, pool_members, planned, need) {
            picks.entry(pool).or_default().push((0, subnet_index));
        }
    }
}

/// The subnets for `need` more instances, one at a time in the zone that then has the fewest
/// (counting the members that stay and the instances already planned), the first on a tie.
fn emptiest_subnets(
    subnets: &[Subnet],
    pool_members: &[Member],
    planned: &[(usize, usize)],
    need: u32,
) -> Vec<usize> {
    let mut per_zone: BTreeMap<&str, u32> = subnets.iter().map(|s| (s.zone.as_str(), 0)).collect();
    for member in pool_members.iter().filter(|m| m.stays()) {
        if let Some(count) = per_zone.get_mut(member.zone.as_str()) {
            *count += 1;
        }
    }
    for &(_, subnet_index) in planned {
        if let Some(count) = per_zone.get_mut(subnets[subnet_index].zone.as_str()) {
            *count += 1;
        }
    }
    (0..need)
        .map(|_| {
            let (subnet_index, _) = subnets
                .iter()
                .enumerate()
                .min_by_key(|(i, subnet)| (per_zone[subnet.zone.as_str()], *i))
                .unwrap_or((0, &subnets[0]));
            *per_zone
                .entry(subnets[subnet_index].zone.as_str())
                .or_default() += 1;
            subnet_index
        })
        .collect()
}

/// The launch plans, by pool, type and subnet, with the on-demand/spot mix over the whole pool.
pub(super) fn launch_plans(
    s: &Snapshot<'_>,
    members: &Members<'_>,
    picks: &Picks<'_>,
) -> Vec<LaunchPlan> {
    let mut launch = Vec::new();
    for (pool, picks) in picks {
        if picks.is_empty() {
            continue;
        }
        let pool_settings = &s.config.pools[*pool];
        let subnets = &s.subnets[*pool];
        let staying = members[pool].iter().filter(|m| m.stays());
        let (mut on_demand, mut spot) =
            staying.fold((0u32, 0u32), |(od, sp), m| match m.lifecycle {
                Lifecycle::OnDemand => (od + 1, sp),
                Lifecycle::Spot => (od, sp + 1),
            });
        let mut groups: BTreeMap<(usize, usize), (u32, u32)> = BTreeMap::new();
        for &(type_index, subnet_index) in picks {
            let group = groups.entry((type_index, subnet_index)).or_default();
            if wants_on_demand(pool_settings, on_demand, spot) {
                on_demand += 1;
                group.0 += 1;
            } else {
                spot += 1;
                group.1 += 1;
            }
        }
        for ((type_index, subnet_index), (od, sp)) in groups {
            launch.push(LaunchPlan {
                pool: (*pool).to_owned(),
                machine_type: pool_settings.instance_types[type_index].clone(),
                subnet_id: subnets[subnet_index].id.clone(),
                zone: subnets[subnet_index].zone.clone(),
                on_demand: od,
                spot: sp,
            });
        }
    }
    launch
}

/// Whether the next instance of a pool that has `on_demand` and `spot` instances should be
/// on-demand: always up to the base, then in the configured share of what is above it.
pub fn wants_on_demand(pool: &PoolSettings, on_demand: u32, spot: u32) -> bool {
    if on_demand < pool.on_demand_base {
        return true;
    }
    let above_base_on_demand = on_demand - pool.on_demand_base;
    let above_base_after = u64::from(above_base_on_demand) + u64::from(spot) + 1;
    let wanted = (above_base_after * u64::from(pool.on_demand_percent_above_base)).div_ceil(100);
    u64::from(above_base_on_demand) < wanted
}
