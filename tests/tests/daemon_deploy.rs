//! `seed daemon` deploy end to end, without QEMU: the real binary in a server namespace with
//! DHCP and HTTP, a fake-BMC node, an image in the daemon's store under the HTTP root, the
//! operator's `seed node deploy` CLI, and curl in the client namespace playing the ramdisk's
//! agent (facts, heartbeat, stream download, progress; with the per-boot agent token its iPXE
//! script's `seed.token=` gives, as a real one) and then the deployed image ("booted" with the
//! node's credential). Power actions are read from the daemon's debug log.

use std::path::{Path, PathBuf};
use std::time::Duration;
use tests::lan_seed::{LanSeed, Options, PORT};
use tests::proc::Child;

const MAC: &str = "52:54:00:00:d1:01";
const MAC_HYP: &str = "52-54-00-00-d1-01";
const TOKEN: &str = "t0ken-for-deploy-tests";

/// The daemon with its operators' listener, a 5 s agent heartbeat and an image store.
struct Seed(LanSeed);

impl std::ops::Deref for Seed {
    type Target = LanSeed;
    fn deref(&self) -> &LanSeed {
        &self.0
    }
}

/// An image `tiny` in the store at `store`: 1 MiB of patterned bytes as its stream.
fn import_image(store: &Path, work: &Path) -> images::Image {
    let body: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    tests::daemon::TestImage {
        name: "tiny",
        version: "test",
        stream: &body,
        cmdline: "console=ttyS0",
        elements: &["test"],
    }
    .import(store, &work.join("built-tiny"))
}

impl Seed {
    fn start() -> (Self, images::Image) {
        let opts = Options {
            node_mac: MAC,
            client_mac: MAC,
            token: TOKEN,
            api_listen: Some("127.0.0.1:6385"),
            discovery_pool: false,
            rust_log: "info,seed::daemon=debug",
            address_client: true,
            rest_on_provisioning: true,
        };
        let mut img = None;
        let seed = LanSeed::start(opts, |d| {
            let images = d.join("http/images");
            img = Some(import_image(&images, d));
            format!("[agent]\nheartbeat_secs = 5\n\n[images]\ndir = {images:?}\n")
        });
        (Seed(seed), img.expect("the image was imported"))
    }

    /// GET `url` from the client namespace into a file; returns its path.
    fn download(&self, url: &str) -> PathBuf {
        let to = self.dir.path().join("downloaded");
        let out = self
            .lan
            .client
            .cmd(tests::require("curl"))
            .args(["-sS", "--fail", "--max-time", "60", "-o"])
            .arg(&to)
            .arg(url)
            .output()
            .expect("running curl");
        assert!(out.status.success(), "GET {url}: {out:?}");
        to
    }

    fn node(&self) -> serde_json::Value {
        self.node1(TOKEN)
    }

