//! run-parts: run the executable scripts of one directory as `dib-run-parts` (the run-parts
//! os-refresh-config calls for each phase) does.
//!
//! - Which: regular files (symlinks followed) the agent may execute (`find -xtype f
//!   -executable`), whose name matches `^[0-9A-Za-z_-]+$` (so editor backups, `foo.dpkg-old`,
//!   `README.md`, `run.sh` are skipped). dib-run-parts reads the pattern from
//!   `$RUN_PARTS_REGEX` when set; seed always uses the default.
//! - Order: `LANG=C sort -n` ([`sortn`]): by leading number, names without one as 0, ties by
//!   bytes — `2-a 9-d 10-b 100-c`, not byte order (`99-refresh-completed` before
//!   `100-tuskar-api`, as tripleo-image-elements expects).
//! - Environment: the files of `<dir>/../environment.d` are sourced first, once, and what they
//!   export reaches every script ([`environment`]).
//! - A script without `#!` (exec fails with `ENOEXEC`) runs through `bash`, as it does when
//!   dib-run-parts (a bash script) runs it; one whose first line holds a NUL byte is refused
//!   as bash refuses a binary file (exit 126). `sh` stands in on images without bash.
//! - The first script that fails stops the run; its exit status and output (stdout and stderr
//!   interleaved, as a terminal would show them) are in the error. With a deadline (`--timeout`)
//!   a script still running when it passes is killed (SIGKILL to its process group), as
//!   os-refresh-config kills its children on SIGALRM, and the run fails.

use crate::config::environment::{self, EnvironmentError};
use crate::config::sortn;
use std::ffi::OsString;
use std::fs;
use std::io::{Read, Seek};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

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
    /// The deadline passed while a script ran; it was killed.
    #[error("{} killed: the timeout was reached; output:\n{output}", script.display())]
    TimedOut {
        /// The script.
        script: PathBuf,
        /// What it printed before.
        output: String,
    },
    /// Sourcing `environment.d` failed, so no script ran.
    #[error(transparent)]
    Environment(#[from] EnvironmentError),
}

/// One script that ran successfully, and what it printed.
#[derive(Debug, Clone)]
pub struct ScriptRun {
    /// The script.
    pub script: PathBuf,
    /// What it printed (stdout and stderr interleaved).
    pub output: String,
}

/// Whether run-parts would consider a file of this name: `^[0-9A-Za-z_-]+$`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The scripts run-parts would run in `dir`, in order: regular files (symlinks followed)
/// the agent may execute, with a valid name, in `LANG=C sort -n` order.
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
            continue; // not UTF-8, so not [0-9A-Za-z_-]+
        };
        if !valid_name(&name) {
            continue;
        }
        let path = entry.path();
        let executable_file = fs::metadata(&path).is_ok_and(|m| m.is_file())
            && nix::unistd::access(&path, nix::unistd::AccessFlags::X_OK).is_ok();
        if executable_file {
            names.push(name);
        }
    }
    names.sort_unstable_by(|a, b| sortn::cmp(a.as_bytes(), b.as_bytes()));
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}

/// How to run a directory's scripts.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Kill a script still running at this instant and fail.
    pub deadline: Option<Instant>,
}

/// How one script is started.
#[derive(Debug, Clone, Default)]
struct Launch {
    /// The whole environment (from `environment.d`), or `None` to inherit ours.
    env: Option<Vec<(OsString, OsString)>>,
    deadline: Option<Instant>,
}

/// Bash runs a file as a script unless a NUL comes before the first newline of its first 80
/// bytes (`check_binary_file`).
fn looks_binary(script: &Path) -> bool {
    let mut head = [0u8; 80];
    let n = fs::File::open(script)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    head[..n]
        .iter()
        .take_while(|&&b| b != b'\n')
        .any(|&b| b == 0)
}

