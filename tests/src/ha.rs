//! HA fixtures: several hosts (network namespaces) on one LAN through a bridge in a switch
//! namespace, a link of each that can be cut at the switch, etcd members on those hosts, and
//! [`in_netns`] to create store clients whose sockets live inside a host's namespace.

use crate::netns::Netns;
use seed::store::etcd::member::{self, Member, MemberSpec};
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

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
