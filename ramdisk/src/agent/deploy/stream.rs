//! The image write: a reader (the HTTP body) → sha256 and byte count while reading → zstd decode
//! → tar unpacked onto a directory (the mounted root). Nothing is staged: the only buffers are
//! zstd's window and the reader's. Entries that would land outside the root are refused.

use sha2::{Digest, Sha256};
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

/// Why the stream could not be written.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("reading or unpacking the image stream after {bytes} of {total} bytes")]
    Io {
        bytes: u64,
        total: u64,
        #[source]
        source: io::Error,
    },
    #[error("image entry {0:?} would be written outside the root filesystem")]
    Escapes(PathBuf),
    #[error("image stream sha256 is {got}, the manifest says {want}: corrupt or wrong image")]
    Checksum { got: String, want: String },
    #[error("image stream is {got} bytes, the manifest says {want}")]
    Size { got: u64, want: u64 },
}

/// What the write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Compressed bytes read (and hashed).
    pub bytes: u64,
    /// Entries unpacked.
    pub entries: u64,
    pub sha256: String,
}

/// Hashes and counts what passes through, and calls `progress(bytes)` at most every `every`.
struct Tap<'a, R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
    last: Instant,
    every: Duration,
    progress: &'a mut dyn FnMut(u64),
}

impl<R: Read> Read for Tap<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        if self.last.elapsed() >= self.every {
            self.last = Instant::now();
            (self.progress)(self.bytes);
        }
        Ok(n)
    }
}

/// A relative path with no `..`: the only shape an entry (or a hard link's target) may have.
/// A leading `/` or `./` is allowed and means the root.
pub fn check_inside(p: &Path) -> Result<(), StreamError> {
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(StreamError::Escapes(p.to_path_buf()));
    }
    Ok(())
}

/// Unpack the zstd-compressed tar read from `body` under `root`, verifying its sha256 (and size
/// when `want_size` is non-zero) at the end. Owners, modes, mtimes, symlinks and hard links are
/// kept. On a checksum mismatch the files are already on disk: the caller wipes them.
pub fn write(
    body: impl Read,
    root: &Path,
    want_sha256: &str,
    want_size: u64,
    every: Duration,
    progress: &mut dyn FnMut(u64),
) -> Result<Written, StreamError> {
    let mut tap = Tap {
        inner: body,
        hasher: Sha256::new(),
        bytes: 0,
        last: Instant::now(),
        every,
        progress,
    };
    let mut entries = 0;
    let result = unpack(&mut tap, root, &mut entries);
    let bytes = tap.bytes;
    let io = |source| StreamError::Io {
        bytes,
        total: want_size,
        source,
    };
    result.map_err(|e| match e {
        UnpackError::Io(source) => io(source),
        UnpackError::Escapes(p) => StreamError::Escapes(p),
    })?;
    // The tar's end marker may come before the end of the stream (zstd frame epilogue, padding):
    // everything the server sent is part of what the sha256 covers.
    io::copy(&mut tap, &mut io::sink()).map_err(io)?;
    (tap.progress)(tap.bytes);
    let sha256 = hex::encode(tap.hasher.finalize());
    if !sha256.eq_ignore_ascii_case(want_sha256) {
        return Err(StreamError::Checksum {
            got: sha256,
            want: want_sha256.into(),
        });
    }
    if want_size != 0 && tap.bytes != want_size {
        return Err(StreamError::Size {
            got: tap.bytes,
            want: want_size,
        });
    }
    Ok(Written {
        bytes: tap.bytes,
        entries,
        sha256,
    })
}

enum UnpackError {
    Io(io::Error),
    Escapes(PathBuf),
}

impl From<io::Error> for UnpackError {
    fn from(e: io::Error) -> Self {
        UnpackError::Io(e)
    }
}

