//! A QEMU node inspected across a leader failover on the wire (issue 14).
//!
//! One LAN (a bridge in a switch namespace): two `seed daemon`s on hosts `a` and `b` sharing
//! one etcd member on host `e`, the floating provisioning address held by the leader, and a
//! QEMU node (real SeaBIOS and iPXE ROM) whose NIC is a TAP on the bridge and whose virtual BMC
//! listens on the switch's own address. The link toward the node is slowed (tbf) so the
//! kernel's download takes seconds.
//!
//! The leader powers the node on; as soon as it has served the node's iPXE script the test
//! `kill -9`s it (and drops the address from its NIC, as a crashed machine would). The next
//! leader claims the floating address (gratuitous ARP); the node's kernel fetch fails, its
//! script waits and fetches again from the same address — now the new leader — and the ramdisk
//! inspects the node through it. Proof: the node ends `available`, the new leader served the
//! kernel and the initrd but never the script (the node was not power-cycled: its first boot
//! went on), and the boot watchdog is far longer than the test, so only the retry can succeed.
//! Needs `cargo xtask ramdisk` and etcd from the offline cache.

use qemu::node::RunOptions;
use qemu::spec::Plan;
use qemu::Lab;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};
use tests::daemon::wait;
use tests::ha::{etcd_specs, in_netns, start_member, Api, Host, Switch, API, HTTP};
use tests::proc::Child;

const TOKEN: &str = "ha-qemu-failover-token";
/// The node's address (its reservation) on the LAN.
const NODE_HOST: u8 = 40;

fn config(i: usize, host: &Host, float: Ipv4Addr, endpoint: &str, mac: &str, d: &Path) -> String {
    let o = float.octets();
    let net = |h: u8| Ipv4Addr::new(o[0], o[1], o[2], h);
    let ramdisk = tests::ramdisk_dir();
    format!(
        r#"[store]
backend = "etcd"
endpoints = ["{endpoint}"]
name = "seed-{i}"
lease_ttl_secs = 3
timeout_secs = 2
advertise = "http://{ip}:{API}"
floating_address = "{float}/24"

[api]
token = "{TOKEN}"
listen = "0.0.0.0:{API}"
tls = "off"

[agent]
heartbeat_secs = 2

# Far longer than the test: a node that is not through by then failed the test.
[lifecycle]
boot_timeout_secs = 900

[ramdisk]
kernel = {kernel:?}
initrd = {initrd:?}

[netboot]
server_ip = "{float}"
interface = "eth0"
state_dir = {state:?}

[netboot.dhcp]
subnet = "{subnet}/24"
router = "{float}"
pool = {{ start = "{pool_start}", end = "{pool_end}" }}

[netboot.http]
root = {http:?}
port = {HTTP}

[[netboot.nodes]]
mac = "{mac}"
ip = "{node_ip}"
hostname = "node1"
"#,
        ip = host.ip,
        kernel = ramdisk.join("vmlinuz"),
        initrd = ramdisk.join("initramfs.zst"),
        state = d.join("state"),
        subnet = net(0),
        pool_start = net(200),
        pool_end = net(220),
        http = d.join("http"),
        node_ip = net(NODE_HOST),
    )
}

fn start(host: &Host, dir: &Path) -> Child {
    let mut cmd = host.ns.cmd(tests::seed_bin());
    cmd.arg("daemon")
        .arg("--config")
        .arg(dir.join("seed.toml"))
        .env("RUST_LOG", "info,netboot=debug");
    let mut c = Child::spawn(&format!("seed-{}", host.ns.name), cmd);
    c.wait_for_log("HTTP listening", Duration::from_secs(120));
    c
}

/// The daemon's HTTP boot server lines for paths containing `path` with status 200.
fn served(log: &str, path: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("HTTP request") && l.contains(path) && l.contains("status=200"))
        .count()
}

