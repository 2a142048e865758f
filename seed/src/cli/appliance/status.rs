//! The appliance's status screen (busybox init runs it on tty1 and on the serial console): what
//! a field engineer needs without logging in — version, provisioning NIC and address, API URL,
//! DHCP authoritative or proxy, node counts by state, the last events. It redraws itself when
//! something changes (and once a minute), so a serial log stays readable. Enter starts the
//! operator login (busybox `login`, root's password from `[operator] password`).

use super::Info;
use anyhow::Result;
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run-time directory `seed appliance config` wrote.
    #[arg(long, default_value = "/run/seed")]
    run: PathBuf,
    /// The daemon's log (its last lines are the events shown).
    #[arg(long, default_value = "/var/lib/seed/log/daemon.log")]
    log: PathBuf,
    /// Seconds between checks.
    #[arg(long, default_value_t = 2)]
    every: u64,
    /// Print one screen and exit.
    #[arg(long)]
    once: bool,
}

pub fn run(a: Args) -> Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    if !a.once {
        std::thread::spawn(move || {
            let stdin = std::io::stdin();
            for line in stdin.lock().lines() {
                if line.is_err() || tx.send(()).is_err() {
                    break;
                }
            }
        });
    }
    let mut last = String::new();
    let mut drawn = Instant::now();
    loop {
        let screen = render(&a.run, &a.log);
        if screen != last || drawn.elapsed() > Duration::from_secs(60) {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "\x1b[H\x1b[2J{screen}");
            let _ = out.flush();
            last = screen;
            drawn = Instant::now();
        }
        if a.once {
            return Ok(());
        }
        if rx.recv_timeout(Duration::from_secs(a.every)).is_ok() {
            login(&a.run);
            last.clear();
        }
    }
}

/// The operator login, when a password is configured.
fn login(run: &Path) {
    let info = read_info(run);
    if !info.as_ref().is_some_and(|i| i.login) {
        println!("\nNo operator login: set [operator] password in seed.toml (SEEDCFG) and reboot.");
        std::thread::sleep(Duration::from_secs(3));
        return;
    }
    let _ = std::process::Command::new("login").status();
}

fn read_info(run: &Path) -> Option<Info> {
    let b = std::fs::read(run.join("appliance.json")).ok()?;
    serde_json::from_slice(&b).ok()
}

/// The screen's text.
pub fn render(run: &Path, log: &Path) -> String {
    let mut s = String::new();
    let Some(info) = read_info(run) else {
        return "seed appliance: starting…\n".into();
    };
    s.push_str(&format!(
        "seed appliance {}                       Enter: operator login\n\n",
        info.version
    ));
    s.push_str(&format!("config        {}\n", info.config_source));
    if let Some(e) = &info.config_error {
        s.push_str(&format!(
            "\n  CONFIG ERROR: {e}\n  The seed is NOT running: no DHCP, no API. Fix the file and reboot.\n\n"
        ));
        s.push_str(&format!("state         {}\n", info.state));
        return s;
    }
    s.push_str(&format!(
        "provisioning  {} {}\n",
        info.interface, info.address
    ));
    s.push_str(&format!(
        "API           {}   (token: {})\n",
        info.api_url, info.token_file
    ));
    let body = metrics();
    let dhcp = dhcp_line(&info, body.as_deref().and_then(parse_dhcp_mode));
    s.push_str(&format!("DHCP          {dhcp}\n"));
    s.push_str(&format!("state         {}\n", info.state));
    match body.as_deref().map(parse_node_counts) {
        Some(c) if c.is_empty() => s.push_str("nodes         none enrolled\n"),
        Some(c) => {
            let total: u64 = c.values().sum();
            let parts: Vec<String> = c.iter().map(|(k, v)| format!("{v} {k}")).collect();
            s.push_str(&format!("nodes         {total}: {}\n", parts.join(", ")));
        }
        None => s.push_str("nodes         (the seed's API does not answer yet)\n"),
    }
    s.push_str("\nlast events\n");
    for l in last_events(log, 5) {
        s.push_str(&format!("  {l}\n"));
    }
    s
}

