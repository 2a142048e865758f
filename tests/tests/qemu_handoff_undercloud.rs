//! The hand-off on a real machine (issue 15): a seed that became the first member of an HA
//! control plane with `seed ha init` deploys `seed/templates/undercloud.yaml` (one member) with
//! the `undercloud` golden image onto a QEMU node — real firmware, iPXE, the deploy ramdisk,
//! IPMI through the lab's virtual BMC — and the machine becomes a member by itself: seed-config
//! renders its daemon's config from the metadata, its daemon has its etcd member added through
//! the seed's API, the leader promotes it, its daemon campaigns, and only then does its
//! deployment signal (CREATE_COMPLETE). Then `seed handoff`: the seed leaves, and the machine
//! answers the operator's API at the floating address with the same node, still `active`; and
//! it deploys the overcloud (one controller of lab-overcloud.yaml) on the second machine, which
//! it inspects itself, through that machine's BMC, with the image it replicated from the seed.
//!
//! The seed runs in the namespace of a test switch (a bridge) with its kernel stack on the
//! bridge; the nodes' NICs are TAP ports of that bridge (QEMU and the lab's BMCs live in that
//! namespace too; the BMCs are relayed to the seed host's address, the management network the
//! undercloud also reaches). Nothing touches the host's interfaces.

use qemu::node::RunOptions;
use qemu::Lab;
use std::path::Path;
use std::time::{Duration, Instant};
use tests::netns::Switch;
use tests::proc::Child;

const TOKEN: &str = "handoff-undercloud-operator-token";
const SEED_IP: &str = "10.80.0.2";
const FLOAT: &str = "10.80.0.1";

/// The API at `at`: (status, body), or (0, what curl said) when nothing answered — said on
/// stderr too, so a machine that went away mid-poll shows when; the poll's deadline then fails
/// with the consoles beside it.
fn api(sw: &Switch, at: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let cmd = sw.ns.cmd(tests::require("curl"));
    let url = format!("http://{at}:6385{path}");
    tests::try_curl(cmd, method, &url, Some(TOKEN), body, 30).unwrap_or_else(|e| {
        eprintln!("no answer: {e}");
        (0, e)
    })
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or(serde_json::Value::Null)
}

/// The lab's seed config, on the bridge's kernel stack instead of the lab's wire, its API on
/// every address of the namespace.
fn bridge_config(wire_config: &str) -> String {
    let mut out = String::new();
    let mut skip = false;
    for line in wire_config.lines() {
        if line.starts_with('[') {
            skip = line.trim() == "[netboot.wire]";
        }
        if skip {
            continue;
        }
        if line.starts_with("listen = ") {
            out += "listen = \"0.0.0.0:6385\"\n";
            continue;
        }
        out += line;
        out += "\n";
        if line.starts_with("server_ip = ") {
            out += "interface = \"br0\"\n";
        }
    }
    out
}

/// The DHCP OFFERs and ACKs in `pcap`: (time, source MAC, xid, message type).
fn dhcp_replies(pcap: &Path) -> Vec<(f64, String, String, String)> {
    let out = std::process::Command::new(tests::require("tshark"))
        .arg("-r")
        .arg(pcap)
        .args(["-Y", "dhcp.option.dhcp == 2 || dhcp.option.dhcp == 5"])
        .args(["-T", "fields", "-e", "frame.time_epoch", "-e", "eth.src"])
        .args(["-e", "dhcp.id", "-e", "dhcp.option.dhcp"])
        .output()
        .unwrap();
    assert!(out.status.success(), "tshark: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Some((
                f.first()?.parse().ok()?,
                f.get(1)?.to_lowercase(),
                f.get(2)?.to_string(),
                f.get(3)?.to_string(),
            ))
        })
        .collect()
}

/// Inspect `node` through the daemon at `at` and wait until it is available.
fn inspect(sw: &Switch, at: &str, node: &str, context: impl Fn() -> String) {
    let (code, body) = api(sw, at, "POST", &format!("/v1/nodes/{node}/inspect"), None);
    assert!(code == 202 || code == 200, "{code} {body}");
    tests::daemon::wait(
        &format!("{node} available"),
        Duration::from_secs(240),
        || {
            api(sw, at, "GET", &format!("/v1/nodes/{node}"), None)
                .1
                .contains("\"available\"")
        },
        context,
    );
}

