//! `cargo xtask fuzz [--target T]… [--time S]`: the libFuzzer targets of `tests/fuzz/` (issue
//! 18), each run for S seconds, then a table of executions, exec/s, coverage and crashes.
//!
//! Fuzzing needs nightly (libFuzzer's coverage instrumentation) and `cargo-fuzz`; both are
//! installed here when missing, so a fresh CI machine needs no manual step. Runs write new
//! corpus entries to a scratch directory and read the repository's seed corpus
//! (`tests/fuzz/corpus/<target>/`) without adding to it; a crash's input lands in
//! `tests/fuzz/artifacts/<target>/` (ignored by git) and fails the command.
//!
//! Built without a sanitizer (`-s none`) and with debug assertions and overflow checks: the
//! fuzzed code is safe Rust, where AddressSanitizer finds nothing a panic would not, at twice
//! the build time and half the executions; an overflow is a finding as in the test builds.

use anyhow::{bail, Context, Result};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// The cargo-fuzz release installed when missing (`cargo install --locked`).
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// The fuzz crate, relative to the workspace root.
const FUZZ_DIR: &str = "tests/fuzz";
/// Build flags shared by `build` and `run` (the same flags: `run` must not rebuild).
const FLAGS: &[&str] = &[
    "--fuzz-dir",
    FUZZ_DIR,
    "--sanitizer",
    "none",
    "--debug-assertions",
];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this target (repeatable); default: every target in tests/fuzz/fuzz_targets.
    #[arg(long = "target")]
    pub targets: Vec<String>,
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    pub time: u64,
}

/// One target's run, from libFuzzer's output.
#[derive(Debug, Default)]
struct Figures {
    runs: u64,
    exec_per_sec: u64,
    cov: u64,
    ft: u64,
    corpus: u64,
    /// The crash input libFuzzer wrote, if it found one.
    crash: Option<String>,
    failed: bool,
}

pub fn run(args: Args) -> Result<()> {
    let start = Instant::now();
    let root = crate::root();
    ensure_nightly()?;
    ensure_cargo_fuzz()?;
    let all = targets(&root)?;
    let chosen = if args.targets.is_empty() {
        all
    } else {
        for t in &args.targets {
            if !all.contains(t) {
                bail!("no fuzz target {t:?}; the targets are: {}", all.join(", "));
            }
        }
        args.targets.clone()
    };
    crate::run(fuzz().arg("build").args(FLAGS))?;
    eprintln!(
        "xtask: fuzz: built in {:.0}s",
        start.elapsed().as_secs_f64()
    );
    let scratch = tempfile::Builder::new()
        .prefix("seed-fuzz-")
        .tempdir()
        .context("creating the scratch directory")?;
    let mut results = Vec::new();
    for t in &chosen {
        let f = run_target(&root, scratch.path(), t, args.time)?;
        results.push((t.clone(), f));
    }
    print_table(&results);
    eprintln!(
        "xtask: fuzz: {} target(s) × {}s, {:.0}s in all",
        results.len(),
        args.time,
        start.elapsed().as_secs_f64()
    );
    let bad: Vec<&str> = results
        .iter()
        .filter(|(_, f)| f.failed)
        .map(|(t, _)| t.as_str())
        .collect();
    if !bad.is_empty() {
        bail!(
            "fuzz target(s) crashed: {} (inputs in {FUZZ_DIR}/artifacts/; reproduce with \
             `cargo +nightly fuzz run {} TARGET INPUT`)",
            bad.join(", "),
            FLAGS.join(" ")
        );
    }
    Ok(())
}

/// The fuzz build running in the background ([`build_in_background`]).
#[derive(Debug)]
pub struct Build {
    child: std::process::Child,
    log: PathBuf,
}

/// Start building the fuzz targets (nightly and cargo-fuzz installed first, in the foreground)
/// on one job, its output in `target/fuzz-build.log`; [`Build::wait`] for it, then [`run`]
/// finds everything built.
pub fn build_in_background() -> Result<Build> {
    ensure_nightly()?;
    ensure_cargo_fuzz()?;
    let log = crate::target_dir().join("fuzz-build.log");
    let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let child = fuzz()
        .arg("build")
        .args(FLAGS)
        .env("CARGO_BUILD_JOBS", "1")
        // Its own process group: dropped unwaited (a campaign failed), the whole build stops.
        .process_group(0)
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .context("starting cargo fuzz build")?;
    eprintln!(
        "xtask: fuzz: building in the background (log {})",
        log.display()
    );
    Ok(Build { child, log })
}

impl Drop for Build {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", "--", &format!("-{}", self.child.id())])
                .status();
            let _ = self.child.wait();
        }
    }
}

impl Build {
    /// Wait for the build; its log's tail in the error when it failed.
    pub fn wait(mut self) -> Result<()> {
        let status = self.child.wait().context("waiting for cargo fuzz build")?;
        if !status.success() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "cargo fuzz build failed ({status}); {}:\n{}",
                self.log.display(),
                tail.join("\n")
            );
        }
        Ok(())
    }
}

/// `cargo fuzz …` on nightly, whatever toolchain runs xtask (`rustup run` overrides
/// `RUSTUP_TOOLCHAIN`; `CARGO` would point at the stable cargo running us).
fn fuzz() -> Command {
    let mut c = Command::new("rustup");
    c.args(["run", "nightly", "cargo", "fuzz"])
        .env_remove("CARGO");
    c
}

