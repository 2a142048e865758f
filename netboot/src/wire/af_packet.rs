//! The userspace stack on a NIC through AF_PACKET, for a laptop's provisioning port: the seed
//! owns its address on its own stack and the host's IP configuration is never touched.
//!
//! Hand-written instead of smoltcp's `RawSocket` because that device drops what the kernel
//! says about each frame, and frames from the same host (veth, TAP, bridges, VMs — a laptop's
//! everyday traffic, and GRO on a real NIC) arrive with their L4 checksum not yet computed
//! (`CHECKSUM_PARTIAL`: the field holds the pseudo-header sum only). smoltcp verifies every
//! checksum and drops those, which is why DHCP (from firmware, full checksums) answered but no
//! TCP did. Here `PACKET_AUXDATA` gives each frame's `tp_status`:
//!
//! - `TP_STATUS_CSUMNOTREADY`: the checksum was never computed — the TCP/UDP checksum of the
//!   IPv4 packet is completed here (smoltcp's own `fill_checksum`) before smoltcp sees it;
//! - `TP_STATUS_CSUM_VALID`: the NIC or kernel verified it — completed too, since a merged
//!   (GRO) frame's header field no longer covers its payload;
//! - neither: the frame is passed as it is, and smoltcp's verification stands (real corruption
//!   is still dropped).
//!
//! Frames the host sends itself (`PACKET_OUTGOING`) and frames whose VLAN tag the NIC stripped
//! (another VLAN than the untagged provisioning network) are not the seed's and are skipped.
//! The socket puts the NIC in promiscuous mode (undone when it closes): the seed's stack has
//! its own MAC, which a real NIC's filter would drop. Offloads stay on.

use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use smoltcp::wire::{IpAddress, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Largest frame read: a GSO/GRO frame can carry up to 64 KiB of IP packet.
const RX_MAX: usize = 65536 + 64;
/// Largest frame sent (1500-byte MTU plus the Ethernet header).
const TX_MAX: usize = super::device::FRAME_MAX;
const ETH_HEADER: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;

/// What the device did with frames, counted in the shared metrics.
#[derive(Clone)]
pub struct AfPacketCounters {
    completed: Arc<AtomicU64>,
    trusted: Arc<AtomicU64>,
    skipped: Arc<AtomicU64>,
}

impl AfPacketCounters {
    /// The counters, from `metrics`.
    pub fn new(metrics: &crate::metrics::Metrics) -> Self {
        Self {
            completed: metrics.counter(
                "wire_rx_csum_completed_total",
                "AF_PACKET frames whose TCP/UDP checksum the kernel left to compute (offload)",
            ),
            trusted: metrics.counter(
                "wire_rx_csum_verified_total",
                "AF_PACKET frames whose checksum the NIC or kernel had verified",
            ),
            skipped: metrics.counter(
                "wire_rx_skipped_total",
                "AF_PACKET frames not for the seed's stack (the host's own, another VLAN)",
            ),
        }
    }
}

/// An AF_PACKET socket on one NIC, as a smoltcp device.
pub struct AfPacket {
    fd: OwnedFd,
    ifname: String,
    rx: Vec<u8>,
    tx: Vec<u8>,
    counters: AfPacketCounters,
}

impl std::fmt::Debug for AfPacket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfPacket")
            .field("ifname", &self.ifname)
            .finish_non_exhaustive()
    }
}

fn last_error(what: &str, ifname: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what} on {ifname}: {e}"))
}

fn setsockopt<T>(fd: RawFd, level: i32, name: i32, value: &T) -> i32 {
    // SAFETY: `value` points to a live T of the size given.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    }
}

