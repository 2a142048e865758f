//! The hand-off on real machines (issue 15), the TripleO story end to end on six QEMU machines,
//! the seed among them: the seed machine boots the appliance ISO (a CD, SeaBIOS) whose SEEDCFG
//! `seed.toml` says `[ha] enabled`, so its daemon is the first member of an HA control plane
//! (a one-member etcd cluster it runs) from its first boot. The operator enrolls five machines
//! through its API; it deploys `seed/templates/undercloud.yaml` (three members) with the
//! `undercloud` golden image it carries — real firmware, iPXE, the deploy ramdisk, IPMI through
//! the lab's virtual BMCs — and each machine becomes a member by itself: seed-config renders
//! its daemon's config from the metadata, its daemon has its etcd member added through the
//! floating address, the leader promotes it, its daemon campaigns, and only then does its
//! deployment signal (CREATE_COMPLETE). Then `seed handoff`: the seed leaves and switches its
//! machine off, and the undercloud answers the operator's API at the floating address with the
//! same nodes, still `active`. It inspects the two other machines itself and deploys the
//! overcloud (a controller and a compute of lab-overcloud.yaml) on them; while that deploy runs,
//! the undercloud's leader is powered off through its BMC: another member takes the floating
//! address over and the overcloud completes. Then Stage N and "recover from the loss by scaling
//! out again" in one step: the seed's own machine is enrolled into the undercloud, inspected,
//! and `stack replace` of the dead member deploys it there; it joins the etcd cluster, and the
//! dead member leaves the membership once its machine is taken back. Through it all, one DHCP
//! server at a time (a capture of the wire).
//!
//! The lab is the one `cargo xtask lab up --appliance` gives a person (README, "From seed to
//! HA undercloud in the lab"): the machines on the lab's wire, its management host relaying
//! every BMC at 10.80.0.3 (the seed and the undercloud reach them there) and carrying a port of
//! the host's 127.0.0.1 to the floating API address, whoever holds it; the seed machine's own
//! API on another port. The test calls the APIs there as an operator's laptop would. Nothing
//! touches the host's interfaces. Each phase's time is printed.

mod handoff_common;

use handoff_common::{dhcp_replies, HandoffLab, FLOAT, SEED_IP};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

const TOKEN: &str = "handoff-undercloud-operator-token";
/// node1–3 the undercloud, node4 and node5 the overcloud (the seed machine comes after them).
const NODES: usize = 5;

/// The API at `at`: (status, body), or (0, what curl said) when nothing answered — said on
/// stderr too, so a machine that went away mid-poll shows when; the poll's deadline then fails
/// with the consoles beside it.
fn api(at: u16, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let cmd = std::process::Command::new(tests::require("curl"));
    let url = format!("http://127.0.0.1:{at}{path}");
    tests::try_curl(cmd, method, &url, Some(TOKEN), body, 30).unwrap_or_else(|e| {
        eprintln!("no answer: {e}");
        (0, e)
    })
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or(serde_json::Value::Null)
}

/// Poll `ok` every second (each poll is a curl into the namespace: the VMs need the CPU).
fn wait(what: &str, within: Duration, mut ok: impl FnMut() -> bool, context: impl Fn() -> String) {
    tests::daemon::wait(
        what,
        within,
        || {
            let done = ok();
            if !done {
                std::thread::sleep(Duration::from_secs(1));
            }
            done
        },
        context,
    );
}

/// Inspect `nodes` (all at once) through the daemon at `at` and wait until they are available.
fn inspect(at: u16, nodes: &[&str], context: impl Fn() -> String) {
    for node in nodes {
        let (code, body) = api(at, "POST", &format!("/v1/nodes/{node}/inspect"), None);
        assert!(code == 202 || code == 200, "{node}: {code} {body}");
    }
    wait(
        &format!("{nodes:?} available"),
        Duration::from_secs(300),
        || {
            nodes.iter().all(|n| {
                api(at, "GET", &format!("/v1/nodes/{n}"), None)
                    .1
                    .contains("\"available\"")
            })
        },
        context,
    );
}

