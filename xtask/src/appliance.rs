//! `cargo xtask appliance`: the seed as a machine of its own, in three forms from one build,
//! written to `target/appliance/`:
//!
//! - netboot: `seed-appliance.vmlinuz` + `seed-appliance.initrd` — the whole system in one
//!   initramfs (what another seed PXE-boots);
//! - `seed-appliance.iso`: a hybrid ISO (El Torito BIOS via isolinux, UEFI via an EFI FAT image
//!   with systemd-boot; isohybrid MBR code + GPT) that boots the same kernel + initrd as a CD or,
//!   written to a USB stick, as a disk; with the `SEEDCFG` FAT partition (seed.toml,
//!   nodes.yaml) and a small `seed-state` ext4 partition appended;
//! - `seed-appliance.img` (+ `.qcow2`): the same layout with a larger state partition, for
//!   QEMU and `dd` onto a server's disk.
//!
//! The system is a golden image like the nodes' (`images/images/appliance.toml`: busybox-base,
//! appliance-kernel, seed-appliance) built by the same element builder from the offline cache;
//! here its stream becomes an initramfs, with the driver modules added and the bundle's
//! `share/` (deploy ramdisk, iPXE, the golden images' store) in a second, uncompressed cpio
//! segment (its big parts are zstd streams already: compressing them again costs boot time
//! under TCG for nothing). Reproducible: entries sorted, mtimes fixed, FAT volume ids, ext4
//! UUIDs and ISO dates derived from `SOURCE_DATE_EPOCH` (else the commit's date).

use crate::{bundle, fetch, image, ramdisk, root, run as sh};
use ::ramdisk::agent::deploy::boot::EspFile;
use ::ramdisk::initramfs::cpio::Archive;
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The golden images the appliance carries unless told otherwise: the tiny image and the
/// undercloud's, which the seed deploys before it hands over (`Args::images`' default too).
pub fn default_images() -> Vec<String> {
    vec!["tiny".to_string(), "undercloud".to_string()]
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Golden images to carry (built under target/images/NAME when missing): by default the
    /// tiny image and the undercloud's, which the seed deploys before it hands over.
    #[arg(long = "image", value_name = "NAME", default_values_t = ["tiny".to_string(), "undercloud".to_string()])]
    pub images: Vec<String>,
    /// Output directory [default: target/appliance].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Never touch the network: the cache must already hold every pinned package.
    #[arg(long)]
    pub offline: bool,
}

/// The drivers the appliance loads at boot (dependencies added from each module's modinfo):
/// QEMU's devices (virtio, e1000, AHCI, USB storage on xHCI/EHCI, the CD) and the common server
/// NICs whose drivers work without firmware files. `virtio_rng`: a VM whose CPU has no RDRAND
/// (QEMU's TCG default) never gets its kernel's random pool ready without it, and every
/// `getrandom` (the API token, the agent-token key) waits forever.
const MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_rng",
    "virtio_net",
    "virtio_blk",
    "virtio_scsi",
    "e1000",
    "e1000e",
    "igb",
    "ixgbe",
    "i40e",
    "r8169",
    "tg3",
    "ahci",
    "ata_piix",
    "sd_mod",
    "sr_mod",
    "nvme",
    "xhci_pci",
    "ehci_pci",
    "uhci_hcd",
    "usb_storage",
    "uas",
    "usbhid",
    "hid_generic",
    "loop",
    "crc32c_generic",
    "crc32c_intel",
    "ext4",
    "isofs",
    "vfat",
    "nls_cp437",
    "nls_ascii",
    "nls_utf8",
    "nls_iso8859_1",
];

/// The kernel command line of every form (the boot medium adds `seed.medium=`).
const CMDLINE: &str = "console=tty0 console=ttyS0,115200 quiet";

/// MiB of the appended partitions.
const SEEDCFG_MIB: u64 = 8;
const ISO_STATE_MIB: u64 = 64;
const IMG_STATE_MIB: u64 = 512;

/// What one build produced.
#[derive(Debug, Clone)]
pub struct Built {
    pub dir: PathBuf,
    /// (file name, size, sha256) of each form.
    pub files: Vec<(String, u64, String)>,
}

