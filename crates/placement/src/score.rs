//! Rankers: of the agents a task may go on, which it should go on.
//!
//! The strategy scores how the placement packs (or spreads) the cluster. Each soft constraint is
//! a preference scoring 1 when satisfied; agents are ranked by the number of satisfied
//! preferences first and by the strategy second, so a soft constraint is honoured whenever some
//! candidate allows it, and the strategy decides among equals. Remaining ties go to the lowest
//! agent id, which keeps plans deterministic.

use std::cmp::Ordering;
use std::fmt;

use titus_core::job::Constraint;

use crate::filter::{constraint_filter, Ask, Filter};
use crate::model::Strategy;
use crate::state::{Cluster, Slot};

/// What some scorers need beyond the agent itself.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RankContext<'c> {
    /// The task's job's tasks per zone.
    pub zone_counts: &'c [u32],
    /// The fewest of those among the candidates' zones.
    pub fewest_in_a_zone: u32,
}

/// One ranking criterion; a higher score is better, in `0.0..=1.0`.
pub(crate) trait Scorer: fmt::Debug {
    fn score(&self, ask: &Ask, slot: &Slot<'_>, ctx: &RankContext<'_>) -> f64;
}

/// How used the agent would be after the placement: the mean of its used fractions of CPU and
/// memory, the two dimensions that run out first in practice.
fn used_after(ask: &Ask, slot: &Slot<'_>) -> f64 {
    let capacity = slot.view.capacity;
    let after = slot.allocated.saturating_add(ask.resources);
    (fraction(after.cpu_millis, capacity.cpu_millis)
        + fraction(after.memory_mb, capacity.memory_mb))
        / 2.0
}

fn fraction(used: u64, capacity: u64) -> f64 {
    if capacity == 0 {
        1.0
    } else {
        (used as f64 / capacity as f64).min(1.0)
    }
}

/// Bin-packing: the fuller the agent after the placement, the better.
#[derive(Debug)]
pub(crate) struct BinPack;

impl Scorer for BinPack {
    fn score(&self, ask: &Ask, slot: &Slot<'_>, _ctx: &RankContext<'_>) -> f64 {
        used_after(ask, slot)
    }
}

/// Spreading: the emptier the agent after the placement, the better.
#[derive(Debug)]
pub(crate) struct Spread;

impl Scorer for Spread {
    fn score(&self, ask: &Ask, slot: &Slot<'_>, _ctx: &RankContext<'_>) -> f64 {
        1.0 - used_after(ask, slot)
    }
}

/// The scorer of a strategy.
pub(crate) fn strategy_scorer(strategy: Strategy) -> &'static dyn Scorer {
    match strategy {
        Strategy::BinPack => &BinPack,
        Strategy::Spread => &Spread,
    }
}

/// A soft constraint that is a per-agent test: it scores 1 where its hard filter would pass.
#[derive(Debug)]
pub(crate) struct Prefer(Box<dyn Filter>);

impl Scorer for Prefer {
    fn score(&self, ask: &Ask, slot: &Slot<'_>, _ctx: &RankContext<'_>) -> f64 {
        if self.0.feasible(ask, slot) {
            1.0
        } else {
            0.0
        }
    }
}

/// Soft `zoneBalance`: scores 1 in the candidates' zones with the fewest of the job's tasks.
#[derive(Debug)]
pub(crate) struct PreferBalancedZone;

impl Scorer for PreferBalancedZone {
    fn score(&self, _ask: &Ask, slot: &Slot<'_>, ctx: &RankContext<'_>) -> f64 {
        let count = ctx
            .zone_counts
            .get(slot.zone as usize)
            .copied()
            .unwrap_or(0);
        if count <= ctx.fewest_in_a_zone {
            1.0
        } else {
            0.0
        }
    }
}

/// The preferences of a task's soft constraints. `activeHost` adds none (every placement is on
/// an active agent) and neither do constraints this engine does not know: a preference that
/// cannot be evaluated is ignored, unlike a requirement.
pub(crate) fn preferences(soft: &[Constraint], cluster: &Cluster<'_>) -> Vec<Box<dyn Scorer>> {
    soft.iter()
        .filter_map(|c| -> Option<Box<dyn Scorer>> {
            match c {
                Constraint::ZoneBalance => Some(Box::new(PreferBalancedZone)),
                Constraint::ActiveHost => None,
                Constraint::UniqueHost
                | Constraint::ExclusiveHost
                | Constraint::AvailabilityZone(_)
                | Constraint::MachineId(_)
                | Constraint::MachineGroup(_)
                | Constraint::MachineType(_) => {
                    constraint_filter(c, cluster).map(|f| Box::new(Prefer(f)) as Box<dyn Scorer>)
                }
                _ => None,
            }
        })
        .collect()
}

