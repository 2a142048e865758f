//! etcd members: running Debian's `etcd` binary, and changing the cluster's membership.
//!
//! [`MemberSpec`] is one member's command line (pure, so it is tested without a process);
//! [`Member`] a running one (killed on drop). The membership calls ([`member_list`],
//! [`member_add`], [`member_remove`]) go through the etcd API: a cluster grows one member at a
//! time (add it, then start it with `ClusterState::Existing` and the initial cluster that
//! [`member_add`] returns) and shrinks the same way. That is how a one-member cluster (the
//! seed) becomes three (the undercloud), and how the seed leaves it.
//!
//! The binary ([`etcd_binary`]) is `$SEED_ETCD`, else the pinned `etcd-server` package of the
//! offline cache (`cargo xtask fetch`) unpacked once under `<cache>/unpacked/`, else `etcd` on
//! the `PATH` (an installed etcd-server, as in the undercloud image).

use super::super::StoreError;
use super::bridge::etcd_err;
use super::{EtcdStore, TlsFiles};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why a member could not be run.
#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    #[error("no etcd binary: set SEED_ETCD, run `cargo xtask fetch`, or install etcd-server")]
    NoBinary,
    #[error("unpacking {deb}")]
    Unpack {
        deb: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting etcd member {name}")]
    Spawn {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("etcd member {name} exited: {status} (log: {log})")]
    Exited {
        name: String,
        status: std::process::ExitStatus,
        log: PathBuf,
    },
}

/// The etcd binary to run (see the module doc).
pub fn etcd_binary() -> Result<PathBuf, MemberError> {
    if let Some(p) = std::env::var_os("SEED_ETCD") {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = cached_binary("etcd-server_", "usr/bin/etcd")? {
        return Ok(p);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("etcd"))
                .find(|p| p.is_file())
        })
        .ok_or(MemberError::NoBinary)
}

/// `etcdctl` from the pinned `etcd-client` package (tests read keys with it), if cached.
pub fn etcdctl_binary() -> Result<Option<PathBuf>, MemberError> {
    cached_binary("etcd-client_", "usr/bin/etcdctl")
}

/// `file` from the cached .deb whose name starts with `prefix`, unpacked once (atomically:
/// into a temporary directory renamed into place, so parallel tests never see half of it).
fn cached_binary(prefix: &str, file: &str) -> Result<Option<PathBuf>, MemberError> {
    let cache = crate::cache::dir();
    let Ok(entries) = std::fs::read_dir(cache.join("debs")) else {
        return Ok(None);
    };
    let Some(deb) = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .max()
    else {
        return Ok(None);
    };
    let stem = deb
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = cache.join("unpacked").join(&stem);
    let path = dir.join(file);
    if path.is_file() {
        return Ok(Some(path));
    }
    let err = |source| MemberError::Unpack {
        deb: deb.clone(),
        source,
    };
    let tmp = cache
        .join("unpacked")
        .join(format!(".{stem}.{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(err)?;
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&tmp)
        .status()
        .map_err(err)?;
    if !status.success() {
        std::fs::remove_dir_all(&tmp).ok();
        return Err(err(std::io::Error::other(format!("dpkg-deb: {status}"))));
    }
    if std::fs::rename(&tmp, &dir).is_err() {
        // Someone else unpacked it meanwhile.
        std::fs::remove_dir_all(&tmp).ok();
    }
    Ok(path.is_file().then_some(path))
}

/// Whether a member starts a new cluster or joins a running one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    New,
    Existing,
}

/// One member's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSpec {
    pub name: String,
    pub data_dir: PathBuf,
    /// e.g. `http://127.0.0.1:2379`.
    pub client_url: String,
    /// e.g. `http://127.0.0.1:2380`.
    pub peer_url: String,
    /// Every member at start: (name, peer URL), this one included.
    pub initial_cluster: Vec<(String, String)>,
    pub state: ClusterState,
    pub cluster_token: String,
    /// Raft heartbeat and election timeouts (etcd's defaults: 100 and 1000 ms).
    pub heartbeat_ms: u64,
    pub election_ms: u64,
    /// Peer and client TLS with client certificates (`https://` URLs), from [`super::tls`].
    pub tls: Option<TlsFiles>,
    /// The API of a control-plane daemon to be added through before the first start
    /// (`[store] member.join`; the daemon resolves it into `initial_cluster` and `state`).
    pub join: Option<String>,
}

