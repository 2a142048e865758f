//! `seed node deploy NAME --image I [--wait]` and `seed node undeploy NAME`: through the
//! daemon's API; `--wait` follows the deploy with a progress bar of the agent's phase and bytes.

use super::super::client::Client;
use anyhow::Context;
use api::node::{DeployRequest, UndeployRequest};
use api::{NodeView, Phase};
use std::time::{Duration, Instant};

/// POST the request, then (with `--wait`) follow the node until it is active or failed.
pub(super) fn deploy(
    c: &Client,
    name: &str,
    image: &str,
    root_hint: Option<&str>,
    wait: Option<u64>,
) -> anyhow::Result<()> {
    let req = DeployRequest {
        image: image.into(),
        root_hint: root_hint.map(str::to_string),
    };
    let _: NodeView = c
        .post(&format!("/v1/nodes/{name}/deploy"), &req)
        .with_context(|| format!("{name}: deploy of {image}"))?;
    println!("{name}: deploy of {image} requested");
    let Some(secs) = wait else { return Ok(()) };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} ({elapsed})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let start = Instant::now();
    super::follow(c, name, secs, Duration::from_millis(500), |node| {
        let state = node.state.as_str();
        bar.set_message(deploy_message(name, node));
        if let Some(p) = &node.progress {
            bar.set_length(p.total);
            bar.set_position(p.bytes.min(p.total));
        }
        if !(state == "active" || state.contains("fail") || state == "available") {
            return None;
        }
        bar.finish_and_clear();
        println!(
            "{name}: {state} after {:.0} s",
            start.elapsed().as_secs_f64()
        );
        Some(if state == "active" {
            Ok(())
        } else {
            Err(anyhow::anyhow!(
                "{name}: {}",
                node.last_error
                    .as_deref()
                    .unwrap_or("deploy did not finish")
            ))
        })
    })
}

/// `node: deploying, writing` (the agent's phase while it has one; "booting" once written).
fn deploy_message(name: &str, node: &NodeView) -> String {
    let state = node.state.as_str();
    match node.progress.as_ref().map(|p| p.phase) {
        Some(Phase::Done) if state == "deploying" => {
            format!("{name}: {state}, image written, booting")
        }
        Some(phase) if state == "deploying" => format!("{name}: {state}, {}", phase_name(phase)),
        _ => format!("{name}: {state}"),
    }
}

/// The phase as the API spells it (`writing`).
fn phase_name(p: Phase) -> String {
    serde_json::to_value(p)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{p:?}"))
}

/// POST the undeploy request.
pub(super) fn undeploy(c: &Client, name: &str, full_wipe: bool) -> anyhow::Result<()> {
    let node: NodeView = c
        .post(
            &format!("/v1/nodes/{name}/undeploy"),
            &UndeployRequest { full_wipe },
        )
        .with_context(|| format!("{name}: undeploy"))?;
    println!("{name}: undeploy requested ({})", node.state);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_message_follows_the_phase() {
        let n = |state: &str, phase: Option<&str>| {
            let mut v = serde_json::json!({
                "name": "n1", "macs": [], "state": state, "boot_retries": 0, "updated_ms": 0,
                "bmc": {"driver": "fake", "address": "x", "port": 623, "username": "u"},
                "properties": {}, "capabilities": {},
            });
            if let Some(p) = phase {
                v["progress"] = serde_json::json!({
                    "boot_mac": "52:54:00:00:00:01", "op": 1, "phase": p, "bytes": 1, "total": 2
                });
            }
            deploy_message("n1", &serde_json::from_value(v).unwrap())
        };
        assert_eq!(n("deploying", None), "n1: deploying");
        assert_eq!(n("deploying", Some("writing")), "n1: deploying, writing");
        assert_eq!(
            n("deploying", Some("done")),
            "n1: deploying, image written, booting"
        );
        assert_eq!(n("active", Some("done")), "n1: active");
    }
}
