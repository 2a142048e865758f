//! The undercloud's configuration chain without QEMU (issue 15): the real `seed daemon` with
//! three fake machines deploys `seed/templates/undercloud.yaml` (the shipped template, the
//! operator's parameters); each member's published metadata then goes through seed-config's own
//! code — the cache's sources, the merge, the `undercloud` image's template tree
//! (images/elements/seed-undercloud) — and the `seed.toml` it renders, with the node's address
//! filled in as the image's `undercloud-daemon` does, must load as a daemon config: an etcd
//! store whose member joins through the seed, the floating address, the operator's token, the
//! boot files where the image has them. A bad parameter is refused before any machine moves.

use seed::daemon::config::DaemonConfig;
use seed::store::config::StoreConfig;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tests::daemon::{Config, TestImage};
use tests::netns::Netns;
use tests::proc::Child;

const TOKEN: &str = "undercloud-template-token";
const CP_TOKEN: &str = "the-control-planes-own-token-0123";
const NODES: [&str; 3] = ["uc-a", "uc-b", "uc-c"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn api(ns: &Netns, port: u16, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let cmd = ns.cmd(tests::require("curl"));
    let url = format!("http://127.0.0.1:{port}{path}");
    tests::curl(cmd, method, &url, Some(TOKEN), body, 30)
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s:?}"))
}

/// What seed-config renders at /etc/seed-undercloud/seed.toml from metadata document `doc`.
fn rendered(doc: &serde_json::Value, cache: &Path) -> String {
    use ramdisk::config::{apply, collect};
    let sources = collect::sources(doc);
    let named: Vec<(&str, serde_json::Value)> = sources
        .iter()
        .map(|(n, v)| (n.as_str(), v.clone()))
        .collect();
    collect::store(cache, &named).unwrap();
    let config = collect::collect(cache).unwrap();
    let templates = root()
        .join("images/elements/seed-undercloud/overlay/usr/libexec/os-apply-config/templates");
    let tree = apply::build_tree(&templates, &config).unwrap();
    let file = tree
        .iter()
        .find(|r| r.relative == Path::new("etc/seed-undercloud/seed.toml"))
        .expect("the undercloud image renders etc/seed-undercloud/seed.toml");
    assert_eq!(file.control.mode, Some(0o600), "it holds the API token");
    String::from_utf8(file.body.clone()).unwrap()
}

