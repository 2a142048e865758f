//! The userspace wire: the seed as its own host on a link, with smoltcp as its IP stack.
//!
//! With a `[wire]` section in the netboot config the services run on [`stack::Stack`] instead
//! of kernel sockets: no root, bridge or TAP is needed to join a QEMU lab's socket-multicast
//! wire, and the same sans-IO DHCP engine and the same hyper HTTP service answer. The link is
//! one of [`device::McastDevice`] (QEMU `-netdev socket,mcast=`), a TAP interface, or an
//! AF_PACKET socket on a NIC ([`af_packet`], which completes offloaded checksums); optionally every frame is also written to a pcap file under
//! `state_dir` so a PXE failure opens in Wireshark. ARP and ICMP echo are answered by smoltcp;
//! IPv6 Router Solicitations by [`ra`] (smoltcp has no IPv6 here), so iPXE does not wait for a
//! router.

pub mod af_packet;
pub mod device;
pub mod garp;
pub mod ra;
pub mod services;
pub mod stack;

use crate::mac::MacAddr;
use crate::metrics::Metrics;
use serde::Deserialize;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use tokio_util::sync::CancellationToken;

pub use stack::{HostAddr, Stack, WireTcpListener, WireTcpStream, WireUdp};

/// Which link the stack sits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WireKind {
    /// QEMU's socket netdev: Ethernet frames as UDP datagrams to a multicast group on loopback.
    QemuMcast,
    /// A TAP interface (`ifname`).
    Tap,
    /// AF_PACKET on the NIC `ifname` (needs CAP_NET_RAW).
    AfPacket,
}

/// The `[wire]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireConfig {
    pub kind: WireKind,
    /// Multicast group (qemu-mcast).
    #[serde(default)]
    pub group: Option<Ipv4Addr>,
    /// UDP port (qemu-mcast).
    #[serde(default)]
    pub port: Option<u16>,
    /// Interface name (tap, af-packet).
    #[serde(default)]
    pub ifname: Option<String>,
    /// The seed's Ethernet address; derived from `server_ip` if absent.
    #[serde(default)]
    pub mac: Option<MacAddr>,
    /// Prefix length of `server_ip`'s network.
    #[serde(default = "default_prefix_len")]
    pub prefix_len: u8,
    /// Write every frame to `state_dir/wire.pcap`.
    #[serde(default)]
    pub pcap: bool,
    /// Answer IPv6 Router Solicitations with a bare Router Advertisement (no prefix, not a
    /// default router): without one every iPXE waits ~13 s after DHCP.
    #[serde(default = "default_answer_rs")]
    pub answer_rs: bool,
    /// Faults injected into every frame in and out (the fault campaign; never on a real
    /// network): smoltcp's [`FaultInjector`](smoltcp::phy::FaultInjector).
    #[serde(default)]
    pub faults: Option<WireFaults>,
}

/// `[wire.faults]`: the share of frames (percent, each way) dropped and corrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireFaults {
    #[serde(default)]
    pub drop_pct: u8,
    #[serde(default)]
    pub corrupt_pct: u8,
    /// The injector's random seed (a campaign run can be repeated).
    #[serde(default = "default_fault_seed")]
    pub seed: u32,
}

fn default_fault_seed() -> u32 {
    1
}

fn default_answer_rs() -> bool {
    true
}

fn default_prefix_len() -> u8 {
    24
}

/// Why a `[wire]` section cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireConfigError {
    #[error("wire.prefix_len {0} is not in 1..=30")]
    PrefixLen(u8),
    #[error("wire.group {0} is not a multicast address")]
    NotMulticast(Ipv4Addr),
    #[error("wire kind qemu-mcast needs group and port")]
    NoGroup,
    #[error("wire kinds tap and af-packet need ifname")]
    NoIfname,
    #[error("wire.faults: drop_pct and corrupt_pct are percentages up to 50 (got {0} and {1})")]
    Faults(u8, u8),
}

