//! Cleaning a node's disks ([`Command::Wipe`](super::Command::Wipe)): for each disk of the plan
//! (found by serial, else by kernel name, among the agent's facts), zero the first and last MiB
//! of the disk (MBR, primary and backup GPT) and of every partition its table lists now (GPT
//! primary or MBR: filesystem superblocks, RAID/LVM labels), plus the ranges the seed asked;
//! or the whole disk when `full`. A disk the agent cannot find is refused before anything is
//! written, with the reason.
//!
//! The table reader is hand-written: it needs only each partition's byte range, and it must be
//! lenient (a table with a bad CRC still names partitions worth wiping), where the GPT crates
//! validate and refuse.

use super::deploy::{reread, zero};
use super::facts::Disk;
use super::{WipeCommand, WipeExtent};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

const MIB: u64 = 1 << 20;
/// Zeroed between two progress callbacks on a full wipe.
const CHUNK: u64 = 64 * MIB;

/// Why a wipe failed (printed with its sources, it is the reason the seed keeps).
#[derive(Debug, thiserror::Error)]
pub enum WipeError {
    #[error("disk {name:?} (serial {serial:?}) of the wipe plan is not on this machine")]
    NoSuchDisk { name: String, serial: String },
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What a wipe did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wiped {
    /// Kernel names of the disks cleaned.
    pub disks: Vec<String>,
    /// Bytes zeroed in all.
    pub bytes: u64,
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> WipeError + 'a {
    move |source| WipeError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Carry out `cmd` on `disks` (the agent's facts), device nodes under `dev_dir`.
/// `progress(bytes, total)` is called as the zeroing goes.
pub fn wipe(
    cmd: &WipeCommand,
    disks: &[Disk],
    dev_dir: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Wiped, WipeError> {
    // Match every disk first: a refused plan writes nothing.
    let mut targets: Vec<(&str, &[WipeExtent])> = Vec::new();
    if cmd.disks.is_empty() {
        targets.extend(disks.iter().map(|d| (d.name.as_str(), &[][..])));
    }
    for want in &cmd.disks {
        let found = if want.serial.is_empty() {
            disks.iter().find(|d| d.name == want.name)
        } else {
            disks.iter().find(|d| d.serial == want.serial)
        };
        let Some(d) = found else {
            return Err(WipeError::NoSuchDisk {
                name: want.name.clone(),
                serial: want.serial.clone(),
            });
        };
        targets.push((d.name.as_str(), &want.extents));
    }
    // Plan each disk's ranges (reading its table), then zero them.
    let mut plans = Vec::new();
    for (name, asked) in targets {
        let dev = dev_dir.join(name);
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&dev)
            .map_err(io_err("opening disk", &dev))?;
        let size = f
            .seek(SeekFrom::End(0))
            .map_err(io_err("sizing disk", &dev))?;
        let ranges = if cmd.full {
            vec![(0, size)]
        } else {
            let mut r = Vec::new();
            edges(0, size, &mut r);
            let parts =
                partitions(&mut f).map_err(io_err("reading the partition table of", &dev))?;
            tracing::info!(disk = name, size, partitions = parts.len(), "wipe plan");
            for (start, len) in parts {
                edges(start, len, &mut r);
            }
            for e in asked {
                r.push((e.offset, e.len));
            }
            merge(r, size)
        };
        plans.push((name.to_string(), dev, f, ranges));
    }
    let total: u64 = plans.iter().flat_map(|p| p.3.iter().map(|r| r.1)).sum();
    let mut done = 0;
    progress(done, total);
    for (_, dev, f, ranges) in &mut plans {
        for &(start, len) in ranges.iter() {
            let mut off = start;
            while off < start + len {
                let n = CHUNK.min(start + len - off);
                zero(f, off, n).map_err(io_err("zeroing", dev))?;
                off += n;
                done += n;
                progress(done, total);
            }
        }
        f.sync_all().map_err(io_err("syncing", dev))?;
    }
    for (_, dev, f, _) in plans.iter_mut() {
        // Only block devices take BLKRRPART (a file-backed disk in tests does not); with the
        // table gone the kernel drops the partitions, a failure leaves the disk as zeroed.
        let is_block = f
            .metadata()
            .map(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()))
            .unwrap_or(false);
        if is_block {
            if let Err(e) = reread(dev) {
                tracing::warn!("re-reading {} after wiping: {e}", dev.display());
            }
        }
    }
    Ok(Wiped {
        disks: plans.into_iter().map(|p| p.0).collect(),
        bytes: total,
    })
}

/// First and last MiB of `[start, start+len)` (all of it under 2 MiB).
fn edges(start: u64, len: u64, out: &mut Vec<(u64, u64)>) {
    if len <= 2 * MIB {
        out.push((start, len));
    } else {
        out.push((start, MIB));
        out.push((start + len - MIB, MIB));
    }
}

/// Clamp to `[0, size)`, sort, merge overlapping or touching ranges, drop empty ones.
fn merge(mut r: Vec<(u64, u64)>, size: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    r.retain_mut(|(s, l)| {
        let end = s.saturating_add(*l).min(size);
        *l = end.saturating_sub(*s);
        *l > 0
    });
    r.sort();
    for (s, l) in r {
        match out.last_mut() {
            Some((ps, pl)) if s <= *ps + *pl => *pl = (*pl).max(s + l - *ps),
            _ => out.push((s, l)),
        }
    }
    out
}

fn u32_at(b: &[u8], at: usize) -> u64 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes")) as u64
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn read_at(f: &mut File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    f.seek(SeekFrom::Start(offset))?;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The partitions of the disk's table as `(byte offset, byte length)`: the primary GPT's used
/// entries (512- or 4096-byte sectors), else the MBR's four primary entries (an extended one
/// counts as one range: its logical partitions are not followed). No table: none.
pub fn partitions(f: &mut File) -> io::Result<Vec<(u64, u64)>> {
    let mut mbr = [0u8; 512];
    if read_at(f, 0, &mut mbr)? < 512 || mbr[510..512] != [0x55, 0xaa] {
        return Ok(vec![]);
    }
    let entries: Vec<&[u8]> = (0..4).map(|i| &mbr[446 + 16 * i..][..16]).collect();
    if entries.iter().any(|e| e[4] == 0xee) {
        for sector in [512u64, 4096] {
            let mut h = [0u8; 92];
            if read_at(f, sector, &mut h)? == 92 && &h[..8] == b"EFI PART" {
                return gpt_entries(f, &h, sector);
            }
        }
        return Ok(vec![]);
    }
    Ok(entries
        .iter()
        .filter(|e| e[4] != 0)
        .map(|e| (u32_at(e, 8) * 512, u32_at(e, 12) * 512))
        .filter(|&(_, len)| len > 0)
        .collect())
}

fn gpt_entries(f: &mut File, h: &[u8], sector: u64) -> io::Result<Vec<(u64, u64)>> {
    let array_lba = u64_at(h, 72);
    let count = u32_at(h, 80);
    let size = u32_at(h, 84);
    // A sane array: entries of 128 bytes or more, at most 1 MiB of them.
    if size < 128 || count.saturating_mul(size) > MIB {
        return Ok(vec![]);
    }
    let mut array = vec![0u8; (count * size) as usize];
    let n = read_at(f, array_lba.saturating_mul(sector), &mut array)?;
    Ok(array[..n]
        .chunks_exact(size as usize)
        .filter(|e| e[..16].iter().any(|&b| b != 0))
        .filter_map(|e| {
            let (first, last) = (u64_at(e, 32), u64_at(e, 40));
            (last >= first).then(|| (first * sector, (last - first + 1) * sector))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::super::deploy::{choose, gpt};
    use super::super::WipeDisk;
    use super::*;
    use std::io::Write;

    const SIZE: u64 = 64 * MIB;

    fn disk(name: &str, serial: &str) -> Disk {
        Disk {
            name: name.into(),
            size_bytes: SIZE,
            model: "TEST".into(),
            serial: serial.into(),
            rotational: false,
        }
    }

    /// A 64 MiB file-backed disk full of 0xAA with the deploy's GPT on it.
    fn gpt_disk(dir: &Path, name: &str) -> Vec<choose::Part> {
        let path = dir.join(name);
        let mut f = File::create(&path).unwrap();
        f.write_all(&vec![0xaa; SIZE as usize]).unwrap();
        let layout = images::Layout {
            esp_mib: 8,
            bios_boot_mib: 1,
            state_mib: 8,
            ..images::Layout::default()
        };
        let parts = choose::plan(&layout, SIZE).unwrap();
        let guids: Vec<_> = (0..parts.len() as u128)
            .map(|i| uuid::Uuid::from_u128(i + 1))
            .collect();
        let t = gpt::tables(SIZE, uuid::Uuid::from_u128(9), &parts, &guids, &[0; 440]);
        f.seek(SeekFrom::Start(0)).unwrap();
        f.write_all(&t.head).unwrap();
        f.seek(SeekFrom::Start(t.tail_offset)).unwrap();
        f.write_all(&t.tail).unwrap();
        parts
    }

    fn cmd(full: bool, disks: Vec<WipeDisk>) -> WipeCommand {
        WipeCommand { op: 3, full, disks }
    }

    fn plan_disk(name: &str, serial: &str) -> WipeDisk {
        WipeDisk {
            name: name.into(),
            serial: serial.into(),
            size_bytes: SIZE,
            extents: vec![],
        }
    }

    fn zeroed(b: &[u8]) -> bool {
        b.iter().all(|&x| x == 0)
    }

    #[test]
    fn reads_the_gpt_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let parts = gpt_disk(dir.path(), "vda");
        let mut f = File::open(dir.path().join("vda")).unwrap();
        let found = partitions(&mut f).unwrap();
        let want: Vec<_> = parts.iter().map(|p| (p.offset(), p.bytes())).collect();
        assert_eq!(found, want);
    }

    #[test]
    fn reads_an_mbr() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sda");
        let mut b = vec![0u8; 4 * MIB as usize];
        b[510] = 0x55;
        b[511] = 0xaa;
        // One Linux partition at sector 2048, 4096 sectors; an empty slot after it.
        let e = &mut b[446..462];
        e[4] = 0x83;
        e[8..12].copy_from_slice(&2048u32.to_le_bytes());
        e[12..16].copy_from_slice(&4096u32.to_le_bytes());
        std::fs::write(&path, &b).unwrap();
        let found = partitions(&mut File::open(&path).unwrap()).unwrap();
        assert_eq!(found, vec![(MIB, 2 * MIB)]);
        std::fs::write(&path, vec![0u8; 4096]).unwrap();
        assert!(partitions(&mut File::open(&path).unwrap())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn wipes_table_and_partition_edges_only() {
        let dir = tempfile::tempdir().unwrap();
        let parts = gpt_disk(dir.path(), "vda");
        let mut calls = Vec::new();
        let w = wipe(
            &cmd(false, vec![plan_disk("vda", "")]),
            &[disk("vda", "S1")],
            dir.path(),
            &mut |b, t| calls.push((b, t)),
        )
        .unwrap();
        assert_eq!(w.disks, vec!["vda".to_string()]);
        let (last_b, last_t) = *calls.last().unwrap();
        assert_eq!((last_b, w.bytes), (last_t, last_t));
        let b = std::fs::read(dir.path().join("vda")).unwrap();
        assert!(zeroed(&b[..MIB as usize]), "primary GPT");
        assert!(zeroed(&b[(SIZE - MIB) as usize..]), "backup GPT");
        for p in &parts {
            let (s, e) = (p.offset() as usize, (p.offset() + p.bytes()) as usize);
            let m = (MIB as usize).min(e - s);
            assert!(zeroed(&b[s..s + m]), "start of partition {}", p.number);
            assert!(zeroed(&b[e - m..e]), "end of partition {}", p.number);
        }
        // The root's middle keeps its data: this was not a full wipe.
        let root = parts.iter().find(|p| p.role == choose::Role::Root).unwrap();
        let mid = (root.offset() + root.bytes() / 2) as usize;
        assert_eq!(b[mid], 0xaa);
        assert!(w.bytes < SIZE / 2, "{} bytes zeroed", w.bytes);
        // No table left.
        let mut f = File::open(dir.path().join("vda")).unwrap();
        assert!(partitions(&mut f).unwrap().is_empty());
    }

    #[test]
    fn full_wipe_zeroes_everything_by_serial() {
        let dir = tempfile::tempdir().unwrap();
        gpt_disk(dir.path(), "sdb");
        let w = wipe(
            // The seed knew the disk as sda; it is sdb now, with the same serial.
            &cmd(true, vec![plan_disk("sda", "S2")]),
            &[disk("sda", "OTHER"), disk("sdb", "S2")],
            dir.path(),
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!((w.disks, w.bytes), (vec!["sdb".to_string()], SIZE));
        assert!(zeroed(&std::fs::read(dir.path().join("sdb")).unwrap()));
    }

    #[test]
    fn refuses_an_unknown_disk_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        gpt_disk(dir.path(), "vda");
        let before = std::fs::read(dir.path().join("vda")).unwrap();
        let e = wipe(
            &cmd(false, vec![plan_disk("vda", ""), plan_disk("vdb", "")]),
            &[disk("vda", "")],
            dir.path(),
            &mut |_, _| {},
        )
        .unwrap_err();
        assert!(e.to_string().contains("\"vdb\""), "{e}");
        assert_eq!(std::fs::read(dir.path().join("vda")).unwrap(), before);
        // By serial: a disk of the same name with another serial is not the one.
        let e = wipe(
            &cmd(false, vec![plan_disk("vda", "GONE")]),
            &[disk("vda", "NEW")],
            dir.path(),
            &mut |_, _| {},
        )
        .unwrap_err();
        assert!(matches!(e, WipeError::NoSuchDisk { .. }), "{e}");
    }

    #[test]
    fn empty_plan_cleans_every_disk_seen() {
        let dir = tempfile::tempdir().unwrap();
        gpt_disk(dir.path(), "vda");
        gpt_disk(dir.path(), "vdb");
        let w = wipe(
            &cmd(false, vec![]),
            &[disk("vda", ""), disk("vdb", "")],
            dir.path(),
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(w.disks, vec!["vda".to_string(), "vdb".to_string()]);
        for d in ["vda", "vdb"] {
            let mut f = File::open(dir.path().join(d)).unwrap();
            assert!(partitions(&mut f).unwrap().is_empty(), "{d}");
        }
    }

    #[test]
    fn merges_ranges() {
        assert_eq!(
            merge(vec![(10, 5), (0, 4), (3, 2), (100, 50), (20, 0)], 120),
            vec![(0, 5), (10, 5), (100, 20)]
        );
    }
}
