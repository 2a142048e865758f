//! The image builder: elements in order onto a [`Tree`], generated files (accounts, init
//! configuration, `/etc/seed-image`), the kernel and the image's initrd, then the stream and
//! `manifest.json` in the output directory.
//!
//! What needs the outside world (the offline package cache, cargo, the initramfs writer) comes
//! through the [`Host`] trait, so the builder itself stays testable with a fake host.

use crate::element::{self, Base, DeclError, ImageDef, Loaded, ServiceKind, User};
use crate::manifest::{Boot, Layout, Manifest, Stream, STATE_MOUNT};
use crate::tree::{Kind, Source, Tree, TreeError};
use std::path::{Path, PathBuf};

/// An error from the host (cache, cargo, initramfs writer).
pub type HostError = Box<dyn std::error::Error + Send + Sync>;

/// What the builder asks of its environment.
pub trait Host {
    /// The directory a cached Debian package is unpacked in (`name`, or a prefix ending in `*`).
    fn package(&mut self, name: &str) -> Result<PathBuf, HostError>;
    /// A static binary of this workspace.
    fn workspace_binary(&mut self, package: &str, bin: &str) -> Result<PathBuf, HostError>;
    /// The busybox applets as paths relative to the root (`bin/sh`, `sbin/init` …).
    fn busybox_applets(&mut self, busybox: &Path) -> Result<Vec<String>, HostError>;
    /// A compressed initramfs.
    fn initrd(&mut self, spec: &InitrdSpec) -> Result<Vec<u8>, HostError>;
    /// A directory with the seed's boot files: `ramdisk/` (the deploy ramdisk) and `ipxe/`.
    fn boot_files(&mut self) -> Result<PathBuf, HostError> {
        Err("this host has no boot files (build them with cargo xtask ramdisk)".into())
    }
    /// The Debian (systemd) base as a tarball (built offline from the pinned cache, see
    /// `xtask/src/debian.rs`), read by [`crate::debian::load_base`].
    fn debian_base(&mut self) -> Result<PathBuf, HostError> {
        Err("this host cannot build the Debian base".into())
    }
}

/// What the image's initrd holds.
#[derive(Debug, Clone)]
pub struct InitrdSpec {
    /// `…/lib/modules/<version>` of the unpacked kernel package.
    pub moddir: PathBuf,
    /// The static busybox.
    pub busybox: PathBuf,
    /// The `/init` script.
    pub init: Vec<u8>,
    /// Modules to load, in order (dependencies are added by the host).
    pub modules: Vec<String>,
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Decl(#[from] DeclError),
    #[error("element {element}")]
    Tree {
        element: String,
        #[source]
        source: TreeError,
    },
    #[error("element {element}: {what}")]
    Host {
        element: String,
        what: String,
        #[source]
        source: HostError,
    },
    #[error("element {element}: {message}")]
    Invalid { element: String, message: String },
    #[error("image {image}: {message}")]
    Image { image: String, message: String },
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Root-filesystem directories every image has (mount points and the read-only root's tmpfs).
const ROOT_DIRS: &[(&str, u32)] = &[
    ("boot", 0o755),
    ("boot/efi", 0o755),
    ("dev", 0o755),
    ("etc", 0o755),
    ("mnt", 0o755),
    ("proc", 0o555),
    ("root", 0o700),
    ("run", 0o755),
    ("sys", 0o555),
    ("tmp", 0o1777),
    ("var/lib/seed", 0o755),
    ("var/log", 0o755),
];

/// Slack on top of the unpacked size for the root filesystem (ext4 metadata, journal, reserve).
const ROOT_SLACK_MIB: u64 = 64;

/// The smallest disk for a layout and unpacked size: GPT at both ends, 1 MiB alignment, the
/// partitions, and a root of `max(unpacked × 5/4 + slack, declared)`.
pub fn min_disk_mib(layout: &Layout, unpacked_size: u64) -> u64 {
    let unpacked_mib = unpacked_size.div_ceil(1 << 20);
    let needed_root = unpacked_mib + unpacked_mib / 4 + ROOT_SLACK_MIB;
    let root = layout.root_mib.unwrap_or(0).max(needed_root);
    1 + layout.bios_boot_mib + layout.esp_mib + root + layout.state_mib + 1
}

struct Ctx<'a> {
    image: &'a ImageDef,
    tree: Tree,
    base: Option<Base>,
    users: Vec<User>,
    services: Vec<(String, element::Service)>,
    kernel_moddir: Option<PathBuf>,
    initrd: Option<(String, PathBuf, element::Initrd)>,
}

fn tree_err(element: &str) -> impl FnOnce(TreeError) -> BuildError + '_ {
    move |source| BuildError::Tree {
        element: element.into(),
        source,
    }
}

fn host_err(element: &str, what: String) -> impl FnOnce(HostError) -> BuildError + '_ {
    move |source| BuildError::Host {
        element: element.into(),
        what,
        source,
    }
}