impl AfPacket {
    /// Open the NIC `ifname` (needs CAP_NET_RAW): every frame on it, non-blocking, with each
    /// frame's status, the NIC promiscuous.
    pub fn open(ifname: &str, counters: AfPacketCounters) -> io::Result<Self> {
        let cname = std::ffi::CString::new(ifname)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
        // SAFETY: plain libc calls; the descriptor is owned right after it is created.
        let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if index == 0 {
            return Err(last_error("finding the interface", ifname));
        }
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: as above.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                proto as i32,
            )
        };
        if raw < 0 {
            return Err(last_error("opening AF_PACKET", ifname));
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: an all-zero sockaddr_ll is valid; the fields set are the ones bind reads.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = index as i32;
        // SAFETY: `sll` is a valid sockaddr_ll of the size given.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(last_error("binding AF_PACKET", ifname));
        }
        let one: libc::c_int = 1;
        if setsockopt(fd.as_raw_fd(), libc::SOL_PACKET, libc::PACKET_AUXDATA, &one) < 0 {
            return Err(last_error("asking for PACKET_AUXDATA", ifname));
        }
        // SAFETY: all-zero is a valid packet_mreq.
        let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
        mreq.mr_ifindex = index as i32;
        mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
        if setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_ADD_MEMBERSHIP,
            &mreq,
        ) < 0
        {
            return Err(last_error("making the NIC promiscuous", ifname));
        }
        Ok(Self {
            fd,
            ifname: ifname.into(),
            rx: vec![0; RX_MAX],
            tx: vec![0; TX_MAX],
            counters,
        })
    }

    /// Read one frame for the stack: its length, or `None` when nothing is waiting.
    fn read_frame(&mut self) -> Option<usize> {
        loop {
            // SAFETY: all-zero is valid for these plain C structs.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut cmsg_buf = [0u64; 16];
            let mut iov = libc::iovec {
                iov_base: self.rx.as_mut_ptr().cast(),
                iov_len: self.rx.len(),
            };
            // SAFETY: as above.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_name = (&mut from as *mut libc::sockaddr_ll).cast();
            msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cmsg_buf.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&cmsg_buf);
            // SAFETY: every pointer in `msg` points to a live buffer of the length given.
            let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_TRUNC) };
            if n < 0 {
                return None; // EAGAIN, or a transient error: nothing to read now
            }
            let n = n as usize;
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                // The host's own frames, seen on their way out.
                self.counters.skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if n > self.rx.len() || n < ETH_HEADER {
                continue; // truncated (larger than any GSO frame) or a runt
            }
            let status = aux_status(&msg);
            if status & libc::TP_STATUS_VLAN_VALID != 0 {
                self.counters.skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let frame = &mut self.rx[..n];
            if status & libc::TP_STATUS_CSUMNOTREADY != 0 {
                if complete_checksum(frame) {
                    self.counters.completed.fetch_add(1, Ordering::Relaxed);
                }
            } else if status & libc::TP_STATUS_CSUM_VALID != 0 && complete_checksum(frame) {
                self.counters.trusted.fetch_add(1, Ordering::Relaxed);
            }
            return Some(n);
        }
    }
}

/// `tp_status` from the `PACKET_AUXDATA` control message (0 without one).
fn aux_status(msg: &libc::msghdr) -> u32 {
    // SAFETY: the CMSG macros walk the control buffer `recvmsg` filled, within its length.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == libc::PACKET_AUXDATA {
                let aux: libc::tpacket_auxdata =
                    std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                return aux.tp_status;
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    0
}

/// Compute the TCP or UDP checksum of the IPv4 packet in Ethernet `frame` in place (whatever
/// its field held). `false` when the frame is something else (ARP, IPv6, fragments, ICMP) or
/// malformed, which is left as it is for smoltcp to judge.
pub fn complete_checksum(frame: &mut [u8]) -> bool {
    if frame.len() < ETH_HEADER || u16::from_be_bytes([frame[12], frame[13]]) != ETHERTYPE_IPV4 {
        return false;
    }
    let Ok(ip) = Ipv4Packet::new_checked(&mut frame[ETH_HEADER..]) else {
        return false;
    };
    if ip.more_frags() || ip.frag_offset() != 0 {
        return false;
    }
    let (src, dst) = (
        IpAddress::Ipv4(ip.src_addr()),
        IpAddress::Ipv4(ip.dst_addr()),
    );
    let (proto, header, total) = (
        ip.next_header(),
        ip.header_len() as usize,
        ip.total_len() as usize,
    );
    let l4 = &mut frame[ETH_HEADER + header..ETH_HEADER + total];
    match proto {
        IpProtocol::Tcp => match TcpPacket::new_checked(l4) {
            Ok(mut t) => {
                t.fill_checksum(&src, &dst);
                true
            }
            Err(_) => false,
        },
        IpProtocol::Udp => match UdpPacket::new_checked(l4) {
            Ok(mut u) => {
                u.fill_checksum(&src, &dst);
                true
            }
            Err(_) => false,
        },
        _ => false,
    }
}

impl AsRawFd for AfPacket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A received frame.
pub struct AfRxToken<'a>(&'a [u8]);

/// Room for one frame to send.
pub struct AfTxToken<'a> {
    fd: RawFd,
    buf: &'a mut Vec<u8>,
}

