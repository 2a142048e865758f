//! The fault campaign on the wire (issue 18, `cargo xtask campaign wire`): QEMU nodes (real
//! firmware, iPXE, the real ramdisk) inspected and then deployed with the tiny image by the
//! real `seed daemon` while smoltcp's fault injector drops and corrupts a share of every
//! frame the seed sends and receives (`[netboot.wire.faults]`), and BMCs misbehave through the
//! lab's fault controls. Every node must end `active` or failed with a reason within bounded
//! time: a node still inspecting or deploying [`MARGIN`] after the daemon's own step timeout
//! (shortened for the campaign) is "stuck", and fails the campaign.
//!
//! Beside the VM nodes each run enrolls machines whose BMC is the fault: the first VM node's
//! BMC is slow and lossy (it must still work, through the driver's retries), one BMC never
//! answers and one is enrolled with a wrong password (both must fail inspection with a reason
//! that says so, without ever powering anything).

use crate::proc::Child;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const TOKEN: &str = "wire-campaign-token";
/// The daemon's inspect timeout in the campaign (`[lifecycle] inspect_timeout_secs`).
const INSPECT_TIMEOUT: u64 = 420;
/// The daemon's deploy timeout, per half (`[lifecycle] deploy_timeout_secs`).
const DEPLOY_TIMEOUT: u64 = 480;
/// A node not in a final state this long after the daemon's own timeout is stuck.
const MARGIN: u64 = 120;
/// Inspection of every node ends within this.
pub const INSPECT_LIMIT: Duration = Duration::from_secs(INSPECT_TIMEOUT + MARGIN);
/// The deploy of every available node ends within this (both halves).
pub const DEPLOY_LIMIT: Duration = Duration::from_secs(2 * DEPLOY_TIMEOUT + MARGIN);

/// What to run.
#[derive(Debug, Clone)]
pub struct Campaign {
    pub runs: usize,
    /// VM nodes per run (plus the two whose BMC never works).
    pub nodes: usize,
    pub drop_pct: u8,
    pub corrupt_pct: u8,
    /// Runs' directories (logs of the daemon and the consoles are kept there).
    pub dir: PathBuf,
}

/// How one node's step ended.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    /// `available` after inspection, `active` after deploy.
    Done { secs: f64 },
    /// A failed state with its reason.
    Failed {
        state: String,
        reason: String,
        secs: f64,
    },
    /// Not in a final state at the bound.
    Stuck { state: String },
}

impl End {
    fn label(&self) -> String {
        match self {
            End::Done { secs } => format!("ok {secs:.0} s"),
            End::Failed {
                state,
                reason,
                secs,
            } => format!("{state} after {secs:.0} s: {reason}"),
            End::Stuck { state } => format!("STUCK in {state}"),
        }
    }
}

/// One node of one run.
#[derive(Debug, Clone)]
pub struct NodeResult {
    pub name: String,
    /// What is wrong with it on purpose (`wire`, `slow+lossy BMC`, …).
    pub fault: &'static str,
    pub inspect: End,
    /// `None`: not deployed (inspection failed).
    pub deploy: Option<End>,
}

/// Every run's nodes.
#[derive(Debug, Default)]
pub struct Tally {
    pub runs: Vec<Vec<NodeResult>>,
    /// Problems that fail the campaign (stuck nodes, failures without a reason, a BMC fault
    /// that went unnoticed).
    pub problems: Vec<String>,
}

impl Tally {
    pub fn print(&self, c: &Campaign) {
        println!(
            "wire fault campaign: {} run(s), {} VM node(s) + 2 broken BMCs each, {}% of frames dropped, {}% corrupted",
            self.runs.len(),
            c.nodes,
            c.drop_pct,
            c.corrupt_pct
        );
        let (mut active, mut failed, mut stuck) = (0, 0, 0);
        for (i, run) in self.runs.iter().enumerate() {
            for n in run {
                let deploy = n.deploy.as_ref().map_or("-".into(), End::label);
                println!(
                    "  run {} {:<10} {:<16} inspect: {} | deploy: {}",
                    i + 1,
                    n.name,
                    n.fault,
                    n.inspect.label(),
                    deploy
                );
                let last = n.deploy.as_ref().unwrap_or(&n.inspect);
                match last {
                    End::Done { .. } => active += 1,
                    End::Failed { .. } => failed += 1,
                    End::Stuck { .. } => stuck += 1,
                }
            }
        }
        println!("  ended active {active}, failed with a reason {failed}, stuck {stuck}");
        for p in &self.problems {
            println!("  PROBLEM: {p}");
        }
    }
}

