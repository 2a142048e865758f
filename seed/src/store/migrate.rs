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

/// Records per destination commit (within etcd's default 128 operations; large values are
/// chunked by the etcd store itself).
const BATCH: usize = 64;

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
    let existing = to.tables()?;
    if let Some(t) = before.tables.iter().find(|(t, _)| existing.contains(t)) {
        return Err(MigrateError::NotEmpty(t.0.clone()));
    }
    for (t, _) in &before.tables {
        let mut batch = Vec::with_capacity(BATCH);
        for (k, r) in from.list(t, "")? {
            batch.push(Op::put(t, &k, r.value, Expect::Absent));
            if batch.len() == BATCH {
                to.commit(std::mem::take(&mut batch))?;
            }
        }
        if !batch.is_empty() {
            to.commit(batch)?;
        }
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
