//! The seed's image store: content-addressed, verified when imported and when handed out.
//!
//! Layout under the store directory:
//! - `<sha256>/manifest.json` and `<sha256>/<stream.file>` — one directory per stream digest;
//! - `names/<name>` — a file holding the digest the name points to (the latest import wins).
//!
//! [`ImageStore::verify`] re-hashes the stream unless its (size, mtime) is the one last verified,
//! so a provisioner can call it before every deploy and a corrupted stream is refused before any
//! disk is touched, without hashing gigabytes on each call.

use crate::manifest::Manifest;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// Why the store refused.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no image named {0:?}")]
    NotFound(String),
    #[error("image name {0:?} is not a plain name (letters, digits, `-`, `_`, `.`)")]
    BadName(String),
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("manifest {path} does not parse")]
    Manifest {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("image {name}: stream {path} has sha256 {actual}, the manifest says {expected}")]
    Digest {
        name: String,
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("image {name}: stream {path} is {actual} bytes, the manifest says {expected}")]
    Size {
        name: String,
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A verified image: its manifest and where its stream is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub manifest: Manifest,
    /// Path of the stream file.
    pub stream: PathBuf,
    /// `<sha256>/<file>`: the stream's path relative to the store directory (for URLs).
    pub relative: String,
}

/// The store (cheap to share behind an `Arc`).
#[derive(Debug)]
pub struct ImageStore {
    dir: PathBuf,
    /// digest → (size, mtime) last verified.
    verified: Mutex<HashMap<String, (u64, SystemTime)>>,
}

fn check_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadName(name.into()))
    }
}

/// sha256 (hex) and length of a file.
pub fn hash_file(path: &Path) -> Result<(String, u64), StoreError> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).map_err(io(path))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

fn read_manifest(path: &Path) -> Result<Manifest, StoreError> {
    let text = std::fs::read(path).map_err(io(path))?;
    serde_json::from_slice(&text).map_err(|source| StoreError::Manifest {
        path: path.to_path_buf(),
        source,
    })
}

