//! An in-memory [`Store`] for the simulator and tests: same semantics, nothing on disk.

use super::{check_table, Op, Record, Revision, Store, StoreError};
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Default)]
struct Inner {
    revision: Revision,
    tables: BTreeMap<String, BTreeMap<String, Record>>,
}

/// A [`Store`] in a mutex-guarded map.
#[derive(Default)]
pub struct MemStore {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for MemStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemStore")
    }
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied commit (commit validates
        // before it mutates), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Store for MemStore {
    fn get(&self, table: &str, key: &str) -> Result<Option<Record>, StoreError> {
        check_table(table)?;
        Ok(self
            .lock()
            .tables
            .get(table)
            .and_then(|t| t.get(key))
            .cloned())
    }

    fn list(&self, table: &str, prefix: &str) -> Result<Vec<(String, Record)>, StoreError> {
        check_table(table)?;
        let inner = self.lock();
        Ok(inner
            .tables
            .get(table)
            .map(|t| {
                t.range(prefix.to_string()..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .map(|(k, r)| (k.clone(), r.clone()))
                    .collect()
            })
            .unwrap_or_default())
    }

    fn commit(&self, ops: Vec<Op>) -> Result<Vec<Revision>, StoreError> {
        if ops.is_empty() {
            return Ok(vec![]);
        }
        let mut inner = self.lock();
        // Validate every op against the state as it would be after the ops before it.
        let mut seen: BTreeMap<(String, String), Option<Revision>> = BTreeMap::new();
        let next = inner.revision + 1;
        for op in &ops {
            let (table, key, expect) = op.target();
            check_table(table)?;
            let k = (table.to_string(), key.to_string());
            let actual = match seen.get(&k) {
                Some(a) => *a,
                None => inner
                    .tables
                    .get(table)
                    .and_then(|t| t.get(key))
                    .map(|r| r.revision),
            };
            expect.check(table, key, actual)?;
            let after = match op {
                Op::Put { .. } => Some(next),
                Op::Delete { .. } => None,
            };
            seen.insert(k, after);
        }
        inner.revision = next;
        let n = ops.len();
        for op in ops {
            match op {
                Op::Put {
                    table, key, value, ..
                } => {
                    inner.tables.entry(table).or_default().insert(
                        key,
                        Record {
                            revision: next,
                            value,
                        },
                    );
                }
                Op::Delete { table, key, .. } => {
                    if let Some(t) = inner.tables.get_mut(&table) {
                        t.remove(&key);
                    }
                }
            }
        }
        Ok(vec![next; n])
    }

    fn tables(&self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .lock()
            .tables
            .iter()
            .filter(|(_, t)| !t.is_empty())
            .map(|(n, _)| n.clone())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn store_suite() {
        super::super::suite::run(&super::MemStore::new());
    }
}
