//! Terminations: instances whose drained agent is empty or gone, and instances that had no agent
//! for the registration timeout; and the room each pool then has under its maximum.

use super::{Headroom, Members, Snapshot, Status, Termination};

/// The terminations the classification decided, and each pool's headroom once they are done.
pub(super) fn terminations<'a>(
    s: &Snapshot<'a>,
    members: &Members<'a>,
) -> (Vec<Termination>, Headroom<'a>) {
    let mut terminate = Vec::new();
    let mut headroom: Headroom<'a> = Headroom::new();
    for (pool, pool_members) in members {
        for member in pool_members {
            if let Status::Terminate(reason) = member.status {
                terminate.push(Termination {
                    instance_id: member.id.clone(),
                    pool: (*pool).to_owned(),
                    reason,
                });
            }
        }
        let staying = pool_members.iter().filter(|m| m.stays()).count() as u32;
        let settings = &s.config.pools[*pool];
        headroom.insert(pool, settings.max_agents.saturating_sub(staying));
    }
    (terminate, headroom)
}

/// How many instances a pool may launch this run: its headroom, at most its per-run limit.
pub(super) fn launch_cap(s: &Snapshot<'_>, headroom: &Headroom<'_>, pool: &str) -> u32 {
    headroom[pool].min(s.config.pools[pool].max_launches_per_run)
}
