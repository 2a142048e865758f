//! Power drivers: how the seed turns machines on and off and picks their boot device.
//!
//! [`PowerDriver`] is the one seam the daemon, the CLI and the simulator talk to; it is
//! object-safe (`Arc<dyn PowerDriver>`), its futures are boxed and `Send`. Two implementations:
//!
//! * [`IpmiDriver`] — IPMI 2.0 over LAN (RMCP+) through `ipmi-rs`, whose blocking I/O runs on
//!   tokio's blocking pool; one session per driver, reused and re-established on failure.
//! * [`FakePower`] over a [`FakeBmc`] — in process, with fault controls (slow, failing,
//!   disappearing, password changed) for the simulator and unit tests.
//!
//! The chassis commands `ipmi-rs` 0.6 does not offer (Get Chassis Status, Chassis Control, Set
//! System Boot Options) are encoded and decoded, sans-IO, in [`chassis`].

pub mod chassis;
mod fake;
mod ipmi;

pub use fake::{FakeBmc, FakePower};
pub use ipmi::{IpmiConfig, IpmiDriver};

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A boxed, `Send` future: what the object-safe [`PowerDriver`] methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What to do with a machine's power.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PowerAction {
    /// Power up.
    On,
    /// Hard power down (no OS shutdown).
    Off,
    /// Ask the OS to shut down (ACPI soft-off).
    SoftOff,
    /// Power down, wait, power up.
    Cycle,
    /// Hard reset.
    Reset,
}

impl PowerAction {
    /// The operator's word for it (`on`, `off`, `soft`, `cycle`, `reset`).
    pub fn as_str(self) -> &'static str {
        match self {
            PowerAction::On => "on",
            PowerAction::Off => "off",
            PowerAction::SoftOff => "soft",
            PowerAction::Cycle => "cycle",
            PowerAction::Reset => "reset",
        }
    }
}

impl fmt::Display for PowerAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a machine's chassis power is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PowerState {
    On,
    Off,
}

impl fmt::Display for PowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PowerState::On => "on",
            PowerState::Off => "off",
        })
    }
}

/// The device a machine boots from, as a boot override in its BMC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BootDevice {
    /// Network boot (PXE).
    Pxe,
    /// The default hard disk.
    Disk,
    /// The CD/DVD drive.
    Cdrom,
    /// The firmware's setup screen.
    Bios,
}

impl BootDevice {
    /// The operator's word for it (`pxe`, `disk`, `cdrom`, `bios`).
    pub fn as_str(self) -> &'static str {
        match self {
            BootDevice::Pxe => "pxe",
            BootDevice::Disk => "disk",
            BootDevice::Cdrom => "cdrom",
            BootDevice::Bios => "bios",
        }
    }
}

impl fmt::Display for BootDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A power driver: one machine's BMC, seen by the seed.
///
/// Every error reaches the operator as a [`PowerError`] naming the BMC.
pub trait PowerDriver: Send + Sync {
    /// A short name for logs and messages (`127.0.0.1:623`, `fake:node7`).
    fn target(&self) -> String;

    /// Apply a power action. Returns when the BMC accepted it (not when the OS is down).
    ///
    /// After a timeout the request is sent again (bounded retries), as ipmitool does: a cycle
    /// or reset whose answer was lost may be applied twice.
    fn power(&self, action: PowerAction) -> BoxFuture<'_, Result<(), PowerError>>;

    /// Read the chassis power state.
    fn status(&self) -> BoxFuture<'_, Result<PowerState, PowerError>>;

    /// Set the boot device for the next boot only, or for every boot (`persistent`).
    fn set_boot_device(
        &self,
        device: BootDevice,
        persistent: bool,
    ) -> BoxFuture<'_, Result<(), PowerError>>;
}

/// A BMC password: the seed's one secret wrapper, which never shows up in `Debug` output or
/// logs.
pub use crate::secret::Secret as Password;

/// Why a BMC operation failed, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum PowerError {
    /// The BMC rejected the user name or password (RAKP status, or a failed integrity check).
    #[error("BMC {bmc} rejected the credentials of user {username:?}: {reason}")]
    Credentials {
        bmc: String,
        username: String,
        reason: String,
    },
    /// Nothing answered within the timeout, on every attempt.
    #[error(
        "BMC {bmc} is unreachable: no answer after {attempts} attempt(s) of {timeout:?} each \
         ({last})"
    )]
    Unreachable {
        bmc: String,
        attempts: u32,
        timeout: Duration,
        last: String,
    },
    /// The BMC answered with a non-zero completion code.
    #[error("BMC {bmc} refused {command}: completion code {code:#04x} ({meaning})")]
    Refused {
        bmc: String,
        command: &'static str,
        code: u8,
        meaning: &'static str,
    },
    /// The BMC does not implement what was asked (command, protocol or cipher suite).
    #[error("BMC {bmc} does not support {what}")]
    Unsupported { bmc: String, what: String },
    /// The BMC answered something that is not a valid response.
    #[error("BMC {bmc} sent a malformed response to {command}: {detail}")]
    Malformed {
        bmc: String,
        command: &'static str,
        detail: String,
    },
    /// The IPMI session broke in a way that is neither a timeout nor a credentials problem.
    #[error("BMC {bmc}: IPMI session failed during {stage}: {detail}")]
    Session {
        bmc: String,
        stage: &'static str,
        detail: String,
    },
    /// The BMC's address does not resolve.
    #[error("cannot resolve BMC address {bmc}")]
    Resolve {
        bmc: String,
        #[source]
        source: std::io::Error,
    },
}

impl PowerError {
    /// A short, stable name of the error kind (for metrics and the simulator).
    pub fn kind(&self) -> &'static str {
        match self {
            PowerError::Credentials { .. } => "credentials",
            PowerError::Unreachable { .. } => "unreachable",
            PowerError::Refused { .. } => "refused",
            PowerError::Unsupported { .. } => "unsupported",
            PowerError::Malformed { .. } => "malformed",
            PowerError::Session { .. } => "session",
            PowerError::Resolve { .. } => "resolve",
        }
    }
}
