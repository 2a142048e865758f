//! The daemon's HA side: several `seed daemon`s on one etcd store, one of them leading.
//!
//! [`Ha::start`] connects to etcd, starts the election ([`crate::store::etcd::election`]) and
//! hands out the daemon's store: the etcd store **fenced** by this daemon's term, so that every
//! write the daemon makes is either part of its current term or refused (locally while it
//! follows, by etcd once its term has ended). [`Ha::duties`] runs the leader-only work once per
//! term with a [`CancellationToken`] cancelled when the term ends. [`LeaderOnly`] wraps the
//! daemon's boot policy: DHCP and boot decisions come from the leader only.
//!
//! What only the leader does: the lifecycle driver (deadlines, power actions, the agents'
//! commands), the stack reconcile loop, DHCP answers and boot-policy decisions. Followers serve
//! the read API and redirect writes to the leader ([`Ha::leader`]'s API address).

pub mod float;
pub mod handoff;
pub mod images;
pub mod leases;
pub mod members;

use crate::store::config::HaSettings;
use crate::store::etcd::election::{Candidate, Election, ElectionConfig, Role};
use crate::store::etcd::{EtcdConfig, EtcdStore, Fence};
use crate::store::StoreError;
use netboot::boot::Chain;
use netboot::{BootAction, BootPolicy, MacAddr};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// One daemon's membership in the HA control plane.
#[derive(Debug)]
pub struct Ha {
    /// Unfenced: reads, and records of this daemon's own (never the shared state).
    pub raw: EtcdStore,
    /// The daemon's store: every commit fenced by this daemon's term.
    pub store: Arc<EtcdStore>,
    pub fence: Arc<Fence>,
    election: Election,
    pub me: Candidate,
}

/// Where this daemon stands, as the API and `/metrics` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaStatus {
    pub name: String,
    /// `leader`, `follower` or `unavailable`.
    pub role: String,
    /// Who leads, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<Candidate>,
    /// Why nothing is done (etcd unreachable, no quorum), when unavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// Commits etcd refused because this daemon's term had ended.
    pub fenced_rejected: u64,
    /// Writes refused before reaching etcd because this daemon did not lead.
    pub refused_locally: u64,
}

impl Ha {
    /// Connect and start campaigning as `settings.name`, advertising `api` (the URL followers
    /// redirect writes to).
    pub fn start(etcd: &EtcdConfig, settings: &HaSettings, api: &str) -> Result<Ha, StoreError> {
        Self::start_as(etcd, settings, api, true)
    }

    /// [`Ha::start`], campaigning only if `candidate` (a seed restarted in the middle of its
    /// hand-off never leads again).
    pub fn start_as(
        etcd: &EtcdConfig,
        settings: &HaSettings,
        api: &str,
        candidate: bool,
    ) -> Result<Ha, StoreError> {
        let raw = EtcdStore::connect(etcd)?;
        let fence = Arc::new(Fence::new());
        let me = Candidate {
            name: settings.name.clone(),
            api: api.to_string(),
        };
        let election = Election::start_as(
            &raw,
            ElectionConfig {
                me: me.clone(),
                ttl: settings.lease_ttl,
            },
            fence.clone(),
            candidate,
        );
        Ok(Ha {
            store: Arc::new(raw.fenced(fence.clone())),
            raw,
            fence,
            election,
            me,
        })
    }

    /// Whether this daemon may act as leader right now (term held, lease renewed in time).
    pub fn is_leader(&self) -> bool {
        self.election.is_leader()
    }

    /// Leave the election (`false`: the term ends now and another daemon takes over) or
    /// campaign again.
    pub fn set_candidate(&self, on: bool) {
        self.election.set_candidate(on);
    }

    pub fn role(&self) -> Role {
        self.election.role()
    }

    /// The leader, if known (this daemon when it leads).
    pub fn leader(&self) -> Option<Candidate> {
        match self.role() {
            Role::Leader { .. } => Some(self.me.clone()),
            Role::Follower { leader } => leader,
            Role::Unavailable { .. } => None,
        }
    }

    /// Why this daemon cannot act now because of the store (`None`: it can, or it follows a
    /// leader that can).
    pub fn unavailable(&self) -> Option<String> {
        match self.role() {
            Role::Unavailable { why } => Some(format!("the store is unavailable: {why}")),
            Role::Leader { .. } if !self.is_leader() => Some(
                "this daemon's etcd lease was not renewed within its TTL (no quorum, or no \
                 member reachable)"
                    .into(),
            ),
            _ => None,
        }
    }

