//! Shared libraries for the dynamically linked tools the ramdisk carries (`mke2fs`,
//! `extlinux`): each ELF's `DT_NEEDED` entries (read with `object`, as module dependencies are),
//! followed transitively and found in unpacked Debian packages. The dynamic loader itself
//! (`PT_INTERP`) is not a `DT_NEEDED` of the binary; the caller adds it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why the libraries could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum DynlibError {
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a 64-bit ELF object: {reason}")]
    BadElf { path: PathBuf, reason: String },
    #[error("{name} (needed by {needed_by}) is in none of the library directories: {dirs}")]
    Missing {
        name: String,
        needed_by: String,
        dirs: String,
    },
}

/// The `DT_NEEDED` sonames of an ELF file.
pub fn needed(path: &Path) -> Result<Vec<String>, DynlibError> {
    use object::read::elf::{Dyn, FileHeader};
    let data = std::fs::read(path).map_err(|source| DynlibError::Io {
        path: path.into(),
        source,
    })?;
    let bad = |e: object::Error| DynlibError::BadElf {
        path: path.into(),
        reason: e.to_string(),
    };
    let data = &data[..];
    let hdr = object::elf::FileHeader64::<object::Endianness>::parse(data).map_err(bad)?;
    let endian = hdr.endian().map_err(bad)?;
    let sections = hdr.sections(endian, data).map_err(bad)?;
    let mut out = Vec::new();
    if let Some((dyns, link)) = sections.dynamic(endian, data).map_err(bad)? {
        let strings = sections.strings(endian, data, link).map_err(bad)?;
        for d in dyns {
            if d.tag(endian) == object::elf::DT_NEEDED {
                let name = d.string(endian, strings).map_err(bad)?;
                out.push(String::from_utf8_lossy(name).into_owned());
            }
        }
    }
    Ok(out)
}

/// Every library the `binaries` need, transitively, by soname → the file found in `dirs` (first
/// match, symlinks resolved). Sorted by soname: the same inputs give the same list.
pub fn closure(
    binaries: &[PathBuf],
    dirs: &[PathBuf],
) -> Result<BTreeMap<String, PathBuf>, DynlibError> {
    let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut todo: Vec<(String, String)> = Vec::new();
    for b in binaries {
        for n in needed(b)? {
            todo.push((n, b.display().to_string()));
        }
    }
    while let Some((name, needed_by)) = todo.pop() {
        if found.contains_key(&name) {
            continue;
        }
        let path = dirs
            .iter()
            .map(|d| d.join(&name))
            .find(|p| p.exists())
            .ok_or_else(|| DynlibError::Missing {
                name: name.clone(),
                needed_by: needed_by.clone(),
                dirs: dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let path = std::fs::canonicalize(&path).map_err(|source| DynlibError::Io {
            path: path.clone(),
            source,
        })?;
        for n in needed(&path)? {
            todo.push((n, name.clone()));
        }
        found.insert(name, path);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needed_of_a_host_binary() {
        // Every Debian host has a dynamically linked coreutils `ls` and its libraries.
        let ls = PathBuf::from("/bin/ls");
        let n = needed(&ls).unwrap();
        assert!(n.iter().any(|l| l == "libc.so.6"), "{n:?}");
        let c = closure(&[ls], &[PathBuf::from("/lib/x86_64-linux-gnu")]).unwrap();
        assert!(c.contains_key("libc.so.6"));
        assert!(c["libc.so.6"].is_file());
        let e = closure(
            &[PathBuf::from("/bin/ls")],
            &[PathBuf::from("/nonexistent")],
        )
        .unwrap_err();
        assert!(e.to_string().contains("needed by /bin/ls"), "{e}");
    }

    #[test]
    fn not_elf() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x");
        std::fs::write(&p, b"#!/bin/sh\n").unwrap();
        assert!(matches!(needed(&p), Err(DynlibError::BadElf { .. })));
    }
}
