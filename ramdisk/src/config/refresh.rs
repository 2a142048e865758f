//! Refresh: os-refresh-config's phases, with apply as an explicit step.
//!
//! `pre-configure.d` (quiesce), then apply (render the templates; os-refresh-config runs
//! os-apply-config from a `configure.d` script, here it is a step of its own), then
//! `configure.d`, `post-configure.d` (activate) and `migration.d`. Each phase directory is
//! run with [`runparts`](crate::config::runparts); a missing directory is skipped. The first
//! failure stops the run: the scripts of `error.d` are run (their own failures ignored) and
//! the failure is returned. A lock file held with `flock` for the whole run keeps a second
//! run from starting while one is in progress. Each directory is run as `dib-run-parts` runs
//! it (`sort -n` order, `environment.d` sourced first, scripts without `#!` through bash).
//! With a timeout (`--timeout`), a script still running when it expires is killed and the
//! phase fails, as os-refresh-config's SIGALRM handler kills its children; `error.d` gets
//! what is left of it, none once it has passed (the alarm has fired).
//!
//! Deliberate difference: the templates are applied by seed-config itself, always between
//! `pre-configure.d` and `configure.d`. The reference runs os-apply-config from a
//! `configure.d` script (tripleo's `20-os-apply-config`), so a `configure.d` script numbered
//! below 20 would see the old files there. Here every `configure.d` script sees the new
//! configuration, and an image needs no os-apply-config script: the order is fixed by the
//! agent rather than by a file name.

use crate::config::apply::{self, ApplyError, Outcome};
use crate::config::metadata::{self, MetadataError};
use crate::config::runparts::{self, RunOptions, RunPartsError};
use nix::fcntl::{Flock, FlockArg};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The phases, in order.
pub const PHASES: &[&str] = &["pre-configure", "configure", "post-configure", "migration"];
/// The base directory when neither `--base-dir` nor `OS_REFRESH_CONFIG_BASE_DIR` is given.
pub const DEFAULT_BASE_DIR: &str = "/usr/libexec/os-refresh-config";
/// The old base directory, used when it exists and the default does not.
pub const OLD_BASE_DIR: &str = "/opt/stack/os-config-refresh";
/// The default lock file.
pub const DEFAULT_LOCKFILE: &str = "/var/run/os-refresh-config.lock";

/// The base directory os-refresh-config would use.
pub fn default_base_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("OS_REFRESH_CONFIG_BASE_DIR") {
        return dir.into();
    }
    if Path::new(OLD_BASE_DIR).is_dir() && !Path::new(DEFAULT_BASE_DIR).is_dir() {
        tracing::warn!("base directory {OLD_BASE_DIR} is deprecated; use {DEFAULT_BASE_DIR}");
        return OLD_BASE_DIR.into();
    }
    DEFAULT_BASE_DIR.into()
}

/// The apply step of a refresh.
#[derive(Debug, Clone)]
pub struct ApplyStep {
    /// Template root.
    pub templates: PathBuf,
    /// Output root.
    pub output: PathBuf,
    /// Metadata files, merged in order.
    pub metadata: Vec<PathBuf>,
}

/// What to refresh.
#[derive(Debug, Clone)]
pub struct RefreshOptions {
    /// Holds `pre-configure.d`, `configure.d`, … and `error.d`.
    pub base_dir: PathBuf,
    /// The lock file.
    pub lockfile: PathBuf,
    /// Render templates between pre-configure and configure; `None` skips it.
    pub apply: Option<ApplyStep>,
    /// Kill a script still running this long after the start, and fail (`--timeout`).
    pub timeout: Option<std::time::Duration>,
}

