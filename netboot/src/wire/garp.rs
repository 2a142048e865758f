//! Gratuitous ARP for smoltcp: a host on the wire that talks to a floating address learns at
//! once that it moved.
//!
//! smoltcp fills its neighbor cache only from ARP packets aimed at its own address, so the
//! gratuitous ARP a new holder of a floating address broadcasts (sender = target = that
//! address) is ignored, and the stale entry keeps frames going to the old holder (a machine
//! that is off) for up to a minute. [`GarpDevice`] hands such a frame on with its target
//! rewritten to this host's address: smoltcp then takes the sender's new Ethernet address and
//! answers with an ARP reply of its own, as a kernel would update its entry (Linux's
//! `arp_accept`). Hand-written: smoltcp has no hook for this and no public neighbor cache.

use smoltcp::phy::{self, Device, DeviceCapabilities};
use smoltcp::time::Instant;
use std::net::Ipv4Addr;

/// `inner`, with gratuitous ARP made visible to smoltcp for the host at `ip`.
pub struct GarpDevice<D> {
    inner: D,
    ip: Ipv4Addr,
}

impl<D: Device> GarpDevice<D> {
    /// Wrap `inner` for the host whose address is `ip`.
    pub fn new(inner: D, ip: Ipv4Addr) -> Self {
        Self { inner, ip }
    }
}

/// `frame` with its ARP target set to `ip` when it is a gratuitous ARP (request or reply, sender
/// address = target address) for an address other than `ip`; `None` for any other frame.
pub fn retarget(frame: &[u8], ip: Ipv4Addr) -> Option<Vec<u8>> {
    // Ethernet (14) + ARP for Ethernet/IPv4 (28).
    if frame.len() < 42 || frame[12..14] != [0x08, 0x06] {
        return None;
    }
    let arp = &frame[14..42];
    let ethernet_ipv4 = arp[0..6] == [0x00, 0x01, 0x08, 0x00, 6, 4];
    let (sender, target) = (&arp[14..18], &arp[24..28]);
    if !ethernet_ipv4 || sender != target || sender == ip.octets() {
        return None;
    }
    let mut out = frame.to_vec();
    out[38..42].copy_from_slice(&ip.octets());
    Some(out)
}

/// A received frame, rewritten on its way to smoltcp when it is a gratuitous ARP.
pub struct GarpRxToken<T> {
    inner: T,
    ip: Ipv4Addr,
}

impl<T: phy::RxToken> phy::RxToken for GarpRxToken<T> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let ip = self.ip;
        self.inner.consume(|frame| match retarget(frame, ip) {
            Some(rewritten) => {
                tracing::debug!(
                    from = ?&frame[28..32],
                    "wire: gratuitous ARP, neighbor updated"
                );
                f(&rewritten)
            }
            None => f(frame),
        })
    }

    fn meta(&self) -> phy::PacketMeta {
        self.inner.meta()
    }
}

impl<D: Device> Device for GarpDevice<D> {
    type RxToken<'a>
        = GarpRxToken<D::RxToken<'a>>
    where
        Self: 'a;
    type TxToken<'a>
        = D::TxToken<'a>
    where
        Self: 'a;

    fn receive(&mut self, now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let (rx, tx) = self.inner.receive(now)?;
        Some((
            GarpRxToken {
                inner: rx,
                ip: self.ip,
            },
            tx,
        ))
    }

    fn transmit(&mut self, now: Instant) -> Option<Self::TxToken<'_>> {
        self.inner.transmit(now)
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.inner.capabilities()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::device::gratuitous_arp_frame;

    const US: Ipv4Addr = Ipv4Addr::new(10, 80, 0, 3);
    const FLOAT: Ipv4Addr = Ipv4Addr::new(10, 80, 0, 1);

    #[test]
    fn a_gratuitous_arp_is_aimed_at_us_and_nothing_else_changes() {
        let mac = [0x52, 0x54, 0, 0x10, 2, 0];
        let garp = gratuitous_arp_frame(mac, FLOAT);
        let out = retarget(&garp, US).expect("rewritten");
        assert_eq!(out[38..42], US.octets());
        assert_eq!(out[..38], garp[..38], "sender, operation, MACs kept");
        // Our own announcement, an ordinary request, and a non-ARP frame pass as they are.
        assert!(retarget(&gratuitous_arp_frame(mac, US), US).is_none());
        let mut request = garp;
        request[38..42].copy_from_slice(&[10, 80, 0, 9]);
        assert!(retarget(&request, US).is_none());
        let mut ipv4 = garp;
        ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
        assert!(retarget(&ipv4, US).is_none());
        assert!(retarget(&garp[..41], US).is_none());
    }
}
