//! Who gets a node's per-boot agent token: the iPXE script `GET /ipxe/<mac>` carries it
//! (`seed.token=`) only when
//!
//! 1. it is asked from the address the seed's DHCP server gave that MAC (the lease its ACK
//!    bound; in proxy mode the address the PXE client's REQUEST came from, or the one its
//!    broadcast REQUEST asked of the other server; before any DHCP exchange since start, the
//!    MAC's `[[netboot.nodes]]` reservation), and
//! 2. this token has not been handed out yet: once per node boot (a step's `op`), not once per
//!    fetch.
//!
//! Anything else gets the same script with the token taken off the command line (a ramdisk
//! booted from it has no agent API access), a warning naming the MAC and the asker, and no
//! "boot seen" for the node's watchdog. So a machine on the provisioning network that knows (or
//! sniffs) a MAC gets nothing usable from asking: it has not the node's address, and once the
//! node has its script there is nothing left to hand. What this does not stop is a machine
//! that takes over the node's address (ARP spoofing, or a spoofed DHCP exchange before the node
//! made its own) *and* asks before the node does: then the node's own ramdisk gets no token,
//! its agent's calls are refused and counted (`seed_agent_auth_failures_total`), and its step
//! fails on its timeout, loudly. In proxy DHCP mode the address is the PXE client's own word,
//! so only rule 2 holds there. Closing those needs the node to prove itself (TLS client
//! identity, a TPM): beyond a PXE network.
//!
//! What rule 2 costs: a node rebooted by hand in the middle of a step boots without its token
//! (the step then fails on its timeout, and a retry makes a new one). The seed's own boot
//! watchdog never reboots a node whose script was served. One reboot of the seed's own does
//! re-arm it: a resuming daemon orders the PXE boot of a step whose boot it has not seen
//! again, and the boot that cycle cuts short may still fetch its script before the cycle
//! happens; the boot after it then gets the token once more.

use super::{Daemon, MacAddr};
use netboot::BootAction;
use netboot::BootPolicy;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use tracing::{info, warn};

/// What the boot table keeps about handing out agent tokens (under `Daemon::boot`).
#[derive(Default)]
pub(super) struct Handouts {
    /// The address each known MAC's last DHCP exchange got.
    addresses: HashMap<MacAddr, Ipv4Addr>,
    /// `[[netboot.nodes]]` reservations: the address of a MAC not seen by DHCP since start.
    reserved: HashMap<MacAddr, Ipv4Addr>,
    /// The token each MAC's script last carried (so it is handed out once).
    handed: HashMap<MacAddr, String>,
    /// MACs of nodes whose PXE boot a resuming daemon ordered again (`resume_pxe_again`): when
    /// that power cycle is done, the boot it starts may have the token once more, even if the
    /// boot it cut short (in flight across the restart) fetched its script meanwhile.
    rearm: std::collections::HashSet<MacAddr>,
}

/// The `seed.token=` of a ramdisk's command line, if any.
fn token_of(action: &BootAction) -> Option<&str> {
    match action {
        BootAction::Kernel { cmdline, .. } => cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix("seed.token=")),
        _ => None,
    }
}

/// `action` without its `seed.token=`.
fn without_token(action: BootAction) -> BootAction {
    match action {
        BootAction::Kernel {
            kernel,
            initrd,
            cmdline,
        } => BootAction::Kernel {
            kernel,
            initrd,
            cmdline: cmdline
                .split_whitespace()
                .filter(|w| !w.starts_with("seed.token="))
                .collect::<Vec<_>>()
                .join(" "),
        },
        other => other,
    }
}

impl Daemon {
    /// A resuming daemon orders `macs`' node to PXE-boot again: see [`Handouts::rearm`].
    pub(super) fn rearm_on_reboot(&self, macs: &[crate::inventory::Mac]) {
        let mut t = self.boot.write();
        t.handouts.rearm.extend(macs.iter().map(|m| MacAddr(m.0)));
    }

    /// The seed power-cycled (or powered on) the node with `macs`: if a resume asked for it,
    /// this is the new boot, and its script carries the token again, once.
    pub(super) fn rebooted(&self, macs: &[crate::inventory::Mac]) {
        let mut t = self.boot.write();
        let h = &mut t.handouts;
        for m in macs.iter().map(|m| MacAddr(m.0)) {
            if h.rearm.remove(&m) {
                h.handed.remove(&m);
            }
        }
    }

    /// The `[[netboot.nodes]]` reservations (MAC → address): where a node's script may be asked
    /// from before the DHCP server has seen it since this start.
    pub fn set_reservations(&self, r: impl IntoIterator<Item = (MacAddr, Ipv4Addr)>) {
        self.boot.write().handouts.reserved = r.into_iter().collect();
    }

    /// DHCP gave `mac` the address `ip`: remembered for the MACs of known nodes only (a flood
    /// of spoofed MACs leaves no trace here).
    pub(super) fn note_address(&self, mac: MacAddr, ip: Ipv4Addr) {
        let mut t = self.boot.write();
        if t.by_mac.contains_key(&mac) {
            t.handouts.addresses.insert(mac, ip);
        }
    }

    /// The script action for `mac` asked from `peer` (see the module documentation).
    pub(super) fn script_action(&self, mac: MacAddr, peer: IpAddr) -> Option<BootAction> {
        let action = self.boot.read().by_mac.get(&mac)?.action.clone();
        let Some(token) = token_of(&action).map(str::to_string) else {
            self.script_served(mac);
            return Some(action);
        };
        let withheld = {
            let mut t = self.boot.write();
            let h = &mut t.handouts;
            let bound = h.addresses.get(&mac).or(h.reserved.get(&mac)).copied();
            if bound.map(IpAddr::V4) != Some(peer) {
                Some(format!(
                    "asked from {peer}, not the address DHCP gave this MAC ({})",
                    bound.map_or_else(|| "none yet".to_string(), |b| b.to_string())
                ))
            } else if h.handed.get(&mac) == Some(&token) {
                Some(format!(
                    "asked again from {peer}: this boot's token was handed out already"
                ))
            } else {
                h.handed.insert(mac, token);
                None
            }
        };
        match withheld {
            Some(why) => {
                warn!(%mac, %peer, why, "agent token withheld from the iPXE script");
                Some(without_token(action))
            }
            None => {
                info!(%mac, %peer, "agent token handed out with the iPXE script");
                self.script_served(mac);
                Some(action)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_comes_off_the_command_line() {
        let a = BootAction::Kernel {
            kernel: "k".into(),
            initrd: "i".into(),
            cmdline: "console=ttyS0 seed.url=http://s:1 seed.token=0123 BOOTIF=01-aa".into(),
        };
        assert_eq!(token_of(&a), Some("0123"));
        let b = without_token(a);
        assert_eq!(token_of(&b), None);
        match b {
            BootAction::Kernel { cmdline, .. } => {
                assert_eq!(cmdline, "console=ttyS0 seed.url=http://s:1 BOOTIF=01-aa")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(without_token(BootAction::Exit), BootAction::Exit);
    }
}
