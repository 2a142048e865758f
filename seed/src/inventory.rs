//! The inventory: nodes, their MACs, BMCs, properties and capabilities; instackenv import.
//!
//! A [`Node`] is the record the store keeps and the lifecycle ([`crate::lifecycle`]) moves
//! between states. Enrollment reads the TripleO `instackenv` list (YAML or JSON) with
//! [`parse_instackenv`]: every entry is checked, and refused with an error naming the entry and
//! the field, before anything is written. Credentials live in [`Secret`], which never prints.

pub use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

mod state;
pub use state::{DeployTarget, Lifecycle, State};

pub use api::node::{
    BadBootMode, BadCapabilities, BootMode, Capabilities, Disk, Partition, Properties,
};
/// An Ethernet address, printed `52:54:00:12:34:56` (the workspace's one MAC type).
pub use api::{BadMac, Mac};

/// How the seed talks to a node's BMC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerDriver {
    /// IPMI over LAN (RMCP+).
    Ipmi,
    /// An in-process fake BMC (`seed daemon` tests and demos): power and boot device are
    /// remembered, no machine is touched.
    Fake,
}

impl fmt::Display for PowerDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PowerDriver::Ipmi => f.write_str("ipmi"),
            PowerDriver::Fake => f.write_str("fake"),
        }
    }
}

/// A node's baseboard management controller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bmc {
    pub driver: PowerDriver,
    pub address: String,
    pub port: u16,
    pub username: String,
    pub password: Secret,
    /// Let the IPMI driver fall back to an IPMI 1.5 session (the password in clear or MD5,
    /// no encryption) when the BMC offers no IPMI 2.0 / RMCP+: refused unless set (instackenv
    /// `allow_ipmi15: true`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_ipmi15: bool,
}

/// How a node network-boots, beyond what its state decides.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeBoot {
    /// `tftp`: the first DHCP answer hands out the iPXE boot file by TFTP, even to an iPXE ROM
    /// (see [`netboot::boot::Chain`]); `direct` (default): an iPXE ROM gets its script at once.
    #[serde(default)]
    pub chain: netboot::boot::Chain,
}

impl NodeBoot {
    fn is_default(&self) -> bool {
        *self == NodeBoot::default()
    }
}

/// One machine the seed manages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Unique; the store key.
    pub name: String,
    /// Unique across all nodes; how netboot recognises the machine.
    pub macs: Vec<Mac>,
    pub bmc: Bmc,
    #[serde(default)]
    pub properties: Properties,
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Network boot settings (instackenv `boot_chain`).
    #[serde(default, skip_serializing_if = "NodeBoot::is_default")]
    pub boot: NodeBoot,
    /// State, maintenance, last error: what [`crate::lifecycle`] moves.
    pub lifecycle: Lifecycle,
    /// Milliseconds since the Unix epoch (virtual in the simulator).
    pub created_ms: u64,
    pub updated_ms: u64,
    /// The stack member this node is given to (owned by the stack engine, written with
    /// compare-and-swap in the same commit as the stack record, before any deploy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation: Option<Allocation>,
}

/// Which stack member a node belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub stack: String,
    pub member: String,
}

impl Node {
    /// A node freshly enrolled at `now_ms`, in state `enroll`.
    pub fn new(name: impl Into<String>, macs: Vec<Mac>, bmc: Bmc, now_ms: u64) -> Node {
        Node {
            name: name.into(),
            macs,
            bmc,
            properties: Properties::default(),
            capabilities: Capabilities::default(),
            boot: NodeBoot::default(),
            lifecycle: Lifecycle::default(),
            created_ms: now_ms,
            updated_ms: now_ms,
            allocation: None,
        }
    }
}

/// Why an instackenv file was refused. Nothing is enrolled when any entry is bad.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("not valid JSON")]
    Json(#[source] serde_json::Error),
    #[error("not valid YAML at line {}, column {}: {}", .0.at.line, .0.at.col, .0.message)]
    Yaml(yaml11::Error),
    #[error("the file has no top-level `nodes:` list")]
    NoNodes,
    #[error("{entry}: {message}")]
    Entry { entry: String, message: String },
    #[error("{entry}, field `{field}`: {message}")]
    Field {
        entry: String,
        field: &'static str,
        message: String,
    },
    #[error("{entry}: name {name:?} is already used by {other}")]
    DuplicateName {
        entry: String,
        name: String,
        other: String,
    },
    #[error("{entry}: MAC {mac} is already used by {other}")]
    DuplicateMac {
        entry: String,
        mac: Mac,
        other: String,
    },
}

