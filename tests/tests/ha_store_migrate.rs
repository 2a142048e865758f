//! `seed store migrate` end to end (issue 14): the real binary moves a single seed's redb store
//! (nodes enrolled by `seed node import`, a stack with its events, the agent-token key, many
//! records just under the etcd store's chunking size, one record larger than an etcd request)
//! and its DHCP lease file into a real etcd (one member, Debian's etcd from the offline cache,
//! on 127.0.0.1), then back into a new redb file. Both directions print equal checksums and the
//! final file holds exactly the records of the first. Refusals: a non-empty destination without
//! `--force`, a store file another process holds, an empty source.

use seed::store::etcd::member::LocalCluster;
use seed::store::redb::RedbStore;
use seed::store::{Expect, Store};
use std::path::Path;
use std::process::{Command, Output};

const NODES_YAML: &str = r#"
nodes:
  - name: ctrl-0
    mac: ["52:54:00:20:00:01"]
    pm_type: ipmi
    pm_addr: 127.0.0.1
    pm_port: 6230
    pm_user: admin
    pm_password: a-bmc-password
    capabilities: "profile:control"
    memory: 8192
    disk: 40
  - name: compute-0
    mac: ["52:54:00:20:00:02"]
    pm_type: ipmi
    pm_addr: 127.0.0.1
    pm_port: 6231
    pm_user: admin
    pm_password: a-bmc-password
    capabilities: "profile:compute"
    memory: 4096
"#;

fn seed(args: &[&str]) -> Output {
    Command::new(tests::seed_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("SEED_API")
        .output()
        .expect("running seed")
}

/// The arguments of `seed store migrate --from FROM --to TO EXTRA…`.
fn migrate<'a>(from: &'a str, to: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    [&["store", "migrate", "--from", from, "--to", to][..], extra].concat()
}

