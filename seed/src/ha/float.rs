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

/// Run `ip args`: its standard output, or why it failed.
fn ip(args: &[&str]) -> Result<String, FloatError> {
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
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `ip -o -4 addr show` output lists `cidr` (`inet 10.0.0.1/24 …`).
fn lists(shown: &str, cidr: &str) -> bool {
    shown.lines().any(|l| {
        let mut words = l.split_whitespace();
        words.any(|w| w == "inet") && words.next() == Some(cidr)
    })
}

impl FloatingAddress {
    fn cidr(&self) -> String {
        format!("{}/{}", self.ip, self.prefix)
    }

    /// Hold the address and announce it (3 gratuitous ARPs, 100 ms apart).
    pub fn claim(&self) -> Result<(), FloatError> {
        self.keep_secondaries();
        ip(&["addr", "replace", &self.cidr(), "dev", &self.iface])?;
        self.announce()
    }

    /// The floating address shares a subnet with the NIC's own address, so one of them is the
    /// other's "secondary", and Linux deletes secondaries with their primary unless
    /// `promote_secondaries` is set: a DHCP client dropping the machine's lease would take the
    /// floating address along, and releasing a floating address that became primary would take
    /// the machine's own address. Best effort (a warning): the watch claims the address again.
    fn keep_secondaries(&self) {
        let path = format!("/proc/sys/net/ipv4/conf/{}/promote_secondaries", self.iface);
        if let Err(e) = std::fs::write(&path, "1") {
            tracing::warn!(%path, error = %e, "cannot keep secondary addresses on the NIC");
        }
    }

    /// Whether the NIC still has the address: a DHCP client renewing the node's own lease
    /// (busybox's scripts flush the NIC, dhclient's do on expiry) or an operator's `ip addr
    /// flush` removes it behind the daemon's back.
    pub fn held(&self) -> Result<bool, FloatError> {
        let shown = ip(&["-o", "-4", "addr", "show", "dev", &self.iface])?;
        Ok(lists(&shown, &self.cidr()))
    }

    /// Tell the segment who has the address now (gratuitous ARP).
    fn announce(&self) -> Result<(), FloatError> {
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
            r => r.map(drop),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_is_found_in_ip_addr_show_output() {
        let shown = "2: eth0    inet 10.80.0.10/24 brd 10.80.0.255 scope global eth0\\       valid_lft forever preferred_lft forever\n\
                     2: eth0    inet 10.80.0.1/24 scope global secondary eth0\\       valid_lft forever preferred_lft forever\n";
        assert!(lists(shown, "10.80.0.1/24"));
        assert!(lists(shown, "10.80.0.10/24"));
        assert!(
            !lists(shown, "10.80.0.1/16"),
            "another prefix is another address"
        );
        assert!(!lists(shown, "10.80.0.2/24"));
        assert!(!lists("", "10.80.0.1/24"));
    }
}
