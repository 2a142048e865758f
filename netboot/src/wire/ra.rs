//! Answering IPv6 Router Solicitations on the wire, so iPXE stops waiting for a router.
//!
//! Every iPXE (ROM or chainloaded) starts its IPv6 configurator after DHCP and, while no Router
//! Advertisement arrives, waits about 13 s before fetching anything. The seed answers each
//! Router Solicitation with a bare Router Advertisement: router lifetime 0 (not a default
//! router), no prefix, M=0 O=0 (no DHCPv6), from its EUI-64 link-local address. iPXE takes
//! that as "IPv6 configuration done, nothing to configure" and goes on at once.
//!
//! [`examine`] is the sans-IO core (a frame in, a verdict out); [`RaDevice`] wraps the wire's
//! `phy::Device` and sees every received frame before smoltcp does, queueing the answer for
//! the device's next turn. smoltcp is built without `proto-ipv6` and does nothing with these
//! frames.
//!
//! Hand-written rather than with a packet crate: smoltcp's IPv6 wire types need `proto-ipv6`,
//! which we keep off, and the work is two fixed-layout messages (an RS checked, a 70-byte RA
//! built) and one RFC 1071 checksum; a parser dependency would be larger than this file.

use crate::metrics::Metrics;
use smoltcp::phy::{self, Device, DeviceCapabilities};
use smoltcp::time::Instant;
use std::net::Ipv6Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const ETH_HDR: usize = 14;
const IPV6_HDR: usize = 40;
const ETHERTYPE_IPV6: [u8; 2] = [0x86, 0xdd];
const NEXT_HEADER_ICMPV6: u8 = 58;
const ICMPV6_ROUTER_SOLICITATION: u8 = 133;
const ICMPV6_ROUTER_ADVERTISEMENT: u8 = 134;
/// ND messages are only valid with the hop limit a router cannot have decremented.
const ND_HOP_LIMIT: u8 = 255;
/// Option type of a Source Link-Layer Address (RFC 4861 §4.6.1).
const OPT_SOURCE_LL_ADDR: u8 = 1;
/// All-routers and all-nodes link-local multicast groups.
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// Length of the RA we send: Ethernet + IPv6 + the 16-byte RA body, no options.
pub const RA_FRAME_LEN: usize = ETH_HDR + IPV6_HDR + 16;

/// What to do with one received frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not a Router Solicitation for us (any other frame): left to smoltcp.
    NotSolicitation,
    /// An IPv6 frame that is truncated or a Router Solicitation that RFC 4861 §6.1.1 says to
    /// discard (the reason): dropped and counted.
    Malformed(&'static str),
    /// A valid solicitation: this Router Advertisement frame answers it.
    Answer(Vec<u8>),
}

/// The Router Advertisement frame answering `frame` if it is a valid Router Solicitation
/// (ethertype 0x86DD, no extension headers, ICMPv6 type 133) to the all-routers group or to
/// us; `None` for anything else, malformed solicitations included.
pub fn router_advertisement(our_mac: [u8; 6], frame: &[u8]) -> Option<Vec<u8>> {
    match examine(our_mac, frame) {
        Verdict::Answer(ra) => Some(ra),
        Verdict::NotSolicitation | Verdict::Malformed(_) => None,
    }
}

