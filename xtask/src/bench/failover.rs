//! `cargo xtask bench failover`: how long the HA control plane is without a leader.
//!
//! Three etcd members (the cached Debian etcd, on 127.0.0.1) and three candidate processes
//! (this binary, `--candidate`), each with the seed's election and fenced store
//! ([`seed::ha::Ha`]). The leader makes a fenced write every 20 ms (the "node action" of this
//! bench: a `beat` record with its name). Each candidate reaches etcd through a userspace relay
//! of the bench (these kernels have no netem), so its link can be cut. Measured, one round
//! each:
//! - `kill -9` of the leader → the first write of the next leader;
//! - `SIGSTOP` of the leader for 2 × TTL → the first write of the next leader; then `SIGCONT`:
//!   how many writes the old leader tried after waking and etcd refused (fenced), and that
//!   none of them landed;
//! - the leader's link cut (every connection to etcd dropped, new ones refused) → the next
//!   leader's first write; the link restored: the old leader follows.
//!
//! Figures, never assertions; the lease TTL is `--ttl` (the daemon's default is 10 s).

use super::{print_table, Progress, Row};
use anyhow::{bail, Context, Result};
use seed::ha::Ha;
use seed::store::config::HaSettings;
use seed::store::etcd::member::LocalCluster;
use seed::store::etcd::{EtcdConfig, EtcdStore};
use seed::store::{Expect, Store};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Failover bench options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The election lease TTL in seconds.
    #[arg(long, default_value_t = 3)]
    ttl: u64,
    /// Run as one candidate (internal: the bench starts these).
    #[arg(long, hide = true)]
    candidate: Option<String>,
    #[arg(long, hide = true, value_delimiter = ',')]
    endpoints: Vec<String>,
    #[arg(long, hide = true)]
    report: Option<PathBuf>,
}

/// What a candidate reports (rewritten every 100 ms).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Report {
    beats_ok: u64,
    fenced_rejected: u64,
    refused_locally: u64,
    role: String,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Beat {
    name: String,
    seq: u64,
}

