//! Issue 5 end to end: from powered-off QEMU nodes to nodes running the tiny golden image from
//! their own disks. `seed daemon` joins the lab's wire (userspace stack), two enrolled nodes —
//! one SeaBIOS, one OVMF — are inspected, then deployed in parallel: the seed verifies the
//! image, PXE-boots the real ramdisk, the agent (over HTTPS, pinned to the seed's CA by the
//! `seed.ca=` fingerprint) streams `rootfs.tar.zst` over HTTP onto the disk, reports done, the seed sets bootdev disk and power-cycles through the virtual BMC,
//! and the image's first boot says "booted" with its credential: both nodes active. Before
//! that, a corrupted image is refused with the node never powered (its disk file unchanged),
//! and the retry with the good image works.
//!
//! Prints per node: power-on → ramdisk up → image written → booted, and the write's bytes/s.
//! Needs `cargo xtask ramdisk` and `cargo xtask image build tiny` (run by `cargo xtask test`),
//! and the deploy-capable agent (the `deployagent` work) in that ramdisk. Measured on the
//! 2-core dev machine under TCG: BIOS node power-on → ramdisk up 29 s → written 34 s → booted
//! 53 s; UEFI 36 / 42 / 60 s; 12.5 MiB stream at ~4 MB/s, both in parallel.

use qemu::node::RunOptions;
use qemu::spec::Firmware;
use qemu::Lab;
use std::path::Path;
use std::time::{Duration, Instant};
use tests::tiny_manifest;

const TOKEN: &str = "deploy-over-wire";

/// The operators' API with this test's token: (status, body).
fn api(port: u16, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    tests::api_call(port, TOKEN, method, path, body)
}

