//! The metadata service end to end, without QEMU: the real `seed daemon` on 127.0.0.1 with two
//! fake-power nodes, credentials issued and metadata (with a generated password) published
//! through the operator routes with curl, and the real `seed-config collect` playing node1: it
//! renders node1's values from a template tree, signals its deployment, and follows a change by
//! long-poll. One node cannot read the other's metadata, a forged credential gets 401, and no
//! password or credential ever reaches the daemon's log.

use std::path::PathBuf;
use std::time::{Duration, Instant};
use tests::proc::Child;

const TOKEN: &str = "admin-t0ken-for-tests";

/// A password nobody else would log by accident.
fn password(tag: &str) -> String {
    let mut b = [0u8; 12];
    let mut f = std::fs::File::open("/dev/urandom").unwrap();
    std::io::Read::read_exact(&mut f, &mut b).unwrap();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{tag}-{hex}")
}

struct Seed {
    daemon: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Seed {
    fn start() -> Seed {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let store = d.join("seed.redb");
        let nodes: String = [
            ("node1", "52:54:00:00:e0:01"),
            ("node2", "52:54:00:00:e0:02"),
        ]
        .iter()
        .map(|(n, mac)| tests::fake_bmc_node(n, mac))
        .collect();
        tests::import_nodes(&store, &nodes);

        // A free loopback port (the daemon takes it).
        let port = tests::free_port();
        let http = d.join("http");
        std::fs::create_dir_all(&http).unwrap();
        // Only the HTTP service, on 127.0.0.1: no DHCP/TFTP, nothing on a real interface.
        let cfg = tests::daemon::Config {
            listen: None,
            http_port: port,
            ..tests::daemon::Config::loopback(d, TOKEN)
        }
        .write();
        let mut cmd = std::process::Command::new(tests::seed_bin());
        cmd.arg("daemon").arg("--config").arg(&cfg).env(
            "RUST_LOG",
            "info,seed::daemon::metadata_api=debug,seed::daemon::api=debug,seed::daemon=debug",
        );
        let mut daemon = Child::spawn("seed-daemon", cmd);
        daemon.wait_for_log("HTTP listening", Duration::from_secs(120));
        Seed {
            daemon,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    /// curl against the daemon: (status, body).
    fn curl(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        curl(&self.url, method, path, token, body)
    }

    fn credential(&self, node: &str) -> String {
        let (code, body) = self.curl(
            "POST",
            &format!("/v1/nodes/{node}/credential"),
            Some(TOKEN),
            None,
        );
        assert_eq!(code, 201, "{body}");
        json(&body)["credential"].as_str().unwrap().to_string()
    }

    fn publish(&self, node: &str, data: &serde_json::Value) -> u64 {
        let (code, body) = self.curl(
            "PUT",
            &format!("/v1/nodes/{node}/metadata"),
            Some(TOKEN),
            Some(&data.to_string()),
        );
        assert_eq!(code, 200, "{body}");
        json(&body)["counter"].as_u64().unwrap()
    }
}

/// curl against the daemon at `base` (45 s: long-polls wait up to 30 s).
fn curl(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let cmd = std::process::Command::new(tests::require("curl"));
    tests::curl(cmd, method, &format!("{base}{path}"), token, body, 45)
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s:?}"))
}

/// node1's side: identity, templates (the seed documents' my.cnf example), a configure.d
/// script, and where things are rendered.
struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn new(seed: &Seed, credential: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let identity = serde_json::json!({
            "node": "node1", "seed_url": seed.url, "credential": credential, "image": "tiny@sha256:00"
        });
        std::fs::write(d.join("identity.json"), identity.to_string()).unwrap();
        let t = d.join("templates/etc");
        std::fs::create_dir_all(&t).unwrap();
        std::fs::write(
            t.join("my.cnf"),
            "[client]\nuser = root\n{{#mysql.root-password}}\npassword = {{.}}\n{{/mysql.root-password}}\n",
        )
        .unwrap();
        let conf = d.join("base/configure.d");
        std::fs::create_dir_all(&conf).unwrap();
        let script = conf.join("10-mark");
        std::fs::write(
            &script,
            "#!/bin/sh\necho configured >> \"$(dirname \"$0\")/../../ran\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        std::fs::create_dir_all(d.join("out")).unwrap();
        Node { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn collect_cmd(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(tests::seed_config_bin());
        cmd.arg("collect")
            .arg("--identity")
            .arg(self.path("identity.json"))
            .arg("--cache")
            .arg(self.path("cache"))
            .arg("--base-dir")
            .arg(self.path("base"))
            .arg("--lockfile")
            .arg(self.path("refresh.lock"))
            .arg("-t")
            .arg(self.path("templates"))
            .arg("-o")
            .arg(self.path("out"))
            .args(["--fallback-metadata", "--retries", "1"])
            .env("RUST_LOG", "info");
        cmd
    }

    fn rendered(&self) -> String {
        std::fs::read_to_string(self.path("out/etc/my.cnf")).unwrap_or_default()
    }
}

/// Poll `f` every 20 ms until true or `limit` passes (then panic with `what`).
fn until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_quiet(log: &str, who: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!log.contains(s), "{who}'s log holds a secret ({s}):\n{log}");
    }
}

#[test]
fn daemon_metadata_per_node_long_poll_signals() {
    let mut seed = Seed::start();
    let c1 = seed.credential("node1");
    let c2 = seed.credential("node2");
    let pw1 = password("node1");
    let pw2 = password("node2");
    let doc = |pw: &str| {
        serde_json::json!({
            "mysql": {"root-password": pw},
            "deployments": [{"name": "db-config", "group": "os-apply-config"}],
        })
    };
    assert_eq!(seed.publish("node1", &doc(&pw1)), 1);
    assert_eq!(seed.publish("node2", &doc(&pw2)), 1);

    // node1 collects once: its own values rendered, its deployment signalled.
    let node = Node::new(&seed, &c1);
    let out = node.collect_cmd().arg("--once").output().unwrap();
    let agent_log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "collect --once: {agent_log}");
    assert_eq!(
        node.rendered(),
        format!("[client]\nuser = root\npassword = {pw1}\n")
    );
    assert_eq!(
        std::fs::read_to_string(node.path("ran")).unwrap(),
        "configured\n"
    );
    let cached = std::fs::read_to_string(node.path("cache/seed.json")).unwrap();
    assert!(cached.contains(&pw1) && !cached.contains(&pw2));
    // Counter unchanged: a second pass renders nothing and runs no script.
    let out = node.collect_cmd().arg("--once").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        std::fs::read_to_string(node.path("ran")).unwrap(),
        "configured\n"
    );

