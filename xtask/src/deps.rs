//! The Debian packages that tests, benchmarks and the lab need, installed with apt-get.
//!
//! Services in these packages (tftpd-hpa, nginx, kea) must never start on the host: they would
//! bind real interfaces. The install runs under a `policy-rc.d` that forbids service starts;
//! tests start their own instances inside network namespaces.

use anyhow::{bail, Context, Result};
use std::process::Command;

/// (package, why). Versions come from the machine's Debian release (bookworm).
pub const PACKAGES: &[(&str, &str)] = &[
    (
        "iproute2",
        "network namespaces and veth pairs for the tests",
    ),
    ("curl", "HTTP and TFTP client in tests"),
    (
        "openssl",
        "an independent SHA-256 fingerprint of the seed's CA in the TLS tests",
    ),
    (
        "isc-dhcp-client",
        "dhclient: a DHCP client nobody here wrote",
    ),
    ("udhcpc", "busybox's DHCP client"),
    ("kea-admin", "perfdhcp, the DHCP load generator"),
    (
        "kea-dhcp4-server",
        "the DHCP peer in benchmarks and ProxyDHCP tests",
    ),
    ("dnsmasq-base", "a second DHCP server beside our ProxyDHCP"),
    ("atftp", "TFTP client with windowsize"),
    ("tftpd-hpa", "the TFTP peer in benchmarks"),
    ("nginx-light", "the HTTP peer in benchmarks"),
    ("wrk", "HTTP load generator for benchmarks"),
    ("qemu-system-x86", "the lab's nodes"),
    ("ipxe-qemu", "iPXE option ROMs for QEMU's NICs"),
    ("ovmf", "UEFI firmware for nodes"),
    ("seabios", "BIOS firmware for nodes"),
    ("qemu-utils", "qemu-img for node disks"),
    ("ipmitool", "the IPMI client nobody here wrote"),
    ("openipmi", "ipmi_sim, a BMC simulator nobody here wrote"),
    ("protobuf-compiler", "protoc for etcd-client"),
    (
        "libprotobuf-dev",
        "google/protobuf/*.proto, which etcd-client's protos import",
    ),
    ("cpio", "initramfs inspection"),
    ("zstd", "image stream inspection and benchmarks"),
    (
        "gdisk",
        "sgdisk: reads back the deploy's GPT; the image boot tests partition their disks",
    ),
    ("dosfstools", "mkfs.vfat: the Debian image boot test's ESP"),
    ("e2fsprogs", "mke2fs and dumpe2fs for test disks"),
    ("busybox", "the image boot tests' fake seed and helpers"),
    (
        "extlinux",
        "the deploy test installs the BIOS bootloader on a loop disk",
    ),
    ("syslinux-common", "gptmbr.bin for the deploy test"),
    (
        "systemd-boot-efi",
        "systemd-bootx64.efi for the deploy test's ESP",
    ),
    (
        "tshark",
        "an independent decoder of the wire's pcap (router advertisements, checksums)",
    ),
    (
        "mmdebstrap",
        "builds the Debian golden image base offline from the cached debs",
    ),
    (
        "xorriso",
        "builds the appliance's hybrid ISO and disk image (El Torito BIOS + EFI, MBR/GPT)",
    ),
    (
        "mtools",
        "mdir/mcopy: the appliance tests read and edit the SEEDCFG FAT partition",
    ),
    (
        "python3-venv",
        "the venv `cargo xtask schemathesis` installs schemathesis (PyPI, pinned) into",
    ),
    (
        "apt-utils",
        "apt-ftparchive: the flat local repository mmdebstrap installs the base from",
    ),
];

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn missing() -> Vec<&'static str> {
    PACKAGES
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !installed(p))
        .collect()
}

/// Install whatever of [`PACKAGES`] is missing, then check that all are present: an install
/// can remove a package it conflicts with (a backported `qemu-utils` is removed when
/// bookworm's `qemu-system-x86` comes in), so a second pass installs what went missing.
/// A no-op when all are present.
pub fn install() -> Result<()> {
    for pass in 1..=2 {
        let missing = missing();
        if missing.is_empty() {
            if pass == 1 {
                eprintln!(
                    "xtask: deps: all {} Debian packages present",
                    PACKAGES.len()
                );
            }
            return Ok(());
        }
        if pass == 2 {
            eprintln!(
                "xtask: deps: the install removed {}; installing again",
                missing.join(" ")
            );
        }
        install_missing(&missing)?;
    }
    let missing = missing();
    if !missing.is_empty() {
        bail!(
            "still missing after installing: {} (see apt-get's output above)",
            missing.join(" ")
        );
    }
    Ok(())
}

fn install_missing(missing: &[&str]) -> Result<()> {
    eprintln!("xtask: deps: installing {}", missing.join(" "));
    if !nix_is_root() {
        bail!(
            "these Debian packages are missing and installing them needs root:\n  sudo apt-get install {}",
            missing.join(" ")
        );
    }
    let policy = std::path::Path::new("/usr/sbin/policy-rc.d");
    let own_policy = !policy.exists();
    if own_policy {
        std::fs::write(
            policy,
            "#!/bin/sh\n# written by cargo xtask deps: no service starts\nexit 101\n",
        )
        .context("writing /usr/sbin/policy-rc.d")?;
        set_mode(policy, 0o755)?;
    }
    let result = (|| {
        crate::run(Command::new("apt-get").args(["update", "-qq"]))?;
        crate::run(
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(missing),
        )
    })();
    if own_policy {
        let _ = std::fs::remove_file(policy);
    }
    result
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn set_mode(path: &std::path::Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}
