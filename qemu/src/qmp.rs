//! A QMP client over the node's unix socket.
//!
//! Hand-written rather than a crate (`qapi`/`qmp-client` pull in code generation and an async
//! runtime): QMP is one JSON object per line — a greeting, `qmp_capabilities`, then
//! `{"execute": …}` answered by `{"return": …}` or `{"error": …}`, with events interleaved.

use serde_json::{json, Value};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// QMP failures.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// Socket trouble (not there yet, closed, timed out).
    #[error("QMP socket I/O")]
    Io(#[from] io::Error),
    /// Not a JSON line.
    #[error("QMP sent something that is not JSON")]
    Json(#[from] serde_json::Error),
    /// QEMU answered with an error.
    #[error("QMP command {command} failed: {message}")]
    Command {
        /// The command.
        command: String,
        /// QEMU's description.
        message: String,
    },
    /// The socket closed before an answer.
    #[error("QMP socket closed")]
    Closed,
}

/// A connected, capability-negotiated QMP session.
#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connect to `path`, retrying until `timeout` (QEMU creates the socket shortly after
    /// start), read the greeting and negotiate capabilities.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, QmpError> {
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if start.elapsed() >= timeout => return Err(e.into()),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        let mut q = Self {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        let greeting = q.read_line()?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Closed);
        }
        q.execute("qmp_capabilities")?;
        Ok(q)
    }

    fn read_line(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(QmpError::Closed);
        }
        Ok(serde_json::from_str(&line)?)
    }

    /// Run `command` without arguments and return its `return` value (events are skipped).
    pub fn execute(&mut self, command: &str) -> Result<Value, QmpError> {
        let mut line = serde_json::to_vec(&json!({ "execute": command }))?;
        line.push(b'\n');
        self.writer.write_all(&line)?;
        loop {
            let v = self.read_line()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(QmpError::Command {
                    command: command.into(),
                    message: e.get("desc").and_then(Value::as_str).unwrap_or("?").into(),
                });
            }
        }
    }

    /// `query-status`: the run state, e.g. `"running"`, `"paused"`, `"shutdown"`.
    pub fn status(&mut self) -> Result<String, QmpError> {
        let r = self.execute("query-status")?;
        Ok(r.get("status")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string())
    }
}