/// Classify one received Ethernet frame and build the answer to a valid solicitation.
pub fn examine(our_mac: [u8; 6], frame: &[u8]) -> Verdict {
    if frame.len() < ETH_HDR || frame[12..14] != ETHERTYPE_IPV6 {
        return Verdict::NotSolicitation;
    }
    let ip = &frame[ETH_HDR..];
    if ip.len() < IPV6_HDR {
        return Verdict::Malformed("truncated IPv6 header");
    }
    if ip[0] >> 4 != 6 {
        return Verdict::Malformed("IPv6 ethertype but IP version is not 6");
    }
    if ip[6] != NEXT_HEADER_ICMPV6 {
        // Other traffic, or extension headers (which an RS does not carry; iPXE sends none).
        return Verdict::NotSolicitation;
    }
    let payload_len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    // Ethernet may pad a short frame: the IPv6 payload length, not the frame, bounds the ICMP.
    let Some(icmp) = ip[IPV6_HDR..].get(..payload_len) else {
        return Verdict::Malformed("IPv6 payload length exceeds the frame");
    };
    match icmp.first() {
        None => return Verdict::Malformed("empty ICMPv6 message"),
        Some(&t) if t != ICMPV6_ROUTER_SOLICITATION => return Verdict::NotSolicitation,
        Some(_) => {}
    }
    let src = addr(&ip[8..24]);
    let dst = addr(&ip[24..40]);
    if dst != ALL_ROUTERS && dst != link_local(our_mac) {
        return Verdict::NotSolicitation;
    }
    if icmp.len() < 8 {
        return Verdict::Malformed("router solicitation shorter than 8 bytes");
    }
    if ip[7] != ND_HOP_LIMIT {
        return Verdict::Malformed("router solicitation hop limit is not 255");
    }
    if icmp[1] != 0 {
        return Verdict::Malformed("router solicitation code is not 0");
    }
    if checksum(&src, &dst, icmp) != 0 {
        return Verdict::Malformed("bad ICMPv6 checksum");
    }
    let mut opts = &icmp[8..];
    while !opts.is_empty() {
        let len = opts.get(1).map_or(0, |&l| usize::from(l) * 8);
        if len == 0 || len > opts.len() {
            return Verdict::Malformed("router solicitation option with a bad length");
        }
        if opts[0] == OPT_SOURCE_LL_ADDR && src.is_unspecified() {
            return Verdict::Malformed("source link-layer option from the unspecified address");
        }
        opts = &opts[len..];
    }
    let peer_mac: [u8; 6] = frame[6..12].try_into().expect("6 bytes");
    if peer_mac[0] & 1 != 0 {
        return Verdict::Malformed("router solicitation from a multicast MAC");
    }
    // RFC 4861 §6.2.6: unicast to a solicitor that has an address, else to all nodes.
    let (to, to_mac) = if src.is_unspecified() {
        (ALL_NODES, multicast_mac(&ALL_NODES))
    } else {
        (src, peer_mac)
    };
    Verdict::Answer(build_ra(our_mac, to_mac, to))
}

/// A bare Router Advertisement from `our_mac`'s link-local address to `to` at `to_mac`.
fn build_ra(our_mac: [u8; 6], to_mac: [u8; 6], to: Ipv6Addr) -> Vec<u8> {
    let from = link_local(our_mac);
    let mut f = Vec::with_capacity(RA_FRAME_LEN);
    f.extend_from_slice(&to_mac);
    f.extend_from_slice(&our_mac);
    f.extend_from_slice(&ETHERTYPE_IPV6);
    f.extend_from_slice(&[0x60, 0, 0, 0]); // version 6, traffic class 0, flow label 0
    f.extend_from_slice(&16u16.to_be_bytes()); // payload length
    f.extend_from_slice(&[NEXT_HEADER_ICMPV6, ND_HOP_LIMIT]);
    f.extend_from_slice(&from.octets());
    f.extend_from_slice(&to.octets());
    let icmp_at = f.len();
    f.extend_from_slice(&[
        ICMPV6_ROUTER_ADVERTISEMENT,
        0, // code
        0,
        0, // checksum, below
        0, // cur hop limit: unspecified
        0, // M=0 O=0: no DHCPv6
        0,
        0, // router lifetime 0: not a default router
        0,
        0,
        0,
        0, // reachable time: unspecified
        0,
        0,
        0,
        0, // retrans timer: unspecified
    ]);
    let sum = checksum(&from, &to, &f[icmp_at..]);
    f[icmp_at + 2..icmp_at + 4].copy_from_slice(&sum.to_be_bytes());
    f
}

/// The modified EUI-64 link-local address of `mac` (RFC 4291 appendix A): fe80::/64 with the
/// MAC split by ff:fe and its universal/local bit flipped.
pub fn link_local(mac: [u8; 6]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a[0] = 0xfe;
    a[1] = 0x80;
    a[8..11].copy_from_slice(&[mac[0] ^ 0x02, mac[1], mac[2]]);
    a[11] = 0xff;
    a[12] = 0xfe;
    a[13..16].copy_from_slice(&mac[3..6]);
    Ipv6Addr::from(a)
}

