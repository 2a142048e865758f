//! HA fixtures: several hosts (network namespaces) on one LAN through a bridge in a switch
//! namespace, a link of each that can be cut at the switch, etcd members on those hosts, and
//! [`in_netns`] to create store clients whose sockets live inside a host's namespace.

use crate::farm::FarmNode;
use crate::netns::Netns;
use seed::store::etcd::member::{self, Member, MemberSpec};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A bridge in a namespace of its own: the LAN's switch.
#[derive(Debug)]
pub struct Switch {
    pub ns: Netns,
    /// The /24, e.g. 10.211.7.0.
    pub net: Ipv4Addr,
}

/// A host on the switch: its namespace, address and the switch port it is plugged into.
#[derive(Debug)]
pub struct Host {
    pub ns: Netns,
    pub ip: Ipv4Addr,
    pub port: String,
}

impl Host {
    /// Whether this host has `ip` (the floating address) on its NIC.
    pub fn holds(&self, ip: Ipv4Addr) -> bool {
        let out = self
            .ns
            .cmd("ip")
            .args(["-4", "-o", "addr", "show", "dev", "eth0"])
            .output()
            .expect("ip addr show");
        String::from_utf8_lossy(&out.stdout).contains(&format!("inet {ip}/"))
    }
}

impl Switch {
    pub fn new() -> Switch {
        let ns = Netns::new("sw");
        ns.ip(&["link", "add", "br0", "type", "bridge"]);
        ns.ip(&["link", "set", "br0", "up"]);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // A /24 in 10.208.0.0/13 for this process and switch: only inside our namespaces.
        let third = ((std::process::id() as usize * 13 + n as usize) % 250) as u8;
        let net = Ipv4Addr::new(10, 208 + (n % 8) as u8, third, 0);
        Switch { ns, net }
    }

    /// Plug a new host in at `.host` (its interface is `eth0`; the switch's end `p<host>`).
    pub fn attach(&self, tag: &str, host: u8) -> Host {
        let ns = Netns::new(tag);
        let port = format!("p{host}");
        // Created inside the switch, one end moved: the host's namespace never sees either.
        self.ns
            .ip(&["link", "add", &port, "type", "veth", "peer", "name", "eth0"]);
        self.ns.ip(&["link", "set", "eth0", "netns", &ns.name]);
        self.ns.ip(&["link", "set", &port, "master", "br0"]);
        self.ns.ip(&["link", "set", &port, "up"]);
        let o = self.net.octets();
        let ip = Ipv4Addr::new(o[0], o[1], o[2], host);
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        Host { ns, ip, port }
    }

    /// Unplug (`up = false`) or plug back a host's cable, at the switch.
    pub fn link(&self, host: &Host, up: bool) {
        self.ns
            .ip(&["link", "set", &host.port, if up { "up" } else { "down" }]);
    }
}

impl Default for Switch {
    fn default() -> Self {
        Self::new()
    }
}

/// Run `f` on a thread moved into `ns`'s network namespace and return its result. Sockets `f`
/// opens, and threads it spawns (an etcd client's runtime), stay in that namespace.
pub fn in_netns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{}", ns.name);
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).expect("namespace file");
        // SAFETY: setns(2) on a namespace fd we own; it only changes this thread's namespace.
        let r = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&fd), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("namespace thread")
}

/// The etcd member for each host (`m<i>`, client port 2379, peer port 2380 on its address),
/// one cluster; fast raft timings.
pub fn etcd_specs(hosts: &[&Host], dir: &Path) -> Vec<MemberSpec> {
    let mut specs: Vec<MemberSpec> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let name = format!("m{i}");
            let mut s = MemberSpec::new(
                &name,
                &dir.join(&name),
                &format!("http://{}:2379", h.ip),
                &format!("http://{}:2380", h.ip),
            );
            s.heartbeat_ms = 50;
            s.election_ms = 500;
            s
        })
        .collect();
    let cluster: Vec<(String, String)> = specs
        .iter()
        .map(|s| (s.name.clone(), s.peer_url.clone()))
        .collect();
    for s in &mut specs {
        s.initial_cluster = cluster.clone();
    }
    specs
}

