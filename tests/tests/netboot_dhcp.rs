//! End-to-end tests of the DHCP server: the real `seed netboot` binary in a server namespace,
//! real clients (busybox udhcpc, Kea's perfdhcp, dnsmasq as the "other" DHCP server) in a client
//! namespace joined by a veth pair, and raw DHCP packets built with dhcproto and sent from a
//! thread that entered the client namespace. Nothing here touches the host's interfaces.

use dhcproto::v4::{
    Architecture, Decodable, Decoder, DhcpOption, Encodable, Encoder, Flags, Message, MessageType,
    OptionCode,
};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tests::netns::Lan;
use tests::proc::Child;

const NODE1_MAC: &str = "52:54:00:00:00:01";
const NODE2_MAC: &str = "52:54:00:00:00:02";
const STRANGER_MAC: &str = "52:54:00:00:00:99";
const PXE_BIOS: &str = "PXEClient:Arch:00000:UNDI:002001";
const SEED_START: Duration = Duration::from_secs(120);

fn mac_bytes(mac: &str) -> [u8; 6] {
    let v: Vec<u8> = mac
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

/// A config for the seed on `lan`: reservation for node1 at .10, node2 known without address,
/// pool .100–.199, plus `extra` lines in `[dhcp]`.
fn write_config(lan: &Lan, dir: &Path, dhcp_extra: &str) -> PathBuf {
    let (net, srv) = (lan.net, lan.server_ip());
    let text = format!(
        r#"
interface = "{iface}"
server_ip = "{srv}"
state_dir = "{state}"

[dhcp]
subnet = "{net}/24"
router = "{srv}"
dns = ["{srv}"]
lease_time = 3600
{dhcp_extra}

[http]
root = "{httproot}"
port = 8080

[[nodes]]
mac = "{NODE1_MAC}"
ip = "{ip10}"
hostname = "node1"
boot = {{ action = "local_disk" }}

[[nodes]]
mac = "{NODE2_MAC}"
hostname = "node2"
"#,
        iface = lan.server_if,
        state = dir.join("state").display(),
        httproot = dir.display(),
        ip10 = lan.addr(10),
    );
    let path = dir.join("netboot.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn pool(lan: &Lan) -> String {
    format!(
        "pool = {{ start = \"{}\", end = \"{}\" }}",
        lan.addr(100),
        lan.addr(199)
    )
}

/// A stranger's LAN (no reservation) with discovery on and the pool: the seed's config and
/// process, and the stranger's udhcpc lease.
fn stranger_with_discovery(
    dir: &Path,
) -> (
    Lan,
    PathBuf,
    Child,
    std::collections::HashMap<String, String>,
) {
    let lan = Lan::new(Some(STRANGER_MAC));
    let cfg = write_config(&lan, dir, &format!("{}\ndiscovery = true", pool(&lan)));
    let seed = start_seed(&lan, &cfg);
    let env = tests::udhcpc(&lan, dir, &[]).expect("udhcpc got no lease");
    (lan, cfg, seed, env)
}

fn start_seed(lan: &Lan, config: &Path) -> Child {
    tests::spawn_netboot(&lan.server, config, &["dhcp: serving"], SEED_START)
}

/// From the client namespace, bound to its interface on `local_port`, send each packet to `to`
/// and collect the DHCP messages that come back within `wait`.
fn exchange(
    lan: &Lan,
    local_port: u16,
    to: SocketAddrV4,
    packets: Vec<Vec<u8>>,
    wait: Duration,
) -> Vec<(SocketAddr, Message)> {
    let iface = lan.client_if.clone();
    tests::ha::in_netns(&lan.client, move || {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        s.set_reuse_address(true).unwrap();
        s.set_broadcast(true).unwrap();
        s.bind_device(Some(iface.as_bytes())).unwrap();
        s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, local_port).into())
            .unwrap();
        let sock: std::net::UdpSocket = s.into();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        for p in &packets {
            sock.send_to(p, to).expect("sending a raw DHCP packet");
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        let end = Instant::now() + wait;
        while Instant::now() < end && got.len() < 64 {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                if let Ok(m) = Message::decode(&mut Decoder::new(&buf[..n])) {
                    got.push((from, m));
                }
            }
        }
        got
    })
}

fn message(mac: [u8; 6], ty: MessageType, opts: Vec<DhcpOption>) -> Message {
    let mut m = Message::new(
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac,
    );
    // Like PXE firmware: ask for broadcast replies (dnsmasq would unicast to the bare client).
    m.set_flags(Flags::default().set_broadcast());
    m.opts_mut().insert(DhcpOption::MessageType(ty));
    for o in opts {
        m.opts_mut().insert(o);
    }
    m
}

