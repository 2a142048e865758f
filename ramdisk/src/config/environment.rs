//! `environment.d`: the files `dib-run-parts` sources before it runs a directory's scripts.
//!
//! dib-run-parts (the run-parts os-refresh-config calls for every phase, and for `error.d`)
//! sources, in a bash subshell running with `set -ue -o pipefail`, every file of
//! `<dir>/../environment.d` (regular files, symlinks followed, not necessarily executable)
//! whose name matches `^[0-9A-Za-z_.-]+$` (so `foo.sh` and `.hidden` too), in the order
//! `find … | LANG=C sort -n` gives the full paths: all paths share their directory, so that
//! is the names' byte order. What the files `export` reaches the scripts; a file that fails
//! (or reads an unset variable) fails the phase before any script runs.
//!
//! Here the files are sourced once per directory by `bash` (`sh` when the image has no bash,
//! e.g. busybox), under the same options, and the environment it ends with (`env -0`) is
//! the scripts' environment.

use crate::config::sortn;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Sourcing the environment files failed.
#[derive(Debug, thiserror::Error)]
pub enum EnvironmentError {
    /// Listing the directory, starting the shell or reading what it dumped failed.
    #[error("{what} {}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The directory or file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The shell sourcing the files exited unsuccessfully.
    #[error("sourcing {} failed ({status}) with output:\n{output}", dir.display())]
    Failed {
        /// The `environment.d` directory.
        dir: PathBuf,
        /// How the shell ended.
        status: std::process::ExitStatus,
        /// What it printed.
        output: String,
    },
}

/// The environment directory dib-run-parts uses for `dir`: `dir/../environment.d`.
pub fn dir_for(scripts: &Path) -> PathBuf {
    scripts.join("../environment.d")
}

/// Whether dib-run-parts would source a file of this name: `^[0-9A-Za-z_.-]+$`.
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The files to source, in order (empty when the directory is missing).
pub fn list(env_dir: &Path) -> Result<Vec<PathBuf>, EnvironmentError> {
    let err = |source| EnvironmentError::Io {
        what: "listing",
        path: env_dir.to_path_buf(),
        source,
    };
    if !env_dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut files = Vec::new();
    for entry in fs::read_dir(env_dir).map_err(err)? {
        let path = entry.map_err(err)?.path();
        let name = path.file_name().map(OsStr::as_bytes).unwrap_or_default();
        if valid_name(name) && fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            files.push(path);
        }
    }
    files.sort_by(|a, b| sortn::cmp(a.as_os_str().as_bytes(), b.as_os_str().as_bytes()));
    Ok(files)
}

/// The shell dib-run-parts is: bash, or `sh` where there is none.
pub fn shell() -> &'static str {
    static SHELL: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    SHELL.get_or_init(|| {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("bash").is_file()));
        if found {
            "bash"
        } else {
            "sh"
        }
    })
}

/// Source the files in one shell; the environment they leave, or `None` if there are none.
pub fn source(env_dir: &Path) -> Result<Option<Vec<(OsString, OsString)>>, EnvironmentError> {
    let files = list(env_dir)?;
    if files.is_empty() {
        return Ok(None);
    }
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| EnvironmentError::Io { what, path, source }
    };
    let mut dump =
        tempfile::NamedTempFile::new().map_err(io("dumping the environment of", env_dir))?;
    // The dump path and the list are positional parameters, the loop variables unexported:
    // neither reaches the scripts' environment.
    const SCRIPT: &str = r#"set -ue
set -o pipefail
__seed_dump=$1
shift
for __seed_env in "$@"; do
    echo "sourcing environment file $__seed_env" >&2
    . "$__seed_env"
done
env -0 > "$__seed_dump"
"#;
    let out = Command::new(shell())
        .arg("-c")
        .arg(SCRIPT)
        .arg(shell())
        .arg(dump.path())
        .args(&files)
        .stdin(Stdio::null())
        .output()
        .map_err(io("starting a shell to source", env_dir))?;
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    for line in output.lines() {
        tracing::info!(dir = %env_dir.display(), "{line}");
    }
    if !out.status.success() {
        return Err(EnvironmentError::Failed {
            dir: env_dir.to_path_buf(),
            status: out.status,
            output,
        });
    }
    let mut raw = Vec::new();
    dump.as_file_mut()
        .read_to_end(&mut raw)
        .map_err(io("reading the environment dumped for", env_dir))?;
    Ok(Some(parse_env0(&raw)))
}

/// `env -0`'s output: `NAME=VALUE\0`…
fn parse_env0(raw: &[u8]) -> Vec<(OsString, OsString)> {
    raw.split(|&b| b == 0)
        .filter_map(|entry| {
            let eq = entry.iter().position(|&b| b == b'=')?;
            (eq > 0).then(|| {
                (
                    OsString::from_vec(entry[..eq].to_vec()),
                    OsString::from_vec(entry[eq + 1..].to_vec()),
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["10-foo", "a.sh", ".hidden", "Z_9"] {
            assert!(valid_name(ok.as_bytes()), "{ok}");
        }
        for bad in ["", "foo~", "a b", "é"] {
            assert!(!valid_name(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn sources_in_byte_order_and_exports_reach_the_result() {
        let d = tempfile::tempdir().unwrap();
        let env_dir = d.path().join("environment.d");
        fs::create_dir(&env_dir).unwrap();
        // Byte order of the paths: "10-b" < "2-a" (the path starts with '/', so no number).
        fs::write(env_dir.join("2-a"), "export ORDER=\"${ORDER:-}2\"\n").unwrap();
        fs::write(
            env_dir.join("10-b"),
            "export ORDER=\"${ORDER:-}10\"\nLOCAL=1\n",
        )
        .unwrap();
        fs::write(env_dir.join("bad~"), "exit 1\n").unwrap();
        fs::write(env_dir.join("x.sh"), "export WITH_DOT=yes\n").unwrap();
        let names: Vec<_> = list(&env_dir)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["10-b", "2-a", "x.sh"]);
        let env = source(&env_dir).unwrap().unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("ORDER"), Some("102".into()));
        assert_eq!(get("WITH_DOT"), Some("yes".into()));
        assert_eq!(get("LOCAL"), None, "not exported");
        assert_eq!(get("__seed_dump"), None);
        assert!(get("PATH").is_some(), "the inherited environment is kept");

        // An unset variable under `set -u` fails, as in dib-run-parts.
        fs::write(env_dir.join("3-unset"), "echo $NOT_SET_ANYWHERE\n").unwrap();
        let err = source(&env_dir).unwrap_err();
        assert!(matches!(err, EnvironmentError::Failed { .. }), "{err:?}");
    }

    #[test]
    fn no_directory_no_environment() {
        let d = tempfile::tempdir().unwrap();
        assert!(source(&d.path().join("environment.d")).unwrap().is_none());
    }
}
