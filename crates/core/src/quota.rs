//! Quotas: what an owner team and a capacity group may hold at once, and what each job holds.
//!
//! A job holds its share from the moment it is accepted until it is Finished: one job, its task
//! slots (a batch job's `size`, a service's desired capacity) and each slot's CPU, memory and
//! GPUs. Every store write that changes what a job holds (its create, a capacity change, its
//! finish) carries the change to the usage records of its team and its capacity group in the same
//! transaction, on condition that no limit is passed: the records cannot drift from the jobs, and
//! two creates racing for the last of a quota cannot both win.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::job::{Job, JobState};

/// What is held, or a change of it (negative when released). CPU in thousandths of a core.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub jobs: i64,
    pub tasks: i64,
    pub cpu_millis: i64,
    pub memory_mb: i64,
    pub gpu: i64,
}

impl Usage {
    /// The dimensions by their names in the quota configuration and the errors.
    pub fn dimensions(&self) -> [(Dimension, i64); 5] {
        [
            (Dimension::Jobs, self.jobs),
            (Dimension::Tasks, self.tasks),
            (Dimension::Cpu, self.cpu_millis),
            (Dimension::MemoryMb, self.memory_mb),
            (Dimension::Gpu, self.gpu),
        ]
    }

    pub fn get(&self, dimension: Dimension) -> i64 {
        match dimension {
            Dimension::Jobs => self.jobs,
            Dimension::Tasks => self.tasks,
            Dimension::Cpu => self.cpu_millis,
            Dimension::MemoryMb => self.memory_mb,
            Dimension::Gpu => self.gpu,
        }
    }

    pub fn minus(&self, other: &Usage) -> Usage {
        Usage {
            jobs: self.jobs - other.jobs,
            tasks: self.tasks - other.tasks,
            cpu_millis: self.cpu_millis - other.cpu_millis,
            memory_mb: self.memory_mb - other.memory_mb,
            gpu: self.gpu - other.gpu,
        }
    }

    pub fn plus(&self, other: &Usage) -> Usage {
        Usage {
            jobs: self.jobs + other.jobs,
            tasks: self.tasks + other.tasks,
            cpu_millis: self.cpu_millis + other.cpu_millis,
            memory_mb: self.memory_mb + other.memory_mb,
            gpu: self.gpu + other.gpu,
        }
    }

    pub fn is_zero(&self) -> bool {
        *self == Usage::default()
    }

    /// What `job` holds: nothing once it is Finished.
    pub fn of_job(job: &Job) -> Usage {
        if job.status.state == JobState::Finished {
            return Usage::default();
        }
        let descriptor = &job.job_descriptor;
        let slots = match (&descriptor.batch, &descriptor.service) {
            (Some(batch), _) => i64::from(batch.size),
            (None, Some(service)) => i64::from(service.capacity.desired),
            (None, None) => 0,
        };
        let resources = &descriptor.container.resources;
        Usage {
            jobs: 1,
            tasks: slots,
            cpu_millis: slots * (resources.cpu * 1000.0).round() as i64,
            memory_mb: slots * i64::try_from(resources.memory_mb).unwrap_or(i64::MAX / 2),
            gpu: slots * i64::from(resources.gpu),
        }
    }
}

/// One thing a quota limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dimension {
    Jobs,
    Tasks,
    Cpu,
    MemoryMb,
    Gpu,
}

impl Dimension {
    /// The name in the configuration, the API and the errors.
    pub fn name(self) -> &'static str {
        match self {
            Dimension::Jobs => "jobs",
            Dimension::Tasks => "tasks",
            Dimension::Cpu => "cpu",
            Dimension::MemoryMb => "memoryMB",
            Dimension::Gpu => "gpu",
        }
    }

    /// A value of this dimension as people read it (CPU in cores).
    pub fn show(self, value: i64) -> String {
        match self {
            Dimension::Cpu if value % 1000 == 0 => format!("{}", value / 1000),
            Dimension::Cpu => format!("{:.3}", value as f64 / 1000.0),
            _ => value.to_string(),
        }
    }
}

/// The limits of one quota; a limit left out is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuotaLimits {
    /// Jobs not Finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<u64>,
    /// Task slots of those jobs (batch sizes, services' desired capacities).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<u64>,
    /// Cores reserved by those slots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    #[serde(default, rename = "memoryMB", skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<u64>,
}

impl QuotaLimits {
    /// The limit on `dimension`, in [`Usage`]'s units.
    pub fn limit(&self, dimension: Dimension) -> Option<i64> {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX / 2);
        match dimension {
            Dimension::Jobs => self.jobs.map(clamp),
            Dimension::Tasks => self.tasks.map(clamp),
            Dimension::Cpu => self.cpu.map(|c| (c * 1000.0).round() as i64),
            Dimension::MemoryMb => self.memory_mb.map(clamp),
            Dimension::Gpu => self.gpu.map(clamp),
        }
    }

    pub fn is_unlimited(&self) -> bool {
        *self == QuotaLimits::default()
    }
}

