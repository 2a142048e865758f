//! The tokio edge of the TFTP server: one request socket, and per transfer a task with its own
//! ephemeral socket (a new TID, RFC 1350 §4) that drives an [`engine::Transfer`].
//!
//! The transfer socket is `connect`ed to the client, so the kernel drops datagrams from any
//! other address or port (RFC 1350's "unknown TID") and an ICMP port-unreachable ends the
//! transfer at once. Blocks are read with `pread` on the runtime thread: at most one block
//! (≤ 64 KiB, usually from the page cache) per packet sent, cheaper than a hop to the blocking
//! pool for every block.

use super::engine::{self, Input, Limits, Refusal, State, Transmit};
use super::packet::{self, ErrorCode};
use super::root::{ResolveError, Root};
use super::TftpConfig;
use crate::server::ServiceContext;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The counters the TFTP service bumps.
#[derive(Clone)]
struct Counters {
    dropped: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    started: Arc<AtomicU64>,
    completed: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    retransmits: Arc<AtomicU64>,
}

impl Counters {
    fn new(m: &crate::metrics::Metrics) -> Self {
        Self {
            dropped: m.counter(
                "tftp_dropped_total",
                "Malformed or unexpected TFTP packets dropped",
            ),
            refused: m.counter(
                "tftp_requests_refused_total",
                "TFTP requests answered with an error (WRQ, not found, access, options)",
            ),
            started: m.counter("tftp_transfers_started_total", "TFTP transfers started"),
            completed: m.counter(
                "tftp_transfers_completed_total",
                "TFTP transfers whose last block was acknowledged",
            ),
            failed: m.counter(
                "tftp_transfers_failed_total",
                "TFTP transfers that timed out, were aborted by the client or failed to read",
            ),
            bytes: m.counter(
                "tftp_bytes_sent_total",
                "File bytes sent in TFTP DATA packets, retransmissions included",
            ),
            retransmits: m.counter(
                "tftp_retransmitted_blocks_total",
                "TFTP DATA blocks sent more than once",
            ),
        }
    }
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A UDP socket bound to `addr` (and to `interface` if set), non-blocking, for tokio.
pub(crate) fn bind_udp(addr: SocketAddr, interface: Option<&str>) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    if let Some(ifname) = interface {
        s.bind_device(Some(ifname.as_bytes())).map_err(|e| {
            std::io::Error::new(e.kind(), format!("binding to device {ifname}: {e}"))
        })?;
    }
    s.set_reuse_address(true)?;
    // Room for a whole window of large blocks in flight.
    let _ = s.set_send_buffer_size(4 << 20);
    let _ = s.set_recv_buffer_size(1 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())
        .map_err(|e| std::io::Error::new(e.kind(), format!("binding UDP {addr}: {e}")))?;
    UdpSocket::from_std(s.into())
}

/// Serve TFTP until `shutdown`: the `[tftp]` section on `ctx.server_ip` (or 0.0.0.0 if that
/// address is not configured here), bound to `ctx.interface` if set.
pub async fn serve(
    ctx: Arc<ServiceContext>,
    cfg: TftpConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let iface = ctx.interface.as_deref();
    let sock = match bind_udp(SocketAddr::new(ctx.bind_ip().into(), cfg.port), iface) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
            warn!(server_ip = %ctx.server_ip, "server_ip not configured here; TFTP listens on 0.0.0.0");
            bind_udp(
                SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), cfg.port),
                iface,
            )?
        }
        Err(e) => return Err(e),
    };
    let local_ip = sock.local_addr()?.ip();
    info!(addr = %sock.local_addr()?, root = %cfg.root.display(), "TFTP listening");
    let net = Arc::new(KernelNet {
        local_ip,
        interface: ctx.interface.clone(),
    });
    serve_on(net, sock, ctx, cfg, shutdown).await
}

