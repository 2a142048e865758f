//! The HA control plane on a LAN (issue 14, store and election level): three hosts in three
//! network namespaces on one bridge, an etcd member on each (Debian's etcd from the offline
//! cache), and on each a candidate with the seed's election and fenced store whose sockets live
//! in that host's namespace. The leader writes a `beat` (its name and a sequence number) every
//! 20 ms through its fenced store, as the daemon's leader-only work will.
//!
//! - The leader's cable is pulled at the switch: another candidate leads; the cut-off one stops
//!   (role `unavailable`, with the reason) and never writes again; a write carrying its old
//!   term, sent after the new leader took over, is refused by etcd (fenced, counted).
//! - The cable back: the old leader follows the new one.
//! - One etcd member killed: quorum kept, the leader goes on writing.
//! - A second member killed: quorum lost, every candidate stops acting and says why; both
//!   members back: a leader writes again.
//!
//! Every wait is bounded; nothing asserts a duration (`cargo xtask bench failover` measures).

use seed::ha::Ha;
use seed::store::config::HaSettings;
use seed::store::etcd::election::Role;
use seed::store::etcd::{member, EtcdConfig, EtcdStore, Fence};
use seed::store::{Expect, Store};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tests::ha::{etcd_specs, in_netns, start_member, Switch};

/// A beat record: `<name> <seq>`.
#[derive(Debug, PartialEq)]
struct Beat {
    name: String,
    seq: u64,
}

impl Beat {
    fn bytes(&self) -> Vec<u8> {
        format!("{} {}", self.name, self.seq).into_bytes()
    }
    fn parse(b: &[u8]) -> Option<Beat> {
        let text = String::from_utf8_lossy(b);
        let (name, seq) = text.split_once(' ')?;
        Some(Beat {
            name: name.into(),
            seq: seq.parse().ok()?,
        })
    }
}

