//! BMC passwords sealed at rest: [`SealedStore`] wraps any [`Store`] and, in table `nodes`,
//! replaces `bmc.password` by `sealed:v1:<hex of nonce ‖ AES-256-GCM ciphertext>` on the way in
//! and back on the way out. Everything above the store (the daemon, `seed node`) sees plain
//! records; the store file, a backup of it or etcd's data never holds a BMC password in clear.
//!
//! The key is 32 random bytes in a key file outside the store (`<store file>.key`, mode 0600,
//! written once through `fsutil`), so a copy of the store alone opens nothing. The node's name
//! is the AEAD's associated data: a sealed password moved onto another node's record does not
//! open. Nonces are 96 random bits, safe for far more passwords than a seed will ever seal.
//!
//! Migration is on read and at start: a record an older seed wrote (password in clear) reads
//! as it is, and [`SealedStore::seal_existing`] (the daemon calls it when it opens the store)
//! rewrites each such record sealed, compare-and-swap on its revision.

use super::nodes::NODES;
use super::{Op, Record, Revision, Store, StoreError};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::Rng;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const PREFIX: &str = "sealed:v1:";
const NONCE: usize = 12;

/// The AEAD key, from its file.
pub struct SealKey {
    cipher: Aes256Gcm,
    path: PathBuf,
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealKey({}: ***)", self.path.display())
    }
}

impl SealKey {
    /// The key file beside a store file: `<file>.key`.
    pub fn path_for(store_file: &Path) -> PathBuf {
        let mut p = store_file.as_os_str().to_owned();
        p.push(".key");
        PathBuf::from(p)
    }

    /// Read the key file (64 hex digits), or create it (0600) with a fresh key if missing.
    /// Call it with the store open (redb's lock), so two processes never race to create it.
    pub fn load_or_create(path: &Path) -> Result<SealKey, StoreError> {
        let io = |source| StoreError::KeyFile {
            path: path.to_path_buf(),
            source,
        };
        let bad = || {
            io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not 64 hex digits",
            ))
        };
        let key = match std::fs::read_to_string(path) {
            Ok(text) => {
                let raw = hex::decode(text.trim()).map_err(|_| bad())?;
                <[u8; 32]>::try_from(raw.as_slice()).map_err(|_| bad())?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand::rng().fill_bytes(&mut key);
                let mut f = fsutil::AtomicFile::with_mode(path, 0o600).map_err(io)?;
                writeln!(f, "{}", hex::encode(key)).map_err(io)?;
                f.commit().map_err(io)?;
                tracing::info!(key = %path.display(), "secrets key created (BMC passwords are sealed with it)");
                key
            }
            Err(e) => return Err(io(e)),
        };
        Ok(SealKey::from_bytes(&key, path))
    }

    pub fn from_bytes(key: &[u8; 32], path: &Path) -> SealKey {
        SealKey {
            cipher: Aes256Gcm::new(aes_gcm::Key::<Aes256Gcm>::from_slice(key)),
            path: path.to_path_buf(),
        }
    }

    fn seal(&self, plain: &str, aad: &str) -> String {
        let mut nonce = [0u8; NONCE];
        rand::rng().fill_bytes(&mut nonce);
        let payload = Payload {
            msg: plain.as_bytes(),
            aad: aad.as_bytes(),
        };
        // Encryption into a Vec fails only past GCM's length limit (64 GiB).
        let ct = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend(ct);
        format!("{PREFIX}{}", hex::encode(out))
    }

    fn open(&self, sealed: &str, aad: &str) -> Result<String, String> {
        let raw = hex::decode(&sealed[PREFIX.len()..]).map_err(|_| "not hex".to_string())?;
        if raw.len() < NONCE {
            return Err("too short".into());
        }
        let (nonce, ct) = raw.split_at(NONCE);
        let payload = Payload {
            msg: ct,
            aad: aad.as_bytes(),
        };
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| {
                format!(
                    "the BMC password does not open with the key in {} (another key file, or \
                     an altered record)",
                    self.path.display()
                )
            })?;
        String::from_utf8(plain).map_err(|_| "not UTF-8".into())
    }
}

