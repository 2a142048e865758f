//! Issues 6 + 7 end to end in QEMU: a stack configures its nodes, and an update reconfigures
//! them without a redeploy.
//!
//! `seed daemon` joins a 2-node QEMU lab's wire (its userspace IP stack) with the tiny golden
//! image in its store. The nodes are enrolled from an instackenv-style YAML through the API
//! (`seed node import`), inspected, then `seed stack create demo -f
//! seed/tests/templates/demo.yaml -P greeting=hello -P profile=demo` deploys the tiny image on both (the real
//! ramdisk writes each disk, the node reboots from it and reports booted), the stack publishes
//! each node's metadata, the image's `seed-config collect` service renders
//! `/etc/seed-demo/demo.conf` (images/elements/seed-demo) and its post-configure script prints it
//! on the serial console, and the node signals. Checked: the stack is CREATE_COMPLETE only with
//! both nodes' configuration on their consoles; each console shows its own node name, the
//! greeting and the shared generated password (the one the seed published). Then `seed stack
//! update demo -P greeting=bonjour`: both consoles show `bonjour` within the wait, with no
//! redeploy (same QEMU processes, one image boot on each console, deploy and transition counters
//! unchanged, nodes still active). Prints per-node power-on → active times and the time from
//! `stack update` to all nodes reconfigured. Finally `seed stack delete demo`: the stack goes,
//! the nodes are released (their metadata forgotten), powered off, cleaned (the ramdisk wipes
//! their disks: no partition table left in the qcow2) and `available` again, powered off.
//! Prints the delete → available time.
//!
//! Needs `cargo xtask ramdisk` and `cargo xtask image build tiny` (run by `cargo xtask test`).

use qemu::node::RunOptions;
use qemu::Lab;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use tests::tiny_manifest;

const TOKEN: &str = "stack-config-token";
const NODES: usize = 2;

/// The operators' API with this test's token: (status, body).
fn api(port: u16, method: &str, path: &str) -> (u16, String) {
    tests::api_call(port, TOKEN, method, path, None)
}

fn demo_template() -> PathBuf {
    tests::workspace_root().join("seed/tests/templates/demo.yaml")
}

fn api_json(port: u16, path: &str) -> serde_json::Value {
    let (code, body) = api(port, "GET", path);
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// The `seed` CLI against the daemon's API; panics with its output unless it succeeds.
fn seed_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new(tests::seed_bin())
        .args(args)
        .env("SEED_API", format!("http://127.0.0.1:{port}"))
        .env("SEED_TOKEN", TOKEN)
        .env_remove("SEED_STORE")
        .output()
        .expect("seed");
    let text = tests::printed(&out);
    assert!(out.status.success(), "seed {args:?}: {text}");
    text
}

/// A counter or a histogram's `_count` from Prometheus text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

