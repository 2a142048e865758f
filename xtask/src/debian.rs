//! The Debian (systemd) golden image base: its pinned package closure and the base tarball
//! built offline from the cache.
//!
//! **Pins.** `xtask/cache/debian-base.toml` names the suite, the mmdebstrap variant and the
//! packages asked for (`include`), and pins the whole resolved closure with the same fields as
//! `packages.toml` (name, version, arch, size, sha256). It is a file of its own rather than more
//! entries in `packages.toml` because it is *generated as a whole*: `cargo xtask fetch --repin`
//! re-resolves the closure by running mmdebstrap once against the machine's apt sources (the
//! only step that needs the network) and rewrites every entry, while `packages.toml`'s entries
//! are chosen one by one. `cargo xtask fetch` downloads and verifies both lists the same way
//! (`apt-get download NAME=VERSION`, sha256), `--offline` only verifies.
//!
//! **Build.** [`base_tar`] turns the cached debs into a flat local repository in a temporary
//! directory (`apt-ftparchive packages` and `release`, whose Suite mmdebstrap needs to find
//! the Essential:yes set) and runs
//! `mmdebstrap --variant=minbase --include=<every pinned name>` against
//! `deb [trusted=yes] copy://<dir> ./` only, inside `unshare --net` (a network namespace with
//! nothing but a down loopback): the build cannot reach a mirror even by mistake. Including every
//! pinned name makes apt install exactly the pinned closure. `SOURCE_DATE_EPOCH` is fixed.
//! mmdebstrap rather than debootstrap: it installs from any apt source, so a flat repository
//! of the cached debs is enough (debootstrap wants a full mirror layout with a signed Release),
//! it writes a tar directly (owners and modes kept without unpacking as root on the host), and
//! it is built for reproducible output. The tar is cached as
//! `<cache>/debian-base/<digest>.tar`, keyed by the sha256 of the pins and the build options,
//! so a rebuild of an image does not run mmdebstrap again.

use crate::fetch::{self, Pin};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// `xtask/cache/debian-base.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseFile {
    /// The Debian suite (`bookworm`).
    pub suite: String,
    /// mmdebstrap's `--variant`.
    pub variant: String,
    /// What is asked for on top of the variant; the pins are its closure.
    pub include: Vec<String>,
    pub package: Vec<Pin>,
}

/// The fixed `SOURCE_DATE_EPOCH` of the base build (2024-01-01).
const SOURCE_DATE_EPOCH: &str = "1704067200";

/// mmdebstrap's own hook that merges /usr before the essential packages are unpacked and then
/// installs `usr-is-merged`; without it apt satisfies init-system-helpers' `usrmerge |
/// usr-is-merged` with usrmerge, which pulls in perl.
const MERGED_USR_HOOK: &str = "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr";

