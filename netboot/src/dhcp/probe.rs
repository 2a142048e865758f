//! The guard against becoming a rogue DHCP server, sans-IO: before the seed answers any DHCP in
//! `mode = "auto"`, it asks the wire whether another server is already there, as a client
//! would — a DHCPDISCOVER with its own MAC, broadcast, repeated every second for a few seconds
//! — and serves ProxyDHCP only (boot information, no addresses) if any server OFFERs an
//! address. MAAS and Ironic users' most common PXE complaint is two DHCP servers on one
//! network; this is the seed's answer to it.
//!
//! [`Probe`] takes the time and the datagrams heard on port 68 in and gives out what to send
//! and until when to listen; it opens no socket and reads no clock. The edges that drive it are
//! [`super::probe_edge`] (kernel sockets, and the generic loop) and the userspace wire's
//! (`crate::wire::services`). [`resolve`] turns the configured mode and the outcome into the
//! mode to serve in.
//!
//! An OFFER counts when it answers this probe (its `xid` and our MAC), offers an address
//! (`yiaddr` not 0.0.0.0: a ProxyDHCP server, which offers none, is no address server) and does
//! not come from the seed's own address. Its server identifier (option 54) names the server.

use super::wire;
use super::DhcpMode;
use crate::MacAddr;
use dhcproto::v4::{
    DhcpOption, Encodable, Encoder, Flags, Message, MessageType, Opcode, OptionCode,
};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

/// How long the probe listens, by default: servers check an address is free before offering it
/// (dnsmasq pings it and waits 3 s; ISC dhcpd 1 s), so a window under about 4 s misses them.
pub const DEFAULT_PROBE_SECS: u64 = 6;
/// DISCOVERs are repeated this often while listening (a lost datagram, a slow server).
pub const RESEND: Duration = Duration::from_secs(1);
/// The vendor class the probe's DISCOVERs carry, so another server's log says who asked.
pub const VENDOR_CLASS: &str = "seed-dhcp-probe";

/// A server that answered the probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignServer {
    /// Its server identifier (option 54), else the datagram's source address.
    pub server: Ipv4Addr,
    /// The address it offered the seed's MAC.
    pub offered: Ipv4Addr,
    /// Where the OFFER came from.
    pub from: SocketAddrV4,
}

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// No server offered an address within the window.
    Alone,
    /// This one did (the first to answer).
    Answered(ForeignServer),
}

/// What the edge does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeStep {
    /// Broadcast this DISCOVER to port 67, then poll again.
    Send(Vec<u8>),
    /// Listen (feeding [`Probe::handle`]) until this instant, then poll again.
    Wait(Instant),
    /// Finished.
    Done(ProbeOutcome),
}

/// One probe: a few DISCOVERs with one transaction id, and the OFFERs they draw.
#[derive(Debug)]
pub struct Probe {
    mac: MacAddr,
    own_ip: Ipv4Addr,
    xid: u32,
    deadline: Instant,
    next_send: Instant,
    found: Option<ForeignServer>,
    /// DISCOVERs handed out to send.
    pub sent: u32,
    /// Datagrams heard that were not an OFFER to this probe (other clients' traffic, others'
    /// transactions, malformed packets).
    pub ignored: u64,
}

impl Probe {
    /// A probe for `mac` (the seed's on the provisioning NIC) that listens for `window` from
    /// `now`; `own_ip` is the seed's address (its own answers are not another server's); `xid`
    /// should be random.
    pub fn new(mac: MacAddr, own_ip: Ipv4Addr, xid: u32, window: Duration, now: Instant) -> Self {
        Self {
            mac,
            own_ip,
            xid,
            deadline: now + window,
            next_send: now,
            found: None,
            sent: 0,
            ignored: 0,
        }
    }

    /// What to do at `now`.
    pub fn poll(&mut self, now: Instant) -> ProbeStep {
        if let Some(f) = &self.found {
            return ProbeStep::Done(ProbeOutcome::Answered(f.clone()));
        }
        if now >= self.deadline {
            return ProbeStep::Done(ProbeOutcome::Alone);
        }
        if now >= self.next_send {
            self.sent += 1;
            self.next_send = now + RESEND;
            return ProbeStep::Send(self.discover());
        }
        ProbeStep::Wait(self.next_send.min(self.deadline))
    }

