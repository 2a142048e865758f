//! `cargo xtask campaign crash [--runs N] [--nodes M]`: the crash campaign (issue 18). Builds
//! `seed` and the tests crate's `seed-fake-farm` and `seed-crash-campaign`, then runs the
//! campaign (see `tests::crash_campaign`): `kill -9` of the daemon at random points of an
//! M-node stack deploy on fake machines, N runs, each resumed; prints the tally and fails when
//! a run did not end with every node `active`, none deployed twice, the stack CREATE_COMPLETE.

use anyhow::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    which: Which,
}

#[derive(Debug, clap::Subcommand)]
enum Which {
    /// kill -9 of the daemon during a stack deploy of fake machines, resumed: the tally.
    Crash {
        /// How many deploys (each killed once or twice).
        #[arg(long, default_value_t = 100)]
        runs: usize,
        /// Machines per deploy.
        #[arg(long, default_value_t = 50)]
        nodes: usize,
    },
}

pub fn run(args: Args) -> Result<()> {
    match args.which {
        Which::Crash { runs, nodes } => crash(runs, nodes),
    }
}

pub fn crash(runs: usize, nodes: usize) -> Result<()> {
    anyhow::ensure!(
        (1..=400).contains(&nodes),
        "--nodes: 1 to 400 (one BMC port and one loopback address each)"
    );
    crate::run(crate::cargo().args(["build", "--quiet", "-p", "seed", "--bin", "seed"]))?;
    crate::run(crate::cargo().args([
        "build",
        "--quiet",
        "-p",
        "tests",
        "--bin",
        "seed-fake-farm",
        "--bin",
        "seed-crash-campaign",
    ]))?;
    let target = crate::target_dir();
    let dir = target.join("campaign/crash");
    crate::run(
        std::process::Command::new(target.join("debug/seed-crash-campaign"))
            .arg(runs.to_string())
            .arg(nodes.to_string())
            .arg(&dir),
    )
}
