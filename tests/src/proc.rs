//! Child processes that die with the test: killed (SIGKILL) and reaped on drop, with their
//! output captured to a file that is printed when the test panics.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A spawned child that is killed when dropped.
#[derive(Debug)]
pub struct Child {
    inner: std::process::Child,
    /// Where stdout and stderr go.
    pub log: PathBuf,
    name: String,
    _dir: tempfile::TempDir,
}

impl Child {
    /// Spawn `cmd` with stdout+stderr to a temporary log file.
    pub fn spawn(name: &str, mut cmd: Command) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join(format!("{name}.log"));
        let f = std::fs::File::create(&log).expect("log file");
        let inner = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("dup"))
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        Self {
            inner,
            log,
            name: name.to_string(),
            _dir: dir,
        }
    }

    /// The log so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until the log contains `needle`, or panic after `timeout` with the log.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.output().contains(needle) {
                return;
            }
            if let Ok(Some(status)) = self.inner.try_wait() {
                panic!(
                    "{} exited ({status}) before logging {needle:?}:\n{}",
                    self.name,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{} did not log {needle:?} within {timeout:?}:\n{}",
            self.name,
            self.output()
        );
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.inner.try_wait(), Ok(None))
    }

    /// Its exit status once it has exited within `timeout` (None if still running).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.inner.try_wait() {
                return Some(status);
            }
            if start.elapsed() >= timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.inner.id()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.inner.kill();
        let _ = self.inner.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- {} log ({}) ----\n{}",
                self.name,
                self.log.display(),
                self.output()
            );
        }
    }
}
