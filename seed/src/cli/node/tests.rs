//! `seed node` against an in-memory store and against a daemon's API on 127.0.0.1.

use super::*;
use crate::lifecycle::{self, Timeouts};
use crate::store::memory::MemStore;
use crate::store::nodes;
use std::io::Write;

const FILE: &str = r#"
nodes:
  - name: ctrl-0
    mac: ["52:54:00:00:00:01"]
    pm_type: ipmi
    pm_addr: 127.0.0.1
    pm_port: 6230
    pm_user: admin
    pm_password: topsecret
    capabilities: "profile:control,boot_mode:uefi"
    memory: 8192
    disk: 40
  - name: cmp-0
    mac: ["52:54:00:00:00:02"]
    pm_type: ipmi
    pm_addr: 127.0.0.1
    pm_port: 6231
    pm_user: admin
    pm_password: topsecret
"#;

fn run_to_string(f: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>) -> String {
    let mut v = Vec::new();
    f(&mut v).unwrap();
    String::from_utf8(v).unwrap()
}

#[test]
fn import_list_show_delete_maintenance() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nodes.yaml");
    std::fs::write(&file, FILE).unwrap();
    let s = MemStore::new();
    let o = run_to_string(|o| import::import(&s, &file, o));
    assert_eq!(o, "enrolled 2 node(s): ctrl-0, cmp-0\n");
    // Importing again: refused, nothing changes.
    let e = import::import(&s, &file, &mut Vec::new()).unwrap_err();
    assert!(format!("{e:#}").contains("already used"), "{e:#}");

    let o = run_to_string(|o| list::list(&s, o));
    assert!(!o.contains("topsecret"));
    let lines: Vec<&str> = o.lines().collect();
    assert_eq!(lines.len(), 3, "{o}");
    assert!(lines[0].starts_with("NAME"));
    assert!(lines[2].starts_with("ctrl-0"), "{o}");
    assert!(lines[2].contains("enroll") && lines[2].contains("127.0.0.1:6230"));
    assert!(
        lines[2].contains("control") && lines[2].contains("8 GiB") && lines[2].contains("40 GiB")
    );

    let o = run_to_string(|o| show::show(&s, "ctrl-0", o));
    assert!(!o.contains("topsecret"), "{o}");
    assert!(o.contains("password ***"), "{o}");
    assert!(o.contains("boot mode:") && o.contains("uefi"), "{o}");

    run_to_string(|o| local::maintenance(&s, "cmp-0", true, Some("bad fan".into()), o));
    let o = run_to_string(|o| list::list(&s, o));
    assert!(o.contains("yes: bad fan"), "{o}");
    run_to_string(|o| local::maintenance(&s, "cmp-0", false, None, o));
    assert!(!run_to_string(|o| list::list(&s, o)).contains("bad fan"));

    run_to_string(|o| local::delete(&s, "cmp-0", o));
    assert!(show::show(&s, "cmp-0", &mut Vec::new()).is_err());
    assert!(local::delete(&s, "nope", &mut Vec::new()).is_err());
}

#[test]
fn delete_refuses_active_unless_maintenance() {
    let s = MemStore::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("n.json");
    std::fs::write(
        &file,
        r#"{"nodes":[{"name":"a","mac":["52:54:00:00:00:01"],"pm_type":"ipmi","pm_addr":"h","pm_user":"u","pm_password":"p"}]}"#,
    )
    .unwrap();
    import::import(&s, &file, &mut Vec::new()).unwrap();
    let (mut n, rev) = nodes::get(&s, "a").unwrap().unwrap();
    n.lifecycle.state = lifecycle::State::Active;
    nodes::update(&s, &n, rev).unwrap();
    let e = local::delete(&s, "a", &mut Vec::new()).unwrap_err();
    assert!(e.to_string().contains("is active"), "{e}");
    local::maintenance(&s, "a", true, None, &mut Vec::new()).unwrap();
    local::delete(&s, "a", &mut Vec::new()).unwrap();
}

/// A daemon API over an in-memory store on 127.0.0.1:<ephemeral>, served from its own
/// runtime thread until the returned token is cancelled.
fn serve_api(token: &str) -> (String, tokio_util::sync::CancellationToken) {
    use crate::daemon::{api::Api, Daemon, Settings};
    let d = Daemon::new(
        std::sync::Arc::new(MemStore::new()),
        Settings {
            server_ip: "10.0.0.1".parse().unwrap(),
            http_port: 8080,
            timeouts: Timeouts::default(),
            heartbeat_secs: 5,
            provide_after_inspect: true,
            agent_tls: None,
        },
    )
    .unwrap();
    crate::daemon::test_support::serve(Api::new(d, token))
}

#[test]
fn import_list_show_through_the_api() {
    let (addr, stop) = serve_api("tok");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nodes.yaml");
    std::fs::write(&file, FILE).unwrap();
    let remote = Remote {
        api: Some(addr.clone()),
        token: Some("tok".into()),
        ca: None,
    };
    let c = remote.client(false).unwrap().unwrap();
    assert_eq!(c.base(), format!("http://{addr}"));
    let url = c.base().to_string();
    let o = run_to_string(|o| import::import_api(&c, &file, o));
    assert_eq!(o, "enrolled 2 node(s): ctrl-0, cmp-0\n");
    let e = import::import_api(&c, &file, &mut Vec::new()).unwrap_err();
    assert!(format!("{e:#}").contains("422"), "{e:#}");

    let o = run_to_string(|o| list::list_api(&c, o));
    assert!(!o.contains("topsecret"), "{o}");
    let lines: Vec<&str> = o.lines().collect();
    assert_eq!(lines.len(), 3, "{o}");
    assert!(lines[0].starts_with("NAME"));
    let ctrl = lines.iter().find(|l| l.starts_with("ctrl-0")).unwrap();
    assert!(
        ctrl.contains("enroll") && ctrl.contains("127.0.0.1:6230"),
        "{o}"
    );
    assert!(
        ctrl.contains("control") && ctrl.contains("8 GiB") && ctrl.contains("40 GiB"),
        "{o}"
    );
    let o = run_to_string(|o| show::show_api(&c, "ctrl-0", o));
    assert!(!o.contains("topsecret"), "{o}");
    assert!(
        o.contains("user admin") && o.contains("52:54:00:00:00:01"),
        "{o}"
    );
    let e = show::show_api(&c, "nope", &mut Vec::new()).unwrap_err();
    assert!(e.to_string().contains("404"), "{e}");

    // A wrong token or none: clear errors, nothing shown.
    let bad = Client::new(&url, Some("wrong"), None).unwrap();
    let e = list::list_api(&bad, &mut Vec::new()).unwrap_err();
    assert!(e.to_string().contains("401"), "{e}");
    let e = Client::new(&url, None, None).err().unwrap();
    assert!(e.to_string().contains("SEED_TOKEN"), "{e}");
    stop.cancel();
}

#[test]
fn a_named_store_wins_over_probing() {
    let r = Remote {
        api: None,
        token: None,
        ca: None,
    };
    assert!(r.client(true).unwrap().is_none());
    let r = Remote {
        api: Some("http://h:1/".into()),
        token: Some("t".into()),
        ca: None,
    };
    assert_eq!(r.client(true).unwrap().unwrap().base(), "http://h:1");
}

#[test]
fn default_store_path_follows_xdg() {
    // Only checks the shape; the environment is shared across tests so it is not changed.
    let p = default_store_path().unwrap();
    assert!(p.ends_with("seed/seed.redb"), "{}", p.display());
}
