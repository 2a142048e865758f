//! `seed node inspect NAME [--wait]`: ask the daemon to inspect a node, then (with `--wait`)
//! follow it with a spinner until it is inspected or failed.

use super::super::client::Client;
use anyhow::Context;
use api::NodeView;
use std::time::{Duration, Instant};

pub(super) fn inspect(c: &Client, name: &str, wait: Option<u64>) -> anyhow::Result<()> {
    let _: NodeView = c
        .post_empty(&format!("/v1/nodes/{name}/inspect"))
        .with_context(|| format!("{name}: inspect"))?;
    println!("{name}: inspection requested");
    let Some(secs) = wait else { return Ok(()) };
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(120));
    let start = Instant::now();
    super::follow(c, name, secs, Duration::from_secs(1), |node| {
        let state = &node.state;
        bar.set_message(format!("{name}: {state} ({}s)", start.elapsed().as_secs()));
        if !(state == "available" || state == "manageable" || state.contains("fail")) {
            return None;
        }
        bar.finish_and_clear();
        println!(
            "{name}: {state} after {:.0} s",
            start.elapsed().as_secs_f64()
        );
        Some(if state.contains("fail") {
            Err(anyhow::anyhow!(
                "{name}: {}",
                node.last_error.as_deref().unwrap_or("inspection failed")
            ))
        } else {
            Ok(())
        })
    })
}
