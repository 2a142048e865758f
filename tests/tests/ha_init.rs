//! `seed ha init` (issue 15): a single seed (one redb file, BMC passwords sealed with the key
//! file beside it) becomes the first member of an HA control plane. Run against the real
//! command and daemon, with Debian's etcd, in a network namespace of its own (loopback):
//! - the config is rewritten to `[store] backend = "etcd"` with the member the daemon runs, the
//!   old one kept; a second `init` is refused;
//! - the daemon started on it starts its etcd member itself, leads, and lists the same nodes;
//!   their BMC passwords reached etcd usable (unsealed on the way, as the daemons read them);
//! - `kill -9` of the daemon takes its etcd member down with it (no orphan holding the port).

use seed::store::etcd::{EtcdConfig, EtcdStore};
use seed::store::Store;
use std::time::{Duration, Instant};
use tests::daemon::Config;
use tests::netns::Netns;

const TOKEN: &str = "ha-init-token";

fn etcd_answers(ns: &Netns) -> bool {
    tests::ha::in_netns(ns, || {
        let mut c = EtcdConfig::new(vec!["http://127.0.0.1:2379".into()]);
        c.timeout = Duration::from_secs(2);
        EtcdStore::connect(&c)
            .and_then(|s| s.get("nodes", "n0"))
            .ok()
            .flatten()
            .map(|r| String::from_utf8_lossy(&r.value).into_owned())
    })
    .is_some()
}

#[test]
fn ha_init_moves_a_single_seed_into_its_own_etcd_member() {
    tests::require("curl");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("http")).unwrap();
    let ns = Netns::new("hainit");
    let store = d.join("seed.redb");
    tests::import_nodes(
        &store,
        &(tests::fake_bmc_node("n0", "52:54:00:ab:00:00")
            + &tests::fake_bmc_node("n1", "52:54:00:ab:00:01")),
    );
    // Seal the passwords as a daemon does when it first opens the store.
    seed::store::sealed::open_redb(&store)
        .unwrap()
        .seal_existing()
        .unwrap();
    let config = Config::loopback(d, TOKEN).write();
    let t0 = Instant::now();
    let init = |extra: &[&str]| {
        ns.cmd(tests::seed_bin())
            .args(["ha", "init", "--config"])
            .arg(&config)
            .args(["--name", "seed"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = init(&[]);
    let said = tests::printed(&out);
    assert!(out.status.success(), "{said}");
    eprintln!("init: {:?}", t0.elapsed());
    assert!(said.contains("checksums equal"), "{said}");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("backend = \"etcd\""), "{text}");
    assert!(!text.contains("seed.redb"), "{text}");
    assert!(config.with_extension("toml.before-ha-init").is_file());
    // etcd stopped again after the migration; a second init is refused, nothing changed.
    assert!(!etcd_answers(&ns));
    let out = init(&[]);
    assert!(!out.status.success());
    assert!(tests::printed(&out).contains("already etcd"));
    assert_eq!(std::fs::read_to_string(&config).unwrap(), text);

    eprintln!("checked and refused again: {:?}", t0.elapsed());
    let mut daemon = tests::daemon::spawn(&ns, "seed-ha", &config);
    daemon.wait_for_log(
        "etcd member started beside the daemon",
        Duration::from_secs(10),
    );
    daemon.wait_for_log("leading", Duration::from_secs(30));
    let url = "http://127.0.0.1:6385/v1/nodes";
    let (code, body) = tests::daemon::api(&ns, "GET", url, TOKEN, None);
    assert_eq!(code, 200, "{body}");
    let states = tests::daemon::node_states(&body).unwrap();
    assert_eq!(states.keys().collect::<Vec<_>>(), ["n0", "n1"]);
    // The password as the daemons read it from etcd: usable, not a sealed blob.
    let raw = tests::ha::in_netns(&ns, || {
        let s = EtcdStore::connect(&EtcdConfig::new(vec!["http://127.0.0.1:2379".into()])).unwrap();
        String::from_utf8(s.get("nodes", "n0").unwrap().unwrap().value).unwrap()
    });
    assert!(
        raw.contains("hunter2") && !raw.contains("sealed:v1:"),
        "{raw}"
    );

    eprintln!("daemon on etcd checked: {:?}", t0.elapsed());
    // SAFETY: kill(2) on our own child's pid (`ip netns exec` execs the daemon in place).
    assert_eq!(unsafe { libc::kill(daemon.id() as i32, libc::SIGKILL) }, 0);
    let t = Instant::now();
    while etcd_answers(&ns) {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the daemon's etcd member outlived it"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("its member gone with it: {:?}", t0.elapsed());
}
