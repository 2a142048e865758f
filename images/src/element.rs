//! Image and element declarations: `images/images/<NAME>.toml` lists the elements an image is
//! built from; `images/elements/<name>/element.toml` declares what one element adds (a base,
//! Debian packages from the offline cache, a file overlay, workspace binaries, the seed's boot
//! files, users, services,
//! the kernel and the image's initrd). Parse errors name the file and the line.

use crate::manifest::Layout;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

/// Why a declaration was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeclError {
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("element {name:?} (needed by {needed_by}) does not exist: no {path}")]
    UnknownElement {
        name: String,
        needed_by: String,
        path: PathBuf,
    },
    #[error("elements depend on each other in a cycle: {0}")]
    Cycle(String),
}

/// The image's root filesystem base: what provides `/sbin/init` and how services are started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Base {
    /// busybox-static: applet links for every busybox applet, busybox init with a generated
    /// `/etc/inittab`.
    Busybox,
    /// Debian with systemd, loaded from a base tarball built offline by the host (mmdebstrap from
    /// the pinned closure, see [`crate::debian`]); services become systemd units.
    Debian,
}

/// A static binary of this workspace, built like the ramdisk's agent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binary {
    /// The cargo package (`ramdisk`).
    pub package: String,
    /// The binary target (`seed-config`).
    pub bin: String,
    /// Where it goes in the image (`usr/bin/seed-config`).
    pub dest: String,
}

/// A user account (`/etc/passwd`, `/etc/shadow` locked, a primary group of the same name).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub uid: u32,
    #[serde(default)]
    pub gid: Option<u32>,
    #[serde(default = "default_home")]
    pub home: String,
    #[serde(default = "default_shell")]
    pub shell: String,
    /// Created (owned by the user) when not provided by another element.
    #[serde(default)]
    pub create_home: bool,
}

fn default_home() -> String {
    "/".into()
}
fn default_shell() -> String {
    "/bin/sh".into()
}

/// When a service runs (busybox inittab actions; systemd units on the Debian base: `once` a
/// simple unit, `respawn` with `Restart=always`, `wait` a oneshot ordered before the others).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceKind {
    /// Run to completion during boot, before the later services start.
    Wait,
    /// Start once at boot, do not wait.
    Once,
    /// Keep running; restart when it exits.
    Respawn,
}

/// Something started at boot.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    /// Absolute command line inside the image.
    pub exec: String,
    #[serde(default = "default_kind")]
    pub kind: ServiceKind,
    /// The terminal it runs on (busybox: the inittab id field, e.g. `ttyS0`); none = console.
    #[serde(default)]
    pub tty: Option<String>,
}

fn default_kind() -> ServiceKind {
    ServiceKind::Once
}

/// The kernel, from a cached Debian kernel package, at `boot/vmlinuz`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    /// Package name, or a prefix ending in `*` (`linux-image-*`).
    pub package: String,
}

/// The image's own initrd at `boot/initrd.img`: busybox, the named modules and their
/// dependencies from the kernel package, and an `/init` script from the element.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Initrd {
    /// The `/init` script, relative to the element directory.
    pub init: String,
    /// Modules to load in this order (names the kernel lacks as modules are skipped).
    pub modules: Vec<String>,
}

/// One element: `images/elements/<name>/element.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Element {
    pub description: String,
    /// Elements added before this one.
    #[serde(default)]
    pub depends: Vec<String>,
    #[serde(default)]
    pub base: Option<Base>,
    /// Debian packages from the offline cache, unpacked into the root.
    #[serde(default)]
    pub packages: Vec<String>,
    /// A file tree relative to the element directory, copied onto the root (modes normalized to
    /// 0755/0644 from the executable bit; owners root).
    #[serde(default)]
    pub overlay: Option<String>,
    /// Mode overrides for paths in the image (`"etc/secret" = 0o600`).
    #[serde(default)]
    pub modes: BTreeMap<String, u32>,
    #[serde(default, rename = "binary")]
    pub binaries: Vec<Binary>,
    /// Where the seed's boot files go (`usr/share/seed`: `ramdisk/` with the deploy ramdisk,
    /// `ipxe/` with iPXE's): for an image that runs a seed daemon serving PXE itself.
    #[serde(default)]
    pub boot_files: Option<String>,
    #[serde(default, rename = "user")]
    pub users: Vec<User>,
    #[serde(default, rename = "service")]
    pub services: Vec<Service>,
    #[serde(default)]
    pub kernel: Option<Kernel>,
    #[serde(default)]
    pub initrd: Option<Initrd>,
}

/// An image: `images/images/<NAME>.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageDef {
    #[serde(default)]
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    /// Elements in order (each one's `depends` come first).
    pub elements: Vec<String>,
    /// Kernel command line without `root=`.
    #[serde(default = "default_cmdline")]
    pub cmdline: String,
    /// `/etc/hostname` until the node's own name is known.
    #[serde(default = "default_hostname")]
    pub hostname: String,
    #[serde(default)]
    pub layout: Option<Layout>,
}