    fn wait_state(&self, want: &str) -> serde_json::Value {
        let mut n = serde_json::Value::Null;
        for _ in 0..150 {
            n = self.node();
            if n["state"] == want {
                return n;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("node1 never became {want}: {n}\n{}", self.seed.output());
    }

    /// `seed node ARGS…` against the daemon's operator listener (server namespace loopback).
    fn cli(&self, args: &[&str]) -> std::process::Output {
        self.lan
            .server
            .cmd(tests::seed_bin())
            .arg("node")
            .args(args)
            .args(["--api", "http://127.0.0.1:6385", "--token", TOKEN])
            .output()
            .expect("running seed node")
    }

    /// The `seed.token=` of the node's iPXE script (what its ramdisk's agent would send).
    fn script_token(&self) -> Option<String> {
        let (code, script) = self.curl("GET", &format!("/ipxe/{MAC_HYP}"), None, None);
        assert_eq!(code, 200);
        script
            .split_whitespace()
            .find_map(|w| w.strip_prefix("seed.token="))
            .map(str::to_string)
    }

    /// Inspect the node (the fake BMC powers it; curl reports its facts): → available.
    fn inspect(&self) {
        let (code, body) = self.curl("POST", "/v1/nodes/node1/inspect", Some(TOKEN), None);
        assert_eq!(code, 202, "{body}");
        self.wait_state("inspecting");
        let tok = self
            .script_token()
            .expect("an agent token while inspecting");
        let (code, body) = self.curl("POST", "/v1/agent/facts", Some(&tok), Some(&report()));
        assert_eq!(code, 200, "{body}");
        self.wait_state("available");
    }

    /// A heartbeat with the agent token `tok`: (status, body).
    fn heartbeat_with(&self, tok: Option<&str>) -> (u16, String) {
        self.curl(
            "POST",
            "/v1/agent/heartbeat",
            tok,
            Some(&format!("{{\"boot_mac\":\"{MAC}\"}}")),
        )
    }

    fn heartbeat(&self, tok: &str) -> serde_json::Value {
        let (code, body) = self.heartbeat_with(Some(tok));
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    fn progress(&self, tok: &str, op: u64, phase: &str, bytes: u64, total: u64) -> (u16, String) {
        let p = serde_json::json!({
            "boot_mac": MAC, "op": op, "phase": phase, "bytes": bytes, "total": total
        });
        self.curl(
            "POST",
            "/v1/agent/progress",
            Some(tok),
            Some(&p.to_string()),
        )
    }

    /// How many times the daemon's log shows `needle`.
    fn count(&self, needle: &str) -> usize {
        self.seed.output().matches(needle).count()
    }
}

fn report() -> String {
    tests::lan_seed::facts_report(MAC, 2048, 8589934592, "D1")
}

fn sha256_of(path: &Path) -> String {
    let out = std::process::Command::new(tests::require("sha256sum"))
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn daemon_deploy_stream_progress_reboot_booted() {
    let (srv, img) = Seed::start();
    srv.inspect();
    let reboots = srv.count("action=Reboot");

    // The operator's CLI asks for the deploy and waits for it (in the background).
    let mut cli = srv.lan.server.cmd(tests::seed_bin());
    cli.args([
        "node",
        "deploy",
        "node1",
        "--image",
        "tiny",
        "--root-hint",
        "size>=4",
    ])
    .args([
        "--wait",
        "120",
        "--api",
        "http://127.0.0.1:6385",
        "--token",
        TOKEN,
    ]);
    let mut cli = Child::spawn("seed-node-deploy", cli);
    cli.wait_for_log("deploy of tiny requested", Duration::from_secs(30));
    assert_eq!(srv.node()["state"], "deploying");
    // This boot's agent token, from the node's iPXE script.
    let tok = srv.script_token().expect("an agent token while deploying");

    // The ramdisk's agent reports its facts at boot: acknowledged, still deploying.
    let (code, body) = srv.curl("POST", "/v1/agent/facts", Some(&tok), Some(&report()));
    assert_eq!(code, 200, "{body}");
    assert_eq!(srv.node()["state"], "deploying");

    // Without the token (or with the operators'), no work and no credential: 401.
    for bad in [None, Some(TOKEN), Some("forged")] {
        let (code, body) = srv.heartbeat_with(bad);
        assert_eq!(code, 401, "{bad:?}: {body}");
        assert!(!body.contains("credential"), "{body}");
    }

    // The agent's heartbeat gets its work (once the image is verified).
    let mut cmd = serde_json::Value::Null;
    for _ in 0..100 {
        cmd = srv.heartbeat(&tok);
        if cmd["command"] == "deploy" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(cmd["command"], "deploy", "{cmd}\n{}", srv.seed.output());
    let op = cmd["op"].as_u64().unwrap();
    let credential = cmd["credential"].as_str().unwrap().to_string();
    assert_eq!(cmd["node"], "node1");
    assert_eq!(cmd["root_hint"], "size>=4");
    assert_eq!(
        cmd["manifest"]["stream"]["sha256"],
        img.manifest.stream.sha256.as_str()
    );
    let base = format!("http://{}:{PORT}", srv.lan.server_ip());
    assert_eq!(cmd["seed_url"], base.as_str());
    let url = cmd["stream_url"].as_str().unwrap();
    assert!(url.starts_with(&format!("{base}/images/")), "{url}");
    // The credential and the agent token are not in the log, nor in the node's view.
    assert!(!srv.seed.output().contains(&credential));
    assert!(!srv.node().to_string().contains(&credential));
    assert!(!srv.seed.output().contains(&tok));
    assert!(!srv.node().to_string().contains(&tok));

    // The node PXE-boots the ramdisk meanwhile, and was powered on for it.
    let (_, script) = srv.curl("GET", &format!("/ipxe/{MAC_HYP}"), None, None);
    assert!(script.contains("ramdisk/vmlinuz"), "{script}");
    for _ in 0..100 {
        if srv.count("action=Reboot") > reboots {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        srv.count("action=Reboot"),
        reboots + 1,
        "{}",
        srv.seed.output()
    );

    // The stream as the agent gets it: its sha256 is the manifest's.
    let got = srv.download(url);
    assert_eq!(sha256_of(&got), img.manifest.stream.sha256);
    // A range of it, as a resumed download would ask.
    let out = srv
        .lan
        .client
        .cmd(tests::require("curl"))
        .args(["-sS", "--fail", "-r", "1048570-", url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout.len(), 6);
    // Nothing outside the HTTP root: `..` is refused.
    let (code, _) = srv.curl("GET", "/images/../../seed.redb", None, None);
    assert!(code == 403 || code == 404, "{code}");

    // Progress of an older op is dropped.
    let (code, _) = srv.progress(&tok, op - 1, "done", 1, 1);
    assert_eq!(code, 200);
    assert_eq!(srv.node()["state"], "deploying");
    assert!(srv.node().get("progress").is_none());
    // Writing, then done.
    let size = img.manifest.stream.size;
    // Without the token: refused, nothing recorded.
    let p = serde_json::json!({"boot_mac": MAC, "op": op, "phase": "done", "bytes": 1, "total": 1});
    let (code, _) = srv.curl("POST", "/v1/agent/progress", None, Some(&p.to_string()));
    assert_eq!(code, 401);
    assert!(srv.node().get("progress").is_none());
    let (code, body) = srv.progress(&tok, op, "writing", size / 2, size);
    assert_eq!(code, 200, "{body}");
    let n = srv.node();
    assert_eq!(n["progress"]["phase"], "writing", "{n}");
    assert_eq!(n["progress"]["bytes"], size / 2);
    let (code, body) = srv.progress(&tok, op, "done", size, size);
    assert_eq!(code, 200, "{body}");

    // The seed sets boot from disk through the BMC and power-cycles; still deploying.
    for _ in 0..100 {
        if srv.count("action=Reboot") > reboots + 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = srv.seed.output();
    assert!(log.contains("action=SetBootDevice(Disk)"), "{log}");
    assert_eq!(srv.count("action=Reboot"), reboots + 2, "{log}");
    assert_eq!(srv.node()["state"], "deploying");
    // A PXE boot now is sent to the local disk.
    let (_, script) = srv.curl("GET", &format!("/ipxe/{MAC_HYP}"), None, None);
    assert!(script.contains("sanboot"), "{script}");
    assert_eq!(srv.heartbeat(&tok)["command"], "none");

    // The image's first boot: a forged or missing credential is 401, the real one → active.
    let (code, _) = srv.curl("POST", "/v1/node/booted", Some("forged"), None);
    assert_eq!(code, 401);
    let (code, _) = srv.curl("POST", "/v1/node/booted", None, None);
    assert_eq!(code, 401);
    assert_eq!(srv.node()["state"], "deploying");
    let (code, body) = srv.curl("POST", "/v1/node/booted", Some(&credential), None);
    assert_eq!(code, 200, "{body}");
    let n = srv.wait_state("active");
    assert!(n.get("last_error").is_none(), "{n}");
    // Out of the ramdisk: the boot's agent token is dead.
    assert_eq!(srv.heartbeat_with(Some(&tok)).0, 401);
    let (_, metrics) = srv.curl("GET", "/metrics", None, None);
    assert!(
        metrics.contains("seed_agent_auth_failures_total 5\n"),
        "{metrics}"
    );
    // No power action for "booted".
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(srv.count("action=Reboot"), reboots + 2);
    // The waiting CLI saw it through.
    cli.wait_for_log("node1: active after", Duration::from_secs(30));

    // Undeploy through the CLI: the old credential stops working.
    let out = srv.cli(&["undeploy", "node1"]);
    assert!(out.status.success(), "{out:?}");
    let (code, _) = srv.curl("POST", "/v1/node/booted", Some(&credential), None);
    assert_eq!(code, 401);
}

#[test]
fn daemon_deploy_refuses_a_corrupted_image_before_powering() {
    let (srv, img) = Seed::start();
    srv.inspect();
    // Flip bytes of the stored stream (same size, later mtime).
    std::thread::sleep(Duration::from_millis(20));
    let mut bytes = std::fs::read(&img.stream).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&img.stream, &bytes).unwrap();
    let reboots = srv.count("action=Reboot");
    let boot_devs = srv.count("action=SetBootDevice");

    let out = srv.cli(&["deploy", "node1", "--image", "tiny", "--wait", "60"]);
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sha256"), "{err}");
    let n = srv.wait_state("deploy failed");
    assert!(n["reason"].as_str().unwrap().contains("sha256"), "{n}");
    // The agent was never handed the deploy: no ramdisk boot, so no agent call is accepted.
    assert_eq!(srv.heartbeat_with(None).0, 401);
    assert_eq!(srv.count("action=Reboot"), reboots, "{}", srv.seed.output());
    assert_eq!(srv.count("action=SetBootDevice"), boot_devs);
    let (_, script) = srv.curl("GET", &format!("/ipxe/{MAC_HYP}"), None, None);
    assert!(!script.contains("seed.url="), "{script}");
}
