//! `cargo xtask …`: every workflow of the project, the same commands for people and for CI.
//!
//! - `deps`: install the Debian packages the tests and the lab use (apt-get, as root).
//! - `fetch`: the pinned Debian packages into the offline cache (see `fetch.rs`).
//! - `ramdisk`: the deploy ramdisk, from the cache (see `ramdisk.rs`).
//! - `image build NAME` / `image list`: golden images, from the cache (see `image.rs`).
//! - `appliance`: the appliance's ISO, disk image and netboot form (see `appliance.rs`).
//! - `bundle`: the appliance bundle `seed-<version>/` + `.tar.zst` (see `bundle.rs`).
//! - `test`: deps, the ramdisk (fetching the offline cache), the tiny and debian images, the
//!   appliance, then fmt check, clippy, and the whole test suite (nextest, grouped so QEMU tests
//!   do not starve two cores), then short versions of the crash campaign, the API fuzzing and
//!   the wire fault campaign, and a short fuzz pass (its build runs beside the campaigns) (unless
//!   filtered or `--no-campaigns`). This is
//!   what `.ci/run` runs.
//! - `fuzz [--target T] [--time S]`: the libFuzzer targets of `tests/fuzz/` (see `fuzz.rs`).
//! - `campaign crash`: kill -9 of the daemon during fake-machine deploys (see `campaign.rs`).
//! - `schemathesis`: the API fuzzed against its OpenAPI document (see `schemathesis.rs`).
//! - `oac`: the reference os-apply-config / os-refresh-config for the seed-config parity test
//!   (see `oac.rs`); `test` installs it before the suite.

mod appliance;
mod bench;
mod bundle;
mod campaign;
mod debian;
mod deps;
mod fetch;
mod fuzz;
mod image;
mod lab;
mod oac;
mod ramdisk;
mod schemathesis;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    about = "seed's workflows: deps, test, lab, bench"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Install the Debian packages the tests, benchmarks and lab need (apt-get; root).
    Deps,
    /// Install deps, then run fmt check, clippy and every test (`--fuzz`: then a short fuzz
    /// pass). What CI runs.
    Test {
        /// Only run tests whose name matches (passed to nextest as a filter).
        filter: Vec<String>,
        /// Skip fmt and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Skip the short crash campaign (3 runs × 10 nodes), schemathesis run, wire fault
        /// campaign (1 lab × 1 node, 1% drop + 1% corrupt) and fuzz pass (5 s a target) that end a
        /// whole run (a filtered run skips them anyway).
        #[arg(long)]
        no_campaigns: bool,
    },
    /// Download the pinned Debian packages into the offline cache and verify them.
    Fetch(fetch::Args),
    /// Build the deploy ramdisk (kernel + initramfs with busybox, modules, agent) from the cache.
    Ramdisk(ramdisk::Args),
    /// Golden images: `image build NAME` (target/images/NAME), `image list`.
    Image(image::Args),
    /// Benchmarks: print the seed's figures beside a peer's, measured in the same run.
    Bench(bench::Args),
    /// The QEMU lab (`cargo xtask lab up --nodes 3`): builds seed, then runs `seed lab …`.
    Lab(lab::Args),
    /// The appliance bundle: seed, ramdisk, iPXE, images and a config, as a directory and a
    /// reproducible `.tar.zst` (`--image NAME`…, `--out DIR`, `--debug`).
    Bundle(bundle::Args),
    /// Fuzz: build the libFuzzer targets of tests/fuzz and run each (`--target T`) for
    /// `--time S` seconds; a table of executions, coverage and crashes (non-zero on a crash).
    Fuzz(fuzz::Args),
    /// The appliance: hybrid ISO, disk image (+ qcow2) and netboot kernel + initrd, in
    /// target/appliance/ (`--image NAME`… to carry, `--offline`).
    Appliance(appliance::Args),
    /// Campaigns: `campaign crash [--runs N] [--nodes M]` (kill -9 of the daemon mid-deploy).
    Campaign(campaign::Args),
    /// Fuzz the daemon's API against its OpenAPI document with schemathesis (from PyPI).
    Schemathesis(schemathesis::Args),
    /// Install the reference os-apply-config / os-refresh-config (PyPI, pinned) the
    /// seed-config parity test compares with; print the venv's bin directory.
    Oac,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Deps => deps::install(),
        Cmd::Test {
            filter,
            no_lint,
            no_campaigns,
        } => test(&filter, no_lint, !no_campaigns && filter.is_empty()),
        Cmd::Fetch(args) => fetch::run(args),
        Cmd::Ramdisk(args) => ramdisk::run(args),
        Cmd::Image(args) => image::run(args),
        Cmd::Bench(args) => bench::run(args),
        Cmd::Lab(args) => lab::run(args),
        Cmd::Bundle(args) => bundle::run(args),
        Cmd::Appliance(args) => appliance::run(args),
        Cmd::Fuzz(args) => fuzz::run(args),
        Cmd::Campaign(args) => campaign::run(args),
        Cmd::Schemathesis(args) => schemathesis::run(args),
        Cmd::Oac => oac::run(),
    }
}

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// `cmd` as a shell line: the variables it sets, the program, its arguments (not the variables
/// it removes: [`cargo`] removes a dozen).
fn shown(cmd: &Command) -> String {
    let sets = cmd
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}={}", k.to_string_lossy(), v?.to_string_lossy())));
    let words = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|w| w.to_string_lossy().into_owned());
    sets.chain(words).collect::<Vec<_>>().join(" ")
}

