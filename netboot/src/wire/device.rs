//! Link-layer devices for the userspace wire: QEMU's socket multicast netdev on loopback, plus
//! constructors for smoltcp's TAP and AF_PACKET devices.
//!
//! QEMU's `-netdev socket,mcast=GROUP:PORT,localaddr=127.0.0.1` carries each Ethernet frame as
//! one UDP datagram (no length prefix) to the group. [`McastDevice`] joins that group with
//! `IP_MULTICAST_LOOP` on, so it hears every NIC on the wire — including itself: frames whose
//! source MAC is ours are dropped on receive.

use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

/// Largest Ethernet frame we carry (1500-byte MTU plus the 14-byte header).
pub const FRAME_MAX: usize = 1514;

/// A host on a QEMU socket-multicast wire.
#[derive(Debug)]
pub struct McastDevice {
    sock: UdpSocket,
    dest: SocketAddrV4,
    mac: [u8; 6],
    rx: Vec<u8>,
    tx: Vec<u8>,
    /// Frames of our own that came back over multicast loop and were dropped.
    pub own_frames_dropped: u64,
}

impl McastDevice {
    /// Join `group:port` on 127.0.0.1 as the host with Ethernet address `mac`.
    pub fn join(group: Ipv4Addr, port: u16, mac: [u8; 6]) -> io::Result<Self> {
        if !group.is_multicast() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{group} is not a multicast group"),
            ));
        }
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        // QEMU binds the same group:port with SO_REUSEADDR; so do we, to share it.
        s.set_reuse_address(true)?;
        s.bind(&SocketAddrV4::new(group, port).into())?;
        s.join_multicast_v4(&group, &Ipv4Addr::LOCALHOST)?;
        s.set_multicast_if_v4(&Ipv4Addr::LOCALHOST)?;
        s.set_multicast_loop_v4(true)?;
        s.set_multicast_ttl_v4(0)?;
        let _ = s.set_recv_buffer_size(4 << 20);
        let _ = s.set_send_buffer_size(4 << 20);
        s.set_nonblocking(true)?;
        Ok(Self {
            sock: s.into(),
            dest: SocketAddrV4::new(group, port),
            mac,
            rx: vec![0; 65536],
            tx: vec![0; 65536],
            own_frames_dropped: 0,
        })
    }
}

impl AsRawFd for McastDevice {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

/// A received frame.
pub struct McastRxToken<'a>(&'a [u8]);

/// Room for one frame to send.
pub struct McastTxToken<'a> {
    sock: &'a UdpSocket,
    dest: SocketAddrV4,
    buf: &'a mut Vec<u8>,
}

impl phy::RxToken for McastRxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl phy::TxToken for McastTxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let frame = &mut self.buf[..len];
        let r = f(frame);
        // A full socket buffer loses the frame, as a busy Ethernet would; TCP and the
        // protocols' own retries recover.
        if let Err(e) = self.sock.send_to(frame, self.dest) {
            tracing::debug!(error = %e, "wire: frame not sent");
        }
        r
    }
}

