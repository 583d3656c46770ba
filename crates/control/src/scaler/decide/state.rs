//! The state to keep for the next run, before the launches' instance ids are known.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use titus_core::ports::ScalerState;
use titus_core::Agent;

use super::{Decision, Members, Snapshot};

/// What the next run needs: the pools' last launches, since when agents are idle and instances
/// agentless, the launches not registered yet, and the instances this scaler drained.
pub(super) fn state_to_keep(
    s: &Snapshot<'_>,
    agents: &HashMap<&str, &Agent>,
    members: &Members<'_>,
    decision: &Decision,
    idle_since: BTreeMap<String, u64>,
    unregistered_since: BTreeMap<String, u64>,
) -> ScalerState {
    let now = s.now_ms;
    let terminated: BTreeSet<&str> = decision
        .terminate
        .iter()
        .map(|t| t.instance_id.as_str())
        .collect();
    let mut state = ScalerState {
        last_launch_at_ms: s
            .state
            .last_launch_at_ms
            .iter()
            .filter(|(pool, _)| s.config.pools.contains_key(*pool))
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
        idle_since_ms: idle_since,
        ..ScalerState::default()
    };
    for plan in &decision.launch {
        state.last_launch_at_ms.insert(plan.pool.clone(), now);
    }
    state.launched = s
        .state
        .launched
        .iter()
        .filter(|(id, record)| {
            !agents.contains_key(id.as_str())
                && !terminated.contains(id.as_str())
                && s.is_young(record.launched_at_ms)
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let member_ids: BTreeSet<&str> = members.values().flatten().map(|m| m.id.as_str()).collect();
    state.drained_at_ms = s
        .state
        .drained_at_ms
        .iter()
        // Kept until the instance is gone: a termination the run then skips (the agent reported a
        // container still running) is decided again next run.
        .filter(|(id, _)| member_ids.contains(id.as_str()))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    for (id, _) in &decision.drain {
        state.drained_at_ms.insert(id.clone(), now);
    }
    state.unregistered_since_ms = unregistered_since;
    state
}
