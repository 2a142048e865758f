//! The store against real etcd members (Debian's etcd from the offline cache) on 127.0.0.1.

use super::election::{Candidate, Election, ElectionConfig, Role};
use super::member::{self, ClusterState, LocalCluster, Member, MemberSpec};
use super::*;
use crate::store::{migrate, Expect, Op};
use std::time::Instant;

fn cluster(n: usize) -> (tempfile::TempDir, LocalCluster, EtcdStore) {
    let dir = tempfile::tempdir().unwrap();
    let c = LocalCluster::start(n, dir.path()).expect("etcd members start");
    let s = EtcdStore::connect(&c.config()).unwrap();
    (dir, c, s)
}

#[test]
fn store_suite_one_member() {
    let (_d, _c, s) = cluster(1);
    crate::store::suite::run(&s);
}

#[test]
fn store_suite_three_members() {
    let (_d, c, s) = cluster(3);
    crate::store::suite::run(&s);
    // Every member serves the same state (reads through each endpoint alone).
    for ep in c.endpoints() {
        let one = EtcdStore::connect(&EtcdConfig::new(vec![ep])).unwrap();
        assert_eq!(one.get("twice", "k").unwrap().unwrap().value, b"3");
    }
}

/// Records live at `<prefix>t/<table>/<key>` as plain bytes: a foreign client (etcdctl) reads
/// them; revisions are etcd's mod_revision; tables are listed; chunks are swept.
#[test]
fn layout_revisions_tables_and_chunks() {
    let (_d, c, s) = cluster(1);
    let r = s
        .put("nodes", "n1", b"{\"name\":\"n1\"}".to_vec(), Expect::Absent)
        .unwrap();
    s.put("stack-events", "demo/1", b"e".to_vec(), Expect::Absent)
        .unwrap();
    assert_eq!(s.tables().unwrap(), ["nodes", "stack-events"]);
    if let Some(ctl) = member::etcdctl_binary().unwrap() {
        let out = std::process::Command::new(ctl)
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &c.endpoints()[0],
                "get",
                "/seed/t/nodes/n1",
                "-w",
                "json",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["kvs"][0]["mod_revision"].as_u64(), Some(r), "{text}");
    }
    // A large value is chunked; overwriting it small leaves chunks for the sweep.
    let big = vec![42u8; 2_000_000];
    s.put("stacks", "big", big.clone(), Expect::Absent).unwrap();
    let raw = |s: &EtcdStore| {
        let (kvs, _) = s
            .range_all(
                "test",
                s.layout().chunks().into_bytes(),
                prefix_end(s.layout().chunks().as_bytes()),
                true,
            )
            .unwrap();
        kvs.len()
    };
    assert_eq!(raw(&s), 2, "two chunks of ≤ 1 MiB");
    let rev = s.get("stacks", "big").unwrap().unwrap().revision;
    s.put("stacks", "big", b"small".to_vec(), Expect::Revision(rev))
        .unwrap();
    assert_eq!(raw(&s), 2);
    assert_eq!(s.sweep_chunks().unwrap(), 1);
    assert_eq!(raw(&s), 0);
    assert_eq!(s.get("stacks", "big").unwrap().unwrap().value, b"small");
}

/// redb/memory → etcd → memory: every record, the same checksum.
#[test]
fn migrate_round_trip() {
    let (_d, _c, s) = cluster(1);
    let src = crate::store::memory::MemStore::new();
    for i in 0..300 {
        src.put("nodes", &format!("n{i:04}"), vec![1; 300], Expect::Absent)
            .unwrap();
    }
    src.put("stacks", "huge", vec![9; 3_000_000], Expect::Absent)
        .unwrap();
    src.put("agent-token", "key", vec![0xff; 32], Expect::Absent)
        .unwrap();
    let there = migrate::copy(&src, &s).unwrap();
    assert_eq!(there.records, 302);
    let back = crate::store::memory::MemStore::new();
    let again = migrate::copy(&s, &back).unwrap();
    assert_eq!(again.checksum, there.checksum);
    // Not twice into the same store.
    assert!(matches!(
        migrate::copy(&src, &s),
        Err(migrate::MigrateError::NotEmpty(_))
    ));
}

fn candidate(name: &str) -> ElectionConfig {
    ElectionConfig {
        me: Candidate {
            name: name.into(),
            api: format!("http://{name}.invalid:6385"),
        },
        ttl: Duration::from_secs(2),
    }
}

fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Two daemons campaign; one leads and its fenced writes commit; when its term ends (its
/// lease revoked behind its back, as when it is paused past the TTL) the other leads, and the
/// old leader's next write is rejected by etcd (counted), never committed.
#[test]
fn one_leader_and_fenced_writes() {
    let (_d, _c, s) = cluster(1);
    let (fa, fb) = (Arc::new(Fence::new()), Arc::new(Fence::new()));
    let (sa, sb) = (s.fenced(fa.clone()), s.fenced(fb.clone()));
    let a = Election::start(&s, candidate("a"), fa.clone());
    wait_for("a leads", Duration::from_secs(10), || a.is_leader());
    let b = Election::start(&s, candidate("b"), fb.clone());
    wait_for(
        "b sees a",
        Duration::from_secs(10),
        || matches!(b.role(), Role::Follower { leader: Some(ref l) } if l.name == "a"),
    );
    assert!(!b.is_leader());
    // A follower's write never leaves it.
    assert!(matches!(
        sb.put("nodes", "x", b"b".to_vec(), Expect::Any),
        Err(StoreError::NotLeader)
    ));
    assert_eq!(fb.refused_locally_count(), 1);
    sa.put("nodes", "x", b"a".to_vec(), Expect::Any).unwrap();

    // End a's term from outside: delete its leader key, as its lease's expiry would.
    let term = fa.term().unwrap();
    s.bridge()
        .call("test", {
            let k = term.key.clone();
            move |mut c| async move {
                c.delete(k, None)
                    .await
                    .map(drop)
                    .map_err(|e| bridge::etcd_err("t", e))
            }
        })
        .unwrap();
    // a still believes it leads (its fence holds the old term) for a moment: its write goes
    // to etcd and is rejected there.
    fa.set(Some(term.clone()));
    let e = sa
        .put("nodes", "x", b"stale".to_vec(), Expect::Any)
        .unwrap_err();
    assert!(matches!(e, StoreError::Fenced { .. }), "{e}");
    assert_eq!(fa.rejected_count(), 1);
    assert_eq!(s.get("nodes", "x").unwrap().unwrap().value, b"a");
    wait_for("b leads", Duration::from_secs(10), || b.is_leader());
    sb.put("nodes", "x", b"b".to_vec(), Expect::Any).unwrap();
    wait_for("a follows", Duration::from_secs(10), || {
        matches!(a.role(), Role::Follower { .. })
    });
    assert!(!a.is_leader());
    drop(b);
    wait_for("a leads again", Duration::from_secs(10), || a.is_leader());
}

/// Put `t/k = value` until it commits (bounded): a failure must only ever be unavailability.
fn put_once_available(s: &EtcdStore, what: &str, value: &[u8]) {
    wait_for(what, Duration::from_secs(20), || {
        match s.put("t", "k", value.to_vec(), Expect::Any) {
            Ok(_) => true,
            Err(e) => {
                assert!(e.is_unavailable(), "only unavailability is expected: {e}");
                false
            }
        }
    });
}

/// Three members: one killed, the store still commits (quorum of 2); two killed, calls fail
/// within the timeout and say why, the leader steps down; members back, everything resumes.
#[test]
fn quorum_lost_and_regained() {
    let (_d, mut c, _) = cluster(3);
    let mut cfg = c.config();
    cfg.timeout = Duration::from_secs(2);
    let s = EtcdStore::connect(&cfg).unwrap();
    let f = Arc::new(Fence::new());
    let fs = s.fenced(f.clone());
    let e = Election::start(&s, candidate("a"), f.clone());
    wait_for("a leads", Duration::from_secs(10), || e.is_leader());
    fs.put("t", "k", b"1".to_vec(), Expect::Any).unwrap();

    let spec2 = c.members[2].spec.clone();
    c.members[2].kill();
    // Two of three still commit. If the killed member led etcd's raft, the other two elect a
    // new raft leader first; under load that can outlast one 2 s call, so retry (bounded).
    put_once_available(&s, "a write commits with two members", b"2");
    assert_eq!(s.get("t", "k").unwrap().unwrap().value, b"2");

    let spec1 = c.members[1].spec.clone();
    c.members[1].kill();
    let err = s.put("t", "k", b"3".to_vec(), Expect::Any).unwrap_err();
    assert!(err.is_unavailable(), "{err}");
    wait_for("the leader steps down", Duration::from_secs(15), || {
        matches!(e.role(), Role::Unavailable { .. })
    });
    assert!(!e.is_leader());
    if let Role::Unavailable { why } = e.role() {
        assert!(!why.is_empty());
    }

    // Back: the same data directories, the same cluster.
    let bin = member::etcd_binary().unwrap();
    for spec in [spec1, spec2] {
        let log = c.dir.join(format!("{}.again.log", spec.name));
        let cmd = spec.command(&bin);
        c.members.push(Member::spawn(spec, cmd, &log).unwrap());
    }
    wait_for("a leads again", Duration::from_secs(30), || e.is_leader());
    // The client's connections to the killed members are found dead by HTTP/2 pings only
    // when a request goes out on one: a write may fail as unavailable once more.
    put_once_available(&fs, "the leader's write commits again", b"4");
    assert_eq!(s.get("t", "k").unwrap().unwrap().value, b"4");
}

/// One member grows to three through the membership API, then one leaves; the data stays.
#[test]
fn membership_grows_and_shrinks() {
    let (d, mut c, s) = cluster(1);
    s.put("nodes", "n", b"kept".to_vec(), Expect::Absent)
        .unwrap();
    let bin = member::etcd_binary().unwrap();
    for name in ["m1", "m2"] {
        let ports = member::free_ports(2);
        let mut spec = MemberSpec::new(
            name,
            &d.path().join(name),
            &format!("http://127.0.0.1:{}", ports[0]),
            &format!("http://127.0.0.1:{}", ports[1]),
        );
        spec.heartbeat_ms = 50;
        spec.election_ms = 500;
        // etcd refuses an add until every member has been connected for 5 s.
        let mut added = None;
        wait_for("the add is accepted", Duration::from_secs(30), || {
            added = member::member_add(&s, name, &spec.peer_url).ok();
            added.is_some()
        });
        let (_, cluster) = added.unwrap();
        spec.initial_cluster = cluster;
        spec.state = ClusterState::Existing;
        let log = d.path().join(format!("{name}.log"));
        let cmd = spec.command(&bin);
        c.members.push(Member::spawn(spec, cmd, &log).unwrap());
        // The next add waits until the new member has started.
        wait_for("the member joins", Duration::from_secs(30), || {
            member::member_list(&s).is_ok_and(|l| l.iter().all(|m| !m.name.is_empty()))
        });
    }
    let list = member::member_list(&s).unwrap();
    assert_eq!(list.len(), 3, "{list:?}");
    // The newest member alone serves the old data.
    let newest =
        EtcdStore::connect(&EtcdConfig::new(vec![c.members[2].spec.client_url.clone()])).unwrap();
    member::wait_ready(&newest, Duration::from_secs(10)).unwrap();
    assert_eq!(newest.get("nodes", "n").unwrap().unwrap().value, b"kept");

    // The first member leaves (as the seed does at hand-off); the other two go on.
    let first = list.iter().find(|m| m.name == "m0").unwrap().id;
    let rest = EtcdStore::connect(&EtcdConfig::new(
        c.members[1..]
            .iter()
            .map(|m| m.spec.client_url.clone())
            .collect(),
    ))
    .unwrap();
    wait_for("the removal is accepted", Duration::from_secs(30), || {
        member::member_remove(&rest, first).is_ok()
    });
    c.members[0].kill();
    member::wait_ready(&rest, Duration::from_secs(10)).unwrap();
    assert_eq!(member::member_list(&rest).unwrap().len(), 2);
    rest.put("nodes", "after", b"x".to_vec(), Expect::Absent)
        .unwrap();
    assert_eq!(rest.get("nodes", "n").unwrap().unwrap().value, b"kept");
}

#[test]
fn member_command_line() {
    let mut s = MemberSpec::new(
        "a",
        std::path::Path::new("/var/lib/etcd"),
        "http://10.0.0.1:2379",
        "http://10.0.0.1:2380",
    );
    s.initial_cluster
        .push(("b".into(), "http://10.0.0.2:2380".into()));
    s.state = ClusterState::Existing;
    let args = s.args();
    assert!(
        args.contains(&"--initial-cluster=a=http://10.0.0.1:2380,b=http://10.0.0.2:2380".into())
    );
    assert!(args.contains(&"--initial-cluster-state=existing".into()));
    assert!(args.contains(&"--data-dir=/var/lib/etcd".into()));
}

/// Large commits pass on the seed's members; over a cluster's op limit a commit is refused
/// before it is sent, with a clear error.
#[test]
fn too_many_ops_is_a_clear_error() {
    let (_d, c, s) = cluster(1);
    let ops = |n: usize| -> Vec<Op> {
        (0..n)
            .map(|i| Op::put("t", &format!("k{i}"), vec![], Expect::Absent))
            .collect()
    };
    // Thousands of small writes are one commit on the seed's members.
    s.commit(ops(3000)).unwrap();
    assert_eq!(s.list("t", "").unwrap().len(), 3000);
    s.commit(
        (0..3000)
            .map(|i| Op::delete("t", &format!("k{i}"), Expect::Any))
            .collect(),
    )
    .unwrap();
    // A cluster with etcd's default limit: the client refuses before sending.
    let mut cfg = c.config();
    cfg.max_txn_ops = 128;
    let s = EtcdStore::connect(&cfg).unwrap();
    let e = s.commit(ops(200)).unwrap_err();
    assert!(matches!(e, StoreError::TooLarge { .. }), "{e}");
    assert!(s.list("t", "").unwrap().is_empty());
}

/// Peer and client TLS with the seed's CA: a client with its certificate works, one without
/// is refused.
#[test]
fn tls_with_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let c = LocalCluster::start_with(3, dir.path(), true).expect("TLS members start");
    let s = EtcdStore::connect(&c.config()).unwrap();
    s.put("nodes", "n", b"over TLS".to_vec(), Expect::Absent)
        .unwrap();
    assert_eq!(s.get("nodes", "n").unwrap().unwrap().value, b"over TLS");
    let key = std::fs::metadata(&c.client_tls.as_ref().unwrap().key).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777,
        0o600
    );
    let mut anon = c.config();
    anon.tls = None;
    anon.timeout = Duration::from_secs(2);
    assert!(EtcdStore::connect(&anon)
        .and_then(|s| s.get("nodes", "n"))
        .is_err());
}
