//! A virtual BMC's LAN port on the lab's BMC network: the BMC as a host of its own on a QEMU
//! multicast wire, answering IPMI on UDP 623 at its own address (10.81.0.x), as a real BMC's
//! dedicated management port does.
//!
//! The IP stack is the seed's userspace one ([`netboot::wire::Stack`], smoltcp on a
//! [`netboot::wire::device::McastDevice`]): one stack per BMC, because each BMC has its own
//! Ethernet address. It answers ARP and ping; the datagrams go through the same
//! [`crate::bmc::answer`] as the 127.0.0.1 edge, so sessions, faults and counters are shared.

use crate::bmc::Shared;
use crate::spec::{BmcLan, BmcNetwork};
use netboot::wire::device::McastDevice;
use netboot::wire::{HostAddr, Stack, WireUdp};
use std::io;
use std::net::SocketAddrV4;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The running LAN edge of one BMC; stopped on drop.
pub(crate) struct LanEdge {
    addr: SocketAddrV4,
    cancel: CancellationToken,
    thread: Option<JoinHandle<()>>,
}

impl LanEdge {
    /// Join `net`'s wire as `lan` and serve until stopped.
    pub(crate) fn start(shared: Arc<Shared>, lan: &BmcLan, net: &BmcNetwork) -> io::Result<Self> {
        let mac = crate::spec::parse_mac(&lan.mac).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("BMC LAN MAC {:?} is not an Ethernet address", lan.mac),
            )
        })?;
        let host = HostAddr {
            mac,
            ip: lan.address,
            prefix_len: net.prefix_len,
        };
        let addr = SocketAddrV4::new(lan.address, lan.port);
        let cancel = CancellationToken::new();
        let wire = net.wire;
        let stack = Stack::start(
            host,
            move || {
                let d = McastDevice::join(wire.group, wire.port, mac)?;
                let fd = d.as_raw_fd();
                Ok((d, fd))
            },
            cancel.clone(),
        )?;
        let udp = stack.udp_bind(lan.port)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let c = cancel.clone();
        let thread = std::thread::Builder::new()
            .name(format!("vbmc-lan-{}", lan.address))
            .spawn(move || {
                rt.block_on(serve(udp, shared, c));
            })?;
        tracing::info!(%addr, mac = %lan.mac, "BMC answering on the BMC network");
        Ok(Self {
            addr,
            cancel,
            thread: Some(thread),
        })
    }

    /// Its address and port on the BMC network.
    pub(crate) fn addr(&self) -> SocketAddrV4 {
        self.addr
    }

    /// Stop the stack and the serving thread (idempotent).
    pub(crate) fn stop(&mut self) {
        self.cancel.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answer the IPMI datagrams `udp` receives with `shared`'s BMC until `cancel`: the LAN edge
/// at the BMC's own address, and the management host's relay port ([`crate::mgmt`]).
pub(crate) async fn serve(udp: WireUdp, shared: Arc<Shared>, cancel: CancellationToken) {
    let mut buf = vec![0u8; 1024];
    loop {
        let (n, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = udp.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "BMC LAN receive failed");
                    continue;
                }
            },
        };
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        // The core and the machine block briefly (QEMU start/stop): as on the 127.0.0.1 edge,
        // one datagram at a time.
        let Some(reply) = crate::bmc::answer(&shared, &buf[..n], &peer) else {
            continue;
        };
        if udp.send_to(&reply, peer).await.is_ok() {
            shared.stats.replied.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for LanEdge {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use netboot::wire::device::McastDevice;
    use netboot::wire::{HostAddr, Stack};
    use std::net::SocketAddrV4;
    use std::os::fd::AsRawFd;
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;

    /// RMCP presence ping (ASF), as `ipmitool` sends first.
    const PING: [u8; 12] = [0x06, 0, 0xff, 0x06, 0, 0, 0x11, 0xbe, 0x80, 7, 0, 0];

    /// A host on the BMC network pings node2's BMC at its own address and gets the pong; the
    /// BMC still answers on 127.0.0.1 too.
    #[test]
    fn bmcs_answer_at_their_own_address_on_the_bmc_network() {
        let tmp = tempfile::tempdir().unwrap();
        let lab = crate::lab::test_lab(tmp.path(), "bmc-lan");
        let net = lab.file().bmc_network.clone().unwrap();
        let lan = lab.file().nodes[1].bmc.lan.clone().unwrap();
        let bmc = lab.bmc("node2").unwrap();
        assert_eq!(
            bmc.lan_addr(),
            Some(SocketAddrV4::new(lan.address, lan.port))
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let cancel = CancellationToken::new();
        let wire = net.wire;
        let mac = [0x02, 0, 0, 0, 0x5e, 0x01];
        let stack = Stack::start(
            HostAddr {
                mac,
                ip: net.seed_address,
                prefix_len: 24,
            },
            move || {
                let d = McastDevice::join(wire.group, wire.port, mac)?;
                let fd = d.as_raw_fd();
                Ok((d, fd))
            },
            cancel.clone(),
        )
        .unwrap();
        let received = bmc
            .stats()
            .received
            .load(std::sync::atomic::Ordering::Relaxed);
        let pong = rt.block_on(async {
            let udp = stack.udp_bind_ephemeral().unwrap();
            let mut buf = [0u8; 64];
            // The first datagram may wait for ARP; a few tries, as ipmitool makes.
            for _ in 0..5 {
                udp.send_to(&PING, SocketAddrV4::new(lan.address, 623))
                    .await
                    .unwrap();
                let r = tokio::time::timeout(Duration::from_secs(2), udp.recv_from(&mut buf)).await;
                if let Ok(Ok((n, from))) = r {
                    return Some((buf[..n].to_vec(), from));
                }
            }
            None
        });
        cancel.cancel();
        let (pong, from) = pong.expect("a pong from the BMC's LAN address");
        assert_eq!(from, SocketAddrV4::new(lan.address, 623));
        assert!(pong.len() >= 10 && pong[8] == 0x40, "{pong:x?}");
        assert!(
            bmc.stats()
                .received
                .load(std::sync::atomic::Ordering::Relaxed)
                > received
        );
        // node1's BMC heard nothing of it.
        assert_eq!(
            lab.bmc("node1")
                .unwrap()
                .stats()
                .received
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
    }
}
