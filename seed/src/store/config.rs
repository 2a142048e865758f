//! Which store a daemon uses: `store = "FILE"` (redb, the embedded default) or a `[store]`
//! table:
//!
//! ```toml
//! [store]
//! backend = "etcd"                          # or "redb" with path = "FILE"
//! endpoints = ["http://10.0.0.1:2379", "http://10.0.0.2:2379", "http://10.0.0.3:2379"]
//! prefix = "/seed/"                         # every key of this seed starts with it
//! name = "seed-a"                           # this daemon among the members (default: host name)
//! lease_ttl_secs = 10                       # how long a dead leader keeps the lead (2..=60)
//! timeout_secs = 5                          # one store call at most
//! max_txn_ops = 16384                       # the members' --max-txn-ops
//! tls = { ca = "pki/ca.pem", cert = "pki/seed-a.pem", key = "pki/seed-a-key.pem" }
//! advertise = "http://10.0.1.1:6385"        # followers forward writes here while this leads
//! floating_address = "10.0.0.100/24"        # held by the leader on the netboot interface
//! after_handoff = "exit"                    # or "poweroff": once handed over (`seed handoff`)
//! # the daemon runs this etcd member itself (Debian's etcd; `seed ha init` writes it):
//! member = { data_dir = "etcd", client_url = "http://10.0.1.1:2379", peer_url = "http://10.0.1.1:2380" }
//! # joining a running cluster: initial_cluster = "seed=http://…:2380,uc0=http://…:2380", state = "existing"
//! ```
//!
//! The raw form is parsed strictly (unknown keys are errors) and checked into [`StoreConfig`].

use super::etcd::{EtcdConfig, TlsFiles, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_TXN_OPS};
use serde::{Deserialize, Deserializer};
use std::path::PathBuf;
use std::time::Duration;

/// `store = …` as written: a path, or a table.
#[derive(Debug, Clone, PartialEq)]
pub enum RawStore {
    Path(PathBuf),
    Table(Box<RawStoreTable>),
}

/// The `[store]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStoreTable {
    pub backend: String,
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub endpoints: Vec<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub lease_ttl_secs: Option<u64>,
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    #[serde(default)]
    pub max_txn_ops: Option<usize>,
    #[serde(default)]
    pub max_request_bytes: Option<usize>,
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    #[serde(default)]
    pub advertise: Option<String>,
    #[serde(default)]
    pub floating_address: Option<String>,
    #[serde(default)]
    pub after_handoff: Option<String>,
    #[serde(default)]
    pub member: Option<RawMember>,
}

/// `[store] member`: the etcd member this daemon runs beside itself.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMember {
    /// Relative to the config file's directory.
    pub data_dir: PathBuf,
    pub client_url: String,
    pub peer_url: String,
    /// `name=peer_url,…` (default: this member alone, a new cluster).
    #[serde(default)]
    pub initial_cluster: Option<String>,
    /// `new` (default) or `existing` (joining: added first, `seed ha add`).
    #[serde(default)]
    pub state: Option<String>,
    /// The API of a running control-plane daemon (`http://HOST:6385`): before its first start
    /// the member is added through it (`POST /v1/ha/members`, this daemon's `[api] token`) and
    /// joins with the answer; `initial_cluster` and `state` are then not given.
    #[serde(default)]
    pub join: Option<String>,
}

impl<'de> Deserialize<'de> for RawStore {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Hand-written rather than `#[serde(untagged)]`, whose error ("did not match any
        // variant") would hide which key of the table was wrong.
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawStore;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a redb file path, or a [store] table with a backend")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawStore, E> {
                Ok(RawStore::Path(v.into()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<RawStore, A::Error> {
                RawStoreTable::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(|t| RawStore::Table(Box::new(t)))
            }
        }
        d.deserialize_any(V)
    }
}

/// The HA side of an etcd store: who this daemon is and how long its lease lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaSettings {
    pub name: String,
    pub lease_ttl: Duration,
    /// The API URL the other daemons forward writes to while this one leads (default: the
    /// daemon's `[api] listen` address).
    pub advertise: Option<String>,
    /// The provisioning address the leader holds (`IP/PREFIX`, on the netboot interface).
    pub floating: Option<(std::net::Ipv4Addr, u8)>,
    /// What the daemon does once it has handed over ([`crate::ha::handoff`]).
    pub after_handoff: crate::ha::handoff::After,
    /// The etcd member the daemon runs itself (`[store] member`), named as the daemon.
    pub member: Option<Box<super::etcd::member::MemberSpec>>,
}

