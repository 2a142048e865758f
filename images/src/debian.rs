//! The Debian (systemd) base: its root file system loaded from a base tarball onto the
//! [`Tree`], and the elements' services rendered as systemd units.
//!
//! The tarball (built offline by the host with mmdebstrap, see `xtask/src/debian.rs`) is read
//! entry by entry with its owners and modes. Hard links become copies of their target (the tree
//! has no hard-link kind; the few in a minimal Debian cost little). Device nodes and FIFOs are
//! dropped, as is whatever was left inside `/dev`, `/proc`, `/sys`, `/run` and `/tmp` (the
//! directories stay), apt's package lists and caches, logs and the other host-dependent leftovers
//! of the build; `/etc/machine-id` is empty (systemd's first-boot convention: a transient id on
//! the read-only root). An entry whose path leaves the root, or that goes through a symlink,
//! is refused.

use crate::element::{image_path, Service, ServiceKind};
use crate::tree::{Kind, Tree, TreeError};
use std::io::Read;

/// What loading the base did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// Entries put into the tree.
    pub entries: usize,
    /// Hard links written as copies.
    pub hard_links: usize,
    /// Device nodes and FIFOs left out.
    pub devices: usize,
    /// Other entries left out (run-time directories' contents, caches, logs).
    pub dropped: usize,
}

/// Directories kept empty: their contents are made at run time (or are mount points).
const EMPTIED: &[&str] = &["dev", "proc", "sys", "run", "tmp", "var/tmp", "var/log"];

/// Contents left out: apt's lists and caches (the image installs nothing at run time), build
/// leftovers that differ between builds, the build host's name and resolver.
const DROPPED_BELOW: &[&str] = &["var/lib/apt/lists", "var/cache/apt", "var/cache/ldconfig"];
const DROPPED_FILES: &[&str] = &[
    "etc/hostname",
    "etc/resolv.conf",
    "var/cache/debconf/config.dat-old",
    "var/cache/debconf/templates.dat-old",
    "var/lib/dpkg/diversions-old",
    "var/lib/dpkg/status-old",
    "var/lib/dpkg/statoverride-old",
];

fn dropped(path: &str) -> bool {
    let below =
        |d: &str| path.len() > d.len() && path.starts_with(d) && path[d.len()..].starts_with('/');
    EMPTIED.iter().any(|d| below(d))
        || DROPPED_BELOW.iter().any(|d| below(d))
        || DROPPED_FILES.contains(&path)
}

fn refuse(path: &str, message: impl Into<String>) -> TreeError {
    TreeError::Conflict {
        path: path.into(),
        message: message.into(),
    }
}

fn io(path: &str) -> impl FnOnce(std::io::Error) -> TreeError + '_ {
    move |source| TreeError::Io {
        path: path.into(),
        source,
    }
}

/// The sources.list of the image: it installs nothing at run time.
const SOURCES_LIST: &str =
    "# seed golden image: every package came with the image (built offline from pinned\n\
# packages). Add a source here to install more.\n";

