//! `cargo xtask lab …`: build the `seed` binary, then run `seed lab …` with the same
//! arguments (`cargo xtask lab up --nodes 3`, `cargo xtask lab status`, …). `up` first installs
//! the Debian packages the lab needs and, with `--seed`, builds the ramdisk the seed serves and
//! the tiny golden image it deploys. With `--appliance [--iso|--usb|--disk|--pxe]` it builds
//! the appliance (`cargo xtask appliance`) and boots it as the lab's seed VM: the flags become
//! `seed lab up --appliance-medium FILE --appliance-kind iso|usb|disk|pxe` (default: the ISO
//! as a CD) and its API is forwarded to 127.0.0.1:16385.

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
                "16385:6385"
            ]
        );
    }
}
