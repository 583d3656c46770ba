//! The pool reports: each pool's instances by what their agents are doing, and its limits.

use std::collections::BTreeSet;

use super::drain::is_idle;
use super::{Cooling, Members, PoolReport, Snapshot, Status};

/// One report per configured pool, in the order of their names.
pub(super) fn pool_reports(
    s: &Snapshot<'_>,
    members: &Members<'_>,
    cooling: &Cooling<'_>,
    receiving: &BTreeSet<&str>,
) -> Vec<PoolReport> {
    let mut reports = Vec::with_capacity(members.len());
    for (pool, pool_members) in members {
        let pool_settings = &s.config.pools[*pool];
        let mut report = PoolReport {
            pool: (*pool).to_owned(),
            instances: pool_members.len() as u32,
            idle: pool_members
                .iter()
                .filter(|m| is_idle(m, receiving))
                .count() as u32,
            min_agents: pool_settings.min_agents,
            max_agents: pool_settings.max_agents,
            cooling_down: cooling[pool],
            ..PoolReport::default()
        };
        for member in pool_members {
            match member.status {
                Status::Active { .. } => report.active += 1,
                Status::Booting => report.booting += 1,
                Status::Draining | Status::Terminate(_) => report.draining += 1,
                Status::Lost => report.lost += 1,
                Status::Unregistered => report.unregistered += 1,
            }
        }
        reports.push(report);
    }
    reports
}