/// The file format of an instackenv list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

impl Format {
    /// `.json` files are JSON; anything else is read as YAML.
    pub fn from_path(p: &std::path::Path) -> Format {
        match p.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("json") => Format::Json,
            _ => Format::Yaml,
        }
    }
}

/// One raw instackenv entry, as written by people. Numbers may be given as strings
/// (`memory: "8192"`), as TripleO's own examples do.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: Option<String>,
    #[serde(default)]
    mac: Vec<String>,
    pm_type: Option<String>,
    pm_addr: Option<String>,
    pm_port: Option<NumOrString>,
    pm_user: Option<String>,
    /// `***` in `Debug`.
    pm_password: Option<Secret>,
    capabilities: Option<String>,
    cpu: Option<NumOrString>,
    /// MiB.
    memory: Option<NumOrString>,
    /// GiB.
    disk: Option<NumOrString>,
    arch: Option<String>,
    /// `tftp` or `direct` (see [`NodeBoot::chain`]).
    boot_chain: Option<String>,
    /// See [`Bmc::allow_ipmi15`].
    #[serde(default)]
    allow_ipmi15: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum NumOrString {
    Num(u64),
    Str(String),
}

/// A number field holding text that is not a whole number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a whole number")]
struct NotANumber(String);

impl NumOrString {
    fn get(&self) -> Result<u64, NotANumber> {
        match self {
            NumOrString::Num(n) => Ok(*n),
            NumOrString::Str(s) => s.trim().parse().map_err(|_| NotANumber(s.clone())),
        }
    }
}

/// Parse an instackenv list (YAML or JSON) into nodes in state `enroll`, checking every entry:
/// required fields, MACs, numbers, capabilities, and that no two entries share a name or a MAC.
/// `taken` lists the names and MACs already enrolled (they are refused too). Entries without a
/// name are called `node-<first MAC without colons>`.
pub fn parse_instackenv(
    text: &str,
    format: Format,
    taken: &[(String, Vec<Mac>)],
    now_ms: u64,
) -> Result<Vec<Node>, ImportError> {
    // Read into a generic tree first so each entry is decoded on its own: errors then name the
    // entry (index and name) instead of a byte offset somewhere in the file.
    let doc: serde_json::Value = match format {
        Format::Json => serde_json::from_str(text).map_err(ImportError::Json)?,
        // Plain scalars as text: each field's type is decided below, so an unquoted MAC or a
        // password of digits stays as written (YAML 1.1 makes 52:54:00:12:34:56 a number).
        Format::Yaml => yaml11::parse_with("instackenv", text, yaml11::Schema::Text)
            .map_err(ImportError::Yaml)?
            .map_or(serde_json::Value::Null, |n| n.to_json()),
    };
    let entries = doc
        .get("nodes")
        .and_then(|n| n.as_array())
        .ok_or(ImportError::NoNodes)?;

    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut macs: BTreeMap<Mac, String> = BTreeMap::new();
    for (name, ms) in taken {
        names.insert(name.clone(), format!("enrolled node {name:?}"));
        for m in ms {
            macs.insert(*m, format!("enrolled node {name:?}"));
        }
    }

    let mut out = Vec::with_capacity(entries.len());
    for (i, value) in entries.iter().enumerate() {
        let label = match value.get("name").and_then(|n| n.as_str()) {
            Some(n) => format!("nodes[{i}] ({n})"),
            None => format!("nodes[{i}]"),
        };
        let raw: RawNode =
            serde_json::from_value(value.clone()).map_err(|e| ImportError::Entry {
                entry: label.clone(),
                message: e.to_string(),
            })?;
        let node = entry_to_node(&label, raw, now_ms)?;

        if let Some(other) = names.get(&node.name) {
            return Err(ImportError::DuplicateName {
                entry: label,
                name: node.name,
                other: other.clone(),
            });
        }
        let mut own = BTreeSet::new();
        for m in &node.macs {
            if let Some(other) = macs.get(m) {
                return Err(ImportError::DuplicateMac {
                    entry: label,
                    mac: *m,
                    other: other.clone(),
                });
            }
            if !own.insert(*m) {
                return Err(ImportError::Field {
                    entry: label,
                    field: "mac",
                    message: format!("{m} is listed twice"),
                });
            }
        }
        names.insert(node.name.clone(), label.clone());
        for m in &node.macs {
            macs.insert(*m, label.clone());
        }
        out.push(node);
    }
    Ok(out)
}

