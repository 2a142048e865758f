//! The state store: one trait, an embedded implementation (one file) and etcd for HA.
//!
//! [`Store`] is a set of named tables of keyed byte records. Every write gets a new revision
//! from one store-wide counter (like etcd's `mod_revision`, so a deleted and re-created key never
//! reuses a revision), and every write states what it expects to find ([`Expect`]): a writer
//! that read revision 7 and writes with `Expect::Revision(7)` gets [`StoreError::Conflict`]
//! instead of silently losing someone else's update. [`Store::commit`] applies several writes
//! all-or-nothing. Implementations: [`redb::RedbStore`] (one file; a write is durable before the
//! call returns), [`memory::MemStore`] (the simulator) and [`etcd::EtcdStore`] (the HA control
//! plane: revisions are etcd's `mod_revision`, a commit is one etcd transaction, and a leader's
//! writes can be fenced). [`nodes`] is the typed layer for the inventory; [`migrate`] copies a
//! whole store into another (redb ⇄ etcd) with a checksum of what was copied.

pub mod config;
pub mod etcd;
pub mod json;
pub mod memory;
pub mod migrate;
pub mod nodes;
pub mod redb;
pub mod sealed;

use std::fmt;

/// A store-wide, strictly increasing write number.
pub type Revision = u64;

/// A stored value and the revision of its last write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub revision: Revision,
    pub value: Vec<u8>,
}

/// What a write expects to find at its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Whatever is there (last writer wins; for records nobody else edits).
    Any,
    /// Nothing: create only.
    Absent,
    /// Exactly this revision: compare-and-swap.
    Revision(Revision),
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Any => f.write_str("anything"),
            Expect::Absent => f.write_str("no record"),
            Expect::Revision(r) => write!(f, "revision {r}"),
        }
    }
}

impl Expect {
    fn holds(self, actual: Option<Revision>) -> bool {
        match self {
            Expect::Any => true,
            Expect::Absent => actual.is_none(),
            Expect::Revision(r) => actual == Some(r),
        }
    }

    /// `Ok` where `table/key`, at revision `actual` (`None`: absent), is what this expects;
    /// otherwise the [`StoreError::Conflict`] every backend answers.
    pub fn check(self, table: &str, key: &str, actual: Option<Revision>) -> Result<(), StoreError> {
        if self.holds(actual) {
            return Ok(());
        }
        Err(StoreError::Conflict {
            table: table.into(),
            key: key.into(),
            expected: self,
            actual,
        })
    }
}

/// One write of a [`Store::commit`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put {
        table: String,
        key: String,
        value: Vec<u8>,
        expect: Expect,
    },
    Delete {
        table: String,
        key: String,
        expect: Expect,
    },
}

impl Op {
    pub fn put(table: &str, key: &str, value: Vec<u8>, expect: Expect) -> Op {
        Op::Put {
            table: table.into(),
            key: key.into(),
            value,
            expect,
        }
    }
    pub fn delete(table: &str, key: &str, expect: Expect) -> Op {
        Op::Delete {
            table: table.into(),
            key: key.into(),
            expect,
        }
    }
    fn target(&self) -> (&str, &str, Expect) {
        match self {
            Op::Put {
                table, key, expect, ..
            }
            | Op::Delete { table, key, expect } => (table, key, *expect),
        }
    }
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{table}/{key} changed: expected {expected}, found {}", .actual.map_or("no record".to_string(), |r| format!("revision {r}")))]
    Conflict {
        table: String,
        key: String,
        expected: Expect,
        actual: Option<Revision>,
    },
    #[error("table name {0:?} is reserved, empty or contains '/'")]
    BadTable(String),
    #[error("embedded store")]
    Redb(#[source] Box<::redb::Error>),
    /// An etcd call failed or timed out (no quorum, no member reachable, …).
    #[error("etcd: {what}")]
    Etcd {
        what: String,
        #[source]
        source: Option<Box<etcd_client::Error>>,
    },
    /// This store handle writes only while its daemon leads, and it does not lead.
    #[error("not the leader: writes go through the leader")]
    NotLeader,
    /// The write was part of a transaction fenced by the leader key's revision, and that key is
    /// gone or was re-created: a newer leader exists, nothing was written.
    #[error("fenced: leadership (key {key}, revision {revision}) was lost, nothing written")]
    Fenced { key: String, revision: Revision },
    /// A commit that cannot be one etcd request (too many operations or bytes even after large
    /// values were chunked out of it).
    #[error("commit too large for one etcd request: {what}")]
    TooLarge { what: String },
    /// The store cannot do this (e.g. list its tables).
    #[error("{0} is not supported by this store")]
    Unsupported(&'static str),
    #[error("the store {path} was written by an older seed (redb 2) and could not be upgraded; it is unchanged (move it away to start with an empty store)")]
    Upgrade {
        path: std::path::PathBuf,
        #[source]
        source: Box<self::redb::upgrade::UpgradeError>,
    },
    /// A sealed secret ([`sealed`]) that does not open: the key file is not the one it was
    /// sealed with, or the record was altered.
    #[error("record {table}/{key}: {why}")]
    Sealed {
        table: String,
        key: String,
        why: String,
    },
    /// The key file of [`sealed`] cannot be read or created.
    #[error("the secrets key file {path}")]
    KeyFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("record {table}/{key} does not decode")]
    Decode {
        table: String,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("record {table}/{key} does not encode")]
    Encode {
        table: String,
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

impl StoreError {
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }

    /// The write was refused because this writer does not (or no longer) lead.
    pub fn is_fenced(&self) -> bool {
        matches!(self, StoreError::Fenced { .. } | StoreError::NotLeader)
    }

    /// The store could not be reached or has no quorum: retry later, nothing is known to be
    /// written or not (a commit may still have been applied; a re-read tells).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Etcd { .. })
    }
}

/// Tables whose names start with `_` belong to the implementation; `/` separates a table from
/// its keys in etcd.
fn check_table(t: &str) -> Result<(), StoreError> {
    if t.is_empty() || t.starts_with('_') || t.contains('/') {
        return Err(StoreError::BadTable(t.into()));
    }
    Ok(())
}

/// The state store.
pub trait Store: Send + Sync {
    /// The record at `table/key`.
    fn get(&self, table: &str, key: &str) -> Result<Option<Record>, StoreError>;
    /// Every record of `table` whose key starts with `prefix`, in key order.
    fn list(&self, table: &str, prefix: &str) -> Result<Vec<(String, Record)>, StoreError>;
    /// Apply `ops` all-or-nothing: if any expectation fails nothing is written and the first
    /// failing op is reported as a conflict. Returns the revision of each op (for a delete, the
    /// revision of the commit). Durable when it returns.
    fn commit(&self, ops: Vec<Op>) -> Result<Vec<Revision>, StoreError>;

