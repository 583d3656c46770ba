//! The first phase: every pool's members, each classified by what its agent is doing, and which
//! pools cool down after a launch.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use titus_core::Agent;

use super::{agent_status, Cooling, Member, Members, Snapshot, Status, TerminateReason};

/// The pools' members, and what the run keeps of how it classified them.
#[derive(Debug)]
pub(super) struct Classified<'a> {
    pub(super) members: Members<'a>,
    /// When each listed instance without an agent started counting as one.
    pub(super) unregistered_since: BTreeMap<String, u64>,
}

/// Every configured pool's members: the instances EC2 lists, plus recent launches it does not
/// list yet. Instances of other pools are left alone.
pub(super) fn members<'a>(s: &Snapshot<'a>, agents: &HashMap<&str, &Agent>) -> Classified<'a> {
    let mut members: Members<'a> = s
        .config
        .pools
        .keys()
        .map(|p| (p.as_str(), Vec::new()))
        .collect();
    let unregistered_since = listed_instances(s, agents, &mut members);
    unlisted_launches(s, agents, &mut members);
    Classified {
        members,
        unregistered_since,
    }
}

/// Adds the instances EC2 lists; returns when each without an agent started counting as one.
fn listed_instances(
    s: &Snapshot<'_>,
    agents: &HashMap<&str, &Agent>,
    members: &mut Members<'_>,
) -> BTreeMap<String, u64> {
    let now = s.now_ms;
    let mut unregistered_since: BTreeMap<String, u64> = BTreeMap::new();
    for instance in s.instances {
        let Some(pool_members) = members.get_mut(instance.pool.as_str()) else {
            continue;
        };
        let drained_by_us = s.state.drained_at_ms.contains_key(&instance.id);
        let status = match agents.get(instance.id.as_str()) {
            Some(agent) => agent_status(agent, drained_by_us),
            None if drained_by_us => Status::Terminate(TerminateReason::Deregistered),
            None => {
                // The clock starts at launch for a new instance, and when it is first seen
                // without an agent for an older one (its agent may be restarting).
                let young = s.is_young(instance.launched_at_ms);
                let since = match s.state.unregistered_since_ms.get(&instance.id) {
                    Some(&since) => since,
                    None if young => instance.launched_at_ms,
                    None => now,
                };
                unregistered_since.insert(instance.id.clone(), since);
                if now.saturating_sub(since) >= s.registration_timeout_ms() {
                    Status::Terminate(TerminateReason::NoAgent)
                } else if young {
                    Status::Booting
                } else {
                    Status::Unregistered
                }
            }
        };
        pool_members.push(Member {
            id: instance.id.clone(),
            machine_type: instance.machine_type.clone(),
            zone: instance.zone.clone(),
            lifecycle: instance.lifecycle,
            status,
        });
    }
    unregistered_since
}

/// Adds the recent launches EC2 does not list yet.
fn unlisted_launches(s: &Snapshot<'_>, agents: &HashMap<&str, &Agent>, members: &mut Members<'_>) {
    let listed: BTreeSet<&str> = s.instances.iter().map(|i| i.id.as_str()).collect();
    for (id, record) in &s.state.launched {
        if listed.contains(id.as_str()) || !s.is_young(record.launched_at_ms) {
            continue;
        }
        if let Some(pool_members) = members.get_mut(record.pool.as_str()) {
            let status = match agents.get(id.as_str()) {
                Some(agent) => agent_status(agent, s.state.drained_at_ms.contains_key(id)),
                None => Status::Booting,
            };
            // An unlisted instance is never terminated: EC2 may not show it yet, nor its end.
            let status = match status {
                Status::Terminate(_) => Status::Draining,
                other => other,
            };
            pool_members.push(Member {
                id: id.clone(),
                machine_type: record.machine_type.clone(),
                zone: record.zone.clone(),
                lifecycle: record.lifecycle,
                status,
            });
        }
    }
}

/// Whether each pool launched within its cool-down: such a pool neither launches nor drains.
pub(super) fn cooling<'a>(s: &Snapshot<'a>) -> Cooling<'a> {
    s.config
        .pools
        .iter()
        .map(|(name, pool)| {
            let cooling = s.state.last_launch_at_ms.get(name).is_some_and(|&at| {
                s.now_ms < at.saturating_add(pool.cooldown_secs.saturating_mul(1000))
            });
            (name.as_str(), cooling)
        })
        .collect()
}
