//! Network namespaces and veth pairs created for one test and removed when dropped.
//!
//! `Lan::new(2)` gives two namespaces `a` and `b` joined by a veth pair with addresses from a
//! private /24 chosen per test; commands run inside with [`Netns::cmd`]. Names carry the test
//! process id and a counter so parallel tests never collide; `Drop` deletes the namespaces (which
//! deletes their veths and kills nothing: use [`crate::proc::Child`] for processes).

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Move the calling thread into the namespace named `name` (see [`Netns::enter`]).
pub fn enter(name: &str) {
    use std::os::fd::AsRawFd;
    let path = format!("/var/run/netns/{name}");
    let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
    // SAFETY: setns on a descriptor we hold open; affects this thread only.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns {name}: {}", std::io::Error::last_os_error());
}

/// One network namespace owned by the test.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Create an empty namespace with its loopback up.
    pub fn new(tag: &str) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("sd{}-{}-{}", std::process::id(), n, tag);
        ip(&["netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Run `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// Move the calling thread into the namespace: sockets it opens and processes it starts
    /// (QEMU, when a BMC thread it spawns powers a node on) live there. There is no way back:
    /// call it on a thread of its own.
    pub fn enter(&self) {
        enter(&self.name);
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`).
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Kill anything still running inside, then remove the namespace.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Two namespaces joined by one veth pair: `server` (at `.1`) and `client` (no address: DHCP
/// clients configure it themselves; call [`Lan::address_client`] for a static one).
#[derive(Debug)]
pub struct Lan {
    pub server: Netns,
    pub client: Netns,
    /// Interface name inside `server`.
    pub server_if: String,
    /// Interface name inside `client`.
    pub client_if: String,
    /// The /24 network, e.g. 10.231.7.0.
    pub net: Ipv4Addr,
}

impl Lan {
    /// Create the pair. `client_mac` fixes the client's MAC (DHCP tests reserve by MAC).
    pub fn new(client_mac: Option<&str>) -> Self {
        let server = Netns::new("srv");
        let client = Netns::new("cli");
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // A /24 in 10.200.0.0/13 unique to this process and pair: only ever inside our namespaces.
        let third = ((std::process::id() as usize * 7 + n as usize) % 250) as u8;
        let second = 200 + (n % 8) as u8;
        let net = Ipv4Addr::new(10, second, third, 0);
        let (server_if, client_if) = ("veth-s".to_string(), "veth-c".to_string());
        // Create the pair inside the server namespace, then move one end to the client: the
        // host's own namespace never sees either end.
        server.ip(&[
            "link", "add", &server_if, "type", "veth", "peer", "name", &client_if,
        ]);
        server.ip(&["link", "set", &client_if, "netns", &client.name]);
        if let Some(mac) = client_mac {
            client.ip(&["link", "set", &client_if, "address", mac]);
        }
        let o = net.octets();
        let server_addr = format!("{}.{}.{}.1/24", o[0], o[1], o[2]);
        server.ip(&["addr", "add", &server_addr, "dev", &server_if]);
        server.ip(&["link", "set", &server_if, "up"]);
        client.ip(&["link", "set", &client_if, "up"]);
        Self {
            server,
            client,
            server_if,
            client_if,
            net,
        }
    }

    /// The same two namespaces, joined through a [`Switch`] instead of directly, so that more
    /// namespaces (another DHCP server, say) and TAPs can join the LAN: (LAN, its switch).
    pub fn switched(client_mac: Option<&str>) -> (Self, Switch) {
        let sw = Switch::new();
        let server = Netns::new("srv");
        let client = Netns::new("cli");
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let third = ((std::process::id() as usize * 7 + n as usize) % 250) as u8;
        let net = Ipv4Addr::new(10, 200 + (n % 8) as u8, third, 0);
        let (server_if, client_if) = ("veth-s".to_string(), "veth-c".to_string());
        sw.plug(&server, &server_if);
        sw.plug(&client, &client_if);
        if let Some(mac) = client_mac {
            client.ip(&["link", "set", &client_if, "address", mac]);
        }
        let o = net.octets();
        server.ip(&[
            "addr",
            "add",
            &format!("{}.{}.{}.1/24", o[0], o[1], o[2]),
            "dev",
            &server_if,
        ]);
        let lan = Self {
            server,
            client,
            server_if,
            client_if,
            net,
        };
        (lan, sw)
    }

    /// The address `.host` in this LAN's /24.
    pub fn addr(&self, host: u8) -> Ipv4Addr {
        let o = self.net.octets();
        Ipv4Addr::new(o[0], o[1], o[2], host)
    }

    /// The server's address (`.1`).
    pub fn server_ip(&self) -> Ipv4Addr {
        self.addr(1)
    }

    /// Give the client a static address `.host/24`.
    pub fn address_client(&self, host: u8) {
        let a = format!("{}/24", self.addr(host));
        self.client.ip(&["addr", "add", &a, "dev", &self.client_if]);
    }

    /// `GET http://<server>:<port><path>` with curl from the client namespace (20 s at most):
    /// (status, body).
    pub fn client_get(&self, port: u16, path: &str) -> (u16, String) {
        let url = format!("http://{}:{port}{path}", self.server_ip());
        let cmd = self.client.cmd(crate::require("curl"));
        crate::curl(cmd, "GET", &url, None, None, 20)
    }
}

/// An Ethernet switch for several namespaces: a namespace of its own holding bridge `br0`.
/// [`Switch::plug`] joins another namespace to it by a veth pair; [`Switch::tap`] adds a TAP
/// port for a QEMU NIC started inside the switch's namespace ([`Netns::enter`]).
#[derive(Debug)]
pub struct Switch {
    pub ns: Netns,
    ports: AtomicU32,
}

impl Switch {
    /// A switch with no ports.
    pub fn new() -> Self {
        let ns = Netns::new("sw");
        ns.ip(&["link", "add", "br0", "type", "bridge"]);
        ns.ip(&["link", "set", "br0", "up"]);
        Self {
            ns,
            ports: AtomicU32::new(0),
        }
    }

    /// Plug `ns` in: a veth pair whose end `ifname` is in `ns` (up, no address) and whose
    /// other end is a port of the bridge.
    pub fn plug(&self, ns: &Netns, ifname: &str) {
        let port = format!("p{}", self.ports.fetch_add(1, Ordering::Relaxed));
        self.ns
            .ip(&["link", "add", &port, "type", "veth", "peer", "name", ifname]);
        self.ns.ip(&["link", "set", ifname, "netns", &ns.name]);
        self.ns.ip(&["link", "set", &port, "master", "br0"]);
        self.ns.ip(&["link", "set", &port, "up"]);
        ns.ip(&["link", "set", ifname, "up"]);
    }

    /// A TAP port `name` on the bridge.
    pub fn tap(&self, name: &str) {
        self.ns.ip(&["tuntap", "add", "dev", name, "mode", "tap"]);
        self.ns.ip(&["link", "set", name, "master", "br0"]);
        self.ns.ip(&["link", "set", name, "up"]);
    }
}

impl Default for Switch {
    fn default() -> Self {
        Self::new()
    }
}
