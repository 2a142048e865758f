//! The floating provisioning address: held by the leader only. On takeover the leader adds it
//! to its provisioning NIC and announces it with gratuitous ARP, so nodes (and switches) send to
//! the new leader at once; when its term ends it removes it. Kernel-socket mode only: on the
//! userspace wire the daemon's own stack holds the address.
//!
//! The address is changed with iproute2 (`ip addr replace|del`), present wherever the daemon
//! manages a NIC; the ARP frames go out through an AF_PACKET socket (`netboot::wire::device`).

use std::net::Ipv4Addr;
use std::process::Command;

/// Why the address could not be claimed or released.
#[derive(Debug, thiserror::Error)]
pub enum FloatError {
    #[error("ip {args}: {why}")]
    Ip { args: String, why: String },
    #[error("gratuitous ARP on {iface}")]
    Arp {
        iface: String,
        #[source]
        source: std::io::Error,
    },
}

/// An address that moves with leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloatingAddress {
    pub iface: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
}

fn ip(args: &[&str]) -> Result<(), FloatError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| FloatError::Ip {
            args: args.join(" "),
            why: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(FloatError::Ip {
            args: args.join(" "),
            why: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

impl FloatingAddress {
    fn cidr(&self) -> String {
        format!("{}/{}", self.ip, self.prefix)
    }

    /// Hold the address and announce it (3 gratuitous ARPs, 100 ms apart).
    pub fn claim(&self) -> Result<(), FloatError> {
        ip(&["addr", "replace", &self.cidr(), "dev", &self.iface])?;
        netboot::wire::device::send_gratuitous_arp(&self.iface, self.ip, 3).map_err(|source| {
            FloatError::Arp {
                iface: self.iface.clone(),
                source,
            }
        })
    }

    /// Let the address go (nothing to do if it is not held).
    pub fn release(&self) -> Result<(), FloatError> {
        match ip(&["addr", "del", &self.cidr(), "dev", &self.iface]) {
            Err(FloatError::Ip { why, .. })
                if why.contains("Cannot assign") || why.contains("Address not found") =>
            {
                Ok(())
            }
            r => r,
        }
    }
}
