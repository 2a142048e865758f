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
fn start() -> LanSeed {
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
    LanSeed::start(opts, |_| {
        "[lifecycle]\nprovide_after_inspect = false\nboot_timeout_secs = 2\nboot_retries_max = 1\n"
            .into()
    })
}

/// Poll (bounded: 30 s) until the node view satisfies `cond`; that view.
fn wait(srv: &LanSeed, what: &str, cond: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let mut v = serde_json::Value::Null;
    for _ in 0..300 {
        v = srv.node1(TOKEN);
        if cond(&v) {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("never {what}: {v}\n{}", srv.seed.output());
}

fn retries_metric(srv: &LanSeed) -> String {
    let (code, text) = srv.curl("GET", "/metrics", None, None);
    assert_eq!(code, 200);
    text.lines()
        .find(|l| l.starts_with("seed_pxe_boot_retries_total "))
        .unwrap_or_else(|| panic!("no seed_pxe_boot_retries_total in {text}"))
        .to_string()
}

#[test]
fn daemon_pxewatch_cycles_a_silent_node_and_spares_one_that_fetched_its_script() {
    let srv = start();
    assert_eq!(retries_metric(&srv), "seed_pxe_boot_retries_total 0");

    // Inspect (from enroll: the fake BMC is verified first); the node never fetches its script.
    let (code, body) = srv.curl("POST", "/v1/nodes/node1/inspect", Some(TOKEN), None);
    assert_eq!(code, 202, "{body}");
    let v = wait(&srv, "power-cycled by the watchdog", |v| {
        v["boot_retries"] == 1
    });
    assert_eq!(v["state"], "inspecting", "{v}");
    let v = wait(&srv, "inspect failed", |v| v["state"] == "inspect failed");
    let reason = "no PXE boot reached the seed within 2 s, 2 power-ons";
    assert_eq!(v["reason"], reason, "{v}");
    assert_eq!(v["last_error"], format!("inspect failed: {reason}"));
    assert_eq!(v["boot_retries"], 1);
    assert_eq!(retries_metric(&srv), "seed_pxe_boot_retries_total 1");
    let log = srv.seed.output();
    assert!(
        log.contains("no PXE boot reached the seed in time: power-cycling again"),
        "{log}"
    );

    // Again, and this time the node's iPXE fetches its script from the HTTP boot server.
    let (code, body) = srv.curl("POST", "/v1/nodes/node1/inspect", Some(TOKEN), None);
    assert_eq!(code, 202, "{body}");
    let (code, script) = srv.curl("GET", &format!("/ipxe/{MAC_HYP}"), None, None);
    assert_eq!(code, 200);
    assert!(script.contains("seed.url="), "the ramdisk: {script}");
    // Well past the boot deadline and its retry: no power-cycle, still inspecting.
    std::thread::sleep(Duration::from_secs(5));
    let v = srv.node1(TOKEN);
    assert_eq!(v["state"], "inspecting", "{v}");
    assert_eq!(v["boot_retries"], 0, "{v}");
    assert_eq!(retries_metric(&srv), "seed_pxe_boot_retries_total 1");
}
