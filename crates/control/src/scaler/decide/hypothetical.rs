//! The instances the engine may place the leftover tasks on besides the agents: those still
//! booting, and, in each pool that may launch, fresh ones of every configured type in every
//! subnet, as many of each as the pool may launch this run.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use titus_core::{AgentState, Resources};
use titus_placement::AgentView;

use super::terminate::launch_cap;
use super::{estimated_capacity, Cooling, Headroom, Member, Members, Snapshot, Status};

/// A fresh instance the engine may choose: which pool, type and subnet it stands for.
#[derive(Debug, Clone)]
pub(super) struct Candidate {
    pub(super) pool: String,
    pub(super) type_index: usize,
    pub(super) subnet_index: usize,
}

/// The hypothetical instances, by the id of their view.
#[derive(Debug, Default)]
pub(super) struct Hypothetical<'m> {
    pub(super) candidates: HashMap<String, Candidate>,
    /// Booting members, with their pool.
    pub(super) booting: HashMap<String, (&'m str, &'m Member)>,
}

/// Adds a view for every hypothetical instance to `views`, pool by pool: its booting members,
/// then, unless it cools down, its fresh candidates.
pub(super) fn add_hypothetical<'m>(
    s: &Snapshot<'_>,
    members: &'m Members<'_>,
    cooling: &Cooling<'_>,
    headroom: &Headroom<'_>,
    views: &mut Vec<AgentView>,
) -> Hypothetical<'m> {
    let mut hypothetical = Hypothetical::default();
    for (pool, pool_members) in members {
        let pool_settings = &s.config.pools[*pool];
        for member in pool_members.iter().filter(|m| m.status == Status::Booting) {
            if let Some(info) = s.types.get(&member.machine_type) {
                views.push(hypothetical_view(
                    member.id.clone(),
                    pool,
                    &member.machine_type,
                    &member.zone,
                    estimated_capacity(pool_settings, info),
                ));
                hypothetical
                    .booting
                    .insert(member.id.clone(), (pool, member));
            }
        }
        if cooling[pool] {
            continue;
        }
        let cap = launch_cap(s, headroom, pool);
        let subnets = s.subnets.get(*pool).map(Vec::as_slice).unwrap_or_default();
        for n in 0..cap {
            for (type_index, machine_type) in pool_settings.instance_types.iter().enumerate() {
                let Some(info) = s.types.get(machine_type) else {
                    continue;
                };
                let capacity = estimated_capacity(pool_settings, info);
                for (subnet_index, subnet) in subnets.iter().enumerate() {
                    let id = candidate_id(pool, n, type_index, subnet_index);
                    views.push(hypothetical_view(
                        id.clone(),
                        pool,
                        machine_type,
                        &subnet.zone,
                        capacity,
                    ));
                    hypothetical.candidates.insert(
                        id,
                        Candidate {
                            pool: (*pool).to_owned(),
                            type_index,
                            subnet_index,
                        },
                    );
                }
            }
        }
    }
    hypothetical
}

/// Candidate ids sort after instance ids (`i-...`) and, within a pool, by their sequence number
/// first, so that equal choices spread over the subnets before doubling up in one.
fn candidate_id(pool: &str, n: u32, type_index: usize, subnet_index: usize) -> String {
    format!("~{pool}~{n:05}~{type_index:03}~{subnet_index:03}")
}

fn hypothetical_view(
    id: String,
    pool: &str,
    machine_type: &str,
    zone: &str,
    capacity: Resources,
) -> AgentView {
    AgentView {
        id,
        zone: zone.to_owned(),
        machine_type: machine_type.to_owned(),
        machine_group: pool.to_owned(),
        state: AgentState::Active,
        capacity,
        allocated: Resources::ZERO,
        job_task_counts: BTreeMap::new(),
        exclusive_jobs: BTreeSet::new(),
    }
}
