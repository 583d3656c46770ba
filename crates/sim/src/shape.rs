//! The loads the simulator runs: Nomad's C1M and C2M shapes, a mixed one with constrained
//! services and jobs that fit nowhere, and small ones for tests. A scale factor shrinks jobs and
//! agents together, keeping the tasks per agent.

use serde_json::json;

/// Every task's disk and network (Titus' least).
pub const TASK_DISK_MB: u64 = 10_000;
pub const TASK_NETWORK_MBPS: u64 = 128;

/// One kind of job in a shape.
#[derive(Debug, Clone, PartialEq)]
pub struct JobKind {
    pub name: &'static str,
    pub jobs: u32,
    pub tasks_per_job: u32,
    pub cpu: f64,
    pub memory_mb: u64,
    /// A service (capacity = tasks per job) rather than a batch job.
    pub service: bool,
    /// Hard constraints, as a descriptor names them (`{"uniqueHost": "true"}`).
    pub hard_constraints: serde_json::Value,
    /// Submitted before every other kind (so its tasks are the oldest pending ones).
    pub first: bool,
    /// None of its tasks fits any agent: it must not hold the others up.
    pub unplaceable: bool,
}

impl JobKind {
    fn batch(name: &'static str, jobs: u32, tasks_per_job: u32) -> JobKind {
        JobKind {
            name,
            jobs,
            tasks_per_job,
            // Titus' smallest task: 512 MB, 10 GB of disk, 128 Mbps.
            cpu: 0.1,
            memory_mb: 512,
            service: false,
            hard_constraints: json!({}),
            first: false,
            unplaceable: false,
        }
    }

    /// The descriptor its jobs are submitted with, as the API receives it.
    pub fn descriptor(&self, n: u32) -> serde_json::Value {
        let mut descriptor = json!({
            "owner": {"teamEmail": "sim@example.com"},
            "applicationName": format!("sim-{}-{n}", self.name),
            "capacityGroup": "DEFAULT",
            "container": {
                "image": {"name": "busybox", "tag": "stable"},
                "resources": {"cpu": self.cpu, "memoryMB": self.memory_mb, "diskMB": TASK_DISK_MB, "networkMbps": TASK_NETWORK_MBPS},
                "hardConstraints": {"constraints": self.hard_constraints},
                "command": ["sleep", "3600"]
            }
        });
        if self.service {
            let n = self.tasks_per_job;
            descriptor["service"] = json!({"capacity": {"min": 0, "desired": n, "max": n}});
        } else {
            descriptor["batch"] = json!({"size": self.tasks_per_job, "runtimeLimitSec": 86_400});
        }
        descriptor
    }

    pub fn tasks(&self) -> u64 {
        u64::from(self.jobs) * u64::from(self.tasks_per_job)
    }
}

/// A whole load: the agents, the jobs, how they arrive and how agents behave.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    pub name: String,
    pub agents: u32,
    pub agent_cpu: u32,
    pub agent_memory_mb: u64,
    pub agent_disk_mb: u64,
    pub agent_network_mbps: u64,
    /// `binpack` or `spread`.
    pub strategy: &'static str,
    pub kinds: Vec<JobKind>,
    /// Jobs submitted per second (0: all at once, as fast as the API takes them).
    pub jobs_per_sec: f64,
    /// Agents that stop (no heartbeat, no work) this long after the start.
    pub agent_deaths: u32,
    pub death_after_ms: u64,
    /// The agent's delays: acknowledging (StartInitiated), then starting a container.
    pub ack_ms: u64,
    pub start_ms: u64,
}

impl Shape {
    /// Every task the shape's jobs ask for.
    pub fn tasks(&self) -> u64 {
        self.kinds.iter().map(JobKind::tasks).sum()
    }

    /// The tasks that can be placed.
    pub fn placeable_tasks(&self) -> u64 {
        self.kinds
            .iter()
            .filter(|k| !k.unplaceable)
            .map(JobKind::tasks)
            .sum()
    }

    fn base(name: String, agents: u32, strategy: &'static str, kinds: Vec<JobKind>) -> Shape {
        Shape {
            name,
            agents,
            // An m7g.16xlarge-sized host: room for 400 of the smallest tasks (C1M puts 200 on
            // each, C2M about 330).
            agent_cpu: 64,
            agent_memory_mb: 256 * 1024,
            agent_disk_mb: 4_000_000,
            agent_network_mbps: 51_200,
            strategy,
            kinds,
            jobs_per_sec: 0.0,
            agent_deaths: 0,
            death_after_ms: 0,
            ack_ms: 200,
            start_ms: 800,
        }
    }

