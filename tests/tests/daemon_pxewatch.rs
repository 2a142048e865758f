//! The PXE boot watchdog end to end, without QEMU: the real `seed daemon` in a server
//! namespace with `[lifecycle] boot_timeout_secs = 2`, a node with a fake BMC (nothing boots
//! on it), and the client namespace playing the node's iPXE with curl. A node that never
//! fetches its script is power-cycled again, then inspect-failed with the reason; one that
//! fetches `/ipxe/<mac>` from the real HTTP boot server in time is left alone.

use std::time::Duration;
use tests::netns::Lan;
use tests::proc::Child;

const MAC: &str = "52:54:00:00:d1:01";
const MAC_HYP: &str = "52-54-00-00-d1-01";
const TOKEN: &str = "t0ken-for-tests";
const PORT: u16 = 8080;

struct Daemon {
    lan: Lan,
    seed: Child,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start() -> Self {
        let lan = Lan::new(Some(MAC));
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let http = d.join("http");
        std::fs::create_dir_all(&http).unwrap();
        let (kernel, initrd) = tests::fake_ramdisk(d);
        let store = d.join("seed.redb");
        tests::import_nodes(&store, &tests::fake_bmc_node("node1", MAC));
        let config = format!(
            r#"store = {store:?}

[api]
token = "{TOKEN}"

[ramdisk]
kernel = {kernel:?}
initrd = {initrd:?}

[lifecycle]
provide_after_inspect = false
boot_timeout_secs = 2
boot_retries_max = 1

[netboot]
interface = "{iface}"
server_ip = "{srv}"
state_dir = {state:?}

[netboot.dhcp]
subnet = "{net}/24"
router = "{srv}"
lease_time = 600

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
            .env("RUST_LOG", "info");
        let mut seed = Child::spawn("seed-daemon", cmd);
        seed.wait_for_log("HTTP listening", Duration::from_secs(120));
        // The node's NIC gets its reserved address by hand: DHCP is not what is tested here.
        lan.address_client(10);
        Daemon {
            lan,
            seed,
            _dir: dir,
        }
    }

    /// curl from the client namespace (the node): (status, body).
    fn curl(&self, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
        let url = format!("http://{}:{PORT}{path}", self.lan.server_ip());
        let mut cmd = self.lan.client.cmd(tests::require("curl"));
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
        let out = cmd.arg(&url).output().expect("running curl");
        assert!(out.status.success(), "curl {method} {path}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.trim().parse().unwrap(), body.to_string())
    }

    fn node(&self) -> serde_json::Value {
        let (code, body) = self.curl("GET", "/v1/nodes/node1", Some(TOKEN));
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Poll (bounded: 30 s) until the node view satisfies `cond`; that view.
    fn wait(&self, what: &str, cond: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let mut v = serde_json::Value::Null;
        for _ in 0..300 {
            v = self.node();
            if cond(&v) {
                return v;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("never {what}: {v}\n{}", self.seed.output());
    }

    fn retries_metric(&self) -> String {
        let (code, text) = self.curl("GET", "/metrics", None);
        assert_eq!(code, 200);
        text.lines()
            .find(|l| l.starts_with("seed_pxe_boot_retries_total "))
            .unwrap_or_else(|| panic!("no seed_pxe_boot_retries_total in {text}"))
            .to_string()
    }
}

#[test]
fn daemon_pxewatch_cycles_a_silent_node_and_spares_one_that_fetched_its_script() {
    let srv = Daemon::start();
    assert_eq!(srv.retries_metric(), "seed_pxe_boot_retries_total 0");

    // Inspect (from enroll: the fake BMC is verified first); the node never fetches its script.
    let (code, body) = srv.curl("POST", "/v1/nodes/node1/inspect", Some(TOKEN));
    assert_eq!(code, 202, "{body}");
    let v = srv.wait("power-cycled by the watchdog", |v| v["boot_retries"] == 1);
    assert_eq!(v["state"], "inspecting", "{v}");
    let v = srv.wait("inspect failed", |v| v["state"] == "inspect failed");
    let reason = "no PXE boot reached the seed within 2 s, 2 power-ons";
    assert_eq!(v["reason"], reason, "{v}");
    assert_eq!(v["last_error"], format!("inspect failed: {reason}"));
    assert_eq!(v["boot_retries"], 1);
    assert_eq!(srv.retries_metric(), "seed_pxe_boot_retries_total 1");
    let log = srv.seed.output();
    assert!(
        log.contains("no PXE boot reached the seed in time: power-cycling again"),
        "{log}"
    );

    // Again, and this time the node's iPXE fetches its script from the HTTP boot server.
    let (code, body) = srv.curl("POST", "/v1/nodes/node1/inspect", Some(TOKEN));
    assert_eq!(code, 202, "{body}");
    let (code, script) = srv.curl("GET", &format!("/ipxe/{MAC_HYP}"), None);
    assert_eq!(code, 200);
    assert!(script.contains("seed.url="), "the ramdisk: {script}");
    // Well past the boot deadline and its retry: no power-cycle, still inspecting.
    std::thread::sleep(Duration::from_secs(5));
    let v = srv.node();
    assert_eq!(v["state"], "inspecting", "{v}");
    assert_eq!(v["boot_retries"], 0, "{v}");
    assert_eq!(srv.retries_metric(), "seed_pxe_boot_retries_total 1");
}
