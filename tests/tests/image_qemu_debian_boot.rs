//! The Debian golden image boots in QEMU (TCG) the way a deployed disk does: the image's own
//! initrd mounts `root=UUID=…` read-only and hands over to systemd (`/sbin/init` from
//! systemd-sysv); systemd mounts the state partition by UUID (the fstab the deploy agent
//! writes), systemd-networkd gets a DHCP lease, and the `seed-firstboot` unit reports
//! `POST /v1/node/booted` with the node's credential to a fake seed. The console shows systemd's
//! own lines, the image's `seed-image:` line and the first-boot outcome; units that failed are
//! printed (the seed's own must not be among them). The time to the booted report is printed.
//!
//! Disks and the fake seed: [`tests::image_boot`]. Needs `cargo xtask image build debian` (run
//! by `cargo xtask test`).

use tests::image_boot::{run, Unpacked};

const ROOT_UUID: &str = "5eed0000-1111-4222-8333-944455557777";
const STATE_UUID: &str = "5eed0000-1111-4222-8333-944455557778";

#[test]
fn qemu_debian_image_boots_systemd_read_only_and_reports_booted() {
    let img = Unpacked::new("debian");
    let version = img.version();
    let root = &img.root;
    // What the base promises before anything boots.
    assert_eq!(
        std::fs::read_link(root.join("sbin/init")).ok(),
        Some("/lib/systemd/systemd".into()),
        "systemd-sysv's /sbin/init"
    );
    assert_eq!(
        std::fs::metadata(root.join("etc/machine-id"))
            .unwrap()
            .len(),
        0
    );
    assert!(std::fs::read_dir(root.join("dev"))
        .unwrap()
        .next()
        .is_none());
    // The fstab a deploy writes: the agent's own `fstab_merged` (root read-only, the state
    // partition and the ESP by UUID) over the image's (its tmpfs mounts kept). The image's own
    // state line (by PARTLABEL, `nofail`, short device timeout, for boots outside a seed) is
    // replaced, as on a deployed node.
    let image_fstab = std::fs::read_to_string(root.join("etc/fstab")).unwrap();
    assert!(image_fstab.contains(" /var/lib/seed "), "{image_fstab}");
    let fstab = ramdisk::agent::deploy::boot::fstab_merged(
        &image_fstab,
        &ramdisk::agent::deploy::boot::Uuids {
            root: ROOT_UUID.into(),
            state: STATE_UUID.into(),
            esp: Some("5EED-0E5F".into()),
        },
    );
    assert!(!fstab.contains("nofail"), "{fstab}");
    std::fs::write(root.join("etc/fstab"), fstab).unwrap();
    let esp = img.dir.path().join("esp.img");
    run(std::process::Command::new(tests::require("mkfs.vfat"))
        .args(["-i", "5EED0E5F", "-C"])
        .arg(&esp)
        .arg("16384"));
    let unpacked = img.manifest["stream"]["unpacked_size"].as_u64().unwrap();
    let root_disk = img.root_disk(ROOT_UUID, unpacked * 2 + (128 << 20));
    let state = img.state_disk(STATE_UUID, "debian-under-test", "cred-deb");
    let mut vm = img.boot(ROOT_UUID, &[root_disk, state, esp], 1024);

    // Up to 480 s: emergency mode is a failure at once.
    let req = vm.wait_report(480, Some("emergency mode"));
    let booted_after = vm.started.elapsed();
    let body = tests::image_boot::assert_booted_report(&req, "debian-under-test", "cred-deb");
    assert_eq!(body["image"], "debian");

    // The console: systemd, the image's line, the first-boot outcome and the serial login
    // prompt under the node's own hostname (bounded wait for the last prints: a loaded TCG host
    // needs a minute). systemd stops printing its status lines once the serial getty owns the
    // console, so "Multi-User System" may never show: basic.target, reached before any getty,
    // always does.
    let text = vm.console_with(
        &[
            "seed-firstboot: reported booted",
            "Basic System",
            "debian-under-test login:",
        ],
        120,
    );
    eprintln!(
        "debian image: booted report {:.1}s after QEMU started (TCG)",
        booted_after.as_secs_f64()
    );
    let failed: Vec<&str> = text.lines().filter(|l| l.contains("FAILED")).collect();
    for l in text
        .lines()
        .filter(|l| l.contains("seed-") || l.contains("Failed") || l.contains("Welcome"))
    {
        eprintln!("console: {l}");
    }
    eprintln!("units that failed: {failed:#?}");
    assert!(
        text.contains("Welcome to") && text.contains("Debian GNU/Linux 12"),
        "{text}"
    );
    assert!(
        text.contains("Reached target") && text.contains("Basic System"),
        "{text}"
    );
    assert!(text.contains("debian-under-test login:"), "{text}");
    assert!(
        text.contains(&format!(
            "seed-image: debian {version} booted debian-under-test"
        )),
        "{text}"
    );
    assert!(text.contains("seed-firstboot: networkd: "), "{text}");
    assert!(
        text.contains("seed-firstboot: reported booted to http://10.0.2.100 as debian-under-test"),
        "{text}"
    );
    assert!(
        !failed.iter().any(|l| l.contains("seed")),
        "a seed unit failed: {failed:?}\n{text}"
    );
    assert!(
        !text.contains("seed-initrd:"),
        "the initrd complained:\n{text}"
    );
    assert!(!text.contains("no seed-state partition"), "{text}");
    assert!(!text.contains("emergency"), "{text}");
}
