//! What keeps a task's container away from the host, from instance metadata and from other
//! tasks: one Docker bridge network with traffic between its containers off, and the host
//! firewall rules the agent installs and verifies at start. An agent that cannot put them in
//! place does not start, so it never runs a task without them.
//!
//! The rules (IPv4 and IPv6, filter table), for traffic that enters from the task bridge:
//! - to the host itself (`INPUT`, chain `TITUS-TASKS`): replies to connections the host opened,
//!   the credentials endpoint and the ports in `host_ports_open_to_tasks` are let through;
//!   everything else is rejected, so a task reaches no service bound on the host (the bridge's
//!   gateway address or any other);
//! - routed on (`DOCKER-USER`, which Docker consults first in `FORWARD`): instance metadata
//!   (169.254.169.254, fd00:ec2::254) is rejected; everything else goes out as usual.
//!
//! Docker itself drops traffic between two containers of the network (`enable_icc=false`) and
//! between its bridge networks. The rules are shared by every agent on the host and never
//! removed: they only take away.

use std::net::IpAddr;
use std::process::Output;

use tokio::process::Command;

use crate::config::AgentSettings;
use crate::docker::{DockerRuntime, NetworkInfo};
use crate::runtime::RuntimeError;

/// The chain that decides what task containers may reach on the host.
pub const INPUT_CHAIN: &str = "TITUS-TASKS";
/// Instance metadata, IPv4 and IPv6 (Nitro instances).
pub const IMDS_V4: &str = "169.254.169.254";
pub const IMDS_V6: &str = "fd00:ec2::254";

/// Why the host cannot be made safe for tasks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IsolationError {
    #[error("the task network {network:?} cannot be set up: {source}")]
    Network {
        network: String,
        source: RuntimeError,
    },
    #[error(
        "the Docker network {network:?} exists but {problem}; remove it (docker network rm \
         {network}) and start the agent again"
    )]
    UnsafeNetwork { network: String, problem: String },
    #[error("`{command}` failed: {message}; the agent needs root (CAP_NET_ADMIN) and {tool}")]
    Command {
        command: String,
        tool: &'static str,
        message: String,
    },
    #[error(
        "the firewall rule `{rule}` is not in place after it was installed; the agent runs no \
         task without it"
    )]
    NotVerified { rule: String },
}

/// IPv4 or IPv6: which tool applies a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn tool(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }
}

/// Where in its chain a rule goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// At the head, before anything already there (accepts, and the jumps into our chains).
    First,
    /// At the end (the final reject).
    Last,
}

/// One firewall rule, as `iptables` arguments after the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub family: Family,
    pub chain: &'static str,
    pub position: Position,
    pub spec: Vec<String>,
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} -A {} {}",
            self.family.tool(),
            self.chain,
            self.spec.join(" ")
        )
    }
}

/// The rules for a task bridge, in the order they are installed.
pub fn rules(bridge: &str, credentials_address: &str, open_ports: &[u16], ipv6: bool) -> Vec<Rule> {
    let rule = |family, chain, position, spec: &[&str]| Rule {
        family,
        chain,
        position,
        spec: spec.iter().map(|s| (*s).to_owned()).collect(),
    };
    let mut families = vec![Family::V4];
    if ipv6 {
        families.push(Family::V6);
    }
    let mut all = Vec::new();
    for family in families {
        let input = INPUT_CHAIN;
        // The reject goes in first (appended), the accepts then at the head in front of it.
        all.push(rule(
            family,
            input,
            Position::Last,
            &[
                "-m",
                "comment",
                "--comment",
                "titus: tasks reach no host service",
                "-j",
                "REJECT",
            ],
        ));
        for port in open_ports {
            let port = port.to_string();
            all.push(rule(
                family,
                input,
                Position::First,
                &["-p", "tcp", "--dport", &port, "-j", "ACCEPT"],
            ));
        }
        if family == Family::V4 {
            let address = format!("{credentials_address}/32");
            all.push(rule(
                family,
                input,
                Position::First,
                &["-d", &address, "-p", "tcp", "-j", "ACCEPT"],
            ));
        }
        all.push(rule(
            family,
            input,
            Position::First,
            &[
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ],
        ));
        all.push(rule(
            family,
            "INPUT",
            Position::First,
            &["-i", bridge, "-j", input],
        ));
        let (imds, forward) = match family {
            Family::V4 => (format!("{IMDS_V4}/32"), "DOCKER-USER"),
            // Docker makes no IPv6 DOCKER-USER chain unless IPv6 is on: FORWARD itself.
            Family::V6 => (format!("{IMDS_V6}/128"), "FORWARD"),
        };
        all.push(rule(
            family,
            forward,
            Position::First,
            &[
                "-i",
                bridge,
                "-d",
                &imds,
                "-m",
                "comment",
                "--comment",
                "titus: tasks reach no instance metadata",
                "-j",
                "REJECT",
            ],
        ));
    }
    all
}

