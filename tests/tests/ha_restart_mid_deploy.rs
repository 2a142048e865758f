//! "A restart must not start deploys over" (issue 14): the real `seed daemon` with machines it
//! does not host — a farm of fake machines in a process of its own (`seed-fake-farm`: IPMI BMCs
//! on UDP, agents over HTTP, see `tests::farm`), powered through the daemon's IPMI driver, in
//! one namespace (loopback). Four nodes are inspected, then deployed by a stack; while their
//! agents are writing the image the daemon is `kill -9`ed and started again. The agents keep
//! retrying; the restarted daemon recognises each agent's op from the store, keeps its per-boot
//! token valid and hands back the same command (same op, same derived credential), so every
//! deploy goes on from the agent's progress. The farm counts per machine: exactly one deploy
//! command, one deploy done, one image boot and two ramdisk boots (inspect, deploy) — no power
//! cycle, no PXE boot, no deploy started over — and the stack ends CREATE_COMPLETE.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tests::daemon::{Config, TestImage};
use tests::farm::{FarmNode, FarmSpec};
use tests::netns::Netns;
use tests::proc::Child;

const TOKEN: &str = "ha-restart-farm-token";
const PORT: u16 = 8080;
const N: usize = 4;

fn curl(ns: &Netns, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
    let url = format!("http://127.0.0.1:6385{path}");
    tests::daemon::api(ns, method, &url, TOKEN, body)
}

fn states(ns: &Netns) -> BTreeMap<String, String> {
    let (code, body) = curl(ns, "GET", "/v1/nodes", None);
    assert_eq!(code, 200, "{body}");
    tests::daemon::node_states(&body).expect("a list of nodes")
}

fn spawn_daemon(ns: &Netns, d: &std::path::Path) -> Child {
    tests::daemon::spawn(ns, "seed-daemon", &d.join("seed.toml"))
}

fn wait(what: &str, daemon: &Child, ok: impl FnMut() -> bool) {
    tests::daemon::wait(what, Duration::from_secs(120), ok, || {
        format!("daemon log:\n{}", daemon.output())
    });
}

#[test]
fn ha_restart_mid_deploy_continues_each_deploy() {
    tests::require("curl");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("http")).unwrap();
    TestImage::golden(
        "test",
        b"not a real image: the farm's agents only report progress",
    )
    .import(&d.join("http/images"), &d.join("golden"));
    let ns = Netns::new("farm");
    let nodes: Vec<FarmNode> = (0..N)
        .map(|i| {
            let (name, mac) = (format!("n{i}"), format!("52:54:00:fa:00:{i:02x}"));
            let bmc = format!("127.0.0.1:{}", 6300 + i).parse().unwrap();
            // Each machine's own address on loopback, reserved below: the daemon hands a
            // node's token only to a script asked from the node's address.
            let ip = std::net::Ipv4Addr::new(127, 0, 0, 10 + i as u8);
            tests::daemon::farm_node(i, name, mac, bmc, ip)
        })
        .collect();
    tests::import_nodes(&d.join("seed.redb"), &tests::daemon::ipmi_inventory(&nodes));
    Config {
        heartbeat_secs: Some(1),
        http_port: PORT,
        nodes: &nodes,
        ..Config::loopback(d, TOKEN)
    }
    .write();

    // Seven deploy phases of 400 ms: the kill lands while images are being written.
    let spec = FarmSpec::new(format!("http://127.0.0.1:{PORT}"), nodes, 400);
    let (_farm, status) =
        tests::farm::spawn(ns.cmd(env!("CARGO_BIN_EXE_seed-fake-farm")), &spec, d);
    let t0 = Instant::now();
    let daemon = spawn_daemon(&ns, d);
    eprintln!("daemon up: {:?}", t0.elapsed());

    for i in 0..N {
        let (code, body) = curl(&ns, "POST", &format!("/v1/nodes/n{i}/inspect"), None);
        assert!(code == 202 || code == 200, "{code} {body}");
    }
    wait("all available", &daemon, || {
        states(&ns).values().all(|s| s == "available")
    });
    eprintln!("inspected: {:?}", t0.elapsed());
    let req = serde_json::json!({"name": "farm", "template": tests::daemon::compute_template(N)})
        .to_string();
    let (code, body) = curl(&ns, "POST", "/v1/stacks", Some(&req));
    assert_eq!(code, 201, "{body}");

    // kill -9 while at least two agents are writing (a deploy command taken, not done).
    let writing = || -> Vec<String> {
        tests::farm::read_status(&status)
            .into_iter()
            .filter(|(_, s)| s.deploy_commands == 1 && s.deploys_done == 0)
            .map(|(n, _)| n)
            .collect()
    };
    wait("two agents writing", &daemon, || writing().len() >= 2);
    let cut = writing();
    // SAFETY: kill(2) on the daemon's pid (`ip netns exec` execs the daemon in place).
    assert_eq!(unsafe { libc::kill(daemon.id() as i32, libc::SIGKILL) }, 0);
    let first_log = daemon.output();
    drop(daemon);
    eprintln!("killed -9 with {cut:?} mid-deploy: {:?}", t0.elapsed());
    let daemon = spawn_daemon(&ns, d);
    eprintln!("daemon up again: {:?}", t0.elapsed());

    wait("CREATE_COMPLETE", &daemon, || {
        curl(&ns, "GET", "/v1/stacks/farm", None).1["status"] == "CREATE_COMPLETE"
    });
    eprintln!("deployed: {:?}", t0.elapsed());
    let farm = tests::farm::read_status_booted(&status, N);
    let per_node: BTreeMap<&String, (u64, u64, u64)> = farm
        .iter()
        .map(|(n, s)| {
            (
                n,
                (s.deploy_commands, s.deploys_done, s.image_boots_reported),
            )
        })
        .collect();
    eprintln!("per node (deploy commands, deploys done, image boots): {per_node:?}");
    for (n, s) in &farm {
        // An image written just before the kill gets its boot from disk ordered again (the
        // order may have died with the daemon): a second image boot, never a second deploy.
        assert_eq!(
            (
                s.deploy_commands,
                s.deploys_done,
                s.image_boots_reported.min(1)
            ),
            (1, 1, 1),
            "{n}: deploy commands, deploys done, image boots: {per_node:?}\n{}",
            daemon.output()
        );
        assert_eq!(
            s.ramdisk_boots, 2,
            "{n}: one ramdisk boot to inspect, one to deploy, none again after the kill"
        );
    }
    assert!(states(&ns).values().all(|s| s == "active"));
    let log = daemon.output();
    for n in &cut {
        assert!(
            log.lines()
                .any(|l| l.contains("deploy resumed") && l.contains(n.as_str())),
            "{n}'s deploy was handed back after the restart:\n{log}"
        );
    }
    assert!(
        !first_log.contains("restarted before the image was written")
            && !log.contains("restarted before the image was written"),
        "no deploy failed by the restart"
    );
    let _: PathBuf = status;
}