impl ImageStore {
    /// Open (and create) the store at `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<ImageStore, StoreError> {
        let dir = dir.into();
        let names = dir.join("names");
        std::fs::create_dir_all(&names).map_err(io(&names))?;
        Ok(ImageStore {
            dir,
            verified: Mutex::new(HashMap::new()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Import the image whose manifest is `manifest` (the stream is beside it): checks size and
    /// sha256 first, then copies into the store and points the name at it.
    pub fn import(&self, manifest: &Path) -> Result<Image, StoreError> {
        let m = read_manifest(manifest)?;
        check_name(&m.name)?;
        check_name(&m.stream.file)?;
        if m.stream.file == "manifest.json" {
            return Err(StoreError::BadName(m.stream.file.clone()));
        }
        let src = manifest
            .parent()
            .unwrap_or(Path::new("."))
            .join(&m.stream.file);
        // Copy first, then check the copy: what is stored is exactly what was verified, even
        // if the source changes meanwhile. The copy is dropped when it does not match.
        let partial = self
            .dir
            .join(format!(".import-{}-{}", m.name, std::process::id()));
        std::fs::copy(&src, &partial).map_err(io(&partial))?;
        let checked = hash_file(&partial).and_then(|(digest, size)| {
            check(&m, &src, &digest, size)?;
            Ok(digest)
        });
        let digest = match checked {
            Ok(d) => d.to_ascii_lowercase(),
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                return Err(e);
            }
        };
        let dest = self.dir.join(&digest);
        std::fs::create_dir_all(&dest).map_err(io(&dest))?;
        let stream = dest.join(&m.stream.file);
        fsutil::rename(&partial, &stream).map_err(io(&stream))?;
        let mpath = dest.join("manifest.json");
        let body = serde_json::to_vec_pretty(&m).map_err(|source| StoreError::Manifest {
            path: mpath.clone(),
            source,
        })?;
        write_atomic(&mpath, &body)?;
        write_atomic(&self.dir.join("names").join(&m.name), digest.as_bytes())?;
        self.remember(&digest, &stream)?;
        Ok(Image {
            relative: format!("{digest}/{}", m.stream.file),
            manifest: m,
            stream,
        })
    }

    /// The image a name points to, without re-hashing.
    pub fn get(&self, name: &str) -> Result<Image, StoreError> {
        check_name(name)?;
        let npath = self.dir.join("names").join(name);
        let digest = match std::fs::read_to_string(&npath) {
            Ok(d) => d.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(name.into()))
            }
            Err(e) => return Err(io(&npath)(e)),
        };
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::Corrupt {
                path: npath,
                reason: format!("{digest:?} is not a sha256"),
            });
        }
        let m = read_manifest(&self.dir.join(&digest).join("manifest.json"))?;
        let stream = self.dir.join(&digest).join(&m.stream.file);
        Ok(Image {
            relative: format!("{digest}/{}", m.stream.file),
            manifest: m,
            stream,
        })
    }

    /// The image a name points to, its stream checked against the manifest (re-hashed unless
    /// unchanged since the last check).
    pub fn verify(&self, name: &str) -> Result<Image, StoreError> {
        let img = self.get(name)?;
        let meta = std::fs::metadata(&img.stream).map_err(io(&img.stream))?;
        let stamp = (meta.len(), meta.modified().map_err(io(&img.stream))?);
        let known = self
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&img.manifest.stream.sha256)
            == Some(&stamp);
        if !known {
            let (digest, size) = hash_file(&img.stream)?;
            check(&img.manifest, &img.stream, &digest, size)?;
            self.remember(&digest, &img.stream)?;
        }
        Ok(img)
    }

    /// Every named image.
    pub fn list(&self) -> Result<Vec<Image>, StoreError> {
        let names = self.dir.join("names");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&names).map_err(io(&names))? {
            let e = e.map_err(io(&names))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            out.push(self.get(&name)?);
        }
        out.sort_by(|a, b| a.manifest.name.cmp(&b.manifest.name));
        Ok(out)
    }

    /// Remove a name, and its stream if no other name points to it.
    pub fn delete(&self, name: &str) -> Result<(), StoreError> {
        let img = self.get(name)?;
        let npath = self.dir.join("names").join(name);
        std::fs::remove_file(&npath).map_err(io(&npath))?;
        let still_used = self
            .list()?
            .iter()
            .any(|i| i.manifest.stream.sha256 == img.manifest.stream.sha256);
        if !still_used {
            let d = self.dir.join(&img.manifest.stream.sha256);
            std::fs::remove_dir_all(&d).map_err(io(&d))?;
        }
        Ok(())
    }

    fn remember(&self, digest: &str, stream: &Path) -> Result<(), StoreError> {
        let meta = std::fs::metadata(stream).map_err(io(stream))?;
        let stamp = (meta.len(), meta.modified().map_err(io(stream))?);
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest.to_string(), stamp);
        Ok(())
    }
}

fn check(m: &Manifest, path: &Path, digest: &str, size: u64) -> Result<(), StoreError> {
    if size != m.stream.size {
        return Err(StoreError::Size {
            name: m.name.clone(),
            path: path.to_path_buf(),
            expected: m.stream.size,
            actual: size,
        });
    }
    if !digest.eq_ignore_ascii_case(&m.stream.sha256) {
        return Err(StoreError::Digest {
            name: m.name.clone(),
            path: path.to_path_buf(),
            expected: m.stream.sha256.clone(),
            actual: digest.to_string(),
        });
    }
    Ok(())
}

fn write_atomic(path: &Path, body: &[u8]) -> Result<(), StoreError> {
    // The temporary file is `.<file>.<random>.tmp`: never an image name (those cannot start
    // with '.'), skipped by `list`.
    fsutil::write(path, body).map_err(io(path))
}