/// Run a command in the workspace root, echoing it, timing it, failing on a non-zero exit.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = shown(cmd);
    eprintln!("xtask: $ {shown}");
    let start = Instant::now();
    let status = cmd
        .current_dir(root())
        .status()
        .with_context(|| format!("starting {shown}"))?;
    eprintln!("xtask: ({:.1}s) {shown}", start.elapsed().as_secs_f64());
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

/// The cargo target directory (`CARGO_TARGET_DIR` or `target/`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// The cargo running xtask, without the variables cargo set for xtask itself
/// (`CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME`…): `ring`'s build script tracks them, so builds
/// from here and from the shell (or a test) would each rebuild rustls, tonic, etcd-client and
/// the seed in turn. (The tests crate's `cargo()` drops the same set.)
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for (k, _) in std::env::vars() {
        let per_crate = k == "OUT_DIR"
            || [
                "CARGO_MANIFEST_",
                "CARGO_PKG_",
                "CARGO_BIN_",
                "CARGO_CRATE_",
            ]
            .iter()
            .any(|p| k.starts_with(p))
            || [
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
            ]
            .contains(&k.as_str());
        if per_crate {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Seconds per fuzz target in `cargo xtask test`.
const CI_FUZZ_SECS: u64 = 5;

fn test(filter: &[String], no_lint: bool, with_campaigns: bool) -> Result<()> {
    let start = Instant::now();
    deps::install()?;
    // The QEMU tests boot the real ramdisk: fetch the pinned packages and build it first.
    ramdisk::run(ramdisk::Args {
        out: "target/ramdisk".into(),
    })?;
    // The image and disk-boot tests boot the tiny golden image, image_qemu_debian_boot the
    // Debian one (its base is built once per pin set and cached).
    image::build("tiny", &root().join("target/images/tiny"))?;
    // qemu_handoff_undercloud deploys the undercloud image (the static seed binary is shared
    // with the appliance's build below).
    image::build("undercloud", &root().join("target/images/undercloud"))?;
    let debian = Instant::now();
    image::build("debian", &root().join("target/images/debian"))?;
    eprintln!(
        "xtask: debian image built in {:.0}s",
        debian.elapsed().as_secs_f64()
    );
    // The qemu_appliance tests boot the appliance, and qemu_handoff_undercloud has it deploy
    // the undercloud (it carries the tiny and undercloud images, as by default).
    let appliance = Instant::now();
    appliance::build(
        &root().join("target/appliance"),
        &appliance::default_images(),
    )?;
    eprintln!(
        "xtask: appliance built in {:.0}s",
        appliance.elapsed().as_secs_f64()
    );
    if !no_lint {
        run(cargo().args(["fmt", "--all", "--check"]))?;
        run(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    // tests/tests/config_reference_parity.rs runs seed-config beside the reference.
    let oac_bin = oac::install()?;
    let nextest = Command::new("cargo-nextest")
        .arg("--version")
        .output()
        .is_ok();
    if nextest {
        let mut c = cargo();
        c.env(oac::ENV, &oac_bin);
        c.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
        if std::env::var_os("CI").is_some() {
            c.args(["--profile", "ci"]);
        }
        c.args(filter);
        run(&mut c)?;
    } else {
        let mut c = cargo();
        c.env(oac::ENV, &oac_bin);
        c.args(["test", "--workspace", "--no-fail-fast"]);
        c.args(filter);
        run(&mut c)?;
    }
    // Short versions of the standing proofs (issue 18): a few crash runs, a bounded API fuzz.
    if with_campaigns {
        let campaigns = Instant::now();
        // The fuzz crate is a second (nightly, release) build of most of the workspace, ~6 min
        // here: it runs beside the campaigns on one job, so the pass after them costs little.
        let fuzz_build = fuzz::build_in_background()?;
        campaign::crash(3, 10)?;
        schemathesis::fuzz(&schemathesis::Args::ci())?;
        eprintln!(
            "xtask: crash campaign and schemathesis in {:.0}s",
            campaigns.elapsed().as_secs_f64()
        );
        // One lab of one QEMU node (and the two broken BMCs) through a wire that drops and
        // corrupts 1% of the seed's frames each way: inspected and deployed, or failed with a
        // reason, never stuck (~4 min under TCG; the long run is `cargo xtask campaign wire`).
        let wire = Instant::now();
        campaign::wire(1, 1, 1, 1)?;
        eprintln!(
            "xtask: wire fault campaign in {:.0}s",
            wire.elapsed().as_secs_f64()
        );
        // Every fuzz target for a short, fixed time: the seed corpus and whatever a few
        // seconds of mutation reach must not panic (the long runs are `cargo xtask fuzz`).
        let fuzz_start = Instant::now();
        fuzz_build.wait()?;
        fuzz::run(fuzz::Args {
            targets: Vec::new(),
            time: CI_FUZZ_SECS,
        })?;
        eprintln!(
            "xtask: fuzz pass finished {:.0}s after the campaigns",
            fuzz_start.elapsed().as_secs_f64()
        );
    }
    eprintln!(
        "xtask: test finished in {:.0}s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
