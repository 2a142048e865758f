//! `seed lab up` never ignores options: a 2-node BIOS lab exists; `lab up --nodes 4 --uefi`
//! (what a person following the README's sections in order types) is refused with what
//! differs and the way out (`--recreate`); plain `lab up` re-opens the lab as it is; `--recreate`
//! replaces it. Every lab has its BMC network in `lab.json`. No VM is started.

use std::path::Path;
use std::process::{Command, Output};

fn seed_lab(args: &[&str], dir: &Path) -> Output {
    Command::new(tests::seed_bin())
        .arg("lab")
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("running seed")
}

/// `lab up … --detach`, then `lab down` (the lab stays on disk).
fn up_then_down(args: &[&str], dir: &Path) -> String {
    let mut all = vec!["up", "--detach", "--bmc-port", "0", "--disks", "none"];
    all.extend_from_slice(args);
    let up = seed_lab(&all, dir);
    let out = tests::printed(&up);
    let down = seed_lab(&["down"], dir);
    assert!(up.status.success(), "lab up {args:?}:\n{out}");
    assert!(down.status.success(), "{}", tests::printed(&down));
    out
}

#[test]
fn lab_up_refuses_other_options_and_recreates_on_request() {
    tests::require("qemu-img");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lab");
    let name = format!("opt{}", std::process::id());
    let out = up_then_down(&["--name", &name, "--nodes", "2"], &dir);
    assert!(out.contains("BMC network 10.81.0.0/24"), "{out}");
    let lab = qemu::spec::load(&dir).unwrap();
    assert_eq!(lab.nodes.len(), 2);
    let lan = lab.nodes[1]
        .bmc
        .lan
        .as_ref()
        .expect("node2 on the BMC network");
    assert_eq!(lan.address.to_string(), "10.81.0.12");
    assert!(lab.bmc_network.is_some());
    std::fs::write(dir.join("node1/keep"), "the lab's own file").unwrap();

    // Other options: refused, nothing changed.
    let refused = seed_lab(&["up", "--nodes", "4", "--uefi"], &dir);
    let msg = tests::printed(&refused);
    assert!(!refused.status.success(), "{msg}");
    assert!(msg.contains("nodes: the lab has 2, asked 4"), "{msg}");
    assert!(
        msg.contains("firmware: the lab has bios, asked uefi"),
        "{msg}"
    );
    assert!(msg.contains("--recreate"), "{msg}");
    assert_eq!(qemu::spec::load(&dir).unwrap(), lab);
    assert!(dir.join("node1/keep").is_file());
    assert!(qemu::lab::server_pid(&dir).is_none(), "nothing started");

    // The same options, or none: the lab as it is.
    up_then_down(&["--nodes", "2"], &dir);
    assert_eq!(qemu::spec::load(&dir).unwrap().nodes.len(), 2);
    assert!(dir.join("node1/keep").is_file());

    // --recreate: the old lab goes, the new one has what was asked.
    let out = up_then_down(
        &["--name", &name, "--nodes", "4", "--uefi", "--recreate"],
        &dir,
    );
    assert!(out.contains("recreating"), "{out}");
    let lab = qemu::spec::load(&dir).unwrap();
    assert_eq!(lab.nodes.len(), 4);
    assert!(lab
        .nodes
        .iter()
        .all(|n| n.firmware == qemu::spec::Firmware::Uefi));
    assert!(!dir.join("node1/keep").exists());
    let destroyed = seed_lab(&["destroy"], &dir);
    assert!(destroyed.status.success(), "{}", tests::printed(&destroyed));
}
