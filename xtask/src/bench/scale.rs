//! `cargo xtask bench scale --nodes N`: the daemon with N fake nodes, in process, on a redb
//! store in a temporary directory: enroll (`POST /v1/nodes` in batches), inspect (every node,
//! from `enroll`: BMC verified, fake ramdisk booted, facts reported), deploy (`POST
//! /v1/nodes/NAME/deploy` when the daemon has it), each with at most `--concurrency` nodes in
//! flight, every request through the daemon's API handler. Printed: wall time and rate per
//! phase, peak RSS (VmHWM), the store file's size, beside the simulator (`seed::sim`) for the
//! same N on the same kind of store.
//!
//! `--store etcd` runs the same on etcd instead of redb (`--store both`: redb, then etcd, their
//! figures side by side in one table): `--etcd-members` members (Debian's
//! etcd from the offline cache) on 127.0.0.1, started for the bench and stopped after it; the
//! simulator runs on the same cluster under another key prefix. The store size is then the
//! members' database files together (each member holds a full copy; WALs left out) and the
//! peak RSS the daemon's alone.
//!
//! Bounded: each phase stops after `--phase-timeout` seconds (and says how many nodes were
//! left); nothing here is asserted, the figures are reported.

use super::{print_table, Progress, Row};
use anyhow::{Context, Result};
use seed::daemon::api::Api;
use seed::daemon::fakeagent::Timing;
use seed::daemon::{Daemon, Settings};
use seed::lifecycle::{State, Timeouts};
use seed::store::etcd::member::LocalCluster;
use seed::store::etcd::EtcdStore;
use seed::store::redb::RedbStore;
use seed::store::{nodes, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Scale bench options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many fake nodes.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Nodes in flight at once per phase.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Every fake BMC answers after this many milliseconds.
    #[arg(long, default_value_t = 2)]
    bmc_delay_ms: u64,
    /// Give up a phase after this many seconds.
    #[arg(long, default_value_t = 900)]
    phase_timeout: u64,
    /// Skip the simulator run.
    #[arg(long)]
    no_sim: bool,
    /// Deploy with one node request each instead of through a stack.
    #[arg(long)]
    no_stack: bool,
    /// Servers in the stack [default: every node]; fewer leaves spares that replace nodes
    /// whose deploy fails.
    #[arg(long)]
    servers: Option<usize>,
    /// Every K-th node's fake agent fails its deploys (0: none).
    #[arg(long, default_value_t = 0, value_name = "K")]
    fail_every: usize,
    /// Every K-th node's fake agent is 10 times slower (0: none).
    #[arg(long, default_value_t = 0, value_name = "K")]
    slow_every: usize,
    /// The daemon's store.
    #[arg(long, value_enum, default_value_t = StoreKind::Redb)]
    store: StoreKind,
    /// With `--store etcd`: how many etcd members (on 127.0.0.1).
    #[arg(long, default_value_t = 3)]
    etcd_members: usize,
}

/// Which store the bench runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StoreKind {
    Redb,
    Etcd,
    /// redb, then etcd, in one run: the figures side by side.
    Both,
}

/// The stores of one bench run: a redb file each, or one etcd cluster with a prefix each.
struct Stores {
    kind: StoreKind,
    dir: std::path::PathBuf,
    cluster: Option<LocalCluster>,
}

impl Stores {
    fn new(a: &Args, kind: StoreKind, dir: &std::path::Path, p: &Progress) -> Result<Stores> {
        let cluster = match kind {
            StoreKind::Redb | StoreKind::Both => None,
            StoreKind::Etcd => {
                p.say(format!("etcd: starting {} members", a.etcd_members));
                let c = LocalCluster::start(a.etcd_members, &dir.join("etcd"))
                    .map_err(|e| anyhow::anyhow!("{e}"))
                    .context("starting etcd (run `cargo xtask fetch` for the cached etcd)")?;
                Some(c)
            }
        };
        Ok(Stores {
            kind,
            dir: dir.into(),
            cluster,
        })
    }

