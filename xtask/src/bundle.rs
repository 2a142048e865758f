//! `cargo xtask bundle`: the appliance bundle, one directory and one reproducible archive that
//! carry everything a seed needs offline.
//!
//! Builds what is missing (the `seed` binary — release unless `--debug`; the deploy ramdisk;
//! the named golden images), takes iPXE's boot files from the pinned ipxe package of the
//! offline cache, and lays out `<out>/seed-<version>/` as `seed::cli::bundle` describes
//! (`bin/`, `etc/seed.toml`, `share/{ramdisk,ipxe,images}`, `BUNDLE.toml`, `SHA256SUMS`). Then
//! `<out>/seed-<version>.tar.zst`: entries sorted, mtime = the build date, owners 0/root, modes
//! 0755/0644 by the owner's executable bit, zstd at a fixed level — two builds of the same
//! commit give the same bytes. Check one with `seed bundle verify`.

use crate::{cargo, fetch, image, ramdisk, root, run as sh};
use anyhow::{bail, Context, Result};
use seed::cli::bundle::{self as layout, BundleImage, BundleInfo, Sizes};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The archive's zstd level (fixed: part of what makes the archive reproducible). The big
/// parts (images, initramfs) are zstd streams already; a higher level mostly costs time.
const ZSTD_LEVEL: i32 = 9;

/// iPXE's boot files the DHCP server hands out (`[netboot.dhcp] bootfiles`: BIOS, UEFI) and the
/// full UEFI build for operators who chain it themselves; with their paths in the package
/// (its `usr/lib/ipxe/ipxe.efi` is an absolute symlink to `/boot/ipxe.efi`).
const IPXE_FILES: [(&str, &str); 3] = [
    ("undionly.kpxe", "usr/lib/ipxe/undionly.kpxe"),
    ("snponly.efi", "usr/lib/ipxe/snponly.efi"),
    ("ipxe.efi", "boot/ipxe.efi"),
];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A golden image to ship (any name `cargo xtask image build` knows; built under
    /// target/images/NAME if missing). Repeat for more.
    #[arg(long = "image", value_name = "NAME", default_values_t = ["tiny".to_string()])]
    pub images: Vec<String>,
    /// Where to write `seed-<version>/` and `seed-<version>.tar.zst` [default: the
    /// workspace's target/bundle].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Ship the debug build of `seed` (fast to build; for tests) instead of the release build.
    #[arg(long)]
    pub debug: bool,
}

