//! The lab of the hand-off tests (`qemu_handoff_*`), as `cargo xtask lab up --appliance` makes
//! it for a person: the machines and the seed machine (the appliance VM) on the lab's wire, the
//! lab's management host on it (every BMC relayed at [`MGMT_IP`], the control plane's
//! [`FLOAT`]ing API address on a port of the host's 127.0.0.1), the seed machine's own API on
//! another (its user-mode NIC), and a capture of the DHCP answers on the wire.

#![allow(dead_code)]

use qemu::appliance::PortForward;
use qemu::node::RunOptions;
use qemu::spec::{Management, TcpForward};
use qemu::Lab;
use std::io::Write;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The seed's (the appliance's) own address on the provisioning network.
pub const SEED_IP: &str = "10.80.0.2";
/// The control plane's floating address: the seed's until the hand-off, then the undercloud
/// leader's.
pub const FLOAT: &str = "10.80.0.1";
/// The lab's management host: the address the BMCs are relayed to, for the seed and the
/// undercloud alike.
pub const MGMT_IP: &str = "10.80.0.3";

/// The DHCP OFFERs and ACKs in `pcap`: (time, source MAC, xid, message type).
pub fn dhcp_replies(pcap: &Path) -> Vec<(f64, String, String, String)> {
    let out = std::process::Command::new(tests::require("tshark"))
        .arg("-r")
        .arg(pcap)
        .args(["-Y", "dhcp.option.dhcp == 2 || dhcp.option.dhcp == 5"])
        .args(["-T", "fields", "-e", "frame.time_epoch", "-e", "eth.src"])
        .args(["-e", "dhcp.id", "-e", "dhcp.option.dhcp"])
        .output()
        .unwrap();
    assert!(out.status.success(), "tshark: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Some((
                f.first()?.parse().ok()?,
                f.get(1)?.to_lowercase(),
                f.get(2)?.to_string(),
                f.get(3)?.to_string(),
            ))
        })
        .collect()
}

/// `n` machines (`node1`…) and the seed machine booted from `seed`'s medium (powered on at
/// once), with the lab's management host. Dropping it stops the capture and the lab.
pub struct HandoffLab {
    lab: Lab,
    /// node1… then the seed machine's.
    pub consoles: Vec<PathBuf>,
    /// The nodes then the seed machine, as enrolled (BMCs at [`MGMT_IP`]).
    pub specs: Vec<qemu::spec::NodeSpec>,
    /// Their BMCs' ports on the host's 127.0.0.1 (for ipmitool from here).
    local_bmc_ports: Vec<u16>,
    /// The seed machine's own API (its `SEED_IP:6385`) on the host's 127.0.0.1.
    pub seed_api: u16,
    /// `FLOAT:6385` on the host's 127.0.0.1, through the management host.
    pub float_api: u16,
    capture: Option<Capture>,
}

/// The seed machine of a [`HandoffLab`].
pub struct Appliance {
    pub medium: qemu::appliance::Medium,
    pub memory_mib: u32,
}

