//! `seed-crash-campaign RUNS NODES DIR`: the crash campaign (see `tests::crash_campaign`),
//! run by `cargo xtask campaign crash`. Prints the tally; exits 1 when a run failed.

use std::path::PathBuf;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let parsed = (args.len() == 4)
        .then(|| Some((args[1].parse().ok()?, args[2].parse().ok()?)))
        .flatten();
    let Some((runs, nodes)) = parsed else {
        eprintln!("usage: seed-crash-campaign RUNS NODES DIR");
        std::process::exit(2);
    };
    let farm_bin = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("seed-fake-farm")))
        .filter(|p| p.is_file());
    let Some(farm_bin) = farm_bin else {
        eprintln!("seed-crash-campaign: seed-fake-farm is not beside this binary (cargo build -p tests --bins)");
        std::process::exit(2);
    };
    let campaign = tests::crash_campaign::Campaign {
        runs,
        nodes,
        farm_bin,
        // Absolute: the daemon's config names its store and files by this path, and the
        // daemon runs in a directory of its own.
        dir: std::path::absolute(&args[3]).unwrap_or_else(|_| PathBuf::from(&args[3])),
    };
    match tests::crash_campaign::run(&campaign) {
        Ok(tally) => {
            tally.print(nodes);
            if tally.failures() > 0 {
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("seed-crash-campaign: preparing the campaign: {e}");
            std::process::exit(1);
        }
    }
}
