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
use tests::farm::{FarmNode, FarmSpec};
use tests::netns::Netns;
use tests::proc::Child;

const TOKEN: &str = "ha-restart-farm-token";
const PORT: u16 = 8080;
const N: usize = 4;

const TEMPLATE: &str = "heat_template_version: wallaby
resources:
  servers:
    type: OS::Heat::ResourceGroup
    properties:
      count: 4
      resource_def:
        type: OS::Seed::Server
        properties: {image: golden, profile: compute}
";

fn import_golden(store: &std::path::Path, work: &std::path::Path) {
    let src = work.join("golden");
    std::fs::create_dir_all(&src).unwrap();
    let stream = src.join("rootfs.tar.zst");
    std::fs::write(
        &stream,
        b"not a real image: the farm's agents only report progress",
    )
    .unwrap();
    let (sha256, size) = images::store::hash_file(&stream).unwrap();
    let m = images::Manifest {
        name: "golden".into(),
        version: "test".into(),
        stream: images::Stream {
            file: "rootfs.tar.zst".into(),
            sha256,
            size,
            unpacked_size: size,
        },
        boot: images::Boot {
            kernel: "boot/vmlinuz".into(),
            initrd: None,
            cmdline: String::new(),
        },
        min_disk_mib: 64,
        layout: images::Layout::default(),
        elements: vec![],
    };
    std::fs::write(src.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
    images::ImageStore::open(store)
        .unwrap()
        .import(&src.join("manifest.json"))
        .unwrap();
}

fn curl(ns: &Netns, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
    let cmd = ns.cmd(tests::require("curl"));
    let url = format!("http://127.0.0.1:6385{path}");
    let (code, text) = tests::curl(cmd, method, &url, Some(TOKEN), body, 30);
    (
        code,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

fn states(ns: &Netns) -> BTreeMap<String, String> {
    let (code, body) = curl(ns, "GET", "/v1/nodes", None);
    assert_eq!(code, 200, "{body}");
    body.as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_string(),
                n["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The machines' `[[netboot.nodes]]` reservations (appended after the last section).
fn reservations(nodes: &[FarmNode]) -> String {
    nodes
        .iter()
        .map(|n| {
            let ip = n.ip.expect("an address");
            format!("\n[[netboot.nodes]]\nmac = \"{}\"\nip = \"{ip}\"\n", n.mac)
        })
        .collect()
}

fn spawn_daemon(ns: &Netns, d: &std::path::Path) -> Child {
    let mut cmd = ns.cmd(tests::seed_bin());
    cmd.arg("daemon")
        .arg("--config")
        .arg(d.join("seed.toml"))
        .env("RUST_LOG", "info");
    let mut daemon = Child::spawn("seed-daemon", cmd);
    daemon.wait_for_log("HTTP listening", Duration::from_secs(120));
    daemon
}

fn wait(what: &str, daemon: &Child, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "{what}: not within 120 s\ndaemon log:\n{}",
            daemon.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn ha_restart_mid_deploy_continues_each_deploy() {
    tests::require("curl");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("http")).unwrap();
    import_golden(&d.join("http/images"), d);
    let ns = Netns::new("farm");
    let nodes: Vec<FarmNode> = (0..N)
        .map(|i| FarmNode {
            name: format!("n{i}"),
            mac: format!("52:54:00:fa:00:{i:02x}"),
            bmc: format!("127.0.0.1:{}", 6300 + i).parse().unwrap(),
            user: "admin".into(),
            password: format!("pw{i}"),
            cpus: 4,
            memory_mib: 8192,
            // Each machine's own address on loopback, reserved below: the daemon hands a
            // node's token only to a script asked from the node's address.
            ip: Some(std::net::Ipv4Addr::new(127, 0, 0, 10 + i as u8)),
        })
        .collect();
    let inv: String = nodes
        .iter()
        .map(|n| {
            format!(
                "  - name: {}\n    mac: [\"{}\"]\n    pm_type: ipmi\n    pm_addr: 127.0.0.1\n    \
                 pm_port: \"{}\"\n    pm_user: {}\n    pm_password: {}\n    \
                 capabilities: \"profile:compute\"\n    memory: 8192\n    disk: 40\n",
                n.name,
                n.mac,
                n.bmc.port(),
                n.user,
                n.password
            )
        })
        .collect();
    tests::import_nodes(&d.join("seed.redb"), &inv);
    let config = format!(
        r#"store = {store:?}

[api]
token = "{TOKEN}"
listen = "127.0.0.1:6385"

[agent]
heartbeat_secs = 1

[ramdisk]
kernel = {missing:?}
initrd = {missing:?}

[netboot]
server_ip = "127.0.0.1"
state_dir = {state:?}

[netboot.http]
root = {http:?}
port = {PORT}
"#,
        store = d.join("seed.redb"),
        missing = d.join("no-ramdisk"),
        state = d.join("state"),
        http = d.join("http"),
    ) + &reservations(&nodes);
    std::fs::write(d.join("seed.toml"), config).unwrap();

    let spec = FarmSpec {
        seed_url: format!("http://127.0.0.1:{PORT}"),
        nodes,
        boot_ms: 50,
        // Seven deploy phases of 400 ms: the kill lands while images are being written.
        step_ms: 400,
        tick_ms: 200,
    };
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
    let req = serde_json::json!({"name": "farm", "template": TEMPLATE}).to_string();
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
    let farm = tests::farm::read_status(&status);
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