/// The Ethernet group address of an IPv6 multicast address (RFC 2464 §7).
fn multicast_mac(group: &Ipv6Addr) -> [u8; 6] {
    let o = group.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

fn addr(b: &[u8]) -> Ipv6Addr {
    let a: [u8; 16] = b.try_into().expect("16 bytes");
    Ipv6Addr::from(a)
}

/// The ICMPv6 checksum (RFC 4443 §2.3) of `msg` over the IPv6 pseudo-header: with the
/// checksum field zeroed, the value to store; over a message carrying its checksum, 0 when
/// it is right.
fn checksum(src: &Ipv6Addr, dst: &Ipv6Addr, msg: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            sum += hi | pair.get(1).map_or(0, |&lo| u32::from(lo));
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(msg.len() as u32).to_be_bytes());
    add(&[0, 0, 0, NEXT_HEADER_ICMPV6]);
    add(msg);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The responder's counters (in the shared [`Metrics`], at `/metrics`).
#[derive(Debug, Clone)]
pub struct RaCounters {
    pub answered: Arc<AtomicU64>,
    pub malformed: Arc<AtomicU64>,
}

impl RaCounters {
    pub fn new(m: &Metrics) -> Self {
        Self {
            answered: m.counter(
                "wire_rs_answered",
                "IPv6 Router Solicitations answered with a Router Advertisement on the wire",
            ),
            malformed: m.counter(
                "wire_rs_malformed",
                "Truncated IPv6 frames and invalid Router Solicitations dropped on the wire",
            ),
        }
    }
}

/// A device that answers Router Solicitations itself and hands every frame on to smoltcp
/// (which ignores IPv6). Answers wait in `pending` and leave on the device's next `receive`
/// or `transmit`: smoltcp's poll calls `receive` until it returns nothing, so an answer
/// leaves within the same poll as its solicitation.
pub struct RaDevice<D> {
    inner: D,
    mac: [u8; 6],
    enabled: bool,
    pending: Vec<Vec<u8>>,
    counters: RaCounters,
}

impl<D: Device> RaDevice<D> {
    /// Wrap `inner` for the host `mac`; with `enabled` false frames only pass through.
    pub fn new(inner: D, mac: [u8; 6], enabled: bool, counters: RaCounters) -> Self {
        Self {
            inner,
            mac,
            enabled,
            pending: Vec::new(),
            counters,
        }
    }

    fn flush(&mut self, now: Instant) {
        for ra in self.pending.drain(..) {
            match self.inner.transmit(now) {
                Some(tx) => phy::TxToken::consume(tx, ra.len(), |b| b.copy_from_slice(&ra)),
                None => tracing::debug!("wire: no room to send a router advertisement"),
            }
        }
    }
}

/// A received frame, examined on its way to smoltcp.
pub struct RaRxToken<'a, T> {
    inner: T,
    mac: [u8; 6],
    enabled: bool,
    pending: &'a mut Vec<Vec<u8>>,
    counters: &'a RaCounters,
}

impl<T: phy::RxToken> phy::RxToken for RaRxToken<'_, T> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let Self {
            inner,
            mac,
            enabled,
            pending,
            counters,
        } = self;
        inner.consume(|frame| {
            if enabled {
                match examine(mac, frame) {
                    Verdict::NotSolicitation => {}
                    Verdict::Malformed(why) => {
                        counters.malformed.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(why, "wire: IPv6 frame dropped");
                    }
                    Verdict::Answer(ra) => {
                        counters.answered.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(
                            from = %mac_str(&frame[6..12]),
                            "wire: router solicitation answered"
                        );
                        pending.push(ra);
                    }
                }
            }
            f(frame)
        })
    }

    fn meta(&self) -> phy::PacketMeta {
        self.inner.meta()
    }
}

