//! The HA [`Store`]: etcd's v3 API through the `etcd-client` crate.
//!
//! Mapping (the key layout is documented in ARCHITECTURE.md, "The store in etcd"):
//! - a record `table/key` is the etcd key `<prefix>t/<table>/<key>` ([`Layout`]); its
//!   [`Revision`] is etcd's `mod_revision`, which, like our revision, comes from one
//!   cluster-wide counter and is never reused after a delete;
//! - `Expect::Absent` is the compare `version(key) == 0`, `Expect::Revision(r)` the compare
//!   `mod_revision(key) == r`; [`Store::commit`] is ONE etcd transaction: all compares, then all
//!   writes, or (when a compare fails) reads of the compared keys that tell which one failed;
//! - a fenced store ([`EtcdStore::fenced`], [`Fence`]) adds the compare
//!   `create_revision(leader key) == term revision` to every commit: a leader that lost its lease
//!   (paused, partitioned) can never commit, whatever its clock says ([`StoreError::Fenced`],
//!   counted);
//! - values too large for one etcd request are stored in chunks ([`chunk`]).
//!
//! The trait is synchronous; the async client runs on its own runtime ([`bridge`]).

pub mod bridge;
pub mod chunk;
pub mod election;
pub mod fence;
pub mod member;
pub mod tls;
mod txn;

#[cfg(test)]
mod tests;

use super::{check_table, Op, Record, Revision, Store, StoreError};
use bridge::{etcd_err, Bridge};
pub use fence::Fence;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// etcd's default `--max-request-bytes` (1.5 MiB): the largest request a member accepts.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1536 * 1024;
/// The `--max-txn-ops` of the members the seed runs (etcd's default is 128): the most
/// operations in one transaction. Enrolling a batch of nodes, allocating a stack's nodes and
/// deleting a stack's events are each one commit, all-or-nothing, and can hold thousands of
/// small writes; the request stays within etcd's default 1.5 MiB (large values are chunked).
/// A cluster run with a lower limit is named in `[store] max_txn_ops`; a larger commit is then
/// refused with [`StoreError::TooLarge`] before it is sent.
pub const DEFAULT_MAX_TXN_OPS: usize = 16384;

/// Client TLS: the CA that signed the members' certificates, and this client's certificate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// Client URLs of the members (`http://127.0.0.1:2379`, `https://…` with [`TlsFiles`]).
    pub endpoints: Vec<String>,
    /// Every key of this seed starts with it (several seeds can share one cluster).
    pub prefix: String,
    pub tls: Option<TlsFiles>,
    /// The longest one store call may take (then it fails: no quorum, no member reachable).
    pub timeout: Duration,
    /// The members' `--max-request-bytes` and `--max-txn-ops`.
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
}

impl EtcdConfig {
    pub fn new(endpoints: Vec<String>) -> EtcdConfig {
        EtcdConfig {
            endpoints,
            prefix: "/seed/".into(),
            tls: None,
            timeout: Duration::from_secs(5),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_txn_ops: DEFAULT_MAX_TXN_OPS,
        }
    }
}

/// Where things live under the prefix.
#[derive(Debug, Clone)]
pub struct Layout {
    prefix: String,
}

impl Layout {
    pub fn new(prefix: &str) -> Layout {
        let mut prefix = prefix.to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Layout { prefix }
    }
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    /// `<prefix>t/<table>/<key>`: a record.
    pub fn record(&self, table: &str, key: &str) -> String {
        format!("{}t/{table}/{key}", self.prefix)
    }
    /// `<prefix>t/<table>/`: every record of a table.
    pub fn table(&self, table: &str) -> String {
        format!("{}t/{table}/", self.prefix)
    }
    /// `<prefix>t/`: every record.
    pub fn records(&self) -> String {
        format!("{}t/", self.prefix)
    }
    /// `<prefix>c/<table>/<key>\0`: the chunk sets of one record (`\0` cannot be in a key the
    /// daemon writes, so `a` and `a/b` never share chunks).
    pub fn chunks_of(&self, table: &str, key: &str) -> String {
        format!("{}c/{table}/{key}\0", self.prefix)
    }
    /// `<prefix>c/`: every chunk.
    pub fn chunks(&self) -> String {
        format!("{}c/", self.prefix)
    }
    /// `<prefix>leader`: the election whose leader key fences the leader's writes.
    pub fn election(&self) -> String {
        format!("{}leader", self.prefix)
    }
    /// `<prefix>members/`: each daemon's advertised addresses (on its lease).
    pub fn members(&self) -> String {
        format!("{}members/", self.prefix)
    }
    /// `<prefix>health`: written by readiness checks ([`member::wait_ready`]).
    pub fn health(&self) -> String {
        format!("{}health", self.prefix)
    }
}