/// How the TFTP edge reaches the network: kernel sockets here, or the userspace wire
/// ([`crate::wire`]). The request socket is `Net::RequestSock`; each transfer gets its own
/// socket on a new port (a new TID), talking to one peer only.
pub(crate) trait Net: Send + Sync + 'static {
    type RequestSock: Send + Sync + 'static;
    type TransferSock: TransferSock;
    fn recv_from<'a>(
        sock: &'a Self::RequestSock,
        buf: &'a mut [u8],
    ) -> impl std::future::Future<Output = std::io::Result<(usize, SocketAddr)>> + Send + 'a;
    fn send_to<'a>(
        sock: &'a Self::RequestSock,
        data: &'a [u8],
        to: SocketAddr,
    ) -> impl std::future::Future<Output = std::io::Result<()>> + Send + 'a;
    /// A new socket on an ephemeral port for a transfer with `peer`.
    fn transfer_socket(
        &self,
        peer: SocketAddr,
    ) -> impl std::future::Future<Output = std::io::Result<Self::TransferSock>> + Send + '_;
}

/// A transfer's socket: sends to, and receives only from, its peer.
pub(crate) trait TransferSock: Send + Sync + 'static {
    fn send<'a>(
        &'a self,
        data: &'a [u8],
    ) -> impl std::future::Future<Output = std::io::Result<()>> + Send + 'a;
    fn recv<'a>(
        &'a self,
        buf: &'a mut [u8],
    ) -> impl std::future::Future<Output = std::io::Result<usize>> + Send + 'a;
}

/// Kernel sockets, bound to the provisioning interface if one is configured.
struct KernelNet {
    local_ip: IpAddr,
    interface: Option<String>,
}

impl Net for KernelNet {
    type RequestSock = UdpSocket;
    type TransferSock = UdpSocket;
    async fn recv_from(sock: &UdpSocket, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        sock.recv_from(buf).await
    }
    async fn send_to(sock: &UdpSocket, data: &[u8], to: SocketAddr) -> std::io::Result<()> {
        sock.send_to(data, to).await.map(drop)
    }
    async fn transfer_socket(&self, peer: SocketAddr) -> std::io::Result<UdpSocket> {
        let sock = bind_udp(SocketAddr::new(self.local_ip, 0), self.interface.as_deref())?;
        // Connected: the kernel drops datagrams from any other address or port (RFC 1350's
        // "unknown TID") and an ICMP port-unreachable ends the transfer at once.
        sock.connect(peer).await?;
        Ok(sock)
    }
}

impl TransferSock for UdpSocket {
    async fn send(&self, data: &[u8]) -> std::io::Result<()> {
        UdpSocket::send(self, data).await.map(drop)
    }
    async fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        UdpSocket::recv(self, buf).await
    }
}

