//! The hand-off: a seed daemon leaves the HA control plane to the daemons that joined it (the
//! undercloud) by a membership change, never a copy.
//!
//! The seed is one member of an etcd cluster the undercloud's members joined; everything the
//! undercloud needs is already in that store (nodes, stacks, leases, image replicas). Handing
//! over is three persisted steps ([`HandoffStep`]):
//!
//! 1. **Resigning**: the daemon leaves the election (its term ends at once, the fence cleared
//!    first: no DHCP answer, boot decision or write of its own after that) and waits until
//!    another daemon leads. If nobody takes over in time it campaigns again and the hand-off is
//!    given up with the reason: at no moment does nobody own the state.
//! 2. **Removing**: its etcd member is removed from the cluster, through the members that stay
//!    (the seed's own member then stops serving).
//! 3. **Done**: the daemon stops answering anything and exits, or powers its machine off
//!    (`[store] after_handoff`).
//!
//! Before step 1 nothing is touched unless every check passes ([`check`]): this daemon's member
//! is in the cluster, every other member has started, votes and answers a quorum read, another daemon
//! campaigns, and every image this daemon holds is held by each of them. Each step is written
//! to `<state_dir>/handoff.json` (durably) before it is acted on: a daemon killed at any step
//! starts again out of the election and finishes from there; one that finished refuses to start
//! (it must never answer DHCP again for nodes the undercloud owns).

use super::Ha;
use crate::store::etcd::election::candidates;
use crate::store::etcd::member::{self, MemberInfo};
use crate::store::etcd::{EtcdConfig, EtcdStore};
use crate::store::{Expect, Store, StoreError};
use ::api::ha::{Handoff as Record, HandoffStep};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The hand-off's record in the daemon's state directory.
pub const FILE: &str = "handoff.json";
/// Where the daemons that stay find the finished hand-offs (key: the member that left).
pub const TABLE: &str = "handoffs";

/// What a daemon does once it has handed over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum After {
    /// Exit (status 0): a seed on an operator's host.
    #[default]
    Exit,
    /// Power its own machine off (`poweroff`): the appliance.
    Poweroff,
}

impl std::str::FromStr for After {
    type Err = String;
    fn from_str(s: &str) -> Result<After, String> {
        match s {
            "exit" => Ok(After::Exit),
            "poweroff" => Ok(After::Poweroff),
            other => Err(format!(
                "after_handoff = {other:?}: \"exit\" or \"poweroff\""
            )),
        }
    }
}

/// What the checks before a hand-off look at (gathered by [`Handoff::facts`]).
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// This daemon's name, which is its etcd member's name.
    pub me: String,
    pub members: Vec<MemberInfo>,
    /// Members (by name) that did not answer a quorum read, and why.
    pub unhealthy: Vec<(String, String)>,
    /// The other daemons that campaign.
    pub candidates: BTreeSet<String>,
    /// Each image's stream digest → (its name, the daemons that hold it).
    pub images: BTreeMap<String, (String, BTreeSet<String>)>,
}

/// Why a hand-off is refused before anything is touched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "this daemon is not in an HA control plane (its store is one redb file): \
         hand-off moves an etcd member out"
    )]
    NotHa,
    #[error(
        "this daemon's etcd member `{me}` is not in the cluster (members: {members}): a seed's \
         `[store] name` must be its etcd member's name"
    )]
    NotAMember { me: String, members: String },
    #[error("no other etcd member: the undercloud has not joined the cluster yet")]
    Alone,
    #[error(
        "the etcd member at {peer} was added but has not started: start it or remove it first"
    )]
    NotStarted { peer: String },
    #[error("etcd member {name} is a learner, not a voter yet: wait until it is promoted")]
    Learner { name: String },
    #[error("etcd member {name} does not answer: {why}")]
    Unhealthy { name: String, why: String },
    #[error("no other seed daemon campaigns: nobody would lead after the hand-off")]
    NoSuccessor,
    #[error(
        "seed daemon {daemon} does not hold image {image} ({digest}) yet: wait for its replication"
    )]
    ImageMissing {
        daemon: String,
        image: String,
        digest: String,
    },
}