/// A checked store configuration.
#[derive(Debug, Clone)]
// One per daemon, built once at start: the size of the etcd variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum StoreConfig {
    Redb { path: PathBuf },
    Etcd { etcd: EtcdConfig, ha: HaSettings },
}

/// A store configuration that does not hold together.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreConfigError {
    #[error("[store] backend {0:?} is unknown (\"redb\" or \"etcd\")")]
    Backend(String),
    #[error("[store] backend \"redb\" needs path = \"FILE\"")]
    NoPath,
    #[error("[store] backend \"etcd\" needs endpoints = [\"http://HOST:2379\", …]")]
    NoEndpoints,
    #[error("[store] endpoint {0:?} is not an http:// or https:// URL")]
    Endpoint(String),
    #[error("[store] https:// endpoints need tls = {{ ca, cert, key }} (and http:// none)")]
    TlsMismatch,
    #[error("[store] lease_ttl_secs = {0} is outside 2..=60")]
    Ttl(u64),
    #[error("[store] {0} is not valid for backend \"{1}\"")]
    NotFor(&'static str, &'static str),
    #[error("[store] advertise {0:?} is not an http:// or https:// URL")]
    Advertise(String),
    #[error("[store] floating_address {0:?}: expected IPV4/PREFIX, e.g. 10.0.0.100/24")]
    Floating(String),
    #[error("[store] name {0:?}: letters, digits, '-', '_', '.'; 1 to 63")]
    Name(String),
    #[error("[store] {0}")]
    AfterHandoff(String),
    #[error("[store] member: {0}")]
    Member(String),
}

/// The default lease TTL (the issue's "≤ 10 s").
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// This machine's host name (a daemon's and its etcd member's default name).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "seed".into())
}