/// The best of `candidates` (slot numbers) for the task: most preferences satisfied, then the
/// best strategy score, then the lowest agent id. `None` when there are no candidates.
pub(crate) fn best(
    candidates: &[usize],
    ask: &Ask,
    cluster: &Cluster<'_>,
    strategy: &dyn Scorer,
    preferences: &[Box<dyn Scorer>],
) -> Option<usize> {
    let zone_counts = cluster.zone_counts(ask.job);
    let ctx = RankContext {
        zone_counts,
        fewest_in_a_zone: candidates
            .iter()
            .map(|&s| {
                let zone = cluster.slots[s].zone as usize;
                zone_counts.get(zone).copied().unwrap_or(0)
            })
            .min()
            .unwrap_or(0),
    };
    let mut best: Option<(f64, f64, usize)> = None;
    for &candidate in candidates {
        let slot = &cluster.slots[candidate];
        let preferred: f64 = preferences.iter().map(|p| p.score(ask, slot, &ctx)).sum();
        let fit = strategy.score(ask, slot, &ctx);
        let better = match best {
            None => true,
            Some((best_preferred, best_fit, best_slot)) => {
                preferred
                    .total_cmp(&best_preferred)
                    .then(fit.total_cmp(&best_fit))
                    .then(best_slot.cmp(&candidate))
                    == Ordering::Greater
            }
        };
        if better {
            best = Some((preferred, fit, candidate));
        }
    }
    best.map(|(_, _, slot)| slot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AgentView, TaskRequest};
    use std::collections::{BTreeMap, BTreeSet};
    use titus_core::{AgentState, JobId, Resources, TaskId};

    fn agent(id: &str, zone: &str, used_cpu_millis: u64) -> AgentView {
        AgentView {
            id: id.to_owned(),
            zone: zone.to_owned(),
            machine_type: "m5".to_owned(),
            machine_group: "g".to_owned(),
            state: AgentState::Active,
            capacity: Resources {
                cpu_millis: 4000,
                memory_mb: 8000,
                disk_mb: 100_000,
                network_mbps: 1000,
                gpu: 0,
            },
            allocated: Resources {
                cpu_millis: used_cpu_millis,
                ..Resources::ZERO
            },
            job_task_counts: BTreeMap::new(),
            exclusive_jobs: BTreeSet::new(),
        }
    }

    fn task(soft: Vec<Constraint>) -> TaskRequest {
        TaskRequest {
            task_id: TaskId::from_string("t"),
            job_id: JobId::from_string("j"),
            resources: Resources {
                cpu_millis: 500,
                ..Resources::ZERO
            },
            hard: vec![],
            soft,
        }
    }

    /// The id of the agent `best` picks among all of them.
    fn pick(agents: &[AgentView], task: TaskRequest, strategy: Strategy) -> String {
        let tasks = [task];
        let cluster = Cluster::new(agents, &tasks);
        let ask = Ask {
            job: cluster.job(&tasks[0].job_id),
            resources: tasks[0].resources,
        };
        let prefs = preferences(&tasks[0].soft, &cluster);
        let all: Vec<usize> = (0..cluster.slots.len()).collect();
        let chosen = best(&all, &ask, &cluster, strategy_scorer(strategy), &prefs);
        chosen
            .map(|s| cluster.slots[s].view.id.clone())
            .unwrap_or_default()
    }

    #[test]
    fn bin_pack_prefers_the_fuller_agent() {
        let agents = [agent("a", "z", 1000), agent("b", "z", 3000)];

        assert_eq!(pick(&agents, task(vec![]), Strategy::BinPack), "b");
    }

    #[test]
    fn spread_prefers_the_emptier_agent() {
        let agents = [agent("a", "z", 3000), agent("b", "z", 1000)];

        assert_eq!(pick(&agents, task(vec![]), Strategy::Spread), "b");
    }

    #[test]
    fn ties_go_to_the_lowest_agent_id() {
        let agents = [agent("b", "z", 1000), agent("a", "z", 1000)];

        assert_eq!(pick(&agents, task(vec![]), Strategy::BinPack), "a");
    }

    #[test]
    fn a_soft_zone_outranks_the_strategy() {
        let agents = [agent("a", "z1", 3000), agent("b", "z2", 0)];
        let soft = vec![Constraint::AvailabilityZone("Z2".into())];

        assert_eq!(pick(&agents, task(soft), Strategy::BinPack), "b");
    }

    #[test]
    fn soft_unique_host_prefers_agents_without_the_job() {
        let mut busy = agent("a", "z", 3000);
        busy.job_task_counts.insert(JobId::from_string("j"), 1);
        let agents = [busy, agent("b", "z", 0)];

        assert_eq!(
            pick(
                &agents,
                task(vec![Constraint::UniqueHost]),
                Strategy::BinPack
            ),
            "b"
        );
    }

    #[test]
    fn soft_exclusive_host_prefers_agents_without_other_jobs() {
        let mut shared = agent("a", "z", 3000);
        shared
            .job_task_counts
            .insert(JobId::from_string("other"), 1);
        let agents = [shared, agent("b", "z", 0)];

        assert_eq!(
            pick(
                &agents,
                task(vec![Constraint::ExclusiveHost]),
                Strategy::BinPack
            ),
            "b"
        );
    }

    #[test]
    fn soft_zone_balance_prefers_the_zone_with_fewest_of_the_job() {
        let mut crowded = agent("a", "z1", 3000);
        crowded.job_task_counts.insert(JobId::from_string("j"), 2);
        let agents = [crowded, agent("b", "z2", 0)];

        assert_eq!(
            pick(
                &agents,
                task(vec![Constraint::ZoneBalance]),
                Strategy::BinPack
            ),
            "b"
        );
    }

    #[test]
    fn soft_machine_type_group_and_id_are_preferences_too() {
        let mut other = agent("b", "z", 0);
        other.machine_type = "c5".into();
        other.machine_group = "batch".into();
        let agents = [agent("a", "z", 3000), other];
        let soft = vec![
            Constraint::MachineType("C5".into()),
            Constraint::MachineGroup("batch".into()),
            Constraint::MachineId("B".into()),
        ];

        assert_eq!(pick(&agents, task(soft), Strategy::BinPack), "b");
    }
}
