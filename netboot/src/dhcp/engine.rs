//! The sans-IO DHCPv4 core: a request's bytes, the port it arrived on and the wall-clock time go
//! in; at most one reply comes out, with the address and port to send it to.
//!
//! Authoritative mode serves reservations (`[[nodes]]` with `ip`) and, for known nodes without a
//! reservation or for unknown ones when discovery is on, the dynamic pool: DISCOVER → OFFER,
//! REQUEST → ACK/NAK (selecting, init-reboot, renewing, rebinding), DECLINE (quarantine), RELEASE,
//! INFORM. Proxy mode answers network-boot clients only, with boot information and no address:
//! DISCOVER on 67 → OFFER, REQUEST on 4011 → ACK.
//!
//! Replies go where RFC 2131 §4.1 says: to the relay (giaddr, port 67); a NAK is broadcast; a
//! client that has an address (ciaddr) gets unicast; anyone else gets a broadcast, because a
//! client without an address cannot be reached by unicast without an ARP entry. Requests to the
//! ProxyDHCP port 4011 are answered to their source.
//!
//! A node whose [`Chain`] is `tftp` first gets the iPXE boot file by TFTP even when its ROM
//! already is iPXE, then the script once that chainloaded iPXE asks. Nothing in the request tells
//! the two iPXEs apart: captured on the lab's wire (QEMU's iPXE ROM, then Debian's
//! `undionly.kpxe` loaded by it), their DISCOVERs carry the same options 60, 77, 93, 94 and 175
//! (features and bus-id alike); only the BOOTP broadcast flag differed (set by the UNDI driver),
//! a driver detail rather than a contract, and unknown for `snponly.efi`. So the engine keeps
//! state: an ACK that hands the boot file to a `tftp` node marks its MAC chained for
//! [`CHAIN_WINDOW_SECS`]; an iPXE request from a marked MAC gets the script, and that ACK clears
//! the mark, so the next power-on takes the chain again.
//!
//! The engine reads no clock and opens no socket. It writes no file either: the caller persists
//! [`Engine::leases`] when [`Engine::take_dirty`] says the bound leases changed, before sending
//! the reply.

use super::leases::LeaseTable;
use super::pxe::{self, ArchName, ClientInfo, Firmware};
use super::wire;
use super::{DhcpConfig, DhcpConfigError, DhcpMode};
use crate::boot::Chain;
use crate::config::NodeEntry;
use crate::metrics::Metrics;
use crate::{BootPolicy, MacAddr};
use dhcproto::v4::{
    DhcpOption, Encodable, Encoder, Flags, Message, MessageType, Opcode, OptionCode,
};
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;
use tracing::{debug, info, warn};

/// The DHCP server port.
pub const SERVER_PORT: u16 = 67;
/// The DHCP client port.
pub const CLIENT_PORT: u16 = 68;
/// The PXE ProxyDHCP port.
pub const PROXY_PORT: u16 = 4011;
/// How long an OFFERed address is held for the client's REQUEST.
pub const OFFER_HOLD_SECS: u64 = 60;
/// Smallest reply we send: BOOTP clients (and old PXE ROMs) expect at least 300 bytes.
const MIN_REPLY_LEN: usize = 300;
/// At most this many "dropped malformed packet" warnings per window; the rest are counted.
const DROP_LOGS_PER_WINDOW: u32 = 20;
const DROP_LOG_WINDOW_SECS: u64 = 10;
/// How long after an ACK handed the iPXE boot file to a `chain = "tftp"` node an iPXE request
/// from it counts as the chainloaded iPXE (observed in the lab under TCG: about 20 s after it).
pub const CHAIN_WINDOW_SECS: u64 = 300;
/// Bound on the memory kept to call `BootPolicy::discovered` once per MAC.
const MAX_DISCOVERED_REMEMBERED: usize = 65_536;

/// Where a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxInfo {
    /// Source address and port of the datagram.
    pub src: SocketAddrV4,
    /// Local port it arrived on: 67, or 4011 in proxy mode.
    pub local_port: u16,
}