/// Load the base tarball `tar` onto `tree` (see the module doc for what is kept).
pub fn load_base<R: Read>(tree: &mut Tree, tar: R) -> Result<Loaded, TreeError> {
    let here = "<debian base>";
    let mut ar = tar::Archive::new(tar);
    let mut n = Loaded::default();
    for entry in ar.entries().map_err(io(here))? {
        let mut e = entry.map_err(io(here))?;
        let raw = String::from_utf8(e.path_bytes().into_owned())
            .map_err(|_| refuse(here, "an entry's path is not UTF-8"))?;
        if raw.starts_with('/') {
            return Err(refuse(&raw, "absolute path in the base tarball"));
        }
        if raw.trim_start_matches("./").trim_matches('/').is_empty() {
            continue; // the root itself
        }
        let path = image_path(&raw).map_err(|m| refuse(&raw, m.to_string()))?;
        let h = e.header();
        let kind = h.entry_type();
        if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            n.devices += 1;
            continue;
        }
        if dropped(&path) {
            n.dropped += 1;
            continue;
        }
        let mode = h.mode().map_err(io(&path))? & 0o7777;
        let owner = (
            h.uid().map_err(io(&path))? as u32,
            h.gid().map_err(io(&path))? as u32,
        );
        if kind.is_dir() {
            tree.dir(&path, mode)?;
            tree.chmod(&path, mode, Some(owner))?;
        } else if kind.is_symlink() {
            let target = e
                .link_name()
                .map_err(io(&path))?
                .ok_or_else(|| refuse(&path, "symlink without a target"))?;
            tree.symlink(&path, &target.to_string_lossy())?;
            tree.chmod(&path, 0o777, Some(owner))?;
        } else if kind.is_hard_link() {
            let target = e
                .link_name()
                .map_err(io(&path))?
                .ok_or_else(|| refuse(&path, "hard link without a target"))?;
            let target =
                image_path(&target.to_string_lossy()).map_err(|m| refuse(&path, m.to_string()))?;
            let node = match tree.get(&target) {
                Some(
                    node @ crate::tree::Node {
                        kind: Kind::File { .. },
                        ..
                    },
                ) => node.clone(),
                _ => {
                    return Err(refuse(
                        &path,
                        format!("hard link to {target}, which is not a file before it"),
                    ))
                }
            };
            let Kind::File { source, .. } = node.kind else {
                unreachable!()
            };
            match source {
                crate::tree::Source::Bytes(b) => tree.file(&path, node.mode, b)?,
                crate::tree::Source::Path(p) => tree.file_from(&path, node.mode, &p)?,
            }
            tree.chmod(&path, node.mode, Some((node.uid, node.gid)))?;
            n.hard_links += 1;
        } else if kind.is_file() || kind == tar::EntryType::Continuous {
            let mut data = Vec::with_capacity(h.size().unwrap_or(0) as usize);
            e.read_to_end(&mut data).map_err(io(&path))?;
            tree.file(&path, mode, data)?;
            tree.chmod(&path, mode, Some(owner))?;
        } else {
            return Err(refuse(&path, format!("unsupported entry type {kind:?}")));
        }
        n.entries += 1;
    }
    if tree.get("etc").is_some() {
        // Empty: systemd makes a transient one on a read-only root and treats it as first boot.
        tree.file("etc/machine-id", 0o444, Vec::new())?;
        if tree.get("etc/apt").is_some() {
            tree.file(
                "etc/apt/sources.list",
                0o644,
                SOURCES_LIST.as_bytes().to_vec(),
            )?;
        }
    }
    Ok(n)
}

/// Where generated units go.
pub const UNIT_DIR: &str = "etc/systemd/system";

/// Why a service cannot become a systemd unit.
#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    #[error("service name {0:?} cannot name a systemd unit (letters, digits, - _ . :)")]
    BadName(String),
    #[error("service {service}: exec {exec:?} is not absolute")]
    NotAbsolute { service: String, exec: String },
    #[error(transparent)]
    Tree(#[from] TreeError),
}

/// The unit file name of a service (`<name>.service`), or why the name cannot be one.
pub fn unit_name(s: &Service) -> Result<String, UnitError> {
    let ok = !s.name.is_empty()
        && s.name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if !ok {
        return Err(UnitError::BadName(s.name.clone()));
    }
    Ok(format!("{}.service", s.name))
}

/// systemd expands `%` specifiers and `$` variables in `ExecStart=`: the element's command line
/// is taken literally.
fn exec_literal(cmd: &str) -> String {
    cmd.replace('%', "%%").replace('$', "$$")
}