fn entry_to_node(label: &str, raw: RawNode, now_ms: u64) -> Result<Node, ImportError> {
    let field = |field: &'static str, message: String| ImportError::Field {
        entry: label.to_string(),
        field,
        message,
    };
    let missing = |f: &'static str| field(f, "is required".into());

    if raw.mac.is_empty() {
        return Err(field("mac", "needs at least one MAC address".into()));
    }
    let macs = raw
        .mac
        .iter()
        .map(|m| m.parse::<Mac>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| field("mac", e.to_string()))?;

    let driver = match raw.pm_type.as_deref().map(str::trim) {
        None => return Err(missing("pm_type")),
        // TripleO spells it `ipmi` (older files: `pxe_ipmitool`).
        Some("ipmi") | Some("pxe_ipmitool") | Some("ipmitool") => PowerDriver::Ipmi,
        Some("fake") => PowerDriver::Fake,
        Some(other) => {
            return Err(field(
                "pm_type",
                format!("{other:?} is not supported (only ipmi, or fake for tests)"),
            ))
        }
    };
    let address = raw
        .pm_addr
        .filter(|a| !a.trim().is_empty())
        .ok_or_else(|| missing("pm_addr"))?
        .trim()
        .to_string();
    let port = match raw.pm_port {
        None => 623,
        Some(p) => {
            let p = p.get().map_err(|e| field("pm_port", e.to_string()))?;
            u16::try_from(p)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| field("pm_port", format!("{p} is not a port number")))?
        }
    };
    let username = raw.pm_user.ok_or_else(|| missing("pm_user"))?;
    let password = raw.pm_password.ok_or_else(|| missing("pm_password"))?;

    let capabilities: Capabilities = match raw.capabilities {
        None => Capabilities::default(),
        Some(c) => c
            .parse::<Capabilities>()
            .map_err(|e| field("capabilities", e.to_string()))?,
    };
    let mut properties = Properties::default();
    if let Some(c) = raw.cpu {
        let c = c.get().map_err(|e| field("cpu", e.to_string()))?;
        properties.cpus =
            Some(u32::try_from(c).map_err(|_| field("cpu", format!("{c} is too many")))?);
    }
    if let Some(m) = raw.memory {
        properties.memory_mib = Some(m.get().map_err(|e| field("memory", e.to_string()))?);
    }
    if let Some(d) = raw.disk {
        let gib = d.get().map_err(|e| field("disk", e.to_string()))?;
        let size_bytes = gib
            .checked_mul(1 << 30)
            .ok_or_else(|| field("disk", format!("{gib} GiB is too large")))?;
        properties.disks.push(Disk {
            size_bytes,
            ..Disk::default()
        });
    }
    properties.arch = raw.arch;
    if let Some(mode) = capabilities.0.get("boot_mode") {
        properties.boot_mode = Some(
            mode.parse::<BootMode>()
                .map_err(|e| field("capabilities", e.to_string()))?,
        );
    }

    let name = match raw.name {
        Some(n) => {
            let n = n.trim().to_string();
            if !valid_name(&n) {
                return Err(field(
                    "name",
                    format!("{n:?} is not a node name (letters, digits, '-', '_', '.'; 1-63)"),
                ));
            }
            n
        }
        None => format!("node-{}", macs[0].to_string().replace(':', "")),
    };
    let mut node = Node::new(
        name,
        macs,
        Bmc {
            driver,
            address,
            port,
            username,
            password,
            allow_ipmi15: raw.allow_ipmi15,
        },
        now_ms,
    );
    node.properties = properties;
    node.capabilities = capabilities;
    node.boot.chain = match raw.boot_chain.as_deref().map(str::trim) {
        None | Some("direct") => netboot::boot::Chain::Direct,
        Some("tftp") => netboot::boot::Chain::Tftp,
        Some(other) => {
            return Err(field(
                "boot_chain",
                format!("{other:?} is not a chain (tftp or direct)"),
            ))
        }
    };
    Ok(node)
}