/// A reply to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub payload: Vec<u8>,
    /// Destination; `255.255.255.255` means broadcast on the interface the request came in on.
    pub to: SocketAddrV4,
    /// Local port to send from (the port the request arrived on).
    pub from_port: u16,
    /// The message type, for counting and tests.
    pub kind: MessageType,
}

/// A known node's static facts.
#[derive(Debug, Clone)]
struct NodeInfo {
    ip: Option<Ipv4Addr>,
    hostname: Option<String>,
}

/// Where an address came from, for the decision log.
#[derive(Debug, Clone)]
enum Source {
    Reservation(Option<String>),
    Pool,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Reservation(Some(h)) => write!(f, "reservation {h}"),
            Source::Reservation(None) => f.write_str("reservation"),
            Source::Pool => f.write_str("pool"),
        }
    }
}

/// Counters, created once from the shared registry.
struct Counters {
    dropped: Arc<AtomicU64>,
    ignored: Arc<AtomicU64>,
    rx_discover: Arc<AtomicU64>,
    rx_request: Arc<AtomicU64>,
    rx_decline: Arc<AtomicU64>,
    rx_release: Arc<AtomicU64>,
    rx_inform: Arc<AtomicU64>,
    rx_other: Arc<AtomicU64>,
    not_serving: Arc<AtomicU64>,
    tx_offer: Arc<AtomicU64>,
    tx_ack: Arc<AtomicU64>,
    tx_nak: Arc<AtomicU64>,
}

impl Counters {
    fn new(m: &Metrics) -> Self {
        Self {
            dropped: m.counter("dhcp_dropped_total", "Malformed DHCP packets dropped"),
            ignored: m.counter(
                "dhcp_ignored_total",
                "Well-formed DHCP requests not answered (unknown MAC, other server, ...)",
            ),
            rx_discover: m.counter("dhcp_rx_discover_total", "DHCPDISCOVER received"),
            rx_request: m.counter("dhcp_rx_request_total", "DHCPREQUEST received"),
            rx_decline: m.counter("dhcp_rx_decline_total", "DHCPDECLINE received"),
            rx_release: m.counter("dhcp_rx_release_total", "DHCPRELEASE received"),
            rx_inform: m.counter("dhcp_rx_inform_total", "DHCPINFORM received"),
            rx_other: m.counter("dhcp_rx_other_total", "Other DHCP message types received"),
            not_serving: m.counter(
                "dhcp_not_serving_total",
                "DHCP requests left alone because this server does not serve now (an HA follower)",
            ),
            tx_offer: m.counter("dhcp_tx_offer_total", "DHCPOFFER sent"),
            tx_ack: m.counter("dhcp_tx_ack_total", "DHCPACK sent"),
            tx_nak: m.counter("dhcp_tx_nak_total", "DHCPNAK sent"),
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn type_name(t: MessageType) -> String {
    match t {
        MessageType::Discover => "DISCOVER".into(),
        MessageType::Offer => "OFFER".into(),
        MessageType::Request => "REQUEST".into(),
        MessageType::Decline => "DECLINE".into(),
        MessageType::Ack => "ACK".into(),
        MessageType::Nak => "NAK".into(),
        MessageType::Release => "RELEASE".into(),
        MessageType::Inform => "INFORM".into(),
        other => format!("type {}", u8::from(other)),
    }
}

/// Where a `chain = "tftp"` node is in its chain, for this exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChainStage {
    /// Not a chained node (or not a network boot client): the boot file as the firmware asks.
    Off,
    /// The first stage: the iPXE boot file, by TFTP even to an iPXE ROM.
    First,
    /// The iPXE we chainloaded: its script.
    Chained,
}

/// Why a client gets no address (the reason of an ignored request or a NAK).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum NoAddress {
    #[error("unknown MAC, discovery off")]
    Unknown,
    #[error("reserved address {0} is quarantined (a client declined it)")]
    Quarantined(Ipv4Addr),
    #[error("no reservation and no pool")]
    NoPool,
    #[error("pool {start}..{end} exhausted")]
    Exhausted { start: Ipv4Addr, end: Ipv4Addr },
}

/// What the engine decided about one request (turned into a reply and one log line).
enum Decision {
    Reply {
        kind: MessageType,
        yiaddr: Ipv4Addr,
        lease: bool,
        why: String,
    },
    Nak(String),
    Silent(String),
    Ignore(String),
}

/// The DHCPv4 server core.
pub struct Engine {
    cfg: DhcpConfig,
    server_ip: Ipv4Addr,
    http_base: Option<String>,
    nodes: HashMap<MacAddr, NodeInfo>,
    reserved: HashSet<Ipv4Addr>,
    policy: Arc<dyn BootPolicy>,
    leases: LeaseTable,
    counters: Counters,
    discovered: HashSet<MacAddr>,
    /// MAC → until when (Unix seconds) an iPXE request from it is the chainloaded iPXE.
    chained: HashMap<MacAddr, u64>,
    drop_window: u64,
    drop_logged: u32,
    drop_suppressed: u64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("mode", &self.cfg.mode)
            .field("server_ip", &self.server_ip)
            .field("nodes", &self.nodes.len())
            .field("leases", &self.leases.len())
            .finish()
    }
}

