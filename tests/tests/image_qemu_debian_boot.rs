//! The Debian golden image boots in QEMU (TCG) the way a deployed disk does: the image's own
//! initrd mounts `root=UUID=…` read-only and hands over to systemd (`/sbin/init` from
//! systemd-sysv); systemd mounts the state partition by its GPT name `seed-state` (the image's
//! fstab), systemd-networkd gets a DHCP lease, and the `seed-firstboot` unit reports
//! `POST /v1/node/booted` with the node's credential to a fake seed. The console shows systemd's
//! own lines, the image's `seed-image:` line and the first-boot outcome; units that failed are
//! printed (the seed's own must not be among them). The time to the booted report is printed.
//!
//! Disks are made here from the stream (no deploy agent): the root as a whole-disk ext4, the
//! state disk GPT-partitioned. The guest reaches the fake seed only through QEMU's restricted
//! user network: `guestfwd` sends 10.0.2.100:80 to 127.0.0.1 via `busybox nc`, nothing else
//! leaves the VM. Needs `cargo xtask image build debian` (run by `cargo xtask test`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const ROOT_UUID: &str = "5eed0000-1111-4222-8333-944455557777";

fn image_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| tests::workspace_root().join("target"));
    let dir = target.join("images/debian");
    assert!(
        dir.join("manifest.json").is_file(),
        "no debian image in {}: run `cargo xtask image build debian` (cargo xtask test does)",
        dir.display()
    );
    dir
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One HTTP/1.1 request: (request line, headers lowercased, body); answers 200 `{}`.
fn serve_one(listener: &TcpListener) -> (String, Vec<(String, String)>, String) {
    let (mut s, _) = listener.accept().expect("accept");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let mut headers = Vec::new();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        if h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
            if k == "content-length" {
                len = v.parse().unwrap_or(0);
            }
            headers.push((k, v));
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    write!(
        s,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    )
    .unwrap();
    (
        line.trim().to_string(),
        headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// The state disk: GPT, one partition named `seed-state` at 1 MiB holding identity.json.
fn state_disk(dir: &Path, identity: &str) -> PathBuf {
    let content = dir.join("state");
    std::fs::create_dir_all(&content).unwrap();
    std::fs::write(content.join("identity.json"), identity).unwrap();
    let disk = dir.join("state.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    run(Command::new(tests::require("sgdisk"))
        .args(["-n", "1:2048:+24M", "-c", "1:seed-state", "-t", "1:8300"])
        .arg(&disk));
    run(Command::new(tests::require("mke2fs"))
        .args([
            "-q",
            "-F",
            "-t",
            "ext4",
            "-L",
            "seed-state",
            "-E",
            "offset=1048576",
            "-d",
        ])
        .arg(&content)
        .arg(&disk)
        .arg("24M"));
    disk
}

#[test]
fn qemu_debian_image_boots_systemd_read_only_and_reports_booted() {
    let qemu = tests::require("qemu-system-x86_64");
    let busybox = tests::require("busybox");
    let img = image_dir();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(img.join("manifest.json")).unwrap()).unwrap();
    let version = manifest["version"].as_str().unwrap().to_string();
    let stream = img.join(manifest["stream"]["file"].as_str().unwrap());
    let sha = run(Command::new(tests::require("sha256sum")).arg(&stream));
    assert_eq!(
        sha.split_whitespace().next(),
        manifest["stream"]["sha256"].as_str(),
        "the stream matches its manifest"
    );

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    run(Command::new(tests::require("tar"))
        .args(["--zstd", "--numeric-owner", "-xf"])
        .arg(&stream)
        .arg("-C")
        .arg(&root));
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
    // The deploy's fstab (root read-only by UUID, the ESP at /boot/efi) merged with the image's
    // own (the state partition by PARTLABEL, the tmpfs mounts), as `fstab_merged` writes it.
    let image_fstab = std::fs::read_to_string(root.join("etc/fstab")).unwrap();
    assert!(image_fstab.contains(" /var/lib/seed "), "{image_fstab}");
    std::fs::write(
        root.join("etc/fstab"),
        format!(
            "UUID={ROOT_UUID} / ext4 ro,noatime 0 1\nUUID=5EED-0E5F /boot/efi vfat ro,umask=0077 0 2\n{image_fstab}"
        ),
    )
    .unwrap();
    let esp_img = dir.path().join("esp.img");
    run(Command::new(tests::require("mkfs.vfat"))
        .args(["-i", "5EED0E5F", "-C"])
        .arg(&esp_img)
        .arg("16384"));
    let unpacked = manifest["stream"]["unpacked_size"].as_u64().unwrap();
    let root_img = dir.path().join("root.img");
    std::fs::File::create(&root_img)
        .unwrap()
        .set_len(unpacked * 2 + (128 << 20))
        .unwrap();
    run(Command::new(tests::require("mke2fs"))
        .args(["-q", "-F", "-t", "ext4", "-U", ROOT_UUID, "-d"])
        .arg(&root)
        .arg(&root_img));
    let state_img = state_disk(
        dir.path(),
        r#"{"node":"debian-under-test","seed_url":"http://10.0.2.100","credential":"cred-deb","image":"debian@test"}"#,
    );

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let console = dir.path().join("console.log");
    let boot = manifest["boot"].clone();
    let mut cmd = Command::new(qemu);
    cmd.args([
        "-accel",
        "tcg",
        "-m",
        "1024",
        "-display",
        "none",
        "-no-reboot",
    ])
    .arg("-kernel")
    .arg(root.join(boot["kernel"].as_str().unwrap()))
    .arg("-initrd")
    .arg(root.join(boot["initrd"].as_str().unwrap()))
    .arg("-append")
    .arg(format!(
        "{} panic=-1 root=UUID={ROOT_UUID} ro",
        boot["cmdline"].as_str().unwrap()
    ))
    .arg("-drive")
    .arg(format!("file={},if=virtio,format=raw", root_img.display()))
    .arg("-drive")
    .arg(format!("file={},if=virtio,format=raw", state_img.display()))
    .arg("-drive")
    .arg(format!("file={},if=virtio,format=raw", esp_img.display()))
    .arg("-netdev")
    .arg(format!(
        "user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:80-cmd:{} nc 127.0.0.1 {port}",
        busybox.display()
    ))
    .args(["-device", "virtio-net-pci,netdev=n0"])
    .arg("-serial")
    .arg(format!("file:{}", console.display()));
    let started = Instant::now();
    let mut vm = tests::proc::Child::spawn("qemu", cmd);

    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(serve_one(&listener));
    });
    let log = || std::fs::read_to_string(&console).unwrap_or_default();
    // Up to 480 s, polled each second: emergency mode is a failure at once.
    let mut got = None;
    for _ in 0..480 {
        if let Ok(r) = rx.recv_timeout(Duration::from_secs(1)) {
            got = Some(r);
            break;
        }
        let text = log();
        assert!(
            !text.contains("emergency mode"),
            "systemd went to emergency mode; console:\n{text}"
        );
    }
    let (line, headers, body) = got.unwrap_or_else(|| {
        panic!(
            "no booted report within 480 s (vm running: {}); console:\n{}",
            vm.is_running(),
            log()
        )
    });
    let booted_after = started.elapsed();
    assert_eq!(line, "POST /v1/node/booted HTTP/1.1");
    assert!(
        headers.contains(&("authorization".into(), "Bearer cred-deb".into())),
        "{headers:?}"
    );
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["node"], "debian-under-test");
    assert_eq!(body["image"], "debian");

    // The console: systemd, the image's line, the first-boot outcome (bounded wait for the
    // last print, and for systemd to reach its default target).
    let mut text = log();
    for _ in 0..300 {
        if text.contains("seed-firstboot: reported booted")
            && text.contains("Reached target")
            && text.contains("Multi-User System")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        text = log();
    }
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
        text.contains("Reached target") && text.contains("Multi-User System"),
        "{text}"
    );
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