impl WireConfig {
    /// Check the fields the kind needs.
    pub fn validate(&self) -> Result<(), WireConfigError> {
        if self.prefix_len == 0 || self.prefix_len > 30 {
            return Err(WireConfigError::PrefixLen(self.prefix_len));
        }
        if let Some(f) = self.faults {
            if f.drop_pct > 50 || f.corrupt_pct > 50 {
                return Err(WireConfigError::Faults(f.drop_pct, f.corrupt_pct));
            }
        }
        match self.kind {
            WireKind::QemuMcast => match (self.group, self.port) {
                (Some(g), Some(_)) if g.is_multicast() => Ok(()),
                (Some(g), Some(_)) => Err(WireConfigError::NotMulticast(g)),
                _ => Err(WireConfigError::NoGroup),
            },
            WireKind::Tap | WireKind::AfPacket => match &self.ifname {
                Some(n) if !n.is_empty() => Ok(()),
                _ => Err(WireConfigError::NoIfname),
            },
        }
    }

    /// The seed's Ethernet address on the wire: configured, or `02:5e:` + the IPv4 address
    /// (locally administered, unicast, stable across restarts).
    pub fn mac_for(&self, server_ip: Ipv4Addr) -> MacAddr {
        self.mac.unwrap_or_else(|| {
            let o = server_ip.octets();
            MacAddr([0x02, 0x5e, o[0], o[1], o[2], o[3]])
        })
    }

    /// One line for `seed netboot --check`.
    pub fn describe(&self, server_ip: Ipv4Addr) -> String {
        let link = match self.kind {
            WireKind::QemuMcast => format!(
                "qemu-mcast {}:{}",
                self.group.unwrap_or(Ipv4Addr::UNSPECIFIED),
                self.port.unwrap_or(0)
            ),
            WireKind::Tap => format!("tap {}", self.ifname.as_deref().unwrap_or("")),
            WireKind::AfPacket => format!("af-packet {}", self.ifname.as_deref().unwrap_or("")),
        };
        let faults = match self.faults {
            Some(f) => format!(
                ", FAULTS: {}% dropped, {}% corrupted (seed {})",
                f.drop_pct, f.corrupt_pct, f.seed
            ),
            None => String::new(),
        };
        format!(
            "userspace wire {link} as {server_ip}/{} ({}){}{}{faults}",
            self.prefix_len,
            self.mac_for(server_ip),
            if self.pcap { ", pcap on" } else { "" },
            if self.answer_rs {
                ""
            } else {
                ", router solicitations unanswered"
            }
        )
    }
}

/// The pcap file of a wire.
pub fn pcap_path(state_dir: &Path) -> PathBuf {
    state_dir.join("wire.pcap")
}

