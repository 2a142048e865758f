//! Moving a whole store into another: `seed store migrate --from redb:FILE --to etcd:URL` (and
//! back).
//!
//! Every record of every table (nodes, MACs, facts, stacks and their events, metadata and
//! signals, credentials, the agent-token key, DHCP leases, … whatever tables exist) is copied
//! with its key and bytes; revisions are the destination's own. The destination must hold none
//! of the source's tables (nothing is overwritten), writes are create-only, and the copy is
//! checked: a [`checksum`] of the source before and of the destination after must be equal, or
//! the migration fails and says so. Run it with the daemon stopped (a redb file has one user at
//! a time anyway), so the source does not change underneath.
//!
//! The checksum is a sha256 over every (table, key, value), in table and key order, each field
//! length-prefixed: the same state gives the same sum in any store.

use super::{Expect, Op, Store, StoreError};
use sha2::{Digest, Sha256};

/// Records per destination commit (within etcd's default 128 operations).
const BATCH: usize = 64;
/// Value bytes per destination commit. etcd takes 1.5 MiB per request by default; the etcd
/// store chunks values of 32 KiB and more out of a commit that is too large, but not smaller
/// ones, so 64 records of 30 KiB would be refused as `TooLarge`: a batch also ends here.
const BATCH_BYTES: usize = 512 * 1024;

/// A store's state in brief; what a migration copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub tables: Vec<(String, usize)>,
    pub records: usize,
    pub bytes: u64,
    /// [`checksum`] of the source before the copy, equal to the destination's after it.
    pub checksum: String,
}

/// Why a migration stopped.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("the destination already holds table {0:?}: refusing to mix two states")]
    NotEmpty(String),
    #[error("the source is empty: nothing to migrate")]
    EmptySource,
    #[error("the copy differs from the source: checksum {before} before, {after} after")]
    Mismatch { before: String, after: String },
    #[error("store")]
    Store(#[from] StoreError),
}

/// The checksum of a store's whole state and its size (tables with their record counts,
/// records, value bytes).
pub fn checksum(s: &dyn Store) -> Result<Summary, StoreError> {
    let mut h = Sha256::new();
    let mut tables = vec![];
    let (mut records, mut bytes) = (0, 0u64);
    for t in s.tables()? {
        let rows = s.list(&t, "")?;
        for (k, r) in &rows {
            for field in [t.as_bytes(), k.as_bytes(), &r.value] {
                h.update((field.len() as u64).to_le_bytes());
                h.update(field);
            }
            bytes += r.value.len() as u64;
        }
        records += rows.len();
        tables.push((t, rows.len()));
    }
    Ok(Summary {
        tables,
        records,
        bytes,
        checksum: hex::encode(h.finalize()),
    })
}

/// Copy every record of `from` into `to` (see the module doc).
pub fn copy(from: &dyn Store, to: &dyn Store) -> Result<Summary, MigrateError> {
    let before = checksum(from)?;
    if before.records == 0 {
        return Err(MigrateError::EmptySource);
    }
    let existing = to.tables()?;
    if let Some(t) = before.tables.iter().find(|(t, _)| existing.contains(t)) {
        return Err(MigrateError::NotEmpty(t.0.clone()));
    }
    for (t, _) in &before.tables {
        let mut batch = Batch::new(to);
        for (k, r) in from.list(t, "")? {
            batch.push(Op::put(t, &k, r.value, Expect::Absent))?;
        }
        batch.flush()?;
    }
    let after = checksum(to)?.checksum;
    if after != before.checksum {
        return Err(MigrateError::Mismatch {
            before: before.checksum,
            after,
        });
    }
    Ok(before)
}

/// Delete every record of `to` (what `seed store migrate --force` does to a destination that
/// holds a state before copying into it). Returns how many records were deleted.
pub fn clear(to: &dyn Store) -> Result<usize, StoreError> {
    let mut n = 0;
    for t in to.tables()? {
        let mut batch = Batch::new(to);
        for (k, r) in to.list(&t, "")? {
            batch.push(Op::delete(&t, &k, Expect::Revision(r.revision)))?;
            n += 1;
        }
        batch.flush()?;
    }
    Ok(n)
}

/// Writes committed in bounded batches (see [`BATCH`], [`BATCH_BYTES`]).
struct Batch<'a> {
    to: &'a dyn Store,
    ops: Vec<Op>,
    bytes: usize,
}

impl<'a> Batch<'a> {
    fn new(to: &'a dyn Store) -> Self {
        Batch {
            to,
            ops: Vec::with_capacity(BATCH),
            bytes: 0,
        }
    }

