//! A host on a lab's BMC network that relays UDP between 127.0.0.1 and BMC LAN ports, so that
//! a kernel-socket IPMI client on the test machine (the seed's `IpmiDriver`, ipmitool) reaches
//! the BMCs the way a seed machine does: over the BMC network, at 10.81.0.x:623. The BMC side
//! sees requests from the relay's address on that network, never from 127.0.0.1.
//!
//! The relay joins the BMC network's QEMU wire through the seed's userspace stack
//! (`netboot::wire`, smoltcp), as `net.seed_address` unless told otherwise. One local socket per
//! target; replies go to the last local peer that spoke to that socket.

use netboot::wire::device::McastDevice;
use netboot::wire::{HostAddr, Stack};
use qemu::spec::BmcNetwork;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::thread::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running relay; stopped on drop.
pub struct BmcRelay {
    /// For each target (in order), the 127.0.0.1 address to send its datagrams to.
    pub local: Vec<SocketAddr>,
    cancel: CancellationToken,
    thread: Option<JoinHandle<()>>,
}

impl BmcRelay {
    /// Join `net` as `ip` (its seed address when `None`) and relay to each of `targets`.
    pub fn start(net: &BmcNetwork, ip: Option<Ipv4Addr>, targets: &[SocketAddrV4]) -> BmcRelay {
        let ip = ip.unwrap_or(net.seed_address);
        let o = ip.octets();
        let mac = [0x02, 0x5e, o[0], o[1], o[2], o[3]];
        let cancel = CancellationToken::new();
        let wire = net.wire;
        let stack = Stack::start(
            HostAddr {
                mac,
                ip,
                prefix_len: net.prefix_len,
            },
            move || {
                let d = McastDevice::join(wire.group, wire.port, mac)?;
                let fd = d.as_raw_fd();
                Ok((d, fd))
            },
            cancel.clone(),
        )
        .expect("joining the BMC network");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let mut pairs = Vec::new();
        let mut local = Vec::new();
        for &to in targets {
            let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
            sock.set_nonblocking(true).unwrap();
            local.push(sock.local_addr().unwrap());
            let wire_sock = stack.udp_bind_ephemeral().expect("a wire UDP socket");
            pairs.push((sock, wire_sock, to));
        }
        let c = cancel.clone();
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                let mut tasks = tokio::task::JoinSet::new();
                for (sock, wire_sock, to) in pairs {
                    let c = c.clone();
                    let sock = tokio::net::UdpSocket::from_std(sock).unwrap();
                    tasks.spawn(relay(sock, wire_sock, to, c));
                }
                c.cancelled().await;
                tasks.shutdown().await;
            })
        });
        BmcRelay {
            local,
            cancel,
            thread: Some(thread),
        }
    }
}

async fn relay(
    sock: tokio::net::UdpSocket,
    wire: netboot::wire::WireUdp,
    to: SocketAddrV4,
    cancel: CancellationToken,
) {
    let mut peer: Option<SocketAddr> = None;
    let (mut a, mut b) = (vec![0u8; 2048], vec![0u8; 2048]);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            r = sock.recv_from(&mut a) => if let Ok((n, from)) = r {
                peer = Some(from);
                let _ = wire.send_to(&a[..n], to).await;
            },
            r = wire.recv_from(&mut b) => if let Ok((n, from)) = r {
                if let (true, Some(p)) = (from == to, peer) {
                    let _ = sock.send_to(&b[..n], p).await;
                }
            },
        }
    }
}

impl Drop for BmcRelay {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
