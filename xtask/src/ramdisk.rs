//! `cargo xtask ramdisk`: build the deploy ramdisk from the offline cache.
//!
//! Unpacks the pinned kernel and busybox packages (once) into `<cache>/unpacked/`, builds the
//! agent as a static binary, and writes `target/ramdisk/{vmlinuz,initramfs.zst}` plus a
//! `ramdisk.json` manifest with their sha256. Works with the network off once `cargo xtask
//! fetch` has run; the same inputs give the same bytes.

use crate::fetch;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Arguments of `cargo xtask ramdisk`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to write the kernel, initramfs and manifest.
    #[arg(long, default_value = "target/ramdisk")]
    pub out: PathBuf,
}

/// The triple the agent is built for, statically linked against glibc (no musl toolchain here).
const AGENT_TARGET: &str = "x86_64-unknown-linux-gnu";

pub fn unpack(pin: &fetch::Pin) -> Result<PathBuf> {
    let dir = fetch::cache_dir()
        .join("unpacked")
        .join(pin.file_name().trim_end_matches(".deb"));
    let marker = dir.join(".unpacked");
    if marker.exists() {
        return Ok(dir);
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cleaning {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    crate::run(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(fetch::deb_path(pin))
            .arg(&dir),
    )?;
    std::fs::write(&marker, b"")?;
    Ok(dir)
}

fn pin<'a>(pins: &'a [fetch::Pin], prefix: &str) -> Result<&'a fetch::Pin> {
    pins.iter()
        .find(|p| p.name.starts_with(prefix))
        .with_context(|| {
            format!("no package starting with {prefix:?} in xtask/cache/packages.toml")
        })
}

/// Build the static agent and return its path.
pub fn build_agent() -> Result<PathBuf> {
    crate::run(
        crate::cargo()
            .args([
                "build",
                "--release",
                "-p",
                "ramdisk",
                "--bin",
                "seed-agent",
                "--target",
                AGENT_TARGET,
            ])
            .env(
                "RUSTFLAGS",
                "-C target-feature=+crt-static -C strip=symbols",
            ),
    )?;
    Ok(crate::root()
        .join("target")
        .join(AGENT_TARGET)
        .join("release/seed-agent"))
}

fn sha256(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// Entry point of `cargo xtask ramdisk`.
pub fn run(args: Args) -> Result<()> {
    fetch::run(fetch::Args {
        offline: false,
        repin: false,
    })?;
    let pins = fetch::pins()?;
    let kernel = unpack(pin(&pins, "linux-image-")?)?;
    let busybox_dir = unpack(pin(&pins, "busybox-static")?)?;
    let moddir = std::fs::read_dir(kernel.join("lib/modules"))?
        .next()
        .context("the kernel package has no lib/modules/<version>")??
        .path();
    let kver = moddir.file_name().unwrap().to_string_lossy().to_string();
    let busybox = busybox_dir.join("bin/busybox");
    let list = Command::new(&busybox)
        .arg("--list")
        .output()
        .context("running busybox --list")?;
    if !list.status.success() {
        bail!("{} --list failed", busybox.display());
    }
    let mut applets: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    applets.sort();
    let agent = build_agent()?;
    let built = ramdisk::initramfs::build(&ramdisk::initramfs::Inputs {
        moddir,
        busybox,
        agent,
        applets,
    })?;
    let out = crate::root().join(&args.out);
    std::fs::create_dir_all(&out)?;
    let initrd = out.join("initramfs.zst");
    ramdisk::initramfs::write_zstd(&built.archive, &initrd)?;
    let vmlinuz = out.join("vmlinuz");
    std::fs::copy(kernel.join(format!("boot/vmlinuz-{kver}")), &vmlinuz)
        .with_context(|| format!("copying vmlinuz-{kver}"))?;
    let manifest = serde_json::json!({
        "kernel_version": kver,
        "vmlinuz": { "file": "vmlinuz", "sha256": sha256(&vmlinuz)? },
        "initramfs": { "file": "initramfs.zst", "sha256": sha256(&initrd)?, "size": std::fs::metadata(&initrd)?.len() },
        "modules": built.modules.iter().map(|m| m.name.clone()).collect::<Vec<_>>(),
        "absent_modules": built.absent_modules,
    });
    std::fs::write(
        out.join("ramdisk.json"),
        serde_json::to_string_pretty(&manifest)? + "\n",
    )?;
    eprintln!(
        "ramdisk: {} ({} entries, {} modules; not in this kernel: {}) sha256 {}",
        initrd.display(),
        built.archive.len(),
        built.modules.len(),
        if built.absent_modules.is_empty() {
            "none".to_string()
        } else {
            built.absent_modules.join(" ")
        },
        manifest["initramfs"]["sha256"].as_str().unwrap_or("")
    );
    Ok(())
}
