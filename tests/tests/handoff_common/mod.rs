//! The test switch of the hand-off tests (`qemu_handoff_*`): the lab's machines with their NICs
//! on a bridge in a namespace, their BMCs relayed to the management address, the seed's config
//! on the bridge, and the DHCP answers a capture of the switch saw.

#![allow(dead_code)]

use qemu::node::RunOptions;
use qemu::Lab;
use std::path::Path;
use tests::netns::Switch;

/// The seed's address on the switch (and the management address the BMCs are relayed to).
pub const SEED_IP: &str = "10.80.0.2";

/// The lab's seed config, on the bridge's kernel stack instead of the lab's wire, its API on
/// every address of the namespace.
pub fn bridge_config(wire_config: &str) -> String {
    let mut out = String::new();
    let mut skip = false;
    for line in wire_config.lines() {
        if line.starts_with('[') {
            skip = line.trim() == "[netboot.wire]";
        }
        if skip {
            continue;
        }
        if line.starts_with("listen = ") {
            out += "listen = \"0.0.0.0:6385\"\n";
            continue;
        }
        out += line;
        out += "\n";
        if line.starts_with("server_ip = ") {
            out += "interface = \"br0\"\n";
        }
    }
    out
}

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

/// `n` machines on the switch (`node1`… on `tap0`…): a lab created from a thread living in the
/// switch's namespace (its BMCs answer on that namespace's loopback, and the QEMU they start
/// opens the taps there), and the BMCs on the management network — reached at the seed host's
/// address, relayed to the lab's, by the seed and by the undercloud machine alike. Dropping it
/// stops the relays and the lab.
pub struct SwitchLab {
    pub file: qemu::spec::LabFile,
    pub consoles: Vec<std::path::PathBuf>,
    /// The nodes as enrolled: BMCs at their relayed address.
    pub specs: Vec<qemu::spec::NodeSpec>,
    stop_lab: Option<std::sync::mpsc::Sender<()>>,
    lab_thread: Option<std::thread::JoinHandle<()>>,
    stop_relays: std::sync::Arc<std::sync::atomic::AtomicBool>,
    relays: Vec<std::thread::JoinHandle<()>>,
}

impl SwitchLab {
    /// The lab, its taps created on the switch.
    pub fn start(sw: &Switch, dir: &Path, n: usize) -> SwitchLab {
        for i in 0..n {
            sw.tap(&format!("tap{i}"));
        }
        let (lab_tx, lab_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let (sw_name, lab_dir) = (sw.ns.name.clone(), dir.to_path_buf());
        let lab_thread = std::thread::spawn(move || {
            tests::netns::enter(&sw_name);
            let mut plan = tests::test_plan("ho", n, 768, &[3]);
            plan.bmc_network = false;
            let lab = Lab::create(&lab_dir, &plan, RunOptions::default()).expect("lab");
            let mut consoles = Vec::new();
            for i in 0..n {
                let node = lab.node(&format!("node{}", i + 1)).unwrap();
                node.lock().unwrap().set_taps(vec![format!("tap{i}")]);
                consoles.push(node.lock().unwrap().console_path());
            }
            lab_tx.send((lab.file().clone(), consoles)).unwrap();
            let _ = stop_rx.recv();
            drop(lab);
        });
        let (file, consoles) = lab_rx.recv().unwrap();
        let stop_relays = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut specs = file.nodes.clone();
        let mut relays = Vec::new();
        for s in &mut specs {
            let listen = std::net::SocketAddrV4::new(SEED_IP.parse().unwrap(), s.bmc.port);
            let target = std::net::SocketAddrV4::new(s.bmc.address, s.bmc.port);
            relays.push(tests::netns::udp_relay(
                &sw.ns.name,
                listen,
                target,
                stop_relays.clone(),
            ));
            s.bmc.address = *listen.ip();
        }
        SwitchLab {
            file,
            consoles,
            specs,
            stop_lab: Some(stop_tx),
            lab_thread: Some(lab_thread),
            stop_relays,
            relays,
        }
    }
}

impl Drop for SwitchLab {
    fn drop(&mut self) {
        self.stop_relays
            .store(true, std::sync::atomic::Ordering::Relaxed);
        for r in self.relays.drain(..) {
            let _ = r.join();
        }
        drop(self.stop_lab.take());
        if let Some(t) = self.lab_thread.take() {
            let _ = t.join();
        }
    }
}

impl SwitchLab {
    /// Node `i`'s console so far (0-based).
    pub fn console(&self, i: usize) -> String {
        std::fs::read_to_string(&self.consoles[i]).unwrap_or_default()
    }

    /// `ipmitool chassis power off` to node `i`'s BMC at its relayed address, from the
    /// switch's namespace: the machine dies as a power cut would kill it.
    pub fn power_off(&self, sw: &Switch, i: usize) {
        let s = &self.specs[i];
        let out = sw
            .ns
            .cmd(tests::require("ipmitool"))
            .args(["-I", "lanplus", "-H", &s.bmc.address.to_string()])
            .args(["-p", &s.bmc.port.to_string()])
            .args(["-U", &s.bmc.username, "-P", &s.bmc.password])
            .args(["chassis", "power", "off"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", tests::printed(&out));
    }
}