/// The unit file of an element's service. `wait_units` are the `wait` services' units: the
/// others start after them (busybox init runs `wait` entries to completion first).
pub fn unit(element: &str, s: &Service, wait_units: &[String]) -> Result<String, UnitError> {
    let name = unit_name(s)?;
    if !s.exec.starts_with('/') {
        return Err(UnitError::NotAbsolute {
            service: s.name.clone(),
            exec: s.exec.clone(),
        });
    }
    let mut after = vec![
        "local-fs.target".to_string(),
        // The state partition (`nofail` in fstab: ordered after it when it is there at all).
        "var-lib-seed.mount".into(),
        "systemd-networkd.service".into(),
    ];
    if s.kind != ServiceKind::Wait {
        after.extend(wait_units.iter().filter(|u| **u != name).cloned());
    }
    let mut t = format!(
        "# Generated by the seed image builder from element {element}'s service {n}.\n\
         [Unit]\n\
         Description=seed {n} (element {element})\n\
         After={after}\n",
        n = s.name,
        after = after.join(" ")
    );
    if s.kind == ServiceKind::Wait {
        t.push_str("Before=multi-user.target\n");
    }
    t.push_str("\n[Service]\n");
    match s.kind {
        ServiceKind::Wait => t.push_str("Type=oneshot\nRemainAfterExit=yes\n"),
        ServiceKind::Once => t.push_str("Type=simple\n"),
        ServiceKind::Respawn => t.push_str("Type=simple\nRestart=always\nRestartSec=1\n"),
    }
    t.push_str(&format!("ExecStart={}\n", exec_literal(&s.exec)));
    match &s.tty {
        Some(tty) => t.push_str(&format!(
            "StandardInput=tty\nStandardOutput=tty\nTTYPath=/dev/{tty}\nTTYReset=yes\n"
        )),
        // The console, as under busybox init, and the journal.
        None => t.push_str("StandardOutput=journal+console\nStandardError=journal+console\n"),
    }
    t.push_str("\n[Install]\nWantedBy=multi-user.target\n");
    Ok(t)
}

