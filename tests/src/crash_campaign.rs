//! The crash campaign (issue 18, `cargo xtask campaign crash`): `kill -9` of the real
//! `seed daemon` at random points of an M-node stack deploy on simulated machines, N runs, each
//! resumed by starting the daemon again on the same store. The machines are a
//! `seed-fake-farm` process (IPMI BMCs on UDP, agents over HTTP, see [`crate::farm`]) that
//! outlives the daemon and counts per machine the deploy commands it received and the deploys
//! it finished: "none deployed twice" is read from there, not from the daemon.
//!
//! Inspection is done once (a template store: all nodes `available`); each run copies it to
//! the same path, so every run starts from the same state. One deploy without a kill measures
//! the deploy window; each run then kills the daemon once or twice, each time after a random
//! delay within that window, so kills land while machines power on and PXE, while agents
//! write, while deployed images boot and near the end. The phase of every node at each kill
//! is tallied from the farm's counters.
//!
//! Every run is bounded ([`RUN_LIMIT`]) and lives in a network namespace of its own (loopback
//! only: each machine fetches its iPXE script from its own reserved 127.0.0.x address), which
//! is removed with everything running in it when the run ends.

use crate::daemon::{Config, TestImage};
use crate::farm::{FarmNode, FarmSpec, NodeStatus};
use crate::netns::Netns;
use crate::proc::Child;
use rand::RngExt;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The daemon's token in the campaign's namespaces.
const TOKEN: &str = "crash-campaign-token";
const HTTP_PORT: u16 = 8080;
/// One run, kills and resumes included, ends within this.
pub const RUN_LIMIT: Duration = Duration::from_secs(600);

/// What to run.
#[derive(Debug, Clone)]
pub struct Campaign {
    pub runs: usize,
    pub nodes: usize,
    /// The `seed-fake-farm` binary.
    pub farm_bin: PathBuf,
    /// Where the template store, each run's store and the logs of failed runs go.
    pub dir: PathBuf,
}

/// Where one node was when the daemon was killed (from the farm's counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodePhase {
    /// Not powered on yet.
    Waiting,
    /// Powered on: firmware, PXE, ramdisk boot, no deploy command yet.
    PowerOnPxe,
    /// The agent has its deploy command and is writing.
    Writing,
    /// Image written, its boot not reported yet.
    Written,
    /// The deployed image reported its boot.
    Booted,
}

impl NodePhase {
    fn of(s: &NodeStatus) -> Self {
        if s.image_boots_reported > 0 {
            Self::Booted
        } else if s.deploys_done > 0 {
            Self::Written
        } else if s.deploy_commands > 0 {
            Self::Writing
        } else if s.power_ons > 0 {
            Self::PowerOnPxe
        } else {
            Self::Waiting
        }
    }
}

/// One run's outcome.
#[derive(Debug, Clone, Default)]
pub struct RunResult {
    pub kills: usize,
    /// The most common node phase at each kill.
    pub kill_points: Vec<NodePhase>,
    /// Node phases at every kill, all nodes counted.
    pub node_phases: BTreeMap<NodePhase, usize>,
    pub all_active: bool,
    pub complete: bool,
    /// Nodes that received more than one deploy command or finished more than one deploy.
    pub double_deploys: Vec<String>,
    /// Nodes powered on more than once (a restart that re-powered: not a double deploy).
    pub repowered: usize,
    pub secs: f64,
    /// Why the run failed, if it did.
    pub failure: Option<String>,
}

fn farm_nodes(m: usize) -> Vec<FarmNode> {
    (0..m)
        .map(|i| {
            let (name, mac) = (
                format!("n{i}"),
                format!("52:54:00:fc:{:02x}:{:02x}", i / 256, i % 256),
            );
            let bmc = format!("127.0.0.1:{}", 6300 + i).parse().unwrap();
            let ip = std::net::Ipv4Addr::new(127, 0, 1 + (i / 200) as u8, 10 + (i % 200) as u8);
            crate::daemon::farm_node(i, name, mac, bmc, ip)
        })
        .collect()
}

/// The daemon, the farm and the namespace of one deploy.
struct Rig {
    ns: Netns,
    dir: PathBuf,
    farm: Option<Child>,
    status: PathBuf,
    daemon: Option<Child>,
    /// The logs of every daemon started in this rig, in order.
    logs: Vec<String>,
}