pub fn run(args: Args) -> Result<()> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| root().join("target/appliance"));
    fetch::run(fetch::Args {
        offline: args.offline,
        repin: false,
    })?;
    let start = Instant::now();
    let b = build(&out, &args.images)?;
    for (f, size, sum) in &b.files {
        println!(
            "  {f:<24} {:>8.1} MiB  sha256 {sum}",
            *size as f64 / 1048576.0
        );
    }
    println!(
        "appliance built in {:.0}s into {}",
        start.elapsed().as_secs_f64(),
        b.dir.display()
    );
    Ok(())
}

/// Build every form into `out` from the fetched cache.
pub fn build(out: &Path, images: &[String]) -> Result<Built> {
    let work = out.join("work");
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("cleaning {}", work.display()))?;
    }
    std::fs::create_dir_all(&work)?;
    let (commit, epoch) = bundle::provenance()?;

    // 1. The system, as a golden image.
    let sys = work.join("system");
    let m = image::build("appliance", &sys)?;
    eprintln!(
        "appliance: system {} MiB unpacked",
        m.stream.unpacked_size >> 20
    );

    // 2. What it serves: the bundle's share/.
    let share = work.join("share");
    stage_share(&share, images)?;

    // 3. Kernel and initrd.
    let release = format!(
        "seed appliance {} ({})",
        env!("CARGO_PKG_VERSION"),
        &commit[..commit.len().min(12)]
    );
    let (kernel, os) = system_cpio(&sys.join(&m.stream.file), &release)?;
    let payload = share_cpio(&share)?;
    let vmlinuz = out.join("seed-appliance.vmlinuz");
    let initrd = out.join("seed-appliance.initrd");
    std::fs::write(&vmlinuz, &kernel)?;
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&initrd)?);
        payload.write_newc(&mut f)?;
        let mut z = zstd::Encoder::new(&mut f, 19)?;
        z.include_checksum(true)?;
        os.write_newc(&mut z)?;
        z.finish()?;
        f.flush()?;
    }

    // 4. The partitions and the two disk forms.
    let efi = work.join("efi.img");
    write_fat(
        &efi,
        fat_mib(&[&vmlinuz, &initrd]),
        epoch as u32,
        "SEED-EFI",
        &efi_files(&vmlinuz, &initrd)?,
    )?;
    let seedcfg = work.join("seedcfg.img");
    write_fat(
        &seedcfg,
        SEEDCFG_MIB,
        (epoch as u32) ^ 0x5eed_cf90,
        "SEEDCFG",
        &seedcfg_files(),
    )?;
    let iso_root = work.join("iso");
    stage_iso_root(&iso_root, &vmlinuz, &initrd)?;
    // The EFI image lives inside the ISO 9660 volume: OVMF sizes an El Torito image whose
    // catalog size is 0 (it is over 32 MiB) by the volume's space, so an image appended after
    // the volume is cut short and not found. xorriso points MBR partition 2 (0xef) at it.
    std::fs::hard_link(&efi, iso_root.join("boot/efi.img"))
        .or_else(|_| std::fs::copy(&efi, iso_root.join("boot/efi.img")).map(|_| ()))?;
    let iso = out.join("seed-appliance.iso");
    let img = out.join("seed-appliance.img");
    for (file, state_mib) in [(&iso, ISO_STATE_MIB), (&img, IMG_STATE_MIB)] {
        let state = work.join(format!("state-{state_mib}.img"));
        mkfs_state(&state, state_mib, epoch)?;
        xorriso(&iso_root, &seedcfg, &state, file, epoch)?;
    }
    let qcow2 = out.join("seed-appliance.qcow2");
    let _ = std::fs::remove_file(&qcow2);
    sh(Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2", "-c"])
        .arg(&img)
        .arg(&qcow2))?;

    let mut files = Vec::new();
    let mut sums = String::new();
    for p in [&iso, &img, &qcow2, &vmlinuz, &initrd] {
        let (sum, size) = images::store::hash_file(p)?;
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        sums.push_str(&format!("{sum}  {name}\n"));
        files.push((name, size, sum));
    }
    std::fs::write(out.join("SHA256SUMS"), sums)?;
    std::fs::remove_dir_all(&work)?;
    Ok(Built {
        dir: out.to_path_buf(),
        files,
    })
}

/// The bundle's `share/`: the deploy ramdisk, iPXE's boot files, an image store with `images`.
fn stage_share(share: &Path, images: &[String]) -> Result<()> {
    stage_boot_files(share)?;
    let store = images::ImageStore::open(share.join("images"))?;
    for name in images {
        let dir = root().join("target/images").join(name);
        if !dir.join("manifest.json").is_file() {
            image::build(name, &dir).with_context(|| format!("building image {name}"))?;
        }
        store
            .import(&dir.join("manifest.json"))
            .with_context(|| format!("importing image {name}"))?;
    }
    Ok(())
}

