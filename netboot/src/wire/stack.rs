//! The smoltcp stack on a wire, and socket handles for the services.
//!
//! The [`Interface`] and [`SocketSet`] live behind one mutex in [`Shared`]. A driver thread
//! owns the device (smoltcp's raw/TAP devices are not `Send`), runs a current-thread tokio
//! runtime, and polls the interface whenever the device is readable, a handle asked for it
//! (data queued to send, receive window opened) or `poll_delay` expires. Handles ([`WireUdp`],
//! [`WireTcpListener`], [`WireTcpStream`]) lock the set briefly, move bytes, and park their
//! task with smoltcp's socket wakers, which the driver's poll fires.

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::Device;
use smoltcp::socket::{tcp, udp};
use smoltcp::time::{Duration as SDuration, Instant};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpEndpoint};
use std::future::poll_fn;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::RawFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error};

/// UDP socket buffers: datagrams and bytes.
const UDP_PACKETS: usize = 64;
const UDP_BYTES: usize = 256 * 1024;
/// TCP buffers per connection: small receive (requests) and a send buffer that bounds the data
/// in flight. The QEMU wire is a hub: every QEMU process receives every frame into one UDP
/// socket (about 200 KiB of kernel buffer) and drains it slowly under TCG; a larger window
/// overflows it and a download to iPXE crawls through retransmissions (measured: ~100 KB/s at
/// 256 KiB, see `qemu_inspect_over_wire`).
const TCP_RX: usize = 16 * 1024;
const TCP_TX: usize = 32 * 1024;
/// Ephemeral UDP ports (IANA dynamic range).
const EPHEMERAL: std::ops::Range<u16> = 49152..65535;
/// How long a dropped UDP socket may keep unsent datagrams.
const UDP_LINGER: SDuration = SDuration::from_secs(3);
/// A connection silent this long is aborted (smoltcp retransmits until then).
const TCP_TIMEOUT: SDuration = SDuration::from_secs(120);

/// The stack's state shared between the driver and the handles.
pub struct Shared {
    inner: Mutex<Inner>,
    /// Wakes the driver to poll (something to send, or a window to advertise).
    poke: Notify,
    ip: Ipv4Addr,
}

struct Inner {
    iface: Interface,
    sockets: SocketSet<'static>,
    /// TCP sockets closed by their handle, removed once the connection is over.
    closing: Vec<SocketHandle>,
    /// UDP sockets dropped with datagrams still queued, removed once sent or at the deadline
    /// (a peer that never answers ARP).
    lingering: Vec<(SocketHandle, Instant)>,
    /// The next ephemeral UDP port to try.
    next_ephemeral: u16,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("wire stack mutex")
    }
}

/// A running stack; dropping it does not stop the driver (cancel the token given to
/// [`Stack::start`]).
#[derive(Clone)]
pub struct Stack {
    shared: Arc<Shared>,
}

/// The address of a host on a wire.
#[derive(Debug, Clone, Copy)]
pub struct HostAddr {
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
}