/// A free TCP port of the host's 127.0.0.1.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl HandoffLab {
    /// The lab in `dir`; every DHCP answer on its wire is written to `pcap`.
    pub fn start(dir: &Path, n: usize, seed: Appliance, pcap: &Path) -> HandoffLab {
        let mut plan = tests::test_plan("ho", n, 768, &[3]);
        plan.bmc_network = false;
        let mut file = plan.lab_file();
        let (seed_api, float_api) = (free_port(), free_port());
        let mut spec = qemu::appliance::ApplianceSpec::new(&file, seed.medium);
        spec.memory_mib = seed.memory_mib;
        spec.disks_gib = vec![3];
        spec.forward = vec![PortForward {
            host: seed_api,
            guest: 6385,
        }];
        file.appliance = Some(spec);
        let to = SocketAddrV4::new(FLOAT.parse().unwrap(), 6385);
        let forward = TcpForward {
            host_port: float_api,
            to,
        };
        file.management = Some(Management::new(
            &file.name,
            MGMT_IP.parse().unwrap(),
            24,
            vec![forward],
        ));
        let capture = Capture::start(file.wire, pcap);
        let lab = Lab::start(dir, file, RunOptions::default()).expect("lab");
        lab.power_on_appliance()
            .expect("powering the seed machine on");
        let file = lab.file().clone();
        let mut specs = file.nodes.clone();
        specs.extend(file.appliance.as_ref().map(|a| a.node_spec()));
        let local_bmc_ports = specs.iter().map(|s| s.bmc.port).collect();
        let consoles = specs
            .iter()
            .map(|s| dir.join(&s.name).join("console.log"))
            .collect();
        for s in &mut specs {
            s.bmc.address = MGMT_IP.parse().unwrap();
            // The provisioning NIC: what the undercloud boots and matches.
            s.macs.truncate(1);
        }
        HandoffLab {
            lab,
            consoles,
            specs,
            local_bmc_ports,
            seed_api,
            float_api,
            capture: Some(capture),
        }
    }

    /// The nodes' and the seed machine's entries of an instackenv `nodes.yaml` (BMCs at the
    /// management address), `nodes` of them from the first.
    pub fn nodes_yaml(&self, nodes: std::ops::Range<usize>) -> String {
        seed::cli::lab_seed::instackenv(&self.specs[nodes], &[], "")
    }

    /// Machine `i`'s console so far (0-based; the seed machine's is the last).
    pub fn console(&self, i: usize) -> String {
        std::fs::read_to_string(&self.consoles[i]).unwrap_or_default()
    }

    /// `ipmitool chassis power off` to machine `i`'s BMC: the machine dies as a power cut
    /// would kill it.
    pub fn power_off(&self, i: usize) {
        self.ipmitool(i, &["chassis", "power", "off"]);
    }

    /// Whether machine `i` is powered, as `ipmitool chassis power status` to its BMC says.
    pub fn powered(&self, i: usize) -> bool {
        let out = self.ipmitool(i, &["chassis", "power", "status"]);
        assert!(out.contains("Chassis Power is"), "{out}");
        out.contains("Chassis Power is on")
    }

    /// `ipmitool ARGS` to machine `i`'s BMC on the host's 127.0.0.1; its output (panics if it
    /// fails).
    fn ipmitool(&self, i: usize, args: &[&str]) -> String {
        let s = &self.specs[i];
        let out = std::process::Command::new(tests::require("ipmitool"))
            .args(["-I", "lanplus", "-H", "127.0.0.1"])
            .args(["-p", &self.local_bmc_ports[i].to_string()])
            .args(["-U", &s.bmc.username, "-P", &s.bmc.password])
            .args(args)
            .output()
            .unwrap();
        let text = tests::printed(&out);
        assert!(out.status.success(), "ipmitool {args:?}: {text}");
        text
    }

    /// Stop the DHCP capture (its file is complete afterwards).
    pub fn stop_capture(&mut self) {
        drop(self.capture.take());
    }
}

/// Every DHCP datagram on a lab's wire, written to a pcap file by a thread that listens to the
/// wire as one more host would (QEMU's frames are multicast on loopback).
struct Capture {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Capture {
    fn start(wire: qemu::wire::WireAddr, path: &Path) -> Capture {
        let sniffer = qemu::wire::Wire::join(wire).expect("joining the lab's wire");
        let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
        // pcap: magic, version 2.4, UTC, snaplen, Ethernet.
        let mut header = Vec::new();
        for (v, len) in [
            (0xa1b2_c3d4u32, 4),
            (2, 2),
            (4, 2),
            (0, 4),
            (0, 4),
            (65535, 4),
            (1, 4),
        ] {
            header.extend_from_slice(&v.to_le_bytes()[..len]);
        }
        out.write_all(&header).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let halt = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !halt.load(Ordering::Relaxed) {
                let Ok(Some(n)) = sniffer.recv_frame(&mut buf, Duration::from_millis(200)) else {
                    continue;
                };
                let frame = &buf[..n];
                if !is_dhcp(frame) {
                    continue;
                }
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap();
                for v in [t.as_secs() as u32, t.subsec_micros(), n as u32, n as u32] {
                    out.write_all(&v.to_le_bytes()).unwrap();
                }
                out.write_all(frame).unwrap();
                out.flush().unwrap();
            }
        });
        Capture {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An IPv4 UDP datagram from or to port 67 or 68.
fn is_dhcp(frame: &[u8]) -> bool {
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] || frame[23] != 17 {
        return false;
    }
    let udp = 14 + usize::from(frame[14] & 0x0f) * 4;
    let Some(ports) = frame.get(udp..udp + 4) else {
        return false;
    };
    let (src, dst) = (
        u16::from_be_bytes([ports[0], ports[1]]),
        u16::from_be_bytes([ports[2], ports[3]]),
    );
    [src, dst].iter().any(|p| *p == 67 || *p == 68)
}
