//! What makes the written root bootable and the node know itself: `/etc/fstab`, the identity
//! file, extlinux for BIOS (config + `extlinux --install`), and the ESP for UEFI (systemd-boot as
//! the fallback loader `EFI/BOOT/BOOTX64.EFI`, a loader entry, kernel and initrd copied).
//!
//! The ESP is written with the `fatfs` crate rather than `mkfs.vfat` + a vfat mount: no extra
//! binary in the ramdisk, no vfat/nls modules needed, and the files land without a mount.

use images::{Boot, Identity};
use std::io::{self, Read, Seek, Write};
use std::path::Path;

/// The filesystem UUIDs the deploy chose (it passes them to mke2fs / the FAT formatter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uuids {
    pub root: String,
    pub state: String,
    /// FAT volume id, `XXXX-XXXX` as blkid and fstab spell it.
    pub esp: Option<String>,
}

/// `/etc/fstab` of the deployed image: root read-only by UUID, state read-write at
/// [`images::manifest::STATE_MOUNT`], the ESP at `/boot/efi` when there is one.
pub fn fstab(u: &Uuids) -> String {
    let mut s = String::from("# written by the seed deploy agent\n");
    s.push_str(&format!("UUID={} / ext4 ro,noatime 0 1\n", u.root));
    s.push_str(&format!(
        "UUID={} {} ext4 rw,noatime,nodev,nosuid 0 2\n",
        u.state,
        images::manifest::STATE_MOUNT
    ));
    if let Some(esp) = &u.esp {
        s.push_str(&format!("UUID={esp} /boot/efi vfat ro,umask=0077 0 2\n"));
    }
    s
}

/// `rel` inside `root`, following symlinks as if `root` were `/` (at most 40 of them): an
/// image's `boot/vmlinuz -> /boot/vmlinuz-6.1…` resolves in the image, and no symlink leads the
/// deploy's reads or writes out of it. Missing components are fine (they are created later).
pub fn resolve_in(root: &Path, rel: &str) -> io::Result<std::path::PathBuf> {
    use std::collections::VecDeque;
    let mut todo: VecDeque<String> = rel
        .split('/')
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect();
    let mut cur = std::path::PathBuf::new();
    let mut hops = 0;
    while let Some(c) = todo.pop_front() {
        match c.as_str() {
            "." => continue,
            ".." => {
                cur.pop();
                continue;
            }
            _ => {}
        }
        let next = cur.join(&c);
        let full = root.join(&next);
        match std::fs::symlink_metadata(&full) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    return Err(io::Error::other(format!(
                        "too many symbolic links resolving {rel} in the image"
                    )));
                }
                let target = std::fs::read_link(&full)?;
                let t = target.to_string_lossy();
                if t.starts_with('/') {
                    cur = std::path::PathBuf::new();
                }
                for part in t.split('/').filter(|p| !p.is_empty()).rev() {
                    todo.push_front(part.to_string());
                }
            }
            _ => cur = next,
        }
    }
    Ok(root.join(cur))
}

/// The image's own `/etc/fstab` (`existing`) with the deploy's entries: lines for `/`, the
/// state mount and `/boot/efi` are replaced by [`fstab`]'s, every other line (`proc`, tmpfs …)
/// is kept.
pub fn fstab_merged(existing: &str, u: &Uuids) -> String {
    let ours = ["/", images::manifest::STATE_MOUNT, "/boot/efi"];
    let mut s = fstab(u);
    for line in existing.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if t.split_whitespace()
            .nth(1)
            .is_some_and(|m| ours.contains(&m))
        {
            continue;
        }
        s.push_str(line);
        s.push('\n');
    }
    s
}

/// The kernel command line the deployed image boots with.
pub fn cmdline(boot: &Boot, root_uuid: &str) -> String {
    let base = boot.cmdline.trim();
    if base.is_empty() {
        format!("root=UUID={root_uuid} ro")
    } else {
        format!("{base} root=UUID={root_uuid} ro")
    }
}