impl Rig {
    fn new(dir: &Path, farm_bin: &Path, nodes: Vec<FarmNode>) -> Self {
        let ns = Netns::new("crash");
        // 127.0.0.0/8 is on lo: the 127.0.1.x addresses of nodes past the 200th work as well.
        // Seven deploy phases of 300 ms: writing is a good part of the window.
        let spec = FarmSpec::new(format!("http://127.0.0.1:{HTTP_PORT}"), nodes, 300);
        let (farm, status) = crate::farm::spawn(ns.cmd(farm_bin), &spec, dir);
        let mut rig = Self {
            ns,
            dir: dir.to_path_buf(),
            farm: Some(farm),
            status,
            daemon: None,
            logs: vec![],
        };
        rig.start_daemon();
        rig
    }

    fn start_daemon(&mut self) {
        let config = self.dir.join("seed.toml");
        self.daemon = Some(crate::daemon::spawn(&self.ns, "seed-daemon", &config));
    }

    /// `kill -9` the daemon (`ip netns exec` execs it in place: the child's pid is its pid).
    fn kill_daemon(&mut self) {
        if let Some(d) = self.daemon.take() {
            // SAFETY: kill(2) on our own child's pid, not yet reaped.
            unsafe { libc::kill(d.id() as i32, libc::SIGKILL) };
            self.logs.push(d.output());
        }
    }

    fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        let url = format!("http://127.0.0.1:6385{path}");
        crate::daemon::api(&self.ns, method, &url, TOKEN, body)
    }

    /// Node states; empty while the daemon does not answer with a list.
    fn states(&self) -> BTreeMap<String, String> {
        let (_, body) = self.api("GET", "/v1/nodes", None);
        crate::daemon::node_states(&body).unwrap_or_default()
    }

    fn stack_status(&self) -> String {
        let (_, body) = self.api("GET", "/v1/stacks/campaign", None);
        body["status"].as_str().unwrap_or("").to_string()
    }

    /// Poll until `ok`, or `Err` once `deadline` passes.
    fn wait(
        &self,
        what: &str,
        deadline: Instant,
        mut ok: impl FnMut(&Self) -> bool,
    ) -> Result<(), String> {
        while !ok(self) {
            if Instant::now() > deadline {
                return Err(format!("{what}: not within the run's time"));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Ok(())
    }

    fn create_stack(&self, m: usize) -> Result<(), String> {
        let template = crate::daemon::compute_template(m);
        let req = serde_json::json!({"name": "campaign", "template": template}).to_string();
        let (code, body) = self.api("POST", "/v1/stacks", Some(&req));
        if code == 201 {
            Ok(())
        } else {
            Err(format!("stack create: {code} {body}"))
        }
    }

    fn farm(&self) -> BTreeMap<String, NodeStatus> {
        crate::farm::read_status(&self.status)
    }

    /// Stop the daemon (kill) and the farm, keeping the logs; the namespace goes on drop.
    fn stop(&mut self) {
        self.kill_daemon();
        drop(self.farm.take());
    }
}

/// Inspect every node once into a template directory (`dir/template`); returns the deploy
/// window measured by one deploy without a kill, on a copy.
fn prepare(c: &Campaign) -> Result<Duration, String> {
    let t = c.dir.join("template");
    let _ = std::fs::remove_dir_all(&t);
    std::fs::create_dir_all(t.join("http")).map_err(|e| e.to_string())?;
    TestImage::golden(
        "campaign",
        b"not a real image: the farm's agents only report progress",
    )
    .import(&t.join("http/images"), &c.dir.join("golden"));
    let nodes = farm_nodes(c.nodes);
    crate::import_nodes(&t.join("seed.redb"), &crate::daemon::ipmi_inventory(&nodes));
    let run = c.dir.join("run");
    let config = Config {
        heartbeat_secs: Some(1),
        http_port: HTTP_PORT,
        nodes: &nodes,
        ..Config::loopback(&run, TOKEN)
    };
    std::fs::write(t.join("seed.toml"), config.render()).map_err(|e| e.to_string())?;
    // The template is used at the runs' path: every path the store or the config holds is the
    // same in each run.
    copy_dir(&t, &run)?;
    let mut rig = Rig::new(&run, &c.farm_bin, nodes.clone());
    let deadline = Instant::now() + RUN_LIMIT;
    for n in &nodes {
        let (code, body) = rig.api("POST", &format!("/v1/nodes/{}/inspect", n.name), None);
        if code != 202 && code != 200 {
            return Err(format!("inspect {}: {code} {body}", n.name));
        }
    }
    rig.wait("all available", deadline, |r| {
        let s = r.states();
        s.len() == nodes.len() && s.values().all(|s| s == "available")
    })?;
    rig.stop();
    drop(rig);
    std::fs::remove_dir_all(&t).map_err(|e| e.to_string())?;
    copy_dir(&run, &t)?;
    let _ = std::fs::remove_file(t.join("farm-status.json"));
    // The window: one deploy, no kill.
    copy_dir(&t, &run)?;
    let mut rig = Rig::new(&run, &c.farm_bin, nodes);
    let t0 = Instant::now();
    rig.create_stack(c.nodes)?;
    rig.wait("CREATE_COMPLETE", t0 + RUN_LIMIT, |r| {
        r.stack_status() == "CREATE_COMPLETE"
    })?;
    let window = t0.elapsed();
    rig.stop();
    Ok(window)
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(to);
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .map_err(|e| format!("cp: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "cp -a {}: {}",
            from.display(),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// One run: deploy, kill once or twice at random points, resume, check.
fn one_run(c: &Campaign, window: Duration, rng: &mut impl rand::Rng) -> RunResult {
    let mut r = RunResult::default();
    let t0 = Instant::now();
    let deadline = t0 + RUN_LIMIT;
    let run = c.dir.join("run");
    if let Err(e) = copy_dir(&c.dir.join("template"), &run) {
        r.failure = Some(e);
        return r;
    }
    let mut rig = Rig::new(&run, &c.farm_bin, farm_nodes(c.nodes));
    let outcome = deploy_with_kills(c, window, rng, &mut rig, &mut r, deadline);
    rig.stop();
    r.secs = t0.elapsed().as_secs_f64();
    if let Err(e) = outcome {
        r.failure = Some(e);
        keep_logs(c, &rig);
    }
    r
}

/// The stack deploy of one run, the daemon killed once or twice and started again; then the
/// checks (filled into `r`).
fn deploy_with_kills(
    c: &Campaign,
    window: Duration,
    rng: &mut impl rand::Rng,
    rig: &mut Rig,
    r: &mut RunResult,
    deadline: Instant,
) -> Result<(), String> {
    rig.create_stack(c.nodes)?;
    let kills = rng.random_range(1..=2);
    for _ in 0..kills {
        let delay = window.mul_f64(rng.random_range(0.0..1.0));
        std::thread::sleep(delay);
        let farm = rig.farm();
        let mut phases: BTreeMap<NodePhase, usize> = BTreeMap::new();
        for s in farm.values() {
            *phases.entry(NodePhase::of(s)).or_default() += 1;
        }
        rig.kill_daemon();
        r.kills += 1;
        let most = phases
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(p, _)| *p)
            .unwrap_or(NodePhase::Waiting);
        r.kill_points.push(most);
        for (p, n) in phases {
            *r.node_phases.entry(p).or_default() += n;
        }
        rig.start_daemon();
    }
    rig.wait("CREATE_COMPLETE", deadline, |r| {
        let s = r.stack_status();
        s == "CREATE_COMPLETE" || s.ends_with("FAILED")
    })?;
    r.complete = rig.stack_status() == "CREATE_COMPLETE";
    let states = rig.states();
    r.all_active = states.len() == c.nodes && states.values().all(|s| s == "active");
    // The farm rewrites its status every 100 ms.
    std::thread::sleep(Duration::from_millis(300));
    for (n, s) in rig.farm() {
        if s.deploy_commands > 1 || s.deploys_done > 1 {
            r.double_deploys.push(n);
        }
        if s.power_ons > 1 {
            r.repowered += 1;
        }
    }
    if !r.complete {
        return Err(format!("stack {}", rig.stack_status()));
    }
    if !r.all_active {
        let not: Vec<_> = states.iter().filter(|(_, s)| *s != "active").collect();
        return Err(format!("not active: {not:?}"));
    }
    if !r.double_deploys.is_empty() {
        return Err(format!("deployed twice: {:?}", r.double_deploys));
    }
    Ok(())
}

/// A failed run's daemon logs and farm status, under `dir/failed/<time>/`.
fn keep_logs(c: &Campaign, rig: &Rig) {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let out = c.dir.join("failed").join(stamp.to_string());
    if std::fs::create_dir_all(&out).is_ok() {
        for (i, log) in rig.logs.iter().enumerate() {
            let _ = std::fs::write(out.join(format!("daemon-{i}.log")), log);
        }
        let _ = std::fs::copy(&rig.status, out.join("farm-status.json"));
        eprintln!("campaign: logs of the failed run in {}", out.display());
    }
}

/// The whole campaign's tally.
#[derive(Debug, Default)]
pub struct Tally {
    pub window: Duration,
    pub runs: Vec<RunResult>,
}

impl Tally {
    pub fn failures(&self) -> usize {
        self.runs.iter().filter(|r| r.failure.is_some()).count()
    }

    pub fn print(&self, nodes: usize) {
        let kills: usize = self.runs.iter().map(|r| r.kills).sum();
        let mut points: BTreeMap<NodePhase, usize> = BTreeMap::new();
        let mut node_phases: BTreeMap<NodePhase, usize> = BTreeMap::new();
        for r in &self.runs {
            for p in &r.kill_points {
                *points.entry(*p).or_default() += 1;
            }
            for (p, n) in &r.node_phases {
                *node_phases.entry(*p).or_default() += n;
            }
        }
        let secs: Vec<f64> = self.runs.iter().map(|r| r.secs).collect();
        let mean = secs.iter().sum::<f64>() / secs.len().max(1) as f64;
        let max = secs.iter().copied().fold(0.0, f64::max);
        let min = secs.iter().copied().fold(f64::INFINITY, f64::min);
        let double: usize = self.runs.iter().map(|r| r.double_deploys.len()).sum();
        println!("crash campaign: {} runs x {nodes} nodes", self.runs.len());
        println!(
            "  deploy window (no kill):   {:.1} s",
            self.window.as_secs_f64()
        );
        println!("  kills (kill -9):           {kills}");
        println!("  resumes (daemon restarts): {kills}");
        println!("  kill points (most nodes):  {points:?}");
        println!("  node phases at kills:      {node_phases:?}");
        println!(
            "  all active + CREATE_COMPLETE: {}/{}",
            self.runs
                .iter()
                .filter(|r| r.all_active && r.complete)
                .count(),
            self.runs.len()
        );
        println!("  nodes deployed twice:      {double}");
        println!(
            "  nodes re-powered:          {}",
            self.runs.iter().map(|r| r.repowered).sum::<usize>()
        );
        println!("  time per run:              mean {mean:.1} s, min {min:.1} s, max {max:.1} s");
        println!("  failed runs:               {}", self.failures());
        for (i, r) in self.runs.iter().enumerate() {
            if let Some(f) = &r.failure {
                println!("    run {i}: {f}");
            }
        }
    }
}

/// Run the campaign: prepare, then `runs` runs, printing one line per run.
pub fn run(c: &Campaign) -> Result<Tally, String> {
    std::fs::create_dir_all(&c.dir).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let window = prepare(c)?;
    eprintln!(
        "campaign: {} nodes inspected, one deploy in {:.1} s (prepared in {:.0} s)",
        c.nodes,
        window.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    let mut rng = rand::rng();
    let mut tally = Tally {
        window,
        runs: vec![],
    };
    for i in 0..c.runs {
        // A fixture that panics (a daemon that does not come up) fails this run, not the
        // campaign.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            one_run(c, window, &mut rng)
        }))
        .unwrap_or_else(|_| RunResult {
            failure: Some("a fixture panicked (see above)".into()),
            ..RunResult::default()
        });
        eprintln!(
            "campaign: run {i}: {} kill(s) at {:?}, {:.1} s, {}",
            r.kills,
            r.kill_points,
            r.secs,
            r.failure.as_deref().unwrap_or("ok")
        );
        tally.runs.push(r);
    }
    let _ = std::fs::remove_dir_all(c.dir.join("run"));
    Ok(tally)
}
