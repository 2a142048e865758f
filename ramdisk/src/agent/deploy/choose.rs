//! Which disk to write, and where each partition goes on it: the root-device hint, the disk
//! choice from the agent's facts, and the GPT layout arithmetic (1 MiB aligned, state last).
//! Pure functions over the facts and the manifest's [`Layout`]; nothing here touches a disk.

use crate::agent::facts::Disk;
use images::Layout;

/// Logical sector size the deploy writes GPTs for (every virtio/SATA/SAS disk we target).
pub const SECTOR: u64 = 512;
/// Partitions start and end on 1 MiB boundaries.
pub const ALIGN_SECTORS: u64 = (1 << 20) / SECTOR;
/// Sectors a GPT takes at each end of the disk (header + 128 entries of 128 bytes).
const GPT_SECTORS: u64 = 33;

/// A parsed root-device hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hint {
    /// `size>=N`: the smallest disk of at least N GiB.
    SizeAtLeastGib(u64),
    /// `serial=…`
    Serial(String),
    /// `model=…` (substring match: controllers pad and prefix model strings).
    Model(String),
    /// `name=vda`
    Name(String),
}

/// Why no disk could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChooseError {
    #[error("root device hint {0:?} is not one of size>=N (GiB), serial=…, model=…, name=…")]
    BadHint(String),
    #[error("no disk matches root device hint {hint:?}; disks seen: {seen}")]
    NoMatch { hint: String, seen: String },
    #[error("disk {disk} ({size_mib} MiB) is smaller than the image needs ({need_mib} MiB); disks seen: {seen}")]
    TooSmall {
        disk: String,
        size_mib: u64,
        need_mib: u64,
        seen: String,
    },
    #[error("no disk of at least {need_mib} MiB; disks seen: {seen}")]
    NoneFits { need_mib: u64, seen: String },
}

impl Hint {
    /// Parse `size>=N`, `serial=…`, `model=…`, `name=…`.
    pub fn parse(s: &str) -> Result<Self, ChooseError> {
        let s = s.trim();
        let bad = || ChooseError::BadHint(s.to_string());
        if let Some(n) = s.strip_prefix("size>=") {
            let n = n.trim().trim_end_matches("GiB").trim_end_matches('G');
            return n.parse().map(Hint::SizeAtLeastGib).map_err(|_| bad());
        }
        let (k, v) = s.split_once('=').ok_or_else(bad)?;
        if v.is_empty() {
            return Err(bad());
        }
        match k.trim() {
            "serial" => Ok(Hint::Serial(v.to_string())),
            "model" => Ok(Hint::Model(v.to_string())),
            "name" => Ok(Hint::Name(v.trim_start_matches("/dev/").to_string())),
            _ => Err(bad()),
        }
    }

    fn matches(&self, d: &Disk) -> bool {
        match self {
            Hint::SizeAtLeastGib(n) => d.size_bytes >= n << 30,
            Hint::Serial(s) => d.serial == *s,
            Hint::Model(m) => d.model.contains(m.as_str()),
            Hint::Name(n) => d.name == *n,
        }
    }
}

/// The disks as a person reads them in an error: `vda (2048 MiB, model "QEMU", serial "x")`.
pub fn describe(disks: &[Disk]) -> String {
    if disks.is_empty() {
        return "none".into();
    }
    disks
        .iter()
        .map(|d| {
            format!(
                "{} ({} MiB, model {:?}, serial {:?})",
                d.name,
                d.size_bytes >> 20,
                d.model,
                d.serial
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The disk to deploy onto: the smallest one matching the hint (all disks without one) that
/// holds `min_disk_mib`. A hint that names exactly one disk too small for the image is an error
/// about that disk, not a silent fallback to another.
pub fn choose<'a>(
    disks: &'a [Disk],
    hint: Option<&str>,
    min_disk_mib: u64,
) -> Result<&'a Disk, ChooseError> {
    let seen = describe(disks);
    let hint = hint.map(Hint::parse).transpose()?;
    let mut candidates: Vec<&Disk> = disks
        .iter()
        .filter(|d| hint.as_ref().is_none_or(|h| h.matches(d)))
        .collect();
    if candidates.is_empty() {
        return Err(ChooseError::NoMatch {
            hint: format!("{hint:?}"),
            seen,
        });
    }
    candidates.sort_by_key(|d| (d.size_bytes, d.name.clone()));
    let need = min_disk_mib << 20;
    match candidates.iter().find(|d| d.size_bytes >= need) {
        Some(d) => Ok(d),
        None if candidates.len() == 1 => Err(ChooseError::TooSmall {
            disk: candidates[0].name.clone(),
            size_mib: candidates[0].size_bytes >> 20,
            need_mib: min_disk_mib,
            seen,
        }),
        None => Err(ChooseError::NoneFits {
            need_mib: min_disk_mib,
            seen,
        }),
    }
}

/// What a partition is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    BiosBoot,
    Esp,
    Root,
    State,
}

/// One partition of the plan, in sectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// GPT entry number (1-based, also the kernel's partition number).
    pub number: u32,
    pub role: Role,
    pub name: &'static str,
    pub first_lba: u64,
    pub sectors: u64,
}