    /// Nomad's C1M: 1,000 batch jobs of 1,000 tasks on 5,000 agents, bin-packed.
    pub fn c1m(scale: f64) -> Shape {
        let jobs = scaled(1_000, scale);
        Shape::base(
            format!("c1m{}", suffix(scale)),
            scaled(5_000, scale),
            "binpack",
            vec![JobKind::batch("c1m", jobs, 1_000)],
        )
    }

    /// Nomad's C2M: 2,000 batch jobs of 1,000 tasks on 6,100 agents, spread.
    pub fn c2m(scale: f64) -> Shape {
        Shape::base(
            format!("c2m{}", suffix(scale)),
            scaled(6_100, scale),
            "spread",
            vec![JobKind::batch("c2m", scaled(2_000, scale), 1_000)],
        )
    }

    /// Batch jobs beside constrained services and jobs that fit nowhere, submitted first; some
    /// agents die a minute in.
    pub fn mixed(scale: f64) -> Shape {
        let agents = scaled(2_000, scale);
        // One task an agent: no more tasks than half the agents.
        let mut unique =
            JobKind::batch("unique-host", scaled(10, scale), 100.min(agents / 2).max(1));
        unique.service = true;
        unique.hard_constraints = json!({"uniqueHost": "true"});
        let mut zoned = JobKind::batch("zone-balance", scaled(20, scale), 200);
        zoned.service = true;
        zoned.hard_constraints = json!({"zoneBalance": "true"});
        let mut huge = JobKind::batch("fits-nowhere", scaled(100, scale), 100);
        huge.memory_mb = 1024 * 1024;
        huge.first = true;
        huge.unplaceable = true;
        let mut shape = Shape::base(
            format!("mixed{}", suffix(scale)),
            agents,
            "spread",
            vec![
                huge,
                JobKind::batch("batch", scaled(200, scale), 500),
                unique,
                zoned,
            ],
        );
        shape.agent_deaths = scaled(20, scale);
        shape.death_after_ms = 60_000;
        shape
    }

    /// A small mixed shape for tests: every kind, a dead agent, a few seconds of load.
    pub fn small() -> Shape {
        let mut unique = JobKind::batch("unique-host", 2, 6);
        unique.service = true;
        unique.hard_constraints = json!({"uniqueHost": "true"});
        let mut huge = JobKind::batch("fits-nowhere", 3, 40);
        huge.memory_mb = 1024 * 1024;
        huge.first = true;
        huge.unplaceable = true;
        let mut shape = Shape::base(
            "small".to_owned(),
            12,
            "binpack",
            vec![huge, JobKind::batch("batch", 20, 30), unique],
        );
        shape.agent_deaths = 1;
        shape.death_after_ms = 10_000;
        shape
    }

    /// The shape named `name` (`c1m`, `c2m`, `mixed`, `small`) at `scale`.
    pub fn named(name: &str, scale: f64) -> Option<Shape> {
        match name {
            "c1m" => Some(Shape::c1m(scale)),
            "c2m" => Some(Shape::c2m(scale)),
            "mixed" => Some(Shape::mixed(scale)),
            "small" => Some(Shape::small()),
            _ => None,
        }
    }
}

fn scaled(n: u32, scale: f64) -> u32 {
    ((f64::from(n) * scale).round() as u32).max(1)
}

fn suffix(scale: f64) -> String {
    if (scale - 1.0).abs() < f64::EPSILON {
        String::new()
    } else {
        format!("×{scale}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c1m_is_a_million_tasks_on_five_thousand_agents_that_can_hold_them() {
        let shape = Shape::c1m(1.0);
        assert_eq!(shape.tasks(), 1_000_000);
        assert_eq!(shape.agents, 5_000);
        for shape in [Shape::c1m(1.0), Shape::c2m(1.0)] {
            let per_agent = shape.tasks().div_ceil(u64::from(shape.agents));
            let kind = &shape.kinds[0];
            assert!(per_agent as f64 * kind.cpu <= f64::from(shape.agent_cpu));
            assert!(per_agent * kind.memory_mb <= shape.agent_memory_mb);
            assert!(per_agent * TASK_DISK_MB <= shape.agent_disk_mb);
            assert!(per_agent * TASK_NETWORK_MBPS <= shape.agent_network_mbps);
        }
        assert_eq!(Shape::c2m(1.0).tasks(), 2_000_000);
        assert_eq!(Shape::c1m(0.1).agents, 500);
        let mixed = Shape::mixed(1.0);
        assert!(mixed.placeable_tasks() < mixed.tasks());
        assert!(Shape::named("nope", 1.0).is_none());
    }
}