    let (code, body) = seed.curl("GET", "/v1/nodes/node1/metadata", Some(TOKEN), None);
    assert_eq!(code, 200);
    let signals = &json(&body)["signals"];
    assert_eq!(signals.as_array().unwrap().len(), 1, "{signals}");
    assert_eq!(signals[0]["deployment"], "db-config");
    assert_eq!(signals[0]["status"], "complete");
    assert_eq!(signals[0]["counter"], 1);
    assert_eq!(signals[0]["outputs"]["deploy_status_code"], 0);

    // Who may read what.
    let (code, body) = seed.curl("GET", "/v1/node/metadata?node=node2", Some(&c1), None);
    assert_eq!(code, 403, "{body}");
    assert!(!body.contains(&pw2));
    let (code, _) = seed.curl("GET", "/v1/node/metadata", Some("forged-credential"), None);
    assert_eq!(code, 401);
    let (code, _) = seed.curl("GET", "/v1/node/metadata", None, None);
    assert_eq!(code, 401);
    let (code, body) = seed.curl("GET", "/v1/node/metadata", Some(&c2), None);
    assert_eq!(code, 200);
    let got = json(&body);
    assert_eq!(got["data"]["mysql"]["root-password"], pw2.as_str());
    assert_eq!(got["data"]["seed"]["node"], "node2");

