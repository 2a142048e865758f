//! `cargo xtask schemathesis [--max-examples N] [--max-time S]`: the daemon's API fuzzed
//! against its own OpenAPI document (issue 18). schemathesis comes from PyPI at a pinned
//! version, installed once into a venv under the offline cache (`~/.cache/seed/venv-
//! schemathesis`, reinstalled when the pin changes); the tests crate's `seed-api-fuzz` starts
//! the real `seed daemon` in a namespace of its own and runs `st run` on it with every check
//! (no 5xx, status codes, content types and bodies as the document says).

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::Command;

/// The pinned schemathesis (PyPI).
const PIN: &str = "schemathesis==4.32.5";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Test cases per API operation (schemathesis `--max-examples`).
    #[arg(long, default_value_t = 100)]
    pub max_examples: u32,
    /// Time budget of the whole run, in seconds (schemathesis `--max-time`).
    #[arg(long, default_value_t = 600)]
    pub max_time: u32,
}

impl Args {
    /// The short run `cargo xtask test` does.
    pub fn ci() -> Self {
        Self {
            max_examples: 10,
            max_time: 90,
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    fuzz(&args)
}

/// The venv's `st`, installed at [`PIN`] if it is not yet.
fn install() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    let venv = PathBuf::from(home).join(".cache/seed/venv-schemathesis");
    let st = venv.join("bin/st");
    let stamp = venv.join("seed-pin");
    if st.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == PIN) {
        return Ok(st);
    }
    // Debian's python3 (python3-venv), not whatever python is first on PATH.
    crate::run(
        Command::new("/usr/bin/python3")
            .args(["-m", "venv"])
            .arg(&venv),
    )?;
    crate::run(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        PIN,
    ]))?;
    std::fs::write(&stamp, PIN).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(st)
}

pub fn fuzz(args: &Args) -> Result<()> {
    let st = install()?;
    crate::run(crate::cargo().args(["build", "--quiet", "-p", "seed", "--bin", "seed"]))?;
    crate::run(crate::cargo().args(["build", "--quiet", "-p", "tests", "--bin", "seed-api-fuzz"]))?;
    crate::run(
        Command::new(crate::target_dir().join("debug/seed-api-fuzz"))
            .arg(st)
            .arg(args.max_examples.to_string())
            .arg(args.max_time.to_string()),
    )
}
