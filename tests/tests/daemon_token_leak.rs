//! Issue 18, hole 1: the per-boot agent token must not leak to another machine on the
//! provisioning network. The real daemon in a server namespace, the node in a client namespace
//! (its DHCP lease from the daemon), and an attacker in a third namespace on the same switch who
//! knows the node's MAC: whatever it asks for — the node's iPXE script, before and after the
//! node got its own, the agent API, the node API — it gets no token, no command, no
//! credential, no metadata. The node itself gets its token once, and it works.

use std::time::Duration;
use tests::lan_seed::{LanSeed, Options};

const MAC: &str = "52:54:00:00:d1:01";
const MAC_HYP: &str = "52-54-00-00-d1-01";
const ATTACKER_MAC: &str = "52:54:00:00:d1:66";
const TOKEN: &str = "t0ken-for-the-leak-test";

fn token_in(script: &str) -> Option<&str> {
    script
        .split_whitespace()
        .find_map(|w| w.strip_prefix("seed.token="))
}

#[test]
fn daemon_token_leak_another_machine_gets_nothing_usable() {
    let mut srv = LanSeed::start(
        Options {
            node_mac: MAC,
            client_mac: MAC,
            token: TOKEN,
            api_listen: Some("127.0.0.1:6385"),
            discovery_pool: false,
            rust_log: "info",
            address_client: false,
            rest_on_provisioning: false,
        },
        |_| "[agent]\nheartbeat_secs = 5\n".into(),
    );
    srv.seed
        .wait_for_log("API listening", Duration::from_secs(30));
    let attacker = srv.join(ATTACKER_MAC, 66);
    let script_path = format!("/ipxe/{MAC_HYP}");
    let hb = format!("{{\"boot_mac\":\"{MAC}\"}}");

    // The operators' API, on its own listener (the server namespace's loopback).
    let admin = |method: &str, path: &str| {
        let cmd = srv.lan.server.cmd(tests::require("curl"));
        let url = format!("http://127.0.0.1:6385{path}");
        tests::curl(cmd, method, &url, Some(TOKEN), None, 30)
    };
    // The REST API is not on the provisioning network at all: not even the right token opens it.
    let (code, body) = srv.curl_from(&attacker, "POST", "/v1/nodes/node1/inspect", None, None);
    assert_eq!(code, 404, "no REST API on the provisioning network: {body}");

    // The node is being inspected: its script now carries a token.
    let (code, body) = admin("POST", "/v1/nodes/node1/inspect");
    assert_eq!(code, 202, "{body}");
    let mut state = String::new();
    for _ in 0..100 {
        let (_, n) = admin("GET", "/v1/nodes/node1");
        state = serde_json::from_str::<serde_json::Value>(&n).unwrap()["state"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if state == "inspecting" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(state, "inspecting", "{}", srv.seed.output());

    // 1. The attacker asks first, before the node even has its lease: a script, no token.
    let (code, script) = srv.curl_from(&attacker, "GET", &script_path, None, None);
    assert_eq!(code, 200);
    assert!(script.contains("ramdisk/vmlinuz"), "{script}");
    assert_eq!(token_in(&script), None, "token leaked: {script}");

    // 2. The node gets its lease and its script: with the token, once.
    let lease = tests::udhcpc(&srv.lan, srv.dir.path(), &[]).expect("the node got no lease");
    assert_eq!(lease["ip"], srv.lan.addr(10).to_string());
    srv.lan.address_client(10);
    // (From the node's address too, with the right token.)
    let (code, body) = srv.curl("GET", "/v1/nodes", Some(TOKEN), None);
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("[api] listen"), "{body}");
    let (code, script) = srv.curl("GET", &script_path, None, None);
    assert_eq!(code, 200);
    let tok = token_in(&script)
        .unwrap_or_else(|| panic!("the node got no token: {script}\n{}", srv.seed.output()))
        .to_string();

    // 3. The attacker asks again, from its own address: still nothing.
    let (_, script) = srv.curl_from(&attacker, "GET", &script_path, None, None);
    assert_eq!(token_in(&script), None, "token leaked: {script}");
    // Nor from the node's own address once the node has it (an address taken over after the
    // node booted).
    let (_, script) = srv.curl("GET", &script_path, None, None);
    assert_eq!(token_in(&script), None, "token handed out twice: {script}");

    // 4. The agent API without the token: no command (a deploy's carries the credential), no
    // facts written.
    for bad in [None, Some(""), Some(TOKEN), Some(&"0".repeat(64))] {
        let (code, body) = srv.curl_from(&attacker, "POST", "/v1/agent/heartbeat", bad, Some(&hb));
        assert_eq!(code, 401, "{body}");
        assert!(!body.contains("command"), "{body}");
    }
    // 5. The node API without a credential: nothing; the operator API is not there.
    for (path, want) in [
        ("/v1/node/metadata", 401),
        ("/v1/nodes/node1", 404),
        ("/v1/nodes/node1/metadata", 404),
    ] {
        let (code, body) = srv.curl_from(&attacker, "GET", path, Some(&"0".repeat(64)), None);
        assert_eq!(code, want, "{path}: {body}");
    }

    // The node's own token works: its heartbeat is answered.
    let (code, body) = srv.curl("POST", "/v1/agent/heartbeat", Some(&tok), Some(&hb));
    assert_eq!(code, 200, "{body}");
    let log = srv.seed.output();
    assert!(!log.contains(&tok), "the token reached the log");
    assert!(
        log.contains("agent token withheld"),
        "the refusals are logged: {log}"
    );
    // Hole 6: the store and the DHCP state are the seed's user's only.
    let mode = |p: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&srv.dir.path().join("seed.redb")), 0o600);
    let state = srv.dir.path().join("state");
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("dhcp-leases.json")), 0o600);
    // BMC passwords sealed at rest, with the key file beside the store (not in it).
    assert_eq!(mode(&srv.dir.path().join("seed.redb.key")), 0o600);
    let bytes = std::fs::read(srv.dir.path().join("seed.redb")).unwrap();
    assert!(
        !bytes.windows(7).any(|w| w == b"hunter2"),
        "a BMC password in clear in the store file"
    );

    // Hole 3's audit trail: every state-changing request, who, what, the result.
    let audit = |who: &str, path: &str, status: &str| {
        log.lines().any(|l| {
            l.contains(" audit ")
                && l.contains(&format!("who=\"{who}\""))
                && l.contains(&format!("path={path} "))
                && l.contains(&format!("status={status}"))
        })
    };
    assert!(
        audit("anonymous", "/v1/nodes/node1/inspect", "404"),
        "{log}"
    );
    // The config file's token is the bootstrap admin, named `config`.
    assert!(audit("config", "/v1/nodes/node1/inspect", "202"), "{log}");
    assert!(log.contains("role=\"admin\""), "{log}");
    assert!(audit("agent", "/v1/agent/heartbeat", "401"), "{log}");
    assert!(audit("agent", "/v1/agent/heartbeat", "200"), "{log}");

    // Hole 3: a named reader token made with `seed token create` against the real daemon.
    let cli = |token: &str, args: &[&str]| {
        let mut c = srv.lan.server.cmd(tests::seed_bin());
        c.arg("token").args(args);
        c.args(["--api", "http://127.0.0.1:6385", "--token", token]);
        c.output().expect("running seed token")
    };
    let out = cli(
        TOKEN,
        &["create", "dash", "--role", "reader", "--expires", "1d"],
    );
    assert!(out.status.success(), "{out:?}");
    let reader = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let as_reader = |method: &str, path: &str| {
        let cmd = srv.lan.server.cmd(tests::require("curl"));
        let url = format!("http://127.0.0.1:6385{path}");
        tests::curl(cmd, method, &url, Some(&reader), None, 30)
    };
    assert_eq!(as_reader("GET", "/v1/nodes").0, 200);
    let (code, body) = as_reader("POST", "/v1/nodes/node1/inspect");
    assert_eq!(code, 403, "{body}");
    let out = cli(&reader, &["list"]);
    assert!(!out.status.success(), "a reader lists tokens: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("403"),
        "{out:?}"
    );
    let out = cli(TOKEN, &["list"]);
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.contains("dash") && list.contains("reader"), "{out:?}");
    assert!(cli(TOKEN, &["revoke", "dash"]).status.success());
    assert_eq!(as_reader("GET", "/v1/nodes").0, 401);
    let log = srv.seed.output();
    assert!(
        audit_in(&log, "dash", "/v1/nodes/node1/inspect", "403"),
        "the refusal is audited under the token's name: {log}"
    );
    assert!(!log.contains(&reader), "a token reached the log");
}