    // A long-poll started before an update returns with the new counter.
    let poll = {
        let (url, c1) = (seed.url.clone(), c1.clone());
        std::thread::spawn(move || {
            curl(
                &url,
                "GET",
                "/v1/node/metadata?since=1&wait=30",
                Some(&c1),
                None,
            )
        })
    };
    seed.daemon
        .wait_for_log("metadata long-poll waiting", Duration::from_secs(20));
    let pw1b = password("node1b");
    assert_eq!(seed.publish("node1", &doc(&pw1b)), 2);
    let (code, body) = poll.join().unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["counter"], 2);
    // Nothing new: 304 after the wait.
    let (code, body) = seed.curl("GET", "/v1/node/metadata?since=2&wait=1", Some(&c1), None);
    assert_eq!((code, body.as_str()), (304, ""));

    // A standalone failure signal.
    let out = std::process::Command::new(tests::seed_config_bin())
        .args([
            "signal",
            "--deployment",
            "wait-db",
            "--status",
            "failed",
            "--reason",
            "db down",
        ])
        .args(["--output", "deploy_status_code=3", "--output", "note=x=y"])
        .arg("--identity")
        .arg(node.path("identity.json"))
        .arg("--cache")
        .arg(node.path("cache"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (_, body) = seed.curl("GET", "/v1/nodes/node1/metadata", Some(TOKEN), None);
    let signals = json(&body)["signals"].clone();
    let failed = signals
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["deployment"] == "wait-db")
        .unwrap_or_else(|| panic!("no wait-db signal in {signals}"));
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["reason"], "db down");
    assert_eq!(failed["outputs"]["deploy_status_code"], 3);
    assert_eq!(failed["outputs"]["note"], "x=y");
    assert_eq!(failed["counter"], 1, "the last applied counter");

    // The agent running: it catches up with counter 2 at once, then follows a change.
    let mut agent = Child::spawn("seed-config-collect", {
        let mut c = node.collect_cmd();
        c.args(["--wait", "30"]);
        c
    });
    until(Duration::from_secs(30), "counter 2 rendered", || {
        node.rendered().contains(&pw1b)
    });
    agent.wait_for_log("collect pass", Duration::from_secs(10));
    // Let it settle into its long-poll before the change (the two curls above waited too).
    until(Duration::from_secs(10), "the agent's long-poll", || {
        seed.daemon
            .output()
            .matches("metadata long-poll waiting")
            .count()
            >= 3
    });
    std::thread::sleep(Duration::from_millis(300));
    let pw1c = password("node1c");
    let t0 = Instant::now();
    assert_eq!(seed.publish("node1", &doc(&pw1c)), 3);
    until(Duration::from_secs(30), "counter 3 rendered", || {
        node.rendered().contains(&pw1c)
    });
    let took = t0.elapsed();
    println!("publish → node1's file re-rendered: {took:?} (curl PUT included)");
    assert!(agent.is_running());

    // Signals from the running agent arrive with the new counter.
    until(Duration::from_secs(30), "signal for counter 3", || {
        let (_, body) = seed.curl("GET", "/v1/nodes/node1/metadata", Some(TOKEN), None);
        json(&body)["signals"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["deployment"] == "db-config" && s["counter"] == 3)
    });

    let secrets = [
        pw1.as_str(),
        pw2.as_str(),
        pw1b.as_str(),
        pw1c.as_str(),
        c1.as_str(),
        c2.as_str(),
    ];
    let daemon_log = seed.daemon.output();
    assert!(daemon_log.contains("metadata published"), "{daemon_log}");
    assert_quiet(&daemon_log, "the daemon", &secrets);
    assert_quiet(&agent_log, "collect --once", &secrets);
    assert_quiet(&agent.output(), "collect", &secrets);
}
