//! The deploy's last check: what it wrote is on the disk itself, not only in the page cache.

use super::{choose, io_err, DeployError};
use std::fs::OpenOptions;
use std::io;
use std::path::Path;
use std::time::Duration;

/// Check that the end of the deploy is on the disk itself, as the node's next boot (after a
/// power cycle by its BMC) will find it: the root partition's first 4 KiB read back past the
/// page cache must hold extlinux's boot sector and a cleanly unmounted ext4 (no journal to
/// replay). Once under TCG a deploy reported success with the root still as `mke2fs` left it,
/// and the node never booted; now such a deploy fails with this reason (and is wiped). One more
/// sync and a second look before giving up.
pub(super) fn on_disk(dev: &Path, root: &choose::Part) -> Result<(), DeployError> {
    let mut why =
        check_root_head(&read_back(dev, root.offset()).map_err(io_err("reading back", dev))?);
    if why.is_some() {
        tracing::warn!(
            "{}: {}; syncing again",
            dev.display(),
            why.unwrap_or_default()
        );
        OpenOptions::new()
            .write(true)
            .open(dev)
            .and_then(|f| f.sync_all())
            .map_err(io_err("syncing", dev))?;
        std::thread::sleep(Duration::from_secs(1));
        why = check_root_head(&read_back(dev, root.offset()).map_err(io_err("reading back", dev))?);
    }
    match why {
        None => Ok(()),
        Some(what) => Err(DeployError::NotOnDisk {
            dev: dev.into(),
            what,
        }),
    }
}

/// 4 KiB of `dev` at `offset` with `O_DIRECT` (what the disk holds, not the page cache), or a
/// plain read where direct I/O is not supported (an image file on tmpfs in tests).
fn read_back(dev: &Path, offset: u64) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    const LEN: usize = 4096;
    // O_DIRECT wants an aligned buffer: an aligned window of a larger one.
    let mut buf = vec![0u8; 2 * LEN];
    let start = buf.as_ptr().align_offset(LEN);
    let window = &mut buf[start..start + LEN];
    let direct = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECT)
        .open(dev);
    let f = match direct {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => std::fs::File::open(dev)?,
        Err(e) => return Err(e),
    };
    f.read_exact_at(window, offset)?;
    Ok(window.to_vec())
}

/// What is wrong with the first 4 KiB of a deployed root partition, if anything: extlinux's
/// boot sector (signature 55 AA) and an ext4 superblock without `needs_recovery`.
pub fn check_root_head(head: &[u8]) -> Option<&'static str> {
    if head.len() < 2048 {
        return Some("short read");
    }
    let sb = &head[1024..2048];
    if sb[0x38..0x3a] != [0x53, 0xef] {
        return Some("no ext4 superblock on the root partition");
    }
    let incompat = u32::from_le_bytes([sb[0x60], sb[0x61], sb[0x62], sb[0x63]]);
    if incompat & 0x4 != 0 {
        return Some("the root filesystem is not cleanly unmounted on the disk");
    }
    if head[510..512] != [0x55, 0xaa] {
        return Some("no boot sector on the root partition");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A root head as a finished deploy leaves it, then as the node that never booted had it.
    #[test]
    fn the_root_head_check_wants_a_boot_sector_and_a_clean_ext4() {
        let mut head = vec![0u8; 4096];
        head[510..512].copy_from_slice(&[0x55, 0xaa]);
        head[1024 + 0x38..1024 + 0x3a].copy_from_slice(&[0x53, 0xef]);
        head[1024 + 0x60] = 0x42; // filetype, extents: clean
        assert_eq!(check_root_head(&head), None);
        let mut unclean = head.clone();
        unclean[1024 + 0x60] = 0x46; // + needs_recovery
        assert!(check_root_head(&unclean)
            .unwrap()
            .contains("not cleanly unmounted"));
        let mut no_vbr = head.clone();
        no_vbr[..512].fill(0);
        assert!(check_root_head(&no_vbr).unwrap().contains("boot sector"));
        assert!(check_root_head(&[0u8; 4096])
            .unwrap()
            .contains("superblock"));
        assert!(check_root_head(&head[..100]).is_some());
    }
}