impl Stack {
    /// Start the driver thread on the device `open` returns (opened on that thread, as raw
    /// and TAP devices are not `Send`); `fd` of the device is polled for readability.
    pub fn start<D, F>(addr: HostAddr, open: F, shutdown: CancellationToken) -> io::Result<Stack>
    where
        D: Device + 'static,
        F: FnOnce() -> io::Result<(D, RawFd)> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::channel::<io::Result<Stack>>();
        std::thread::Builder::new()
            .name("seed-wire".into())
            .spawn(move || {
                let (mut dev, fd) = match open() {
                    Ok(x) => x,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(addr.mac)));
                config.random_seed = rand::random();
                let mut iface = Interface::new(config, &mut dev, Instant::now());
                iface.update_ip_addrs(|a| {
                    let _ = a.push(IpCidr::new(IpAddress::Ipv4(addr.ip), addr.prefix_len));
                });
                let shared = Arc::new(Shared {
                    inner: Mutex::new(Inner {
                        iface,
                        sockets: SocketSet::new(Vec::new()),
                        closing: Vec::new(),
                        lingering: Vec::new(),
                        next_ephemeral: EPHEMERAL.start + rand::random::<u16>() % 1000,
                    }),
                    poke: Notify::new(),
                    ip: addr.ip,
                });
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let _ = tx.send(Ok(Stack {
                    shared: shared.clone(),
                }));
                if let Err(e) = rt.block_on(drive(shared, dev, fd, shutdown.clone())) {
                    // Without its driver the stack is deaf: stop the services rather than hang.
                    error!(error = %e, "wire: driver failed; shutting down");
                    shutdown.cancel();
                }
            })?;
        rx.recv()
            .map_err(|_| io::Error::other("wire driver thread died"))?
    }

    /// The stack's IPv4 address.
    pub fn ip(&self) -> Ipv4Addr {
        self.shared.ip
    }

    /// A UDP socket bound to `port` (any local address, broadcasts included).
    pub fn udp_bind(&self, port: u16) -> io::Result<WireUdp> {
        let mut s = udp::Socket::new(
            udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; UDP_PACKETS],
                vec![0; UDP_BYTES],
            ),
            udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; UDP_PACKETS],
                vec![0; UDP_BYTES],
            ),
        );
        s.bind(port).map_err(|e| {
            io::Error::new(io::ErrorKind::AddrInUse, format!("UDP port {port}: {e}"))
        })?;
        let handle = self.shared.lock().sockets.add(s);
        Ok(WireUdp {
            shared: self.shared.clone(),
            handle,
            port,
        })
    }

    /// A UDP socket on a free ephemeral port (smoltcp does not refuse a port in use, so the
    /// set is searched).
    pub fn udp_bind_ephemeral(&self) -> io::Result<WireUdp> {
        let port = {
            let mut inner = self.shared.lock();
            let mut found = None;
            for _ in 0..EPHEMERAL.len() {
                let p = inner.next_ephemeral;
                inner.next_ephemeral = p
                    .checked_add(1)
                    .filter(|n| EPHEMERAL.contains(n))
                    .unwrap_or(EPHEMERAL.start);
                let used = inner.sockets.iter().any(|(_, s)| match s {
                    smoltcp::socket::Socket::Udp(u) => u.endpoint().port == p,
                    _ => false,
                });
                if !used {
                    found = Some(p);
                    break;
                }
            }
            found.ok_or_else(|| io::Error::new(io::ErrorKind::AddrInUse, "no free UDP port"))?
        };
        self.udp_bind(port)
    }

    /// Open a TCP connection to `to` from an ephemeral port (a client on the wire: tests, and
    /// the agent side of the API later).
    pub async fn tcp_connect(&self, to: SocketAddrV4) -> io::Result<WireTcpStream> {
        let handle = {
            let mut guard = self.shared.lock();
            let inner = &mut *guard;
            let port = inner.next_ephemeral;
            inner.next_ephemeral = port
                .checked_add(1)
                .filter(|n| EPHEMERAL.contains(n))
                .unwrap_or(EPHEMERAL.start);
            let mut s = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; TCP_TX]),
                tcp::SocketBuffer::new(vec![0; TCP_RX]),
            );
            s.set_timeout(Some(TCP_TIMEOUT));
            s.set_nagle_enabled(false);
            s.set_congestion_control(tcp::CongestionControl::Reno);
            s.connect(
                inner.iface.context(),
                (IpAddress::Ipv4(*to.ip()), to.port()),
                port,
            )
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{to}: {e}")))?;
            inner.sockets.add(s)
        };
        self.shared.poke.notify_one();
        let stream = WireTcpStream {
            shared: self.shared.clone(),
            handle,
        };
        poll_fn(|cx| {
            let mut inner = self.shared.lock();
            let s = inner.sockets.get_mut::<tcp::Socket>(handle);
            match s.state() {
                tcp::State::SynSent | tcp::State::SynReceived => {
                    s.register_send_waker(cx.waker());
                    Poll::Pending
                }
                tcp::State::Closed => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("connecting to {to}"),
                ))),
                _ => Poll::Ready(Ok(())),
            }
        })
        .await?;
        Ok(stream)
    }

    /// A TCP listener on `port` keeping `backlog` sockets listening, so that many handshakes
    /// can be in progress at once.
    pub fn tcp_listen(&self, port: u16, backlog: usize) -> io::Result<WireTcpListener> {
        let mut inner = self.shared.lock();
        let mut handles = Vec::with_capacity(backlog);
        for _ in 0..backlog.max(1) {
            handles.push(listening_socket(&mut inner, port)?);
        }
        Ok(WireTcpListener {
            shared: self.shared.clone(),
            port,
            handles,
        })
    }
}