    pub fn status(&self) -> HaStatus {
        let role = self.role();
        HaStatus {
            name: self.me.name.clone(),
            role: match &role {
                Role::Leader { .. } if self.is_leader() => "leader",
                Role::Leader { .. } | Role::Follower { .. } => "follower",
                Role::Unavailable { .. } => "unavailable",
            }
            .into(),
            leader: self.leader(),
            why: match role {
                Role::Unavailable { why } => Some(why),
                _ => None,
            },
            fenced_rejected: self.fence.rejected_count(),
            refused_locally: self.fence.refused_locally_count(),
        }
    }

    /// Run `term(token)` each time this daemon starts leading; `token` is cancelled when that
    /// term ends (and when `stop` is). Returns when `stop` is cancelled.
    pub async fn duties(&self, stop: CancellationToken, mut term: impl FnMut(CancellationToken)) {
        let mut roles = self.election.subscribe();
        let mut current: Option<CancellationToken> = None;
        loop {
            let role = roles.borrow_and_update().clone();
            match (&role, &current) {
                (Role::Leader { term: t }, None) => {
                    info!(key = %t.key, revision = t.revision, "leader: taking over");
                    let token = stop.child_token();
                    term(token.clone());
                    current = Some(token);
                }
                (Role::Leader { .. }, Some(_)) => {}
                (other, Some(token)) => {
                    warn!(role = ?other, "no longer leader: leader duties stop");
                    token.cancel();
                    current = None;
                }
                (Role::Unavailable { why }, None) => {
                    warn!(%why, "not acting: the store is unavailable");
                }
                (Role::Follower { .. }, None) => {}
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                r = roles.changed() => if r.is_err() { break },
            }
        }
        if let Some(t) = current {
            t.cancel();
        }
    }
}

/// A daemon named `name` with a 2 s lease and nothing else (the tests of this module's parts).
#[cfg(test)]
pub(crate) fn test_settings(name: &str) -> HaSettings {
    HaSettings {
        name: name.into(),
        lease_ttl: std::time::Duration::from_secs(2),
        advertise: None,
        floating: None,
        after_handoff: Default::default(),
        member: None,
    }
}

/// Render this daemon's HA counters at every `/metrics`: whether it leads, the commits etcd
/// refused because its term had ended (a zombie leader's writes) and the writes refused before
/// reaching etcd because it did not lead.
pub fn register_metrics(ha: &Arc<Ha>, registry: &netboot::metrics::Metrics) {
    let weak = Arc::downgrade(ha);
    registry.add_collector(Box::new(move || {
        let Some(ha) = weak.upgrade() else {
            return String::new();
        };
        format!(
            "# HELP seed_ha_leader Whether this daemon leads (1) or not (0).\n\
             # TYPE seed_ha_leader gauge\n\
             seed_ha_leader {}\n\
             # HELP seed_ha_store_available Whether this daemon reaches a store with quorum (1) or not (0: it does nothing).\n\
             # TYPE seed_ha_store_available gauge\n\
             seed_ha_store_available {}\n\
             # HELP seed_ha_fenced_writes_rejected_total Commits etcd refused: this daemon's term had ended.\n\
             # TYPE seed_ha_fenced_writes_rejected_total counter\n\
             seed_ha_fenced_writes_rejected_total {}\n\
             # HELP seed_ha_writes_refused_locally_total Writes refused before etcd: not the leader.\n\
             # TYPE seed_ha_writes_refused_locally_total counter\n\
             seed_ha_writes_refused_locally_total {}\n",
            u8::from(ha.is_leader()),
            u8::from(ha.unavailable().is_none()),
            ha.fence.rejected_count(),
            ha.fence.refused_locally_count(),
        )
    }));
}

impl crate::daemon::api::forward::Leadership for Ha {
    fn leads(&self) -> bool {
        self.is_leader()
    }

    fn leader_api(&self) -> Option<String> {
        self.leader()
            .filter(|l| l.name != self.me.name)
            .map(|l| l.api)
    }

    fn why_not(&self) -> Option<String> {
        self.unavailable()
    }
}

/// A boot policy that answers only while this daemon leads: followers stay silent on DHCP and
/// decide no boots (nodes reach the leader at the floating address).
pub struct LeaderOnly<P> {
    inner: Arc<P>,
    ha: Arc<Ha>,
}

