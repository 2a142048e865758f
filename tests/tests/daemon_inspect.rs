//! `seed daemon` end to end, without QEMU: the real binary in a server namespace with DHCP (a
//! reservation) and HTTP, a node enrolled with `seed node import` (fake BMC), and the client
//! namespace playing the node: udhcpc for its lease, curl for its iPXE script and, as the
//! ramdisk agent would, its facts report and heartbeat (with the script's `seed.token=`). The REST API is driven with curl too.

use std::time::Duration;
use tests::lan_seed::{LanSeed, Options, PORT};

const MAC: &str = "52:54:00:00:d0:01";
const MAC_HYP: &str = "52-54-00-00-d0-01";
const TOKEN: &str = "t0ken-for-tests";

/// The daemon with its operators' listener and a 5 s agent heartbeat, `node1` (MAC) enrolled;
/// the client namespace's NIC has `client_mac`; discovery with a DHCP pool when
/// `discovery_pool`.
fn start(client_mac: &str, discovery_pool: bool) -> LanSeed {
    let opts = Options {
        node_mac: MAC,
        client_mac,
        token: TOKEN,
        api_listen: Some("127.0.0.1:6385"),
        discovery_pool,
        // netboot at debug: the iPXE script log line must not show the agent token.
        rust_log: "info,netboot=debug",
        address_client: false,
        rest_on_provisioning: true,
    };
    LanSeed::start(opts, |_| "[agent]\nheartbeat_secs = 5\n".into())
}

/// GET with the token, from the server namespace (the client may have no address).
fn curl_from_server(srv: &LanSeed, path: &str) -> (u16, String) {
    let url = format!("http://{}:{PORT}{path}", srv.lan.server_ip());
    let cmd = srv.lan.server.cmd(tests::require("curl"));
    tests::curl(cmd, "GET", &url, Some(TOKEN), None, 30)
}

/// GET on the operators' listener (`[api] listen`, the server namespace's own loopback).
fn curl_admin(srv: &LanSeed, path: &str, token: Option<&str>) -> (u16, String) {
    let url = format!("http://127.0.0.1:6385{path}");
    let cmd = srv.lan.server.cmd(tests::require("curl"));
    tests::curl(cmd, "GET", &url, token, None, 30)
}

fn report(boot_mac: &str) -> String {
    tests::lan_seed::facts_report(boot_mac, 3072, 21474836480, "D0001")
}

