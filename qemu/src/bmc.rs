//! The virtual BMC's edge: a UDP socket on 127.0.0.1 feeding [`crate::ipmi::BmcCore`], carrying
//! out its power actions on a [`Node`], with fault controls for tests.
//!
//! One thread per BMC (blocking socket with a short read timeout): a BMC sees a handful of
//! packets a second, and this keeps the library usable from plain `#[test]`s and from the CLI
//! without imposing an async runtime. [`VirtualBmc::start_lan`] adds a second edge, the BMC's
//! LAN port on the lab's BMC network ([`crate::bmc_lan`]), sharing the same core.

use crate::ipmi::{BmcConfig, BmcCore, BootDevice, PowerAction};
use crate::node::Node;
use rand::RngExt;
use serde::{Deserialize, Serialize};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Misbehaviour to simulate (like omicron's simulated service processors).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Delay every reply by this many milliseconds.
    pub delay_ms: u64,
    /// Drop every packet (the BMC is unreachable).
    pub unresponsive: bool,
    /// Drop this fraction (0.0–1.0) of received packets at random.
    pub drop_fraction: f64,
    /// Accept power-on commands but leave the machine off (a dead PSU).
    pub fail_power_on: bool,
    /// Announce only IPMI 1.5, no IPMI 2.0 / RMCP+ (an old BMC, or a downgrade on the path).
    pub ipmi15_only: bool,
}

/// Packet counters of one BMC.
#[derive(Debug, Default)]
pub struct BmcStats {
    /// Datagrams received.
    pub received: AtomicU64,
    /// Datagrams answered.
    pub replied: AtomicU64,
    /// Malformed, unauthenticated or out-of-sequence datagrams dropped.
    pub dropped: AtomicU64,
    /// Datagrams dropped by a fault.
    pub fault_dropped: AtomicU64,
}

pub(crate) struct Shared {
    faults: Mutex<Faults>,
    pub(crate) stop: AtomicBool,
    pub(crate) stats: BmcStats,
    node: Arc<Mutex<Node>>,
    core: Mutex<BmcCore>,
}

/// A running virtual BMC; stopped (thread joined) on drop.
pub struct VirtualBmc {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    lan: Option<crate::bmc_lan::LanEdge>,
}

impl std::fmt::Debug for VirtualBmc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualBmc")
            .field("addr", &self.addr)
            .field("lan", &self.lan_addr())
            .finish()
    }
}

