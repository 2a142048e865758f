//! `seed daemon` end to end, without QEMU: the real binary in a server namespace with DHCP (a
//! reservation) and HTTP, a node enrolled with `seed node import` (fake BMC), and the client
//! namespace playing the node: udhcpc for its lease, curl for its iPXE script and, as the
//! ramdisk agent would, its facts report and heartbeat (with the script's `seed.token=`). The REST API is driven with curl too.

use std::time::Duration;
use tests::netns::Lan;
use tests::proc::Child;

const MAC: &str = "52:54:00:00:d0:01";
const MAC_HYP: &str = "52-54-00-00-d0-01";
const TOKEN: &str = "t0ken-for-tests";
const PORT: u16 = 8080;

struct Daemon {
    lan: Lan,
    seed: Child,
    dir: tempfile::TempDir,
}

impl Daemon {
    /// The daemon with `node1` (MAC) enrolled; the client namespace's NIC has `client_mac`;
    /// `dhcp_extra` lines go into `[netboot.dhcp]`.
    fn start(client_mac: &str, dhcp_extra: &str) -> Self {
        let lan = Lan::new(Some(client_mac));
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let http = d.join("http");
        std::fs::create_dir_all(&http).unwrap();
        // A fake ramdisk: two small files the daemon installs under <http root>/ramdisk/.
        let (kernel, initrd) = tests::fake_ramdisk(d);

        // Enroll the node into the store file before the daemon opens it.
        let store = d.join("seed.redb");
        tests::import_nodes(&store, &tests::fake_bmc_node("node1", MAC));

        let dhcp_extra = dhcp_extra
            .replace("POOL_START", &lan.addr(100).to_string())
            .replace("POOL_END", &lan.addr(199).to_string());
        let config = format!(
            r#"store = {store:?}

[api]
token = "{TOKEN}"
listen = "127.0.0.1:6385"

[agent]
heartbeat_secs = 5

[ramdisk]
kernel = {kernel:?}
initrd = {initrd:?}

[netboot]
interface = "{iface}"
server_ip = "{srv}"
state_dir = {state:?}

[netboot.dhcp]
subnet = "{net}/24"
router = "{srv}"
lease_time = 600
{dhcp_extra}

[netboot.http]
root = {http:?}
port = {PORT}

[[netboot.nodes]]
mac = "{MAC}"
ip = "{ip10}"
hostname = "node1"
"#,
            iface = lan.server_if,
            srv = lan.server_ip(),
            net = lan.net,
            state = d.join("state"),
            ip10 = lan.addr(10),
        );
        let cfg = d.join("seed.toml");
        std::fs::write(&cfg, config).unwrap();
        let mut cmd = lan.server.cmd(tests::seed_bin());
        cmd.arg("daemon")
            .arg("--config")
            .arg(&cfg)
            // netboot at debug: the iPXE script log line must not show the agent token.
            .env("RUST_LOG", "info,netboot=debug");
        let mut seed = Child::spawn("seed-daemon", cmd);
        seed.wait_for_log("HTTP listening", Duration::from_secs(120));
        Daemon { lan, seed, dir }
    }

    /// curl in the client namespace: (status, body).
    fn curl(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        let curl = tests::require("curl");
        let url = format!("http://{}:{PORT}{path}", self.lan.server_ip());
        let mut cmd = self.lan.client.cmd(curl);
        cmd.args([
            "-sS",
            "--max-time",
            "30",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
        ]);
        if let Some(t) = token {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        if let Some(b) = body {
            cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
        }
        let out = cmd.arg(&url).output().expect("running curl");
        assert!(out.status.success(), "curl {method} {path}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.trim().parse().unwrap(), body.to_string())
    }

    /// A `[netboot.dhcp]` pool of .100–.199 with discovery on.
    fn pool_line() -> String {
        "discovery = true\npool = { start = \"POOL_START\", end = \"POOL_END\" }".into()
    }

    /// GET with the token, from the server namespace (the client may have no address).
    fn curl_from_server(&self, path: &str) -> (u16, String) {
        let curl = tests::require("curl");
        let url = format!("http://{}:{PORT}{path}", self.lan.server_ip());
        let out = self
            .lan
            .server
            .cmd(curl)
            .args(["-sS", "--max-time", "30", "-w", "\n%{http_code}"])
            .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
            .arg(&url)
            .output()
            .expect("running curl");
        assert!(out.status.success(), "curl {path}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.trim().parse().unwrap(), body.to_string())
    }

    /// GET on the operators' listener (`[api] listen`, the server namespace's own loopback).
    fn curl_admin(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let mut cmd = self.lan.server.cmd(tests::require("curl"));
        cmd.args(["-sS", "--max-time", "30", "-w", "\n%{http_code}"]);
        if let Some(t) = token {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        let out = cmd
            .arg(format!("http://127.0.0.1:6385{path}"))
            .output()
            .expect("curl");
        assert!(out.status.success(), "curl {path}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.trim().parse().unwrap(), body.to_string())
    }

    fn node(&self) -> serde_json::Value {
        let (code, body) = self.curl("GET", "/v1/nodes/node1", Some(TOKEN), None);
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }
}

fn report(boot_mac: &str) -> String {
    serde_json::json!({
        "boot_mac": boot_mac,
        "facts": {
            "cpus": 2, "cpu_model": "QEMU Virtual CPU", "memory_mib": 3072,
            "disks": [{"name": "vda", "size_bytes": 21474836480u64, "model": "QEMU HARDDISK",
                       "serial": "D0001", "rotational": false}],
            "nics": [{"name": "eth0", "mac": boot_mac, "link": true, "driver": "virtio_net"}],
            "dmi": {"vendor": "QEMU", "product": "Standard PC", "serial": "", "uuid": "u-1"},
            "boot_mode": "bios"
        }
    })
    .to_string()
}

#[test]
fn daemon_inspect_over_the_agent_api() {
    let srv = Daemon::start(MAC, "");

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
    assert_eq!(srv.node()["state"], "enroll");
    // The same API on the operators' listener, token still required.
    assert_eq!(srv.curl_admin("/v1/nodes", None).0, 401);
    let (code, body) = srv.curl_admin("/v1/nodes/node1", Some(TOKEN));
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
        state = srv.node()["state"].as_str().unwrap().to_string();
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
    let n = srv.node();
    assert!(n.get("facts").is_none(), "{n}");
    assert_eq!(n["state"], "inspecting");

    // A report without the token, or with the operators' token: 401, nothing written.
    for bad in [None, Some(TOKEN)] {
        let (code, body) = srv.curl("POST", "/v1/agent/facts", bad, Some(&report(MAC)));
        assert_eq!(code, 401, "{body}");
        assert!(body.contains("agent token"), "{body}");
    }
    let n = srv.node();
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
    let n = srv.node();
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
    let pool = Daemon::pool_line();
    let srv = Daemon::start(other, &pool);
    let lease =
        tests::udhcpc(&srv.lan, srv.dir.path(), &[]).expect("the unknown machine got no lease");
    assert!(lease.contains_key("ip"), "{lease:?}");
    let (code, body) = srv.curl_from_server("/v1/nodes/node-52-54-00-00-d0-99");
    assert_eq!(code, 200, "{body}");
    let n: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(n["state"], "enroll");
    assert_eq!(n["macs"][0], other);
}
