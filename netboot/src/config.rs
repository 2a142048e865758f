//! The `seed netboot` configuration file (TOML).
//!
//! One file describes the provisioning network (`interface`, `server_ip`), the services to run
//! (`[dhcp]`, `[tftp]`, `[http]`; a missing section turns that service off) and the static node
//! table (`[[nodes]]`: MAC, reserved address, hostname, boot action, `chain`). Raw serde types
//! reject unknown fields; [`NetbootConfig::from_toml`] validates across sections.

use crate::boot::Chain;
use crate::{dhcp, http, tftp, BootAction, BootPolicy, MacAddr};
use serde::Deserialize;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;

/// A validated netboot configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetbootConfig {
    /// The provisioning interface. Sockets are bound to it (`SO_BINDTODEVICE`) so nothing is
    /// served on any other interface of the machine.
    #[serde(default)]
    pub interface: Option<String>,
    /// The seed's own address on the provisioning network: DHCP server identifier, next-server,
    /// and the host of the HTTP URLs handed to iPXE.
    pub server_ip: Ipv4Addr,
    /// Directory for state that survives a restart (the DHCP lease file).
    #[serde(default = "default_state_dir")]
    pub state_dir: std::path::PathBuf,
    #[serde(default)]
    pub dhcp: Option<dhcp::DhcpConfig>,
    #[serde(default)]
    pub tftp: Option<tftp::TftpConfig>,
    #[serde(default)]
    pub http: Option<http::HttpConfig>,
    /// Run the services on the userspace wire (smoltcp) instead of kernel sockets.
    #[serde(default)]
    pub wire: Option<crate::wire::WireConfig>,
    /// Known nodes. A node listed here gets its reservation (if `ip` is set) and its boot action.
    #[serde(default)]
    pub nodes: Vec<NodeEntry>,
    /// `server_ip` floats between machines (an HA control plane's leader holds it): TFTP and
    /// HTTP listen on every address (of `interface`, when set) rather than on it alone, so that
    /// they serve it whenever it is here and this machine's own address always. Set by the
    /// seed daemon, not read from the file.
    #[serde(skip)]
    pub floating_server_ip: bool,
}

fn default_state_dir() -> std::path::PathBuf {
    "/var/lib/seed/netboot".into()
}

/// One known node in the static table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    pub mac: MacAddr,
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
    #[serde(default)]
    pub hostname: Option<String>,
    /// What the node boots; defaults to `exit` (known, but nothing to do).
    #[serde(default = "default_boot")]
    pub boot: BootAction,
    /// `"tftp"`: first hand out the iPXE boot file by TFTP even to an iPXE ROM (see [`Chain`]).
    #[serde(default)]
    pub chain: Chain,
}

fn default_boot() -> BootAction {
    BootAction::Exit
}

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid TOML")]
    Parse(#[from] toml::de::Error),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl NetbootConfig {
    /// Parse and validate a configuration from TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let cfg: NetbootConfig = toml::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Read, parse and validate a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let mut seen_mac = HashMap::new();
        let mut seen_ip = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if let Some(prev) = seen_mac.insert(n.mac, i) {
                return Err(ConfigError::Invalid(format!(
                    "nodes[{i}] repeats MAC {} of nodes[{prev}]",
                    n.mac
                )));
            }
            if let Some(ip) = n.ip {
                if let Some(prev) = seen_ip.insert(ip, i) {
                    return Err(ConfigError::Invalid(format!(
                        "nodes[{i}] reserves {ip}, already reserved by nodes[{prev}]"
                    )));
                }
            }
        }
        if let Some(i) = self.nodes.iter().position(|n| n.chain == Chain::Tftp) {
            if self.tftp.is_none() {
                return Err(ConfigError::Invalid(format!(
                    "nodes[{i}] has chain = \"tftp\" but no [tftp] section serves the boot file"
                )));
            }
        }
        if let Some(dhcp) = &self.dhcp {
            dhcp.check_nodes(&self.nodes)
                .map_err(|e| ConfigError::Invalid(format!("[dhcp] and [[nodes]] disagree: {e}")))?;
        }
        if let Some(wire) = &self.wire {
            wire.validate()
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
            if self.interface.is_some() {
                return Err(ConfigError::Invalid(
                    "interface binds kernel sockets; with [wire] name the NIC in wire.ifname"
                        .into(),
                ));
            }
        }
        if self.dhcp.is_none() && self.tftp.is_none() && self.http.is_none() {
            return Err(ConfigError::Invalid(
                "no service enabled: add a [dhcp], [tftp] or [http] section".into(),
            ));
        }
        Ok(())
    }

    /// The static boot policy described by `[[nodes]]`.
    pub fn static_policy(&self) -> StaticPolicy {
        StaticPolicy {
            table: self.nodes.iter().map(|n| (n.mac, n.boot.clone())).collect(),
            chains: self
                .nodes
                .iter()
                .filter(|n| n.chain != Chain::Direct)
                .map(|n| (n.mac, n.chain))
                .collect(),
        }
    }
}

/// The boot policy of the standalone netboot server: a fixed table from the config file.
#[derive(Debug, Clone, Default)]
pub struct StaticPolicy {
    table: HashMap<MacAddr, BootAction>,
    /// Nodes whose chain is not the default.
    chains: HashMap<MacAddr, Chain>,
}

impl BootPolicy for StaticPolicy {
    fn boot_action(&self, mac: MacAddr) -> Option<BootAction> {
        self.table.get(&mac).cloned()
    }

    fn chain(&self, mac: MacAddr) -> Chain {
        self.chains.get(&mac).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "server_ip = \"10.0.0.1\"\n[tftp]\nroot = \"/tmp\"\n";

    #[test]
    fn nodes_choose_their_chain() {
        let cfg = NetbootConfig::from_toml(&format!(
            "{BASE}[[nodes]]\nmac = \"52:54:00:00:00:01\"\nchain = \"tftp\"\n\
             [[nodes]]\nmac = \"52:54:00:00:00:02\"\n"
        ))
        .unwrap();
        let p = cfg.static_policy();
        assert_eq!(p.chain(MacAddr([0x52, 0x54, 0, 0, 0, 1])), Chain::Tftp);
        assert_eq!(p.chain(MacAddr([0x52, 0x54, 0, 0, 0, 2])), Chain::Direct);
        assert_eq!(p.chain(MacAddr([0x52, 0x54, 0, 0, 0, 3])), Chain::Direct);
        let bad = NetbootConfig::from_toml(&format!(
            "{BASE}[[nodes]]\nmac = \"52:54:00:00:00:01\"\nchain = \"http\"\n"
        ));
        assert!(matches!(bad, Err(ConfigError::Parse(_))), "{bad:?}");
        let e = NetbootConfig::from_toml(
            "server_ip = \"10.0.0.1\"\n[http]\nroot = \"/tmp\"\n\
             [[nodes]]\nmac = \"52:54:00:00:00:01\"\n[[nodes]]\nmac = \"52:54:00:00:00:02\"\n\
             chain = \"tftp\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("nodes[1]") && e.contains("[tftp]"), "{e}");
    }
}