/// Build `image` from `elements_dir` into `out` (`rootfs.tar.zst` + `manifest.json`).
pub fn build(
    image: &ImageDef,
    elements_dir: &Path,
    host: &mut dyn Host,
    out: &Path,
) -> Result<Manifest, BuildError> {
    let elements = element::resolve(image, elements_dir)?;
    let mut cx = Ctx {
        image,
        tree: Tree::default(),
        base: None,
        users: Vec::new(),
        services: Vec::new(),
        kernel_moddir: None,
        initrd: None,
    };
    for (d, mode) in ROOT_DIRS {
        cx.tree.dir(d, *mode).map_err(tree_err("(root)"))?;
    }
    for el in &elements {
        apply(&mut cx, el, host)?;
    }
    finish(&mut cx, host)?;

    std::fs::create_dir_all(out).map_err(|source| BuildError::Io {
        path: out.into(),
        source,
    })?;
    let stream_file = "rootfs.tar.zst";
    let written = cx
        .tree
        .write_stream(&out.join(stream_file))
        .map_err(tree_err("(stream)"))?;
    let layout = image.layout.clone().unwrap_or_default();
    let manifest = Manifest {
        name: image.name.clone(),
        version: image.version.clone(),
        stream: Stream {
            file: stream_file.into(),
            sha256: written.sha256,
            size: written.size,
            unpacked_size: written.unpacked_size,
        },
        boot: Boot {
            kernel: "boot/vmlinuz".into(),
            initrd: cx.initrd.as_ref().map(|_| "boot/initrd.img".into()),
            cmdline: image.cmdline.clone(),
        },
        min_disk_mib: min_disk_mib(&layout, written.unpacked_size),
        layout,
        elements: elements.iter().map(|e| e.name.clone()).collect(),
    };
    let mpath = out.join("manifest.json");
    let body = serde_json::to_string_pretty(&manifest).expect("manifest serializes") + "\n";
    std::fs::write(&mpath, body).map_err(|source| BuildError::Io {
        path: mpath.clone(),
        source,
    })?;
    Ok(manifest)
}

