//! Quorum loss with daemons (issue 14): three `seed daemon`s in three network namespaces on one
//! LAN, an etcd member beside each, and four fake machines (`seed-fake-farm`: IPMI BMCs and
//! agents, see `tests::farm`) in a fourth namespace that reach the leader at the floating
//! address.
//!
//! - One etcd member killed (quorum kept): the daemons act — a node is inspected through the
//!   API of a daemon that may be a follower.
//! - A second member killed (quorum lost): every daemon stops acting and says why — API writes
//!   and reads are answered 503 naming the unavailable store (never a 500 or a hang), `/metrics`
//!   shows `seed_ha_store_available 0` and `seed_ha_leader 0` on all three, the logs say it; the
//!   refused inspect powers nothing on.
//! - Both members back: a leader exists again, the nodes are as they were (nothing corrupted, the
//!   refused inspect never happened), and the refused inspect, asked again, succeeds.
//!
//! Every wait is bounded; nothing asserts a duration.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tests::farm::{FarmNode, FarmSpec};
use tests::ha::{etcd_specs, in_netns, start_member, Host, Switch};
use tests::proc::Child;

const TOKEN: &str = "ha-quorum-token";
const HTTP: u16 = 8080;
const API: u16 = 6385;
const N: usize = 4;
const TTL: u64 = 2;

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

struct Seed<'a> {
    host: &'a Host,
    child: Child,
}

fn start(host: &Host, conf: &Path) -> Child {
    let mut cmd = host.ns.cmd(tests::seed_bin());
    cmd.arg("daemon")
        .arg("--config")
        .arg(conf)
        .env("RUST_LOG", "info");
    let mut c = Child::spawn(&format!("seed-{}", host.ns.name), cmd);
    c.wait_for_log("HTTP listening", Duration::from_secs(120));
    c
}

/// Operators' calls, from the farm's namespace.
struct Api<'a> {
    from: &'a Host,
}

