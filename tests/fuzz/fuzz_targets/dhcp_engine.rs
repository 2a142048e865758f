//! The DHCP engine (netboot::dhcp::engine), sans-IO: datagrams in, replies out.
//!
//! Input: one selector byte (mode, port, source), then length-prefixed datagrams
//! (`seed_fuzz::chunks`) handled in order on one engine, 30 s apart, so an OFFER's state meets
//! the REQUEST after it. Also the reply decoder the rogue-server probe uses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netboot::config::NetbootConfig;
use netboot::dhcp::engine::{Engine, RxInfo, PROXY_PORT, SERVER_PORT};
use netboot::dhcp::leases::LeaseTable;
use netboot::dhcp::wire;
use netboot::metrics::Metrics;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

const CONFIG: &str = r#"
server_ip = "10.200.1.1"
[dhcp]
mode = "MODE"
subnet = "10.200.1.0/24"
router = "10.200.1.1"
dns = ["10.200.1.1"]
pool = { start = "10.200.1.100", end = "10.200.1.103" }
discovery = true
[tftp]
root = "/srv/tftp"
[[nodes]]
mac = "52:54:00:00:00:01"
ip = "10.200.1.10"
hostname = "node1"
[[nodes]]
mac = "52:54:00:00:00:02"
chain = "tftp"
boot = { action = "kernel", kernel = "k", initrd = "i", cmdline = "seed.token=x" }
"#;

fn engine(proxy: bool) -> Engine {
    // Parsed once: the TOML is not what is fuzzed here.
    static CONFIGS: OnceLock<[NetbootConfig; 2]> = OnceLock::new();
    let configs = CONFIGS.get_or_init(|| {
        ["authoritative", "proxy"]
            .map(|mode| NetbootConfig::from_toml(&CONFIG.replace("MODE", mode)).expect("config"))
    });
    let cfg = &configs[usize::from(proxy)];
    let policy = Arc::new(cfg.static_policy());
    Engine::new(
        cfg.dhcp.clone().expect("dhcp"),
        cfg.server_ip,
        Some("http://10.200.1.1:8080".into()),
        &cfg.nodes,
        policy,
        &Metrics::default(),
        LeaseTable::default(),
    )
    .expect("engine")
}

fuzz_target!(|data: &[u8]| {
    let _ = wire::decode_reply(data);
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let proxy = sel & 1 != 0;
    let mut e = engine(proxy);
    let local_port = if proxy && sel & 2 != 0 {
        PROXY_PORT
    } else {
        SERVER_PORT
    };
    let src = if sel & 4 != 0 {
        SocketAddrV4::new(Ipv4Addr::new(10, 200, 1, 77), 68)
    } else if sel & 8 != 0 {
        // A relay agent.
        SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 1), 67)
    } else {
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68)
    };
    let mut now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for pkt in seed_fuzz::chunks(rest, 16) {
        let _ = e.handle(pkt, RxInfo { src, local_port }, now);
        e.take_dirty();
        now += Duration::from_secs(30);
    }
});
