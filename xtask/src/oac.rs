//! The reference os-apply-config / os-refresh-config, for the parity test.
//!
//! `tests/tests/config_reference_parity.rs` runs seed-config beside the programs it
//! re-implements (os-apply-config, and dib-run-parts, which os-refresh-config brings and runs
//! for every phase) on the same inputs. They come from PyPI at pinned versions, installed once
//! into a venv under the offline cache (`~/.cache/seed/venv-oac`, reinstalled when the pins
//! change); `cargo xtask test` installs it before the suite and hands the venv's `bin`
//! directory to the tests as [`ENV`]. `cargo xtask oac` installs it and prints that directory.

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::Command;

/// The pinned reference implementations (PyPI).
const PINS: &[&str] = &["os-apply-config==14.1.0", "os-refresh-config==14.1.0"];

/// The variable the parity test reads the venv's `bin` directory from.
pub const ENV: &str = "SEED_OAC_BIN";

pub fn run() -> Result<()> {
    println!("{}", install()?.display());
    Ok(())
}

/// The venv's `bin` directory (`os-apply-config`, `os-refresh-config`, `dib-run-parts`),
/// installed at [`PINS`] if it is not yet.
pub fn install() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    let venv = PathBuf::from(home).join(".cache/seed/venv-oac");
    let bin = venv.join("bin");
    let stamp = venv.join("seed-pin");
    let pins = PINS.join(" ");
    let installed = ["os-apply-config", "os-refresh-config", "dib-run-parts"]
        .iter()
        .all(|p| bin.join(p).is_file());
    if installed && std::fs::read_to_string(&stamp).is_ok_and(|s| s == pins) {
        return Ok(bin);
    }
    // Debian's python3 (python3-venv), not whatever python is first on PATH.
    crate::run(
        Command::new("/usr/bin/python3")
            .args(["-m", "venv"])
            .arg(&venv),
    )?;
    crate::run(
        Command::new(bin.join("pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(PINS),
    )?;
    std::fs::write(&stamp, &pins).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(bin)
}