impl VirtualBmc {
    /// Bind `bind` (127.0.0.1, port 0 for any) and serve `node`.
    pub fn start(
        bind: SocketAddr,
        config: BmcConfig,
        node: Arc<Mutex<Node>>,
    ) -> std::io::Result<Self> {
        let sock = UdpSocket::bind(bind)?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let addr = sock.local_addr()?;
        let shared = Arc::new(Shared {
            faults: Mutex::new(Faults::default()),
            stop: AtomicBool::new(false),
            stats: BmcStats::default(),
            node,
            core: Mutex::new(BmcCore::new(config, rand::random())),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("vbmc-{}", addr.port()))
            .spawn(move || serve(sock, &s))?;
        Ok(Self {
            addr,
            shared,
            thread: Some(thread),
            lan: None,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replace the current faults (`Faults::default()` clears them).
    pub fn set_fault(&self, faults: Faults) {
        tracing::info!(bmc = %self.addr, ?faults, "faults set");
        *self.shared.faults.lock().expect("faults lock") = faults;
    }

    /// The current faults.
    pub fn faults(&self) -> Faults {
        self.shared.faults.lock().expect("faults lock").clone()
    }

    /// Packet counters.
    pub fn stats(&self) -> &BmcStats {
        &self.shared.stats
    }

    /// IPMI 1.5 session requests received (each carries the user name; see
    /// [`Faults::ipmi15_only`]).
    pub fn ipmi15_session_requests(&self) -> u64 {
        self.shared
            .core
            .lock()
            .expect("core lock")
            .ipmi15_session_requests()
    }

    /// The node it drives.
    pub fn node(&self) -> &Arc<Mutex<Node>> {
        &self.shared.node
    }

    /// Stop serving (idempotent).
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(lan) = &mut self.lan {
            lan.stop();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Its core, shared with its other edges (the management host's relay).
    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Also answer on the lab's BMC network, as the host `lan.address` (UDP 623) with its
    /// own Ethernet address, through the seed's userspace stack ([`crate::bmc_lan`]). The
    /// same sessions, faults and counters serve both edges.
    pub fn start_lan(
        &mut self,
        lan: &crate::spec::BmcLan,
        net: &crate::spec::BmcNetwork,
    ) -> std::io::Result<()> {
        if self.lan.is_none() {
            self.lan = Some(crate::bmc_lan::LanEdge::start(
                self.shared.clone(),
                lan,
                net,
            )?);
        }
        Ok(())
    }

    /// Where it answers on the BMC network, if it does.
    pub fn lan_addr(&self) -> Option<std::net::SocketAddrV4> {
        self.lan.as_ref().map(|l| l.addr())
    }
}

impl Drop for VirtualBmc {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(sock: UdpSocket, s: &Shared) {
    let mut buf = [0u8; 1024];
    while !s.stop.load(Ordering::Relaxed) {
        let (n, peer) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => {
                tracing::warn!(error = %e, "BMC socket receive failed");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if let Some(reply) = answer(s, &buf[..n], &peer) {
            if sock.send_to(&reply, peer).is_ok() {
                s.stats.replied.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One datagram through faults, the core and the machine: the reply to send, if any (the
/// caller sends it and counts it). Both edges (127.0.0.1 and the BMC network) share it.
pub(crate) fn answer(s: &Shared, data: &[u8], peer: &dyn std::fmt::Display) -> Option<Vec<u8>> {
    s.stats.received.fetch_add(1, Ordering::Relaxed);
    let faults = s.faults.lock().expect("faults lock").clone();
    if faults.unresponsive
        || (faults.drop_fraction > 0.0 && rand::rng().random::<f64>() < faults.drop_fraction)
    {
        s.stats.fault_dropped.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    let powered = s.node.lock().expect("node lock").is_on();
    let out = {
        let mut core = s.core.lock().expect("core lock");
        core.set_ipmi15_only(faults.ipmi15_only);
        core.handle(data, Instant::now(), powered)
    };
    if let Some(why) = out.dropped {
        tracing::debug!(%peer, ?why, "BMC dropped a datagram");
        s.stats.dropped.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(action) = out.action {
        act(s, action, &faults);
    }
    let reply = out.reply?;
    if faults.delay_ms > 0 {
        std::thread::sleep(Duration::from_millis(faults.delay_ms));
    }
    Some(reply)
}

/// Carry out a Chassis Control action. Real BMCs acknowledge first and act asynchronously;
/// acting before the reply (bounded: QEMU starts or quits in well under a second) means a
/// `power status` right after `power on` already sees the truth.
fn act(s: &Shared, action: PowerAction, faults: &Faults) {
    let mut node = s.node.lock().expect("node lock");
    let boot = |s: &Shared| {
        s.core
            .lock()
            .expect("core lock")
            .take_boot_device()
            .unwrap_or(BootDevice::Disk)
    };
    let on = |node: &mut Node| {
        if faults.fail_power_on {
            tracing::warn!(node = %node.spec().name, "power on fails (fault injected)");
            return Ok(());
        }
        node.power_on(boot(s))
    };
    let r = match action {
        PowerAction::On => {
            if node.is_on() {
                Ok(())
            } else {
                on(&mut node)
            }
        }
        PowerAction::Off => node.power_off(),
        PowerAction::Cycle => {
            if node.is_on() {
                node.power_off().and_then(|()| on(&mut node))
            } else {
                Ok(())
            }
        }
        PowerAction::Reset => {
            // A reset re-reads the boot flags; QEMU's boot order is fixed per process, so a
            // pending boot override means restarting it.
            let pending = s.core.lock().expect("core lock").boot_override();
            if !node.is_on() {
                Ok(())
            } else if pending.is_some() {
                node.power_off().and_then(|()| on(&mut node))
            } else {
                node.reset()
            }
        }
        PowerAction::Soft => {
            if node.is_on() {
                node.soft_off()
            } else {
                Ok(())
            }
        }
    };
    if let Err(e) = r {
        tracing::error!(node = %node.spec().name, ?action, error = %crate::ErrorChain(&e), "power action failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::RunOptions;
    use crate::spec::Plan;

    const PING: [u8; 12] = [0x06, 0, 0xff, 0x06, 0, 0, 0x11, 0xbe, 0x80, 7, 0, 0];

    fn ping(client: &UdpSocket, to: SocketAddr) -> bool {
        client.send_to(&PING, to).unwrap();
        let mut buf = [0u8; 64];
        match client.recv_from(&mut buf) {
            Ok((n, _)) => n >= 10 && buf[8] == 0x40 && buf[9] == 7,
            Err(_) => false,
        }
    }

    #[test]
    fn udp_edge_answers_and_obeys_drop_faults() {
        let tmp = tempfile::tempdir().unwrap();
        let lab = Plan::new("bmc-edge", 1).lab_file();
        let node = Node::new(
            lab.nodes[0].clone(),
            tmp.path().join("node1"),
            lab.wire,
            RunOptions::default(),
        );
        let config = BmcConfig {
            username: "admin".into(),
            password: "password".into(),
            guid: [0; 16],
        };
        let bmc = VirtualBmc::start(
            "127.0.0.1:0".parse().unwrap(),
            config,
            Arc::new(Mutex::new(node)),
        )
        .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        assert!(ping(&client, bmc.addr()));

        bmc.set_fault(Faults {
            drop_fraction: 1.0,
            ..Faults::default()
        });
        assert!(!ping(&client, bmc.addr()));
        bmc.set_fault(Faults {
            unresponsive: true,
            ..Faults::default()
        });
        assert!(!ping(&client, bmc.addr()));
        assert_eq!(bmc.stats().fault_dropped.load(Ordering::Relaxed), 2);

        bmc.set_fault(Faults::default());
        client.send_to(b"garbage", bmc.addr()).unwrap();
        assert!(ping(&client, bmc.addr()), "garbage does not stop the BMC");
        assert_eq!(bmc.stats().dropped.load(Ordering::Relaxed), 1);
        // (`replied` is counted after the send, so it may lag what the client saw.)
        assert_eq!(bmc.stats().received.load(Ordering::Relaxed), 5);
    }
}
