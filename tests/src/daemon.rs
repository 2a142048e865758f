//! Fixtures for tests that run the real `seed daemon` on loopback or a test LAN with fake
//! machines: an image in its store, its `seed.toml`, the machines' reservations and
//! inventory, starting it, and reading its API (operators' token, JSON answers).

use crate::farm::FarmNode;
use crate::netns::Netns;
use crate::proc::Child;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// An image made up for a test: the daemon verifies and serves its stream, nothing boots it.
#[derive(Debug, Clone)]
pub struct TestImage<'a> {
    pub name: &'a str,
    pub version: &'a str,
    /// The stream's bytes (`rootfs.tar.zst`, not a real archive).
    pub stream: &'a [u8],
    /// The deployed kernel's command line.
    pub cmdline: &'a str,
    pub elements: &'a [&'a str],
}

impl<'a> TestImage<'a> {
    /// `golden`, the image the tests' stack templates deploy: no command line, no elements.
    pub fn golden(version: &'a str, stream: &'a [u8]) -> Self {
        TestImage {
            name: "golden",
            version,
            stream,
            cmdline: "",
            elements: &[],
        }
    }

    /// Write the image's stream and manifest under `src` and import it into the image store
    /// at `store` (a daemon's default one is `<http root>/images`); the imported image.
    pub fn import(&self, store: &Path, src: &Path) -> images::Image {
        std::fs::create_dir_all(src).expect("creating the image's source dir");
        let stream = src.join("rootfs.tar.zst");
        std::fs::write(&stream, self.stream).expect("writing the image stream");
        let (sha256, size) = images::store::hash_file(&stream).expect("hashing the stream");
        let m = images::Manifest {
            name: self.name.into(),
            version: self.version.into(),
            stream: images::Stream {
                file: "rootfs.tar.zst".into(),
                sha256,
                size,
                unpacked_size: size,
            },
            boot: images::Boot {
                kernel: "boot/vmlinuz".into(),
                initrd: None,
                cmdline: self.cmdline.into(),
            },
            min_disk_mib: 64,
            layout: images::Layout::default(),
            elements: self.elements.iter().map(|e| e.to_string()).collect(),
        };
        let mpath = src.join("manifest.json");
        std::fs::write(&mpath, serde_json::to_vec(&m).expect("manifest JSON"))
            .expect("writing the manifest");
        images::ImageStore::open(store)
            .and_then(|s| s.import(&mpath))
            .expect("importing the image")
    }
}

/// A daemon's `seed.toml` with a store file: what differs between the tests' daemons. Paths
/// are under `dir`: `seed.redb`, `state/`, `http/` (the HTTP root).
#[derive(Debug, Clone)]
pub struct Config<'a> {
    pub dir: &'a Path,
    /// `[api] token`.
    pub token: &'a str,
    /// `[api] listen` (the operators' listener), if any.
    pub listen: Option<&'a str>,
    /// `[api] tls`, if set: `"off"` by default (the tests' clients speak plain HTTP to
    /// loopback; `None` leaves the daemon's default, HTTPS).
    pub tls: Option<&'a str>,
    /// `[agent] heartbeat_secs`, if set.
    pub heartbeat_secs: Option<u64>,
    /// `[agent] https_port`: the agents' HTTPS on; `None`: `tls = "off"` (the tests' fake
    /// agents speak plain HTTP, and a fixed default port would collide between tests).
    pub agent_https: Option<u16>,
    /// `[ramdisk]` kernel and initrd; none: files that do not exist (nothing boots it).
    pub ramdisk: Option<(PathBuf, PathBuf)>,
    /// More top-level sections (`[lifecycle]` …), verbatim.
    pub sections: &'a str,
    /// Instead of `store = "<dir>/seed.redb"`: a whole `[store]` table (etcd).
    pub store_table: Option<String>,
    /// `[netboot] server_ip`.
    pub server_ip: String,
    /// `[netboot] interface`, if any.
    pub interface: Option<&'a str>,
    /// `[netboot.http] port`.
    pub http_port: u16,
    /// The machines' reservations (`[[netboot.nodes]]`, each with its `ip`).
    pub nodes: &'a [FarmNode],
}

impl<'a> Config<'a> {
    /// A daemon on loopback: the operators' API on 127.0.0.1:6385, HTTP on 127.0.0.1:8080, no
    /// ramdisk, no agent section.
    pub fn loopback(dir: &'a Path, token: &'a str) -> Self {
        Config {
            dir,
            token,
            listen: Some("127.0.0.1:6385"),
            tls: Some("off"),
            heartbeat_secs: None,
            agent_https: None,
            ramdisk: None,
            sections: "",
            store_table: None,
            server_ip: "127.0.0.1".into(),
            interface: None,
            http_port: 8080,
            nodes: &[],
        }
    }

