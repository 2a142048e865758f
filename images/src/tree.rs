//! The image's root filesystem as an in-memory tree, and its deterministic stream.
//!
//! Entries are kept sorted by path; file contents are bytes or a path read when the stream is
//! written. [`Tree::write_stream`] writes a ustar archive (GNU long-name records only for paths
//! ustar cannot hold) with mtime 0 and the declared owners, compressed with zstd at a fixed
//! level, hashing while writing: the same tree always gives the same sha256.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// The zstd level of every image stream (fixed: part of what makes builds reproducible).
pub const ZSTD_LEVEL: i32 = 19;

/// Where a file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Bytes(Vec<u8>),
    /// Read when the stream is written (kernels, packages: no copy held in memory).
    Path(PathBuf),
}

/// What a path is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File { source: Source, size: u64 },
    Symlink { target: String },
}

/// One entry with its owner and mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Why the tree refused a change or could not be written.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("{path}: {message}")]
    Conflict { path: String, message: String },
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> TreeError + '_ {
    move |source| TreeError::Io {
        path: path.into(),
        source,
    }
}

/// A root filesystem under construction. Paths are relative (`etc/inittab`), without `..`
/// (callers validate with [`crate::element::image_path`]).
#[derive(Debug, Default, Clone)]
pub struct Tree {
    entries: BTreeMap<String, Node>,
}

/// What [`Tree::write_stream`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub sha256: String,
    pub size: u64,
    /// Sum of the regular files' sizes.
    pub unpacked_size: u64,
}

impl Tree {
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.entries.get(path)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Remove an entry and everything below it.
    pub fn remove(&mut self, path: &str) {
        let below = format!("{path}/");
        self.entries
            .retain(|p, _| p != path && !p.starts_with(&below));
    }

