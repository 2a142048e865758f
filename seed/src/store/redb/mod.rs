//! The embedded [`Store`]: one `redb` file. Each commit is one redb write transaction with
//! immediate durability, so it is on disk (fsync'd) before [`Store::commit`] returns. A file
//! written by an older seed (redb 2's format) is upgraded on open ([`upgrade`]).

pub mod upgrade;

use super::{check_table, Op, Record, Revision, Store, StoreError};
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle,
};
use std::path::Path;

/// Values are `(revision, bytes)`.
type Def<'a> = TableDefinition<'a, &'static str, (u64, &'static [u8])>;
/// The store-wide revision counter.
const META: TableDefinition<&str, u64> = TableDefinition::new("_meta");
const REVISION: &str = "revision";

fn err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Redb(Box::new(e.into()))
}

/// A [`Store`] in one redb file.
pub struct RedbStore {
    db: Database,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedbStore")
    }
}

impl RedbStore {
    /// Open the store file, creating it (not its directory) if missing, upgrading it if an
    /// older seed wrote it with redb 2. Only one process may have it open at a time.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        let db = match Database::create(path) {
            Err(redb::DatabaseError::UpgradeRequired(2)) => {
                upgrade::from_v2(path)?;
                Database::create(path)
            }
            other => other,
        };
        Ok(RedbStore {
            db: db.map_err(err)?,
        })
    }
}

impl Store for RedbStore {
    fn get(&self, table: &str, key: &str) -> Result<Option<Record>, StoreError> {
        check_table(table)?;
        let txn = self.db.begin_read().map_err(err)?;
        let t = match txn.open_table(Def::new(table)) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(err(e)),
        };
        let record = t.get(key).map_err(err)?.map(|g| {
            let (revision, value) = g.value();
            Record {
                revision,
                value: value.to_vec(),
            }
        });
        Ok(record)
    }

    fn list(&self, table: &str, prefix: &str) -> Result<Vec<(String, Record)>, StoreError> {
        check_table(table)?;
        let txn = self.db.begin_read().map_err(err)?;
        let t = match txn.open_table(Def::new(table)) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![]),
            Err(e) => return Err(err(e)),
        };
        let mut out = Vec::with_capacity(t.len().map_err(err)? as usize);
        for item in t.range(prefix..).map_err(err)? {
            let (k, v) = item.map_err(err)?;
            let k = k.value();
            if !k.starts_with(prefix) {
                break;
            }
            let (revision, value) = v.value();
            out.push((
                k.to_string(),
                Record {
                    revision,
                    value: value.to_vec(),
                },
            ));
        }
        Ok(out)
    }

    fn commit(&self, ops: Vec<Op>) -> Result<Vec<Revision>, StoreError> {
        if ops.is_empty() {
            return Ok(vec![]);
        }
        for op in &ops {
            check_table(op.target().0)?;
        }
        // redb allows one write transaction at a time, so checks and writes below see no
        // concurrent writer; an early return drops (aborts) the transaction: all or nothing.
        let txn = self.db.begin_write().map_err(err)?;
        let next = {
            let mut meta = txn.open_table(META).map_err(err)?;
            let current = meta.get(REVISION).map_err(err)?.map_or(0, |g| g.value());
            let next = current + 1;
            meta.insert(REVISION, next).map_err(err)?;
            next
        };
        for op in &ops {
            let (table, key, expect) = op.target();
            let mut t = txn.open_table(Def::new(table)).map_err(err)?;
            let actual = t.get(key).map_err(err)?.map(|g| g.value().0);
            expect.check(table, key, actual)?;
            match op {
                Op::Put { value, .. } => {
                    t.insert(key, (next, value.as_slice())).map_err(err)?;
                }
                Op::Delete { .. } => {
                    t.remove(key).map_err(err)?;
                }
            }
        }
        txn.commit().map_err(err)?;
        Ok(vec![next; ops.len()])
    }

    fn tables(&self) -> Result<Vec<String>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let mut out = vec![];
        for h in txn.list_tables().map_err(err)? {
            let name = h.name();
            if check_table(name).is_err() {
                continue; // `_meta`: the implementation's own
            }
            let t = txn.open_table(Def::new(name)).map_err(err)?;
            if !t.is_empty().map_err(err)? {
                out.push(name.to_string());
            }
        }
        out.sort();
        Ok(out)
    }
}

impl RedbStore {
    /// Whether `e` says another process (a running daemon) has the file open.
    pub fn is_locked(e: &StoreError) -> bool {
        matches!(e, StoreError::Redb(b) if matches!(**b, redb::Error::DatabaseAlreadyOpen))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Expect;

    #[test]
    fn store_suite() {
        let dir = tempfile::tempdir().unwrap();
        super::super::suite::run(&RedbStore::open(&dir.path().join("seed.redb")).unwrap());
    }

    #[test]
    fn durable_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed.redb");
        let (r1, r2) = {
            let s = RedbStore::open(&path).unwrap();
            let r1 = s.put("nodes", "a", b"A".to_vec(), Expect::Absent).unwrap();
            let r2 = s.put("stacks", "s", b"S".to_vec(), Expect::Absent).unwrap();
            // A failed commit must not leave anything behind either.
            assert!(s
                .commit(vec![
                    Op::put("nodes", "b", b"B".to_vec(), Expect::Absent),
                    Op::put("nodes", "a", b"A2".to_vec(), Expect::Absent),
                ])
                .is_err());
            (r1, r2)
        };
        let s = RedbStore::open(&path).unwrap();
        assert_eq!(
            s.get("nodes", "a").unwrap(),
            Some(Record {
                revision: r1,
                value: b"A".to_vec()
            })
        );
        assert_eq!(s.get("stacks", "s").unwrap().unwrap().revision, r2);
        assert_eq!(s.get("nodes", "b").unwrap(), None);
        // The revision counter survives too: no revision is handed out twice.
        let r3 = s.put("nodes", "c", vec![], Expect::Absent).unwrap();
        assert!(r3 > r2, "{r3} > {r2}");
    }

    #[test]
    fn second_open_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed.redb");
        let _a = RedbStore::open(&path).unwrap();
        let e = RedbStore::open(&path).unwrap_err();
        assert!(matches!(e, StoreError::Redb(_)), "{e}");
    }
}
