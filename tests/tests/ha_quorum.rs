//! Quorum loss with daemons (issue 14): three `seed daemon`s in three network namespaces on one
//! LAN, an etcd member beside each, and four fake machines (`seed-fake-farm`: IPMI BMCs and
//! agents, see `tests::farm`) in a fourth namespace that reach the leader at the floating
//! address.
//!
//! - One etcd member killed (quorum kept): the daemons act — a node is inspected through the
//!   API of a daemon that may be a follower.
//! - A second member killed (quorum lost): every daemon stops acting and says why — API writes
//!   and reads are answered 503 naming the unavailable store (never a 500 or a hang), `/metrics`
//!   shows `seed_ha_store_available 0` and `seed_ha_leader 0` on all three, the logs say it; the
//!   refused inspect powers nothing on.
//! - Both members back: a leader exists again, the nodes are as they were (nothing corrupted, the
//!   refused inspect never happened), and the refused inspect, asked again, succeeds.
//!
//! Every wait is bounded; nothing asserts a duration.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use tests::farm::FarmSpec;
use tests::ha::{start_member, Api, Host, SeedLan, HTTP};
use tests::proc::Child;

const TOKEN: &str = "ha-quorum-token";
const N: usize = 4;

struct Seed<'a> {
    host: &'a Host,
    child: Child,
}

fn wait(what: &str, within: Duration, seeds: &[Seed], ok: impl FnMut() -> bool) {
    tests::daemon::wait(what, within, ok, || {
        seeds
            .iter()
            .map(|s| format!("---- {} ----\n{}\n", s.host.ns.name, s.child.output()))
            .collect()
    });
}

#[test]
fn ha_quorum_lost_and_back() {
    tests::require("curl");
    let lan = SeedLan::new();
    let (hosts, farm_host) = (&lan.hosts, &lan.farm);
    let nodes = lan.farm_nodes(N, |i| format!("q{i}"), "52:54:00:fc:00", 7100);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (specs, members, endpoints) = lan.start_etcd(d);
    let mut members: Vec<_> = members.into_iter().map(Some).collect();

    let seeds: Vec<Seed> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let sd: PathBuf = d.join(format!("seed{i}"));
            std::fs::create_dir_all(sd.join("http")).unwrap();
            let conf = sd.join("seed.toml");
            std::fs::write(&conf, lan.config(i, &endpoints, &sd, TOKEN, "", &nodes)).unwrap();
            Seed {
                host: h,
                child: tests::daemon::spawn(&h.ns, &format!("seed-{}", h.ns.name), &conf),
            }
        })
        .collect();
    let api = Api {
        from: farm_host,
        token: TOKEN,
    };
    let addr = |i: usize| hosts[i].ip;
    let leaders = |api: &Api| -> usize {
        (0..3)
            .filter(|&i| api.metric(addr(i), "seed_ha_leader") == Some(1))
            .count()
    };
    let long = Duration::from_secs(90);
    wait("one leader", long, &seeds, || leaders(&api) == 1);

    let inv = lan.enrollment(&nodes);
    let (code, body) = api.call(addr(0), "POST", "/v1/nodes", Some(&inv));
    assert_eq!(code, 201, "{body}");
    let spec = FarmSpec::new(format!("http://{}:{HTTP}", lan.float), nodes, 300);
    let (_farm, status) = tests::farm::spawn(
        farm_host.ns.cmd(env!("CARGO_BIN_EXE_seed-fake-farm")),
        &spec,
        d,
    );
    let inspect = |at: usize, node: &str| {
        api.call(addr(at), "POST", &format!("/v1/nodes/{node}/inspect"), None)
    };
    let state_of = |node: &str| -> Option<String> {
        (0..3).find_map(|i| api.states(addr(i))?.get(node).cloned())
    };
    // An inspect of `node` through daemon `at` is accepted (asked again until it is), and the
    // node ends available.
    let inspected = |at: usize, node: &str| {
        wait(&format!("{node} inspect accepted"), long, &seeds, || {
            let (code, _) = inspect(at, node);
            code == 202 || code == 200
        });
        wait(&format!("{node} available"), long, &seeds, || {
            state_of(node).as_deref() == Some("available")
        });
    };

    // 1. One member down (quorum kept): a node action through a daemon succeeds.
    members[0].take().unwrap().kill();
    inspected(1, "q0");
    eprintln!("one etcd member down: q0 inspected");
    let before: BTreeMap<String, String> = api.states(addr(2)).expect("nodes read");

    // 2. A second member down (quorum lost): every daemon stops and says why.
    members[1].take().unwrap().kill();
    wait("every daemon stops acting", long, &seeds, || {
        (0..3).all(|i| {
            api.metric(addr(i), "seed_ha_store_available") == Some(0)
                && api.metric(addr(i), "seed_ha_leader") == Some(0)
        })
    });
    let farm_before = tests::farm::read_status(&status);
    for (i, seed) in seeds.iter().enumerate() {
        let (code, body) = inspect(i, "q1");
        assert_eq!(code, 503, "seed{i}: an inspect without quorum: {body}");
        assert!(
            body.contains("store is unavailable") || body.contains("quorum"),
            "seed{i} says why: {body}"
        );
        let (code, body) = api.call(addr(i), "GET", "/v1/nodes", None);
        assert_eq!(code, 503, "seed{i}: a read without quorum: {body}");
        assert!(body.contains("unavailable"), "seed{i}: {body}");
        let log = seed.child.output();
        assert!(
            log.contains("not leading: etcd lease lost or unreachable"),
            "seed{i}'s log says why:\n{log}"
        );
    }
    eprintln!("two etcd members down: all three daemons refuse, 503, and say why");

    // 3. Both back (same data directories): a leader again, nothing changed, actions resume.
    for i in [0, 1] {
        members[i] = Some(start_member(&hosts[i], &specs[i], d));
    }
    wait("one leader after quorum returns", long, &seeds, || {
        leaders(&api) == 1
            && (0..3).all(|i| api.metric(addr(i), "seed_ha_store_available") == Some(1))
    });
    let after = api.states(addr(0)).expect("nodes read");
    assert_eq!(
        after, before,
        "the nodes are as they were before quorum was lost"
    );
    let farm_after = tests::farm::read_status(&status);
    let ons = |f: &BTreeMap<String, tests::farm::NodeStatus>| f.get("q1").map(|s| s.power_ons);
    assert_eq!(
        ons(&farm_after),
        ons(&farm_before),
        "the refused inspect powered nothing on"
    );
    inspected(2, "q1");
    eprintln!("quorum back: one leader, q1 inspected");
    drop(seeds);
}