    /// A directory and its missing parents (0755 root). An existing directory keeps its mode.
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<(), TreeError> {
        let mut cur = String::new();
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        for (i, part) in parts.iter().enumerate() {
            if !cur.is_empty() {
                cur.push('/');
            }
            cur.push_str(part);
            let last = i + 1 == parts.len();
            match self.entries.get(&cur) {
                Some(Node {
                    kind: Kind::Dir, ..
                }) => {}
                Some(Node {
                    kind: Kind::Symlink { target },
                    ..
                }) => {
                    return Err(TreeError::Conflict {
                        path: cur.clone(),
                        message: format!(
                            "is a symlink to {target}; write below the link's target instead"
                        ),
                    })
                }
                Some(_) => {
                    return Err(TreeError::Conflict {
                        path: cur.clone(),
                        message: "exists and is not a directory".into(),
                    })
                }
                None => {
                    self.entries.insert(
                        cur.clone(),
                        Node {
                            kind: Kind::Dir,
                            mode: if last { mode } else { 0o755 },
                            uid: 0,
                            gid: 0,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    fn parent(&mut self, path: &str) -> Result<(), TreeError> {
        match path.rsplit_once('/') {
            Some((p, _)) => self.dir(p, 0o755),
            None => Ok(()),
        }
    }

    fn put(&mut self, path: &str, node: Node) -> Result<(), TreeError> {
        self.parent(path)?;
        if let Some(Node {
            kind: Kind::Dir, ..
        }) = self.entries.get(path)
        {
            return Err(TreeError::Conflict {
                path: path.into(),
                message: "is a directory; cannot replace it with a file or link".into(),
            });
        }
        self.entries.insert(path.into(), node);
        Ok(())
    }

    /// A regular file from bytes (replaces an earlier file or link at the same path).
    pub fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) -> Result<(), TreeError> {
        let size = data.len() as u64;
        self.put(
            path,
            Node {
                kind: Kind::File {
                    source: Source::Bytes(data),
                    size,
                },
                mode,
                uid: 0,
                gid: 0,
            },
        )
    }

    /// A regular file read from `src` when the stream is written.
    pub fn file_from(&mut self, path: &str, mode: u32, src: &Path) -> Result<(), TreeError> {
        let size = std::fs::metadata(src).map_err(io_err(src))?.len();
        self.put(
            path,
            Node {
                kind: Kind::File {
                    source: Source::Path(src.into()),
                    size,
                },
                mode,
                uid: 0,
                gid: 0,
            },
        )
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), TreeError> {
        self.put(
            path,
            Node {
                kind: Kind::Symlink {
                    target: target.into(),
                },
                mode: 0o777,
                uid: 0,
                gid: 0,
            },
        )
    }

    /// Change the mode (and optionally owner) of an existing entry.
    pub fn chmod(
        &mut self,
        path: &str,
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<(), TreeError> {
        let n = self
            .entries
            .get_mut(path)
            .ok_or_else(|| TreeError::Conflict {
                path: path.into(),
                message: "is not in the image".into(),
            })?;
        n.mode = mode;
        if let Some((u, g)) = owner {
            n.uid = u;
            n.gid = g;
        }
        Ok(())
    }

    /// Copy a host directory onto `dest` (`""` = the root). Symlinks are copied as links (never
    /// followed), owners become root. `normalize` maps file modes to 0755/0644 by the owner's
    /// executable bit (for git checkouts, whose umask varies); otherwise the permission bits are
    /// kept (for unpacked packages).
    pub fn add_host_dir(
        &mut self,
        src: &Path,
        dest: &str,
        normalize: bool,
    ) -> Result<(), TreeError> {
        let mut names: Vec<_> = std::fs::read_dir(src)
            .map_err(io_err(src))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io_err(src))?;
        names.sort();
        for name in names {
            let Some(n) = name.to_str() else {
                return Err(TreeError::Conflict {
                    path: src.join(&name).display().to_string(),
                    message: "file name is not UTF-8".into(),
                });
            };
            let p = src.join(n);
            let rel = if dest.is_empty() {
                n.to_string()
            } else {
                format!("{dest}/{n}")
            };
            let meta = std::fs::symlink_metadata(&p).map_err(io_err(&p))?;
            let perm = {
                use std::os::unix::fs::PermissionsExt;
                meta.permissions().mode() & 0o7777
            };
            let ft = meta.file_type();
            if ft.is_symlink() {
                let t = std::fs::read_link(&p).map_err(io_err(&p))?;
                self.symlink(&rel, &t.to_string_lossy())?;
            } else if ft.is_dir() {
                self.dir(&rel, if normalize { 0o755 } else { perm })?;
                if let Some(n) = self.entries.get_mut(&rel) {
                    n.mode = if normalize { 0o755 } else { perm };
                }
                self.add_host_dir(&p, &rel, normalize)?;
            } else if ft.is_file() {
                let mode = if !normalize {
                    perm
                } else if perm & 0o100 != 0 {
                    0o755
                } else {
                    0o644
                };
                self.file_from(&rel, mode, &p)?;
            } else {
                return Err(TreeError::Conflict {
                    path: p.display().to_string(),
                    message: "is not a file, directory or symlink".into(),
                });
            }
        }
        Ok(())
    }

    /// Sum of the regular files' sizes.
    pub fn unpacked_size(&self) -> u64 {
        self.entries
            .values()
            .map(|n| match &n.kind {
                Kind::File { size, .. } => *size,
                _ => 0,
            })
            .sum()
    }

    /// Write the tar stream, uncompressed, to `w`.
    pub fn write_tar<W: Write>(&self, w: W) -> Result<W, TreeError> {
        let out = Path::new("<stream>");
        let mut b = tar::Builder::new(w);
        for (path, n) in &self.entries {
            let mut h = tar::Header::new_ustar();
            h.set_mode(n.mode);
            h.set_uid(n.uid.into());
            h.set_gid(n.gid.into());
            h.set_mtime(0);
            match &n.kind {
                Kind::Dir => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    b.append_data(&mut h, format!("{path}/"), io::empty())
                        .map_err(io_err(out))?;
                }
                Kind::Symlink { target } => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, path, target).map_err(io_err(out))?;
                }
                Kind::File { source, size } => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(*size);
                    match source {
                        Source::Bytes(d) => b.append_data(&mut h, path, &d[..]),
                        Source::Path(p) => {
                            let f = std::fs::File::open(p).map_err(io_err(p))?;
                            // A file that changed size since it was added must not corrupt
                            // the archive: read exactly `size` bytes and fail if short.
                            let mut r = f.take(*size);
                            let mut buf = Vec::with_capacity(*size as usize);
                            r.read_to_end(&mut buf).map_err(io_err(p))?;
                            if buf.len() as u64 != *size {
                                return Err(TreeError::Conflict {
                                    path: p.display().to_string(),
                                    message: "changed size while the image was built".into(),
                                });
                            }
                            b.append_data(&mut h, path, &buf[..])
                        }
                    }
                    .map_err(io_err(out))?;
                }
            }
        }
        b.into_inner().map_err(io_err(out))
    }

    /// Write `rootfs.tar.zst` to `dest` (via a temporary file beside it, [`fsutil::AtomicFile`]),
    /// returning its digest.
    pub fn write_stream(&self, dest: &Path) -> Result<Written, TreeError> {
        let f = fsutil::AtomicFile::new(dest).map_err(io_err(dest))?;
        let tmp = f.temp_path().to_path_buf();
        let hashing = HashingWriter {
            inner: io::BufWriter::new(f),
            hash: Sha256::new(),
            n: 0,
        };
        let mut enc = zstd::Encoder::new(hashing, ZSTD_LEVEL).map_err(io_err(&tmp))?;
        enc.include_checksum(true).map_err(io_err(&tmp))?;
        let enc = self.write_tar(enc)?;
        let mut hashing = enc.finish().map_err(io_err(&tmp))?;
        hashing.inner.flush().map_err(io_err(&tmp))?;
        hashing
            .inner
            .into_inner()
            .map_err(|e| io_err(&tmp)(e.into_error()))?
            .commit()
            .map_err(io_err(dest))?;
        Ok(Written {
            sha256: hex::encode(hashing.hash.finalize()),
            size: hashing.n,
            unpacked_size: self.unpacked_size(),
        })
    }
}

struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
    n: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.hash.update(&buf[..k]);
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(order: &[&str]) -> Tree {
        let mut t = Tree::default();
        for step in order {
            match *step {
                "file" => t
                    .file("etc/inittab", 0o644, b"::sysinit:/etc/rcS\n".to_vec())
                    .unwrap(),
                "link" => t.symlink("bin/sh", "busybox").unwrap(),
                "long" => t
                    .file(
                        &format!("usr/lib/{}/x", "d".repeat(150)),
                        0o600,
                        b"long".to_vec(),
                    )
                    .unwrap(),
                "dir" => t.dir("var/lib/seed", 0o700).unwrap(),
                _ => unreachable!(),
            }
        }
        t
    }

