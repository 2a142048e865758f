//! `cargo xtask lab …`. (Filled in by the lab work.)

/// Arguments passed through to `seed lab`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("the lab is not built yet")
}
