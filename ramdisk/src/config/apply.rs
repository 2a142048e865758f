//! Apply: render a template tree that mirrors `/` into real files, as os-apply-config does.
//!
//! Every regular file under the templates root (except `*.oac` control files) is a template
//! for the path with the same relative name under the output root. A template with an
//! executable bit is run with the metadata as JSON on stdin and its stdout becomes the file;
//! any other template is mustache ([`crate::config::mustache`]). The whole tree is rendered
//! before anything is written, so one bad template writes nothing.
//!
//! Writing: a file keeps its existing mode and owner unless its `.oac` says otherwise (new
//! files get 0644 and the agent's own uid/gid); the new content goes to a temporary file in
//! the same directory which is then renamed over the target, so a reader sees the old or the
//! new file, never a half-written one. A file whose content is already right is not rewritten
//! (its mtime is untouched; only mode/owner are fixed if they differ). With
//! `allow_empty: false`, an empty result deletes the file instead.

use crate::config::control::{self, Control, ControlError};
use crate::config::mustache::Template;
use serde_json::Value;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Suffix of control files beside templates.
pub const CONTROL_FILE_SUFFIX: &str = ".oac";

/// Why a template tree could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Reading the tree or writing a file failed.
    #[error("{what} {}", path.display())]
    Io {
        /// What was being done ("reading", "writing", …).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A bad mustache tag.
    #[error("{}:{line}: {message}", path.display())]
    Template {
        /// The template.
        path: PathBuf,
        /// 1-based line of the tag.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// An executable template exited non-zero.
    #[error("config script failed: {} ({status})\n\nwith output:\n\n{output}", path.display())]
    Script {
        /// The template.
        path: PathBuf,
        /// How it ended.
        status: std::process::ExitStatus,
        /// Its stdout then stderr.
        output: String,
    },
    /// A `.oac` file that cannot be honoured.
    #[error("invalid control file {}", path.display())]
    Control {
        /// The control file.
        path: PathBuf,
        /// Why.
        #[source]
        source: ControlError,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ApplyError {
    let path = path.to_path_buf();
    move |source| ApplyError::Io { what, path, source }
}

/// One rendered template.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The template it came from.
    pub template: PathBuf,
    /// Path relative to the output root (`etc/mysql/my.cnf`).
    pub relative: PathBuf,
    /// The file's new content.
    pub body: Vec<u8>,
    /// Its control file's settings.
    pub control: Control,
}

/// What happened to one output file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// New content was written.
    Written,
    /// Content was already right; not rewritten (mode/owner fixed if needed).
    Unchanged,
    /// Empty and `allow_empty: false`: the existing file was deleted.
    Deleted,
    /// Empty and `allow_empty: false`: no file was created.
    NotCreated,
}

/// Every template under `root` as (template path, path relative to root), sorted. Missing
/// root: no templates (as os-apply-config's `os.walk`). Symlinked directories are not
/// followed; symlinked files are read through.
pub fn template_paths(root: &Path) -> Result<Vec<(PathBuf, PathBuf)>, ApplyError> {
    let mut out = Vec::new();
    if root.is_dir() {
        walk(root, Path::new(""), &mut out)?;
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

fn walk(dir: &Path, rel: &Path, out: &mut Vec<(PathBuf, PathBuf)>) -> Result<(), ApplyError> {
    for entry in fs::read_dir(dir).map_err(io("reading directory", dir))? {
        let entry = entry.map_err(io("reading directory", dir))?;
        let path = entry.path();
        let name = entry.file_name();
        let ft = entry.file_type().map_err(io("reading", &path))?;
        if ft.is_dir() {
            walk(&path, &rel.join(&name), out)?;
        } else if !name.to_string_lossy().ends_with(CONTROL_FILE_SUFFIX) && path.is_file() {
            out.push((path, rel.join(&name)));
        }
    }
    Ok(())
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Render one template with `config`.
pub fn render_template(path: &Path, config: &Value) -> Result<Vec<u8>, ApplyError> {
    if is_executable(path) {
        return render_executable(path, config);
    }
    let text = universal_newlines(fs::read_to_string(path).map_err(io("reading template", path))?);
    let bad = |e: super::mustache::ParseError| ApplyError::Template {
        path: path.to_path_buf(),
        line: e.line,
        message: e.message,
    };
    let template = Template::parse(&text).map_err(bad)?;
    Ok(template.render(config).map_err(bad)?.into_bytes())
}

/// `\r\n` and lone `\r` as `\n`: os-apply-config reads templates and control files with
/// `open()` in text mode (universal newlines), so a template saved on Windows renders with
/// `\n` line endings.
pub fn universal_newlines(text: String) -> String {
    if !text.contains('\r') {
        return text;
    }
    text.replace("\r\n", "\n").replace('\r', "\n")
}

/// Run an executable template: the metadata as JSON on stdin, the file's content on stdout.
pub fn render_executable(path: &Path, config: &Value) -> Result<Vec<u8>, ApplyError> {
    let mut child = Command::new(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io("running", path))?;
    let input = serde_json::to_vec(config).expect("a JSON value serialises");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // A separate writer so a script that prints before reading all its input cannot
    // deadlock against us. A script that ignores stdin closes the pipe: not an error.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let output = child.wait_with_output().map_err(io("running", path))?;
    let _ = writer.join();
    if !output.status.success() {
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        return Err(ApplyError::Script {
            path: path.to_path_buf(),
            status: output.status,
            output: text,
        });
    }
    Ok(output.stdout)
}

/// Render every template under `root`, with its control file.
pub fn build_tree(root: &Path, config: &Value) -> Result<Vec<Rendered>, ApplyError> {
    let mut out = Vec::new();
    for (template, relative) in template_paths(root)? {
        let body = render_template(&template, config)?;
        let mut ctrl_path = template.clone().into_os_string();
        ctrl_path.push(CONTROL_FILE_SUFFIX);
        let ctrl_path = PathBuf::from(ctrl_path);
        let control = if ctrl_path.is_file() {
            let text = universal_newlines(
                fs::read_to_string(&ctrl_path).map_err(io("reading", &ctrl_path))?,
            );
            control::parse(&text).map_err(|source| ApplyError::Control {
                path: ctrl_path.clone(),
                source,
            })?
        } else {
            Control::default()
        };
        out.push(Rendered {
            template,
            relative,
            body,
            control,
        });
    }
    Ok(out)
}

/// Write one rendered file at `path` (see the module doc for the rules).
pub fn write_file(path: &Path, body: &[u8], control: &Control) -> Result<Outcome, ApplyError> {
    if !control.allow_empty && body.is_empty() {
        return if fs::symlink_metadata(path).is_ok() {
            tracing::info!(path = %path.display(), "deleting");
            fs::remove_file(path).map_err(io("deleting", path))?;
            Ok(Outcome::Deleted)
        } else {
            tracing::info!(path = %path.display(), "not creating empty file");
            Ok(Outcome::NotCreated)
        };
    }
    let existing = fs::metadata(path).ok().filter(|m| m.is_file());
    let (mut mode, mut uid, mut gid) = match &existing {
        Some(m) => (m.mode() & 0o7777, Some(m.uid()), Some(m.gid())),
        None => (0o644, None, None),
    };
    // os-apply-config: `mode = obj.mode or mode`, so a mode of 0 means "keep".
    if let Some(m) = control.mode.filter(|&m| m != 0) {
        mode = m;
    }
    uid = control.owner.or(uid);
    gid = control.group.or(gid);

    if let Some(meta) = &existing {
        if same_content(path, body)? {
            if meta.mode() & 0o7777 != mode {
                fs::set_permissions(path, fs::Permissions::from_mode(mode))
                    .map_err(io("setting the mode of", path))?;
            }
            if uid != Some(meta.uid()) || gid != Some(meta.gid()) {
                std::os::unix::fs::chown(path, uid, gid)
                    .map_err(io("changing the owner of", path))?;
            }
            tracing::debug!(path = %path.display(), "unchanged");
            return Ok(Outcome::Unchanged);
        }
    }

    tracing::info!(path = %path.display(), "writing");
    let dir = path.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir).map_err(io("creating directory", dir))?;
    // Created 0600, given its mode and owner before any content is visible under `path`.
    let mut tmp = fsutil::AtomicFile::with_mode(path, 0o600)
        .map_err(io("creating a temporary file in", dir))?;
    tmp.write_all(body)
        .map_err(io("writing", tmp.temp_path()))?;
    let file = tmp.file();
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io("setting the mode of", path))?;
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::fchown(file, uid, gid).map_err(io("changing the owner of", path))?;
    }
    tmp.commit().map_err(io("renaming into place", path))?;
    Ok(Outcome::Written)
}

fn same_content(path: &Path, body: &[u8]) -> Result<bool, ApplyError> {
    let mut f = fs::File::open(path).map_err(io("reading", path))?;
    if f.metadata().map_err(io("reading", path))?.len() != body.len() as u64 {
        return Ok(false);
    }
    let mut old = Vec::with_capacity(body.len());
    f.read_to_end(&mut old).map_err(io("reading", path))?;
    Ok(old == body)
}

/// Render the tree under `templates` with `config` and (unless `validate`) write it under
/// `output`. Returns each output path with what happened to it (nothing when validating).
pub fn install(
    config: &Value,
    templates: &Path,
    output: &Path,
    validate: bool,
) -> Result<Vec<(PathBuf, Outcome)>, ApplyError> {
    let tree = build_tree(templates, config)?;
    if validate {
        return Ok(Vec::new());
    }
    let mut report = Vec::with_capacity(tree.len());
    for r in tree {
        let path = output.join(&r.relative);
        let outcome = write_file(&path, &r.body, &r.control)?;
        report.push((path, outcome));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;

    /// os-apply-config's example tree (os_apply_config/tests/templates), rebuilt in a temp dir.
    fn example_tree(root: &Path) {
        let put = |rel: &str, body: &str, mode: u32| {
            let p = root.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, body).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        };
        put(
            "etc/glance/script.conf",
            "#!/bin/sh\n# prints the metadata's x, fails if it has none\nx=$(sed -n 's/.*\"x\": *\"\\([^\"]*\\)\".*/\\1/p')\n[ -n \"$x\" ] || { echo 'undefined: x' >&2; exit 3; }\necho \"$x\"\n",
            0o755,
        );
        put(
            "etc/keystone/keystone.conf",
            "[{{x}}]\ndatabase = {{database.url}}\n",
            0o644,
        );
        put("etc/control/empty", "{{x}}\n", 0o644);
        put("etc/control/allow_empty", "{{#y}}set{{/y}}", 0o644);
        put("etc/control/allow_empty.oac", "allow_empty: false\n", 0o644);
        put("etc/control/mode", "lorem modus\n", 0o644);
        put("etc/control/mode.oac", "mode: 0755\n", 0o644);
    }

    fn config() -> Value {
        json!({"x": "foo", "y": false, "z": null, "btrue": true, "bfalse": false,
               "database": {"url": "sqlite:///blah"}, "l": [1, 2]})
    }

    #[test]
    fn crlf_and_cr_templates_render_with_newlines() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("crlf.conf");
        fs::write(
            &p,
            "[{{x}}]\r\n{{#btrue}}\r\non = yes\r\n{{/btrue}}\r\nold = mac\rend\r",
        )
        .unwrap();
        let body = render_template(&p, &config()).unwrap();
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "[foo]\non = yes\nold = mac\nend\n"
        );
        assert_eq!(universal_newlines("a\r\r\nb".into()), "a\n\nb");
    }

    #[test]
    fn os_apply_config_example_tree() {
        let t = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        example_tree(t.path());
        let tree = build_tree(t.path(), &config()).unwrap();
        let got: Vec<(String, String, Control)> = tree
            .iter()
            .map(|r| {
                (
                    r.relative.display().to_string(),
                    String::from_utf8(r.body.clone()).unwrap(),
                    r.control,
                )
            })
            .collect();
        let d = Control::default();
        assert_eq!(
            got,
            vec![
                (
                    "etc/control/allow_empty".into(),
                    "".into(),
                    Control {
                        allow_empty: false,
                        ..d
                    }
                ),
                ("etc/control/empty".into(), "foo\n".into(), d),
                (
                    "etc/control/mode".into(),
                    "lorem modus\n".into(),
                    Control {
                        mode: Some(0o755),
                        ..d
                    }
                ),
                ("etc/glance/script.conf".into(), "foo\n".into(), d),
                (
                    "etc/keystone/keystone.conf".into(),
                    "[foo]\ndatabase = sqlite:///blah\n".into(),
                    d
                ),
            ]
        );

        // A stale file that must now be empty is deleted.
        let stale = out.path().join("etc/control/allow_empty");
        fs::create_dir_all(stale.parent().unwrap()).unwrap();
        fs::write(&stale, "old").unwrap();
        install(&config(), t.path(), out.path(), false).unwrap();
        assert!(!stale.exists());
        let mode = |p: &str| fs::metadata(out.path().join(p)).unwrap().mode();
        assert_eq!(mode("etc/control/mode"), 0o100755);
        assert_eq!(mode("etc/keystone/keystone.conf"), 0o100644);
        assert_eq!(
            fs::read_to_string(out.path().join("etc/keystone/keystone.conf")).unwrap(),
            "[foo]\ndatabase = sqlite:///blah\n"
        );

        // An operator's chmod survives the next apply.
        let ks = out.path().join("etc/keystone/keystone.conf");
        fs::set_permissions(&ks, fs::Permissions::from_mode(0o600)).unwrap();
        install(&config(), t.path(), out.path(), false).unwrap();
        assert_eq!(mode("etc/keystone/keystone.conf"), 0o100600);

        // Validate renders but writes nothing.
        let fresh = tempfile::tempdir().unwrap();
        assert!(install(&config(), t.path(), fresh.path(), true)
            .unwrap()
            .is_empty());
        assert_eq!(fs::read_dir(fresh.path()).unwrap().count(), 0);
    }

    #[test]
    fn executable_template_failure_reports_output_and_writes_nothing() {
        let t = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        example_tree(t.path());
        let err = install(&json!({}), t.path(), out.path(), false).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("config script failed:"), "{msg}");
        assert!(
            msg.contains("script.conf") && msg.contains("undefined: x"),
            "{msg}"
        );
        assert_eq!(
            fs::read_dir(out.path()).unwrap().count(),
            0,
            "nothing written"
        );
    }

    #[test]
    fn bad_template_names_file_and_line() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("bad_template");
        fs::write(&p, "first\n{{#foo}}bar={{bar}}{{/bar}}").unwrap();
        let err = render_template(&p, &json!({"foo": [{"bar": "abc"}]})).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("{}:2: ", p.display())), "{msg}");
        assert!(msg.contains("section end tag mismatch"), "{msg}");
    }

    #[test]
    fn atomic_write_and_unchanged_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/c.conf");
        let d = Control::default();
        assert_eq!(write_file(&p, b"one\n", &d).unwrap(), Outcome::Written);
        let ino1 = fs::metadata(&p).unwrap().ino();
        let old_mtime = filetime_of(&p);

        // Push the mtime into the past so an (unwanted) rewrite would be visible.
        set_mtime(&p, 1_000_000_000);
        assert_eq!(write_file(&p, b"one\n", &d).unwrap(), Outcome::Unchanged);
        assert_eq!(
            filetime_of(&p),
            1_000_000_000,
            "unchanged file was rewritten"
        );
        assert_eq!(fs::metadata(&p).unwrap().ino(), ino1);
        assert_ne!(old_mtime, 1_000_000_000);

        // New content: replaced by rename (a new inode), never truncated in place.
        assert_eq!(write_file(&p, b"two\n", &d).unwrap(), Outcome::Written);
        assert_ne!(fs::metadata(&p).unwrap().ino(), ino1);
        assert_eq!(fs::read(&p).unwrap(), b"two\n");
        // No temporary files left behind.
        let names: Vec<_> = fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("c.conf")]);

        // Same content, different requested mode: fixed in place, not rewritten.
        set_mtime(&p, 1_000_000_000);
        let ctl = Control {
            mode: Some(0o600),
            ..d
        };
        assert_eq!(write_file(&p, b"two\n", &ctl).unwrap(), Outcome::Unchanged);
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert_eq!(filetime_of(&p), 1_000_000_000);
    }

    #[test]
    fn owner_and_group_from_control_files() {
        if !nix::unistd::Uid::effective().is_root() {
            panic!(
                "this test needs root (chown); run the suite as root as on the seed build machine"
            );
        }
        let t = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        // Give the output files a non-root owner first, so the .oac's root is a real change.
        let nobody = nix::unistd::User::from_name("nobody")
            .unwrap()
            .expect("user nobody");
        let nogroup = nix::unistd::Group::from_gid(nobody.gid)
            .unwrap()
            .expect("nobody's group");
        for (name, ctl) in [
            ("owner.uid", "owner: 0\n"),
            ("owner.name", "owner: root\n"),
            ("group.gid", "group: 0\n"),
            ("group.name", "group: root\n"),
        ] {
            fs::write(t.path().join(name), format!("lorem {name}\n")).unwrap();
            fs::write(t.path().join(format!("{name}.oac")), ctl).unwrap();
            let target = out.path().join(name);
            fs::write(&target, "old\n").unwrap();
            std::os::unix::fs::chown(
                &target,
                Some(nobody.uid.as_raw()),
                Some(nogroup.gid.as_raw()),
            )
            .unwrap();
        }
        fs::write(t.path().join("to-nobody"), "x\n").unwrap();
        fs::write(
            t.path().join("to-nobody.oac"),
            format!("owner: nobody\ngroup: {}\nmode: 0640\n", nogroup.gid),
        )
        .unwrap();

        install(&json!({}), t.path(), out.path(), false).unwrap();
        let ids = |n: &str| {
            let m = fs::metadata(out.path().join(n)).unwrap();
            (m.uid(), m.gid())
        };
        let (nu, ng) = (nobody.uid.as_raw(), nogroup.gid.as_raw());
        assert_eq!(ids("owner.uid"), (0, ng));
        assert_eq!(ids("owner.name"), (0, ng));
        assert_eq!(ids("group.gid"), (nu, 0));
        assert_eq!(ids("group.name"), (nu, 0));
        assert_eq!(ids("to-nobody"), (nu, ng));
        assert_eq!(
            fs::metadata(out.path().join("to-nobody")).unwrap().mode() & 0o777,
            0o640
        );
        assert_eq!(
            fs::read_to_string(out.path().join("owner.uid")).unwrap(),
            "lorem owner.uid\n"
        );
    }

    fn filetime_of(p: &Path) -> i64 {
        fs::metadata(p).unwrap().mtime()
    }

    fn set_mtime(p: &Path, secs: u64) {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }
}
