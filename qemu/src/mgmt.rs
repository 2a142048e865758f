//! The lab's management host ([`crate::spec::Management`]): one host on the provisioning wire
//! that stands for what a datacenter routes onto that network.
//!
//! - Every virtual BMC answers IPMI at the management address, on the BMC's own port (as the
//!   127.0.0.1 edge numbers them): the BMC network routed to the provisioning network, so the
//!   machines the seed deploys (the undercloud) drive the BMCs after the seed machine is gone.
//! - Each forward carries a TCP port of the host's 127.0.0.1 to an address on the wire: the
//!   operator's laptop on the provisioning network, e.g. the control plane's floating API
//!   address, which answers from the seed machine first and from the undercloud after the
//!   hand-off.
//!
//! The IP stack is the seed's userspace one on the lab's multicast wire, as for the BMCs' LAN
//! ports ([`crate::bmc_lan`]): nothing on the host's interfaces.

use crate::bmc::Shared;
use crate::spec::{Management, TcpForward};
use crate::wire::WireAddr;
use netboot::wire::device::McastDevice;
use netboot::wire::garp::GarpDevice;
use netboot::wire::{HostAddr, Stack};
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The running management host; stopped on drop.
#[derive(Debug)]
pub(crate) struct MgmtHost {
    cancel: CancellationToken,
    thread: Option<JoinHandle<()>>,
}

