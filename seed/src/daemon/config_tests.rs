//! The daemon config's tests (split from `config.rs` to keep it small).
use super::*;

const OK: &str = r#"
store = "/tmp/x.redb"
[api]
token = "t0k"
[netboot]
server_ip = "10.0.0.1"
[netboot.http]
root = "/tmp/http"
port = 8080
"#;

#[test]
fn parses_with_defaults() {
    let c = DaemonConfig::from_toml(OK).unwrap();
    assert_eq!(c.api.token.expose(), "t0k");
    assert_eq!(c.agent.heartbeat_secs, 10);
    assert!(c.lifecycle.provide_after_inspect);
    assert_eq!(c.lifecycle.deploy_timeout_secs, 1800);
    assert_eq!(
        (c.lifecycle.boot_timeout_secs, c.lifecycle.boot_retries_max),
        (180, 2)
    );
    assert_eq!(c.ramdisk.kernel, PathBuf::from("target/ramdisk/vmlinuz"));
    assert_eq!(c.netboot.http.unwrap().port, 8080);
}

#[test]
fn images_dir_is_inside_the_http_root() {
    let c = DaemonConfig::from_toml(OK).unwrap();
    assert_eq!(
        c.images_dir().unwrap(),
        (PathBuf::from("/tmp/http/images"), "images".to_string())
    );
    let c = DaemonConfig::from_toml(&format!("{OK}\n[images]\ndir = \"/tmp/http/store/img\"\n"))
        .unwrap();
    assert_eq!(c.images_dir().unwrap().1, "store/img");
    let c = DaemonConfig::from_toml(&format!("{OK}\n[images]\ndir = \"rel\"\n")).unwrap();
    assert_eq!(c.images_dir().unwrap().0, PathBuf::from("/tmp/http/rel"));
    for bad in ["/srv/images", "/tmp/http", "../images", "/tmp/http/../x"] {
        let e = DaemonConfig::from_toml(&format!("{OK}\n[images]\ndir = {bad:?}\n")).unwrap_err();
        assert!(e.to_string().contains("inside the HTTP root"), "{bad}: {e}");
    }
}