fn wait(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < within, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn beat(s: &EtcdStore) -> Option<Beat> {
    s.get("ha-test", "beat")
        .ok()
        .flatten()
        .and_then(|r| Beat::parse(&r.value))
}

#[test]
fn ha_control_plane_partition_and_quorum() {
    let sw = Switch::new();
    let hosts = [
        sw.attach("h0", 11),
        sw.attach("h1", 12),
        sw.attach("h2", 13),
    ];
    let obs = sw.attach("obs", 20);
    let dir = tempfile::tempdir().unwrap();
    let specs = etcd_specs(&hosts.iter().collect::<Vec<_>>(), dir.path());
    let mut members: Vec<_> = hosts
        .iter()
        .zip(&specs)
        .map(|(h, s)| Some(start_member(h, s, dir.path())))
        .collect();
    let endpoints: Vec<String> = specs.iter().map(|s| s.client_url.clone()).collect();
    let mut cfg = EtcdConfig::new(endpoints);
    cfg.timeout = Duration::from_secs(2);

    let c = cfg.clone();
    let watcher = Arc::new(in_netns(&obs.ns, move || EtcdStore::connect(&c).unwrap()));
    member::wait_ready(&watcher, Duration::from_secs(30)).expect("the cluster takes writes");

    // Three candidates, each in its host's namespace, each writing beats while it leads.
    let stop = Arc::new(AtomicBool::new(false));
    let mut cands: Vec<Arc<Ha>> = vec![];
    for (i, h) in hosts.iter().enumerate() {
        let c = cfg.clone();
        let ha = Arc::new(in_netns(&h.ns, move || {
            let s = HaSettings {
                name: format!("c{i}"),
                lease_ttl: Duration::from_secs(2),
                advertise: None,
                floating: None,
                after_handoff: Default::default(),
                member: None,
            };
            Ha::start(&c, &s, &format!("http://c{i}.invalid:6385")).unwrap()
        }));
        let (ha2, stop2) = (ha.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seq = 0;
            let until = Instant::now() + Duration::from_secs(300);
            while !stop2.load(Ordering::Relaxed) && Instant::now() < until {
                if ha2.is_leader() {
                    seq += 1;
                    let b = Beat {
                        name: ha2.me.name.clone(),
                        seq,
                    };
                    let _ = ha2.store.put("ha-test", "beat", b.bytes(), Expect::Any);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        cands.push(ha);
    }
    let idx = |name: &str| name[1..].parse::<usize>().unwrap();
    let long = Duration::from_secs(30);

    // A leader writes.
    let mut first = String::new();
    wait("a first leader's beat", long, || {
        beat(&watcher).map(|b| first = b.name).is_some()
    });
    let l1 = idx(&first);
    let old_term = cands[l1].fence.term().expect("the leader holds a term");

    // Its cable pulled: another one leads, the cut-off one stops and says why.
    sw.link(&hosts[l1], false);
    let mut second = String::new();
    wait("a new leader after the cut", long, || {
        beat(&watcher)
            .filter(|b| b.name != first)
            .map(|b| second = b.name)
            .is_some()
    });
    wait("the cut-off leader stops", long, || {
        matches!(cands[l1].role(), Role::Unavailable { .. })
    });
    assert!(!cands[l1].is_leader());
    let why = cands[l1].status().why.unwrap_or_default();
    assert!(
        !why.is_empty(),
        "the cut-off candidate says why it does not act"
    );
    for _ in 0..20 {
        assert_ne!(beat(&watcher).map(|b| b.name), Some(first.clone()));
        std::thread::sleep(Duration::from_millis(50));
    }

    // Cable back: it follows the new leader; a write with its old term is fenced off.
    sw.link(&hosts[l1], true);
    let t = Instant::now();
    loop {
        let r = cands[l1].role();
        if matches!(r, Role::Follower { leader: Some(ref l) } if l.name == second) {
            break;
        }
        assert!(
            t.elapsed() < long,
            "the old leader follows {second}: still {r:?} after {:?}",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let stale = Arc::new(Fence::new());
    stale.set(Some(old_term));
    let zombie = cands[l1].raw.fenced(stale.clone());
    let e = zombie
        .put("ha-test", "beat", b"zombie 0".to_vec(), Expect::Any)
        .unwrap_err();
    assert!(e.is_fenced(), "{e}");
    assert_eq!(stale.rejected_count(), 1, "etcd refused it: counted");
    assert_eq!(beat(&watcher).unwrap().name, second);

    // One member down (not the leader's host): quorum kept, beats go on.
    let l2 = idx(&second);
    let others: Vec<usize> = (0..3).filter(|&i| i != l2).collect();
    members[others[0]].take().unwrap().kill();
    // The watcher's own member may be the one killed: its reads fail over to another.
    let mut seq = 0;
    wait("a beat read with one member down", long, || {
        beat(&watcher).map(|b| seq = b.seq).is_some()
    });
    wait("beats with one member down", long, || {
        beat(&watcher).is_some_and(|b| b.seq >= seq + 10)
    });

    // Two down: nobody acts, each says why.
    members[others[1]].take().unwrap().kill();
    wait("every candidate stops acting", long, || {
        cands
            .iter()
            .all(|c| matches!(c.role(), Role::Unavailable { .. }) && !c.is_leader())
    });
    for c in &cands {
        assert!(c.status().why.is_some_and(|w| !w.is_empty()));
    }

    // Both back (same data directories): a leader writes again.
    for &i in &others {
        members[i] = Some(start_member(&hosts[i], &specs[i], dir.path()));
    }
    let before = beat(&watcher).map(|b| (b.name, b.seq));
    wait(
        "beats after quorum returns",
        Duration::from_secs(60),
        || beat(&watcher).is_some_and(|b| Some((b.name.clone(), b.seq)) != before),
    );
    let leaders = cands.iter().filter(|c| c.is_leader()).count();
    assert!(leaders <= 1, "{leaders} leaders at once");
    let fenced: u64 = cands.iter().map(|c| c.status().fenced_rejected).sum();
    let refused: u64 = cands.iter().map(|c| c.status().refused_locally).sum();
    eprintln!(
        "ha_control_plane: leaders {first} → {second}; fenced by etcd: {} (stale term) + {fenced} \
         (candidates); refused locally: {refused}",
        stale.rejected_count()
    );
    stop.store(true, Ordering::Relaxed);
}
