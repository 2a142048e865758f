//! The HA control plane with daemons and machines (issue 14): three `seed daemon`s in three
//! network namespaces on one LAN (a bridge), an etcd member beside each (Debian's etcd from the
//! offline cache), and a farm of 50 fake machines in a fourth namespace (`seed-fake-farm`: IPMI
//! BMCs on UDP, agents over HTTP, see `tests::farm`) that reach the seed at the floating
//! address only the leader holds. Operators' requests go to any daemon (followers forward
//! writes). A stack of 50 nodes deploys while:
//! - the leader is `kill -9`ed (and started again, as a follower);
//! - the next leader is `SIGSTOP`ped for three lease TTLs and then `SIGCONT`ed (the zombie);
//! - the next leader's cable is pulled at the switch for three TTLs and plugged back.
//!
//! After each a new leader takes over (the floating address moves) and the deploy goes on. At
//! the end: every node `active`, each machine got exactly one deploy command and finished
//! exactly one deploy (no deploy started over by a failover), the stack is CREATE_COMPLETE, and
//! the writes the deposed leaders tried are printed (`/metrics`: fenced by etcd, or refused
//! before they left; a deposed leader stops acting once its lease is older than the TTL, so
//! both are usually 0 here — `ha_control_plane` and `seed::ha` prove a fenced write refused). Every wait is bounded; no duration is asserted (`cargo xtask bench
//! failover` measures).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tests::farm::{FarmNode, FarmSpec};
use tests::ha::{etcd_specs, in_netns, start_member, Host, Switch};
use tests::proc::Child;

const TOKEN: &str = "ha-farm-token";
const HTTP: u16 = 8080;
const API: u16 = 6385;
const N: usize = 50;
const TTL: u64 = 2;

fn template() -> String {
    format!(
        "heat_template_version: wallaby
resources:
  servers:
    type: OS::Heat::ResourceGroup
    properties:
      count: {N}
      resource_def:
        type: OS::Seed::Server
        properties: {{image: golden, profile: compute}}
"
    )
}

fn import_golden(store: &Path, work: &Path) {
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

/// One daemon: its host, directory and process (None while killed).
struct Seed<'a> {
    host: &'a Host,
    dir: PathBuf,
    child: Option<Child>,
}