    /// The store called `name` (a file, or a key prefix).
    fn open(&self, name: &str) -> Result<Arc<dyn Store>> {
        Ok(match &self.cluster {
            None => Arc::new(
                RedbStore::open(&self.dir.join(format!("{name}.redb")))
                    .context("opening the store")?,
            ),
            Some(c) => {
                let mut cfg = c.config();
                cfg.prefix = format!("/{name}/");
                Arc::new(EtcdStore::connect(&cfg).context("connecting to etcd")?)
            }
        })
    }

    /// Bytes on disk: the store file, or every member's bbolt file (`member/snap/db`; the WAL,
    /// preallocated in 64 MiB segments, is left out).
    fn bytes(&self, name: &str) -> u64 {
        match &self.cluster {
            None => std::fs::metadata(self.dir.join(format!("{name}.redb")))
                .map(|m| m.len())
                .unwrap_or(0),
            Some(c) => c
                .members
                .iter()
                .map(|m| {
                    std::fs::metadata(m.spec.data_dir.join("member/snap/db"))
                        .map(|m| m.len())
                        .unwrap_or(0)
                })
                .sum(),
        }
    }

    fn describe(&self) -> String {
        match &self.cluster {
            None => "redb".into(),
            Some(c) => format!("etcd ({} members)", c.members.len()),
        }
    }
}

/// The fake agent behaviour of node `i`.
fn behaviour(a: &Args, i: usize) -> &'static str {
    let every = |k: usize| k > 0 && i % k == k - 1;
    if every(a.fail_every) {
        "fail"
    } else if every(a.slow_every) {
        "slow"
    } else {
        "ok"
    }
}

const TOKEN: &str = "bench-scale-token";
const IMAGE: &str = "overcloud-full";

/// One phase's outcome.
struct Phase {
    name: &'static str,
    /// Nodes the phase should finish.
    target: usize,
    wall: Duration,
    ok: usize,
    failed: usize,
    left: usize,
    note: String,
}

/// One run's figures: the daemon's phases and, unless `--no-sim`, the simulator's.
struct Outcome {
    store: String,
    phases: Vec<Phase>,
    wall: Duration,
    rss_kib: u64,
    store_bytes: u64,
    /// The simulator's report, wall time, peak RSS (KiB) and store bytes.
    sim: Option<(seed::sim::SimReport, Duration, u64, u64)>,
}

pub fn run(a: Args) -> Result<()> {
    anyhow::ensure!(
        a.nodes > 0 && a.concurrency > 0,
        "--nodes and --concurrency must be > 0"
    );
    let p = Progress::new();
    match a.store {
        StoreKind::Both => {
            let redb = measure(&a, StoreKind::Redb, &p)?;
            let etcd = measure(&a, StoreKind::Etcd, &p)?;
            print_both(&a, &redb, &etcd);
        }
        kind => {
            let o = measure(&a, kind, &p)?;
            print_one(&a, &o);
        }
    }
    Ok(())
}

/// The daemon's phases (then the simulator's run) on one kind of store.
fn measure(a: &Args, kind: StoreKind, p: &Progress) -> Result<Outcome> {
    let dir = tempfile::tempdir().context("temporary directory")?;
    let stores = Stores::new(a, kind, dir.path(), p)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    reset_peak_rss();
    let total = Instant::now();
    let store = stores.open("seed")?;
    p.say(format!("daemon on {}", stores.describe()));
    let phases = rt.block_on(daemon_phases(a, store, dir.path(), p))?;
    let wall = total.elapsed();
    let rss_kib = peak_rss_kib();
    let store_bytes = stores.bytes("seed");
    rt.shutdown_timeout(Duration::from_secs(5));

    let sim = if a.no_sim {
        None
    } else {
        p.say(format!(
            "simulator: {} nodes on {}",
            a.nodes,
            stores.describe()
        ));
        reset_peak_rss();
        let store = stores.open("sim")?;
        let t = Instant::now();
        let report =
            seed::sim::run(&seed::sim::SimConfig::new(a.nodes, 1), &*store).context("simulator")?;
        let wall = t.elapsed();
        let bytes = match stores.kind {
            // The same cluster: what the simulator added.
            StoreKind::Etcd => stores.bytes("sim").saturating_sub(store_bytes),
            _ => stores.bytes("sim"),
        };
        Some((report, wall, peak_rss_kib(), bytes))
    };
    Ok(Outcome {
        store: stores.describe(),
        phases,
        wall,
        rss_kib,
        store_bytes,
        sim,
    })
}