/// Every complete `seed-demo: begin` … `seed-demo: end` block on a console, oldest first, as
/// `key = value` pairs.
fn demo_blocks(console: &str) -> Vec<BTreeMap<String, String>> {
    let mut current: Option<BTreeMap<String, String>> = None;
    let mut blocks = vec![];
    for line in console.lines() {
        let Some(rest) = line.trim_end_matches('\r').split("seed-demo: ").nth(1) else {
            continue;
        };
        if rest.starts_with("begin ") {
            current = Some(BTreeMap::new());
        } else if rest == "end" {
            blocks.extend(current.take());
        } else if let (Some(block), Some((k, v))) = (current.as_mut(), rest.split_once(" = ")) {
            block.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    blocks
}

/// The last complete block on a console.
fn last_demo_block(console: &str) -> Option<BTreeMap<String, String>> {
    demo_blocks(console).pop()
}

#[test]
fn last_demo_block_reads_the_newest_complete_block() {
    let console = "boot noise\nseed-demo: begin /etc/seed-demo/demo.conf\n\
        seed-demo: # comment\nseed-demo: node = node1\nseed-demo: greeting = hello\n\
        seed-demo: end\n[   12.0] kernel line\r\nseed-demo: begin /etc/seed-demo/demo.conf\r\n\
        seed-demo: greeting = bonjour\r\nseed-demo: end\r\nseed-demo: begin x\nseed-demo: greeting = partial\n";
    assert_eq!(demo_blocks(console).len(), 2);
    let b = last_demo_block(console).unwrap();
    assert_eq!(b.get("greeting").map(String::as_str), Some("bonjour"));
    assert_eq!(b.get("node"), None);
    assert!(last_demo_block("nothing here").is_none());
}

/// The template itself: a greeting update replaces the config and updates the deployment in
/// place; no server is created, replaced or deleted (so no node is redeployed).
#[test]
fn demo_template_update_of_the_greeting_touches_no_server() {
    use seed::template::{plan, Stack, Template};
    let t = Template::load(&demo_template()).expect("demo.yaml parses");
    let p = |kv: &[(&str, &str)]| -> Vec<(String, String)> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let old = Stack::new(t.clone(), &p(&[("greeting", "hello")])).expect("binds");
    let names: Vec<&str> = old.members.iter().map(|m| m.name.as_str()).collect();
    for m in ["servers-0", "servers-1", "demo_config", "demo_deployments"] {
        assert!(names.iter().any(|n| n == &m), "{m} in {names:?}");
    }
    let new = old.update(t, &p(&[("greeting", "bonjour")])).unwrap();
    let plan = plan(&old, &new);
    assert_eq!(plan.replace, ["demo_config"], "{plan:?}");
    assert_eq!(plan.update, ["demo_deployments"], "{plan:?}");
    assert!(plan.create.is_empty() && plan.delete.is_empty(), "{plan:?}");
    for s in ["servers-0", "servers-1", "demo_password"] {
        assert!(plan.unchanged.contains(&s.to_string()), "{s}: {plan:?}");
    }
}

#[test]
fn qemu_stack_config_two_nodes_render_their_metadata_and_follow_an_update() {
    tests::require("qemu-system-x86_64");
    tests::require("curl");
    let manifest = tiny_manifest();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();

    let plan = tests::test_plan("sc", NODES, 512, &[2]);
    let lab = Lab::create(&d.join("lab"), &plan, RunOptions::default()).expect("lab");
    let specs = lab.file().nodes.clone();
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();

    // The tiny image in the daemon's store (served to the ramdisk under <http>/images).
    let ws = tests::wire_seed::config(d, lab.file(), specs.clone(), TOKEN);
    std::fs::create_dir_all(ws.images()).unwrap();
    images::ImageStore::open(ws.images())
        .unwrap()
        .import(&manifest)
        .expect("importing the tiny image");
    let api_port = ws.api_port;
    let mut seed = tests::wire_seed::start(&ws, "info");

    let console = |name: &str| -> String {
        let p = lab.node(name).unwrap().lock().unwrap().console_path();
        String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned()
    };
    let consoles = || {
        names
            .iter()
            .map(|n| format!("--- {n} console:\n{}\n", console(n)))
            .collect::<String>()
    };
    let pid = |name: &str| lab.node(name).unwrap().lock().unwrap().pid();

    // Enroll from an instackenv-style file through the API, with the template's profile.
    let inv = seed::cli::lab_seed::instackenv(&specs, &[], "capabilities: \"profile:demo\"");
    std::fs::write(d.join("nodes.yaml"), inv).unwrap();
    let nodes_yaml = d.join("nodes.yaml");
    seed_cli(api_port, &["node", "import", nodes_yaml.to_str().unwrap()]);

    // Inspect both at once; they power off by themselves when done.
    let t0 = Instant::now();
    for n in &names {
        let (code, body) = api(api_port, "POST", &format!("/v1/nodes/{n}/inspect"));
        assert_eq!(code, 202, "inspect {n}: {body}");
    }
    let deadline = t0 + Duration::from_secs(300);
    loop {
        assert!(seed.is_running(), "the daemon died:\n{}", seed.output());
        let states: Vec<String> = names
            .iter()
            .map(|n| {
                api_json(api_port, &format!("/v1/nodes/{n}"))["state"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        assert!(
            !states.iter().any(|s| s.contains("fail")),
            "inspection failed: {states:?}\nseed:\n{}\n{}",
            seed.output(),
            consoles()
        );
        if states.iter().all(|s| s == "available") && names.iter().all(|n| pid(n).is_none()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "inspection not done in 300 s: {states:?}\nseed:\n{}\n{}",
            seed.output(),
            consoles()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    println!(
        "inspected both nodes in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    // Create the stack; follow it, the nodes' power and states.
    let template = demo_template();
    let template = template.to_str().unwrap();
    let t_create = Instant::now();
    seed_cli(
        api_port,
        &[
            "stack",
            "create",
            "demo",
            "-f",
            template,
            "-P",
            "greeting=hello",
            "-P",
            "profile=demo",
        ],
    );
    let mut powered: BTreeMap<String, f64> = BTreeMap::new();
    let mut active: BTreeMap<String, f64> = BTreeMap::new();
    let deadline = t_create + Duration::from_secs(900);
    let stack = loop {
        assert!(seed.is_running(), "the daemon died:\n{}", seed.output());
        let now = t_create.elapsed().as_secs_f64();
        for n in &names {
            if pid(n).is_some() {
                powered.entry(n.clone()).or_insert(now);
            }
            let node = api_json(api_port, &format!("/v1/nodes/{n}"));
            if node["state"] == "active" {
                active.entry(n.clone()).or_insert(now);
            }
        }
        let stack = api_json(api_port, "/v1/stacks/demo");
        let status = stack["status"].as_str().unwrap_or("").to_string();
        if status == "CREATE_COMPLETE" {
            // The stack completes on the nodes' signals, which come after their configuration
            // was applied and printed: both consoles must show it by now.
            for n in &names {
                let block = last_demo_block(&console(n)).unwrap_or_default();
                assert_eq!(
                    block.get("greeting").map(String::as_str),
                    Some("hello"),
                    "stack complete but {n} shows no configuration\n{stack}\n{}",
                    consoles()
                );
            }
            break stack;
        }
        assert!(
            !status.ends_with("FAILED"),
            "stack failed: {stack}\nseed:\n{}\n{}",
            seed.output(),
            consoles()
        );
        assert!(
            Instant::now() < deadline,
            "stack not complete in 900 s: {stack}\nseed:\n{}\n{}",
            seed.output(),
            consoles()
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    let created = t_create.elapsed().as_secs_f64();
    println!("stack create → CREATE_COMPLETE: {created:.1} s");
    for n in &names {
        let on = powered.get(n).copied().unwrap_or(0.0);
        let act = active.get(n).copied().unwrap_or(created);
        println!(
            "{n}: powered on at {on:.1} s, active at {act:.1} s (power-on → active {:.1} s)",
            act - on
        );
    }
    println!("{}", seed_cli(api_port, &["stack", "show", "demo"]));

    // Every member's node is active; each console shows its own name, the greeting, and the
    // one password the seed generated and published.
    let members = stack["members"].as_array().expect("members");
    let mut password: Option<String> = None;
    for n in &names {
        assert!(
            members
                .iter()
                .any(|m| m["node"] == n.as_str() && m["node_state"] == "active"),
            "{n} is not an active member: {stack}"
        );
        // The first render already had the group's config: a node that came up before its
        // sibling once rendered a config-less document (empty greeting, no password).
        let blocks = demo_blocks(&console(n));
        assert!(
            blocks
                .iter()
                .all(|b| b.get("greeting").map(String::as_str) == Some("hello")),
            "{n} rendered an incomplete configuration: {blocks:?}"
        );
        let md = api_json(api_port, &format!("/v1/nodes/{n}/metadata"));
        assert_eq!(
            md["counter"], 1,
            "{n}: metadata published more than once: {md}"
        );
        let block = last_demo_block(&console(n)).unwrap();
        assert_eq!(block.get("node"), Some(n), "{n}: {block:?}");
        assert_eq!(
            block.get("greeting").map(String::as_str),
            Some("hello"),
            "{n}"
        );
        let pw = block
            .get("password")
            .cloned()
            .unwrap_or_else(|| panic!("{n}: no password in {block:?}"));
        assert_eq!(pw.len(), 16, "{n}: {pw:?}");
        assert!(pw.chars().all(|c| c.is_ascii_alphanumeric()), "{pw:?}");
        match &password {
            None => password = Some(pw.clone()),
            Some(p) => assert_eq!(p, &pw, "the nodes got different passwords"),
        }
        let md = api_json(api_port, &format!("/v1/nodes/{n}/metadata")).to_string();
        assert!(
            md.contains(&pw),
            "{n}: the console's password is not the published one: {md}"
        );
    }
    let password = password.unwrap();
    assert!(
        !seed.output().contains(&password),
        "the generated password is in the daemon's log"
    );

    // Update the greeting: only the configuration changes on the nodes.
    let (_, metrics_before) = api(api_port, "GET", "/metrics");
    let deploys = metric(&metrics_before, "seed_deploy_duration_seconds_count");
    let transitions = metric(&metrics_before, "seed_transitions_total");
    let pids: Vec<Option<u32>> = names.iter().map(|n| pid(n)).collect();
    assert!(pids.iter().all(Option::is_some), "nodes off: {pids:?}");

    let t_update = Instant::now();
    seed_cli(
        api_port,
        &[
            "stack",
            "update",
            "demo",
            "-f",
            template,
            "-P",
            "greeting=bonjour",
            "-P",
            "profile=demo",
        ],
    );
    let mut reconfigured: BTreeMap<String, f64> = BTreeMap::new();
    let deadline = t_update + Duration::from_secs(180);
    while reconfigured.len() < names.len() {
        for n in &names {
            if reconfigured.contains_key(n) {
                continue;
            }
            let block = last_demo_block(&console(n)).unwrap_or_default();
            if block.get("greeting").map(String::as_str) == Some("bonjour") {
                reconfigured.insert(n.clone(), t_update.elapsed().as_secs_f64());
                assert_eq!(block.get("node"), Some(n));
                assert_eq!(block.get("password"), Some(&password), "{n}: {block:?}");
            }
        }
        assert!(seed.is_running(), "the daemon died:\n{}", seed.output());
        assert!(
            Instant::now() < deadline,
            "not reconfigured in 180 s: {reconfigured:?}\nseed:\n{}\n{}",
            seed.output(),
            consoles()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let all = reconfigured.values().copied().fold(0.0, f64::max);
    println!("stack update → all nodes reconfigured: {all:.1} s {reconfigured:?}");

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let stack = api_json(api_port, "/v1/stacks/demo");
        let status = stack["status"].as_str().unwrap_or("").to_string();
        if status == "UPDATE_COMPLETE" {
            break;
        }
        assert!(!status.ends_with("FAILED"), "update failed: {stack}");
        assert!(
            Instant::now() < deadline,
            "update not complete: {stack}\nseed:\n{}",
            seed.output()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    println!(
        "stack update → UPDATE_COMPLETE: {:.1} s",
        t_update.elapsed().as_secs_f64()
    );

    // No redeploy: the same QEMU processes, one image boot each, no deploy or lifecycle
    // transition since, both nodes still active.
    let (_, metrics_after) = api(api_port, "GET", "/metrics");
    assert_eq!(
        metric(&metrics_after, "seed_deploy_duration_seconds_count"),
        deploys
    );
    assert_eq!(
        metric(&metrics_after, "seed_transitions_total"),
        transitions
    );
    for (n, before) in names.iter().zip(&pids) {
        assert_eq!(&pid(n), before, "{n} was power cycled");
        let c = console(n);
        assert_eq!(
            c.matches("seed-image: tiny").count(),
            1,
            "{n} booted its image more than once:\n{c}"
        );
        assert_eq!(
            api_json(api_port, &format!("/v1/nodes/{n}"))["state"],
            "active"
        );
    }
    // Each node read its own document with its own credential: none was refused
    // (checked before the delete revokes them).
    assert!(
        !seed.output().contains("unknown node credential refused"),
        "a node's credential was refused:\n{}",
        seed.output()
    );

    // Delete: the stack goes, its nodes are released (metadata forgotten), powered off, torn
    // down, PXE-booted into the ramdisk, wiped, and available again (powered off).
    let t_delete = Instant::now();
    seed_cli(api_port, &["stack", "delete", "demo"]);
    let deadline = t_delete + Duration::from_secs(300);
    let mut seen_cleaning = false;
    loop {
        let (code, body) = api(api_port, "GET", "/v1/stacks/demo");
        let states: Vec<String> = names
            .iter()
            .map(|n| {
                api_json(api_port, &format!("/v1/nodes/{n}"))["state"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        seen_cleaning |= states.iter().any(|s| s == "cleaning");
        assert!(
            !states.iter().any(|s| s.contains("fail")),
            "cleaning failed: {states:?}\nseed:\n{}\n{}",
            seed.output(),
            consoles()
        );
        let off = names.iter().all(|n| pid(n).is_none());
        if code == 404 && off && states.iter().all(|s| s == "available") {
            println!(
                "stack delete → nodes cleaned, available and off: {:.1} s (cleaning seen: {seen_cleaning})",
                t_delete.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not cleaned in 300 s: {code} {body} {states:?} off={off}\nseed:\n{}\n{}",
            seed.output(),
            consoles()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(
        seed.output().contains("wipe handed to the agent"),
        "no wipe was handed to the agents:\n{}",
        seed.output()
    );
    // The disks' partition tables are gone: no MBR signature, no primary GPT header.
    for n in &names {
        let disk = lab.node(n).unwrap().lock().unwrap().disk_path(0);
        let head = d.join(format!("{n}-head.raw"));
        let out = Command::new(tests::require("qemu-img"))
            .args(["dd", "-f", "qcow2", "-O", "raw", "bs=512", "count=34"])
            .arg(format!("if={}", disk.display()))
            .arg(format!("of={}", head.display()))
            .output()
            .expect("running qemu-img");
        assert!(
            out.status.success(),
            "qemu-img dd {}: {out:?}",
            disk.display()
        );
        let b = std::fs::read(&head).unwrap();
        assert_eq!(b.len(), 34 * 512, "{n}");
        assert_ne!(&b[510..512], &[0x55, 0xaa], "{n}: an MBR is left");
        assert_ne!(&b[512..520], b"EFI PART", "{n}: a GPT is left");
        assert!(
            b.iter().all(|&x| x == 0),
            "{n}: the disk's head is not zeroed"
        );
    }
    for n in &names {
        let (code, body) = api(api_port, "GET", &format!("/v1/nodes/{n}/metadata"));
        assert!(
            code == 404 || !body.contains(&password),
            "{n} still carries the stack's metadata: {code} {body}"
        );
    }

    drop(lab);
}