impl MgmtHost {
    /// Join `wire` as `spec`, relay each of `bmcs` (its port, its core) and listen on each
    /// forward's host port, until stopped.
    pub(crate) fn start(
        spec: &Management,
        wire: WireAddr,
        bmcs: Vec<(u16, Arc<Shared>)>,
    ) -> io::Result<Self> {
        let mac = crate::spec::parse_mac(&spec.mac).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("management MAC {:?} is not an Ethernet address", spec.mac),
            )
        })?;
        let host = HostAddr {
            mac,
            ip: spec.address,
            prefix_len: spec.prefix_len,
        };
        let cancel = CancellationToken::new();
        let ip = spec.address;
        let stack = Arc::new(Stack::start(
            host,
            move || {
                let d = McastDevice::join(wire.group, wire.port, mac)?;
                let fd = d.as_raw_fd();
                // The floating address moves (hand-off, failover): follow its announcements.
                Ok((GarpDevice::new(d, ip), fd))
            },
            cancel.clone(),
        )?);
        let mut relays = Vec::new();
        for (port, shared) in bmcs {
            let udp = stack.udp_bind(port).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("relaying a BMC at {}:{port}: {e}", spec.address),
                )
            })?;
            relays.push((udp, shared));
        }
        let mut listeners = Vec::new();
        for f in &spec.forwards {
            let l = std::net::TcpListener::bind(("127.0.0.1", f.host_port)).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("forwarding 127.0.0.1:{} to {}: {e}", f.host_port, f.to),
                )
            })?;
            l.set_nonblocking(true)?;
            listeners.push((l, *f));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let c = cancel.clone();
        let thread = std::thread::Builder::new()
            .name(format!("lab-mgmt-{}", spec.address))
            .spawn(move || {
                rt.block_on(async move {
                    for (udp, shared) in relays {
                        tokio::spawn(crate::bmc_lan::serve(udp, shared, c.clone()));
                    }
                    for (l, f) in listeners {
                        match tokio::net::TcpListener::from_std(l) {
                            Ok(l) => {
                                tokio::spawn(forward(l, f, stack.clone(), c.clone()));
                            }
                            Err(e) => tracing::warn!(error = %e, "forward {}", f.host_port),
                        }
                    }
                    c.cancelled().await;
                })
            })?;
        tracing::info!(address = %spec.address, forwards = spec.forwards.len(), "lab management host up");
        Ok(Self {
            cancel,
            thread: Some(thread),
        })
    }

    /// Stop the stack, the relays and the forwards (idempotent).
    pub(crate) fn stop(&mut self) {
        self.cancel.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MgmtHost {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Accept on `l` and carry each connection to `f.to` through the wire, until `cancel`.
async fn forward(
    l: tokio::net::TcpListener,
    f: TcpForward,
    stack: Arc<Stack>,
    cancel: CancellationToken,
) {
    loop {
        let (mut client, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = l.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, port = f.host_port, "forward: accept failed");
                    continue;
                }
            },
        };
        let stack = stack.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            // The wire's TCP gives up on its own (its timeout); this bounds a connect to an
            // address nobody holds.
            let connect =
                tokio::time::timeout(std::time::Duration::from_secs(20), stack.tcp_connect(f.to));
            let mut far = match connect.await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::info!(%peer, to = %f.to, error = %e, "forward: no connection");
                    return;
                }
                Err(_) => {
                    tracing::info!(%peer, to = %f.to, "forward: nobody answered");
                    return;
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => {}
                r = tokio::io::copy_bidirectional(&mut client, &mut far) => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, to = %f.to, error = %e, "forward closed");
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::spec::{Management, TcpForward};
    use netboot::wire::device::McastDevice;
    use netboot::wire::{HostAddr, Stack};
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::os::fd::AsRawFd;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::sync::CancellationToken;

    /// RMCP presence ping (ASF), as `ipmitool` sends first.
    const PING: [u8; 12] = [0x06, 0, 0xff, 0x06, 0, 0, 0x11, 0xbe, 0x80, 7, 0, 0];

    /// A host on the provisioning wire (a deployed machine) pings node2's BMC at the
    /// management address on node2's port, and gets node2's pong; a TCP connection to the
    /// host's forwarded port reaches a server on the wire and carries bytes both ways.
    #[test]
    fn bmcs_answer_at_the_management_address_and_forwards_reach_the_wire() {
        let tmp = tempfile::tempdir().unwrap();
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let host_port = probe.local_addr().unwrap().port();
        drop(probe);
        let mgmt_ip = Ipv4Addr::new(10, 80, 0, 3);
        let server = SocketAddrV4::new(Ipv4Addr::new(10, 80, 0, 1), 6385);
        let mut plan = crate::spec::Plan::new("mgmt-test", 2);
        plan.bmc_base_port = 0;
        plan.disks_gib = vec![];
        let mut file = plan.lab_file();
        let forward = TcpForward {
            host_port,
            to: server,
        };
        file.management = Some(Management::new(&file.name, mgmt_ip, 24, vec![forward]));
        let lab = crate::Lab::start(tmp.path(), file, Default::default()).unwrap();
        let node2_port = lab.file().nodes[1].bmc.port;
        let wire = lab.file().wire;

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let cancel = CancellationToken::new();
        // Hosts on the wire: the floating address's holder (a server) and a member (a client).
        let on_wire = |ip: Ipv4Addr, last: u8, cancel: CancellationToken| {
            let mac = [0x02, 0, 0, 0, 0x5f, last];
            let stack = Stack::start(
                HostAddr {
                    mac,
                    ip,
                    prefix_len: 24,
                },
                move || {
                    let d = McastDevice::join(wire.group, wire.port, mac)?;
                    let fd = d.as_raw_fd();
                    Ok((d, fd))
                },
                cancel,
            )
            .unwrap();
            (stack, mac)
        };
        let first_cancel = CancellationToken::new();
        let (holder, _) = on_wire(*server.ip(), 1, first_cancel.clone());
        let (member, _) = on_wire(Ipv4Addr::new(10, 80, 0, 20), 2, cancel.clone());
        let received = |lab: &crate::Lab, n: &str| {
            lab.bmc(n)
                .unwrap()
                .stats()
                .received
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        let pong = rt.block_on(async {
            let udp = member.udp_bind_ephemeral().unwrap();
            let mut buf = [0u8; 64];
            // The first datagram may wait for ARP; a few tries, as ipmitool makes.
            for _ in 0..5 {
                let to = SocketAddrV4::new(mgmt_ip, node2_port);
                udp.send_to(&PING, to).await.unwrap();
                let r = tokio::time::timeout(Duration::from_secs(2), udp.recv_from(&mut buf)).await;
                if let Ok(Ok((n, from))) = r {
                    return Some((buf[..n].to_vec(), from));
                }
            }
            None
        });
        let (pong, from) = pong.expect("a pong from node2's BMC at the management address");
        assert_eq!(from, SocketAddrV4::new(mgmt_ip, node2_port));
        assert!(pong.len() >= 10 && pong[8] == 0x40, "{pong:x?}");
        assert!(received(&lab, "node2") > 0);
        assert_eq!(received(&lab, "node1"), 0, "node1's BMC heard nothing");

        // The host's forwarded port reaches whoever holds the address: the first holder, then
        // (once it is gone and another machine announced the address) the next one at once.
        assert_eq!(
            rt.block_on(echo_through(&holder, host_port, server.port(), b"one")),
            Some(b"one back".to_vec())
        );
        first_cancel.cancel();
        drop(holder);
        let (next, next_mac) = on_wire(*server.ip(), 3, cancel.clone());
        let sniffer = crate::wire::Wire::join(wire).unwrap();
        sniffer
            .send_frame(&netboot::wire::device::gratuitous_arp_frame(
                next_mac,
                *server.ip(),
            ))
            .unwrap();
        assert_eq!(
            rt.block_on(echo_through(&next, host_port, server.port(), b"two")),
            Some(b"two back".to_vec()),
            "the forward follows the gratuitous ARP (a stale neighbor lasts a minute)"
        );
        cancel.cancel();
    }

    /// A connection to the host's 127.0.0.1:`host_port`, carried to `server` (listening on
    /// `port`), which answers `msg` + " back": what came back, if anything within 15 s.
    async fn echo_through(
        server: &Stack,
        host_port: u16,
        port: u16,
        msg: &[u8],
    ) -> Option<Vec<u8>> {
        let mut listener = server.tcp_listen(port, 2).unwrap();
        let len = msg.len();
        let serve = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut b = vec![0u8; len];
            s.read_exact(&mut b).await.unwrap();
            s.write_all(&[&b[..], b" back"].concat()).await.unwrap();
            s.flush().await.unwrap();
            // Kept open until the client has read.
            tokio::time::sleep(Duration::from_secs(2)).await;
        });
        let mut c = tokio::net::TcpStream::connect(("127.0.0.1", host_port))
            .await
            .unwrap();
        c.write_all(msg).await.unwrap();
        let mut back = vec![0u8; len + 5];
        let read = tokio::time::timeout(Duration::from_secs(15), c.read_exact(&mut back)).await;
        serve.abort();
        read.ok().and_then(|r| r.ok()).map(|_| back)
    }
}