fn rate(ph: &Phase) -> f64 {
    if ph.wall.as_secs_f64() > 0.0 {
        ph.ok as f64 / ph.wall.as_secs_f64()
    } else {
        0.0
    }
}

fn phase<'a>(o: &'a Outcome, name: &str) -> Option<&'a Phase> {
    o.phases.iter().find(|p| p.name == name)
}

fn deploy_note(o: &Outcome) -> &str {
    o.phases
        .iter()
        .find(|p| p.name == "deploy")
        .map_or("", |p| p.note.as_str())
}

fn active(o: &Outcome) -> String {
    o.phases
        .iter()
        .find(|p| p.name == "deploy")
        .map_or("-".into(), |p| p.ok.to_string())
}

fn print_one(a: &Args, o: &Outcome) {
    println!();
    println!(
        "scale: {} fake nodes, {} in flight, fake BMC delay {} ms, failing agents every {}, slow \
         every {} (0: none); daemon in process over {}; deploy: {}",
        a.nodes,
        a.concurrency,
        a.bmc_delay_ms,
        a.fail_every,
        a.slow_every,
        o.store,
        deploy_note(o)
    );
    let mut rows = Vec::new();
    for ph in &o.phases {
        rows.push(Row {
            metric: format!("{} wall [s]", ph.name),
            seed: format!("{:.2}", ph.wall.as_secs_f64()),
            peer: "-".into(),
            target: "-".into(),
            met: String::new(),
        });
        rows.push(Row {
            metric: format!("{} ok/failures/left [nodes]", ph.name),
            seed: format!("{}/{}/{}", ph.ok, ph.failed, ph.left),
            peer: "-".into(),
            target: format!("{}/0/0", ph.target),
            met: if ph.ok == ph.target { "yes" } else { "no" }.into(),
        });
        rows.push(Row {
            metric: format!("{} rate [nodes/s]", ph.name),
            seed: format!("{:.0}", rate(ph)),
            peer: "-".into(),
            target: "-".into(),
            met: ph.note.clone(),
        });
    }
    let (sim_wall, sim_rss, sim_store, sim_active, sim_virtual) = match &o.sim {
        Some((r, wall, rss, bytes)) => (
            format!("{:.2}", wall.as_secs_f64()),
            format!("{}", rss / 1024),
            format!("{:.1}", *bytes as f64 / 1048576.0),
            format!("{}", r.count("active")),
            format!("{:.0}", r.end_ms as f64 / 1000.0),
        ),
        None => ("-".into(), "-".into(), "-".into(), "-".into(), "-".into()),
    };
    let row = |metric: &str, seed: String, peer: String, target: String| Row {
        metric: metric.into(),
        seed,
        peer,
        target,
        met: String::new(),
    };
    rows.push(row(
        "all phases wall [s] (peer: simulator wall)",
        format!("{:.2}", o.wall.as_secs_f64()),
        sim_wall,
        "-".into(),
    ));
    rows.push(row(
        "simulated (virtual) time to all active [s]",
        "-".into(),
        sim_virtual,
        "-".into(),
    ));
    rows.push(row(
        "nodes active at the end",
        active(o),
        sim_active,
        o.phases
            .iter()
            .find(|p| p.name == "deploy")
            .map_or(a.nodes, |p| p.target)
            .to_string(),
    ));
    rows.push(row(
        "peak RSS [MiB]",
        format!("{}", o.rss_kib / 1024),
        sim_rss,
        "-".into(),
    ));
    rows.push(row(
        "store on disk [MiB]",
        format!("{:.1}", o.store_bytes as f64 / 1048576.0),
        sim_store,
        "-".into(),
    ));
    print_table(&rows);
}