/// Whether `name` may name a daemon and its etcd member: letters, digits, '-', '_', '.'; 1 to 63.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl TryFrom<RawStore> for StoreConfig {
    type Error = StoreConfigError;

    fn try_from(raw: RawStore) -> Result<StoreConfig, StoreConfigError> {
        let t = match raw {
            RawStore::Path(path) => return Ok(StoreConfig::Redb { path }),
            RawStore::Table(t) => t,
        };
        match t.backend.as_str() {
            "redb" => {
                let etcd_only = [
                    ("endpoints", !t.endpoints.is_empty()),
                    ("prefix", t.prefix.is_some()),
                    ("tls", t.tls.is_some()),
                    ("lease_ttl_secs", t.lease_ttl_secs.is_some()),
                    ("max_txn_ops", t.max_txn_ops.is_some()),
                    ("advertise", t.advertise.is_some()),
                    ("floating_address", t.floating_address.is_some()),
                    ("after_handoff", t.after_handoff.is_some()),
                    ("member", t.member.is_some()),
                ];
                if let Some((k, _)) = etcd_only.iter().find(|(_, set)| *set) {
                    return Err(StoreConfigError::NotFor(k, "redb"));
                }
                Ok(StoreConfig::Redb {
                    path: t.path.ok_or(StoreConfigError::NoPath)?,
                })
            }
            "etcd" => {
                if t.path.is_some() {
                    return Err(StoreConfigError::NotFor("path", "etcd"));
                }
                if t.endpoints.is_empty() {
                    return Err(StoreConfigError::NoEndpoints);
                }
                let mut https = 0;
                for e in &t.endpoints {
                    if e.starts_with("https://") {
                        https += 1;
                    } else if !e.starts_with("http://") {
                        return Err(StoreConfigError::Endpoint(e.clone()));
                    }
                }
                if (https > 0) != t.tls.is_some() || (https > 0 && https != t.endpoints.len()) {
                    return Err(StoreConfigError::TlsMismatch);
                }
                let ttl = t.lease_ttl_secs.unwrap_or(DEFAULT_TTL.as_secs());
                if !(2..=60).contains(&ttl) {
                    return Err(StoreConfigError::Ttl(ttl));
                }
                let name = t.name.unwrap_or_else(host_name);
                if !valid_name(&name) {
                    return Err(StoreConfigError::Name(name));
                }
                if let Some(a) = &t.advertise {
                    if !a.starts_with("http://") && !a.starts_with("https://") {
                        return Err(StoreConfigError::Advertise(a.clone()));
                    }
                }
                let floating = match &t.floating_address {
                    None => None,
                    Some(f) => Some(
                        f.split_once('/')
                            .and_then(|(ip, p)| Some((ip.parse().ok()?, p.parse().ok()?)))
                            .filter(|(_, p): &(std::net::Ipv4Addr, u8)| (1..=32).contains(p))
                            .ok_or_else(|| StoreConfigError::Floating(f.clone()))?,
                    ),
                };
                let mut etcd = EtcdConfig::new(t.endpoints);
                if let Some(p) = t.prefix {
                    etcd.prefix = p;
                }
                etcd.tls = t.tls;
                etcd.timeout = Duration::from_secs(t.timeout_secs.unwrap_or(5).max(1));
                etcd.max_txn_ops = t.max_txn_ops.unwrap_or(DEFAULT_MAX_TXN_OPS);
                etcd.max_request_bytes = t.max_request_bytes.unwrap_or(DEFAULT_MAX_REQUEST_BYTES);
                let member = t
                    .member
                    .as_ref()
                    .map(|m| member_spec(&name, m).map(Box::new))
                    .transpose()?;
                Ok(StoreConfig::Etcd {
                    etcd,
                    ha: HaSettings {
                        name,
                        lease_ttl: Duration::from_secs(ttl),
                        advertise: t.advertise,
                        floating,
                        after_handoff: match &t.after_handoff {
                            None => Default::default(),
                            Some(a) => a.parse().map_err(StoreConfigError::AfterHandoff)?,
                        },
                        member,
                    },
                })
            }
            other => Err(StoreConfigError::Backend(other.into())),
        }
    }
}

