//! The deploy: write a golden image onto a disk of this machine so that it boots under both BIOS
//! (extlinux, `gptmbr.bin`) and UEFI (systemd-boot as the removable-media loader).
//!
//! Steps: choose the disk from the facts and the root hint ([`choose`]); write a GPT per the
//! manifest's [`images::Layout`] ([`gpt`]) with a protective MBR carrying `gptmbr.bin`;
//! `mke2fs` root and state (features extlinux can read: no `64bit`, no `metadata_csum`), FAT on
//! the ESP ([`boot::write_esp`]); stream HTTP → sha256 → zstd → tar onto the mounted root
//! ([`stream`]); then fstab, the identity file, extlinux and the ESP ([`boot`]).
//! Any failure after the first write wipes what was written (partition table, and the first and
//! last MiB of every partition) before the error is returned.
//!
//! This is I/O code for the ramdisk (it opens disks, mounts, runs `mke2fs` and `extlinux`); the
//! decisions are in [`choose`] and [`boot`], which are pure.

pub mod boot;
pub mod choose;
pub mod gpt;
mod readback;
pub mod stream;

use super::facts::Disk;
use super::{DeployCommand, Phase};
use std::fs::OpenOptions;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The external files the deploy uses, by path (in the ramdisk, or on a host for tests).
#[derive(Debug, Clone)]
pub struct Tools {
    pub mke2fs: PathBuf,
    pub extlinux: PathBuf,
    /// syslinux's GPT MBR boot code (440 bytes).
    pub gptmbr: PathBuf,
    /// `systemd-bootx64.efi`.
    pub systemd_boot: PathBuf,
    /// util-linux `losetup`, for kernels without GPT support (a build host's): each partition is
    /// then reached through a loop device over its byte range. `None` in the ramdisk, whose
    /// kernel reads the table itself.
    pub losetup: Option<PathBuf>,
}

impl Tools {
    /// Where `cargo xtask ramdisk` puts them (also where Debian installs them).
    pub fn debian() -> Self {
        Tools {
            mke2fs: "/sbin/mke2fs".into(),
            extlinux: "/usr/bin/extlinux".into(),
            gptmbr: "/usr/lib/syslinux/mbr/gptmbr.bin".into(),
            systemd_boot: "/usr/lib/systemd/boot/efi/systemd-bootx64.efi".into(),
            losetup: None,
        }
    }
}

/// Where the deploy finds disks and mounts filesystems.
#[derive(Debug, Clone)]
pub struct Env {
    /// Device nodes (`/dev`).
    pub dev_dir: PathBuf,
    /// An empty directory for mount points (`/run/seed-deploy`).
    pub work_dir: PathBuf,
    pub tools: Tools,
    /// How often progress is reported while writing.
    pub progress_every: Duration,
}

impl Env {
    /// The ramdisk's environment.
    pub fn ramdisk() -> Self {
        Env {
            dev_dir: "/dev".into(),
            work_dir: "/run/seed-deploy".into(),
            tools: Tools::debian(),
            progress_every: Duration::from_secs(1),
        }
    }
}