#[test]
fn daemon_inspect_over_the_agent_api() {
    let srv = start(MAC, false);

    // DHCP: the daemon serves the node its reservation.
    let lease = tests::udhcpc(&srv.lan, srv.dir.path(), &[]).expect("the node got no lease");
    assert_eq!(
        lease.get("ip").map(String::as_str),
        Some(srv.lan.addr(10).to_string().as_str())
    );
    srv.lan.address_client(10);

    // REST needs the token; passwords never show.
    let (code, _) = srv.curl("GET", "/v1/nodes", None, None);
    assert_eq!(code, 401);
    let (code, _) = srv.curl("GET", "/v1/nodes", Some("wrong"), None);
    assert_eq!(code, 401);
    let (code, body) = srv.curl("GET", "/v1/nodes", Some(TOKEN), None);
    assert_eq!(code, 200);
    assert!(
        body.contains("\"node1\"") && !body.contains("hunter2"),
        "{body}"
    );
    assert_eq!(srv.node1(TOKEN)["state"], "enroll");
    // The same API on the operators' listener, token still required.
    assert_eq!(curl_admin(&srv, "/v1/nodes", None).0, 401);
    let (code, body) = curl_admin(&srv, "/v1/nodes/node1", Some(TOKEN));
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("\"node1\"") && !body.contains("hunter2"),
        "{body}"
    );

    // Before inspection the node is told to exit iPXE.
    let (code, script) = srv.curl("GET", &format!("/ipxe/{MAC_HYP}"), None, None);
    assert_eq!(code, 200);
    assert!(!script.contains("seed.url="), "{script}");

    // Inspect: from enroll the fake BMC is verified first, then inspection starts.
    let (code, body) = srv.curl("POST", "/v1/nodes/node1/inspect", Some(TOKEN), None);
    assert_eq!(code, 202, "{body}");
    let mut state = String::new();
    for _ in 0..100 {
        state = srv.node1(TOKEN)["state"].as_str().unwrap().to_string();
        if state == "inspecting" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(state, "inspecting", "{}", srv.seed.output());

    // Now the node boots the ramdisk, told where the agent API is.
    let (code, script) = srv.curl("GET", &format!("/ipxe/{MAC_HYP}"), None, None);
    assert_eq!(code, 200);
    let url = format!("seed.url=http://{}:{PORT}", srv.lan.server_ip());
    assert!(script.contains("ramdisk/vmlinuz"), "{script}");
    assert!(script.contains("ramdisk/initramfs.zst"), "{script}");
    assert!(script.contains(&url), "{script}");
    assert!(script.contains(&format!("BOOTIF=01-{MAC_HYP}")), "{script}");
    // And its agent token for this boot.
    let tok = script
        .split_whitespace()
        .find_map(|w| w.strip_prefix("seed.token="))
        .unwrap_or_else(|| panic!("no seed.token= in {script}"))
        .to_string();
    assert_eq!(tok.len(), 64, "{tok}");
    let (code, kernel) = srv.curl("GET", "/ramdisk/vmlinuz", None, None);
    assert_eq!((code, kernel.as_str()), (200, "fake kernel\n"));

    // A report from an unknown machine is refused and writes nothing.
    let (code, _) = srv.curl(
        "POST",
        "/v1/agent/facts",
        Some(&tok),
        Some(&report("52:54:00:00:ee:ee")),
    );
    assert_eq!(code, 404);
    let n = srv.node1(TOKEN);
    assert!(n.get("facts").is_none(), "{n}");
    assert_eq!(n["state"], "inspecting");

    // A report without the token, or with the operators' token: 401, nothing written.
    for bad in [None, Some(TOKEN)] {
        let (code, body) = srv.curl("POST", "/v1/agent/facts", bad, Some(&report(MAC)));
        assert_eq!(code, 401, "{body}");
        assert!(body.contains("agent token"), "{body}");
    }
    let n = srv.node1(TOKEN);
    assert!(n.get("facts").is_none(), "{n}");
    assert_eq!(n["state"], "inspecting");
    assert!(!n.to_string().contains(&tok), "{n}");

    // The agent's report: acknowledged with the node's name.
    let (code, body) = srv.curl("POST", "/v1/agent/facts", Some(&tok), Some(&report(MAC)));
    assert_eq!(code, 200, "{body}");
    let ack: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ack["node"], "node1");
    assert_eq!(ack["heartbeat_secs"], 5);

    // The facts are stored, the properties filled in, and the node moved on.
    let n = srv.node1(TOKEN);
    assert_eq!(n["state"], "available", "{n}");
    assert_eq!(n["properties"]["cpus"], 2);
    assert_eq!(n["properties"]["memory_mib"], 3072);
    assert_eq!(n["properties"]["disks"][0]["serial"], "D0001");
    assert_eq!(n["properties"]["boot_mode"], "bios");
    assert_eq!(n["facts"]["nics"][0]["mac"], MAC);
    assert_eq!(n["facts"]["dmi"]["uuid"], "u-1");

    // The lifecycle powers the node off after inspection (through its BMC). The boot's agent
    // token ended with the step: a heartbeat with it is refused.
    let hb = format!("{{\"boot_mac\":\"{MAC}\"}}");
    let (code, body) = srv.curl("POST", "/v1/agent/heartbeat", Some(&tok), Some(&hb));
    assert_eq!(code, 401, "{body}");

    // And it no longer boots the ramdisk.
    let (_, script) = srv.curl("GET", &format!("/ipxe/{MAC_HYP}"), None, None);
    assert!(!script.contains("seed.url="), "{script}");
    assert!(!script.contains("seed.token="), "{script}");

    // A second report is out of step: refused.
    let (code, _) = srv.curl("POST", "/v1/agent/facts", Some(&tok), Some(&report(MAC)));
    assert_eq!(code, 401);

    // The refusals are counted; the token is in no log line.
    let (_, metrics) = srv.curl("GET", "/metrics", None, None);
    assert!(
        metrics.contains("seed_agent_auth_failures_total 4\n"),
        "{metrics}"
    );
    let log = srv.seed.output();
    assert!(log.contains("agent call refused"), "{log}");
    assert!(log.contains("iPXE script"), "{log}");
    assert!(!log.contains(&tok), "{log}");
}

#[test]
fn daemon_discovery_enrolls_an_unknown_machine() {
    let other = "52:54:00:00:d0:99";
    let srv = start(other, true);
    let lease =
        tests::udhcpc(&srv.lan, srv.dir.path(), &[]).expect("the unknown machine got no lease");
    assert!(lease.contains_key("ip"), "{lease:?}");
    let (code, body) = curl_from_server(&srv, "/v1/nodes/node-52-54-00-00-d0-99");
    assert_eq!(code, 200, "{body}");
    let n: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(n["state"], "enroll");
    assert_eq!(n["macs"][0], other);
}