impl Engine {
    /// Build the engine. Fails if a reservation is unusable in the configured subnet.
    pub fn new(
        cfg: DhcpConfig,
        server_ip: Ipv4Addr,
        http_base: Option<String>,
        nodes: &[NodeEntry],
        policy: Arc<dyn BootPolicy>,
        metrics: &Metrics,
        leases: LeaseTable,
    ) -> Result<Self, DhcpConfigError> {
        if cfg.mode == DhcpMode::Auto {
            return Err(DhcpConfigError::Unresolved);
        }
        let reserved = cfg.check_nodes(nodes)?;
        let nodes = nodes
            .iter()
            .map(|n| {
                (
                    n.mac,
                    NodeInfo {
                        ip: n.ip,
                        hostname: n.hostname.clone(),
                    },
                )
            })
            .collect();
        Ok(Self {
            cfg,
            server_ip,
            http_base,
            nodes,
            reserved,
            policy,
            leases,
            counters: Counters::new(metrics),
            discovered: HashSet::new(),
            chained: HashMap::new(),
            drop_window: 0,
            drop_logged: 0,
            drop_suppressed: 0,
        })
    }

    /// The lease table (to persist it).
    pub fn leases(&self) -> &LeaseTable {
        &self.leases
    }

    /// Take `leases` instead of the table in memory (another writer changed the kept table:
    /// an HA takeover). Offers in flight are forgotten; bound leases are what was kept.
    pub fn set_leases(&mut self, leases: LeaseTable) {
        self.leases = leases;
    }

    /// Whether the bound leases changed since the last call: if so, persist [`Engine::leases`]
    /// before sending the reply.
    pub fn take_dirty(&mut self) -> bool {
        self.leases.take_dirty()
    }

    /// Handle one datagram. Returns the reply to send, if any.
    pub fn handle(&mut self, pkt: &[u8], rx: RxInfo, now: SystemTime) -> Option<Reply> {
        let now = unix_secs(now);
        let (req, ty) = match wire::decode_request(pkt) {
            Ok(r) => r,
            Err(why) => {
                self.note_drop(rx.src, &why.to_string(), now);
                return None;
            }
        };
        bump(match ty {
            MessageType::Discover => &self.counters.rx_discover,
            MessageType::Request => &self.counters.rx_request,
            MessageType::Decline => &self.counters.rx_decline,
            MessageType::Release => &self.counters.rx_release,
            MessageType::Inform => &self.counters.rx_inform,
            _ => &self.counters.rx_other,
        });
        if !self.policy.serving() {
            bump(&self.counters.not_serving);
            return None;
        }
        let mac = MacAddr::from_slice(req.chaddr()).expect("wire::check ensures hlen 6");
        let client = pxe::classify(&req);
        let mut line = format!(
            "DHCP {} from {mac} arch={} ipxe={}",
            type_name(ty),
            ArchName(client.arch),
            if client.firmware == Firmware::Ipxe {
                "yes"
            } else {
                "no"
            },
        );
        if client.firmware == Firmware::HttpBoot {
            line.push_str(" http-boot");
        }
        if !req.giaddr().is_unspecified() {
            line.push_str(&format!(" via relay {}", req.giaddr()));
        }
        if rx.local_port == PROXY_PORT {
            line.push_str(" on port 4011");
        }
        let decision = match self.cfg.mode {
            // `Auto` never gets here: `new` refuses it (the probe decides first).
            DhcpMode::Authoritative | DhcpMode::Auto => self.authoritative(&req, ty, mac, now),
            DhcpMode::Proxy => self.proxy(&req, ty, mac, &client, rx),
        };
        self.finish(&req, rx, mac, &client, decision, line, now)
    }

