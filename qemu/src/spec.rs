//! `lab.json`: what a lab is made of (the contract shared with the power work), where labs
//! live on disk, and how a new lab's nodes, MACs, wire and BMC ports are chosen.

use crate::wire::{fnv1a, WireAddr};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// File name of the lab description inside the lab directory.
pub const LAB_FILE: &str = "lab.json";
/// Default virtual BMC user name (an operators' lab, not production).
pub const DEFAULT_USER: &str = "admin";
/// Default virtual BMC password.
pub const DEFAULT_PASSWORD: &str = "password";
/// First BMC port of the default lab (ipmitool's examples use 623; that needs root).
pub const DEFAULT_BMC_PORT: u16 = 6231;

/// A lab: its name, its wires, its nodes and (optionally) the seed machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabFile {
    /// Lab name.
    pub name: String,
    /// The provisioning wire every node NIC attaches to.
    pub wire: WireAddr,
    /// The nodes.
    pub nodes: Vec<NodeSpec>,
    /// The BMC network: a second wire on which every virtual BMC also answers IPMI at its own
    /// address (`nodes[].bmc.lan`). Absent in labs created before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bmc_network: Option<BmcNetwork>,
    /// The seed machine (appliance VM), when the lab has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appliance: Option<crate::appliance::ApplianceSpec>,
    /// The lab's management host on the provisioning wire, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub management: Option<Management>,
}

/// The lab's management host (`seed lab up --management`): one more host on the provisioning
/// wire, standing for what a datacenter routes onto that network. Every BMC answers IPMI at its
/// address, on the BMC's own port (the BMC network routed to the provisioning network, so the
/// undercloud reaches the BMCs after the seed machine is gone), and each [`TcpForward`] carries
/// a TCP port of the host's 127.0.0.1 to an address on the wire (the operator's laptop on the
/// provisioning network: the floating API address, whoever holds it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Management {
    /// Its address on the provisioning network.
    pub address: Ipv4Addr,
    /// The provisioning network's prefix length.
    pub prefix_len: u8,
    /// Its Ethernet address.
    pub mac: String,
    /// The host's ports carried onto the wire.
    #[serde(default)]
    pub forwards: Vec<TcpForward>,
}

impl Management {
    /// The management host of lab `lab` at `address`/`prefix_len` (a locally administered MAC
    /// derived from the lab's name).
    pub fn new(lab: &str, address: Ipv4Addr, prefix_len: u8, forwards: Vec<TcpForward>) -> Self {
        let h = fnv1a(format!("{lab}/management").as_bytes());
        Self {
            address,
            prefix_len,
            mac: format!(
                "02:3e:{:02x}:{:02x}:{:02x}:{:02x}",
                (h >> 24) as u8,
                (h >> 16) as u8,
                (h >> 8) as u8,
                h as u8
            ),
            forwards,
        }
    }
}

/// 127.0.0.1:`host_port` on the host, carried to `to` on the provisioning wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpForward {
    /// The port on the host's 127.0.0.1.
    pub host_port: u16,
    /// Where on the wire.
    pub to: std::net::SocketAddrV4,
}

impl std::str::FromStr for TcpForward {
    type Err = String;

    /// `HOSTPORT=ADDRESS:PORT`, e.g. `16386=10.80.0.1:6385`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (port, to) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected HOSTPORT=ADDRESS:PORT"))?;
        Ok(Self {
            host_port: port
                .parse()
                .map_err(|_| format!("{s:?}: {port:?} is not a port"))?,
            to: to
                .parse()
                .map_err(|_| format!("{s:?}: {to:?} is not ADDRESS:PORT"))?,
        })
    }
}

/// The lab's BMC network, as a datacenter's out-of-band management LAN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BmcNetwork {
    /// The QEMU multicast wire (BMC LAN ports, the appliance VM's NIC 2).
    pub wire: WireAddr,
    /// Network address (10.81.0.0).
    pub network: Ipv4Addr,
    /// Prefix length (24).
    pub prefix_len: u8,
    /// The address kept for the seed's own NIC on this network (10.81.0.1); nothing in the lab
    /// uses it.
    pub seed_address: Ipv4Addr,
}

impl BmcNetwork {
    /// The BMC network of lab `name`: 10.81.0.0/24 on a wire of its own.
    pub fn for_lab(name: &str) -> Self {
        let prov = WireAddr::for_lab(name);
        let mut wire = WireAddr::for_lab(&format!("{name}/bmc"));
        if wire == prov {
            wire.port = wire.port.wrapping_add(1).max(30000);
        }
        Self {
            wire,
            network: BMC_NETWORK,
            prefix_len: 24,
            seed_address: host(BMC_NETWORK, 1),
        }
    }

    /// The address of the BMC of machine `index` (0: the seed machine, 1: node1, …):
    /// `.10 + index`; `None` past the /24.
    pub fn bmc_address(&self, index: usize) -> Option<Ipv4Addr> {
        let host_part = 10 + index;
        (host_part < 255).then(|| host(self.network, host_part as u8))
    }
}