fn apply(cx: &mut Ctx, el: &Loaded, host: &mut dyn Host) -> Result<(), BuildError> {
    let name = el.name.as_str();
    let def = &el.def;
    if let Some(b) = def.base {
        if let Some(prev) = cx.base {
            return Err(BuildError::Invalid {
                element: name.into(),
                message: format!("a second base ({b:?}); the image already has {prev:?}"),
            });
        }
        if b == Base::Debian {
            let tar = host
                .debian_base()
                .map_err(host_err(name, "the Debian base".into()))?;
            let f = std::fs::File::open(&tar).map_err(|source| BuildError::Io {
                path: tar.clone(),
                source,
            })?;
            let n = crate::debian::load_base(&mut cx.tree, std::io::BufReader::new(f))
                .map_err(tree_err(name))?;
            tracing::info!(
                entries = n.entries,
                hard_links = n.hard_links,
                devices = n.devices,
                dropped = n.dropped,
                "Debian base loaded from {}",
                tar.display()
            );
        }
        cx.base = Some(b);
    }
    for p in &def.packages {
        let dir = host
            .package(p)
            .map_err(host_err(name, format!("package {p}")))?;
        cx.tree
            .add_host_dir(&dir, "", false)
            .map_err(tree_err(name))?;
        // Debian packages ship no top-level dot files; the host's bookkeeping (an unpack
        // marker, say) may live there and is not part of the package.
        let dots: Vec<String> = cx
            .tree
            .paths()
            .filter(|p| p.starts_with('.') && !p.contains('/'))
            .map(str::to_string)
            .collect();
        for d in dots {
            cx.tree.remove(&d);
        }
    }
    for b in &def.binaries {
        let path = host
            .workspace_binary(&b.package, &b.bin)
            .map_err(host_err(name, format!("binary {} of {}", b.bin, b.package)))?;
        let dest = element::image_path(&b.dest).expect("validated at parse time");
        cx.tree
            .file_from(&dest, 0o755, &path)
            .map_err(tree_err(name))?;
    }
    if let Some(b) = &def.boot_files {
        let dir = host
            .boot_files()
            .map_err(host_err(name, "the seed's boot files".into()))?;
        let dest = element::image_path(b).expect("validated at parse time");
        cx.tree
            .add_host_dir(&dir, &dest, true)
            .map_err(tree_err(name))?;
    }
    if let Some(k) = &def.kernel {
        let dir = host
            .package(&k.package)
            .map_err(host_err(name, format!("kernel package {}", k.package)))?;
        let (kver, moddir) = kernel_version(name, &dir)?;
        let vmlinuz = dir.join(format!("boot/vmlinuz-{kver}"));
        cx.tree
            .file_from("boot/vmlinuz", 0o644, &vmlinuz)
            .map_err(tree_err(name))?;
        cx.kernel_moddir = Some(moddir);
    }
    if let Some(o) = &def.overlay {
        let src = element::element_path(&el.dir, o).expect("validated at parse time");
        cx.tree
            .add_host_dir(&src, "", true)
            .map_err(tree_err(name))?;
    }
    for (p, mode) in &def.modes {
        let p = element::image_path(p).expect("validated at parse time");
        cx.tree.chmod(&p, *mode, None).map_err(tree_err(name))?;
    }
    for u in &def.users {
        cx.users.retain(|x| x.name != u.name);
        cx.users.push(u.clone());
    }
    for s in &def.services {
        cx.services.retain(|(_, x)| x.name != s.name);
        cx.services.push((name.into(), s.clone()));
    }
    if let Some(i) = &def.initrd {
        cx.initrd = Some((name.into(), el.dir.clone(), i.clone()));
    }
    Ok(())
}

