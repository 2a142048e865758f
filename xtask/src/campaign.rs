//! `cargo xtask campaign crash [--runs N] [--nodes M]`: the crash campaign (issue 18). Builds
//! `seed` and the tests crate's `seed-fake-farm` and `seed-crash-campaign`, then runs the
//! campaign (see `tests::crash_campaign`): `kill -9` of the daemon at random points of an
//! M-node stack deploy on fake machines, N runs, each resumed; prints the tally and fails when
//! a run did not end with every node `active`, none deployed twice, the stack CREATE_COMPLETE.
//!
//! `cargo xtask campaign wire [--runs N] [--nodes M] [--drop P] [--corrupt P]`: the fault
//! campaign on the wire (see `tests::wire_campaign`): QEMU nodes inspected and deployed through
//! a wire that drops and corrupts P% of frames, beside broken BMCs; fails when a node is stuck.

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
    /// QEMU nodes inspected and deployed through a faulty wire, beside broken BMCs: the tally.
    Wire {
        /// How many labs, one after the other.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// VM nodes per lab (two machines with broken BMCs are added).
        #[arg(long, default_value_t = 2)]
        nodes: usize,
        /// Percent of the seed's frames dropped, each way.
        #[arg(long = "drop", default_value_t = 5)]
        drop_pct: u8,
        /// Percent of the seed's frames corrupted, each way.
        #[arg(long = "corrupt", default_value_t = 2)]
        corrupt_pct: u8,
    },
}

pub fn run(args: Args) -> Result<()> {
    match args.which {
        Which::Crash { runs, nodes } => crash(runs, nodes),
        Which::Wire {
            runs,
            nodes,
            drop_pct,
            corrupt_pct,
        } => wire(runs, nodes, drop_pct, corrupt_pct),
    }
}

pub fn crash(runs: usize, nodes: usize) -> Result<()> {
    anyhow::ensure!(
        (1..=400).contains(&nodes),
        "--nodes: 1 to 400 (one BMC port and one loopback address each)"
    );
    run_bin(
        "seed-crash-campaign",
        &["seed-fake-farm"],
        &[runs.to_string(), nodes.to_string()],
        "crash",
    )
}

/// The fault campaign on the wire. Needs what the QEMU tests need (`cargo xtask ramdisk`,
/// `cargo xtask image build tiny`, which `cargo xtask test` runs first).
pub fn wire(runs: usize, nodes: usize, drop_pct: u8, corrupt_pct: u8) -> Result<()> {
    anyhow::ensure!(
        (1..=8).contains(&nodes),
        "--nodes: 1 to 8 (QEMU VMs under TCG on this machine)"
    );
    anyhow::ensure!(
        drop_pct <= 50 && corrupt_pct <= 50,
        "--drop and --corrupt are percentages up to 50"
    );
    let args = [runs, nodes, drop_pct.into(), corrupt_pct.into()].map(|a: usize| a.to_string());
    run_bin("seed-wire-campaign", &[], &args, "wire")
}

/// Build `seed` and the tests crate's `bin` (with the bins it starts, `beside`), then run it
/// with `args` and its directory under `target/campaign/<dir>`.
fn run_bin(bin: &str, beside: &[&str], args: &[String], dir: &str) -> Result<()> {
    crate::run(crate::cargo().args(["build", "--quiet", "-p", "seed", "--bin", "seed"]))?;
    let mut build = crate::cargo();
    build.args(["build", "--quiet", "-p", "tests"]);
    for b in beside.iter().chain([&bin]) {
        build.args(["--bin", b]);
    }
    crate::run(&mut build)?;
    let target = crate::target_dir();
    crate::run(
        std::process::Command::new(target.join("debug").join(bin))
            .args(args)
            .arg(target.join("campaign").join(dir)),
    )
}
