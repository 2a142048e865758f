//! The test switch of the hand-off tests (`qemu_handoff_*`): the lab's machines (and the seed
//! machine, the appliance VM) with their NICs on a bridge in a namespace, their BMCs relayed to
//! the management address, and the DHCP answers a capture of the switch saw.

#![allow(dead_code)]

use qemu::node::RunOptions;
use qemu::Lab;
use std::path::Path;
use tests::netns::Switch;

/// The seed's (the appliance's) own address on the switch.
pub const SEED_IP: &str = "10.80.0.2";
/// The switch's own address: the management address the BMCs are relayed to, from which the
/// test (the operator's laptop) calls the APIs.
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

/// `n` machines on the switch (`node1`… on `tap0`…) and, given its medium, the seed machine
/// (the appliance VM, on `tap<n>`, powered on at once): a lab created from a thread living in
/// the switch's namespace (its BMCs answer on that namespace's loopback, and the QEMU they
/// start opens the taps there), and the BMCs on the management network — reached at
/// [`MGMT_IP`], relayed to the lab's, by the seed and by the undercloud machines alike.
/// Dropping it stops the relays and the lab.
pub struct SwitchLab {
    pub file: qemu::spec::LabFile,
    /// node1… then the seed machine's.
    pub consoles: Vec<std::path::PathBuf>,
    /// The nodes as enrolled (BMCs at their relayed address), then the seed machine's.
    pub specs: Vec<qemu::spec::NodeSpec>,
    stop_lab: Option<std::sync::mpsc::Sender<()>>,
    lab_thread: Option<std::thread::JoinHandle<()>>,
    stop_relays: std::sync::Arc<std::sync::atomic::AtomicBool>,
    relays: Vec<std::thread::JoinHandle<()>>,
}

impl SwitchLab {
    /// The lab, its taps created on the switch.
    pub fn start(sw: &Switch, dir: &Path, n: usize, seed: Option<Appliance>) -> SwitchLab {
        let machines = n + usize::from(seed.is_some());
        for i in 0..machines {
            sw.tap(&format!("tap{i}"));
        }
        let (lab_tx, lab_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let (sw_name, lab_dir) = (sw.ns.name.clone(), dir.to_path_buf());
        let lab_thread = std::thread::spawn(move || {
            tests::netns::enter(&sw_name);
            let mut plan = tests::test_plan("ho", n, 768, &[3]);
            plan.bmc_network = false;
            let mut file = plan.lab_file();
            if let Some(a) = seed {
                let mut spec = qemu::appliance::ApplianceSpec::new(&file, a.medium);
                spec.memory_mib = a.memory_mib;
                spec.disks_gib = vec![3];
                file.appliance = Some(spec);
            }
            let lab = Lab::start(&lab_dir, file, RunOptions::default()).expect("lab");
            let mut consoles = Vec::new();
            for i in 0..n {
                let node = lab.node(&format!("node{}", i + 1)).unwrap();
                node.lock().unwrap().set_taps(vec![format!("tap{i}")]);
                consoles.push(node.lock().unwrap().console_path());
            }
            if let Some(a) = lab.appliance() {
                a.lock().unwrap().set_taps(vec![format!("tap{n}")]);
                consoles.push(a.lock().unwrap().console_path());
                lab.power_on_appliance()
                    .expect("powering the seed machine on");
            }
            lab_tx.send((lab.file().clone(), consoles)).unwrap();
            let _ = stop_rx.recv();
            drop(lab);
        });
        let (file, consoles) = lab_rx.recv().unwrap();
        let stop_relays = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut specs = file.nodes.clone();
        specs.extend(file.appliance.as_ref().map(|a| a.node_spec()));
        let mut relays = Vec::new();
        for s in &mut specs {
            let listen = std::net::SocketAddrV4::new(MGMT_IP.parse().unwrap(), s.bmc.port);
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

/// The seed machine of a [`SwitchLab`].
pub struct Appliance {
    pub medium: qemu::appliance::Medium,
    pub memory_mib: u32,
}

impl SwitchLab {
    /// The nodes' and the seed machine's entries of an instackenv `nodes.yaml` (BMCs at their
    /// relayed address), `nodes` of them from the first.
    pub fn nodes_yaml(&self, nodes: std::ops::Range<usize>) -> String {
        let mut yaml = String::from("nodes:\n");
        for s in &self.specs[nodes] {
            yaml += &format!(
                "  - name: {}\n    mac: [\"{}\"]\n    pm_type: ipmi\n    pm_addr: {}\n    \
                 pm_port: {}\n    pm_user: {}\n    pm_password: {}\n",
                s.name, s.macs[0], s.bmc.address, s.bmc.port, s.bmc.username, s.bmc.password
            );
        }
        yaml
    }

    /// Machine `i`'s console so far (0-based; the seed machine's is the last).
    pub fn console(&self, i: usize) -> String {
        std::fs::read_to_string(&self.consoles[i]).unwrap_or_default()
    }

    /// `ipmitool chassis power off` to machine `i`'s BMC at its relayed address, from the
    /// switch's namespace: the machine dies as a power cut would kill it.
    pub fn power_off(&self, sw: &Switch, i: usize) {
        self.ipmitool(sw, i, &["chassis", "power", "off"]);
    }

    /// Whether machine `i` is powered, as `ipmitool chassis power status` to its BMC says.
    pub fn powered(&self, sw: &Switch, i: usize) -> bool {
        let out = self.ipmitool(sw, i, &["chassis", "power", "status"]);
        assert!(out.contains("Chassis Power is"), "{out}");
        out.contains("Chassis Power is on")
    }

    /// `ipmitool ARGS` to machine `i`'s BMC; its output (panics if it fails).
    fn ipmitool(&self, sw: &Switch, i: usize, args: &[&str]) -> String {
        let s = &self.specs[i];
        let out = sw
            .ns
            .cmd(tests::require("ipmitool"))
            .args(["-I", "lanplus", "-H", &s.bmc.address.to_string()])
            .args(["-p", &s.bmc.port.to_string()])
            .args(["-U", &s.bmc.username, "-P", &s.bmc.password])
            .args(args)
            .output()
            .unwrap();
        let text = tests::printed(&out);
        assert!(out.status.success(), "ipmitool {args:?}: {text}");
        text
    }
}
