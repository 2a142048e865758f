//! What `seed lab up` brings up: a new lab from its options, or the existing one — never an
//! existing lab whose shape differs from the options given (that is refused, naming each
//! difference, unless `--recreate` says to destroy it and create it anew). Only options given
//! on the command line are compared: `seed lab up` alone re-opens any lab as it is.
//!
//! The seed machine (`--appliance-kind`, `--appliance-medium`, …) is not part of the lab's
//! shape: given, it is set (or replaced, with a note) in `lab.json`; not given, the lab keeps
//! the one it has.

use anyhow::{bail, Context, Result};
use qemu::appliance::{ApplianceSpec, Medium, PortForward};
use qemu::spec::{self, Firmware, LabFile, Management, Plan, TcpForward};
use std::path::{Path, PathBuf};

/// The lab's shape. Each option is compared with an existing lab only when given; the
/// defaults apply to a new lab.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Shape {
    /// Number of nodes [default: 1].
    #[arg(long)]
    pub nodes: Option<usize>,
    /// RAM per node, MiB [default: 512].
    #[arg(long)]
    pub memory: Option<u32>,
    /// vCPUs per node [default: 1].
    #[arg(long)]
    pub cpus: Option<u32>,
    /// NICs per node [default: 1].
    #[arg(long)]
    pub nics: Option<usize>,
    /// Disk sizes in GiB, comma separated ("" or "none": no disk) [default: 4].
    #[arg(long)]
    pub disks: Option<String>,
    /// UEFI firmware (OVMF) instead of SeaBIOS.
    #[arg(long)]
    pub uefi: bool,
    /// BMC port of node1; node N gets PORT + N − 1. 0: any free ports [default: 6231].
    #[arg(long)]
    pub bmc_port: Option<u16>,
}

/// The seed machine's options (see `qemu::appliance`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ApplianceArgs {
    /// Boot the seed machine (appliance VM) too, from this medium: iso (a CD-ROM), usb (an
    /// image as a USB stick), disk (a raw or qcow2 disk), kernel (a directory with vmlinuz,
    /// initrd.img and optionally cmdline), or pxe (no medium: it PXE-boots from NIC 1).
    #[arg(long, value_name = "KIND")]
    pub appliance_kind: Option<String>,
    /// The medium's path (for iso, usb, disk, kernel).
    #[arg(long, value_name = "PATH")]
    pub appliance_medium: Option<PathBuf>,
    /// The seed machine's RAM, MiB [default: 1024].
    #[arg(long, value_name = "MIB")]
    pub appliance_memory: Option<u32>,
    /// The seed machine's disks in GiB, comma separated, besides its medium (a server's own
    /// disks: what the undercloud deploys onto once it adopts the machine) [default: none].
    #[arg(long, value_name = "GIB")]
    pub appliance_disks: Option<String>,
    /// The seed machine's firmware, bios or uefi [default: the nodes'].
    #[arg(long, value_name = "FIRMWARE")]
    pub appliance_firmware: Option<String>,
    /// Forward 127.0.0.1:HOST to the seed machine's GUEST port (TCP), through a third NIC in
    /// QEMU's user mode with restrict=on (no route out). Repeatable: --appliance-forward
    /// 16385:6385.
    #[arg(long, value_name = "HOST:GUEST")]
    pub appliance_forward: Vec<String>,
    /// The seed machine's `seed.toml`: checked, then written into the SEEDCFG partition of a
    /// copy of the medium (iso, usb or a raw disk) in the lab directory, which it boots.
    #[arg(long, value_name = "FILE")]
    pub appliance_config: Option<PathBuf>,
    /// The `nodes.yaml` it enrolls at its first boot, written beside `--appliance-config`.
    #[arg(long, value_name = "FILE", requires = "appliance_config")]
    pub appliance_nodes: Option<PathBuf>,
}