/// What DHCP does: the mode the daemon serves (its `dhcp_mode` gauge), else the configured one.
fn dhcp_line(info: &Info, served: Option<&str>) -> String {
    match (served, info.dhcp_mode.as_str()) {
        (Some("proxy"), "auto") => format!(
            "proxy: another DHCP server answers on {} (ProxyDHCP only, no addresses)",
            info.interface
        ),
        (Some("proxy"), _) => "proxy (ProxyDHCP only, as configured)".into(),
        (Some("authoritative"), "auto") => "authoritative (no other DHCP server answered)".into(),
        (Some("authoritative"), _) => "authoritative (as configured)".into(),
        (Some("probing"), _) => format!(
            "probing: looking for another DHCP server on {}",
            info.interface
        ),
        (_, mode) => format!("{mode} (the seed's API does not answer yet)"),
    }
}

/// The daemon's `/metrics`: nodes by state (`seed_nodes{state="…"} N`) and the DHCP mode it
/// serves (`dhcp_mode{mode="…"} 1`). Through the CLI's client, without a token (`/metrics` asks
/// for none), bounded to a second so the screen keeps its pace.
fn metrics() -> Option<String> {
    crate::cli::client::Client::anonymous(crate::cli::client::DEFAULT_API, Duration::from_secs(1))
        .get_text("/metrics")
        .ok()
}

fn parse_node_counts(body: &str) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for l in body.lines() {
        let Some(rest) = l.strip_prefix("seed_nodes{state=\"") else {
            continue;
        };
        let Some((state, v)) = rest.split_once("\"}") else {
            continue;
        };
        if let Ok(n) = v.trim().parse::<f64>() {
            if n > 0.0 {
                m.insert(state.to_string(), n as u64);
            }
        }
    }
    m
}

fn parse_dhcp_mode(body: &str) -> Option<&str> {
    body.lines().find_map(|l| {
        let rest = l.strip_prefix("dhcp_mode{mode=\"")?;
        let (mode, v) = rest.split_once("\"}")?;
        (v.trim().parse::<f64>().ok()? > 0.0).then_some(mode)
    })
}

/// The daemon log's last `n` lines that say something (ANSI colours dropped, long lines cut).
fn last_events(log: &Path, n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut v: Vec<String> = text
        .lines()
        .rev()
        .filter(|l| l.contains(" INFO ") || l.contains(" WARN ") || l.contains(" ERROR "))
        .take(n)
        .map(|l| {
            let l = l.trim();
            // Drop the timestamp's date for width.
            let l = l.split_once('T').map(|(_, r)| r).unwrap_or(l);
            l.chars().take(110).collect()
        })
        .collect();
    v.reverse();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_nodes_from_metrics() {
        let m = parse_node_counts(
            "# TYPE seed_nodes gauge\nseed_nodes{state=\"active\"} 2\nseed_nodes{state=\"enroll\"} 0\n\
             seed_nodes{state=\"available\"} 1\nother 3\n",
        );
        assert_eq!(m.len(), 2);
        assert_eq!(m["active"], 2);
        assert_eq!(m["available"], 1);
    }

    #[test]
    fn screen_shows_config_error_and_status() {
        let d = tempfile::tempdir().unwrap();
        let mut info = Info {
            version: "9.9".into(),
            config_source: "SEEDCFG on /dev/sda3".into(),
            config_error: Some("seed.toml:3: provisioning.address: bad".into()),
            state: "RAM".into(),
            ..Info::default()
        };
        std::fs::write(
            d.path().join("appliance.json"),
            serde_json::to_vec(&info).unwrap(),
        )
        .unwrap();
        let s = render(d.path(), &d.path().join("log"));
        assert!(
            s.contains("CONFIG ERROR: seed.toml:3: provisioning.address: bad"),
            "{s}"
        );
        assert!(s.contains("NOT running"));

        info.config_error = None;
        info.interface = "eth0".into();
        info.address = "10.80.0.1/24".into();
        info.dhcp_mode = "proxy".into();
        std::fs::write(
            d.path().join("appliance.json"),
            serde_json::to_vec(&info).unwrap(),
        )
        .unwrap();
        std::fs::write(
            d.path().join("log"),
            "2026-01-01T10:00:00Z  INFO node1: inspecting\n2026-01-01T10:00:01Z DEBUG x\n",
        )
        .unwrap();
        let s = render(d.path(), &d.path().join("log"));
        assert!(s.contains("provisioning  eth0 10.80.0.1/24"), "{s}");
        assert!(s.contains("DHCP          proxy"), "{s}");
        assert_eq!(
            parse_dhcp_mode("# x\ndhcp_mode{mode=\"probing\"} 0\ndhcp_mode{mode=\"proxy\"} 1\n"),
            Some("proxy")
        );
        assert!(s.contains("node1: inspecting"), "{s}");
        assert!(!s.contains("DEBUG"), "{s}");
    }
}