impl<P> LeaderOnly<P> {
    pub fn new(inner: Arc<P>, ha: Arc<Ha>) -> Self {
        LeaderOnly { inner, ha }
    }
}

impl<P: BootPolicy> BootPolicy for LeaderOnly<P> {
    fn boot_action(&self, mac: MacAddr) -> Option<BootAction> {
        if !self.ha.is_leader() {
            return None;
        }
        self.inner.boot_action(mac)
    }

    fn chain(&self, mac: MacAddr) -> Chain {
        self.inner.chain(mac)
    }

    fn script_served(&self, mac: MacAddr) {
        if self.ha.is_leader() {
            self.inner.script_served(mac);
        }
    }

    fn discovered(&self, mac: MacAddr) -> bool {
        self.ha.is_leader() && self.inner.discovered(mac)
    }

    /// The inner policy's script for this asker (its token handout rule), from the leader only.
    fn script_for(&self, mac: MacAddr, peer: std::net::IpAddr) -> Option<BootAction> {
        if !self.ha.is_leader() {
            return None;
        }
        self.inner.script_for(mac, peer)
    }

    fn address_seen(&self, mac: MacAddr, ip: std::net::Ipv4Addr) {
        if self.ha.is_leader() {
            self.inner.address_seen(mac, ip);
        }
    }

    /// A follower's DHCP answers nothing, whatever its copy of the lease table holds.
    fn serving(&self) -> bool {
        self.ha.is_leader()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::etcd::member::LocalCluster;
    use crate::store::{Expect, Store};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    struct Always;
    impl BootPolicy for Always {
        fn boot_action(&self, _mac: MacAddr) -> Option<BootAction> {
            Some(BootAction::Exit)
        }
    }

    use super::test_settings as settings;

    async fn until(what: &str, f: impl Fn() -> bool) {
        let t = Instant::now();
        while !f() {
            assert!(t.elapsed() < Duration::from_secs(15), "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Two daemons: one leads and runs its duties; the other answers no boots and its writes
    /// are refused; when the leader stops, the other takes over and the first one's duties
    /// were cancelled.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_term_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let c = LocalCluster::start(1, dir.path()).unwrap();
        let a = Arc::new(Ha::start(&c.config(), &settings("a"), "http://a:6385").unwrap());
        until("a leads", || a.is_leader()).await;
        let b = Arc::new(Ha::start(&c.config(), &settings("b"), "http://b:6385").unwrap());
        until("b knows a leads", || {
            b.leader().is_some_and(|l| l.name == "a")
        })
        .await;

        let terms = Arc::new(AtomicUsize::new(0));
        let ended = Arc::new(AtomicUsize::new(0));
        let stop_a = CancellationToken::new();
        let stop_b = CancellationToken::new();
        for (ha, stop) in [(a.clone(), stop_a.clone()), (b.clone(), stop_b.clone())] {
            let (terms, ended) = (terms.clone(), ended.clone());
            tokio::spawn(async move {
                ha.duties(stop, move |token| {
                    terms.fetch_add(1, Ordering::SeqCst);
                    let ended = ended.clone();
                    tokio::spawn(async move {
                        token.cancelled().await;
                        ended.fetch_add(1, Ordering::SeqCst);
                    });
                })
                .await
            });
        }
        until("a's term runs", || terms.load(Ordering::SeqCst) == 1).await;
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        assert!(LeaderOnly::new(Arc::new(Always), a.clone())
            .boot_action(mac)
            .is_some());
        assert!(LeaderOnly::new(Arc::new(Always), b.clone())
            .boot_action(mac)
            .is_none());
        assert!(LeaderOnly::new(Arc::new(Always), a.clone()).serving());
        assert!(!LeaderOnly::new(Arc::new(Always), b.clone()).serving());
        let sb = b.store.clone();
        let refused =
            tokio::task::spawn_blocking(move || sb.put("nodes", "x", b"b".to_vec(), Expect::Any))
                .await
                .unwrap();
        assert!(refused.unwrap_err().is_fenced());
        assert_eq!(b.status().refused_locally, 1);
        assert_eq!(b.status().role, "follower");

        a.election.stop();
        until("b takes over", || b.is_leader()).await;
        until("a's duties stopped", || ended.load(Ordering::SeqCst) == 1).await;
        until("b's term runs", || terms.load(Ordering::SeqCst) == 2).await;
        assert_eq!(b.status().role, "leader");
        stop_a.cancel();
        stop_b.cancel();
    }
}