/// Start `spec` inside `host`'s namespace (the cached etcd), logging beside its data.
pub fn start_member(host: &Host, spec: &MemberSpec, dir: &Path) -> Member {
    let bin = member::etcd_binary().expect("etcd (cargo xtask fetch)");
    let mut cmd = host.ns.cmd(&bin);
    cmd.args(spec.args());
    let log = dir.join(format!("{}.log", spec.name));
    Member::spawn(spec.clone(), cmd, &log).expect("etcd member starts")
}

/// The operators' API port of every HA daemon (`[api] listen = "0.0.0.0:6385"`).
pub const API: u16 = 6385;
/// The HTTP boot server's port of every HA daemon.
pub const HTTP: u16 = 8080;
/// The daemons' lease TTL (s).
pub const TTL: u64 = 2;

/// The LAN of an HA test: three seed hosts (.11–.13), a farm host (.30) and the floating
/// address (.100) the leader holds.
pub struct SeedLan {
    pub sw: Switch,
    pub hosts: [Host; 3],
    pub farm: Host,
    pub float: Ipv4Addr,
}

impl SeedLan {
    pub fn new() -> SeedLan {
        let sw = Switch::new();
        let hosts = [
            sw.attach("h0", 11),
            sw.attach("h1", 12),
            sw.attach("h2", 13),
        ];
        let farm = sw.attach("farm", 30);
        let o = sw.net.octets();
        let float = Ipv4Addr::new(o[0], o[1], o[2], 100);
        SeedLan {
            sw,
            hosts,
            farm,
            float,
        }
    }

    /// `n` farm machines named `name(i)` with MACs `<mac_prefix>:<i>`, their BMCs on the farm
    /// host from port `bmc_port` up; each one's firmware address (.150 + i, reserved in every
    /// daemon's config) is added to the farm host's interface: the leader hands a node's agent
    /// token only to a script asked from the address reserved for its MAC.
    pub fn farm_nodes(
        &self,
        n: usize,
        name: impl Fn(usize) -> String,
        mac_prefix: &str,
        bmc_port: u16,
    ) -> Vec<FarmNode> {
        let o = self.sw.net.octets();
        (0..n)
            .map(|i| {
                let ip = Ipv4Addr::new(o[0], o[1], o[2], 150 + i as u8);
                self.farm
                    .ns
                    .ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
                let mac = format!("{mac_prefix}:{i:02x}");
                let bmc = SocketAddr::from((self.farm.ip, bmc_port + i as u16));
                crate::daemon::farm_node(i, name(i), mac, bmc, ip)
            })
            .collect()
    }

    /// One etcd member on each seed host (data and logs under `dir`), started, and the
    /// cluster checked to take writes (from the farm host): their specs, members, client URLs.
    pub fn start_etcd(&self, dir: &Path) -> (Vec<MemberSpec>, Vec<Member>, Vec<String>) {
        let specs = etcd_specs(&self.hosts.iter().collect::<Vec<_>>(), dir);
        let members = self
            .hosts
            .iter()
            .zip(&specs)
            .map(|(h, s)| start_member(h, s, dir))
            .collect();
        let endpoints: Vec<String> = specs.iter().map(|s| s.client_url.clone()).collect();
        let mut cfg = seed::store::etcd::EtcdConfig::new(endpoints.clone());
        cfg.timeout = Duration::from_secs(2);
        let ready = in_netns(&self.farm.ns, move || {
            let s = seed::store::etcd::EtcdStore::connect(&cfg).unwrap();
            seed::store::etcd::member::wait_ready(&s, Duration::from_secs(30)).is_ok()
        });
        assert!(ready, "the etcd cluster takes writes");
        (specs, members, endpoints)
    }

