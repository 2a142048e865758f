//! `[store] member.join`: a daemon whose etcd member is not in the cluster yet has it added
//! through a running control-plane daemon's API before its first start — how an undercloud
//! node, configured only from its metadata, joins the seed's cluster (issue 15). The seed (or
//! any member) performs the member-add; this side asks for it and starts etcd with the answer.
//!
//! Resumable at every point: the answer is recorded beside the member's data
//! (`<data_dir>.join.json`) before etcd starts; a member already listed under this peer URL (a
//! crash after the add, before the record) is joined from the membership instead of added
//! twice; and once etcd has data of its own (`<data_dir>/member`) nothing is asked at all.
//! etcd takes one learner at a time, so a refusal is retried (bounded) while another node's
//! member catches up.

use super::client::Client;
use crate::store::etcd::member::{ClusterState, MemberSpec};
use ::api::ha::{MemberAdded, MemberRequest, MemberView, Membership};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a join keeps asking (the daemon exits after, and its supervisor starts it again).
const JOIN_WITHIN: Duration = Duration::from_secs(300);
const RETRY_EVERY: Duration = Duration::from_secs(3);

/// What a join got, kept so that a restart starts etcd the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    /// The daemon that added the member.
    via: String,
    initial_cluster: Vec<(String, String)>,
}

fn record_path(spec: &MemberSpec) -> PathBuf {
    spec.data_dir.with_extension("join.json")
}

/// Fill `spec`'s initial cluster and state from the join (no-op without `join`).
pub fn resolve(spec: &mut MemberSpec, token: &str) -> Result<()> {
    let Some(api) = spec.join.clone() else {
        return Ok(());
    };
    spec.state = ClusterState::Existing;
    if spec.data_dir.join("member").is_dir() {
        tracing::info!(data = %spec.data_dir.display(), "etcd member has data: joined before");
        return Ok(());
    }
    let path = record_path(spec);
    let record = match read_record(&path)? {
        Some(r) => r,
        None => {
            let client = Client::new(&api, Some(token), None)?;
            let r = ask(&client, spec, JOIN_WITHIN)?;
            fsutil::write(&path, &serde_json::to_vec_pretty(&r)?)
                .with_context(|| format!("recording the join in {}", path.display()))?;
            r
        }
    };
    tracing::info!(via = %record.via, cluster = ?record.initial_cluster, "etcd member joins the control plane");
    spec.initial_cluster = record.initial_cluster;
    Ok(())
}

fn read_record(path: &Path) -> Result<Option<Record>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map(Some).with_context(|| {
            format!(
                "{}: not a join record (remove it to join again)",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Ask `client`'s daemon to add the member (or find it added), retrying refusals until `within`.
fn ask(client: &Client, spec: &MemberSpec, within: Duration) -> Result<Record> {
    let t0 = Instant::now();
    loop {
        match ask_once(client, spec) {
            Ok(r) => return Ok(r),
            Err(e) if t0.elapsed() + RETRY_EVERY < within => {
                tracing::warn!(via = %client.base(), error = format!("{e:#}"), "joining the control plane: trying again");
                std::thread::sleep(RETRY_EVERY);
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "joining the control plane through {} for {} s",
                        client.base(),
                        within.as_secs()
                    )
                })
            }
        }
    }
}

fn ask_once(client: &Client, spec: &MemberSpec) -> Result<Record> {
    let via = client.base().to_string();
    let m: Membership = client.get("/v1/ha/members")?;
    if let Some(cluster) = listed(&m, spec)? {
        return Ok(Record {
            via,
            initial_cluster: cluster,
        });
    }
    let req = MemberRequest {
        name: spec.name.clone(),
        peer_url: spec.peer_url.clone(),
    };
    let added: MemberAdded = client.post("/v1/ha/members", &req)?;
    Ok(Record {
        via,
        initial_cluster: parse_cluster(&added.initial_cluster)?,
    })
}