fn unpack<R: Read>(tap: &mut R, root: &Path, count: &mut u64) -> Result<(), UnpackError> {
    let mut dec = zstd::Decoder::new(tap)?;
    {
        let mut ar = tar::Archive::new(&mut dec);
        ar.set_preserve_permissions(true);
        ar.set_preserve_ownerships(true);
        ar.set_preserve_mtime(true);
        ar.set_unpack_xattrs(false);
        ar.set_overwrite(true);
        for entry in ar.entries()? {
            let mut entry = entry?;
            let path = entry.path()?.into_owned();
            check_inside(&path).map_err(|_| UnpackError::Escapes(path.clone()))?;
            if entry.header().entry_type().is_hard_link() {
                if let Some(target) = entry.link_name()? {
                    check_inside(&target).map_err(|_| UnpackError::Escapes(target.into()))?;
                }
            }
            // unpack_in also refuses to follow a symlink out of the root (it canonicalizes the
            // parent directory); `false` means it skipped the entry for that reason.
            if !entry.unpack_in(root)? {
                return Err(UnpackError::Escapes(path));
            }
            *count += 1;
        }
    }
    // Let zstd consume the rest of its frame so the tap sees every byte.
    io::copy(&mut dec, &mut io::sink())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_zst(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        let t = b.into_inner().unwrap();
        zstd::encode_all(&t[..], 3).unwrap()
    }

    fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h
    }

    fn sha(b: &[u8]) -> String {
        hex::encode(Sha256::digest(b))
    }

    #[test]
    fn unpacks_files_links_and_modes() {
        let z = tar_zst(|b| {
            b.append_data(
                &mut header(tar::EntryType::Directory, 0, 0o755),
                "etc",
                &[][..],
            )
            .unwrap();
            b.append_data(
                &mut header(tar::EntryType::Regular, 5, 0o600),
                "etc/secret",
                &b"hello"[..],
            )
            .unwrap();
            let mut h = header(tar::EntryType::Symlink, 0, 0o777);
            b.append_link(&mut h, "etc/link", "/etc/secret").unwrap();
            let mut h = header(tar::EntryType::Link, 0, 0o600);
            b.append_link(&mut h, "etc/hard", "etc/secret").unwrap();
        });
        let dir = tempfile::tempdir().unwrap();
        let mut calls = 0;
        let w = write(
            &z[..],
            dir.path(),
            &sha(&z),
            z.len() as u64,
            Duration::ZERO,
            &mut |_| calls += 1,
        )
        .unwrap();
        assert_eq!(w.entries, 4);
        assert_eq!(w.bytes, z.len() as u64);
        assert!(calls > 0);
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let m = std::fs::metadata(dir.path().join("etc/secret")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        assert_eq!(m.nlink(), 2);
        assert_eq!(
            std::fs::read_link(dir.path().join("etc/link")).unwrap(),
            Path::new("/etc/secret")
        );
    }

    #[test]
    fn refuses_entries_escaping_the_root() {
        // tar::Builder refuses to write `..` itself, so forge the name in the header bytes.
        let mut h = header(tar::EntryType::Regular, 1, 0o644);
        h.as_mut_bytes()[..9].copy_from_slice(b"../evil\0\0");
        h.set_cksum();
        let z = tar_zst(|b| b.append(&h, &b"x"[..]).unwrap());
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let e = write(&z[..], &root, &sha(&z), 0, Duration::ZERO, &mut |_| {}).unwrap_err();
        assert!(matches!(e, StreamError::Escapes(_)), "{e}");
        assert!(!parent.path().join("evil").exists());

        // Through a symlinked directory pointing outside.
        let z = tar_zst(|b| {
            let mut l = header(tar::EntryType::Symlink, 0, 0o777);
            b.append_link(&mut l, "out", parent.path()).unwrap();
            b.append_data(
                &mut header(tar::EntryType::Regular, 1, 0o644),
                "out/evil2",
                &b"x"[..],
            )
            .unwrap();
        });
        let e = write(&z[..], &root, &sha(&z), 0, Duration::ZERO, &mut |_| {}).unwrap_err();
        assert!(
            matches!(e, StreamError::Escapes(_) | StreamError::Io { .. }),
            "{e}"
        );
        assert!(!parent.path().join("evil2").exists());
    }

    #[test]
    fn checksum_mismatch_is_an_error() {
        let z = tar_zst(|b| {
            b.append_data(
                &mut header(tar::EntryType::Regular, 1, 0o644),
                "a",
                &b"x"[..],
            )
            .unwrap()
        });
        let dir = tempfile::tempdir().unwrap();
        let e = write(
            &z[..],
            dir.path(),
            &"0".repeat(64),
            0,
            Duration::ZERO,
            &mut |_| {},
        )
        .unwrap_err();
        assert!(matches!(e, StreamError::Checksum { .. }), "{e}");
        assert!(e.to_string().contains("corrupt"));
    }

    #[test]
    fn truncated_stream_is_an_error() {
        let z = tar_zst(|b| {
            b.append_data(
                &mut header(tar::EntryType::Regular, 100_000, 0o644),
                "big",
                &vec![7u8; 100_000][..],
            )
            .unwrap()
        });
        let dir = tempfile::tempdir().unwrap();
        let cut = &z[..z.len() / 2];
        let e = write(cut, dir.path(), &sha(&z), 0, Duration::ZERO, &mut |_| {}).unwrap_err();
        assert!(matches!(e, StreamError::Io { .. }), "{e}");
    }
}
