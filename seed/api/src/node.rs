//! Nodes as the API shows them (`GET /v1/nodes`, `GET /v1/nodes/{name}`, the 202 of every node
//! request) and the operators' node requests.
//!
//! [`Properties`], [`Disk`], [`Partition`], [`BootMode`] and [`Capabilities`] are also what the
//! inventory stores (`seed::inventory` re-exports them): plain data, one definition.

use crate::agent::Progress;
use crate::facts::Facts;
use crate::Mac;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use utoipa::ToSchema;

/// The firmware a node boots with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BootMode {
    Bios,
    Uefi,
}

/// A boot mode that is neither `bios` nor `uefi`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a boot mode (bios or uefi)")]
pub struct BadBootMode(pub String);

impl FromStr for BootMode {
    type Err = BadBootMode;
    fn from_str(s: &str) -> Result<Self, BadBootMode> {
        match s.to_ascii_lowercase().as_str() {
            "bios" => Ok(BootMode::Bios),
            "uefi" => Ok(BootMode::Uefi),
            _ => Err(BadBootMode(s.into())),
        }
    }
}

impl fmt::Display for BootMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BootMode::Bios => "bios",
            BootMode::Uefi => "uefi",
        })
    }
}

/// A partition found by inspection: where it lies on its disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Partition {
    pub start_bytes: u64,
    pub size_bytes: u64,
}

/// A disk found by inspection (or declared at enrollment: size only).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Disk {
    /// Kernel name, e.g. `sda` or `vda`; empty when only declared.
    #[serde(default)]
    pub name: String,
    pub size_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<Partition>,
}

/// What a node is made of: declared at enrollment, then filled in by inspection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Properties {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<Disk>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_mode: Option<BootMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
}

impl Properties {
    /// The sum of the disks' sizes (0 when none is known).
    pub fn disk_bytes(&self) -> u64 {
        self.disks.iter().map(|d| d.size_bytes).sum()
    }
}

/// `key:value` pairs such as `profile:control,boot_mode:uefi`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
pub struct Capabilities(pub BTreeMap<String, String>);

impl Capabilities {
    /// The role this node is meant for (`profile:control`).
    pub fn profile(&self) -> Option<&str> {
        self.0.get("profile").map(String::as_str)
    }
}

/// Why a capabilities string (`key:value,…`) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadCapabilities {
    #[error("{0:?} is not key:value")]
    NotKeyValue(String),
    #[error("{0:?} has an empty key")]
    EmptyKey(String),
    #[error("{0:?} is given twice")]
    Twice(String),
}

impl FromStr for Capabilities {
    type Err = BadCapabilities;
    fn from_str(s: &str) -> Result<Self, BadCapabilities> {
        let mut map = BTreeMap::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (k, v) = item
                .split_once(':')
                .ok_or_else(|| BadCapabilities::NotKeyValue(item.into()))?;
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() {
                return Err(BadCapabilities::EmptyKey(item.into()));
            }
            if map.insert(k.to_string(), v.to_string()).is_some() {
                return Err(BadCapabilities::Twice(k.into()));
            }
        }
        Ok(Capabilities(map))
    }
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (k, v) in &self.0 {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{k}:{v}")?;
        }
        Ok(())
    }
}

/// A node as the API shows it: never its BMC password.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeView {
    pub name: String,
    pub macs: Vec<Mac>,
    /// The lifecycle state (`enroll`, `available`, `deploying`, `deploy failed`, …).
    pub state: String,
    /// Why a failed state failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Set (possibly empty: no reason given) while the node is in maintenance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub bmc: BmcView,
    pub properties: Properties,
    pub capabilities: Capabilities,
    /// The last facts report of the node's agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facts: Option<Facts>,
    /// The agent's last deploy progress (memory only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// Power-cycles by the PXE boot watchdog in the current (or last) step.
    pub boot_retries: u32,
    pub updated_ms: u64,
}

/// A node's BMC as the API shows it: address and user, never the password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BmcView {
    /// `ipmi` or `fake`.
    pub driver: String,
    pub address: String,
    pub port: u16,
    pub username: String,
}

/// The body of `POST /v1/nodes/{name}/deploy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// The image's name in the seed's image store.
    pub image: String,
    /// Which disk: `size>=N` (GiB), `serial=…`, `model=…`, `name=vda`; none = the smallest
    /// disk that fits the image.
    #[serde(default)]
    pub root_hint: Option<String>,
}

/// The optional body of `POST /v1/nodes/{name}/undeploy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UndeployRequest {
    /// Zero whole disks, not just partition tables and edges.
    #[serde(default)]
    pub full_wipe: bool,
}

/// The answer of `POST /v1/nodes`: the names enrolled (all of the list, or nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Enrolled {
    pub enrolled: Vec<String>,
}

/// The answer of `POST /v1/node/booted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Booted {
    pub node: String,
    pub state: String,
}