/// The lab's management host on the provisioning wire (see `qemu::spec::Management`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ManagementArgs {
    /// A host on the provisioning wire at ADDRESS/PREFIX standing for what a datacenter routes
    /// there: every BMC also answers IPMI at ADDRESS on its own port (the BMC network routed
    /// to the provisioning network, so that machines the seed deploys reach the BMCs too).
    #[arg(long, value_name = "ADDRESS/PREFIX")]
    pub management: Option<String>,
    /// Carry the host's 127.0.0.1:HOSTPORT to ADDRESS:PORT on the provisioning wire through
    /// the management host (TCP), e.g. 16386=10.80.0.1:6385 for the control plane's floating
    /// API address. Repeatable.
    #[arg(long, value_name = "HOSTPORT=ADDRESS:PORT")]
    pub forward: Vec<TcpForward>,
}

/// The lab to start in `dir`: the existing one (its seed machine set from `app` when given), a
/// new one from `shape`, or — with `recreate` and a lab whose shape differs — a new one after
/// destroying the old. Refuses an existing lab whose shape differs from `shape` otherwise.
pub fn resolve(
    name: &str,
    dir: &Path,
    shape: &Shape,
    app: &ApplianceArgs,
    mg: &ManagementArgs,
    recreate: bool,
) -> Result<LabFile> {
    let plan = plan(name, shape)?;
    let mut file = if dir.join(spec::LAB_FILE).exists() {
        let existing = spec::load(dir)?;
        let diffs = differences(&existing, shape, &plan);
        if diffs.is_empty() {
            existing
        } else if recreate {
            println!("lab {}: recreating ({})", existing.name, diffs.join("; "));
            std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
            plan.lab_file()
        } else {
            bail!(
                "the lab {} in {} exists with other options:\n  {}\n\
                 `--recreate` destroys it (its disks included) and creates it with these \
                 options; without them, `seed lab up` starts it as it is",
                existing.name,
                dir.display(),
                diffs.join("\n  ")
            );
        }
    } else {
        plan.lab_file()
    };
    if let Some(m) = management(&file, mg)? {
        file.management = Some(m);
    }
    if let Some(spec) = appliance(&file, dir, app)? {
        match &file.appliance {
            Some(old) if *old != spec => println!(
                "seed machine: now {} {} (was {} {})",
                spec.medium.kind(),
                describe(&spec.medium),
                old.medium.kind(),
                describe(&old.medium)
            ),
            _ => {}
        }
        file.appliance = Some(spec);
    }
    Ok(file)
}

fn describe(m: &Medium) -> String {
    m.files()
        .first()
        .map_or_else(|| "(network)".into(), |p| p.display().to_string())
}

/// The plan `shape` asks for, defaults filled in.
fn plan(name: &str, shape: &Shape) -> Result<Plan> {
    let mut plan = Plan::new(name, shape.nodes.unwrap_or(1));
    plan.memory_mib = shape.memory.unwrap_or(plan.memory_mib);
    plan.cpus = shape.cpus.unwrap_or(plan.cpus);
    plan.nics = shape.nics.unwrap_or(plan.nics);
    if let Some(d) = &shape.disks {
        plan.disks_gib = parse_disks(d)?;
    }
    if shape.uefi {
        plan.firmware = Firmware::Uefi;
    }
    plan.bmc_base_port = shape.bmc_port.unwrap_or(plan.bmc_base_port);
    Ok(plan)
}

