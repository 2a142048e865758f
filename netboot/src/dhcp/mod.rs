//! DHCPv4 server: authoritative (reservations + optional dynamic pool) and ProxyDHCP, with PXE
//! boot file selection.
//!
//! - [`wire`] checks the framing of a raw packet before `dhcproto` decodes it;
//! - [`pxe`] classifies the client (firmware PXE, iPXE, UEFI HTTP Boot) and picks its boot file;
//! - [`leases`] is the lease table and its on-disk snapshot;
//! - [`engine`] is the sans-IO core: bytes + arrival port + wall-clock time in, replies out;
//! - [`probe`] is the sans-IO guard that, in `mode = "auto"`, looks for another DHCP server
//!   before any answer, and [`probe_edge`] drives it (and publishes the mode served);
//! - [`udp`] is the tokio transport that drives the engine on kernel sockets.

pub mod engine;
pub mod leases;
pub mod probe;
pub mod probe_edge;
pub mod pxe;
pub mod udp;
pub mod wire;

use crate::config::NodeEntry;
use crate::server::ServiceContext;
use ipnet::Ipv4Net;
use serde::Deserialize;
use std::net::Ipv4Addr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Whether we own the addresses on the network or only add boot information to someone else's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DhcpMode {
    /// We hand out addresses: reservations from `[[nodes]]`, and the pool.
    #[default]
    Authoritative,
    /// ProxyDHCP: another server hands out addresses; we answer PXE clients only, with boot
    /// information and no address, on port 67 (OFFER) and 4011 (REQUEST → ACK).
    Proxy,
    /// Look first ([`probe`]): a DISCOVER with the seed's own MAC, `probe_secs` of listening;
    /// `Proxy` if another server offered an address, else `Authoritative`. Decided once, before
    /// the first answer; the engine only ever runs in the mode decided.
    Auto,
}

impl DhcpMode {
    /// The mode's name, as in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            DhcpMode::Authoritative => "authoritative",
            DhcpMode::Proxy => "proxy",
            DhcpMode::Auto => "auto",
        }
    }
}

/// A dynamic address range, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
}

impl Pool {
    /// Whether `ip` lies in the range.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (u32::from(self.start)..=u32::from(self.end)).contains(&u32::from(ip))
    }

    /// Every address of the range, in order.
    pub fn iter(&self) -> impl Iterator<Item = Ipv4Addr> {
        (u32::from(self.start)..=u32::from(self.end)).map(Ipv4Addr::from)
    }
}

/// Boot file names per client architecture (paths under the TFTP root, or under the HTTP root for
/// UEFI HTTP Boot clients).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bootfiles {
    /// Legacy BIOS PXE (architecture 0).
    pub bios: String,
    /// x86-64 UEFI (architectures 7 and 9; 16 over HTTP).
    pub uefi_x64: String,
    /// ARM64 UEFI (architecture 11; 19 over HTTP).
    pub uefi_arm64: String,
}

impl Default for Bootfiles {
    fn default() -> Self {
        Self {
            bios: "undionly.kpxe".into(),
            uefi_x64: "snponly.efi".into(),
            uefi_arm64: "snponly-arm64.efi".into(),
        }
    }
}

/// The `[dhcp]` section, as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDhcpConfig {
    #[serde(default)]
    mode: DhcpMode,
    #[serde(default)]
    subnet: Option<Ipv4Net>,
    #[serde(default)]
    router: Option<Ipv4Addr>,
    #[serde(default)]
    dns: Vec<Ipv4Addr>,
    #[serde(default = "default_lease_time")]
    lease_time: u32,
    #[serde(default)]
    pool: Option<Pool>,
    #[serde(default)]
    discovery: bool,
    #[serde(default)]
    addresses_for_unknown: bool,
    #[serde(default)]
    bootfiles: Bootfiles,
    #[serde(default = "default_probe_secs")]
    probe_secs: u64,
}

fn default_lease_time() -> u32 {
    3600
}

fn default_probe_secs() -> u64 {
    probe::DEFAULT_PROBE_SECS
}

