//! The agent's deploy onto a loop device (root): a test image served over HTTP on 127.0.0.1 is
//! written with the library the ramdisk runs, then the disk is read back with `sgdisk`, `blkid`,
//! a read-only mount and the `fatfs` crate. Also: a wrong sha256 fails and wipes, and a disk too
//! small is refused by name.

mod deploy_common;

use deploy_common::*;
use ramdisk::agent::deploy::{self, DeployError};
use ramdisk::agent::Phase;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn blkid(dev: &std::path::Path, tag: &str) -> String {
    sh(Command::new(tests::require("blkid"))
        .args(["-p", "-o", "value", "-s", tag])
        .arg(dev))
    .trim()
    .to_string()
}

#[test]
fn deploy_writes_a_bootable_disk() {
    let sgdisk = tests::require("sgdisk");
    let disk = LoopDisk::new(512);
    let image = test_image(48);
    let http = Http::serve(image.clone());
    let work = tempfile::tempdir().unwrap();
    let cmd = command(manifest("tiny", &image, None), &http.url, &disk.name());
    let mut seen = Vec::new();
    let d = deploy::deploy(&cmd, &[disk.facts()], &env(work.path()), &mut |p, b, t| {
        seen.push((p, b, t))
    })
    .unwrap_or_else(|e| panic!("deploy failed: {}", deploy::reason(&e)));
    let mbps = d.bytes as f64 / d.write_secs / 1e6;
    eprintln!(
        "image write: {} bytes, {} entries in {:.2} s = {:.1} MB/s",
        d.bytes, d.entries, d.write_secs, mbps
    );
    assert_eq!(d.bytes, image.len() as u64);
    assert_eq!(d.entries, 15);
    assert_eq!(d.disk, disk.name());

    // Progress: phases in order, bytes up to the total.
    let phases: Vec<Phase> = seen.iter().map(|s| s.0).fold(Vec::new(), |mut v, p| {
        if v.last() != Some(&p) {
            v.push(p)
        }
        v
    });
    assert_eq!(
        phases,
        [Phase::Partitioning, Phase::Writing, Phase::Finishing]
    );
    assert!(seen
        .iter()
        .any(|s| s.0 == Phase::Writing && s.1 == image.len() as u64 && s.2 == s.1));

    // The partition table: names, types, and the legacy-BIOS-bootable root.
    let table = sh(Command::new(&sgdisk).arg("-p").arg(&disk.dev));
    for (n, name, code) in [
        (1, "seed-bios", "EF02"),
        (2, "seed-esp", "EF00"),
        (3, "seed-root", "8300"),
        (4, "seed-state", "8300"),
    ] {
        let line = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&n.to_string()))
            .unwrap_or_else(|| panic!("no partition {n} in:\n{table}"));
        assert!(line.contains(code) && line.ends_with(name), "{line}");
    }
    let verify = sh(Command::new(&sgdisk).arg("-v").arg(&disk.dev));
    assert!(verify.contains("No problems found"), "{verify}");
    let root_info = sh(Command::new(&sgdisk).args(["-i", "3"]).arg(&disk.dev));
    assert!(
        root_info.contains("Attribute flags: 0000000000000004"),
        "{root_info}"
    );
    // gptmbr.bin in sector 0, behind the protective MBR's partition entry.
    let gptmbr = std::fs::read("/usr/lib/syslinux/mbr/gptmbr.bin").unwrap();
    let s0 = disk.read_at(0, 512);
    assert_eq!(&s0[..440], &gptmbr[..440]);
    assert_eq!(s0[450], 0xee, "protective MBR partition type");
    assert_eq!(&s0[510..], &[0x55, 0xaa]);

    // Root: the image's files with their modes and owners, fstab, extlinux.
    let root_uuid = blkid(&disk.part(3).dev, "UUID");
    assert_eq!(root_uuid, d.root_uuid);
    assert_eq!(blkid(&disk.part(3).dev, "LABEL"), "seed-root");
    let state_uuid = blkid(&disk.part(4).dev, "UUID");
    let esp_uuid = blkid(&disk.part(2).dev, "UUID");
    assert_eq!(blkid(&disk.part(2).dev, "TYPE"), "vfat");
    let features = sh(Command::new(tests::require("dumpe2fs"))
        .arg("-h")
        .arg(&disk.part(3).dev));
    let features = features
        .lines()
        .find(|l| l.starts_with("Filesystem features:"))
        .unwrap()
        .to_string();
    assert!(
        !features.contains("64bit") && !features.contains("metadata_csum"),
        "{features}"
    );
    {
        let root = Mounted::ro(&disk.part(3).dev);
        let r = &root.at;
        assert_eq!(std::fs::read(r.join("etc/hostname")).unwrap(), b"tiny\n");
        let hello = std::fs::metadata(r.join("bin/hello")).unwrap();
        assert_eq!(hello.mode() & 0o7777, 0o755);
        assert_eq!(hello.nlink(), 2, "hard link kept");
        assert_eq!(
            std::fs::read_link(r.join("bin/hi")).unwrap(),
            std::path::Path::new("hello")
        );
        let notes = std::fs::metadata(r.join("home/user/notes")).unwrap();
        assert_eq!((notes.uid(), notes.mode() & 0o777), (1000, 0o600));
        assert_eq!(
            std::fs::metadata(r.join("var/filler")).unwrap().len(),
            48 << 20
        );
        let fstab = std::fs::read_to_string(r.join("etc/fstab")).unwrap();
        assert!(fstab.contains("proc /proc proc defaults 0 0\n"), "{fstab}");
        assert!(!fstab.contains("/dev/sda1"), "{fstab}");
        assert!(
            fstab.contains(&format!("UUID={root_uuid} / ext4 ro")),
            "{fstab}"
        );
        assert!(
            fstab.contains(&format!("UUID={state_uuid} /var/lib/seed ext4 rw")),
            "{fstab}"
        );
        assert!(
            fstab.contains(&format!("UUID={esp_uuid} /boot/efi vfat")),
            "{fstab}"
        );
        assert!(r.join("var/lib/seed").is_dir());
        let conf = std::fs::read_to_string(r.join("boot/extlinux/extlinux.conf")).unwrap();
        assert!(
            conf.contains(&format!("APPEND console=ttyS0 root=UUID={root_uuid} ro")),
            "{conf}"
        );
        assert!(conf.contains("LINUX /boot/vmlinuz"), "{conf}");
        assert!(r.join("boot/extlinux/ldlinux.sys").is_file());
        assert!(r.join("boot/extlinux/ldlinux.c32").is_file());
    }
    // extlinux's boot sector is in the root partition's first sector.
    let root_first = disk.read_at(66 << 20, 512);
    assert_eq!(
        &root_first[510..],
        &[0x55, 0xaa],
        "extlinux VBR on the root"
    );

    // State: the identity, mode 0600.
    {
        let state = Mounted::ro(&disk.part(4).dev);
        let p = state.at.join("identity.json");
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!((m.mode() & 0o777, m.uid()), (0o600, 0));
        let id: images::Identity = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(id.node, "node-1");
        assert_eq!(id.credential.expose(), "s3cret-credential");
        assert_eq!(id.seed_url, "https://10.80.0.1:8443");
        assert_eq!(
            id.seed_ca,
            Some("ab".repeat(32)),
            "the CA pin rides with the URL"
        );
        assert_eq!(id.image, format!("tiny@{}", cmd.manifest.stream.sha256));
    }

    // ESP: systemd-boot as the fallback loader, the entry, kernel and initrd.
    let esp_part = disk.part(2);
    let esp = std::fs::File::open(&esp_part.dev).unwrap();
    let fs = fatfs::FileSystem::new(esp, fatfs::FsOptions::new()).unwrap();
    let read = |p: &str| {
        let mut v = Vec::new();
        fs.root_dir()
            .open_file(p)
            .unwrap_or_else(|e| panic!("{p} on the ESP: {e}"))
            .read_to_end(&mut v)
            .unwrap();
        v
    };
    let efi = read("EFI/BOOT/BOOTX64.EFI");
    assert_eq!(
        efi,
        std::fs::read("/usr/lib/systemd/boot/efi/systemd-bootx64.efi").unwrap()
    );
    let entry = String::from_utf8(read("loader/entries/seed.conf")).unwrap();
    assert!(
        entry.contains(&format!("options console=ttyS0 root=UUID={root_uuid} ro")),
        "{entry}"
    );
    assert_eq!(read("seed/vmlinuz"), noise(1 << 20, 1));
    assert_eq!(read("seed/initrd"), noise(256 << 10, 2));
    assert!(String::from_utf8(read("loader/loader.conf"))
        .unwrap()
        .contains("default seed.conf"));
}