/// Ask the daemon at `at` to create stack `name` from the repository's `template`.
fn post_stack(at: u16, name: &str, template: &str, params: serde_json::Value) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let template = std::fs::read_to_string(root.join(template)).unwrap();
    let req = serde_json::json!({"name": name, "template": template, "params": params});
    let (code, body) = api(at, "POST", "/v1/stacks", Some(&req.to_string()));
    assert_eq!(code, 201, "{body}");
}

/// Wait (bounded by `within`) until stack `name` is `want`; a `…_FAILED` fails at once.
fn wait_stack(
    at: u16,
    name: &str,
    want: &str,
    within: Duration,
    context: impl Fn() -> String,
) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    wait(
        &format!("the {name} stack {want}"),
        within,
        || {
            last = json(&api(at, "GET", &format!("/v1/stacks/{name}"), None).1);
            let status = last["status"].as_str().unwrap_or("");
            assert!(!status.ends_with("_FAILED"), "{last}\n{}", context());
            status == want
        },
        &context,
    );
    last
}

/// The control plane's (members, daemons) as the daemon at `at` lists them.
fn membership(at: u16) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let m = json(&api(at, "GET", "/v1/ha/members", None).1);
    let list = |k: &str| m[k].as_array().cloned().unwrap_or_default();
    (list("members"), list("daemons"))
}

/// The names of `members` that vote (not learners).
fn voters(members: &[serde_json::Value]) -> BTreeSet<String> {
    members
        .iter()
        .filter(|m| m["learner"] == false)
        .filter_map(|m| m["name"].as_str().map(str::to_string))
        .collect()
}

