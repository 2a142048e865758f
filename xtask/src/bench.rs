//! `cargo xtask bench …`. (Filled in by the benchmark work.)

/// Which benchmark to run.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("no benchmark is built yet")
}
