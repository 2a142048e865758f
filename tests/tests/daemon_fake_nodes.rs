//! `seed daemon` with fake nodes, no QEMU: the real binary in a namespace of its own (HTTP boot
//! server and operators' API on that namespace's loopback), three nodes with fake BMCs and fake
//! agents enrolled with `seed node import` through the API, inspected with `seed node inspect`,
//! listed with `seed node list` (which finds the running daemon by itself), one deployed with
//! `seed node deploy` (its fake agent writes the "image" and its "image" reports booted with the
//! node's credential); `/metrics` on both listeners counts them, `/v1/openapi.json` parses,
//! `seed image list|show` show the daemon's image;
//! then `seed node undeploy` brings it back to `available` through cleaning (its fake agent
//! plays the wipe the daemon hands it).

use std::time::Duration;
use tests::daemon::{Config, TestImage};
use tests::netns::Netns;

const TOKEN: &str = "fake-nodes-token";
const NODES: [&str; 3] = ["fake-0", "fake-1", "fake-2"];

fn instackenv() -> String {
    let mut s = String::from("nodes:\n");
    for (i, n) in NODES.iter().enumerate() {
        s.push_str(&format!(
            "  - name: {n}\n    mac: [\"52:54:00:00:fe:0{i}\"]\n    pm_type: fake\n    \
             pm_addr: fake\n    pm_user: admin\n    pm_password: sw0rdfish\n    \
             capabilities: \"profile:compute,fake_agent:ok,fake_bmc_delay_ms:5\"\n    \
             cpu: {}\n    memory: 8192\n",
            4 + i
        ));
    }
    s
}

/// `seed ARGS` inside the namespace with the token in the environment.
fn seed(ns: &Netns, args: &[&str]) -> std::process::Output {
    ns.cmd(tests::seed_bin())
        .args(args)
        .env("SEED_TOKEN", TOKEN)
        .env_remove("SEED_API")
        .env_remove("SEED_STORE")
        .env_remove("SEED_IMAGES_DIR")
        .output()
        .expect("running seed")
}

/// fake-0's row of `seed node list` (empty when it is not listed).
fn fake0_row(ns: &Netns) -> String {
    let out = seed(ns, &["node", "list"]);
    let list = String::from_utf8_lossy(&out.stdout).into_owned();
    let row = list.lines().find(|l| l.starts_with("fake-0"));
    row.unwrap_or_default().to_string()
}

