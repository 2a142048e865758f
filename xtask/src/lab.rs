//! `cargo xtask lab …`: build the `seed` binary, then run `seed lab …` with the same
//! arguments (`cargo xtask lab up --nodes 3`, `cargo xtask lab status`, …). `up` first installs
//! the Debian packages the lab needs and, with `--seed`, builds the ramdisk the seed serves and
//! the tiny golden image it deploys.

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
