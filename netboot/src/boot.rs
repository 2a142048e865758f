//! What a node should boot: the one decision that DHCP, TFTP and HTTP all defer to.
//!
//! The policy is asked by MAC address. `None` means "unknown node": DHCP ignores it unless
//! discovery is on, and the HTTP script server answers with a script that exits to the next
//! boot device.

use crate::MacAddr;
use serde::{Deserialize, Serialize};

/// The boot action for one node, rendered into its iPXE script. Its `Debug` (what logs show)
/// hides the value of a `seed.token=` on the command line: that is a secret for the one node.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum BootAction {
    /// Boot a kernel and initrd fetched over HTTP, with a kernel command line. `kernel` and
    /// `initrd` are paths under the HTTP root or absolute `http://` URLs.
    Kernel {
        kernel: String,
        initrd: String,
        cmdline: String,
    },
    /// Boot from the local disk (iPXE `sanboot --no-describe --drive 0x80`, falling back to exit).
    LocalDisk,
    /// Leave iPXE and let the firmware try its next boot device.
    Exit,
}

impl std::fmt::Debug for BootAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BootAction::Kernel {
                kernel,
                initrd,
                cmdline,
            } => {
                let shown: Vec<&str> = cmdline
                    .split_whitespace()
                    .map(|w| {
                        if w.starts_with("seed.token=") {
                            "seed.token=<secret>"
                        } else {
                            w
                        }
                    })
                    .collect();
                f.debug_struct("Kernel")
                    .field("kernel", kernel)
                    .field("initrd", initrd)
                    .field("cmdline", &shown.join(" "))
                    .finish()
            }
            BootAction::LocalDisk => f.write_str("LocalDisk"),
            BootAction::Exit => f.write_str("Exit"),
        }
    }
}

/// How a node's network boot reaches its iPXE script.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Chain {
    /// An iPXE client (the NIC's ROM) gets its script URL straight away; a firmware PXE client
    /// gets the iPXE boot file by TFTP first.
    #[default]
    Direct,
    /// Every first DHCP exchange hands out the iPXE boot file by TFTP (`undionly.kpxe` for BIOS,
    /// `snponly.efi` for UEFI), even to a NIC whose ROM already is iPXE; the chainloaded iPXE then
    /// gets the script. For vendor PXE ROMs, or to replace an old iPXE ROM.
    Tftp,
}

impl std::fmt::Display for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Chain::Direct => "direct",
            Chain::Tftp => "tftp",
        })
    }
}

/// Decides per node what it boots. Implemented by the static table of `seed netboot` and by the
/// seed daemon from each node's lifecycle state. Must be cheap: it is called on every packet.
pub trait BootPolicy: Send + Sync + 'static {
    /// The action for this MAC, or `None` if the node is unknown.
    fn boot_action(&self, mac: MacAddr) -> Option<BootAction>;

    /// How this MAC reaches its script. The default is [`Chain::Direct`].
    fn chain(&self, _mac: MacAddr) -> Chain {
        Chain::Direct
    }

    /// Called when discovery enrolls a MAC that the policy did not know (DHCP saw it). The
    /// default does nothing; the daemon creates a node in `enroll` state. `false`: not taken
    /// now (the daemon's discovery rate limit or cap), ask again when the MAC is seen again.
    fn discovered(&self, _mac: MacAddr) -> bool {
        true
    }

    /// Called when this MAC's iPXE script was served: the node got through PXE to the boot
    /// server. The default does nothing; the daemon meets the node's boot watchdog with it.
    fn script_served(&self, _mac: MacAddr) {}

    /// The action of the iPXE script `GET /ipxe/<mac>` from `peer` gets (what the HTTP server
    /// renders). The default is [`BootPolicy::boot_action`], reported with
    /// [`BootPolicy::script_served`]; the daemon overrides it to hand a node's per-boot secret
    /// only to the address that node's DHCP exchange got, once.
    fn script_for(&self, mac: MacAddr, _peer: std::net::IpAddr) -> Option<BootAction> {
        let action = self.boot_action(mac);
        self.script_served(mac);
        action
    }

    /// Whether the DHCP server answers anything now. The default is yes; an HA daemon says yes
    /// only while it leads, so a follower never answers a client (an address already in its
    /// copy of the lease table included) and leaves no trace of the exchange.
    fn serving(&self) -> bool {
        true
    }

    /// The DHCP server acknowledged `ip` as `mac`'s address (a bound lease, or in proxy mode
    /// the address the PXE client asked from). The default does nothing.
    fn address_seen(&self, _mac: MacAddr, _ip: std::net::Ipv4Addr) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_agent_token() {
        let a = BootAction::Kernel {
            kernel: "k".into(),
            initrd: "i".into(),
            cmdline: "console=ttyS0 seed.url=http://s:1 seed.token=0123abcd BOOTIF=01-aa".into(),
        };
        let shown = format!("{a:?}");
        assert!(!shown.contains("0123abcd"), "{shown}");
        assert!(shown.contains("seed.token=<secret>"), "{shown}");
        assert!(shown.contains("seed.url=http://s:1"), "{shown}");
        assert_eq!(format!("{:?}", BootAction::Exit), "Exit");
    }
}
