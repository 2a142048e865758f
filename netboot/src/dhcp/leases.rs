//! The lease table and its snapshot on disk.
//!
//! The table knows, per address, which MAC holds it, until when, and whether it is only offered
//! (held briefly, in memory) or bound (ACKed, persisted). Declined addresses are quarantined.
//! Times are seconds since the Unix epoch, handed in by the caller: the table reads no clock.
//!
//! Bound leases and quarantines are written to `dhcp-leases.json` in the state directory by an
//! atomic replace (write a temporary file, fsync, rename), before the ACK that created them is
//! sent, so a restarted server never hands a bound address to a second MAC.

use crate::MacAddr;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// File name of the lease snapshot inside the state directory.
pub const LEASE_FILE: &str = "dhcp-leases.json";

/// Whether an address is only offered or bound by an ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseState {
    Offered,
    Bound,
}

/// One address held by one MAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    /// Unix seconds at which the lease (or offer) lapses.
    pub expires: u64,
    pub state: LeaseState,
}

/// A quarantined (declined) address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantine {
    pub ip: Ipv4Addr,
    pub until: u64,
}

/// The persisted form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub version: u32,
    pub leases: Vec<Lease>,
    pub quarantine: Vec<Quarantine>,
}

/// Addresses held by MACs, and declined addresses.
#[derive(Debug, Default, Clone)]
pub struct LeaseTable {
    by_ip: BTreeMap<Ipv4Addr, Lease>,
    by_mac: HashMap<MacAddr, Ipv4Addr>,
    quarantine: BTreeMap<Ipv4Addr, u64>,
    dirty: bool,
}

impl LeaseTable {
    /// Rebuild a table from a snapshot.
    pub fn from_snapshot(s: Snapshot) -> Self {
        let mut t = Self::default();
        for l in s.leases {
            t.insert(l);
        }
        for q in s.quarantine {
            t.quarantine.insert(q.ip, q.until);
        }
        t.dirty = false;
        t
    }

    /// The persisted part: bound leases (expired ones too: they keep a MAC's address sticky) and
    /// quarantines.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            version: 1,
            leases: self
                .by_ip
                .values()
                .filter(|l| l.state == LeaseState::Bound)
                .cloned()
                .collect(),
            quarantine: self
                .quarantine
                .iter()
                .map(|(&ip, &until)| Quarantine { ip, until })
                .collect(),
        }
    }

    /// Whether the persisted part changed since the last call (and reset the flag).
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    fn insert(&mut self, l: Lease) {
        if let Some(old_ip) = self.by_mac.insert(l.mac, l.ip) {
            if old_ip != l.ip {
                if let Some(old) = self.by_ip.remove(&old_ip) {
                    self.dirty |= old.state == LeaseState::Bound;
                }
            }
        }
        if let Some(prev) = self.by_ip.insert(l.ip, l.clone()) {
            if prev.mac != l.mac {
                self.by_mac.remove(&prev.mac);
            }
        }
    }

    /// The lease record of an address, expired or not.
    pub fn get(&self, ip: Ipv4Addr) -> Option<&Lease> {
        self.by_ip.get(&ip)
    }

    /// The address last held by `mac`, expired or not (addresses stick to their MAC).
    pub fn ip_of(&self, mac: MacAddr) -> Option<Ipv4Addr> {
        self.by_mac.get(&mac).copied()
    }

    /// Whether the address is quarantined at `now`.
    pub fn quarantined(&self, ip: Ipv4Addr, now: u64) -> bool {
        self.quarantine.get(&ip).is_some_and(|&until| until > now)
    }

    /// Whether `mac` may take `ip` at `now`: not quarantined, and nobody else holds it.
    pub fn available_to(&self, ip: Ipv4Addr, mac: MacAddr, now: u64) -> bool {
        !self.quarantined(ip, now)
            && self
                .by_ip
                .get(&ip)
                .is_none_or(|l| l.mac == mac || l.expires <= now)
    }

    /// Whether `ip` has never been leased (or its record was dropped): preferred for new clients.
    pub fn untouched(&self, ip: Ipv4Addr, now: u64) -> bool {
        !self.quarantined(ip, now) && !self.by_ip.contains_key(&ip)
    }

    /// Hold `ip` for `mac` until `until` after an OFFER. A bound lease of the same MAC and address
    /// stays bound.
    pub fn offer(&mut self, mac: MacAddr, ip: Ipv4Addr, until: u64) {
        if let Some(l) = self.by_ip.get(&ip) {
            if l.mac == mac && l.state == LeaseState::Bound && l.expires >= until {
                return;
            }
        }
        let state = match self.by_ip.get(&ip) {
            Some(l) if l.mac == mac && l.state == LeaseState::Bound => LeaseState::Bound,
            _ => LeaseState::Offered,
        };
        self.insert(Lease {
            mac,
            ip,
            expires: until,
            state,
        });
    }

    /// Bind `ip` to `mac` until `until` (ACK).
    pub fn bind(&mut self, mac: MacAddr, ip: Ipv4Addr, until: u64) {
        self.insert(Lease {
            mac,
            ip,
            expires: until,
            state: LeaseState::Bound,
        });
        self.dirty = true;
    }

    /// Drop `mac`'s hold on `ip` (RELEASE, or the client chose another server). Returns whether it
    /// held it.
    pub fn release(&mut self, mac: MacAddr, ip: Ipv4Addr) -> bool {
        match self.by_ip.get(&ip) {
            Some(l) if l.mac == mac => {
                self.dirty |= l.state == LeaseState::Bound;
                self.by_ip.remove(&ip);
                self.by_mac.remove(&mac);
                true
            }
            _ => false,
        }
    }

    /// Quarantine `ip` until `until` (DECLINE: someone else answers ARP for it) and drop any lease.
    pub fn decline(&mut self, ip: Ipv4Addr, until: u64) {
        if let Some(l) = self.by_ip.remove(&ip) {
            self.by_mac.remove(&l.mac);
        }
        self.quarantine.insert(ip, until);
        self.dirty = true;
    }

    /// Number of address records.
    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    /// Whether the table holds no address.
    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }
}