/// The stage's quotas (`/titus/{stage}/policy/quotas`): per owner team email and per capacity
/// group, each with `"*"` as the default for the ones not named.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Quotas {
    pub teams: BTreeMap<String, QuotaLimits>,
    pub capacity_groups: BTreeMap<String, QuotaLimits>,
}

/// Whose usage a record counts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum QuotaScope {
    Team(String),
    CapacityGroup(String),
}

impl QuotaScope {
    /// The usage record's key: `team:{email}` or `group:{name}`.
    pub fn key(&self) -> String {
        match self {
            QuotaScope::Team(team) => format!("team:{team}"),
            QuotaScope::CapacityGroup(group) => format!("group:{group}"),
        }
    }

    /// The scope of a record key.
    pub fn from_key(key: &str) -> Option<QuotaScope> {
        if let Some(team) = key.strip_prefix("team:") {
            Some(QuotaScope::Team(team.to_owned()))
        } else {
            key.strip_prefix("group:")
                .map(|group| QuotaScope::CapacityGroup(group.to_owned()))
        }
    }

    /// How errors and the CLI name it.
    pub fn describe(&self) -> String {
        match self {
            QuotaScope::Team(team) => format!("team {team}"),
            QuotaScope::CapacityGroup(group) => format!("capacity group {group}"),
        }
    }

    /// The scopes a job counts in: its owner team and its capacity group.
    pub fn of_job(job: &Job) -> [QuotaScope; 2] {
        let descriptor = &job.job_descriptor;
        [
            QuotaScope::Team(descriptor.owner.team_email.clone()),
            QuotaScope::CapacityGroup(descriptor.capacity_group.clone()),
        ]
    }
}

impl Quotas {
    /// The limits that apply to `scope`: its own entry, else `"*"`, else none.
    pub fn limits_for(&self, scope: &QuotaScope) -> QuotaLimits {
        let (map, name) = match scope {
            QuotaScope::Team(team) => (&self.teams, team),
            QuotaScope::CapacityGroup(group) => (&self.capacity_groups, group),
        };
        map.get(name)
            .or_else(|| map.get("*"))
            .copied()
            .unwrap_or_default()
    }