    /// The TOML.
    pub fn render(&self) -> String {
        let d = self.dir;
        let mut s = match &self.store_table {
            Some(t) => format!("[store]\n{t}\n"),
            None => format!("store = {:?}\n", d.join("seed.redb")),
        };
        s += &format!("\n[api]\ntoken = \"{}\"\n", self.token);
        if let Some(l) = self.listen {
            s += &format!("listen = \"{l}\"\n");
        }
        if let Some(t) = self.tls {
            s += &format!("tls = \"{t}\"\n");
        }
        s += "\n[agent]\n";
        if let Some(h) = self.heartbeat_secs {
            s += &format!("heartbeat_secs = {h}\n");
        }
        s += &match self.agent_https {
            Some(p) => format!("https_port = {p}\n"),
            None => "tls = \"off\"\n".into(),
        };
        let missing = d.join("no-ramdisk");
        let (kernel, initrd) = match &self.ramdisk {
            Some((k, i)) => (k.clone(), i.clone()),
            None => (missing.clone(), missing),
        };
        s += &format!("\n[ramdisk]\nkernel = {kernel:?}\ninitrd = {initrd:?}\n");
        s += &format!("\n{}\n", self.sections);
        s += &format!("\n[netboot]\nserver_ip = \"{}\"\n", self.server_ip);
        if let Some(i) = self.interface {
            s += &format!("interface = \"{i}\"\n");
        }
        s += &format!(
            "state_dir = {:?}\n\n[netboot.http]\nroot = {:?}\nport = {}\n",
            d.join("state"),
            d.join("http"),
            self.http_port
        );
        s + &reservations(self.nodes)
    }

    /// Write the TOML to `<dir>/seed.toml`; its path.
    pub fn write(&self) -> PathBuf {
        let path = self.dir.join("seed.toml");
        std::fs::write(&path, self.render()).expect("writing seed.toml");
        path
    }
}

/// The machines' `[[netboot.nodes]]` reservations (appended after the last section).
pub fn reservations(nodes: &[FarmNode]) -> String {
    nodes
        .iter()
        .map(|n| {
            let ip = n.ip.expect("an address");
            format!("\n[[netboot.nodes]]\nmac = \"{}\"\nip = \"{ip}\"\n", n.mac)
        })
        .collect()
}

/// The instackenv `nodes:` entries of farm machines behind IPMI on 127.0.0.1 (profile compute).
pub fn ipmi_inventory(nodes: &[FarmNode]) -> String {
    nodes
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
        .collect()
}

/// Farm machine number `i`: user `admin`, password `pw<i>`, 4 CPUs, 8 GiB, firmware at `ip`.
pub fn farm_node(i: usize, name: String, mac: String, bmc: SocketAddr, ip: Ipv4Addr) -> FarmNode {
    FarmNode {
        name,
        mac,
        bmc,
        user: "admin".into(),
        password: format!("pw{i}"),
        cpus: 4,
        memory_mib: 8192,
        ip: Some(ip),
    }
}

/// A stack template of `count` compute servers on image `golden`.
pub fn compute_template(count: usize) -> String {
    format!(
        "heat_template_version: wallaby
resources:
  servers:
    type: OS::Heat::ResourceGroup
    properties:
      count: {count}
      resource_def:
        type: OS::Seed::Server
        properties: {{image: golden, profile: compute}}
"
    )
}

/// `seed daemon --config CONFIG` in `ns` at log level info, named `name`; returns once it
/// logged "HTTP listening" (bounded: 120 s, building seed included).
pub fn spawn(ns: &Netns, name: &str, config: &Path) -> Child {
    let mut cmd = ns.cmd(crate::seed_bin());
    cmd.arg("daemon")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info");
    let mut daemon = Child::spawn(name, cmd);
    daemon.wait_for_log("HTTP listening", Duration::from_secs(120));
    daemon
}

/// curl from `ns` (`METHOD url` with the bearer `token` and a JSON body when given, 30 s at
/// most): the status and the answer as JSON (Null when it is not JSON).
pub fn api(
    ns: &Netns,
    method: &str,
    url: &str,
    token: &str,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let cmd = ns.cmd(crate::require("curl"));
    let (code, text) = crate::curl(cmd, method, url, Some(token), body, 30);
    (
        code,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// node name → state from a `GET /v1/nodes` answer; None unless it is a list of nodes that
/// each have both.
pub fn node_states(body: &serde_json::Value) -> Option<BTreeMap<String, String>> {
    body.as_array()?
        .iter()
        .map(|n| {
            let name = n["name"].as_str()?.to_string();
            Some((name, n["state"].as_str()?.to_string()))
        })
        .collect()
}

/// Poll `ok` every 200 ms until it holds; past `within`, panic with `what` and `context()`
/// (the daemons' logs, say).
pub fn wait(
    what: &str,
    within: Duration,
    mut ok: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let t = Instant::now();
    while !ok() {
        if t.elapsed() > within {
            panic!("{what}: not within {within:?}\n{}", context());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
