//! Values larger than one etcd request.
//!
//! etcd refuses a request over `--max-request-bytes` (1.5 MiB by default), and a commit is one
//! request. When a commit would be too large, its largest values are written first as chunks
//! (≤ 1 MiB each, one request each) under `<prefix>c/<table>/<key>\0<nonce>/<nnnnnn>`, on a
//! short lease, so that a writer that dies before its commit leaves nothing that lasts. The
//! commit then stores a small manifest in the record ([`MAGIC`] + JSON: nonce, count, length,
//! sha256) and, in the same transaction, detaches the chunks from the lease (a put with
//! `ignore_value`): the record and its chunks appear together or not at all, and compares on the
//! record's revision work as for any other value.
//!
//! Reads resolve a manifest by reading the chunks at the revision the record was read at, and
//! check the length and sha256. An overwrite or delete of a chunked record leaves its old chunks
//! behind; [`sweep`] deletes chunk sets no record refers to, each under a compare on the
//! record's revision (so it never races a commit that starts referring to them). The store
//! sweeps after every commit that wrote chunks; the leader also sweeps now and then.

use super::super::StoreError;
use super::bridge::etcd_err;
use super::{prefix_end, EtcdStore, Layout};
use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The first bytes of a chunked record's value: `0xff` never starts JSON or UTF-8 text, and
/// the whole marker never starts a value the daemon writes.
pub const MAGIC: &[u8] = b"\xffseed-chunked\x00";
/// Chunks live this long on their lease unless a commit adopts them.
const LEASE_SECS: i64 = 120;

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    nonce: String,
    count: usize,
    len: usize,
    sha256: String,
}

pub fn is_manifest(value: &[u8]) -> bool {
    value.starts_with(MAGIC)
}

fn damaged(table: &str, key: &str, why: &str) -> StoreError {
    StoreError::Etcd {
        what: format!("chunked record {table}/{key} is damaged: {why}"),
        source: None,
    }
}

fn chunk_key(layout: &Layout, table: &str, key: &str, nonce: &str, i: usize) -> String {
    format!("{}{nonce}/{i:06}", layout.chunks_of(table, key))
}

/// A record's value as stored: itself, or the chunks its manifest names, read at `rev`.
pub async fn resolve(
    c: &mut Client,
    layout: &Layout,
    table: &str,
    key: &str,
    value: Vec<u8>,
    rev: i64,
) -> Result<Vec<u8>, StoreError> {
    if !is_manifest(&value) {
        return Ok(value);
    }
    let m: Manifest = serde_json::from_slice(&value[MAGIC.len()..])
        .map_err(|e| damaged(table, key, &e.to_string()))?;
    let start = format!("{}{}/", layout.chunks_of(table, key), m.nonce).into_bytes();
    let mut out = Vec::with_capacity(m.len);
    let mut from = start.clone();
    let end = prefix_end(&start);
    loop {
        // One chunk per response keeps each under the gRPC message limit.
        let mut opts = GetOptions::new().with_range(end.clone()).with_limit(1);
        if rev > 0 {
            opts = opts.with_revision(rev);
        }
        let mut resp = c
            .get(from.clone(), Some(opts))
            .await
            .map_err(|e| etcd_err("reading chunks", e))?;
        let more = resp.more();
        let Some(kv) = resp.take_kvs().into_iter().next() else {
            break;
        };
        out.extend_from_slice(kv.value());
        from = kv.key().to_vec();
        from.push(0);
        if !more {
            break;
        }
    }
    if out.len() != m.len {
        return Err(damaged(
            table,
            key,
            &format!("{} bytes, the manifest says {}", out.len(), m.len),
        ));
    }
    if hex::encode(Sha256::digest(&out)) != m.sha256 {
        return Err(damaged(table, key, "sha256 mismatch"));
    }
    Ok(out)
}

/// Chunks written for one commit: the manifests to store instead of the values, and the chunk
/// keys the commit must adopt.
#[derive(Debug, Default)]
pub struct Written {
    pub lease: i64,
    /// (index of the value in the caller's list, manifest bytes, chunk keys).
    pub values: Vec<(usize, Vec<u8>, Vec<String>)>,
}