impl MemberSpec {
    /// A member on 127.0.0.1 (or any address) with etcd's default timings.
    pub fn new(name: &str, data_dir: &Path, client_url: &str, peer_url: &str) -> MemberSpec {
        MemberSpec {
            name: name.into(),
            data_dir: data_dir.into(),
            client_url: client_url.into(),
            peer_url: peer_url.into(),
            initial_cluster: vec![(name.into(), peer_url.into())],
            state: ClusterState::New,
            cluster_token: "seed".into(),
            heartbeat_ms: 100,
            election_ms: 1000,
            tls: None,
            join: None,
        }
    }

    /// etcd's command line (flags only).
    pub fn args(&self) -> Vec<String> {
        let cluster = self
            .initial_cluster
            .iter()
            .map(|(n, u)| format!("{n}={u}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut args = vec![
            format!("--name={}", self.name),
            format!("--data-dir={}", self.data_dir.display()),
            format!("--listen-client-urls={}", self.client_url),
            format!("--advertise-client-urls={}", self.client_url),
            format!("--listen-peer-urls={}", self.peer_url),
            format!("--initial-advertise-peer-urls={}", self.peer_url),
            format!("--initial-cluster={cluster}"),
            format!(
                "--initial-cluster-state={}",
                match self.state {
                    ClusterState::New => "new",
                    ClusterState::Existing => "existing",
                }
            ),
            format!("--initial-cluster-token={}", self.cluster_token),
            format!("--heartbeat-interval={}", self.heartbeat_ms),
            format!("--election-timeout={}", self.election_ms),
            // See DEFAULT_MAX_TXN_OPS; the request size stays etcd's default.
            format!("--max-txn-ops={}", super::DEFAULT_MAX_TXN_OPS),
            "--logger=zap".into(),
            "--log-outputs=stderr".into(),
        ];
        if let Some(t) = &self.tls {
            let (ca, cert, key) = (t.ca.display(), t.cert.display(), t.key.display());
            args.extend([
                format!("--trusted-ca-file={ca}"),
                format!("--cert-file={cert}"),
                format!("--key-file={key}"),
                "--client-cert-auth".into(),
                format!("--peer-trusted-ca-file={ca}"),
                format!("--peer-cert-file={cert}"),
                format!("--peer-key-file={key}"),
                "--peer-client-cert-auth".into(),
            ]);
        }
        args
    }

    /// The command that runs this member with `bin`.
    pub fn command(&self, bin: &Path) -> Command {
        let mut c = Command::new(bin);
        c.args(self.args());
        c
    }
}

/// A running member, killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct Member {
    pub spec: MemberSpec,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Member {
    /// Run `command` (usually [`MemberSpec::command`], perhaps wrapped in `ip netns exec`),
    /// its output into `log`.
    pub fn spawn(
        spec: MemberSpec,
        mut command: Command,
        log: &Path,
    ) -> Result<Member, MemberError> {
        let err = |source| MemberError::Spawn {
            name: spec.name.clone(),
            source,
        };
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(err)?;
        let out2 = out.try_clone().map_err(err)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(out2)
            .spawn()
            .map_err(err)?;
        Ok(Member {
            spec,
            child: Some(child),
            log: log.into(),
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Fails if the process has exited.
    pub fn check(&mut self) -> Result<(), MemberError> {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                self.child = None;
                return Err(MemberError::Exited {
                    name: self.spec.name.clone(),
                    status,
                    log: self.log.clone(),
                });
            }
        }
        Ok(())
    }

    /// SIGKILL and reap (the data directory stays: the member can be started again).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A member as the cluster lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    /// A raft learner: it receives the log but does not vote (nor count for the quorum).
    pub is_learner: bool,
}

/// The cluster's members.
pub fn member_list(store: &EtcdStore) -> Result<Vec<MemberInfo>, StoreError> {
    store.bridge().read("member list", |mut c| async move {
        let resp = c
            .member_list()
            .await
            .map_err(|e| etcd_err("member list", e))?;
        Ok(resp
            .members()
            .iter()
            .map(|m| MemberInfo {
                id: m.id(),
                name: m.name().to_string(),
                peer_urls: m.peer_urls().to_vec(),
                client_urls: m.client_urls().to_vec(),
                is_learner: m.is_learner(),
            })
            .collect())
    })
}

/// Add a member that will answer at `peer_url` as `name`. Returns its id and the initial
/// cluster to start it with (every current member's name and peer URL, and the new one); start
/// it with [`ClusterState::Existing`]. One at a time: etcd refuses an add ("unhealthy
/// cluster") until every member, the last one added included, has been connected for 5 s, and
/// while a member added earlier has not started (it would risk the quorum): retry then.
pub fn member_add(
    store: &EtcdStore,
    name: &str,
    peer_url: &str,
) -> Result<(u64, Vec<(String, String)>), StoreError> {
    add(store, name, peer_url, false)
}

/// [`member_add`] as a raft learner: it does not vote until [`member_promote`]d, so a member
/// that never starts (a wrong URL, a dead machine) cannot cost a small cluster its quorum — a
/// voter added to a one-member cluster and never started would.
pub fn member_add_learner(
    store: &EtcdStore,
    name: &str,
    peer_url: &str,
) -> Result<(u64, Vec<(String, String)>), StoreError> {
    add(store, name, peer_url, true)
}

/// Make learner `id` a voting member; etcd refuses until it has caught up with the leader.
pub fn member_promote(store: &EtcdStore, id: u64) -> Result<(), StoreError> {
    store
        .bridge()
        .call("member promote", move |mut c| async move {
            c.member_promote(id)
                .await
                .map(drop)
                .map_err(|e| etcd_err("member promote", e))
        })
}

fn add(
    store: &EtcdStore,
    name: &str,
    peer_url: &str,
    learner: bool,
) -> Result<(u64, Vec<(String, String)>), StoreError> {
    let (name, url) = (name.to_string(), peer_url.to_string());
    store.bridge().call("member add", move |mut c| async move {
        let options = learner.then(|| etcd_client::MemberAddOptions::new().with_is_learner());
        let resp = c
            .member_add([url.clone()], options)
            .await
            .map_err(|e| etcd_err("member add", e))?;
        let id = resp.member().map(|m| m.id()).unwrap_or_default();
        let mut cluster = vec![];
        for m in resp.member_list() {
            let n = if m.id() == id {
                name.clone()
            } else {
                m.name().to_string()
            };
            if let Some(u) = m.peer_urls().first() {
                cluster.push((n, u.clone()));
            }
        }
        Ok((id, cluster))
    })
}

/// Remove member `id` from the cluster (it stops serving; its data directory is then useless).
/// Refused like an add ("unhealthy cluster") until the members have been connected for 5 s.
pub fn member_remove(store: &EtcdStore, id: u64) -> Result<(), StoreError> {
    store
        .bridge()
        .call("member remove", move |mut c| async move {
            c.member_remove(id)
                .await
                .map(drop)
                .map_err(|e| etcd_err("member remove", e))
        })
}

/// Whether the member at `url` alone answers a linearizable read (it is up and in the quorum),
/// within 5 s; `config` gives the TLS and prefix.
pub fn healthy(config: &super::EtcdConfig, url: &str) -> Result<(), StoreError> {
    let one = EtcdStore::connect(&super::EtcdConfig {
        endpoints: vec![url.to_string()],
        timeout: Duration::from_secs(5),
        ..config.clone()
    })?;
    let key = one.layout().health();
    one.bridge().read("health", move |mut c| async move {
        c.get(key, None)
            .await
            .map(drop)
            .map_err(|e| etcd_err("health", e))
    })
}

/// Wait until a write through `store` succeeds (the cluster has a leader and a quorum), at most
/// `within`.
pub fn wait_ready(store: &EtcdStore, within: Duration) -> Result<(), StoreError> {
    let until = Instant::now() + within;
    let key = store.layout().health();
    loop {
        let k = key.clone();
        let r = store.bridge().call("health", move |mut c| async move {
            c.put(k, b"ok".to_vec(), None)
                .await
                .map(drop)
                .map_err(|e| etcd_err("health", e))
        });
        match r {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= until => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Free TCP ports on 127.0.0.1 (bound, then released: good enough for tests and benches).
pub fn free_ports(n: usize) -> Vec<u16> {
    let socks: Vec<std::net::TcpListener> = (0..n)
        .filter_map(|_| std::net::TcpListener::bind("127.0.0.1:0").ok())
        .collect();
    socks
        .iter()
        .filter_map(|s| s.local_addr().ok().map(|a| a.port()))
        .collect()
}

/// A cluster of `n` members on 127.0.0.1 in a directory of its own, for tests and benches
/// (killed on drop). Fast raft timings (heartbeat 50 ms, election 500 ms).
#[derive(Debug)]
pub struct LocalCluster {
    pub members: Vec<Member>,
    pub dir: PathBuf,
    /// The client certificate when the members require one.
    pub client_tls: Option<TlsFiles>,
}

impl LocalCluster {
    /// Start `n` members under `dir` and wait (≤ 30 s) until the cluster takes writes.
    pub fn start(n: usize, dir: &Path) -> Result<LocalCluster, Box<dyn std::error::Error>> {
        Self::start_with(n, dir, false)
    }

    /// The same, with peer and client TLS from a CA generated under `dir/pki` (the client
    /// certificate for [`LocalCluster::config`] is `dir/pki/client.pem`).
    pub fn start_with(
        n: usize,
        dir: &Path,
        tls: bool,
    ) -> Result<LocalCluster, Box<dyn std::error::Error>> {
        let bin = etcd_binary()?;
        std::fs::create_dir_all(dir)?;
        let pki = tls
            .then(|| super::tls::Pki::create(&dir.join("pki")))
            .transpose()?;
        let scheme = if tls { "https" } else { "http" };
        let ports = free_ports(2 * n);
        let specs: Vec<MemberSpec> = (0..n)
            .map(|i| {
                let name = format!("m{i}");
                let mut s = MemberSpec::new(
                    &name,
                    &dir.join(&name),
                    &format!("{scheme}://127.0.0.1:{}", ports[2 * i]),
                    &format!("{scheme}://127.0.0.1:{}", ports[2 * i + 1]),
                );
                s.heartbeat_ms = 50;
                s.election_ms = 500;
                if let Some(p) = &pki {
                    s.tls = Some(p.member(&name, &["127.0.0.1".into(), "localhost".into()])?);
                }
                Ok(s)
            })
            .collect::<Result<_, super::tls::TlsError>>()?;
        let client_tls = pki.as_ref().map(|p| p.client("client")).transpose()?;
        let cluster: Vec<(String, String)> = specs
            .iter()
            .map(|s| (s.name.clone(), s.peer_url.clone()))
            .collect();
        let mut members = vec![];
        for mut s in specs {
            s.initial_cluster = cluster.clone();
            let log = dir.join(format!("{}.log", s.name));
            let cmd = s.command(&bin);
            members.push(Member::spawn(s, cmd, &log)?);
        }
        let c = LocalCluster {
            members,
            dir: dir.into(),
            client_tls,
        };
        let store = EtcdStore::connect(&c.config())?;
        if let Err(e) = wait_ready(&store, Duration::from_secs(30)) {
            let mut c = c;
            for m in &mut c.members {
                m.check()?;
            }
            return Err(e.into());
        }
        Ok(c)
    }

    /// The client URLs of the members.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| m.spec.client_url.clone())
            .collect()
    }

    /// A store configuration for this cluster (every member an endpoint).
    pub fn config(&self) -> super::EtcdConfig {
        let mut c = super::EtcdConfig::new(self.endpoints());
        c.tls = self.client_tls.clone();
        c
    }
}
