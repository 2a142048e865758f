//! The deploy agent's API (the ramdisk's agent ↔ the seed), and the kernel command line that
//! carries its settings.
//!
//! JSON over HTTP, base URL from `seed.url=`; every agent call carries
//! `Authorization: Bearer <token>` with the per-boot token of `seed.token=`:
//! - `POST /v1/agent/facts` with [`Report`] → [`Ack`];
//! - `POST /v1/agent/heartbeat` with [`Heartbeat`] → [`Command`];
//! - `POST /v1/agent/progress` with [`Progress`] → [`Command`] (during a deploy or a wipe:
//!   phase, bytes written; the last one says done or failed with the reason).

use crate::facts::Facts;
use crate::manifest::Manifest;
use crate::Secret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What the agent posts once it is up.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Report {
    /// The MAC of the interface that got a DHCP lease (the one the node PXE-booted from, when
    /// the command line names it as `BOOTIF`).
    pub boot_mac: String,
    pub facts: Facts,
}

/// The seed's answer to a report.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Ack {
    /// The node name the seed knows this machine by.
    pub node: String,
    /// Seconds between heartbeats.
    pub heartbeat_secs: u64,
}

/// A periodic "still here".
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Heartbeat {
    pub boot_mac: String,
}

/// What the seed wants the agent to do next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Keep waiting.
    None,
    PowerOff,
    Reboot,
    /// Write an image to a disk, then report [`Phase::Done`] and wait (the seed sets the boot
    /// device and power-cycles, or sends [`Command::Reboot`]).
    Deploy(Box<DeployCommand>),
    /// Clean the node's disks (the lifecycle's cleaning step), then report [`Phase::Done`] and
    /// wait (the seed powers the node off).
    Wipe(WipeCommand),
}

/// The work of a cleaning: the lifecycle's wipe plan, carried to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WipeCommand {
    /// The lifecycle's operation number, echoed in every [`Progress`] (as for a deploy).
    pub op: u64,
    /// Zero whole disks instead of tables and partition edges.
    pub full: bool,
    /// The disks the seed knows the node has. Empty: the seed knows none (never inspected), so
    /// every disk the agent sees is cleaned.
    pub disks: Vec<WipeDisk>,
}

/// One disk of a [`WipeCommand`]. The agent finds it by serial when one is given, else by
/// kernel name, and refuses a disk it cannot find.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WipeDisk {
    /// Kernel name (`vda`); `#N` when the seed only has a declared, unnamed disk.
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub serial: String,
    pub size_bytes: u64,
    /// Byte ranges the seed asks zeroed besides what the agent finds itself (the disk's edges
    /// and the first and last MiB of each partition of the table it reads now).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extents: Vec<WipeExtent>,
}

/// A byte range to zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WipeExtent {
    pub offset: u64,
    pub len: u64,
}

/// The work of a deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeployCommand {
    /// The lifecycle's operation number; echoed in every [`Progress`] so a late report from an
    /// abandoned attempt is dropped.
    pub op: u64,
    /// The node's name at the seed (written to the identity file).
    pub node: String,
    pub manifest: Manifest,
    /// Where to GET the image stream (`http://…/images/<sha256>/rootfs.tar.zst`).
    pub stream_url: String,
    /// Which disk: `size>=N` (GiB), `serial=…`, `model=…`, `name=vda`; `None` = the smallest
    /// disk that fits the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_hint: Option<String>,
    /// The node's credential, written to the state partition (secret: `***` in `Debug`).
    #[schema(value_type = String)]
    pub credential: Secret,
    /// The seed's base URL as the deployed node should reach it.
    pub seed_url: String,
    /// With an `https://` `seed_url`: the SHA-256 (hex) of the seed's CA certificate, which the
    /// deployed node pins (written to the identity file beside `seed_url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed_ca: Option<String>,
}

/// A deploy (or wipe) step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Choosing the disk, writing the partition table and filesystems.
    Partitioning,
    /// Streaming the image onto the root filesystem.
    Writing,
    /// Bootloader, fstab, identity.
    Finishing,
    /// Zeroing disks (a [`Command::Wipe`]); `bytes` of `total` zeroed so far.
    Wiping,
    /// Everything written and synced.
    Done,
    /// The deploy failed (see `error`); what was written has been wiped.
    Failed,
}

