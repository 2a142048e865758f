//! The deploy agent that runs in the ramdisk: brings up the network, reports the machine's
//! facts to the seed's agent API, heartbeats, and carries out the seed's commands.
//!
//! The wire protocol (JSON over HTTP, base URL from the kernel command line `seed.url=`):
//! - `POST {url}/v1/agent/facts` with [`Report`] → [`Ack`];
//! - `POST {url}/v1/agent/heartbeat` with [`Heartbeat`] → [`Command`];
//! - `POST {url}/v1/agent/progress` with [`Progress`] → [`Command`] (during a deploy: phase,
//!   bytes written; the last one says done or failed with the reason);
//! - from the deployed image's first boot: `POST {url}/v1/node/booted` with
//!   `Authorization: Bearer <credential>` (the credential is in the identity file the deploy
//!   wrote on the state partition, see [`images::Identity`]).

pub mod deploy;
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
    /// Write an image to a disk, then report [`Phase::Done`] and wait (the seed sets the boot
    /// device and power-cycles, or sends [`Command::Reboot`]).
    Deploy(Box<DeployCommand>),
}

/// The work of a deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployCommand {
    /// The lifecycle's operation number; echoed in every [`Progress`] so a late report from an
    /// abandoned attempt is dropped.
    pub op: u64,
    /// The node's name at the seed (written to the identity file).
    pub node: String,
    pub manifest: images::Manifest,
    /// Where to GET the image stream (`http://…/images/<sha256>/rootfs.tar.zst`).
    pub stream_url: String,
    /// Which disk: `size>=N` (GiB), `serial=…`, `model=…`, `name=vda`; `None` = the smallest
    /// disk that fits the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_hint: Option<String>,
    /// The node's credential, written to the state partition (secret: never logged).
    pub credential: String,
    /// The seed's base URL as the deployed node should reach it.
    pub seed_url: String,
}

/// A deploy step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Choosing the disk, writing the partition table and filesystems.
    Partitioning,
    /// Streaming the image onto the root filesystem.
    Writing,
    /// Bootloader, fstab, identity.
    Finishing,
    /// Everything written and synced.
    Done,
    /// The deploy failed (see `error`); what was written has been wiped.
    Failed,
}

/// Progress of a deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub boot_mac: String,
    pub op: u64,
    pub phase: Phase,
    /// Bytes of the compressed stream read so far, and its size.
    pub bytes: u64,
    pub total: u64,
    /// Set with [`Phase::Failed`]: a reason a person can act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