pub fn run(a: Args) -> Result<()> {
    if let Some(name) = &a.candidate {
        return candidate(name, &a);
    }
    let p = Progress::new();
    let dir = tempfile::tempdir().context("temporary directory")?;
    p.say("etcd: starting 3 members");
    let cluster = LocalCluster::start(3, &dir.path().join("etcd"))
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("starting etcd (run `cargo xtask fetch` for the cached etcd)")?;
    let rt = tokio::runtime::Runtime::new()?;
    let names = ["a", "b", "c"];
    let mut relays = vec![];
    let mut procs = vec![];
    for n in names {
        let relay = rt.block_on(Relay::start(&cluster.endpoints()))?;
        procs.push(spawn(n, &relay.endpoints, a.ttl, dir.path())?);
        relays.push(relay);
    }
    let raw = EtcdStore::connect(&EtcdConfig::new(cluster.endpoints()))?;
    let beat = |raw: &EtcdStore| -> Option<Beat> {
        raw.get("bench", "beat")
            .ok()
            .flatten()
            .and_then(|r| serde_json::from_slice(&r.value).ok())
    };
    let wait_leader = |raw: &EtcdStore, not: Option<&str>, within: Duration| -> Result<String> {
        let t = Instant::now();
        loop {
            if let Some(b) = beat(raw) {
                if Some(b.name.as_str()) != not {
                    return Ok(b.name);
                }
            }
            if t.elapsed() > within {
                bail!("no new leader within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let within = Duration::from_secs(6 * a.ttl + 10);
    let idx = |n: &str| names.iter().position(|x| *x == n).expect("a candidate");
    let mut rows = vec![];
    let target = format!("≤ TTL + 1 s = {} s", a.ttl + 1);

    // kill -9
    let first = wait_leader(&raw, None, within)?;
    p.say(format!("leader {first}: kill -9"));
    let t = Instant::now();
    procs[idx(&first)].kill().ok();
    procs[idx(&first)].wait().ok();
    let second = wait_leader(&raw, Some(&first), within)?;
    rows.push(row(
        "kill -9 → next leader's first write [s]",
        t.elapsed(),
        &target,
    ));
    procs[idx(&first)] = spawn(&first, &relays[idx(&first)].endpoints, a.ttl, dir.path())?;

    // SIGSTOP past the TTL, then SIGCONT
    p.say(format!("leader {second}: SIGSTOP for {} s", 2 * a.ttl));
    let pid = procs[idx(&second)].id() as i32;
    let t = Instant::now();
    signal(pid, libc::SIGSTOP);
    let third = wait_leader(&raw, Some(&second), within)?;
    rows.push(row(
        "SIGSTOP → next leader's first write [s]",
        t.elapsed(),
        &target,
    ));
    std::thread::sleep(Duration::from_secs(2 * a.ttl).saturating_sub(t.elapsed()));
    signal(pid, libc::SIGCONT);
    std::thread::sleep(Duration::from_secs(2));
    let woke = read_report(dir.path(), &second);
    let still = beat(&raw).map(|b| b.name);
    rows.push(Row {
        metric: "writes of the woken leader refused by etcd (fenced)".into(),
        seed: woke.fenced_rejected.to_string(),
        peer: "-".into(),
        target: format!("none landed (leader now: {})", still.unwrap_or_default()),
        met: if beat(&raw).is_some_and(|b| b.name != second) {
            "yes"
        } else {
            "no"
        }
        .into(),
    });

    // link cut
    p.say(format!("leader {third}: link cut"));
    let t = Instant::now();
    relays[idx(&third)].cut(true);
    let fourth = wait_leader(&raw, Some(&third), within)?;
    rows.push(row(
        "link cut → next leader's first write [s]",
        t.elapsed(),
        &target,
    ));
    std::thread::sleep(Duration::from_secs(1));
    relays[idx(&third)].cut(false);
    std::thread::sleep(Duration::from_secs(a.ttl + 1));
    let back = read_report(dir.path(), &third);
    rows.push(Row {
        metric: format!("cut leader after the link is back (leader: {fourth})"),
        seed: back.role.clone(),
        peer: "-".into(),
        target: "follower".into(),
        met: if back.role == "follower" { "yes" } else { "no" }.into(),
    });
    rows.push(Row {
        metric: "writes refused by fencing, all candidates".into(),
        seed: names
            .iter()
            .map(|n| read_report(dir.path(), n).fenced_rejected)
            .sum::<u64>()
            .to_string(),
        peer: "-".into(),
        target: "-".into(),
        met: String::new(),
    });

    for mut c in procs {
        c.kill().ok();
        c.wait().ok();
    }
    drop(relays);
    rt.shutdown_background();
    println!();
    println!(
        "failover: 3 etcd members, 3 candidates, lease TTL {} s, the leader writes every 20 ms",
        a.ttl
    );
    print_table(&rows);
    Ok(())
}

fn row(metric: &str, d: Duration, target: &str) -> Row {
    Row {
        metric: metric.into(),
        seed: format!("{:.2}", d.as_secs_f64()),
        peer: "-".into(),
        target: target.into(),
        met: String::new(),
    }
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a pid this bench started; no memory is involved.
    unsafe {
        libc::kill(pid, sig);
    }
}

fn spawn(name: &str, endpoints: &[String], ttl: u64, dir: &Path) -> Result<Child> {
    let exe = std::env::current_exe().context("this binary")?;
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    Command::new(exe)
        .args([
            "bench",
            "failover",
            "--candidate",
            name,
            "--ttl",
            &ttl.to_string(),
        ])
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .arg("--report")
        .arg(dir.join(format!("{name}.json")))
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting a candidate")
}

fn read_report(dir: &Path, name: &str) -> Report {
    std::fs::read(dir.join(format!("{name}.json")))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// One candidate: campaign; while leading, write a beat every 20 ms through the fenced store.
fn candidate(name: &str, a: &Args) -> Result<()> {
    let settings = HaSettings {
        name: name.into(),
        lease_ttl: Duration::from_secs(a.ttl),
        advertise: None,
        floating: None,
        after_handoff: Default::default(),
        member: None,
    };
    let mut cfg = EtcdConfig::new(a.endpoints.clone());
    cfg.timeout = Duration::from_secs(1);
    let ha = Ha::start(&cfg, &settings, &format!("http://{name}.invalid"))?;
    let report = a.report.clone().context("--report")?;
    let mut r = Report::default();
    let mut seq = 0;
    let mut last = Instant::now();
    // Bounded: the bench kills candidates long before this.
    let until = Instant::now() + Duration::from_secs(600);
    while Instant::now() < until {
        if ha.is_leader() {
            seq += 1;
            let b = serde_json::to_vec(&Beat {
                name: name.into(),
                seq,
            })?;
            if ha.store.put("bench", "beat", b, Expect::Any).is_ok() {
                r.beats_ok += 1;
            }
        } else if ha.fence.term().is_some() {
            // Believes it leads but its lease is stale (e.g. just woke up): the write goes to
            // etcd and is refused there if the term has ended.
            let b = serde_json::to_vec(&Beat {
                name: name.into(),
                seq,
            })?;
            let _ = ha.store.put("bench", "beat", b, Expect::Any);
        }
        if last.elapsed() > Duration::from_millis(100) {
            let s = ha.status();
            r.fenced_rejected = s.fenced_rejected;
            r.refused_locally = s.refused_locally;
            r.role = s.role;
            let tmp = report.with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_vec(&r)?)?;
            std::fs::rename(&tmp, &report)?;
            last = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A userspace TCP relay per etcd member, for one candidate: its "link".
struct Relay {
    endpoints: Vec<String>,
    cut: Arc<AtomicBool>,
    stop: tokio::sync::watch::Sender<u64>,
}

impl Relay {
    async fn start(members: &[String]) -> Result<Relay> {
        let cut = Arc::new(AtomicBool::new(false));
        let (stop, _) = tokio::sync::watch::channel(0u64);
        let mut endpoints = vec![];
        for m in members {
            let upstream = m.trim_start_matches("http://").to_string();
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            endpoints.push(format!("http://{}", l.local_addr()?));
            let (cut, stop) = (cut.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((down, _)) = l.accept().await else {
                        return;
                    };
                    if cut.load(Ordering::SeqCst) {
                        continue; // dropped: the link is down
                    }
                    let upstream = upstream.clone();
                    let mut cutting = stop.subscribe();
                    tokio::spawn(async move {
                        let Ok(up) = tokio::net::TcpStream::connect(&upstream).await else {
                            return;
                        };
                        let (mut dr, mut dw) = down.into_split();
                        let (mut ur, mut uw) = up.into_split();
                        tokio::select! {
                            _ = tokio::io::copy(&mut dr, &mut uw) => {}
                            _ = tokio::io::copy(&mut ur, &mut dw) => {}
                            _ = cutting.changed() => {}
                        }
                    });
                }
            });
        }
        Ok(Relay {
            endpoints,
            cut,
            stop,
        })
    }

    /// Cut (drop every connection, refuse new ones) or restore the link.
    fn cut(&self, on: bool) {
        self.cut.store(on, Ordering::SeqCst);
        if on {
            self.stop.send_modify(|n| *n += 1);
        }
    }
}
