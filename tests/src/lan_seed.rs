//! The real `seed daemon` on a [`Lan`] without QEMU: the server namespace runs it with DHCP
//! (node1's reservation at .10) and the HTTP boot server, a fake ramdisk and node1 enrolled
//! behind the fake power driver; the client namespace plays the node with curl. Each test
//! adds its own TOML sections (`[lifecycle]`, `[agent]`, `[images]` …).

use crate::netns::{Lan, Netns, Switch};
use crate::proc::Child;
use std::path::Path;
use std::time::Duration;

/// The HTTP boot server's port on the server namespace's address.
pub const PORT: u16 = 8080;

/// What differs between the tests' daemons.
pub struct Options<'a> {
    /// node1's MAC: enrolled, and reserved at .10.
    pub node_mac: &'a str,
    /// The client namespace's NIC (node1's MAC, or a stranger's).
    pub client_mac: &'a str,
    /// `[api] token`.
    pub token: &'a str,
    /// `[api] listen` (the operators' listener on the server namespace's loopback), if any.
    pub api_listen: Option<&'a str>,
    /// Discovery on, with a DHCP pool of .100–.199 for machines nobody enrolled.
    pub discovery_pool: bool,
    pub rust_log: &'a str,
    /// Give the client its reserved address by hand (tests where DHCP is not what is tested).
    pub address_client: bool,
    /// `[api] provisioning`: the REST API on the HTTP boot server too (where `curl` reaches
    /// it from the client namespace).
    pub rest_on_provisioning: bool,
}

/// `sections` with `[agent] tls = "off"` (in the test's own `[agent]` table if it has one): the
/// node here is curl, speaking plain HTTP to the boot server.
fn agent_plain_http(sections: &str) -> String {
    const OFF: &str = "[agent]\ntls = \"off\"\n";
    if sections.contains("[agent]\n") {
        sections.replacen("[agent]\n", OFF, 1)
    } else {
        format!("{sections}\n{OFF}")
    }
}

/// A running daemon on its LAN; the daemon is killed and the namespaces removed on drop.
pub struct LanSeed {
    pub lan: Lan,
    /// The LAN's switch: [`LanSeed::join`] plugs more machines in.
    pub switch: Switch,
    pub seed: Child,
    /// Store, config, HTTP root (`http/`), fake ramdisk.
    pub dir: tempfile::TempDir,
}

impl LanSeed {
    /// Start the daemon. `sections` gets the scratch dir before the config is written (to put
    /// an image in `http/images`, say) and returns extra top-level TOML sections.
    pub fn start(opts: Options, sections: impl FnOnce(&Path) -> String) -> LanSeed {
        let (lan, switch) = Lan::switched(Some(opts.client_mac));
        let dir = tempfile::tempdir().expect("scratch dir");
        let d = dir.path();
        let http = d.join("http");
        std::fs::create_dir_all(&http).expect("creating the HTTP root");
        // Two small files the daemon installs under <http root>/ramdisk/.
        let (kernel, initrd) = crate::fake_ramdisk(d);
        // Enrolled into the store file before the daemon opens it.
        let store = d.join("seed.redb");
        crate::import_nodes(&store, &crate::fake_bmc_node("node1", opts.node_mac));
        let sections = agent_plain_http(&sections(d));
        let pool = if opts.discovery_pool {
            format!(
                "discovery = true\npool = {{ start = \"{}\", end = \"{}\" }}\n",
                lan.addr(100),
                lan.addr(199)
            )
        } else {
            String::new()
        };
        let listen = opts
            .api_listen
            .map(|l| format!("listen = \"{l}\"\n"))
            .unwrap_or_default()
            + &format!("provisioning = {}\n", opts.rest_on_provisioning)
            // The tests' curl speaks plain HTTP to the namespace's loopback.
            + "tls = \"off\"\n";
        let config = format!(
            r#"store = {store:?}

[api]
token = "{token}"
{listen}
{sections}

[ramdisk]
kernel = {kernel:?}
initrd = {initrd:?}

[netboot]
interface = "{iface}"
server_ip = "{srv}"
state_dir = {state:?}

[netboot.dhcp]
subnet = "{net}/24"
router = "{srv}"
lease_time = 600
{pool}

[netboot.http]
root = {http:?}
port = {PORT}

[[netboot.nodes]]
mac = "{mac}"
ip = "{ip10}"
hostname = "node1"
"#,
            token = opts.token,
            iface = lan.server_if,
            srv = lan.server_ip(),
            net = lan.net,
            state = d.join("state"),
            mac = opts.node_mac,
            ip10 = lan.addr(10),
        );
        let cfg = d.join("seed.toml");
        std::fs::write(&cfg, config).expect("writing seed.toml");
        let mut cmd = lan.server.cmd(crate::seed_bin());
        cmd.arg("daemon")
            .arg("--config")
            .arg(&cfg)
            .env("RUST_LOG", opts.rust_log);
        let mut seed = Child::spawn("seed-daemon", cmd);
        seed.wait_for_log("HTTP listening", Duration::from_secs(120));
        if opts.address_client {
            lan.address_client(10);
        }
        LanSeed {
            lan,
            switch,
            seed,
            dir,
        }
    }

    /// Another machine on the same LAN (an attacker, say): a namespace of its own plugged into
    /// the switch, its NIC with MAC `mac` and the static address `.host/24`.
    pub fn join(&self, mac: &str, host: u8) -> Netns {
        let ns = Netns::new("oth");
        self.switch.plug(&ns, "veth-o");
        ns.ip(&["link", "set", "veth-o", "address", mac]);
        let a = format!("{}/24", self.lan.addr(host));
        ns.ip(&["addr", "add", &a, "dev", "veth-o"]);
        ns
    }

    /// curl from namespace `ns` to the HTTP boot server: (status, body).
    pub fn curl_from(
        &self,
        ns: &Netns,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        let url = format!("http://{}:{PORT}{path}", self.lan.server_ip());
        crate::curl(
            ns.cmd(crate::require("curl")),
            method,
            &url,
            token,
            body,
            30,
        )
    }

    /// `GET /v1/nodes/node1` from the client namespace with `token`: the node's view (the
    /// answer must be 200).
    pub fn node1(&self, token: &str) -> serde_json::Value {
        let (code, body) = self.curl("GET", "/v1/nodes/node1", Some(token), None);
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("a node as JSON")
    }

    /// curl from the client namespace (the node) to the HTTP boot server, with a bearer
    /// token and a JSON body when given: (status, body).
    pub fn curl(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        self.curl_from(&self.lan.client, method, path, token, body)
    }
}

/// The agent's facts report (`POST /v1/agent/facts` body) of a QEMU-like machine booted from
/// `mac`: 2 CPUs, `memory_mib`, one disk `vda` of `disk_bytes` with serial `serial`, BIOS.
pub fn facts_report(mac: &str, memory_mib: u64, disk_bytes: u64, serial: &str) -> String {
    serde_json::json!({
        "boot_mac": mac,
        "facts": {
            "cpus": 2, "cpu_model": "QEMU Virtual CPU", "memory_mib": memory_mib,
            "disks": [{"name": "vda", "size_bytes": disk_bytes, "model": "QEMU HARDDISK",
                       "serial": serial, "rotational": false}],
            "nics": [{"name": "eth0", "mac": mac, "link": true, "driver": "virtio_net"}],
            "dmi": {"vendor": "QEMU", "product": "Standard PC", "serial": "", "uuid": "u-1"},
            "boot_mode": "bios"
        }
    })
    .to_string()
}