/// The request loop on `sock`, transfers on sockets from `net`.
pub(crate) async fn serve_on<N: Net>(
    net: Arc<N>,
    sock: N::RequestSock,
    ctx: Arc<ServiceContext>,
    cfg: TftpConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let root = Root::new(&cfg.root)?;
    let limits = cfg.limits();
    let counters = Counters::new(&ctx.metrics);

    let active: Arc<Mutex<Active>> = Arc::default();
    let mut generation = 0u64;
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::with_capacity(1024);
    loop {
        let (n, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = N::recv_from(&sock, &mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    // ICMP errors from earlier replies surface here; they are not fatal.
                    debug!(error = %e, "TFTP recv");
                    continue;
                }
            },
        };
        let req = match packet::parse_request(&buf[..n]) {
            Ok(Some(r)) => r,
            Ok(None) => {
                inc(&counters.dropped);
                debug!(%peer, "TFTP: non-request packet on the request port dropped");
                continue;
            }
            Err(e) => {
                inc(&counters.dropped);
                // Answer a broken request so the client stops retrying, but not garbage that
                // is not a request at all (no replies to noise).
                if matches!(
                    e,
                    packet::ParseError::OptionWithoutValue(_) | packet::ParseError::EmptyFilename
                ) {
                    packet::encode_error(&mut out, ErrorCode::IllegalOperation, &e.to_string());
                    let _ = N::send_to(&sock, &out, peer).await;
                }
                debug!(%peer, error = %e, "TFTP: malformed request dropped");
                continue;
            }
        };
        let refusal = if req.write {
            Some(Refusal::new(
                ErrorCode::AccessViolation,
                "read-only server: writes refused",
            ))
        } else if req.mode != "octet" {
            Some(Refusal::new(
                ErrorCode::IllegalOperation,
                format!("mode {:?} not supported, use octet", req.mode),
            ))
        } else {
            None
        };
        if let Some(r) = refusal {
            inc(&counters.refused);
            info!(%peer, file = %req.filename, reason = %r.message, "TFTP request refused");
            r.encode(&mut out);
            let _ = N::send_to(&sock, &out, peer).await;
            continue;
        }
        generation += 1;
        let cancel = shutdown.child_token();
        let admitted = {
            let mut map = active.lock().expect("tftp active map");
            let admit = match map.get(&peer) {
                Some(running) if running.request == req => {
                    // A retransmitted RRQ while its transfer runs: the transfer answers it.
                    debug!(%peer, "TFTP: duplicate request ignored");
                    continue;
                }
                Some(running) => {
                    // A different request from the same port: the client gave up on the
                    // previous one (PXE ROMs probe `tsize`, abort, and ask again from the same
                    // port). The new request replaces it.
                    debug!(%peer, "TFTP: new request from the same port replaces its transfer");
                    running.cancel.cancel();
                    true
                }
                None => map.len() < cfg.max_transfers,
            };
            if admit {
                let running = Running {
                    request: req.clone(),
                    cancel: cancel.clone(),
                    generation,
                };
                map.insert(peer, running);
            }
            admit
        };
        if !admitted {
            inc(&counters.refused);
            warn!(%peer, "TFTP: too many concurrent transfers, request refused");
            packet::encode_error(&mut out, ErrorCode::NotDefined, "server busy");
            let _ = N::send_to(&sock, &out, peer).await;
            continue;
        }
        let job = Job {
            req,
            peer,
            net: net.clone(),
            root: root.clone(),
            limits,
            counters: counters.clone(),
            active: active.clone(),
            generation,
            shutdown: cancel,
        };
        tokio::spawn(job.run());
    }
    Ok(())
}

/// One accepted read request.
struct Job<N: Net> {
    req: packet::Request,
    peer: SocketAddr,
    net: Arc<N>,
    root: Root,
    limits: Limits,
    counters: Counters,
    active: Arc<Mutex<Active>>,
    generation: u64,
    /// Cancelled on shutdown or when the client sends a different request from the same port.
    shutdown: CancellationToken,
}

/// Transfers in progress, by client address.
type Active = HashMap<SocketAddr, Running>;

struct Running {
    request: packet::Request,
    cancel: CancellationToken,
    /// Which job owns the entry, so a replaced job does not remove its successor.
    generation: u64,
}

impl<N: Net> Job<N> {
    async fn run(self) {
        let peer = self.peer;
        if let Err(e) = self.transfer().await {
            debug!(%peer, error = %e, "TFTP transfer socket error");
        }
        let mut map = self.active.lock().expect("tftp active map");
        if map
            .get(&peer)
            .is_some_and(|r| r.generation == self.generation)
        {
            map.remove(&peer);
        }
    }