/// The range end of a prefix: the prefix with its last byte incremented.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A [`Store`] on an etcd cluster.
#[derive(Debug, Clone)]
pub struct EtcdStore {
    bridge: Arc<Bridge>,
    layout: Layout,
    limits: txn::Limits,
    /// Present on a leader's store: every commit is fenced by its term.
    fence: Option<Arc<Fence>>,
}

/// Records per range request when listing (bounded responses, one revision for all pages).
const PAGE: i64 = 500;

impl EtcdStore {
    /// Connect (lazily: the members need not answer yet; the first call fails if none does).
    pub fn connect(config: &EtcdConfig) -> Result<EtcdStore, StoreError> {
        let mut options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            // No per-request timeout here: a campaign waits as long as it must. Store calls
            // have their deadline in the bridge; HTTP/2 pings find a dead connection.
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            // A member cut off from the quorum refuses at once instead of hanging.
            .with_require_leader(true);
        if let Some(tls) = &config.tls {
            options = options.with_tls(tls_options(tls)?);
        }
        let bridge = Bridge::connect(&config.endpoints, options, config.timeout)?;
        Ok(EtcdStore {
            bridge: Arc::new(bridge),
            layout: Layout::new(&config.prefix),
            limits: txn::Limits {
                max_request_bytes: config.max_request_bytes,
                max_txn_ops: config.max_txn_ops,
            },
            fence: None,
        })
    }

    /// The same store whose commits are fenced by `fence` (the daemon's leadership): refused
    /// locally while it does not lead, refused by etcd once its term has ended.
    pub fn fenced(&self, fence: Arc<Fence>) -> EtcdStore {
        EtcdStore {
            fence: Some(fence),
            ..self.clone()
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn bridge(&self) -> &Arc<Bridge> {
        &self.bridge
    }

    /// The raw value at an etcd key and its `mod_revision`, resolving chunks.
    fn get_raw(&self, table: &str, key: &str) -> Result<Option<Record>, StoreError> {
        let k = self.layout.record(table, key);
        let layout = self.layout.clone();
        let (t, kk) = (table.to_string(), key.to_string());
        self.bridge.read("get", move |mut c| async move {
            let mut resp = c.get(k, None).await.map_err(|e| etcd_err("get", e))?;
            let rev = resp.header().map_or(0, |h| h.revision());
            let Some(kv) = resp.take_kvs().into_iter().next() else {
                return Ok(None);
            };
            let value = chunk::resolve(&mut c, &layout, &t, &kk, kv.value().to_vec(), rev).await?;
            Ok(Some(Record {
                revision: kv.mod_revision() as Revision,
                value,
            }))
        })
    }

    /// Every key-value under `start..end` at one revision, page by page.
    fn range_all(
        &self,
        what: &'static str,
        start: Vec<u8>,
        end: Vec<u8>,
        keys_only: bool,
    ) -> Result<(Vec<etcd_client::KeyValue>, i64), StoreError> {
        self.bridge.read(what, move |c| async move {
            // Pages are bounded in records, not bytes: allow large responses.
            let mut c = c.kv_client().max_decoding_message_size(256 << 20);
            let mut out = Vec::new();
            let mut from = start;
            let mut at = 0;
            loop {
                let mut opts = etcd_client::GetOptions::new()
                    .with_range(end.clone())
                    .with_limit(PAGE);
                if at != 0 {
                    opts = opts.with_revision(at);
                }
                if keys_only {
                    opts = opts.with_keys_only();
                }
                let mut resp = c
                    .get(from.clone(), Some(opts))
                    .await
                    .map_err(|e| etcd_err(what, e))?;
                if at == 0 {
                    at = resp.header().map_or(0, |h| h.revision());
                }
                let more = resp.more();
                let kvs = resp.take_kvs();
                if let Some(last) = kvs.last() {
                    from = last.key().to_vec();
                    from.push(0);
                }
                out.extend(kvs);
                if !more {
                    return Ok((out, at));
                }
            }
        })
    }

    /// Delete chunk sets that no record refers to any more (left by an overwrite or delete of a
    /// large value, or by a commit that failed after its chunks were written and whose lease
    /// has not run out). Chunks still on a lease belong to a commit in progress and are kept.
    /// Returns how many chunk sets were deleted.
    pub fn sweep_chunks(&self) -> Result<usize, StoreError> {
        chunk::sweep(self)
    }
}

fn tls_options(tls: &TlsFiles) -> Result<etcd_client::TlsOptions, StoreError> {
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|e| StoreError::Etcd {
            what: format!("reading {}: {e}", p.display()),
            source: None,
        })
    };
    Ok(etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(read(&tls.ca)?))
        .identity(etcd_client::Identity::from_pem(
            read(&tls.cert)?,
            read(&tls.key)?,
        )))
}