impl Part {
    pub fn bytes(&self) -> u64 {
        self.sectors * SECTOR
    }
    pub fn offset(&self) -> u64 {
        self.first_lba * SECTOR
    }
}

/// Why a layout does not fit a disk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the layout needs {need_mib} MiB (root at least 1 MiB) but the disk has {disk_mib} MiB")]
pub struct LayoutError {
    pub need_mib: u64,
    pub disk_mib: u64,
}

/// Place the layout's partitions on a disk of `disk_bytes`: BIOS boot, ESP, root, then state
/// ending on the last 1 MiB boundary before the backup GPT. Root takes `root_mib` or what is left.
pub fn plan(layout: &Layout, disk_bytes: u64) -> Result<Vec<Part>, LayoutError> {
    let total = disk_bytes / SECTOR;
    // The last usable sector is total - 34 (backup header + entries); round its end down.
    let end = total.saturating_sub(GPT_SECTORS + 1) / ALIGN_SECTORS * ALIGN_SECTORS;
    let mib = |m: u64| m * ALIGN_SECTORS;
    let mut parts = Vec::new();
    let mut at = ALIGN_SECTORS;
    let mut push = |role, name, first, sectors| {
        parts.push(Part {
            number: parts.len() as u32 + 1,
            role,
            name,
            first_lba: first,
            sectors,
        })
    };
    // The optional boot partitions first, each where the layout asks for one.
    for (role, name, size_mib) in [
        (
            Role::BiosBoot,
            images::manifest::PART_BIOS,
            layout.bios_boot_mib,
        ),
        (Role::Esp, images::manifest::PART_ESP, layout.esp_mib),
    ] {
        if size_mib > 0 {
            push(role, name, at, mib(size_mib));
            at += mib(size_mib);
        }
    }
    let fixed = at + mib(layout.state_mib) + layout.root_mib.map(mib).unwrap_or(ALIGN_SECTORS);
    if fixed > end {
        return Err(LayoutError {
            need_mib: (fixed + GPT_SECTORS + 1).div_ceil(ALIGN_SECTORS),
            disk_mib: disk_bytes >> 20,
        });
    }
    let state_first = match layout.root_mib {
        Some(r) => at + mib(r),
        None => end - mib(layout.state_mib),
    };
    push(
        Role::Root,
        images::manifest::PART_ROOT,
        at,
        state_first - at,
    );
    push(
        Role::State,
        images::manifest::PART_STATE,
        state_first,
        mib(layout.state_mib),
    );
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(name: &str, mib: u64, model: &str, serial: &str) -> Disk {
        Disk {
            name: name.into(),
            size_bytes: mib << 20,
            model: model.into(),
            serial: serial.into(),
            rotational: false,
        }
    }

    #[test]
    fn hints_parse() {
        assert_eq!(Hint::parse("size>=20").unwrap(), Hint::SizeAtLeastGib(20));
        assert_eq!(Hint::parse("size>=20G").unwrap(), Hint::SizeAtLeastGib(20));
        assert_eq!(
            Hint::parse("serial=ABC 1").unwrap(),
            Hint::Serial("ABC 1".into())
        );
        assert_eq!(
            Hint::parse("model=QEMU").unwrap(),
            Hint::Model("QEMU".into())
        );
        assert_eq!(
            Hint::parse("name=/dev/vdb").unwrap(),
            Hint::Name("vdb".into())
        );
        for bad in ["size>=x", "colour=red", "vda", "serial="] {
            assert!(
                matches!(Hint::parse(bad), Err(ChooseError::BadHint(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn choice_follows_hint_and_size() {
        let disks = [
            disk("vda", 4096, "QEMU HARDDISK", "s-a"),
            disk("vdb", 1024, "QEMU HARDDISK", "s-b"),
            disk("sda", 30 << 10, "SAMSUNG SSD", "s-c"),
        ];
        // No hint: the smallest that fits.
        assert_eq!(choose(&disks, None, 512).unwrap().name, "vdb");
        assert_eq!(choose(&disks, None, 2000).unwrap().name, "vda");
        assert_eq!(choose(&disks, Some("size>=20"), 512).unwrap().name, "sda");
        assert_eq!(choose(&disks, Some("serial=s-a"), 512).unwrap().name, "vda");
        assert_eq!(
            choose(&disks, Some("model=SAMSUNG"), 512).unwrap().name,
            "sda"
        );
        assert_eq!(choose(&disks, Some("name=vdb"), 512).unwrap().name, "vdb");
    }

    #[test]
    fn errors_name_the_disks_seen() {
        let disks = [disk("vda", 100, "QEMU", "x")];
        let e = choose(&disks, None, 512).unwrap_err();
        assert!(matches!(e, ChooseError::TooSmall { .. }));
        let msg = e.to_string();
        assert!(msg.contains("vda (100 MiB"), "{msg}");
        assert!(msg.contains("512 MiB"), "{msg}");
        let e = choose(&disks, Some("serial=nope"), 1).unwrap_err();
        assert!(e.to_string().contains("disks seen: vda"), "{e}");
        let e = choose(&[], None, 1).unwrap_err();
        assert!(e.to_string().contains("disks seen: none"), "{e}");
        let two = [disk("vda", 100, "", ""), disk("vdb", 200, "", "")];
        let e = choose(&two, None, 512).unwrap_err().to_string();
        assert!(e.contains("vda") && e.contains("vdb"), "{e}");
    }

    #[test]
    fn layout_default_on_one_gib() {
        let parts = plan(&Layout::default(), 1 << 30).unwrap();
        let roles: Vec<_> = parts.iter().map(|p| (p.number, p.role, p.name)).collect();
        assert_eq!(
            roles,
            [
                (1, Role::BiosBoot, "seed-bios"),
                (2, Role::Esp, "seed-esp"),
                (3, Role::Root, "seed-root"),
                (4, Role::State, "seed-state"),
            ]
        );
        // 1 MiB gap, 1 MiB BIOS, 64 MiB ESP, root, 64 MiB state, then the last (partial) MiB
        // holds the backup GPT.
        assert_eq!(parts[0].offset(), 1 << 20);
        assert_eq!(parts[1].offset(), 2 << 20);
        assert_eq!(parts[2].offset(), 66 << 20);
        assert_eq!(parts[3].bytes(), 64 << 20);
        let state_end = parts[3].offset() + parts[3].bytes();
        assert_eq!(state_end, 1023 << 20);
        assert_eq!(parts[2].bytes(), (1023 - 64 - 66) << 20);
        for w in parts.windows(2) {
            assert_eq!(w[0].first_lba + w[0].sectors, w[1].first_lba);
        }
        for p in &parts {
            assert_eq!(p.first_lba % ALIGN_SECTORS, 0);
        }
    }

    #[test]
    fn layout_fixed_root_and_no_boot_partitions() {
        let l = Layout {
            bios_boot_mib: 0,
            esp_mib: 0,
            root_mib: Some(100),
            state_mib: 10,
        };
        let parts = plan(&l, 1 << 30).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!((parts[0].role, parts[0].number), (Role::Root, 1));
        assert_eq!(parts[0].bytes(), 100 << 20);
        assert_eq!(parts[1].offset(), 101 << 20);
    }

    #[test]
    fn layout_too_big() {
        let e = plan(&Layout::default(), 100 << 20).unwrap_err();
        assert_eq!(e.disk_mib, 100);
        assert!(e.need_mib > 100, "{e}");
        // Exactly enough: 1 + 1 + 64 + 1 (root) + 64 + 1 (backup GPT).
        assert!(plan(&Layout::default(), 132 << 20).is_ok());
        assert!(plan(&Layout::default(), 131 << 20).is_err());
    }
}
