//! Fake machines against a daemon over an in-memory store: the agent reaches the daemon only
//! through the API handler.

use super::*;
use crate::daemon::{Settings, FACTS};
use crate::inventory::{Capabilities, Mac};
use crate::lifecycle::{State, Timeouts};
use crate::store::memory::MemStore;
use crate::store::nodes;

/// A fake machine with two NICs (`52:54:00:fa:00:<i>` boots) and capabilities `caps`.
fn fake_node(name: &str, i: u8, caps: &str) -> Node {
    let mut n = crate::daemon::test_support::fake_node(name, &format!("52:54:00:fa:00:{i:02x}"));
    n.macs.push(Mac([0x52, 0x54, 0, 0xfb, 0, i]));
    n.capabilities = caps.parse::<Capabilities>().unwrap();
    n
}

/// Fake machines in `state`, each named after its agent's behaviour (`fake_agent:<name>`).
fn agents(state: State, names: &[&str]) -> Vec<Node> {
    (1..)
        .zip(names)
        .map(|(i, name)| {
            let mut n = fake_node(name, i, &format!("fake_agent:{name}"));
            n.lifecycle.state = state.clone();
            n
        })
        .collect()
}

/// `node`'s pending agent command once it is a wipe (or whatever it is after 3 s).
async fn wipe_command(d: &Daemon, node: &str) -> Command {
    let mut cmd = Command::None;
    for _ in 0..300 {
        cmd = d.pending_command(node);
        if matches!(cmd, Command::Wipe(_)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cmd
}

fn daemon(nodes_: &[Node], timeouts: Timeouts) -> Arc<Daemon> {
    let store = Arc::new(MemStore::new());
    nodes::create(&*store, nodes_).unwrap();
    let d = Daemon::new(
        store,
        Settings {
            server_ip: "10.0.0.1".parse().unwrap(),
            http_port: 8080,
            timeouts,
            heartbeat_secs: 1,
            provide_after_inspect: true,
            agent_tls: None,
        },
    )
    .unwrap();
    d.set_fake_timing(Timing {
        boot: Duration::from_millis(5),
        step: Duration::from_millis(2),
        tick: Duration::from_millis(10),
        slow_factor: 3,
        max_heartbeats: 1_000,
    });
    d
}

/// Poll (bounded) until node `name` is in a state for which `done` holds; its final state.
async fn settle(d: &Daemon, name: &str, done: impl Fn(&State) -> bool) -> Node {
    let mut n = None;
    for _ in 0..500 {
        let (node, _) = nodes::get(d.store(), name).unwrap().unwrap();
        if done(&node.lifecycle.state) {
            return node;
        }
        n = Some(node);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{name} never settled: {:?}", n.map(|n| n.lifecycle));
}

async fn power_of(d: &Daemon, name: &str) -> PowerState {
    let bmc = nodes::get(d.store(), name).unwrap().unwrap().0.bmc;
    d.driver(name, &bmc).status().await.unwrap()
}

#[test]
fn fake_hardware_is_derived_from_the_node() {
    let mut a = fake_node("a", 1, "fake_agent:ok");
    let f1 = facts(&a);
    assert_eq!(f1, facts(&a), "same node, same facts");
    assert_eq!(f1.nics.len(), 2);
    assert_eq!(f1.nics[0].mac, "52:54:00:fa:00:01");
    assert_eq!(f1.nics[1].mac, "52:54:00:fb:00:01");
    assert!([2, 4, 8, 16].contains(&f1.cpus), "{}", f1.cpus);
    assert!(f1.memory_mib >= 4096 && f1.disks[0].size_bytes >= 40 << 30);
    // Declared properties win.
    a.properties.cpus = Some(64);
    a.properties.memory_mib = Some(262_144);
    a.properties.disks = vec![crate::inventory::Disk {
        size_bytes: 1 << 40,
        ..Default::default()
    }];
    let f2 = facts(&a);
    assert_eq!((f2.cpus, f2.memory_mib), (64, 262_144));
    assert_eq!(f2.disks[0].size_bytes, 1 << 40);
    assert_eq!(f2.disks[0].name, "vda");
    // Another name, other defaults (for at least one of a few nodes).
    let others: Vec<_> = (0..8)
        .map(|i| facts(&fake_node(&format!("n{i}"), i, "")))
        .collect();
    assert!(others.iter().any(|f| f.cpus != others[0].cpus
        || f.memory_mib != others[0].memory_mib
        || f.disks[0].size_bytes != others[0].disks[0].size_bytes));
}

#[test]
fn behaviours_from_capabilities() {
    assert_eq!(Behaviour::of(&fake_node("a", 1, "")), None);
    for (v, b) in [
        ("ok", Behaviour::Ok),
        ("slow", Behaviour::Slow),
        ("fail", Behaviour::Fail),
        ("vanish", Behaviour::Vanish),
        ("dead", Behaviour::Dead),
        ("bogus", Behaviour::Ok),
    ] {
        let n = fake_node("a", 1, &format!("profile:compute,fake_agent:{v}"));
        assert_eq!(Behaviour::of(&n), Some(b), "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_to_available_with_fake_facts() {
    let nodes_ = [
        fake_node("ok", 1, "fake_agent:ok"),
        fake_node("slow", 2, "fake_agent:slow,fake_bmc_delay_ms:5"),
        fake_node("fail", 3, "fake_agent:fail"),
    ];
    let d = daemon(&nodes_, Timeouts::default());
    for n in &nodes_ {
        // From enroll: the fake BMC is verified, then inspection boots the fake ramdisk.
        d.request_inspect(&n.name).unwrap();
    }
    for n in &nodes_ {
        let got = settle(&d, &n.name, |s| *s == State::Available).await;
        let hw = facts(n);
        assert_eq!(got.properties.cpus, Some(hw.cpus));
        assert_eq!(got.properties.memory_mib, Some(hw.memory_mib));
        assert_eq!(
            got.properties.disks[0].serial,
            Some(hw.disks[0].serial.clone())
        );
        let stored: Facts =
            serde_json::from_slice(&d.store().get(FACTS, &n.name).unwrap().unwrap().value).unwrap();
        assert_eq!(stored, hw);
    }
    // After inspection the lifecycle powers the machines off, and their agents stop.
    for n in &nodes_ {
        let mut p = PowerState::On;
        for _ in 0..200 {
            p = power_of(&d, &n.name).await;
            if p == PowerState::Off {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(p, PowerState::Off, "{}", n.name);
    }
    assert_eq!(d.metrics().inspect.count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_agent_times_out_and_a_plain_fake_node_never_reports() {
    let nodes_ = [
        fake_node("dead", 1, "fake_agent:dead"),
        fake_node("plain", 2, ""),
    ];
    let t = Timeouts {
        inspect_ms: 300,
        ..Timeouts::default()
    };
    let d = daemon(&nodes_, t);
    for n in &nodes_ {
        d.request_inspect(&n.name).unwrap();
    }
    for n in &nodes_ {
        let got = settle(&d, &n.name, |s| matches!(s, State::InspectFailed { .. })).await;
        assert!(
            got.lifecycle
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("timed out")),
            "{:?}",
            got.lifecycle
        );
        assert!(d.store().get(FACTS, &n.name).unwrap().is_none());
    }
}

/// A `tiny` image in a fresh image store the daemon deploys from.
fn with_image(d: &Daemon) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    images::store::write_placeholder(&src, "tiny", b"a fake golden image").unwrap();
    let store = images::ImageStore::open(dir.path().join("images")).unwrap();
    store.import(&src.join("manifest.json")).unwrap();
    assert!(d.set_images(store, "images"));
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_with_faults_through_the_agent_and_node_apis() {
    let nodes_ = agents(State::Available, &["ok", "slow", "fail", "vanish"]);
    let t = Timeouts {
        deploy_ms: 2_000,
        ..Timeouts::default()
    };
    let d = daemon(&nodes_, t);
    let _images = with_image(&d);
    for n in &nodes_ {
        let target = crate::lifecycle::DeployTarget {
            image: "tiny".into(),
            root_hint: None,
        };
        d.request_deploy(&n.name, target).unwrap();
    }
    let settled = |s: &State| matches!(s, State::Active | State::DeployFailed { .. });
    // ok and slow: image written (progress), booted from disk with the credential → active.
    for name in ["ok", "slow"] {
        let n = settle(&d, name, settled).await;
        assert_eq!(
            n.lifecycle.state,
            State::Active,
            "{name}: {:?}",
            n.lifecycle
        );
        assert_eq!(power_of(&d, name).await, PowerState::On);
        let p = d.last_progress(name);
        assert!(
            p.as_ref().is_none_or(|p| p.bytes == p.total),
            "{name}: {p:?}"
        );
    }
    // fail: the agent's reason is the node's.
    let n = settle(&d, "fail", settled).await;
    let err = n.lifecycle.last_error.unwrap_or_default();
    assert!(err.contains("fake fault"), "{err}");
    // vanish: silent after partitioning; the deploy deadline fails it, the machine is off.
    let n = settle(&d, "vanish", settled).await;
    let err = n.lifecycle.last_error.unwrap_or_default();
    assert!(err.contains("timed out"), "{err}");
    let mut p = PowerState::On;
    for _ in 0..200 {
        p = power_of(&d, "vanish").await;
        if p == PowerState::Off {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(p, PowerState::Off);
    assert_eq!(d.metrics().deploy.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeploy_cleans_through_the_agent() {
    let nodes_ = agents(State::Available, &["ok", "fail"]);
    let d = daemon(&nodes_, Timeouts::default());
    let _images = with_image(&d);
    let target = crate::lifecycle::DeployTarget {
        image: "tiny".into(),
        root_hint: None,
    };
    d.request_deploy("ok", target.clone()).unwrap();
    d.request_deploy("fail", target).unwrap();
    settle(&d, "ok", |s| *s == State::Active).await;
    settle(&d, "fail", |s| matches!(s, State::DeployFailed { .. })).await;
    // ok: powered off, torn down, the ramdisk wipes, cleaned → available and off, disk empty.
    d.request_undeploy("ok", false).unwrap();
    let n = settle(&d, "ok", |s| {
        matches!(s, State::Available | State::CleanFailed { .. })
    })
    .await;
    assert_eq!(n.lifecycle.state, State::Available, "{:?}", n.lifecycle);
    let bmc = n.bmc.clone();
    let drv = d.driver("ok", &bmc);
    let mut p = PowerState::On;
    for _ in 0..200 {
        p = drv.status().await.unwrap();
        if p == PowerState::Off {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(p, PowerState::Off);
    let wiped = d.last_progress("ok").expect("the wipe's progress");
    assert_eq!((wiped.phase, wiped.op), (Phase::Done, n.lifecycle.op));
    // fail: the agent's wipe fails; clean failed keeps its reason.
    d.request_undeploy("fail", true).unwrap();
    let n = settle(&d, "fail", |s| {
        matches!(s, State::Available | State::CleanFailed { .. })
    })
    .await;
    let State::CleanFailed { reason } = &n.lifecycle.state else {
        panic!("{:?}", n.lifecycle);
    };
    assert!(reason.contains("fake fault: zeroing"), "{reason}");
}

/// The daemon's cleaning path played by hand (a fake node without an agent): the power-off
/// tears the node down, the wipe is queued with the cleaning op, a stale report is dropped,
/// the current one finishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleaning_takes_only_the_current_ops_report() {
    let mut n = fake_node("plain", 1, "");
    n.lifecycle.state = State::Active;
    n.properties.disks = vec![crate::inventory::Disk {
        name: "vda".into(),
        size_bytes: 8 << 30,
        serial: Some("S1".into()),
        ..Default::default()
    }];
    let d = daemon(&[n], Timeouts::default());
    let n = d.request_undeploy("plain", false).unwrap();
    assert_eq!(n.lifecycle.state, State::Deleting);
    let deleting_op = n.lifecycle.op;
    let cmd = wipe_command(&d, "plain").await;
    let Command::Wipe(w) = cmd else {
        panic!("no wipe queued: {cmd:?}");
    };
    let (n, _) = nodes::get(d.store(), "plain").unwrap().unwrap();
    assert_eq!(n.lifecycle.state, State::Cleaning);
    assert_eq!(w.op, n.lifecycle.op);
    assert!(!w.full);
    assert_eq!(
        (w.disks[0].name.as_str(), w.disks[0].serial.as_str()),
        ("vda", "S1")
    );
    let report = |op, phase, error: Option<&str>| Progress {
        boot_mac: "52:54:00:fa:00:01".into(),
        op,
        phase,
        bytes: 0,
        total: 0,
        error: error.map(Into::into),
    };
    // The deleting op's (or any older) report is stale.
    let stale = report(deleting_op, Phase::Failed, Some("old"));
    assert!(!d.agent_progress("plain", stale).unwrap());
    assert!(d
        .agent_progress("plain", report(w.op, Phase::Wiping, None))
        .unwrap());
    let (n, _) = nodes::get(d.store(), "plain").unwrap().unwrap();
    assert_eq!(n.lifecycle.state, State::Cleaning);
    assert!(d
        .agent_progress("plain", report(w.op, Phase::Done, None))
        .unwrap());
    let (n, _) = nodes::get(d.store(), "plain").unwrap().unwrap();
    assert_eq!(n.lifecycle.state, State::Available);
    assert_eq!(d.pending_command("plain"), Command::PowerOff);
    // A repeated "done" after that changes nothing.
    assert!(!d
        .agent_progress("plain", report(w.op, Phase::Done, None))
        .unwrap());
}

/// A restart in the middle of a delete or a cleaning picks it up: the deleting node's power-off
/// is repeated (and tears it down), the cleaning node's wipe is queued again with its op.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_deletes_and_cleanings() {
    let mut del = fake_node("del", 1, "");
    del.lifecycle.state = State::Deleting;
    del.lifecycle.op = 7;
    let mut cln = fake_node("cln", 2, "");
    cln.lifecycle.state = State::Cleaning;
    cln.lifecycle.op = 9;
    cln.lifecycle.wipe_full = true;
    let d = daemon(&[del, cln], Timeouts::default());
    assert_eq!(d.pending_command("cln"), Command::None);
    d.resume().unwrap();
    let Command::Wipe(w) = d.pending_command("cln") else {
        panic!("{:?}", d.pending_command("cln"));
    };
    assert_eq!((w.op, w.full), (9, true));
    let n = settle(&d, "del", |s| *s == State::Cleaning).await;
    assert_eq!(n.lifecycle.op, 8);
    let cmd = wipe_command(&d, "del").await;
    assert!(matches!(cmd, Command::Wipe(ref w) if w.op == 8), "{cmd:?}");
}

/// Fake machines fetch their iPXE script when they PXE-boot the ramdisk, so the boot watchdog
/// never re-powers them: even a `dead` agent got through PXE and fails on the step's timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_machines_count_as_booted_for_the_boot_watchdog() {
    let nodes_ = agents(State::Manageable, &["ok", "dead"]);
    let t = Timeouts {
        inspect_ms: 1_500,
        boot_ms: 100,
        boot_retries_max: 2,
        ..Timeouts::default()
    };
    let d = daemon(&nodes_, t);
    for n in &nodes_ {
        d.request_inspect(&n.name).unwrap();
    }
    let n = settle(&d, "ok", |s| *s == State::Available).await;
    assert_eq!(n.lifecycle.boot_retries, 0);
    let n = settle(&d, "dead", State::is_failed).await;
    assert_eq!(
        n.lifecycle.state.reason(),
        Some("timed out in inspecting"),
        "{:?}",
        n.lifecycle
    );
    assert_eq!(n.lifecycle.boot_retries, 0);
    assert_eq!(d.metrics().pxe_boot_retries(), 0);
}