/// Put the services' units into `/etc/systemd/system`, each enabled by its
/// `multi-user.target.wants` link.
pub fn install_units(tree: &mut Tree, services: &[(String, Service)]) -> Result<(), UnitError> {
    let wait: Vec<String> = services
        .iter()
        .filter(|(_, s)| s.kind == ServiceKind::Wait)
        .map(|(_, s)| unit_name(s))
        .collect::<Result<_, _>>()?;
    for (el, s) in services {
        let name = unit_name(s)?;
        let text = unit(el, s, &wait)?;
        let path = format!("{UNIT_DIR}/{name}");
        tree.file(&path, 0o644, text.into_bytes())?;
        tree.symlink(
            &format!("{UNIT_DIR}/multi-user.target.wants/{name}"),
            &format!("/{path}"),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Source;

    fn header(kind: tar::EntryType, mode: u32, uid: u64, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(uid);
        h.set_size(size);
        h.set_mtime(1);
        h
    }

    /// A base tarball as mmdebstrap writes it (`./` prefixes, devices in /dev, a hard link).
    fn base_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let dir = |b: &mut tar::Builder<Vec<u8>>, p: &str, mode, uid| {
            let mut h = header(tar::EntryType::Directory, mode, uid, 0);
            b.append_data(&mut h, p, std::io::empty()).unwrap();
        };
        let file = |b: &mut tar::Builder<Vec<u8>>, p: &str, mode, uid, data: &[u8]| {
            let mut h = header(tar::EntryType::Regular, mode, uid, data.len() as u64);
            b.append_data(&mut h, p, data).unwrap();
        };
        dir(&mut b, "./", 0o755, 0);
        dir(&mut b, "./dev/", 0o755, 0);
        let mut h = header(tar::EntryType::Char, 0o666, 0, 0);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        b.append_data(&mut h, "./dev/null", std::io::empty())
            .unwrap();
        let mut h = header(tar::EntryType::Symlink, 0o777, 0, 0);
        b.append_link(&mut h, "./dev/fd", "/proc/self/fd").unwrap();
        dir(&mut b, "./etc/", 0o755, 0);
        file(&mut b, "./etc/hostname", 0o644, 0, b"buildhost\n");
        file(&mut b, "./etc/machine-id", 0o444, 0, b"0123456789abcdef\n");
        file(
            &mut b,
            "./etc/shadow",
            0o640,
            0,
            b"root:*:19723:0:99999:7:::\n",
        );
        dir(&mut b, "./usr/bin/", 0o755, 0);
        let mut h = header(tar::EntryType::Symlink, 0o777, 0, 0);
        b.append_link(&mut h, "./bin", "usr/bin").unwrap();
        file(&mut b, "./usr/bin/gzip", 0o755, 0, b"gzip!");
        let mut h = header(tar::EntryType::Link, 0o755, 0, 0);
        b.append_link(&mut h, "./usr/bin/gunzip", "./usr/bin/gzip")
            .unwrap();
        dir(&mut b, "./var/log/", 0o755, 0);
        file(&mut b, "./var/log/dpkg.log", 0o644, 0, b"log");
        dir(&mut b, "./var/lib/apt/lists/", 0o755, 0);
        file(&mut b, "./var/lib/apt/lists/x_Packages", 0o644, 0, b"p");
        dir(&mut b, "./var/mail/", 0o2775, 8);
        file(&mut b, "./run/lock/x", 0o644, 0, b"");
        b.into_inner().unwrap()
    }

    fn bytes(t: &Tree, p: &str) -> Vec<u8> {
        match &t.get(p).unwrap_or_else(|| panic!("{p} missing")).kind {
            Kind::File {
                source: Source::Bytes(b),
                ..
            } => b.clone(),
            k => panic!("{p} is {k:?}"),
        }
    }

    #[test]
    fn base_keeps_owners_copies_hard_links_and_drops_devices_and_leftovers() {
        let mut t = Tree::default();
        let n = load_base(&mut t, &base_tar()[..]).unwrap();
        assert_eq!(n.devices, 1);
        assert_eq!(n.hard_links, 1);
        assert!(n.dropped >= 4, "{n:?}");
        // Owners and setgid modes as in the tarball.
        let mail = t.get("var/mail").unwrap();
        assert_eq!((mail.mode, mail.uid, mail.gid), (0o2775, 8, 8));
        assert_eq!(t.get("etc/shadow").unwrap().mode, 0o640);
        // The hard link is a copy with the target's bytes and mode.
        assert_eq!(bytes(&t, "usr/bin/gunzip"), b"gzip!");
        assert_eq!(t.get("usr/bin/gunzip").unwrap().mode, 0o755);
        assert_eq!(
            t.get("bin").unwrap().kind,
            Kind::Symlink {
                target: "usr/bin".into()
            }
        );
        // Run-time directories stay, empty; devices, logs, lists, the host's name are gone.
        for d in ["dev", "var/log", "var/lib/apt/lists"] {
            assert_eq!(t.get(d).unwrap().kind, Kind::Dir, "{d}");
        }
        for gone in [
            "dev/null",
            "dev/fd",
            "var/log/dpkg.log",
            "var/lib/apt/lists/x_Packages",
            "run/lock/x",
            "etc/hostname",
        ] {
            assert!(t.get(gone).is_none(), "{gone} should be dropped");
        }
        assert_eq!(bytes(&t, "etc/machine-id"), b"");
    }

    fn one_entry(path: &str, kind: tar::EntryType, link: Option<&str>) -> Vec<u8> {
        // Written by hand: the tar crate's builder refuses `..` itself.
        let mut h = header(kind, 0o644, 0, 0);
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        if let Some(l) = link {
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        let mut v = h.as_bytes().to_vec();
        v.extend([0u8; 1024]);
        v
    }

    #[test]
    fn escaping_paths_and_links_through_symlinks_are_refused() {
        for (path, kind, link) in [
            ("../etc/passwd", tar::EntryType::Regular, None),
            ("/etc/passwd", tar::EntryType::Regular, None),
            ("./usr/../../x", tar::EntryType::Directory, None),
            ("./x", tar::EntryType::Link, Some("../../etc/shadow")),
            ("./y", tar::EntryType::Link, Some("./nonesuch")),
        ] {
            let mut t = Tree::default();
            let e = load_base(&mut t, &one_entry(path, kind, link)[..]).unwrap_err();
            assert!(
                t.is_empty() || t.get("x").is_none(),
                "{path}: nothing written"
            );
            let _ = e.to_string();
        }
        // A file below a symlink would land outside what the tree shows: refused.
        let mut t = Tree::default();
        t.symlink("lib", "/usr/lib").unwrap();
        let e = load_base(
            &mut t,
            &one_entry("./lib/x", tar::EntryType::Regular, None)[..],
        )
        .unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
    }

    fn svc(name: &str, kind: ServiceKind, exec: &str) -> Service {
        Service {
            name: name.into(),
            exec: exec.into(),
            kind,
            tty: None,
        }
    }

    #[test]
    fn services_become_enabled_units() {
        let services = vec![
            (
                "seed-firstboot".to_string(),
                svc(
                    "seed-firstboot",
                    ServiceKind::Once,
                    "/usr/lib/seed/firstboot",
                ),
            ),
            (
                "app".to_string(),
                svc("collect", ServiceKind::Respawn, "/usr/bin/x --a=100% $HOME"),
            ),
            (
                "app".to_string(),
                svc("prep", ServiceKind::Wait, "/usr/lib/prep"),
            ),
        ];
        let mut t = Tree::default();
        install_units(&mut t, &services).unwrap();
        let first =
            String::from_utf8(bytes(&t, "etc/systemd/system/seed-firstboot.service")).unwrap();
        assert!(first.contains("\nType=simple\n"), "{first}");
        assert!(
            first.contains("\nExecStart=/usr/lib/seed/firstboot\n"),
            "{first}"
        );
        assert!(first.contains("StandardOutput=journal+console"), "{first}");
        assert!(
            first.contains("After=local-fs.target var-lib-seed.mount"),
            "{first}"
        );
        assert!(
            first.contains("prep.service"),
            "after the wait units:\n{first}"
        );
        assert!(!first.contains("Restart="), "{first}");
        assert_eq!(
            t.get("etc/systemd/system/multi-user.target.wants/seed-firstboot.service")
                .unwrap()
                .kind,
            Kind::Symlink {
                target: "/etc/systemd/system/seed-firstboot.service".into()
            }
        );
        let collect = String::from_utf8(bytes(&t, "etc/systemd/system/collect.service")).unwrap();
        assert!(collect.contains("Restart=always"), "{collect}");
        assert!(
            collect.contains("ExecStart=/usr/bin/x --a=100%% $$HOME"),
            "specifiers and variables are escaped:\n{collect}"
        );
        let prep = String::from_utf8(bytes(&t, "etc/systemd/system/prep.service")).unwrap();
        assert!(prep.contains("Type=oneshot\nRemainAfterExit=yes"), "{prep}");
        assert!(prep.contains("Before=multi-user.target"), "{prep}");
        assert!(!prep.contains("prep.service"), "{prep}");

        let mut tty = svc("getty", ServiceKind::Respawn, "/sbin/getty ttyS0");
        tty.tty = Some("ttyS0".into());
        let g = unit("base", &tty, &[]).unwrap();
        assert!(g.contains("TTYPath=/dev/ttyS0"), "{g}");

        assert!(unit("x", &svc("a b", ServiceKind::Once, "/x"), &[]).is_err());
        assert!(unit("x", &svc("../a", ServiceKind::Once, "/x"), &[]).is_err());
        assert!(unit("x", &svc("a", ServiceKind::Once, "x"), &[]).is_err());
    }
}