/// Create stack `name` from the repository's `template` with `params` at the daemon at `at`,
/// and wait (bounded by `within`) for CREATE_COMPLETE; CREATE_FAILED fails at once.
fn create_stack(
    sw: &Switch,
    at: &str,
    name: &str,
    template: &str,
    params: serde_json::Value,
    within: Duration,
    context: impl Fn() -> String,
) {
    let template = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(template),
    )
    .unwrap();
    let req = serde_json::json!({"name": name, "template": template, "params": params});
    let (code, body) = api(sw, at, "POST", "/v1/stacks", Some(&req.to_string()));
    assert_eq!(code, 201, "{body}");
    tests::daemon::wait(
        &format!("the {name} stack CREATE_COMPLETE"),
        within,
        || {
            let v = json(&api(sw, at, "GET", &format!("/v1/stacks/{name}"), None).1);
            assert_ne!(v["status"], "CREATE_FAILED", "{v}");
            v["status"] == "CREATE_COMPLETE"
        },
        context,
    );
}

/// One DHCP server at a time: every answer in `replies` from the seed (`seed_mac`) no later than
/// it exited, or from the undercloud (`uc_mac`) no earlier than it was asked to take over; no
/// exchange answered by two; both answered some. Returns how many each did.
fn one_dhcp_server_at_a_time(
    replies: &[(f64, String, String, String)],
    (seed_mac, exited): (&str, f64),
    (uc_mac, asked): (&str, f64),
) -> (usize, usize) {
    let mut by_exchange: std::collections::BTreeMap<_, std::collections::BTreeSet<_>> =
        Default::default();
    let (mut from_seed, mut from_uc) = (0, 0);
    for (t, src, xid, ty) in replies {
        if src == seed_mac {
            assert!(
                *t <= exited,
                "the seed answered DHCP after it left: {replies:?}"
            );
            from_seed += 1;
        } else if src == uc_mac {
            assert!(
                *t >= asked,
                "the undercloud answered DHCP while the seed led: {replies:?}"
            );
            from_uc += 1;
        } else {
            panic!("a DHCP answer from {src}, neither the seed nor the undercloud: {replies:?}");
        }
        by_exchange.entry((xid, ty)).or_default().insert(src);
    }
    assert!(from_seed > 0 && from_uc > 0, "{replies:?}");
    assert!(
        by_exchange.values().all(|w| w.len() == 1),
        "two servers answered one exchange: {by_exchange:?}"
    );
    (from_seed, from_uc)
}

/// The two machines on the switch: a lab created from a thread living in the switch's
/// namespace (its BMCs answer on that namespace's loopback, and the QEMU they start opens
/// tap0/tap1 there), and the BMCs on the management network — reached at the seed host's
/// address, relayed to the lab's, by the seed and by the undercloud machine alike. Dropping it
/// stops the relays and the lab.
struct SwitchLab {
    file: qemu::spec::LabFile,
    consoles: Vec<std::path::PathBuf>,
    /// The nodes as enrolled: BMCs at their relayed address.
    specs: Vec<qemu::spec::NodeSpec>,
    stop_lab: Option<std::sync::mpsc::Sender<()>>,
    lab_thread: Option<std::thread::JoinHandle<()>>,
    stop_relays: std::sync::Arc<std::sync::atomic::AtomicBool>,
    relays: Vec<std::thread::JoinHandle<()>>,
}