/// The `[dhcp]` section, validated on its own (cross-section checks, such as reservations lying
/// in the subnet, are made by [`engine::Engine::new`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawDhcpConfig")]
pub struct DhcpConfig {
    pub mode: DhcpMode,
    /// The served subnet (authoritative mode). Relayed requests are served only if their giaddr
    /// lies in it; direct requests are served from it.
    pub subnet: Option<Ipv4Net>,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    /// Lease time in seconds; T1 is half of it, T2 seven eighths.
    pub lease_time: u32,
    pub pool: Option<Pool>,
    /// Answer unknown MACs (from the pool in authoritative mode) and report them to the policy.
    pub discovery: bool,
    /// Hand pool addresses to unknown MACs, without boot information (authoritative mode,
    /// discovery off): the site's DHCP server role, beside which another seed in proxy mode
    /// boots the machines it knows.
    pub addresses_for_unknown: bool,
    pub bootfiles: Bootfiles,
    /// How long `mode = "auto"` listens for another server before answering anything.
    pub probe_secs: u64,
}

impl Default for DhcpConfig {
    fn default() -> Self {
        Self {
            mode: DhcpMode::Authoritative,
            subnet: None,
            router: None,
            dns: Vec::new(),
            lease_time: default_lease_time(),
            pool: None,
            discovery: false,
            addresses_for_unknown: false,
            bootfiles: Bootfiles::default(),
            probe_secs: default_probe_secs(),
        }
    }
}

/// Why a `[dhcp]` section (or its combination with the rest of the file) was refused.
#[derive(Debug, thiserror::Error)]
pub enum DhcpConfigError {
    #[error("[dhcp] mode = \"authoritative\" (or \"auto\", which may become it) needs `subnet`")]
    MissingSubnet,
    #[error(
        "[dhcp] addresses_for_unknown needs discovery off and an address-giving mode \
         (discovery boots unknown machines; proxy mode gives no addresses)"
    )]
    UnknownAddresses,
    #[error("[dhcp] probe_secs must be between 1 and 60, not {0}")]
    ProbeSecs(u64),
    #[error("[dhcp] mode = \"auto\" is decided by the probe before the server starts")]
    Unresolved,
    #[error("[dhcp] lease_time must be between 60 and 31536000 seconds, not {0}")]
    LeaseTime(u32),
    #[error("[dhcp] pool {start}..{end} is empty or reversed")]
    PoolReversed { start: Ipv4Addr, end: Ipv4Addr },
    #[error("[dhcp] pool {start}..{end} is not inside subnet {subnet}")]
    PoolOutsideSubnet {
        start: Ipv4Addr,
        end: Ipv4Addr,
        subnet: Ipv4Net,
    },
    #[error("[dhcp] pool needs a subnet")]
    PoolWithoutSubnet,
    #[error("node {mac} reserves {ip}, which is outside subnet {subnet}")]
    ReservationOutsideSubnet {
        mac: crate::MacAddr,
        ip: Ipv4Addr,
        subnet: Ipv4Net,
    },
    #[error("node {mac} reserves {ip}, the subnet's network or broadcast address")]
    ReservationUnusable { mac: crate::MacAddr, ip: Ipv4Addr },
}

impl TryFrom<RawDhcpConfig> for DhcpConfig {
    type Error = DhcpConfigError;

    fn try_from(raw: RawDhcpConfig) -> Result<Self, Self::Error> {
        if !(60..=31_536_000).contains(&raw.lease_time) {
            return Err(DhcpConfigError::LeaseTime(raw.lease_time));
        }
        if raw.mode != DhcpMode::Proxy && raw.subnet.is_none() {
            return Err(DhcpConfigError::MissingSubnet);
        }
        if raw.addresses_for_unknown && (raw.discovery || raw.mode == DhcpMode::Proxy) {
            return Err(DhcpConfigError::UnknownAddresses);
        }
        if !(1..=60).contains(&raw.probe_secs) {
            return Err(DhcpConfigError::ProbeSecs(raw.probe_secs));
        }
        if let Some(pool) = raw.pool {
            if u32::from(pool.start) > u32::from(pool.end) {
                return Err(DhcpConfigError::PoolReversed {
                    start: pool.start,
                    end: pool.end,
                });
            }
            let subnet = raw.subnet.ok_or(DhcpConfigError::PoolWithoutSubnet)?;
            let usable =
                |ip| subnet.contains(&ip) && ip != subnet.network() && ip != subnet.broadcast();
            if !usable(pool.start) || !usable(pool.end) {
                return Err(DhcpConfigError::PoolOutsideSubnet {
                    start: pool.start,
                    end: pool.end,
                    subnet,
                });
            }
        }
        Ok(Self {
            mode: raw.mode,
            // Keep the network address only: "10.0.0.1/24" means 10.0.0.0/24.
            subnet: raw.subnet.map(|s| s.trunc()),
            router: raw.router,
            dns: raw.dns,
            lease_time: raw.lease_time,
            pool: raw.pool,
            discovery: raw.discovery,
            addresses_for_unknown: raw.addresses_for_unknown,
            bootfiles: raw.bootfiles,
            probe_secs: raw.probe_secs,
        })
    }
}