fn default_cmdline() -> String {
    "console=ttyS0".into()
}
fn default_hostname() -> String {
    "seed-node".into()
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn parse_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, DeclError> {
    let text = std::fs::read_to_string(path).map_err(|source| DeclError::Io {
        path: path.into(),
        source,
    })?;
    parse_str(path, &text)
}

/// Parse TOML text read from `path` (named in errors, with the line).
pub fn parse_str<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, DeclError> {
    toml::from_str(text).map_err(|e| DeclError::Parse {
        path: path.into(),
        line: e.span().map(|s| line_of(text, s.start)).unwrap_or(1),
        message: e.message().trim().to_string(),
    })
}

/// Why a declared path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("{0:?} is not UTF-8")]
    NotUtf8(String),
    #[error("{0:?} leaves the image root")]
    LeavesImage(String),
    #[error("{0:?} names no file")]
    NoFile(String),
    #[error("{0:?} leaves the element directory")]
    LeavesElement(String),
}

/// A path inside the image: relative, no `..`, no empty name. Leading `/` is accepted and dropped.
pub fn image_path(p: &str) -> Result<String, PathError> {
    let trimmed = p.trim_start_matches('/');
    let mut parts = Vec::new();
    for c in Path::new(trimmed).components() {
        match c {
            Component::Normal(s) => parts.push(
                s.to_str()
                    .ok_or_else(|| PathError::NotUtf8(p.into()))?
                    .to_string(),
            ),
            Component::CurDir => {}
            _ => return Err(PathError::LeavesImage(p.into())),
        }
    }
    if parts.is_empty() {
        return Err(PathError::NoFile(p.into()));
    }
    Ok(parts.join("/"))
}

/// A path inside an element's directory: relative and without `..`.
pub fn element_path(dir: &Path, p: &str) -> Result<PathBuf, PathError> {
    let rel = Path::new(p);
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(PathError::LeavesElement(p.into()));
    }
    Ok(dir.join(rel))
}

impl Element {
    /// Check the paths it names (parse-time, so errors name the file).
    fn validate(&self, file: &Path, dir: &Path) -> Result<(), DeclError> {
        let bad = |message: String| DeclError::Invalid {
            path: file.into(),
            message,
        };
        if let Some(o) = &self.overlay {
            let p = element_path(dir, o).map_err(|m| bad(format!("overlay: {m}")))?;
            if !p.is_dir() {
                return Err(bad(format!("overlay: {} is not a directory", p.display())));
            }
        }
        if let Some(i) = &self.initrd {
            let p = element_path(dir, &i.init).map_err(|m| bad(format!("initrd.init: {m}")))?;
            if !p.is_file() {
                return Err(bad(format!("initrd.init: {} is not a file", p.display())));
            }
        }
        for b in &self.binaries {
            image_path(&b.dest).map_err(|m| bad(format!("binary {}: dest {m}", b.bin)))?;
        }
        for p in self.modes.keys() {
            image_path(p).map_err(|m| bad(format!("modes: {m}")))?;
        }
        if let Some(b) = &self.boot_files {
            image_path(b).map_err(|m| bad(format!("boot_files: {m}")))?;
        }
        for s in &self.services {
            if !s.exec.starts_with('/') {
                return Err(bad(format!(
                    "service {}: exec {:?} must be an absolute path",
                    s.name, s.exec
                )));
            }
            if s.name.is_empty() || s.name.contains(['/', ':', ' ']) {
                return Err(bad(format!(
                    "service name {:?} is not a plain name",
                    s.name
                )));
            }
        }
        for u in &self.users {
            if u.name.is_empty() || u.name.contains([':', '/', ' ', '\n']) {
                return Err(bad(format!("user name {:?} is not a plain name", u.name)));
            }
            if u.create_home {
                image_path(&u.home).map_err(|m| bad(format!("user {} home: {m}", u.name)))?;
            }
        }
        Ok(())
    }
}

/// One element, loaded.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub name: String,
    pub dir: PathBuf,
    pub def: Element,
}

fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Load one element by name from `elements_dir`.
pub fn load_element(elements_dir: &Path, name: &str, needed_by: &str) -> Result<Loaded, DeclError> {
    let dir = elements_dir.join(name);
    let file = dir.join("element.toml");
    if !plain_name(name) || !file.is_file() {
        return Err(DeclError::UnknownElement {
            name: name.into(),
            needed_by: needed_by.into(),
            path: file,
        });
    }
    let def: Element = parse_toml(&file)?;
    def.validate(&file, &dir)?;
    Ok(Loaded {
        name: name.into(),
        dir,
        def,
    })
}

