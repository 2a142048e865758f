//! The I/O edges of the DHCP probe ([`super::probe`]) and the mode the service reports.
//!
//! [`run`] drives a [`Probe`] over any [`ProbeSocket`]: kernel UDP on port 68 bound to the
//! provisioning interface ([`KernelProbeSocket`]), or a userspace-wire socket
//! ([`crate::wire::WireUdp`]). [`decide_kernel`] and [`decide_on_wire`] run it when the config
//! says `mode = "auto"` and return the config with the mode decided, logging why.
//!
//! The mode served is published as a gauge on the shared metrics (`/metrics` of the netboot
//! HTTP server and of the daemon's API): `dhcp_mode{mode="probing|authoritative|proxy"} 1`,
//! so a status screen or an operator sees whether the seed hands out addresses.

use super::probe::{self, Probe, ProbeOutcome, ProbeStep};
use super::{DhcpConfig, DhcpMode};
use crate::metrics::Metrics;
use crate::server::ServiceContext;
use crate::MacAddr;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Where the probe's DISCOVERs go.
const BROADCAST: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
/// The DHCP client port the probe listens on.
pub const CLIENT_PORT: u16 = 68;

/// A socket the probe sends and listens on (port 68).
#[allow(async_fn_in_trait)]
pub trait ProbeSocket {
    /// Broadcast `data` to port 67.
    async fn send_broadcast(&self, data: &[u8]) -> io::Result<()>;
    /// The next datagram and its source.
    async fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddrV4)>;
}

/// Run `probe` to its end over `sock`: (outcome, DISCOVERs sent).
pub async fn run<S: ProbeSocket>(sock: &S, mut probe: Probe) -> (ProbeOutcome, u32) {
    let mut buf = vec![0u8; 2048];
    loop {
        match probe.poll(Instant::now()) {
            ProbeStep::Send(d) => {
                if let Err(e) = sock.send_broadcast(&d).await {
                    warn!("dhcp probe: sending a DISCOVER: {e}");
                }
            }
            ProbeStep::Wait(until) => {
                tokio::select! {
                    r = sock.recv(&mut buf) => match r {
                        Ok((n, from)) => probe.handle(&buf[..n], from),
                        Err(e) => debug!("dhcp probe: receive: {e}"),
                    },
                    _ = tokio::time::sleep_until(until.into()) => {}
                }
            }
            ProbeStep::Done(o) => return (o, probe.sent),
        }
    }
}

/// Port 68 on `iface`, broadcasting.
#[derive(Debug)]
pub struct KernelProbeSocket(tokio::net::UdpSocket);

impl KernelProbeSocket {
    /// Bind 0.0.0.0:68 on the interface `iface`.
    pub fn bind(iface: &str) -> io::Result<Self> {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_address(true)?;
        s.set_broadcast(true)?;
        s.bind_device(Some(iface.as_bytes())).map_err(|e| {
            io::Error::new(e.kind(), format!("binding the DHCP probe to {iface}: {e}"))
        })?;
        s.set_nonblocking(true)?;
        let addr = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT);
        s.bind(&addr.into())
            .map_err(|e| io::Error::new(e.kind(), format!("binding UDP {addr}: {e}")))?;
        Ok(Self(tokio::net::UdpSocket::from_std(s.into())?))
    }
}

impl ProbeSocket for KernelProbeSocket {
    async fn send_broadcast(&self, data: &[u8]) -> io::Result<()> {
        self.0.send_to(data, BROADCAST).await.map(|_| ())
    }
    async fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddrV4)> {
        loop {
            if let (n, SocketAddr::V4(from)) = self.0.recv_from(buf).await? {
                return Ok((n, from));
            }
        }
    }
}

impl ProbeSocket for crate::wire::WireUdp {
    async fn send_broadcast(&self, data: &[u8]) -> io::Result<()> {
        self.send_to(data, BROADCAST).await
    }
    async fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddrV4)> {
        self.recv_from(buf).await
    }
}

/// The Ethernet address of the kernel interface `iface`.
pub fn interface_mac(iface: &str) -> io::Result<MacAddr> {
    let path = format!("/sys/class/net/{iface}/address");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("reading {path}: {e}")))?;
    text.trim().parse().map_err(|e: crate::mac::ParseMacError| {
        io::Error::new(io::ErrorKind::InvalidData, format!("{path}: {e}"))
    })
}