    /// The names of the tables that hold at least one record, sorted (for [`migrate`]).
    fn tables(&self) -> Result<Vec<String>, StoreError> {
        Err(StoreError::Unsupported("listing tables"))
    }

    fn put(
        &self,
        table: &str,
        key: &str,
        value: Vec<u8>,
        expect: Expect,
    ) -> Result<Revision, StoreError> {
        Ok(self.commit(vec![Op::put(table, key, value, expect)])?[0])
    }

    fn delete(&self, table: &str, key: &str, expect: Expect) -> Result<(), StoreError> {
        self.commit(vec![Op::delete(table, key, expect)]).map(drop)
    }
}

#[cfg(test)]
pub(crate) mod suite {
    //! The behaviour every [`Store`] implementation must have; run against each of them.
    use super::*;

    pub fn run(s: &dyn Store) {
        basic(s);
        cas(s);
        atomic_commit(s);
        tables_and_prefixes(s);
        same_key_twice(s);
        large_values(s);
        nodes::tests::suite(s);
    }

    /// Two ops on one key in one commit: each expectation is checked against the state the ops
    /// before it leave, the last write wins.
    fn same_key_twice(s: &dyn Store) {
        s.commit(vec![
            Op::put("twice", "k", b"1".to_vec(), Expect::Absent),
            Op::put("twice", "k", b"2".to_vec(), Expect::Any),
        ])
        .unwrap();
        assert_eq!(s.get("twice", "k").unwrap().unwrap().value, b"2");
        s.commit(vec![
            Op::delete("twice", "k", Expect::Any),
            Op::put("twice", "k", b"3".to_vec(), Expect::Absent),
        ])
        .unwrap();
        assert_eq!(s.get("twice", "k").unwrap().unwrap().value, b"3");
        // The second op expects no record, but the first one just wrote it.
        assert!(s
            .commit(vec![
                Op::put("twice", "j", b"1".to_vec(), Expect::Absent),
                Op::put("twice", "j", b"2".to_vec(), Expect::Absent),
            ])
            .unwrap_err()
            .is_conflict());
        assert_eq!(s.get("twice", "j").unwrap(), None);
    }

    /// Values larger than one etcd request (1.5 MiB by default) round-trip, in a commit with
    /// other writes, and are replaced and deleted like any other.
    fn large_values(s: &dyn Store) {
        let big: Vec<u8> = (0..3_500_000u32).map(|i| (i % 251) as u8).collect();
        let r = s
            .commit(vec![
                Op::put("big", "a", big.clone(), Expect::Absent),
                Op::put("big", "b", b"small".to_vec(), Expect::Absent),
            ])
            .unwrap();
        let got = s.get("big", "a").unwrap().unwrap();
        assert_eq!(got.revision, r[0]);
        assert!(got.value == big, "the large value came back changed");
        let listed = s.list("big", "").unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed[0].1.value == big);
        // Replaced by a CAS against the revision it was read at, then by a small value.
        let mut big2 = big.clone();
        big2.reverse();
        let r2 = s
            .put("big", "a", big2.clone(), Expect::Revision(got.revision))
            .unwrap();
        assert!(s
            .put("big", "a", vec![], Expect::Revision(got.revision))
            .unwrap_err()
            .is_conflict());
        assert!(s.get("big", "a").unwrap().unwrap().value == big2);
        s.put("big", "a", b"now small".to_vec(), Expect::Revision(r2))
            .unwrap();
        assert_eq!(s.get("big", "a").unwrap().unwrap().value, b"now small");
        s.put("big", "c", big.clone(), Expect::Absent).unwrap();
        s.delete("big", "c", Expect::Any).unwrap();
        assert_eq!(s.get("big", "c").unwrap(), None);
    }

