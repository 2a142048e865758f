//! The stack engine is crash-safe (issue 6): the real `seed daemon` (in a namespace of its own,
//! HTTP on that namespace's loopback) with fake-power nodes whose in-process fake agents
//! (`fake_agent:slow`) play inspection, deploy progress, first boot and the cleaning wipe
//! through the real API, and `kill -9` of the daemon at several points:
//! - `seed stack create` of 1 control + 2 compute: killed right after the create is
//!   acknowledged, while the images are being written (the agents reported `writing`) and once
//!   more 1.5 s later; each restart fails the unfinished deploys and the stack retries them on
//!   the same nodes (the events show the retries; 3 are allowed per member);
//! - after every restart each member is on its own node, the members' nodes are exactly the
//!   nodes not `available` (none allocated twice, none forgotten, none deployed for nothing),
//!   and the allocation never moves; the stack reaches CREATE_COMPLETE with every member
//!   `active`;
//! - `seed stack replace oc <node>` of a compute member: it moves to the spare cmp-2 with its
//!   name (UPDATE_COMPLETE), its old node is released and cleaned, nothing else moves; an
//!   unknown member is refused;
//! - `seed stack update -P compute_count=3`, killed while the freed node's image is being
//!   written: UPDATE_COMPLETE after a retry there, the members before unchanged, the new one on
//!   the freed node (ctl-small never: too little RAM);
//! - `seed stack delete`: the stack is gone and every node comes back `available` through
//!   cleaning (the fake agent's wipe).
//!
//! Every wait is bounded; the test fails with the stack and the nodes' states when one runs out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tests::daemon::{Config, TestImage};
use tests::netns::Netns;
use tests::proc::Child;

const TOKEN: &str = "stack-crash-token";
const PORT: u16 = 8080;

const TEMPLATE: &str = "heat_template_version: wallaby
description: 1 x control, N x compute
parameters:
  compute_count: {type: number, default: 2}
resources:
  control:
    type: OS::Seed::Server
    properties: {image: golden, profile: control, min_ram_mib: 4096}
  compute:
    type: OS::Heat::ResourceGroup
    properties:
      count: {get_param: compute_count}
      resource_def:
        type: OS::Seed::Server
        properties: {image: golden, profile: compute}
outputs:
  control_node: {value: {get_attr: [control, node]}}
";

/// (name, profile, RAM MiB): the small control node must never be picked (RAM).
const NODES: &[(&str, &str, u64)] = &[
    ("ctl-0", "control", 8192),
    ("ctl-small", "control", 2048),
    ("cmp-0", "compute", 4096),
    ("cmp-1", "compute", 4096),
    ("cmp-2", "compute", 4096),
];

struct Seed {
    ns: Netns,
    dir: tempfile::TempDir,
    daemon: Option<Child>,
    starts: usize,
}

