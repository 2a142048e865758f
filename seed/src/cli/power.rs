//! `seed power` and `seed bootdev`. (Filled in by the power driver work.)

/// Arguments of `seed power`.
#[derive(Debug, clap::Args)]
pub struct PowerArgs {}

/// Arguments of `seed bootdev`.
#[derive(Debug, clap::Args)]
pub struct BootdevArgs {}

pub fn run_power(_args: PowerArgs) -> anyhow::Result<()> {
    anyhow::bail!("seed power is not built yet")
}

pub fn run_bootdev(_args: BootdevArgs) -> anyhow::Result<()> {
    anyhow::bail!("seed bootdev is not built yet")
}