/// dpkg filters: no manuals, documentation (copyrights kept), translations or info pages in a
/// golden image.
const DPKG_OPTS: &[&str] = &[
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/info/*",
];

fn base_path() -> PathBuf {
    crate::root().join("xtask/cache/debian-base.toml")
}

/// Read `xtask/cache/debian-base.toml`.
pub fn load() -> Result<BaseFile> {
    let path = base_path();
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The pinned closure of the Debian base.
pub fn pins() -> Result<Vec<Pin>> {
    Ok(load()?.package)
}

/// The cache key of the base tar: the pins and everything that shapes the build.
pub fn digest(base: &BaseFile) -> String {
    let mut h = Sha256::new();
    h.update(format!(
        "seed-debian-base v1\n{}\n{}\n{SOURCE_DATE_EPOCH}\n{MERGED_USR_HOOK}\n{}\n",
        base.suite,
        base.variant,
        DPKG_OPTS.join(" ")
    ));
    let mut pins: Vec<&Pin> = base.package.iter().collect();
    pins.sort_by(|a, b| a.name.cmp(&b.name));
    for p in pins {
        h.update(format!(
            "{} {} {} {}\n",
            p.name, p.version, p.arch, p.sha256
        ));
    }
    hex::encode(h.finalize())
}

/// The base tarball, built from the offline cache once per pin set.
pub fn base_tar() -> Result<PathBuf> {
    let base = load()?;
    let dir = fetch::cache_dir().join("debian-base");
    let out = dir.join(format!("{}.tar", &digest(&base)[..16]));
    if out.is_file() {
        return Ok(out);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for tool in ["mmdebstrap", "apt-ftparchive", "unshare"] {
        if which(tool).is_none() {
            bail!("{tool} is not installed: run `cargo xtask deps`");
        }
    }
    let start = Instant::now();
    let repo = tempfile::Builder::new()
        .prefix("seed-debian-repo-")
        .tempdir()
        .context("creating the local repository")?;
    for pin in &base.package {
        let deb = fetch::deb_path(pin);
        if !deb.is_file() {
            bail!(
                "{} {} is not in the offline cache: run `cargo xtask fetch`",
                pin.name,
                pin.version
            );
        }
        // Hard links where the cache and /tmp share a file system, copies otherwise.
        let dest = repo.path().join(pin.file_name());
        if std::fs::hard_link(&deb, &dest).is_err() {
            std::fs::copy(&deb, &dest)
                .with_context(|| format!("copying {} into the repository", deb.display()))?;
        }
    }
    let packages = ftparchive(
        Command::new("apt-ftparchive").args(["packages", "."]),
        repo.path(),
        "packages",
    )?;
    std::fs::write(repo.path().join("Packages"), packages)?;
    // mmdebstrap picks the Essential:yes set only from indices whose Release names the suite.
    let release = ftparchive(
        Command::new("apt-ftparchive")
            .arg(format!("-oAPT::FTPArchive::Release::Suite={}", base.suite))
            .arg(format!(
                "-oAPT::FTPArchive::Release::Codename={}",
                base.suite
            ))
            .args(["release", "."]),
        repo.path(),
        "release",
    )?;
    std::fs::write(repo.path().join("Release"), release)?;
    let partial = out.with_extension("partial");
    let names: Vec<&str> = base.package.iter().map(|p| p.name.as_str()).collect();
    let mut cmd = Command::new("unshare");
    cmd.args(["--net", "--", "mmdebstrap", "--quiet", "--mode=root"])
        .arg(format!("--variant={}", base.variant))
        .arg(format!("--include={}", names.join(",")))
        .arg(MERGED_USR_HOOK)
        .arg("--format=tar")
        .arg("--aptopt=Acquire::Languages \"none\"")
        .args(DPKG_OPTS.iter().map(|o| format!("--dpkgopt={o}")))
        .arg(&base.suite)
        .arg(&partial)
        .arg(format!(
            "deb [trusted=yes] copy://{} ./",
            repo.path().display()
        ))
        .env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH);
    crate::run(&mut cmd).context("building the Debian base (offline, from the cache)")?;
    fsutil::rename(&partial, &out)?;
    eprintln!(
        "debian: base {} ({:.1} MiB, {} packages) in {:.1}s",
        out.display(),
        std::fs::metadata(&out)?.len() as f64 / 1048576.0,
        base.package.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(out)
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(tool))
            .find(|c| c.is_file())
    })
}

/// The machine's apt source files (`.list` and deb822 `.sources`), as mmdebstrap mirrors.
fn host_sources() -> Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    let main = Path::new("/etc/apt/sources.list");
    if std::fs::read_to_string(main)
        .map(|t| t.lines().any(|l| l.trim_start().starts_with("deb")))
        .unwrap_or(false)
    {
        v.push(main.to_path_buf());
    }
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "list" || e == "sources"))
            .collect();
        more.sort();
        v.extend(more);
    }
    if v.is_empty() {
        bail!("no apt sources on this machine (/etc/apt/sources.list{{,.d}})");
    }
    Ok(v)
}

/// Re-resolve the closure with mmdebstrap against the machine's apt sources (network) and pin
/// each installed package from `apt-cache show` (Debian's index carries size and digest).
pub fn repin() -> Result<()> {
    let mut base = load()?;
    let tmp = tempfile::tempdir()?;
    let list = tmp.path().join("installed");
    let mut cmd = Command::new("mmdebstrap");
    cmd.args(["--quiet", "--mode=root"])
        .arg(format!("--variant={}", base.variant))
        .arg(format!("--include={}", base.include.join(",")))
        .arg(MERGED_USR_HOOK)
        .arg("--format=null")
        .arg(format!(
            "--customize-hook=chroot \"$1\" dpkg-query -W -f '${{Package}} ${{Version}} ${{Architecture}}\\n' > {}",
            list.display()
        ))
        .arg(&base.suite)
        .arg("/dev/null")
        .args(host_sources()?);
    crate::run(&mut cmd).context("resolving the Debian base closure with mmdebstrap")?;
    let text = std::fs::read_to_string(&list)?;
    let mut pins = Vec::new();
    for line in text.lines() {
        let [name, version, arch] = line.split_whitespace().collect::<Vec<_>>()[..] else {
            bail!("unexpected dpkg-query line {line:?}");
        };
        let show = fetch::apt_show(
            &format!("{name}:{arch}={version}"),
            &format!("{name} {version}"),
        )?;
        let why = if base.include.iter().any(|i| i == name) {
            "asked for (include)"
        } else {
            "closure"
        };
        pins.push(Pin {
            name: name.into(),
            version: version.into(),
            arch: show.arch,
            size: show.size,
            sha256: show.sha256,
            why: why.into(),
        });
    }
    pins.sort_by(|a, b| a.name.cmp(&b.name));
    eprintln!("repin: Debian base: {} packages", pins.len());
    base.package = pins;
    fetch::write_keeping_header(&base_path(), &toml::to_string(&base)?)
}

/// Run an `apt-ftparchive` command (`what`: its subcommand) in `dir`; its output.
fn ftparchive(cmd: &mut Command, dir: &Path, what: &str) -> Result<Vec<u8>> {
    let out = cmd
        .current_dir(dir)
        .output()
        .with_context(|| format!("running apt-ftparchive {what}"))?;
    if !out.status.success() {
        bail!(
            "apt-ftparchive {what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}
