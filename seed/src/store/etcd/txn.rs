//! [`Store::commit`](crate::store::Store::commit) as one etcd transaction.
//!
//! Ops on the same key are folded first (etcd refuses a transaction that writes one key twice):
//! the first op's expectation becomes the compare against the stored state, each later op's
//! expectation is checked against what the ops before it leave, and the last write wins. The
//! transaction is `if (fence ∧ every compare) then (every write) else (read the fence key and
//! every compared key)`: the else branch says, atomically, whether the fence or which compare
//! failed.

use super::super::{check_table, Expect, Op, Revision, StoreError};
use super::bridge::etcd_err;
use super::fence::Term;
use super::{chunk, EtcdStore};
use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse};
use std::collections::HashMap;
use tracing::debug;

/// What one etcd request may hold.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
}

/// Room left in a request for framing and the else branch.
const MARGIN: usize = 64 * 1024;
/// Values at least this large are chunked first when a commit is too large.
const CHUNK_MIN: usize = 32 * 1024;
/// The largest chunk.
const CHUNK_MAX: usize = 1024 * 1024;

/// One key of a commit after folding.
struct Target {
    table: String,
    key: String,
    etcd_key: String,
    /// The first op's expectation: compared against the store.
    expect: Expect,
    /// What the commit leaves: a value, or nothing (deleted).
    value: Option<Vec<u8>>,
}

fn fold(ops: Vec<Op>, s: &EtcdStore) -> Result<Vec<Target>, StoreError> {
    let mut targets: Vec<Target> = Vec::new();
    let mut index: HashMap<(String, String), usize> = HashMap::new();
    for op in ops {
        let (table, key, expect) = op.target();
        let (table, key) = (table.to_string(), key.to_string());
        let value = match op {
            Op::Put { value, .. } => Some(value),
            Op::Delete { .. } => None,
        };
        match index.get(&(table.clone(), key.clone())) {
            None => {
                index.insert((table.clone(), key.clone()), targets.len());
                targets.push(Target {
                    etcd_key: s.layout.record(&table, &key),
                    table,
                    key,
                    expect,
                    value,
                });
            }
            Some(&i) => {
                let t = &mut targets[i];
                // Written earlier in this commit: its revision is this commit's, unknown yet.
                let present = t.value.is_some();
                let holds = match expect {
                    Expect::Any => true,
                    Expect::Absent => !present,
                    Expect::Revision(_) => false,
                };
                if !holds {
                    return Err(StoreError::Conflict {
                        table,
                        key,
                        expected: expect,
                        actual: None,
                    });
                }
                t.value = value;
            }
        }
    }
    Ok(targets)
}

/// The bytes a transaction of `targets` sends (an estimate with protobuf framing).
fn request_bytes(targets: &[Target]) -> usize {
    targets
        .iter()
        .map(|t| {
            let compare = if t.expect == Expect::Any {
                0
            } else {
                t.etcd_key.len() + 16
            };
            compare + 2 * (t.etcd_key.len() + 8) + t.value.as_ref().map_or(0, Vec::len) + 8
        })
        .sum()
}

fn compare(t: &Target) -> Option<Compare> {
    match t.expect {
        Expect::Any => None,
        Expect::Absent => Some(Compare::version(t.etcd_key.clone(), CompareOp::Equal, 0)),
        Expect::Revision(r) => Some(Compare::mod_revision(
            t.etcd_key.clone(),
            CompareOp::Equal,
            r as i64,
        )),
    }
}

fn too_large(what: String) -> StoreError {
    StoreError::TooLarge { what }
}

/// A transaction refused for its size by the member.
fn classify(e: etcd_client::Error) -> StoreError {
    let text = e.to_string();
    if text.contains("too many operations") || text.contains("request is too large") {
        return too_large(text);
    }
    etcd_err("commit", e)
}

