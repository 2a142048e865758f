//! The hand-off on real machines (issue 15), the TripleO story end to end on five QEMU nodes:
//! a seed that became the first member of an HA control plane with `seed ha init` deploys
//! `seed/templates/undercloud.yaml` (three members) with the `undercloud` golden image — real
//! firmware, iPXE, the deploy ramdisk, IPMI through the lab's virtual BMCs — and each machine
//! becomes a member by itself: seed-config renders its daemon's config from the metadata, its
//! daemon has its etcd member added through the floating address, the leader promotes it, its
//! daemon campaigns, and only then does its deployment signal (CREATE_COMPLETE). Then
//! `seed handoff`: the seed leaves, and the undercloud answers the operator's API at the
//! floating address with the same nodes, still `active`. It inspects the two other machines
//! itself and deploys the overcloud (one controller of lab-overcloud.yaml) on one of them; while
//! that deploy runs, the undercloud's leader is powered off through its BMC: another member takes
//! the floating address over and the overcloud completes. Then "recover from the loss by scaling
//! out again": `stack replace` of the dead member puts it on the spare machine, which joins the
//! etcd cluster, and the dead member leaves the membership once its machine is taken back.
//! Through it all, one DHCP server at a time (a capture of the switch).
//!
//! The seed runs in the namespace of a test switch (a bridge) with its kernel stack on the
//! bridge; the nodes' NICs are TAP ports of that bridge (QEMU and the lab's BMCs live in that
//! namespace too; the BMCs are relayed to the seed host's address, the management network the
//! undercloud also reaches). Nothing touches the host's interfaces. Each phase's time is printed.

mod handoff_common;

use handoff_common::{bridge_config, dhcp_replies, SwitchLab, SEED_IP};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};
use tests::netns::Switch;
use tests::proc::Child;

const TOKEN: &str = "handoff-undercloud-operator-token";
const FLOAT: &str = "10.80.0.1";
/// node1–3 the undercloud, node4 and node5 the overcloud's machine and the spare.
const NODES: usize = 5;

/// The API at `at`: (status, body), or (0, what curl said) when nothing answered — said on
/// stderr too, so a machine that went away mid-poll shows when; the poll's deadline then fails
/// with the consoles beside it.
fn api(sw: &Switch, at: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let cmd = sw.ns.cmd(tests::require("curl"));
    let url = format!("http://{at}:6385{path}");
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
fn inspect(sw: &Switch, at: &str, nodes: &[&str], context: impl Fn() -> String) {
    for node in nodes {
        let (code, body) = api(sw, at, "POST", &format!("/v1/nodes/{node}/inspect"), None);
        assert!(code == 202 || code == 200, "{node}: {code} {body}");
    }
    wait(
        &format!("{nodes:?} available"),
        Duration::from_secs(300),
        || {
            nodes.iter().all(|n| {
                api(sw, at, "GET", &format!("/v1/nodes/{n}"), None)
                    .1
                    .contains("\"available\"")
            })
        },
        context,
    );
}

/// Ask the daemon at `at` to create stack `name` from the repository's `template`.
fn post_stack(sw: &Switch, at: &str, name: &str, template: &str, params: serde_json::Value) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let template = std::fs::read_to_string(root.join(template)).unwrap();
    let req = serde_json::json!({"name": name, "template": template, "params": params});
    let (code, body) = api(sw, at, "POST", "/v1/stacks", Some(&req.to_string()));
    assert_eq!(code, 201, "{body}");
}

/// Wait (bounded by `within`) until stack `name` is `want`; a `…_FAILED` fails at once.
fn wait_stack(
    sw: &Switch,
    at: &str,
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
            last = json(&api(sw, at, "GET", &format!("/v1/stacks/{name}"), None).1);
            let status = last["status"].as_str().unwrap_or("");
            assert!(!status.ends_with("_FAILED"), "{last}\n{}", context());
            status == want
        },
        &context,
    );
    last
}

/// The control plane's (members, daemons) as the daemon at `at` lists them.
fn membership(sw: &Switch, at: &str) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let m = json(&api(sw, at, "GET", "/v1/ha/members", None).1);
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