impl Device for McastDevice {
    type RxToken<'a> = McastRxToken<'a>;
    type TxToken<'a> = McastTxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let n = loop {
            match self.sock.recv(&mut self.rx) {
                Ok(n) if n >= 14 && self.rx[6..12] == self.mac => self.own_frames_dropped += 1,
                Ok(n) if n >= 14 => break n,
                Ok(_) => {}            // runt: not an Ethernet frame
                Err(_) => return None, // WouldBlock (or a transient error): nothing to read
            }
        };
        Some((
            McastRxToken(&self.rx[..n]),
            McastTxToken {
                sock: &self.sock,
                dest: self.dest,
                buf: &mut self.tx,
            },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Self::TxToken<'_>> {
        Some(McastTxToken {
            sock: &self.sock,
            dest: self.dest,
            buf: &mut self.tx,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = FRAME_MAX;
        caps
    }
}

/// Open a TAP interface (it must exist or be creatable: root or a persistent TAP owned by us).
pub fn tap(ifname: &str) -> io::Result<phy::TunTapInterface> {
    let d = phy::TunTapInterface::new(ifname, Medium::Ethernet)
        .map_err(|e| io::Error::new(e.kind(), format!("opening TAP {ifname}: {e}")))?;
    set_nonblocking(d.as_raw_fd())?;
    Ok(d)
}

/// Open an AF_PACKET socket on the NIC `ifname` (needs CAP_NET_RAW).
pub fn af_packet(ifname: &str) -> io::Result<phy::RawSocket> {
    let d = phy::RawSocket::new(ifname, Medium::Ethernet)
        .map_err(|e| io::Error::new(e.kind(), format!("opening AF_PACKET on {ifname}: {e}")))?;
    set_nonblocking(d.as_raw_fd())?;
    Ok(d)
}

/// A gratuitous ARP (an ARP request for `ip` from `ip`, to everyone): neighbours that know `ip`
/// update their entry to `mac`. Announces a floating address that moved to this host.
pub fn gratuitous_arp_frame(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&[0x08, 0x06]); // ARP
    f[14..22].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]); // Ethernet, IPv4, request
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip.octets());
    // Target hardware address left zero, target protocol address = the sender's.
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// Send a gratuitous ARP for `ip` on `ifname` (with the NIC's own MAC), `count` times 100 ms
/// apart (needs CAP_NET_RAW).
pub fn send_gratuitous_arp(ifname: &str, ip: Ipv4Addr, count: usize) -> io::Result<()> {
    let frame = gratuitous_arp_frame(hardware_address(ifname)?, ip);
    let mut dev = af_packet(ifname)?;
    for i in 0..count {
        if i > 0 {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let tx = dev
            .transmit(Instant::now())
            .ok_or_else(|| io::Error::new(io::ErrorKind::WouldBlock, "AF_PACKET send"))?;
        phy::TxToken::consume(tx, frame.len(), |buf| buf.copy_from_slice(&frame));
    }
    Ok(())
}

/// The MAC of `ifname` in the caller's network namespace (SIOCGIFHWADDR; `/sys/class/net`
/// shows the namespace sysfs was mounted in, which may be another).
pub fn hardware_address(ifname: &str) -> io::Result<[u8; 6]> {
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
    // SAFETY: a zeroed ifreq is valid; the name is copied in bounded (NUL-terminated), and the
    // ioctl writes only within the struct we pass.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = ifname.as_bytes();
    if name.len() >= req.ifr_name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (m, d) in mac.iter_mut().zip(data.iter()) {
        *m = *d as u8;
    }
    Ok(mac)
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::{RxToken, TxToken};

    #[test]
    fn a_gratuitous_arp_announces_the_sender() {
        let f = gratuitous_arp_frame([2, 0, 0, 0, 0, 9], Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(&f[..6], &[0xff; 6]);
        assert_eq!(&f[12..14], &[8, 6]);
        assert_eq!(&f[20..22], &[0, 1], "request");
        assert_eq!(&f[22..28], &[2, 0, 0, 0, 0, 9]);
        assert_eq!(&f[28..32], &[10, 0, 0, 1]);
        assert_eq!(&f[38..42], &[10, 0, 0, 1], "target = sender");
    }

    fn group_port() -> (Ipv4Addr, u16) {
        let pid = std::process::id();
        (
            Ipv4Addr::new(230, 1, (pid >> 8) as u8, pid as u8),
            20000 + (pid % 10000) as u16,
        )
    }

    fn recv(d: &mut McastDevice) -> Option<Vec<u8>> {
        for _ in 0..500 {
            if let Some((rx, _)) = d.receive(Instant::now()) {
                return Some(rx.consume(|f| f.to_vec()));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        None
    }

    /// A frame sent by one host reaches the other whole; the sender does not hear itself.
    #[test]
    fn frames_round_trip_over_loopback_and_own_frames_are_dropped() {
        let (g, p) = group_port();
        let mac_a = [0x02, 0, 0, 0, 0, 0xa];
        let mut a = McastDevice::join(g, p, mac_a).unwrap();
        let mut b = McastDevice::join(g, p, [0x02, 0, 0, 0, 0, 0xb]).unwrap();
        let mut frame = vec![0xffu8; 6];
        frame.extend_from_slice(&mac_a);
        frame.extend_from_slice(&[0x88, 0xb5]);
        frame.extend((0..100u8).collect::<Vec<_>>());
        let tx = a.transmit(Instant::now()).unwrap();
        tx.consume(frame.len(), |buf| buf.copy_from_slice(&frame));
        assert_eq!(recv(&mut b).as_deref(), Some(&frame[..]));
        assert!(a.receive(Instant::now()).is_none());
        assert_eq!(a.own_frames_dropped, 1);
    }

    #[test]
    fn a_unicast_group_is_refused() {
        let e = McastDevice::join(Ipv4Addr::LOCALHOST, 1, [2, 0, 0, 0, 0, 1]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
