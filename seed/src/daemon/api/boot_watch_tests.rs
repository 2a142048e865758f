//! The PXE boot watchdog through the daemon: a fake BMC whose boots the tests count, a node
//! that never fetches its iPXE script (power-cycled again, then inspect failed), one that does
//! (no extra power-cycle), one whose agent calls in, and a restart with a boot deadline stored.

use super::*;
use crate::daemon::test_support::{attach_fake_bmc, fake_node, settings};
use crate::inventory::Node;
use crate::lifecycle::State;
use crate::lifecycle::Timeouts;
use crate::power::FakeBmc;
use crate::store::memory::MemStore;
use crate::store::nodes;
use crate::store::Store;
use netboot::BootPolicy;
use std::time::Duration;

const MAC: &str = "52:54:00:00:00:01";
const NETMAC: netboot::MacAddr = netboot::MacAddr([0x52, 0x54, 0, 0, 0, 1]);
const TOKEN: &str = "s3cret";
/// The boot watchdog of these tests.
const BOOT_MS: u64 = 300;

struct Env {
    d: Arc<Daemon>,
    api: Api,
    bmc: Arc<FakeBmc>,
}

fn timeouts() -> Timeouts {
    Timeouts {
        boot_ms: BOOT_MS,
        boot_retries_max: 2,
        ..Timeouts::default()
    }
}

fn node(state: State) -> Node {
    let mut node = fake_node("n1", MAC);
    node.lifecycle.state = state;
    node
}

/// A daemon over `store` whose node `n1` powers through a fake BMC the test keeps.
fn daemon(store: Arc<dyn Store>) -> Env {
    let d = Daemon::new(store, settings(timeouts(), false)).unwrap();
    let bmc = attach_fake_bmc(&d, "n1");
    let api = Api::new(d.clone(), TOKEN);
    Env { d, api, bmc }
}

fn setup() -> Env {
    let store = Arc::new(MemStore::new());
    nodes::create(&*store, &[node(State::Manageable)]).unwrap();
    daemon(store)
}

use crate::daemon::test_support::request as req;

impl Env {
    async fn view(&self) -> serde_json::Value {
        let r = self
            .api
            .respond(&req(Method::GET, "/v1/nodes/n1", Some(TOKEN), ""))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        serde_json::from_str(&r.body).unwrap()
    }

    fn lifecycle(&self) -> crate::lifecycle::Lifecycle {
        nodes::get(self.d.store(), "n1")
            .unwrap()
            .unwrap()
            .0
            .lifecycle
    }