/// Why a deploy failed. Printed with its sources (see [`reason`]) it is the message the seed
/// shows a person.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("choosing the disk")]
    Choose(#[from] choose::ChooseError),
    #[error("planning partitions on {disk}")]
    Layout {
        disk: String,
        #[source]
        source: choose::LayoutError,
    },
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{tool} on {target} failed (exit {status}): {stderr}")]
    Tool {
        tool: String,
        target: PathBuf,
        status: String,
        stderr: String,
    },
    #[error("partition {0} did not appear after re-reading the partition table")]
    NoPartition(PathBuf),
    #[error("fetching the image from {url}")]
    Fetch {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("writing the image from {url}")]
    Stream {
        url: String,
        #[source]
        source: stream::StreamError,
    },
    #[error("the image has no {what} at {path:?} (manifest boot paths)")]
    MissingBootFile { what: &'static str, path: String },
    #[error("the deploy's last writes did not reach {dev}: {what}")]
    NotOnDisk { dev: PathBuf, what: &'static str },
    #[error("{first}; wiping the disk afterwards failed too")]
    Wipe {
        first: String,
        #[source]
        source: io::Error,
    },
}

/// The error and its causes on one line: `writing the image from URL: image stream sha256 …`.
pub use fsutil::error_chain as reason;

/// What a successful deploy did.
#[derive(Debug, Clone)]
pub struct Deployed {
    /// The disk's name (`vda`).
    pub disk: String,
    pub root_uuid: String,
    /// Compressed bytes streamed, entries unpacked, and the time the stream took.
    pub bytes: u64,
    pub entries: u64,
    pub write_secs: f64,
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> DeployError + 'a {
    move |source| DeployError::Io {
        what,
        path: path.into(),
        source,
    }
}

/// The HTTP client that fetches an image stream: 10 s to connect, then at most 60 s between two
/// reads (a whole image takes as long as it takes); never through a proxy; a 4xx/5xx is an
/// error.
pub fn stream_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .proxy(None)
        .build()
        .new_agent()
}

/// Deploy `cmd` onto one of `disks`. `progress(phase, bytes, total)` is called at each phase and
/// every [`Env::progress_every`] while writing. [`Phase::Done`] and [`Phase::Failed`] are the
/// caller's to report, from the result.
pub fn deploy(
    cmd: &DeployCommand,
    disks: &[Disk],
    env: &Env,
    progress: &mut dyn FnMut(Phase, u64, u64),
) -> Result<Deployed, DeployError> {
    let total = cmd.manifest.stream.size;
    progress(Phase::Partitioning, 0, total);
    let disk = choose::choose(disks, cmd.root_hint.as_deref(), cmd.manifest.min_disk_mib)?;
    let dev = env.dev_dir.join(&disk.name);
    let size = OpenOptions::new()
        .read(true)
        .open(&dev)
        .and_then(|mut f| f.seek(SeekFrom::End(0)))
        .map_err(io_err("opening disk", &dev))?;
    let parts = choose::plan(&cmd.manifest.layout, size).map_err(|source| DeployError::Layout {
        disk: disk.name.clone(),
        source,
    })?;
    tracing::info!(disk = %disk.name, size, "deploying {}", cmd.manifest.name);
    let mut loops = Loops::default();
    let mut mounts = Mounts::default();
    let result = write_disk(
        cmd,
        disk,
        &dev,
        &parts,
        env,
        &mut loops,
        &mut mounts,
        progress,
    );
    let unmounted = mounts.unmount_all();
    drop(loops);
    // What went through loop devices over `dev` (hosts without kernel GPT support) can still sit
    // in `dev`'s page cache; the node is power-cycled by its BMC next, so flush the whole disk.
    let synced = OpenOptions::new()
        .write(true)
        .open(&dev)
        .and_then(|f| f.sync_all())
        .map_err(io_err("syncing", &dev));
    let result = result.and_then(|d| unmounted.and(synced).map(|()| d));
    let root = parts.iter().find(|p| p.role == choose::Role::Root);
    let result = match (result, root) {
        (Ok(d), Some(root)) => readback::on_disk(&dev, root).map(|()| d),
        (other, _) => other,
    };
    match result {
        Ok(d) => Ok(d),
        Err(first) => {
            tracing::warn!(
                "deploy failed, wiping {}: {}",
                dev.display(),
                reason(&first)
            );
            match wipe(&dev, &parts) {
                Ok(()) => Err(first),
                Err(source) => Err(DeployError::Wipe {
                    first: reason(&first),
                    source,
                }),
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn write_disk(
    cmd: &DeployCommand,
    disk: &Disk,
    dev: &Path,
    parts: &[choose::Part],
    env: &Env,
    loops: &mut Loops,
    mounts: &mut Mounts,
    progress: &mut dyn FnMut(Phase, u64, u64),
) -> Result<Deployed, DeployError> {
    let total = cmd.manifest.stream.size;
    partition(dev, parts, &env.tools)?;
    let devs = partition_devices(dev, parts, env.tools.losetup.as_deref(), loops)?;
    let part_dev = |role| {
        parts
            .iter()
            .zip(&devs)
            .find(|(p, _)| p.role == role)
            .map(|(_, d)| d.clone())
    };
    let root_dev = part_dev(choose::Role::Root).expect("plan always has a root");
    let state_dev = part_dev(choose::Role::State).expect("plan always has a state partition");
    let esp_dev = part_dev(choose::Role::Esp);
    let uuids = boot::Uuids {
        root: random_uuid().to_string(),
        state: random_uuid().to_string(),
        esp: None,
    };
    mkfs_ext4(
        &env.tools,
        &root_dev,
        images::manifest::PART_ROOT,
        &uuids.root,
    )?;
    mkfs_ext4(
        &env.tools,
        &state_dev,
        images::manifest::PART_STATE,
        &uuids.state,
    )?;

    // The image.
    progress(Phase::Writing, 0, total);
    let root = env.work_dir.join("root");
    mounts.mount(&root_dev, &root)?;
    let url = &cmd.stream_url;
    let resp = stream_agent()
        .get(url)
        .call()
        .map_err(|e| DeployError::Fetch {
            url: url.clone(),
            source: Box::new(e),
        })?;
    let started = Instant::now();
    let written = stream::write(
        resp.into_body().into_reader(),
        &root,
        &cmd.manifest.stream.sha256,
        total,
        env.progress_every,
        &mut |b| progress(Phase::Writing, b, total),
    )
    .map_err(|source| DeployError::Stream {
        url: url.clone(),
        source,
    })?;
    let write_secs = started.elapsed().as_secs_f64();
    tracing::info!(
        bytes = written.bytes,
        entries = written.entries,
        write_secs,
        "image written"
    );

    // Boot and identity.
    progress(Phase::Finishing, written.bytes, total);
    let b = &cmd.manifest.boot;
    let inside = |rel: &str| {
        boot::resolve_in(&root, rel).map_err(|source| DeployError::Io {
            what: "resolving in the image:",
            path: rel.into(),
            source,
        })
    };
    let kernel = inside(&b.kernel)?;
    if !kernel.is_file() {
        return Err(DeployError::MissingBootFile {
            what: "kernel",
            path: b.kernel.clone(),
        });
    }
    let initrd = match &b.initrd {
        Some(i) => {
            let p = inside(i)?;
            if !p.is_file() {
                return Err(DeployError::MissingBootFile {
                    what: "initrd",
                    path: i.clone(),
                });
            }
            Some(p)
        }
        None => None,
    };
    let mut uuids = uuids;
    if let Some(esp) = &esp_dev {
        let vol: u32 = rand_u32();
        uuids.esp = Some(boot::fat_uuid(vol));
        let efi = std::fs::read(&env.tools.systemd_boot)
            .map_err(io_err("reading the UEFI loader", &env.tools.systemd_boot))?;
        let mut files = vec![
            boot::EspFile::Bytes("EFI/BOOT/BOOTX64.EFI", efi),
            boot::EspFile::Bytes(
                "loader/loader.conf",
                b"default seed.conf\ntimeout 0\n".to_vec(),
            ),
            boot::EspFile::Bytes(
                "loader/entries/seed.conf",
                boot::loader_entry(b, &uuids.root, &cmd.manifest.name).into_bytes(),
            ),
            boot::EspFile::Copy("seed/vmlinuz", &kernel),
        ];
        if let Some(i) = &initrd {
            files.push(boot::EspFile::Copy("seed/initrd", i));
        }
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(esp)
            .map_err(io_err("opening the ESP", esp))?;
        boot::write_esp(&f, vol, &files).map_err(io_err("writing the ESP", esp))?;
        f.sync_all().map_err(io_err("syncing the ESP", esp))?;
    }
    let fstab = inside("etc/fstab")?;
    let etc = fstab.parent().expect("a file in a directory");
    std::fs::create_dir_all(etc).map_err(io_err("creating", etc))?;
    let image_fstab = std::fs::read_to_string(&fstab).unwrap_or_default();
    std::fs::write(&fstab, boot::fstab_merged(&image_fstab, &uuids))
        .map_err(io_err("writing", &fstab))?;
    let state_mnt = inside(images::manifest::STATE_MOUNT)?;
    std::fs::create_dir_all(&state_mnt).map_err(io_err("creating", &state_mnt))?;
    let extdir = inside("boot/extlinux")?;
    std::fs::create_dir_all(&extdir).map_err(io_err("creating", &extdir))?;
    let conf = inside("boot/extlinux/extlinux.conf")?;
    std::fs::write(&conf, boot::extlinux_conf(b, &uuids.root)).map_err(io_err("writing", &conf))?;
    // extlinux records the partition offset it sees in sysfs (0 through a loop device), but
    // its boot sector prefers the start LBA gptmbr.bin hands over ("!GPT" protocol).
    run(
        Command::new(&env.tools.extlinux)
            .arg("--install")
            .arg(&extdir),
        &extdir,
    )?;

    let state = env.work_dir.join("state");
    mounts.mount(&state_dev, &state)?;
    boot::write_identity(
        &state,
        &images::Identity {
            node: cmd.node.clone(),
            seed_url: cmd.seed_url.clone(),
            credential: cmd.credential.clone(),
            image: format!("{}@{}", cmd.manifest.name, cmd.manifest.stream.sha256),
            seed_ca: cmd.seed_ca.clone(),
        },
    )
    .map_err(io_err("writing the identity file on", &state))?;
    mounts.unmount_all()?;
    let f = OpenOptions::new()
        .write(true)
        .open(dev)
        .map_err(io_err("opening disk", dev))?;
    f.sync_all().map_err(io_err("syncing", dev))?;
    Ok(Deployed {
        disk: disk.name.clone(),
        root_uuid: uuids.root,
        bytes: written.bytes,
        entries: written.entries,
        write_secs,
    })
}

/// 16 bytes from `/dev/urandom`, which never blocks. The blocking `getrandom` (behind
/// `Uuid::new_v4`) can wait minutes for the CRNG in a fresh VM without an RNG device; these
/// identifiers need to be unique, not secret.
fn random_bytes() -> [u8; 16] {
    use std::io::Read;
    let mut b = [0u8; 16];
    if let Err(e) = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)) {
        // No /dev/urandom: time and pid still make a collision very unlikely.
        tracing::warn!("reading /dev/urandom: {e}");
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        b = (t ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
    }
    b
}

fn random_uuid() -> uuid::Uuid {
    uuid::Builder::from_random_bytes(random_bytes()).into_uuid()
}

fn rand_u32() -> u32 {
    let b = random_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// `/dev/vda` + 3 → `/dev/vda3`; `/dev/nvme0n1`, `/dev/loop7` → `…p3` (names ending in a digit).
pub fn partition_path(dev: &Path, n: u32) -> PathBuf {
    let s = dev.to_string_lossy();
    if s.ends_with(|c: char| c.is_ascii_digit()) {
        PathBuf::from(format!("{s}p{n}"))
    } else {
        PathBuf::from(format!("{s}{n}"))
    }
}

nix::ioctl_none!(blkrrpart, 0x12, 95);

/// Ask the kernel to re-read the partition table (retrying while udev-less probes hold it).
pub(crate) fn reread(dev: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = OpenOptions::new().read(true).open(dev)?;
    let mut last = Ok(());
    for _ in 0..20 {
        // SAFETY: BLKRRPART takes no argument; the fd is a valid open block device.
        match unsafe { blkrrpart(f.as_raw_fd()) } {
            Ok(_) => return Ok(()),
            Err(e) => last = Err(io::Error::from(e)),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    last
}

/// The block devices of the planned partitions, in plan order: the kernel's (`vda3`) once they
/// appear, or, with `losetup` given and no kernel partitions after a few seconds, loop devices
/// over the partitions' byte ranges (detached when `loops` drops).
fn partition_devices(
    dev: &Path,
    parts: &[choose::Part],
    losetup: Option<&Path>,
    loops: &mut Loops,
) -> Result<Vec<PathBuf>, DeployError> {
    let kernel: Vec<PathBuf> = parts
        .iter()
        .map(|p| partition_path(dev, p.number))
        .collect();
    let tries = if losetup.is_some() { 30 } else { 100 };
    for _ in 0..tries {
        if kernel.iter().all(|p| p.exists()) {
            return Ok(kernel);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let Some(losetup) = losetup else {
        let missing = kernel.iter().find(|p| !p.exists()).expect("one is missing");
        return Err(DeployError::NoPartition(missing.clone()));
    };
    tracing::info!(
        "no kernel partitions on {}: using loop devices",
        dev.display()
    );
    let mut out = Vec::new();
    for p in parts {
        let o = Command::new(losetup)
            .args(["--find", "--show", "--offset"])
            .arg(p.offset().to_string())
            .arg("--sizelimit")
            .arg(p.bytes().to_string())
            .arg(dev)
            .output()
            .map_err(io_err("running", losetup))?;
        if !o.status.success() {
            return Err(DeployError::Tool {
                tool: losetup.display().to_string(),
                target: dev.into(),
                status: o.status.code().unwrap_or(-1).to_string(),
                stderr: String::from_utf8_lossy(&o.stderr).trim().to_string(),
            });
        }
        let l = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        loops.0.push((losetup.to_path_buf(), l.clone()));
        out.push(l);
    }
    Ok(out)
}

/// Loop devices attached for partitions, detached on drop.
#[derive(Default)]
struct Loops(Vec<(PathBuf, PathBuf)>);

impl Drop for Loops {
    fn drop(&mut self) {
        for (losetup, l) in self.0.drain(..) {
            let _ = Command::new(losetup).arg("-d").arg(l).status();
        }
    }
}

pub(crate) fn zero(f: &mut std::fs::File, offset: u64, len: u64) -> io::Result<()> {
    const MIB: usize = 1 << 20;
    let zeros = vec![0u8; MIB];
    f.seek(SeekFrom::Start(offset))?;
    let mut left = len;
    while left > 0 {
        let n = left.min(MIB as u64) as usize;
        f.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// Write the GPT (and its protective MBR with `gptmbr.bin`), then have the kernel re-read it.
fn partition(dev: &Path, parts: &[choose::Part], tools: &Tools) -> Result<(), DeployError> {
    let bootcode = std::fs::read(&tools.gptmbr).map_err(io_err("reading", &tools.gptmbr))?;
    let bootcode: [u8; 440] = bootcode
        .get(..440)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| DeployError::Io {
            what: "MBR boot code shorter than 440 bytes:",
            path: tools.gptmbr.clone(),
            source: io::Error::from(io::ErrorKind::UnexpectedEof),
        })?;
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .map_err(io_err("opening disk", dev))?;
    let size = f
        .seek(SeekFrom::End(0))
        .map_err(io_err("sizing disk", dev))?;
    // Old signatures (a previous table, filesystems) must not survive at either end.
    let mib = 1u64 << 20;
    zero(&mut f, 0, mib.min(size)).map_err(io_err("clearing", dev))?;
    zero(&mut f, size.saturating_sub(mib), mib.min(size)).map_err(io_err("clearing", dev))?;
    let guids: Vec<uuid::Uuid> = parts.iter().map(|_| random_uuid()).collect();
    let t = gpt::tables(size, random_uuid(), parts, &guids, &bootcode);
    f.seek(SeekFrom::Start(0))
        .and_then(|_| f.write_all(&t.head))
        .and_then(|_| f.seek(SeekFrom::Start(t.tail_offset)))
        .and_then(|_| f.write_all(&t.tail))
        .map_err(io_err("writing the partition table on", dev))?;
    f.sync_all().map_err(io_err("syncing", dev))?;
    drop(f);
    reread(dev).map_err(io_err("re-reading the partition table of", dev))
}

/// Clear what a deploy wrote: the first and last MiB of each partition and of the disk (both
/// GPTs), then let the kernel forget the partitions.
fn wipe(dev: &Path, parts: &[choose::Part]) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).open(dev)?;
    let size = f.seek(SeekFrom::End(0))?;
    let mib = 1u64 << 20;
    for p in parts {
        let len = mib.min(p.bytes());
        zero(&mut f, p.offset(), len)?;
        zero(&mut f, p.offset() + p.bytes() - len, len)?;
    }
    zero(&mut f, 0, mib.min(size))?;
    zero(&mut f, size.saturating_sub(mib), mib.min(size))?;
    f.sync_all()?;
    drop(f);
    // With an empty table the kernel drops the partitions; a failure here changes nothing on disk.
    if let Err(e) = reread(dev) {
        tracing::warn!("re-reading {} after wiping: {e}", dev.display());
    }
    Ok(())
}

fn mkfs_ext4(tools: &Tools, dev: &Path, label: &str, uuid: &str) -> Result<(), DeployError> {
    run(
        Command::new(&tools.mke2fs)
            .args(["-q", "-F", "-t", "ext4"])
            // extlinux 6.04 cannot read 64bit or metadata_csum ext4; orphan_file is newer than
            // what older kernels and tools in images may understand.
            .args(["-O", "^64bit,^metadata_csum,^orphan_file"])
            .args(["-L", label, "-U", uuid])
            .arg(dev),
        dev,
    )
}

fn run(cmd: &mut Command, target: &Path) -> Result<(), DeployError> {
    let tool = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().map_err(|source| DeployError::Io {
        what: "running",
        path: tool.clone().into(),
        source,
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(DeployError::Tool {
        tool,
        target: target.into(),
        status: out
            .status
            .code()
            .map(|c| c.to_string())
            .unwrap_or_else(|| "signal".into()),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// Filesystems the deploy mounted, unmounted in reverse order (on drop too, best effort).
#[derive(Default)]
struct Mounts(Vec<PathBuf>);

impl Mounts {
    fn mount(&mut self, dev: &Path, at: &Path) -> Result<(), DeployError> {
        std::fs::create_dir_all(at).map_err(io_err("creating mount point", at))?;
        nix::mount::mount(
            Some(dev),
            at,
            Some("ext4"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| DeployError::Io {
            what: "mounting on",
            path: at.into(),
            source: e.into(),
        })?;
        self.0.push(at.into());
        Ok(())
    }

    fn unmount_all(&mut self) -> Result<(), DeployError> {
        let mut first = Ok(());
        while let Some(at) = self.0.pop() {
            if let Err(e) = nix::mount::umount(&at) {
                // Leave nothing mounted behind even so; report the first failure.
                let _ = nix::mount::umount2(&at, nix::mount::MntFlags::MNT_DETACH);
                if first.is_ok() {
                    first = Err(DeployError::Io {
                        what: "unmounting",
                        path: at,
                        source: e.into(),
                    });
                }
            }
        }
        first
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        let _ = self.unmount_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_paths() {
        assert_eq!(
            partition_path(Path::new("/dev/vda"), 3),
            Path::new("/dev/vda3")
        );
        assert_eq!(
            partition_path(Path::new("/dev/nvme0n1"), 1),
            Path::new("/dev/nvme0n1p1")
        );
        assert_eq!(
            partition_path(Path::new("/dev/loop7"), 2),
            Path::new("/dev/loop7p2")
        );
    }

    #[test]
    fn reason_includes_sources() {
        let e = DeployError::Choose(choose::ChooseError::NoneFits {
            need_mib: 512,
            seen: "vda (100 MiB, model \"\", serial \"\")".into(),
        });
        let r = reason(&e);
        assert!(
            r.starts_with("choosing the disk: no disk of at least 512 MiB"),
            "{r}"
        );
    }
}