/// The task network, ready: created, checked, fenced. Called by the agent's start.
pub async fn prepare_host(
    runtime: &DockerRuntime,
    settings: &AgentSettings,
) -> Result<NetworkInfo, IsolationError> {
    let name = &settings.task_network;
    let network =
        runtime
            .ensure_task_network(name)
            .await
            .map_err(|source| IsolationError::Network {
                network: name.clone(),
                source,
            })?;
    if network.inter_container_traffic {
        return Err(IsolationError::UnsafeNetwork {
            network: name.clone(),
            problem: "lets its containers talk to each other (enable_icc is not false)".to_owned(),
        });
    }
    if network.bridge != *name {
        return Err(IsolationError::UnsafeNetwork {
            network: name.clone(),
            problem: format!(
                "its bridge interface is {:?}, not {name:?}, so the firewall rules would not \
                 apply to it",
                network.bridge
            ),
        });
    }
    ensure_local_address(&settings.credentials_address).await?;
    let ipv6 = std::path::Path::new("/proc/net/if_inet6").exists();
    let rules = rules(
        &network.bridge,
        &settings.credentials_address,
        &settings.host_ports_open_to_tasks,
        ipv6,
    );
    install(&rules).await?;
    verify(&rules).await?;
    tracing::info!(
        network = %network.name,
        subnet = ?network.subnet,
        gateway = ?network.gateway,
        rules = rules.len(),
        ipv6,
        "task network isolated"
    );
    Ok(network)
}