/// Run the campaign.
pub fn run(c: &Campaign) -> Tally {
    let mut tally = Tally::default();
    for i in 0..c.runs {
        let dir = c.dir.join(format!("run-{}", i + 1));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the run's directory");
        let (results, problems) = one_run(c, i as u32 + 1, &dir);
        tally.problems.extend(problems);
        tally.runs.push(results);
    }
    tally
}

fn api(port: u16, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    crate::api_call(port, TOKEN, method, path, body)
}

fn node_state(port: u16, name: &str) -> (String, String) {
    let (code, body) = api(port, "GET", &format!("/v1/nodes/{name}"), None);
    if code != 200 {
        return (format!("(GET answered {code})"), String::new());
    }
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let reason = [s("reason"), s("last_error")]
        .into_iter()
        .find(|r| !r.is_empty())
        .unwrap_or_default();
    (s("state"), reason)
}

/// A state a node passes through while the seed works on it.
fn in_progress(state: &str) -> bool {
    [
        "verifying",
        "inspecting",
        "deploying",
        "deleting",
        "cleaning",
    ]
    .contains(&state)
}

/// Wait until every node in `names` is in `done` or a failed state, or `limit` passes.
fn settle(port: u16, names: &[String], done: &str, limit: Duration) -> Vec<End> {
    let t0 = Instant::now();
    let mut ends: Vec<Option<End>> = vec![None; names.len()];
    while ends.iter().any(Option::is_none) {
        let secs = t0.elapsed().as_secs_f64();
        for (n, e) in names.iter().zip(ends.iter_mut()) {
            if e.is_some() {
                continue;
            }
            let (state, reason) = node_state(port, n);
            if state == done {
                *e = Some(End::Done { secs });
            } else if state.ends_with("failed") || (!in_progress(&state) && !reason.is_empty()) {
                // `enroll` with an error: its BMC check (verify) failed.
                *e = Some(End::Failed {
                    state,
                    reason,
                    secs,
                });
            } else if t0.elapsed() > limit {
                *e = Some(End::Stuck { state });
            }
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    ends.into_iter().map(|e| e.expect("settled")).collect()
}

/// One run: its nodes' results and the problems found.
fn one_run(c: &Campaign, seed: u32, dir: &Path) -> (Vec<NodeResult>, Vec<String>) {
    let plan = crate::test_plan("wf", c.nodes + 2, 512, &[2]);
    let lab = qemu::Lab::start(&dir.join("lab"), plan.lab_file(), Default::default())
        .expect("starting the lab");
    let specs = lab.file().nodes.clone();
    let faults: Vec<&'static str> = (0..specs.len())
        .map(|i| match i {
            _ if i == specs.len() - 2 => "dead BMC",
            _ if i == specs.len() - 1 => "wrong password",
            0 => "slow+lossy BMC",
            _ => "wire only",
        })
        .collect();
    let first = &specs[0].name;
    lab.bmc(first)
        .expect("first BMC")
        .set_fault(qemu::bmc::Faults {
            delay_ms: 500,
            drop_fraction: 0.1,
            ..Default::default()
        });
    let dead = &specs[specs.len() - 2].name;
    lab.bmc(dead)
        .expect("dead BMC")
        .set_fault(qemu::bmc::Faults {
            unresponsive: true,
            ..Default::default()
        });

    let mut ws = crate::wire_seed::config(dir, lab.file(), specs.clone(), TOKEN);
    ws.step_timeouts = Some((INSPECT_TIMEOUT, DEPLOY_TIMEOUT));
    ws.wire_faults = Some(netboot::wire::WireFaults {
        drop_pct: c.drop_pct,
        corrupt_pct: c.corrupt_pct,
        seed,
    });
    // The seed knows the last node by a password its BMC does not take.
    let enrolled = {
        let mut w = ws.clone();
        w.nodes.last_mut().expect("nodes").bmc.password = "not-the-password".into();
        w
    };
    crate::wire_seed::enroll(&enrolled, &[]);
    images::ImageStore::open(ws.images())
        .and_then(|s| s.import(&crate::tiny_manifest()))
        .expect("importing tiny");
    let seed_log = "info,seed::daemon=debug,seed::power=debug";
    let mut daemon = crate::wire_seed::start(&ws, seed_log);
    let port = ws.api_port;

    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    for n in &names {
        let (code, body) = api(port, "POST", &format!("/v1/nodes/{n}/inspect"), None);
        assert_eq!(code, 202, "inspect {n}: {body}");
    }
    let inspected = settle(port, &names, "available", INSPECT_LIMIT);
    let available: Vec<String> = names
        .iter()
        .zip(&inspected)
        .filter(|(_, e)| matches!(e, End::Done { .. }))
        .map(|(n, _)| n.clone())
        .collect();
    for n in &available {
        let body = r#"{"image": "tiny", "root_hint": "size>=1"}"#;
        let (code, text) = api(port, "POST", &format!("/v1/nodes/{n}/deploy"), Some(body));
        assert_eq!(code, 202, "deploy {n}: {text}");
    }
    let deployed = settle(port, &available, "active", DEPLOY_LIMIT);

    let mut results = Vec::new();
    for ((name, fault), inspect) in names.iter().zip(&faults).zip(inspected) {
        let deploy = available
            .iter()
            .position(|a| a == name)
            .map(|i| deployed[i].clone());
        results.push(NodeResult {
            name: name.clone(),
            fault,
            inspect,
            deploy,
        });
    }
    let problems = judge(seed, &results, dead, &specs[specs.len() - 1].name);
    keep_logs(dir, &mut daemon, &lab, &names);
    (results, problems)
}

/// What fails the campaign in one run's results.
fn judge(run: u32, results: &[NodeResult], dead: &str, bad_password: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for r in results {
        for e in std::iter::once(&r.inspect).chain(&r.deploy) {
            match e {
                End::Stuck { state } => {
                    problems.push(format!("run {run}: {} stuck in {state}", r.name))
                }
                End::Failed { reason, .. } if reason.trim().is_empty() => {
                    problems.push(format!("run {run}: {} failed without a reason", r.name))
                }
                _ => {}
            }
        }
        if (r.name == dead || r.name == bad_password) && !matches!(r.inspect, End::Failed { .. }) {
            problems.push(format!(
                "run {run}: {} ({}) was not refused: {}",
                r.name,
                r.fault,
                r.inspect.label()
            ));
        }
    }
    problems
}

/// The daemon's log and the consoles, kept in the run's directory.
fn keep_logs(dir: &Path, daemon: &mut Child, lab: &qemu::Lab, names: &[String]) {
    let _ = std::fs::write(dir.join("seed-daemon.log"), daemon.output());
    for n in names {
        if let Some(node) = lab.node(n) {
            let p = node.lock().expect("node").console_path();
            let _ = std::fs::copy(&p, dir.join(format!("{n}.console")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, inspect: End, deploy: Option<End>) -> NodeResult {
        NodeResult {
            name: name.into(),
            fault: "wire only",
            inspect,
            deploy,
        }
    }

    #[test]
    fn stuck_nodes_reasonless_failures_and_unnoticed_bmc_faults_are_problems() {
        let ok = End::Done { secs: 1.0 };
        let failed = |reason: &str| End::Failed {
            state: "inspect failed".into(),
            reason: reason.into(),
            secs: 1.0,
        };
        let fine = [
            node("a", ok.clone(), Some(ok.clone())),
            node("b", ok.clone(), Some(failed("deploy timed out"))),
            node("dead", failed("unreachable"), None),
            node("badpw", failed("credentials"), None),
        ];
        assert!(judge(1, &fine, "dead", "badpw").is_empty());

        let bad = [
            node(
                "a",
                ok.clone(),
                Some(End::Stuck {
                    state: "deploying".into(),
                }),
            ),
            node("b", failed(" "), None),
            node("dead", ok.clone(), Some(ok.clone())),
            node("badpw", failed("credentials"), None),
        ];
        let p = judge(2, &bad, "dead", "badpw");
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("a stuck in deploying"), "{p:?}");
        assert!(p[1].contains("b failed without a reason"), "{p:?}");
        assert!(
            p[2].contains("dead") && p[2].contains("not refused"),
            "{p:?}"
        );
    }

    #[test]
    fn only_the_seeds_working_states_are_in_progress() {
        for s in [
            "verifying",
            "inspecting",
            "deploying",
            "cleaning",
            "deleting",
        ] {
            assert!(in_progress(s), "{s}");
        }
        for s in [
            "enroll",
            "manageable",
            "available",
            "active",
            "deploy failed",
        ] {
            assert!(!in_progress(s), "{s}");
        }
    }
}