/// Each given option of `shape` the existing lab `lab` does not have, as
/// "what: the lab has X, asked Y".
pub fn differences(lab: &LabFile, shape: &Shape, plan: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    let mut differ = |what: &str, has: String, asked: String| {
        if has != asked {
            out.push(format!("{what}: the lab has {has}, asked {asked}"));
        }
    };
    let first = lab.nodes.first();
    if shape.nodes.is_some() {
        differ("nodes", lab.nodes.len().to_string(), plan.nodes.to_string());
    }
    let Some(n) = first else {
        return out;
    };
    if shape.memory.is_some() {
        differ(
            "memory",
            format!("{} MiB", n.memory_mib),
            format!("{} MiB", plan.memory_mib),
        );
    }
    if shape.cpus.is_some() {
        differ("cpus", n.cpus.to_string(), plan.cpus.to_string());
    }
    if shape.nics.is_some() {
        differ("nics", n.macs.len().to_string(), plan.nics.to_string());
    }
    if shape.disks.is_some() {
        differ("disks", disks(&n.disks_gib), disks(&plan.disks_gib));
    }
    if shape.uefi {
        differ(
            "firmware",
            format!("{:?}", n.firmware).to_lowercase(),
            "uefi".into(),
        );
    }
    // Port 0 asks for any free ports: any lab has them.
    if shape.bmc_port.is_some_and(|p| p != 0) {
        differ(
            "bmc port",
            n.bmc.port.to_string(),
            plan.bmc_base_port.to_string(),
        );
    }
    out
}