/// `extlinux.conf`: boot the image's kernel (paths from the root of the root filesystem).
pub fn extlinux_conf(boot: &Boot, root_uuid: &str) -> String {
    let mut s = String::from(
        "# written by the seed deploy agent\nDEFAULT seed\nPROMPT 0\nTIMEOUT 0\nLABEL seed\n",
    );
    s.push_str(&format!(
        "  LINUX /{}\n",
        boot.kernel.trim_start_matches('/')
    ));
    if let Some(i) = &boot.initrd {
        s.push_str(&format!("  INITRD /{}\n", i.trim_start_matches('/')));
    }
    s.push_str(&format!("  APPEND {}\n", cmdline(boot, root_uuid)));
    s
}

/// systemd-boot's loader entry for the image (kernel and initrd copied to `/seed/` on the ESP).
pub fn loader_entry(boot: &Boot, root_uuid: &str, title: &str) -> String {
    let mut s = format!("title {title}\nlinux /seed/vmlinuz\n");
    if boot.initrd.is_some() {
        s.push_str("initrd /seed/initrd\n");
    }
    s.push_str(&format!("options {}\n", cmdline(boot, root_uuid)));
    s
}

/// Write the identity file (mode 0600) into the mounted state filesystem.
pub fn write_identity(state_root: &Path, id: &Identity) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = state_root.join(images::manifest::IDENTITY_FILE);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    f.write_all(&serde_json::to_vec_pretty(id).map_err(io::Error::other)?)?;
    f.write_all(b"\n")?;
    f.sync_all()
}

/// Files to put on the ESP: (path on the ESP, contents source).
pub enum EspFile<'a> {
    Bytes(&'a str, Vec<u8>),
    Copy(&'a str, &'a Path),
}

/// Format `dev` (the ESP partition, opened read-write) as FAT and write `files` into it.
pub fn write_esp<D: Read + Write + Seek>(
    dev: D,
    volume_id: u32,
    files: &[EspFile<'_>],
) -> io::Result<()> {
    write_fat(dev, volume_id, "SEED-ESP", files)
}

/// Format `dev` as FAT with `volume_id` and `label` (at most 11 bytes) and write `files` into
/// it, creating their directories (also how `cargo xtask appliance` makes its FAT images).
pub fn write_fat<D: Read + Write + Seek>(
    mut dev: D,
    volume_id: u32,
    label: &str,
    files: &[EspFile<'_>],
) -> io::Result<()> {
    let mut padded = [b' '; 11];
    padded[..label.len()].copy_from_slice(label.as_bytes());
    fatfs::format_volume(
        &mut dev,
        fatfs::FormatVolumeOptions::new()
            .volume_id(volume_id)
            .volume_label(padded),
    )?;
    dev.seek(io::SeekFrom::Start(0))?;
    let fs = fatfs::FileSystem::new(&mut dev, fatfs::FsOptions::new())?;
    {
        let root = fs.root_dir();
        for f in files {
            let (path, mut src): (&str, Box<dyn Read>) = match f {
                EspFile::Bytes(p, b) => (p, Box::new(&b[..])),
                EspFile::Copy(p, from) => (p, Box::new(std::fs::File::open(from)?)),
            };
            // Create the parent directories one level at a time.
            let mut dir = root.clone();
            let mut parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
            let name = parts
                .pop()
                .ok_or_else(|| io::Error::other("empty ESP path"))?;
            for p in parts {
                dir = match dir.open_dir(p) {
                    Ok(d) => d,
                    Err(_) => dir.create_dir(p)?,
                };
            }
            let mut out = dir.create_file(name)?;
            out.truncate()?;
            // fatfs writes cluster by cluster; a large copy buffer keeps the kernel copy quick.
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = src.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n])?;
            }
            out.flush()?;
        }
    }
    fs.unmount()?;
    dev.flush()
}

