//! The appliance bundle end to end: `cargo xtask bundle --debug --image tiny` builds it, the
//! system's `tar --zstd` unpacks it elsewhere, `sha256sum -c` and `bin/seed bundle verify` accept
//! it, a flipped byte in the image stream makes verify fail naming the file, two builds give the
//! same archive, and `bin/seed daemon --config etc/seed.toml` from the unpacked copy — started
//! from another directory, inside a network namespace of its own (the shipped config listens on
//! `lo` only) — serves the bundle's ramdisk over HTTP, iPXE over TFTP, and the tiny image.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tests::netns::Netns;
use tests::proc::Child;

/// The API token the test sets in the bundle's config (its sample `change-me` is refused).
const TOKEN: &str = "bundle-test-token";

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `cargo xtask bundle --debug --image tiny --out OUT`; returns the archive's path.
fn build_bundle(out: &Path) -> PathBuf {
    // Fail clearly (instead of building them inside a test) when the parts are missing.
    tests::ramdisk_dir();
    tests::tiny_manifest();
    let o = tests::cargo()
        .args(["run", "--quiet", "-p", "xtask", "--", "bundle", "--debug"])
        .args(["--image", "tiny", "--out"])
        .arg(out)
        .current_dir(tests::workspace_root())
        .output()
        .expect("running cargo xtask bundle");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "cargo xtask bundle failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    println!("{stdout}");
    assert!(stdout.contains("total"), "no size summary: {stdout}");
    let archive = out.join(format!("seed-{VERSION}.tar.zst"));
    assert!(archive.is_file(), "no {}", archive.display());
    archive
}

/// Unpack `archive` with the system tar into `into`; returns the bundle directory.
fn unpack(archive: &Path, into: &Path) -> PathBuf {
    let o = Command::new(tests::require("tar"))
        .arg("--zstd")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(into)
        .output()
        .expect("running tar");
    assert!(o.status.success(), "tar --zstd -x: {o:?}");
    let dir = into.join(format!("seed-{VERSION}"));
    assert!(dir.join("bin/seed").is_file(), "no bin/seed in the archive");
    dir
}

fn sha256(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// `bin/seed bundle verify` run from inside the bundle with no argument: (ok, stdout+stderr).
fn verify(bundle: &Path) -> (bool, String) {
    let o = Command::new(bundle.join("bin/seed"))
        .args(["bundle", "verify"])
        .current_dir(bundle)
        .output()
        .expect("running seed bundle verify");
    (o.status.success(), tests::printed(&o))
}

/// The tiny image's stream in the bundle's store: (digest, path).
fn tiny_stream(bundle: &Path) -> (String, PathBuf) {
    let store = bundle.join("share/images");
    let digest = std::fs::read_to_string(store.join("names/tiny"))
        .expect("the bundle's store names tiny")
        .trim()
        .to_string();
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join(&digest).join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(m["stream"]["sha256"], digest.as_str());
    let file = m["stream"]["file"].as_str().unwrap();
    (digest.clone(), store.join(&digest).join(file))
}

#[test]
fn bundle_unpacks_verifies_and_rebuilds_identically() {
    tests::require("sha256sum");
    tests::require("zstd");
    let t = tempfile::tempdir().unwrap();
    let archive = build_bundle(&t.path().join("out1"));
    std::fs::create_dir_all(t.path().join("unpacked")).unwrap();
    let bundle = unpack(&archive, &t.path().join("unpacked"));

    // Owners and times in the archive are fixed: every entry root-owned (0/0).
    let o = Command::new("tar")
        .args(["--zstd", "--numeric-owner", "-tvf"])
        .arg(&archive)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&o.stdout);
    assert!(listing.lines().count() > 10, "{listing}");
    for line in listing.lines() {
        assert!(line.contains(" 0/0 "), "not root-owned: {line}");
    }

    // A checker nobody here wrote accepts the checksums, over every file.
    let o = Command::new("sha256sum")
        .args(["-c", "--strict", "SHA256SUMS"])
        .current_dir(&bundle)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "sha256sum -c: {out}{o:?}");
    for f in [
        "bin/seed",
        "etc/seed.toml",
        "BUNDLE.toml",
        "share/ramdisk/vmlinuz",
        "share/ramdisk/initramfs.zst",
        "share/ipxe/undionly.kpxe",
        "share/ipxe/snponly.efi",
    ] {
        assert!(out.contains(&format!("{f}: OK")), "{f} not checked:\n{out}");
    }
    let (digest, stream) = tiny_stream(&bundle);
    let info = std::fs::read_to_string(bundle.join("BUNDLE.toml")).unwrap();
    assert!(info.contains(&format!("sha256 = \"{digest}\"")), "{info}");
    assert!(info.contains("profile = \"debug\""), "{info}");

    let (ok, out) = verify(&bundle);
    assert!(ok, "seed bundle verify refused an intact bundle:\n{out}");

    // One flipped byte in the image stream: verify fails and names the file and the image.
    let mut bytes = std::fs::read(&stream).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&stream, &bytes).unwrap();
    let (ok, out) = verify(&bundle);
    assert!(!ok, "verify accepted a corrupted image:\n{out}");
    let rel = format!("share/images/{digest}/rootfs.tar.zst");
    assert!(out.contains(&rel), "verify did not name {rel}:\n{out}");
    assert!(
        out.contains("image tiny"),
        "verify did not name the image:\n{out}"
    );
    let o = Command::new("sha256sum")
        .args(["-c", "--quiet", "SHA256SUMS"])
        .current_dir(&bundle)
        .output()
        .unwrap();
    assert!(!o.status.success(), "sha256sum -c accepted the corruption");

    // The same commit builds the same archive, byte for byte.
    let again = build_bundle(&t.path().join("out2"));
    assert_eq!(sha256(&archive), sha256(&again), "two builds differ");
}