    /// A datagram heard on port 68 from `from`.
    pub fn handle(&mut self, pkt: &[u8], from: SocketAddrV4) {
        match self.offer(pkt, from) {
            Some(f) if self.found.is_none() => self.found = Some(f),
            Some(_) => {}
            None => self.ignored += 1,
        }
    }

    fn offer(&self, pkt: &[u8], from: SocketAddrV4) -> Option<ForeignServer> {
        let (m, ty) = wire::decode_reply(pkt).ok()?;
        if ty != MessageType::Offer
            || m.xid() != self.xid
            || MacAddr::from_slice(m.chaddr()) != Some(self.mac)
            || m.yiaddr().is_unspecified()
        {
            return None;
        }
        let server = match m.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(ip)) => *ip,
            _ => *from.ip(),
        };
        if server == self.own_ip || *from.ip() == self.own_ip {
            return None;
        }
        Some(ForeignServer {
            server,
            offered: m.yiaddr(),
            from,
        })
    }

    /// The DISCOVER: our MAC, broadcast flag (we have no address to be answered at), a
    /// parameter request list as a client's, and the probe's vendor class.
    pub fn discover(&self) -> Vec<u8> {
        let mut m = Message::new_with_id(
            self.xid,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &self.mac.0,
        );
        m.set_opcode(Opcode::BootRequest)
            .set_flags(Flags::default().set_broadcast());
        let opts = m.opts_mut();
        opts.insert(DhcpOption::MessageType(MessageType::Discover));
        opts.insert(DhcpOption::ParameterRequestList(vec![
            OptionCode::SubnetMask,
            OptionCode::Router,
            OptionCode::DomainNameServer,
            OptionCode::ServerIdentifier,
        ]));
        opts.insert(DhcpOption::ClassIdentifier(
            VENDOR_CLASS.as_bytes().to_vec(),
        ));
        let mut out = Vec::with_capacity(300);
        m.encode(&mut Encoder::new(&mut out))
            .expect("a DISCOVER always encodes");
        // BOOTP's minimum, as the server's replies (some relays drop shorter datagrams).
        out.resize(out.len().max(300), 0);
        out
    }
}

