//! `seed-wire-campaign RUNS NODES DROP_PCT CORRUPT_PCT DIR`: the fault campaign on the wire
//! (see `tests::wire_campaign`), run by `cargo xtask campaign wire`. Prints the tally; exits 1
//! when a node was stuck, failed without a reason, or a broken BMC went unnoticed.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let num = |i: usize| args.get(i).and_then(|a| a.parse::<u64>().ok());
    let parsed = (args.len() == 6)
        .then(|| Some((num(1)?, num(2)?, num(3)?, num(4)?)))
        .flatten()
        .filter(|&(runs, nodes, d, c)| runs > 0 && nodes > 0 && d <= 50 && c <= 50);
    let Some((runs, nodes, drop_pct, corrupt_pct)) = parsed else {
        eprintln!(
            "usage: seed-wire-campaign RUNS NODES DROP_PCT CORRUPT_PCT DIR (percentages up to 50)"
        );
        std::process::exit(2);
    };
    let campaign = tests::wire_campaign::Campaign {
        runs: runs as usize,
        nodes: nodes as usize,
        drop_pct: drop_pct as u8,
        corrupt_pct: corrupt_pct as u8,
        // Absolute: the daemon's config names its files by this path.
        dir: std::path::absolute(&args[5]).unwrap_or_else(|_| args[5].clone().into()),
    };
    let tally = tests::wire_campaign::run(&campaign);
    tally.print(&campaign);
    println!("  logs: {}", campaign.dir.display());
    if !tally.problems.is_empty() {
        std::process::exit(1);
    }
}