/// The BMC network's prefix (a /24).
pub const BMC_NETWORK: Ipv4Addr = Ipv4Addr::new(10, 81, 0, 0);
/// The UDP port every BMC answers IPMI on, on the BMC network (RMCP's 623).
pub const BMC_LAN_PORT: u16 = 623;

fn host(net: Ipv4Addr, h: u8) -> Ipv4Addr {
    let o = net.octets();
    Ipv4Addr::new(o[0], o[1], o[2], h)
}

/// One node: a QEMU machine and its BMC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// Node name (`node1` …).
    pub name: String,
    /// MAC of each NIC, `52:54:00:…`.
    pub macs: Vec<String>,
    /// Its virtual BMC.
    pub bmc: BmcSpec,
    /// Firmware.
    pub firmware: Firmware,
    /// RAM.
    pub memory_mib: u32,
    /// vCPUs.
    pub cpus: u32,
    /// Size of each qcow2 disk.
    pub disks_gib: Vec<u32>,
}

/// Where and how to reach a node's BMC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BmcSpec {
    /// Always 127.0.0.1.
    pub address: Ipv4Addr,
    /// UDP port (0 in a plan: any free port, fixed when the lab starts).
    pub port: u16,
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
    /// Its LAN port on the lab's BMC network, when the lab has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lan: Option<BmcLan>,
}

/// A virtual BMC's LAN port on the BMC network ([`BmcNetwork`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BmcLan {
    /// Its address (10.81.0.11 for node1).
    pub address: Ipv4Addr,
    /// Always [`BMC_LAN_PORT`].
    pub port: u16,
    /// Its Ethernet address.
    pub mac: String,
}

impl BmcLan {
    /// The LAN port of machine `index` of lab `lab` on `net` (`None` past the /24).
    pub fn new(lab: &str, net: &BmcNetwork, index: usize) -> Option<Self> {
        let address = net.bmc_address(index)?;
        let h = fnv1a(lab.as_bytes());
        Some(Self {
            address,
            port: BMC_LAN_PORT,
            // Locally administered, unique per lab and address.
            mac: format!(
                "02:bc:{:02x}:{:02x}:00:{:02x}",
                (h >> 8) as u8,
                h as u8,
                address.octets()[3]
            ),
        })
    }
}

/// Firmware of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// SeaBIOS.
    Bios,
    /// OVMF (UEFI).
    Uefi,
}

/// What to build a new lab from.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Lab name.
    pub name: String,
    /// How many nodes.
    pub nodes: usize,
    /// NICs per node.
    pub nics: usize,
    /// RAM per node.
    pub memory_mib: u32,
    /// vCPUs per node.
    pub cpus: u32,
    /// Disks per node.
    pub disks_gib: Vec<u32>,
    /// Firmware.
    pub firmware: Firmware,
    /// First BMC port (node N gets base + N − 1); 0 = any free ports.
    pub bmc_base_port: u16,
    /// Give the lab a BMC network ([`BmcNetwork`]).
    pub bmc_network: bool,
}

impl Plan {
    /// A plan with the defaults: 512 MiB, 1 CPU, one NIC, one 4 GiB disk, SeaBIOS, ports from
    /// 6231.
    pub fn new(name: &str, nodes: usize) -> Self {
        Self {
            name: name.into(),
            nodes,
            nics: 1,
            memory_mib: 512,
            cpus: 1,
            disks_gib: vec![4],
            firmware: Firmware::Bios,
            bmc_base_port: DEFAULT_BMC_PORT,
            bmc_network: true,
        }
    }

    /// The BMC port of node `index` (1: node1 …), 0 when ports are chosen at start.
    pub fn bmc_port(&self, index: usize) -> u16 {
        if self.bmc_base_port == 0 {
            0
        } else {
            self.bmc_base_port
                .saturating_add(index.saturating_sub(1) as u16)
        }
    }

    /// The lab this plan describes.
    pub fn lab_file(&self) -> LabFile {
        let net = self.bmc_network.then(|| BmcNetwork::for_lab(&self.name));
        LabFile {
            name: self.name.clone(),
            wire: WireAddr::for_lab(&self.name),
            nodes: (0..self.nodes)
                .map(|i| NodeSpec {
                    name: format!("node{}", i + 1),
                    macs: (0..self.nics).map(|n| mac(&self.name, i, n)).collect(),
                    bmc: self.bmc_spec(net.as_ref(), i + 1),
                    firmware: self.firmware,
                    memory_mib: self.memory_mib,
                    cpus: self.cpus,
                    disks_gib: self.disks_gib.clone(),
                })
                .collect(),
            bmc_network: net,
            appliance: None,
            management: None,
        }
    }

    /// The BMC of node `index` (1: node1, …) on `net`, if any.
    fn bmc_spec(&self, net: Option<&BmcNetwork>, index: usize) -> BmcSpec {
        BmcSpec {
            address: Ipv4Addr::LOCALHOST,
            port: self.bmc_port(index),
            username: DEFAULT_USER.into(),
            password: DEFAULT_PASSWORD.into(),
            lan: net.and_then(|n| BmcLan::new(&self.name, n, index)),
        }
    }
}