fn pxe_opts() -> Vec<DhcpOption> {
    vec![
        DhcpOption::ClassIdentifier(PXE_BIOS.as_bytes().to_vec()),
        DhcpOption::ClientSystemArchitecture(Architecture(0)),
    ]
}

fn encode(m: &Message) -> Vec<u8> {
    let mut v = Vec::new();
    m.encode(&mut Encoder::new(&mut v)).unwrap();
    v
}

fn bootfile(m: &Message) -> Option<String> {
    match m.opts().get(OptionCode::BootfileName) {
        Some(DhcpOption::BootfileName(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

const BROADCAST_67: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);

#[test]
fn dhcp_udhcpc_gets_its_reservation_and_pxe_bootfile() {
    let dir = tempfile::tempdir().unwrap();
    let lan = Lan::new(Some(NODE1_MAC));
    let cfg = write_config(&lan, dir.path(), &pool(&lan));
    let seed = start_seed(&lan, &cfg);

    let env = tests::udhcpc(&lan, dir.path(), &["-V", PXE_BIOS, "-x", "0x5d:0000"])
        .expect("udhcpc got no lease");
    assert_eq!(env["ip"], lan.addr(10).to_string());
    assert_eq!(env["siaddr"], lan.server_ip().to_string());
    assert_eq!(env["boot_file"], "undionly.kpxe");
    assert_eq!(env["serverid"], lan.server_ip().to_string());
    assert_eq!(env["hostname"], "node1");
    assert_eq!(env["lease"], "3600");
    assert_eq!(env["subnet"], "255.255.255.0");
    assert_eq!(env["router"], lan.server_ip().to_string());

    // The same node as x86-64 UEFI firmware gets the UEFI iPXE build.
    let env = tests::udhcpc(
        &lan,
        dir.path(),
        &["-V", "PXEClient:Arch:00007", "-x", "0x5d:0007"],
    )
    .expect("udhcpc got no lease");
    assert_eq!(env["ip"], lan.addr(10).to_string());
    assert_eq!(env["boot_file"], "snponly.efi");

    let log = seed.output();
    assert!(
        log.contains(&format!(
            "DHCP DISCOVER from {NODE1_MAC} arch=BIOS ipxe=no → OFFER {} file=undionly.kpxe (reservation node1)",
            lan.addr(10)
        )),
        "{log}"
    );
    assert!(log.contains("→ ACK"), "{log}");
}

#[test]
fn dhcp_discovery_gives_an_unknown_mac_a_pool_address() {
    let dir = tempfile::tempdir().unwrap();
    let (_lan, _cfg, seed, env) = stranger_with_discovery(dir.path());
    let ip: Ipv4Addr = env["ip"].parse().unwrap();
    let last = ip.octets()[3];
    assert!((100..=199).contains(&last), "{ip} is not from the pool");
    assert!(
        !env.contains_key("boot_file"),
        "an OS client gets no boot file"
    );
    let log = seed.output();
    assert!(
        log.contains(&format!("discovered new MAC {STRANGER_MAC}")),
        "{log}"
    );
}

#[test]
fn dhcp_known_node_without_reservation_gets_a_pool_address() {
    let dir = tempfile::tempdir().unwrap();
    let lan = Lan::new(Some(NODE2_MAC));
    let cfg = write_config(&lan, dir.path(), &pool(&lan));
    let _seed = start_seed(&lan, &cfg);
    let env = tests::udhcpc(&lan, dir.path(), &[]).expect("udhcpc got no lease");
    assert_eq!(env["ip"], lan.addr(100).to_string());
    assert_eq!(env["hostname"], "node2");
}

#[test]
fn dhcp_unknown_mac_gets_nothing_when_discovery_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let lan = Lan::new(Some(STRANGER_MAC));
    let cfg = write_config(&lan, dir.path(), &pool(&lan));
    let seed = start_seed(&lan, &cfg);
    assert!(tests::udhcpc(&lan, dir.path(), &["-V", PXE_BIOS]).is_none());
    let log = seed.output();
    assert!(
        log.contains(&format!(
            "DHCP DISCOVER from {STRANGER_MAC} arch=- ipxe=no ignored: unknown MAC, discovery off"
        )),
        "{log}"
    );
    assert!(!log.contains("→ OFFER"), "{log}");
}

#[test]
fn dhcp_malformed_packets_are_dropped_and_a_client_is_served_right_after() {
    let dir = tempfile::tempdir().unwrap();
    let lan = Lan::new(Some(NODE1_MAC));
    let cfg = write_config(&lan, dir.path(), &pool(&lan));
    let mut seed = start_seed(&lan, &cfg);

    let good = encode(&message(
        mac_bytes(NODE1_MAC),
        MessageType::Discover,
        pxe_opts(),
    ));
    let truncated = good[..100].to_vec();
    let mut wrong_op = good.clone();
    wrong_op[0] = 2;
    let mut absurd = good[..240].to_vec();
    absurd.extend_from_slice(&[53, 1, 1, 60, 250, b'P', b'X']); // option runs past the end
    let mut no_type = good[..240].to_vec();
    no_type.extend_from_slice(&[12, 4, b'n', b'o', b'd', b'e', 255]);
    let mut huge_hlen = good.clone();
    huge_hlen[2] = 200;
    let replies = exchange(
        &lan,
        68,
        BROADCAST_67,
        vec![truncated, wrong_op, absurd, no_type, huge_hlen],
        Duration::from_millis(500),
    );
    assert!(
        replies.is_empty(),
        "malformed packets were answered: {replies:?}"
    );
    seed.wait_for_log("dhcp: dropped malformed packet", Duration::from_secs(10));
    let log = seed.output();
    for reason in [
        "truncated: 100 bytes",
        "not a BOOTREQUEST (op=2)",
        "option 60 runs past the end",
        "no message type",
        "not Ethernet (htype=1, hlen=200)",
    ] {
        assert!(log.contains(reason), "no log of {reason:?}:\n{log}");
    }
    assert!(seed.is_running(), "malformed input killed the server");

    let env = tests::udhcpc(&lan, dir.path(), &["-V", PXE_BIOS]).expect("no lease after garbage");
    assert_eq!(env["ip"], lan.addr(10).to_string());
}

#[test]
fn dhcp_pool_lease_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (lan, cfg, seed, env) = stranger_with_discovery(dir.path());
    let held: Ipv4Addr = env["ip"].parse().unwrap();
    drop(seed); // SIGKILL: no chance to flush anything on the way out
    let leases = std::fs::read_to_string(dir.path().join("state/dhcp-leases.json")).unwrap();
    assert!(leases.contains(STRANGER_MAC), "{leases}");

    let seed = start_seed(&lan, &cfg);
    // Another MAC asking for exactly that address gets a different one...
    let other = message(
        [0x02, 0, 0, 0, 0, 0x42],
        MessageType::Discover,
        vec![DhcpOption::RequestedIpAddress(held)],
    );
    // ...and the holder gets its address again.
    let holder = message(mac_bytes(STRANGER_MAC), MessageType::Discover, vec![]);
    let replies = exchange(
        &lan,
        68,
        BROADCAST_67,
        vec![encode(&other), encode(&holder)],
        Duration::from_secs(2),
    );
    let offer_for = |mac: &[u8]| {
        replies
            .iter()
            .find(|(_, m)| m.chaddr() == mac)
            .map(|(_, m)| m.yiaddr())
            .unwrap_or_else(|| panic!("no offer for {mac:x?}: {}", seed.output()))
    };
    assert_ne!(offer_for(&[0x02, 0, 0, 0, 0, 0x42]), held);
    assert_eq!(offer_for(&mac_bytes(STRANGER_MAC)), held);
}

#[test]
fn dhcp_proxy_beside_dnsmasq() {
    let dir = tempfile::tempdir().unwrap();
    let lan = Lan::new(Some(NODE1_MAC));
    let cfg = write_config(&lan, dir.path(), "mode = \"proxy\"");
    // Proxy mode needs no subnet: drop it (and the unused router/dns are fine either way).
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("subnet"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&cfg, text).unwrap();

    // The network's own DHCP server, handing out .50–.60.
    let _dns = dnsmasq(
        &lan.server,
        &lan.server_if,
        lan.addr(50),
        lan.addr(60),
        dir.path(),
    );
    let seed = start_seed(&lan, &cfg);
    assert!(seed.output().contains("(proxy)"), "{}", seed.output());

    // 1. An OS client (no PXE vendor class) gets its address from dnsmasq; we stay quiet.
    // 2. A PXE DISCOVER, broadcast like firmware does, draws two offers: dnsmasq's with an
    //    address, ours with no address and the boot file.
    let (ip, replies) = os_lease_then_pxe_discover(&lan, dir.path());
    let ours: Vec<_> = replies
        .iter()
        .filter(|(_, m)| bootfile(m).is_some())
        .collect();
    let theirs: Vec<_> = replies
        .iter()
        .filter(|(_, m)| !m.yiaddr().is_unspecified())
        .collect();
    assert_eq!(ours.len(), 1, "{replies:#?}");
    assert!(!theirs.is_empty(), "no offer from dnsmasq: {replies:#?}");
    let (_, proxy_offer) = ours[0];
    assert_eq!(proxy_offer.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(proxy_offer.siaddr(), lan.server_ip());
    assert_eq!(bootfile(proxy_offer).as_deref(), Some("undionly.kpxe"));
    assert!(proxy_offer
        .opts()
        .get(OptionCode::AddressLeaseTime)
        .is_none());

    // 3. With dnsmasq's address configured, the PXE REQUEST to port 4011 gets our ACK.
    let o = ip.octets();
    lan.client.ip(&[
        "addr",
        "add",
        &format!("{}.{}.{}.{}/24", o[0], o[1], o[2], o[3]),
        "dev",
        &lan.client_if,
    ]);
    let mut req = message(mac_bytes(NODE1_MAC), MessageType::Request, pxe_opts());
    req.set_ciaddr(ip);
    let replies = exchange(
        &lan,
        68,
        SocketAddrV4::new(lan.server_ip(), 4011),
        vec![encode(&req)],
        Duration::from_secs(2),
    );
    let (from, ack) = replies
        .iter()
        .find(|(_, m)| m.opts().msg_type() == Some(MessageType::Ack))
        .unwrap_or_else(|| panic!("no ACK on 4011: {replies:#?}\n{}", seed.output()));
    assert_eq!(
        *from,
        SocketAddr::from(SocketAddrV4::new(lan.server_ip(), 4011))
    );
    assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(bootfile(ack).as_deref(), Some("undionly.kpxe"));
    let log = seed.output();
    assert!(
        log.contains("on port 4011 → ACK file=undionly.kpxe (proxy)"),
        "{log}"
    );
}

#[test]
fn dhcp_perfdhcp_completes_four_way_exchanges() {
    let perfdhcp = tests::require("perfdhcp");
    let dir = tempfile::tempdir().unwrap();
    let lan = Lan::new(None);
    let cfg = write_config(
        &lan,
        dir.path(),
        &format!("{}\ndiscovery = true", pool(&lan)),
    );
    let _seed = start_seed(&lan, &cfg);
    // perfdhcp acts as a relay from its own address (giaddr), outside the pool.
    lan.address_client(2);
    let out = lan
        .client
        .cmd("timeout")
        .arg("60")
        .arg(perfdhcp)
        .args([
            "-4",
            "-r",
            "100",
            "-R",
            "50",
            "-n",
            "500",
            "-l",
            &lan.client_if,
        ])
        .arg(lan.server_ip().to_string())
        .output()
        .expect("running perfdhcp");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    eprintln!("perfdhcp:\n{text}");
    // Two summaries: DISCOVER-OFFER, then REQUEST-ACK.
    let count = |key: &str| -> Vec<u64> {
        text.lines()
            .filter_map(|l| l.trim().strip_prefix(key))
            .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
            .collect()
    };
    let sent = count("sent packets:");
    let received = count("received packets:");
    assert_eq!(sent.len(), 2, "no exchange summaries in:\n{text}");
    assert_eq!(received.len(), 2, "{text}");
    assert!(sent[0] >= 500, "{text}");
    assert_eq!(count("non unique addresses:"), vec![0, 0], "{text}");
    assert_eq!(count("rejected leases:"), vec![0, 0], "{text}");
    for (s, r) in sent.iter().zip(&received) {
        assert!(
            *r * 100 >= *s * 95,
            "more than 5% lost ({r} of {s}):\n{text}"
        );
    }
}

/// Beside dnsmasq (handing out .50–.60): an OS client (udhcpc, no PXE vendor class) gets its
/// address from dnsmasq and no boot file (that address is returned); then node1's PXE
/// DISCOVER, broadcast like firmware does, and the replies it drew.
fn os_lease_then_pxe_discover(lan: &Lan, dir: &Path) -> (Ipv4Addr, Vec<(SocketAddr, Message)>) {
    // -B: ask for broadcast replies (dnsmasq would otherwise unicast to the unconfigured client).
    let env = tests::udhcpc(lan, dir, &["-B"]).expect("no lease from dnsmasq");
    let ip: Ipv4Addr = env["ip"].parse().unwrap();
    assert!((50..=60).contains(&ip.octets()[3]), "{ip} is not dnsmasq's");
    assert!(!env.contains_key("boot_file"));
    let discover = message(mac_bytes(NODE1_MAC), MessageType::Discover, pxe_opts());
    let replies = exchange(
        lan,
        68,
        BROADCAST_67,
        vec![encode(&discover)],
        Duration::from_secs(2),
    );
    (ip, replies)
}

/// dnsmasq in `ns` on `iface`, handing out `lo`–`hi`, with its DHCP log on stdout.
fn dnsmasq(ns: &tests::netns::Netns, iface: &str, lo: Ipv4Addr, hi: Ipv4Addr, dir: &Path) -> Child {
    let mut cmd = ns.cmd(tests::require("dnsmasq"));
    cmd.args([
        "--no-daemon",
        "--conf-file=/dev/null",
        "--bind-interfaces",
        "--port=0",
        "--no-resolv",
        "--log-dhcp",
        "--log-facility=-",
    ])
    .arg(format!("--interface={iface}"))
    .arg(format!("--dhcp-range={lo},{hi},255.255.255.0,1h"))
    .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
    .arg(format!(
        "--dhcp-leasefile={}",
        dir.join("dnsmasq.leases").display()
    ));
    let mut dns = Child::spawn("dnsmasq", cmd);
    dns.wait_for_log("DHCP, IP range", Duration::from_secs(10));
    dns
}

/// `mode = "auto"` beside another DHCP server (dnsmasq, in a namespace of its own on the same
/// switch): the seed's probe draws dnsmasq's OFFER (after dnsmasq's 3 s ping check of the
/// address: the probe must listen longer than that), the seed serves ProxyDHCP only and says
/// so, a client's address comes from dnsmasq, and a PXE DISCOVER gets the seed's boot offer
/// (no address) beside dnsmasq's address offer.
#[test]
fn dhcp_auto_probe_finds_dnsmasq_and_serves_proxy_only() {
    let dir = tempfile::tempdir().unwrap();
    let (lan, sw) = Lan::switched(Some(NODE1_MAC));
    let other = tests::netns::Netns::new("dns");
    sw.plug(&other, "veth-d");
    let o = lan.net.octets();
    other.ip(&[
        "addr",
        "add",
        &format!("{}.{}.{}.2/24", o[0], o[1], o[2]),
        "dev",
        "veth-d",
    ]);
    let dns = dnsmasq(&other, "veth-d", lan.addr(50), lan.addr(60), dir.path());
    let cfg = write_config(&lan, dir.path(), "mode = \"auto\"\nprobe_secs = 5");
    let seed = start_seed(&lan, &cfg);
    let log = seed.output();
    assert!(
        log.contains(&format!("another DHCP server ({}) offered", lan.addr(2))),
        "{log}\ndnsmasq:\n{}",
        dns.output()
    );
    assert!(log.contains("dhcp: serving (proxy)"), "{log}");
    assert!(
        dns.output().contains("DHCPDISCOVER(veth-d)"),
        "dnsmasq heard the probe:\n{}",
        dns.output()
    );

    // A client's address comes from dnsmasq; no boot file for an OS client. A PXE client
    // gets the seed's boot information, and its address from dnsmasq only.
    let (ip, replies) = os_lease_then_pxe_discover(&lan, dir.path());
    let from_seed: Vec<_> = replies
        .iter()
        .filter(|(_, m)| m.siaddr() == lan.server_ip() && bootfile(m).is_some())
        .collect();
    assert_eq!(from_seed.len(), 1, "{replies:#?}");
    assert_eq!(
        from_seed[0].1.yiaddr(),
        Ipv4Addr::UNSPECIFIED,
        "no address from the seed"
    );
    assert!(
        replies
            .iter()
            .any(|(_, m)| (50..=60).contains(&m.yiaddr().octets()[3])),
        "dnsmasq's offer: {replies:#?}"
    );

    // The mode served is on /metrics.
    lan.client
        .ip(&["addr", "add", &format!("{ip}/24"), "dev", &lan.client_if]);
    let (code, metrics) = lan.client_get(8080, "/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("dhcp_mode{mode=\"proxy\"} 1\n"),
        "{metrics}"
    );
}

/// `mode = "auto"` alone on its network: after the probe window, authoritative, as configured
/// otherwise (node1 gets its reservation).
#[test]
fn dhcp_auto_probe_alone_serves_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let lan = Lan::new(Some(NODE1_MAC));
    let cfg = write_config(&lan, dir.path(), "mode = \"auto\"\nprobe_secs = 2");
    let seed = start_seed(&lan, &cfg);
    let log = seed.output();
    assert!(log.contains("no other DHCP server answered"), "{log}");
    assert!(log.contains("dhcp: serving (authoritative)"), "{log}");
    let env = tests::udhcpc(&lan, dir.path(), &[]).expect("a lease from the seed");
    assert_eq!(env["ip"], lan.addr(10).to_string());
}
