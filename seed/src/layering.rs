//! The dependency direction inside the crate (ARCHITECTURE.md, "Layers"), checked on the
//! sources: drivers (`cli`, `daemon`, `sim`) use the cores, the cores never use a driver, and
//! among the cores every arrow points one way (`orchestrator` → `lifecycle` → `inventory`,
//! `orchestrator` → `template`).

use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/<module>` and `src/<module>.rs`.
fn sources(module: &str) -> Vec<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = vec![];
    let file = src.join(format!("{module}.rs"));
    if file.is_file() {
        out.push(file);
    }
    let mut dirs = vec![src.join(module)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    assert!(!out.is_empty(), "no sources for {module}");
    out
}

/// Lines of code (not comments) in `module` that name `crate::<other>`.
fn uses(module: &str, other: &str) -> Vec<String> {
    let needle = format!("crate::{other}");
    let mut found = vec![];
    for path in sources(module) {
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            let hit = code.match_indices(&needle).any(|(at, _)| {
                // `crate::lifecycle`, not `crate::lifecycle_x`.
                !code[at + needle.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
            });
            if hit {
                found.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn cores_never_use_their_drivers_and_arrows_point_one_way() {
    let cores = [
        "inventory",
        "lifecycle",
        "orchestrator",
        "template",
        "store",
        "power",
    ];
    let mut wrong = vec![];
    for core in cores {
        for driver in ["cli", "daemon", "sim"] {
            wrong.extend(uses(core, driver));
        }
    }
    for (lower, upper) in [
        ("inventory", "lifecycle"),
        ("inventory", "orchestrator"),
        ("lifecycle", "orchestrator"),
        ("template", "orchestrator"),
        ("template", "lifecycle"),
    ] {
        wrong.extend(uses(lower, upper));
    }
    assert!(
        wrong.is_empty(),
        "imports against the layering:\n{}",
        wrong.join("\n")
    );
}
