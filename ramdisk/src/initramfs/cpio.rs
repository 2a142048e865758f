//! A deterministic writer for the Linux initramfs format (cpio "newc", `070701`).
//!
//! Hand-written: the format is a 110-byte ASCII header per entry, and reproducibility needs full
//! control of every field (mtime 0, uid/gid 0, inode numbers assigned in order, entries sorted),
//! which the general cpio crates do not promise.

use std::collections::BTreeMap;
use std::io::{self, Write};

/// One entry of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
}

/// An in-memory initramfs tree, written out in path order so the same tree gives the same bytes.
#[derive(Debug, Default, Clone)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    /// Add a directory and its parents (mode 0755).
    pub fn dir(&mut self, path: &str) {
        let path = path.trim_matches('/');
        let mut cur = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !cur.is_empty() {
                cur.push('/');
            }
            cur.push_str(part);
            self.entries
                .entry(cur.clone())
                .or_insert(Entry::Dir { mode: 0o755 });
        }
    }

    /// Add a directory with its own mode (parents 0755 if missing; an existing one takes it).
    pub fn dir_mode(&mut self, path: &str, mode: u32) {
        self.dir(path);
        let path = path.trim_matches('/');
        if !path.is_empty() {
            self.entries.insert(path.to_string(), Entry::Dir { mode });
        }
    }

    fn parent(&mut self, path: &str) {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
    }

    /// Add a regular file (parents created).
    pub fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) {
        let path = path.trim_matches('/').to_string();
        self.parent(&path);
        self.entries.insert(path, Entry::File { mode, data });
    }

    /// Add a symbolic link (parents created).
    pub fn symlink(&mut self, path: &str, target: &str) {
        let path = path.trim_matches('/').to_string();
        self.parent(&path);
        self.entries.insert(
            path,
            Entry::Symlink {
                target: target.to_string(),
            },
        );
    }

    /// Whether a path is present.
    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(path.trim_matches('/'))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the archive is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Write the archive in newc format, ending with the `TRAILER!!!` entry.
    pub fn write_newc<W: Write>(&self, mut w: W) -> io::Result<()> {
        let mut written = 0usize;
        for (ino, (path, entry)) in (1u32..).zip(&self.entries) {
            let (mode, data): (u32, &[u8]) = match entry {
                Entry::Dir { mode } => (0o040000 | mode, &[]),
                Entry::File { mode, data } => (0o100000 | mode, data),
                Entry::Symlink { target } => (0o120777, target.as_bytes()),
            };
            let nlink = if matches!(entry, Entry::Dir { .. }) {
                2
            } else {
                1
            };
            written += write_entry(&mut w, ino, mode, nlink, path, data)?;
        }
        written += write_entry(&mut w, 0, 0, 1, "TRAILER!!!", &[])?;
        // Pad the archive to a 512-byte boundary, as GNU cpio does.
        let pad = (512 - written % 512) % 512;
        w.write_all(&vec![0; pad])?;
        Ok(())
    }
}

fn write_entry<W: Write>(
    w: &mut W,
    ino: u32,
    mode: u32,
    nlink: u32,
    name: &str,
    data: &[u8],
) -> io::Result<usize> {
    let namesize = name.len() + 1;
    let header = format!(
        "070701{ino:08x}{mode:08x}{uid:08x}{gid:08x}{nlink:08x}{mtime:08x}{size:08x}{dmaj:08x}{dmin:08x}{rmaj:08x}{rmin:08x}{namesize:08x}{check:08x}",
        uid = 0,
        gid = 0,
        mtime = 0,
        size = data.len(),
        dmaj = 0,
        dmin = 0,
        rmaj = 0,
        rmin = 0,
        check = 0
    );
    w.write_all(header.as_bytes())?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    let mut n = header.len() + namesize;
    let pad = (4 - n % 4) % 4;
    w.write_all(&[0; 3][..pad])?;
    n += pad;
    w.write_all(data)?;
    n += data.len();
    let pad = (4 - n % 4) % 4;
    w.write_all(&[0; 3][..pad])?;
    Ok(n + pad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout_is_aligned_and_deterministic() {
        let mut a = Archive::default();
        a.file("bin/hello", 0o755, b"#!/bin/sh\necho hi\n".to_vec());
        a.symlink("bin/sh", "busybox");
        let mut out = Vec::new();
        a.write_newc(&mut out).unwrap();
        assert_eq!(out.len() % 512, 0);
        assert!(out.starts_with(b"070701"));
        // Entries in path order: "bin" (dir), "bin/hello", "bin/sh", trailer.
        let text = String::from_utf8_lossy(&out);
        let (d, f, s, t) = (
            text.find("bin\0").unwrap(),
            text.find("bin/hello\0").unwrap(),
            text.find("bin/sh\0").unwrap(),
            text.find("TRAILER!!!\0").unwrap(),
        );
        assert!(d < f && f < s && s < t);
        // Header of bin/hello: mode 0100755, size 18.
        let h = &text[f - 110..f];
        assert_eq!(&h[14..22], "000081ed");
        assert_eq!(&h[54..62], "00000012");
        let mut again = Vec::new();
        a.clone().write_newc(&mut again).unwrap();
        assert_eq!(out, again);
    }

    #[test]
    fn cpio_tool_reads_what_we_write() {
        let Ok(status) = std::process::Command::new("cpio").arg("--version").output() else {
            panic!("cpio is not installed: run `cargo xtask deps`");
        };
        assert!(status.status.success());
        let mut a = Archive::default();
        a.file("etc/motd", 0o644, b"seed\n".to_vec());
        a.symlink("etc/alias", "motd");
        let dir = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        a.write_newc(&mut out).unwrap();
        let mut child = std::process::Command::new("cpio")
            .args(["-idm", "--quiet", "--no-absolute-filenames"])
            .current_dir(dir.path())
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&out).unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("etc/motd")).unwrap(),
            "seed\n"
        );
        assert_eq!(
            std::fs::read_link(dir.path().join("etc/alias"))
                .unwrap()
                .to_str()
                .unwrap(),
            "motd"
        );
    }
}