/// A source directory [`ImageStore::import`] takes, holding `body` as the stream of an image
/// called `name` that boots nothing: for the tests and benches that deploy to fake nodes.
/// Returns the manifest's path.
pub fn write_placeholder(dir: &Path, name: &str, body: &[u8]) -> std::io::Result<PathBuf> {
    use crate::manifest::{Boot, Layout, Stream};
    std::fs::write(dir.join("rootfs.tar.zst"), body)?;
    let m = Manifest {
        name: name.into(),
        version: "1".into(),
        stream: Stream {
            file: "rootfs.tar.zst".into(),
            sha256: hex::encode(Sha256::digest(body)),
            size: body.len() as u64,
            unpacked_size: 0,
        },
        boot: Boot {
            kernel: "boot/vmlinuz".into(),
            initrd: None,
            cmdline: "console=ttyS0".into(),
        },
        min_disk_mib: 64,
        layout: Layout::default(),
        elements: vec![],
    };
    let p = dir.join("manifest.json");
    std::fs::write(&p, serde_json::to_vec(&m).map_err(std::io::Error::other)?)?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(dir: &Path, name: &str, body: &[u8]) -> PathBuf {
        write_placeholder(dir, name, body).unwrap()
    }

    /// A temporary `src` for images to import, and an empty store in its own temporary `root`
    /// (kept alive with the store): `(src, root, store)`.
    fn fixture() -> (tempfile::TempDir, tempfile::TempDir, ImageStore) {
        let root = tempfile::tempdir().unwrap();
        let store = ImageStore::open(root.path()).unwrap();
        (tempfile::tempdir().unwrap(), root, store)
    }

    #[test]
    fn import_get_verify_list_delete() {
        let (src, _root, s) = fixture();
        let img = s
            .import(&make(src.path(), "tiny", b"stream bytes"))
            .unwrap();
        assert_eq!(s.get("tiny").unwrap(), img);
        assert_eq!(s.verify("tiny").unwrap(), img);
        assert_eq!(s.list().unwrap().len(), 1);
        assert!(matches!(s.get("other"), Err(StoreError::NotFound(_))));
        assert!(matches!(s.get("../x"), Err(StoreError::BadName(_))));
        s.delete("tiny").unwrap();
        assert!(s.list().unwrap().is_empty());
        assert!(!img.stream.exists());
    }

    #[test]
    fn names_never_lead_outside_the_store() {
        let (src, root, s) = fixture();
        s.import(&make(src.path(), "tiny", b"x")).unwrap();
        std::fs::write(root.path().join("names/tiny"), "../../etc").unwrap();
        assert!(matches!(s.get("tiny"), Err(StoreError::Corrupt { .. })));
        // A stream named like the manifest would be overwritten by it.
        let m = make(src.path(), "other", b"y");
        let mut j: Manifest = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
        j.stream.file = "manifest.json".into();
        std::fs::write(&m, serde_json::to_vec(&j).unwrap()).unwrap();
        assert!(matches!(s.import(&m), Err(StoreError::BadName(_))));
    }

    #[test]
    fn names_with_dots_do_not_collide_and_failed_imports_leave_nothing() {
        let (src, root, s) = fixture();
        s.import(&make(src.path(), "tiny.v2", b"two")).unwrap();
        s.import(&make(src.path(), "tiny.tmp", b"tmp")).unwrap();
        assert_eq!(s.get("tiny.v2").unwrap().manifest.name, "tiny.v2");
        assert_eq!(s.list().unwrap().len(), 2);
        let m = make(src.path(), "bad", b"good bytes");
        std::fs::write(src.path().join("rootfs.tar.zst"), b"evil bytes").unwrap();
        assert!(s.import(&m).is_err());
        let left: Vec<_> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn corrupt_stream_is_refused_on_import_and_on_verify() {
        let (src, _root, s) = fixture();
        let m = make(src.path(), "tiny", b"good bytes");
        std::fs::write(src.path().join("rootfs.tar.zst"), b"evil bytes").unwrap();
        assert!(matches!(s.import(&m), Err(StoreError::Digest { .. })));

        let m = make(src.path(), "tiny", b"good bytes");
        let img = s.import(&m).unwrap();
        // Same length, different bytes, and a different mtime: verify must re-hash.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&img.stream, b"evil bytes").unwrap();
        let e = s.verify("tiny").unwrap_err();
        assert!(matches!(e, StoreError::Digest { .. }), "{e}");
        std::fs::write(&img.stream, b"short").unwrap();
        assert!(matches!(s.verify("tiny"), Err(StoreError::Size { .. })));
    }
}
