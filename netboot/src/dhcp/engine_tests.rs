//! Engine tests: requests as bytes in, replies decoded and checked field by field, on virtual
//! time.

use super::*;
use crate::dhcp::{Bootfiles, Pool};
use crate::BootAction;
use dhcproto::v4::{Architecture, Decodable, Decoder, UnknownOption};
use std::sync::Mutex;
use std::time::Duration;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 200, 1, 1);
const NODE1: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
const NODE2: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 2]);
/// Known to the policy only, with `chain = "tftp"`.
const CHAINED: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 3]);
const STRANGER: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0x99]);
const NODE1_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 1, 10);
const POOL_START: Ipv4Addr = Ipv4Addr::new(10, 200, 1, 100);
const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68);
const BCAST: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::BROADCAST, 68);

#[derive(Default)]
struct TestPolicy {
    discovered: Mutex<Vec<MacAddr>>,
    seen: Mutex<Vec<(MacAddr, Ipv4Addr)>>,
    /// An HA follower's policy: serves nothing.
    follower: std::sync::atomic::AtomicBool,
}

impl BootPolicy for TestPolicy {
    fn boot_action(&self, mac: MacAddr) -> Option<BootAction> {
        (mac == NODE1 || mac == NODE2 || mac == CHAINED).then_some(BootAction::Exit)
    }
    fn chain(&self, mac: MacAddr) -> Chain {
        if mac == CHAINED {
            Chain::Tftp
        } else {
            Chain::Direct
        }
    }
    fn discovered(&self, mac: MacAddr) -> bool {
        self.discovered.lock().unwrap().push(mac);
        true
    }
    fn address_seen(&self, mac: MacAddr, ip: Ipv4Addr) {
        self.seen.lock().unwrap().push((mac, ip));
    }
    fn serving(&self) -> bool {
        !self.follower.load(std::sync::atomic::Ordering::SeqCst)
    }
}

struct Rig {
    engine: Engine,
    metrics: Metrics,
    policy: Arc<TestPolicy>,
    now: SystemTime,
}

fn config(mode: DhcpMode, discovery: bool) -> DhcpConfig {
    DhcpConfig {
        mode,
        subnet: Some("10.200.1.0/24".parse().unwrap()),
        router: Some(SERVER),
        dns: vec![SERVER],
        lease_time: 3600,
        pool: Some(Pool {
            start: POOL_START,
            end: Ipv4Addr::new(10, 200, 1, 102),
        }),
        discovery,
        addresses_for_unknown: false,
        bootfiles: Bootfiles::default(),
        probe_secs: 4,
    }
}

fn nodes() -> Vec<NodeEntry> {
    vec![
        NodeEntry {
            mac: NODE1,
            ip: Some(NODE1_IP),
            hostname: Some("node1".into()),
            boot: BootAction::Exit,
            chain: Chain::Direct,
        },
        NodeEntry {
            mac: NODE2,
            ip: None,
            hostname: None,
            boot: BootAction::Exit,
            chain: Chain::Direct,
        },
    ]
}

impl Rig {
    fn with(cfg: DhcpConfig, leases: LeaseTable) -> Self {
        let metrics = Metrics::default();
        let policy = Arc::new(TestPolicy::default());
        let engine = Engine::new(
            cfg,
            SERVER,
            Some("http://10.200.1.1:8080".into()),
            &nodes(),
            policy.clone(),
            &metrics,
            leases,
        )
        .unwrap();
        Self {
            engine,
            metrics,
            policy,
            now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        }
    }

    fn new(discovery: bool) -> Self {
        Self::with(
            config(DhcpMode::Authoritative, discovery),
            LeaseTable::default(),
        )
    }

    fn proxy() -> Self {
        let mut cfg = config(DhcpMode::Proxy, false);
        cfg.subnet = None;
        cfg.pool = None;
        Self::with(cfg, LeaseTable::default())
    }

    fn send_on(&mut self, msg: &Message, src: SocketAddrV4, port: u16) -> Option<(Message, Reply)> {
        let bytes = encode(msg);
        let r = self.engine.handle(
            &bytes,
            RxInfo {
                src,
                local_port: port,
            },
            self.now,
        )?;
        assert!(r.payload.len() >= 300, "replies are padded to 300 bytes");
        let m = Message::decode(&mut Decoder::new(&r.payload)).unwrap();
        assert_eq!(m.opcode(), Opcode::BootReply);
        assert_eq!(m.xid(), msg.xid());
        assert_eq!(m.chaddr(), msg.chaddr());
        assert_eq!(m.opts().msg_type(), Some(r.kind));
        Some((m, r))
    }

    fn send(&mut self, msg: &Message) -> Option<(Message, Reply)> {
        self.send_on(msg, CLIENT, SERVER_PORT)
    }

    /// A plain DISCOVER from `mac`.
    fn discover(&mut self, mac: MacAddr) -> Option<(Message, Reply)> {
        self.send(&request(mac, MessageType::Discover, vec![]))
    }