fn curl(ns: &Netns, url: &str) -> (u16, String) {
    let out = ns
        .cmd(tests::require("curl"))
        .args(["-sS", "--max-time", "30", "-w", "\n%{http_code}", url])
        .output()
        .expect("running curl");
    assert!(out.status.success(), "curl {url}: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}

#[test]
fn daemon_fake_nodes_inspect_metrics_openapi() {
    let ns = Netns::new("fake");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let http = d.join("http");
    std::fs::create_dir_all(&http).unwrap();
    let (kernel, initrd) = tests::fake_ramdisk(d);
    // An image `tiny` in the image store under the HTTP root.
    let stream = vec![0xa5u8; 256 << 10];
    TestImage {
        name: "tiny",
        cmdline: "console=ttyS0",
        ..TestImage::golden("test", &stream)
    }
    .import(&http.join("images"), &d.join("built-tiny"));
    let cfg = Config {
        heartbeat_secs: Some(1),
        ramdisk: Some((kernel, initrd)),
        sections: "[lifecycle]\ninspect_timeout_secs = 60\n",
        ..Config::loopback(d, TOKEN)
    }
    .write();
    let mut daemon = tests::daemon::spawn(&ns, "seed-daemon", &cfg);
    daemon.wait_for_log("API listening", Duration::from_secs(30));

    // Enroll through the API (the daemon holds the store file).
    let inv = d.join("nodes.yaml");
    std::fs::write(&inv, instackenv()).unwrap();
    let out = seed(
        &ns,
        &[
            "node",
            "import",
            "--api",
            "127.0.0.1:6385",
            inv.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "import: {out:?}\n{}", daemon.output());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout, "enrolled 3 node(s): fake-0, fake-1, fake-2\n");

    // Inspect every node; the fake agents report through the daemon's agent API.
    for n in NODES {
        let out = seed(&ns, &["node", "inspect", n, "--wait", "60"]);
        assert!(
            out.status.success(),
            "inspect {n}: {out:?}\n{}",
            daemon.output()
        );
    }

    // `seed node list` finds the daemon on 127.0.0.1:6385 by itself.
    let out = seed(&ns, &["node", "list"]);
    assert!(out.status.success(), "list: {out:?}");
    let list = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!list.contains("sw0rdfish"), "{list}");
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 4, "{list}");
    assert!(lines[0].starts_with("NAME"), "{list}");
    for (i, n) in NODES.iter().enumerate() {
        let row = lines.iter().find(|l| l.starts_with(n)).expect(n);
        assert!(row.contains("available"), "{list}");
        assert!(row.contains("compute") && row.contains("8 GiB"), "{list}");
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert!(cells.contains(&(4 + i).to_string().as_str()), "{list}");
    }

    // The fake facts are stored: the node's NIC, the fake disk.
    let out = seed(&ns, &["node", "show", "fake-1"]);
    assert!(out.status.success(), "show: {out:?}");
    let show = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        show.contains("cpu model:") && show.contains("Fake CPU"),
        "{show}"
    );
    assert!(show.contains("52:54:00:00:fe:01 link up"), "{show}");
    assert!(show.contains("serial FAKE-"), "{show}");
    assert!(!show.contains("sw0rdfish"), "{show}");

    let (code, m) = curl(&ns, "http://127.0.0.1:6385/metrics");
    assert_eq!(code, 200, "{m}");
    assert!(m.contains("seed_nodes{state=\"available\"} 3\n"), "{m}");

    // Deploy one: its fake agent plays the deploy, its image reports booted → active.
    let out = seed(
        &ns,
        &[
            "node", "deploy", "fake-0", "--image", "tiny", "--wait", "60",
        ],
    );
    assert!(out.status.success(), "deploy: {out:?}\n{}", daemon.output());
    let row = fake0_row(&ns);
    assert!(row.contains("active"), "{row}");

    // Metrics on the operators' listener and on the HTTP boot server.
    for url in [
        "http://127.0.0.1:6385/metrics",
        "http://127.0.0.1:8080/metrics",
    ] {
        let (code, m) = curl(&ns, url);
        assert_eq!(code, 200, "{url}: {m}");
        for want in [
            "seed_nodes{state=\"available\"} 2\n",
            "seed_nodes{state=\"active\"} 1\n",
            "seed_deploy_duration_seconds_count 1\n",
            "seed_nodes{state=\"inspecting\"} 0\n",
            "seed_inspect_duration_seconds_count 3\n",
        ] {
            assert!(m.contains(want), "{url}: {want:?} in {m}");
        }
    }
    let (code, m) = curl(&ns, "http://127.0.0.1:8080/metrics");
    assert_eq!(code, 200);
    // The netboot counters come first, the daemon's after them.
    let http = m.find("http_requests_total").expect("netboot counters");
    assert!(http < m.find("seed_nodes").unwrap(), "{m}");

    // Undeploy: powered off, torn down, the ramdisk's wipe, cleaned → available again.
    let t0 = std::time::Instant::now();
    let out = seed(&ns, &["node", "undeploy", "fake-0"]);
    assert!(
        out.status.success(),
        "undeploy: {out:?}\n{}",
        daemon.output()
    );
    let mut row = String::new();
    for _ in 0..120 {
        row = fake0_row(&ns);
        if row.contains("available") || row.contains("failed") {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(row.contains("available"), "{row}\n{}", daemon.output());
    println!(
        "undeploy → available (through cleaning): {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    let log = daemon.output();
    assert!(log.contains("wipe handed to the agent"), "{log}");
    let (code, m) = curl(&ns, "http://127.0.0.1:6385/metrics");
    assert_eq!(code, 200, "{m}");
    assert!(m.contains("seed_nodes{state=\"available\"} 3\n"), "{m}");

    // The OpenAPI document, without a token, on both listeners.
    for url in [
        "http://127.0.0.1:6385/v1/openapi.json",
        "http://127.0.0.1:8080/v1/openapi.json",
    ] {
        let (code, body) = curl(&ns, url);
        assert_eq!(code, 200, "{url}");
        let doc: serde_json::Value = serde_json::from_str(&body).expect("OpenAPI is JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["paths"]["/v1/nodes"]["post"].is_object(), "{url}");
    }

    // `seed image list|show` beside the running daemon show its image store (under its HTTP
    // root, not the directory the command would open by itself).
    let out = seed(&ns, &["image", "list"]);
    let list = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success() && list.starts_with("tiny "), "{out:?}");
    let out = seed(&ns, &["image", "show", "tiny", "--verify"]);
    let show = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(show.contains("(verified)"), "{out:?}");
    assert!(daemon.is_running(), "{}", daemon.output());
}