/// The lease file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LeaseFileError {
    #[error("reading lease file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("lease file {path} is corrupt (move it aside to start afresh, forgetting its leases)")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing lease file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A [`LeaseKeeper`] other than the file failed (the seed daemon's store: no quorum, or
    /// this daemon no longer leads).
    #[error("lease store: {0}")]
    Keeper(String),
}

/// Where the lease table is kept. Bound leases are saved (durably) before the ACK that bound
/// them leaves; a save that fails withholds the reply. [`LeaseFile`] is the default; the seed
/// daemon keeps them in its store in HA, so that a new leader hands out no conflicting address
/// and renews the old leader's leases.
pub trait LeaseKeeper: Send + Sync {
    /// The table at start.
    fn load(&self) -> Result<LeaseTable, LeaseFileError>;
    /// Persist `table` (durable when it returns).
    fn save(&self, table: &LeaseTable) -> Result<(), LeaseFileError>;
    /// A table to take instead of the one in memory, when another writer may have changed the
    /// kept one (a takeover): checked before each packet, so it must be cheap when `None`.
    fn reload(&self) -> Option<LeaseTable> {
        None
    }
    /// Where the leases are, for logs.
    fn describe(&self) -> String;
}

/// The lease file in the state directory.
#[derive(Debug, Clone)]
pub struct LeaseFile(pub PathBuf);

impl LeaseKeeper for LeaseFile {
    fn load(&self) -> Result<LeaseTable, LeaseFileError> {
        load(&self.0)
    }
    fn save(&self, table: &LeaseTable) -> Result<(), LeaseFileError> {
        save(&self.0, table)
    }
    fn describe(&self) -> String {
        self.0.display().to_string()
    }
}

impl From<LeaseFileError> for std::io::Error {
    fn from(e: LeaseFileError) -> Self {
        let kind = match &e {
            LeaseFileError::Corrupt { .. } => std::io::ErrorKind::InvalidData,
            LeaseFileError::Read { source, .. } | LeaseFileError::Write { source, .. } => {
                source.kind()
            }
            LeaseFileError::Keeper(_) => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, e)
    }
}