    fn advance(&mut self, secs: u64) {
        self.now += Duration::from_secs(secs);
    }
}

fn encode(m: &Message) -> Vec<u8> {
    let mut v = Vec::new();
    m.encode(&mut Encoder::new(&mut v)).unwrap();
    v
}

fn request(mac: MacAddr, ty: MessageType, opts: Vec<DhcpOption>) -> Message {
    let mut m = Message::new_with_id(
        0x1234_5678,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac.0,
    );
    m.opts_mut().insert(DhcpOption::MessageType(ty));
    for o in opts {
        m.opts_mut().insert(o);
    }
    m
}

fn pxe_opts(arch: u16) -> Vec<DhcpOption> {
    vec![
        DhcpOption::ClassIdentifier(format!("PXEClient:Arch:{arch:05}:UNDI:002001").into_bytes()),
        DhcpOption::ClientSystemArchitecture(Architecture(arch)),
    ]
}

fn opt(m: &Message, code: OptionCode) -> Option<&DhcpOption> {
    m.opts().get(code)
}

fn bootfile(m: &Message) -> Option<String> {
    match opt(m, OptionCode::BootfileName) {
        Some(DhcpOption::BootfileName(b)) => Some(String::from_utf8(b.clone()).unwrap()),
        _ => None,
    }
}

fn select(mac: MacAddr, ip: Ipv4Addr, server: Ipv4Addr) -> Message {
    request(
        mac,
        MessageType::Request,
        vec![
            DhcpOption::ServerIdentifier(server),
            DhcpOption::RequestedIpAddress(ip),
        ],
    )
}

#[test]
fn a_hand_built_bios_pxe_discover_gets_the_reservation_and_undionly() {
    // A DISCOVER as a BIOS PXE ROM sends it, written out byte by byte.
    let mut p = vec![
        1, 1, 6, 0, // op, htype, hlen, hops
        0xde, 0xad, 0xbe, 0xef, // xid
        0, 4, 0x80, 0, // secs, flags (broadcast)
    ];
    p.extend_from_slice(&[0; 16]); // ciaddr yiaddr siaddr giaddr
    p.extend_from_slice(&NODE1.0);
    p.extend_from_slice(&[0; 10 + 64 + 128]); // chaddr padding, sname, file
    p.extend_from_slice(&[99, 130, 83, 99]);
    p.extend_from_slice(&[53, 1, 1]);
    p.extend_from_slice(&[57, 2, 0x04, 0xec]);
    p.extend_from_slice(&[93, 2, 0, 0]);
    p.extend_from_slice(&[94, 3, 1, 2, 1]);
    p.push(60);
    p.push(32);
    p.extend_from_slice(b"PXEClient:Arch:00000:UNDI:002001");
    p.push(255);

    let mut rig = Rig::new(false);
    let r = rig
        .engine
        .handle(
            &p,
            RxInfo {
                src: CLIENT,
                local_port: 67,
            },
            rig.now,
        )
        .expect("an offer");
    assert_eq!(r.kind, MessageType::Offer);
    assert_eq!(r.to, BCAST);
    assert_eq!(r.from_port, 67);
    let m = Message::decode(&mut Decoder::new(&r.payload)).unwrap();
    assert_eq!(m.xid(), 0xdead_beef);
    assert!(m.flags().broadcast());
    assert_eq!(m.yiaddr(), NODE1_IP);
    assert_eq!(m.siaddr(), SERVER);
    assert_eq!(
        m.fname_str().unwrap().unwrap().trim_end_matches('\0'),
        "undionly.kpxe"
    );
    assert_eq!(bootfile(&m).as_deref(), Some("undionly.kpxe"));
    assert_eq!(
        opt(&m, OptionCode::TFTPServerName),
        Some(&DhcpOption::TFTPServerName(b"10.200.1.1".to_vec()))
    );
    assert_eq!(
        opt(&m, OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER))
    );
    assert_eq!(
        opt(&m, OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
    );
    assert_eq!(
        opt(&m, OptionCode::Hostname),
        Some(&DhcpOption::Hostname("node1".into()))
    );
    assert_eq!(
        opt(&m, OptionCode::SubnetMask),
        Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
    );
    assert_eq!(rig.metrics.get("dhcp_rx_discover_total"), 1);
    assert_eq!(rig.metrics.get("dhcp_tx_offer_total"), 1);
}

