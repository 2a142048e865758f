//! `cargo xtask fetch`: the offline cache of pinned Debian packages.
//!
//! The pins live in `xtask/cache/packages.toml` (name, version, arch, size, sha256). Packages
//! are downloaded with `apt-get download NAME=VERSION` into `<cache>/debs/` and verified; a file
//! already in the cache with the right digest is not fetched again, so after one fetch every
//! build works offline. A digest mismatch is an error that names the package, and the bad file
//! is removed rather than kept.
//!
//! The Debian golden image base's package closure is pinned in `xtask/cache/debian-base.toml`
//! (see `debian.rs`); `fetch` downloads and verifies it with the same code.
//!
//! The cache directory is `$SEED_CACHE`, else `${XDG_CACHE_HOME:-$HOME/.cache}/seed`. It is
//! outside git on purpose.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Arguments of `cargo xtask fetch`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only verify what is already in the cache; never touch the network.
    #[arg(long, conflicts_with = "repin")]
    pub offline: bool,
    /// Rewrite the pins from this machine's current apt candidates (maintainers only).
    #[arg(long)]
    pub repin: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PinFile {
    package: Vec<Pin>,
}

/// One pinned package.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub size: u64,
    pub sha256: String,
    pub why: String,
}

impl Pin {
    /// The file name apt-get download gives it (the epoch's ':' is written `%3a`).
    pub fn file_name(&self) -> String {
        format!(
            "{}_{}_{}.deb",
            self.name,
            self.version.replace(':', "%3a"),
            self.arch
        )
    }
}

fn pins_path() -> PathBuf {
    crate::root().join("xtask/cache/packages.toml")
}

/// Read the pinned package list.
pub fn pins() -> Result<Vec<Pin>> {
    let path = pins_path();
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let file: PinFile =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(file.package)
}

/// The offline cache directory (one definition, shared with the seed's lab and the tests).
pub use seed::cli::lab_seed::cache_dir;

/// Where a pinned package's .deb lives in the cache (it may not be fetched yet).
pub fn deb_path(pin: &Pin) -> PathBuf {
    cache_dir().join("debs").join(pin.file_name())
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(h.finalize()))
}

/// Check one cached file against its pin.
fn verify(pin: &Pin, path: &Path) -> Result<()> {
    let got = sha256_file(path)?;
    if got != pin.sha256 {
        bail!(
            "{} {}: checksum mismatch: {} has sha256 {got}, the pin says {}",
            pin.name,
            pin.version,
            path.display(),
            pin.sha256
        );
    }
    Ok(())
}

/// Entry point of `cargo xtask fetch`.
pub fn run(args: Args) -> Result<()> {
    if args.repin {
        repin()?;
        return crate::debian::repin();
    }
    // The appliance's packages, then the Debian image base's closure (`debian.rs`).
    let mut pins = pins()?;
    pins.extend(crate::debian::pins()?);
    let debs = cache_dir().join("debs");
    std::fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    let mut fetched = 0;
    for pin in &pins {
        let path = deb_path(pin);
        if path.exists() {
            match verify(pin, &path) {
                Ok(()) => {
                    eprintln!("fetch: {:<32} {} cached", pin.name, pin.version);
                    continue;
                }
                Err(e) if args.offline => return Err(e),
                Err(e) => {
                    eprintln!("fetch: {e:#}; fetching it again");
                    std::fs::remove_file(&path).ok();
                }
            }
        } else if args.offline {
            bail!("{} {} is not in the offline cache ({}): run `cargo xtask fetch` once with the network on", pin.name, pin.version, path.display());
        }
        download(pin, &debs)?;
        fetched += 1;
    }
    eprintln!(
        "fetch: {} package(s) verified in {} ({fetched} downloaded)",
        pins.len(),
        debs.display()
    );
    Ok(())
}

fn download(pin: &Pin, debs: &Path) -> Result<()> {
    let tmp = tempdir_in(debs)?;
    eprintln!(
        "fetch: {:<32} {} downloading {:.1} MiB",
        pin.name,
        pin.version,
        pin.size as f64 / 1048576.0
    );
    let out = Command::new("apt-get")
        .args(["download", "-q"])
        .arg(format!("{}={}", pin.name, pin.version))
        .current_dir(&tmp)
        .output()
        .context("running apt-get download")?;
    if !out.status.success() {
        std::fs::remove_dir_all(&tmp).ok();
        bail!(
            "{} {}: apt-get download failed: {}\n(if Debian's archive no longer has this version, `cargo xtask fetch --repin` pins the current one)",
            pin.name,
            pin.version,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let got = tmp.join(pin.file_name());
    let res = verify(pin, &got).and_then(|()| {
        fsutil::rename(&got, &deb_path(pin))
            .with_context(|| format!("moving {} into the cache", got.display()))
    });
    std::fs::remove_dir_all(&tmp).ok();
    res
}

fn tempdir_in(dir: &Path) -> Result<PathBuf> {
    let p = dir.join(format!(".partial-{}", std::process::id()));
    std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
    Ok(p)
}

/// Rewrite the pins from `apt-cache show NAME=CANDIDATE` (Debian's index carries the digest, so
/// nothing is downloaded).
fn repin() -> Result<()> {
    let mut pins = pins()?;
    for pin in &mut pins {
        let policy = Command::new("apt-cache")
            .args(["policy", &pin.name])
            .output()?;
        let text = String::from_utf8_lossy(&policy.stdout);
        let candidate = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Candidate: "))
            .filter(|v| *v != "(none)")
            .with_context(|| format!("{}: apt has no candidate (run apt-get update?)", pin.name))?
            .to_string();
        let show = apt_show(&format!("{}={candidate}", pin.name), &pin.name)?;
        pin.version = candidate;
        (pin.arch, pin.size, pin.sha256) = (show.arch, show.size, show.sha256);
        eprintln!("repin: {} {} {}", pin.name, pin.version, pin.sha256);
    }
    let body = toml::to_string(&PinFile { package: pins })?;
    write_keeping_header(&pins_path(), &body)
}

/// For tests that need the offline cache: verify it as `cargo xtask fetch --offline` does,
/// panicking (failing the test rather than skipping it) without it.
#[cfg(test)]
pub fn require_offline_cache() {
    run(Args {
        offline: true,
        repin: false,
    })
    .expect("the offline cache (run `cargo xtask fetch`)");
}

/// What `apt-cache show` says of one package version.
pub(crate) struct AptShow {
    pub arch: String,
    pub size: u64,
    pub sha256: String,
}

/// `apt-cache show SPEC` (`name=version`, `name:arch=version`): the first stanza's fields; `who`
/// names the package in errors.
pub(crate) fn apt_show(spec: &str, who: &str) -> Result<AptShow> {
    let show = Command::new("apt-cache").args(["show", spec]).output()?;
    let stanza = String::from_utf8_lossy(&show.stdout);
    let field = |k: &str| {
        stanza
            .lines()
            .take_while(|l| !l.is_empty())
            .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
            .with_context(|| format!("{who}: no {k} in apt-cache show"))
    };
    Ok(AptShow {
        arch: field("Architecture:")?,
        size: field("Size:")?.parse().context("Size")?,
        sha256: field("SHA256:")?,
    })
}

/// Replace a pin file with `body`, keeping its leading comment (and blank) lines.
pub(crate) fn write_keeping_header(path: &Path, body: &str) -> Result<()> {
    let header: String = std::fs::read_to_string(path)?
        .lines()
        .take_while(|l| l.starts_with('#') || l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(path, header + body)?;
    Ok(())
}