pub fn run(args: Args) -> Result<()> {
    let start = Instant::now();
    let version = env!("CARGO_PKG_VERSION");
    let out = match &args.out {
        Some(o) if o.is_absolute() => o.clone(),
        Some(o) => std::env::current_dir()?.join(o),
        None => root().join("target/bundle"),
    };
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));

    // 1. What the bundle carries, built when missing.
    let profile = if args.debug { "debug" } else { "release" };
    let mut build = cargo();
    build.args(["build", "--quiet", "-p", "seed", "--bin", "seed"]);
    if !args.debug {
        build.arg("--release");
    }
    sh(&mut build)?;
    let seed_bin = target.join(profile).join("seed");
    let ramdisk_dir = root().join("target/ramdisk");
    if !ramdisk_dir.join("vmlinuz").is_file() || !ramdisk_dir.join("initramfs.zst").is_file() {
        ramdisk::run(ramdisk::Args {
            out: "target/ramdisk".into(),
        })?;
    }
    let mut manifests = Vec::new();
    for name in &args.images {
        let dir = root().join("target/images").join(name);
        if !dir.join("manifest.json").is_file() {
            fetch::run(fetch::Args {
                offline: false,
                repin: false,
            })?;
            image::build(name, &dir).with_context(|| format!("building image {name}"))?;
        }
        manifests.push(dir.join("manifest.json"));
    }
    let ipxe = ipxe_files()?;

    // 2. The directory, staged beside its final place and renamed when complete.
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let name = format!("seed-{version}");
    let dest = out.join(&name);
    let stage = out.join(format!(".{name}.partial"));
    remove_dir(&stage)?;
    let copy = |from: &Path, to: &str| -> Result<()> {
        let to = stage.join(to);
        std::fs::create_dir_all(to.parent().expect("inside the stage"))?;
        std::fs::copy(from, &to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        Ok(())
    };
    copy(&seed_bin, "bin/seed")?;
    for f in ["vmlinuz", "initramfs.zst", "ramdisk.json"] {
        let from = ramdisk_dir.join(f);
        if from.is_file() {
            copy(&from, &format!("share/ramdisk/{f}"))?;
        }
    }
    for (f, from) in &ipxe.files {
        copy(from, &format!("share/ipxe/{f}"))?;
    }
    let store = images::ImageStore::open(stage.join(layout::IMAGES))?;
    let mut shipped = Vec::new();
    for m in &manifests {
        let img = store
            .import(m)
            .with_context(|| format!("importing {}", m.display()))?;
        shipped.push(BundleImage {
            name: img.manifest.name,
            version: img.manifest.version,
            sha256: img.manifest.stream.sha256,
            size: img.manifest.stream.size,
        });
    }
    drop(store);
    std::fs::create_dir_all(stage.join("etc"))?;
    std::fs::write(stage.join("etc/seed.toml"), layout::CONFIG)?;

    // 3. BUNDLE.toml and SHA256SUMS.
    let (commit, epoch) = provenance()?;
    let size_of = |prefix: &str| -> Result<u64> {
        let mut n = 0;
        for f in layout::files(&stage)? {
            if f.starts_with(prefix) {
                n += std::fs::metadata(stage.join(&f))?.len();
            }
        }
        Ok(n)
    };
    let sizes = Sizes {
        bin: size_of("bin/")?,
        ramdisk: size_of("share/ramdisk/")?,
        ipxe: size_of("share/ipxe/")?,
        images: size_of(&format!("{}/", layout::IMAGES))?,
        etc: size_of("etc/")?,
        total: size_of("")?,
    };
    let info = BundleInfo {
        name: "seed".into(),
        version: version.into(),
        commit,
        date: rfc3339(epoch),
        source_date_epoch: epoch,
        profile: profile.into(),
        images: shipped,
        sizes: sizes.clone(),
    };
    let header = format!(
        "# The seed appliance bundle (cargo xtask bundle). Check it: ./bin/seed bundle verify\n\
         # iPXE from the offline cache's {}\n\n",
        ipxe.package
    );
    std::fs::write(
        stage.join(layout::INFO),
        header + &toml::to_string(&info).context("writing BUNDLE.toml")?,
    )?;
    let sums = layout::sums(&stage)?;
    std::fs::write(stage.join(layout::SUMS), sums)?;
    remove_dir(&dest)?;
    fsutil::rename(&stage, &dest)
        .with_context(|| format!("renaming {} to {}", stage.display(), dest.display()))?;

    // 4. The archive.
    let archive = out.join(format!("{name}.tar.zst"));
    let (digest, archive_size) = write_archive(&dest, &name, epoch, &archive)?;

    let mib = |n: u64| n as f64 / 1048576.0;
    println!("bundle {} ({profile} seed)", dest.display());
    println!("  bin/seed         {:>9.1} MiB", mib(sizes.bin));
    println!("  share/ramdisk    {:>9.1} MiB", mib(sizes.ramdisk));
    println!("  share/ipxe       {:>9.1} MiB", mib(sizes.ipxe));
    println!(
        "  share/images     {:>9.1} MiB  ({})",
        mib(sizes.images),
        info.images
            .iter()
            .map(|i| format!("{} {}", i.name, i.version))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("  etc              {:>9.1} MiB", mib(sizes.etc));
    println!("  total            {:>9.1} MiB", mib(sizes.total));
    println!(
        "archive {} {:.1} MiB sha256 {digest}",
        archive.display(),
        mib(archive_size)
    );
    println!("built in {:.1}s", start.elapsed().as_secs_f64());
    Ok(())
}

fn remove_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", dir.display())),
    }
}