impl SwitchLab {
    fn start(sw: &Switch, dir: &Path) -> SwitchLab {
        let (lab_tx, lab_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let (sw_name, lab_dir) = (sw.ns.name.clone(), dir.to_path_buf());
        let lab_thread = std::thread::spawn(move || {
            tests::netns::enter(&sw_name);
            let mut plan = tests::test_plan("ho", 2, 768, &[3]);
            plan.bmc_network = false;
            let lab = Lab::create(&lab_dir, &plan, RunOptions::default()).expect("lab");
            let mut consoles = Vec::new();
            for (i, n) in ["node1", "node2"].iter().enumerate() {
                let node = lab.node(n).unwrap();
                node.lock().unwrap().set_taps(vec![format!("tap{i}")]);
                consoles.push(node.lock().unwrap().console_path());
            }
            lab_tx.send((lab.file().clone(), consoles)).unwrap();
            let _ = stop_rx.recv();
            drop(lab);
        });
        let (file, consoles) = lab_rx.recv().unwrap();
        let stop_relays = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut specs = file.nodes.clone();
        let mut relays = Vec::new();
        for s in &mut specs {
            let listen = std::net::SocketAddrV4::new(SEED_IP.parse().unwrap(), s.bmc.port);
            let target = std::net::SocketAddrV4::new(s.bmc.address, s.bmc.port);
            relays.push(tests::netns::udp_relay(
                &sw.ns.name,
                listen,
                target,
                stop_relays.clone(),
            ));
            s.bmc.address = *listen.ip();
        }
        SwitchLab {
            file,
            consoles,
            specs,
            stop_lab: Some(stop_tx),
            lab_thread: Some(lab_thread),
            stop_relays,
            relays,
        }
    }
}

impl Drop for SwitchLab {
    fn drop(&mut self) {
        self.stop_relays
            .store(true, std::sync::atomic::Ordering::Relaxed);
        for r in self.relays.drain(..) {
            let _ = r.join();
        }
        drop(self.stop_lab.take());
        if let Some(t) = self.lab_thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn qemu_handoff_undercloud_member_joins_from_its_metadata_and_takes_over() {
    tests::require("qemu-system-x86_64");
    tests::require("curl");
    let manifest = tests::built_image("undercloud").join("manifest.json");
    let t0 = Instant::now();
    let phase = |what: &str| eprintln!("[{:>6.1}s] {what}", t0.elapsed().as_secs_f64());
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let sw = Switch::new();
    sw.tap("tap0");
    sw.tap("tap1");
    sw.ns
        .ip(&["addr", "add", &format!("{SEED_IP}/24"), "dev", "br0"]);
    // Every DHCP datagram on the switch, to see who answered when.
    let pcap = d.join("dhcp.pcap");
    let mut cap = sw.ns.cmd(tests::require("tshark"));
    cap.args(["-i", "br0", "-f", "udp port 67 or udp port 68", "-w"])
        .arg(&pcap);
    let mut capture = Child::spawn("tshark", cap);
    capture.wait_for_log("Capturing on", Duration::from_secs(30));

    let lab = SwitchLab::start(&sw, &d.join("lab"));
    let (file, consoles, specs) = (&lab.file, &lab.consoles, &lab.specs);

    // The seed: the lab's configuration on the bridge, its one node enrolled, the image stored.
    let sdir = d.join("seed");
    std::fs::create_dir_all(&sdir).unwrap();
    let mut ws = tests::wire_seed::config(&sdir, file, specs.clone(), TOKEN);
    ws.api_port = 6385;
    // Leases of a minute: the undercloud machine's own, from the seed, runs out while it
    // deploys the overcloud (its member stops renewing it: the address is static once it runs).
    ws.lease_secs = Some(60);
    tests::wire_seed::enroll(&ws, &[]);
    let store = images::ImageStore::open(ws.images()).unwrap();
    store
        .import(&manifest)
        .expect("importing the undercloud image");
    store
        .import(&tests::tiny_manifest())
        .expect("importing the tiny image");
    std::fs::create_dir_all(sdir.join("http")).unwrap();
    let config = sdir.join("seed.toml");
    std::fs::write(&config, bridge_config(&ws.config().unwrap())).unwrap();

    // The seed becomes the first member of the control plane: `seed ha init`.
    let out = sw
        .ns
        .cmd(tests::seed_bin())
        .args(["ha", "init", "--config"])
        .arg(&config)
        .args(["--name", "seed"])
        .args(["--client-url", &format!("http://{SEED_IP}:2379")])
        .args(["--peer-url", &format!("http://{SEED_IP}:2380")])
        .args(["--advertise", &format!("http://{SEED_IP}:6385")])
        .args(["--floating-address", &format!("{FLOAT}/24")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", tests::printed(&out));
    phase("seed ha init");

    let mut cmd = sw.ns.cmd(tests::seed_bin());
    cmd.args(["daemon", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info,seed::power=debug");
    let mut seed = Child::spawn("seed-daemon", cmd);
    seed.wait_for_log("HTTP listening", Duration::from_secs(60));
    let logs = |seed: &Child| format!("---- seed ----\n{}", seed.output());
    tests::daemon::wait(
        "the seed holds the floating address",
        Duration::from_secs(30),
        || api(&sw, FLOAT, "GET", "/v1/nodes", None).0 == 200,
        || logs(&seed),
    );

    inspect(&sw, SEED_IP, "node1", || logs(&seed));
    phase("node1 inspected");

    let console = || std::fs::read_to_string(&consoles[0]).unwrap_or_default();
    create_stack(
        &sw,
        SEED_IP,
        "undercloud",
        "seed/templates/undercloud.yaml",
        serde_json::json!({
            "member_count": "1",
            "join": format!("http://{SEED_IP}:6385"),
            "endpoints": format!("http://{SEED_IP}:2379"),
            "api_token": TOKEN,
            "server_ip": FLOAT,
            "floating_address": format!("{FLOAT}/24"),
            "subnet": "10.80.0.0/24",
            "pool_start": "10.80.0.200",
            "pool_end": "10.80.0.250",
        }),
        Duration::from_secs(360),
        || format!("{}\n---- node1 console ----\n{}", logs(&seed), console()),
    );
    phase("undercloud stack complete: node1 is a member");
    let c = console();
    for line in [
        "seed-image: undercloud",
        "seed-undercloud: starting the seed daemon of node1 at 10.80.0.10",
        "seed-undercloud: node1 votes and campaigns",
        "seed-undercloud: address 10.80.0.10/24 static from now on",
    ] {
        assert!(c.contains(line), "no {line:?} on node1's console:\n{c}");
    }

    let (_, m) = api(&sw, SEED_IP, "GET", "/v1/ha/members", None);
    let m = json(&m);
    let members = m["members"].as_array().cloned().unwrap_or_default();
    assert_eq!(members.len(), 2, "{m}");
    assert!(members.iter().all(|v| v["learner"] == false), "{m}");
    assert!(
        members
            .iter()
            .any(|v| v["name"] == "node1" && v["peer_urls"][0] == "http://10.80.0.10:2380"),
        "{m}"
    );
    let daemons = m["daemons"].as_array().cloned().unwrap_or_default();
    assert_eq!(daemons.len(), 2, "{m}");

    // The hand-off: asked again while a check is still settling (bounded).
    let asked = std::time::SystemTime::now();
    let t = Instant::now();
    loop {
        let (code, body) = api(&sw, SEED_IP, "POST", "/v1/ha/handoff", None);
        if code == 202 || code == 200 {
            break;
        }
        assert_eq!(code, 409, "{body}");
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "hand-off refused: {body}\n{}",
            logs(&seed)
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    let status = seed.wait_exit(Duration::from_secs(120));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", logs(&seed));
    let exited = std::time::SystemTime::now();
    phase("the seed handed over and exited");

    // The machine answers at the floating address now: the same node, still active.
    tests::daemon::wait(
        "the undercloud answers at the floating address",
        Duration::from_secs(120),
        || {
            let (code, body) = api(&sw, FLOAT, "GET", "/v1/nodes/node1", None);
            code == 200 && body.contains("\"active\"")
        },
        || format!("---- node1 console ----\n{}", console()),
    );
    let (_, m) = api(&sw, FLOAT, "GET", "/v1/ha/members", None);
    let m = json(&m);
    assert_eq!(m["members"].as_array().map(Vec::len), Some(1), "{m}");
    assert_eq!(m["members"][0]["name"], "node1", "{m}");
    phase("the undercloud leads");

    // The undercloud deploys the overcloud: node2 inspected and deployed by the machine the
    // seed deployed (its DHCP, its ramdisk, the image it replicated, its BMC driver).
    let console2 = || std::fs::read_to_string(&consoles[1]).unwrap_or_default();
    let both = || {
        format!(
            "---- node1 ----\n{}\n---- node2 ----\n{}",
            console(),
            console2()
        )
    };
    inspect(&sw, FLOAT, "node2", both);
    phase("node2 inspected by the undercloud");
    create_stack(
        &sw,
        FLOAT,
        "overcloud",
        "seed/tests/templates/lab-overcloud.yaml",
        serde_json::json!({"compute_count": "0", "greeting": "deployed by the undercloud"}),
        Duration::from_secs(300),
        both,
    );
    let c2 = console2();
    assert!(
        c2.contains("seed-demo: greeting = deployed by the undercloud"),
        "{c2}"
    );
    assert!(c2.contains("seed-demo: node = node2"), "{c2}");
    phase("the overcloud deployed by the undercloud");

    // One DHCP server at a time: the seed until it left, the undercloud machine after it was
    // asked to take over, never both for one exchange.
    // SAFETY: kill(2) on the capture's own pid.
    unsafe { libc::kill(capture.id() as i32, libc::SIGINT) };
    assert!(capture.wait_exit(Duration::from_secs(20)).is_some());
    let out = sw
        .ns
        .cmd("cat")
        .arg("/sys/class/net/br0/address")
        .output()
        .unwrap();
    let seed_mac = String::from_utf8_lossy(&out.stdout).trim().to_lowercase();
    let uc_mac = specs[0].macs[0].to_lowercase();
    let replies = dhcp_replies(&pcap);
    let secs = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let (from_seed, from_uc) =
        one_dhcp_server_at_a_time(&replies, (&seed_mac, secs(exited)), (&uc_mac, secs(asked)));
    eprintln!("DHCP answers: {from_seed} by the seed, then {from_uc} by the undercloud");

    drop(lab);
}