/// The member's command line from `[store] member`.
fn member_spec(
    name: &str,
    m: &RawMember,
) -> Result<super::etcd::member::MemberSpec, StoreConfigError> {
    use super::etcd::member::{ClusterState, MemberSpec};
    let url = |u: &str| u.starts_with("http://") || u.starts_with("https://");
    if !url(&m.client_url) || !url(&m.peer_url) {
        return Err(StoreConfigError::Member(
            "client_url and peer_url are http:// or https:// URLs".into(),
        ));
    }
    let mut spec = MemberSpec::new(name, &m.data_dir, &m.client_url, &m.peer_url);
    if let Some(c) = &m.initial_cluster {
        spec.initial_cluster = c
            .split(',')
            .map(|kv| {
                kv.split_once('=')
                    .filter(|(n, u)| !n.is_empty() && url(u))
                    .map(|(n, u)| (n.to_string(), u.to_string()))
                    .ok_or_else(|| {
                        StoreConfigError::Member(format!(
                            "initial_cluster {c:?}: expected name=http://HOST:PORT,…"
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        if !spec.initial_cluster.iter().any(|(n, _)| n == name) {
            return Err(StoreConfigError::Member(format!(
                "initial_cluster names no member {name:?} (the daemon's [store] name)"
            )));
        }
    }
    if let Some(j) = &m.join {
        if !url(j) {
            return Err(StoreConfigError::Member(format!(
                "join {j:?}: the http:// or https:// URL of a control-plane daemon's API"
            )));
        }
        if m.initial_cluster.is_some() || m.state.is_some() {
            return Err(StoreConfigError::Member(
                "join finds the initial cluster and state itself: give join, or initial_cluster \
                 and state, not both"
                    .into(),
            ));
        }
        spec.join = Some(j.trim_end_matches('/').to_string());
    }
    spec.state = match m.state.as_deref() {
        None | Some("new") => ClusterState::New,
        Some("existing") => ClusterState::Existing,
        Some(o) => {
            return Err(StoreConfigError::Member(format!(
                "state {o:?}: \"new\" or \"existing\""
            )))
        }
    };
    Ok(spec)
}

impl StoreConfig {
    /// Resolve relative paths (the redb file, the TLS files) against `base` (the directory of
    /// the config file).
    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        match self {
            StoreConfig::Redb { path } => fix(path),
            StoreConfig::Etcd { etcd, ha } => {
                if let Some(t) = &mut etcd.tls {
                    fix(&mut t.ca);
                    fix(&mut t.cert);
                    fix(&mut t.key);
                }
                if let Some(m) = &mut ha.member {
                    fix(&mut m.data_dir);
                    // The member's TLS is the daemon's client TLS (one CA for both).
                    m.tls = etcd.tls.clone();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        store: RawStore,
    }

    fn parse(text: &str) -> Result<StoreConfig, String> {
        let d: Doc = toml::from_str(text).map_err(|e| e.to_string())?;
        StoreConfig::try_from(d.store).map_err(|e| e.to_string())
    }

    #[test]
    fn a_path_is_redb() {
        assert!(matches!(
            parse("store = \"/var/lib/seed.redb\"").unwrap(),
            StoreConfig::Redb { path } if path == std::path::Path::new("/var/lib/seed.redb")
        ));
        assert!(matches!(
            parse("[store]\nbackend = \"redb\"\npath = \"x.redb\"").unwrap(),
            StoreConfig::Redb { .. }
        ));
    }

    #[test]
    fn etcd_with_defaults_and_tls() {
        let c = parse(
            "[store]\nbackend = \"etcd\"\nendpoints = [\"http://10.0.0.1:2379\"]\nname = \"a\"\n",
        )
        .unwrap();
        let StoreConfig::Etcd { etcd, ha } = c else {
            panic!()
        };
        assert_eq!(etcd.prefix, "/seed/");
        assert_eq!(ha.lease_ttl, DEFAULT_TTL);
        assert_eq!(ha.name, "a");
        let mut c = parse(
            "[store]\nbackend = \"etcd\"\nendpoints = [\"https://h:2379\"]\nlease_ttl_secs = 3\n\
             tls = { ca = \"ca.pem\", cert = \"a.pem\", key = \"a-key.pem\" }\n",
        )
        .unwrap();
        c.resolve_paths(std::path::Path::new("/etc/seed"));
        let StoreConfig::Etcd { etcd, ha } = c else {
            panic!()
        };
        assert_eq!(ha.lease_ttl, Duration::from_secs(3));
        assert_eq!(etcd.tls.unwrap().key, PathBuf::from("/etc/seed/a-key.pem"));
    }

    #[test]
    fn bad_tables_say_what_is_wrong() {
        let e = |t: &str| parse(t).unwrap_err();
        assert!(e("[store]\nbackend = \"etcd\"\nendpoint = [\"http://h:1\"]").contains("endpoint"));
        assert!(e("[store]\nbackend = \"zookeeper\"").contains("zookeeper"));
        assert!(e("[store]\nbackend = \"etcd\"").contains("needs endpoints"));
        assert!(e("[store]\nbackend = \"etcd\"\nendpoints = [\"h:2379\"]").contains("h:2379"));
        assert!(e("[store]\nbackend = \"etcd\"\nendpoints = [\"https://h:2379\"]").contains("tls"));
        assert!(
            e("[store]\nbackend = \"etcd\"\nendpoints = [\"http://h:1\"]\nlease_ttl_secs = 1")
                .contains("2..=60")
        );
        assert!(e("[store]\nbackend = \"redb\"").contains("path"));
        assert!(
            e("[store]\nbackend = \"redb\"\npath = \"x\"\nendpoints = [\"http://h:1\"]")
                .contains("endpoints")
        );
        assert!(
            e("[store]\nbackend = \"etcd\"\nendpoints = [\"http://h:1\"]\nname = \"a b\"")
                .contains("name")
        );
    }
}

#[cfg(test)]
mod member_tests {
    use super::*;
    use crate::store::etcd::member::ClusterState;

    #[derive(Debug, Deserialize)]
    struct Doc {
        store: RawStore,
    }

    fn parse(text: &str) -> Result<StoreConfig, String> {
        let d: Doc = toml::from_str(text).map_err(|e| e.to_string())?;
        StoreConfig::try_from(d.store).map_err(|e| e.to_string())
    }

    const HEAD: &str =
        "[store]\nbackend = \"etcd\"\nendpoints = [\"http://10.0.0.1:2379\"]\nname = \"seed\"\n";

    #[test]
    fn a_member_the_daemon_runs_new_or_joining() {
        let c = parse(&format!(
            "{HEAD}member = {{ data_dir = \"etcd\", client_url = \"http://10.0.0.1:2379\", \
             peer_url = \"http://10.0.0.1:2380\" }}"
        ))
        .unwrap();
        let StoreConfig::Etcd { ha, .. } = c else {
            panic!("etcd")
        };
        let m = ha.member.unwrap();
        assert_eq!(m.name, "seed");
        assert_eq!(m.state, ClusterState::New);
        assert_eq!(
            m.initial_cluster,
            [("seed".to_string(), "http://10.0.0.1:2380".to_string())]
        );

        let c = parse(&format!(
            "{HEAD}member = {{ data_dir = \"etcd\", client_url = \"http://10.0.0.1:2379\", \
             peer_url = \"http://10.0.0.1:2380\", state = \"existing\", \
             initial_cluster = \"uc0=http://10.0.0.2:2380,seed=http://10.0.0.1:2380\" }}"
        ))
        .unwrap();
        let StoreConfig::Etcd { ha, .. } = c else {
            panic!("etcd")
        };
        let m = ha.member.unwrap();
        assert_eq!(m.state, ClusterState::Existing);
        assert_eq!(m.initial_cluster.len(), 2);
        assert_eq!(m.join, None);

        // Joining through a daemon's API: the cluster comes from its answer at first start.
        let c = parse(&format!(
            "{HEAD}member = {{ data_dir = \"etcd\", client_url = \"http://10.0.0.1:2379\", \
             peer_url = \"http://10.0.0.1:2380\", join = \"http://10.0.0.9:6385/\" }}"
        ))
        .unwrap();
        let StoreConfig::Etcd { ha, .. } = c else {
            panic!("etcd")
        };
        assert_eq!(
            ha.member.unwrap().join.as_deref(),
            Some("http://10.0.0.9:6385")
        );
    }

    #[test]
    fn a_bad_member_says_what_is_wrong() {
        let m = |extra: &str| {
            parse(&format!(
                "{HEAD}member = {{ data_dir = \"etcd\", client_url = \"http://10.0.0.1:2379\", \
                 peer_url = \"http://10.0.0.1:2380\"{extra} }}"
            ))
            .unwrap_err()
        };
        assert!(m(", state = \"joining\"").contains("state \"joining\""));
        assert!(m(", initial_cluster = \"uc0\"").contains("initial_cluster"));
        assert!(m(", initial_cluster = \"uc0=http://10.0.0.2:2380\"").contains("names no member"));
        assert!(m(", join = \"10.0.0.9:6385\"").contains("join \"10.0.0.9:6385\""));
        assert!(m(", join = \"http://a:6385\", state = \"existing\"").contains("not both"));
        let e = parse(
            "[store]\nbackend = \"redb\"\npath = \"x\"\nmember = { data_dir = \"e\", \
             client_url = \"http://a:1\", peer_url = \"http://a:2\" }",
        )
        .unwrap_err();
        assert!(e.contains("member"), "{e}");
    }
}