/// The mode to serve in: `auto` becomes `proxy` when a server answered, else `authoritative`;
/// a configured `authoritative` or `proxy` stands whatever the probe found.
pub fn resolve(configured: DhcpMode, outcome: &ProbeOutcome) -> DhcpMode {
    match (configured, outcome) {
        (DhcpMode::Auto, ProbeOutcome::Answered(_)) => DhcpMode::Proxy,
        (DhcpMode::Auto, ProbeOutcome::Alone) => DhcpMode::Authoritative,
        (m, _) => m,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = MacAddr([0x02, 0x5e, 10, 0, 0, 1]);
    const OWN: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const XID: u32 = 0x5eed_0001;

    fn offer(xid: u32, mac: MacAddr, yiaddr: Ipv4Addr, server: Option<Ipv4Addr>) -> Vec<u8> {
        let mut m = Message::new_with_id(
            xid,
            Ipv4Addr::UNSPECIFIED,
            yiaddr,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &mac.0,
        );
        m.set_opcode(Opcode::BootReply);
        m.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Offer));
        if let Some(s) = server {
            m.opts_mut().insert(DhcpOption::ServerIdentifier(s));
        }
        let mut out = Vec::new();
        m.encode(&mut Encoder::new(&mut out)).unwrap();
        out
    }

    fn from(ip: [u8; 4]) -> SocketAddrV4 {
        SocketAddrV4::new(ip.into(), 67)
    }

    /// Drive the probe on virtual time: every step's instant is computed, never slept. `heard`
    /// is called with the time after each DISCOVER sent and returns datagrams to feed.
    fn run(
        window: Duration,
        mut heard: impl FnMut(Duration) -> Vec<(Vec<u8>, SocketAddrV4)>,
    ) -> (ProbeOutcome, Probe, Duration) {
        let t0 = Instant::now();
        let mut p = Probe::new(MAC, OWN, XID, window, t0);
        let mut now = t0;
        for _ in 0..100 {
            match p.poll(now) {
                ProbeStep::Send(d) => {
                    let (m, ty) =
                        dhcproto::v4::Decodable::decode(&mut dhcproto::v4::Decoder::new(&d))
                            .map(|m: Message| {
                                let t = m.opts().msg_type().unwrap();
                                (m, t)
                            })
                            .unwrap();
                    assert_eq!(ty, MessageType::Discover);
                    assert_eq!((m.xid(), m.chaddr()), (XID, &MAC.0[..]));
                    assert!(m.flags().broadcast());
                    assert!(d.len() >= 300);
                    for (pkt, src) in heard(now - t0) {
                        p.handle(&pkt, src);
                    }
                }
                ProbeStep::Wait(t) => {
                    assert!(t > now, "time moves on");
                    now = t;
                }
                ProbeStep::Done(o) => return (o, p, now - t0),
            }
        }
        panic!("the probe never finished");
    }

    #[test]
    fn alone_on_the_wire_after_the_window_with_a_discover_every_second() {
        let (o, p, took) = run(Duration::from_secs(4), |_| vec![]);
        assert_eq!(o, ProbeOutcome::Alone);
        assert_eq!(p.sent, 4, "at 0, 1, 2 and 3 s");
        assert_eq!(took, Duration::from_secs(4));
        assert_eq!(resolve(DhcpMode::Auto, &o), DhcpMode::Authoritative);
    }

    #[test]
    fn an_offer_ends_the_probe_at_once_and_names_the_server() {
        let (o, p, took) = run(Duration::from_secs(4), |t| {
            if t >= Duration::from_secs(2) {
                let ip = Ipv4Addr::new(10, 0, 0, 50);
                vec![(
                    offer(XID, MAC, ip, Some([10, 0, 0, 2].into())),
                    from([10, 0, 0, 2]),
                )]
            } else {
                vec![]
            }
        });
        let ProbeOutcome::Answered(f) = &o else {
            panic!("{o:?}")
        };
        assert_eq!(f.server, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(f.offered, Ipv4Addr::new(10, 0, 0, 50));
        assert_eq!(p.sent, 3);
        assert_eq!(took, Duration::from_secs(2), "no waiting out the window");
        assert_eq!(resolve(DhcpMode::Auto, &o), DhcpMode::Proxy);
        // An explicit mode stands.
        assert_eq!(
            resolve(DhcpMode::Authoritative, &o),
            DhcpMode::Authoritative
        );
        assert_eq!(
            resolve(DhcpMode::Proxy, &ProbeOutcome::Alone),
            DhcpMode::Proxy
        );
    }

    #[test]
    fn what_is_not_an_offer_to_this_probe_is_ignored() {
        let other_mac = MacAddr([0x52, 0x54, 0, 0, 0, 9]);
        let ip = Ipv4Addr::new(10, 0, 0, 50);
        let (o, p, _) = run(Duration::from_secs(2), |_| {
            vec![
                // another transaction, another client, a proxy offer (no address), our own
                // address answering, a request, garbage
                (offer(XID + 1, MAC, ip, None), from([10, 0, 0, 2])),
                (offer(XID, other_mac, ip, None), from([10, 0, 0, 2])),
                (
                    offer(XID, MAC, Ipv4Addr::UNSPECIFIED, Some([10, 0, 0, 3].into())),
                    from([10, 0, 0, 3]),
                ),
                (offer(XID, MAC, ip, Some(OWN)), from([10, 0, 0, 2])),
                (offer(XID, MAC, ip, None), SocketAddrV4::new(OWN, 67)),
                (
                    Probe::new(MAC, OWN, XID, Duration::ZERO, Instant::now()).discover(),
                    from([10, 0, 0, 7]),
                ),
                (vec![2, 1, 6, 0, 1, 2, 3], from([10, 0, 0, 2])),
            ]
        });
        assert_eq!(o, ProbeOutcome::Alone);
        assert_eq!(p.ignored, 14);
        // Without a server identifier, the source names the server.
        let (o, _, _) = run(Duration::from_secs(2), |_| {
            vec![(offer(XID, MAC, ip, None), from([10, 0, 0, 9]))]
        });
        assert!(
            matches!(&o, ProbeOutcome::Answered(f) if f.server == Ipv4Addr::new(10, 0, 0, 9)),
            "{o:?}"
        );
    }
}
