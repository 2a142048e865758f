//! The control plane's membership through the API: the etcd members and the daemons that
//! campaign (`GET /v1/ha/members`), a member added before it starts (`POST`) and a dead one
//! removed (`DELETE`). That is how the undercloud joins the seed's one-member cluster, one
//! member at a time, and how a lost member is replaced.
//!
//! A member is added as a raft **learner** and promoted to a voter by the leading daemon
//! ([`spawn_promoter`]) once it has started and caught up: a member added and never started
//! (a wrong URL, a dead machine) then costs no quorum, where a voter added to the seed's
//! one-member cluster would stop it.

use super::Ha;
use crate::store::etcd::election::candidates;
use crate::store::etcd::member::{self, MemberInfo};
use crate::store::StoreError;
use ::api::ha::{DaemonView, MemberAdded, MemberRequest, MemberView, Membership};

/// Why a membership change was refused.
#[derive(Debug, thiserror::Error)]
pub enum MemberChangeError {
    #[error("member name {0:?}: letters, digits, '-', '_', '.'; 1 to 63")]
    BadName(String),
    #[error("peer URL {0:?}: expected http://HOST:PORT or https://HOST:PORT")]
    BadUrl(String),
    #[error("{0} is already a member (name or peer URL)")]
    Exists(String),
    #[error("no member named {0}")]
    NotFound(String),
    #[error("{0} is this daemon's own member: hand over instead (POST /v1/ha/handoff)")]
    Myself(String),
    #[error("etcd refused the change: {0}")]
    Refused(String),
    #[error("store")]
    Store(#[from] StoreError),
}

fn view(m: &MemberInfo) -> MemberView {
    MemberView {
        id: format!("{:x}", m.id),
        name: m.name.clone(),
        peer_urls: m.peer_urls.clone(),
        client_urls: m.client_urls.clone(),
        learner: m.is_learner,
    }
}

/// The members and the daemons, as `ha` sees them.
pub fn membership(ha: &Ha) -> Result<Membership, StoreError> {
    let leader = ha.leader().map(|l| l.name);
    let daemons = candidates(&ha.raw)?
        .into_iter()
        .map(|c| DaemonView {
            leader: leader.as_deref() == Some(c.name.as_str()),
            name: c.name,
            api: c.api,
        })
        .collect();
    Ok(Membership {
        me: ha.me.name.clone(),
        members: member::member_list(&ha.raw)?.iter().map(view).collect(),
        daemons,
    })
}

/// Add a member that will answer at `req.peer_url`; how to start it.
pub fn add(ha: &Ha, req: &MemberRequest) -> Result<MemberAdded, MemberChangeError> {
    if !crate::store::config::valid_name(&req.name) {
        return Err(MemberChangeError::BadName(req.name.clone()));
    }
    let url = req.peer_url.trim_end_matches('/');
    let host = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    if !host.is_some_and(|h| {
        h.rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
    }) {
        return Err(MemberChangeError::BadUrl(req.peer_url.clone()));
    }
    let members = member::member_list(&ha.raw)?;
    if members
        .iter()
        .any(|m| m.name == req.name || m.peer_urls.iter().any(|u| u == url))
    {
        return Err(MemberChangeError::Exists(req.name.clone()));
    }
    let (id, cluster) = member::member_add_learner(&ha.raw, &req.name, url)
        .map_err(|e| MemberChangeError::Refused(e.to_string()))?;
    tracing::info!(name = %req.name, peer_url = %url, id = format!("{id:x}"), "etcd member added (learner until it catches up)");
    Ok(MemberAdded {
        id: format!("{id:x}"),
        name: req.name.clone(),
        initial_cluster: cluster
            .iter()
            .map(|(n, u)| format!("{n}={u}"))
            .collect::<Vec<_>>()
            .join(","),
        initial_cluster_state: "existing".into(),
    })
}

/// Remove the member named `name` (dead, or replaced); never this daemon's own.
pub fn remove(ha: &Ha, name: &str) -> Result<MemberView, MemberChangeError> {
    if name == ha.me.name {
        return Err(MemberChangeError::Myself(name.into()));
    }
    let members = member::member_list(&ha.raw)?;
    let m = members
        .iter()
        .find(|m| m.name == name || format!("{:x}", m.id) == name)
        .ok_or_else(|| MemberChangeError::NotFound(name.into()))?;
    member::member_remove(&ha.raw, m.id).map_err(|e| MemberChangeError::Refused(e.to_string()))?;
    super::images::forget(&ha.raw, &m.name)?;
    tracing::info!(name = %m.name, id = format!("{:x}", m.id), "etcd member removed");
    Ok(view(m))
}

/// Promote every started learner that has caught up; the names promoted.
pub fn promote_ready(ha: &Ha) -> Result<Vec<String>, StoreError> {
    let mut done = vec![];
    for m in member::member_list(&ha.raw)? {
        if !m.is_learner || m.name.is_empty() {
            continue;
        }
        // Refused while the learner is behind: next round.
        if member::member_promote(&ha.raw, m.id).is_ok() {
            tracing::info!(name = %m.name, id = format!("{:x}", m.id), "etcd learner promoted to voter");
            done.push(m.name);
        }
    }
    Ok(done)
}

/// Remove the members whose machine the control plane has taken back: a member named after a
/// node of the inventory that is not deployed any more (released by a stack — `stack replace`
/// of a dead member — or undeployed: its disks are wiped, its etcd member will never answer
/// again) and whose daemon no longer campaigns. Until then the dead member counts in the quorum
/// and a three-member control plane that lost one could not lose another. Level-triggered:
/// every round looks again. Names of no node (the seed's own member, an operator's) and
/// members whose daemon is alive are never touched; `DELETE /v1/ha/members/NAME` is for those.
/// The names removed.
pub fn retire_taken_back(ha: &Ha) -> Result<Vec<String>, StoreError> {
    use crate::lifecycle::State;
    let mut taken_back = vec![];
    for m in member::member_list(&ha.raw)? {
        if m.name.is_empty() || m.name == ha.me.name {
            continue;
        }
        let Some((node, _)) = crate::store::nodes::get(&ha.raw, &m.name)? else {
            continue;
        };
        let deployed = matches!(
            node.lifecycle.state,
            State::Active | State::Deploying | State::DeployFailed { .. }
        );
        if !deployed {
            taken_back.push((m, node));
        }
    }
    // Who campaigns is read only when there is something to retire (every round, usually not).
    if taken_back.is_empty() {
        return Ok(vec![]);
    }
    let alive: Vec<String> = candidates(&ha.raw)?.into_iter().map(|c| c.name).collect();
    let mut done = vec![];
    for (m, node) in taken_back {
        if alive.contains(&m.name) {
            continue;
        }
        match remove(ha, &m.name) {
            Ok(_) => {
                tracing::warn!(name = %m.name, state = %node.lifecycle.state, "etcd member of a machine taken back removed");
                done.push(m.name);
            }
            Err(e) => {
                tracing::warn!(name = %m.name, error = %e, "removing the etcd member of a machine taken back")
            }
        }
    }
    Ok(done)
}

/// While this daemon leads, promote learners and retire the members of machines taken back
/// ([`retire_taken_back`]) every `every` (until `stop`).
pub fn spawn_promoter(
    ha: std::sync::Arc<Ha>,
    every: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("etcd-learners".into())
        .spawn(move || {
            while !stop.is_cancelled() {
                if ha.is_leader() {
                    if let Err(e) = promote_ready(&ha) {
                        tracing::debug!(error = %e, "promoting etcd learners");
                    }
                    if let Err(e) = retire_taken_back(&ha) {
                        tracing::debug!(error = %e, "retiring etcd members");
                    }
                }
                std::thread::sleep(every);
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::etcd::member::LocalCluster;
    use std::time::Duration;

    /// On a real one-member cluster: the membership lists it and this daemon; bad names, bad
    /// URLs, a taken peer URL and this daemon's own member are refused; a member added is
    /// listed (not started) with the initial cluster to start it, and removed again.
    #[test]
    fn add_list_refuse_and_remove_on_real_etcd() {
        let dir = tempfile::tempdir().unwrap();
        let c = LocalCluster::start(1, dir.path()).unwrap();
        let ha = Ha::start(
            &c.config(),
            &super::super::test_settings("m0"),
            "http://m0:6385",
        )
        .unwrap();
        let t = std::time::Instant::now();
        while !ha.is_leader() {
            assert!(t.elapsed() < Duration::from_secs(15), "m0 leads");
            std::thread::sleep(Duration::from_millis(50));
        }
        let m = membership(&ha).unwrap();
        assert_eq!(m.members.len(), 1);
        assert_eq!(m.members[0].name, "m0");
        assert_eq!(m.daemons.len(), 1);
        assert!(m.daemons[0].leader);

        let req = |name: &str, url: &str| MemberRequest {
            name: name.into(),
            peer_url: url.into(),
        };
        let bad = [
            req("", "http://127.0.0.1:1"),
            req("a b", "http://127.0.0.1:1"),
            req("m1", "127.0.0.1:1"),
            req("m1", "http://127.0.0.1"),
            req("m1", "http://:80"),
        ];
        for r in &bad {
            assert!(matches!(
                add(&ha, r),
                Err(MemberChangeError::BadName(_) | MemberChangeError::BadUrl(_))
            ));
        }
        let own_peer = c.members[0].spec.peer_url.clone();
        assert!(matches!(
            add(&ha, &req("m1", &own_peer)),
            Err(MemberChangeError::Exists(_))
        ));
        assert!(matches!(
            remove(&ha, "m0"),
            Err(MemberChangeError::Myself(_))
        ));
        assert!(matches!(
            remove(&ha, "nope"),
            Err(MemberChangeError::NotFound(_))
        ));

        let a = add(&ha, &req("m1", "http://127.0.0.1:1")).unwrap();
        assert_eq!(a.initial_cluster_state, "existing");
        // etcd lists members in no particular order.
        let mut cluster: Vec<&str> = a.initial_cluster.split(',').collect();
        cluster.sort();
        assert_eq!(
            cluster,
            [format!("m0={own_peer}").as_str(), "m1=http://127.0.0.1:1"]
        );
        let m = membership(&ha).unwrap();
        assert_eq!(m.members.len(), 2);
        // Not started: no name, no client URL yet; removed by its id.
        // Not started: no name, no client URL yet, a learner (the quorum is still m0's alone:
        // the membership answers).
        let new = m.members.iter().find(|v| v.id == a.id).unwrap();
        assert!(new.name.is_empty() && new.client_urls.is_empty() && new.learner);
        assert!(promote_ready(&ha).unwrap().is_empty());
        remove(&ha, &a.id).unwrap();
        assert_eq!(membership(&ha).unwrap().members.len(), 1);
    }

    /// On a real three-member cluster: m1's machine is being cleaned (taken back) and m2's is
    /// active: the leader m0 retires m1's member only, and nothing while m1's daemon campaigns.
    #[test]
    fn retires_the_member_of_a_machine_taken_back_only() {
        use crate::daemon::test_support::fake_node;
        use crate::lifecycle::State;
        let dir = tempfile::tempdir().unwrap();
        let c = LocalCluster::start(3, dir.path()).unwrap();
        let settings = super::super::test_settings;
        let ha = Ha::start(&c.config(), &settings("m0"), "http://m0:6385").unwrap();
        let t = std::time::Instant::now();
        while !ha.is_leader() {
            assert!(t.elapsed() < Duration::from_secs(15), "m0 leads");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut cleaned = fake_node("m1", "52:54:00:00:00:01");
        cleaned.lifecycle.state = State::Cleaning;
        let mut active = fake_node("m2", "52:54:00:00:00:02");
        active.lifecycle.state = State::Active;
        crate::store::nodes::create(&ha.raw, &[cleaned, active]).unwrap();

        // m1's daemon still campaigns (its machine not off yet): kept.
        let m1 = Ha::start(&c.config(), &settings("m1"), "http://m1:6385").unwrap();
        let t = std::time::Instant::now();
        while !membership(&ha)
            .unwrap()
            .daemons
            .iter()
            .any(|d| d.name == "m1")
        {
            assert!(t.elapsed() < Duration::from_secs(15), "m1 campaigns");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(retire_taken_back(&ha).unwrap().is_empty());
        drop(m1);
        let t = std::time::Instant::now();
        let retired = loop {
            let r = retire_taken_back(&ha).unwrap();
            if !r.is_empty() {
                break r;
            }
            assert!(t.elapsed() < Duration::from_secs(30), "m1's campaign ends");
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(retired, ["m1"]);
        let mut left: Vec<String> = membership(&ha)
            .unwrap()
            .members
            .into_iter()
            .map(|m| m.name)
            .collect();
        left.sort();
        assert_eq!(left, ["m0", "m2"]);
        assert!(retire_taken_back(&ha).unwrap().is_empty());
    }
}