/// The seed's boot files in `dir`: `ramdisk/` (the deploy ramdisk, built if missing) and
/// `ipxe/` (iPXE's boot files from the offline cache). The appliance's share and the undercloud
/// image (element `boot_files`) carry the same.
pub fn stage_boot_files(dir: &Path) -> Result<()> {
    let rd = root().join("target/ramdisk");
    if !rd.join("vmlinuz").is_file() || !rd.join("initramfs.zst").is_file() {
        ramdisk::run(ramdisk::Args {
            out: "target/ramdisk".into(),
        })?;
    }
    std::fs::create_dir_all(dir.join("ramdisk"))?;
    for f in ["vmlinuz", "initramfs.zst", "ramdisk.json"] {
        std::fs::copy(rd.join(f), dir.join("ramdisk").join(f))
            .with_context(|| format!("copying the ramdisk's {f}"))?;
    }
    let ipxe = bundle::ipxe_files()?;
    std::fs::create_dir_all(dir.join("ipxe"))?;
    for (f, from) in &ipxe.files {
        std::fs::copy(from, dir.join("ipxe").join(f))?;
    }
    Ok(())
}

/// The kernel, and the system's root file system as a cpio tree (from the image stream, with
/// the driver modules, `/init` and the release line added).
fn system_cpio(stream: &Path, release: &str) -> Result<(Vec<u8>, Archive)> {
    let f = std::fs::File::open(stream).with_context(|| format!("opening {}", stream.display()))?;
    let mut tar = tar::Archive::new(zstd::Decoder::new(f)?);
    let mut a = Archive::default();
    let mut kernel = None;
    for e in tar.entries()? {
        let mut e = e?;
        let path = e
            .path()?
            .to_string_lossy()
            .trim_end_matches('/')
            .to_string();
        let mode = e.header().mode()? & 0o7777;
        match e.header().entry_type() {
            tar::EntryType::Directory => a.dir_mode(&path, mode),
            tar::EntryType::Symlink => {
                let t = e.link_name()?.context("symlink without a target")?;
                a.symlink(&path, &t.to_string_lossy());
            }
            tar::EntryType::Regular => {
                let mut data = Vec::with_capacity(e.size() as usize);
                e.read_to_end(&mut data)?;
                match path.as_str() {
                    "boot/vmlinuz" => kernel = Some(data),
                    _ => a.file(&path, mode, data),
                }
            }
            other => bail!("{path}: a {other:?} entry has no place in the appliance's initramfs"),
        }
    }
    let kernel = kernel.context("the appliance image has no boot/vmlinuz")?;
    a.symlink("init", "/sbin/init");
    a.file(
        "etc/seed-appliance-release",
        0o644,
        format!("{release}\n").into_bytes(),
    );

    let pins = fetch::pins()?;
    let kpin = pins
        .iter()
        .find(|p| p.name.starts_with("linux-image-"))
        .context("no kernel pinned")?;
    let kdir = ramdisk::unpack(kpin)?;
    let moddir = std::fs::read_dir(kdir.join("lib/modules"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.is_dir())
        .context("the kernel package has no lib/modules/<version>")?;
    let (_, absent) = ::ramdisk::initramfs::pack_modules(&mut a, &moddir, MODULES)?;
    if !absent.is_empty() {
        eprintln!(
            "appliance: built into the kernel or absent: {}",
            absent.join(" ")
        );
    }
    Ok((kernel, a))
}

/// `share/` at `usr/share/seed/` as its own cpio segment.
fn share_cpio(share: &Path) -> Result<Archive> {
    let mut a = Archive::default();
    for rel in seed::cli::bundle::files(share)? {
        let data = std::fs::read(share.join(&rel))?;
        a.file(&format!("usr/share/seed/{rel}"), 0o644, data);
    }
    Ok(a)
}

/// MiB of a FAT image for these files (+ slack for the FAT and the loader).
fn fat_mib(files: &[&Path]) -> u64 {
    let bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    (bytes >> 20) + bytes / 50 / 1048576 + 8
}

enum FatFile {
    Bytes(String, Vec<u8>),
    Copy(String, PathBuf),
}

fn efi_files(vmlinuz: &Path, initrd: &Path) -> Result<Vec<FatFile>> {
    let sdboot = unpacked("systemd-boot-efi")?.join("usr/lib/systemd/boot/efi/systemd-bootx64.efi");
    Ok(vec![
        FatFile::Copy("EFI/BOOT/BOOTX64.EFI".into(), sdboot),
        FatFile::Bytes(
            "loader/loader.conf".into(),
            b"default seed.conf\ntimeout 0\nconsole-mode keep\n".to_vec(),
        ),
        FatFile::Bytes(
            "loader/entries/seed.conf".into(),
            format!(
                "title seed appliance\nlinux /seed/vmlinuz\ninitrd /seed/initrd\noptions {CMDLINE} seed.medium=efi\n"
            )
            .into_bytes(),
        ),
        FatFile::Copy("seed/vmlinuz".into(), vmlinuz.into()),
        FatFile::Copy("seed/initrd".into(), initrd.into()),
    ])
}

fn seedcfg_files() -> Vec<FatFile> {
    let crlf = |s: &str| s.replace('\n', "\r\n").into_bytes();
    vec![
        FatFile::Bytes(
            "seed.toml".into(),
            seed::cli::appliance::config::DEFAULT_TOML
                .as_bytes()
                .to_vec(),
        ),
        FatFile::Bytes(
            "nodes.yaml".into(),
            b"# The machines to enroll at the appliance's first boot (instackenv style), e.g.:\n\
              # nodes:\n\
              #   - name: node1\n\
              #     mac: [\"52:54:00:12:34:56\"]\n\
              #     pm_type: ipmi\n\
              #     pm_addr: 10.81.0.11\n\
              #     pm_user: admin\n\
              #     pm_password: password\n\
              nodes: []\n"
                .to_vec(),
        ),
        FatFile::Bytes(
            "README.txt".into(),
            crlf(
                "seed appliance configuration\n\n\
                 Edit seed.toml (network, DHCP, API token, operator password) and nodes.yaml\n\
                 (the machines to enroll) with any text editor, then boot the appliance.\n\
                 A mistake is shown on the appliance's console with the file, line and field.\n",
            ),
        ),
    ]
}

/// A FAT image of `mib` MiB with `files` (fixed volume id and label; fatfs stamps 1980-01-01),
/// written by the ramdisk's own FAT writer.
fn write_fat(path: &Path, mib: u64, volume_id: u32, label: &str, files: &[FatFile]) -> Result<()> {
    let mut esp = Vec::with_capacity(files.len());
    for file in files {
        esp.push(match file {
            FatFile::Bytes(p, b) => EspFile::Bytes(p, b.clone()),
            FatFile::Copy(p, from) => {
                std::fs::metadata(from).with_context(|| format!("opening {}", from.display()))?;
                EspFile::Copy(p, from)
            }
        });
    }
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.set_len(mib << 20)?;
    ::ramdisk::agent::deploy::boot::write_fat(&mut f, volume_id, label, &esp)?;
    Ok(())
}

/// The unpacked tree of the pinned package `name` (from the offline cache).
fn unpacked(name: &str) -> Result<PathBuf> {
    let pins = fetch::pins()?;
    let pin = pins
        .iter()
        .find(|p| p.name == name)
        .with_context(|| format!("{name} is not pinned in xtask/cache/packages.toml"))?;
    ramdisk::unpack(pin)
}

/// The ISO 9660 tree: isolinux (BIOS) with kernel and initrd.
fn stage_iso_root(dir: &Path, vmlinuz: &Path, initrd: &Path) -> Result<()> {
    let isolinux = unpacked("isolinux")?;
    let common = unpacked("syslinux-common")?;
    let b = dir.join("boot");
    std::fs::create_dir_all(b.join("isolinux"))?;
    std::fs::copy(
        isolinux.join("usr/lib/ISOLINUX/isolinux.bin"),
        b.join("isolinux/isolinux.bin"),
    )?;
    std::fs::copy(
        common.join("usr/lib/syslinux/modules/bios/ldlinux.c32"),
        b.join("isolinux/ldlinux.c32"),
    )?;
    std::fs::write(
        b.join("isolinux/isolinux.cfg"),
        format!(
            "SERIAL 0 115200\nDEFAULT seed\nPROMPT 0\nTIMEOUT 0\n\
             LABEL seed\n  KERNEL /boot/vmlinuz\n  INITRD /boot/initrd\n  APPEND {CMDLINE} seed.medium=bios\n"
        ),
    )?;
    std::fs::copy(vmlinuz, b.join("vmlinuz"))?;
    std::fs::copy(initrd, b.join("initrd"))?;
    Ok(())
}

/// The `seed-state` ext4 file system (fixed UUID and hash seed, time from the epoch).
fn mkfs_state(path: &Path, mib: u64, epoch: u64) -> Result<()> {
    let _ = std::fs::remove_file(path);
    std::fs::File::create(path)?.set_len(mib << 20)?;
    let uuid = format!("5eed5eed-0000-4000-8000-{:012x}", epoch & 0xffff_ffff_ffff);
    sh(Command::new("mke2fs")
        .args([
            "-q",
            "-F",
            "-t",
            "ext4",
            "-L",
            "seed-state",
            "-m",
            "0",
            "-U",
            &uuid,
        ])
        .arg("-E")
        .arg(format!(
            "hash_seed={uuid},root_owner=0:0,lazy_itable_init=0,nodiscard"
        ))
        .arg(path)
        .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
        .env("SOURCE_DATE_EPOCH", epoch.to_string()))
}

/// The hybrid ISO (also the disk image: the same layout with a bigger state partition).
fn xorriso(iso_root: &Path, seedcfg: &Path, state: &Path, out: &Path, epoch: u64) -> Result<()> {
    let mbr = unpacked("isolinux")?.join("usr/lib/ISOLINUX/isohdpfx.bin");
    // Every input file's time is the build date.
    set_mtimes(iso_root, epoch)?;
    let _ = std::fs::remove_file(out);
    let date = iso_date(epoch);
    sh(Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-o"])
        .arg(out)
        .args(["-V", "SEED_APPLIANCE", "-r", "-J", "-joliet-long"])
        .args(["--modification-date=".to_string() + &date])
        .arg("-isohybrid-mbr")
        .arg(&mbr)
        .args([
            "-b",
            "boot/isolinux/isolinux.bin",
            "-c",
            "boot/isolinux/boot.cat",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
            "-boot-info-table",
            "-eltorito-alt-boot",
            "-e",
            "boot/efi.img",
            "-no-emul-boot",
            "-isohybrid-gpt-basdat",
        ])
        .arg("-append_partition")
        .arg("3")
        .arg("0x0c")
        .arg(seedcfg)
        .arg("-append_partition")
        .arg("4")
        .arg("0x83")
        .arg(state)
        .arg(iso_root)
        .env("SOURCE_DATE_EPOCH", epoch.to_string()))
}

fn set_mtimes(dir: &Path, epoch: u64) -> Result<()> {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch);
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            set_mtimes(&p, epoch)?;
        }
        std::fs::File::open(&p)?
            .set_times(std::fs::FileTimes::new().set_modified(t).set_accessed(t))?;
    }
    std::fs::File::open(dir)?
        .set_times(std::fs::FileTimes::new().set_modified(t).set_accessed(t))?;
    Ok(())
}

