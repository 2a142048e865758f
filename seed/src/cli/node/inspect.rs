//! `seed node inspect NAME… [--wait]`: ask the daemon to inspect nodes (all at once: each
//! machine boots on its own), then (with `--wait`) follow them with a spinner until each is
//! inspected or failed.

use super::super::client::Client;
use anyhow::Context;
use api::NodeView;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub(super) fn inspect(c: &Client, names: &[String], wait: Option<u64>) -> anyhow::Result<()> {
    for name in names {
        let _: NodeView = c
            .post_empty(&format!("/v1/nodes/{name}/inspect"))
            .with_context(|| format!("{name}: inspect"))?;
        println!("{name}: inspection requested");
    }
    let Some(secs) = wait else { return Ok(()) };
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(120));
    let start = Instant::now();
    let mut waiting: BTreeMap<&str, String> =
        names.iter().map(|n| (n.as_str(), "".into())).collect();
    let mut failed = Vec::new();
    while !waiting.is_empty() {
        for (name, last) in waiting.iter_mut() {
            let node: NodeView = c
                .get_patient(&format!("/v1/nodes/{name}"))
                .with_context(|| format!("reading {name} from the seed"))?;
            *last = node.state.clone();
            if finished(&node.state) {
                bar.suspend(|| {
                    println!(
                        "{name}: {} after {:.0} s",
                        node.state,
                        start.elapsed().as_secs_f64()
                    )
                });
                if node.state.contains("fail") {
                    let why = node.last_error.as_deref().unwrap_or("inspection failed");
                    failed.push(format!("{name}: {why}"));
                }
            }
        }
        waiting.retain(|_, state| !finished(state));
        let now: Vec<String> = waiting.iter().map(|(n, s)| format!("{n}: {s}")).collect();
        bar.set_message(format!(
            "{} ({}s)",
            now.join(", "),
            start.elapsed().as_secs()
        ));
        if waiting.is_empty() {
            break;
        }
        anyhow::ensure!(
            start.elapsed().as_secs() < secs,
            "still inspecting after {secs} s: {}",
            now.join(", ")
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    bar.finish_and_clear();
    anyhow::ensure!(failed.is_empty(), "{}", failed.join("; "));
    Ok(())
}

fn finished(state: &str) -> bool {
    state == "available" || state == "manageable" || state.contains("fail")
}