    async fn transfer(&self) -> std::io::Result<()> {
        let (peer, c) = (self.peer, &self.counters);
        let file_name = self.req.filename.as_str();
        let sock = self.net.transfer_socket(peer).await?;
        let mut out = Vec::with_capacity(usize::from(self.limits.max_blksize) + 4);

        let opened = self.root.resolve(file_name).and_then(|path| {
            let f = std::fs::File::open(&path).map_err(ResolveError::Io)?;
            let len = f.metadata().map_err(ResolveError::Io)?.len();
            Ok((f, len))
        });
        let (mut file, len) = match opened {
            Ok(x) => x,
            Err(e) => {
                let r = match &e {
                    ResolveError::Escapes => {
                        warn!(%peer, file = file_name, "TFTP: path escapes the root, refused");
                        Refusal::new(ErrorCode::AccessViolation, "access violation")
                    }
                    ResolveError::NotFound | ResolveError::NotAFile => {
                        Refusal::new(ErrorCode::FileNotFound, "file not found")
                    }
                    ResolveError::Io(err) => {
                        warn!(%peer, file = file_name, error = %err, "TFTP: cannot open");
                        Refusal::new(ErrorCode::AccessViolation, "cannot open file")
                    }
                };
                inc(&c.refused);
                info!(%peer, file = file_name, reason = %e, "TFTP request refused");
                r.encode(&mut out);
                sock.send(&out).await?;
                return Ok(());
            }
        };
        let neg = match engine::negotiate(&self.req, len, &self.limits) {
            Ok(n) => n,
            Err(r) => {
                inc(&c.refused);
                inc(&c.dropped);
                info!(%peer, file = file_name, reason = %r.message, "TFTP options refused");
                r.encode(&mut out);
                sock.send(&out).await?;
                return Ok(());
            }
        };
        debug!(%peer, file = file_name, len, blksize = neg.blksize, windowsize = neg.windowsize,
            "TFTP transfer starts");
        inc(&c.started);
        let now = || tokio::time::Instant::now().into_std();
        let mut t = engine::Transfer::new(neg, len, &self.limits, now());
        let mut inbuf = vec![0u8; 2048];
        // One timer, moved when the deadline moves: cheaper than a new one per packet.
        let sleep = tokio::time::sleep_until(t.deadline().unwrap_or_else(now).into());
        tokio::pin!(sleep);
        let result = 'transfer: loop {
            while let Some(tx) = t.poll_transmit(&mut file, &mut out) {
                if let Transmit::Data {
                    payload,
                    retransmit,
                } = tx
                {
                    c.bytes.fetch_add(payload as u64, Ordering::Relaxed);
                    if retransmit {
                        inc(&c.retransmits);
                    }
                }
                if let Err(e) = sock.send(&out).await {
                    break 'transfer Err(e);
                }
            }
            if t.is_finished() {
                break Ok(());
            }
            let Some(deadline) = t.deadline() else {
                break Ok(());
            };
            if sleep.deadline() != deadline.into() {
                sleep.as_mut().reset(deadline.into());
            }
            tokio::select! {
                biased;
                r = sock.recv(&mut inbuf) => match r {
                    Ok(n) => match t.handle_packet(&inbuf[..n], now()) {
                        Input::Malformed => {
                            inc(&c.dropped);
                            debug!(%peer, "TFTP: malformed packet in transfer dropped");
                        }
                        Input::Aborted { code, message } => {
                            info!(%peer, file = file_name, code, %message, "TFTP transfer aborted by client");
                        }
                        Input::Progress | Input::Ignored | Input::Done => {}
                    },
                    Err(e) => break Err(e),
                },
                _ = &mut sleep => t.handle_timeout(now()),
                _ = self.shutdown.cancelled() => break Ok(()),
            }
        };
        match t.state() {
            State::Done => {
                inc(&c.completed);
                debug!(%peer, file = file_name, len, "TFTP transfer complete");
            }
            State::TimedOut => {
                inc(&c.failed);
                info!(%peer, file = file_name, "TFTP transfer timed out");
            }
            State::Running => {
                inc(&c.failed);
                if let Err(e) = &result {
                    info!(%peer, file = file_name, error = %e, "TFTP transfer lost its client");
                } else {
                    debug!(%peer, file = file_name, "TFTP transfer cancelled by shutdown");
                }
            }
            State::Aborted => inc(&c.failed),
            State::SourceFailed => {
                inc(&c.failed);
                warn!(%peer, file = file_name, "TFTP transfer failed reading the file");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StaticPolicy;
    use crate::metrics::Metrics;
    use std::time::Duration;

    fn rrq(opts: &[(&str, &str)]) -> Vec<u8> {
        let mut v = b"\x00\x01f\x00octet\x00".to_vec();
        for (k, val) in opts {
            v.extend_from_slice(k.as_bytes());
            v.push(0);
            v.extend_from_slice(val.as_bytes());
            v.push(0);
        }
        v
    }

    /// Receive the next packet from `from` (other sources skipped), bounded in time.
    async fn recv_from(sock: &UdpSocket, from: Option<SocketAddr>) -> (Vec<u8>, SocketAddr) {
        let mut buf = vec![0u8; 2048];
        loop {
            let (n, src) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
                .await
                .expect("no answer from the server")
                .unwrap();
            if from.is_none_or(|f| f == src) {
                return (buf[..n].to_vec(), src);
            }
        }
    }

    /// On loopback only: a retransmitted RRQ does not start a second transfer, and a different
    /// request from the same port replaces the running one (PXE ROM tsize probe).
    #[tokio::test]
    async fn duplicate_and_replacing_requests_on_loopback() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.path().join("f"), &data).unwrap();
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let metrics = Arc::new(Metrics::default());
        let ctx = Arc::new(ServiceContext {
            server_ip: Ipv4Addr::LOCALHOST,
            interface: None,
            state_dir: dir.path().into(),
            policy: Arc::new(StaticPolicy::default()),
            metrics: metrics.clone(),
            http_base: None,
            api: None,
            leases: None,
            floating: false,
        });
        let cfg: TftpConfig = toml::from_str(&format!(
            "root = {:?}\nport = {port}\ntimeout = 2",
            dir.path()
        ))
        .unwrap();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(ctx, cfg, shutdown.clone()));
        let server_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();