/// The kernel version (`6.1.0-56-amd64`) and modules dir of an unpacked kernel package (of
/// element `element`).
fn kernel_version(element: &str, dir: &Path) -> Result<(String, PathBuf), BuildError> {
    let mods = dir.join("lib/modules");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&mods)
        .map_err(|source| BuildError::Io {
            path: mods.clone(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    found.sort();
    match found.as_slice() {
        [one] => Ok((
            one.file_name().unwrap().to_string_lossy().into_owned(),
            one.clone(),
        )),
        _ => Err(BuildError::Invalid {
            element: element.into(),
            message: format!(
                "{} holds {} kernel versions, expected one",
                mods.display(),
                found.len()
            ),
        }),
    }
}

/// Shell-quote a value for `/etc/seed-image` (sourced by the image's scripts).
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn finish(cx: &mut Ctx, host: &mut dyn Host) -> Result<(), BuildError> {
    let image = cx.image;
    let gen = "(generated)";
    let Some(base) = cx.base else {
        return Err(BuildError::Image {
            image: image.name.clone(),
            message: "no element declares a base (`base = \"busybox\"`)".into(),
        });
    };
    if !matches!(
        cx.tree.get("boot/vmlinuz").map(|n| &n.kind),
        Some(Kind::File { .. })
    ) {
        return Err(BuildError::Image {
            image: image.name.clone(),
            message: "no element provides a kernel (`[kernel] package = \"linux-image-*\"`)".into(),
        });
    }
    let busybox = match cx.tree.get("bin/busybox").map(|n| &n.kind) {
        Some(Kind::File {
            source: Source::Path(p),
            ..
        }) => Some(p.clone()),
        // The Debian base's files come from its tarball: the initrd takes its static busybox
        // from the cache instead.
        _ if base == Base::Debian && cx.initrd.is_some() => Some(
            host.package("busybox-static")
                .map_err(host_err(gen, "busybox-static for the initrd".into()))?
                .join("bin/busybox"),
        ),
        _ => None,
    };
    if base == Base::Busybox {
        let bb = busybox.clone().ok_or_else(|| BuildError::Image {
            image: image.name.clone(),
            message: "the busybox base needs bin/busybox (package busybox-static)".into(),
        })?;
        let applets = host
            .busybox_applets(&bb)
            .map_err(host_err(gen, "busybox applets".into()))?;
        for a in applets {
            let a = element::image_path(&a).map_err(|message| BuildError::Invalid {
                element: gen.into(),
                message: format!("busybox applet {message}"),
            })?;
            // An element's own file (or link) at an applet's path wins.
            if cx.tree.get(&a).is_none() && a != "bin/busybox" {
                cx.tree.symlink(&a, "/bin/busybox").map_err(tree_err(gen))?;
            }
        }
        cx.tree
            .file("etc/inittab", 0o644, inittab(&cx.services).into_bytes())
            .map_err(tree_err(gen))?;
    } else {
        crate::debian::install_units(&mut cx.tree, &cx.services).map_err(|e| match e {
            crate::debian::UnitError::Tree(source) => BuildError::Tree {
                element: gen.into(),
                source,
            },
            other => BuildError::Invalid {
                element: gen.into(),
                message: other.to_string(),
            },
        })?;
    }
    // Accounts: root always (the Debian base has its own), then the declared users.
    let mut users = if base == Base::Debian {
        Vec::new()
    } else {
        vec![User {
            name: "root".into(),
            uid: 0,
            gid: Some(0),
            home: "/root".into(),
            shell: "/bin/sh".into(),
            create_home: false,
        }]
    };
    for u in &cx.users {
        users.retain(|x| x.name != u.name);
        users.push(u.clone());
    }
    let (mut passwd, mut group, mut shadow) = (String::new(), String::new(), String::new());
    for u in &users {
        let gid = u.gid.unwrap_or(u.uid);
        passwd.push_str(&format!(
            "{}:x:{}:{gid}:{}:{}:{}\n",
            u.name, u.uid, u.name, u.home, u.shell
        ));
        group.push_str(&format!("{}:x:{gid}:\n", u.name));
        // Locked: golden images carry no passwords; access is configured per node.
        shadow.push_str(&format!("{}:*:0:0:99999:7:::\n", u.name));
        if u.create_home {
            let home = element::image_path(&u.home).expect("validated");
            if cx.tree.get(&home).is_none() {
                cx.tree.dir(&home, 0o750).map_err(tree_err(gen))?;
                cx.tree
                    .chmod(&home, 0o750, Some((u.uid, gid)))
                    .map_err(tree_err(gen))?;
            }
        }
    }
    let mut account_files = vec![
        ("etc/passwd", 0o644, passwd),
        ("etc/group", 0o644, group),
        ("etc/shadow", 0o600, shadow),
    ];
    if base == Base::Debian {
        // The base's accounts (systemd's, _apt …) stay; declared users replace or add.
        let mut gshadow = String::new();
        for u in &users {
            gshadow.push_str(&format!("{}:!::\n", u.name));
        }
        account_files.push(("etc/gshadow", 0o640, gshadow));
        for (path, mode, ours) in &mut account_files {
            *ours = merge_accounts(&file_text(&cx.tree, path), ours);
            if let Some(n) = cx.tree.get(path) {
                *mode = n.mode;
            }
        }
    }
    for (path, mode, text) in account_files {
        let owner = cx.tree.get(path).map(|n| (n.uid, n.gid)).unwrap_or((0, 0));
        cx.tree
            .file(path, mode, text.into_bytes())
            .map_err(tree_err(gen))?;
        cx.tree
            .chmod(path, mode, Some(owner))
            .map_err(tree_err(gen))?;
    }
    if cx.tree.get("etc/hostname").is_none() {
        cx.tree
            .file(
                "etc/hostname",
                0o644,
                format!("{}\n", image.hostname).into_bytes(),
            )
            .map_err(tree_err(gen))?;
    }
    let info = format!(
        "# The golden image this root filesystem was built as (sourced by its scripts).\n\
         SEED_IMAGE_NAME={}\nSEED_IMAGE_VERSION={}\nSEED_STATE_MOUNT={}\n",
        sh_quote(&image.name),
        sh_quote(&image.version),
        sh_quote(STATE_MOUNT)
    );
    cx.tree
        .file("etc/seed-image", 0o644, info.into_bytes())
        .map_err(tree_err(gen))?;

    if let Some((el, dir, i)) = cx.initrd.clone() {
        let moddir = cx
            .kernel_moddir
            .clone()
            .ok_or_else(|| BuildError::Invalid {
                element: el.clone(),
                message: "an initrd needs a kernel element".into(),
            })?;
        let busybox = busybox.ok_or_else(|| BuildError::Invalid {
            element: el.clone(),
            message: "an initrd needs bin/busybox in the image".into(),
        })?;
        let init_path = element::element_path(&dir, &i.init).expect("validated");
        let init = std::fs::read(&init_path).map_err(|source| BuildError::Io {
            path: init_path,
            source,
        })?;
        let bytes = host
            .initrd(&InitrdSpec {
                moddir,
                busybox,
                init,
                modules: i.modules.clone(),
            })
            .map_err(host_err(&el, "initrd".into()))?;
        cx.tree
            .file("boot/initrd.img", 0o644, bytes)
            .map_err(tree_err(&el))?;
    }
    Ok(())
}

/// The text of a file of the tree (empty when absent or not held in memory).
fn file_text(tree: &Tree, path: &str) -> String {
    match tree.get(path).map(|n| &n.kind) {
        Some(Kind::File {
            source: Source::Bytes(b),
            ..
        }) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    }
}

/// `base`'s lines (passwd, group, shadow format: name first) whose name `ours` does not
/// declare, then `ours`.
fn merge_accounts(base: &str, ours: &str) -> String {
    let name = |l: &str| l.split(':').next().unwrap_or("").to_string();
    let declared: std::collections::BTreeSet<String> = ours.lines().map(name).collect();
    let mut out: String = base
        .lines()
        .filter(|l| !l.is_empty() && !declared.contains(&name(l)))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(ours);
    out
}

/// busybox init's table: the image's rcS, the declared services, a getty on the serial
/// console, and a clean shutdown.
fn inittab(services: &[(String, element::Service)]) -> String {
    let mut t = String::from(
        "# Generated by the seed image builder from the elements' services.\n\
         ::sysinit:/etc/init.d/rcS\n",
    );
    for kind in [ServiceKind::Wait, ServiceKind::Once, ServiceKind::Respawn] {
        for (el, s) in services.iter().filter(|(_, s)| s.kind == kind) {
            let action = match kind {
                ServiceKind::Wait => "wait",
                ServiceKind::Once => "once",
                ServiceKind::Respawn => "respawn",
            };
            t.push_str(&format!(
                "# {} (element {el})\n{}::{action}:{}\n",
                s.name,
                s.tty.as_deref().unwrap_or(""),
                s.exec
            ));
        }
    }
    t.push_str(
        "::ctrlaltdel:/sbin/reboot\n\
         ::shutdown:/bin/sync\n\
         ::shutdown:/bin/umount -a -r\n",
    );
    t
}

#[cfg(test)]
#[path = "build_tests.rs"]
mod tests;
