//! `cargo xtask image build NAME` and `cargo xtask image list`: golden images from the
//! declarations in `images/images/` and `images/elements/`, built offline from the pinned cache.
//!
//! The `images` crate does the building; this module is its [`Host`]: Debian packages come
//! from the offline cache (unpacked once, like the ramdisk's), workspace binaries are built
//! static like the ramdisk's agent, and the image's initrd is written with the ramdisk's
//! deterministic cpio writer and module closure; the Debian base is built offline by
//! `debian.rs` (mmdebstrap from the cached closure, the tarball cached by its pins' digest). Output: `target/images/NAME/{rootfs.tar.zst,
//! manifest.json}`.

use crate::fetch;
use anyhow::{Context, Result};
use images::build::{Host, HostError, InitrdSpec};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Arguments of `cargo xtask image`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, clap::Subcommand)]
enum Cmd {
    /// Build a golden image into target/images/NAME (rootfs.tar.zst + manifest.json).
    Build {
        /// The image (a file images/images/NAME.toml).
        name: String,
        /// Output directory (default target/images/NAME).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Never touch the network: the cache must already hold every pinned package.
        #[arg(long)]
        offline: bool,
    },
    /// List the declared images and their elements.
    List,
}

/// The triple workspace binaries are built for, statically linked against glibc (no musl
/// toolchain here), as the ramdisk's agent is.
const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";

fn images_dir() -> PathBuf {
    crate::root().join("images/images")
}

fn elements_dir() -> PathBuf {
    crate::root().join("images/elements")
}

/// Entry point of `cargo xtask image`.
pub fn run(args: Args) -> Result<()> {
    match args.cmd {
        Cmd::Build { name, out, offline } => {
            let out = out.unwrap_or_else(|| crate::root().join("target/images").join(&name));
            fetch::run(fetch::Args {
                offline,
                repin: false,
            })?;
            let start = Instant::now();
            let m = build(&name, &out)?;
            eprintln!(
                "image: {} {} in {:.1}s: {} ({:.1} MiB, {:.1} MiB unpacked, min disk {} MiB) sha256 {}",
                m.name,
                m.version,
                start.elapsed().as_secs_f64(),
                out.join(&m.stream.file).display(),
                m.stream.size as f64 / 1048576.0,
                m.stream.unpacked_size as f64 / 1048576.0,
                m.min_disk_mib,
                m.stream.sha256
            );
            Ok(())
        }
        Cmd::List => {
            for name in images::element::list_images(&images_dir())? {
                let def = images::element::load_image(&images_dir(), &name)?;
                let els = images::element::resolve(&def, &elements_dir())?;
                println!(
                    "{name:<12} {:<8} {}\n{:<21} elements: {}",
                    def.version,
                    def.description,
                    "",
                    els.iter()
                        .map(|e| e.name.as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                );
            }
            Ok(())
        }
    }
}

/// Build image `name` into `out` from the (already fetched) offline cache.
pub fn build(name: &str, out: &Path) -> Result<images::Manifest> {
    let def = images::element::load_image(&images_dir(), name)?;
    let mut host = CacheHost {
        pins: fetch::pins()?,
        binaries: HashMap::new(),
        boot_files: None,
    };
    images::build::build(&def, &elements_dir(), &mut host, out)
        .with_context(|| format!("building image {name} into {}", out.display()))
}

/// The real environment of the image builder.
struct CacheHost {
    pins: Vec<fetch::Pin>,
    binaries: HashMap<(String, String), PathBuf>,
    /// The deploy ramdisk and iPXE, staged once per build (dropped with the host).
    boot_files: Option<tempfile::TempDir>,
}

impl Host for CacheHost {
    fn package(&mut self, name: &str) -> Result<PathBuf, HostError> {
        let pin = match name.strip_suffix('*') {
            Some(prefix) => self.pins.iter().find(|p| p.name.starts_with(prefix)),
            None => self.pins.iter().find(|p| p.name == name),
        }
        .with_context(|| {
            format!("{name} is not pinned in xtask/cache/packages.toml (add a pin, then `cargo xtask fetch`)")
        })?;
        if !fetch::deb_path(pin).exists() {
            return Err(anyhow::anyhow!(
                "{} {} is not in the offline cache: run `cargo xtask fetch`",
                pin.name,
                pin.version
            )
            .into());
        }
        Ok(crate::ramdisk::unpack(pin)?)
    }

    fn workspace_binary(&mut self, package: &str, bin: &str) -> Result<PathBuf, HostError> {
        let key = (package.to_string(), bin.to_string());
        if let Some(p) = self.binaries.get(&key) {
            return Ok(p.clone());
        }
        let p = build_static(package, bin)?;
        self.binaries.insert(key, p.clone());
        Ok(p)
    }

    fn busybox_applets(&mut self, busybox: &Path) -> Result<Vec<String>, HostError> {
        let out = Command::new(busybox)
            .arg("--list-full")
            .output()
            .with_context(|| format!("running {} --list-full", busybox.display()))?;
        if !out.status.success() {
            return Err(anyhow::anyhow!("{} --list-full failed", busybox.display()).into());
        }
        let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        v.sort();
        Ok(v)
    }

    fn debian_base(&mut self) -> Result<PathBuf, HostError> {
        Ok(crate::debian::base_tar()?)
    }

    fn boot_files(&mut self) -> Result<PathBuf, HostError> {
        if self.boot_files.is_none() {
            let d = tempfile::tempdir()?;
            crate::appliance::stage_boot_files(d.path())?;
            self.boot_files = Some(d);
        }
        Ok(self
            .boot_files
            .as_ref()
            .expect("staged")
            .path()
            .to_path_buf())
    }

    fn initrd(&mut self, spec: &InitrdSpec) -> Result<Vec<u8>, HostError> {
        use ramdisk::initramfs::{cpio::Archive, pack_modules, write_zstd};
        let mut a = Archive::default();
        for d in ["dev", "proc", "sys", "newroot", "etc", "bin", "run", "tmp"] {
            a.dir(d);
        }
        a.file("init", 0o755, spec.init.clone());
        let busybox = std::fs::read(&spec.busybox)
            .with_context(|| format!("reading {}", spec.busybox.display()))?;
        a.file("bin/busybox", 0o755, busybox);
        let list = Command::new(&spec.busybox).arg("--list").output()?;
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                a.symlink(&format!("bin/{applet}"), "busybox");
            }
        }
        let wanted: Vec<&str> = spec.modules.iter().map(String::as_str).collect();
        let (_, absent) = pack_modules(&mut a, &spec.moddir, &wanted)?;
        if !absent.is_empty() {
            eprintln!(
                "image: initrd: not modules in this kernel (built in or absent): {}",
                absent.join(" ")
            );
        }
        let tmp = tempfile::NamedTempFile::new()?;
        write_zstd(&a, tmp.path())?;
        Ok(std::fs::read(tmp.path())?)
    }
}