/// `--store both`: the daemon's figures on redb (column "seed") and on etcd (column "peer").
fn print_both(a: &Args, redb: &Outcome, etcd: &Outcome) {
    println!();
    println!(
        "scale: {} fake nodes, {} in flight, fake BMC delay {} ms; daemon in process; column \
         \"seed\" = {}, column \"peer\" = {}; deploy: {}",
        a.nodes,
        a.concurrency,
        a.bmc_delay_ms,
        redb.store,
        etcd.store,
        deploy_note(redb)
    );
    let mut rows = Vec::new();
    let pair = |metric: String, f: &dyn Fn(&Outcome) -> String| Row {
        metric,
        seed: f(redb),
        peer: f(etcd),
        target: "-".into(),
        met: String::new(),
    };
    for ph in &redb.phases {
        let name = ph.name;
        rows.push(pair(format!("{name} wall [s]"), &|o| {
            phase(o, name).map_or("-".into(), |p| format!("{:.2}", p.wall.as_secs_f64()))
        }));
        rows.push(pair(format!("{name} ok/failures/left [nodes]"), &|o| {
            phase(o, name).map_or("-".into(), |p| format!("{}/{}/{}", p.ok, p.failed, p.left))
        }));
        rows.push(pair(format!("{name} rate [nodes/s]"), &|o| {
            phase(o, name).map_or("-".into(), |p| format!("{:.0}", rate(p)))
        }));
    }
    rows.push(pair("all phases wall [s]".into(), &|o| {
        format!("{:.2}", o.wall.as_secs_f64())
    }));
    rows.push(pair("nodes active at the end".into(), &active));
    rows.push(pair("peak RSS [MiB]".into(), &|o| {
        format!("{}", o.rss_kib / 1024)
    }));
    rows.push(pair("store on disk [MiB]".into(), &|o| {
        format!("{:.1}", o.store_bytes as f64 / 1048576.0)
    }));
    rows.push(pair("simulator wall [s]".into(), &|o| {
        o.sim
            .as_ref()
            .map_or("-".into(), |s| format!("{:.2}", s.1.as_secs_f64()))
    }));
    print_table(&rows);
}