impl Api<'_> {
    fn call(&self, at: Ipv4Addr, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let cmd = self.from.ns.cmd(tests::require("curl"));
        let url = format!("http://{at}:{API}{path}");
        tests::curl(cmd, method, &url, Some(TOKEN), body, 30)
    }

    fn states(&self, at: Ipv4Addr) -> Option<BTreeMap<String, String>> {
        let (code, body) = self.call(at, "GET", "/v1/nodes", None);
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (code == 200).then(|| {
            v.as_array()
                .into_iter()
                .flatten()
                .map(|n| {
                    (
                        n["name"].as_str().unwrap_or_default().to_string(),
                        n["state"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
    }

    /// A gauge or counter of `/metrics` (None when absent or unreachable).
    fn metric(&self, at: Ipv4Addr, name: &str) -> Option<u64> {
        let (_, text) = self.call(at, "GET", "/metrics", None);
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }
}

fn wait(what: &str, within: Duration, seeds: &[Seed], mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        if t.elapsed() > within {
            for s in seeds {
                eprintln!("---- {} ----\n{}", s.host.ns.name, s.child.output());
            }
            panic!("{what}: not within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn ha_quorum_lost_and_back() {
    tests::require("curl");
    let sw = Switch::new();
    let hosts = [
        sw.attach("h0", 11),
        sw.attach("h1", 12),
        sw.attach("h2", 13),
    ];
    let farm_host = sw.attach("farm", 30);
    let o = sw.net.octets();
    let float = Ipv4Addr::new(o[0], o[1], o[2], 100);
    let nodes: Vec<FarmNode> = (0..N)
        .map(|i| FarmNode {
            name: format!("q{i}"),
            mac: format!("52:54:00:fc:00:{i:02x}"),
            bmc: std::net::SocketAddr::from((farm_host.ip, 7100 + i as u16)),
            user: "admin".into(),
            password: format!("pw{i}"),
            cpus: 4,
            memory_mib: 8192,
            ip: Some(Ipv4Addr::new(o[0], o[1], o[2], 150 + i as u8)),
        })
        .collect();
    for n in &nodes {
        let ip = format!("{}/24", n.ip.unwrap());
        farm_host.ns.ip(&["addr", "add", &ip, "dev", "eth0"]);
    }
    let reservations: String = nodes
        .iter()
        .map(|n| {
            format!(
                "\n[[netboot.nodes]]\nmac = \"{}\"\nip = \"{}\"\n",
                n.mac,
                n.ip.unwrap()
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let specs = etcd_specs(&hosts.iter().collect::<Vec<_>>(), d);
    let mut members: Vec<_> = hosts
        .iter()
        .zip(&specs)
        .map(|(h, s)| Some(start_member(h, s, d)))
        .collect();
    let endpoints: Vec<String> = specs.iter().map(|s| s.client_url.clone()).collect();
    let mut cfg = seed::store::etcd::EtcdConfig::new(endpoints.clone());
    cfg.timeout = Duration::from_secs(2);
    let ready = in_netns(&farm_host.ns, move || {
        let s = seed::store::etcd::EtcdStore::connect(&cfg).unwrap();
        seed::store::etcd::member::wait_ready(&s, Duration::from_secs(30)).is_ok()
    });
    assert!(ready, "the etcd cluster takes writes");

    let seeds: Vec<Seed> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let sd: PathBuf = d.join(format!("seed{i}"));
            std::fs::create_dir_all(sd.join("http")).unwrap();
            let conf = sd.join("seed.toml");
            std::fs::write(&conf, config(i, h, float, &endpoints, &sd) + &reservations).unwrap();
            Seed {
                host: h,
                child: start(h, &conf),
            }
        })
        .collect();
    let api = Api { from: &farm_host };
    let addr = |i: usize| hosts[i].ip;
    let leaders = |api: &Api| -> usize {
        (0..3)
            .filter(|&i| api.metric(addr(i), "seed_ha_leader") == Some(1))
            .count()
    };
    let long = Duration::from_secs(90);
    wait("one leader", long, &seeds, || leaders(&api) == 1);

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
    let inspect = |at: usize, node: &str| {
        api.call(addr(at), "POST", &format!("/v1/nodes/{node}/inspect"), None)
    };
    let state_of = |node: &str| -> Option<String> {
        (0..3).find_map(|i| api.states(addr(i))?.get(node).cloned())
    };

    // 1. One member down (quorum kept): a node action through a daemon succeeds.
    members[0].take().unwrap().kill();
    wait("q0 inspect accepted", long, &seeds, || {
        let (code, _) = inspect(1, "q0");
        code == 202 || code == 200
    });
    wait("q0 available", long, &seeds, || {
        state_of("q0").as_deref() == Some("available")
    });
    eprintln!("one etcd member down: q0 inspected");
    let before: BTreeMap<String, String> = api.states(addr(2)).expect("nodes read");

    // 2. A second member down (quorum lost): every daemon stops and says why.
    members[1].take().unwrap().kill();
    wait("every daemon stops acting", long, &seeds, || {
        (0..3).all(|i| {
            api.metric(addr(i), "seed_ha_store_available") == Some(0)
                && api.metric(addr(i), "seed_ha_leader") == Some(0)
        })
    });
    let farm_before = tests::farm::read_status(&status);
    for (i, seed) in seeds.iter().enumerate() {
        let (code, body) = inspect(i, "q1");
        assert_eq!(code, 503, "seed{i}: an inspect without quorum: {body}");
        assert!(
            body.contains("store is unavailable") || body.contains("quorum"),
            "seed{i} says why: {body}"
        );
        let (code, body) = api.call(addr(i), "GET", "/v1/nodes", None);
        assert_eq!(code, 503, "seed{i}: a read without quorum: {body}");
        assert!(body.contains("unavailable"), "seed{i}: {body}");
        let log = seed.child.output();
        assert!(
            log.contains("not leading: etcd lease lost or unreachable"),
            "seed{i}'s log says why:\n{log}"
        );
    }
    eprintln!("two etcd members down: all three daemons refuse, 503, and say why");

    // 3. Both back (same data directories): a leader again, nothing changed, actions resume.
    for i in [0, 1] {
        members[i] = Some(start_member(&hosts[i], &specs[i], d));
    }
    wait("one leader after quorum returns", long, &seeds, || {
        leaders(&api) == 1
            && (0..3).all(|i| api.metric(addr(i), "seed_ha_store_available") == Some(1))
    });
    let after = api.states(addr(0)).expect("nodes read");
    assert_eq!(
        after, before,
        "the nodes are as they were before quorum was lost"
    );
    let farm_after = tests::farm::read_status(&status);
    let ons = |f: &BTreeMap<String, tests::farm::NodeStatus>| f.get("q1").map(|s| s.power_ons);
    assert_eq!(
        ons(&farm_after),
        ons(&farm_before),
        "the refused inspect powered nothing on"
    );
    wait("q1 inspect accepted", long, &seeds, || {
        let (code, _) = inspect(2, "q1");
        code == 202 || code == 200
    });
    wait("q1 available", long, &seeds, || {
        state_of("q1").as_deref() == Some("available")
    });
    eprintln!("quorum back: one leader, q1 inspected");
    drop(seeds);
}