/// Build a static binary of this workspace (release, crt-static, stripped), as the ramdisk's
/// agent is built, and return its path.
pub fn build_static(package: &str, bin: &str) -> Result<PathBuf> {
    crate::run(
        crate::cargo()
            .args([
                "build",
                "--release",
                "-p",
                package,
                "--bin",
                bin,
                "--target",
                STATIC_TARGET,
            ])
            .env(
                "RUSTFLAGS",
                "-C target-feature=+crt-static -C strip=symbols",
            ),
    )?;
    Ok(crate::root()
        .join("target")
        .join(STATIC_TARGET)
        .join("release")
        .join(bin))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same declarations and cache give the same stream. Needs the offline cache
    /// (`cargo xtask fetch`); fails, rather than skips, without it.
    #[test]
    fn tiny_builds_twice_to_the_same_sha256() {
        fetch::require_offline_cache();
        let d = tempfile::tempdir().unwrap();
        let a = build("tiny", &d.path().join("a")).unwrap();
        let b = build("tiny", &d.path().join("b")).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            images::store::hash_file(&d.path().join("b/rootfs.tar.zst"))
                .unwrap()
                .0,
            a.stream.sha256
        );
        assert_eq!(a.boot.initrd.as_deref(), Some("boot/initrd.img"));
        assert!(a.elements.contains(&"seed-config".to_string()));
    }

    /// Two builds of the Debian image give the same stream. Slow (minutes: zstd -19 over
    /// ~140 MiB, twice); the base tarball is built once and cached by its pins' digest, so the
    /// second build skips mmdebstrap. Needs the offline cache and mmdebstrap (`cargo xtask
    /// deps`, `cargo xtask fetch`); fails, rather than skips, without them.
    #[test]
    fn debian_builds_twice_to_the_same_sha256_slow() {
        fetch::require_offline_cache();
        let d = tempfile::tempdir().unwrap();
        // `cargo xtask test` built the image once already (for its boot test): compare a second
        // build with that one rather than building twice here (each build is minutes).
        let earlier = crate::root().join("target/images/debian/manifest.json");
        let a: images::Manifest = match std::fs::read(&earlier) {
            Ok(bytes) => serde_json::from_slice(&bytes).expect("the built debian manifest"),
            Err(_) => build("debian", &d.path().join("a")).unwrap(),
        };
        let b = build("debian", &d.path().join("b")).unwrap();
        assert_eq!(
            a,
            b,
            "two builds differ (if an element changed since {} was built, rebuild it first)",
            earlier.display()
        );
        assert_eq!(
            images::store::hash_file(&d.path().join("b/rootfs.tar.zst"))
                .unwrap()
                .0,
            a.stream.sha256
        );
        assert_eq!(a.elements[0], "debian-base");
        assert!(a.elements.contains(&"seed-firstboot".to_string()));
    }
}