async fn daemon_phases(
    a: &Args,
    store: Arc<dyn Store>,
    dir: &std::path::Path,
    p: &Progress,
) -> Result<Vec<Phase>> {
    let daemon = Daemon::new(
        store,
        Settings {
            server_ip: "127.0.0.1".parse().expect("ip"),
            http_port: 8080,
            timeouts: Timeouts::default(),
            heartbeat_secs: 1,
            provide_after_inspect: true,
            agent_tls: None,
        },
    )
    .context("daemon")?;
    daemon.set_fake_timing(Timing {
        boot: Duration::from_millis(20),
        step: Duration::from_millis(10),
        tick: Duration::from_millis(200),
        ..Timing::default()
    });
    // The image every node is deployed with: a small stream in an image store (verified by
    // the provisioner before each deploy, as in production).
    let images = image_store(dir)?;
    daemon.set_images(images, "images");
    let api = Api::new(daemon.clone(), TOKEN);
    let names: Vec<String> = (0..a.nodes).map(|i| format!("n{i:05}")).collect();
    let mut phases = Vec::new();

    // Enroll, in batches of 1,000 (one commit each).
    p.say(format!("enroll: {} nodes", a.nodes));
    let t = Instant::now();
    let mut enrolled = 0;
    let mut note = String::new();
    for (b, chunk) in names.chunks(1000).enumerate() {
        let entries: Vec<serde_json::Value> = chunk
            .iter()
            .enumerate()
            .map(|(j, n)| {
                let i = b * 1000 + j;
                serde_json::json!({
                    "name": n,
                    "mac": [format!("52:54:{:02x}:{:02x}:{:02x}:{:02x}", (i >> 24) & 0xff,
                        (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff)],
                    "pm_type": "fake", "pm_addr": "fake", "pm_user": "admin",
                    "pm_password": "bench",
                    "capabilities": format!("profile:compute,fake_agent:{},fake_bmc_delay_ms:{}",
                        behaviour(a, i), a.bmc_delay_ms),
                })
            })
            .collect();
        let body = serde_json::json!({ "nodes": entries }).to_string();
        let (code, resp) = api.local("POST", "/v1/nodes", &body).await;
        if code == 201 {
            enrolled += chunk.len();
        } else {
            note = format!("batch {b}: {code} {resp}");
            break;
        }
    }
    phases.push(Phase {
        name: "enroll",
        target: a.nodes,
        wall: t.elapsed(),
        ok: enrolled,
        failed: a.nodes - enrolled,
        left: 0,
        note,
    });

    // Inspect (from enroll: verify, then inspect; provide follows).
    p.say("inspect: every node");
    let ph = drive(
        "inspect",
        a,
        &daemon,
        &names,
        async |name: &str| {
            api.local("POST", &format!("/v1/nodes/{name}/inspect"), "")
                .await
        },
        |s, last_error| match s {
            State::Available => Some(true),
            State::InspectFailed { .. } => Some(false),
            State::Enroll if last_error => Some(false),
            _ => None,
        },
    )
    .await;
    p.say(format!(
        "inspect: {} ok, {} failed in {:.1}s",
        ph.ok,
        ph.failed,
        ph.wall.as_secs_f64()
    ));
    phases.push(ph);

    // Deploy, if this daemon can.
    let probe = api
        .local(
            "POST",
            "/v1/nodes/__probe__/deploy",
            &serde_json::json!({ "image": IMAGE }).to_string(),
        )
        .await;
    if probe.1.contains("unknown request") || probe.1.contains("no such endpoint") {
        p.say("deploy: this daemon has no deploy endpoint yet; skipped");
        phases.push(Phase {
            name: "deploy",
            target: a.nodes,
            wall: Duration::ZERO,
            ok: 0,
            failed: 0,
            left: a.nodes,
            note: "no deploy endpoint".into(),
        });
    } else if !a.no_stack {
        p.say("deploy: through one stack");
        let ph = deploy_by_stack(a, &daemon, &api, p).await;
        p.say(format!(
            "deploy: {} active, {} failed in {:.1}s ({})",
            ph.ok,
            ph.failed,
            ph.wall.as_secs_f64(),
            ph.note
        ));
        phases.push(ph);
    } else {
        p.say("deploy: every available node");
        let body = serde_json::json!({ "image": IMAGE }).to_string();
        let mut ph = drive(
            "deploy",
            a,
            &daemon,
            &names,
            async |name: &str| {
                api.local("POST", &format!("/v1/nodes/{name}/deploy"), &body)
                    .await
            },
            |s, _| match s {
                State::Active => Some(true),
                State::DeployFailed { .. } => Some(false),
                _ => None,
            },
        )
        .await;
        if ph.note.is_empty() {
            ph.note = format!("node requests, {} in flight", a.concurrency);
        }
        p.say(format!(
            "deploy: {} ok, {} failed in {:.1}s",
            ph.ok,
            ph.failed,
            ph.wall.as_secs_f64()
        ));
        phases.push(ph);
    }
    Ok(phases)
}

/// An image store beside the node store with one image, [`IMAGE`].
fn image_store(dir: &std::path::Path) -> Result<images::ImageStore> {
    let src = dir.join("image-src");
    std::fs::create_dir_all(&src).context("image source dir")?;
    let mpath = images::store::write_placeholder(&src, IMAGE, &vec![0x5a; 1 << 20])
        .context("writing the bench image")?;
    let store = images::ImageStore::open(dir.join("images")).context("image store")?;
    store.import(&mpath).context("importing the bench image")?;
    Ok(store)
}

/// Deploy every node through one stack (a resource group of `--nodes` servers), as an
/// operator would; the stack engine bounds the deploys in flight. Polls the stack view.
async fn deploy_by_stack(a: &Args, daemon: &Arc<Daemon>, api: &Api, p: &Progress) -> Phase {
    let t = Instant::now();
    daemon.spawn_stacks();
    let servers = a.servers.unwrap_or(a.nodes).min(a.nodes);
    let template = format!(
        "heat_template_version: wallaby\nresources:\n  nodes:\n    type: OS::Heat::ResourceGroup\n    \
         properties:\n      count: {}\n      resource_def: {{type: OS::Seed::Server, properties: \
         {{image: {IMAGE}, profile: compute}}}}\n",
        servers
    );
    let body = serde_json::json!({"name": "bench", "file": "bench.yaml", "template": template});
    let (code, resp) = api.local("POST", "/v1/stacks", &body.to_string()).await;
    if code != 201 {
        return Phase {
            name: "deploy",
            target: servers,
            wall: t.elapsed(),
            ok: 0,
            failed: 0,
            left: servers,
            note: format!(
                "stack refused: {code} {}",
                resp.chars().take(160).collect::<String>()
            ),
        };
    }
    let limit = Duration::from_secs(a.phase_timeout);
    let (mut active, mut failed, mut status) = (0, 0, String::new());
    let mut next_note = Duration::from_secs(30);
    while t.elapsed() < limit {
        // The stack view reads every node: poll less often for large stacks.
        tokio::time::sleep(Duration::from_millis((a.nodes as u64 / 5).max(500))).await;
        let (code, v) = api.local("GET", "/v1/stacks/bench", "").await;
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&v) else {
            continue;
        };
        if code != 200 {
            continue;
        }
        status = v["status"].as_str().unwrap_or_default().to_string();
        let members = v["members"].as_array().cloned().unwrap_or_default();
        active = members
            .iter()
            .filter(|m| m["node_state"] == "active")
            .count();
        // Deploys that failed (a member whose node failed moves to a spare when there is one).
        failed = daemon.metrics().deploy_failures() as usize;
        if t.elapsed() >= next_note {
            next_note += Duration::from_secs(30);
            p.say(format!(
                "deploy: {status}, {active} active, {failed} failures so far"
            ));
        }
        if status.ends_with("COMPLETE") || status.ends_with("FAILED") {
            break;
        }
    }
    Phase {
        name: "deploy",
        target: servers,
        wall: t.elapsed(),
        ok: active,
        failed,
        left: servers.saturating_sub(active),
        note: format!("one stack of {servers} servers, ended {status}"),
    }
}

