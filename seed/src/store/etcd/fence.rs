//! Fencing: a leader's writes are valid only while its term is.
//!
//! A term is the leader key the election gave this daemon (`<prefix>leader/<lease id>`) and
//! that key's `create_revision`. The key lives on the daemon's lease: when the lease ends
//! (the daemon was paused, partitioned or killed longer than the TTL) etcd deletes the key, and
//! a new term can only have a new key or a larger revision. Every commit of a fenced store
//! carries the compare `create_revision(term key) == term revision`, so a deposed leader's
//! commit fails inside etcd, atomically with everything else it tried to write, no matter what
//! its own clock or state believed ([`StoreError::Fenced`]). This is the fencing invariant.
//!
//! The [`Fence`] is shared by the election (which sets and clears the term) and the fenced
//! store handles (which read it on every commit). Refusals are counted: `refused_locally` when
//! the daemon knew it did not lead, `rejected` when etcd refused a term that had ended.

use super::super::{Revision, StoreError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

/// The leader key and its create revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    pub key: String,
    pub revision: Revision,
}

/// The current term, if this daemon leads, and the refusal counters.
#[derive(Debug, Default)]
pub struct Fence {
    term: RwLock<Option<Term>>,
    rejected: AtomicU64,
    refused_locally: AtomicU64,
}

impl Fence {
    pub fn new() -> Fence {
        Fence::default()
    }

    /// The term writes are fenced by now (`None`: not leading).
    pub fn term(&self) -> Option<Term> {
        self.term.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Start (`Some`) or end (`None`) a term.
    pub fn set(&self, term: Option<Term>) {
        *self.term.write().unwrap_or_else(|p| p.into_inner()) = term;
    }

    /// The term for a commit, or the local refusal (counted).
    pub(super) fn for_commit(&self) -> Result<Term, StoreError> {
        self.term().ok_or_else(|| {
            self.refused_locally.fetch_add(1, Ordering::Relaxed);
            StoreError::NotLeader
        })
    }

    /// etcd refused a commit of `term`: count it, and forget the term if it is still the
    /// current one (the election will find out too, but no write should try it again).
    pub(super) fn rejected(&self, term: &Term) -> StoreError {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        let mut cur = self.term.write().unwrap_or_else(|p| p.into_inner());
        if cur.as_ref() == Some(term) {
            *cur = None;
        }
        StoreError::Fenced {
            key: term.key.clone(),
            revision: term.revision,
        }
    }

    /// Commits etcd refused because their term had ended (the fencing invariant at work).
    pub fn rejected_count(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Commits refused before reaching etcd because this daemon did not lead.
    pub fn refused_locally_count(&self) -> u64 {
        self.refused_locally.load(Ordering::Relaxed)
    }
}
