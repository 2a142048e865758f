//! run-parts: run the executable scripts of one directory in lexical (C locale, byte) order,
//! as Debian's `run-parts` and `dib-run-parts` do. Names with characters outside
//! `[A-Za-z0-9_-]` (editor backups, `foo.dpkg-old`, `README.md`) and non-executable files are
//! skipped. The first script that fails stops the run; its exit status and output (stdout and
//! stderr interleaved, as a terminal would show them) are in the error.

use std::fs;
use std::io::{Read, Seek};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

/// A script that failed, or a directory that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RunPartsError {
    /// Listing the directory or starting a script failed.
    #[error("{what} {}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The directory or script.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A script exited unsuccessfully.
    #[error("{} failed ({status}) with output:\n{output}", script.display())]
    Failed {
        /// The script.
        script: PathBuf,
        /// How it ended.
        status: ExitStatus,
        /// What it printed.
        output: String,
    },
}

/// One script that ran successfully, and what it printed.
#[derive(Debug, Clone)]
pub struct ScriptRun {
    /// The script.
    pub script: PathBuf,
    /// What it printed (stdout and stderr interleaved).
    pub output: String,
}

/// Whether run-parts would consider a file of this name: `^[A-Za-z0-9_-]+$`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The scripts run-parts would run in `dir`, in order: regular files (symlinks followed)
/// with an executable bit and a valid name, sorted by bytes.
pub fn list(dir: &Path) -> Result<Vec<PathBuf>, RunPartsError> {
    let err = |source| RunPartsError::Io {
        what: "listing",
        path: dir.to_path_buf(),
        source,
    };
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        let Ok(name) = entry.file_name().into_string() else {
            continue; // not UTF-8, so not [A-Za-z0-9_-]+
        };
        if !valid_name(&name) {
            continue;
        }
        let executable_file = fs::metadata(entry.path())
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if executable_file {
            names.push(name);
        }
    }
    names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}

/// Run one script with no arguments, capturing its output.
pub fn run_script(script: &Path) -> Result<(ExitStatus, String), RunPartsError> {
    let io_err = |what| {
        let path = script.to_path_buf();
        move |source| RunPartsError::Io { what, path, source }
    };
    // One anonymous file for both streams keeps their interleaving and cannot fill up and
    // block the script the way an unread pipe could.
    let mut capture = tempfile::tempfile().map_err(io_err("capturing the output of"))?;
    let stderr = capture
        .try_clone()
        .map_err(io_err("capturing the output of"))?;
    let stdout = capture
        .try_clone()
        .map_err(io_err("capturing the output of"))?;
    let status = Command::new(script)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .status()
        .map_err(io_err("running"))?;
    let mut output = Vec::new();
    capture.rewind().map_err(io_err("reading the output of"))?;
    capture
        .read_to_end(&mut output)
        .map_err(io_err("reading the output of"))?;
    Ok((status, String::from_utf8_lossy(&output).into_owned()))
}

/// Run the scripts of `dir` in order; stop at the first failure.
pub fn run(dir: &Path) -> Result<Vec<ScriptRun>, RunPartsError> {
    let mut done = Vec::new();
    for script in list(dir)? {
        tracing::info!(script = %script.display(), "running");
        let (status, output) = run_script(&script)?;
        for line in output.lines() {
            tracing::info!(script = %script.display(), "{line}");
        }
        if !status.success() {
            return Err(RunPartsError::Failed {
                script,
                status,
                output,
            });
        }
        done.push(ScriptRun { script, output });
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn script(dir: &Path, name: &str, body: &str, mode: u32) {
        let p = dir.join(name);
        fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn names() {
        for ok in ["10-foo", "a", "Z_9", "-x"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "foo.sh", "foo~", ".hidden", "a b", "x.dpkg-old", "é"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn lexical_order_skips_and_stops_on_failure() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        let parts = d.path().join("parts");
        fs::create_dir(&parts).unwrap();
        let rec = |n: &str| format!("echo {n} >> {}", log.display());
        script(&parts, "20-b", &rec("20-b"), 0o755);
        script(&parts, "10-a", &rec("10-a"), 0o755);
        script(&parts, "9-z", &rec("9-z"), 0o755); // '9' > '2' in C order
        script(&parts, "B-upper", &rec("B-upper"), 0o755); // 'B' < 'a'
        script(&parts, "15-skip.sh", &rec("bad-name"), 0o755);
        script(&parts, "16-noexec", &rec("noexec"), 0o644);
        fs::create_dir(parts.join("17-dir")).unwrap();
        std::os::unix::fs::symlink(parts.join("10-a"), parts.join("12-link")).unwrap();

        let names: Vec<String> = list(&parts)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["10-a", "12-link", "20-b", "9-z", "B-upper"]);

        let ran = run(&parts).unwrap();
        assert_eq!(ran.len(), 5);
        assert_eq!(
            fs::read_to_string(&log).unwrap(),
            "10-a\n10-a\n20-b\n9-z\nB-upper\n"
        );

        // A failure in the middle stops the run, with its status and output.
        fs::remove_file(&log).unwrap();
        script(
            &parts,
            "30-fail",
            "echo to-stdout; echo to-stderr >&2; exit 7",
            0o755,
        );
        let err = run(&parts).unwrap_err();
        match &err {
            RunPartsError::Failed {
                script,
                status,
                output,
            } => {
                assert!(script.ends_with("30-fail"));
                assert_eq!(status.code(), Some(7));
                assert_eq!(output, "to-stdout\nto-stderr\n");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(fs::read_to_string(&log).unwrap(), "10-a\n10-a\n20-b\n");
        assert!(err.to_string().contains("to-stderr"));
    }
}