/// Why a refresh stopped.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// Another run holds the lock.
    #[error("could not lock {}: another refresh is running", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// The lock file could not be opened.
    #[error("could not open lock file {}", path.display())]
    LockFile {
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A phase failed.
    #[error("during {phase} phase")]
    Phase {
        /// The phase.
        phase: String,
        /// The failure.
        #[source]
        source: RunPartsError,
    },
    /// The metadata could not be read for the apply step.
    #[error("during apply: reading metadata")]
    Metadata(#[source] MetadataError),
    /// Rendering or writing the templates failed.
    #[error("during apply")]
    Apply(#[source] ApplyError),
}

/// One step that completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A phase ran these scripts (none if its directory is missing or empty).
    Phase {
        /// The phase.
        phase: String,
        /// The scripts, in order.
        scripts: Vec<PathBuf>,
    },
    /// Apply wrote (or left) these files.
    Apply(Vec<(PathBuf, Outcome)>),
}

/// Run a refresh. Returns the completed steps in order.
pub fn refresh(opts: &RefreshOptions) -> Result<Vec<Step>, RefreshError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&opts.lockfile)
        .map_err(|source| RefreshError::LockFile {
            path: opts.lockfile.clone(),
            source,
        })?;
    let mut lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, source)| {
        RefreshError::Locked {
            path: opts.lockfile.clone(),
            source,
        }
    })?;
    let _ = lock.set_len(0);
    let _ = writeln!(lock, "Locked by pid=={}", std::process::id());

    let deadline = opts.timeout.map(|t| Instant::now() + t);
    let result = run_phases(opts, deadline);
    if let Err(e) = &result {
        tracing::error!("{}", crate::config::error_chain(e));
        let error_dir = opts.base_dir.join("error.d");
        if error_dir.is_dir() {
            tracing::info!("calling error handlers");
            let run = RunOptions {
                deadline: deadline.filter(|d| *d > Instant::now()),
            };
            if let Err(e) = runparts::run_with(&error_dir, &run) {
                tracing::warn!("error handler failed: {e}");
            }
        }
    }
    let _ = lock.set_len(0);
    result
}