#[test]
fn bundle_daemon_serves_its_ramdisk_ipxe_and_image() {
    let curl = tests::require("curl");
    let t = tempfile::tempdir().unwrap();
    let archive = build_bundle(&t.path().join("out"));
    std::fs::create_dir_all(t.path().join("unpacked")).unwrap();
    let bundle = unpack(&archive, &t.path().join("unpacked"));
    let config = std::fs::read_to_string(bundle.join("etc/seed.toml")).unwrap();
    assert!(config.contains("interface = \"lo\""), "{config}");
    // The shipped sample token is refused at start: set one, as the operator must. The edited
    // copy sits beside the shipped file (relative paths resolve against etc/), so the check
    // after the run still proves the daemon changed nothing the bundle ships.
    let config = config.replace("token = \"change-me\"", &format!("token = \"{TOKEN}\""));
    let operator = bundle.join("etc/operator.toml");
    std::fs::write(&operator, &config).unwrap();

    // A namespace of our own: the shipped config's `lo` and 127.0.0.1 are the namespace's, so
    // nothing is bound on the host. Started from `/`: paths resolve against etc/, not the cwd.
    let ns = Netns::new("bundle");
    let mut cmd = ns.cmd(bundle.join("bin/seed"));
    cmd.args(["daemon", "--config"])
        .arg(&operator)
        .current_dir("/")
        .env("RUST_LOG", "info");
    let mut daemon = Child::spawn("seed-daemon", cmd);
    for line in ["HTTP listening", "TFTP listening", "API listening"] {
        daemon.wait_for_log(line, Duration::from_secs(60));
    }
    let fetch = |url: &str, dest: &Path, auth: bool| {
        let mut c = ns.cmd(&curl);
        c.args(["-sS", "--fail", "--max-time", "60", "-o"])
            .arg(dest)
            .arg(url);
        if auth {
            c.args(["-H", &format!("Authorization: Bearer {TOKEN}")]);
        }
        let o = c.output().expect("running curl");
        assert!(
            o.status.success(),
            "curl {url}: {}\ndaemon log:\n{}",
            String::from_utf8_lossy(&o.stderr),
            daemon.output()
        );
    };

    // The ramdisk, as the agents' iPXE script fetches it.
    let got = t.path().join("vmlinuz");
    fetch("http://127.0.0.1:8080/ramdisk/vmlinuz", &got, false);
    assert_eq!(
        sha256(&got),
        sha256(&bundle.join("share/ramdisk/vmlinuz")),
        "the served kernel is not the bundle's"
    );
    // iPXE's BIOS boot file over TFTP.
    let got = t.path().join("undionly.kpxe");
    fetch("tftp://127.0.0.1/undionly.kpxe", &got, false);
    assert_eq!(
        sha256(&got),
        sha256(&bundle.join("share/ipxe/undionly.kpxe"))
    );
    // The tiny image: its name resolves to the manifest's digest and the stream the agents
    // would write comes back with that digest.
    let (digest, _) = tiny_stream(&bundle);
    let got = t.path().join("name");
    fetch("http://127.0.0.1:8080/images/names/tiny", &got, false);
    assert_eq!(std::fs::read_to_string(&got).unwrap().trim(), digest);
    let got = t.path().join("stream");
    fetch(
        &format!("http://127.0.0.1:8080/images/{digest}/rootfs.tar.zst"),
        &got,
        false,
    );
    assert_eq!(sha256(&got), digest, "the served image stream");
    // The API answers with the shipped token, over HTTPS (the shipped config's default) with
    // the CA `seed ca export` prints from the bundle's own state directory.
    let o = Command::new(bundle.join("bin/seed"))
        .args(["ca", "export", "--config"])
        .arg(&operator)
        .output()
        .unwrap();
    assert!(o.status.success(), "seed ca export: {o:?}");
    let ca = t.path().join("ca.pem");
    std::fs::write(&ca, &o.stdout).unwrap();
    let got = t.path().join("nodes.json");
    let o = ns
        .cmd(&curl)
        .args(["-sS", "--fail", "--max-time", "60", "--cacert"])
        .arg(&ca)
        .args(["-H", &format!("Authorization: Bearer {TOKEN}"), "-o"])
        .arg(&got)
        .arg("https://127.0.0.1:6385/v1/nodes")
        .output()
        .expect("running curl");
    assert!(o.status.success(), "curl: {o:?}\n{}", daemon.output());
    serde_json::from_slice::<serde_json::Value>(&std::fs::read(&got).unwrap())
        .expect("GET /v1/nodes answers JSON");

    // `seed image list|show` on the store the daemon serves: tiny, with the manifest's sha256.
    let image = |args: &[&str]| {
        let o = Command::new(bundle.join("bin/seed"))
            .arg("image")
            .args(args)
            .arg("--dir")
            .arg(bundle.join("share/images"))
            .output()
            .unwrap();
        assert!(o.status.success(), "seed image {args:?}: {o:?}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let list = image(&["list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("tiny") && l.contains(&digest[..16])),
        "{list}"
    );
    let show = image(&["show", "tiny", "--verify"]);
    assert!(show.contains(&format!("{digest} (verified)")), "{show}");

    // Running the daemon wrote only under var/ (state) and changed nothing the bundle ships.
    drop(daemon);
    assert!(bundle.join("var/seed.redb").is_file(), "no store in var/");
    let (ok, out) = verify(&bundle);
    assert!(
        ok,
        "the bundle no longer verifies after a daemon run:\n{out}"
    );
}