#[test]
fn undercloud_template_renders_a_daemon_config_that_joins_the_seed() {
    let ns = Netns::new("ucfg");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let http = d.join("http");
    std::fs::create_dir_all(&http).unwrap();
    let (kernel, initrd) = tests::fake_ramdisk(d);
    TestImage {
        name: "undercloud",
        ..TestImage::golden("test", &[0x5au8; 64 << 10])
    }
    .import(&http.join("images"), &d.join("built"));
    let nodes: String = NODES
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!(
                "  - name: {n}\n    mac: [\"52:54:00:00:ac:0{i}\"]\n    pm_type: fake\n    \
                 pm_addr: fake\n    pm_user: admin\n    pm_password: sw0rdfish\n    \
                 capabilities: \"fake_agent:ok\"\n    memory: 4096\n"
            )
        })
        .collect();
    tests::import_nodes(&d.join("seed.redb"), &nodes);
    let port = tests::free_port();
    let cfg = Config {
        listen: None,
        http_port: port,
        ramdisk: Some((kernel, initrd)),
        sections: "[lifecycle]\nprovide_after_inspect = true\n",
        ..Config::loopback(d, TOKEN)
    }
    .write();
    let mut cmd = ns.cmd(tests::seed_bin());
    cmd.arg("daemon")
        .arg("--config")
        .arg(&cfg)
        .env("RUST_LOG", "info");
    let mut daemon = Child::spawn("seed-daemon", cmd);
    daemon.wait_for_log("HTTP listening", Duration::from_secs(120));

    for n in NODES {
        let (code, body) = api(&ns, port, "POST", &format!("/v1/nodes/{n}/inspect"), None);
        assert!(code == 202 || code == 200, "{code} {body}");
    }
    tests::daemon::wait(
        "three available",
        Duration::from_secs(60),
        || {
            let (_, body) = api(&ns, port, "GET", "/v1/nodes", None);
            body.matches("\"available\"").count() == NODES.len()
        },
        || daemon.output(),
    );

    let template = std::fs::read_to_string(root().join("seed/templates/undercloud.yaml")).unwrap();
    let params = |token: &str| {
        serde_json::json!({
            "join": "http://10.0.0.1:6385",
            "endpoints": "http://10.0.0.1:2379",
            "api_token": token,
            "server_ip": "10.0.0.1",
            "floating_address": "10.0.0.1/24",
            "subnet": "10.0.0.0/24",
            "pool_start": "10.0.0.100",
            "pool_end": "10.0.0.199",
        })
    };
    // A token too short for a control plane: refused, nothing allocated or powered.
    let req = serde_json::json!({"name": "uc", "template": template, "params": params("short")});
    let (code, body) = api(&ns, port, "POST", "/v1/stacks", Some(&req.to_string()));
    assert!((400..500).contains(&code), "{code} {body}");
    assert!(body.contains("api_token"), "{body}");
    assert!(
        !body.contains("short"),
        "a hidden parameter's value is never echoed: {body}"
    );
    let (_, list) = api(&ns, port, "GET", "/v1/nodes", None);
    assert_eq!(list.matches("\"available\"").count(), NODES.len(), "{list}");

    let req = serde_json::json!({"name": "uc", "template": template, "params": params(CP_TOKEN)});
    let (code, body) = api(&ns, port, "POST", "/v1/stacks", Some(&req.to_string()));
    assert_eq!(code, 201, "{body}");

    // Each member's metadata, once published, carries the deployment of undercloud_config.
    let mut docs = Vec::new();
    for n in NODES {
        let mut doc = serde_json::Value::Null;
        tests::daemon::wait(
            &format!("{n}'s undercloud metadata"),
            Duration::from_secs(90),
            || {
                let (code, body) = api(&ns, port, "GET", &format!("/v1/nodes/{n}/metadata"), None);
                if code != 200 {
                    return false;
                }
                doc = json(&body)["data"].clone();
                doc.to_string().contains("member_deployments")
            },
            || daemon.output(),
        );
        docs.push((n, doc));
    }

    let seed_ip = "10.0.0.1";
    for (i, (n, doc)) in docs.iter().enumerate() {
        // The document as a node is served it: its identity under seed.node.
        let doc = seed::daemon::metadata_api::document(
            n,
            Some(api::metadata::Metadata {
                counter: 1,
                data: doc.clone(),
            }),
        )
        .data;
        let text = rendered(&doc, &d.join(format!("cache-{n}")));
        let ip = format!("10.0.0.{}", 11 + i);
        let cfg = DaemonConfig::from_toml(&text.replace("@NODE_IP@", &ip))
            .unwrap_or_else(|e| panic!("{n}'s rendered seed.toml does not load: {e:#}\n{text}"));
        assert_eq!(cfg.api.token.expose(), CP_TOKEN);
        assert_eq!(cfg.netboot.server_ip.to_string(), seed_ip);
        assert_eq!(
            cfg.ramdisk.kernel,
            Path::new("/usr/share/seed/ramdisk/vmlinuz")
        );
        let StoreConfig::Etcd { etcd, ha } = &cfg.store else {
            panic!("{n}: not an etcd store:\n{text}");
        };
        assert_eq!(
            etcd.endpoints,
            vec![
                "http://10.0.0.1:2379".to_string(),
                format!("http://{ip}:2379")
            ]
        );
        assert_eq!(ha.name, *n, "the member is named after its node");
        let member = ha.member.as_deref().expect("[store] member");
        assert_eq!(member.join.as_deref(), Some("http://10.0.0.1:6385"));
        assert_eq!(member.peer_url, format!("http://{ip}:2380"));
        assert_eq!(ha.floating, Some(([10, 0, 0, 1].into(), 24)));
        assert_eq!(ha.advertise.as_deref(), Some(&*format!("http://{ip}:6385")));
    }
}
