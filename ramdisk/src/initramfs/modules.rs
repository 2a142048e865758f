//! Kernel modules for the ramdisk: find them in an unpacked kernel package, follow their
//! `depends=` (read from each module's `.modinfo` ELF section, since Debian's package ships no
//! `modules.dep`: depmod runs at install time) and order them so each loads after its
//! dependencies.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Why the module set could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a kernel module: {reason}")]
    BadModule { path: PathBuf, reason: String },
    #[error("module {name} (needed by {needed_by}) is not in the kernel package")]
    Missing { name: String, needed_by: String },
}

/// A kernel module file and what it depends on.
#[derive(Debug, Clone)]
pub struct Module {
    pub name: String,
    /// Path relative to the modules directory (`kernel/drivers/net/virtio_net.ko`).
    pub rel_path: PathBuf,
    pub depends: Vec<String>,
}

/// Module names compare with `-` and `_` as the same character, as the kernel does.
pub fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// Every `*.ko` under `moddir` (e.g. `.../lib/modules/6.1.0-56-amd64`), by canonical name.
pub fn index(moddir: &Path) -> Result<BTreeMap<String, PathBuf>, ModuleError> {
    let mut out = BTreeMap::new();
    let mut stack = vec![moddir.join("kernel")];
    while let Some(dir) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(|source| ModuleError::Io {
            path: dir.clone(),
            source,
        })?;
        for e in rd {
            let e = e.map_err(|source| ModuleError::Io {
                path: dir.clone(),
                source,
            })?;
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(stem) = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".ko"))
            {
                let rel = p.strip_prefix(moddir).expect("under moddir").to_path_buf();
                out.insert(canonical(stem), rel);
            }
        }
    }
    Ok(out)
}

/// The `depends=` of one module file.
pub fn depends_of(path: &Path) -> Result<Vec<String>, ModuleError> {
    use object::{Object, ObjectSection};
    let data = std::fs::read(path).map_err(|source| ModuleError::Io {
        path: path.into(),
        source,
    })?;
    let bad = |reason: String| ModuleError::BadModule {
        path: path.into(),
        reason,
    };
    let file = object::File::parse(&*data).map_err(|e| bad(e.to_string()))?;
    let section = file
        .section_by_name(".modinfo")
        .ok_or_else(|| bad("no .modinfo section".into()))?;
    let info = section.data().map_err(|e| bad(e.to_string()))?;
    Ok(info
        .split(|b| *b == 0)
        .filter_map(|kv| kv.strip_prefix(b"depends="))
        .flat_map(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(canonical)
                .collect::<Vec<_>>()
        })
        .filter(|d| !d.is_empty())
        .collect())
}

/// The wanted modules that exist in this kernel plus everything they depend on, in load order
/// (dependencies first). Wanted names that this kernel lacks are returned separately (a list of
/// common server drivers is not an error when one is built in or absent); a missing dependency
/// is an error.
pub fn resolve(moddir: &Path, wanted: &[&str]) -> Result<(Vec<Module>, Vec<String>), ModuleError> {
    let idx = index(moddir)?;
    let mut absent = Vec::new();
    let mut mods: BTreeMap<String, Module> = BTreeMap::new();
    let mut todo: Vec<(String, String)> = Vec::new();
    for w in wanted {
        let c = canonical(w);
        if idx.contains_key(&c) {
            todo.push((c, "the ramdisk".into()));
        } else {
            absent.push(c);
        }
    }
    while let Some((name, needed_by)) = todo.pop() {
        if mods.contains_key(&name) {
            continue;
        }
        let rel = idx.get(&name).ok_or_else(|| ModuleError::Missing {
            name: name.clone(),
            needed_by: needed_by.clone(),
        })?;
        let depends = depends_of(&moddir.join(rel))?;
        for d in &depends {
            todo.push((d.clone(), name.clone()));
        }
        mods.insert(
            name.clone(),
            Module {
                name,
                rel_path: rel.clone(),
                depends,
            },
        );
    }
    // Depth-first post-order over sorted names: deterministic, dependencies first.
    let mut order = Vec::new();
    let mut done = BTreeSet::new();
    fn visit(
        n: &str,
        mods: &BTreeMap<String, Module>,
        done: &mut BTreeSet<String>,
        order: &mut Vec<Module>,
    ) {
        if !done.insert(n.to_string()) {
            return;
        }
        let m = &mods[n];
        for d in &m.depends {
            visit(d, mods, done, order);
        }
        order.push(m.clone());
    }
    for n in mods.keys() {
        visit(n, &mods, &mut done, &mut order);
    }
    Ok((order, absent))
}