/// The lease file in `state_dir`.
pub fn lease_path(state_dir: &Path) -> PathBuf {
    state_dir.join(LEASE_FILE)
}

/// Load the table from `path`; a missing file is an empty table. A corrupt file is an error, not
/// an empty table: starting empty could hand a bound address to a second client.
pub fn load(path: &Path) -> Result<LeaseTable, LeaseFileError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LeaseTable::default()),
        Err(source) => {
            return Err(LeaseFileError::Read {
                path: path.into(),
                source,
            })
        }
    };
    let snap: Snapshot = serde_json::from_str(&text).map_err(|source| LeaseFileError::Corrupt {
        path: path.into(),
        source,
    })?;
    Ok(LeaseTable::from_snapshot(snap))
}

/// Durably replace `path` with the snapshot of `table` ([`fsutil::write`]: temporary file,
/// fsync, rename, fsync of the directory).
pub fn save(path: &Path, table: &LeaseTable) -> Result<(), LeaseFileError> {
    let err = |source| LeaseFileError::Write {
        path: path.into(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            // Only the seed reads its state: 0700 (the leases say which machine has which
            // address).
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(err)?;
        }
    }
    let body = serde_json::to_vec_pretty(&table.snapshot()).expect("snapshot serializes");
    let mut f = fsutil::AtomicFile::with_mode(path, 0o600).map_err(err)?;
    std::io::Write::write_all(&mut f, &body).map_err(err)?;
    f.commit().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
    const IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);

    #[test]
    fn the_lease_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("state/dhcp-leases.json");
        let mut table = LeaseTable::default();
        table.bind(A, IP, 1000);
        save(&path, &table).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }

    #[test]
    fn holds_offers_and_binds_and_frees() {
        let mut t = LeaseTable::default();
        t.offer(A, IP, 100);
        assert!(!t.available_to(IP, B, 50));
        assert!(t.available_to(IP, A, 50));
        assert!(t.available_to(IP, B, 100), "offer lapsed");
        assert!(!t.take_dirty(), "offers are not persisted");
        t.bind(A, IP, 1000);
        assert!(t.take_dirty());
        assert_eq!(t.ip_of(A), Some(IP));
        assert!(!t.release(B, IP), "B does not hold it");
        assert!(t.release(A, IP));
        assert!(t.available_to(IP, B, 0));
        t.decline(IP, 500);
        assert!(!t.available_to(IP, A, 499));
        assert!(t.available_to(IP, A, 500));
    }

    #[test]
    fn a_mac_holds_one_address() {
        let mut t = LeaseTable::default();
        let other = Ipv4Addr::new(10, 0, 0, 101);
        t.bind(A, IP, 100);
        t.bind(A, other, 100);
        assert!(t.get(IP).is_none());
        assert_eq!(t.ip_of(A), Some(other));
        // B takes over A's expired address: A no longer points at it.
        t.bind(B, other, 300);
        assert_eq!(t.ip_of(A), None);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn survives_a_restart_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = lease_path(dir.path());
        assert!(load(&path).unwrap().is_empty());
        let mut t = LeaseTable::default();
        t.offer(B, Ipv4Addr::new(10, 0, 0, 7), 100);
        t.bind(A, IP, 1000);
        t.decline(Ipv4Addr::new(10, 0, 0, 9), 2000);
        save(&path, &t).unwrap();
        let back = load(&path).unwrap();
        assert_eq!(back.ip_of(A), Some(IP));
        assert_eq!(back.ip_of(B), None, "offers are not persisted");
        assert!(back.quarantined(Ipv4Addr::new(10, 0, 0, 9), 1999));
        assert!(!back.available_to(IP, B, 999));
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_an_empty_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = lease_path(dir.path());
        std::fs::write(&path, "{ not json").unwrap();
        let err = load(&path).unwrap_err();
        assert!(matches!(err, LeaseFileError::Corrupt { .. }), "{err}");
    }
}