fn node_json(port: u16, name: &str) -> serde_json::Value {
    let (code, body) = api(port, "GET", &format!("/v1/nodes/{name}"), None);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn sha256_of(path: &Path) -> String {
    images::store::hash_file(path).unwrap().0
}

/// Timestamps of one node's deploy (seconds since the deploy request).
#[derive(Debug, Default)]
struct Marks {
    power_on: Option<f64>,
    ramdisk_up: Option<f64>,
    writing: Option<f64>,
    written: Option<f64>,
    booted: Option<f64>,
    bytes: u64,
}

#[test]
fn qemu_deploy_bios_and_uefi_nodes_to_active_and_refuse_a_corrupted_image() {
    tests::require("qemu-system-x86_64");
    let tiny = tiny_manifest();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let plan = tests::test_plan("dp", 2, 512, &[2]);
    let mut file = plan.lab_file();
    file.nodes[1].firmware = Firmware::Uefi;
    let lab = Lab::start(&d.join("lab"), file, RunOptions::default()).expect("lab");
    let specs = lab.file().nodes.clone();

    // The image store under the HTTP root: tiny, and a copy named `broken` whose stream is
    // then corrupted in the store.
    let http = d.join("http");
    let store_dir = http.join("images");
    let images = images::ImageStore::open(&store_dir).unwrap();
    let good = images.import(&tiny).expect("importing tiny");
    let broken_src = d.join("broken");
    std::fs::create_dir_all(&broken_src).unwrap();
    let mut m = good.manifest.clone();
    m.name = "broken".into();
    m.stream.file = "broken.tar.zst".into();
    let mut bytes = std::fs::read(&good.stream).unwrap();
    bytes.push(0); // a different stream (own digest directory), then corrupted below
    m.stream.sha256 = {
        std::fs::write(broken_src.join("broken.tar.zst"), &bytes).unwrap();
        sha256_of(&broken_src.join("broken.tar.zst"))
    };
    m.stream.size = bytes.len() as u64;
    std::fs::write(
        broken_src.join("manifest.json"),
        serde_json::to_vec(&m).unwrap(),
    )
    .unwrap();
    let broken = images.import(&broken_src.join("manifest.json")).unwrap();
    let mut evil = std::fs::read(&broken.stream).unwrap();
    evil[0] ^= 0xff;
    std::fs::write(&broken.stream, evil).unwrap();

    let ws = tests::wire_seed::config(d, lab.file(), specs.clone(), TOKEN);
    tests::wire_seed::enroll(&ws, &[]);
    let api_port = ws.api_port;
    let mut seed = tests::wire_seed::start(&ws, "info,seed::daemon=debug,smoltcp=info");

    let console = |name: &str| {
        let p = lab.node(name).unwrap().lock().unwrap().console_path();
        std::fs::read_to_string(p).unwrap_or_default()
    };
    let consoles = || {
        specs
            .iter()
            .map(|s| format!("--- {} console:\n{}\n", s.name, console(&s.name)))
            .collect::<String>()
    };
    let is_on = |name: &str| lab.node(name).unwrap().lock().unwrap().is_on();

    // Inspect both (they end powered off by their agents).
    for s in &specs {
        let (code, body) = api(
            api_port,
            "POST",
            &format!("/v1/nodes/{}/inspect", s.name),
            None,
        );
        assert_eq!(code, 202, "inspect {}: {body}", s.name);
    }
    let deadline = Instant::now() + Duration::from_secs(400);
    for s in &specs {
        loop {
            let n = node_json(api_port, &s.name);
            if n["state"] == "available" && !is_on(&s.name) {
                break;
            }
            assert!(
                !n["state"].as_str().unwrap_or("").contains("failed"),
                "{}: {n}\n{}\n{}",
                s.name,
                seed.output(),
                consoles()
            );
            assert!(
                Instant::now() < deadline,
                "{} not inspected and off: {n}\n{}\n{}",
                s.name,
                seed.output(),
                consoles()
            );
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    // The corrupted image: refused, the node never powered, its disk untouched.
    let n1 = &specs[0].name;
    let disk = lab.node(n1).unwrap().lock().unwrap().disk_path(0);
    let disk_before = sha256_of(&disk);
    let (code, body) = api(
        api_port,
        "POST",
        &format!("/v1/nodes/{n1}/deploy"),
        Some(r#"{"image": "broken"}"#),
    );
    assert_eq!(code, 202, "{body}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let failed = loop {
        let n = node_json(api_port, n1);
        if n["state"] == "deploy failed" {
            break n;
        }
        assert!(Instant::now() < deadline, "{n}\n{}", seed.output());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        failed["reason"].as_str().unwrap_or("").contains("sha256"),
        "{failed}"
    );
    assert!(!is_on(n1), "{n1} was powered for a refused image");
    assert_eq!(sha256_of(&disk), disk_before, "{n1}'s disk was touched");
    println!("{n1}: corrupted image refused, never powered, disk untouched");

    // Deploy tiny to both in parallel (node1 retries from deploy failed).
    let t0 = Instant::now();
    for s in &specs {
        let (code, body) = api(
            api_port,
            "POST",
            &format!("/v1/nodes/{}/deploy", s.name),
            Some(r#"{"image": "tiny", "root_hint": "size>=1"}"#),
        );
        assert_eq!(code, 202, "deploy {}: {body}", s.name);
    }
    let mut marks: Vec<Marks> = specs.iter().map(|_| Marks::default()).collect();
    let deadline = t0 + Duration::from_secs(900);
    while marks.iter().any(|m| m.booted.is_none()) {
        assert!(
            Instant::now() < deadline,
            "deploy did not finish within 900 s: {marks:?}\nseed:\n{}\n{}",
            seed.output(),
            consoles()
        );
        assert!(seed.is_running(), "the daemon died:\n{}", seed.output());
        for (s, m) in specs.iter().zip(marks.iter_mut()) {
            if m.booted.is_some() {
                continue;
            }
            let now = t0.elapsed().as_secs_f64();
            if m.power_on.is_none() && is_on(&s.name) {
                m.power_on = Some(now);
            }
            let n = node_json(api_port, &s.name);
            let state = n["state"].as_str().unwrap_or("").to_string();
            assert!(
                state == "deploying" || state == "active",
                "{}: {n}\nseed:\n{}\n{}",
                s.name,
                seed.output(),
                consoles()
            );
            match n["progress"]["phase"].as_str() {
                Some(_) if m.ramdisk_up.is_none() => m.ramdisk_up = Some(now),
                _ => {}
            }
            if n["progress"]["phase"] == "writing" && m.writing.is_none() {
                m.writing = Some(now);
            }
            if n["progress"]["phase"] == "done" && m.written.is_none() {
                m.written = Some(now);
                m.bytes = n["progress"]["total"].as_u64().unwrap_or(0);
            }
            if state == "active" {
                m.booted = Some(now);
                m.written.get_or_insert(now);
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for (s, m) in specs.iter().zip(&marks) {
        let f = |v: Option<f64>| v.map_or("?".into(), |v| format!("{v:.1} s"));
        let write_s = match (m.writing.or(m.ramdisk_up), m.written) {
            (Some(a), Some(b)) if b > a => b - a,
            _ => f64::NAN,
        };
        println!(
            "{} ({:?}): power-on {} → ramdisk up {} → image written {} → booted {}; image write {} bytes at {:.0} B/s",
            s.name,
            s.firmware,
            f(m.power_on),
            f(m.ramdisk_up),
            f(m.written),
            f(m.booted),
            m.bytes,
            m.bytes as f64 / write_s
        );
    }
    // Both run the image from their own disks.
    for s in &specs {
        let node = lab.node(&s.name).unwrap().clone();
        assert!(node.lock().unwrap().is_on(), "{} is off", s.name);
        assert_eq!(
            node.lock().unwrap().booted_from(),
            Some(qemu::ipmi::BootDevice::Disk),
            "{} did not boot from its disk",
            s.name
        );
        let n = node_json(api_port, &s.name);
        assert_eq!(n["state"], "active", "{n}");
        assert!(n.get("last_error").is_none(), "{n}");
        // The serial log shows the image's init and its first-boot report.
        let log = console(&s.name);
        assert!(log.contains("seed-image: tiny"), "{}:\n{log}", s.name);
        assert!(
            log.contains("seed-firstboot: reported booted"),
            "{}:\n{log}",
            s.name
        );
        // Over the agents' HTTPS, pinned (the wire seed's default `[agent] tls`): the first
        // boot through `seed-config booted` (the console keeps the last boot only; the ramdisk's
        // agent had only the https:// `seed.url=` to call).
        assert!(
            log.contains("seed-firstboot: reported booted to https://10.80.0.1:8443"),
            "{}:\n{log}",
            s.name
        );
    }
    let log = seed.output();
    assert!(log.contains("agents call the seed over HTTPS"), "{log}");
    drop(lab);
}