    fn note_drop(&mut self, src: SocketAddrV4, why: &str, now: u64) {
        bump(&self.counters.dropped);
        if now >= self.drop_window + DROP_LOG_WINDOW_SECS {
            if self.drop_suppressed > 0 {
                warn!(
                    "dhcp: {} more malformed packets dropped without a log line",
                    self.drop_suppressed
                );
            }
            self.drop_window = now;
            self.drop_logged = 0;
            self.drop_suppressed = 0;
        }
        if self.drop_logged < DROP_LOGS_PER_WINDOW {
            self.drop_logged += 1;
            warn!("dhcp: dropped malformed packet from {src}: {why}");
        } else {
            self.drop_suppressed += 1;
        }
    }

    fn known(&self, mac: MacAddr) -> bool {
        self.nodes.contains_key(&mac) || self.policy.boot_action(mac).is_some()
    }

    /// Whether to serve this MAC at all; enrolls it with the policy on first sight when
    /// discovery is on.
    fn admit(&mut self, mac: MacAddr) -> Result<(), NoAddress> {
        if self.known(mac) {
            return Ok(());
        }
        if self.cfg.addresses_for_unknown {
            return Ok(());
        }
        if !self.cfg.discovery {
            return Err(NoAddress::Unknown);
        }
        if self.discovered.len() >= MAX_DISCOVERED_REMEMBERED {
            self.discovered.clear();
        }
        if self.discovered.insert(mac) {
            info!("DHCP discovered new MAC {mac}: reported to the boot policy");
            if !self.policy.discovered(mac) {
                // Not taken now (rate limit, cap): report it again when it asks again.
                self.discovered.remove(&mac);
            }
        }
        Ok(())
    }

    fn in_subnet(&self, ip: Ipv4Addr) -> bool {
        self.cfg.subnet.is_some_and(|s| s.contains(&ip))
    }

    /// Whether `ip` may be given from the pool to `mac`.
    fn pool_usable(&self, ip: Ipv4Addr, mac: MacAddr, now: u64) -> bool {
        self.cfg.pool.is_some_and(|p| p.contains(ip))
            && !self.reserved.contains(&ip)
            && ip != self.server_ip
            && Some(ip) != self.cfg.router
            && self.leases.available_to(ip, mac, now)
    }

    /// The address `mac` should have, preferring `requested` when it is free.
    fn allocate(
        &self,
        mac: MacAddr,
        requested: Option<Ipv4Addr>,
        now: u64,
    ) -> Result<(Ipv4Addr, Source), NoAddress> {
        if let Some(node) = self.nodes.get(&mac) {
            if let Some(ip) = node.ip {
                if self.leases.quarantined(ip, now) {
                    return Err(NoAddress::Quarantined(ip));
                }
                return Ok((ip, Source::Reservation(node.hostname.clone())));
            }
        }
        let Some(pool) = self.cfg.pool else {
            return Err(NoAddress::NoPool);
        };
        let sticky = self.leases.ip_of(mac);
        for ip in [sticky, requested].into_iter().flatten() {
            if self.pool_usable(ip, mac, now) {
                return Ok((ip, Source::Pool));
            }
        }
        // A fresh address first, so an expired lease stays with its MAC as long as possible.
        pool.iter()
            .find(|&ip| self.leases.untouched(ip, now) && self.pool_usable(ip, mac, now))
            .or_else(|| pool.iter().find(|&ip| self.pool_usable(ip, mac, now)))
            .map(|ip| (ip, Source::Pool))
            .ok_or(NoAddress::Exhausted {
                start: pool.start,
                end: pool.end,
            })
    }

