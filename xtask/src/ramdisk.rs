//! `cargo xtask ramdisk`: build the deploy ramdisk from the offline cache.
//!
//! Unpacks the pinned kernel and busybox packages (once) into `<cache>/unpacked/`, builds the
//! agent as a static binary, adds the deploy's tools (`mke2fs` with the shared libraries its
//! `DT_NEEDED` name, `extlinux`, `gptmbr.bin`, `systemd-bootx64.efi`), and writes `target/ramdisk/{vmlinuz,initramfs.zst}` plus a
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
    crate::image::build_static("ramdisk", "seed-agent")
}

fn sha256(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// The deploy's tools and their libraries, from the pinned packages, at the paths
/// `ramdisk::agent::deploy::Tools::debian()` expects.
fn deploy_tools(pins: &[fetch::Pin]) -> Result<Vec<ramdisk::initramfs::Extra>> {
    use ramdisk::initramfs::Extra;
    let dir = |name: &str| -> Result<PathBuf> {
        let p = pins
            .iter()
            .find(|p| p.name == name)
            .with_context(|| format!("no package {name:?} in xtask/cache/packages.toml"))?;
        unpack(p)
    };
    let file = |path: &str, mode: u32, from: PathBuf| -> Result<Extra> {
        if !from.is_file() {
            bail!("{} is not in its package", from.display());
        }
        Ok(Extra::File {
            path: path.into(),
            mode,
            from,
        })
    };
    let mke2fs = dir("e2fsprogs")?.join("sbin/mke2fs");
    let extlinux = dir("extlinux")?.join("usr/bin/extlinux");
    let mut out = vec![
        file("sbin/mke2fs", 0o755, mke2fs.clone())?,
        file("usr/bin/extlinux", 0o755, extlinux.clone())?,
        file(
            "usr/lib/syslinux/mbr/gptmbr.bin",
            0o644,
            dir("syslinux-common")?.join("usr/lib/syslinux/mbr/gptmbr.bin"),
        )?,
        file(
            "usr/lib/systemd/boot/efi/systemd-bootx64.efi",
            0o644,
            dir("systemd-boot-efi")?.join("usr/lib/systemd/boot/efi/systemd-bootx64.efi"),
        )?,
        // mke2fs looks for mounted filesystems in /etc/mtab first.
        Extra::Symlink {
            path: "etc/mtab".into(),
            target: "/proc/self/mounts".into(),
        },
    ];
    let mut libdirs = Vec::new();
    for pkg in [
        "libc6",
        "libext2fs2",
        "libcom-err2",
        "libblkid1",
        "libuuid1",
    ] {
        let d = dir(pkg)?;
        for sub in ["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu"] {
            if d.join(sub).is_dir() {
                libdirs.push(d.join(sub));
            }
        }
    }
    let libs = ramdisk::initramfs::dynlib::closure(&[mke2fs, extlinux], &libdirs)?;
    for (soname, from) in libs {
        out.push(file(
            &format!("lib/x86_64-linux-gnu/{soname}"),
            0o755,
            from,
        )?);
    }
    // The ELF interpreter the binaries name (PT_INTERP), not a DT_NEEDED.
    out.push(file(
        "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        0o755,
        dir("libc6")?.join("lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
    )?);
    out.push(Extra::Symlink {
        path: "lib64/ld-linux-x86-64.so.2".into(),
        target: "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2".into(),
    });
    Ok(out)
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
    let extras = deploy_tools(&pins)?;
    let built = ramdisk::initramfs::build_with(
        &ramdisk::initramfs::Inputs {
            moddir,
            busybox,
            agent,
            applets,
        },
        &extras,
    )?;
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
