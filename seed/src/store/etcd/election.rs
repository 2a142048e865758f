//! Leader election on etcd: a lease, a campaign, a term.
//!
//! Each daemon holds a lease of `ttl` (kept alive every `ttl/3`) and campaigns with etcd's
//! election API (`<prefix>leader`, the daemon's [`Candidate`] as value). The campaign returns
//! when this daemon's key is the oldest under the election prefix: it leads, and its term is
//! that key and its create revision, set into the [`Fence`] so that every write it makes
//! compares them ([`super::fence`]). The term ends when:
//! - the lease is lost (a keep-alive answered TTL 0, or none succeeded for a whole TTL: etcd
//!   unreachable or without quorum), or
//! - a write was fenced off (someone deleted the key), or
//! - the daemon resigns or stops.
//!
//! A daemon that is not a candidate ([`Election::set_candidate`]`(false)`: a seed handing over,
//! or one restarted mid-hand-off) holds no lease and never leads; it still follows who leads.
//!
//! Ending a term clears the fence **before** anything else, then a new lease and campaign
//! start. [`Election::is_leader`] is the check for actions that are not store writes (power,
//! DHCP answers): it is true only while the term is set AND the last successful keep-alive is
//! younger than the TTL, so a daemon that was paused longer than the TTL does not act on
//! waking, even before its keep-alive task has run. Store writes need no such timing: etcd
//! fences them.
//!
//! Followers learn who leads from the election's current leader key ([`Role::Follower`]), to
//! forward or redirect writes.

use super::fence::{Fence, Term};
use super::EtcdStore;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// What a daemon says about itself when it campaigns (the leader key's value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// The daemon's name (unique among the members).
    pub name: String,
    /// Where its operator API answers (followers redirect writes there).
    pub api: String,
}

/// Where this daemon stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Waiting for a lease or for the campaign; `leader` is who leads now, if known.
    Follower { leader: Option<Candidate> },
    /// Leading: writes are fenced by `term`.
    Leader { term: Term },
    /// etcd cannot be reached or has no quorum: nobody acts; `why` says what failed.
    Unavailable { why: String },
}

/// The daemons campaigning now (the leader among them), from the election's keys.
pub fn candidates(store: &EtcdStore) -> Result<Vec<Candidate>, super::StoreError> {
    let prefix = format!("{}/", store.layout().election());
    store.bridge().read("candidates", move |mut c| async move {
        let end = super::prefix_end(prefix.as_bytes());
        let resp = c
            .get(
                prefix.as_bytes(),
                Some(etcd_client::GetOptions::new().with_range(end)),
            )
            .await
            .map_err(|e| super::bridge::etcd_err("candidates", e))?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
            .collect())
    })
}

/// Election settings.
#[derive(Debug, Clone)]
pub struct ElectionConfig {
    pub me: Candidate,
    /// The lease TTL: how long a dead or cut-off leader keeps the term (≥ 2 s: etcd's floor).
    pub ttl: Duration,
}

/// A running election (stopped and resigned on drop).
#[derive(Debug)]
pub struct Election {
    role: watch::Receiver<Role>,
    fence: Arc<Fence>,
    /// The term's lease is known to be alive until then.
    valid_until: Arc<Mutex<Option<Instant>>>,
    stop: CancellationToken,
    candidate: watch::Sender<bool>,
}

impl Election {
    /// Start campaigning for `store`'s cluster; the term goes into `fence`.
    pub fn start(store: &EtcdStore, config: ElectionConfig, fence: Arc<Fence>) -> Election {
        Self::start_as(store, config, fence, true)
    }

    /// [`Election::start`], campaigning only if `candidate`.
    pub fn start_as(
        store: &EtcdStore,
        config: ElectionConfig,
        fence: Arc<Fence>,
        candidate: bool,
    ) -> Election {
        let (tx, rx) = watch::channel(Role::Follower { leader: None });
        let (candidate, candidate_rx) = watch::channel(candidate);
        let valid_until = Arc::new(Mutex::new(None));
        let stop = CancellationToken::new();
        let run = Runner {
            client: store.bridge().client(),
            name: store.layout().election(),
            config,
            fence: fence.clone(),
            role: tx,
            valid_until: valid_until.clone(),
            stop: stop.clone(),
            candidate: candidate_rx,
        };
        store.bridge().handle().spawn(run.run());
        Election {
            role: rx,
            fence,
            valid_until,
            stop,
            candidate,
        }
    }

    /// Campaign (`true`) or not: `false` ends this daemon's term at once (the fence cleared
    /// first, the lease revoked so that another candidate wins without waiting out the TTL)
    /// and keeps it out of the election until set back.
    pub fn set_candidate(&self, on: bool) {
        if !on {
            self.fence.set(None);
        }
        self.candidate.send_replace(on);
    }

