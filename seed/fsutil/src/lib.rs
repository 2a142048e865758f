//! Durable file replacement, the one way the workspace replaces a file that must survive a
//! crash (DHCP leases, the image store's names and manifests, the config agent's metadata cache
//! and rendered files, the lab's state files, build outputs).
//!
//! A reader sees the old content or the new, never a mix, and once [`AtomicFile::commit`] (or
//! [`write`]) returns the new content survives a power cut:
//!
//! 1. the bytes go to a temporary file in the same directory (a rename cannot cross file
//!    systems), named `.<file>.<random>.tmp` so directory listings that skip dot files skip it;
//! 2. the temporary file is fsync'd (its data and size are on disk);
//! 3. it is renamed over the target (atomic on POSIX file systems);
//! 4. the directory is fsync'd (the rename itself is on disk; without this a crash can bring
//!    back the old name, or on some file systems neither).
//!
//! Any failure before the rename leaves the old file as it was and removes the temporary file.
//! Only `std` and `tempfile`, so the static binaries of the ramdisk can use it.

mod chain;
pub use chain::error_chain;

use std::fs::{File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Replace `path` with `bytes` durably (see the crate documentation). The file is created with
/// mode 0666 minus the umask, as [`File::create`] would.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = AtomicFile::new(path)?;
    f.write_all(bytes)?;
    f.commit()
}

/// The new content of a file, written to a temporary file beside it until
/// [`commit`](AtomicFile::commit). Dropped without a commit, the temporary file is removed and
/// the target is untouched.
#[derive(Debug)]
pub struct AtomicFile {
    tmp: tempfile::NamedTempFile,
    path: PathBuf,
}

impl AtomicFile {
    /// Start replacing `path`; its directory must exist. Mode 0666 minus the umask.
    pub fn new(path: &Path) -> io::Result<AtomicFile> {
        AtomicFile::with_mode(path, 0o666)
    }

    /// Start replacing `path` with a file created with `mode` (minus the umask): 0o600 for
    /// content that must not be readable by others even for a moment.
    pub fn with_mode(path: &Path, mode: u32) -> io::Result<AtomicFile> {
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{}.", name.to_string_lossy()))
            .suffix(".tmp")
            .permissions(Permissions::from_mode(mode))
            .tempfile_in(dir_of(path))?;
        Ok(AtomicFile {
            tmp,
            path: path.to_path_buf(),
        })
    }

    /// The temporary file, to set its mode or owner before the commit.
    pub fn file(&self) -> &File {
        self.tmp.as_file()
    }

    /// Where the temporary file is (for error messages).
    pub fn temp_path(&self) -> &Path {
        self.tmp.path()
    }

    /// Fsync the new content, rename it over the target and fsync the directory. On an error
    /// before the rename the target is untouched and the temporary file removed.
    pub fn commit(self) -> io::Result<()> {
        self.tmp.as_file().sync_all()?;
        self.tmp.persist(&self.path).map_err(|e| e.error)?;
        sync_dir(dir_of(&self.path))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tmp.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tmp.flush()
    }
}

/// Rename `from` to `to` durably: `from` (a file or a directory) is fsync'd first, then
/// renamed, then the directory of `to` (and of `from`, when another) is fsync'd. For content
/// staged under another name (a download, an import, a directory built beside its place).
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    File::open(from)?.sync_all()?;
    std::fs::rename(from, to)?;
    let (a, b) = (dir_of(from), dir_of(to));
    sync_dir(b)?;
    if a != b {
        sync_dir(a)?;
    }
    Ok(())
}

/// Fsync a directory, so that the names created, renamed or removed in it are on disk.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(test)]
    tests::DIR_SYNCS.with(|n| n.set(n.get() + 1));
    File::open(dir)?.sync_all()
}