/// The `dhcp_mode` gauge: which mode the DHCP service runs in.
#[derive(Debug, Clone)]
pub struct ModeStatus(Arc<Mutex<&'static str>>);

impl ModeStatus {
    /// Register the gauge on `metrics` with `mode`.
    pub fn register(metrics: &Metrics, mode: &'static str) -> Self {
        let s = Self(Arc::new(Mutex::new(mode)));
        let shown = s.0.clone();
        metrics.add_collector(Box::new(move || {
            format!(
                "# HELP dhcp_mode The DHCP mode served (probing: looking for another server \
                 first)\n# TYPE dhcp_mode gauge\ndhcp_mode{{mode=\"{}\"}} 1\n",
                shown.lock().expect("mode lock")
            )
        }));
        s
    }

    /// Show `mode` from now on.
    pub fn set(&self, mode: &'static str) {
        *self.0.lock().expect("mode lock") = mode;
    }

    /// The mode shown.
    pub fn get(&self) -> &'static str {
        *self.0.lock().expect("mode lock")
    }
}

/// `cfg` with its mode decided: for `auto`, after probing from `mac` over `sock`; the gauge is
/// registered on `ctx.metrics` either way.
pub async fn decide<S: ProbeSocket>(
    ctx: &ServiceContext,
    mut cfg: DhcpConfig,
    mac: MacAddr,
    sock: impl FnOnce() -> io::Result<S>,
) -> io::Result<DhcpConfig> {
    if cfg.mode != DhcpMode::Auto {
        ModeStatus::register(&ctx.metrics, cfg.mode.as_str());
        return Ok(cfg);
    }
    let status = ModeStatus::register(&ctx.metrics, "probing");
    let window = Duration::from_secs(cfg.probe_secs);
    info!(
        "dhcp: mode auto: looking for another DHCP server for {} s (DISCOVER from {mac}) \
         before answering anything",
        cfg.probe_secs
    );
    let sock = sock()?;
    let probe = Probe::new(mac, ctx.server_ip, rand::random(), window, Instant::now());
    let (outcome, sent) = run(&sock, probe).await;
    cfg.mode = probe::resolve(DhcpMode::Auto, &outcome);
    match &outcome {
        ProbeOutcome::Answered(f) => warn!(
            "dhcp: another DHCP server ({}) offered {} to the seed's probe: serving ProxyDHCP \
             only (boot information, no addresses). [dhcp] mode = \"authoritative\" would serve \
             addresses anyway",
            f.server, f.offered
        ),
        ProbeOutcome::Alone => info!(
            "dhcp: no other DHCP server answered {sent} DISCOVER(s) in {} s: serving addresses \
             (authoritative)",
            cfg.probe_secs
        ),
    }
    status.set(cfg.mode.as_str());
    Ok(cfg)
}

/// [`decide`] on kernel sockets: the probe goes out on `[netboot] interface`, from its MAC.
pub async fn decide_kernel(ctx: &ServiceContext, cfg: DhcpConfig) -> io::Result<DhcpConfig> {
    if cfg.mode != DhcpMode::Auto {
        return decide::<KernelProbeSocket>(ctx, cfg, MacAddr::default(), || {
            unreachable!("no probe outside auto mode")
        })
        .await;
    }
    let iface = ctx.interface.clone().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "[dhcp] mode = \"auto\" needs [netboot] interface: the NIC to probe on",
        )
    })?;
    let mac = interface_mac(&iface)?;
    decide(ctx, cfg, mac, || KernelProbeSocket::bind(&iface)).await
}

/// [`decide`] on the userspace wire: the probe goes out from the stack's port 68 with the
/// stack's MAC `mac`.
pub async fn decide_on_wire(
    ctx: &ServiceContext,
    cfg: DhcpConfig,
    stack: &crate::wire::Stack,
    mac: MacAddr,
) -> io::Result<DhcpConfig> {
    decide(ctx, cfg, mac, || stack.udp_bind(CLIENT_PORT)).await
}
