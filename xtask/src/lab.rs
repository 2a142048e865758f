//! `cargo xtask lab …`: build the `seed` binary, then run `seed lab …` with the same
//! arguments (`cargo xtask lab up --nodes 3`, `cargo xtask lab status`, …). `up` first installs
//! the Debian packages the lab needs and, with `--seed`, builds the ramdisk the seed serves and
//! the tiny golden image it deploys. With `--appliance [--iso|--usb|--disk|--pxe]` it builds
//! the appliance (`cargo xtask appliance`) and boots it as the lab's seed VM: the flags become
//! `seed lab up --appliance-medium FILE --appliance-kind iso|usb|disk|pxe` (default: the ISO
//! as a CD) and its API is forwarded to 127.0.0.1:16385. The lab then also gets a management
//! host on the provisioning wire (`--management 10.80.0.3/24`: the BMCs routed there) carrying
//! 127.0.0.1:16386 to the control plane's address 10.80.0.1:6385.

use anyhow::{Context, Result};
use std::ffi::OsString;

/// Arguments passed through to `seed lab`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to pass to `seed lab` (up, status, down, destroy, fault; see `seed lab --help`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    args: Vec<OsString>,
}

pub fn run(args: Args) -> Result<()> {
    let up = args.args.first().is_some_and(|a| a == "up");
    let args = if up && args.args.iter().any(|a| a == "--appliance") {
        crate::deps::install()?;
        crate::fetch::run(crate::fetch::Args {
            offline: false,
            repin: false,
        })?;
        let dir = crate::root().join("target/appliance");
        crate::appliance::build(&dir, &crate::appliance::default_images())?;
        Args {
            args: appliance_args(&args.args, &dir),
        }
    } else {
        args
    };
    if up {
        // A fresh machine: QEMU, firmware, ipmitool…; and for `--seed` the ramdisk it serves.
        crate::deps::install()?;
        if args.args.iter().any(|a| a == "--seed") {
            crate::ramdisk::run(crate::ramdisk::Args {
                out: "target/ramdisk".into(),
            })?;
            // `seed lab up --seed` imports it into the seed's image store, so the lab can deploy.
            crate::image::build("tiny", &crate::root().join("target/images/tiny"))?;
        }
    }
    crate::run(crate::cargo().args(["build", "--quiet", "-p", "seed", "--bin", "seed"]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| crate::root().join("target"));
    let seed = target.join("debug").join("seed");
    // Not crate::run: a lab in the foreground runs until Ctrl-C, and its exit code is the
    // answer (no "failed" wrapper for a clean Ctrl-C).
    let status = std::process::Command::new(&seed)
        .arg("lab")
        .args(&args.args)
        .status()
        .with_context(|| format!("starting {}", seed.display()))?;
    if !status.success() {
        // seed already printed its error; pass its exit code on without another one.
        std::process::exit(status.code().unwrap_or(1));
    }
    Ok(())
}

/// `--appliance [--iso|--usb|--disk|--pxe]` as `seed lab up`'s appliance slot options.
fn appliance_args(args: &[OsString], dir: &std::path::Path) -> Vec<OsString> {
    let mut kind = "iso";
    let mut out = Vec::new();
    for a in args {
        match a.to_str() {
            Some("--appliance") => {}
            Some("--iso") => kind = "iso",
            Some("--usb") => kind = "usb",
            Some("--disk") => kind = "disk",
            Some("--pxe") => kind = "pxe",
            _ => out.push(a.clone()),
        }
    }
    let medium = match kind {
        "disk" => Some(dir.join("seed-appliance.img")),
        "pxe" => None,
        _ => Some(dir.join("seed-appliance.iso")),
    };
    if let Some(m) = medium {
        out.push("--appliance-medium".into());
        out.push(m.into());
    }
    out.push("--appliance-kind".into());
    out.push(kind.into());
    // The appliance's API on the host's 127.0.0.1:16385 (a restricted user NIC: no route out).
    if !args.iter().any(|a| a == "--appliance-forward") {
        out.push("--appliance-forward".into());
        out.push("16385:6385".into());
    }
    // A seed machine has a disk of its own, as a server has: what the undercloud deploys onto
    // once it adopts the machine (Stage N).
    if kind != "disk" && !args.iter().any(|a| a == "--appliance-disks") {
        out.extend(["--appliance-disks", "4"].map(OsString::from));
    }
    // The lab's management host on the appliance's provisioning network (its defaults and
    // README's: 10.80.0.0/24): the BMCs routed there, and the control plane's address
    // (10.80.0.1: the appliance's own by default, the floating one with `[ha]`) on the host's
    // 127.0.0.1:16386, whoever holds it.
    if !args.iter().any(|a| a == "--management") {
        out.extend(["--management", "10.80.0.3/24"].map(OsString::from));
        if !args.iter().any(|a| a == "--forward") {
            out.extend(["--forward", "16386=10.80.0.1:6385"].map(OsString::from));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appliance_flags_become_the_lab_slot_s() {
        let a: Vec<OsString> = ["up", "--nodes", "2", "--appliance", "--usb", "--uefi"]
            .iter()
            .map(OsString::from)
            .collect();
        let out = appliance_args(&a, std::path::Path::new("/t"));
        let out: Vec<&str> = out.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            out,
            [
                "up",
                "--nodes",
                "2",
                "--uefi",
                "--appliance-medium",
                "/t/seed-appliance.iso",
                "--appliance-kind",
                "usb",
                "--appliance-forward",
                "16385:6385",
                "--appliance-disks",
                "4",
                "--management",
                "10.80.0.3/24",
                "--forward",
                "16386=10.80.0.1:6385"
            ]
        );
    }
}