impl Store for EtcdStore {
    fn get(&self, table: &str, key: &str) -> Result<Option<Record>, StoreError> {
        check_table(table)?;
        self.get_raw(table, key)
    }

    fn list(&self, table: &str, prefix: &str) -> Result<Vec<(String, Record)>, StoreError> {
        check_table(table)?;
        let start = format!("{}{prefix}", self.layout.table(table)).into_bytes();
        let end = prefix_end(&start);
        let (kvs, at) = self.range_all("list", start, end, false)?;
        let strip = self.layout.table(table).len();
        let mut out = Vec::with_capacity(kvs.len());
        for kv in kvs {
            let key = String::from_utf8_lossy(&kv.key()[strip..]).into_owned();
            let value = if chunk::is_manifest(kv.value()) {
                let layout = self.layout.clone();
                let (t, k, v) = (table.to_string(), key.clone(), kv.value().to_vec());
                self.bridge.read("list", move |mut c| async move {
                    chunk::resolve(&mut c, &layout, &t, &k, v, at).await
                })?
            } else {
                kv.value().to_vec()
            };
            out.push((
                key,
                Record {
                    revision: kv.mod_revision() as Revision,
                    value,
                },
            ));
        }
        Ok(out)
    }

    fn commit(&self, ops: Vec<Op>) -> Result<Vec<Revision>, StoreError> {
        txn::commit(self, ops)
    }

    fn tables(&self) -> Result<Vec<String>, StoreError> {
        // One request per table: jump past each table's keys to the next one.
        let records = self.layout.records();
        let end = prefix_end(records.as_bytes());
        let mut from = records.clone().into_bytes();
        let mut out = Vec::new();
        loop {
            let (start, stop) = (from.clone(), end.clone());
            let first = self.bridge.read("tables", move |mut c| async move {
                let opts = etcd_client::GetOptions::new()
                    .with_range(stop)
                    .with_limit(1)
                    .with_keys_only();
                let mut resp = c
                    .get(start, Some(opts))
                    .await
                    .map_err(|e| etcd_err("tables", e))?;
                Ok(resp.take_kvs().into_iter().next())
            })?;
            let Some(kv) = first else {
                return Ok(out);
            };
            let rest = &kv.key()[records.len()..];
            let table = match rest.iter().position(|&b| b == b'/') {
                Some(i) => &rest[..i],
                None => rest,
            };
            let table = String::from_utf8_lossy(table).into_owned();
            from = format!("{records}{table}0").into_bytes(); // '0' follows '/'
            out.push(table);
        }
    }
}
