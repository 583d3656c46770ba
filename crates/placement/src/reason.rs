//! Why agents were rejected, named and counted per reason as Nomad's AllocMetric does, so that an
//! unplaced task says e.g. `insufficient memory on 37 agents`.

use std::fmt;

use titus_core::job::ConstraintName;
use titus_core::placement::Rejection;

/// One named reason an agent cannot take a task. The order of the variants is the filter
/// pipeline's order, used to break ties between reasons rejecting as many agents.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Reason {
    Draining,
    Lost,
    /// The agent is held by an exclusiveHost job other than the task's.
    ExclusiveToOtherJob,
    /// A hard constraint rejects the agent; `value` is the constraint's value, when it has one.
    Constraint {
        name: ConstraintName,
        value: Option<String>,
    },
    /// A hard constraint this engine cannot evaluate rejects every agent, rather than be ignored.
    Unsupported(ConstraintName),
    /// The agent lacks this resource (`cpu`, `memory`, `disk`, `network` or `gpu`).
    Insufficient(&'static str),
    /// No agent at all was offered.
    NoAgents,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Draining => f.write_str("agent draining"),
            Reason::Lost => f.write_str("agent lost"),
            Reason::ExclusiveToOtherJob => f.write_str("host exclusive to another job"),
            Reason::Constraint { name, value: None } => write!(f, "hard constraint {name}"),
            // The value is user input, so it only ever appears quoted and escaped.
            Reason::Constraint {
                name,
                value: Some(value),
            } => write!(f, "hard constraint {name}={value:?}"),
            Reason::Unsupported(name) => write!(f, "hard constraint {name} not supported"),
            Reason::Insufficient(dimension) => write!(f, "insufficient {dimension}"),
            Reason::NoAgents => f.write_str("no agents"),
        }
    }
}

/// Why a task fits nowhere, as in [`crate::Unplaced`]: the reasons counted, in words and as
/// (reason, agents) pairs, and the resource dimensions that were short.
#[derive(Debug, Clone)]
pub(crate) struct Explanation {
    pub reasons: Vec<String>,
    pub rejections: Vec<Rejection>,
    pub insufficient: Vec<&'static str>,
}

/// Counts agents per reason. An agent short of several resources counts under each of them.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    counts: Vec<(Reason, usize)>,
}

impl Tally {
    /// Counts `agents` more agents under `reason`.
    pub fn add(&mut self, reason: Reason, agents: usize) {
        match self.counts.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += agents,
            None => self.counts.push((reason, agents)),
        }
    }

    /// The reasons in words, most agents first, and the resource dimensions that were short.
    pub fn finish(mut self) -> Explanation {
        if self.counts.is_empty() {
            self.counts.push((Reason::NoAgents, 0));
        }
        self.counts
            .sort_by(|(ra, na), (rb, nb)| nb.cmp(na).then_with(|| ra.cmp(rb)));
        let mut insufficient: Vec<&'static str> = self
            .counts
            .iter()
            .filter_map(|(r, _)| match r {
                Reason::Insufficient(d) => Some(*d),
                _ => None,
            })
            .collect();
        insufficient.sort_by_key(|d| DIMENSIONS.iter().position(|x| x == d));
        let reasons = self
            .counts
            .iter()
            .map(|(reason, n)| match reason {
                Reason::NoAgents => reason.to_string(),
                _ if *n == 1 => format!("{reason} on 1 agent"),
                _ => format!("{reason} on {n} agents"),
            })
            .collect();
        let rejections = self
            .counts
            .iter()
            .map(|(reason, n)| Rejection {
                reason: reason.to_string(),
                agents: u32::try_from(*n).unwrap_or(u32::MAX),
            })
            .collect();
        Explanation {
            reasons,
            rejections,
            insufficient,
        }
    }
}

/// The resource dimensions in the order `Resources::shortfalls` names them.
const DIMENSIONS: [&str; 5] = ["cpu", "memory", "disk", "network", "gpu"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_counted_and_listed_most_agents_first() {
        let mut tally = Tally::default();
        tally.add(Reason::Draining, 1);
        tally.add(Reason::Insufficient("memory"), 2);
        tally.add(Reason::Insufficient("memory"), 1);
        tally.add(
            Reason::Constraint {
                name: ConstraintName::UniqueHost,
                value: None,
            },
            1,
        );

        let Explanation {
            reasons: words,
            rejections,
            insufficient,
        } = tally.finish();

        assert_eq!(
            rejections
                .iter()
                .map(|r| (r.reason.as_str(), r.agents))
                .collect::<Vec<_>>(),
            vec![
                ("insufficient memory", 3),
                ("agent draining", 1),
                ("hard constraint uniqueHost", 1),
            ]
        );
        assert_eq!(
            words,
            vec![
                "insufficient memory on 3 agents",
                "agent draining on 1 agent",
                "hard constraint uniqueHost on 1 agent",
            ]
        );
        assert_eq!(insufficient, vec!["memory"]);
    }

    #[test]
    fn constraint_values_are_quoted_in_reasons() {
        let reason = Reason::Constraint {
            name: ConstraintName::AvailabilityZone,
            value: Some("a\"b".to_owned()),
        };

        assert_eq!(
            reason.to_string(),
            r#"hard constraint availabilityZone="a\"b""#
        );
    }

    #[test]
    fn an_empty_cluster_is_a_reason_of_its_own() {
        let explanation = Tally::default().finish();

        assert_eq!(explanation.reasons, vec!["no agents"]);
        assert_eq!(
            explanation.rejections,
            vec![Rejection {
                reason: "no agents".to_owned(),
                agents: 0
            }]
        );
        assert!(explanation.insufficient.is_empty());
    }
}
