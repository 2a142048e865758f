//! The QEMU tests' seed daemon on a lab's wire, configured exactly as `seed lab up --seed`
//! configures it ([`seed::cli::lab_seed::WireSeed`]): enroll nodes with `seed node import`,
//! write `seed.toml`, start `seed daemon`, wait until its API and wire services listen.

use crate::proc::Child;
use seed::cli::lab_seed::{instackenv, WireSeed};
use std::process::Command;
use std::time::Duration;

/// A test's wire seed, as the lab's (iPXE's boot files served by TFTP and HTTP), with a free
/// API port, the test token and a 2 s agent heartbeat.
pub fn config(
    dir: &std::path::Path,
    file: &qemu::spec::LabFile,
    nodes: Vec<qemu::spec::NodeSpec>,
    token: &str,
) -> WireSeed {
    let mut ws = WireSeed::new(dir, file.wire, nodes, &crate::ramdisk_dir());
    ws.token = token.into();
    ws.api_port = crate::free_port();
    ws.heartbeat_secs = Some(2);
    ws.lease_secs = Some(600);
    let scratch = dir.join("ipxe-package");
    let ipxe = crate::ipxe_file("undionly.kpxe", &scratch);
    ws.install_ipxe(ipxe.parent().expect("usr/lib/ipxe"))
        .expect("installing iPXE");
    ws
}

/// Enroll `ws.nodes` into its store (offline, before the daemon runs), `chain_tftp` naming
/// those that take the TFTP chain.
pub fn enroll(ws: &WireSeed, chain_tftp: &[String]) {
    std::fs::create_dir_all(&ws.dir).unwrap();
    let inv = ws.dir.join("nodes.yaml");
    std::fs::write(&inv, instackenv(&ws.nodes, chain_tftp, "")).unwrap();
    let out = Command::new(crate::seed_bin())
        .args(["node", "import"])
        .arg(&inv)
        .env("SEED_STORE", ws.store())
        .env_remove("SEED_API")
        .output()
        .unwrap();
    assert!(out.status.success(), "seed node import: {out:?}");
}

/// Write `seed.toml` and start the daemon with `rust_log`; returns once its API and its wire
/// HTTP (and TFTP, when served) listen.
pub fn start(ws: &WireSeed, rust_log: &str) -> Child {
    std::fs::create_dir_all(ws.dir.join("http")).unwrap();
    let cfg = ws.dir.join("seed.toml");
    std::fs::write(&cfg, ws.config().expect("wire seed config")).unwrap();
    let mut cmd = Command::new(crate::seed_bin());
    cmd.args(["daemon", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", rust_log);
    let mut seed = Child::spawn("seed-daemon", cmd);
    seed.wait_for_log("API listening", Duration::from_secs(60));
    if ws.tftp {
        seed.wait_for_log("TFTP listening on the wire", Duration::from_secs(30));
    }
    seed.wait_for_log("HTTP listening on the wire", Duration::from_secs(30));
    seed
}