impl Seed {
    fn new() -> Seed {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("http")).unwrap();
        // The image the template deploys, in the daemon's default image store: the seed
        // verifies it before a deploy starts (the agent side never comes here).
        TestImage::golden("test", b"not a real image: nothing streams it here")
            .import(&d.join("http/images"), &d.join("golden"));
        let inv: String = NODES
            .iter()
            .enumerate()
            .map(|(i, (name, profile, ram))| {
                format!(
                    "  - name: {name}\n    mac: [\"52:54:00:5c:00:{i:02x}\"]\n    pm_type: fake\n    \
                     pm_addr: fake\n    pm_user: admin\n    pm_password: pw\n    \
                     capabilities: \"profile:{profile},fake_agent:slow\"\n    memory: {ram}\n    disk: 40\n"
                )
            })
            .collect();
        tests::import_nodes(&d.join("seed.redb"), &inv);
        Config {
            http_port: PORT,
            ..Config::loopback(d, TOKEN)
        }
        .write();
        std::fs::write(d.join("overcloud.yaml"), TEMPLATE).unwrap();
        Seed {
            ns: Netns::new("stk"),
            dir,
            daemon: None,
            starts: 0,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn start(&mut self) {
        assert!(self.daemon.is_none());
        self.starts += 1;
        let name = format!("seed-daemon-{}", self.starts);
        self.daemon = Some(tests::daemon::spawn(
            &self.ns,
            &name,
            &self.path("seed.toml"),
        ));
    }

    /// SIGKILL, no goodbye (the `Child` drop kills with SIGKILL and reaps).
    fn kill9(&mut self) {
        let mut child = self.daemon.take().expect("running");
        assert!(
            child.is_running(),
            "the daemon died by itself:\n{}",
            child.output()
        );
        drop(child);
    }

    /// `seed …` inside the namespace, against the admin API.
    fn seed(&self, args: &[&str]) -> std::process::Output {
        self.ns
            .cmd(tests::seed_bin())
            .args(args)
            .env("SEED_API", "http://127.0.0.1:6385")
            .env("SEED_TOKEN", TOKEN)
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }

    fn curl(&self, method: &str, path: &str) -> (u16, serde_json::Value) {
        let url = format!("http://127.0.0.1:6385{path}");
        tests::daemon::api(&self.ns, method, &url, TOKEN, None)
    }

    fn node_states(&self) -> BTreeMap<String, String> {
        let (code, body) = self.curl("GET", "/v1/nodes");
        assert_eq!(code, 200, "{body}");
        tests::daemon::node_states(&body).expect("a list of nodes")
    }

    fn stack(&self) -> serde_json::Value {
        let (code, body) = self.curl("GET", "/v1/stacks/oc");
        assert_eq!(code, 200, "{body}");
        body
    }

    /// member → node, from the stack.
    fn members(&self) -> BTreeMap<String, String> {
        self.stack()["members"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| {
                Some((
                    m["name"].as_str()?.to_string(),
                    m["node"].as_str()?.to_string(),
                ))
            })
            .collect()
    }

    /// `GET /v1/stacks/oc` when the stack exists, `None` once it is gone.
    fn stack_opt(&self) -> Option<serde_json::Value> {
        let (code, body) = self.curl("GET", "/v1/stacks/oc");
        match code {
            200 => Some(body),
            404 => None,
            _ => panic!("GET /v1/stacks/oc: {code} {body}"),
        }
    }

    /// The phase of the agent's last deploy report per node (nodes that reported one).
    fn phases(&self) -> BTreeMap<String, String> {
        let (code, body) = self.curl("GET", "/v1/nodes");
        assert_eq!(code, 200, "{body}");
        body.as_array()
            .unwrap()
            .iter()
            .filter_map(|n| {
                Some((
                    n["name"].as_str()?.to_string(),
                    n["progress"]["phase"].as_str()?.to_string(),
                ))
            })
            .collect()
    }

    fn wait_until(&self, what: &str, mut ok: impl FnMut(&Seed) -> bool) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(120) {
            if ok(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{what}: not within 120 s; stack {:?}\nnodes {:?}\ndaemon log:\n{}",
            self.stack_opt(),
            self.node_states(),
            self.daemon.as_ref().map(|d| d.output()).unwrap_or_default()
        );
    }
}

/// The invariants after any crash: every server member on its own node, the members' nodes
/// exactly the nodes in use (not `available`), and, given `expect`, the members it lists still
/// on the same nodes.
fn check(seed: &Seed, expect: Option<&BTreeMap<String, String>>) -> BTreeMap<String, String> {
    let members = seed.members();
    let states = seed.node_states();
    let nodes: BTreeSet<&String> = members.values().collect();
    assert_eq!(
        nodes.len(),
        members.len(),
        "a node holds two members: {members:?}"
    );
    for (m, n) in &members {
        assert_ne!(states[n], "available", "{m} on {n}, forgotten: {states:?}");
    }
    for (n, s) in &states {
        if !nodes.contains(n) {
            assert_eq!(s, "available", "{n} is {s} but no member holds it");
        }
    }
    if let Some(want) = expect {
        for (m, n) in want {
            assert_eq!(
                members.get(m),
                Some(n),
                "the allocation moved across a restart: {members:?}, was {want:?}"
            );
        }
    }
    members
}

fn status(seed: &Seed) -> String {
    seed.stack()["status"].as_str().unwrap_or("").to_string()
}

/// Wait until the stack's status is `want`, failing at once on a `…FAILED` one.
fn complete(seed: &Seed, want: &str) {
    seed.wait_until(want, |s| {
        let st = status(s);
        assert!(!st.ends_with("FAILED"), "{}", s.stack());
        st == want
    });
}

#[test]
fn stack_crash_kill9_completes_scales_and_deletes() {
    tests::require("curl");
    let mut seed = Seed::new();
    seed.start();
    for n in NODES {
        let (code, body) = seed.curl("POST", &format!("/v1/nodes/{}/manage", n.0));
        assert_eq!(code, 202, "{body}");
    }
    seed.wait_until("all manageable", |s| {
        s.node_states().values().all(|st| st == "manageable")
    });
    for n in NODES {
        let (code, body) = seed.curl("POST", &format!("/v1/nodes/{}/provide", n.0));
        assert_eq!(code, 202, "{body}");
    }
    seed.wait_until("all available", |s| {
        s.node_states().values().all(|st| st == "available")
    });

    // A template error is refused with its place, and stores nothing.
    std::fs::write(
        seed.path("bad.yaml"),
        "heat_template_version: wallaby\nresources:\n  x: {type: OS::Nope}\n",
    )
    .unwrap();
    let out = seed.seed(&["stack", "create", "bad", "-f", "bad.yaml"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:3:"), "{err}");

    // Crash point 1: right after the create is acknowledged (the engine is woken at once).
    let out = seed.seed(&["stack", "create", "oc", "-f", "overcloud.yaml"]);
    assert!(out.status.success(), "{out:?}");
    seed.kill9();
    seed.start();
    seed.wait_until("3 members allocated", |s| s.members().len() == 3);
    let first = check(&seed, None);
    assert_eq!(first["control"], "ctl-0", "ctl-small has too little RAM");
    assert!(!first.values().any(|n| n == "cmp-2" || n == "ctl-small"));

    // Crash point 2: while an image is being written.
    seed.wait_until("an agent writing", |s| {
        s.phases().values().any(|p| p == "writing")
    });
    eprintln!("kill -9 while writing: {:?}", seed.phases());
    seed.kill9();
    seed.start();
    check(&seed, Some(&first));

    // Crash point 3: a little later, whatever is under way then.
    std::thread::sleep(Duration::from_millis(1500));
    check(&seed, Some(&first));
    seed.kill9();
    seed.start();
    check(&seed, Some(&first));

    complete(&seed, "CREATE_COMPLETE");
    assert_eq!(check(&seed, Some(&first)), first, "no member added or lost");
    let states = seed.node_states();
    for n in first.values() {
        assert_eq!(states[n], "active", "{states:?}");
    }
    assert_eq!(states["ctl-small"], "available");
    assert_eq!(states["cmp-2"], "available");

    // `seed stack show` and `events` read the same story.
    let out = seed.seed(&["stack", "show", "oc"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("control") && text.contains("ctl-0") && text.contains("CREATE_COMPLETE"),
        "{text}"
    );
    let out = seed.seed(&["stack", "events", "oc"]);
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("events after the create:\n{text}");
    assert!(text.contains("CREATE_COMPLETE"), "{text}");
    for n in first.values() {
        assert!(
            text.lines()
                .any(|l| l.contains(&format!("deploy on {n} failed"))
                    && l.contains("restarted before the image was written")),
            "the kill -9 while writing cut {n}'s deploy, retried on the same node:\n{text}"
        );
    }
    assert_eq!(
        text.matches("Stack CREATE started").count(),
        1,
        "events are written once, crashes or not:\n{text}"
    );

    // `seed stack replace`: a compute machine "died"; its member moves to the spare (cmp-2)
    // with its name, its node is released and cleaned, the other members stay where they are.
    // An unknown member is refused and changes nothing.
    let out = seed.seed(&["stack", "replace", "oc", "nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no server \"nope\""), "{err}");
    assert_eq!(status(&seed), "CREATE_COMPLETE");
    let (victim_member, victim) = first
        .iter()
        .find(|(m, _)| m.starts_with("compute"))
        .map(|(m, n)| (m.clone(), n.clone()))
        .unwrap();
    let out = seed.seed(&["stack", "replace", "oc", &victim, "--wait", "120"]);
    assert!(out.status.success(), "{out:?}");
    complete(&seed, "UPDATE_COMPLETE");
    seed.wait_until("the replaced machine cleaned", |s| {
        s.node_states()[&victim] == "available"
    });
    let mut first = first;
    first.insert(victim_member.clone(), "cmp-2".to_string());
    assert_eq!(
        check(&seed, Some(&first)),
        first,
        "only the replaced member moved"
    );
    let out = seed.seed(&["stack", "events", "oc"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("replacing {victim_member} (on {victim})")),
        "{text}"
    );
    // The freed machine is the spare now.
    let spare = victim;

    // Scale compute 2 → 3, with a kill -9 during the scale-out.
    let out = seed.seed(&[
        "stack",
        "update",
        "oc",
        "-f",
        "overcloud.yaml",
        "-P",
        "compute_count=3",
    ]);
    assert!(out.status.success(), "{out:?}");
    seed.wait_until("4 members allocated", |s| s.members().len() == 4);
    let second = check(&seed, Some(&first));
    let new: Vec<_> = second
        .iter()
        .filter(|(m, _)| !first.contains_key(*m))
        .collect();
    assert_eq!(new.len(), 1, "{second:?}");
    assert_eq!(
        new[0].1, &spare,
        "the new member takes the free compute node"
    );
    let new_member = new[0].0.clone();
    seed.wait_until("the spare writing", |s| {
        s.phases().get(&spare).map(String::as_str) == Some("writing")
    });
    seed.kill9();
    seed.start();
    check(&seed, Some(&second));
    complete(&seed, "UPDATE_COMPLETE");
    assert_eq!(check(&seed, Some(&second)), second);
    let states = seed.node_states();
    for n in second.values() {
        assert_eq!(states[n], "active", "{states:?}");
    }
    assert_eq!(
        states["ctl-small"], "available",
        "ctl-small is never picked"
    );
    let out = seed.seed(&["stack", "events", "oc"]);
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("events after the update:\n{text}");
    assert!(
        text.lines().any(|l| l.contains(&new_member)
            && l.contains(&format!("deploy on {spare} failed"))
            && l.contains("restarted before the image was written")),
        "the kill -9 during the scale-out cut {spare}'s deploy, retried there:\n{text}"
    );
    assert!(text.contains("UPDATE_COMPLETE"), "{text}");

    // Delete: the stack goes, its nodes come back available through cleaning.
    let out = seed.seed(&["stack", "delete", "oc"]);
    assert!(out.status.success(), "{out:?}");
    seed.wait_until("stack gone, every node available", |s| {
        s.stack_opt().is_none() && s.node_states().values().all(|st| st == "available")
    });
    let daemon = seed.daemon.as_ref().unwrap().output();
    for n in second.values() {
        assert!(
            daemon
                .lines()
                .any(|l| l.contains("wipe handed to the agent") && l.contains(n.as_str())),
            "{n} came back through cleaning:\n{daemon}"
        );
    }
    seed.kill9();
}