/// Load an image declaration (`<images_dir>/<name>.toml`).
pub fn load_image(images_dir: &Path, name: &str) -> Result<ImageDef, DeclError> {
    let file = images_dir.join(format!("{name}.toml"));
    if !plain_name(name) {
        return Err(DeclError::Invalid {
            path: file,
            message: format!("{name:?} is not a plain image name"),
        });
    }
    let mut def: ImageDef = parse_toml(&file)?;
    if def.name.is_empty() {
        def.name = name.into();
    } else if def.name != name {
        return Err(DeclError::Invalid {
            path: file,
            message: format!("name {:?} differs from the file name {name:?}", def.name),
        });
    }
    Ok(def)
}

/// Every image declared in `images_dir`, sorted.
pub fn list_images(images_dir: &Path) -> Result<Vec<String>, DeclError> {
    let rd = std::fs::read_dir(images_dir).map_err(|source| DeclError::Io {
        path: images_dir.into(),
        source,
    })?;
    let mut out: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".toml"))
                .map(str::to_string)
        })
        .collect();
    out.sort();
    Ok(out)
}

/// The image's elements with their dependencies first, each once, in declaration order.
pub fn resolve(image: &ImageDef, elements_dir: &Path) -> Result<Vec<Loaded>, DeclError> {
    fn visit(
        name: &str,
        needed_by: &str,
        dir: &Path,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        out: &mut Vec<Loaded>,
    ) -> Result<(), DeclError> {
        if done.contains(name) {
            return Ok(());
        }
        if stack.iter().any(|s| s == name) {
            let mut cycle = stack.clone();
            cycle.push(name.into());
            return Err(DeclError::Cycle(cycle.join(" → ")));
        }
        let el = load_element(dir, name, needed_by)?;
        stack.push(name.into());
        for d in &el.def.depends {
            visit(d, name, dir, stack, done, out)?;
        }
        stack.pop();
        done.insert(name.into());
        out.push(el);
        Ok(())
    }
    let mut out = Vec::new();
    let mut done = BTreeSet::new();
    let by = format!("image {}", image.name);
    for e in &image.elements {
        visit(e, &by, elements_dir, &mut Vec::new(), &mut done, &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn parse_errors_name_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "bad/element.toml",
            "description = \"x\"\npackages = [\"a\"]\nbogus = 1\n",
        );
        let e = load_element(d.path(), "bad", "test").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("bad/element.toml:3:"), "{msg}");
        assert!(msg.contains("bogus"), "{msg}");

        write(
            d.path(),
            "typo/element.toml",
            "description = \"x\"\n\n[[service]]\nname = \"a\"\nexec = 5\n",
        );
        let msg = load_element(d.path(), "typo", "test")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("typo/element.toml:5:"), "{msg}");
    }

    #[test]
    fn paths_escaping_roots_are_refused() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "o/element.toml",
            "description = \"x\"\noverlay = \"../../etc\"\n",
        );
        let msg = load_element(d.path(), "o", "t").unwrap_err().to_string();
        assert!(msg.contains("leaves the element directory"), "{msg}");
        write(
            d.path(),
            "b/element.toml",
            "description = \"x\"\n[[binary]]\npackage = \"p\"\nbin = \"b\"\ndest = \"/usr/../../etc/x\"\n",
        );
        let msg = load_element(d.path(), "b", "t").unwrap_err().to_string();
        assert!(msg.contains("leaves the image root"), "{msg}");
        assert!(matches!(
            load_element(d.path(), "../o", "t"),
            Err(DeclError::UnknownElement { .. })
        ));
        assert_eq!(image_path("/usr/./bin/x").unwrap(), "usr/bin/x");
        assert!(image_path("/").is_err());
    }

    #[test]
    fn resolve_orders_dependencies_first_once_and_finds_cycles() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a/element.toml", "description = \"a\"\n");
        write(
            d.path(),
            "b/element.toml",
            "description = \"b\"\ndepends = [\"a\"]\n",
        );
        write(
            d.path(),
            "c/element.toml",
            "description = \"c\"\ndepends = [\"a\", \"b\"]\n",
        );
        let img = ImageDef {
            name: "i".into(),
            version: "1".into(),
            description: String::new(),
            elements: vec!["c".into(), "b".into()],
            cmdline: default_cmdline(),
            hostname: default_hostname(),
            layout: None,
        };
        let names: Vec<_> = resolve(&img, d.path())
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert_eq!(names, ["a", "b", "c"]);

        write(
            d.path(),
            "a/element.toml",
            "description = \"a\"\ndepends = [\"c\"]\n",
        );
        let e = resolve(&img, d.path()).unwrap_err();
        assert!(matches!(e, DeclError::Cycle(_)), "{e}");
        let img2 = ImageDef {
            elements: vec!["nope".into()],
            ..img
        };
        let msg = resolve(&img2, d.path()).unwrap_err().to_string();
        assert!(msg.contains("\"nope\"") && msg.contains("image i"), "{msg}");
    }
}