fn listening_socket(inner: &mut Inner, port: u16) -> io::Result<SocketHandle> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; TCP_RX]),
        tcp::SocketBuffer::new(vec![0; TCP_TX]),
    );
    s.listen(port)
        .map_err(|e| io::Error::new(io::ErrorKind::AddrInUse, format!("TCP port {port}: {e}")))?;
    s.set_timeout(Some(TCP_TIMEOUT));
    s.set_nagle_enabled(false);
    // The QEMU wire is a multicast hub whose receivers (QEMU processes under TCG) drop
    // datagrams when their socket buffer fills: without congestion control smoltcp keeps a full
    // window in flight and a transfer to iPXE crawls through retransmissions. Reno backs off.
    s.set_congestion_control(tcp::CongestionControl::Reno);
    Ok(inner.sockets.add(s))
}

/// Readiness of the device's descriptor.
struct Fd(RawFd);
impl std::os::fd::AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

async fn drive<D: Device>(
    shared: Arc<Shared>,
    mut dev: D,
    fd: RawFd,
    shutdown: CancellationToken,
) -> io::Result<()> {
    // SAFETY: `fd` belongs to `dev`, which outlives `afd` (parameters drop after locals).
    let afd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(Fd(fd), tokio::io::Interest::READABLE)
    }
    .map_err(|e| io::Error::other(e.to_string()))?;
    loop {
        let delay = {
            let mut guard = shared.lock();
            let inner = &mut *guard;
            let now = Instant::now();
            inner.iface.poll(now, &mut dev, &mut inner.sockets);
            let sockets = &mut inner.sockets;
            inner.closing.retain(|&h| {
                let state = sockets.get::<tcp::Socket>(h).state();
                let done = matches!(state, tcp::State::Closed | tcp::State::TimeWait);
                if done {
                    sockets.remove(h);
                }
                !done
            });
            inner.lingering.retain(|&(h, deadline)| {
                let done = sockets.get::<udp::Socket>(h).send_queue() == 0 || now >= deadline;
                if done {
                    sockets.remove(h);
                }
                !done
            });
            inner.iface.poll_delay(now, &inner.sockets)
        };
        let delay = delay.map_or(std::time::Duration::from_secs(1), |d| {
            std::time::Duration::from_micros(d.total_micros())
        });
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = afd.readable() => {
                // Cleared before the poll that drains the device, so a frame arriving after
                // the drain marks the descriptor ready again.
                r?.clear_ready();
            }
            _ = shared.poke.notified() => {}
            _ = tokio::time::sleep(delay) => {}
        }
    }
    debug!("wire: driver stopped");
    Ok(())
}

fn v4(ep: IpEndpoint) -> SocketAddrV4 {
    let IpAddress::Ipv4(a) = ep.addr;
    SocketAddrV4::new(a, ep.port)
}

/// A UDP socket on the wire.
pub struct WireUdp {
    shared: Arc<Shared>,
    handle: SocketHandle,
    port: u16,
}

impl WireUdp {
    /// The local port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Receive one datagram; a datagram larger than `buf` is dropped.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddrV4)> {
        poll_fn(|cx| {
            let mut inner = self.shared.lock();
            let s = inner.sockets.get_mut::<udp::Socket>(self.handle);
            loop {
                match s.recv_slice(buf) {
                    Ok((n, meta)) => return Poll::Ready(Ok((n, v4(meta.endpoint)))),
                    Err(udp::RecvError::Truncated) => continue,
                    Err(udp::RecvError::Exhausted) => {
                        s.register_recv_waker(cx.waker());
                        return Poll::Pending;
                    }
                }
            }
        })
        .await
    }

    /// Queue one datagram to `to` (255.255.255.255 broadcasts on the wire).
    pub async fn send_to(&self, data: &[u8], to: SocketAddrV4) -> io::Result<()> {
        let ep = IpEndpoint::new(IpAddress::Ipv4(*to.ip()), to.port());
        poll_fn(|cx| {
            let mut inner = self.shared.lock();
            let s = inner.sockets.get_mut::<udp::Socket>(self.handle);
            match s.send_slice(data, ep) {
                Ok(()) => {
                    self.shared.poke.notify_one();
                    Poll::Ready(Ok(()))
                }
                Err(udp::SendError::BufferFull) => {
                    s.register_send_waker(cx.waker());
                    self.shared.poke.notify_one();
                    Poll::Pending
                }
                Err(udp::SendError::Unaddressable) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("cannot send UDP to {to}"),
                ))),
            }
        })
        .await
    }

    /// Wait until every queued datagram has left (before dropping the socket).
    pub async fn flush(&self) {
        poll_fn(|cx| {
            let mut inner = self.shared.lock();
            let s = inner.sockets.get_mut::<udp::Socket>(self.handle);
            if s.send_queue() == 0 {
                Poll::Ready(())
            } else {
                s.register_send_waker(cx.waker());
                self.shared.poke.notify_one();
                Poll::Pending
            }
        })
        .await
    }
}