fn mac_str(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl<D: Device> Device for RaDevice<D> {
    type RxToken<'a>
        = RaRxToken<'a, D::RxToken<'a>>
    where
        Self: 'a;
    type TxToken<'a>
        = D::TxToken<'a>
    where
        Self: 'a;

    fn receive(&mut self, now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        self.flush(now);
        let (rx, tx) = self.inner.receive(now)?;
        Some((
            RaRxToken {
                inner: rx,
                mac: self.mac,
                enabled: self.enabled,
                pending: &mut self.pending,
                counters: &self.counters,
            },
            tx,
        ))
    }

    fn transmit(&mut self, now: Instant) -> Option<Self::TxToken<'_>> {
        self.flush(now);
        self.inner.transmit(now)
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.inner.capabilities()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed's MAC on the lab wire of `wire_qemu_pxe` (02:5e + 10.78.0.1).
    const SEED: [u8; 6] = [0x02, 0x5e, 0x0a, 0x4e, 0x00, 0x01];
    const NODE: [u8; 6] = [0x52, 0x54, 0x00, 0x72, 0x01, 0x00];

    /// A Router Solicitation as iPXE sent it on the lab wire (captured in `wire.pcap`, decoded
    /// by tshark as "Router Solicitation from 52:54:00:72:01:00", checksum good).
    const IPXE_RS: [u8; 70] = [
        0x33, 0x33, 0x00, 0x00, 0x00, 0x02, 0x52, 0x54, 0x00, 0x72, 0x01, 0x00, 0x86, 0xdd, 0x60,
        0x00, 0x00, 0x00, 0x00, 0x10, 0x3a, 0xff, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x50, 0x54, 0x00, 0xff, 0xfe, 0x72, 0x01, 0x00, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x85, 0x00, 0xd7, 0xa1, 0x00, 0x00,
        0x00, 0x00, 0x01, 0x01, 0x52, 0x54, 0x00, 0x72, 0x01, 0x00,
    ];

    /// The answer to [`IPXE_RS`], written out by hand field by field; its checksum (0x2240)
    /// was checked by tshark (`icmpv6.checksum.status == 1`) on a pcap of this frame, not by
    /// this module's code.
    const EXPECTED_RA: [u8; 70] = [
        // Ethernet: to the node, from the seed, IPv6
        0x52, 0x54, 0x00, 0x72, 0x01, 0x00, 0x02, 0x5e, 0x0a, 0x4e, 0x00, 0x01, 0x86, 0xdd,
        // IPv6: version 6, payload 16, ICMPv6, hop limit 255
        0x60, 0x00, 0x00, 0x00, 0x00, 0x10, 0x3a, 0xff,
        // from fe80::5e:aff:fe4e:1 (EUI-64 of 02:5e:0a:4e:00:01)
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x00, 0x5e, 0x0a, 0xff, 0xfe, 0x4e, 0x00, 0x01,
        // to fe80::5054:ff:fe72:100 (the solicitor)
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x50, 0x54, 0x00, 0xff, 0xfe, 0x72, 0x01, 0x00,
        // RA: type 134, code 0, checksum, hop limit 0, M=0 O=0, lifetime 0, timers 0
        0x86, 0x00, 0x22, 0x40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    /// The ICMPv6 checksum computed another way: 32-bit big-endian words summed in a u64,
    /// the message padded to a multiple of 4.
    fn independent_checksum_ok(frame: &[u8]) -> bool {
        let ip = &frame[14..];
        let len = u16::from_be_bytes([ip[4], ip[5]]) as usize;
        let mut buf = Vec::new();
        buf.extend_from_slice(&ip[8..40]);
        buf.extend_from_slice(&(len as u32).to_be_bytes());
        buf.extend_from_slice(&[0, 0, 0, 58]);
        buf.extend_from_slice(&ip[40..40 + len]);
        while buf.len() % 4 != 0 {
            buf.push(0);
        }
        let mut s: u64 = buf
            .chunks(4)
            .map(|w| u64::from(u32::from_be_bytes(w.try_into().unwrap())))
            .sum();
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s == 0xffff
    }

    #[test]
    fn the_link_local_address_is_the_modified_eui64_of_the_mac() {
        assert_eq!(link_local(SEED).to_string(), "fe80::5e:aff:fe4e:1");
        assert_eq!(link_local(NODE).to_string(), "fe80::5054:ff:fe72:100");
    }

    #[test]
    fn an_ipxe_solicitation_gets_a_bare_unicast_advertisement() {
        assert!(independent_checksum_ok(&IPXE_RS), "the capture is valid");
        let ra = router_advertisement(SEED, &IPXE_RS).expect("answered");
        assert_eq!(ra.len(), RA_FRAME_LEN);
        assert_eq!(ra, EXPECTED_RA);
        assert!(independent_checksum_ok(&ra));
    }

    #[test]
    fn a_solicitation_from_the_unspecified_address_is_answered_to_all_nodes() {
        // Rebuilt from the capture: source ::, no source link-layer option, checksum redone.
        let mut rs = IPXE_RS[..62].to_vec();
        rs[18..20].copy_from_slice(&8u16.to_be_bytes());
        rs[22..38].fill(0);
        rs[56..58].fill(0);
        let sum = checksum(&addr(&rs[22..38]), &addr(&rs[38..54]), &rs[54..]);
        rs[56..58].copy_from_slice(&sum.to_be_bytes());
        assert!(independent_checksum_ok(&rs));
        let ra = router_advertisement(SEED, &rs).expect("answered");
        assert_eq!(ra[..6], [0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(addr(&ra[38..54]), ALL_NODES);
        assert_eq!(ra[54], ICMPV6_ROUTER_ADVERTISEMENT);
        assert!(independent_checksum_ok(&ra));
        // Ethernet padding after the IPv6 payload is ignored.
        rs.extend_from_slice(&[0; 8]);
        assert!(router_advertisement(SEED, &rs).is_some());
    }

    #[test]
    fn a_solicitation_to_our_link_local_address_is_answered() {
        let mut rs = IPXE_RS.to_vec();
        rs[..6].copy_from_slice(&SEED);
        rs[38..54].copy_from_slice(&link_local(SEED).octets());
        rs[56..58].fill(0);
        let sum = checksum(&addr(&rs[22..38]), &addr(&rs[38..54]), &rs[54..]);
        rs[56..58].copy_from_slice(&sum.to_be_bytes());
        assert!(router_advertisement(SEED, &rs).is_some());
        // ... but not one to another host's address.
        rs[38..54].copy_from_slice(&link_local([2, 0, 0, 0, 0, 9]).octets());
        assert_eq!(examine(SEED, &rs), Verdict::NotSolicitation);
    }

    #[test]
    fn other_frames_are_left_alone() {
        let mut arp = IPXE_RS.to_vec();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let mut udp6 = IPXE_RS.to_vec();
        udp6[20] = 17;
        let mut hop_by_hop = IPXE_RS.to_vec();
        hop_by_hop[20] = 0;
        let mut echo = IPXE_RS.to_vec();
        echo[54] = 128;
        let mut ra = IPXE_RS.to_vec();
        ra[54] = ICMPV6_ROUTER_ADVERTISEMENT;
        for (f, what) in [
            (&arp[..], "ARP"),
            (&udp6, "UDP over IPv6"),
            (&hop_by_hop, "extension header"),
            (&echo, "echo request"),
            (&ra, "another router's advertisement"),
            (&IPXE_RS[..10], "runt"),
        ] {
            assert_eq!(examine(SEED, f), Verdict::NotSolicitation, "{what}");
        }
    }

    /// Store the right ICMPv6 checksum in an edited solicitation `v`.
    fn fix_checksum(v: &mut [u8]) {
        v[56..58].fill(0);
        let s = checksum(&addr(&v[22..38]), &addr(&v[38..54]), &v[54..]);
        v[56..58].copy_from_slice(&s.to_be_bytes());
    }

    #[test]
    fn malformed_and_truncated_solicitations_are_refused_with_a_reason() {
        let edit = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut v = IPXE_RS.to_vec();
            f(&mut v);
            v
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (IPXE_RS[..40].to_vec(), "truncated IPv6 header"),
            (edit(&|v| v[14] = 0x40), "version"),
            (IPXE_RS[..69].to_vec(), "payload length exceeds"),
            (edit(&|v| v[18..20].copy_from_slice(&[0, 0])), "empty"),
            (
                edit(&|v| {
                    v[18..20].copy_from_slice(&[0, 4]);
                }),
                "shorter than 8",
            ),
            (edit(&|v| v[21] = 64), "hop limit"),
            (edit(&|v| v[55] = 1), "code"),
            (edit(&|v| v[57] ^= 1), "checksum"),
            (edit(&|v| v[69] ^= 1), "checksum"),
            (
                edit(&|v| {
                    // An option claiming 16 bytes where 8 remain (checksum made right).
                    v[63] = 2;
                    fix_checksum(v);
                }),
                "option",
            ),
            (
                edit(&|v| {
                    v[63] = 0;
                    fix_checksum(v);
                }),
                "option",
            ),
            (
                edit(&|v| {
                    v[22..38].fill(0);
                    fix_checksum(v);
                }),
                "unspecified",
            ),
            (edit(&|v| v[6] |= 1), "multicast MAC"),
        ];
        for (frame, why) in cases {
            match examine(SEED, &frame) {
                Verdict::Malformed(reason) => assert!(reason.contains(why), "{why}: {reason}"),
                v => panic!("{why}: {v:?}"),
            }
            assert!(router_advertisement(SEED, &frame).is_none());
        }
    }

    /// A loopback device: frames pushed to `rx` are received, transmitted ones collected.
    #[derive(Default)]
    struct Loop {
        rx: std::collections::VecDeque<Vec<u8>>,
        tx: Vec<Vec<u8>>,
    }
    struct LoopRx(Vec<u8>);
    struct LoopTx<'a>(&'a mut Vec<Vec<u8>>);
    impl phy::RxToken for LoopRx {
        fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
            f(&self.0)
        }
    }
    impl phy::TxToken for LoopTx<'_> {
        fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
            let mut b = vec![0; len];
            let r = f(&mut b);
            self.0.push(b);
            r
        }
    }
    impl Device for Loop {
        type RxToken<'a> = LoopRx;
        type TxToken<'a> = LoopTx<'a>;
        fn receive(&mut self, _: Instant) -> Option<(LoopRx, LoopTx<'_>)> {
            let f = self.rx.pop_front()?;
            Some((LoopRx(f), LoopTx(&mut self.tx)))
        }
        fn transmit(&mut self, _: Instant) -> Option<LoopTx<'_>> {
            Some(LoopTx(&mut self.tx))
        }
        fn capabilities(&self) -> DeviceCapabilities {
            DeviceCapabilities::default()
        }
    }

    fn drain(d: &mut RaDevice<Loop>) -> Vec<Vec<u8>> {
        let mut seen = Vec::new();
        while let Some((rx, _tx)) = d.receive(Instant::now()) {
            seen.push(phy::RxToken::consume(rx, |f| f.to_vec()));
        }
        seen
    }

    #[test]
    fn the_device_answers_counts_and_still_hands_every_frame_on() {
        let m = Metrics::default();
        let mut inner = Loop::default();
        inner.rx.push_back(IPXE_RS.to_vec());
        inner.rx.push_back(IPXE_RS[..40].to_vec());
        inner.rx.push_back(vec![0xff; 60]);
        let mut d = RaDevice::new(inner, SEED, true, RaCounters::new(&m));
        let seen = drain(&mut d);
        assert_eq!(seen.len(), 3, "smoltcp still sees every frame");
        assert_eq!(d.inner.tx, vec![EXPECTED_RA.to_vec()], "sent by the poll");
        assert_eq!(m.get("wire_rs_answered"), 1);
        assert_eq!(m.get("wire_rs_malformed"), 1);
        assert!(m.render().contains("wire_rs_answered 1"));
    }

    #[test]
    fn a_disabled_device_only_passes_frames_through() {
        let m = Metrics::default();
        let mut inner = Loop::default();
        inner.rx.push_back(IPXE_RS.to_vec());
        let mut d = RaDevice::new(inner, SEED, false, RaCounters::new(&m));
        assert_eq!(drain(&mut d).len(), 1);
        assert!(d.inner.tx.is_empty());
        assert_eq!(m.get("wire_rs_answered"), 0);
    }
}
