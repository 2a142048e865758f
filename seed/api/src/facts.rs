//! Hardware facts as the ramdisk's agent reports them (`POST /v1/agent/facts`): CPUs, RAM, disks
//! with size/model/serial, NICs with MAC and link, DMI identity, and the boot mode. The agent
//! reads them from `/proc` and `/sys` (`ramdisk::agent::facts::collect`).

pub use crate::node::BootMode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Everything the agent reports about its machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Facts {
    pub cpus: u32,
    pub cpu_model: String,
    /// Installed memory in MiB: online memory blocks × block size (what the VM or DIMMs give),
    /// not MemTotal, which the kernel has already taken its share of.
    pub memory_mib: u64,
    pub disks: Vec<Disk>,
    pub nics: Vec<Nic>,
    pub dmi: Dmi,
    pub boot_mode: BootMode,
}

/// A block device that is a whole disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = FactsDisk)]
pub struct Disk {
    pub name: String,
    pub size_bytes: u64,
    pub model: String,
    pub serial: String,
    pub rotational: bool,
}

/// A network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Nic {
    pub name: String,
    pub mac: String,
    pub link: bool,
    pub driver: String,
}

/// The machine's SMBIOS identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Dmi {
    pub vendor: String,
    pub product: String,
    pub serial: String,
    pub uuid: String,
}