impl Seed<'_> {
    fn start(&mut self) {
        let mut cmd = self.host.ns.cmd(tests::seed_bin());
        cmd.arg("daemon")
            .arg("--config")
            .arg(self.dir.join("seed.toml"))
            .env("RUST_LOG", "info");
        let mut c = Child::spawn(&format!("seed-{}", self.host.ns.name), cmd);
        c.wait_for_log("HTTP listening", Duration::from_secs(120));
        self.child = Some(c);
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid (`ip netns exec` execs the daemon in place).
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
    }

    /// Whether this host holds the floating address.
    fn holds(&self, float: Ipv4Addr) -> bool {
        let out = self
            .host
            .ns
            .cmd("ip")
            .args(["-4", "-o", "addr", "show", "dev", "eth0"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(&format!("inet {float}/"))
    }

    fn log(&self) -> String {
        self.child.as_ref().map(Child::output).unwrap_or_default()
    }
}

fn config(i: usize, host: &Host, float: Ipv4Addr, endpoints: &[String], d: &Path) -> String {
    format!(
        r#"[store]
backend = "etcd"
endpoints = {endpoints:?}
name = "seed-{i}"
lease_ttl_secs = {TTL}
timeout_secs = 2
advertise = "http://{ip}:{API}"
floating_address = "{float}/24"

[api]
token = "{TOKEN}"
listen = "0.0.0.0:{API}"

[agent]
heartbeat_secs = 1

# A node whose power-on died with a leader is power-cycled by the next one's boot watchdog.
[lifecycle]
boot_timeout_secs = 15

[ramdisk]
kernel = {missing:?}
initrd = {missing:?}

[netboot]
server_ip = "{float}"
interface = "eth0"
state_dir = {state:?}

[netboot.http]
root = {http:?}
port = {HTTP}
"#,
        ip = host.ip,
        missing = d.join("no-ramdisk"),
        state = d.join("state"),
        http = d.join("http"),
    )
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

struct Api<'a> {
    from: &'a Host,
}

impl Api<'_> {
    fn call(
        &self,
        at: Ipv4Addr,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let cmd = self.from.ns.cmd(tests::require("curl"));
        let url = format!("http://{at}:{API}{path}");
        let (code, text) = tests::curl(cmd, method, &url, Some(TOKEN), body, 30);
        (
            code,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    fn states(&self, at: Ipv4Addr) -> BTreeMap<String, String> {
        let (code, body) = self.call(at, "GET", "/v1/nodes", None);
        if code != 200 {
            return BTreeMap::new();
        }
        body.as_array()
            .map(|a| {
                a.iter()
                    .map(|n| {
                        (
                            n["name"].as_str().unwrap_or_default().to_string(),
                            n["state"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A counter of the daemon's `/metrics` (0 when absent or unreachable).
    fn metric(&self, at: Ipv4Addr, name: &str) -> u64 {
        let cmd = self.from.ns.cmd(tests::require("curl"));
        let (_, text) = tests::curl(
            cmd,
            "GET",
            &format!("http://{at}:{API}/metrics"),
            Some(TOKEN),
            None,
            10,
        );
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0)
    }
}

fn wait(what: &str, within: Duration, seeds: &[Seed], mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        if t.elapsed() > within {
            for s in seeds {
                eprintln!("---- {} ----\n{}", s.host.ns.name, s.log());
            }
            panic!("{what}: not within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The index of the daemon holding the floating address, once exactly one does.
fn leader(seeds: &[Seed], float: Ipv4Addr) -> Option<usize> {
    let holders: Vec<usize> = (0..seeds.len())
        .filter(|&i| seeds[i].child.is_some() && seeds[i].holds(float))
        .collect();
    (holders.len() == 1).then(|| holders[0])
}

#[test]
fn ha_farm_stack_survives_kill_pause_and_cut() {
    tests::require("curl");
    let t0 = Instant::now();
    let sw = Switch::new();
    let hosts = [
        sw.attach("h0", 11),
        sw.attach("h1", 12),
        sw.attach("h2", 13),
    ];
    let farm_host = sw.attach("farm", 30);
    let o = sw.net.octets();
    let float = Ipv4Addr::new(o[0], o[1], o[2], 100);
    // The machines (their reservations go into every daemon's configuration).
    let nodes: Vec<FarmNode> = (0..N)
        .map(|i| FarmNode {
            name: format!("n{i:02}"),
            mac: format!("52:54:00:fb:00:{i:02x}"),
            bmc: std::net::SocketAddr::from((farm_host.ip, 7000 + i as u16)),
            user: "admin".into(),
            password: format!("pw{i}"),
            cpus: 4,
            memory_mib: 8192,
            ip: Some(Ipv4Addr::new(o[0], o[1], o[2], 150 + i as u8)),
        })
        .collect();
    // Each machine's address on the farm's interface: the leader hands a node's agent token
    // only to a script asked from the address reserved for its MAC.
    for n in &nodes {
        let ip = format!("{}/24", n.ip.unwrap());
        farm_host.ns.ip(&["addr", "add", &ip, "dev", "eth0"]);
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let specs = etcd_specs(&hosts.iter().collect::<Vec<_>>(), d);
    let _members: Vec<_> = hosts
        .iter()
        .zip(&specs)
        .map(|(h, s)| start_member(h, s, d))
        .collect();
    let endpoints: Vec<String> = specs.iter().map(|s| s.client_url.clone()).collect();
    let mut cfg = seed::store::etcd::EtcdConfig::new(endpoints.clone());
    cfg.timeout = Duration::from_secs(2);
    let ready = in_netns(&farm_host.ns, move || {
        let s = seed::store::etcd::EtcdStore::connect(&cfg).unwrap();
        seed::store::etcd::member::wait_ready(&s, Duration::from_secs(30)).is_ok()
    });
    assert!(ready, "the etcd cluster takes writes");

    let mut seeds: Vec<Seed> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let sd = d.join(format!("seed{i}"));
            std::fs::create_dir_all(sd.join("http")).unwrap();
            import_golden(&sd.join("http/images"), &sd);
            std::fs::write(
                sd.join("seed.toml"),
                config(i, h, float, &endpoints, &sd) + &reservations(&nodes),
            )
            .unwrap();
            Seed {
                host: h,
                dir: sd,
                child: None,
            }
        })
        .collect();
    for s in &mut seeds {
        s.start();
    }
    wait(
        "a leader holds the floating address",
        Duration::from_secs(60),
        &seeds,
        || leader(&seeds, float).is_some(),
    );
    eprintln!("three daemons up, one leads: {:?}", t0.elapsed());

    // Their enrollment, through a daemon that may be a follower.
    let inv = serde_json::json!({
        "nodes": nodes
            .iter()
            .map(|n| serde_json::json!({
                "name": n.name,
                "mac": [n.mac],
                "pm_type": "ipmi",
                "pm_addr": farm_host.ip.to_string(),
                "pm_port": n.bmc.port().to_string(),
                "pm_user": n.user,
                "pm_password": n.password,
                "capabilities": "profile:compute",
                "memory": 8192,
                "disk": 40,
            }))
            .collect::<Vec<_>>()
    })
    .to_string();
    let api = Api { from: &farm_host };
    let addr = |i: usize| hosts[i].ip;
    let (code, body) = api.call(addr(0), "POST", "/v1/nodes", Some(&inv));
    assert_eq!(code, 201, "{body}");
    let spec = FarmSpec {
        seed_url: format!("http://{float}:{HTTP}"),
        nodes,
        boot_ms: 50,
        step_ms: 300,
        tick_ms: 200,
    };
    let (_farm, status) = tests::farm::spawn(
        farm_host.ns.cmd(env!("CARGO_BIN_EXE_seed-fake-farm")),
        &spec,
        d,
    );
    for i in 0..N {
        let (code, body) = api.call(
            addr(i % 3),
            "POST",
            &format!("/v1/nodes/n{i:02}/inspect"),
            None,
        );
        assert!(code == 202 || code == 200, "{code} {body}");
    }
    wait("all available", Duration::from_secs(120), &seeds, || {
        let st = api.states(addr(1));
        st.len() == N && st.values().all(|s| s == "available")
    });
    eprintln!("{N} nodes inspected: {:?}", t0.elapsed());

    let req = serde_json::json!({"name": "farm", "template": template()}).to_string();
    let (code, body) = api.call(addr(2), "POST", "/v1/stacks", Some(&req));
    assert_eq!(code, 201, "{body}");
    let done = || {
        tests::farm::read_status(&status)
            .values()
            .filter(|s| s.deploys_done > 0)
            .count()
    };
    let mut fenced = 0;
    let mut refused = 0;
    let mut count = |api: &Api, at: Ipv4Addr| {
        fenced += api.metric(at, "seed_ha_fenced_writes_rejected_total");
        refused += api.metric(at, "seed_ha_writes_refused_locally_total");
    };
    let _ = &mut count;

    // 1. kill -9 the leader mid-deploy; it comes back as a follower.
    wait(
        "deploys under way",
        Duration::from_secs(120),
        &seeds,
        || done() >= 5,
    );
    let l = leader(&seeds, float).expect("one leader");
    seeds[l].signal(libc::SIGKILL);
    drop(seeds[l].child.take());
    // Its address stays on the dead host's NIC (nobody removes it): as after a crash of the
    // machine, the next leader claims it with gratuitous ARP; here the test drops it.
    hosts[l]
        .ns
        .ip(&["addr", "del", &format!("{float}/24"), "dev", "eth0"]);
    let killed_at = Instant::now();
    let before = done();
    wait(
        "a new leader after kill -9",
        Duration::from_secs(60),
        &seeds,
        || leader(&seeds, float).is_some_and(|n| n != l),
    );
    eprintln!(
        "kill -9 of seed{l}: next leader after {:?}",
        killed_at.elapsed()
    );
    seeds[l].start();
    wait("deploys go on", Duration::from_secs(120), &seeds, || {
        done() >= before + 5
    });

    // 2. SIGSTOP the leader past its TTL, then SIGCONT: a zombie that must not write.
    let z = leader(&seeds, float).expect("one leader");
    seeds[z].signal(libc::SIGSTOP);
    let stopped_at = Instant::now();
    wait(
        "a new leader while the old one sleeps",
        Duration::from_secs(60),
        &seeds,
        || (0..3).any(|i| i != z && seeds[i].holds(float)),
    );
    eprintln!(
        "SIGSTOP of seed{z}: next leader after {:?}",
        stopped_at.elapsed()
    );
    std::thread::sleep(Duration::from_secs(TTL));
    seeds[z].signal(libc::SIGCONT);
    wait(
        "the zombie lets the address go",
        Duration::from_secs(30),
        &seeds,
        || !seeds[z].holds(float),
    );
    let before = done();
    wait("deploys go on", Duration::from_secs(120), &seeds, || {
        done() >= (before + 5).min(N)
    });

    // 3. Pull the leader's cable for three TTLs, plug it back.
    let c = leader(&seeds, float).expect("one leader");
    sw.link(&hosts[c], false);
    let cut_at = Instant::now();
    wait(
        "a new leader while one is cut off",
        Duration::from_secs(60),
        &seeds,
        || (0..3).any(|i| i != c && seeds[i].holds(float)),
    );
    eprintln!(
        "link cut of seed{c}: next leader after {:?}",
        cut_at.elapsed()
    );
    std::thread::sleep(Duration::from_secs(TTL));
    sw.link(&hosts[c], true);
    wait(
        "the cut-off one lets the address go",
        Duration::from_secs(30),
        &seeds,
        || !seeds[c].holds(float),
    );

    wait("CREATE_COMPLETE", Duration::from_secs(240), &seeds, || {
        let (_, s) = api.call(addr(c), "GET", "/v1/stacks/farm", None);
        assert_ne!(s["status"], "CREATE_FAILED", "{s}");
        s["status"] == "CREATE_COMPLETE"
    });
    eprintln!("stack complete: {:?}", t0.elapsed());
    let states = api.states(addr((c + 1) % 3));
    assert_eq!(states.len(), N);
    assert!(states.values().all(|s| s == "active"), "{states:?}");
    let farm = tests::farm::read_status(&status);
    assert_eq!(farm.len(), N);
    for (n, s) in &farm {
        assert_eq!(
            (s.deploy_commands, s.deploys_done),
            (1, 1),
            "{n}: one deploy command and one deploy, failovers or not: {s:?}"
        );
        assert!(s.image_boots_reported >= 1, "{n}: {s:?}");
    }
    for i in 0..3 {
        count(&api, addr(i));
    }
    eprintln!(
        "deposed leaders' writes: {fenced} fenced by etcd, {refused} refused before leaving; {:?}",
        t0.elapsed()
    );
    for s in &mut seeds {
        drop(s.child.take());
    }
}