pub(super) fn commit(s: &EtcdStore, ops: Vec<Op>) -> Result<Vec<Revision>, StoreError> {
    if ops.is_empty() {
        return Ok(vec![]);
    }
    for op in &ops {
        check_table(op.target().0)?;
    }
    let term = match &s.fence {
        Some(f) => Some(f.for_commit()?),
        None => None,
    };
    let n = ops.len();
    let mut targets = fold(ops, s)?;
    let limit = s.limits.max_request_bytes.saturating_sub(MARGIN);

    // Too large for one request: write the largest values as chunks first.
    let mut chunked = vec![];
    if request_bytes(&targets) > limit {
        let mut by_size: Vec<usize> = (0..targets.len())
            .filter(|&i| {
                targets[i]
                    .value
                    .as_ref()
                    .is_some_and(|v| v.len() >= CHUNK_MIN)
            })
            .collect();
        by_size.sort_by_key(|&i| std::cmp::Reverse(targets[i].value.as_ref().map_or(0, Vec::len)));
        let mut total = request_bytes(&targets);
        for i in by_size {
            if total <= limit {
                break;
            }
            let v = targets[i].value.take().expect("filtered on Some");
            total -= v.len();
            chunked.push((i, targets[i].table.clone(), targets[i].key.clone(), v));
        }
        if total > limit {
            return Err(too_large(format!(
                "{total} bytes in {} writes (limit {limit})",
                targets.len()
            )));
        }
    }
    let written = if chunked.is_empty() {
        None
    } else {
        let layout = s.layout.clone();
        let chunk = CHUNK_MAX.min(limit);
        Some(s.bridge.call("writing chunks", move |mut c| async move {
            chunk::write(&mut c, &layout, chunked, chunk).await
        })?)
    };

    let mut compares = vec![];
    let mut success = vec![];
    let mut failure = vec![];
    if let Some(t) = &term {
        compares.push(Compare::create_revision(
            t.key.clone(),
            CompareOp::Equal,
            t.revision as i64,
        ));
        failure.push(TxnOp::get(
            t.key.clone(),
            Some(GetOptions::new().with_keys_only()),
        ));
    }
    let mut manifests: HashMap<usize, (Vec<u8>, Vec<String>)> = written
        .as_ref()
        .map(|w| {
            w.values
                .iter()
                .map(|(i, m, k)| (*i, (m.clone(), k.clone())))
                .collect()
        })
        .unwrap_or_default();
    let mut compared = vec![];
    for (i, t) in targets.iter_mut().enumerate() {
        if let Some(c) = compare(t) {
            compares.push(c);
            failure.push(TxnOp::get(
                t.etcd_key.clone(),
                Some(GetOptions::new().with_keys_only()),
            ));
            compared.push(i);
        }
        if let Some((manifest, keys)) = manifests.remove(&i) {
            success.push(TxnOp::put(t.etcd_key.clone(), manifest, None));
            success.extend(keys.iter().map(|k| chunk::adopt(k)));
        } else {
            match t.value.take() {
                Some(v) => success.push(TxnOp::put(t.etcd_key.clone(), v, None)),
                None => success.push(TxnOp::delete(t.etcd_key.clone(), None)),
            }
        }
    }
    let max = s.limits.max_txn_ops;
    if compares.len() > max || success.len() > max || failure.len() > max {
        release(s, written.as_ref());
        return Err(too_large(format!(
            "{} compares and {} writes (limit {max} each)",
            compares.len(),
            success.len()
        )));
    }

    let txn = Txn::new().when(compares).and_then(success).or_else(failure);
    let resp = s.bridge.call("commit", move |mut c| async move {
        c.txn(txn).await.map_err(classify)
    });
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            release(s, written.as_ref());
            return Err(e);
        }
    };
    if resp.succeeded() {
        let rev = resp.header().map_or(0, |h| h.revision()) as Revision;
        if written.is_some() {
            release(s, written.as_ref());
            // The records just written may have had chunks of their own before.
            if let Err(e) = s.sweep_chunks() {
                debug!(error = %e, "chunk sweep after a commit");
            }
        }
        return Ok(vec![rev; n]);
    }
    release(s, written.as_ref());
    Err(explain(
        s,
        &resp.op_responses(),
        term.as_ref(),
        &targets,
        &compared,
    ))
}

/// Revoke the chunk lease: after a commit it holds nothing (adopted chunks left it); after a
/// failure it deletes the chunks at once.
fn release(s: &EtcdStore, written: Option<&chunk::Written>) {
    let Some(w) = written else {
        return;
    };
    let lease = w.lease;
    if let Err(e) = s
        .bridge
        .call("revoking a chunk lease", move |mut c| async move {
            c.lease_revoke(lease)
                .await
                .map(drop)
                .map_err(|e| etcd_err("revoke", e))
        })
    {
        debug!(error = %e, "chunk lease left to expire");
    }
}

/// Why the compares failed: the fence first, else the first op whose expectation did not hold.
fn explain(
    s: &EtcdStore,
    responses: &[TxnOpResponse],
    term: Option<&Term>,
    targets: &[Target],
    compared: &[usize],
) -> StoreError {
    let found = |r: Option<&TxnOpResponse>| -> Option<(i64, i64)> {
        match r {
            Some(TxnOpResponse::Get(g)) => g
                .kvs()
                .first()
                .map(|kv| (kv.create_revision(), kv.mod_revision())),
            _ => None,
        }
    };
    let mut it = responses.iter();
    if let Some(t) = term {
        let leader = found(it.next());
        if leader.map(|(c, _)| c) != Some(t.revision as i64) {
            let fence = s.fence.as_ref().expect("a term comes from a fence");
            return fence.rejected(t);
        }
    }
    for &i in compared {
        let t = &targets[i];
        let actual = found(it.next()).map(|(_, m)| m as Revision);
        if !t.expect.holds(actual) {
            return StoreError::Conflict {
                table: t.table.clone(),
                key: t.key.clone(),
                expected: t.expect,
                actual,
            };
        }
    }
    // Cannot happen (the reads ran in the same transaction as the compares); say so plainly.
    StoreError::Etcd {
        what: "commit refused, but every compare holds".into(),
        source: None,
    }
}