impl Drop for WireUdp {
    fn drop(&mut self) {
        let mut inner = self.shared.lock();
        let s = inner.sockets.get_mut::<udp::Socket>(self.handle);
        if s.send_queue() == 0 {
            inner.sockets.remove(self.handle);
        } else {
            // Let the last datagrams (a TFTP error, say) leave first.
            inner
                .lingering
                .push((self.handle, Instant::now() + UDP_LINGER));
            self.shared.poke.notify_one();
        }
    }
}

/// Accepts TCP connections on a port of the wire.
pub struct WireTcpListener {
    shared: Arc<Shared>,
    port: u16,
    handles: Vec<SocketHandle>,
}

impl WireTcpListener {
    /// The next established connection, and its peer.
    pub async fn accept(&mut self) -> io::Result<(WireTcpStream, SocketAddrV4)> {
        poll_fn(|cx| {
            let mut guard = self.shared.lock();
            let inner = &mut *guard;
            for i in 0..self.handles.len() {
                let h = self.handles[i];
                let s = inner.sockets.get_mut::<tcp::Socket>(h);
                match s.state() {
                    tcp::State::Listen | tcp::State::SynReceived => {
                        s.register_recv_waker(cx.waker());
                    }
                    tcp::State::Closed => {
                        // A handshake reset: listen again.
                        let _ = s.listen(self.port);
                        s.register_recv_waker(cx.waker());
                    }
                    _ => {
                        let peer = s.remote_endpoint().map(v4);
                        let fresh = listening_socket(inner, self.port)?;
                        self.handles[i] = fresh;
                        let Some(peer) = peer else {
                            // Already gone again: hand it to the reaper.
                            inner.sockets.get_mut::<tcp::Socket>(h).abort();
                            inner.closing.push(h);
                            continue;
                        };
                        return Poll::Ready(Ok((
                            WireTcpStream {
                                shared: self.shared.clone(),
                                handle: h,
                            },
                            peer,
                        )));
                    }
                }
            }
            Poll::Pending
        })
        .await
    }
}

impl Drop for WireTcpListener {
    fn drop(&mut self) {
        let mut inner = self.shared.lock();
        for &h in &self.handles {
            inner.sockets.remove(h);
        }
    }
}

/// One TCP connection on the wire, for hyper (`AsyncRead + AsyncWrite`).
pub struct WireTcpStream {
    shared: Arc<Shared>,
    handle: SocketHandle,
}

impl AsyncRead for WireTcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut inner = self.shared.lock();
        let s = inner.sockets.get_mut::<tcp::Socket>(self.handle);
        match s.recv_slice(buf.initialize_unfilled()) {
            Ok(0) if s.may_recv() => {
                s.register_recv_waker(cx.waker());
                Poll::Pending
            }
            Ok(n) => {
                buf.advance(n);
                // The window opened: let the driver tell the peer.
                self.shared.poke.notify_one();
                Poll::Ready(Ok(()))
            }
            Err(tcp::RecvError::Finished) => Poll::Ready(Ok(())),
            Err(tcp::RecvError::InvalidState) => {
                Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()))
            }
        }
    }
}

impl AsyncWrite for WireTcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut inner = self.shared.lock();
        let s = inner.sockets.get_mut::<tcp::Socket>(self.handle);
        match s.send_slice(data) {
            Ok(0) if s.may_send() => {
                s.register_send_waker(cx.waker());
                self.shared.poke.notify_one();
                Poll::Pending
            }
            Ok(0) | Err(_) => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            Ok(n) => {
                self.shared.poke.notify_one();
                Poll::Ready(Ok(n))
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Queued bytes are the stack's to deliver, as with a kernel socket's send buffer.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shared
            .lock()
            .sockets
            .get_mut::<tcp::Socket>(self.handle)
            .close();
        self.shared.poke.notify_one();
        Poll::Ready(Ok(()))
    }
}

impl Drop for WireTcpStream {
    fn drop(&mut self) {
        let mut inner = self.shared.lock();
        inner.sockets.get_mut::<tcp::Socket>(self.handle).close();
        inner.closing.push(self.handle);
        self.shared.poke.notify_one();
    }
}