fn ensure_nightly() -> Result<()> {
    let have = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success());
    match have {
        Ok(true) => return Ok(()),
        Ok(false) => {}
        Err(e) => {
            bail!("fuzzing needs rustup and the nightly toolchain; rustup did not start: {e}")
        }
    }
    eprintln!("xtask: fuzz: the nightly toolchain is missing; installing it (rustup)");
    crate::run(Command::new("rustup").args([
        "toolchain",
        "install",
        "nightly",
        "--profile",
        "minimal",
    ]))
    .context(
        "fuzzing needs the nightly Rust toolchain (libFuzzer's coverage instrumentation), \
             and `rustup toolchain install nightly` failed (is static.rust-lang.org reachable?)",
    )
}

fn ensure_cargo_fuzz() -> Result<()> {
    let have = fuzz()
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if have {
        return Ok(());
    }
    eprintln!("xtask: fuzz: cargo-fuzz is missing; installing {CARGO_FUZZ_VERSION}");
    crate::run(crate::cargo().args([
        "install",
        "cargo-fuzz",
        "--locked",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))
    .context("installing cargo-fuzz (crates.io)")
}

/// The targets: one file each in `tests/fuzz/fuzz_targets/`.
fn targets(root: &Path) -> Result<Vec<String>> {
    let dir = root.join(FUZZ_DIR).join("fuzz_targets");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "rs") {
            if let Some(stem) = p.file_stem().and_then(|s| s.to_str()) {
                out.push(stem.to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}

fn run_target(root: &Path, scratch: &Path, target: &str, secs: u64) -> Result<Figures> {
    // New entries go to the first corpus directory: a scratch one; the seed corpus is read only.
    let grown = scratch.join("corpus").join(target);
    std::fs::create_dir_all(&grown)?;
    let seeds: PathBuf = root.join(FUZZ_DIR).join("corpus").join(target);
    let log = scratch.join(format!("{target}.log"));
    let mut c = fuzz();
    c.arg("run")
        .args(FLAGS)
        .arg(target)
        .arg(&grown)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={secs}"))
        .arg("-print_final_stats=1")
        .env("SEED_FUZZ_SCRATCH", scratch)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?);
    eprintln!("xtask: fuzz: {target} for {secs}s (log {})", log.display());
    let status = c
        .current_dir(root)
        .status()
        .with_context(|| format!("starting cargo fuzz run {target}"))?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let mut f = figures(&text);
    f.failed = !status.success();
    if f.failed {
        // The end of libFuzzer's report: the panic message and the stack.
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        for l in tail.iter().rev() {
            eprintln!("  {l}");
        }
    }
    Ok(f)
}

/// Read libFuzzer's final stats and its last status line.
fn figures(log: &str) -> Figures {
    let mut f = Figures::default();
    let num = |s: &str| s.trim().parse::<u64>().unwrap_or(0);
    for line in log.lines() {
        if let Some(v) = line.strip_prefix("stat::number_of_executed_units:") {
            f.runs = num(v);
        } else if let Some(v) = line.strip_prefix("stat::average_exec_per_sec:") {
            f.exec_per_sec = num(v);
        } else if let Some(p) = line.split("Test unit written to ").nth(1) {
            f.crash = Some(p.trim().to_string());
        }
        let mut words = line.split_whitespace();
        while let Some(w) = words.next() {
            let field = match w {
                "cov:" => &mut f.cov,
                "ft:" => &mut f.ft,
                "corp:" => &mut f.corpus,
                _ => continue,
            };
            // `corp: 12/3456b`: the number of entries.
            if let Some(v) = words.next() {
                *field = num(v.split('/').next().unwrap_or(v));
            }
        }
    }
    f
}

fn print_table(results: &[(String, Figures)]) {
    println!(
        "{:<14} {:>12} {:>9} {:>7} {:>8} {:>7}  crash",
        "target", "executions", "exec/s", "cov", "ft", "corpus"
    );
    for (t, f) in results {
        let crash = match (&f.crash, f.failed) {
            (Some(p), _) => p.clone(),
            (None, true) => "FAILED (see the log above)".into(),
            (None, false) => "-".into(),
        };
        println!(
            "{t:<14} {:>12} {:>9} {:>7} {:>8} {:>7}  {crash}",
            f.runs, f.exec_per_sec, f.cov, f.ft, f.corpus
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn figures_come_from_libfuzzer_output() {
        let log = "#2\tINITED cov: 10 ft: 11 corp: 3/120b exec/s: 0 rss: 40Mb\n\
                   #4096\tpulse  cov: 50 ft: 70 corp: 9/1Kb lim: 43 exec/s: 2048 rss: 41Mb\n\
                   #5000\tDONE   cov: 55 ft: 80 corp: 11/2Kb lim: 48 exec/s: 2500 rss: 41Mb\n\
                   Done 5000 runs in 2 second(s)\n\
                   stat::number_of_executed_units: 5000\n\
                   stat::average_exec_per_sec:     2500\n";
        let f = super::figures(log);
        assert_eq!((f.runs, f.exec_per_sec), (5000, 2500));
        assert_eq!((f.cov, f.ft, f.corpus), (55, 80, 11));
        assert_eq!(f.crash, None);
        let f = super::figures("==1== ERROR: libFuzzer: deadly signal\nartifact_prefix='a/'; Test unit written to a/crash-12ab\n");
        assert_eq!(f.crash.as_deref(), Some("a/crash-12ab"));
    }
}
