//! What a node boots, from its lifecycle state: the ramdisk while a step needs the agent
//! (inspecting, deploying, cleaning), its disk when active, and nothing (iPXE exits) otherwise.

use super::Settings;
use crate::lifecycle::{Lifecycle, State};
use netboot::{BootAction, MacAddr};

/// The ramdisk kernel and initrd, relative to the HTTP root (installed there at start).
pub const RAMDISK_KERNEL: &str = "ramdisk/vmlinuz";
pub const RAMDISK_INITRD: &str = "ramdisk/initramfs.zst";

/// The boot action of a node: [`boot_action`] of its state, except that a deploying node whose
/// image is written boots its disk (it was told to; this covers a firmware that PXE-boots
/// anyway).
pub fn node_boot_action(lc: &Lifecycle, mac: MacAddr, s: &Settings) -> BootAction {
    if lc.state == State::Deploying && lc.image_written {
        return BootAction::LocalDisk;
    }
    boot_action(&lc.state, mac, s)
}

/// The boot action of a node in `state` that PXE-boots from `mac`.
pub fn boot_action(state: &State, mac: MacAddr, s: &Settings) -> BootAction {
    match state {
        State::Inspecting | State::Deploying | State::Cleaning => BootAction::Kernel {
            kernel: RAMDISK_KERNEL.into(),
            initrd: RAMDISK_INITRD.into(),
            cmdline: format!(
                "console=ttyS0 seed.url=http://{}:{} BOOTIF=01-{}",
                s.server_ip,
                s.http_port,
                mac.hyphenated()
            ),
        },
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
        }
    }

    #[test]
    fn states_map_to_boot_actions() {
        let mac = MacAddr([0x52, 0x54, 0, 0xaa, 0xbb, 0x01]);
        let s = settings();
        for st in [State::Inspecting, State::Deploying, State::Cleaning] {
            match boot_action(&st, mac, &s) {
                BootAction::Kernel {
                    kernel,
                    initrd,
                    cmdline,
                } => {
                    assert_eq!(kernel, "ramdisk/vmlinuz");
                    assert_eq!(initrd, "ramdisk/initramfs.zst");
                    assert_eq!(
                        cmdline,
                        "console=ttyS0 seed.url=http://10.0.0.1:8080 BOOTIF=01-52-54-00-aa-bb-01"
                    );
                }
                other => panic!("{st}: {other:?}"),
            }
        }
        assert_eq!(boot_action(&State::Active, mac, &s), BootAction::LocalDisk);
        let mut lc = Lifecycle {
            state: State::Deploying,
            ..Lifecycle::default()
        };
        assert!(matches!(
            node_boot_action(&lc, mac, &s),
            BootAction::Kernel { .. }
        ));
        lc.image_written = true;
        assert_eq!(node_boot_action(&lc, mac, &s), BootAction::LocalDisk);
        for st in [
            State::Enroll,
            State::Manageable,
            State::Available,
            State::InspectFailed { reason: "x".into() },
        ] {
            assert_eq!(boot_action(&st, mac, &s), BootAction::Exit, "{st}");
        }
    }
}
