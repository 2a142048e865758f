//! `seed-fake-farm SPEC.json STATUS.json`: fake machines with IPMI BMCs and HTTP agents, in a
//! process of their own (see `tests::farm`). Runs until killed (its test kills it on drop), or
//! for at most 20 minutes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: seed-fake-farm SPEC.json STATUS.json");
        std::process::exit(2);
    }
    let spec: tests::farm::FarmSpec = match std::fs::read(&args[1])
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("seed-fake-farm: {}: {e}", args[1]);
            std::process::exit(2);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(1200));
        s.store(true, Ordering::Relaxed);
    });
    eprintln!(
        "seed-fake-farm: {} machines, seed at {}",
        spec.nodes.len(),
        spec.seed_url
    );
    if let Err(e) = tests::farm::run(&spec, std::path::Path::new(&args[2]), stop) {
        eprintln!("seed-fake-farm: {e}");
        std::process::exit(1);
    }
}