/// The initial cluster from a membership that already lists this member's peer URL (added,
/// not started: its name is still empty), or `None` when it is not there.
fn listed(m: &Membership, spec: &MemberSpec) -> Result<Option<Vec<(String, String)>>> {
    let ours = spec.peer_url.trim_end_matches('/');
    let is_ours = |v: &MemberView| v.peer_urls.iter().any(|u| u.trim_end_matches('/') == ours);
    let Some(mine) = m.members.iter().find(|v| is_ours(v)) else {
        return Ok(None);
    };
    if !mine.name.is_empty() && mine.name != spec.name {
        bail!(
            "{} is etcd member {:?} already, not {:?}: remove it first (seed ha remove)",
            spec.peer_url,
            mine.name,
            spec.name
        );
    }
    let mut cluster = Vec::new();
    for v in &m.members {
        let name = if is_ours(v) { &spec.name } else { &v.name };
        cluster.extend(v.peer_urls.iter().map(|u| (name.clone(), u.clone())));
    }
    Ok(Some(cluster))
}

/// `name=url,…` as etcd's member-add answer gives it (names may be empty for members not
/// started yet).
fn parse_cluster(s: &str) -> Result<Vec<(String, String)>> {
    s.split(',')
        .map(|kv| {
            kv.split_once('=')
                .map(|(n, u)| (n.to_string(), u.to_string()))
                .with_context(|| format!("initial cluster {s:?}: expected name=URL,…"))
        })
        .collect::<Result<Vec<_>>>()
        .and_then(|c| {
            if c.is_empty() {
                bail!("an empty initial cluster")
            }
            Ok(c)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str, peer: &str) -> MemberView {
        MemberView {
            id: "1".into(),
            name: name.into(),
            peer_urls: vec![peer.into()],
            client_urls: vec![],
            learner: false,
        }
    }

    fn spec() -> MemberSpec {
        let mut s = MemberSpec::new(
            "uc1",
            Path::new("/x/etcd"),
            "http://10.0.0.2:2379",
            "http://10.0.0.2:2380",
        );
        s.join = Some("http://10.0.0.1:6385".into());
        s
    }

    #[test]
    fn a_member_added_before_a_crash_is_joined_from_the_membership() {
        let m = Membership {
            me: "seed".into(),
            members: vec![
                view("seed", "http://10.0.0.1:2380"),
                view("", "http://10.0.0.2:2380/"),
            ],
            daemons: vec![],
        };
        assert_eq!(
            listed(&m, &spec()).unwrap().unwrap(),
            vec![
                ("seed".to_string(), "http://10.0.0.1:2380".to_string()),
                ("uc1".to_string(), "http://10.0.0.2:2380/".to_string()),
            ]
        );
        let absent = Membership {
            members: vec![view("seed", "http://10.0.0.1:2380")],
            ..m.clone()
        };
        assert_eq!(listed(&absent, &spec()).unwrap(), None);
        let taken = Membership {
            members: vec![view("other", "http://10.0.0.2:2380")],
            ..m.clone()
        };
        assert!(listed(&taken, &spec()).is_err());
    }

    #[test]
    fn the_answer_of_a_member_add_is_read_and_a_recorded_join_is_reused() {
        assert_eq!(
            parse_cluster("seed=http://a:2380,uc1=http://b:2380").unwrap(),
            vec![
                ("seed".to_string(), "http://a:2380".to_string()),
                ("uc1".to_string(), "http://b:2380".to_string())
            ]
        );
        assert!(parse_cluster("nonsense").is_err());

        let d = tempfile::tempdir().unwrap();
        let mut s = spec();
        s.data_dir = d.path().join("etcd");
        let r = Record {
            via: "http://10.0.0.1:6385".into(),
            initial_cluster: vec![("seed".into(), "http://a:2380".into())],
        };
        std::fs::write(record_path(&s), serde_json::to_vec(&r).unwrap()).unwrap();
        // No daemon at the join URL: the record alone must be enough.
        resolve(&mut s, "token-not-used-here").unwrap();
        assert_eq!(s.state, ClusterState::Existing);
        assert_eq!(s.initial_cluster, r.initial_cluster);
    }
}