    fn authoritative(
        &mut self,
        req: &Message,
        ty: MessageType,
        mac: MacAddr,
        now: u64,
    ) -> Decision {
        let giaddr = req.giaddr();
        if !giaddr.is_unspecified() && !self.in_subnet(giaddr) {
            return Decision::Ignore(format!("relay {giaddr} is not in the served subnet"));
        }
        let server_id = match req.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
            _ => None,
        };
        let requested = match req.opts().get(OptionCode::RequestedIpAddress) {
            Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
            _ => None,
        };
        if let Err(why) = self.admit(mac) {
            return Decision::Ignore(why.to_string());
        }
        let lease = u64::from(self.cfg.lease_time);
        match ty {
            MessageType::Discover => match self.allocate(mac, requested, now) {
                Ok((ip, src)) => {
                    self.leases.offer(mac, ip, now + OFFER_HOLD_SECS);
                    Decision::Reply {
                        kind: MessageType::Offer,
                        yiaddr: ip,
                        lease: true,
                        why: src.to_string(),
                    }
                }
                Err(why) => Decision::Ignore(why.to_string()),
            },
            MessageType::Request => {
                if let Some(sid) = server_id {
                    if sid != self.server_ip {
                        if let Some(ip) = self.leases.ip_of(mac) {
                            if self
                                .leases
                                .get(ip)
                                .is_some_and(|l| l.state == super::leases::LeaseState::Offered)
                            {
                                self.leases.release(mac, ip);
                            }
                        }
                        return Decision::Silent(format!("client chose server {sid}"));
                    }
                }
                let ciaddr = req.ciaddr();
                let (wanted, state) = match (server_id, requested) {
                    (Some(_), Some(ip)) => (ip, "selecting"),
                    (None, Some(ip)) => (ip, "init-reboot"),
                    _ if !ciaddr.is_unspecified() => (ciaddr, "renewing"),
                    _ => return Decision::Ignore("REQUEST names no address".into()),
                };
                if !self.in_subnet(wanted) {
                    return Decision::Nak(format!("{state} {wanted}: not on this network"));
                }
                match self.allocate(mac, Some(wanted), now) {
                    Ok((ip, src)) if ip == wanted => {
                        self.leases.bind(mac, ip, now + lease);
                        Decision::Reply {
                            kind: MessageType::Ack,
                            yiaddr: ip,
                            lease: true,
                            why: format!("{src}, {state}"),
                        }
                    }
                    Ok((ip, _)) => Decision::Nak(format!(
                        "{state} {wanted}, but this client's address is {ip}"
                    )),
                    Err(why) => Decision::Nak(format!("{state} {wanted}: {why}")),
                }
            }
            MessageType::Decline => {
                if server_id.is_some_and(|s| s != self.server_ip) {
                    return Decision::Silent("declines another server's address".into());
                }
                let Some(ip) = requested else {
                    return Decision::Ignore("DECLINE names no address".into());
                };
                let ours = self.leases.get(ip).is_some_and(|l| l.mac == mac)
                    || self.nodes.get(&mac).is_some_and(|n| n.ip == Some(ip));
                if !ours {
                    return Decision::Ignore(format!("declines {ip}, which it does not hold"));
                }
                self.leases.decline(ip, now + lease);
                Decision::Silent(format!("{ip} quarantined for {lease}s"))
            }
            MessageType::Release => {
                if server_id.is_some_and(|s| s != self.server_ip) {
                    return Decision::Silent("releases another server's address".into());
                }
                let ip = req.ciaddr();
                if self.leases.release(mac, ip) {
                    Decision::Silent(format!("{ip} released"))
                } else {
                    Decision::Ignore(format!("releases {ip}, which it does not hold"))
                }
            }
            MessageType::Inform => Decision::Reply {
                kind: MessageType::Ack,
                yiaddr: Ipv4Addr::UNSPECIFIED,
                lease: false,
                why: "inform".into(),
            },
            other => Decision::Ignore(format!("{} is not a client message", type_name(other))),
        }
    }

    fn proxy(
        &mut self,
        req: &Message,
        ty: MessageType,
        mac: MacAddr,
        client: &ClientInfo,
        rx: RxInfo,
    ) -> Decision {
        if client.firmware == Firmware::Plain {
            return Decision::Silent("not a PXE client (proxy mode)".into());
        }
        if let Err(why) = self.admit(mac) {
            return Decision::Ignore(why.to_string());
        }
        // The PXE client's broadcast REQUEST to the other server names the address it takes.
        // A client that got its boot file from our OFFER asks nothing on port 4011 (iPXE
        // does not), so this is the only address of it we see: what the boot policy's
        // "asked from the node's own address" rule checks. It is the client's own word, as is
        // everything in proxy mode.
        if rx.local_port != PROXY_PORT && ty == MessageType::Request {
            if let Some(DhcpOption::RequestedIpAddress(ip)) =
                req.opts().get(OptionCode::RequestedIpAddress)
            {
                self.policy.address_seen(mac, *ip);
            }
        }
        let kind = match (rx.local_port, ty) {
            (PROXY_PORT, MessageType::Request | MessageType::Inform) => MessageType::Ack,
            (PROXY_PORT, _) => {
                return Decision::Ignore("only REQUEST is answered on port 4011".into())
            }
            (_, MessageType::Discover) => MessageType::Offer,
            (_, _) => {
                return Decision::Silent("proxy mode answers only DISCOVER on port 67".into())
            }
        };
        Decision::Reply {
            kind,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            lease: false,
            why: "proxy".into(),
        }
    }

    /// The chain stage of this exchange, and the client as the boot file choice should see it:
    /// in the first stage an iPXE ROM is served as the firmware PXE it runs on.
    fn chain_stage(&self, mac: MacAddr, client: &ClientInfo, now: u64) -> (ChainStage, ClientInfo) {
        if client.firmware == Firmware::Plain || self.policy.chain(mac) == Chain::Direct {
            return (ChainStage::Off, client.clone());
        }
        if client.firmware != Firmware::Ipxe {
            return (ChainStage::First, client.clone());
        }
        if self.chained.get(&mac).is_some_and(|&until| now < until) {
            return (ChainStage::Chained, client.clone());
        }
        let as_pxe = ClientInfo {
            firmware: Firmware::Pxe,
            arch: client.arch,
        };
        (ChainStage::First, as_pxe)
    }

    /// Remember (or forget) that `mac` was handed the iPXE boot file, once an ACK carries it.
    fn note_chain(&mut self, mac: MacAddr, stage: ChainStage, kind: MessageType, now: u64) {
        if kind != MessageType::Ack {
            return;
        }
        match stage {
            ChainStage::First => {
                if self.chained.len() >= MAX_DISCOVERED_REMEMBERED {
                    self.chained.retain(|_, &mut until| now < until);
                }
                if self.chained.len() < MAX_DISCOVERED_REMEMBERED {
                    self.chained.insert(mac, now + CHAIN_WINDOW_SECS);
                }
            }
            ChainStage::Chained => {
                self.chained.remove(&mac);
            }
            ChainStage::Off => {}
        }
    }

    /// Turn a decision into a reply and one log line.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &mut self,
        req: &Message,
        rx: RxInfo,
        mac: MacAddr,
        client: &ClientInfo,
        decision: Decision,
        line: String,
        now: u64,
    ) -> Option<Reply> {
        match decision {
            Decision::Ignore(why) => {
                bump(&self.counters.ignored);
                info!("{line} ignored: {why}");
                None
            }
            Decision::Silent(why) => {
                // Proxy mode sees every client on the network; non-PXE ones are not news.
                if why.starts_with("not a PXE client") || why.starts_with("proxy mode answers") {
                    debug!("{line} ignored: {why}");
                } else {
                    info!("{line} → no reply: {why}");
                }
                None
            }
            Decision::Nak(why) => {
                bump(&self.counters.tx_nak);
                info!("{line} → NAK ({why})");
                let mut m = self.base_reply(req, MessageType::Nak, Ipv4Addr::UNSPECIFIED);
                m.set_ciaddr(Ipv4Addr::UNSPECIFIED);
                m.opts_mut().insert(DhcpOption::Message(why));
                if !req.giaddr().is_unspecified() {
                    m.set_flags(Flags::default().set_broadcast());
                }
                Some(self.emit(m, req, rx, MessageType::Nak))
            }
            Decision::Reply {
                kind,
                yiaddr,
                lease,
                why,
            } => {
                let mut m = self.base_reply(req, kind, yiaddr);
                if self.cfg.mode == DhcpMode::Authoritative {
                    self.add_network_options(&mut m, mac, lease);
                }
                let (stage, client) = self.chain_stage(mac, client, now);
                let boot = if self.cfg.addresses_for_unknown && !self.known(mac) {
                    Err(pxe::NoBoot::AddressOnly)
                } else {
                    pxe::boot_for(
                        &client,
                        mac,
                        &self.cfg.bootfiles,
                        self.server_ip,
                        self.http_base.as_deref(),
                    )
                };
                let file_note = match &boot {
                    Ok(b) => {
                        add_boot(&mut m, b, req);
                        if self.cfg.mode == DhcpMode::Proxy {
                            proxy_marks(&mut m, self.server_ip);
                        }
                        self.note_chain(mac, stage, kind, now);
                        match stage {
                            ChainStage::Off => format!(" file={}", b.file),
                            ChainStage::First => format!(" file={} chain=tftp:first", b.file),
                            ChainStage::Chained => format!(" file={} chain=tftp:chained", b.file),
                        }
                    }
                    Err(pxe::NoBoot::NotNetboot) => String::new(),
                    Err(e) => format!(" no boot file: {e}"),
                };
                if self.cfg.mode == DhcpMode::Proxy && boot.is_err() {
                    bump(&self.counters.ignored);
                    info!("{line} ignored:{file_note}");
                    return None;
                }
                let addr = if yiaddr.is_unspecified() {
                    String::new()
                } else {
                    format!(" {yiaddr}")
                };
                if kind == MessageType::Ack {
                    self.note_address(req, rx, mac, yiaddr);
                }
                bump(match kind {
                    MessageType::Offer => &self.counters.tx_offer,
                    _ => &self.counters.tx_ack,
                });
                info!("{line} → {}{addr}{file_note} ({why})", type_name(kind));
                Some(self.emit(m, req, rx, kind))
            }
        }
    }

    /// Tell the policy which address `mac` has now: the lease an ACK binds or, in proxy mode
    /// (no lease of ours), the address its PXE REQUEST came from. An authoritative INFORM
    /// (`yiaddr` 0) names none: its `ciaddr` is the sender's word only.
    fn note_address(&self, req: &Message, rx: RxInfo, mac: MacAddr, yiaddr: Ipv4Addr) {
        let ip = if !yiaddr.is_unspecified() {
            yiaddr
        } else if self.cfg.mode == DhcpMode::Proxy {
            match req.ciaddr() {
                ip if !ip.is_unspecified() => ip,
                _ => *rx.src.ip(),
            }
        } else {
            return;
        };
        if !ip.is_unspecified() {
            self.policy.address_seen(mac, ip);
        }
    }

    fn base_reply(&self, req: &Message, kind: MessageType, yiaddr: Ipv4Addr) -> Message {
        let mut m = Message::new_with_id(
            req.xid(),
            req.ciaddr(),
            yiaddr,
            Ipv4Addr::UNSPECIFIED,
            req.giaddr(),
            req.chaddr(),
        );
        m.set_opcode(Opcode::BootReply)
            .set_htype(req.htype())
            .set_flags(req.flags());
        let opts = m.opts_mut();
        opts.insert(DhcpOption::MessageType(kind));
        opts.insert(DhcpOption::ServerIdentifier(self.server_ip));
        // RFC 3046: a relay's agent information comes back as it went.
        if let Some(o) = req.opts().get(OptionCode::RelayAgentInformation) {
            opts.insert(o.clone());
        }
        m
    }

    fn add_network_options(&self, m: &mut Message, mac: MacAddr, lease: bool) {
        let opts = m.opts_mut();
        if lease {
            let t = self.cfg.lease_time;
            opts.insert(DhcpOption::AddressLeaseTime(t));
            opts.insert(DhcpOption::Renewal(t / 2));
            opts.insert(DhcpOption::Rebinding((u64::from(t) * 7 / 8) as u32));
        }
        if let Some(s) = self.cfg.subnet {
            opts.insert(DhcpOption::SubnetMask(s.netmask()));
        }
        if let Some(r) = self.cfg.router {
            opts.insert(DhcpOption::Router(vec![r]));
        }
        if !self.cfg.dns.is_empty() {
            opts.insert(DhcpOption::DomainNameServer(self.cfg.dns.clone()));
        }
        if let Some(h) = self.nodes.get(&mac).and_then(|n| n.hostname.clone()) {
            opts.insert(DhcpOption::Hostname(h));
        }
    }

    fn emit(&self, m: Message, req: &Message, rx: RxInfo, kind: MessageType) -> Reply {
        let mut payload = Vec::with_capacity(MIN_REPLY_LEN);
        m.encode(&mut Encoder::new(&mut payload))
            .expect("encoding to a Vec cannot fail");
        if payload.len() < MIN_REPLY_LEN {
            payload.resize(MIN_REPLY_LEN, 0);
        }
        Reply {
            payload,
            to: destination(req, rx, kind),
            from_port: rx.local_port,
            kind,
        }
    }
}