#[test]
fn request_is_acked_with_lease_t1_t2_and_persisted() {
    let mut rig = Rig::new(false);
    let (offer, _) = rig
        .send(&request(NODE1, MessageType::Discover, pxe_opts(7)))
        .unwrap();
    assert_eq!(bootfile(&offer).as_deref(), Some("snponly.efi"));
    assert!(!rig.engine.take_dirty(), "an offer is not persisted");
    let mut req = select(NODE1, NODE1_IP, SERVER);
    for o in pxe_opts(7) {
        req.opts_mut().insert(o);
    }
    let (ack, r) = rig.send(&req).unwrap();
    assert_eq!(r.kind, MessageType::Ack);
    assert_eq!(ack.yiaddr(), NODE1_IP);
    assert_eq!(
        opt(&ack, OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(3600))
    );
    assert_eq!(
        opt(&ack, OptionCode::Renewal),
        Some(&DhcpOption::Renewal(1800))
    );
    assert_eq!(
        opt(&ack, OptionCode::Rebinding),
        Some(&DhcpOption::Rebinding(3150))
    );
    assert_eq!(bootfile(&ack).as_deref(), Some("snponly.efi"));
    assert!(rig.engine.take_dirty(), "a bound lease must be persisted");
    assert_eq!(rig.engine.leases().ip_of(NODE1), Some(NODE1_IP));
}