/// Node names are also store keys, host names and path components: keep them plain.
pub fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !n.starts_with('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
nodes:
  - name: ctrl-0
    mac: ["52:54:00:00:00:01"]
    pm_type: ipmi
    pm_addr: 127.0.0.1
    pm_port: "6230"
    pm_user: admin
    pm_password: s3cret
    capabilities: "profile:control,boot_mode:uefi"
    cpu: 4
    memory: "8192"
    disk: 40
    arch: x86_64
  - mac: ["00:11:22:33:44:55", "00-11-22-33-44-56"]
    pm_type: ipmi
    pm_addr: 10.0.0.5
    pm_user: root
    pm_password: calvin
"#;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "***");
        let node = &parse_instackenv(YAML, Format::Yaml, &[], 0).unwrap()[0];
        assert!(!format!("{node:?}").contains("s3cret"));
        // The store does see it.
        assert!(serde_json::to_string(node).unwrap().contains("s3cret"));
    }

    #[test]
    fn mac_parse_and_print() {
        let m: Mac = "52-54-00-AB-cd-0f".parse().unwrap();
        assert_eq!(m.to_string(), "52:54:00:ab:cd:0f");
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0f:11",
            "zz:54:00:ab:cd:0f",
            "525:4:00:ab:cd:0f",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
    }

    #[test]
    fn capabilities_parse() {
        let c: Capabilities = "profile:control, boot_mode:uefi".parse().unwrap();
        assert_eq!(c.profile(), Some("control"));
        assert_eq!(c.to_string(), "boot_mode:uefi,profile:control");
        assert!("profile".parse::<Capabilities>().is_err());
        assert!("a:1,a:2".parse::<Capabilities>().is_err());
    }

    #[test]
    fn imports_yaml() {
        let nodes = parse_instackenv(YAML, Format::Yaml, &[], 7).unwrap();
        assert_eq!(nodes.len(), 2);
        let a = &nodes[0];
        assert_eq!(a.name, "ctrl-0");
        assert_eq!(a.bmc.port, 6230);
        assert_eq!(a.bmc.password.expose(), "s3cret");
        assert_eq!(a.properties.cpus, Some(4));
        assert_eq!(a.properties.memory_mib, Some(8192));
        assert_eq!(a.properties.disks[0].size_bytes, 40 << 30);
        assert_eq!(a.properties.boot_mode, Some(BootMode::Uefi));
        assert_eq!(a.capabilities.profile(), Some("control"));
        assert_eq!(a.created_ms, 7);
        let b = &nodes[1];
        assert_eq!(b.name, "node-001122334455");
        assert_eq!(b.bmc.port, 623);
        assert_eq!(b.macs.len(), 2);
    }

    #[test]
    fn unquoted_macs_stay_strings() {
        // YAML 1.1 would read 52:54:00:12:34:56 as a base-60 number and the password 0123 as
        // octal 83; the import must not.
        let y = "nodes:\n  - mac: [00:11:22:33:44:55, 52:54:00:12:34:56]\n    pm_type: ipmi\n    pm_addr: h\n    pm_user: u\n    pm_password: 0123\n    cpu: 4\n";
        let n = parse_instackenv(y, Format::Yaml, &[], 0).unwrap();
        assert_eq!(n[0].macs[0].to_string(), "00:11:22:33:44:55");
        assert_eq!(n[0].macs[1].to_string(), "52:54:00:12:34:56");
        assert_eq!(n[0].bmc.password.expose(), "0123");
        assert_eq!(n[0].properties.cpus, Some(4));
    }

    #[test]
    fn imports_json() {
        let json = r#"{"nodes": [{"name": "n1", "mac": ["52:54:00:00:00:09"], "pm_type": "pxe_ipmitool",
            "pm_addr": "192.0.2.1", "pm_user": "u", "pm_password": "p", "memory": 4096, "pm_port": 6231}]}"#;
        let nodes = parse_instackenv(json, Format::Json, &[], 0).unwrap();
        assert_eq!(nodes[0].bmc.port, 6231);
        assert_eq!(nodes[0].properties.memory_mib, Some(4096));
    }

    #[test]
    fn boot_chain_is_imported_and_stored_only_when_set() {
        use netboot::boot::Chain;
        let base = "nodes:\n  - name: a\n    mac: [\"52:54:00:00:00:01\"]\n    pm_type: ipmi\n    pm_addr: h\n    pm_user: u\n    pm_password: p\n";
        let plain = &parse_instackenv(base, Format::Yaml, &[], 0).unwrap()[0];
        assert_eq!(plain.boot.chain, Chain::Direct);
        // Records written before the field existed (and direct ones) have no `boot` key.
        let json = serde_json::to_value(plain).unwrap();
        assert!(json.get("boot").is_none(), "{json}");
        let back: Node = serde_json::from_value(json).unwrap();
        assert_eq!(back.boot.chain, Chain::Direct);

        let chained = &parse_instackenv(
            &format!("{base}    boot_chain: tftp\n"),
            Format::Yaml,
            &[],
            0,
        )
        .unwrap()[0];
        assert_eq!(chained.boot.chain, Chain::Tftp);
        let json = serde_json::to_value(chained).unwrap();
        assert_eq!(json["boot"]["chain"], "tftp");
        let back: Node = serde_json::from_value(json).unwrap();
        assert_eq!(back.boot.chain, Chain::Tftp);

        let e = err(&format!("{base}    boot_chain: http\n"));
        assert!(e.contains("`boot_chain`") && e.contains("http"), "{e}");
    }

    fn err(text: &str) -> String {
        parse_instackenv(text, Format::Yaml, &[], 0)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn import_errors_name_entry_and_field() {
        let base = "  - name: a\n    mac: [\"52:54:00:00:00:01\"]\n    pm_type: ipmi\n    pm_addr: h\n    pm_user: u\n    pm_password: p\n";
        assert!(parse_instackenv(&format!("nodes:\n{base}"), Format::Yaml, &[], 0).is_ok());

        let e = err(&format!("nodes:\n{base}  - name: b\n    mac: [\"nope\"]\n"));
        assert!(
            e.contains("nodes[1] (b)") && e.contains("`mac`") && e.contains("nope"),
            "{e}"
        );

        let e = err(&format!("nodes:\n{}", base.replace("    pm_addr: h\n", "")));
        assert!(
            e.contains("nodes[0] (a)") && e.contains("`pm_addr`") && e.contains("required"),
            "{e}"
        );

        let e = err(&format!("nodes:\n{base}    pm_prot: 1\n"));
        assert!(e.contains("nodes[0] (a)") && e.contains("pm_prot"), "{e}");

        let e = err(&format!("nodes:\n{}", base.replace("ipmi", "redfish")));
        assert!(e.contains("`pm_type`") && e.contains("redfish"), "{e}");

        let e = err(&format!("nodes:\n{base}    memory: lots\n"));
        assert!(e.contains("`memory`") && e.contains("lots"), "{e}");

        let e = err(&format!("nodes:\n{base}    pm_port: 70000\n"));
        assert!(e.contains("`pm_port`"), "{e}");

        let e = err(&format!("nodes:\n{base}    capabilities: \"profile\"\n"));
        assert!(e.contains("`capabilities`"), "{e}");

        let e = err(&format!(
            "nodes:\n{}",
            base.replace("name: a", "name: \"a/../b\"")
        ));
        assert!(e.contains("`name`"), "{e}");

        assert!(err("machines: []").contains("nodes"));
        assert!(err("nodes: [").contains("YAML"));
    }

    #[test]
    fn duplicates_refused() {
        let one = |name: &str, mac: &str| {
            format!("  - name: {name}\n    mac: [\"{mac}\"]\n    pm_type: ipmi\n    pm_addr: h\n    pm_user: u\n    pm_password: p\n")
        };
        // After node a: another a, then another node with a's MAC.
        let first = one("a", "52:54:00:00:00:01");
        for (second, want) in [
            (
                one("a", "52:54:00:00:00:02"),
                ["nodes[1] (a)", "name \"a\" is already used by nodes[0]"],
            ),
            (
                one("b", "52:54:00:00:00:01"),
                ["nodes[1] (b)", "52:54:00:00:00:01"],
            ),
        ] {
            let e = err(&format!("nodes:\n{first}{second}"));
            assert!(want.iter().all(|w| e.contains(w)), "{e}");
        }

        let taken = vec![(
            "old".to_string(),
            vec!["52:54:00:00:00:07".parse().unwrap()],
        )];
        // A taken MAC, then a taken name.
        for (name, mac, want) in [
            ("new", "52:54:00:00:00:07", "enrolled node \"old\""),
            ("old", "52:54:00:00:00:08", "name \"old\""),
        ] {
            let text = format!("nodes:\n{}", one(name, mac));
            let e = parse_instackenv(&text, Format::Yaml, &taken, 0)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e}");
        }
    }
}
