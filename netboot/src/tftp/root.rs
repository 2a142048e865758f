//! Resolving a requested name to a regular file inside a served root, for TFTP and HTTP alike.
//!
//! A request never leaves the root: `..` components are refused outright, and the resolved path
//! is canonicalised (following symlinks) and must still lie under the canonical root, so a
//! symlink pointing out of the root is refused too. A leading `/` means the root (as with
//! `tftpd -s`), and a name that spells out the root itself is accepted. Backslashes count as
//! separators, because some PXE ROMs send DOS-style names.

use std::path::{Component, Path, PathBuf};

/// Why a name does not resolve to a file we serve.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("path escapes the served root")]
    Escapes,
    #[error("no such file")]
    NotFound,
    #[error("not a regular file")]
    NotAFile,
    #[error("cannot access file")]
    Io(#[source] std::io::Error),
}

/// A served root directory, canonicalised once.
#[derive(Debug, Clone)]
pub struct Root {
    canonical: PathBuf,
}

impl Root {
    /// Open a root; it must exist and be a directory.
    pub fn new(path: &Path) -> std::io::Result<Self> {
        let canonical = path.canonicalize().map_err(|e| {
            std::io::Error::new(e.kind(), format!("served root {}: {e}", path.display()))
        })?;
        if !canonical.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("served root {} is not a directory", path.display()),
            ));
        }
        Ok(Self { canonical })
    }

    /// The canonical root directory.
    pub fn path(&self) -> &Path {
        &self.canonical
    }

    /// The canonical path of the regular file `name` names under the root.
    pub fn resolve(&self, name: &str) -> Result<PathBuf, ResolveError> {
        if name.contains('\0') {
            return Err(ResolveError::NotFound);
        }
        let name = name.replace('\\', "/");
        let root_str = self.canonical.to_string_lossy();
        let rel = match name.strip_prefix(root_str.as_ref()) {
            Some(rest) if rest.starts_with('/') => rest,
            _ => name.as_str(),
        };
        let mut path = self.canonical.clone();
        for comp in Path::new(rel.trim_start_matches('/')).components() {
            match comp {
                Component::Normal(c) => path.push(c),
                Component::CurDir => {}
                Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                    return Err(ResolveError::Escapes)
                }
            }
        }
        let canonical = match path.canonicalize() {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ResolveError::NotFound)
            }
            // ENOTDIR: a file used as a directory.
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                return Err(ResolveError::NotFound)
            }
            Err(e) => return Err(ResolveError::Io(e)),
        };
        if !canonical.starts_with(&self.canonical) {
            return Err(ResolveError::Escapes);
        }
        let meta = std::fs::metadata(&canonical).map_err(ResolveError::Io)?;
        if !meta.is_file() {
            return Err(ResolveError::NotAFile);
        }
        Ok(canonical)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_inside_and_refuses_escapes() {
        let outer = tempfile::tempdir().unwrap();
        let root_dir = outer.path().join("root");
        std::fs::create_dir_all(root_dir.join("sub")).unwrap();
        std::fs::write(root_dir.join("sub/a.bin"), b"a").unwrap();
        std::fs::write(outer.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(outer.path().join("secret"), root_dir.join("link-out")).unwrap();
        std::os::unix::fs::symlink("sub/a.bin", root_dir.join("link-in")).unwrap();
        let root = Root::new(&root_dir).unwrap();
        let a = root.path().join("sub/a.bin");

        for ok in [
            "sub/a.bin",
            "/sub/a.bin",
            "./sub//a.bin",
            "sub\\a.bin",
            "link-in",
        ] {
            assert_eq!(root.resolve(ok).unwrap(), a, "{ok}");
        }
        let full = format!("{}/sub/a.bin", root.path().display());
        assert_eq!(root.resolve(&full).unwrap(), a);

        for esc in [
            "../secret",
            "sub/../../secret",
            "..\\secret",
            "link-out",
            "sub/../a",
        ] {
            assert!(
                matches!(root.resolve(esc), Err(ResolveError::Escapes)),
                "{esc}: {:?}",
                root.resolve(esc)
            );
        }
        let abs = outer.path().join("secret");
        assert!(matches!(
            root.resolve(abs.to_str().unwrap()),
            Err(ResolveError::NotFound)
        ));
        assert!(matches!(
            root.resolve("missing"),
            Err(ResolveError::NotFound)
        ));
        assert!(matches!(
            root.resolve("sub/a.bin/x"),
            Err(ResolveError::NotFound)
        ));
        assert!(matches!(root.resolve("sub"), Err(ResolveError::NotAFile)));
        assert!(matches!(root.resolve("/"), Err(ResolveError::NotAFile)));
    }
}
