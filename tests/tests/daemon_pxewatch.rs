//! The PXE boot watchdog end to end, without QEMU: the real `seed daemon` in a server
//! namespace with `[lifecycle] boot_timeout_secs = 2`, a node with a fake BMC (nothing boots
//! on it), and the client namespace playing the node's iPXE with curl. A node that never
//! fetches its script is power-cycled again, then inspect-failed with the reason; one that
//! fetches `/ipxe/<mac>` from the real HTTP boot server in time is left alone.

use std::time::Duration;
use tests::lan_seed::{LanSeed, Options};

const MAC: &str = "52:54:00:00:d1:01";
const MAC_HYP: &str = "52-54-00-00-d1-01";
const TOKEN: &str = "t0ken-for-tests";

/// The daemon with `[lifecycle] boot_timeout_secs = 2`, one retry.
struct Daemon(LanSeed);

impl std::ops::Deref for Daemon {
    type Target = LanSeed;
    fn deref(&self) -> &LanSeed {
        &self.0
    }
}

impl Daemon {
    fn start() -> Self {
        let opts = Options {
            node_mac: MAC,
            client_mac: MAC,
            token: TOKEN,
            api_listen: None,
            discovery_pool: false,
            rust_log: "info",
            // The node's NIC gets its reserved address by hand: DHCP is not what is tested here.
            address_client: true,
            rest_on_provisioning: true,
        };
        Daemon(LanSeed::start(opts, |_| {
            "[lifecycle]\nprovide_after_inspect = false\nboot_timeout_secs = 2\nboot_retries_max = 1\n"
                .into()
        }))
    }

    /// curl from the client namespace (the node), no body: (status, body).
    fn curl(&self, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
        self.0.curl(method, path, token, None)
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