impl phy::RxToken for AfRxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl phy::TxToken for AfTxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let frame = &mut self.buf[..len];
        let r = f(frame);
        // SAFETY: `frame` is a live buffer of `len` bytes. A full queue loses the frame, as a
        // busy Ethernet would; the protocols' retries recover.
        let sent = unsafe { libc::send(self.fd, frame.as_ptr().cast(), len, 0) };
        if sent < 0 {
            tracing::debug!(error = %io::Error::last_os_error(), "wire: frame not sent");
        }
        r
    }
}

impl Device for AfPacket {
    type RxToken<'a> = AfRxToken<'a>;
    type TxToken<'a> = AfTxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let n = self.read_frame()?;
        Some((
            AfRxToken(&self.rx[..n]),
            AfTxToken {
                fd: self.fd.as_raw_fd(),
                buf: &mut self.tx,
            },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Self::TxToken<'_>> {
        Some(AfTxToken {
            fd: self.fd.as_raw_fd(),
            buf: &mut self.tx,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = TX_MAX;
        caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::{EthernetAddress, EthernetFrame, EthernetProtocol, Ipv4Address};

    /// An Ethernet + IPv4 + TCP SYN frame with a correct checksum, and the same frame as the
    /// sending kernel hands it over with checksum offload: the pseudo-header sum only.
    fn syn() -> (Vec<u8>, Vec<u8>) {
        let mut f = vec![0u8; 14 + 20 + 20];
        let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
        eth.set_dst_addr(EthernetAddress([2, 0, 0, 0, 0, 1]));
        eth.set_src_addr(EthernetAddress([2, 0, 0, 0, 0, 2]));
        eth.set_ethertype(EthernetProtocol::Ipv4);
        let (src, dst) = (Ipv4Address::new(10, 0, 0, 2), Ipv4Address::new(10, 0, 0, 1));
        {
            let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
            ip.set_version(4);
            ip.set_header_len(20);
            ip.set_total_len(40);
            ip.set_hop_limit(64);
            ip.set_next_header(IpProtocol::Tcp);
            ip.set_src_addr(src);
            ip.set_dst_addr(dst);
            ip.fill_checksum();
        }
        {
            let mut t = TcpPacket::new_unchecked(&mut f[34..]);
            t.set_src_port(40000);
            t.set_dst_port(8080);
            t.set_seq_number(smoltcp::wire::TcpSeqNumber(12345));
            t.set_header_len(20);
            t.set_syn(true);
            t.set_window_len(64240);
            t.fill_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst));
        }
        let good = f.clone();
        // CHECKSUM_PARTIAL: the field holds the (uncomplemented) pseudo-header sum.
        let words = [src.octets(), dst.octets()]
            .iter()
            .flat_map(|o| {
                [
                    u16::from_be_bytes([o[0], o[1]]),
                    u16::from_be_bytes([o[2], o[3]]),
                ]
            })
            .chain([6u16, 20])
            .map(u32::from)
            .sum::<u32>();
        let pseudo = ((words & 0xffff) + (words >> 16)) as u16;
        f[14 + 20 + 16..14 + 20 + 18].copy_from_slice(&pseudo.to_be_bytes());
        (good, f)
    }

    fn tcp_ok(f: &[u8]) -> bool {
        let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
        TcpPacket::new_checked(&f[34..]).unwrap().verify_checksum(
            &IpAddress::Ipv4(ip.src_addr()),
            &IpAddress::Ipv4(ip.dst_addr()),
        )
    }

    #[test]
    fn a_partial_checksum_is_completed_to_the_full_one() {
        let (good, mut partial) = syn();
        assert!(tcp_ok(&good));
        assert!(!tcp_ok(&partial), "smoltcp would drop it as it comes");
        assert!(complete_checksum(&mut partial));
        assert_eq!(partial, good);
    }

    #[test]
    fn frames_that_are_not_tcp_or_udp_over_ipv4_are_left_alone() {
        let (good, _) = syn();
        let mut arp = good.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let before = arp.clone();
        assert!(!complete_checksum(&mut arp));
        assert_eq!(arp, before);
        let mut frag = good.clone();
        frag[14 + 6] = 0x20; // more fragments
        assert!(!complete_checksum(&mut frag));
        let mut short = good[..30].to_vec();
        assert!(!complete_checksum(&mut short));
        let mut lying = good.clone();
        lying[14 + 3] = 200; // total length past the frame
        assert!(!complete_checksum(&mut lying));
    }
}