/// `XXXX-XXXX`, how blkid and fstab spell a FAT volume id.
pub fn fat_uuid(volume_id: u32) -> String {
    format!("{:04X}-{:04X}", volume_id >> 16, volume_id & 0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot(initrd: bool) -> Boot {
        Boot {
            kernel: "boot/vmlinuz".into(),
            initrd: initrd.then(|| "boot/initrd.img".into()),
            cmdline: "console=ttyS0".into(),
        }
    }

    #[test]
    fn fstab_lines() {
        let f = fstab(&Uuids {
            root: "r".into(),
            state: "s".into(),
            esp: Some("ABCD-0123".into()),
        });
        assert!(f.contains("UUID=r / ext4 ro,"), "{f}");
        assert!(f.contains("UUID=s /var/lib/seed ext4 rw,"), "{f}");
        assert!(f.contains("UUID=ABCD-0123 /boot/efi vfat"), "{f}");
        let f = fstab(&Uuids {
            root: "r".into(),
            state: "s".into(),
            esp: None,
        });
        assert!(!f.contains("/boot/efi"));
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        use std::os::unix::fs::symlink;
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("boot")).unwrap();
        symlink("/boot/vmlinuz-6.1", r.join("boot/vmlinuz")).unwrap();
        symlink("../../../../..", r.join("up")).unwrap();
        symlink("/etc", r.join("loop")).unwrap();
        std::fs::create_dir(r.join("etc")).unwrap();
        symlink("/loop2", r.join("loop2")).unwrap();
        assert_eq!(
            resolve_in(r, "boot/vmlinuz").unwrap(),
            r.join("boot/vmlinuz-6.1")
        );
        assert_eq!(resolve_in(r, "up/etc/fstab").unwrap(), r.join("etc/fstab"));
        assert_eq!(resolve_in(r, "/loop/fstab").unwrap(), r.join("etc/fstab"));
        assert_eq!(
            resolve_in(r, "var/lib/seed").unwrap(),
            r.join("var/lib/seed")
        );
        assert!(resolve_in(r, "loop2/x").is_err());
    }

    #[test]
    fn fstab_keeps_the_image_lines() {
        let u = Uuids {
            root: "r".into(),
            state: "s".into(),
            esp: None,
        };
        let f = fstab_merged(
            "# image\nproc /proc proc defaults 0 0\n/dev/sda1 / ext4 rw 0 1\nLABEL=x /var/lib/seed ext4 rw 0 2\n",
            &u,
        );
        assert!(f.contains("proc /proc proc defaults 0 0\n"), "{f}");
        assert!(!f.contains("/dev/sda1"), "{f}");
        assert!(!f.contains("LABEL=x"), "{f}");
        assert!(f.contains("UUID=r / ext4 ro"), "{f}");
        assert_eq!(f.matches(" / ").count(), 1, "{f}");
    }

    #[test]
    fn boot_configs() {
        let c = extlinux_conf(&boot(true), "u-1");
        assert!(c.contains("LINUX /boot/vmlinuz\n"), "{c}");
        assert!(c.contains("INITRD /boot/initrd.img\n"), "{c}");
        assert!(c.contains("APPEND console=ttyS0 root=UUID=u-1 ro\n"), "{c}");
        let c = extlinux_conf(&boot(false), "u-1");
        assert!(!c.contains("INITRD"));
        let e = loader_entry(&boot(true), "u-1", "tiny");
        assert!(
            e.contains("linux /seed/vmlinuz\ninitrd /seed/initrd\n"),
            "{e}"
        );
        assert!(e.contains("options console=ttyS0 root=UUID=u-1 ro"), "{e}");
        assert_eq!(fat_uuid(0xabcd0123), "ABCD-0123");
    }

    #[test]
    fn esp_round_trip() {
        let mut img = std::io::Cursor::new(vec![0u8; 40 << 20]);
        write_esp(
            &mut img,
            0x1234abcd,
            &[
                EspFile::Bytes("EFI/BOOT/BOOTX64.EFI", b"MZ-efi".to_vec()),
                EspFile::Bytes("loader/entries/seed.conf", b"title x\n".to_vec()),
            ],
        )
        .unwrap();
        img.set_position(0);
        let fs = fatfs::FileSystem::new(&mut img, fatfs::FsOptions::new()).unwrap();
        assert_eq!(fs.volume_id(), 0x1234abcd);
        let mut s = String::new();
        fs.root_dir()
            .open_file("EFI/BOOT/BOOTX64.EFI")
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "MZ-efi");
    }
}