    /// Says what is wrong with the configuration, if anything.
    pub fn validate(&self) -> Result<(), String> {
        for (kind, map) in [
            ("teams", &self.teams),
            ("capacityGroups", &self.capacity_groups),
        ] {
            for (name, limits) in map {
                if let Some(cpu) = limits.cpu {
                    if !cpu.is_finite() || cpu < 0.0 {
                        return Err(format!(
                            "{kind}[{name:?}].cpu is {cpu}; expected a number of cores, 0 or more"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// One usage record a write changes, with the limits an increase must stay within.
#[derive(Debug, Clone, PartialEq)]
pub struct ScopeCharge {
    pub scope: QuotaScope,
    pub limits: QuotaLimits,
}

/// The change a job write makes to usage records: `delta` added to each scope's record, every
/// increased dimension checked against that scope's limit in the same write.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageChange {
    pub scopes: Vec<ScopeCharge>,
    pub delta: Usage,
}

/// No change, for writes that hold on to it.
pub static NO_CHANGE: UsageChange = UsageChange {
    scopes: Vec::new(),
    delta: Usage {
        jobs: 0,
        tasks: 0,
        cpu_millis: 0,
        memory_mb: 0,
        gpu: 0,
    },
};

impl UsageChange {
    /// No change (writes that do not change what a job holds).
    pub fn none() -> UsageChange {
        UsageChange::default()
    }

    pub fn is_none(&self) -> bool {
        self.scopes.is_empty() || self.delta.is_zero()
    }

    /// The change from `previous` (none for a new job) to `next`, checked against `quotas`.
    pub fn between(previous: Option<&Job>, next: &Job, quotas: &Quotas) -> UsageChange {
        let before = previous.map(Usage::of_job).unwrap_or_default();
        let delta = Usage::of_job(next).minus(&before);
        if delta.is_zero() {
            return UsageChange::none();
        }
        UsageChange {
            scopes: QuotaScope::of_job(next)
                .into_iter()
                .map(|scope| ScopeCharge {
                    limits: quotas.limits_for(&scope),
                    scope,
                })
                .collect(),
            delta,
        }
    }

    /// The first limit this change passes on its own, before any usage: such a request can
    /// never be admitted. `(scope, dimension, limit)`.
    pub fn beyond_any_use(&self) -> Option<(&QuotaScope, Dimension, i64)> {
        self.scopes.iter().find_map(|charge| {
            self.delta
                .dimensions()
                .into_iter()
                .find_map(|(dimension, delta)| {
                    let limit = charge.limits.limit(dimension)?;
                    (delta > 0 && delta > limit).then_some((&charge.scope, dimension, limit))
                })
        })
    }

    /// For each scope, the dimensions this change increases under a limit, with the most the
    /// record may hold before the change: `limit - delta`.
    pub fn ceilings(&self) -> Vec<(&QuotaScope, Vec<(Dimension, i64)>)> {
        self.scopes
            .iter()
            .map(|charge| {
                let ceilings = self
                    .delta
                    .dimensions()
                    .into_iter()
                    .filter_map(|(dimension, delta)| {
                        let limit = charge.limits.limit(dimension)?;
                        (delta > 0).then_some((dimension, limit - delta))
                    })
                    .collect();
                (&charge.scope, ceilings)
            })
            .collect()
    }
}

/// A write refused by a quota: which, its limit, what was held and what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaExceeded {
    pub scope: QuotaScope,
    pub dimension: Dimension,
    pub limit: i64,
    pub used: i64,
    pub requested: i64,
}

impl std::fmt::Display for QuotaExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self.dimension;
        write!(
            f,
            "the {} quota of {} is {}, {} in use, and this asks for {} more",
            d.name(),
            self.scope.describe(),
            d.show(self.limit),
            d.show(self.used),
            d.show(self.requested)
        )
    }
}

impl QuotaExceeded {
    /// The dimension of `change` that `held` (a scope's record as read after a refused write)
    /// passes, if any.
    pub fn find(change: &UsageChange, scope: &QuotaScope, held: &Usage) -> Option<QuotaExceeded> {
        let charge = change.scopes.iter().find(|c| &c.scope == scope)?;
        change
            .delta
            .dimensions()
            .into_iter()
            .find_map(|(dimension, delta)| {
                let limit = charge.limits.limit(dimension)?;
                let used = held.get(dimension);
                (delta > 0 && used + delta > limit).then(|| QuotaExceeded {
                    scope: scope.clone(),
                    dimension,
                    limit,
                    used,
                    requested: delta,
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(size: u32, cpu: f64) -> Job {
        let descriptor: crate::job::JobDescriptor = serde_json::from_value(serde_json::json!({
            "owner": {"teamEmail": "team@example.com"},
            "applicationName": "app",
            "capacityGroup": "batchy",
            "container": {"image": {"name": "busybox"},
                          "resources": {"cpu": cpu, "memoryMB": 1024, "gpu": 1}},
            "batch": {"size": size}
        }))
        .unwrap();
        Job::new(crate::JobId::generate(), descriptor, "alice".to_owned(), 1)
    }

    #[test]
    fn a_job_holds_its_slots_until_it_is_finished() {
        let mut j = job(4, 1.5);
        assert_eq!(
            Usage::of_job(&j),
            Usage {
                jobs: 1,
                tasks: 4,
                cpu_millis: 6000,
                memory_mb: 4096,
                gpu: 4
            }
        );
        j.status.state = JobState::Finished;
        assert!(Usage::of_job(&j).is_zero());
    }

    #[test]
    fn a_change_names_its_scopes_and_the_limits_that_apply() {
        let quotas: Quotas = serde_json::from_value(serde_json::json!({
            "teams": {"*": {"tasks": 10}, "team@example.com": {"cpu": 5}},
            "capacityGroups": {"*": {"jobs": 2}}
        }))
        .unwrap();
        let change = UsageChange::between(None, &job(4, 1.5), &quotas);
        assert_eq!(
            change.scopes[0].scope,
            QuotaScope::Team("team@example.com".to_owned())
        );
        assert_eq!(
            change.scopes[0].limits.cpu,
            Some(5.0),
            "the team's own entry wins"
        );
        assert_eq!(change.scopes[1].limits.jobs, Some(2), "the default applies");
        let (scope, dimension, limit) = change.beyond_any_use().unwrap();
        assert_eq!(
            (scope.key().as_str(), dimension, limit),
            ("team:team@example.com", Dimension::Cpu, 5000)
        );
        assert_eq!(
            change.ceilings()[1].1,
            vec![(Dimension::Jobs, 1)],
            "a group at 1 job may take this one"
        );
        let exceeded = QuotaExceeded::find(
            &change,
            &QuotaScope::CapacityGroup("batchy".to_owned()),
            &Usage {
                jobs: 2,
                ..Usage::default()
            },
        )
        .unwrap();
        assert_eq!(
            exceeded.to_string(),
            "the jobs quota of capacity group batchy is 2, 2 in use, and this asks for 1 more"
        );
        let unchanged = UsageChange::between(Some(&job(4, 1.5)), &job(4, 1.5), &quotas);
        assert!(unchanged.is_none());
    }
}