/// Progress of a deploy or a wipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Progress {
    pub boot_mac: String,
    pub op: u64,
    pub phase: Phase,
    /// Bytes of the compressed stream read so far, and its size (a wipe: bytes zeroed).
    pub bytes: u64,
    pub total: u64,
    /// Set with [`Phase::Failed`]: a reason a person can act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Settings the agent takes from the kernel command line.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KernelArgs {
    /// `seed.url=http://…`: the agent API's base URL.
    pub url: Option<String>,
    /// `seed.token=…`: this boot's agent token, sent as `Authorization: Bearer` on every agent
    /// call (secret: never logged). `None` from a seed that gives none.
    pub token: Option<String>,
    /// `BOOTIF=01-52-54-00-…` (PXELINUX/iPXE convention): the MAC the node booted from.
    pub bootif: Option<String>,
    /// `seed.ca=<sha256 hex>`: with an `https://` `seed.url=`, the fingerprint of the seed's
    /// CA certificate, the only one the agent trusts.
    pub ca: Option<String>,
}

/// Hand-written so the token never reaches a log.
impl std::fmt::Debug for KernelArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelArgs")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<secret>"))
            .field("bootif", &self.bootif)
            .field("ca", &self.ca)
            .finish()
    }
}

impl KernelArgs {
    /// The `Authorization` header value of the agent calls, if there is a token.
    pub fn authorization(&self) -> Option<String> {
        self.token.as_ref().map(|t| format!("Bearer {t}"))
    }

    /// Parse `/proc/cmdline`.
    pub fn parse(cmdline: &str) -> Self {
        let mut k = Self::default();
        for word in cmdline.split_whitespace() {
            if let Some(v) = word.strip_prefix("seed.url=") {
                k.url = Some(v.trim_end_matches('/').to_string());
            } else if let Some(v) = word.strip_prefix("seed.token=") {
                k.token = Some(v.to_string()).filter(|t| !t.is_empty());
            } else if let Some(v) = word.strip_prefix("seed.ca=") {
                k.ca = Some(v.to_ascii_lowercase()).filter(|c| !c.is_empty());
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
        assert_eq!(k.token, None);
        assert_eq!(k.authorization(), None);
        assert_eq!(KernelArgs::parse("quiet"), KernelArgs::default());
        let k =
            KernelArgs::parse("seed.url=http://s:1 seed.token=0af3 BOOTIF=01-52-54-00-00-00-01");
        assert_eq!(k.token.as_deref(), Some("0af3"));
        assert_eq!(k.authorization().as_deref(), Some("Bearer 0af3"));
        assert!(!format!("{k:?}").contains("0af3"), "{k:?}");
        assert_eq!(KernelArgs::parse("seed.token=").token, None);
        let k = KernelArgs::parse("seed.url=https://s:8443 seed.ca=AB01 seed.token=t");
        assert_eq!(k.ca.as_deref(), Some("ab01"));
        assert_eq!(k.url.as_deref(), Some("https://s:8443"));
    }

    #[test]
    fn command_wire_format() {
        let c: Command = serde_json::from_str(r#"{"command":"power_off"}"#).unwrap();
        assert_eq!(c, Command::PowerOff);
        assert_eq!(
            serde_json::to_string(&Command::None).unwrap(),
            r#"{"command":"none"}"#
        );
        let w = Command::Wipe(WipeCommand {
            op: 7,
            full: false,
            disks: vec![WipeDisk {
                name: "vda".into(),
                serial: String::new(),
                size_bytes: 1 << 30,
                extents: vec![],
            }],
        });
        let j = serde_json::to_string(&w).unwrap();
        assert_eq!(
            j,
            r#"{"command":"wipe","op":7,"full":false,"disks":[{"name":"vda","size_bytes":1073741824}]}"#
        );
        assert_eq!(serde_json::from_str::<Command>(&j).unwrap(), w);
    }

    #[test]
    fn a_deploy_command_carries_its_credential_as_a_string_and_never_prints_it() {
        let d = DeployCommand {
            op: 3,
            node: "node1".into(),
            manifest: crate::manifest::tests::tiny(),
            stream_url: "http://s/images/x/rootfs.tar.zst".into(),
            root_hint: None,
            credential: "s3cret-credential".into(),
            seed_url: "http://s:8080".into(),
            seed_ca: None,
        };
        let c = Command::Deploy(Box::new(d));
        assert!(!format!("{c:?}").contains("s3cret"), "{c:?}");
        assert!(format!("{c:?}").contains("credential: ***"), "{c:?}");
        let j = serde_json::to_value(&c).unwrap();
        assert_eq!(
            j["credential"], "s3cret-credential",
            "the wire is unchanged: {j}"
        );
        assert_eq!(serde_json::from_value::<Command>(j).unwrap(), c);
    }
}
