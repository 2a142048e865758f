//! The cleaning plan: what to overwrite with zeros on each disk ([`WipePlan`]).

use crate::inventory::Disk;
use serde::{Deserialize, Serialize};

/// A byte range of a disk to overwrite with zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    pub offset: u64,
    pub len: u64,
}

/// What to wipe on one disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskWipe {
    /// Kernel name (`sda`), or the index `#0` when the disk was only declared.
    pub disk: String,
    pub size_bytes: u64,
    /// Sorted, non-overlapping.
    pub extents: Vec<Extent>,
}

/// The cleaning plan carried by [`Action::WipeDisks`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WipePlan {
    pub full: bool,
    pub disks: Vec<DiskWipe>,
}

pub(super) const MIB: u64 = 1 << 20;

impl WipePlan {
    /// Partition tables (first and last MiB of the disk: MBR, primary and backup GPT) and the
    /// first and last MiB of each partition (superblocks, RAID/LVM labels); or whole disks.
    pub fn for_disks(disks: &[Disk], full: bool) -> WipePlan {
        let disks = disks
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let size = d.size_bytes;
                let mut ext = Vec::new();
                if full {
                    ext.push(Extent {
                        offset: 0,
                        len: size,
                    });
                } else {
                    edges(0, size, &mut ext);
                    for p in &d.partitions {
                        let end = p.start_bytes.saturating_add(p.size_bytes).min(size);
                        if p.start_bytes < end {
                            edges(p.start_bytes, end - p.start_bytes, &mut ext);
                        }
                    }
                }
                DiskWipe {
                    disk: if d.name.is_empty() {
                        format!("#{i}")
                    } else {
                        d.name.clone()
                    },
                    size_bytes: size,
                    extents: merge(ext),
                }
            })
            .collect();
        WipePlan { full, disks }
    }
}

/// First and last MiB of `[start, start+len)` (the whole range when it is under 2 MiB).
fn edges(start: u64, len: u64, out: &mut Vec<Extent>) {
    if len == 0 {
        return;
    }
    if len <= 2 * MIB {
        out.push(Extent { offset: start, len });
    } else {
        out.push(Extent {
            offset: start,
            len: MIB,
        });
        out.push(Extent {
            offset: start + len - MIB,
            len: MIB,
        });
    }
}

fn merge(mut v: Vec<Extent>) -> Vec<Extent> {
    v.sort_by_key(|e| e.offset);
    let mut out: Vec<Extent> = Vec::with_capacity(v.len());
    for e in v {
        match out.last_mut() {
            Some(last) if e.offset <= last.offset + last.len => {
                let end = (e.offset + e.len).max(last.offset + last.len);
                last.len = end - last.offset;
            }
            _ => out.push(e),
        }
    }
    out
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::inventory::Partition;

    /// One inspected 100 MiB disk with a partition (also the lifecycle tests' inspection).
    pub(in crate::lifecycle) fn disks() -> Vec<Disk> {
        vec![Disk {
            name: "sda".into(),
            size_bytes: 100 * MIB,
            model: Some("QEMU".into()),
            serial: Some("S1".into()),
            partitions: vec![Partition {
                start_bytes: MIB,
                size_bytes: 50 * MIB,
            }],
        }]
    }

    #[test]
    fn wipe_plan_covers_tables_and_partition_edges() {
        let disks = disks();
        let plan = WipePlan::for_disks(&disks, false);
        // Disk [0,1M) and partition head [1M,2M) merge; partition tail [50M,51M); disk tail.
        assert_eq!(
            plan.disks[0].extents,
            vec![
                Extent {
                    offset: 0,
                    len: 2 * MIB
                },
                Extent {
                    offset: 50 * MIB,
                    len: MIB
                },
                Extent {
                    offset: 99 * MIB,
                    len: MIB
                },
            ]
        );
        let full = WipePlan::for_disks(&disks, true);
        assert_eq!(
            full.disks[0].extents,
            vec![Extent {
                offset: 0,
                len: 100 * MIB
            }]
        );
        // A tiny disk is wiped whole; a declared-only disk is named by index.
        let tiny = WipePlan::for_disks(
            &[Disk {
                size_bytes: MIB,
                ..Disk::default()
            }],
            false,
        );
        assert_eq!(tiny.disks[0].disk, "#0");
        assert_eq!(
            tiny.disks[0].extents,
            vec![Extent {
                offset: 0,
                len: MIB
            }]
        );
    }
}
