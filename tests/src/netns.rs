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
        use std::os::fd::AsRawFd;
        let path = format!("/var/run/netns/{}", self.name);
        let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
        // SAFETY: setns on a descriptor we hold open; affects this thread only.
        let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(
            r,
            0,
            "setns {}: {}",
            self.name,
            std::io::Error::last_os_error()
        );
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
}
