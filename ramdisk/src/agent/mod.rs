//! The deploy agent that runs in the ramdisk: brings up the network, reports the machine's
//! facts to the seed's agent API, heartbeats, and carries out the seed's commands.
//!
//! The wire protocol (JSON over HTTP, base URL from the kernel command line `seed.url=`):
//! - `POST {url}/v1/agent/facts` with [`Report`] → [`Ack`];
//! - `POST {url}/v1/agent/heartbeat` with [`Heartbeat`] → [`Command`].

pub mod facts;

use serde::{Deserialize, Serialize};

/// What the agent posts once it is up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The MAC of the interface that got a DHCP lease (the one the node PXE-booted from, when
    /// the command line names it as `BOOTIF`).
    pub boot_mac: String,
    pub facts: facts::Facts,
}

/// The seed's answer to a report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ack {
    /// The node name the seed knows this machine by.
    pub node: String,
    /// Seconds between heartbeats.
    pub heartbeat_secs: u64,
}

/// A periodic "still here".
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    pub boot_mac: String,
}

/// What the seed wants the agent to do next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Keep waiting.
    None,
    PowerOff,
    Reboot,
}

/// Settings the agent takes from the kernel command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelArgs {
    /// `seed.url=http://…`: the agent API's base URL.
    pub url: Option<String>,
    /// `BOOTIF=01-52-54-00-…` (PXELINUX/iPXE convention): the MAC the node booted from.
    pub bootif: Option<String>,
}

impl KernelArgs {
    /// Parse `/proc/cmdline`.
    pub fn parse(cmdline: &str) -> Self {
        let mut k = Self::default();
        for word in cmdline.split_whitespace() {
            if let Some(v) = word.strip_prefix("seed.url=") {
                k.url = Some(v.trim_end_matches('/').to_string());
            } else if let Some(v) = word.strip_prefix("BOOTIF=") {
                // "01-" is the ARP hardware type (Ethernet).
                let mac = v.strip_prefix("01-").unwrap_or(v);
                k.bootif = Some(mac.replace('-', ":").to_ascii_lowercase());
            }
        }
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_args() {
        let k = KernelArgs::parse(
            "console=ttyS0 seed.url=http://10.0.0.1:8080/ BOOTIF=01-52-54-00-AB-CD-EF quiet",
        );
        assert_eq!(k.url.as_deref(), Some("http://10.0.0.1:8080"));
        assert_eq!(k.bootif.as_deref(), Some("52:54:00:ab:cd:ef"));
        assert_eq!(KernelArgs::parse("quiet"), KernelArgs::default());
    }

    #[test]
    fn command_wire_format() {
        let c: Command = serde_json::from_str(r#"{"command":"power_off"}"#).unwrap();
        assert_eq!(c, Command::PowerOff);
        assert_eq!(
            serde_json::to_string(&Command::None).unwrap(),
            r#"{"command":"none"}"#
        );
    }
}