/// Write `values` ((index, table, key, bytes)) as chunks of at most `chunk` bytes, all on one
/// fresh lease.
pub async fn write(
    c: &mut Client,
    layout: &Layout,
    values: Vec<(usize, String, String, Vec<u8>)>,
    chunk: usize,
) -> Result<Written, StoreError> {
    let lease = c
        .lease_grant(LEASE_SECS, None)
        .await
        .map_err(|e| etcd_err("chunk lease", e))?
        .id();
    let mut written = Written {
        lease,
        values: vec![],
    };
    for (i, table, key, bytes) in values {
        let nonce = format!("{:016x}", rand::random::<u64>());
        let mut keys = vec![];
        for (n, part) in bytes.chunks(chunk.max(1)).enumerate() {
            let k = chunk_key(layout, &table, &key, &nonce, n);
            c.put(
                k.clone(),
                part.to_vec(),
                Some(PutOptions::new().with_lease(lease)),
            )
            .await
            .map_err(|e| etcd_err("writing a chunk", e))?;
            keys.push(k);
        }
        let m = Manifest {
            nonce,
            count: keys.len(),
            len: bytes.len(),
            sha256: hex::encode(Sha256::digest(&bytes)),
        };
        let mut manifest = MAGIC.to_vec();
        manifest.extend(serde_json::to_vec(&m).expect("a manifest serialises"));
        written.values.push((i, manifest, keys));
    }
    Ok(written)
}

/// The put that adopts a chunk: same value, no lease.
pub fn adopt(key: &str) -> TxnOp {
    TxnOp::put(key, vec![], Some(PutOptions::new().with_ignore_value()))
}

/// Delete unreferenced chunk sets (see the module doc). Returns how many sets were deleted.
pub fn sweep(store: &EtcdStore) -> Result<usize, StoreError> {
    let layout = store.layout().clone();
    let root = layout.chunks();
    let (kvs, _) = store.range_all(
        "sweeping chunks",
        root.clone().into_bytes(),
        prefix_end(root.as_bytes()),
        true,
    )?;
    // (table, key, nonce) → adopted (no lease)?
    let mut sets: std::collections::BTreeMap<(String, String, String), bool> =
        std::collections::BTreeMap::new();
    for kv in &kvs {
        let rest = String::from_utf8_lossy(&kv.key()[root.len()..]).into_owned();
        let Some((table, tail)) = rest.split_once('/') else {
            continue;
        };
        let Some((key, tail)) = tail.split_once('\0') else {
            continue;
        };
        let Some((nonce, _)) = tail.split_once('/') else {
            continue;
        };
        let adopted = kv.lease() == 0;
        let e = sets
            .entry((table.to_string(), key.to_string(), nonce.to_string()))
            .or_insert(true);
        *e &= adopted;
    }
    let mut deleted = 0;
    for ((table, key, nonce), adopted) in sets {
        if !adopted {
            continue; // a commit in progress (or one that died: its lease will end it)
        }
        let record = layout.record(&table, &key);
        let (r, l) = (record.clone(), layout.clone());
        let (t, k, n) = (table.clone(), key.clone(), nonce.clone());
        deleted += store
            .bridge()
            .call("sweeping chunks", move |mut c| async move {
                let mut resp = c
                    .get(r.clone(), None)
                    .await
                    .map_err(|e| etcd_err("sweeping chunks", e))?;
                let (referenced, rev) = match resp.take_kvs().into_iter().next() {
                    Some(kv) => {
                        let v = kv.value();
                        let used = is_manifest(v)
                            && serde_json::from_slice::<Manifest>(&v[MAGIC.len()..])
                                .is_ok_and(|m| m.nonce == n);
                        (used, kv.mod_revision())
                    }
                    None => (false, 0),
                };
                if referenced {
                    return Ok(0);
                }
                let set = format!("{}{n}/", l.chunks_of(&t, &k));
                let cmp = if rev == 0 {
                    Compare::version(r, CompareOp::Equal, 0)
                } else {
                    Compare::mod_revision(r, CompareOp::Equal, rev)
                };
                let txn = Txn::new().when(vec![cmp]).and_then(vec![TxnOp::delete(
                    set,
                    Some(etcd_client::DeleteOptions::new().with_prefix()),
                )]);
                let resp = c
                    .txn(txn)
                    .await
                    .map_err(|e| etcd_err("sweeping chunks", e))?;
                Ok(usize::from(resp.succeeded()))
            })?;
    }
    Ok(deleted)
}