/// One DHCP server at a time: every answer in `replies` from the seed (`seed_mac`) no later than
/// it exited, or from an undercloud machine (`member_macs`) no earlier than the seed was asked to
/// hand over; no exchange answered by two; both answered some. Returns how many each did.
fn one_dhcp_server_at_a_time(
    replies: &[(f64, String, String, String)],
    (seed_mac, exited): (&str, f64),
    (member_macs, asked): (&[String], f64),
) -> (usize, usize) {
    let mut by_exchange: std::collections::BTreeMap<_, BTreeSet<_>> = Default::default();
    let (mut from_seed, mut from_uc) = (0, 0);
    for (t, src, xid, ty) in replies {
        if src == seed_mac {
            assert!(
                *t <= exited,
                "the seed answered DHCP after it left: {replies:?}"
            );
            from_seed += 1;
        } else if member_macs.contains(src) {
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

#[test]
fn qemu_handoff_undercloud_of_three_takes_over_survives_a_loss_and_replaces_it() {
    tests::require("qemu-system-x86_64");
    tests::require("curl");
    tests::require("ipmitool");
    let manifest = tests::built_image("undercloud").join("manifest.json");
    let t0 = Instant::now();
    let phase = |what: &str| eprintln!("[{:>6.1}s] {what}", t0.elapsed().as_secs_f64());
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let sw = Switch::new();
    sw.ns
        .ip(&["addr", "add", &format!("{SEED_IP}/24"), "dev", "br0"]);
    // Every DHCP datagram on the switch, to see who answered when.
    let pcap = d.join("dhcp.pcap");
    let mut cap = sw.ns.cmd(tests::require("tshark"));
    cap.args(["-i", "br0", "-f", "udp port 67 or udp port 68", "-w"])
        .arg(&pcap);
    let mut capture = Child::spawn("tshark", cap);
    capture.wait_for_log("Capturing on", Duration::from_secs(30));

    let lab = SwitchLab::start(&sw, &d.join("lab"), NODES);
    let consoles = |nodes: &[usize]| {
        let mut out = String::new();
        for &i in nodes {
            out += &format!("---- node{} console ----\n{}\n", i + 1, lab.console(i));
        }
        out
    };
    let every = || consoles(&(0..NODES).collect::<Vec<_>>());

    // The seed: the lab's configuration on the bridge, its nodes enrolled, the images stored.
    let sdir = d.join("seed");
    std::fs::create_dir_all(&sdir).unwrap();
    let mut ws = tests::wire_seed::config(&sdir, &lab.file, lab.specs.clone(), TOKEN);
    ws.api_port = 6385;
    // Leases of a minute: the members' own, from the seed, run out while they serve (a member
    // stops renewing it: its address is static once it runs).
    ws.lease_secs = Some(60);
    tests::wire_seed::enroll(&ws, &[]);
    let store = images::ImageStore::open(ws.images()).unwrap();
    store
        .import(&manifest)
        .expect("importing the undercloud image");
    store
        .import(&tests::tiny_manifest())
        .expect("importing the tiny image");
    std::fs::create_dir_all(sdir.join("http")).unwrap();
    let config = sdir.join("seed.toml");
    std::fs::write(&config, bridge_config(&ws.config().unwrap())).unwrap();

    // The seed becomes the first member of the control plane: `seed ha init`.
    let out = sw
        .ns
        .cmd(tests::seed_bin())
        .args(["ha", "init", "--config"])
        .arg(&config)
        .args(["--name", "seed"])
        .args(["--client-url", &format!("http://{SEED_IP}:2379")])
        .args(["--peer-url", &format!("http://{SEED_IP}:2380")])
        .args(["--advertise", &format!("http://{SEED_IP}:6385")])
        .args(["--floating-address", &format!("{FLOAT}/24")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", tests::printed(&out));
    phase("seed ha init");

    let mut cmd = sw.ns.cmd(tests::seed_bin());
    cmd.args(["daemon", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info,seed::power=debug");
    let mut seed = Child::spawn("seed-daemon", cmd);
    seed.wait_for_log("HTTP listening", Duration::from_secs(60));
    let logs = |seed: &Child| format!("---- seed ----\n{}", seed.output());
    wait(
        "the seed holds the floating address",
        Duration::from_secs(30),
        || api(&sw, FLOAT, "GET", "/v1/nodes", None).0 == 200,
        || logs(&seed),
    );

    let members_ctx = || format!("{}\n{}", logs(&seed), consoles(&[0, 1, 2]));
    inspect(&sw, SEED_IP, &["node1", "node2", "node3"], members_ctx);
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
        &sw,
        SEED_IP,
        "undercloud",
        "seed/templates/undercloud.yaml",
        params,
    );
    let within = Duration::from_secs(900);
    wait_stack(
        &sw,
        SEED_IP,
        "undercloud",
        "CREATE_COMPLETE",
        within,
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
    let (members, daemons) = membership(&sw, SEED_IP);
    assert_eq!(
        voters(&members),
        names(&["seed", "node1", "node2", "node3"]),
        "{members:?}"
    );
    assert_eq!(daemons.len(), 4, "{daemons:?}");

    // The hand-off: asked again while a check is still settling (bounded).
    let asked = std::time::SystemTime::now();
    let t = Instant::now();
    loop {
        let (code, body) = api(&sw, SEED_IP, "POST", "/v1/ha/handoff", None);
        if code == 202 || code == 200 {
            break;
        }
        assert_eq!(code, 409, "{body}");
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "hand-off refused: {body}\n{}",
            logs(&seed)
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    let status = seed.wait_exit(Duration::from_secs(120));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", logs(&seed));
    let exited = std::time::SystemTime::now();
    phase("the seed handed over and exited");

    // The undercloud answers at the floating address: the same nodes, still active.
    let uc_ctx = || consoles(&[0, 1, 2]);
    wait(
        "the undercloud answers at the floating address",
        Duration::from_secs(120),
        || {
            (1..=3).all(|i| {
                let (code, body) = api(&sw, FLOAT, "GET", &format!("/v1/nodes/node{i}"), None);
                code == 200 && body.contains("\"active\"")
            })
        },
        uc_ctx,
    );
    let (members, _) = membership(&sw, FLOAT);
    assert_eq!(
        voters(&members),
        names(&["node1", "node2", "node3"]),
        "{members:?}"
    );
    phase("the undercloud leads");

    // The undercloud inspects the two other machines itself (its DHCP, its ramdisk, its BMC
    // driver) and deploys the overcloud on one, with the image it replicated from the seed.
    inspect(&sw, FLOAT, &["node4", "node5"], every);
    phase("node4-5 inspected by the undercloud");
    post_stack(
        &sw,
        FLOAT,
        "overcloud",
        "seed/tests/templates/lab-overcloud.yaml",
        serde_json::json!({"compute_count": "0", "greeting": "deployed by the undercloud"}),
    );
    let mut oc_node = String::new();
    wait(
        "the overcloud's machine deploying",
        Duration::from_secs(120),
        || {
            let v = json(&api(&sw, FLOAT, "GET", "/v1/stacks/overcloud", None).1);
            let deploying = v["members"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["node_state"] == "deploying");
            if let Some(n) = deploying.and_then(|m| m["node"].as_str()) {
                oc_node = n.to_string();
            }
            !oc_node.is_empty()
        },
        every,
    );
    // Mid-deploy, the undercloud's leader dies: power cut through its BMC.
    let mut dead = String::new();
    wait(
        "the undercloud's leader known",
        Duration::from_secs(60),
        || {
            let (_, daemons) = membership(&sw, FLOAT);
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
    lab.power_off(&sw, dead_i);
    phase(&format!(
        "the undercloud's leader {dead} powered off while {oc_node} deploys"
    ));
    let oc_i: usize = oc_node.trim_start_matches("node").parse::<usize>().unwrap() - 1;
    wait_stack(
        &sw,
        FLOAT,
        "overcloud",
        "CREATE_COMPLETE",
        Duration::from_secs(900),
        every,
    );
    let c = lab.console(oc_i);
    assert!(
        c.contains("seed-demo: greeting = deployed by the undercloud"),
        "{c}"
    );
    assert!(c.contains(&format!("seed-demo: node = {oc_node}")), "{c}");
    let (_, daemons) = membership(&sw, FLOAT);
    let leader = daemons.iter().find(|d| d["leader"] == true);
    assert!(
        leader.is_some_and(|d| d["name"] != dead.as_str()),
        "{daemons:?}"
    );
    phase("the overcloud deployed by the undercloud, across its leader's loss");

    // Recover from the loss by scaling out again: the dead member moves to the spare machine.
    let spare = (4..=5)
        .map(|i| format!("node{i}"))
        .find(|n| *n != oc_node)
        .unwrap();
    let body = serde_json::json!({ "member": dead }).to_string();
    let (code, body) = api(
        &sw,
        FLOAT,
        "POST",
        "/v1/stacks/undercloud/replace",
        Some(&body),
    );
    assert_eq!(code, 202, "{body}");
    let v = wait_stack(
        &sw,
        FLOAT,
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
    want.insert(spare.clone());
    assert_eq!(on, want, "{v}");
    let spare_i: usize = spare.trim_start_matches("node").parse::<usize>().unwrap() - 1;
    let c = lab.console(spare_i);
    assert!(
        c.contains(&format!("seed-undercloud: {spare} votes and campaigns")),
        "{c}"
    );
    // The dead member leaves the membership once its machine is taken back (cleaned).
    wait(
        "the dead member retired, the spare voting",
        Duration::from_secs(300),
        || voters(&membership(&sw, FLOAT).0) == want,
        every,
    );
    let (members, _) = membership(&sw, FLOAT);
    assert_eq!(members.len(), 3, "{members:?}");
    phase(&format!(
        "{dead} replaced by {spare}: the undercloud is three again"
    ));

    // One DHCP server at a time: the seed until it left, the undercloud's leader (whichever it
    // was) after the seed was asked to hand over, never two for one exchange.
    // SAFETY: kill(2) on the capture's own pid.
    unsafe { libc::kill(capture.id() as i32, libc::SIGINT) };
    assert!(capture.wait_exit(Duration::from_secs(20)).is_some());
    let out = sw
        .ns
        .cmd("cat")
        .arg("/sys/class/net/br0/address")
        .output()
        .unwrap();
    let seed_mac = String::from_utf8_lossy(&out.stdout).trim().to_lowercase();
    let member_macs: Vec<String> = lab.specs.iter().map(|s| s.macs[0].to_lowercase()).collect();
    let replies = dhcp_replies(&pcap);
    let (from_seed, from_uc) = one_dhcp_server_at_a_time(
        &replies,
        (&seed_mac, unix_secs(exited)),
        (&member_macs, unix_secs(asked)),
    );
    eprintln!("DHCP answers: {from_seed} by the seed, then {from_uc} by the undercloud");
    drop(lab);
}