/// The checks before a hand-off: `Ok((successors, endpoints))` — the daemons that may lead
/// after it and the client URLs of the members that stay — or why not.
pub fn check(f: &Facts) -> Result<(Vec<String>, Vec<String>), Refused> {
    if !f.members.iter().any(|m| m.name == f.me) {
        let members: Vec<&str> = f.members.iter().map(|m| m.name.as_str()).collect();
        return Err(Refused::NotAMember {
            me: f.me.clone(),
            members: members.join(", "),
        });
    }
    let others: Vec<&MemberInfo> = f.members.iter().filter(|m| m.name != f.me).collect();
    if others.is_empty() {
        return Err(Refused::Alone);
    }
    if let Some(m) = others
        .iter()
        .find(|m| m.name.is_empty() || m.client_urls.is_empty())
    {
        return Err(Refused::NotStarted {
            peer: m.peer_urls.join(","),
        });
    }
    if let Some(m) = others.iter().find(|m| m.is_learner) {
        return Err(Refused::Learner {
            name: m.name.clone(),
        });
    }
    if let Some((name, why)) = f.unhealthy.first() {
        return Err(Refused::Unhealthy {
            name: name.clone(),
            why: why.clone(),
        });
    }
    if f.candidates.is_empty() {
        return Err(Refused::NoSuccessor);
    }
    for (digest, (image, holders)) in &f.images {
        if !holders.contains(&f.me) {
            continue;
        }
        if let Some(d) = f.candidates.iter().find(|d| !holders.contains(*d)) {
            return Err(Refused::ImageMissing {
                daemon: d.clone(),
                image: image.clone(),
                digest: digest.clone(),
            });
        }
    }
    let endpoints = others
        .iter()
        .flat_map(|m| m.client_urls.iter().cloned())
        .collect();
    Ok((f.candidates.iter().cloned().collect(), endpoints))
}

