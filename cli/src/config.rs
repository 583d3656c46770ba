//! Named contexts: where the CLI talks to and how it signs, kept in a YAML file so that a user
//! switches between the local stack and deployed stages by name.
//!
//! The file is `$TITUS_CONFIG`, else `$XDG_CONFIG_HOME/titus/config.yaml`, else
//! `~/.config/titus/config.yaml`:
//!
//! ```yaml
//! current: prod
//! contexts:
//!   local: {url: "http://127.0.0.1:7001", token: local-dev-token}
//!   prod: {url: "https://abc123.execute-api.us-east-1.amazonaws.com", sigv4Region: us-east-1}
//! ```
//!
//! `--url`, `--token` and `--sigv4-region` (or their environment variables) win over the
//! context; `--context` (`TITUS_CONTEXT`) picks one other than `current`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::client::CliError;

pub const DEFAULT_URL: &str = "http://127.0.0.1:7001";
pub const DEFAULT_TOKEN: &str = "local-dev-token";

/// One named deployment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Context {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigv4_region: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

/// What the command line gave, before the context fills in the rest.
#[derive(Debug, Clone, Default)]
pub struct Given {
    pub context: Option<String>,
    pub url: Option<String>,
    pub token: Option<String>,
    pub sigv4_region: Option<String>,
}

/// Where the CLI talks to, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    pub token: String,
    pub sigv4_region: Option<String>,
}

/// The config file's path.
pub fn path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TITUS_CONFIG") {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("titus").join("config.yaml"))
}

impl Config {
    /// The file at `path`, or an empty config when there is none.
    pub fn load(path: &Path) -> Result<Config, CliError> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_yaml::from_str(&text).map_err(|e| {
                CliError::Invalid(format!(
                    "{} is not a valid titus config: {e}; expected `current:` and `contexts:` \
                     with url, token or sigv4Region per context",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(CliError::Invalid(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    pub fn save(&self, path: &Path) -> Result<(), CliError> {
        let text = serde_yaml::to_string(self)
            .map_err(|e| CliError::Invalid(format!("cannot write the config: {e}")))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| CliError::Invalid(format!("cannot create {}: {e}", dir.display())))?;
        }
        std::fs::write(path, text)
            .map_err(|e| CliError::Invalid(format!("cannot write {}: {e}", path.display())))
    }

    /// The target: the command line's values, then the chosen context's, then the defaults.
    pub fn resolve(&self, given: &Given) -> Result<Target, CliError> {
        let chosen = given.context.as_ref().or(self.current.as_ref());
        let context = match chosen {
            Some(name) => self.contexts.get(name).cloned().ok_or_else(|| {
                let known: Vec<&str> = self.contexts.keys().map(String::as_str).collect();
                CliError::Invalid(format!(
                    "no context named {name:?}; expected one of {known:?} (titus config list)"
                ))
            })?,
            None => Context::default(),
        };
        Ok(Target {
            url: given
                .url
                .clone()
                .or(context.url)
                .unwrap_or_else(|| DEFAULT_URL.to_owned()),
            token: given
                .token
                .clone()
                .or(context.token)
                .unwrap_or_else(|| DEFAULT_TOKEN.to_owned()),
            sigv4_region: given.sigv4_region.clone().or(context.sigv4_region),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        serde_yaml::from_str(
            "current: prod\ncontexts:\n  local: {url: 'http://127.0.0.1:7001', token: t1}\n  \
             prod: {url: 'https://api.example.com', sigv4Region: us-east-1}\n",
        )
        .unwrap()
    }

    #[test]
    fn the_current_context_fills_in_what_the_command_line_leaves_out() {
        let target = config().resolve(&Given::default()).unwrap();

        assert_eq!(
            target,
            Target {
                url: "https://api.example.com".to_owned(),
                token: DEFAULT_TOKEN.to_owned(),
                sigv4_region: Some("us-east-1".to_owned()),
            }
        );
    }

    #[test]
    fn the_command_line_wins_and_picks_another_context() {
        let given = Given {
            context: Some("local".to_owned()),
            token: Some("t2".to_owned()),
            ..Given::default()
        };

        let target = config().resolve(&given).unwrap();

        assert_eq!(target.url, "http://127.0.0.1:7001");
        assert_eq!(target.token, "t2");
        assert_eq!(target.sigv4_region, None);
    }

    #[test]
    fn an_unknown_context_is_refused_with_the_known_ones() {
        let given = Given {
            context: Some("staging".to_owned()),
            ..Given::default()
        };

        let err = config().resolve(&given).unwrap_err().to_string();

        assert!(
            err.contains("\"staging\"") && err.contains("[\"local\", \"prod\"]"),
            "{err}"
        );
    }

    #[test]
    fn no_file_is_the_defaults_and_a_saved_config_loads_back() {
        let dir = std::env::temp_dir().join(format!("titus-config-{}", std::process::id()));
        let path = dir.join("nested").join("config.yaml");
        assert_eq!(Config::load(&path).unwrap(), Config::default());
        assert_eq!(
            Config::default().resolve(&Given::default()).unwrap().url,
            DEFAULT_URL
        );

        config().save(&path).unwrap();

        assert_eq!(Config::load(&path).unwrap(), config());
        std::fs::write(&path, "contexts: {a: {uri: x}}").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("not a valid titus config"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
