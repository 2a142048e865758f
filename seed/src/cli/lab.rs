//! `seed lab`: the QEMU virtual datacenter. (Filled in by the lab work.)

/// Arguments of `seed lab`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("seed lab is not built yet")
}
