//! The userspace wire without QEMU: the seed's smoltcp stack joined to a lab-style multicast
//! wire on loopback, probed with hand-made Ethernet frames through `qemu::wire::Wire`: ARP is
//! answered, ICMP echo is answered, and a broadcast DHCPDISCOVER from 0.0.0.0 gets a broadcast
//! OFFER of the node's reservation from the DHCP engine running on the wire, and a TFTP read
//! is served from an ephemeral port of the wire.

use dhcproto::v4::{self, Decodable, Encodable};
use netboot::config::NetbootConfig;
use qemu::wire::{Wire, WireAddr};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const SEED_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 50);
const PEER_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const NODE_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xab, 0xcd, 0x01];

fn unique_wire() -> WireAddr {
    static N: AtomicU32 = AtomicU32::new(0);
    WireAddr::for_lab(&format!(
        "wire-stack-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Start `seed netboot`'s services in-process on `wire`; returns the seed's MAC.
fn start_seed(
    rt: &tokio::runtime::Runtime,
    wire: WireAddr,
    dir: &std::path::Path,
    shutdown: CancellationToken,
) -> [u8; 6] {
    std::fs::create_dir_all(dir.join("http")).unwrap();
    let text = tests::wire_config_head(SEED_IP, &dir.join("state"), &wire, true)
        + &format!(
            r#"
[dhcp]
subnet = "10.77.0.0/24"
router = "{SEED_IP}"
lease_time = 600

[http]
root = "{http}"
port = 80

[tftp]
root = "{http}"

[[nodes]]
mac = "52:54:00:ab:cd:01"
ip = "10.77.0.10"
hostname = "node1"
"#,
            http = dir.join("http").display(),
        );
    let cfg = NetbootConfig::from_toml(&text).unwrap();
    let mac = cfg.wire.as_ref().unwrap().mac_for(cfg.server_ip).0;
    let policy = Arc::new(cfg.static_policy());
    let metrics = Arc::new(netboot::metrics::Metrics::default());
    rt.spawn(async move {
        netboot::server::run(cfg, policy, metrics, shutdown)
            .await
            .expect("netboot on the wire");
    });
    mac
}

/// Wait (bounded) for a frame accepted by `pick`; `None` after `timeout`.
fn wait_frame(
    wire: &Wire,
    timeout: Duration,
    mut pick: impl FnMut(&[u8]) -> bool,
) -> Option<Vec<u8>> {
    let start = Instant::now();
    let mut buf = vec![0u8; 2048];
    while start.elapsed() < timeout {
        if let Some(n) = wire
            .recv_frame(&mut buf, Duration::from_millis(100))
            .unwrap()
        {
            if pick(&buf[..n]) {
                return Some(buf[..n].to_vec());
            }
        }
    }
    None
}

fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&PEER_IP.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet + IPv4 frame around `payload` of protocol `proto`.
fn ipv4_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0, 0, 64, proto, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = dst_mac.to_vec();
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(payload);
    f
}

/// One test's seed on a wire of its own (files in `tmp`), the test's end of that wire, and
/// what stops the seed (`shutdown`, then drop `rt`).
struct Rig {
    tmp: tempfile::TempDir,
    wire: Wire,
    rt: tokio::runtime::Runtime,
    shutdown: CancellationToken,
    seed_mac: [u8; 6],
}

impl Rig {
    fn start() -> Rig {
        let tmp = tempfile::tempdir().unwrap();
        let addr = unique_wire();
        let wire = Wire::join(addr).unwrap();
        let rt = tests::runtime();
        let shutdown = CancellationToken::new();
        let seed_mac = start_seed(&rt, addr, tmp.path(), shutdown.clone());
        Rig {
            tmp,
            wire,
            rt,
            shutdown,
            seed_mac,
        }
    }
}

#[test]
fn wire_answers_arp_and_icmp_echo() {
    let Rig {
        tmp,
        wire,
        rt,
        shutdown,
        seed_mac,
    } = Rig::start();

    // ARP: asked again until the stack is up (bounded).
    let mut reply = None;
    for _ in 0..50 {
        wire.send_frame(&arp_request(SEED_IP)).unwrap();
        reply = wait_frame(&wire, Duration::from_millis(200), |f| {
            f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 2]
        });
        if reply.is_some() {
            break;
        }
    }
    let reply = reply.expect("no ARP reply from the seed");
    assert_eq!(&reply[0..6], &PEER_MAC, "ARP reply unicast to the asker");
    assert_eq!(&reply[22..28], &seed_mac, "sender MAC is the seed's");
    assert_eq!(&reply[28..32], &SEED_IP.octets(), "sender IP is server_ip");
    assert_eq!(&reply[32..38], &PEER_MAC);

    // A request for another address is not answered.
    wire.send_frame(&arp_request(Ipv4Addr::new(10, 77, 0, 99)))
        .unwrap();
    assert!(
        wait_frame(&wire, Duration::from_millis(500), |f| f.len() >= 42
            && f[12..14] == [0x08, 0x06]
            && f[20..22] == [0, 2])
        .is_none(),
        "the seed answered ARP for an address it does not own"
    );

    // ICMP echo.
    let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34, 0, 7];
    icmp.extend_from_slice(b"seed-wire-ping");
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    wire.send_frame(&ipv4_frame(seed_mac, PEER_MAC, PEER_IP, SEED_IP, 1, &icmp))
        .unwrap();
    let echo = wait_frame(&wire, Duration::from_secs(5), |f| {
        f.len() >= 42 && f[12..14] == [0x08, 0x00] && f[23] == 1 && f[34] == 0
    })
    .expect("no ICMP echo reply");
    assert_eq!(&echo[0..6], &PEER_MAC);
    assert_eq!(&echo[26..30], &SEED_IP.octets());
    assert_eq!(&echo[30..34], &PEER_IP.octets());
    assert_eq!(&echo[38..40], &[0x12, 0x34], "identifier echoed");
    assert_eq!(&echo[42..], b"seed-wire-ping");

    shutdown.cancel();
    drop(rt);
    let pcap = std::fs::read(tmp.path().join("state/wire.pcap")).unwrap();
    assert_eq!(&pcap[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "pcap magic");
    assert!(pcap.len() > 24 + 3 * 16, "frames captured");
}

#[test]
fn wire_serves_dhcp_to_a_broadcasting_client() {
    let Rig {
        tmp: _tmp,
        wire,
        rt: _rt,
        shutdown,
        seed_mac,
    } = Rig::start();

    let mut msg = v4::Message::default();
    msg.set_opcode(v4::Opcode::BootRequest)
        .set_xid(0xfeed)
        .set_flags(v4::Flags::default().set_broadcast())
        .set_chaddr(&NODE_MAC);
    msg.opts_mut()
        .insert(v4::DhcpOption::MessageType(v4::MessageType::Discover));
    let dhcp = msg.to_vec().unwrap();
    let mut udp = 68u16.to_be_bytes().to_vec();
    udp.extend_from_slice(&67u16.to_be_bytes());
    udp.extend_from_slice(&((8 + dhcp.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]); // no checksum (allowed over IPv4)
    udp.extend_from_slice(&dhcp);
    let discover = ipv4_frame(
        [0xff; 6],
        NODE_MAC,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        17,
        &udp,
    );
    let is_offer = |f: &[u8]| {
        f.len() > 42
            && f[12..14] == [0x08, 0x00]
            && f[23] == 17
            && f[34..36] == 67u16.to_be_bytes()
            && f[36..38] == 68u16.to_be_bytes()
    };
    let mut offer = None;
    for _ in 0..50 {
        wire.send_frame(&discover).unwrap();
        offer = wait_frame(&wire, Duration::from_millis(200), is_offer);
        if offer.is_some() {
            break;
        }
    }
    let f = offer.expect("no DHCP reply from the seed on the wire");
    assert_eq!(&f[6..12], &seed_mac, "sent by the seed");
    assert_eq!(&f[30..34], &[255; 4], "broadcast to 255.255.255.255");
    assert_eq!(&f[0..6], &[0xff; 6], "Ethernet broadcast");
    let reply = v4::Message::decode(&mut v4::Decoder::new(&f[42..])).unwrap();
    assert_eq!(reply.xid(), 0xfeed);
    assert_eq!(
        reply.yiaddr(),
        Ipv4Addr::new(10, 77, 0, 10),
        "the reservation"
    );
    assert_eq!(
        reply.opts().msg_type(),
        Some(v4::MessageType::Offer),
        "an OFFER"
    );
    shutdown.cancel();
}

/// A UDP datagram from the test's peer to the seed (no UDP checksum, allowed over IPv4).
fn udp_to_seed(seed_mac: [u8; 6], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut udp = sport.to_be_bytes().to_vec();
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    ipv4_frame(seed_mac, PEER_MAC, PEER_IP, SEED_IP, 17, &udp)
}

#[test]
fn wire_serves_a_tftp_read_from_an_ephemeral_port() {
    let Rig {
        tmp,
        wire,
        rt: _rt,
        shutdown,
        seed_mac,
    } = Rig::start();
    let data: Vec<u8> = (0..1300u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(tmp.path().join("http/boot.bin"), &data).unwrap();

    // Introduce ourselves (ARP) so the seed can answer us, once its stack is up.
    let is_arp_reply = |f: &[u8]| f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 2];
    let mut up = false;
    for _ in 0..50 {
        wire.send_frame(&arp_request(SEED_IP)).unwrap();
        if wait_frame(&wire, Duration::from_millis(200), is_arp_reply).is_some() {
            up = true;
            break;
        }
    }
    assert!(up, "the seed never answered ARP");

    let is_tftp_to_us = |f: &[u8]| {
        f.len() >= 46
            && f[12..14] == [0x08, 0x00]
            && f[23] == 17
            && f[26..30] == SEED_IP.octets()
            && f[36..38] == 2000u16.to_be_bytes()
    };
    let rrq = b"\x00\x01boot.bin\x00octet\x00";
    let mut got = Vec::new();
    let mut tid = None;
    let mut frame = None;
    for _ in 0..20 {
        wire.send_frame(&udp_to_seed(seed_mac, 2000, 69, rrq))
            .unwrap();
        frame = wait_frame(&wire, Duration::from_millis(500), is_tftp_to_us);
        if frame.is_some() {
            break;
        }
    }
    for block in 1..=3u16 {
        let f = frame
            .take()
            .unwrap_or_else(|| panic!("no DATA block {block}"));
        let sport = u16::from_be_bytes([f[34], f[35]]);
        assert_ne!(sport, 69, "a transfer answers from its own port");
        assert_eq!(*tid.get_or_insert(sport), sport, "one TID per transfer");
        assert_eq!(&f[42..46], &[0, 3, 0, block as u8], "DATA block {block}");
        got.extend_from_slice(&f[46..]);
        wire.send_frame(&udp_to_seed(seed_mac, 2000, sport, &[0, 4, 0, block as u8]))
            .unwrap();
        if block < 3 {
            frame = wait_frame(&wire, Duration::from_secs(5), |f| {
                is_tftp_to_us(f) && f[44..46] == (block + 1).to_be_bytes()
            });
        }
    }
    assert_eq!(got, data, "1300 bytes in blocks of 512, 512, 276");
    shutdown.cancel();
}