        // Ask until the server is up; every repeat is a duplicate of the first request.
        let probe = rrq(&[("tsize", "0")]);
        let mut first = None;
        for _ in 0..50 {
            client.send_to(&probe, server_addr).await.unwrap();
            let mut buf = [0u8; 512];
            if let Ok(Ok((n, src))) =
                tokio::time::timeout(Duration::from_millis(100), client.recv_from(&mut buf)).await
            {
                assert_eq!(&buf[..n], b"\x00\x06tsize\x003000\x00");
                first = Some(src);
                break;
            }
        }
        let first = first.expect("server never answered");
        assert_ne!(first.port(), port, "a transfer answers from its own port");
        client.send_to(&probe, server_addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(metrics.get("tftp_transfers_started_total"), 1);

        // The real request from the same port: replaces the probe.
        client
            .send_to(&rrq(&[("blksize", "1000")]), server_addr)
            .await
            .unwrap();
        let (oack, second) = loop {
            let (p, src) = recv_from(&client, None).await;
            if src != first {
                break (p, src);
            }
        };
        assert_ne!(second, first);
        assert_eq!(oack, b"\x00\x06blksize\x001000\x00");
        client.send_to(b"\x00\x04\x00\x00", second).await.unwrap();
        let mut got = Vec::new();
        for block in 1..=4u16 {
            let (p, _) = recv_from(&client, Some(second)).await;
            assert_eq!(&p[..4], &[0, 3, 0, block as u8]);
            got.extend_from_slice(&p[4..]);
            client
                .send_to(&[0, 4, 0, block as u8], second)
                .await
                .unwrap();
        }
        assert_eq!(
            got, data,
            "3000 bytes in 1000-byte blocks, then an empty one"
        );
        for _ in 0..50 {
            if metrics.get("tftp_transfers_completed_total") == 1
                && metrics.get("tftp_transfers_failed_total") == 1
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(metrics.get("tftp_transfers_started_total"), 2);
        assert_eq!(metrics.get("tftp_transfers_completed_total"), 1);
        assert_eq!(
            metrics.get("tftp_transfers_failed_total"),
            1,
            "the replaced probe"
        );
        shutdown.cancel();
        server.await.unwrap().unwrap();
    }
}
