//! `cargo xtask bench …`: the seed's figures printed beside a well-known peer's, measured in the
//! same run on the same machine, inside network namespaces the bench creates and removes.
//!
//! - `netboot`: DHCP (perfdhcp vs Kea), TFTP (atftp vs tftpd-hpa, on a veth pair and on a
//!   userspace link with a LAN's round trip), HTTP (wrk vs nginx). See [`netboot`].
//! - `ipmi`: the power driver's round trips vs ipmitool, and 1,000 fake BMCs. See [`ipmi`].
//! - `scale`: the daemon with N fake nodes, enroll → inspect → deploy, beside the simulator.
//!   See [`scale`].
//! - `deploy`: QEMU nodes power-off → active with the tiny image, beside `qemu -kernel`, and
//!   the image-write path beside `curl | zstd -d | tar -x`. See [`deploy`].
//! - `failover`: the HA leader killed, paused, cut off → the next leader's first write, and the
//!   deposed leader's writes fenced off. See [`failover`].
//!
//! Figures are reported against targets, never asserted: the bench fails only when it cannot
//! set up (no root, a tool missing), not when the seed is slow or a service is missing.

mod delay;
mod deploy;
mod env;
mod failover;
mod ipmi;
mod netboot;
mod scale;

use anyhow::Result;
use std::time::Instant;

/// Which benchmark to run.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    which: Which,
}

#[derive(Debug, clap::Subcommand)]
enum Which {
    /// DHCP, TFTP and HTTP boot of `seed netboot` vs Kea, tftpd-hpa and nginx.
    Netboot(netboot::Args),
    /// IPMI power-status round trips of the seed's driver vs ipmitool, and 1,000 fake BMCs.
    Ipmi,
    /// The daemon with N fake nodes (fake BMCs and agents): enroll, inspect, deploy; wall time,
    /// peak RSS and store size, beside the simulator.
    Scale(scale::Args),
    /// QEMU lab nodes inspected and deployed with the tiny image (power-off → active), beside
    /// booting its kernel directly, and the image-write path beside curl | zstd | tar.
    Deploy(deploy::Args),
    /// Three HA candidates on three etcd members: time from the leader killed, paused or cut
    /// off to the next leader's first write; the deposed leader's writes fenced off.
    Failover(failover::Args),
}

pub fn run(args: Args) -> Result<()> {
    match args.which {
        Which::Netboot(a) => netboot::run(a),
        Which::Ipmi => ipmi::run(),
        Which::Scale(a) => scale::run(a),
        Which::Deploy(a) => deploy::run(a),
        Which::Failover(a) => failover::run(a),
    }
}

/// Progress lines on stderr, stamped with the time since the bench started.
pub struct Progress {
    start: Instant,
}

impl Progress {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    pub fn say(&self, msg: impl std::fmt::Display) {
        eprintln!("bench [{:>6.1}s] {msg}", self.start.elapsed().as_secs_f64());
    }
}

/// One row of the result table.
pub struct Row {
    pub metric: String,
    pub seed: String,
    pub peer: String,
    pub target: String,
    pub met: String,
}

/// Print rows as one aligned table with a header.
pub fn print_table(rows: &[Row]) {
    let header = ["metric [unit]", "seed", "peer", "target", "met?"];
    let cells: Vec<[&str; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.metric.as_str(),
                r.seed.as_str(),
                r.peer.as_str(),
                r.target.as_str(),
                r.met.as_str(),
            ]
        })
        .collect();
    let mut w = header.map(|h| h.chars().count());
    for c in &cells {
        for (i, s) in c.iter().enumerate() {
            w[i] = w[i].max(s.chars().count());
        }
    }
    let line = |c: [&str; 5]| {
        let parts: Vec<String> = c
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{s}{}", " ".repeat(w[i] - s.chars().count())))
            .collect();
        println!("| {} |", parts.join(" | "));
    };
    line(header);
    let dashes: Vec<String> = w.iter().map(|n| "-".repeat(*n)).collect();
    println!("|-{}-|", dashes.join("-|-"));
    for c in cells {
        line(c);
    }
}
