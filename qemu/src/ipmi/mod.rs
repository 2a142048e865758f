//! IPMI v2.0 over LAN, BMC side, sans-IO: datagrams and `Instant`s in, datagrams and power
//! actions out. No sockets, clocks or processes here; `crate::bmc` is the UDP edge.
//!
//! Hand-written because no Rust crate implements the BMC (responder) side of RMCP+: `ipmi-rs`
//! is a client. Scope: RMCP presence ping, IPMI v1.5 session-less framing (Get Channel
//! Authentication Capabilities), RMCP+ Open Session + RAKP 1–4 for cipher suites 0–3, and the
//! App/Chassis commands `ipmitool power|chassis bootdev|mc info` send.

pub mod bmc;
pub mod crypto;
pub mod message;

pub use bmc::{BmcConfig, BmcCore, Output};

/// What Chassis Control asks the machine to do (IPMI §28.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    /// 0: power down (hard off).
    Off,
    /// 1: power up.
    On,
    /// 2: power cycle (off, then on; a powered-off machine stays off).
    Cycle,
    /// 3: hard reset.
    Reset,
    /// 5: soft off (ACPI power button).
    Soft,
}

impl PowerAction {
    /// Decode the Chassis Control data byte.
    pub fn from_control(b: u8) -> Option<Self> {
        Some(match b & 0x0f {
            0 => Self::Off,
            1 => Self::On,
            2 => Self::Cycle,
            3 => Self::Reset,
            5 => Self::Soft,
            _ => return None,
        })
    }
}

/// Where the machine boots from (boot flags parameter 5, byte 2, bits 5:2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootDevice {
    /// Network (PXE).
    Pxe,
    /// First hard disk.
    Disk,
    /// CD/DVD.
    Cdrom,
    /// Firmware setup.
    Bios,
}

impl BootDevice {
    /// Decode the device selector of boot flags byte 2 (`None` = no override).
    pub fn from_selector(b: u8) -> Option<Self> {
        Some(match (b >> 2) & 0x0f {
            0x1 => Self::Pxe,
            0x2 | 0x3 => Self::Disk,
            0x5 => Self::Cdrom,
            0x6 => Self::Bios,
            _ => return None,
        })
    }

    /// Encode as boot flags byte 2.
    pub fn selector(self) -> u8 {
        (match self {
            Self::Pxe => 0x1,
            Self::Disk => 0x2,
            Self::Cdrom => 0x5,
            Self::Bios => 0x6,
        }) << 2
    }
}

/// The boot override a power-on should use, from System Boot Options parameter 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootOverride {
    /// The device.
    pub device: BootDevice,
    /// Every boot (true) or the next one only (false).
    pub persistent: bool,
    /// EFI boot type requested.
    pub efi: bool,
}