/// Ask each node for a step with at most `--concurrency` in flight; a node is finished when
/// `done(state, has_last_error)` says `Some(ok?)`. Polls only the nodes in flight.
async fn drive(
    name: &'static str,
    a: &Args,
    daemon: &Arc<Daemon>,
    names: &[String],
    request: impl AsyncFn(&str) -> (u16, String),
    done: impl Fn(&State, bool) -> Option<bool>,
) -> Phase {
    let t = Instant::now();
    let limit = Duration::from_secs(a.phase_timeout);
    let mut queue: std::collections::VecDeque<&String> = names.iter().collect();
    let mut inflight: Vec<&String> = Vec::new();
    let (mut ok, mut failed) = (0, 0);
    let mut note = String::new();
    while !(queue.is_empty() && inflight.is_empty()) && t.elapsed() < limit {
        while inflight.len() < a.concurrency {
            let Some(n) = queue.pop_front() else { break };
            let (code, body) = request(n).await;
            if (200..300).contains(&code) {
                inflight.push(n);
            } else {
                failed += 1;
                if note.is_empty() {
                    note = format!("{n}: {code} {}", body.chars().take(120).collect::<String>());
                }
            }
        }
        // Polling reads only the nodes in flight; 50 ms keeps it off the daemon's back.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let store: &dyn Store = daemon.store();
        inflight.retain(|n| match nodes::get(store, n) {
            Ok(Some((node, _))) => {
                match done(&node.lifecycle.state, node.lifecycle.last_error.is_some()) {
                    Some(true) => {
                        ok += 1;
                        false
                    }
                    Some(false) => {
                        failed += 1;
                        false
                    }
                    None => true,
                }
            }
            _ => {
                failed += 1;
                false
            }
        });
    }
    Phase {
        name,
        target: names.len(),
        wall: t.elapsed(),
        ok,
        failed,
        left: queue.len() + inflight.len(),
        note,
    }
}

/// Reset the process's peak RSS (`5` to `/proc/self/clear_refs`, Linux ≥ 4.0).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set size, KiB (`VmHWM`).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