fn command(program: &Path, script: &Path, launch: &Launch, interpreted: bool) -> Command {
    let mut cmd = if interpreted {
        let mut c = Command::new(environment::shell());
        c.arg(script);
        c
    } else {
        Command::new(program)
    };
    if let Some(env) = &launch.env {
        cmd.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
    }
    if launch.deadline.is_some() {
        // Its own group, so the script and whatever it started can be killed together.
        cmd.process_group(0);
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// Wait for the child, killing its process group at the deadline.
fn wait(
    child: &mut std::process::Child,
    deadline: Option<Instant>,
) -> std::io::Result<Option<ExitStatus>> {
    let Some(deadline) = deadline else {
        return child.wait().map(Some);
    };
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            child.wait()?;
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run one script with no arguments, capturing its output: `None` if the deadline killed it.
fn launch_script(
    script: &Path,
    launch: &Launch,
) -> Result<(Option<ExitStatus>, String), RunPartsError> {
    let io_err = |what| {
        let path = script.to_path_buf();
        move |source| RunPartsError::Io { what, path, source }
    };
    // One anonymous file for both streams keeps their interleaving and cannot fill up and
    // block the script the way an unread pipe could.
    let mut capture = tempfile::tempfile().map_err(io_err("capturing the output of"))?;
    let spawn = |interpreted: bool| -> std::io::Result<std::process::Child> {
        command(script, script, launch, interpreted)
            .stdout(capture.try_clone()?)
            .stderr(capture.try_clone()?)
            .spawn()
    };
    let mut child = match spawn(false) {
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOEXEC) && !looks_binary(script) => {
            spawn(true).map_err(io_err("running"))?
        }
        other => other.map_err(io_err("running"))?,
    };
    let status = wait(&mut child, launch.deadline).map_err(io_err("waiting for"))?;
    let mut output = Vec::new();
    capture.rewind().map_err(io_err("reading the output of"))?;
    capture
        .read_to_end(&mut output)
        .map_err(io_err("reading the output of"))?;
    Ok((status, String::from_utf8_lossy(&output).into_owned()))
}

/// Run one script with no arguments and the inherited environment, capturing its output.
pub fn run_script(script: &Path) -> Result<(ExitStatus, String), RunPartsError> {
    let (status, output) = launch_script(script, &Launch::default())?;
    Ok((status.expect("no deadline"), output))
}

/// Run the scripts of `dir` in order, after sourcing `dir/../environment.d`; stop at the
/// first failure.
pub fn run(dir: &Path) -> Result<Vec<ScriptRun>, RunPartsError> {
    run_with(dir, &RunOptions::default())
}

/// [`run`] with a deadline.
pub fn run_with(dir: &Path, opts: &RunOptions) -> Result<Vec<ScriptRun>, RunPartsError> {
    let scripts = list(dir)?;
    let launch = Launch {
        env: environment::source(&environment::dir_for(dir))?,
        deadline: opts.deadline,
    };
    let mut done = Vec::new();
    for script in scripts {
        tracing::info!(script = %script.display(), "running");
        let (status, output) = launch_script(&script, &launch)?;
        for line in output.lines() {
            tracing::info!(script = %script.display(), "{line}");
        }
        let Some(status) = status else {
            return Err(RunPartsError::TimedOut { script, output });
        };
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
    use std::os::unix::fs::PermissionsExt;

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
    fn sort_n_order_skips_and_stops_on_failure() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        let parts = d.path().join("parts");
        fs::create_dir(&parts).unwrap();
        let rec = |n: &str| format!("echo {n} >> {}", log.display());
        script(&parts, "20-b", &rec("20-b"), 0o755);
        script(&parts, "10-a", &rec("10-a"), 0o755);
        script(&parts, "9-z", &rec("9-z"), 0o755); // 9 < 10, whatever the bytes say
        script(&parts, "B-upper", &rec("B-upper"), 0o755); // no number: 0, first
        script(&parts, "15-skip.sh", &rec("bad-name"), 0o755);
        script(&parts, "16-noexec", &rec("noexec"), 0o644);
        fs::create_dir(parts.join("17-dir")).unwrap();
        std::os::unix::fs::symlink(parts.join("10-a"), parts.join("12-link")).unwrap();

        let names: Vec<String> = list(&parts)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["B-upper", "9-z", "10-a", "12-link", "20-b"]);

        let ran = run(&parts).unwrap();
        assert_eq!(ran.len(), 5);
        assert_eq!(
            fs::read_to_string(&log).unwrap(),
            "B-upper\n9-z\n10-a\n10-a\n20-b\n"
        );

        // A failure in the middle stops the run, with its status and output.
        fs::remove_file(&log).unwrap();
        script(
            &parts,
            "11-fail",
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
                assert!(script.ends_with("11-fail"));
                assert_eq!(status.code(), Some(7));
                assert_eq!(output, "to-stdout\nto-stderr\n");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(fs::read_to_string(&log).unwrap(), "B-upper\n9-z\n10-a\n");
        assert!(err.to_string().contains("to-stderr"));
    }

    #[test]
    fn a_script_without_shebang_runs_through_the_shell() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("10-plain");
        fs::write(&p, "x=shell\necho \"ran by $x\"\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        let ran = run(d.path()).unwrap();
        assert_eq!(ran[0].output, "ran by shell\n");

        // A binary (NUL in the first line) is refused, as bash refuses it.
        fs::write(&p, b"\x7fELF\0\0junk\n").unwrap();
        let err = run(d.path()).unwrap_err();
        assert!(matches!(&err, RunPartsError::Io { .. }), "{err:?}");
    }

    #[test]
    fn environment_d_reaches_the_scripts() {
        let d = tempfile::tempdir().unwrap();
        let parts = d.path().join("configure.d");
        let env_dir = d.path().join("environment.d");
        fs::create_dir_all(&parts).unwrap();
        fs::create_dir_all(&env_dir).unwrap();
        fs::write(env_dir.join("10-greeting"), "export GREETING=hello\n").unwrap();
        script(&parts, "10-say", "echo \"$GREETING\"", 0o755);
        assert_eq!(run(&parts).unwrap()[0].output, "hello\n");
    }

    #[test]
    fn a_script_past_the_deadline_is_killed() {
        let d = tempfile::tempdir().unwrap();
        script(d.path(), "10-slow", "echo started; sleep 30", 0o755);
        let opts = RunOptions {
            deadline: Some(Instant::now() + Duration::from_millis(300)),
        };
        let start = Instant::now();
        let err = run_with(d.path(), &opts).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(10));
        match err {
            RunPartsError::TimedOut { output, .. } => assert_eq!(output, "started\n"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