impl DhcpConfig {
    /// Cross-section check: every reservation lies in the subnet and is a usable host address.
    /// Returns the reserved addresses.
    pub fn check_nodes(
        &self,
        nodes: &[NodeEntry],
    ) -> Result<std::collections::HashSet<Ipv4Addr>, DhcpConfigError> {
        let mut reserved = std::collections::HashSet::new();
        if self.mode == DhcpMode::Proxy {
            return Ok(reserved);
        }
        let subnet = self.subnet.ok_or(DhcpConfigError::MissingSubnet)?;
        for n in nodes {
            if let Some(ip) = n.ip {
                if !subnet.contains(&ip) {
                    return Err(DhcpConfigError::ReservationOutsideSubnet {
                        mac: n.mac,
                        ip,
                        subnet,
                    });
                }
                if ip == subnet.network() || ip == subnet.broadcast() {
                    return Err(DhcpConfigError::ReservationUnusable { mac: n.mac, ip });
                }
                reserved.insert(ip);
            }
        }
        Ok(reserved)
    }
}

/// Serve DHCP until shutdown.
pub async fn serve(
    ctx: Arc<ServiceContext>,
    cfg: DhcpConfig,
    nodes: Vec<NodeEntry>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    udp::serve(ctx, cfg, nodes, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DhcpConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn parses_the_documented_section_with_defaults() {
        let cfg = parse(
            r#"
            mode = "authoritative"
            subnet = "10.200.1.0/24"
            router = "10.200.1.1"
            dns = ["10.200.1.1"]
            pool = { start = "10.200.1.100", end = "10.200.1.199" }
            "#,
        )
        .unwrap();
        assert_eq!(cfg.mode, DhcpMode::Authoritative);
        assert_eq!(cfg.lease_time, 3600);
        assert!(!cfg.discovery);
        assert_eq!(cfg.bootfiles, Bootfiles::default());
        assert_eq!(cfg.subnet.unwrap().to_string(), "10.200.1.0/24");
    }

    #[test]
    fn refuses_inconsistent_sections() {
        for (text, needle) in [
            ("mode = \"authoritative\"", "needs `subnet`"),
            ("subnet = \"10.0.0.0/24\"\nlease_time = 5", "lease_time"),
            (
                "subnet = \"10.0.0.0/24\"\npool = { start = \"10.0.0.9\", end = \"10.0.0.2\" }",
                "reversed",
            ),
            (
                "subnet = \"10.0.0.0/24\"\npool = { start = \"10.0.0.9\", end = \"10.0.1.2\" }",
                "not inside",
            ),
            ("subnet = \"10.0.0.0/24\"\nbogus = 1", "unknown field"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
        assert_eq!(parse("mode = \"proxy\"").unwrap().mode, DhcpMode::Proxy);
        let auto = parse("mode = \"auto\"\nsubnet = \"10.0.0.0/24\"\nprobe_secs = 2").unwrap();
        assert_eq!((auto.mode, auto.probe_secs), (DhcpMode::Auto, 2));
        assert!(parse("mode = \"auto\"")
            .unwrap_err()
            .to_string()
            .contains("auto"));
        assert!(parse("subnet = \"10.0.0.0/24\"\nprobe_secs = 0")
            .unwrap_err()
            .to_string()
            .contains("probe_secs"));
        assert_eq!(
            parse("subnet = \"10.0.0.0/24\"").unwrap().mode,
            DhcpMode::Authoritative,
            "no mode: authoritative, as before auto existed"
        );
    }

    #[test]
    fn the_example_config_loads_and_builds_an_engine() {
        let text = include_str!("../../examples/dhcp.toml");
        let cfg = crate::config::NetbootConfig::from_toml(text).unwrap();
        let dhcp = cfg.dhcp.clone().expect("[dhcp] section");
        assert_eq!(dhcp.pool.unwrap().iter().count(), 100);
        engine::Engine::new(
            dhcp,
            cfg.server_ip,
            None,
            &cfg.nodes,
            Arc::new(cfg.static_policy()),
            &crate::metrics::Metrics::default(),
            leases::LeaseTable::default(),
        )
        .unwrap();
    }
}
