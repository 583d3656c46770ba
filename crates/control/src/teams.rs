//! Who may submit jobs for which owner team: callers are bound to the teams they belong to, so
//! that one team cannot file jobs, or read secrets, as another.
//!
//! The map (`/titus/{stage}/policy/teams`) names, for each caller identity, the team emails it
//! belongs to; [`EVERY_TEAM`] stands for all of them. An identity ending in `*` names every
//! identity with that prefix (`sqs:AROAEXAMPLE:*`, every session of one role sending to the
//! submit queue). A caller also belongs to the team named like itself, so that a personal
//! identity (`dev@example.com`) owns its own jobs without an entry.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use titus_core::settings::Validate;

/// In an identity's list of teams: every team.
pub const EVERY_TEAM: &str = "*";

/// Caller identity (or prefix ending in `*`) to the owner teams it belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Teams(BTreeMap<String, BTreeSet<String>>);

impl Teams {
    /// These teams with `identity` in `teams` too.
    pub fn with(mut self, identity: &str, teams: &[&str]) -> Teams {
        self.0
            .entry(identity.to_owned())
            .or_default()
            .extend(teams.iter().map(|t| (*t).to_owned()));
        self
    }

    /// The teams configured for `identity`, by its exact entry and every matching prefix.
    pub fn of(&self, identity: &str) -> BTreeSet<String> {
        self.0
            .iter()
            .filter(|(key, _)| match key.strip_suffix('*') {
                Some(prefix) => identity.starts_with(prefix),
                None => key.as_str() == identity,
            })
            .flat_map(|(_, teams)| teams.iter().cloned())
            .collect()
    }

    /// Only `identity`'s entry, with every team its prefixes give it: what a request needs to
    /// carry.
    pub fn narrowed_to(&self, identity: &str) -> Teams {
        let teams = self.of(identity);
        if teams.is_empty() {
            return Teams::default();
        }
        Teams(BTreeMap::from([(identity.to_owned(), teams)]))
    }

    /// Whether `identity` belongs to `team`.
    pub fn is_member(&self, identity: &str, team: &str) -> bool {
        identity == team || lists(&self.of(identity), team)
    }

    /// Why `identity` may not submit a job for `team`, if it may not.
    pub fn refusal(&self, identity: &str, team: &str) -> Option<String> {
        let teams = self.of(identity);
        if identity == team || lists(&teams, team) {
            return None;
        }
        let mine = if teams.is_empty() {
            "none".to_owned()
        } else {
            teams.into_iter().collect::<Vec<_>>().join(", ")
        };
        Some(format!(
            "caller {identity:?} may not submit jobs for team {team:?}; expected \
             owner.teamEmail to be one of its teams ({mine}) or its own name, as the stage's \
             policy/teams parameter says"
        ))
    }
}

/// Whether a list of teams names `team`, or every team.
fn lists(teams: &BTreeSet<String>, team: &str) -> bool {
    teams.contains(team) || teams.contains(EVERY_TEAM)
}

impl Validate for Teams {
    const EXPECTED: &'static str = "a JSON object of caller identity (or prefix ending in *) to \
                                    an array of team emails (\"*\" for every team)";

    fn validate(&self) -> Result<(), String> {
        for (identity, teams) in &self.0 {
            if identity.trim().is_empty() {
                return Err("an identity is empty".to_owned());
            }
            if let Some(team) = teams
                .iter()
                .find(|t| t.as_str() != EVERY_TEAM && !t.contains('@'))
            {
                return Err(format!(
                    "{identity:?} names {team:?}, which is neither a team email nor \"*\""
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_belong_to_their_listed_teams_their_prefixes_and_their_own_name() {
        let teams = Teams::default()
            .with("alice@example.com", &["red@example.com"])
            .with("sqs:AROAPRODUCER:*", &["blue@example.com"])
            .with("ops@example.com", &[EVERY_TEAM]);

        assert!(teams.is_member("alice@example.com", "red@example.com"));
        assert!(teams.is_member("alice@example.com", "alice@example.com"));
        assert!(!teams.is_member("alice@example.com", "blue@example.com"));
        assert!(teams.is_member("sqs:AROAPRODUCER:i-0abc", "blue@example.com"));
        assert!(!teams.is_member("sqs:AROAOTHER:i-0abc", "blue@example.com"));
        assert!(teams.is_member("ops@example.com", "anything@example.com"));
        let refusal = teams
            .refusal("alice@example.com", "blue@example.com")
            .unwrap();
        assert!(refusal.contains("\"blue@example.com\""), "{refusal}");
        assert!(refusal.contains("(red@example.com)"), "{refusal}");
        assert_eq!(teams.refusal("alice@example.com", "red@example.com"), None);
        let narrowed = teams.narrowed_to("sqs:AROAPRODUCER:i-0abc");
        assert!(narrowed.is_member("sqs:AROAPRODUCER:i-0abc", "blue@example.com"));
        assert!(!narrowed.is_member("alice@example.com", "red@example.com"));
    }

    #[test]
    fn only_team_emails_or_every_team_are_valid() {
        assert!(Teams::default()
            .with("alice", &["red@example.com", "*"])
            .validate()
            .is_ok());
        let err = Teams::default()
            .with("alice", &["red"])
            .validate()
            .unwrap_err();
        assert!(err.contains("\"red\""), "{err}");
        assert!(Teams::default().with(" ", &["*"]).validate().is_err());
    }
}