/// Why a hand-off request failed.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error("looking at the cluster")]
    Store(#[from] StoreError),
    #[error("writing {path}")]
    Persist {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The hand-off record left in `dir` by an earlier run, if any (a file that cannot be read is
/// an error: the daemon must not guess whether it handed over).
pub fn load(dir: &Path) -> Result<Option<Record>, std::io::Error> {
    let path = dir.join(FILE);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn persist(dir: &Path, r: &Record) -> Result<(), HandoffError> {
    let path = dir.join(FILE);
    let body = serde_json::to_vec_pretty(r).expect("a hand-off record serialises");
    fsutil::write(&path, &body).map_err(|source| HandoffError::Persist { path, source })
}

/// The fault control of the hand-off's tests: with `SEED_FAULT_HANDOFF_EXIT_AT=<step>` the
/// daemon exits (status 70) right after persisting that step, before acting on it — a crash at
/// each step on demand, where a `kill -9` would land at a random point.
fn fault_exit_at(step: HandoffStep) {
    let Ok(at) = std::env::var("SEED_FAULT_HANDOFF_EXIT_AT") else {
        return;
    };
    let name = serde_json::to_value(step).ok();
    if name.as_ref().and_then(|v| v.as_str()) == Some(at.as_str()) {
        warn!(step = %at, "SEED_FAULT_HANDOFF_EXIT_AT: exiting as if killed");
        std::process::exit(70);
    }
}

/// Where the driver is.
#[derive(Debug, Default)]
struct State {
    record: Option<Record>,
    running: bool,
    /// Why the last hand-off was given up (shown until another is asked for).
    given_up: Option<Record>,
}

/// One daemon's hand-off: asked for through the API, driven on a thread of its own.
#[derive(Debug)]
pub struct Handoff {
    ha: Arc<Ha>,
    etcd: EtcdConfig,
    dir: PathBuf,
    after: After,
    lease_ttl: Duration,
    /// Cancelled once the hand-off is done: the daemon stops serving.
    shutdown: CancellationToken,
    state: Mutex<State>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Handoff {
    pub fn new(
        ha: Arc<Ha>,
        etcd: EtcdConfig,
        dir: &Path,
        after: After,
        lease_ttl: Duration,
        shutdown: CancellationToken,
    ) -> Arc<Handoff> {
        Arc::new(Handoff {
            ha,
            etcd,
            dir: dir.to_path_buf(),
            after,
            lease_ttl,
            shutdown,
            state: Mutex::default(),
        })
    }

    /// The daemon's HA membership.
    pub fn ha(&self) -> &Arc<Ha> {
        &self.ha
    }

    /// The hand-off under way (or the last one given up), as the API shows it.
    pub fn view(&self) -> Option<Record> {
        let st = lock(&self.state);
        st.record.clone().or_else(|| st.given_up.clone())
    }

    /// Go on with a hand-off a killed daemon left unfinished (its record from [`load`]).
    pub fn resume(self: &Arc<Self>, record: Record) {
        info!(step = ?record.step, "hand-off under way before the restart: going on");
        self.ha.set_candidate(false);
        let mut st = lock(&self.state);
        st.record = Some(record);
        self.spawn(&mut st);
    }

    /// Start the hand-off (or return the one under way). Blocking: it asks the cluster.
    pub fn request(self: &Arc<Self>) -> Result<Record, HandoffError> {
        let mut st = lock(&self.state);
        if let Some(r) = st.record.clone() {
            self.spawn(&mut st);
            return Ok(r);
        }
        let (successors, endpoints) = check(&self.facts()?)?;
        let now = crate::daemon::now_ms();
        let r = Record {
            member: self.ha.me.name.clone(),
            step: HandoffStep::Resigning,
            successors,
            endpoints,
            leader: None,
            started_ms: now,
            updated_ms: now,
            error: None,
            given_up: false,
        };
        persist(&self.dir, &r)?;
        info!(successors = %r.successors.join(","), "hand-off: leaving the control plane");
        fault_exit_at(r.step);
        st.record = Some(r.clone());
        st.given_up = None;
        self.spawn(&mut st);
        Ok(r)
    }

    /// What [`check`] looks at, read from the cluster.
    pub fn facts(&self) -> Result<Facts, StoreError> {
        let me = self.ha.me.name.clone();
        let members = member::member_list(&self.ha.raw)?;
        let unhealthy = members
            .iter()
            .filter(|m| m.name != me)
            .filter_map(|m| {
                let url = m.client_urls.first()?;
                let why = member::healthy(&self.etcd, url).err()?;
                Some((m.name.clone(), why.to_string()))
            })
            .collect();
        let candidates = candidates(&self.ha.raw)?
            .into_iter()
            .map(|c| c.name)
            .filter(|n| *n != me)
            .collect();
        let mut images: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
        for (digest, holders) in super::images::replicas(&self.ha.raw)? {
            let e = images.entry(digest).or_default();
            for (daemon, replica) in holders {
                e.0 = replica.name;
                e.1.insert(daemon);
            }
        }
        Ok(Facts {
            me,
            members,
            unhealthy,
            candidates,
            images,
        })
    }

    fn spawn(self: &Arc<Self>, st: &mut State) {
        if st.running {
            return;
        }
        st.running = true;
        let me = self.clone();
        std::thread::Builder::new()
            .name("handoff".into())
            .spawn(move || me.drive())
            .expect("spawning the hand-off thread");
    }

    /// Run the steps from the persisted one to the end, retrying a failed step every second.
    fn drive(self: Arc<Self>) {
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            let Some(r) = lock(&self.state).record.clone() else {
                break;
            };
            let next = match r.step {
                HandoffStep::Resigning => self.resign(&r),
                HandoffStep::Removing => self.remove(&r).map(Some),
                HandoffStep::Done => {
                    self.finish(&r);
                    break;
                }
            };
            match next {
                Ok(Some(n)) => {
                    if let Err(e) = persist(&self.dir, &n) {
                        warn!(error = %fsutil::error_chain(&e), "hand-off: persisting the step");
                        std::thread::sleep(Duration::from_secs(1));
                        continue;
                    }
                    info!(step = ?n.step, leader = ?n.leader, "hand-off: step reached");
                    fault_exit_at(n.step);
                    lock(&self.state).record = Some(n);
                }
                Ok(None) => {
                    self.give_up(r);
                    break;
                }
                Err(e) => {
                    warn!(step = ?r.step, error = %e, "hand-off: step failed, retrying");
                    if let Some(cur) = lock(&self.state).record.as_mut() {
                        cur.error = Some(e);
                        cur.updated_ms = crate::daemon::now_ms();
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
        lock(&self.state).running = false;
    }

    /// Step 1: out of the election; `Ok(None)` when nobody took the lead in time.
    fn resign(&self, r: &Record) -> Result<Option<Record>, String> {
        self.ha.set_candidate(false);
        let limit = (self.lease_ttl * 5).max(Duration::from_secs(15));
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if let Some(l) = self.ha.leader().filter(|l| l.name != r.member) {
                return Ok(Some(Record {
                    step: HandoffStep::Removing,
                    leader: Some(l.name),
                    updated_ms: crate::daemon::now_ms(),
                    error: None,
                    ..r.clone()
                }));
            }
            if self.shutdown.is_cancelled() {
                return Err("the daemon is stopping".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(None)
    }

    /// Nobody took over: lead again, and say why the hand-off stopped.
    fn give_up(&self, r: Record) {
        let why = "no other daemon took the lead in time: this daemon campaigns again; \
                   ask again once the undercloud's daemons run";
        warn!(why, "hand-off given up");
        self.ha.set_candidate(true);
        if let Err(e) = std::fs::remove_file(self.dir.join(FILE)) {
            warn!(error = %e, "hand-off: removing its record");
        }
        let mut st = lock(&self.state);
        st.record = None;
        st.given_up = Some(Record {
            error: Some(why.into()),
            given_up: true,
            updated_ms: crate::daemon::now_ms(),
            ..r
        });
    }

    /// Step 2: this daemon's member out of the cluster, through the members that stay.
    fn remove(&self, r: &Record) -> Result<Record, String> {
        let stay = EtcdStore::connect(&EtcdConfig {
            endpoints: r.endpoints.clone(),
            ..self.etcd.clone()
        })
        .map_err(|e| e.to_string())?;
        let members = member::member_list(&stay).map_err(|e| e.to_string())?;
        if let Some(m) = members.iter().find(|m| m.name == r.member) {
            member::member_remove(&stay, m.id).map_err(|e| e.to_string())?;
            info!(member = %r.member, id = m.id, "hand-off: etcd member removed");
        }
        let done = Record {
            step: HandoffStep::Done,
            updated_ms: crate::daemon::now_ms(),
            error: None,
            ..r.clone()
        };
        // Its image copies go with it: nobody must try to fetch from it any more.
        super::images::forget(&stay, &r.member)
            .map_err(|e| format!("forgetting this daemon's image copies: {e}"))?;
        // For the daemons that stay (`GET /v1/ha/handoff` on any of them).
        let body = serde_json::to_vec(&done).expect("a hand-off record serialises");
        stay.put(TABLE, &r.member, body, Expect::Any)
            .map_err(|e| format!("recording the hand-off in the store: {e}"))?;
        Ok(done)
    }

    /// Step 3: stop answering; exit or power off.
    fn finish(&self, r: &Record) {
        info!(
            leader = ?r.leader,
            endpoints = %r.endpoints.join(","),
            "handed over: this daemon answers nothing any more"
        );
        // A moment for a client following the hand-off (`seed handoff`) to see it done: a poll
        // to a seed machine under load (TCG, a user-mode NIC) can take seconds.
        std::thread::sleep(LINGER);
        self.shutdown.cancel();
        if self.after == After::Poweroff {
            // The daemon's listeners close with the token above; the machine goes down.
            match std::process::Command::new("poweroff").status() {
                Ok(s) if s.success() => {}
                Ok(s) => warn!(status = %s, "poweroff failed"),
                Err(e) => warn!(error = %e, "running poweroff"),
            }
        }
    }
}

/// How long a daemon that handed over still answers `GET /v1/ha/handoff` (with `done`) before
/// it stops.
pub const LINGER: Duration = Duration::from_secs(10);

/// The hand-off a daemon that stays knows of (written by the one that left).
pub fn recorded(store: &dyn Store) -> Result<Vec<Record>, StoreError> {
    Ok(store
        .list(TABLE, "")?
        .into_iter()
        .filter_map(|(_, r)| serde_json::from_slice(&r.value).ok())
        .collect())
}

#[cfg(test)]
#[path = "handoff_tests.rs"]
mod tests;
