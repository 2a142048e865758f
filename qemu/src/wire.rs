//! The lab's wire: QEMU's `-netdev socket,mcast=GROUP:PORT,localaddr=127.0.0.1` carries each
//! Ethernet frame as one UDP datagram to a multicast group on loopback. [`Wire`] joins the same
//! group to sniff and inject raw frames (no root, no TAP, nothing on the host's interfaces).

use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::Duration;

/// A wire's multicast group and UDP port (as in `lab.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireAddr {
    /// Multicast group (230.0.0.0/16 by default).
    pub group: Ipv4Addr,
    /// UDP port.
    pub port: u16,
}

impl WireAddr {
    /// The wire of a lab, derived from its name so parallel labs with different names do not
    /// hear each other (FNV-1a spreads names over 65 536 groups × 20 000 ports).
    pub fn for_lab(name: &str) -> Self {
        let h = fnv1a(name.as_bytes());
        Self {
            group: Ipv4Addr::new(230, 0, (h >> 8) as u8, h as u8),
            port: 30000 + ((h >> 16) % 20000) as u16,
        }
    }

    /// The `-netdev socket` argument value for a NIC on this wire.
    pub fn netdev(&self, id: &str) -> String {
        format!(
            "socket,id={id},mcast={}:{},localaddr=127.0.0.1",
            self.group, self.port
        )
    }
}

/// FNV-1a, 32 bit: a stable hash for deriving wire groups and MACs from names.
// Hand-written: five lines, and it must never change between versions (std's hasher may).
pub fn fnv1a(b: &[u8]) -> u32 {
    b.iter().fold(0x811c_9dc5u32, |h, &x| {
        (h ^ x as u32).wrapping_mul(0x0100_0193)
    })
}

/// A host on the wire at the Ethernet level: receives every frame any NIC sends, sends frames
/// every NIC receives (and that it hears itself, as multicast loops back).
#[derive(Debug)]
pub struct Wire {
    sock: UdpSocket,
    addr: WireAddr,
}

impl Wire {
    /// Join `addr`'s group on 127.0.0.1.
    pub fn join(addr: WireAddr) -> io::Result<Self> {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        // QEMU binds the same group:port with SO_REUSEADDR; so do we, to share it.
        s.set_reuse_address(true)?;
        s.bind(&SocketAddrV4::new(addr.group, addr.port).into())?;
        s.join_multicast_v4(&addr.group, &Ipv4Addr::LOCALHOST)?;
        s.set_multicast_if_v4(&Ipv4Addr::LOCALHOST)?;
        s.set_multicast_loop_v4(true)?;
        s.set_multicast_ttl_v4(0)?;
        Ok(Self {
            sock: s.into(),
            addr,
        })
    }

    /// The wire joined.
    pub fn addr(&self) -> WireAddr {
        self.addr
    }

    /// Receive one frame into `buf`, waiting at most `timeout`; `Ok(None)` on timeout.
    pub fn recv_frame(&self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>> {
        self.sock
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        match self.sock.recv_from(buf) {
            Ok((n, _)) => Ok(Some(n)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Put one Ethernet frame on the wire.
    pub fn send_frame(&self, frame: &[u8]) -> io::Result<()> {
        self.sock
            .send_to(frame, SocketAddrV4::new(self.addr.group, self.addr.port))?;
        Ok(())
    }

    /// The underlying socket (for an event loop).
    pub fn socket(&self) -> &UdpSocket {
        &self.sock
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_wires_are_stable_and_distinct() {
        assert_eq!(WireAddr::for_lab("default"), WireAddr::for_lab("default"));
        assert_ne!(WireAddr::for_lab("a"), WireAddr::for_lab("b"));
        assert_eq!(
            WireAddr::for_lab("x").netdev("n0"),
            format!(
                "socket,id=n0,mcast={}:{},localaddr=127.0.0.1",
                WireAddr::for_lab("x").group,
                WireAddr::for_lab("x").port
            )
        );
    }

    #[test]
    fn frames_sent_are_heard_by_every_member() {
        let addr = WireAddr::for_lab(&format!("wire-test-{}", std::process::id()));
        let a = Wire::join(addr).unwrap();
        let b = Wire::join(addr).unwrap();
        let frame = [
            0xffu8, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0, 1, 2, 3, 0x08, 0x06, 1, 2,
        ];
        a.send_frame(&frame).unwrap();
        let mut buf = [0u8; 2048];
        let n = b
            .recv_frame(&mut buf, Duration::from_secs(5))
            .unwrap()
            .expect("frame");
        assert_eq!(&buf[..n], &frame);
    }
}
