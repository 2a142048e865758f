//! `seed node import/list/show/maintenance/delete` end to end: the real binary, a real store
//! file in a temporary directory, no network.

use std::path::Path;
use std::process::{Command, Output};

const NODES_YAML: &str = r#"
nodes:
  - name: ctrl-0
    mac: ["52:54:00:10:00:01"]
    pm_type: ipmi
    pm_addr: 127.0.0.1
    pm_port: 6230
    pm_user: admin
    pm_password: never-print-me
    capabilities: "profile:control,boot_mode:uefi"
    cpu: 4
    memory: 8192
    disk: 40
  - name: compute-0
    mac: ["52:54:00:10:00:02", "52:54:00:10:00:12"]
    pm_type: ipmi
    pm_addr: 127.0.0.1
    pm_port: "6231"
    pm_user: admin
    pm_password: never-print-me
    capabilities: "profile:compute"
    memory: "4096"
"#;

fn seed(store: &Path, args: &[&str]) -> Output {
    let out = Command::new(tests::seed_bin())
        .arg("node")
        .args(args)
        .env("SEED_STORE", store)
        .env_remove("RUST_LOG")
        .output()
        .expect("running seed");
    let all = tests::printed(&out);
    assert!(
        !all.contains("never-print-me"),
        "password printed by {args:?}:\n{all}"
    );
    out
}

fn ok(store: &Path, args: &[&str]) -> String {
    let out = seed(store, args);
    assert!(
        out.status.success(),
        "seed node {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(store: &Path, args: &[&str]) -> String {
    let out = seed(store, args);
    assert!(!out.status.success(), "seed node {args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn node_import_list_show() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("state/seed.redb");
    let file = dir.path().join("nodes.yaml");
    std::fs::write(&file, NODES_YAML).unwrap();
    let f = file.to_str().unwrap();

    assert!(ok(&store, &["list"]).contains("no nodes enrolled"));
    assert_eq!(
        ok(&store, &["import", f]),
        "enrolled 2 node(s): ctrl-0, compute-0\n"
    );
    assert!(store.is_file(), "the store file was created");

    let list = ok(&store, &["list"]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}");
    for h in [
        "NAME",
        "STATE",
        "MACS",
        "BMC",
        "PROFILE",
        "RAM",
        "DISK",
        "LAST ERROR",
    ] {
        assert!(lines[0].contains(h), "{h} missing from header: {list}");
    }
    let ctrl = lines.iter().find(|l| l.starts_with("ctrl-0")).unwrap();
    for v in [
        "enroll",
        "52:54:00:10:00:01",
        "127.0.0.1:6230",
        "control",
        "8 GiB",
        "40 GiB",
    ] {
        assert!(ctrl.contains(v), "{v} missing: {ctrl}");
    }
    let cmp = lines.iter().find(|l| l.starts_with("compute-0")).unwrap();
    assert!(cmp.contains("52:54:00:10:00:02,52:54:00:10:00:12"), "{cmp}");
    assert!(
        cmp.contains("4 GiB") && cmp.contains("127.0.0.1:6231"),
        "{cmp}"
    );

    let show = ok(&store, &["show", "ctrl-0"]);
    assert!(show.contains("password ***"), "{show}");
    assert!(show.contains("profile:control"), "{show}");
    assert!(
        show.lines()
            .any(|l| l.starts_with("state:") && l.ends_with("enroll")),
        "{show}"
    );

    // A file with a duplicate MAC (against the store) is refused whole: nothing new appears.
    let dup = dir.path().join("dup.json");
    std::fs::write(
        &dup,
        r#"{"nodes": [
            {"name": "new-0", "mac": ["52:54:00:10:00:03"], "pm_type": "ipmi", "pm_addr": "h", "pm_user": "u", "pm_password": "never-print-me"},
            {"name": "new-1", "mac": ["52:54:00:10:00:12"], "pm_type": "ipmi", "pm_addr": "h", "pm_user": "u", "pm_password": "never-print-me"}
        ]}"#,
    )
    .unwrap();
    let err = fails(&store, &["import", dup.to_str().unwrap()]);
    assert!(err.contains("nodes[1] (new-1)"), "{err}");
    assert!(
        err.contains("52:54:00:10:00:12") && err.contains("compute-0"),
        "{err}"
    );
    assert!(fails(&store, &["show", "new-0"]).contains("no node called"));

    // A bad field names the entry and the field.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "nodes:\n  - name: x\n    mac: [\"52:54:00:10:00:09\"]\n    pm_type: ipmi\n    pm_user: u\n    pm_password: p\n",
    )
    .unwrap();
    let err = fails(&store, &["import", bad.to_str().unwrap()]);
    assert!(
        err.contains("nodes[0] (x)") && err.contains("pm_addr"),
        "{err}"
    );

    // Maintenance shows in the list; delete forgets the node.
    ok(
        &store,
        &["maintenance", "compute-0", "on", "--reason", "bad DIMM"],
    );
    assert!(ok(&store, &["list"]).contains("bad DIMM"));
    ok(&store, &["maintenance", "compute-0", "off"]);
    ok(&store, &["delete", "compute-0"]);
    let list = ok(&store, &["list"]);
    assert!(!list.contains("compute-0"), "{list}");
    assert!(fails(&store, &["delete", "compute-0"]).contains("no node called"));
}