/// `YYYYMMDDhhmmss00` for xorriso's dates.
fn iso_date(epoch: u64) -> String {
    bundle::rfc3339(epoch)
        .chars()
        .filter(char::is_ascii_digit)
        .collect::<String>()
        + "00"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates_are_xorriso_s() {
        assert_eq!(iso_date(0), "1970010100000000");
        assert_eq!(iso_date(1_700_000_000), "2023111422132000");
    }

    /// Two builds from the same inputs give the same bytes in every form. Slow (a full build:
    /// `cargo xtask test` built one already into target/appliance, compared here with a second;
    /// without it, two builds). Needs the offline cache, xorriso, the ramdisk and the images.
    #[test]
    fn appliance_builds_twice_to_the_same_sha256_slow() {
        fetch::require_offline_cache();
        let d = tempfile::tempdir().unwrap();
        // What `cargo xtask test` built into target/appliance (the default images).
        let imgs = default_images();
        let earlier = root().join("target/appliance/SHA256SUMS");
        let a = match std::fs::read_to_string(&earlier) {
            Ok(s) => s,
            Err(_) => {
                build(&d.path().join("a"), &imgs).unwrap();
                std::fs::read_to_string(d.path().join("a/SHA256SUMS")).unwrap()
            }
        };
        let b = build(&d.path().join("b"), &imgs).unwrap();
        assert_eq!(b.files.len(), 5);
        assert_eq!(
            a,
            std::fs::read_to_string(d.path().join("b/SHA256SUMS")).unwrap(),
            "two builds differ (if the sources changed since {} was built, rebuild it first)",
            earlier.display()
        );
    }
}