/// A [`Store`] whose node records hold their BMC password sealed.
pub struct SealedStore {
    inner: Arc<dyn Store>,
    key: SealKey,
}

fn password(v: &mut serde_json::Value) -> Option<&mut serde_json::Value> {
    v.get_mut("bmc")?.get_mut("password")
}

/// Open the redb store `file` with its key file beside it (created on first use), sealing.
pub fn open_redb(file: &Path) -> Result<SealedStore, StoreError> {
    let store = super::redb::RedbStore::open(file)?;
    let key = SealKey::load_or_create(&SealKey::path_for(file))?;
    Ok(SealedStore::new(Arc::new(store), key))
}

impl SealedStore {
    pub fn new(inner: Arc<dyn Store>, key: SealKey) -> SealedStore {
        SealedStore { inner, key }
    }

    /// Rewrite every node record whose password is in clear (an older seed's) sealed; returns
    /// how many. A record changed meanwhile is left for its next write.
    pub fn seal_existing(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        for (k, r) in self.inner.list(NODES, "")? {
            let v: serde_json::Value = super::json::decode(NODES, &k, &r.value)?;
            if matches!(v.pointer("/bmc/password"), Some(serde_json::Value::String(p)) if !p.starts_with(PREFIX))
            {
                let value = self.seal_record(&k, r.value)?;
                let op = Op::put(NODES, &k, value, super::Expect::Revision(r.revision));
                match self.inner.commit(vec![op]) {
                    Ok(_) => n += 1,
                    Err(StoreError::Conflict { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if n > 0 {
            tracing::info!(nodes = n, "BMC passwords sealed at rest");
        }
        Ok(n)
    }

    fn seal_record(&self, key: &str, value: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        let mut v: serde_json::Value = super::json::decode(NODES, key, &value)?;
        match password(&mut v) {
            Some(serde_json::Value::String(p)) if !p.starts_with(PREFIX) => {
                *p = self.key.seal(p, key);
                super::json::encode(NODES, key, &v)
            }
            _ => Ok(value),
        }
    }

    fn open_record(&self, key: &str, mut r: Record) -> Result<Record, StoreError> {
        // Cheap test first: most reads are of records that hold no sealed password at all.
        if !r
            .value
            .windows(PREFIX.len())
            .any(|w| w == PREFIX.as_bytes())
        {
            return Ok(r);
        }
        let mut v: serde_json::Value = super::json::decode(NODES, key, &r.value)?;
        if let Some(serde_json::Value::String(p)) = password(&mut v) {
            if p.starts_with(PREFIX) {
                *p = self.key.open(p, key).map_err(|why| StoreError::Sealed {
                    table: NODES.into(),
                    key: key.into(),
                    why,
                })?;
                r.value = super::json::encode(NODES, key, &v)?;
            }
        }
        Ok(r)
    }
}

impl Store for SealedStore {
    fn get(&self, table: &str, key: &str) -> Result<Option<Record>, StoreError> {
        let r = self.inner.get(table, key)?;
        match r {
            Some(r) if table == NODES => self.open_record(key, r).map(Some),
            other => Ok(other),
        }
    }

    fn list(&self, table: &str, prefix: &str) -> Result<Vec<(String, Record)>, StoreError> {
        let all = self.inner.list(table, prefix)?;
        if table != NODES {
            return Ok(all);
        }
        all.into_iter()
            .map(|(k, r)| {
                let r = self.open_record(&k, r)?;
                Ok((k, r))
            })
            .collect()
    }

    fn commit(&self, ops: Vec<Op>) -> Result<Vec<Revision>, StoreError> {
        let ops = ops
            .into_iter()
            .map(|op| match op {
                Op::Put {
                    table,
                    key,
                    value,
                    expect,
                } if table == NODES => {
                    let value = self.seal_record(&key, value)?;
                    Ok(Op::Put {
                        table,
                        key,
                        value,
                        expect,
                    })
                }
                other => Ok(other),
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.inner.commit(ops)
    }

    fn tables(&self) -> Result<Vec<String>, StoreError> {
        self.inner.tables()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemStore;
    use crate::store::nodes;
    use crate::store::redb::RedbStore;

    #[test]
    fn the_suite_holds_through_the_seal() {
        let s = SealedStore::new(
            Arc::new(MemStore::new()),
            SealKey::from_bytes(&[7; 32], Path::new("k")),
        );
        super::super::suite::run(&s);
    }

    #[test]
    fn passwords_sealed_in_the_file_legacy_records_load_and_get_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("seed.redb");
        let raw: Arc<dyn Store> = Arc::new(RedbStore::open(&file).unwrap());
        // An older seed's record: the password in clear.
        let mut old = crate::store::nodes::tests::node("old", "52:54:00:00:00:01");
        old.bmc.password = "legacy-pw-0451".into();
        nodes::create(&*raw, &[old]).unwrap();
        let key_path = SealKey::path_for(&file);
        let key = SealKey::load_or_create(&key_path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let s = SealedStore::new(raw.clone(), key);
        // Legacy loads as it is.
        let (n, _) = nodes::get(&s, "old").unwrap().unwrap();
        assert_eq!(n.bmc.password.expose(), "legacy-pw-0451");
        let mut new = crate::store::nodes::tests::node("new", "52:54:00:00:00:02");
        new.bmc.password = "fresh-pw-7788".into();
        nodes::create(&s, &[new]).unwrap();
        assert_eq!(s.seal_existing().unwrap(), 1);
        assert_eq!(s.seal_existing().unwrap(), 0);
        for (name, pw) in [("old", "legacy-pw-0451"), ("new", "fresh-pw-7788")] {
            let (n, _) = nodes::get(&s, name).unwrap().unwrap();
            assert_eq!(n.bmc.password.expose(), pw);
            let listed = nodes::list(&s).unwrap();
            assert!(listed.iter().any(|(n, _)| n.bmc.password.expose() == pw));
        }
        // A password sealed from the start never reaches the file in clear. A legacy one is
        // sealed in its record, but redb is copy-on-write: the old page keeps the clear bytes
        // until redb reuses it (`seed store migrate` into a new file leaves none behind).
        let in_file = |pw: &str| {
            let bytes = std::fs::read(&file).unwrap();
            bytes.windows(pw.len()).any(|w| w == pw.as_bytes())
        };
        assert!(
            !in_file("fresh-pw-7788"),
            "a new password in clear in the file"
        );
        for name in ["old", "new"] {
            let r = raw.get(NODES, name).unwrap().unwrap();
            let text = String::from_utf8_lossy(&r.value).into_owned();
            assert!(
                !text.contains("-pw-"),
                "{name}'s record holds its password in clear"
            );
        }
        // Without the key, or with another, the sealed password does not open.
        let other = SealedStore::new(raw.clone(), SealKey::from_bytes(&[1; 32], Path::new("x")));
        let e = nodes::get(&other, "new").unwrap_err();
        assert!(matches!(e, StoreError::Sealed { .. }), "{e}");
        // Moved onto another node's record, it does not open either (the name is bound).
        let sealed = raw.get(NODES, "new").unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&sealed.value).unwrap();
        let moved = v["bmc"]["password"].clone();
        let r = raw.get(NODES, "old").unwrap().unwrap();
        let mut o: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
        o["bmc"]["password"] = moved;
        raw.put(
            NODES,
            "old",
            serde_json::to_vec(&o).unwrap(),
            super::super::Expect::Any,
        )
        .unwrap();
        assert!(nodes::get(&s, "old").is_err());
        // The same key file opens them after a restart.
        let again = SealedStore::new(raw, SealKey::load_or_create(&key_path).unwrap());
        assert_eq!(
            nodes::get(&again, "new")
                .unwrap()
                .unwrap()
                .0
                .bmc
                .password
                .expose(),
            "fresh-pw-7788"
        );
    }
}
