//! Stores written by seeds built with redb 2 (its file format v2), which redb 3 and later no
//! longer open. On the first open such a file is copied, table by table, into a new file in the
//! current format, which then replaces it; the original stays beside it as `<file>.redb2`. Only
//! redb 2.6 reads the old format, so it stays a dependency (`redb2`) for this copy.
//!
//! Crash-safe: the new file is complete and committed (fsync'd) before it is renamed over the
//! old name, and the original is hard-linked to its backup name before that. A crash before the
//! rename leaves the v2 file (upgraded again on the next open, the half-written copy replaced);
//! after it, the new one.

use super::super::StoreError;
use super::{Def, META};
use redb2::{ReadableTable as _, TableHandle as _};
use std::path::{Path, PathBuf};

/// Records of redb 2's tables, as [`Def`] was then.
type Def2<'a> = redb2::TableDefinition<'a, &'static str, (u64, &'static [u8])>;
/// The revision counter, as [`META`] was then.
const META2: redb2::TableDefinition<&str, u64> = redb2::TableDefinition::new("_meta");

/// Why an old store could not be upgraded (the old file is untouched).
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("reading it with redb 2")]
    Read(#[source] Box<redb2::Error>),
    #[error("writing the upgraded copy {0}")]
    Write(PathBuf, #[source] Box<redb::Error>),
    #[error("keeping the original as {0}")]
    Backup(PathBuf, #[source] std::io::Error),
    #[error("renaming the upgraded copy into place")]
    Rename(#[source] std::io::Error),
}

/// Upgrade the redb 2 store at `path` in place; returns where the original is kept.
pub(super) fn from_v2(path: &Path) -> Result<PathBuf, StoreError> {
    let fail = |source| StoreError::Upgrade {
        path: path.to_path_buf(),
        source: Box::new(source),
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.upgrading"));
    // A copy left by an interrupted upgrade: the v2 file is still the store.
    let _ = std::fs::remove_file(&tmp);
    copy(path, &tmp).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(e)
    })?;
    let backup = free_backup_name(path);
    keep(path, &backup).map_err(|e| fail(UpgradeError::Backup(backup.clone(), e)))?;
    fsutil::rename(&tmp, path).map_err(|e| fail(UpgradeError::Rename(e)))?;
    tracing::warn!(
        store = %path.display(),
        original = %backup.display(),
        "the store was written by an older seed (redb 2); upgraded it to the current format"
    );
    Ok(backup)
}

/// Copy every table of the v2 store `from` into a new store at `to`, in one transaction.
fn copy(from: &Path, to: &Path) -> Result<(), UpgradeError> {
    let read = |e: redb2::Error| UpgradeError::Read(Box::new(e));
    let write = |e: redb::Error| UpgradeError::Write(to.to_path_buf(), Box::new(e));
    let old = redb2::Database::open(from).map_err(|e| read(e.into()))?;
    let new = redb::Database::create(to).map_err(|e| write(e.into()))?;
    let r = old.begin_read().map_err(|e| read(e.into()))?;
    let w = new.begin_write().map_err(|e| write(e.into()))?;
    for handle in r.list_tables().map_err(|e| read(e.into()))? {
        let table = handle.name();
        if table == META2.name() {
            let src = r.open_table(META2).map_err(|e| read(e.into()))?;
            let mut dst = w.open_table(META).map_err(|e| write(e.into()))?;
            for item in src.iter().map_err(|e| read(e.into()))? {
                let (k, v) = item.map_err(|e| read(e.into()))?;
                dst.insert(k.value(), v.value())
                    .map_err(|e| write(e.into()))?;
            }
        } else {
            let src = r.open_table(Def2::new(table)).map_err(|e| read(e.into()))?;
            let mut dst = w.open_table(Def::new(table)).map_err(|e| write(e.into()))?;
            for item in src.iter().map_err(|e| read(e.into()))? {
                let (k, v) = item.map_err(|e| read(e.into()))?;
                dst.insert(k.value(), v.value())
                    .map_err(|e| write(e.into()))?;
            }
        }
    }
    w.commit().map_err(|e| write(e.into()))
}

/// `<path>.redb2`, or `<path>.redb2.N` when that exists (an earlier upgrade's original).
fn free_backup_name(path: &Path) -> PathBuf {
    let base = format!("{}.redb2", path.display());
    std::iter::once(PathBuf::from(&base))
        .chain((1..).map(|n| PathBuf::from(format!("{base}.{n}"))))
        .find(|p| !p.exists())
        .expect("a free name")
}

/// Keep the original under `backup`: a hard link (instant, no space), else a synced copy.
fn keep(path: &Path, backup: &Path) -> std::io::Result<()> {
    if std::fs::hard_link(path, backup).is_err() {
        std::fs::copy(path, backup)?;
        std::fs::File::open(backup)?.sync_all()?;
    }
    fsutil::sync_dir(path.parent().unwrap_or(Path::new(".")))
}

#[cfg(test)]
mod tests {
    use super::super::RedbStore;
    use super::*;
    use crate::store::{Expect, Record, Store};

    /// A store as a seed built with redb 2 wrote it: revision counter 5, two tables.
    fn write_v2(path: &Path) {
        let db = redb2::Database::create(path).unwrap();
        let w = db.begin_write().unwrap();
        {
            let mut meta = w.open_table(META2).unwrap();
            meta.insert("revision", 5).unwrap();
            let mut nodes = w.open_table(Def2::new("nodes")).unwrap();
            nodes.insert("a", (3, b"A".as_slice())).unwrap();
            nodes.insert("b", (5, b"B".as_slice())).unwrap();
            let mut stacks = w.open_table(Def2::new("stacks")).unwrap();
            stacks.insert("s", (4, b"S".as_slice())).unwrap();
        }
        w.commit().unwrap();
    }

    #[test]
    fn redb2_store_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed.redb");
        write_v2(&path);
        // What this redb says of the file on its own.
        assert!(matches!(
            redb::Database::create(&path),
            Err(redb::DatabaseError::UpgradeRequired(2))
        ));
        // A copy left by an interrupted earlier upgrade is replaced.
        std::fs::write(dir.path().join(".seed.redb.upgrading"), b"half").unwrap();

        let s = RedbStore::open(&path).unwrap();
        assert_eq!(
            s.get("nodes", "a").unwrap(),
            Some(Record {
                revision: 3,
                value: b"A".to_vec()
            })
        );
        assert_eq!(s.list("nodes", "").unwrap().len(), 2);
        assert_eq!(s.get("stacks", "s").unwrap().unwrap().value, b"S");
        // The revision counter carried over: no revision is handed out twice.
        assert_eq!(s.put("nodes", "c", vec![], Expect::Absent).unwrap(), 6);
        drop(s);

        // The original is kept, still readable by redb 2, and nothing else is left.
        let backup = dir.path().join("seed.redb.redb2");
        let old = redb2::Database::open(&backup).unwrap();
        let r = old.begin_read().unwrap();
        let nodes = r.open_table(Def2::new("nodes")).unwrap();
        assert_eq!(
            nodes.get("a").unwrap().unwrap().value(),
            (3, b"A".as_slice())
        );
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["seed.redb", "seed.redb.redb2"]);

        // Opened again: the current format, no second upgrade.
        let s = RedbStore::open(&path).unwrap();
        assert_eq!(s.get("nodes", "c").unwrap().unwrap().revision, 6);
        assert!(!dir.path().join("seed.redb.redb2.1").exists());
    }

    #[test]
    fn redb2_backup_never_overwrites_an_earlier_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed.redb");
        std::fs::write(dir.path().join("seed.redb.redb2"), b"an earlier original").unwrap();
        write_v2(&path);
        RedbStore::open(&path).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("seed.redb.redb2")).unwrap(),
            b"an earlier original"
        );
        assert!(dir.path().join("seed.redb.redb2.1").exists());
    }

    #[test]
    fn redb2_unreadable_store_is_a_clear_error_and_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed.redb");
        write_v2(&path);
        let before = std::fs::read(&path).unwrap();
        // The copy cannot be written: its name is taken by a directory that is not empty.
        let blocker = dir.path().join(".seed.redb.upgrading");
        std::fs::create_dir(&blocker).unwrap();
        std::fs::write(blocker.join("x"), b"x").unwrap();
        let e = RedbStore::open(&path).unwrap_err();
        let shown = format!("{e}");
        assert!(
            shown.contains("seed.redb") && shown.contains("redb 2"),
            "{shown}"
        );
        assert!(
            matches!(&e, StoreError::Upgrade { source, .. } if matches!(**source, UpgradeError::Write(..))),
            "{e:?}"
        );
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "the store is untouched"
        );
        assert!(!dir.path().join("seed.redb.redb2").exists());
    }
}