/// The directory holding `path` (`.` for a bare file name).
fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::os::unix::fs::MetadataExt;

    thread_local! {
        /// Directory fsyncs done by this test thread.
        pub(super) static DIR_SYNCS: Cell<usize> = const { Cell::new(0) };
    }

    fn dir_syncs() -> usize {
        DIR_SYNCS.with(Cell::get)
    }

    /// The names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn fsutil_write_replaces_and_syncs_the_directory() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("leases.json");
        let before = dir_syncs();
        write(&p, b"one").unwrap();
        assert_eq!(dir_syncs(), before + 1, "the directory was fsync'd");
        write(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(dir_syncs(), before + 2);
        // No temporary file is left behind.
        assert_eq!(names(d.path()), ["leases.json"]);
    }

    #[test]
    fn fsutil_mode_is_as_created_and_can_be_private() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m");
        write(&p, b"x").unwrap();
        // Whatever the umask, a plain write is readable by its owner and not executable.
        let mode = std::fs::metadata(&p).unwrap().mode() & 0o777;
        assert_eq!(mode & 0o600, 0o600, "{mode:o}");
        assert_eq!(mode & 0o111, 0, "{mode:o}");
        let mut f = AtomicFile::with_mode(&p, 0o600).unwrap();
        f.write_all(b"secret").unwrap();
        assert_eq!(f.file().metadata().unwrap().mode() & 0o077, 0);
        f.commit().unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o077, 0);
    }

    #[test]
    fn fsutil_temp_file_is_a_dot_file_beside_the_target() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("manifest.json");
        let f = AtomicFile::new(&p).unwrap();
        assert_eq!(f.temp_path().parent(), Some(d.path()));
        let name = f.temp_path().file_name().unwrap().to_string_lossy();
        assert!(
            name.starts_with(".manifest.json.") && name.ends_with(".tmp"),
            "{name}"
        );
    }

    #[test]
    fn fsutil_abandoned_write_leaves_the_old_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("names");
        write(&p, b"old").unwrap();
        {
            let mut f = AtomicFile::new(&p).unwrap();
            f.write_all(b"half of the new cont").unwrap();
            // Dropped without a commit, as when an error returns early.
        }
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(names(d.path()), ["names"]);
    }

    #[test]
    fn fsutil_failed_rename_leaves_the_old_content() {
        let d = tempfile::tempdir().unwrap();
        // The target is a non-empty directory: the rename fails after the data was written.
        let p = d.path().join("target");
        std::fs::create_dir(&p).unwrap();
        std::fs::write(p.join("inside"), b"old").unwrap();
        let before = dir_syncs();
        let e = write(&p, b"new").unwrap_err();
        assert!(
            matches!(
                e.kind(),
                io::ErrorKind::IsADirectory | io::ErrorKind::DirectoryNotEmpty
            ),
            "{e}"
        );
        assert_eq!(
            dir_syncs(),
            before,
            "no directory sync after a failed rename"
        );
        assert_eq!(std::fs::read(p.join("inside")).unwrap(), b"old");
        assert_eq!(names(d.path()), ["target"], "the temporary file is removed");
    }

    #[test]
    fn fsutil_missing_directory_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("no/such/dir/file");
        assert_eq!(write(&p, b"x").unwrap_err().kind(), io::ErrorKind::NotFound);
        assert!(sync_dir(&d.path().join("missing")).is_err());
        assert!(AtomicFile::new(Path::new("/")).is_err(), "no file name");
    }

    #[test]
    fn fsutil_rename_moves_staged_content_across_directories() {
        let d = tempfile::tempdir().unwrap();
        let stage = d.path().join(".stage");
        let dest_dir = d.path().join("sub");
        std::fs::create_dir(&dest_dir).unwrap();
        std::fs::write(&stage, b"image").unwrap();
        let before = dir_syncs();
        rename(&stage, &dest_dir.join("rootfs")).unwrap();
        assert_eq!(dir_syncs(), before + 2, "both directories fsync'd");
        assert_eq!(std::fs::read(dest_dir.join("rootfs")).unwrap(), b"image");
        assert!(!stage.exists());
        // A staged directory moves the same way.
        let tree = d.path().join(".tree");
        std::fs::create_dir(&tree).unwrap();
        rename(&tree, &d.path().join("tree")).unwrap();
        assert!(d.path().join("tree").is_dir());
    }

    #[test]
    fn fsutil_bare_file_name_is_in_the_current_directory() {
        assert_eq!(dir_of(Path::new("x")), Path::new("."));
        assert_eq!(dir_of(Path::new("/a/x")), Path::new("/a"));
    }
}
