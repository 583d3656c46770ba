//! Scale-down: idle agents are drained, oldest idle first, once idle for their pool's threshold;
//! never below the pool's minimum, and not in a pool that grows or cools down.

use std::collections::{BTreeMap, BTreeSet};

use super::{Cooling, Member, Members, Picks, Snapshot, Status};

/// An active agent without tasks that the engine gives none this run.
pub(super) fn is_idle(member: &Member, receiving: &BTreeSet<&str>) -> bool {
    member.status == (Status::Active { idle: true }) && !receiving.contains(member.id.as_str())
}

/// The agents to drain (instance id and pool), and since when each idle agent that stays
/// active has been idle.
pub(super) fn idle_drains(
    s: &Snapshot<'_>,
    members: &Members<'_>,
    cooling: &Cooling<'_>,
    picks: &Picks<'_>,
    receiving: &BTreeSet<&str>,
) -> (Vec<(String, String)>, BTreeMap<String, u64>) {
    let now = s.now_ms;
    let mut drain = Vec::new();
    let mut idle_since = BTreeMap::new();
    for (pool, pool_members) in members {
        let pool_settings = &s.config.pools[*pool];
        let mut idle: Vec<(u64, &str)> = Vec::new();
        for member in pool_members.iter().filter(|m| is_idle(m, receiving)) {
            let since = s
                .state
                .idle_since_ms
                .get(&member.id)
                .copied()
                .unwrap_or(now);
            idle_since.insert(member.id.clone(), since);
            idle.push((since, member.id.as_str()));
        }
        let growing = picks.get(pool).is_some_and(|l| !l.is_empty());
        if cooling[pool] || growing {
            continue;
        }
        let working = pool_members.iter().filter(|m| m.works()).count() as u32;
        let mut allowed = working.saturating_sub(pool_settings.min_agents);
        let threshold_ms = pool_settings.idle_threshold_secs.saturating_mul(1000);
        idle.sort();
        for (since, id) in idle {
            if allowed == 0 {
                break;
            }
            if now.saturating_sub(since) >= threshold_ms {
                drain.push((id.to_owned(), (*pool).to_owned()));
                idle_since.remove(id);
                allowed -= 1;
            }
        }
    }
    (drain, idle_since)
}