#[test]
fn relative_paths_resolve_against_the_config_files_directory() {
    let t = tempfile::tempdir().unwrap();
    let etc = t.path().join("bundle/etc");
    std::fs::create_dir_all(&etc).unwrap();
    let file = etc.join("seed.toml");
    std::fs::write(
        &file,
        r#"
store = "../var/seed.redb"
[api]
token = "t"
[ramdisk]
kernel = "../share/ramdisk/vmlinuz"
initrd = "/abs/initramfs.zst"
[images]
dir = "images"
[netboot]
server_ip = "127.0.0.1"
state_dir = "../var/netboot"
[netboot.tftp]
root = "../share/ipxe"
[netboot.http]
root = "../share"
"#,
    )
    .unwrap();
    let c = DaemonConfig::load(&file).unwrap();
    assert!(
        matches!(&c.store, StoreConfig::Redb { path } if *path == etc.join("../var/seed.redb"))
    );
    assert_eq!(c.ramdisk.kernel, etc.join("../share/ramdisk/vmlinuz"));
    assert_eq!(c.ramdisk.initrd, PathBuf::from("/abs/initramfs.zst"));
    assert_eq!(c.netboot.state_dir, etc.join("../var/netboot"));
    assert_eq!(
        c.netboot.tftp.as_ref().unwrap().root,
        etc.join("../share/ipxe")
    );
    assert_eq!(c.netboot.http.as_ref().unwrap().root, etc.join("../share"));
    // The image store is relative to the (now absolute) HTTP root, and still inside it.
    assert_eq!(
        c.images_dir().unwrap(),
        (etc.join("../share/images"), "images".to_string())
    );
    // from_toml alone keeps what was written.
    let raw = DaemonConfig::from_toml(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert!(
        matches!(&raw.store, StoreConfig::Redb { path } if path.as_path() == Path::new("../var/seed.redb"))
    );
}

#[test]
fn sample_config_is_valid() {
    let c = DaemonConfig::from_toml(include_str!("../../examples/seed.toml")).unwrap();
    assert_eq!(c.api.token.expose(), "change-me");
    assert!(
        weak_token(c.api.token.expose()).is_some(),
        "the sample is refused at start"
    );
    assert!(c.netboot.dhcp.is_some());
}

#[test]
fn weak_tokens_are_named() {
    for t in [
        "change-me",
        "CHANGE-ME",
        "secret",
        "t0k",
        "short-token",
        "xxxxxxxxxxxxxxxx",
    ] {
        assert!(weak_token(t).is_some(), "{t}");
    }
    assert!(weak_token("has a space in it").is_some());
    assert!(weak_token("please-change-me-now").is_some());
    for t in ["t0ken-for-tests", "0123456789abcdef0123456789abcdef"] {
        assert_eq!(weak_token(t), None, "{t}");
    }
}

#[test]
fn the_token_stays_out_of_debug() {
    let c = DaemonConfig::from_toml(OK).unwrap();
    let shown = format!("{c:?}");
    assert!(!shown.contains("t0k\""), "{shown}");
    assert!(shown.contains("***"), "{shown}");
}

#[test]
fn tls_is_auto_unless_off_or_the_operators_files() {
    let c = DaemonConfig::from_toml(OK).unwrap();
    assert_eq!(c.api.tls(), ApiTls::Auto { names: vec![] });
    let with =
        |extra: &str| DaemonConfig::from_toml(&OK.replace("[api]\n", &format!("[api]\n{extra}\n")));
    let c = with("tls_names = [\"seed.example\"]").unwrap();
    assert_eq!(
        c.api.tls(),
        ApiTls::Auto {
            names: vec!["seed.example".into()]
        }
    );
    assert_eq!(with("tls = \"off\"").unwrap().api.tls(), ApiTls::Off);
    let c = with("tls_cert = \"/etc/c.pem\"\ntls_key = \"/etc/k.pem\"").unwrap();
    assert_eq!(
        c.api.tls(),
        ApiTls::Files {
            cert: "/etc/c.pem".into(),
            key: "/etc/k.pem".into()
        }
    );
    for bad in [
        "tls = \"maybe\"",
        "tls_cert = \"/c\"",
        "tls_key = \"/k\"",
        "tls = \"off\"\ntls_cert = \"/c\"\ntls_key = \"/k\"",
    ] {
        assert!(with(bad).is_err(), "{bad}");
    }
}

#[test]
fn the_agents_tls_is_on_for_one_daemon_off_in_ha_and_checked() {
    let c = DaemonConfig::from_toml(OK).unwrap();
    assert!(c.agent.tls_on(false) && !c.agent.tls_on(true));
    assert_eq!(c.agent.https_port, 8443);
    let with = |agent: &str, store: &str| {
        let t = OK.replace("store = \"/tmp/x.redb\"\n", store);
        DaemonConfig::from_toml(&format!("{t}\n[agent]\n{agent}\n"))
    };
    let redb = "store = \"/tmp/x.redb\"\n";
    let etcd =
        "[store]\nbackend = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\"]\nname = \"a\"\n";
    assert!(!with("tls = \"off\"", redb).unwrap().agent.tls_on(false));
    let e = with("https_port = 8080", redb).unwrap_err().to_string();
    assert!(e.contains("https_port 8080"), "{e}");
    // Off anyway: the port is not used.
    assert!(with("tls = \"off\"\nhttps_port = 8080", redb).is_ok());
    let e = with("tls = \"auto\"", etcd).unwrap_err().to_string();
    assert!(e.contains("etcd") && e.contains("[agent]"), "{e}");
    let c = with("heartbeat_secs = 3", etcd).unwrap();
    assert!(!c.agent.tls_on(true), "HA: plain HTTP by default");
    assert!(with("heartbeat_secs = 0", redb).is_err());
}

#[test]
fn refuses_bad_configs() {
    let no_http = OK.replace(
        "[netboot.http]\nroot = \"/tmp/http\"\nport = 8080\n",
        "[netboot.tftp]\nroot = \"/tmp\"\n",
    );
    let e = DaemonConfig::from_toml(&no_http).unwrap_err();
    assert!(e.to_string().contains("[netboot.http]"), "{e}");
    let empty_token = OK.replace("t0k", " ");
    assert!(DaemonConfig::from_toml(&empty_token).is_err());
    let unknown = OK.replace("[api]", "bogus = 1\n[api]");
    assert!(DaemonConfig::from_toml(&unknown).is_err());
}