    /// Poll (bounded: 10 s) until `cond` holds.
    async fn wait(&self, what: &str, cond: impl Fn(&Env) -> bool) {
        for _ in 0..1000 {
            if cond(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "timed out waiting for {what}: boots {}, {:?}",
            self.bmc.boots(),
            self.lifecycle()
        );
    }

    async fn inspect(&self) {
        let r = self
            .api
            .respond(&req(Method::POST, "/v1/nodes/n1/inspect", Some(TOKEN), ""))
            .await;
        assert_eq!(r.status, 202, "{}", r.body);
    }
}

#[tokio::test]
async fn a_node_that_never_fetches_its_script_is_cycled_then_inspect_fails() {
    let e = setup();
    e.inspect().await;
    e.wait("powered on into PXE", |e| e.bmc.boots() == 1).await;
    assert_eq!(e.view().await["boot_retries"], 0);
    // Nothing fetched: the watchdog power-cycles it again, into PXE, and says so.
    e.wait("a second power-on", |e| e.bmc.boots() == 2).await;
    e.wait("the retry recorded", |e| e.lifecycle().boot_retries == 1)
        .await;
    assert_eq!(e.view().await["state"], "inspecting");
    assert_eq!(e.view().await["boot_retries"], 1);
    assert_eq!(
        e.bmc.last_boot_device(),
        Some(crate::power::BootDevice::Pxe)
    );
    // Still nothing after the last retry: inspect failed, with the reason, powered off.
    e.wait("inspect failed", |e| e.lifecycle().state.is_failed())
        .await;
    let v = e.view().await;
    let reason = "no PXE boot reached the seed within 300 ms, 3 power-ons";
    assert_eq!(v["state"], "inspect failed");
    assert_eq!(v["reason"], reason);
    assert_eq!(v["last_error"], format!("inspect failed: {reason}"));
    assert_eq!(v["boot_retries"], 2);
    assert_eq!(e.bmc.boots(), 3, "one power-on and two retries");
    assert_eq!(e.d.metrics().pxe_boot_retries(), 2);
    let text = e.d.metrics().render(e.d.store()).unwrap();
    assert!(text.contains("seed_pxe_boot_retries_total 2\n"), "{text}");
    e.wait("powered off", |e| {
        e.bmc.power_state() == crate::power::PowerState::Off
    })
    .await;
    // Nothing more comes: no further power-on once the step failed.
    tokio::time::sleep(Duration::from_millis(2 * BOOT_MS)).await;
    assert_eq!(e.bmc.boots(), 3);
}

#[tokio::test]
async fn a_node_whose_script_is_served_in_time_is_not_cycled() {
    let e = setup();
    e.inspect().await;
    e.wait("powered on into PXE", |e| e.bmc.boots() == 1).await;
    assert!(e.lifecycle().boot_deadline_ms.is_some());
    // What the HTTP boot server does when it serves `/ipxe/<mac>`.
    e.d.script_served(NETMAC);
    assert_eq!(e.lifecycle().boot_deadline_ms, None);
    e.d.script_served(NETMAC); // again (iPXE retries): harmless
    tokio::time::sleep(Duration::from_millis(3 * BOOT_MS)).await;
    assert_eq!(e.bmc.boots(), 1, "no extra power-cycle");
    let lc = e.lifecycle();
    assert_eq!((lc.state, lc.boot_retries), (State::Inspecting, 0));
    assert_eq!(e.d.metrics().pxe_boot_retries(), 0);
    // A MAC nobody owns changes nothing.
    e.d.script_served(netboot::MacAddr([2; 6]));
}

#[tokio::test]
async fn an_agent_call_meets_the_boot_deadline_and_a_bad_token_does_not() {
    let e = setup();
    e.inspect().await;
    let token = match e.d.boot_action(NETMAC) {
        Some(netboot::BootAction::Kernel { cmdline, .. }) => {
            ::api::agent::KernelArgs::parse(&cmdline).token.unwrap()
        }
        other => panic!("{other:?}"),
    };
    let hb = format!("{{\"boot_mac\":\"{MAC}\"}}");
    let r = e
        .api
        .respond(&req(Method::POST, "/v1/agent/heartbeat", Some("nope"), &hb))
        .await;
    assert_eq!(r.status, 401);
    assert!(
        e.lifecycle().boot_deadline_ms.is_some(),
        "an unauthenticated call proves nothing"
    );
    let r = e
        .api
        .respond(&req(Method::POST, "/v1/agent/heartbeat", Some(&token), &hb))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(e.lifecycle().boot_deadline_ms, None);
    tokio::time::sleep(Duration::from_millis(3 * BOOT_MS)).await;
    assert_eq!(e.bmc.boots(), 1);
    assert_eq!(e.lifecycle().state, State::Inspecting);
}

#[tokio::test]
async fn a_boot_deadline_stored_before_a_restart_is_rearmed() {
    // The daemon stopped while n1 waited for its first PXE boot, deadline now past.
    let store = Arc::new(MemStore::new());
    let mut n = node(State::Inspecting);
    let now = crate::daemon::now_ms();
    n.lifecycle.op = 4;
    n.lifecycle.deadline_ms = Some(now + 60_000);
    n.lifecycle.boot_deadline_ms = Some(now.saturating_sub(1));
    nodes::create(&*store, &[n]).unwrap();
    let e = daemon(store);
    assert_eq!(e.d.resume().unwrap(), 1, "one node's deadlines");
    e.wait("the missed boot retried", |e| e.bmc.boots() == 1)
        .await;
    e.wait("recorded", |e| e.lifecycle().boot_retries == 1)
        .await;
    let lc = e.lifecycle();
    assert_eq!(lc.state, State::Inspecting);
    assert_eq!(lc.op, 4, "the same attempt");
    assert!(lc.boot_deadline_ms.is_some_and(|d| d > now));
}

#[tokio::test]
async fn a_verification_in_flight_at_a_restart_is_asked_again_and_goes_on_to_inspect() {
    // The daemon (or the HA leader) stopped after `inspect` was asked from `enroll`, while the
    // BMC was being verified: the record says verifying, with the inspection wished.
    let store = Arc::new(MemStore::new());
    let mut n = node(State::Verifying);
    n.lifecycle.op = 1;
    n.lifecycle.deadline_ms = Some(crate::daemon::now_ms() + 60_000);
    n.lifecycle.inspect_after_verify = true;
    nodes::create(&*store, &[n]).unwrap();
    let e = daemon(store);
    e.d.resume().unwrap();
    e.wait("verified again, then inspecting", |e| {
        e.lifecycle().state == State::Inspecting
    })
    .await;
    e.wait("powered into PXE", |e| e.bmc.boots() == 1).await;
    let lc = e.lifecycle();
    assert!(!lc.inspect_after_verify);
    assert_eq!(lc.last_error, None);
}

/// An IPMI node in `state` on attempt `op`, as a resuming daemon finds it: its step's deadline
/// far off and, unless its boot was `seen`, its boot watchdog armed (far off too, so the
/// watchdog is not what power-cycles it in these tests).
fn waiting_on_pxe(state: State, op: u64, seen: bool) -> Node {
    let mut n = node(state);
    n.bmc.driver = crate::inventory::PowerDriver::Ipmi;
    let now = crate::daemon::now_ms();
    n.lifecycle.op = op;
    n.lifecycle.deadline_ms = Some(now + 600_000);
    n.lifecycle.boot_deadline_ms = (!seen).then_some(now + 600_000);
    n
}

/// A deploy resumed by a new leader (or a restarted daemon) before its node's PXE boot reached
/// the seed: the daemon that ordered the power cycle may have died before acting, so it is
/// ordered again at once rather than at the boot watchdog. A node that did reach the seed (its
/// boot deadline met) is not power-cycled: its agent carries on.
#[tokio::test]
async fn a_resumed_deploy_whose_boot_was_not_seen_is_power_cycled_at_once() {
    for seen in [false, true] {
        let store = Arc::new(MemStore::new());
        let mut n = waiting_on_pxe(State::Deploying, 7, seen);
        n.lifecycle.target = Some(crate::inventory::DeployTarget {
            image: "tiny".into(),
            root_hint: None,
        });
        nodes::create(&*store, &[n]).unwrap();
        let e = daemon(store);
        let images = tempfile::tempdir().unwrap();
        let src = tempfile::tempdir().unwrap();
        let imgs = ::images::ImageStore::open(images.path().join("images")).unwrap();
        let manifest = ::images::store::write_placeholder(src.path(), "tiny", b"tiny").unwrap();
        imgs.import(&manifest).unwrap();
        assert!(e.d.set_images(imgs, "images"));
        e.d.resume().unwrap();
        e.wait("the agent's command back", |e| {
            matches!(e.d.pending_command("n1"), ::api::agent::Command::Deploy(ref c) if c.op == 7)
        })
        .await;
        if seen {
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(
                e.bmc.boots(),
                0,
                "a node that reached the seed is left alone"
            );
        } else {
            e.wait("powered into PXE again", |e| e.bmc.boots() == 1)
                .await;
            assert_eq!(
                e.bmc.last_boot_device(),
                Some(crate::power::BootDevice::Pxe)
            );
        }
        let lc = e.lifecycle();
        assert_eq!((lc.state, lc.op, lc.boot_retries), (State::Deploying, 7, 0));
    }
}

/// The same for an inspection a new leader (or a restarted daemon) finds waiting for its
/// node's first PXE boot: ordered again at once, once; one whose node reached the seed is not.
#[tokio::test]
async fn a_resumed_inspection_whose_boot_was_not_seen_is_power_cycled_at_once() {
    for seen in [false, true] {
        let store = Arc::new(MemStore::new());
        let n = waiting_on_pxe(State::Inspecting, 3, seen);
        nodes::create(&*store, &[n]).unwrap();
        let e = daemon(store);
        e.d.resume().unwrap();
        if seen {
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(
                e.bmc.boots(),
                0,
                "a node that reached the seed is left alone"
            );
        } else {
            e.wait("powered into PXE again", |e| e.bmc.boots() == 1)
                .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(e.bmc.boots(), 1, "once");
        }
        let lc = e.lifecycle();
        assert_eq!(
            (lc.state, lc.op, lc.boot_retries),
            (State::Inspecting, 3, 0)
        );
    }
}

/// The boot a resume's power cycle cuts short may fetch its script (and the token) before the
/// cycle happens; the boot after the cycle then gets the token once more, not a script without
/// it (its agent would be refused for good). A second fetch of that new boot gets nothing.
#[tokio::test]
async fn the_boot_after_a_resumes_power_cycle_gets_its_token_again() {
    let store = Arc::new(MemStore::new());
    nodes::create(&*store, &[waiting_on_pxe(State::Inspecting, 3, false)]).unwrap();
    let e = daemon(store);
    let ip = std::net::Ipv4Addr::new(10, 0, 0, 10);
    e.d.note_address(NETMAC, ip);
    let has_token = |e: &Env| match e.d.script_action(NETMAC, ip.into()) {
        Some(netboot::BootAction::Kernel { cmdline, .. }) => cmdline.contains("seed.token="),
        other => panic!("no ramdisk script: {other:?}"),
    };
    e.d.resume().unwrap();
    // The boot in flight across the restart asks before the ordered cycle is done.
    assert!(has_token(&e), "the boot in flight gets the token");
    e.wait("powered into PXE again", |e| e.bmc.boots() == 1)
        .await;
    assert!(has_token(&e), "the boot after the cycle gets it again");
    assert!(!has_token(&e), "and only once");
}