    fn basic(s: &dyn Store) {
        assert_eq!(s.get("t", "a").unwrap(), None);
        let r1 = s.put("t", "a", b"one".to_vec(), Expect::Absent).unwrap();
        assert_eq!(
            s.get("t", "a").unwrap(),
            Some(Record {
                revision: r1,
                value: b"one".to_vec()
            })
        );
        let r2 = s.put("t", "a", b"two".to_vec(), Expect::Any).unwrap();
        assert!(r2 > r1);
        s.delete("t", "a", Expect::Revision(r2)).unwrap();
        assert_eq!(s.get("t", "a").unwrap(), None);
        // Re-created: a fresh, larger revision (no ABA).
        let r3 = s.put("t", "a", b"three".to_vec(), Expect::Absent).unwrap();
        assert!(r3 > r2);
        assert!(s.put("_meta", "x", vec![], Expect::Any).is_err());
        assert!(s.get("", "x").is_err());
        assert!(s.get("a/b", "x").is_err());
    }

    fn cas(s: &dyn Store) {
        let r = s.put("cas", "k", b"v0".to_vec(), Expect::Absent).unwrap();
        // Two writers read revision r; the first wins, the second must not lose its update
        // silently.
        let w1 = s
            .put("cas", "k", b"w1".to_vec(), Expect::Revision(r))
            .unwrap();
        let err = s
            .put("cas", "k", b"w2".to_vec(), Expect::Revision(r))
            .unwrap_err();
        match &err {
            StoreError::Conflict {
                table,
                key,
                expected,
                actual,
            } => {
                assert_eq!((table.as_str(), key.as_str()), ("cas", "k"));
                assert_eq!(*expected, Expect::Revision(r));
                assert_eq!(*actual, Some(w1));
            }
            e => panic!("{e}"),
        }
        assert!(err.to_string().contains("cas/k changed"), "{err}");
        assert_eq!(s.get("cas", "k").unwrap().unwrap().value, b"w1");
        // Create-only refuses an existing key; CAS on a missing key is a conflict.
        assert!(s
            .put("cas", "k", vec![], Expect::Absent)
            .unwrap_err()
            .is_conflict());
        assert!(s
            .put("cas", "missing", vec![], Expect::Revision(1))
            .unwrap_err()
            .is_conflict());
        assert!(s
            .delete("cas", "k", Expect::Revision(r))
            .unwrap_err()
            .is_conflict());
        assert!(s.get("cas", "k").unwrap().is_some());
    }

    fn atomic_commit(s: &dyn Store) {
        s.put("atom", "taken", b"x".to_vec(), Expect::Absent)
            .unwrap();
        let err = s
            .commit(vec![
                Op::put("atom", "a", b"1".to_vec(), Expect::Absent),
                Op::put("atom2", "b", b"2".to_vec(), Expect::Absent),
                Op::put("atom", "taken", b"3".to_vec(), Expect::Absent),
            ])
            .unwrap_err();
        assert!(err.is_conflict());
        assert_eq!(s.get("atom", "a").unwrap(), None, "nothing written");
        assert_eq!(s.get("atom2", "b").unwrap(), None, "nothing written");
        let revs = s
            .commit(vec![
                Op::put("atom", "a", b"1".to_vec(), Expect::Absent),
                Op::delete("atom", "taken", Expect::Any),
            ])
            .unwrap();
        assert_eq!(revs.len(), 2);
        assert_eq!(s.get("atom", "a").unwrap().unwrap().revision, revs[0]);
        assert_eq!(s.get("atom", "taken").unwrap(), None);
    }

    fn tables_and_prefixes(s: &dyn Store) {
        for k in ["stack/b", "stack/a", "event/1", "stacky"] {
            s.put("kv", k, k.as_bytes().to_vec(), Expect::Any).unwrap();
        }
        s.put("kv2", "stack/z", vec![], Expect::Any).unwrap();
        let keys: Vec<String> = s
            .list("kv", "stack/")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["stack/a", "stack/b"]);
        assert_eq!(s.list("kv", "").unwrap().len(), 4);
        assert!(s.list("never-written", "").unwrap().is_empty());
        // Tables with records are listed, sorted, without the implementation's own; a table
        // whose records are all deleted is not.
        s.put("emptied", "k", vec![1], Expect::Absent).unwrap();
        s.delete("emptied", "k", Expect::Any).unwrap();
        let tables = s.tables().unwrap();
        assert!(tables.windows(2).all(|w| w[0] < w[1]), "{tables:?}");
        for t in ["kv", "kv2"] {
            assert!(tables.iter().any(|x| x == t), "{t} in {tables:?}");
        }
        assert!(
            !tables
                .iter()
                .any(|t| t == "emptied" || t == "never-written" || t.starts_with('_')),
            "{tables:?}"
        );
    }
}
