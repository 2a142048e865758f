//! Per-node metadata and the signals nodes send back: the store side of the metadata service.
//!
//! The stack engine publishes each node's merged configuration with [`set`] (the change counter
//! goes up on every change, never down); the metadata service serves it to the node that owns it
//! (per-node credential, [`super::credentials`]) with long-poll on the counter; nodes post
//! [`Signal`]s (a software deployment or wait condition completed or failed) which are stored
//! here for the stack engine to read with [`signals`].
//!
//! Tables: `metadata` (node → [`Metadata`] JSON), `signals` (`<node>/<deployment>` → [`Signal`]).

use crate::store::{Expect, Op, Store, StoreError};
use serde::Serialize;

/// The document is the API's type ([`api::metadata::Metadata`]); the signal types are too, and
/// the stack engine (a core) re-exports them: this driver stores them.
pub use crate::orchestrator::{Signal, SignalStatus};
pub use api::metadata::Metadata;

const METADATA: &str = "metadata";
const SIGNALS: &str = "signals";

fn decode<T: serde::de::DeserializeOwned>(
    table: &str,
    key: &str,
    b: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(b).map_err(|source| StoreError::Decode {
        table: table.into(),
        key: key.into(),
        source,
    })
}

fn encode<T: Serialize>(table: &str, key: &str, v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|source| StoreError::Encode {
        table: table.into(),
        key: key.into(),
        source,
    })
}

/// The node's metadata, if any was published.
pub fn get(store: &dyn Store, node: &str) -> Result<Option<Metadata>, StoreError> {
    match store.get(METADATA, node)? {
        Some(r) => Ok(Some(decode(METADATA, node, &r.value)?)),
        None => Ok(None),
    }
}

/// Publish `data` for `node`. Returns the counter; unchanged data keeps the counter (so
/// re-publishing after a restart wakes nobody).
pub fn set(store: &dyn Store, node: &str, data: serde_json::Value) -> Result<u64, StoreError> {
    loop {
        let old = store.get(METADATA, node)?;
        let (expect, counter) = match &old {
            Some(r) => {
                let m: Metadata = decode(METADATA, node, &r.value)?;
                if m.data == data {
                    return Ok(m.counter);
                }
                (Expect::Revision(r.revision), m.counter + 1)
            }
            None => (Expect::Absent, 1),
        };
        let value = encode(
            METADATA,
            node,
            &Metadata {
                counter,
                data: data.clone(),
            },
        )?;
        match store.commit(vec![Op::put(METADATA, node, value, expect)]) {
            Ok(_) => return Ok(counter),
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Forget a node's metadata and signals (when it leaves its stack).
pub fn clear(store: &dyn Store, node: &str) -> Result<(), StoreError> {
    let mut ops = vec![Op::delete(METADATA, node, Expect::Any)];
    for (k, _) in store.list(SIGNALS, &format!("{node}/"))? {
        ops.push(Op::delete(SIGNALS, &k, Expect::Any));
    }
    store.commit(ops)?;
    Ok(())
}

/// Store a node's signal (the latest per deployment wins).
pub fn put_signal(store: &dyn Store, node: &str, signal: &Signal) -> Result<(), StoreError> {
    let key = format!("{node}/{}", signal.deployment);
    let value = encode(SIGNALS, &key, signal)?;
    store.commit(vec![Op::put(SIGNALS, &key, value, Expect::Any)])?;
    Ok(())
}

/// All signals of a node.
pub fn signals(store: &dyn Store, node: &str) -> Result<Vec<Signal>, StoreError> {
    store
        .list(SIGNALS, &format!("{node}/"))?
        .into_iter()
        .map(|(k, r)| decode(SIGNALS, &k, &r.value))
        .collect()
}

// ---- below the contract: the daemon's change notification for long-polls ----

/// Wakes long-polls when a node's metadata changes, and the stack engine when a signal arrives.
///
/// One [`watch`](tokio::sync::watch) channel per node carries the latest counter (a receiver
/// taken before reading the store cannot miss a change made after the read); one more carries a
/// sequence number bumped on every signal.
#[derive(Debug)]
pub struct Notifier {
    nodes: std::sync::Mutex<std::collections::HashMap<String, tokio::sync::watch::Sender<u64>>>,
    signals: tokio::sync::watch::Sender<u64>,
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier {
            nodes: Default::default(),
            signals: tokio::sync::watch::channel(0).0,
        }
    }
}

impl Notifier {
    fn sender(&self, node: &str) -> tokio::sync::watch::Sender<u64> {
        self.nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(node.to_string())
            .or_insert_with(|| tokio::sync::watch::channel(0).0)
            .clone()
    }

    /// A receiver that sees every later [`Notifier::changed`] of `node`. Take it before reading
    /// the store, then wait on it.
    pub fn subscribe(&self, node: &str) -> tokio::sync::watch::Receiver<u64> {
        self.sender(node).subscribe()
    }

    /// `node`'s metadata is now at `counter`: wake its long-polls.
    pub fn changed(&self, node: &str, counter: u64) {
        self.sender(node).send_replace(counter);
    }

    /// A receiver woken on every stored signal (its value is a sequence number).
    pub fn subscribe_signals(&self) -> tokio::sync::watch::Receiver<u64> {
        self.signals.subscribe()
    }

    /// A signal was stored.
    pub fn signalled(&self) {
        self.signals.send_modify(|n| *n += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemStore;
    use serde_json::json;

    #[test]
    fn counter_moves_only_on_change() {
        let s = MemStore::default();
        assert_eq!(get(&s, "n1").unwrap(), None);
        assert_eq!(set(&s, "n1", json!({"a": 1})).unwrap(), 1);
        assert_eq!(set(&s, "n1", json!({"a": 1})).unwrap(), 1);
        assert_eq!(set(&s, "n1", json!({"a": 2})).unwrap(), 2);
        assert_eq!(get(&s, "n1").unwrap().unwrap().data, json!({"a": 2}));
    }

    #[test]
    fn signals_per_node() {
        let s = MemStore::default();
        let sig = |d: &str, st| Signal {
            deployment: d.into(),
            status: st,
            reason: None,
            outputs: Default::default(),
            counter: 1,
        };
        put_signal(&s, "n1", &sig("cfg", SignalStatus::Failed)).unwrap();
        put_signal(&s, "n1", &sig("cfg", SignalStatus::Complete)).unwrap();
        put_signal(&s, "n10", &sig("cfg", SignalStatus::Failed)).unwrap();
        let got = signals(&s, "n1").unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].status, SignalStatus::Complete);
        clear(&s, "n1").unwrap();
        assert!(signals(&s, "n1").unwrap().is_empty());
        assert_eq!(signals(&s, "n10").unwrap().len(), 1);
    }
}