    /// Whether this daemon campaigns.
    pub fn is_candidate(&self) -> bool {
        *self.candidate.borrow()
    }

    /// The role now.
    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    /// Changes of role.
    pub fn subscribe(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }

    /// Whether this daemon may act as leader at this instant (see the module doc).
    pub fn is_leader(&self) -> bool {
        self.fence.term().is_some() && lock(&self.valid_until).is_some_and(|t| Instant::now() < t)
    }

    /// Give up leadership (and campaigning) now.
    pub fn stop(&self) {
        self.fence.set(None);
        self.stop.cancel();
    }
}

impl Drop for Election {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Runner {
    client: etcd_client::Client,
    name: String,
    config: ElectionConfig,
    fence: Arc<Fence>,
    role: watch::Sender<Role>,
    valid_until: Arc<Mutex<Option<Instant>>>,
    stop: CancellationToken,
    candidate: watch::Receiver<bool>,
}

/// How one lease ended.
enum Ended {
    Stopped,
    Lost(String),
    /// No longer a candidate.
    Resigned,
}

/// Returns once `candidate` is false (never if its sender is gone while true).
async fn not_candidate(mut candidate: watch::Receiver<bool>) {
    loop {
        if !*candidate.borrow_and_update() {
            return;
        }
        if candidate.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Runner {
    async fn run(self) {
        let mut last_why = String::new();
        loop {
            if self.stop.is_cancelled() {
                break;
            }
            if !*self.candidate.borrow() {
                if self.stand_aside().await {
                    break;
                }
                continue;
            }
            match self.one_lease().await {
                Ended::Stopped => break,
                Ended::Resigned => {
                    info!(me = %self.config.me.name, "not a candidate: out of the election");
                }
                Ended::Lost(why) => {
                    self.end_term();
                    if why != last_why {
                        warn!(why = %why, "not leading: etcd lease lost or unreachable");
                    }
                    self.role
                        .send_replace(Role::Unavailable { why: why.clone() });
                    last_why = why;
                    // Retry soon, but do not spin against an unreachable cluster.
                    tokio::select! {
                        _ = self.stop.cancelled() => break,
                        _ = tokio::time::sleep(self.config.ttl / 4) => {}
                    }
                }
            }
        }
        self.end_term();
    }

    /// Not a candidate: no lease, follow who leads until campaigning again (false) or stopped
    /// (true).
    async fn stand_aside(&self) -> bool {
        self.end_term();
        self.role.send_replace(Role::Follower { leader: None });
        let observer = tokio::spawn(observe(
            self.client.clone(),
            self.name.clone(),
            self.role.clone(),
        ));
        let mut candidate = self.candidate.clone();
        let stopped = loop {
            tokio::select! {
                _ = self.stop.cancelled() => break true,
                r = candidate.changed() => match r {
                    Err(_) => break true,
                    Ok(()) if *candidate.borrow() => break false,
                    Ok(()) => {}
                },
            }
        };
        observer.abort();
        stopped
    }

    fn end_term(&self) {
        // The fence first: from here on no write of the old term leaves this daemon.
        self.fence.set(None);
        *lock(&self.valid_until) = None;
    }

    /// Grant a lease, keep it alive, campaign on it, lead on it; return when it is gone.
    async fn one_lease(&self) -> Ended {
        let mut c = self.client.clone();
        let ttl_secs = self.config.ttl.as_secs().max(2) as i64;
        let ttl = Duration::from_secs(ttl_secs as u64);
        let asked = Instant::now();
        let lease = match tokio::time::timeout(ttl, c.lease_grant(ttl_secs, None)).await {
            Ok(Ok(l)) => l.id(),
            Ok(Err(e)) => return Ended::Lost(format!("etcd lease grant: {e}")),
            Err(_) => return Ended::Lost("etcd lease grant: no answer (no quorum?)".into()),
        };
        *lock(&self.valid_until) = Some(asked + ttl);
        let value = serde_json::to_vec(&self.config.me).expect("a candidate serialises");
        let (lost_tx, mut lost_rx) = tokio::sync::mpsc::channel::<String>(1);
        let keeper = tokio::spawn(keep_alive(
            c.clone(),
            lease,
            ttl,
            self.valid_until.clone(),
            lost_tx,
        ));
        let observer = tokio::spawn(observe(c.clone(), self.name.clone(), self.role.clone()));
        let won = tokio::select! {
            _ = self.stop.cancelled() => Err(Ended::Stopped),
            _ = not_candidate(self.candidate.clone()) => Err(Ended::Resigned),
            why = lost_rx.recv() => Err(Ended::Lost(why.unwrap_or_else(|| "lease keeper stopped".into()))),
            won = c.campaign(self.name.clone(), value, lease) => match won {
                Err(e) => Err(Ended::Lost(format!("etcd campaign: {e}"))),
                Ok(mut resp) => resp
                    .take_leader()
                    .ok_or_else(|| Ended::Lost("etcd campaign answered without a leader key".into())),
            },
        };
        observer.abort();
        let ended = match won {
            Err(ended) => ended,
            Ok(key) => self.lead(&key, &mut lost_rx).await,
        };
        keeper.abort();
        self.end_term();
        // Best effort: a revoked lease frees the term at once instead of after the TTL.
        let mut c2 = self.client.clone();
        let _ = tokio::time::timeout(Duration::from_secs(1), c2.lease_revoke(lease)).await;
        ended
    }

    async fn lead(
        &self,
        key: &etcd_client::LeaderKey,
        lost: &mut tokio::sync::mpsc::Receiver<String>,
    ) -> Ended {
        let term = Term {
            key: String::from_utf8_lossy(key.key()).into_owned(),
            revision: key.rev() as u64,
        };
        self.fence.set(Some(term.clone()));
        info!(key = %term.key, revision = term.revision, me = %self.config.me.name, "leading");
        self.role.send_replace(Role::Leader { term: term.clone() });
        let mut check = tokio::time::interval(self.config.ttl / 4);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return Ended::Stopped,
                _ = not_candidate(self.candidate.clone()) => return Ended::Resigned,
                why = lost.recv() => {
                    return Ended::Lost(why.unwrap_or_else(|| "lease keeper stopped".into()))
                }
                _ = check.tick() => {
                    // A commit fenced off (the key was deleted under us) cleared the term.
                    if self.fence.term().as_ref() != Some(&term) {
                        return Ended::Lost("a write was fenced off: the term ended".into());
                    }
                }
            }
        }
    }
}

/// Keep `lease` alive every `ttl/3`; push back `valid_until` on each success; report the loss
/// (TTL 0, or no success for a whole TTL) on `lost`.
async fn keep_alive(
    mut c: etcd_client::Client,
    lease: i64,
    ttl: Duration,
    valid_until: Arc<Mutex<Option<Instant>>>,
    lost: tokio::sync::mpsc::Sender<String>,
) {
    let mut last_error = String::from("no keep-alive answered");
    let mut stream = None;
    loop {
        let sent = Instant::now();
        if lock(&valid_until).is_none_or(|t| sent >= t) {
            let _ = lost
                .send(format!("lease not renewed for {ttl:?}: {last_error}"))
                .await;
            return;
        }
        if stream.is_none() {
            match tokio::time::timeout(ttl / 3, c.lease_keep_alive(lease)).await {
                Ok(Ok(s)) => stream = Some(s),
                Ok(Err(e)) => last_error = format!("etcd keep-alive: {e}"),
                Err(_) => last_error = "etcd keep-alive: no answer".into(),
            }
        }
        if let Some((keeper, answers)) = stream.as_mut() {
            let renewed = async {
                keeper.keep_alive().await?;
                answers.message().await
            };
            match tokio::time::timeout(ttl / 3, renewed).await {
                Ok(Ok(Some(r))) if r.ttl() > 0 => {
                    *lock(&valid_until) = Some(sent + Duration::from_secs(r.ttl() as u64));
                }
                Ok(Ok(Some(_))) => {
                    let _ = lost.send("the lease expired (TTL 0)".into()).await;
                    return;
                }
                Ok(Ok(None)) => {
                    last_error = "etcd keep-alive stream ended".into();
                    stream = None;
                }
                Ok(Err(e)) => {
                    last_error = format!("etcd keep-alive: {e}");
                    stream = None;
                }
                Err(_) => {
                    last_error = "etcd keep-alive: no answer (no quorum?)".into();
                    stream = None;
                }
            }
        }
        let wait = (ttl / 3).saturating_sub(sent.elapsed());
        tokio::time::sleep(wait).await;
    }
}

/// While campaigning: keep [`Role::Follower`] up to date with who leads.
async fn observe(mut c: etcd_client::Client, name: String, role: watch::Sender<Role>) {
    loop {
        let leader = match c.leader(name.clone()).await {
            Ok(r) => r
                .kv()
                .and_then(|kv| serde_json::from_slice::<Candidate>(kv.value()).ok()),
            Err(_) => None,
        };
        role.send_if_modified(|r| {
            let new = Role::Follower {
                leader: leader.clone(),
            };
            if matches!(r, Role::Leader { .. }) || *r == new {
                return false;
            }
            *r = new;
            true
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
