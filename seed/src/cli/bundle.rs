//! `seed bundle verify [DIR]`: check an unpacked appliance bundle (`cargo xtask bundle`).
//!
//! A bundle is one directory, `seed-<version>/`:
//! - `bin/seed`; `etc/seed.toml` (the daemon's config, paths relative to `etc/`);
//! - `share/` — the daemon's HTTP root: `share/ramdisk/` (the deploy ramdisk), `share/ipxe/`
//!   (iPXE's boot files, the TFTP root) and `share/images/` (an `images::ImageStore` with the
//!   bundle's golden images; the agents stream them from the HTTP server, which serves nothing
//!   outside its root, so the store lives inside it);
//! - `BUNDLE.toml` ([`BundleInfo`]: version, commit, date, images, sizes) and `SHA256SUMS`
//!   (`sha256sum -c` format, every file but itself).
//!
//! Verification re-hashes every file listed in `SHA256SUMS` and verifies every image of
//! `BUNDLE.toml` in the store against its manifest and against `BUNDLE.toml`'s digest. Files the
//! running daemon adds (`var/`) are not listed and not checked. The checksum file format and
//! [`BundleInfo`] are defined here once; `xtask bundle` writes them with the same code.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The checksum list (`sha256sum -c SHA256SUMS` accepts it).
pub const SUMS: &str = "SHA256SUMS";
/// The bundle's description.
pub const INFO: &str = "BUNDLE.toml";
/// The image store, relative to the bundle root (inside the HTTP root `share/`).
pub const IMAGES: &str = "share/images";

/// The daemon configuration a bundle ships as `etc/seed.toml` (loopback only until edited).
pub const CONFIG: &str = include_str!("../../examples/bundle-seed.toml");

/// `BUNDLE.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleInfo {
    pub name: String,
    pub version: String,
    /// The git commit it was built from (`-dirty` when the worktree had changes).
    pub commit: String,
    /// Build date, UTC (from `SOURCE_DATE_EPOCH`, else the commit's date: reproducible).
    pub date: String,
    pub source_date_epoch: u64,
    /// `release` or `debug` (the `seed` binary's cargo profile).
    pub profile: String,
    #[serde(default)]
    pub images: Vec<BundleImage>,
    pub sizes: Sizes,
}

/// One golden image in the bundle's store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleImage {
    pub name: String,
    pub version: String,
    /// The image stream's sha256 (its directory in the store).
    pub sha256: String,
    pub size: u64,
}

/// Bytes per part of the bundle (unpacked).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sizes {
    pub bin: u64,
    pub ramdisk: u64,
    pub ipxe: u64,
    pub images: u64,
    pub etc: u64,
    /// Every file but `BUNDLE.toml` and `SHA256SUMS`.
    pub total: u64,
}

/// Every regular file under `root`, as sorted `/`-separated relative paths (symlinks and other
/// kinds are refused: a bundle holds only files and directories).
pub fn files(root: &Path) -> Result<Vec<String>> {
    fn walk(root: &Path, rel: &str, out: &mut Vec<String>) -> Result<()> {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        };
        for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let e = e.with_context(|| format!("reading {}", dir.display()))?;
            let name = e
                .file_name()
                .into_string()
                .map_err(|n| anyhow::anyhow!("{}: file name is not UTF-8", n.to_string_lossy()))?;
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let ft = e.file_type()?;
            if ft.is_dir() {
                walk(root, &path, out)?;
            } else if ft.is_file() {
                out.push(path);
            } else {
                bail!(
                    "{}: not a regular file or directory",
                    root.join(&path).display()
                );
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, "", &mut out)?;
    out.sort();
    Ok(out)
}

/// The `SHA256SUMS` text for every file under `root` except `SHA256SUMS` itself.
pub fn sums(root: &Path) -> Result<String> {
    let mut text = String::new();
    for f in files(root)? {
        if f == SUMS {
            continue;
        }
        let (digest, _) = images::store::hash_file(&root.join(&f))
            .with_context(|| format!("hashing {}", root.join(&f).display()))?;
        // Two spaces: "text mode" in sha256sum's format; the path is relative to `root`.
        text += &format!("{digest}  {f}\n");
    }
    Ok(text)
}

/// One problem found by [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file (relative to the bundle root) or image at fault.
    pub what: String,
    pub reason: String,
}

/// Check the bundle at `root`: every `SHA256SUMS` line, then every image of `BUNDLE.toml` in
/// the store. Returns the problems found (empty: the bundle is intact) and the files checked.
pub fn verify(root: &Path) -> Result<(Vec<Problem>, usize)> {
    let sums_path = root.join(SUMS);
    let text = std::fs::read_to_string(&sums_path).with_context(|| {
        format!(
            "reading {} (is {} a bundle?)",
            sums_path.display(),
            root.display()
        )
    })?;
    let mut problems = Vec::new();
    let mut checked = 0;
    for (i, line) in text.lines().enumerate() {
        let Some((want, file)) = line.split_once("  ") else {
            bail!("{}:{}: not `<sha256>  <file>`", sums_path.display(), i + 1);
        };
        let escapes = Path::new(file)
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)));
        if escapes || want.len() != 64 {
            bail!("{}:{}: bad entry {line:?}", sums_path.display(), i + 1);
        }
        checked += 1;
        match images::store::hash_file(&root.join(file)) {
            Ok((got, _)) if got.eq_ignore_ascii_case(want) => {}
            Ok((got, _)) => problems.push(Problem {
                what: file.to_string(),
                reason: format!("sha256 {got}, SHA256SUMS says {want}"),
            }),
            Err(e) => problems.push(Problem {
                what: file.to_string(),
                reason: format!("{:#}", anyhow::Error::from(e)),
            }),
        }
    }
    let info_path = root.join(INFO);
    let info: BundleInfo = toml::from_str(
        &std::fs::read_to_string(&info_path)
            .with_context(|| format!("reading {}", info_path.display()))?,
    )
    .with_context(|| format!("parsing {}", info_path.display()))?;
    let store = images::ImageStore::open(root.join(IMAGES))
        .with_context(|| format!("opening the image store {}", root.join(IMAGES).display()))?;
    for img in &info.images {
        match store.verify(&img.name) {
            Ok(got) if got.manifest.stream.sha256.eq_ignore_ascii_case(&img.sha256) => {}
            Ok(got) => problems.push(Problem {
                what: format!("image {}", img.name),
                reason: format!(
                    "the store has sha256 {}, {INFO} says {}",
                    got.manifest.stream.sha256, img.sha256
                ),
            }),
            Err(e) => problems.push(Problem {
                what: format!("image {}", img.name),
                reason: format!("{:#}", anyhow::Error::from(e)),
            }),
        }
    }
    Ok((problems, checked))
}

