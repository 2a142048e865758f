//! The tiny golden image boots in QEMU the way a deployed disk does: its own initrd finds the
//! root file system by `root=UUID=…` (the argument the deploy appends), mounts it read-only and
//! hands over to busybox init; init prints `seed-image: tiny <version> booted <node>`, mounts the
//! state partition found by its GPT name `seed-state`, and the first-boot service reports
//! `POST /v1/node/booted` with the node's credential to a fake seed ([`tests::image_boot`]).
//! Needs `cargo xtask image build tiny` (run by `cargo xtask test`).

use tests::image_boot::Unpacked;

const ROOT_UUID: &str = "5eed0000-1111-4222-8333-944455556666";
const STATE_UUID: &str = "5eed0000-1111-4222-8333-944455556667";

#[test]
fn qemu_tiny_image_boots_read_only_and_reports_booted() {
    let img = Unpacked::new("tiny");
    let version = img.version();
    let root = img.root_disk(ROOT_UUID, 128 << 20);
    let state = img.state_disk(STATE_UUID, "tiny-under-test", "cred-5eed");
    let mut vm = img.boot(ROOT_UUID, &[root, state], 512);

    let req = vm.wait_report(240, None);
    tests::image_boot::assert_booted_report(&req, "tiny-under-test", "cred-5eed");

    // The console: the image's line, then the first-boot outcome (bounded wait for the print).
    let want = format!("seed-image: tiny {version} booted tiny-under-test");
    let text = vm.console_with(&["seed-firstboot: reported booted"], 10);
    let ours: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('[') && !l.is_empty())
        .collect();
    assert_eq!(
        ours.first().copied(),
        Some(want.as_str()),
        "init's first console line; console:\n{text}"
    );
    assert!(
        text.contains("seed-firstboot: reported booted to http://10.0.2.100 as tiny-under-test"),
        "{text}"
    );
    assert!(
        !text.contains("seed-initrd:"),
        "the initrd complained:\n{text}"
    );
    assert!(!text.contains("seed-image: state"), "{text}");
    assert!(!text.contains("no seed-state partition"), "{text}");
}
