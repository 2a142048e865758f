//! The virtual datacenter: QEMU nodes on a private wire, virtual BMCs speaking IPMI, and labs
//! that tie them together for tests, developers and users.
//!
//! - [`ipmi`]: the sans-IO IPMI v2.0 / RMCP+ BMC core.
//! - [`bmc`]: its UDP edge with fault controls, driving a [`node::Node`]; each BMC also
//!   answers on the lab's BMC network ([`spec::BmcNetwork`], 10.81.0.0/24) through the seed's
//!   userspace IP stack.
//! - [`node`] and [`qmp`]: one QEMU process and its control socket.
//! - [`wire`]: the multicast-on-loopback Ethernet all NICs share, and a sniffer/injector.
//! - [`spec`] and [`lab`]: `lab.json`, lab directories, and a running [`Lab`].
//! - `mgmt`: the lab's management host on the provisioning wire ([`spec::Management`]): the
//!   BMCs relayed at its address, and the host's TCP ports carried onto the wire.
//! - [`appliance`]: the lab's slot for the seed machine (an appliance VM booted from an ISO,
//!   USB stick, disk image or kernel + initrd, with its own BMC).

pub mod appliance;
pub mod bmc;
mod bmc_lan;
pub mod ipmi;
pub mod lab;
mod mgmt;
pub mod node;
pub mod qmp;
pub mod spec;
pub mod wire;

pub use appliance::{ApplianceSpec, Medium};
pub use bmc::{Faults, VirtualBmc};
pub use lab::Lab;
pub use spec::{BmcNetwork, Firmware, LabFile, NodeSpec, Plan};

use std::path::PathBuf;

/// Errors of the lab library.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A file or directory operation failed.
    #[error("{what} {}", path.display())]
    Io {
        /// What was being done ("reading", "creating" …).
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// `lab.json` or `faults.json` is not what we expect.
    #[error("parsing {}", path.display())]
    LabFile {
        /// Which file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// A program could not be started.
    #[error("starting {program}")]
    Spawn {
        /// Which.
        program: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// `qemu-img create` failed.
    #[error("qemu-img could not create {}: {stderr}", path.display())]
    QemuImg {
        /// The disk.
        path: PathBuf,
        /// What qemu-img said.
        stderr: String,
    },
    /// A BMC port could not be bound.
    #[error("binding the virtual BMC to {addr} (is another lab using it? try --bmc-port)")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// QMP failed.
    #[error("talking to QEMU")]
    Qmp(#[from] qmp::QmpError),
}

/// Display an error with its sources, `a: b: c` (for logs).
pub struct ErrorChain<'a>(pub &'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut s = self.0.source();
        while let Some(e) = s {
            write!(f, ": {e}")?;
            s = e.source();
        }
        Ok(())
    }
}
