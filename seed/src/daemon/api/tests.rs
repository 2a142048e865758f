//! The API handler against an in-memory store and fake BMCs.

use super::*;
use crate::daemon::test_support::{fake_node, settings};
use crate::daemon::Settings;
use crate::daemon::FACTS;
use crate::lifecycle::State;
use crate::lifecycle::Timeouts;
use crate::store::memory::MemStore;
use crate::store::nodes;
use ::api::agent::Command;
use netboot::BootPolicy;
use std::time::Duration;

const MAC: &str = "52:54:00:00:00:01";
const TOKEN: &str = "s3cret";

fn setup() -> (Arc<Daemon>, Api) {
    let store = Arc::new(MemStore::new());
    let mut node = fake_node("n1", MAC);
    node.lifecycle.state = State::Manageable;
    nodes::create(&*store, &[node]).unwrap();
    let d = Daemon::new(store, settings(Timeouts::default(), true)).unwrap();
    let api = Api::new(d.clone(), TOKEN);
    (d, api)
}

use crate::daemon::test_support::request as req;

/// `POST path` with `token` and `body`.
async fn post(api: &Api, path: &str, token: &str, body: &str) -> ApiResponse {
    api.respond(&req(Method::POST, path, Some(token), body))
        .await
}

fn json(r: &ApiResponse) -> serde_json::Value {
    serde_json::from_str(&r.body).unwrap()
}

fn report(boot_mac: &str, nic_mac: &str) -> String {
    serde_json::json!({
        "boot_mac": boot_mac,
        "facts": {
            "cpus": 4, "cpu_model": "QEMU", "memory_mib": 2048,
            "disks": [{"name": "vda", "size_bytes": 10737418240u64, "model": "", "serial": "S1", "rotational": false}],
            "nics": [{"name": "eth0", "mac": nic_mac, "link": true, "driver": "virtio_net"}],
            "dmi": {"vendor": "QEMU", "product": "Standard PC", "serial": "", "uuid": "u"},
            "boot_mode": "bios"
        }
    })
    .to_string()
}