#[test]
fn ha_qemu_node_inspected_across_a_leader_failover() {
    tests::require("qemu-system-x86_64");
    tests::require("curl");
    let t0 = Instant::now();
    let sw = Switch::new();
    let hosts = [sw.attach("qa", 11), sw.attach("qb", 12)];
    let etcd_host = sw.attach("qe", 13);
    let o = sw.net.octets();
    let float = Ipv4Addr::new(o[0], o[1], o[2], 100);
    let bmc_ip = Ipv4Addr::new(o[0], o[1], o[2], 250);
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();

    // The switch's own address (the BMCs live there) and the node's TAP, slowed toward it.
    sw.ns
        .ip(&["addr", "add", &format!("{bmc_ip}/24"), "dev", "br0"]);
    sw.ns.ip(&["tuntap", "add", "dev", "tap0", "mode", "tap"]);
    sw.ns.ip(&["link", "set", "tap0", "master", "br0"]);
    sw.ns.ip(&["link", "set", "tap0", "up"]);
    let tc = |args: &[&str]| {
        let st = sw.ns.cmd("tc").args(args).status().unwrap();
        assert!(st.success(), "tc {args:?}");
    };
    tc(&[
        "qdisc", "add", "dev", "tap0", "root", "tbf", "rate", "4mbit", "burst", "16kb", "latency",
        "500ms",
    ]);

    // The lab: one node, its BMC on the switch's address, QEMU (started by the BMC's thread
    // inside the switch namespace) on tap0.
    let mut plan = Plan::new(&format!("haq{}", std::process::id()), 1);
    plan.memory_mib = 512;
    plan.disks_gib = vec![2];
    plan.bmc_base_port = 0;
    plan.bmc_network = false;
    let mut file = plan.lab_file();
    file.nodes[0].bmc.address = bmc_ip;
    let lab_dir = d.join("lab");
    let lab = std::thread::scope(|s| {
        s.spawn(|| {
            sw.ns.enter();
            Lab::start(&lab_dir, file, RunOptions::default()).expect("lab")
        })
        .join()
        .unwrap()
    });
    let spec = lab.file().nodes[0].clone();
    let node = lab.node("node1").unwrap().clone();
    node.lock().unwrap().set_taps(vec!["tap0".into()]);
    let mac = spec.macs[0].clone();

    // etcd, then the two daemons.
    let specs = etcd_specs(&[&etcd_host], d);
    let _etcd = start_member(&etcd_host, &specs[0], d);
    let endpoint = specs[0].client_url.clone();
    let mut cfg = seed::store::etcd::EtcdConfig::new(vec![endpoint.clone()]);
    cfg.timeout = Duration::from_secs(2);
    let ready = in_netns(&etcd_host.ns, move || {
        let s = seed::store::etcd::EtcdStore::connect(&cfg).unwrap();
        seed::store::etcd::member::wait_ready(&s, Duration::from_secs(30)).is_ok()
    });
    assert!(ready, "etcd takes writes");
    let mut seeds: Vec<Option<Child>> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let sd = d.join(format!("seed{i}"));
            std::fs::create_dir_all(sd.join("http")).unwrap();
            std::fs::write(
                sd.join("seed.toml"),
                config(i, h, float, &endpoint, &mac, &sd),
            )
            .unwrap();
            Some(start(h, &sd))
        })
        .collect();
    let logs = |seeds: &[Option<Child>]| -> String {
        let console =
            std::fs::read_to_string(node.lock().unwrap().console_path()).unwrap_or_default();
        seeds
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let out = s.as_ref().map(Child::output).unwrap_or_default();
                format!("---- seed{i} ----\n{out}\n")
            })
            .collect::<String>()
            + &format!("---- console ----\n{console}")
    };
    let leader = || (0..2).find(|&i| hosts[i].holds(float));
    wait(
        "a leader holds the floating address",
        Duration::from_secs(60),
        || leader().is_some(),
        || logs(&seeds),
    );
    let l = leader().unwrap();
    let f = 1 - l;
    eprintln!("two daemons up, seed{l} leads: {:?}", t0.elapsed());

    let api = Api {
        from: &etcd_host,
        token: TOKEN,
    };
    // Enroll the node through the follower (it forwards), inspect through the leader.
    let inv = serde_json::json!({"nodes": [{
        "name": "node1",
        "mac": [mac],
        "pm_type": "ipmi",
        "pm_addr": bmc_ip.to_string(),
        "pm_port": spec.bmc.port.to_string(),
        "pm_user": spec.bmc.username,
        "pm_password": spec.bmc.password,
    }]})
    .to_string();
    let (code, body) = api.call(hosts[f].ip, "POST", "/v1/nodes", Some(&inv));
    assert_eq!(code, 201, "{body}");
    let t_inspect = Instant::now();
    let (code, body) = api.call(float, "POST", "/v1/nodes/node1/inspect", None);
    assert_eq!(code, 202, "{body}");

    // The leader hands the node its script; then the leader dies mid-kernel-download.
    let script = format!("/ipxe/{}", mac.replace(':', "-"));
    wait(
        "the leader served the node's iPXE script",
        Duration::from_secs(180),
        || served(&seeds[l].as_ref().unwrap().output(), &script) > 0,
        || logs(&seeds),
    );
    let t_script = t_inspect.elapsed();
    let dead = seeds[l].take().unwrap();
    let dead_log = dead.output();
    // SAFETY: kill(2) on our own child's pid (`ip netns exec` execs the daemon in place).
    assert_eq!(unsafe { libc::kill(dead.id() as i32, libc::SIGKILL) }, 0);
    drop(dead);
    hosts[l]
        .ns
        .ip(&["addr", "del", &format!("{float}/24"), "dev", "eth0"]);
    let killed = Instant::now();
    assert_eq!(
        served(&dead_log, "initramfs"),
        0,
        "the initrd was through before the kill: nothing left to retry\n{dead_log}"
    );
    wait(
        "the follower takes the floating address",
        Duration::from_secs(60),
        || hosts[f].holds(float),
        || logs(&seeds),
    );
    let t_takeover = killed.elapsed();
    // The slow link has done its work: the retry runs at full speed.
    tc(&["qdisc", "del", "dev", "tap0", "root"]);

    let state = || {
        let (code, body) = api.call(float, "GET", "/v1/nodes/node1", None);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        (code, v["state"].as_str().unwrap_or_default().to_string())
    };
    wait(
        "node1 inspected through the new leader",
        Duration::from_secs(420),
        || {
            let (code, s) = state();
            assert!(!s.contains("fail"), "node1 {s} ({code})\n{}", logs(&seeds));
            s == "available"
        },
        || logs(&seeds),
    );
    let t_done = killed.elapsed();
    let new_log = seeds[f].as_ref().unwrap().output();
    assert!(
        served(&new_log, "vmlinuz") >= 1 && served(&new_log, "initramfs") >= 1,
        "the new leader served the kernel and initrd:\n{new_log}"
    );
    assert_eq!(
        served(&new_log, &script),
        0,
        "the node asked the new leader for its script again (power-cycled?):\n{new_log}"
    );
    let (_, n) = api.json(float, "GET", "/v1/nodes/node1", None);
    // Nothing was declared at enrollment: the disk's size comes from the ramdisk's report.
    assert_eq!(
        n["properties"]["disks"][0]["size_bytes"].as_u64(),
        Some(2 << 30),
        "the node's 2 GiB disk, as the real ramdisk found it: {n}"
    );
    println!(
        "ha_qemu: inspect → script served {:.1} s; leader killed → address taken over {:.1} s; \
         → node inspected {:.1} s (total {:.1} s)",
        t_script.as_secs_f64(),
        t_takeover.as_secs_f64(),
        t_done.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    drop(seeds);
    drop(lab);
}
