//! The stack engine is crash-safe: the real `seed daemon` (in a namespace of its own, HTTP on
//! that namespace's loopback) with fake-power nodes, `seed stack create` of 1 control + 2
//! compute, and `kill -9` of the daemon at several points of the deploy. After every restart
//! each member is on its own node, the members' nodes are exactly the nodes deploying (none
//! allocated twice, none forgotten, none deployed for nothing), and the allocation never moves.
//!
//! Completing the deploys needs the node's side (`/v1/agent/progress`, `/v1/node/booted`), which
//! the deploy work adds; the in-process daemon test (`seed::daemon::stacks::tests`) drives that
//! side through the daemon's functions, restart included, to CREATE_COMPLETE.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};
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

/// The image the template deploys, in the daemon's default image store (`<http root>/images`):
/// the seed verifies it before a deploy starts (the agent side never comes here).
fn import_golden(store: &std::path::Path, work: &std::path::Path) {
    let src = work.join("golden");
    std::fs::create_dir_all(&src).unwrap();
    let stream = src.join("rootfs.tar.zst");
    std::fs::write(&stream, b"not a real image: nothing streams it here").unwrap();
    let (sha256, size) = images::store::hash_file(&stream).unwrap();
    let m = images::Manifest {
        name: "golden".into(),
        version: "test".into(),
        stream: images::Stream {
            file: "rootfs.tar.zst".into(),
            sha256,
            size,
            unpacked_size: size,
        },
        boot: images::Boot {
            kernel: "boot/vmlinuz".into(),
            initrd: None,
            cmdline: String::new(),
        },
        min_disk_mib: 64,
        layout: images::Layout::default(),
        elements: vec![],
    };
    std::fs::write(src.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
    images::ImageStore::open(store)
        .unwrap()
        .import(&src.join("manifest.json"))
        .unwrap();
}

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
        import_golden(&d.join("http/images"), d);
        let inv: String = NODES
            .iter()
            .enumerate()
            .map(|(i, (name, profile, ram))| {
                format!(
                    "  - name: {name}\n    mac: [\"52:54:00:5c:00:{i:02x}\"]\n    pm_type: fake\n    \
                     pm_addr: fake\n    pm_user: admin\n    pm_password: pw\n    \
                     capabilities: \"profile:{profile}\"\n    memory: {ram}\n    disk: 40\n"
                )
            })
            .collect();
        std::fs::write(d.join("nodes.yaml"), format!("nodes:\n{inv}")).unwrap();
        let out = std::process::Command::new(tests::seed_bin())
            .args(["node", "import"])
            .arg(d.join("nodes.yaml"))
            .env("SEED_STORE", d.join("seed.redb"))
            .output()
            .unwrap();
        assert!(out.status.success(), "import: {out:?}");
        let config = format!(
            r#"store = {store:?}

[api]
token = "{TOKEN}"
listen = "127.0.0.1:6385"

[ramdisk]
kernel = {missing:?}
initrd = {missing:?}

[netboot]
server_ip = "127.0.0.1"
state_dir = {state:?}

[netboot.http]
root = {http:?}
port = {PORT}
"#,
            store = d.join("seed.redb"),
            missing = d.join("no-ramdisk"),
            state = d.join("state"),
            http = d.join("http"),
        );
        std::fs::write(d.join("seed.toml"), config).unwrap();
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
        let mut cmd = self.ns.cmd(tests::seed_bin());
        cmd.arg("daemon")
            .arg("--config")
            .arg(self.path("seed.toml"))
            .env("RUST_LOG", "info");
        self.starts += 1;
        let mut child = Child::spawn(&format!("seed-daemon-{}", self.starts), cmd);
        child.wait_for_log("HTTP listening", Duration::from_secs(120));
        self.daemon = Some(child);
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
        let out = self
            .ns
            .cmd(tests::require("curl"))
            .args([
                "-sS",
                "--max-time",
                "30",
                "-X",
                method,
                "-w",
                "\n%{http_code}",
            ])
            .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
            .arg(format!("http://127.0.0.1:6385{path}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "curl {path}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (
            code.trim().parse().unwrap(),
            serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
        )
    }

    fn node_states(&self) -> BTreeMap<String, String> {
        let (code, body) = self.curl("GET", "/v1/nodes");
        assert_eq!(code, 200, "{body}");
        body.as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["name"].as_str().unwrap().to_string(),
                    n["state"].as_str().unwrap().to_string(),
                )
            })
            .collect()
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

    fn wait_until(&self, what: &str, mut ok: impl FnMut(&Seed) -> bool) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if ok(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{what}: not within 60 s; stack {}\nnodes {:?}",
            self.stack(),
            self.node_states()
        );
    }
}

/// The invariants after any crash: every server member on its own node, the members' nodes
/// exactly those deploying, the rest untouched.
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
        assert_eq!(states[n], "deploying", "{m} on {n}: {states:?}");
    }
    for (n, s) in &states {
        if !nodes.contains(n) {
            assert_eq!(s, "available", "{n} is {s} but no member holds it");
        }
    }
    if let Some(want) = expect {
        assert_eq!(&members, want, "the allocation moved across a restart");
    }
    members
}

#[test]
fn stack_crash_kill9_keeps_allocations() {
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
    assert!(seed.node_states().values().all(|s| s == "available"));

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
    seed.wait_until("3 nodes deploying", |s| {
        s.node_states()
            .values()
            .filter(|st| *st == "deploying")
            .count()
            == 3
    });
    let first = check(&seed, None);
    assert_eq!(first["control"], "ctl-0", "ctl-small has too little RAM");

    // Crash points 2 and 3: while deploying, twice.
    for _ in 0..2 {
        seed.kill9();
        seed.start();
        std::thread::sleep(Duration::from_millis(1500)); // a few reconcile passes
        check(&seed, Some(&first));
    }
    let stack = seed.stack();
    assert_eq!(stack["status"], "CREATE_IN_PROGRESS", "{stack}");

    // `seed stack show` and `events` read the same story.
    let out = seed.seed(&["stack", "show", "oc"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("control") && text.contains("ctl-0") && text.contains("deploying"),
        "{text}"
    );
    let out = seed.seed(&["stack", "events", "oc"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("CREATE_IN_PROGRESS"), "{text}");
    assert_eq!(
        text.matches("Stack CREATE started").count(),
        1,
        "events are written once, crashes or not:\n{text}"
    );

    // Delete while deploying: nothing is left allocated once the deploys end; the record
    // stays DELETE_IN_PROGRESS meanwhile (deploys are never abandoned half-way).
    let out = seed.seed(&["stack", "delete", "oc"]);
    assert!(out.status.success(), "{out:?}");
    let stack = seed.stack();
    assert_eq!(stack["status"], "DELETE_IN_PROGRESS", "{stack}");
    seed.kill9();
}