fn disks(d: &[u32]) -> String {
    if d.is_empty() {
        "none".into()
    } else {
        d.iter()
            .map(|g| format!("{g}G"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The management host `mg` asks for in `lab` (`None` when no `--management` is given).
fn management(lab: &LabFile, mg: &ManagementArgs) -> Result<Option<Management>> {
    let Some(cidr) = &mg.management else {
        if !mg.forward.is_empty() {
            bail!("--forward needs --management (the host on the wire that carries it)");
        }
        return Ok(None);
    };
    let (address, prefix) = cidr
        .split_once('/')
        .and_then(|(a, p)| Some((a.parse().ok()?, p.parse::<u8>().ok()?)))
        .filter(|(_, p)| (8..=30).contains(p))
        .with_context(|| format!("--management {cidr:?}: ADDRESS/PREFIX, e.g. 10.80.0.3/24"))?;
    let mut ports = std::collections::BTreeSet::new();
    for f in &mg.forward {
        anyhow::ensure!(
            ports.insert(f.host_port),
            "--forward: port {} is given twice",
            f.host_port
        );
    }
    Ok(Some(Management::new(
        &lab.name,
        address,
        prefix,
        mg.forward.clone(),
    )))
}

/// The seed machine `app` asks for in `lab` (`None` when no `--appliance-kind` is given); with
/// `--appliance-config`, its medium is a configured copy in `dir`.
fn appliance(lab: &LabFile, dir: &Path, app: &ApplianceArgs) -> Result<Option<ApplianceSpec>> {
    let Some(kind) = &app.appliance_kind else {
        if app.appliance_medium.is_some()
            || app.appliance_memory.is_some()
            || app.appliance_firmware.is_some()
            || !app.appliance_forward.is_empty()
            || app.appliance_config.is_some()
            || app.appliance_disks.is_some()
        {
            bail!("--appliance-* options need --appliance-kind (iso, usb, disk, kernel or pxe)");
        }
        return Ok(None);
    };
    let mut medium = Medium::from_kind(kind, app.appliance_medium.as_deref())
        .map_err(|e| anyhow::anyhow!("--appliance-kind: {e}"))?;
    for f in medium.files() {
        anyhow::ensure!(
            f.is_file(),
            "the appliance medium {} is missing",
            f.display()
        );
    }
    if let Some(config) = &app.appliance_config {
        medium = configured(medium, dir, config, app.appliance_nodes.as_deref())?;
    }
    let mut spec = ApplianceSpec::new(lab, medium);
    // Kept from the lab's current seed machine: its BMC port (enrolled elsewhere, maybe).
    if let Some(old) = &lab.appliance {
        spec.bmc = old.bmc.clone();
    }
    if let Some(m) = app.appliance_memory {
        anyhow::ensure!(m >= 128, "--appliance-memory {m}: at least 128 MiB");
        spec.memory_mib = m;
    }
    if let Some(d) = &app.appliance_disks {
        spec.disks_gib = parse_disks(d).context("--appliance-disks")?;
    }
    if let Some(f) = &app.appliance_firmware {
        spec.firmware = match f.as_str() {
            "bios" => Firmware::Bios,
            "uefi" => Firmware::Uefi,
            other => bail!("--appliance-firmware {other:?}: bios or uefi"),
        };
    }
    for f in &app.appliance_forward {
        let (h, g) = f
            .split_once(':')
            .and_then(|(h, g)| Some((h.parse().ok()?, g.parse().ok()?)))
            .with_context(|| format!("--appliance-forward {f:?}: HOST:GUEST ports"))?;
        spec.forward.push(PortForward { host: h, guest: g });
    }
    Ok(Some(spec))
}

/// `medium` as a copy in `dir/seed-medium` whose SEEDCFG holds `config` (and `nodes`).
fn configured(medium: Medium, dir: &Path, config: &Path, nodes: Option<&Path>) -> Result<Medium> {
    let out = dir.join("seed-medium");
    let with = |p: &Path| super::lab_seedcfg::configured_medium(p, &out, config, nodes);
    Ok(match medium {
        Medium::Iso { path } => Medium::Iso { path: with(&path)? },
        Medium::Usb { path } => Medium::Usb { path: with(&path)? },
        Medium::Disk { path } => Medium::Disk { path: with(&path)? },
        other => bail!(
            "--appliance-config: a {} seed machine has no SEEDCFG partition (iso, usb or disk)",
            other.kind()
        ),
    })
}

/// `--disks`: sizes in GiB, comma separated; "" or "none" for no disk.
pub fn parse_disks(s: &str) -> Result<Vec<u32>> {
    if s.trim().is_empty() || s.trim() == "none" {
        return Ok(vec![]);
    }
    s.split(',')
        .map(|d| {
            d.trim()
                .trim_end_matches(['G', 'g'])
                .parse()
                .with_context(|| format!("--disks: {d:?} is not a size in GiB"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(nodes: Option<usize>, uefi: bool) -> Shape {
        Shape {
            nodes,
            uefi,
            ..Shape::default()
        }
    }

    #[test]
    fn only_the_options_given_are_compared() {
        let lab = Plan::new("x", 2).lab_file();
        let same = shape(None, false);
        assert!(differences(&lab, &same, &plan("x", &same).unwrap()).is_empty());
        let two = shape(Some(2), false);
        assert!(differences(&lab, &two, &plan("x", &two).unwrap()).is_empty());
        let other = Shape {
            nodes: Some(4),
            uefi: true,
            disks: Some("none".into()),
            bmc_port: Some(0),
            ..Shape::default()
        };
        let d = differences(&lab, &other, &plan("x", &other).unwrap());
        assert_eq!(
            d,
            [
                "nodes: the lab has 2, asked 4",
                "disks: the lab has 4G, asked none",
                "firmware: the lab has bios, asked uefi"
            ]
        );
    }

    #[test]
    fn an_existing_lab_with_other_options_is_refused_unless_recreated() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("lab");
        std::fs::create_dir_all(&dir).unwrap();
        spec::save(&dir, &Plan::new("x", 2).lab_file()).unwrap();
        std::fs::write(dir.join("marker"), "old").unwrap();
        let app = ApplianceArgs::default();
        let e = resolve(
            "x",
            &dir,
            &shape(Some(4), true),
            &app,
            &ManagementArgs::default(),
            false,
        )
        .unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("nodes: the lab has 2, asked 4"), "{msg}");
        assert!(
            msg.contains("firmware: the lab has bios, asked uefi"),
            "{msg}"
        );
        assert!(msg.contains("--recreate"), "{msg}");
        assert!(dir.join("marker").exists(), "nothing destroyed");
        let f = resolve(
            "x",
            &dir,
            &shape(None, false),
            &app,
            &ManagementArgs::default(),
            false,
        )
        .unwrap();
        assert_eq!(f.nodes.len(), 2, "re-opened as it is");
        let f = resolve(
            "x",
            &dir,
            &shape(Some(4), true),
            &app,
            &ManagementArgs::default(),
            true,
        )
        .unwrap();
        assert_eq!(f.nodes.len(), 4);
        assert_eq!(f.nodes[0].firmware, Firmware::Uefi);
        assert!(!dir.join("marker").exists(), "the old lab is gone");
    }

    #[test]
    fn the_seed_machine_is_set_from_its_options() {
        let tmp = tempfile::tempdir().unwrap();
        let iso = tmp.path().join("seed.iso");
        std::fs::write(&iso, "iso").unwrap();
        let dir = tmp.path().join("lab");
        let app = ApplianceArgs {
            appliance_kind: Some("iso".into()),
            appliance_medium: Some(iso.clone()),
            appliance_memory: Some(768),
            appliance_disks: Some("3".into()),
            appliance_forward: vec!["16385:6385".into()],
            ..ApplianceArgs::default()
        };
        let f = resolve(
            "x",
            &dir,
            &shape(Some(2), false),
            &app,
            &ManagementArgs::default(),
            false,
        )
        .unwrap();
        let a = f.appliance.unwrap();
        assert_eq!(a.medium, Medium::Iso { path: iso });
        assert_eq!((a.memory_mib, a.bmc.port), (768, 6233));
        assert_eq!(a.disks_gib, [3]);
        assert_eq!(
            a.forward,
            [PortForward {
                host: 16385,
                guest: 6385
            }]
        );
        let bad = ApplianceArgs {
            appliance_medium: Some("x.iso".into()),
            ..ApplianceArgs::default()
        };
        let e = resolve(
            "x",
            &dir,
            &shape(None, false),
            &bad,
            &ManagementArgs::default(),
            false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("--appliance-kind"), "{e}");
        let missing = ApplianceArgs {
            appliance_kind: Some("disk".into()),
            appliance_medium: Some(tmp.path().join("nope.img")),
            ..ApplianceArgs::default()
        };
        let e = resolve(
            "x",
            &dir,
            &shape(None, false),
            &missing,
            &ManagementArgs::default(),
            false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("nope.img"), "{e}");
    }

    #[test]
    fn the_management_host_is_set_from_its_options() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("lab");
        let app = ApplianceArgs::default();
        let mg = ManagementArgs {
            management: Some("10.80.0.3/24".into()),
            forward: vec!["16386=10.80.0.1:6385".parse().unwrap()],
        };
        let f = resolve("x", &dir, &shape(Some(2), false), &app, &mg, false).unwrap();
        let m = f.management.unwrap();
        assert_eq!(
            (m.address.to_string(), m.prefix_len),
            ("10.80.0.3".into(), 24)
        );
        assert_eq!(m.forwards[0].to.to_string(), "10.80.0.1:6385");
        for (bad, says) in [
            ("10.80.0.3", "ADDRESS/PREFIX"),
            ("10.80.0.3/33", "ADDRESS/PREFIX"),
        ] {
            let mg = ManagementArgs {
                management: Some(bad.into()),
                forward: vec![],
            };
            let e = resolve("x", &dir, &shape(None, false), &app, &mg, false).unwrap_err();
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
        let twice = ManagementArgs {
            management: Some("10.80.0.3/24".into()),
            forward: vec![
                "1=10.80.0.1:1".parse().unwrap(),
                "1=10.80.0.2:1".parse().unwrap(),
            ],
        };
        let e = resolve("x", &dir, &shape(None, false), &app, &twice, false).unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        let alone = ManagementArgs {
            management: None,
            forward: vec!["1=10.80.0.1:1".parse().unwrap()],
        };
        let e = resolve("x", &dir, &shape(None, false), &app, &alone, false).unwrap_err();
        assert!(e.to_string().contains("--management"), "{e}");
        assert!("16386:10.80.0.1".parse::<TcpForward>().is_err());
    }
}