fn run_phases(opts: &RefreshOptions, deadline: Option<Instant>) -> Result<Vec<Step>, RefreshError> {
    let run = RunOptions { deadline };
    let mut steps = Vec::new();
    for phase in PHASES {
        if *phase == "configure" {
            if let Some(step) = &opts.apply {
                tracing::info!(templates = %step.templates.display(), "applying templates");
                let config = metadata::collect(&step.metadata).map_err(RefreshError::Metadata)?;
                let report = apply::install(&config, &step.templates, &step.output, false)
                    .map_err(RefreshError::Apply)?;
                steps.push(Step::Apply(report));
            }
        }
        let dir = opts.base_dir.join(format!("{phase}.d"));
        let scripts = if dir.exists() {
            tracing::info!("starting phase {phase}");
            let ran = runparts::run_with(&dir, &run).map_err(|source| RefreshError::Phase {
                phase: phase.to_string(),
                source,
            })?;
            tracing::info!("completed phase {phase}");
            ran.into_iter().map(|r| r.script).collect()
        } else {
            tracing::debug!("no dir for phase {phase}");
            Vec::new()
        };
        steps.push(Step::Phase {
            phase: phase.to_string(),
            scripts,
        });
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) {
        fs::create_dir_all(dir).unwrap();
        let p = dir.join(name);
        fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        base: PathBuf,
        log: PathBuf,
        opts: RefreshOptions,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("orc");
        let log = dir.path().join("log");
        let templates = dir.path().join("templates");
        let out = dir.path().join("root");
        fs::create_dir_all(templates.join("etc")).unwrap();
        fs::write(templates.join("etc/app.conf"), "name = {{name}}\n").unwrap();
        let md = dir.path().join("md.json");
        fs::write(&md, r#"{"name": "node-1"}"#).unwrap();
        let rec = |tag: &str| {
            // Each script records its name and whether apply has written the file yet.
            format!(
                "if [ -f {out}/etc/app.conf ]; then s=applied; else s=before; fi; echo {tag}:$s >> {log}",
                out = out.display(),
                log = log.display()
            )
        };
        script(&base.join("pre-configure.d"), "10-quiesce", &rec("pre"));
        script(&base.join("configure.d"), "20-b", &rec("configure-20"));
        script(&base.join("configure.d"), "10-a", &rec("configure-10"));
        script(&base.join("post-configure.d"), "10-start", &rec("post"));
        script(&base.join("migration.d"), "10-migrate", &rec("migration"));
        let opts = RefreshOptions {
            base_dir: base.clone(),
            lockfile: dir.path().join("lock"),
            apply: Some(ApplyStep {
                templates,
                output: out,
                metadata: vec![md],
            }),
            timeout: None,
        };
        Fixture {
            _dir: dir,
            base,
            log,
            opts,
        }
    }

    #[test]
    fn phases_run_in_order_with_apply_between_pre_and_configure() {
        let f = fixture();
        let steps = refresh(&f.opts).unwrap();
        assert_eq!(
            fs::read_to_string(&f.log).unwrap(),
            "pre:before\nconfigure-10:applied\nconfigure-20:applied\npost:applied\nmigration:applied\n"
        );
        let kinds: Vec<String> = steps
            .iter()
            .map(|s| match s {
                Step::Phase { phase, scripts } => format!("{phase}:{}", scripts.len()),
                Step::Apply(files) => format!("apply:{}", files.len()),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "pre-configure:1",
                "apply:1",
                "configure:2",
                "post-configure:1",
                "migration:1"
            ]
        );
        let out = &f.opts.apply.as_ref().unwrap().output;
        assert_eq!(
            fs::read_to_string(out.join("etc/app.conf")).unwrap(),
            "name = node-1\n"
        );
    }

    #[test]
    fn failure_stops_the_run_and_calls_error_handlers() {
        let f = fixture();
        script(
            &f.base.join("configure.d"),
            "15-boom",
            "echo broken config >&2; exit 4",
        );
        script(
            &f.base.join("error.d"),
            "10-report",
            &format!("echo error-handler >> {}", f.log.display()),
        );
        let err = refresh(&f.opts).unwrap_err();
        let RefreshError::Phase {
            phase,
            source:
                RunPartsError::Failed {
                    script,
                    status,
                    output,
                },
        } = &err
        else {
            panic!("unexpected {err:?}");
        };
        assert_eq!(phase, "configure");
        assert!(script.ends_with("15-boom"));
        assert_eq!(status.code(), Some(4));
        assert_eq!(output, "broken config\n");
        assert_eq!(
            fs::read_to_string(&f.log).unwrap(),
            "pre:before\nconfigure-10:applied\nerror-handler\n"
        );
    }

    #[test]
    fn a_timeout_kills_the_script_and_calls_error_handlers() {
        let mut f = fixture();
        script(&f.base.join("configure.d"), "15-hang", "sleep 30");
        script(
            &f.base.join("error.d"),
            "10-report",
            &format!("echo error-handler >> {}", f.log.display()),
        );
        f.opts.timeout = Some(std::time::Duration::from_millis(500));
        let start = Instant::now();
        let err = refresh(&f.opts).unwrap_err();
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
        assert!(
            matches!(
                &err,
                RefreshError::Phase {
                    source: RunPartsError::TimedOut { .. },
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(fs::read_to_string(&f.log)
            .unwrap()
            .ends_with("configure-10:applied\nerror-handler\n"));
    }

    #[test]
    fn a_second_run_is_refused_while_the_lock_is_held() {
        let f = fixture();
        let held = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&f.opts.lockfile)
            .unwrap();
        let held = Flock::lock(held, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| e)
            .unwrap();
        let err = refresh(&f.opts).unwrap_err();
        assert!(matches!(err, RefreshError::Locked { .. }), "{err:?}");
        assert!(!f.log.exists(), "no script ran");
        drop(held);
        refresh(&f.opts).unwrap();
    }
}