/// `seed bundle …`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Check an unpacked bundle: every file against SHA256SUMS, every image against its manifest.
    Verify {
        /// The bundle directory (default: the one this `bin/seed` is in).
        dir: Option<PathBuf>,
    },
}

/// The bundle the running binary belongs to: `<bundle>/bin/seed` → `<bundle>`.
fn own_bundle() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the running binary")?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .with_context(|| format!("{} is not in a bundle's bin/", exe.display()))
}

pub fn run(args: Args) -> Result<()> {
    match args.cmd {
        Cmd::Verify { dir } => {
            let dir = match dir {
                Some(d) => d,
                None => own_bundle()?,
            };
            let (problems, checked) = verify(&dir)?;
            for p in &problems {
                eprintln!("{}: {}", p.what, p.reason);
            }
            if !problems.is_empty() {
                bail!(
                    "bundle {}: {} problem(s): {}",
                    dir.display(),
                    problems.len(),
                    problems
                        .iter()
                        .map(|p| p.what.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            println!(
                "bundle {}: {checked} files and every image verified",
                dir.display()
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(t: &Path) {
        std::fs::create_dir_all(t.join("bin")).unwrap();
        std::fs::write(t.join("bin/seed"), b"binary").unwrap();
        std::fs::create_dir_all(t.join(IMAGES)).unwrap();
        let info = BundleInfo {
            name: "seed".into(),
            version: "0".into(),
            commit: "x".into(),
            date: "1970-01-01T00:00:00Z".into(),
            source_date_epoch: 0,
            profile: "debug".into(),
            images: vec![],
            sizes: Sizes::default(),
        };
        std::fs::write(t.join(INFO), toml::to_string(&info).unwrap()).unwrap();
        let s = sums(t).unwrap();
        std::fs::write(t.join(SUMS), s).unwrap();
    }

    #[test]
    fn sums_cover_every_file_but_themselves_and_catch_a_changed_byte() {
        let t = tempfile::tempdir().unwrap();
        bundle(t.path());
        let text = std::fs::read_to_string(t.path().join(SUMS)).unwrap();
        let listed: Vec<&str> = text.lines().map(|l| &l[66..]).collect();
        assert_eq!(listed, vec![INFO, "bin/seed"]);
        assert_eq!(verify(t.path()).unwrap(), (vec![], 2));
        std::fs::write(t.path().join("bin/seed"), b"binarY").unwrap();
        let (problems, _) = verify(t.path()).unwrap();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].what, "bin/seed");
        // A listed file that is gone is named too.
        std::fs::remove_file(t.path().join("bin/seed")).unwrap();
        assert_eq!(verify(t.path()).unwrap().0[0].what, "bin/seed");
    }

    #[test]
    fn refuses_entries_escaping_the_bundle_and_missing_images() {
        let t = tempfile::tempdir().unwrap();
        bundle(t.path());
        let sums_path = t.path().join(SUMS);
        let good = std::fs::read_to_string(&sums_path).unwrap();
        std::fs::write(
            &sums_path,
            format!("{good}{}  ../etc/passwd\n", "0".repeat(64)),
        )
        .unwrap();
        assert!(format!("{:#}", verify(t.path()).unwrap_err()).contains("bad entry"));
        std::fs::write(&sums_path, &good).unwrap();
        let mut info: BundleInfo =
            toml::from_str(&std::fs::read_to_string(t.path().join(INFO)).unwrap()).unwrap();
        info.images.push(BundleImage {
            name: "tiny".into(),
            version: "1".into(),
            sha256: "0".repeat(64),
            size: 1,
        });
        std::fs::write(t.path().join(INFO), toml::to_string(&info).unwrap()).unwrap();
        let (problems, _) = verify(t.path()).unwrap();
        let whats: Vec<&str> = problems.iter().map(|p| p.what.as_str()).collect();
        assert_eq!(whats, vec![INFO, "image tiny"]);
    }

    #[test]
    fn the_shipped_config_is_valid_and_stays_on_loopback() {
        let t = tempfile::tempdir().unwrap();
        let etc = t.path().join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("seed.toml"), CONFIG).unwrap();
        let c = crate::daemon::config::DaemonConfig::load(&etc.join("seed.toml")).unwrap();
        assert_eq!(c.netboot.interface.as_deref(), Some("lo"));
        assert!(c.netboot.server_ip.is_loopback());
        assert!(c.netboot.wire.is_none());
        assert_eq!(c.images_dir().unwrap().0, etc.join("../share/images"));
        assert_eq!(c.ramdisk.kernel, etc.join("../share/ramdisk/vmlinuz"));
        assert_eq!(c.netboot.tftp.unwrap().root, etc.join("../share/ipxe"));
    }
}