/// iPXE's boot files, unpacked from the pinned ipxe package (fetched into the cache if absent).
pub(crate) struct Ipxe {
    package: String,
    pub(crate) files: Vec<(&'static str, PathBuf)>,
    /// Holds the unpacked package while the files are copied.
    _dir: tempfile::TempDir,
}

pub(crate) fn ipxe_files() -> Result<Ipxe> {
    let pins = fetch::pins()?;
    let pin = pins
        .iter()
        .find(|p| p.name == "ipxe")
        .context("xtask/cache/packages.toml pins no ipxe package")?;
    let deb = fetch::deb_path(pin);
    if !deb.is_file() {
        fetch::run(fetch::Args {
            offline: false,
            repin: false,
        })?;
    }
    let dir = tempfile::tempdir()?;
    sh(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(dir.path()))?;
    let mut files = Vec::new();
    for (f, inside) in IPXE_FILES {
        let p = dir.path().join(inside);
        if !p.is_file() {
            bail!("{} has no {inside}", deb.display());
        }
        files.push((f, p));
    }
    Ok(Ipxe {
        package: pin.file_name(),
        files,
        _dir: dir,
    })
}

/// The commit (with `-dirty` when the worktree has changes to tracked files) and the build
/// date: `SOURCE_DATE_EPOCH` if set, else the commit's date.
pub(crate) fn provenance() -> Result<(String, u64)> {
    let git = |args: &[&str]| -> Result<String> {
        let out = Command::new("git")
            .args(args)
            .current_dir(root())
            .output()
            .context("running git")?;
        if !out.status.success() {
            bail!(
                "git {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let mut commit = git(&["rev-parse", "HEAD"])?;
    if !git(&["status", "--porcelain", "--untracked-files=no"])?.is_empty() {
        commit += "-dirty";
    }
    let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) => s
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={s:?} is not a number of seconds"))?,
        Err(_) => git(&["log", "-1", "--format=%ct"])?
            .parse()
            .context("the commit's date")?,
    };
    Ok((commit, epoch))
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time. Hand-written (days → civil date, H. Hinnant's
/// algorithm) rather than a date crate for one line of BUNDLE.toml.
pub(crate) fn rfc3339(epoch: u64) -> String {
    let days = (epoch / 86400) as i64;
    let secs = epoch % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Write `dir` as `<name>/…` into a zstd-compressed tar at `dest`: sorted entries, fixed
/// headers (mtime `epoch`, uid/gid 0, owner names root, modes 0755/0644). Returns the archive's
/// sha256 and size. The tar crate with explicit headers rather than `images::tree`: that one
/// holds each file in memory and fixes mtime at 0.
fn write_archive(dir: &Path, name: &str, epoch: u64, dest: &Path) -> Result<(String, u64)> {
    let file = fsutil::AtomicFile::new(dest)
        .with_context(|| format!("creating a temporary file beside {}", dest.display()))?;
    let tmp = file.temp_path().to_path_buf();
    let mut enc = zstd::Encoder::new(std::io::BufWriter::new(file), ZSTD_LEVEL)?;
    enc.include_checksum(true)?;
    let mut tar = tar::Builder::new(enc);
    let header = |kind: tar::EntryType, mode: u32, size: u64| -> Result<tar::Header> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(epoch);
        h.set_uid(0);
        h.set_gid(0);
        h.set_username("root")?;
        h.set_groupname("root")?;
        Ok(h)
    };
    let files = layout::files(dir)?;
    // Every directory, parents first (a sorted set of the files' ancestors and the root).
    let mut dirs = std::collections::BTreeSet::new();
    dirs.insert(String::new());
    for f in &files {
        let mut p = f.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            dirs.insert(parent.to_string());
            p = parent;
        }
    }
    let mut entries: Vec<(String, bool)> = dirs.into_iter().map(|d| (d, true)).collect();
    entries.extend(files.into_iter().map(|f| (f, false)));
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (rel, is_dir) in entries {
        let path = if rel.is_empty() {
            format!("{name}/")
        } else if is_dir {
            format!("{name}/{rel}/")
        } else {
            format!("{name}/{rel}")
        };
        if is_dir {
            let mut h = header(tar::EntryType::Directory, 0o755, 0)?;
            tar.append_data(&mut h, &path, std::io::empty())
                .with_context(|| format!("archiving {path}"))?;
            continue;
        }
        let src = dir.join(&rel);
        let f = std::fs::File::open(&src).with_context(|| format!("opening {}", src.display()))?;
        let meta = f.metadata()?;
        let exec = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o100 != 0;
        let mut h = header(
            tar::EntryType::Regular,
            if exec { 0o755 } else { 0o644 },
            meta.len(),
        )?;
        // Exactly the size in the header: a file growing meanwhile must not corrupt the archive.
        tar.append_data(&mut h, &path, f.take(meta.len()))
            .with_context(|| format!("archiving {}", src.display()))?;
    }
    let enc = tar.into_inner().context("finishing the tar stream")?;
    let mut w = enc.finish().context("finishing the zstd stream")?;
    w.flush()?;
    w.into_inner()
        .map_err(|e| e.into_error())?
        .commit()
        .with_context(|| {
            format!(
                "writing {} and renaming it to {}",
                tmp.display(),
                dest.display()
            )
        })?;
    let (digest, size) = images::store::hash_file(dest)?;
    Ok((digest, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn archives_are_reproducible_and_sorted() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("b");
        std::fs::create_dir_all(d.join("z/y")).unwrap();
        std::fs::write(d.join("z/y/f"), b"one").unwrap();
        std::fs::write(d.join("a"), b"two").unwrap();
        let (one, _) = write_archive(&d, "seed-0", 1234, &t.path().join("1.tar.zst")).unwrap();
        // Different mtimes and permissions on disk do not change the archive.
        std::fs::set_permissions(
            d.join("a"),
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
        )
        .unwrap();
        let (two, _) = write_archive(&d, "seed-0", 1234, &t.path().join("2.tar.zst")).unwrap();
        assert_eq!(one, two);
        let (three, _) = write_archive(&d, "seed-0", 1235, &t.path().join("3.tar.zst")).unwrap();
        assert_ne!(one, three);
        let raw =
            zstd::decode_all(&std::fs::read(t.path().join("1.tar.zst")).unwrap()[..]).unwrap();
        let mut ar = tar::Archive::new(&raw[..]);
        let got: Vec<(String, u64, u32)> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.mtime().unwrap(),
                    h.mode().unwrap(),
                )
            })
            .collect();
        let names: Vec<&str> = got.iter().map(|g| g.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "seed-0/",
                "seed-0/a",
                "seed-0/z/",
                "seed-0/z/y/",
                "seed-0/z/y/f"
            ]
        );
        assert!(got.iter().all(|g| g.1 == 1234));
        assert_eq!(got[1].2, 0o644);
    }
}