    #[test]
    fn stream_is_deterministic_whatever_the_insertion_order() {
        let d = tempfile::tempdir().unwrap();
        let a = sample(&["file", "link", "long", "dir"])
            .write_stream(&d.path().join("a.tar.zst"))
            .unwrap();
        let b = sample(&["dir", "long", "link", "file"])
            .write_stream(&d.path().join("b.tar.zst"))
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(
            std::fs::read(d.path().join("a.tar.zst")).unwrap(),
            std::fs::read(d.path().join("b.tar.zst")).unwrap()
        );
        let c = {
            let mut t = sample(&["file", "link", "long", "dir"]);
            t.chmod("etc/inittab", 0o600, None).unwrap();
            t.write_stream(&d.path().join("c.tar.zst")).unwrap()
        };
        assert_ne!(a.sha256, c.sha256, "a mode change must change the digest");
        let (sha, size) = crate::store::hash_file(&d.path().join("a.tar.zst")).unwrap();
        assert_eq!((sha, size), (a.sha256, a.size));
    }

    #[test]
    fn stream_reads_back_with_modes_owners_links_and_long_names() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.tar.zst");
        sample(&["file", "link", "long", "dir"])
            .write_stream(&p)
            .unwrap();
        let dec = zstd::Decoder::new(std::fs::File::open(&p).unwrap()).unwrap();
        let mut ar = tar::Archive::new(dec);
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            assert_eq!(h.mtime().unwrap(), 0);
            assert_eq!(h.uid().unwrap(), 0);
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mode = h.mode().unwrap();
            let link = e
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned());
            seen.push((path, mode, link));
        }
        let long = format!("usr/lib/{}/x", "d".repeat(150));
        assert!(seen.contains(&("bin/sh".into(), 0o777, Some("busybox".into()))));
        assert!(seen.contains(&("var/lib/seed/".into(), 0o700, None)));
        assert!(seen.contains(&(long, 0o600, None)), "{seen:?}");
        let names: Vec<_> = seen.iter().map(|s| s.0.clone()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "entries are written in path order");
    }

    #[test]
    fn conflicts_are_refused() {
        let mut t = Tree::default();
        t.dir("etc", 0o755).unwrap();
        assert!(t.file("etc", 0o644, vec![]).is_err());
        t.file("bin/busybox", 0o755, vec![]).unwrap();
        assert!(t.file("bin/busybox/x", 0o644, vec![]).is_err());
        t.symlink("var/run", "/run").unwrap();
        let e = t.file("var/run/x", 0o644, vec![]).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
    }

    #[test]
    fn host_dirs_are_copied_without_following_links() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc/init.d")).unwrap();
        std::fs::write(d.path().join("etc/init.d/rcS"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            d.path().join("etc/init.d/rcS"),
            std::fs::Permissions::from_mode(0o775),
        )
        .unwrap();
        std::fs::write(d.path().join("etc/motd"), "hi\n").unwrap();
        std::os::unix::fs::symlink("/etc/shadow", d.path().join("etc/leak")).unwrap();
        let mut t = Tree::default();
        t.add_host_dir(d.path(), "", true).unwrap();
        assert_eq!(t.get("etc/init.d/rcS").unwrap().mode, 0o755);
        assert_eq!(t.get("etc/motd").unwrap().mode, 0o644);
        assert_eq!(
            t.get("etc/leak").unwrap().kind,
            Kind::Symlink {
                target: "/etc/shadow".into()
            }
        );
    }
}
