//! Boot a built golden image in QEMU the way a deployed disk boots, without a deploy agent: the
//! stream unpacked into a whole-disk ext4 found by `root=UUID=…` (the argument the deploy
//! appends), a GPT state disk whose partition is named `seed-state` holding the node's
//! identity, and a fake seed that answers one HTTP request (the first-boot "booted" report).
//! The guest reaches it only through QEMU's restricted user network: `guestfwd` sends
//! 10.0.2.100:80 to 127.0.0.1 via `busybox nc`; nothing else leaves the VM. Used by the
//! `image_qemu_*_boot` tests; the images come from `cargo xtask image build NAME`.

pub use crate::one_request::Request;
use crate::proc::Child;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The fake seed's address inside the guest.
pub const SEED_URL: &str = "http://10.0.2.100";

/// Run `cmd`, panic with its stderr unless it succeeds; its stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The built image `target/images/NAME`, unpacked (as root, owners kept) under a scratch dir,
/// its stream checked against its manifest by `sha256sum`.
pub struct Unpacked {
    pub dir: tempfile::TempDir,
    pub manifest: serde_json::Value,
    /// The root file system tree.
    pub root: PathBuf,
}

impl Unpacked {
    pub fn new(name: &str) -> Unpacked {
        let img = crate::built_image(name);
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(img.join("manifest.json")).unwrap()).unwrap();
        let stream = img.join(manifest["stream"]["file"].as_str().unwrap());
        let sha = run(Command::new(crate::require("sha256sum")).arg(&stream));
        assert_eq!(
            sha.split_whitespace().next(),
            manifest["stream"]["sha256"].as_str(),
            "the stream matches its manifest"
        );
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        run(Command::new(crate::require("tar"))
            .args(["--zstd", "--numeric-owner", "-xf"])
            .arg(&stream)
            .arg("-C")
            .arg(&root));
        Unpacked {
            dir,
            manifest,
            root,
        }
    }

    /// The manifest's version.
    pub fn version(&self) -> String {
        self.manifest["version"].as_str().unwrap().to_string()
    }

    /// The root as a whole-disk ext4 of `size` bytes with file system UUID `uuid`.
    pub fn root_disk(&self, uuid: &str, size: u64) -> PathBuf {
        let disk = self.dir.path().join("root.img");
        std::fs::File::create(&disk).unwrap().set_len(size).unwrap();
        run(Command::new(crate::require("mke2fs"))
            .args(["-q", "-F", "-t", "ext4", "-U", uuid, "-d"])
            .arg(&self.root)
            .arg(&disk));
        disk
    }

    /// The state disk: GPT, one partition named `seed-state` at 1 MiB, ext4 with file system
    /// UUID `uuid`, holding identity.json (node `node`, credential `credential`, the fake
    /// seed's URL).
    pub fn state_disk(&self, uuid: &str, node: &str, credential: &str) -> PathBuf {
        let identity = serde_json::json!({
            "node": node,
            "seed_url": SEED_URL,
            "credential": credential,
            "image": format!("{}@test", self.manifest["name"].as_str().unwrap_or("image")),
        });
        let content = self.dir.path().join("state");
        std::fs::create_dir_all(&content).unwrap();
        std::fs::write(content.join("identity.json"), identity.to_string()).unwrap();
        let disk = self.dir.path().join("state.img");
        std::fs::File::create(&disk)
            .unwrap()
            .set_len(32 << 20)
            .unwrap();
        run(Command::new(crate::require("sgdisk"))
            .args(["-n", "1:2048:+24M", "-c", "1:seed-state", "-t", "1:8300"])
            .arg(&disk));
        run(Command::new(crate::require("mke2fs"))
            .args([
                "-q",
                "-F",
                "-t",
                "ext4",
                "-L",
                "seed-state",
                "-U",
                uuid,
                "-E",
                "offset=1048576",
                "-d",
            ])
            .arg(&content)
            .arg(&disk)
            .arg("24M"));
        disk
    }

    /// Boot the image's kernel and initrd with `root=UUID=uuid ro` and `disks` (virtio, in
    /// order), `memory_mib` of RAM, the fake seed listening.
    pub fn boot(&self, uuid: &str, disks: &[PathBuf], memory_mib: u32) -> Vm {
        let qemu = crate::require("qemu-system-x86_64");
        let busybox = crate::require("busybox");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let console = self.dir.path().join("console.log");
        let boot = &self.manifest["boot"];
        let mut cmd = Command::new(qemu);
        cmd.args(["-accel", "tcg", "-display", "none", "-no-reboot"])
            .args(["-m", &memory_mib.to_string()])
            .arg("-kernel")
            .arg(self.root.join(boot["kernel"].as_str().unwrap()))
            .arg("-initrd")
            .arg(self.root.join(boot["initrd"].as_str().unwrap()))
            .arg("-append")
            .arg(format!(
                "{} panic=-1 root=UUID={uuid} ro",
                boot["cmdline"].as_str().unwrap()
            ));
        for d in disks {
            cmd.arg("-drive")
                .arg(format!("file={},if=virtio,format=raw", d.display()));
        }
        cmd.arg("-netdev")
            .arg(format!(
                "user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:80-cmd:{} nc 127.0.0.1 {port}",
                busybox.display()
            ))
            .args(["-device", "virtio-net-pci,netdev=n0"])
            .arg("-serial")
            .arg(format!("file:{}", console.display()));
        let started = Instant::now();
        let vm = Child::spawn("qemu", cmd);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(crate::one_request::serve(&listener, "{}"));
        });
        Vm {
            vm,
            console,
            reports: rx,
            started,
        }
    }
}

/// A booting image.
pub struct Vm {
    vm: Child,
    console: PathBuf,
    reports: mpsc::Receiver<Request>,
    /// When QEMU was started.
    pub started: Instant,
}

impl Vm {
    /// The serial console so far.
    pub fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.console).unwrap_or_default()).into_owned()
    }

    /// The first request to the fake seed, within `secs`; panics (with the console) on the
    /// timeout or as soon as the console shows `fatal`.
    pub fn wait_report(&mut self, secs: u64, fatal: Option<&str>) -> Request {
        for _ in 0..secs {
            if let Ok(r) = self.reports.recv_timeout(Duration::from_secs(1)) {
                return r;
            }
            if let Some(f) = fatal {
                let text = self.console();
                assert!(!text.contains(f), "the console shows {f:?}:\n{text}");
            }
        }
        panic!(
            "no report to the seed within {secs} s (vm running: {}); console:\n{}",
            self.vm.is_running(),
            self.console()
        )
    }

    /// The console once it contains every one of `needles` (polled for up to `secs`), or as
    /// it is then.
    pub fn console_with(&self, needles: &[&str], secs: u64) -> String {
        let mut text = self.console();
        for _ in 0..secs * 10 {
            if needles.iter().all(|n| text.contains(n)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            text = self.console();
        }
        text
    }
}

/// Check `req` is a deployed image's boot report for `node` (`POST /v1/node/booted` with the
/// node's `credential` as its bearer token); its JSON body.
pub fn assert_booted_report(req: &Request, node: &str, credential: &str) -> serde_json::Value {
    assert_eq!(req.line, "POST /v1/node/booted HTTP/1.1");
    let bearer = ("authorization".to_string(), format!("Bearer {credential}"));
    assert!(req.headers.contains(&bearer), "{:?}", req.headers);
    let body: serde_json::Value = serde_json::from_str(&req.body).expect("a JSON report");
    assert_eq!(body["node"], node);
    body
}