    /// The `seed.toml` of daemon `i` on `hosts[i]` (files under `dir`): the etcd store at
    /// `endpoints`, the floating address, a 1 s agent heartbeat, `sections` and the
    /// reservations of `nodes`.
    pub fn config(
        &self,
        i: usize,
        endpoints: &[String],
        dir: &Path,
        token: &str,
        sections: &str,
        nodes: &[FarmNode],
    ) -> String {
        let name = format!("seed-{i}");
        self.config_for(
            &self.hosts[i],
            &name,
            endpoints,
            dir,
            token,
            sections,
            nodes,
        )
    }

    /// [`SeedLan::config`] for a daemon named `name` on any host of the LAN.
    #[allow(clippy::too_many_arguments)]
    pub fn config_for(
        &self,
        host: &Host,
        name: &str,
        endpoints: &[String],
        dir: &Path,
        token: &str,
        sections: &str,
        nodes: &[FarmNode],
    ) -> String {
        let (ip, float) = (host.ip, self.float);
        crate::daemon::Config {
            store_table: Some(format!(
                "backend = \"etcd\"\nendpoints = {endpoints:?}\nname = \"{name}\"\n\
                 lease_ttl_secs = {TTL}\ntimeout_secs = 2\nadvertise = \"http://{ip}:{API}\"\n\
                 floating_address = \"{float}/24\""
            )),
            listen: Some("0.0.0.0:6385"),
            heartbeat_secs: Some(1),
            sections,
            server_ip: float.to_string(),
            interface: Some("eth0"),
            http_port: HTTP,
            nodes,
            ..crate::daemon::Config::loopback(dir, token)
        }
        .render()
    }

    /// The API body enrolling the farm's `nodes` (IPMI at the farm host, profile compute).
    pub fn enrollment(&self, nodes: &[FarmNode]) -> String {
        let nodes: Vec<_> = nodes
            .iter()
            .map(|n| {
                serde_json::json!({
                    "name": n.name,
                    "mac": [n.mac],
                    "pm_type": "ipmi",
                    "pm_addr": self.farm.ip.to_string(),
                    "pm_port": n.bmc.port().to_string(),
                    "pm_user": n.user,
                    "pm_password": n.password,
                    "capabilities": "profile:compute",
                    "memory": 8192,
                    "disk": 40,
                })
            })
            .collect();
        serde_json::json!({ "nodes": nodes }).to_string()
    }
}

impl Default for SeedLan {
    fn default() -> Self {
        Self::new()
    }
}

/// Operators' calls to the HA daemons (port [`API`]) from `from`'s namespace, with `token`.
pub struct Api<'a> {
    pub from: &'a Host,
    pub token: &'a str,
}

impl Api<'_> {
    /// `METHOD path` at the daemon on `at`: (status, body).
    pub fn call(
        &self,
        at: Ipv4Addr,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, String) {
        let cmd = self.from.ns.cmd(crate::require("curl"));
        let url = format!("http://{at}:{API}{path}");
        crate::curl(cmd, method, &url, Some(self.token), body, 30)
    }

    /// [`Api::call`] with the answer as JSON (Null when it is not JSON).
    pub fn json(
        &self,
        at: Ipv4Addr,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let url = format!("http://{at}:{API}{path}");
        crate::daemon::api(&self.from.ns, method, &url, self.token, body)
    }

    /// node → state from the daemon on `at`; None unless it answers 200 with a node list.
    pub fn states(&self, at: Ipv4Addr) -> Option<BTreeMap<String, String>> {
        let (code, body) = self.json(at, "GET", "/v1/nodes", None);
        (code == 200)
            .then(|| crate::daemon::node_states(&body))
            .flatten()
    }

    /// A gauge or counter of `/metrics` (None when absent or unreachable).
    pub fn metric(&self, at: Ipv4Addr, name: &str) -> Option<u64> {
        let (_, text) = self.call(at, "GET", "/metrics", None);
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }
}