fn names(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// One DHCP server at a time: every answer in `replies` from the seed machine (`seed_mac`) no
/// later than it went off, or from an undercloud machine (`member_macs`) no earlier than the seed
/// was asked to hand over — the seed machine counts as one of them once the undercloud took it
/// back (`adopted`, Stage N); no exchange answered by two; both answered some. Returns how many
/// each did.
fn one_dhcp_server_at_a_time(
    replies: &[(f64, String, String, String)],
    (seed_mac, off, adopted): (&str, f64, f64),
    (member_macs, asked): (&[String], f64),
) -> (usize, usize) {
    let mut by_exchange: std::collections::BTreeMap<_, BTreeSet<_>> = Default::default();
    let (mut from_seed, mut from_uc) = (0, 0);
    for (t, src, xid, ty) in replies {
        if src == seed_mac && *t < adopted {
            assert!(
                *t <= off,
                "the seed answered DHCP after it left: {replies:?}"
            );
            from_seed += 1;
        } else if member_macs.contains(src) || src == seed_mac {
            assert!(
                *t >= asked,
                "the undercloud answered DHCP while the seed led: {replies:?}"
            );
            from_uc += 1;
        } else {
            panic!("a DHCP answer from {src}, neither the seed nor the undercloud: {replies:?}");
        }
        by_exchange.entry((xid, ty)).or_default().insert(src);
    }
    assert!(from_seed > 0 && from_uc > 0, "{replies:?}");
    assert!(
        by_exchange.values().all(|w| w.len() == 1),
        "two servers answered one exchange: {by_exchange:?}"
    );
    (from_seed, from_uc)
}

fn unix_secs(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// `seed ARGS` against the API on the host's port `at` (the operator's laptop); its output
/// (panics with it unless it succeeds).
fn seed_cli(at: u16, args: &[&str]) -> String {
    let out = std::process::Command::new(tests::seed_bin())
        .args(args)
        .env("SEED_API", format!("http://127.0.0.1:{at}"))
        .env("SEED_TOKEN", TOKEN)
        .output()
        .unwrap();
    let text = tests::printed(&out);
    assert!(out.status.success(), "seed {args:?}: {text}");
    text
}

/// The seed machine's `seed.toml` (on its stick's SEEDCFG partition): its own address, the
/// DHCP pool the undercloud takes over, leases of a minute (the members' own, from the seed,
/// run out while they serve: a member stops renewing it, its address is static once it runs),
/// and `[ha]`: the first member of the control plane from its first boot, the floating address
/// held.
fn appliance_toml() -> String {
    format!(
        "[provisioning]\naddress = \"{SEED_IP}/24\"\n\
         [dhcp]\nmode = \"authoritative\"\npool_start = \"10.80.0.200\"\n\
         pool_end = \"10.80.0.250\"\nlease_time = 60\n\
         [api]\ntoken = \"{TOKEN}\"\n\
         [ha]\nenabled = true\nfloating_address = \"{FLOAT}/24\"\n"
    )
}

#[test]
fn qemu_handoff_undercloud_from_the_appliance_survives_a_loss_and_adopts_the_seed_machine() {
    tests::require("qemu-system-x86_64");
    tests::require("curl");
    tests::require("ipmitool");
    let iso = tests::appliance::built().join("seed-appliance.iso");
    let t0 = Instant::now();
    let phase = |what: &str| eprintln!("[{:>6.1}s] {what}", t0.elapsed().as_secs_f64());
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // Every DHCP datagram on the wire, to see who answered when.
    let pcap = d.join("dhcp.pcap");

    // The seed machine boots its stick (the ISO as a CD, SeaBIOS) with the config on it.
    let medium = qemu::appliance::Medium::Iso {
        path: tests::appliance::iso_with_config(&iso, &d.join("medium"), &appliance_toml(), None),
    };
    let seed = handoff_common::Appliance {
        medium,
        memory_mib: 1536,
    };
    let mut lab = HandoffLab::start(&d.join("lab"), NODES, seed, &pcap);
    const SEED: usize = NODES;
    let consoles = |machines: &[usize]| {
        let mut out = String::new();
        for &i in machines {
            let name = &lab.specs[i].name;
            out += &format!("---- {name} console ----\n{}\n", lab.console(i));
        }
        out
    };
    let every = || consoles(&(0..=NODES).collect::<Vec<_>>());
    let seed_ctx = || consoles(&[SEED]);
    wait(
        "the seed machine's API",
        Duration::from_secs(600),
        || {
            lab.console(SEED)
                .contains(&format!("API answering at http://{SEED_IP}:6385"))
        },
        seed_ctx,
    );
    wait(
        "the seed holds the floating address",
        Duration::from_secs(60),
        || api(lab.float_api, "GET", "/v1/nodes", None).0 == 200,
        seed_ctx,
    );
    let c = lab.console(SEED);
    for line in ["config from SEEDCFG on", "state in RAM"] {
        assert!(
            c.contains(line),
            "no {line:?} on the seed machine's console:\n{c}"
        );
    }
    phase("the seed machine is up: the first member of the control plane");

    // The operator enrolls the five machines; the seed machine carries the images.
    let nodes = d.join("nodes.yaml");
    std::fs::write(&nodes, lab.nodes_yaml(0..NODES)).unwrap();
    seed_cli(
        lab.seed_api,
        &["node", "import", &nodes.display().to_string()],
    );
    let images = seed_cli(lab.seed_api, &["image", "list"]);
    assert!(
        images.contains("undercloud") && images.contains("tiny"),
        "{images}"
    );
    let (members, daemons) = membership(lab.seed_api);
    assert_eq!(voters(&members), names(&["seed"]), "{members:?}");
    assert_eq!(daemons.len(), 1, "{daemons:?}");

    let members_ctx = || consoles(&[0, 1, 2, SEED]);
    inspect(lab.seed_api, &["node1", "node2", "node3"], members_ctx);
    phase("node1-3 inspected by the seed");

    // The members join through the floating address: the seed's API now, the undercloud's
    // leader after the hand-off (a replacement member joins that way).
    let params = serde_json::json!({
        "member_count": "3",
        "join": format!("http://{FLOAT}:6385"),
        "endpoints": format!("http://{SEED_IP}:2379"),
        "api_token": TOKEN,
        "server_ip": FLOAT,
        "floating_address": format!("{FLOAT}/24"),
        "subnet": "10.80.0.0/24",
        "pool_start": "10.80.0.200",
        "pool_end": "10.80.0.250",
    });
    post_stack(
        lab.seed_api,
        "undercloud",
        "seed/templates/undercloud.yaml",
        params,
    );
    wait_stack(
        lab.seed_api,
        "undercloud",
        "CREATE_COMPLETE",
        Duration::from_secs(900),
        members_ctx,
    );
    phase("undercloud stack complete: node1-3 are members");
    for i in 0..3 {
        let c = lab.console(i);
        for line in [
            "seed-image: undercloud".to_string(),
            format!("seed-undercloud: node{} votes and campaigns", i + 1),
            "static from now on".to_string(),
        ] {
            assert!(
                c.contains(&line),
                "no {line:?} on node{}'s console:\n{c}",
                i + 1
            );
        }
    }
    let (members, daemons) = membership(lab.seed_api);
    assert_eq!(
        voters(&members),
        names(&["seed", "node1", "node2", "node3"]),
        "{members:?}"
    );
    assert_eq!(daemons.len(), 4, "{daemons:?}");

    // The hand-off: asked again while a check is still settling (bounded). The seed machine
    // leaves the control plane and switches itself off.
    let asked = std::time::SystemTime::now();
    let t = Instant::now();
    loop {
        let (code, body) = api(lab.seed_api, "POST", "/v1/ha/handoff", None);
        if code == 202 || code == 200 {
            break;
        }
        assert_eq!(code, 409, "{body}");
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "hand-off refused: {body}\n{}",
            seed_ctx()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    wait(
        "the seed machine off",
        Duration::from_secs(180),
        || !lab.powered(SEED),
        seed_ctx,
    );
    let off = std::time::SystemTime::now();
    phase("the seed handed over and switched its machine off");

    // The undercloud answers at the floating address: the same nodes, still active.
    let uc_ctx = || consoles(&[0, 1, 2]);
    wait(
        "the undercloud answers at the floating address",
        Duration::from_secs(120),
        || {
            (1..=3).all(|i| {
                let (code, body) = api(lab.float_api, "GET", &format!("/v1/nodes/node{i}"), None);
                code == 200 && body.contains("\"active\"")
            })
        },
        uc_ctx,
    );
    let (members, _) = membership(lab.float_api);
    assert_eq!(
        voters(&members),
        names(&["node1", "node2", "node3"]),
        "{members:?}"
    );
    phase("the undercloud leads");

    // The undercloud inspects the two other machines itself (its DHCP, its ramdisk, its BMC
    // driver) and deploys the overcloud on them (a controller and a compute), with the image it
    // replicated from the seed.
    inspect(lab.float_api, &["node4", "node5"], every);
    phase("node4-5 inspected by the undercloud");
    post_stack(
        lab.float_api,
        "overcloud",
        "seed/tests/templates/lab-overcloud.yaml",
        serde_json::json!({"compute_count": "1", "greeting": "deployed by the undercloud"}),
    );
    wait(
        "an overcloud machine deploying",
        Duration::from_secs(120),
        || {
            let v = json(&api(lab.float_api, "GET", "/v1/stacks/overcloud", None).1);
            v["members"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m["node_state"] == "deploying")
        },
        every,
    );
    // Mid-deploy, the undercloud's leader dies: power cut through its BMC.
    let mut dead = String::new();
    wait(
        "the undercloud's leader known",
        Duration::from_secs(60),
        || {
            let (_, daemons) = membership(lab.float_api);
            let leader = daemons.iter().find(|d| d["leader"] == true);
            if let Some(n) = leader.and_then(|d| d["name"].as_str()) {
                dead = n.to_string();
            }
            !dead.is_empty()
        },
        uc_ctx,
    );
    let dead_i: usize = dead.trim_start_matches("node").parse::<usize>().unwrap() - 1;
    assert!(dead_i < 3, "the leader {dead} is no undercloud member");
    lab.power_off(dead_i);
    phase(&format!(
        "the undercloud's leader {dead} powered off while the overcloud deploys"
    ));
    wait_stack(
        lab.float_api,
        "overcloud",
        "CREATE_COMPLETE",
        Duration::from_secs(900),
        every,
    );
    for i in [3, 4] {
        let c = lab.console(i);
        assert!(
            c.contains("seed-demo: greeting = deployed by the undercloud"),
            "{c}"
        );
        assert!(
            c.contains(&format!("seed-demo: node = node{}", i + 1)),
            "{c}"
        );
    }
    let (_, daemons) = membership(lab.float_api);
    let leader = daemons.iter().find(|d| d["leader"] == true);
    assert!(
        leader.is_some_and(|d| d["name"] != dead.as_str()),
        "{daemons:?}"
    );
    phase("the overcloud deployed by the undercloud, across its leader's loss");

    // Stage N, and "recover from the loss by scaling out again" in one step: the seed's own
    // machine is enrolled into the undercloud, inspected, and the dead member moves onto it.
    let adopted = std::time::SystemTime::now();
    let machine = lab.specs[SEED].name.clone();
    std::fs::write(&nodes, lab.nodes_yaml(SEED..SEED + 1)).unwrap();
    seed_cli(
        lab.float_api,
        &["node", "import", &nodes.display().to_string()],
    );
    inspect(lab.float_api, &[machine.as_str()], every);
    phase(&format!(
        "the seed machine ({machine}) inspected by the undercloud"
    ));
    let body = serde_json::json!({ "member": dead }).to_string();
    let (code, body) = api(
        lab.float_api,
        "POST",
        "/v1/stacks/undercloud/replace",
        Some(&body),
    );
    assert_eq!(code, 202, "{body}");
    let v = wait_stack(
        lab.float_api,
        "undercloud",
        "UPDATE_COMPLETE",
        Duration::from_secs(900),
        every,
    );
    let on: BTreeSet<String> = v["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["node"].as_str().map(str::to_string))
        .collect();
    let mut want: BTreeSet<String> = names(&["node1", "node2", "node3"]);
    want.remove(&dead);
    want.insert(machine.clone());
    assert_eq!(on, want, "{v}");
    let c = lab.console(SEED);
    for line in [
        "seed-image: undercloud".to_string(),
        format!("seed-undercloud: {machine} votes and campaigns"),
    ] {
        assert!(
            c.contains(&line),
            "no {line:?} on the seed machine's console:\n{c}"
        );
    }
    // The dead member leaves the membership once its machine is taken back (cleaned).
    wait(
        "the dead member retired, the seed machine voting",
        Duration::from_secs(300),
        || voters(&membership(lab.float_api).0) == want,
        every,
    );
    let (members, _) = membership(lab.float_api);
    assert_eq!(members.len(), 3, "{members:?}");
    phase(&format!(
        "{dead} replaced by the seed machine: the undercloud is three again (Stage N)"
    ));

    // One DHCP server at a time: the seed until it left, the undercloud's leader (whichever it
    // was) after the seed was asked to hand over, never two for one exchange.
    lab.stop_capture();
    let seed_mac = lab.specs[SEED].macs[0].to_lowercase();
    let member_macs: Vec<String> = lab.specs[..NODES]
        .iter()
        .map(|s| s.macs[0].to_lowercase())
        .collect();
    let replies = dhcp_replies(&pcap);
    let (from_seed, from_uc) = one_dhcp_server_at_a_time(
        &replies,
        (&seed_mac, unix_secs(off), unix_secs(adopted)),
        (&member_macs, unix_secs(asked)),
    );
    eprintln!("DHCP answers: {from_seed} by the seed, then {from_uc} by the undercloud");
    drop(lab);
}