#[tokio::test]
async fn rest_needs_the_token_and_hides_passwords() {
    let (_d, api) = setup();
    assert_eq!(
        api.respond(&req(Method::GET, "/v1/nodes", None, ""))
            .await
            .status,
        401
    );
    assert_eq!(
        api.respond(&req(Method::GET, "/v1/nodes", Some("wrong"), ""))
            .await
            .status,
        401
    );
    let r = api
        .respond(&req(Method::GET, "/v1/nodes", Some(TOKEN), ""))
        .await;
    assert_eq!(r.status, 200);
    assert!(!r.body.contains("hunter2"), "{}", r.body);
    let v = json(&r);
    assert_eq!(v[0]["name"], "n1");
    assert_eq!(v[0]["state"], "manageable");
    let r = api
        .respond(&req(Method::GET, "/v1/nodes/nope", Some(TOKEN), ""))
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn inspect_boot_facts_heartbeat() {
    let (d, api) = setup();
    let mac = netboot::MacAddr([0x52, 0x54, 0, 0, 0, 1]);
    assert_eq!(d.boot_action(mac), Some(netboot::BootAction::Exit));
    assert_eq!(d.boot_action(netboot::MacAddr([2; 6])), None);

    let r = post(&api, "/v1/nodes/n1/inspect", TOKEN, "").await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(json(&r)["state"], "inspecting");
    match d.boot_action(mac) {
        Some(netboot::BootAction::Kernel { cmdline, .. }) => {
            assert!(
                cmdline.contains("seed.url=http://10.0.0.1:8080"),
                "{cmdline}"
            )
        }
        other => panic!("{other:?}"),
    }
    let tok = cmdline_token(&d, mac).expect("a seed.token= on the ramdisk's command line");
    // The worker powers the fake machine on, booting from PXE.
    let drv = d.driver("n1", &nodes::get(d.store(), "n1").unwrap().unwrap().0.bmc);
    for _ in 0..200 {
        if drv.status().await.unwrap() == crate::power::PowerState::On {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(drv.status().await.unwrap(), crate::power::PowerState::On);

    // Unknown machine: refused, nothing written.
    let r = post(
        &api,
        "/v1/agent/facts",
        &tok,
        &report("02:00:00:00:00:09", "02:00:00:00:00:0a"),
    )
    .await;
    assert_eq!(r.status, 404);
    assert!(d.store().get(FACTS, "n1").unwrap().is_none());
    assert_eq!(post(&api, "/v1/agent/facts", &tok, "{").await.status, 400);

    // Found by a NIC MAC even when the boot MAC is unknown.
    let r = post(
        &api,
        "/v1/agent/facts",
        &tok,
        &report("02:00:00:00:00:09", MAC),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let ack = json(&r);
    assert_eq!(ack["node"], "n1");
    assert_eq!(ack["heartbeat_secs"], 7);

    let v = json(
        &api.respond(&req(Method::GET, "/v1/nodes/n1", Some(TOKEN), ""))
            .await,
    );
    assert_eq!(v["state"], "available");
    assert_eq!(v["properties"]["memory_mib"], 2048);
    assert_eq!(v["properties"]["disks"][0]["name"], "vda");
    assert_eq!(v["facts"]["nics"][0]["mac"], MAC);
    assert_eq!(d.boot_action(mac), Some(netboot::BootAction::Exit));
    // The lifecycle wants the node off (the BMC does it).
    assert_eq!(d.pending_command("n1"), Command::PowerOff);

    // Out of inspecting, the boot's token is dead: heartbeats and a second report get 401.
    let r = post(
        &api,
        "/v1/agent/heartbeat",
        &tok,
        &format!("{{\"boot_mac\":\"{MAC}\"}}"),
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = post(&api, "/v1/agent/facts", &tok, &report(MAC, MAC)).await;
    assert_eq!(r.status, 401, "{}", r.body);
}

/// The `seed.token=` of the ramdisk command line the boot policy gives `mac`, as the node's
/// agent reads it.
fn cmdline_token(d: &Daemon, mac: netboot::MacAddr) -> Option<String> {
    match d.boot_action(mac)? {
        netboot::BootAction::Kernel { cmdline, .. } => {
            ::api::agent::KernelArgs::parse(&cmdline).token
        }
        _ => None,
    }
}

/// Every agent call must carry the current per-boot token of the node it is about.
#[tokio::test]
async fn agent_calls_need_the_nodes_current_token() {
    let (d, api) = setup();
    let mac1 = netboot::MacAddr([0x52, 0x54, 0, 0, 0, 1]);
    const MAC2: &str = "52:54:00:00:00:02";
    let mac2 = netboot::MacAddr([0x52, 0x54, 0, 0, 0, 2]);
    let mut n2 = nodes::get(d.store(), "n1").unwrap().unwrap().0;
    n2.name = "n2".into();
    n2.macs = vec![MAC2.parse().unwrap()];
    d.enroll(&[n2]).unwrap();
    assert_eq!(
        cmdline_token(&d, mac1),
        None,
        "no token outside the ramdisk"
    );
    for n in ["n1", "n2"] {
        let r = post(&api, &format!("/v1/nodes/{n}/inspect"), TOKEN, "").await;
        assert_eq!(r.status, 202, "{}", r.body);
    }
    let tok1 = cmdline_token(&d, mac1).unwrap();
    let tok2 = cmdline_token(&d, mac2).unwrap();
    assert_ne!(tok1, tok2);
    assert_eq!(tok1.len(), 64, "32 bytes, hex");
    let state = |n: &str| nodes::get(d.store(), n).unwrap().unwrap().0.lifecycle.state;
    let hb1 = format!("{{\"boot_mac\":\"{MAC}\"}}");
    let progress1 = serde_json::json!({
        "boot_mac": MAC, "op": 1, "phase": "done", "bytes": 1, "total": 1
    })
    .to_string();

    // No token, another node's token, the operators' token, junk: 401, nothing changes.
    let mut refused = 0;
    for bad in [None, Some(tok2.as_str()), Some(TOKEN), Some("zz"), Some("")] {
        for (path, body) in [
            ("/v1/agent/facts", report(MAC, MAC)),
            ("/v1/agent/heartbeat", hb1.clone()),
            ("/v1/agent/progress", progress1.clone()),
        ] {
            let r = api.respond(&req(Method::POST, path, bad, &body)).await;
            assert_eq!(r.status, 401, "{path} with {bad:?}: {}", r.body);
            assert!(json(&r)["error"].as_str().unwrap().contains("agent token"));
            refused += 1;
        }
    }
    assert_eq!(state("n1"), State::Inspecting);
    assert!(d.store().get(FACTS, "n1").unwrap().is_none());
    assert_eq!(d.last_progress("n1"), None);
    assert_eq!(d.metrics().agent_auth_failures(), refused);
    let text = d.metrics().render(d.store()).unwrap();
    assert!(
        text.contains(&format!("seed_agent_auth_failures_total {refused}\n")),
        "{text}"
    );

    // The tokens show in no API output.
    for path in ["/v1/nodes", "/v1/nodes/n1", "/v1/nodes/n2"] {
        let r = api.respond(&req(Method::GET, path, Some(TOKEN), "")).await;
        assert_eq!(r.status, 200);
        assert!(
            !r.body.contains(&tok1) && !r.body.contains(&tok2),
            "{}",
            r.body
        );
    }
    // Nor in the stored node (derived, not stored).
    for n in ["n1", "n2"] {
        let rec = d.store().get(nodes::NODES, n).unwrap().unwrap();
        let text = String::from_utf8_lossy(&rec.value);
        assert!(!text.contains(&tok1) && !text.contains(&tok2), "{text}");
    }

    // The right token works, for its own node only.
    let r = post(&api, "/v1/agent/heartbeat", &tok1, &hb1).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = post(&api, "/v1/agent/facts", &tok1, &report(MAC, MAC)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(state("n1"), State::Available);
    assert_eq!(state("n2"), State::Inspecting, "n2 untouched");

    // n1 left the ramdisk: its token no longer works; n2's still does.
    let r = post(&api, "/v1/agent/heartbeat", &tok1, &hb1).await;
    assert_eq!(r.status, 401, "{}", r.body);
    let hb2 = format!("{{\"boot_mac\":\"{MAC2}\"}}");
    let r = post(&api, "/v1/agent/heartbeat", &tok2, &hb2).await;
    assert_eq!(r.status, 200, "{}", r.body);

    // A new step is a new boot with a new token.
    let r = post(&api, "/v1/nodes/n1/manage", TOKEN, "").await;
    assert_eq!(r.status, 202, "{}", r.body);
    let r = post(&api, "/v1/nodes/n1/inspect", TOKEN, "").await;
    assert_eq!(r.status, 202, "{}", r.body);
    let again = cmdline_token(&d, mac1).unwrap();
    assert_ne!(again, tok1);
    let r = post(&api, "/v1/agent/heartbeat", &tok1, &hb1).await;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = post(&api, "/v1/agent/heartbeat", &again, &hb1).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn inspect_from_enroll_verifies_first() {
    let (d, api) = setup();
    let (mut n, rev) = nodes::get(d.store(), "n1").unwrap().unwrap();
    n.lifecycle.state = State::Enroll;
    nodes::update(d.store(), &n, rev).unwrap();
    let r = post(&api, "/v1/nodes/n1/inspect", TOKEN, "").await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(json(&r)["state"], "verifying");
    let mut state = String::new();
    for _ in 0..200 {
        state = nodes::get(d.store(), "n1")
            .unwrap()
            .unwrap()
            .0
            .lifecycle
            .state
            .name()
            .into();
        if state == "inspecting" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(state, "inspecting");
}

#[test]
fn discovery_enrolls_a_node() {
    let (d, _api) = setup();
    let mac = netboot::MacAddr([0x52, 0x54, 0, 0, 0, 0x42]);
    d.discovered(mac);
    let (n, _) = nodes::get(d.store(), "node-52-54-00-00-00-42")
        .unwrap()
        .unwrap();
    assert_eq!(n.lifecycle.state, State::Enroll);
    assert_eq!(d.boot_action(mac), Some(netboot::BootAction::Exit));
    d.discovered(mac); // again: no error, no second node
    assert_eq!(nodes::list(d.store()).unwrap().len(), 2);
}

/// Hole 7: a flood of made-up MACs enrols a burst, not a node per packet; refused MACs are
/// reported again (not taken), and the next ones wait for the rate.
#[test]
fn discovery_is_rate_limited() {
    let (d, _api) = setup();
    let before = nodes::list(d.store()).unwrap().len();
    let taken = (0..1000u32)
        .filter(|i| {
            let b = i.to_be_bytes();
            d.discovered(netboot::MacAddr([0x02, 0x66, b[0], b[1], b[2], b[3]]))
        })
        .count();
    let enrolled = nodes::list(d.store()).unwrap().len() - before;
    assert_eq!(taken, crate::daemon::discovery::BURST as usize);
    assert_eq!(enrolled, taken);
}

#[tokio::test]
async fn a_silent_inspection_times_out_and_a_restart_rearms_deadlines() {
    let store: Arc<dyn crate::store::Store> = Arc::new(MemStore::new());
    let mut node = fake_node("n1", MAC);
    node.lifecycle.state = State::Manageable;
    nodes::create(&*store, &[node]).unwrap();
    // A first daemon starts the inspection and "crashes": its runtime, and the timer it armed,
    // are dropped.
    let rt_store = store.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let d = Daemon::new(rt_store, short_inspect()).unwrap();
            d.request_inspect("n1").unwrap();
        });
        // Dropping the runtime cancels the armed timer.
    })
    .join()
    .unwrap();
    assert_eq!(
        nodes::get(&*store, "n1")
            .unwrap()
            .unwrap()
            .0
            .lifecycle
            .state,
        State::Inspecting
    );
    // The restarted daemon re-arms the deadline from the store; the step fails when it passes.
    let d = Daemon::new(store.clone(), short_inspect()).unwrap();
    assert_eq!(d.resume().unwrap(), 1);
    let mut state = State::Inspecting;
    for _ in 0..300 {
        state = nodes::get(&*store, "n1")
            .unwrap()
            .unwrap()
            .0
            .lifecycle
            .state;
        if state != State::Inspecting {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        matches!(&state, State::InspectFailed { reason } if reason.contains("timed out")),
        "{state:?}"
    );
    assert_eq!(d.pending_command("n1"), Command::PowerOff);
}

/// Settings whose inspection times out after 50 ms.
fn short_inspect() -> Settings {
    Settings {
        server_ip: "10.0.0.1".parse().unwrap(),
        http_port: 8080,
        timeouts: Timeouts {
            inspect_ms: 50,
            ..Timeouts::default()
        },
        heartbeat_secs: 7,
        provide_after_inspect: true,
        agent_tls: None,
    }
}