/// Open the wire's device and start the stack on it; the stack's own counters (router
/// solicitations) go to `metrics`.
pub fn start(
    cfg: &WireConfig,
    server_ip: Ipv4Addr,
    state_dir: &Path,
    metrics: &Metrics,
    shutdown: CancellationToken,
) -> io::Result<Stack> {
    cfg.validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mac = cfg.mac_for(server_ip);
    let addr = HostAddr {
        mac: mac.0,
        ip: server_ip,
        prefix_len: cfg.prefix_len,
    };
    let pcap = if cfg.pcap {
        std::fs::create_dir_all(state_dir)?;
        let path = pcap_path(state_dir);
        let f = std::fs::File::create(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", path.display())))?;
        tracing::info!(path = %path.display(), "wire: capturing frames");
        Some(f)
    } else {
        None
    };
    tracing::info!("wire: {}", cfg.describe(server_ip));
    let ra = RaSettings {
        mac: mac.0,
        enabled: cfg.answer_rs,
        counters: ra::RaCounters::new(metrics),
    };
    let faults = cfg.faults;
    let (kind, group, port, ifname) = (cfg.kind, cfg.group, cfg.port, cfg.ifname.clone());
    let ifname = ifname.unwrap_or_default();
    match kind {
        WireKind::QemuMcast => {
            let (g, p) = (group.unwrap_or(Ipv4Addr::UNSPECIFIED), port.unwrap_or(0));
            with_faults(addr, pcap, faults, ra, shutdown, move || {
                let d = device::McastDevice::join(g, p, mac.0)?;
                let fd = d.as_raw_fd();
                Ok((d, fd))
            })
        }
        WireKind::Tap => with_faults(addr, pcap, faults, ra, shutdown, move || {
            let d = device::tap(&ifname)?;
            let fd = d.as_raw_fd();
            Ok((d, fd))
        }),
        WireKind::AfPacket => {
            let counters = af_packet::AfPacketCounters::new(metrics);
            with_faults(addr, pcap, faults, ra, shutdown, move || {
                let d = af_packet::AfPacket::open(&ifname, counters)?;
                let fd = d.as_raw_fd();
                Ok((d, fd))
            })
        }
    }
}

/// The router solicitation responder's settings, moved to the driver thread.
struct RaSettings {
    mac: [u8; 6],
    enabled: bool,
    counters: ra::RaCounters,
}

/// Start the stack on the opened device, behind the fault injector when the wire has faults
/// (innermost: the capture and the stack see the frames that survived).
fn with_faults<D, F>(
    addr: HostAddr,
    pcap: Option<std::fs::File>,
    faults: Option<WireFaults>,
    ra: RaSettings,
    shutdown: CancellationToken,
    open: F,
) -> io::Result<Stack>
where
    D: smoltcp::phy::Device + 'static,
    F: FnOnce() -> io::Result<(D, std::os::fd::RawFd)> + Send + 'static,
{
    match faults {
        None => with_pcap(addr, pcap, ra, shutdown, open),
        Some(f) => {
            tracing::warn!(
                drop_pct = f.drop_pct,
                corrupt_pct = f.corrupt_pct,
                "wire: injecting faults into every frame (a fault campaign, not a real network)"
            );
            with_pcap(addr, pcap, ra, shutdown, move || {
                let (d, fd) = open()?;
                let mut d = smoltcp::phy::FaultInjector::new(d, f.seed);
                d.set_drop_chance(f.drop_pct);
                d.set_corrupt_chance(f.corrupt_pct);
                Ok((d, fd))
            })
        }
    }
}

/// Start the stack on the opened device wrapped in the pcap writer (if any) and, outermost,
/// the RS responder, so its advertisements are captured too.
fn with_pcap<D, F>(
    addr: HostAddr,
    pcap: Option<std::fs::File>,
    ra: RaSettings,
    shutdown: CancellationToken,
    open: F,
) -> io::Result<Stack>
where
    D: smoltcp::phy::Device + 'static,
    F: FnOnce() -> io::Result<(D, std::os::fd::RawFd)> + Send + 'static,
{
    let RaSettings {
        mac,
        enabled,
        counters,
    } = ra;
    match pcap {
        None => Stack::start(
            addr,
            move || {
                let (d, fd) = open()?;
                Ok((ra::RaDevice::new(d, mac, enabled, counters), fd))
            },
            shutdown,
        ),
        Some(file) => Stack::start(
            addr,
            move || {
                let (d, fd) = open()?;
                let sink = PcapFile(Some(file));
                let w = smoltcp::phy::PcapWriter::new(d, sink, smoltcp::phy::PcapMode::Both);
                Ok((ra::RaDevice::new(w, mac, enabled, counters), fd))
            },
            shutdown,
        ),
    }
}

/// The pcap file. smoltcp's sink for `Write` types panics on a write error (disk full), which
/// would stop the stack; this one logs once and stops capturing instead.
struct PcapFile(Option<std::fs::File>);

impl smoltcp::phy::PcapSink for PcapFile {
    fn write(&mut self, data: &[u8]) {
        use std::io::Write;
        if let Some(f) = &mut self.0 {
            if let Err(e) = f.write_all(data) {
                tracing::warn!(error = %e, "wire: pcap capture stopped");
                self.0 = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::NetbootConfig;

    const BASE: &str = "server_ip = \"10.9.0.1\"\n[http]\nroot = \"/tmp\"\n";

    #[test]
    fn wire_faults_parse_describe_and_are_bounded() {
        let wire = "[wire]\nkind = \"qemu-mcast\"\ngroup = \"230.0.71.5\"\nport = 47123\n";
        let cfg = NetbootConfig::from_toml(&format!(
            "{BASE}{wire}[wire.faults]\ndrop_pct = 5\ncorrupt_pct = 2\n"
        ))
        .unwrap();
        let w = cfg.wire.unwrap();
        let f = w.faults.unwrap();
        assert_eq!((f.drop_pct, f.corrupt_pct, f.seed), (5, 2, 1));
        assert!(
            w.describe(cfg.server_ip)
                .ends_with("FAULTS: 5% dropped, 2% corrupted (seed 1)"),
            "{}",
            w.describe(cfg.server_ip)
        );
        for bad in ["drop_pct = 51", "corrupt_pct = 90", "delay_ms = 3"] {
            let r = NetbootConfig::from_toml(&format!("{BASE}{wire}[wire.faults]\n{bad}\n"));
            assert!(r.is_err(), "{bad} accepted");
        }
        let plain = NetbootConfig::from_toml(&format!("{BASE}{wire}")).unwrap();
        assert_eq!(plain.wire.unwrap().faults, None);
    }

    #[test]
    fn a_qemu_mcast_wire_parses_with_defaults() {
        let cfg = NetbootConfig::from_toml(&format!(
            "{BASE}[wire]\nkind = \"qemu-mcast\"\ngroup = \"230.0.71.5\"\nport = 47123\n"
        ))
        .unwrap();
        let w = cfg.wire.unwrap();
        assert_eq!(w.kind, super::WireKind::QemuMcast);
        assert_eq!(w.prefix_len, 24);
        assert!(!w.pcap);
        assert!(w.answer_rs, "router solicitations are answered by default");
        assert_eq!(
            w.mac_for(cfg.server_ip).to_string(),
            "02:5e:0a:09:00:01",
            "derived, locally administered"
        );
        assert_eq!(
            w.describe(cfg.server_ip),
            "userspace wire qemu-mcast 230.0.71.5:47123 as 10.9.0.1/24 (02:5e:0a:09:00:01)"
        );
    }

    #[test]
    fn answering_router_solicitations_can_be_turned_off() {
        let cfg = NetbootConfig::from_toml(&format!(
            "{BASE}[wire]\nkind = \"tap\"\nifname = \"tap0\"\nanswer_rs = false\n"
        ))
        .unwrap();
        let w = cfg.wire.unwrap();
        assert!(!w.answer_rs);
        assert!(w
            .describe(cfg.server_ip)
            .ends_with(", router solicitations unanswered"));
    }

    #[test]
    fn incomplete_or_contradictory_wires_are_refused() {
        for (wire, why) in [
            (
                "kind = \"qemu-mcast\"\ngroup = \"230.0.71.5\"",
                "group and port",
            ),
            (
                "kind = \"qemu-mcast\"\ngroup = \"10.0.0.1\"\nport = 1",
                "not a multicast",
            ),
            ("kind = \"tap\"", "ifname"),
            (
                "kind = \"af-packet\"\nifname = \"eth9\"\nprefix_len = 31",
                "prefix_len",
            ),
            ("kind = \"token-ring\"", "unknown variant"),
        ] {
            let e = NetbootConfig::from_toml(&format!("{BASE}[wire]\n{wire}\n")).unwrap_err();
            let msg = format!(
                "{e} {:?}",
                std::error::Error::source(&e).map(|s| s.to_string())
            );
            assert!(msg.contains(why), "{wire}: {msg}");
        }
        let e = NetbootConfig::from_toml(&format!(
            "interface = \"eth0\"\n{BASE}[wire]\nkind = \"tap\"\nifname = \"tap0\"\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("wire.ifname"), "{e}");
    }
}