fn ok(args: &[&str]) -> String {
    let o = seed(args);
    assert!(
        o.status.success(),
        "seed {args:?} failed:\n{}",
        tests::printed(&o)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn refused(args: &[&str]) -> String {
    let o = seed(args);
    assert!(
        !o.status.success(),
        "seed {args:?} succeeded:\n{}",
        tests::printed(&o)
    );
    tests::printed(&o)
}

/// The sums a migration printed (`sha256 …` lines: source, destination).
fn sums(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("sha256 "))
        .map(String::from)
        .collect()
}

/// Every (table, key, value) of a store.
fn records(s: &dyn Store) -> Vec<(String, String, Vec<u8>)> {
    let mut out = vec![];
    for t in s.tables().unwrap() {
        for (k, r) in s.list(&t, "").unwrap() {
            out.push((t.clone(), k, r.value));
        }
    }
    out
}

fn fill(dir: &Path) -> std::path::PathBuf {
    let file = dir.join("single.redb");
    let yaml = dir.join("nodes.yaml");
    std::fs::write(&yaml, NODES_YAML).unwrap();
    let f = file.to_str().unwrap();
    ok(&["node", "--store", f, "import", yaml.to_str().unwrap()]);
    let s = RedbStore::open(&file).unwrap();
    s.put(
        "stacks",
        "demo",
        br#"{"name":"demo","status":"CREATE_COMPLETE"}"#.to_vec(),
        Expect::Absent,
    )
    .unwrap();
    // 150 events of 31 KiB: more than one etcd request in any batch of 64.
    for i in 0..150 {
        s.put(
            "stack-events",
            &format!("demo/{i:012}"),
            vec![b'e'; 31 * 1024],
            Expect::Absent,
        )
        .unwrap();
    }
    // Larger than one etcd request (1.5 MiB): chunked by the etcd store.
    let big: Vec<u8> = (0..2_500_000u32).map(|i| (i % 253) as u8).collect();
    s.put("metadata", "ctrl-0", big, Expect::Absent).unwrap();
    s.put("agent-token", "key", vec![0x5a; 32], Expect::Absent)
        .unwrap();
    file
}

fn lease_file(dir: &Path) -> std::path::PathBuf {
    let mut t = netboot::dhcp::leases::LeaseTable::default();
    t.bind(
        "52:54:00:20:00:01".parse().unwrap(),
        "10.9.0.50".parse().unwrap(),
        4_000_000_000,
    );
    let path = dir.join("dhcp-leases.json");
    netboot::dhcp::leases::save(&path, &t).unwrap();
    path
}

#[test]
fn ha_store_migrate_redb_to_etcd_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cluster = LocalCluster::start(1, &d.join("etcd")).expect("an etcd member starts");
    let etcd = format!("etcd:{}", cluster.endpoints().join(","));
    let file = fill(d);
    let f = file.to_str().unwrap();
    let leases = lease_file(d);
    // The state as the daemon reads it (BMC passwords unsealed with the key beside the file).
    let original = records(&seed::store::sealed::open_redb(&file).unwrap());
    let tables: Vec<&str> = {
        let mut t: Vec<&str> = original.iter().map(|r| r.0.as_str()).collect();
        t.dedup();
        t
    };
    for t in ["agent-token", "metadata", "nodes", "stack-events", "stacks"] {
        assert!(tables.contains(&t), "{t} in {tables:?}");
    }

    // A daemon holding the file: refused, and says why.
    {
        let _held = RedbStore::open(&file).unwrap();
        let why = refused(&migrate(&format!("redb:{f}"), &etcd, &[]));
        assert!(why.contains("another process"), "{why}");
    }

    // redb (+ the lease file) → etcd.
    let out = ok(&migrate(
        &format!("redb:{f}"),
        &etcd,
        &["--leases", leases.to_str().unwrap()],
    ));
    let s = sums(&out);
    assert_eq!(s.len(), 2, "{out}");
    assert_eq!(s[0], s[1], "{out}");
    assert!(out.contains("checksums equal"), "{out}");
    let there = seed::store::etcd::EtcdStore::connect(&cluster.config()).unwrap();
    let lease = there
        .get(seed::ha::leases::TABLE, seed::ha::leases::KEY)
        .unwrap()
        .expect("the leases in etcd");
    assert!(String::from_utf8_lossy(&lease.value).contains("10.9.0.50"));
    let in_etcd = records(&there);
    assert_eq!(in_etcd.len(), original.len() + 1);

    // Not twice into a destination that holds a state; --force replaces it.
    let why = refused(&migrate(&format!("redb:{f}"), &etcd, &[]));
    assert!(why.contains("--force"), "{why}");
    assert_eq!(
        records(&there),
        in_etcd,
        "a refused migration changed nothing"
    );

    // etcd → a new redb file: the same sum, the same records.
    let back = d.join("back.redb");
    let b = back.to_str().unwrap();
    let out2 = ok(&migrate(&etcd, &format!("redb:{b}"), &[]));
    let s2 = sums(&out2);
    assert_eq!(s2, [s[0].clone(), s[0].clone()], "{out2}");
    // Read as a daemon reads its redb file (through the key beside it): the same records; the
    // file itself holds the BMC passwords sealed, as every redb store the daemon writes.
    let raw = records(&RedbStore::open(&back).unwrap());
    assert!(raw
        .iter()
        .filter(|r| r.0 == "nodes")
        .all(|r| !String::from_utf8_lossy(&r.2).contains("a-bmc-password")));
    let returned = records(&seed::store::sealed::open_redb(&back).unwrap());
    assert_eq!(returned.len(), in_etcd.len());
    assert!(returned == in_etcd, "the records came back changed");
    let without_leases: Vec<_> = returned
        .into_iter()
        .filter(|r| r.0 != seed::ha::leases::TABLE)
        .collect();
    assert!(
        without_leases == original,
        "the redb state came back changed"
    );

    // --force into the file that now holds that state: the same state again.
    let out3 = ok(&migrate(&etcd, &format!("redb:{b}"), &["--force"]));
    assert_eq!(sums(&out3), s2, "{out3}");

    // An empty source (a wrong prefix) is refused, and a --force'd destination kept.
    let why = refused(&migrate(
        &etcd,
        &format!("redb:{b}"),
        &["--prefix", "/nobody/", "--force"],
    ));
    assert!(why.contains("no record"), "{why}");
    assert_eq!(
        records(&RedbStore::open(&back).unwrap()).len(),
        in_etcd.len()
    );
    let why = refused(&migrate("redb:/nonexistent.redb", &etcd, &[]));
    assert!(why.contains("no such store file"), "{why}");
}
