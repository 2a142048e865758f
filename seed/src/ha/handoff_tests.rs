//! The hand-off's checks (pure), its record on disk, and one whole hand-off on two real etcd
//! members with two daemons' HA memberships.

use super::*;
use crate::store::etcd::member::LocalCluster;

fn member(id: u64, name: &str, client: &str) -> MemberInfo {
    MemberInfo {
        id,
        name: name.into(),
        peer_urls: vec![format!("http://{name}:2380")],
        client_urls: if client.is_empty() {
            vec![]
        } else {
            vec![client.into()]
        },
        is_learner: false,
    }
}

/// A seed and three undercloud members, all healthy and campaigning, one image everywhere.
fn ready() -> Facts {
    let uc = ["uc0", "uc1", "uc2"];
    let mut members = vec![member(1, "seed", "http://seed:2379")];
    for (i, n) in uc.iter().enumerate() {
        members.push(member(2 + i as u64, n, &format!("http://{n}:2379")));
    }
    let holders: BTreeSet<String> = ["seed", "uc0", "uc1", "uc2"].map(String::from).into();
    Facts {
        me: "seed".into(),
        members,
        unhealthy: vec![],
        candidates: uc.map(String::from).into(),
        images: [("ab12".to_string(), ("tiny".to_string(), holders))].into(),
    }
}

#[test]
fn a_ready_cluster_hands_over_to_the_daemons_that_campaign() {
    let (successors, endpoints) = check(&ready()).unwrap();
    assert_eq!(successors, ["uc0", "uc1", "uc2"]);
    assert_eq!(
        endpoints,
        ["http://uc0:2379", "http://uc1:2379", "http://uc2:2379"]
    );
}

#[test]
fn each_missing_precondition_is_refused_by_name() {
    let mut f = ready();
    f.me = "seed-a".into();
    assert!(matches!(check(&f), Err(Refused::NotAMember { .. })));
    assert!(check(&f).unwrap_err().to_string().contains("seed, uc0"));

    let mut f = ready();
    f.members.truncate(1);
    assert_eq!(check(&f), Err(Refused::Alone));

    let mut f = ready();
    f.members.push(member(9, "", ""));
    assert_eq!(
        check(&f),
        Err(Refused::NotStarted {
            peer: "http://:2380".into()
        })
    );

    let mut f = ready();
    f.members[2].is_learner = true;
    assert_eq!(check(&f), Err(Refused::Learner { name: "uc1".into() }));

    let mut f = ready();
    f.unhealthy.push(("uc1".into(), "no answer".into()));
    assert!(check(&f).unwrap_err().to_string().contains("uc1"));

    let mut f = ready();
    f.candidates.clear();
    assert_eq!(check(&f), Err(Refused::NoSuccessor));

    let mut f = ready();
    f.images.get_mut("ab12").unwrap().1.remove("uc2");
    let e = check(&f).unwrap_err();
    assert_eq!(
        e,
        Refused::ImageMissing {
            daemon: "uc2".into(),
            image: "tiny".into(),
            digest: "ab12".into()
        }
    );
    // An image the seed itself does not hold is not the hand-off's business.
    let mut f = ready();
    f.images.get_mut("ab12").unwrap().1 = ["uc0".to_string()].into();
    assert!(check(&f).is_ok());
}

#[test]
fn the_record_survives_on_disk_and_a_broken_one_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(load(dir.path()).unwrap(), None);
    let r = Record {
        member: "seed".into(),
        step: HandoffStep::Removing,
        successors: vec!["uc0".into()],
        endpoints: vec!["http://uc0:2379".into()],
        leader: Some("uc0".into()),
        started_ms: 1,
        updated_ms: 2,
        error: None,
        given_up: false,
    };
    persist(dir.path(), &r).unwrap();
    assert_eq!(load(dir.path()).unwrap(), Some(r));
    std::fs::write(dir.path().join(FILE), b"{").unwrap();
    let e = load(dir.path()).unwrap_err();
    assert!(e.to_string().contains(FILE), "{e}");
}

use super::super::test_settings as settings;

fn until(what: &str, limit: Duration, f: impl Fn() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// m0 (the seed) leads a two-member cluster beside m1's daemon; its hand-off makes m1 lead,
/// takes m0 out of the membership and stops m0's daemon; m1's store records it.
#[test]
fn a_whole_handoff_on_real_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let c = LocalCluster::start(2, dir.path()).unwrap();
    let seed = Arc::new(Ha::start(&c.config(), &settings("m0"), "http://m0:6385").unwrap());
    until("the seed leads", Duration::from_secs(15), || {
        seed.is_leader()
    });
    let uc = Ha::start(&c.config(), &settings("m1"), "http://m1:6385").unwrap();
    until("m1 campaigns", Duration::from_secs(15), || {
        candidates(&seed.raw).is_ok_and(|c| c.len() == 2)
    });
    let state = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let h = Handoff::new(
        seed.clone(),
        c.config(),
        state.path(),
        After::Exit,
        Duration::from_secs(2),
        stop.clone(),
    );
    let r = h.request().unwrap();
    assert_eq!(r.step, HandoffStep::Resigning);
    assert_eq!(r.successors, ["m1"]);
    // Asked again: the same hand-off, not a second one.
    assert_eq!(h.request().unwrap().started_ms, r.started_ms);
    until("handed over", Duration::from_secs(30), || {
        stop.is_cancelled()
    });
    assert!(!seed.is_leader());
    until("m1 leads", Duration::from_secs(10), || uc.is_leader());
    let done = load(state.path()).unwrap().unwrap();
    assert_eq!(done.step, HandoffStep::Done);
    assert_eq!(done.leader.as_deref(), Some("m1"));
    let names: Vec<String> = member::member_list(&uc.raw)
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["m1"]);
    let recorded = recorded(&uc.raw).unwrap();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].member, "m0");
}

/// Nobody else campaigns: refused before the seed leaves the election.
#[test]
fn a_handoff_without_a_successor_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = LocalCluster::start(2, dir.path()).unwrap();
    let seed = Arc::new(Ha::start(&c.config(), &settings("m0"), "http://m0:6385").unwrap());
    until("the seed leads", Duration::from_secs(15), || {
        seed.is_leader()
    });
    let state = tempfile::tempdir().unwrap();
    let h = Handoff::new(
        seed.clone(),
        c.config(),
        state.path(),
        After::Exit,
        Duration::from_secs(2),
        CancellationToken::new(),
    );
    let e = h.request().unwrap_err();
    assert!(
        matches!(e, HandoffError::Refused(Refused::NoSuccessor)),
        "{e}"
    );
    assert!(seed.is_leader());
    assert_eq!(load(state.path()).unwrap(), None);
    assert_eq!(member::member_list(&seed.raw).unwrap().len(), 2);
}