/// Puts every rule in place that is not there yet.
pub async fn install(rules: &[Rule]) -> Result<(), IsolationError> {
    for rule in rules {
        if rule.chain == INPUT_CHAIN {
            // Creating an existing chain fails harmlessly.
            let _ = run(rule.family, &["-w", "-N", INPUT_CHAIN]).await?;
        }
        if present(rule).await? {
            continue;
        }
        let mut args: Vec<&str> = vec!["-w"];
        match rule.position {
            Position::First => args.extend(["-I", rule.chain, "1"]),
            Position::Last => args.extend(["-A", rule.chain]),
        }
        args.extend(rule.spec.iter().map(String::as_str));
        let output = run(rule.family, &args).await?;
        if !output.status.success() {
            return Err(IsolationError::Command {
                command: format!("{} {}", rule.family.tool(), args.join(" ")),
                tool: rule.family.tool(),
                message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
    }
    Ok(())
}

/// Checks that every rule is in place.
pub async fn verify(rules: &[Rule]) -> Result<(), IsolationError> {
    for rule in rules {
        if !present(rule).await? {
            return Err(IsolationError::NotVerified {
                rule: rule.to_string(),
            });
        }
    }
    Ok(())
}

async fn present(rule: &Rule) -> Result<bool, IsolationError> {
    let mut args: Vec<&str> = vec!["-w", "-C", rule.chain];
    args.extend(rule.spec.iter().map(String::as_str));
    Ok(run(rule.family, &args).await?.status.success())
}

async fn run(family: Family, args: &[&str]) -> Result<Output, IsolationError> {
    let tool = family.tool();
    Command::new(tool)
        .args(args)
        .output()
        .await
        .map_err(|e| IsolationError::Command {
            command: format!("{tool} {}", args.join(" ")),
            tool,
            message: e.to_string(),
        })
}

/// Adds `address`/32 to the loopback interface unless the host has it already.
pub async fn ensure_local_address(address: &str) -> Result<(), IsolationError> {
    let ip: IpAddr = address.parse().map_err(|_| IsolationError::Command {
        command: format!("ip addr add {address}"),
        tool: "iproute2",
        message: "not an IP address".to_owned(),
    })?;
    if std::net::UdpSocket::bind((ip, 0)).is_ok() {
        return Ok(());
    }
    let prefix = format!("{address}/32");
    let args = ["addr", "add", prefix.as_str(), "dev", "lo"];
    let output =
        Command::new("ip")
            .args(args)
            .output()
            .await
            .map_err(|e| IsolationError::Command {
                command: format!("ip {}", args.join(" ")),
                tool: "iproute2",
                message: e.to_string(),
            })?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() || stderr.contains("File exists") {
        Ok(())
    } else {
        Err(IsolationError::Command {
            command: format!("ip {}", args.join(" ")),
            tool: "iproute2",
            message: stderr.trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(rules: &[Rule]) -> Vec<String> {
        rules.iter().map(Rule::to_string).collect()
    }

    #[test]
    fn the_rules_fence_the_bridge_from_the_host_and_from_metadata() {
        let rules = rules("titus-tasks", "169.254.170.2", &[4566], false);
        let text = text(&rules);
        assert!(text.iter().all(|r| r.starts_with("iptables ")), "{text:#?}");
        assert!(text.contains(&"iptables -A INPUT -i titus-tasks -j TITUS-TASKS".to_owned()));
        assert!(text
            .contains(&"iptables -A TITUS-TASKS -d 169.254.170.2/32 -p tcp -j ACCEPT".to_owned()));
        assert!(text.contains(&"iptables -A TITUS-TASKS -p tcp --dport 4566 -j ACCEPT".to_owned()));
        assert!(text.iter().any(|r| r.starts_with(
            "iptables -A DOCKER-USER -i titus-tasks -d 169.254.169.254/32 -m comment"
        ) && r.ends_with("-j REJECT")));
        // The reject is the chain's last rule: installed first, at the end; the rest at the
        // head, in front of it.
        assert_eq!(rules[0].position, Position::Last);
        assert!(rules[0]
            .spec
            .ends_with(&["-j".to_owned(), "REJECT".to_owned()]));
        assert!(rules[1..].iter().all(|r| r.position == Position::First));
    }

    #[test]
    fn with_ipv6_the_same_fence_holds_and_metadata_is_rejected_on_forward() {
        let rules = rules("titus-tasks", "169.254.170.2", &[], true);
        let v6 = text(&rules)
            .into_iter()
            .filter(|r| r.starts_with("ip6tables "))
            .collect::<Vec<_>>();
        assert!(v6.contains(&"ip6tables -A INPUT -i titus-tasks -j TITUS-TASKS".to_owned()));
        assert!(v6
            .iter()
            .any(|r| r.starts_with("ip6tables -A FORWARD -i titus-tasks -d fd00:ec2::254/128")));
        assert!(
            v6.iter()
                .any(|r| r.starts_with("ip6tables -A TITUS-TASKS -m comment")
                    && r.ends_with("REJECT"))
        );
        // No credentials endpoint over IPv6: nothing but replies is let through.
        assert!(!v6.iter().any(|r| r.contains("169.254.170.2")));
    }
}
