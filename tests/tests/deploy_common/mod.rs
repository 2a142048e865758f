//! Fixtures shared by the deploy tests (`deploy_agent_loop`, `qemu_disk_boot`): a sparse file on
//! a loop device (detached on drop), a one-file HTTP server on 127.0.0.1, a deploy command, and
//! a small test image built in memory.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A sparse file attached to a loop device with partition scanning; detached on drop.
pub struct LoopDisk {
    pub file: PathBuf,
    pub dev: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoopDisk {
    pub fn new(mib: u64) -> Self {
        tests::require("losetup");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("disk.img");
        let f = std::fs::File::create(&file).unwrap();
        f.set_len(mib << 20).unwrap();
        drop(f);
        Self::attach(file, dir)
    }

    /// Attach an existing disk file (kept in `dir`).
    pub fn attach(file: PathBuf, dir: tempfile::TempDir) -> Self {
        let dev = losetup(&[OsStr::new("--partscan"), file.as_os_str()]);
        LoopDisk {
            file,
            dev,
            _dir: dir,
        }
    }

    /// `loop7`
    pub fn name(&self) -> String {
        self.dev.file_name().unwrap().to_string_lossy().into_owned()
    }

    /// The facts the agent would report for this disk.
    pub fn facts(&self) -> ramdisk::agent::facts::Disk {
        ramdisk::agent::facts::Disk {
            name: self.name(),
            size_bytes: std::fs::metadata(&self.file).unwrap().len(),
            model: "loop test disk".into(),
            serial: format!("serial-{}", self.name()),
            rotational: false,
        }
    }

    /// Partition `n` of the default layout as a block device: the kernel's, or (kernels
    /// without GPT support) a loop device over its byte range, detached on drop.
    pub fn part(&self, n: u32) -> Part {
        let kernel = ramdisk::agent::deploy::partition_path(&self.dev, n);
        if kernel.exists() {
            return Part {
                dev: kernel,
                attached: false,
            };
        }
        let size = std::fs::metadata(&self.file).unwrap().len();
        let plan = ramdisk::agent::deploy::choose::plan(&images::Layout::default(), size).unwrap();
        let p = &plan[n as usize - 1];
        let (offset, size) = (p.offset().to_string(), p.bytes().to_string());
        let args: [&str; 5] = ["--read-only", "--offset", &offset, "--sizelimit", &size];
        let mut args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        args.push(self.file.as_os_str());
        Part {
            dev: losetup(&args),
            attached: true,
        }
    }

    /// Read `len` bytes at `offset` of the disk file.
    pub fn read_at(&self, offset: u64, len: usize) -> Vec<u8> {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(&self.file).unwrap();
        let mut b = vec![0u8; len];
        f.read_exact_at(&mut b, offset).unwrap();
        b
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// A partition's block device (see [`LoopDisk::part`]).
pub struct Part {
    pub dev: PathBuf,
    attached: bool,
}

impl Drop for Part {
    fn drop(&mut self) {
        if self.attached {
            let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
        }
    }
}

/// Serves one body at any path on 127.0.0.1 until dropped.
pub struct Http {
    pub url: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Http {
    pub fn serve(body: Vec<u8>) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://{}/images/test/rootfs.tar.zst",
            l.local_addr().unwrap()
        );
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            // Bounded: at most 10 minutes, then the server gives up on its own.
            let until = std::time::Instant::now() + std::time::Duration::from_secs(600);
            while !s.load(Ordering::Relaxed) && std::time::Instant::now() < until {
                match l.accept() {
                    Ok((mut c, _)) => {
                        c.set_nonblocking(false).unwrap();
                        let mut req = [0u8; 4096];
                        let _ = c.read(&mut req);
                        let _ = write!(
                            c,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/zstd\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = c.write_all(&body);
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
        });
        Http {
            url,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Pseudo-random bytes (xorshift), so the stream does not compress away.
pub fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.extend_from_slice(&seed.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// A test root filesystem as tar.zst: a few files, a symlink, a hard link, a fake kernel and
/// initrd, and `filler_mib` of incompressible data (for a throughput figure).
pub fn test_image(filler_mib: usize) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add =
        |path: &str, kind: tar::EntryType, mode: u32, uid: u64, data: &[u8], link: Option<&str>| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_uid(uid);
            h.set_gid(uid);
            h.set_mtime(1_700_000_000);
            h.set_size(data.len() as u64);
            match link {
                Some(l) => b.append_link(&mut h, path, l).unwrap(),
                None => b.append_data(&mut h, path, data).unwrap(),
            }
        };
    use tar::EntryType::*;
    for d in ["bin", "boot", "etc", "home", "home/user", "var"] {
        add(d, Directory, 0o755, 0, &[], None);
    }
    add("etc/hostname", Regular, 0o644, 0, b"tiny\n", None);
    add(
        "etc/fstab",
        Regular,
        0o644,
        0,
        b"proc /proc proc defaults 0 0\n/dev/sda1 / ext4 rw 0 1\n",
        None,
    );
    add(
        "bin/hello",
        Regular,
        0o755,
        0,
        b"#!/bin/sh\necho hello\n",
        None,
    );
    add("bin/hi", Symlink, 0o777, 0, &[], Some("hello"));
    add("bin/hello2", Link, 0o755, 0, &[], Some("bin/hello"));
    add("home/user/notes", Regular, 0o600, 1000, b"mine\n", None);
    add("boot/vmlinuz", Regular, 0o644, 0, &noise(1 << 20, 1), None);
    add(
        "boot/initrd.img",
        Regular,
        0o644,
        0,
        &noise(256 << 10, 2),
        None,
    );
    add(
        "var/filler",
        Regular,
        0o644,
        0,
        &noise(filler_mib << 20, 3),
        None,
    );
    let t = b.into_inner().unwrap();
    zstd::encode_all(&t[..], 1).unwrap()
}

/// A manifest for `stream` (default layout, 256 MiB minimum disk).
pub fn manifest(name: &str, stream: &[u8], sha256: Option<String>) -> images::Manifest {
    use sha2::Digest;
    images::Manifest {
        name: name.into(),
        version: "test".into(),
        stream: images::Stream {
            file: "rootfs.tar.zst".into(),
            sha256: sha256.unwrap_or_else(|| hex::encode(sha2::Sha256::digest(stream))),
            size: stream.len() as u64,
            unpacked_size: 0,
        },
        boot: images::Boot {
            kernel: "boot/vmlinuz".into(),
            initrd: Some("boot/initrd.img".into()),
            cmdline: "console=ttyS0".into(),
        },
        min_disk_mib: 256,
        layout: images::Layout::default(),
        elements: vec![],
    }
}

pub fn command(manifest: images::Manifest, url: &str, disk: &str) -> ramdisk::agent::DeployCommand {
    ramdisk::agent::DeployCommand {
        op: 7,
        node: "node-1".into(),
        manifest,
        stream_url: url.into(),
        root_hint: Some(format!("name={disk}")),
        credential: "s3cret-credential".into(),
        seed_url: "https://10.80.0.1:8443".into(),
        seed_ca: Some("ab".repeat(32)),
    }
}

/// The deploy environment on this host: Debian's tools, mounts under `work`.
pub fn env(work: &Path) -> ramdisk::agent::deploy::Env {
    let mut e = ramdisk::agent::deploy::Env::ramdisk();
    e.work_dir = work.into();
    e.progress_every = std::time::Duration::from_millis(100);
    e.tools.mke2fs = tests::require("mke2fs");
    e.tools.extlinux = tests::require("extlinux");
    // This host's kernel may lack GPT support: partitions then go through loop devices.
    e.tools.losetup = Some(tests::require("losetup"));
    for f in [&e.tools.gptmbr, &e.tools.systemd_boot] {
        assert!(
            f.is_file(),
            "{} is missing: run `cargo xtask deps` (syslinux-common, systemd-boot-efi)",
            f.display()
        );
    }
    e
}

/// A filesystem mounted for inspection (read-only), unmounted on drop.
pub struct Mounted {
    pub at: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mounted {
    pub fn ro(dev: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let at = dir.path().to_path_buf();
        let st = Command::new("mount")
            .args(["-o", "ro", "-t", "ext4"])
            .arg(dev)
            .arg(&at)
            .status()
            .unwrap();
        if !st.success() {
            // The kernel says why (e.g. a journal needing recovery: the deploy left data unflushed).
            let log = Command::new("dmesg")
                .output()
                .map(|o| o.stdout)
                .unwrap_or_default();
            let log = String::from_utf8_lossy(&log);
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            panic!(
                "mounting {}; kernel log, newest first:\n{}",
                dev.display(),
                tail.join("\n")
            );
        }
        Mounted { at, _dir: dir }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.at).status();
    }
}

/// `losetup --find --show ARGS`: the loop device it attached.
fn losetup(args: &[&OsStr]) -> PathBuf {
    let out = Command::new("losetup")
        .args(["--find", "--show"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "losetup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}