#[test]
fn a_wrong_requested_address_gets_a_broadcast_nak() {
    let mut rig = Rig::new(false);
    let wrong = Ipv4Addr::new(10, 200, 1, 50);
    let req = request(
        NODE1,
        MessageType::Request,
        vec![DhcpOption::RequestedIpAddress(wrong)],
    );
    let (nak, r) = rig.send(&req).unwrap();
    assert_eq!(r.kind, MessageType::Nak);
    assert_eq!(r.to, BCAST);
    assert_eq!(nak.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(opt(&nak, OptionCode::AddressLeaseTime).is_none());
    match opt(&nak, OptionCode::Message) {
        Some(DhcpOption::Message(s)) => assert!(s.contains("10.200.1.10"), "{s}"),
        other => panic!("no message: {other:?}"),
    }
    // Another network entirely.
    let elsewhere = request(
        NODE1,
        MessageType::Request,
        vec![DhcpOption::RequestedIpAddress(Ipv4Addr::new(
            192, 168, 0, 5,
        ))],
    );
    assert_eq!(rig.send(&elsewhere).unwrap().1.kind, MessageType::Nak);
    assert_eq!(rig.metrics.get("dhcp_tx_nak_total"), 2);
}

#[test]
fn choosing_another_server_frees_our_offer() {
    let mut rig = Rig::new(true);
    let (offer, _) = rig.discover(STRANGER).unwrap();
    let ip = offer.yiaddr();
    assert_eq!(ip, POOL_START);
    let other = Ipv4Addr::new(10, 200, 1, 254);
    assert!(rig.send(&select(STRANGER, ip, other)).is_none());
    assert!(rig.engine.leases().ip_of(STRANGER).is_none());
    // The address is free for someone else at once.
    let (offer2, _) = rig.discover(NODE2).unwrap();
    assert_eq!(offer2.yiaddr(), ip);
}

#[test]
fn renewing_is_unicast_to_ciaddr_and_extends_the_lease() {
    let mut rig = Rig::new(false);
    rig.send(&select(NODE2, POOL_START, SERVER)).unwrap();
    let before = rig.engine.leases().get(POOL_START).unwrap().expires;
    rig.advance(1800); // T1
    let mut renew = request(NODE2, MessageType::Request, vec![]);
    renew.set_ciaddr(POOL_START);
    let src = SocketAddrV4::new(POOL_START, 68);
    let (ack, r) = rig.send_on(&renew, src, 67).unwrap();
    assert_eq!(r.kind, MessageType::Ack);
    assert_eq!(r.to, SocketAddrV4::new(POOL_START, 68));
    assert_eq!(ack.yiaddr(), POOL_START);
    assert_eq!(
        rig.engine.leases().get(POOL_START).unwrap().expires,
        before + 1800
    );
}

#[test]
fn unknown_macs_are_ignored_unless_discovery_is_on() {
    let mut off = Rig::new(false);
    assert!(off
        .send(&request(STRANGER, MessageType::Discover, pxe_opts(0)))
        .is_none());
    assert_eq!(off.metrics.get("dhcp_ignored_total"), 1);
    assert!(off.policy.discovered.lock().unwrap().is_empty());

    let mut on = Rig::new(true);
    let (offer, _) = on
        .send(&request(STRANGER, MessageType::Discover, pxe_opts(0)))
        .unwrap();
    assert_eq!(offer.yiaddr(), POOL_START);
    assert_eq!(bootfile(&offer).as_deref(), Some("undionly.kpxe"));
    on.discover(STRANGER).unwrap();
    assert_eq!(
        *on.policy.discovered.lock().unwrap(),
        vec![STRANGER],
        "reported once"
    );
}

/// The site's DHCP server role: a PXE client nobody listed gets an address and no boot file
/// (another server's ProxyDHCP boots it); a listed node still gets both.
#[test]
fn addresses_for_unknown_give_an_address_and_no_boot_file() {
    let mut cfg = config(DhcpMode::Authoritative, false);
    cfg.addresses_for_unknown = true;
    let mut r = Rig::with(cfg, LeaseTable::default());
    let (offer, _) = r
        .send(&request(STRANGER, MessageType::Discover, pxe_opts(0)))
        .unwrap();
    assert_eq!(offer.yiaddr(), POOL_START);
    assert_eq!(bootfile(&offer), None);
    assert!(opt(&offer, OptionCode::ClassIdentifier).is_none());
    let (ack, _) = r.send(&select(STRANGER, POOL_START, SERVER)).unwrap();
    assert_eq!(ack.yiaddr(), POOL_START);
    assert_eq!(bootfile(&ack), None);
    assert!(
        r.policy.discovered.lock().unwrap().is_empty(),
        "not reported"
    );
    let (known, _) = r
        .send(&request(NODE1, MessageType::Discover, pxe_opts(0)))
        .unwrap();
    assert_eq!(known.yiaddr(), NODE1_IP);
    assert_eq!(bootfile(&known).as_deref(), Some("undionly.kpxe"));
    // Refused beside discovery (which boots unknown machines) and in proxy mode.
    for (discovery, mode) in [(true, "authoritative"), (false, "proxy")] {
        let text = format!(
            "mode = \"{mode}\"\nsubnet = \"10.0.0.0/24\"\ndiscovery = {discovery}\n\
             addresses_for_unknown = true\n"
        );
        let e = toml::from_str::<DhcpConfig>(&text).unwrap_err().to_string();
        assert!(e.contains("addresses_for_unknown"), "{e}");
    }
}

#[test]
fn pool_addresses_are_distinct_sticky_and_bounded() {
    let mut rig = Rig::new(true);
    let (a, _) = rig.discover(NODE2).unwrap();
    let (b, _) = rig.discover(STRANGER).unwrap();
    assert_ne!(a.yiaddr(), b.yiaddr());
    let (a2, _) = rig.discover(NODE2).unwrap();
    assert_eq!(a.yiaddr(), a2.yiaddr(), "same MAC, same offer");
    let third = MacAddr([2, 0, 0, 0, 0, 3]);
    rig.discover(third).unwrap();
    // Pool of three is now held by three offers.
    let fourth = MacAddr([2, 0, 0, 0, 0, 4]);
    assert!(rig.discover(fourth).is_none());
    // Offers lapse; then the pool has room again.
    rig.advance(OFFER_HOLD_SECS);
    assert!(rig.discover(fourth).is_some());
}

#[test]
fn an_expired_lease_is_reclaimed_only_after_it_expires() {
    let mut cfg = config(DhcpMode::Authoritative, true);
    cfg.lease_time = 60;
    cfg.pool = Some(Pool {
        start: POOL_START,
        end: POOL_START,
    });
    let mut rig = Rig::with(cfg, LeaseTable::default());
    rig.send(&select(NODE2, POOL_START, SERVER)).unwrap();
    assert!(rig.discover(STRANGER).is_none());
    rig.advance(61);
    let (o, _) = rig.discover(STRANGER).unwrap();
    assert_eq!(o.yiaddr(), POOL_START);
}

#[test]
fn a_declined_address_is_quarantined() {
    let mut rig = Rig::new(false);
    rig.send(&select(NODE2, POOL_START, SERVER)).unwrap();
    rig.engine.take_dirty();
    let decline = request(
        NODE2,
        MessageType::Decline,
        vec![
            DhcpOption::RequestedIpAddress(POOL_START),
            DhcpOption::ServerIdentifier(SERVER),
        ],
    );
    assert!(rig.send(&decline).is_none());
    assert!(rig.engine.take_dirty(), "quarantine is persisted");
    let (o, _) = rig.discover(NODE2).unwrap();
    assert_ne!(o.yiaddr(), POOL_START);
    // A declined reservation leaves its node without an address until the quarantine ends.
    let decline1 = request(
        NODE1,
        MessageType::Decline,
        vec![DhcpOption::RequestedIpAddress(NODE1_IP)],
    );
    assert!(rig.send(&decline1).is_none());
    assert!(rig.discover(NODE1).is_none());
    rig.advance(3600);
    assert!(rig.discover(NODE1).is_some());
    assert_eq!(rig.metrics.get("dhcp_rx_decline_total"), 2);
}

#[test]
fn release_frees_the_address() {
    let mut rig = Rig::new(true);
    rig.send(&select(NODE2, POOL_START, SERVER)).unwrap();
    let mut release = request(
        NODE2,
        MessageType::Release,
        vec![DhcpOption::ServerIdentifier(SERVER)],
    );
    release.set_ciaddr(POOL_START);
    // Someone else cannot release it.
    let mut spoof = release.clone();
    spoof.set_chaddr(&STRANGER.0);
    assert!(rig.send(&spoof).is_none());
    assert_eq!(rig.engine.leases().ip_of(NODE2), Some(POOL_START));
    assert!(rig.send(&release).is_none());
    assert_eq!(rig.engine.leases().ip_of(NODE2), None);
    assert!(rig.engine.take_dirty());
    let (o, _) = rig.discover(STRANGER).unwrap();
    assert_eq!(o.yiaddr(), POOL_START);
}

#[test]
fn inform_gets_options_but_no_lease() {
    let mut rig = Rig::new(false);
    let mut inform = request(NODE1, MessageType::Inform, pxe_opts(0));
    inform.set_ciaddr(NODE1_IP);
    let (ack, r) = rig.send(&inform).unwrap();
    assert_eq!(r.kind, MessageType::Ack);
    assert_eq!(r.to, SocketAddrV4::new(NODE1_IP, 68));
    assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(opt(&ack, OptionCode::AddressLeaseTime).is_none());
    assert!(opt(&ack, OptionCode::Router).is_some());
    assert_eq!(bootfile(&ack).as_deref(), Some("undionly.kpxe"));
}

#[test]
fn relayed_requests_go_back_to_the_relay_with_option_82() {
    let mut rig = Rig::new(false);
    let relay = Ipv4Addr::new(10, 200, 1, 254);
    let mut d = request(NODE1, MessageType::Discover, pxe_opts(0));
    d.set_giaddr(relay).set_hops(1);
    let agent = DhcpOption::Unknown(UnknownOption::new(
        OptionCode::Unknown(82),
        vec![1, 2, 0, 7],
    ));
    // dhcproto decodes option 82 into its own type; compare through a round trip instead.
    d.opts_mut().insert(agent);
    let d = Message::decode(&mut Decoder::new(&encode(&d))).unwrap();
    let (offer, r) = rig.send_on(&d, SocketAddrV4::new(relay, 67), 67).unwrap();
    assert_eq!(r.to, SocketAddrV4::new(relay, 67));
    assert_eq!(offer.giaddr(), relay);
    assert_eq!(offer.yiaddr(), NODE1_IP);
    assert_eq!(
        opt(&offer, OptionCode::RelayAgentInformation),
        opt(&d, OptionCode::RelayAgentInformation)
    );
    assert!(opt(&offer, OptionCode::RelayAgentInformation).is_some());

    // A NAK through a relay sets the broadcast bit and still goes to the relay.
    let mut bad = request(
        NODE1,
        MessageType::Request,
        vec![DhcpOption::RequestedIpAddress(Ipv4Addr::new(
            10, 200, 1, 77,
        ))],
    );
    bad.set_giaddr(relay);
    let (nak, r) = rig.send(&bad).unwrap();
    assert_eq!(r.kind, MessageType::Nak);
    assert_eq!(r.to, SocketAddrV4::new(relay, 67));
    assert!(nak.flags().broadcast());

    // A relay on a subnet we do not serve is ignored.
    let mut foreign = request(NODE1, MessageType::Discover, vec![]);
    foreign.set_giaddr(Ipv4Addr::new(172, 16, 0, 1));
    assert!(rig.send(&foreign).is_none());
}

#[test]
fn proxy_mode_offers_boot_info_without_an_address() {
    let mut rig = Rig::proxy();
    let (offer, r) = rig
        .send(&request(NODE1, MessageType::Discover, pxe_opts(0)))
        .unwrap();
    assert_eq!(r.kind, MessageType::Offer);
    assert_eq!(r.to, BCAST);
    assert_eq!(offer.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(offer.siaddr(), SERVER);
    assert_eq!(bootfile(&offer).as_deref(), Some("undionly.kpxe"));
    assert!(opt(&offer, OptionCode::AddressLeaseTime).is_none());
    assert!(opt(&offer, OptionCode::SubnetMask).is_none());
    assert!(opt(&offer, OptionCode::Router).is_none());
    assert_eq!(
        opt(&offer, OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
    );

    // A plain (OS) client is none of our business; neither is its REQUEST to the real server.
    assert!(rig.discover(NODE1).is_none());
    assert!(rig
        .send(&select(
            NODE1,
            Ipv4Addr::new(10, 200, 1, 50),
            Ipv4Addr::new(10, 200, 1, 254)
        ))
        .is_none());

    // The PXE REQUEST to port 4011 is answered to its source.
    let client_ip = Ipv4Addr::new(10, 200, 1, 50);
    let mut req = request(NODE1, MessageType::Request, pxe_opts(7));
    req.set_ciaddr(client_ip);
    let src = SocketAddrV4::new(client_ip, 4011);
    let (ack, r) = rig.send_on(&req, src, PROXY_PORT).unwrap();
    assert_eq!(r.kind, MessageType::Ack);
    assert_eq!(r.to, src);
    assert_eq!(r.from_port, PROXY_PORT);
    assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(ack.ciaddr(), client_ip);
    assert_eq!(bootfile(&ack).as_deref(), Some("snponly.efi"));
    assert!(rig.engine.leases().is_empty(), "proxy mode holds no leases");

    // Unknown MACs get nothing in proxy mode either.
    assert!(rig
        .send(&request(STRANGER, MessageType::Discover, pxe_opts(0)))
        .is_none());
}

/// iPXE takes its boot file from the proxy's OFFER and asks nothing on port 4011: the address
/// it takes is seen only in its broadcast REQUEST to the other server, and reported to the
/// boot policy (whose agent-token rule checks the script is asked from that address). Found
/// with the appliance's netboot form beside another DHCP server: the token was withheld.
#[test]
fn proxy_mode_reports_the_address_a_pxe_client_requests_from_the_other_server() {
    let mut rig = Rig::proxy();
    let ip = Ipv4Addr::new(10, 200, 1, 77);
    let mut req = select(NODE1, ip, Ipv4Addr::new(10, 200, 1, 254));
    for o in pxe_opts(0) {
        req.opts_mut().insert(o);
    }
    assert!(rig.send(&req).is_none(), "not ours to answer");
    assert_eq!(*rig.policy.seen.lock().unwrap(), vec![(NODE1, ip)]);
    // An OS client's REQUEST and an unknown PXE client's are not reported.
    rig.send(&select(NODE2, ip, Ipv4Addr::new(10, 200, 1, 254)));
    let mut stranger = select(STRANGER, ip, Ipv4Addr::new(10, 200, 1, 254));
    for o in pxe_opts(0) {
        stranger.opts_mut().insert(o);
    }
    rig.send(&stranger);
    assert_eq!(rig.policy.seen.lock().unwrap().len(), 1);
}

/// iPXE (a ROM or chainloaded) takes a ProxyDHCP reply only if it says `PXEClient` and names a
/// next-server beside the boot file; captured: without them it booted nothing.
#[test]
fn proxy_replies_to_ipxe_say_pxeclient() {
    let mut rig = Rig::proxy();
    let (offer, _) = rig
        .send(&request(NODE1, MessageType::Discover, ipxe_opts(0)))
        .unwrap();
    assert_eq!(
        bootfile(&offer).as_deref(),
        Some("http://10.200.1.1:8080/ipxe/52-54-00-00-00-01")
    );
    assert_eq!(offer.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(offer.siaddr(), SERVER);
    assert_eq!(
        opt(&offer, OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
    );
    let client_ip = Ipv4Addr::new(10, 200, 1, 50);
    let mut req = request(NODE1, MessageType::Request, ipxe_opts(0));
    req.set_ciaddr(client_ip);
    let (ack, _) = rig
        .send_on(&req, SocketAddrV4::new(client_ip, 4011), PROXY_PORT)
        .unwrap();
    assert_eq!(ack.siaddr(), SERVER);
    assert_eq!(
        opt(&ack, OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
    );
    // Authoritative replies to iPXE stay as they were.
    let mut rig = Rig::new(false);
    let (offer, _) = rig
        .send(&request(NODE1, MessageType::Discover, ipxe_opts(0)))
        .unwrap();
    assert!(opt(&offer, OptionCode::ClassIdentifier).is_none());
    assert_eq!(offer.siaddr(), Ipv4Addr::UNSPECIFIED);
}

#[test]
fn ipxe_and_http_boot_clients_get_urls() {
    let mut rig = Rig::new(false);
    let mut o = pxe_opts(7);
    o.push(DhcpOption::UserClass(b"iPXE".to_vec()));
    let (offer, _) = rig.send(&request(NODE1, MessageType::Discover, o)).unwrap();
    assert_eq!(
        bootfile(&offer).as_deref(),
        Some("http://10.200.1.1:8080/ipxe/52-54-00-00-00-01")
    );

    let http = vec![
        DhcpOption::ClassIdentifier(b"HTTPClient:Arch:00016:UNDI:003001".to_vec()),
        DhcpOption::ClientSystemArchitecture(Architecture(16)),
    ];
    let (offer, _) = rig
        .send(&request(NODE1, MessageType::Discover, http))
        .unwrap();
    assert_eq!(
        bootfile(&offer).as_deref(),
        Some("http://10.200.1.1:8080/snponly.efi")
    );
    assert_eq!(
        opt(&offer, OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()))
    );
    // A plain OS client gets an address and no boot file.
    let (offer, _) = rig.discover(NODE1).unwrap();
    assert_eq!(offer.yiaddr(), NODE1_IP);
    assert!(bootfile(&offer).is_none());
}

#[test]
fn malformed_packets_are_dropped_counted_and_harmless() {
    let mut rig = Rig::new(false);
    let good = encode(&request(NODE1, MessageType::Discover, vec![]));
    let mut wrong_op = good.clone();
    wrong_op[0] = 2;
    let mut absurd = good[..240].to_vec();
    absurd.extend_from_slice(&[53, 1, 1, 12, 250, b'x']);
    let mut no_type = good[..240].to_vec();
    no_type.push(255);
    let rx = RxInfo {
        src: CLIENT,
        local_port: 67,
    };
    for bad in [
        &good[..100],
        &wrong_op[..],
        &absurd[..],
        &no_type[..],
        &[][..],
    ] {
        assert!(rig.engine.handle(bad, rx, rig.now).is_none());
    }
    assert_eq!(rig.metrics.get("dhcp_dropped_total"), 5);
    assert!(rig.engine.handle(&good, rx, rig.now).is_some());
    assert_eq!(rig.metrics.get("dhcp_rx_discover_total"), 1);
}

#[test]
fn a_restarted_engine_keeps_pool_leases() {
    let mut rig = Rig::new(true);
    rig.discover(STRANGER).unwrap();
    let (ack, _) = rig.send(&select(STRANGER, POOL_START, SERVER)).unwrap();
    assert_eq!(ack.yiaddr(), POOL_START);
    let saved = rig.engine.leases().snapshot();
    let now = rig.now;

    let mut again = Rig::with(
        config(DhcpMode::Authoritative, true),
        LeaseTable::from_snapshot(saved),
    );
    again.now = now + Duration::from_secs(10);
    // Someone else asking for that very address is refused it.
    let (o, _) = again
        .send(&request(
            NODE2,
            MessageType::Discover,
            vec![DhcpOption::RequestedIpAddress(POOL_START)],
        ))
        .unwrap();
    assert_ne!(o.yiaddr(), POOL_START);
    // Its holder gets it again.
    let (o, _) = again.discover(STRANGER).unwrap();
    assert_eq!(o.yiaddr(), POOL_START);
}

#[test]
fn reservations_outside_the_subnet_are_refused() {
    let mut n = nodes();
    n[0].ip = Some(Ipv4Addr::new(192, 168, 0, 1));
    let err = Engine::new(
        config(DhcpMode::Authoritative, false),
        SERVER,
        None,
        &n,
        Arc::new(TestPolicy::default()),
        &Metrics::default(),
        LeaseTable::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("outside subnet"), "{err}");
}

fn ipxe_opts(arch: u16) -> Vec<DhcpOption> {
    let mut o = pxe_opts(arch);
    o.push(DhcpOption::UserClass(b"iPXE".to_vec()));
    o
}

/// One DISCOVER → OFFER → REQUEST → ACK with `opts` (xid `xid`); the OFFER's and the ACK's boot
/// files, which must agree.
fn exchange(rig: &mut Rig, mac: MacAddr, xid: u32, opts: Vec<DhcpOption>) -> (Message, Message) {
    let mut d = request(mac, MessageType::Discover, opts.clone());
    d.set_xid(xid);
    let (offer, _) = rig.send(&d).expect("an OFFER");
    let mut r = request(mac, MessageType::Request, opts);
    r.set_xid(xid);
    r.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
    r.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(offer.yiaddr()));
    let (ack, rep) = rig.send(&r).expect("an ACK");
    assert_eq!(rep.kind, MessageType::Ack);
    assert_eq!(bootfile(&offer), bootfile(&ack), "OFFER and ACK agree");
    (offer, ack)
}

const CHAINED_SCRIPT: &str = "http://10.200.1.1:8080/ipxe/52-54-00-00-00-03";

#[test]
fn chain_tftp_takes_an_ipxe_rom_through_the_boot_file_then_the_script() {
    let mut rig = Rig::new(false);
    // The ROM's iPXE: the boot file by TFTP, as if it were firmware PXE.
    let (offer, ack) = exchange(&mut rig, CHAINED, 1, ipxe_opts(0));
    assert_eq!(bootfile(&ack).as_deref(), Some("undionly.kpxe"));
    assert_eq!(ack.siaddr(), SERVER, "next-server is the seed");
    assert_eq!(
        opt(&offer, OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
    );
    // The chainloaded iPXE sends the very same options; now it gets its script.
    rig.advance(16);
    let (_, ack) = exchange(&mut rig, CHAINED, 2, ipxe_opts(0));
    assert_eq!(bootfile(&ack).as_deref(), Some(CHAINED_SCRIPT));
    assert_eq!(ack.siaddr(), Ipv4Addr::UNSPECIFIED);
    // The script's ACK ends the chain: the next power-on takes it again.
    rig.advance(60);
    let (_, ack) = exchange(&mut rig, CHAINED, 3, ipxe_opts(0));
    assert_eq!(bootfile(&ack).as_deref(), Some("undionly.kpxe"));
}

#[test]
fn chain_tftp_marks_only_on_the_ack() {
    let mut rig = Rig::new(false);
    // DISCOVERs repeat while iPXE waits for more offers: an OFFER alone marks nothing.
    for xid in [1, 2] {
        let mut d = request(CHAINED, MessageType::Discover, ipxe_opts(0));
        d.set_xid(xid);
        let (offer, _) = rig.send(&d).unwrap();
        assert_eq!(bootfile(&offer).as_deref(), Some("undionly.kpxe"));
    }
}

#[test]
fn chain_tftp_mark_expires() {
    let mut rig = Rig::new(false);
    let (_, ack) = exchange(&mut rig, CHAINED, 1, ipxe_opts(0));
    assert_eq!(bootfile(&ack).as_deref(), Some("undionly.kpxe"));
    // The chainloaded iPXE never came (TFTP failed, the node was reset): the ROM starts over.
    rig.advance(CHAIN_WINDOW_SECS);
    let (_, ack) = exchange(&mut rig, CHAINED, 2, ipxe_opts(0));
    assert_eq!(bootfile(&ack).as_deref(), Some("undionly.kpxe"));
}

#[test]
fn chain_tftp_with_a_vendor_pxe_rom_and_uefi() {
    let mut rig = Rig::new(false);
    // A vendor UEFI PXE ROM (no iPXE user class) gets snponly.efi ...
    let (_, ack) = exchange(&mut rig, CHAINED, 1, pxe_opts(7));
    assert_eq!(bootfile(&ack).as_deref(), Some("snponly.efi"));
    // ... and the iPXE it loads its script, not snponly.efi again (no loop).
    let (_, ack) = exchange(&mut rig, CHAINED, 2, ipxe_opts(7));
    assert_eq!(bootfile(&ack).as_deref(), Some(CHAINED_SCRIPT));
    // A UEFI HTTP Boot client gets snponly.efi by HTTP, and its iPXE then the script.
    let http_boot = vec![
        DhcpOption::ClassIdentifier(b"HTTPClient:Arch:00016:UNDI:003001".to_vec()),
        DhcpOption::ClientSystemArchitecture(Architecture(16)),
    ];
    let (_, ack) = exchange(&mut rig, CHAINED, 3, http_boot);
    assert_eq!(
        bootfile(&ack).as_deref(),
        Some("http://10.200.1.1:8080/snponly.efi")
    );
    let (_, ack) = exchange(&mut rig, CHAINED, 4, ipxe_opts(7));
    assert_eq!(bootfile(&ack).as_deref(), Some(CHAINED_SCRIPT));
    // An OS DHCP client on a chained node gets an address and no boot file.
    let (offer, _) = rig.discover(CHAINED).unwrap();
    assert!(bootfile(&offer).is_none());
}

#[test]
fn direct_chain_is_unchanged_and_never_marked() {
    let mut rig = Rig::new(false);
    let (_, ack) = exchange(&mut rig, NODE1, 1, ipxe_opts(0));
    assert_eq!(
        bootfile(&ack).as_deref(),
        Some("http://10.200.1.1:8080/ipxe/52-54-00-00-00-01")
    );
    let (_, ack) = exchange(&mut rig, NODE1, 2, pxe_opts(0));
    assert_eq!(bootfile(&ack).as_deref(), Some("undionly.kpxe"));
    let (_, ack) = exchange(&mut rig, NODE1, 3, ipxe_opts(0));
    assert_eq!(
        bootfile(&ack).as_deref(),
        Some("http://10.200.1.1:8080/ipxe/52-54-00-00-00-01")
    );
    assert!(rig.engine.chained.is_empty());
}

#[test]
fn chain_tftp_in_proxy_mode() {
    let mut rig = Rig::proxy();
    let (offer, _) = rig
        .send(&request(CHAINED, MessageType::Discover, ipxe_opts(0)))
        .unwrap();
    assert_eq!(bootfile(&offer).as_deref(), Some("undionly.kpxe"));
    let client_ip = Ipv4Addr::new(10, 200, 1, 50);
    let src = SocketAddrV4::new(client_ip, 4011);
    let mut req = request(CHAINED, MessageType::Request, ipxe_opts(0));
    req.set_ciaddr(client_ip);
    let (ack, _) = rig.send_on(&req, src, PROXY_PORT).unwrap();
    assert_eq!(bootfile(&ack).as_deref(), Some("undionly.kpxe"));
    let (offer, _) = rig
        .send(&request(CHAINED, MessageType::Discover, ipxe_opts(0)))
        .unwrap();
    assert_eq!(bootfile(&offer).as_deref(), Some(CHAINED_SCRIPT));
}

/// A server that does not serve (an HA follower) answers nothing — not even a MAC whose lease
/// its table already holds, which changes nothing to save — and touches no state; it answers
/// again once it serves.
#[test]
fn a_server_that_does_not_serve_answers_nothing() {
    use std::sync::atomic::Ordering;
    let mut rig = Rig::new(true);
    let (offer, _) = rig.discover(NODE1).expect("an offer while serving");
    let ip = offer.yiaddr();
    rig.send(&select(NODE1, ip, SERVER)).expect("an ack");
    let leases = rig.engine.leases().snapshot();
    rig.policy.follower.store(true, Ordering::SeqCst);
    assert!(rig.discover(NODE1).is_none(), "a follower offered");
    assert!(rig.send(&select(NODE1, ip, SERVER)).is_none());
    assert!(rig.discover(MacAddr([2, 0, 0, 0, 0, 0x77])).is_none());
    assert!(rig.policy.discovered.lock().unwrap().is_empty());
    assert_eq!(rig.engine.leases().snapshot(), leases);
    assert_eq!(rig.metrics.get("dhcp_not_serving_total"), 3);
    rig.policy.follower.store(false, Ordering::SeqCst);
    assert_eq!(rig.discover(NODE1).unwrap().0.yiaddr(), ip);
}
