//! What a node boots, from its lifecycle state: the ramdisk while a step needs the agent
//! (inspecting, deploying, cleaning), its disk when active, and nothing (iPXE exits) otherwise;
//! and how it gets there (the node's `boot.chain`: straight to the script, or the iPXE boot file
//! by TFTP first).
//!
//! The ramdisk's command line carries `seed.url=` (where the agent API is) and `seed.token=` (the
//! node's per-boot agent token, [`super::agent_token`]). The boot table holds the full action;
//! the iPXE script served over HTTP carries the token only to the address DHCP gave the node,
//! once per boot ([`super::handout`]). The token rotates with every step and is void outside
//! inspecting, deploying and cleaning.

use super::Settings;
use crate::inventory::Node;
use crate::lifecycle::{Lifecycle, State};
use netboot::boot::Chain;
use netboot::{BootAction, MacAddr};

/// The ramdisk kernel and initrd, relative to the HTTP root (installed there at start).
pub const RAMDISK_KERNEL: &str = "ramdisk/vmlinuz";
pub const RAMDISK_INITRD: &str = "ramdisk/initramfs.zst";

/// One MAC's row in the daemon's boot table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootEntry {
    pub action: BootAction,
    pub chain: Chain,
}

/// The boot table row of `node`'s NIC `mac`; `token` is the node's current agent token.
pub fn entry(node: &Node, mac: MacAddr, s: &Settings, token: Option<&str>) -> BootEntry {
    BootEntry {
        action: node_boot_action(&node.lifecycle, mac, s, token),
        chain: node.boot.chain,
    }
}

/// The boot action of a node: [`boot_action`] of its state, except that a deploying node whose
/// image is written boots its disk (it was told to; this covers a firmware that PXE-boots
/// anyway).
pub fn node_boot_action(
    lc: &Lifecycle,
    mac: MacAddr,
    s: &Settings,
    token: Option<&str>,
) -> BootAction {
    if lc.state == State::Deploying && lc.image_written {
        return BootAction::LocalDisk;
    }
    boot_action(&lc.state, mac, s, token)
}

/// The boot action of a node in `state` that PXE-boots from `mac`; `token` (the node's agent
/// token for this boot) goes on the ramdisk's command line as `seed.token=`.
pub fn boot_action(state: &State, mac: MacAddr, s: &Settings, token: Option<&str>) -> BootAction {
    match state {
        State::Inspecting | State::Deploying | State::Cleaning => {
            let (url, ca) = s.agent_url();
            BootAction::Kernel {
                kernel: RAMDISK_KERNEL.into(),
                initrd: RAMDISK_INITRD.into(),
                cmdline: format!(
                    "console=ttyS0 seed.url={url}{}{} BOOTIF=01-{}",
                    ca.map(|c| format!(" seed.ca={c}")).unwrap_or_default(),
                    // Tokens are hex; anything else would break the command line: left off.
                    token
                        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric()))
                        .map(|t| format!(" seed.token={t}"))
                        .unwrap_or_default(),
                    mac.hyphenated()
                ),
            }
        }
        State::Active => BootAction::LocalDisk,
        _ => BootAction::Exit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::Timeouts;

    fn settings() -> Settings {
        Settings {
            server_ip: "10.0.0.1".parse().unwrap(),
            http_port: 8080,
            timeouts: Timeouts::default(),
            heartbeat_secs: 10,
            provide_after_inspect: true,
            agent_tls: None,
        }
    }

    #[test]
    fn states_map_to_boot_actions() {
        let mac = MacAddr([0x52, 0x54, 0, 0xaa, 0xbb, 0x01]);
        let s = settings();
        for st in [State::Inspecting, State::Deploying, State::Cleaning] {
            match boot_action(&st, mac, &s, Some("ab12")) {
                BootAction::Kernel {
                    kernel,
                    initrd,
                    cmdline,
                } => {
                    assert_eq!(kernel, "ramdisk/vmlinuz");
                    assert_eq!(initrd, "ramdisk/initramfs.zst");
                    assert_eq!(
                        cmdline,
                        "console=ttyS0 seed.url=http://10.0.0.1:8080 seed.token=ab12 \
                         BOOTIF=01-52-54-00-aa-bb-01"
                    );
                }
                other => panic!("{st}: {other:?}"),
            }
        }
        // No token (or one that would break the line): no `seed.token=`.
        for bad in [None, Some(""), Some("a b"), Some("x\nchain")] {
            match boot_action(&State::Deploying, mac, &s, bad) {
                BootAction::Kernel { cmdline, .. } => {
                    assert!(!cmdline.contains("seed.token"), "{cmdline}")
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            boot_action(&State::Active, mac, &s, Some("ab12")),
            BootAction::LocalDisk
        );
        let mut lc = Lifecycle {
            state: State::Deploying,
            ..Lifecycle::default()
        };
        assert!(matches!(
            node_boot_action(&lc, mac, &s, None),
            BootAction::Kernel { .. }
        ));
        lc.image_written = true;
        assert_eq!(node_boot_action(&lc, mac, &s, None), BootAction::LocalDisk);
        for st in [
            State::Enroll,
            State::Manageable,
            State::Available,
            State::InspectFailed { reason: "x".into() },
        ] {
            assert_eq!(boot_action(&st, mac, &s, None), BootAction::Exit, "{st}");
        }
    }

    #[test]
    fn the_entry_carries_the_nodes_chain() {
        use crate::inventory::{Bmc, Mac, PowerDriver, Secret};
        let mac = MacAddr([0x52, 0x54, 0, 0xaa, 0xbb, 0x01]);
        let bmc = Bmc {
            driver: PowerDriver::Fake,
            address: "h".into(),
            port: 623,
            username: "u".into(),
            password: Secret::new("p"),
            allow_ipmi15: false,
        };
        let mut node = crate::inventory::Node::new("n", vec![Mac(mac.0)], bmc, 0);
        let s = settings();
        assert_eq!(entry(&node, mac, &s, None).chain, Chain::Direct);
        node.boot.chain = Chain::Tftp;
        node.lifecycle.state = State::Inspecting;
        let e = entry(&node, mac, &s, Some("ab"));
        assert_eq!(e.chain, Chain::Tftp);
        assert_eq!(
            e.action,
            boot_action(&State::Inspecting, mac, &s, Some("ab"))
        );
    }
}