/// The stable MAC of NIC `nic` of node index `node` in lab `lab`: QEMU's OUI 52:54:00, a byte
/// from the lab name, then node number and NIC index.
pub fn mac(lab: &str, node: usize, nic: usize) -> String {
    let h = fnv1a(lab.as_bytes());
    format!(
        "52:54:00:{:02x}:{:02x}:{:02x}",
        h as u8,
        (node + 1) as u8,
        nic as u8
    )
}

/// Parse `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Where lab `name` lives: `$SEED_LAB_DIR/<name>`, else
/// `${XDG_STATE_HOME:-$HOME/.local/state}/seed/labs/<name>`.
pub fn default_dir(name: &str) -> PathBuf {
    if let Some(d) = std::env::var_os("SEED_LAB_DIR") {
        return PathBuf::from(d).join(name);
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".local/state")
        });
    state.join("seed/labs").join(name)
}

/// Read `dir/lab.json`.
pub fn load(dir: &Path) -> Result<LabFile, crate::LabError> {
    let p = dir.join(LAB_FILE);
    let text = std::fs::read_to_string(&p).map_err(|source| crate::LabError::Io {
        what: "reading",
        path: p.clone(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| crate::LabError::LabFile { path: p, source })
}

/// Write `dir/lab.json` durably ([`fsutil::write`]).
pub fn save(dir: &Path, lab: &LabFile) -> Result<(), crate::LabError> {
    let p = dir.join(LAB_FILE);
    let text = serde_json::to_string_pretty(lab).expect("serializable");
    fsutil::write(&p, (text + "\n").as_bytes()).map_err(|source| crate::LabError::Io {
        what: "writing",
        path: p,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_example_parses() {
        let j = r#"{"name":"default","wire":{"group":"230.0.71.5","port":47123},"nodes":[{"name":"node1",
          "macs":["52:54:00:5e:00:01"],"bmc":{"address":"127.0.0.1","port":6231,"username":"admin",
          "password":"password"},"firmware":"bios","memory_mib":512,"cpus":1,"disks_gib":[4]}]}"#;
        let lab: LabFile = serde_json::from_str(j).unwrap();
        assert_eq!(lab.nodes[0].bmc.port, 6231);
        assert_eq!(lab.nodes[0].firmware, Firmware::Bios);
        let back: LabFile = serde_json::from_str(&serde_json::to_string(&lab).unwrap()).unwrap();
        assert_eq!(back, lab);
    }

    #[test]
    fn plan_gives_stable_distinct_macs_and_ports() {
        let a = Plan::new("a", 3).lab_file();
        assert_eq!(a, Plan::new("a", 3).lab_file());
        let macs: std::collections::HashSet<_> =
            a.nodes.iter().flat_map(|n| n.macs.clone()).collect();
        assert_eq!(macs.len(), 3);
        assert!(a.nodes.iter().all(|n| parse_mac(&n.macs[0]).is_some()));
        assert_eq!(
            a.nodes.iter().map(|n| n.bmc.port).collect::<Vec<_>>(),
            [6231, 6232, 6233]
        );
        assert_eq!(
            parse_mac("52:54:00:01:02:0a"),
            Some([0x52, 0x54, 0, 1, 2, 10])
        );
        assert_eq!(parse_mac("52:54:00:01:02"), None);
    }

    #[test]
    fn plans_give_each_bmc_an_address_on_the_bmc_network() {
        let lab = Plan::new("n", 3).lab_file();
        let net = lab.bmc_network.clone().expect("a BMC network by default");
        assert_eq!(net.network, Ipv4Addr::new(10, 81, 0, 0));
        assert_eq!(net.seed_address, Ipv4Addr::new(10, 81, 0, 1));
        assert_ne!(net.wire, lab.wire, "a wire of its own");
        let lans: Vec<_> = lab
            .nodes
            .iter()
            .map(|n| n.bmc.lan.clone().unwrap())
            .collect();
        assert_eq!(
            lans.iter()
                .map(|l| l.address.to_string())
                .collect::<Vec<_>>(),
            ["10.81.0.11", "10.81.0.12", "10.81.0.13"]
        );
        assert!(lans
            .iter()
            .all(|l| l.port == 623 && parse_mac(&l.mac).is_some()));
        assert_ne!(lans[0].mac, lans[1].mac);
        assert_eq!(net.bmc_address(244), Some(Ipv4Addr::new(10, 81, 0, 254)));
        assert_eq!(net.bmc_address(245), None);
        // Without one, nothing about it is written.
        let mut plan = Plan::new("n", 1);
        plan.bmc_network = false;
        let text = serde_json::to_string(&plan.lab_file()).unwrap();
        assert!(
            !text.contains("bmc_network") && !text.contains("lan"),
            "{text}"
        );
        let back: LabFile =
            serde_json::from_str(&serde_json::to_string(&Plan::new("n", 2).lab_file()).unwrap())
                .unwrap();
        assert_eq!(back, Plan::new("n", 2).lab_file());
    }

    #[test]
    fn lab_dir_follows_env() {
        // Only reads env; the variables are whatever the test process has.
        let d = default_dir("x");
        assert!(d.ends_with("x"));
    }
}