    fn push(&mut self, op: Op) -> Result<(), StoreError> {
        self.bytes += match &op {
            Op::Put { key, value, .. } => key.len() + value.len(),
            Op::Delete { key, .. } => key.len(),
        };
        self.ops.push(op);
        if self.ops.len() >= BATCH || self.bytes >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        if !self.ops.is_empty() {
            self.to.commit(std::mem::take(&mut self.ops))?;
        }
        self.bytes = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemStore;

    fn filled() -> MemStore {
        let s = MemStore::new();
        for i in 0..150 {
            s.put(
                "nodes",
                &format!("n{i:03}"),
                vec![i as u8; 100],
                Expect::Absent,
            )
            .unwrap();
        }
        s.put("agent-token", "key", vec![7; 32], Expect::Absent)
            .unwrap();
        s.put(
            "stack-events",
            "demo/000000000001",
            b"{}".to_vec(),
            Expect::Absent,
        )
        .unwrap();
        s
    }

    #[test]
    fn copies_everything_and_the_sums_agree() {
        let a = filled();
        let b = MemStore::new();
        let sum = copy(&a, &b).unwrap();
        assert_eq!(sum.records, 152);
        assert_eq!(
            sum.tables,
            [
                ("agent-token".to_string(), 1),
                ("nodes".to_string(), 150),
                ("stack-events".to_string(), 1)
            ]
        );
        assert_eq!(checksum(&b).unwrap().checksum, sum.checksum);
        // And back again into a third store: the same state, the same sum.
        let c = MemStore::new();
        assert_eq!(copy(&b, &c).unwrap().checksum, sum.checksum);
    }

    #[test]
    fn a_destination_with_state_is_refused_untouched() {
        let a = filled();
        let b = MemStore::new();
        b.put("nodes", "other", b"x".to_vec(), Expect::Absent)
            .unwrap();
        let before = checksum(&b).unwrap().checksum;
        assert!(matches!(copy(&a, &b), Err(MigrateError::NotEmpty(t)) if t == "nodes"));
        assert_eq!(checksum(&b).unwrap().checksum, before);
    }

    #[test]
    fn force_clears_the_destination_first() {
        let a = filled();
        let b = MemStore::new();
        b.put("nodes", "other", b"x".to_vec(), Expect::Absent)
            .unwrap();
        b.put("unrelated", "y", b"y".to_vec(), Expect::Absent)
            .unwrap();
        assert_eq!(clear(&b).unwrap(), 2);
        assert_eq!(b.tables().unwrap(), Vec::<String>::new());
        let sum = copy(&a, &b).unwrap();
        assert_eq!(checksum(&b).unwrap(), sum);
    }

    /// A store that records the size of every commit it is given.
    struct Sizes(MemStore, std::sync::Mutex<Vec<(usize, usize)>>);

    impl Store for Sizes {
        fn get(&self, t: &str, k: &str) -> Result<Option<crate::store::Record>, StoreError> {
            self.0.get(t, k)
        }
        fn list(
            &self,
            t: &str,
            p: &str,
        ) -> Result<Vec<(String, crate::store::Record)>, StoreError> {
            self.0.list(t, p)
        }
        fn commit(&self, ops: Vec<Op>) -> Result<Vec<crate::store::Revision>, StoreError> {
            let bytes = ops
                .iter()
                .map(|o| match o {
                    Op::Put { value, .. } => value.len(),
                    Op::Delete { .. } => 0,
                })
                .sum();
            self.1.lock().unwrap().push((ops.len(), bytes));
            self.0.commit(ops)
        }
        fn tables(&self) -> Result<Vec<String>, StoreError> {
            self.0.tables()
        }
    }

    /// Values just under the size the etcd store would chunk never make a commit larger than
    /// one etcd request.
    #[test]
    fn commits_stay_within_one_request() {
        let a = MemStore::new();
        for i in 0..200 {
            a.put(
                "events",
                &format!("{i:04}"),
                vec![3; 31 * 1024],
                Expect::Absent,
            )
            .unwrap();
        }
        let b = Sizes(MemStore::new(), Default::default());
        copy(&a, &b).unwrap();
        let sizes = b.1.lock().unwrap();
        assert!(sizes
            .iter()
            .all(|&(n, bytes)| n <= BATCH
                && bytes < crate::store::etcd::DEFAULT_MAX_REQUEST_BYTES / 2));
        assert_eq!(sizes.iter().map(|s| s.0).sum::<usize>(), 200);
    }

    #[test]
    fn the_sum_sees_every_byte() {
        let a = filled();
        let before = checksum(&a).unwrap().checksum;
        let r = a.get("nodes", "n007").unwrap().unwrap();
        let mut v = r.value.clone();
        v[50] ^= 1;
        a.put("nodes", "n007", v, Expect::Revision(r.revision))
            .unwrap();
        assert_ne!(checksum(&a).unwrap().checksum, before);
    }
}