/// Put boot information into a reply.
fn add_boot(m: &mut Message, b: &pxe::Boot, req: &Message) {
    if b.file.len() < 128 {
        m.set_fname_str(&b.file);
    }
    if let Some(ns) = b.next_server {
        m.set_siaddr(ns);
        m.opts_mut()
            .insert(DhcpOption::TFTPServerName(ns.to_string().into_bytes()));
    }
    let opts = m.opts_mut();
    opts.insert(DhcpOption::BootfileName(b.file.clone().into_bytes()));
    if let Some(vc) = b.vendor_class {
        opts.insert(DhcpOption::ClassIdentifier(vc.as_bytes().to_vec()));
    }
    if b.pxe_vendor_options {
        // PXE_DISCOVERY_CONTROL (6) = 8: skip boot server discovery, download `file` directly.
        opts.insert(DhcpOption::VendorExtensions(vec![6, 1, 8, 255]));
    }
    // The PXE spec asks the server to echo the client's machine identifier (UUID).
    if let Some(o) = req.opts().get(OptionCode::ClientMachineIdentifier) {
        opts.insert(o.clone());
    }
}

/// What makes a ProxyDHCP reply one for iPXE (captured: without them it booted nothing, found
/// by `qemu_dhcp_probe`): option 60 `PXEClient` (PXE 2.1 §2.2.5), without which iPXE does not
/// take the offer as ProxyDHCP, and a next-server with the boot file, without which iPXE
/// judges the reply to carry no PXE options and discards it (`dhcp_has_pxeopts`).
fn proxy_marks(m: &mut Message, server_ip: Ipv4Addr) {
    if m.siaddr().is_unspecified() {
        m.set_siaddr(server_ip);
    }
    if m.opts().get(OptionCode::ClassIdentifier).is_none() {
        m.opts_mut()
            .insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
    }
}

/// RFC 2131 §4.1 destination rules (see the module doc).
fn destination(req: &Message, rx: RxInfo, kind: MessageType) -> SocketAddrV4 {
    if rx.local_port == PROXY_PORT {
        return rx.src;
    }
    if !req.giaddr().is_unspecified() {
        return SocketAddrV4::new(req.giaddr(), SERVER_PORT);
    }
    if kind != MessageType::Nak && !req.ciaddr().is_unspecified() {
        return SocketAddrV4::new(req.ciaddr(), CLIENT_PORT);
    }
    SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT)
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