#[test]
fn deploy_with_wrong_sha256_fails_and_wipes() {
    let disk = LoopDisk::new(300);
    let image = test_image(4);
    let http = Http::serve(image.clone());
    let work = tempfile::tempdir().unwrap();
    let cmd = command(
        manifest("tiny", &image, Some("ab".repeat(32))),
        &http.url,
        &disk.name(),
    );
    let mut phases = Vec::new();
    let e = deploy::deploy(&cmd, &[disk.facts()], &env(work.path()), &mut |p, _, _| {
        phases.push(p)
    })
    .unwrap_err();
    let r = deploy::reason(&e);
    eprintln!("deploy error: {r}");
    assert!(matches!(e, DeployError::Stream { .. }), "{r}");
    assert!(r.contains("sha256") && r.contains(&"ab".repeat(32)), "{r}");
    assert!(phases.contains(&Phase::Writing), "it failed after writing");
    // The table and the start of every partition are zero; nothing is left mounted.
    let size = 300u64 << 20;
    assert!(
        disk.read_at(0, 1 << 20).iter().all(|b| *b == 0),
        "first MiB"
    );
    assert!(
        disk.read_at(size - (1 << 20), 1 << 20)
            .iter()
            .all(|b| *b == 0),
        "last MiB (backup GPT)"
    );
    for off in [1u64 << 20, 2 << 20, 66 << 20, size - (65 << 20)] {
        assert!(
            disk.read_at(off, 1 << 20).iter().all(|b| *b == 0),
            "partition at {off} not wiped"
        );
    }
    let table = Command::new(tests::require("sgdisk"))
        .arg("-p")
        .arg(&disk.dev)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(!table.contains("seed-root"), "{table}");
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(
        !mounts.contains(&*work.path().to_string_lossy()),
        "{mounts}"
    );
    let leftover = ramdisk::agent::deploy::partition_path(&disk.dev, 3);
    assert!(!leftover.exists(), "the kernel forgot the partitions");
}

#[test]
fn deploy_refuses_a_disk_too_small_by_name() {
    let disk = LoopDisk::new(64);
    let image = test_image(0);
    let work = tempfile::tempdir().unwrap();
    // Never fetched: the disk is refused before anything is written or downloaded.
    let cmd = command(
        manifest("tiny", &image, None),
        "http://127.0.0.1:9/never",
        &disk.name(),
    );
    let before = disk.read_at(0, 4096);
    let e =
        deploy::deploy(&cmd, &[disk.facts()], &env(work.path()), &mut |_, _, _| {}).unwrap_err();
    let r = deploy::reason(&e);
    eprintln!("deploy error: {r}");
    assert!(matches!(e, DeployError::Choose(_)), "{r}");
    assert!(
        r.contains(&format!("{} (64 MiB", disk.name())) && r.contains("256 MiB"),
        "{r}"
    );
    assert_eq!(disk.read_at(0, 4096), before);
}