fn audit_in(log: &str, who: &str, path: &str, status: &str) -> bool {
    log.lines().any(|l| {
        l.contains(" audit ")
            && l.contains(&format!("who=\"{who}\""))
            && l.contains(&format!("path={path} "))
            && l.contains(&format!("status={status}"))
    })
}

/// Hole 3: `seed daemon` does not start with the sample config's token (nor any weak one), and
/// says why; nothing is bound (it stops before reading the store).
#[test]
fn daemon_token_leak_sample_token_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let sample = tests::workspace_root().join("seed/examples/seed.toml");
    let cfg = dir.path().join("seed.toml");
    let text = std::fs::read_to_string(&sample).unwrap();
    for (token, why) in [
        ("change-me", "sample token"),
        ("short-t0k", "shorter than 12"),
    ] {
        let text = text.replace("token = \"change-me\"", &format!("token = \"{token}\""));
        std::fs::write(&cfg, text).unwrap();
        let out = std::process::Command::new(tests::require("timeout"))
            .arg("30")
            .arg(tests::seed_bin())
            .args(["daemon", "--config"])
            .arg(&cfg)
            .output()
            .expect("running seed daemon");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{token}: {err}");
        assert!(err.contains(why), "{token}: {err}");
        assert!(
            !err.contains(token) || token == "change-me",
            "the token is not echoed: {err}"
        );
    }
}
