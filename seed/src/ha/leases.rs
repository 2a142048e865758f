//! DHCP leases in the store: the lease table is one record (`dhcp-leases/table`, the lease
//! file's JSON snapshot), saved through the daemon's store before an ACK leaves. In HA that
//! store is fenced, so a deposed leader cannot bind an address (its save fails and the reply is
//! withheld), and a new leader reloads the table on takeover ([`StoreLeases::takeover`]): it
//! hands out no address another node holds and renews the old leader's leases.

use crate::store::{Expect, Store};
use netboot::dhcp::leases::{LeaseFileError, LeaseKeeper, LeaseTable, Snapshot};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The table and key of the lease record.
pub const TABLE: &str = "dhcp-leases";
pub const KEY: &str = "table";

/// A [`LeaseKeeper`] over a store.
pub struct StoreLeases {
    store: Arc<dyn Store>,
    reload: AtomicBool,
}

impl std::fmt::Debug for StoreLeases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreLeases")
    }
}

impl StoreLeases {
    pub fn new(store: Arc<dyn Store>) -> StoreLeases {
        StoreLeases {
            store,
            reload: AtomicBool::new(false),
        }
    }

    /// Another writer may have changed the table (this daemon just started to lead): the DHCP
    /// engine takes the stored table before its next packet.
    pub fn takeover(&self) {
        self.reload.store(true, Ordering::SeqCst);
    }

    /// Put the leases of a lease file into the store (migrating a single seed to HA).
    pub fn import(&self, table: &LeaseTable) -> Result<(), LeaseFileError> {
        self.save(table)
    }
}

fn keeper_err(e: impl std::fmt::Display) -> LeaseFileError {
    LeaseFileError::Keeper(e.to_string())
}

impl LeaseKeeper for StoreLeases {
    fn load(&self) -> Result<LeaseTable, LeaseFileError> {
        match self.store.get(TABLE, KEY).map_err(keeper_err)? {
            None => Ok(LeaseTable::default()),
            Some(r) => {
                let snap: Snapshot = serde_json::from_slice(&r.value)
                    .map_err(|e| keeper_err(format!("{TABLE}/{KEY} is corrupt: {e}")))?;
                Ok(LeaseTable::from_snapshot(snap))
            }
        }
    }

    fn save(&self, table: &LeaseTable) -> Result<(), LeaseFileError> {
        let body = serde_json::to_vec(&table.snapshot()).map_err(keeper_err)?;
        self.store
            .put(TABLE, KEY, body, Expect::Any)
            .map(drop)
            .map_err(keeper_err)
    }

    fn reload(&self) -> Option<LeaseTable> {
        if !self.reload.swap(false, Ordering::SeqCst) {
            return None;
        }
        match self.load() {
            Ok(t) => Some(t),
            Err(e) => {
                // Try again before the next packet: answering from a stale table could hand
                // out an address another node holds.
                tracing::warn!(error = %e, "dhcp: leases not reloaded after takeover");
                self.reload.store(true, Ordering::SeqCst);
                None
            }
        }
    }

    fn describe(&self) -> String {
        format!("the store ({TABLE}/{KEY})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemStore;
    use netboot::MacAddr;

    #[test]
    fn saved_loaded_and_reloaded_on_takeover() {
        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        let a = StoreLeases::new(store.clone());
        assert!(a.load().unwrap().is_empty());
        let mut t = LeaseTable::default();
        t.bind(
            MacAddr([2, 0, 0, 0, 0, 1]),
            "10.0.0.100".parse().unwrap(),
            4_000_000_000,
        );
        a.save(&t).unwrap();
        // Another member (the next leader) sees the same leases.
        let b = StoreLeases::new(store.clone());
        assert!(b.reload().is_none(), "nothing to reload before a takeover");
        b.takeover();
        let got = b.reload().unwrap();
        assert_eq!(
            got.ip_of(MacAddr([2, 0, 0, 0, 0, 1])),
            Some("10.0.0.100".parse().unwrap())
        );
        assert!(b.reload().is_none(), "once");
    }
}
