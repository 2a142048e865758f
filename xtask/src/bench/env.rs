//! The bench's sandbox: network namespaces joined by a veth pair or by a delayed TAP link, child
//! processes killed when dropped, commands bounded in time, and a Ctrl-C/SIGTERM handler that
//! removes whatever is still alive.
//!
//! The approach follows `tests/src/netns.rs` (xtask may not depend on the tests crate): names
//! carry our pid so a run never collides with a test, nothing is ever addressed in the host's own
//! namespace, and `Drop` removes namespaces even when a measurement fails. Because a signal does
//! not unwind, every live namespace and child pid is also kept in a global registry that the
//! signal handler cleans before exiting.

use super::delay::{open_tap_in, DelayLink};
use anyhow::{anyhow, bail, Context, Result};
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The provisioning network inside the bench's namespaces: a /16 so a DHCP pool holds tens of
/// thousands of leases. It exists only inside namespaces the bench created.
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 208, 0, 1);
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 208, 0, 2);
pub const PREFIX: u8 = 16;
pub const SUBNET: &str = "10.208.0.0/16";
pub const POOL: (&str, &str) = ("10.208.1.1", "10.208.254.254");

static NEXT: AtomicU32 = AtomicU32::new(0);

/// What is alive right now, for the signal handler.
struct Live {
    netns: Vec<String>,
    pids: Vec<u32>,
    /// Temporary directories (payload, configs, logs).
    dirs: Vec<PathBuf>,
}

static LIVE: Mutex<Live> = Mutex::new(Live {
    netns: Vec::new(),
    pids: Vec::new(),
    dirs: Vec::new(),
});

/// Have the signal handler remove `dir` too (its `TempDir` guard does not run on a signal).
pub fn register_dir(dir: &Path) {
    live().dirs.push(dir.to_path_buf());
}

fn live() -> std::sync::MutexGuard<'static, Live> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// On Ctrl-C or SIGTERM: kill our children, delete our namespaces, exit 130.
pub fn install_interrupt_handler() -> Result<()> {
    ctrlc::set_handler(|| {
        eprintln!("bench: interrupted: killing children and removing namespaces");
        let (pids, names, dirs) = {
            let l = live();
            (l.pids.clone(), l.netns.clone(), l.dirs.clone())
        };
        for pid in pids {
            kill9(pid);
        }
        for name in names {
            remove_netns(&name);
        }
        for dir in dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
        std::process::exit(130);
    })
    .context("installing the Ctrl-C handler")
}

fn kill9(pid: u32) {
    // SAFETY: kill(2) has no memory effects; the pid is one of our own children.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}

fn remove_netns(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse() {
                kill9(pid);
            }
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "del", name])
        .stderr(Stdio::null())
        .status();
}

/// Remove namespaces left behind by an earlier bench whose process no longer exists (e.g. killed
/// with SIGKILL, which no handler sees).
pub fn remove_stale_netns() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix("sdb") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("bench: removing stale namespace {name}");
            remove_netns(name);
        }
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// One network namespace, deleted (with everything running inside) when dropped.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Result<Self> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("sdb{}-{}-{}", std::process::id(), n, tag);
        // Register first: a signal between `add` and the push would otherwise leak it.
        live().netns.push(name.clone());
        let ns = Self { name };
        ip(&["netns", "add", &ns.name])?;
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn ip(&self, args: &[&str]) -> Result<()> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// `program` run inside the namespace (`ip netns exec` execs it: same pid).
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Whether something listens on `port` (`proto` "u" or "t") inside the namespace.
    pub fn listening(&self, proto: &str, port: u16) -> bool {
        let filter = format!("sport = :{port}");
        self.cmd("ss")
            .args([&format!("-Hln{proto}"), filter.as_str()])
            .output()
            .map(|o| o.status.success() && !o.stdout.trim_ascii().is_empty())
            .unwrap_or(false)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        remove_netns(&self.name);
        live().netns.retain(|n| n != &self.name);
    }
}

/// How the two namespaces are joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// A veth pair: no latency to speak of.
    Veth,
    /// Two TAPs joined by a userspace forwarder that holds each frame this long, each way.
    Delayed(Duration),
}

impl std::fmt::Display for LinkKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkKind::Veth => write!(f, "veth"),
            LinkKind::Delayed(d) => write!(f, "{}µs link", d.as_micros()),
        }
    }
}

/// A server namespace (`SERVER_IP`) and a client namespace (`CLIENT_IP`) on one link.
pub struct Lan {
    /// Declared first so it stops (and closes the TAPs) before the namespaces go.
    pub link: Option<DelayLink>,
    pub server: Netns,
    pub client: Netns,
    pub server_if: String,
    pub client_if: String,
}

impl Lan {
    pub fn new(kind: LinkKind) -> Result<Self> {
        let server = Netns::new("srv")?;
        let client = Netns::new("cli")?;
        let link = match kind {
            LinkKind::Veth => {
                // Created inside the server namespace, one end moved: never in the host's.
                server.ip(&[
                    "link", "add", "veth-s", "type", "veth", "peer", "name", "veth-c",
                ])?;
                server.ip(&["link", "set", "veth-c", "netns", &client.name])?;
                None
            }
            LinkKind::Delayed(delay) => {
                // Each TAP is created from a thread that entered its namespace.
                let s = open_tap_in(&server.name, "tap-s")?;
                let c = open_tap_in(&client.name, "tap-c")?;
                Some(DelayLink::start(s, c, delay)?)
            }
        };
        let (server_if, client_if) = match kind {
            LinkKind::Veth => ("veth-s", "veth-c"),
            LinkKind::Delayed(_) => ("tap-s", "tap-c"),
        };
        server.ip(&[
            "addr",
            "add",
            &format!("{SERVER_IP}/{PREFIX}"),
            "dev",
            server_if,
        ])?;
        client.ip(&[
            "addr",
            "add",
            &format!("{CLIENT_IP}/{PREFIX}"),
            "dev",
            client_if,
        ])?;
        server.ip(&["link", "set", server_if, "up"])?;
        client.ip(&["link", "set", client_if, "up"])?;
        Ok(Self {
            link,
            server,
            client,
            server_if: server_if.into(),
            client_if: client_if.into(),
        })
    }
}

/// A long-running child (a server), SIGKILLed and reaped when dropped. Output goes to a log file.
pub struct Child {
    inner: std::process::Child,
    pub name: String,
    pub log: PathBuf,
}

impl Child {
    pub fn spawn(name: &str, mut cmd: Command, log_dir: &Path) -> Result<Self> {
        let log = log_dir.join(format!("{}.log", name.replace(' ', "-")));
        let f =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut l = live();
        let inner = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .with_context(|| format!("spawning {name}"))?;
        l.pids.push(inner.id());
        Ok(Self {
            inner,
            name: name.into(),
            log,
        })
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(
            &std::fs::read_to_string(&self.log).unwrap_or_default(),
            lines,
        )
    }

    /// `Some(status)` once the child has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.inner.try_wait().ok().flatten()
    }

    /// Peak resident set size (VmHWM) in KiB, while the child runs.
    pub fn vm_hwm_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.inner.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Wait until `ready()` holds, failing early (with the log) if the child exits first.
    pub fn wait_ready(
        &mut self,
        what: &str,
        timeout: Duration,
        ready: impl Fn() -> bool,
    ) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                bail!(
                    "{} exited during startup ({status}) instead of {what}; its output:\n{}",
                    self.name,
                    indent(&self.log_tail(12))
                );
            }
            if ready() {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!(
                    "{} did not start {what} within {timeout:?}; its output:\n{}",
                    self.name,
                    indent(&self.log_tail(12))
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let pid = self.inner.id();
        let _ = self.inner.kill();
        let _ = self.inner.wait();
        live().pids.retain(|p| *p != pid);
    }
}

/// What a bounded command did.
pub struct Ran {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Ran {
    /// stdout and stderr together, for error messages and parsing.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Run `cmd` to completion, killing it after `timeout` (an error). Output goes through unnamed
/// temporary files, so a chatty child can never block on a full pipe.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Result<Ran> {
    let shown = format!("{cmd:?}").replace('"', "");
    let mut out = tempfile::tempfile()?;
    let mut err = tempfile::tempfile()?;
    let start = Instant::now();
    let mut child = {
        let mut l = live();
        let c = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(err.try_clone()?)
            .spawn()
            .with_context(|| format!("starting {shown}"))?;
        l.pids.push(c.id());
        c
    };
    let pid = child.id();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = start.elapsed();
    live().pids.retain(|p| *p != pid);
    let read = |f: &mut std::fs::File| -> Result<String> {
        use std::io::Seek;
        f.seek(std::io::SeekFrom::Start(0))?;
        let mut s = String::new();
        f.read_to_string(&mut s)
            .map(|_| s)
            .or_else(|_| Ok(String::new()))
    };
    let (stdout, stderr) = (read(&mut out)?, read(&mut err)?);
    let Some(status) = status else {
        return Err(anyhow!(
            "{shown} did not finish within {timeout:?}; its output:\n{}",
            indent(&tail(&format!("{stdout}{stderr}"), 8))
        ));
    };
    Ok(Ran {
        status,
        stdout,
        stderr,
        elapsed,
    })
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub fn indent(text: &str) -> String {
    if text.trim().is_empty() {
        return "    (no output)".into();
    }
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    //! These need root, iproute2, /dev/net/tun, tftpd-hpa and atftp (`cargo xtask deps`), like
    //! the rest of the end-to-end suite; they fail, never skip, when something is missing.

    use super::*;

    fn netns_exists(name: &str) -> bool {
        let out = Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns list");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.split_whitespace().next() == Some(name))
    }

    /// A file crosses the delay link intact, every frame is held at least the delay, and the
    /// namespaces (with the server inside) are gone after the drop.
    #[test]
    fn delay_link_carries_a_tftp_transfer_and_cleans_up() {
        let delay = Duration::from_micros(250);
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir(&root).expect("root");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(root.join("f.bin"), &data).expect("write");
        use std::os::unix::fs::PermissionsExt;
        for p in [dir.path(), root.as_path()] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        std::fs::set_permissions(root.join("f.bin"), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");

        let lan = Lan::new(LinkKind::Delayed(delay)).expect("lan with a delay link");
        let names = (lan.server.name.clone(), lan.client.name.clone());
        let mut cmd = lan.server.cmd("in.tftpd");
        cmd.args(["-L", "-s"])
            .arg(&root)
            .args(["-a", &format!("{SERVER_IP}:69")]);
        let mut server = Child::spawn("tftpd-hpa", cmd, dir.path()).expect("spawn in.tftpd");
        server
            .wait_ready("listening", Duration::from_secs(10), || {
                lan.server.listening("u", 69)
            })
            .expect("in.tftpd listening");
        let got = dir.path().join("got.bin");
        let ran = run_bounded(
            lan.client
                .cmd("atftp")
                .args(["-g", "-r", "f.bin", "-l"])
                .arg(&got)
                .args([&SERVER_IP.to_string(), "69"]),
            Duration::from_secs(60),
        )
        .expect("atftp");
        assert!(ran.status.success(), "atftp failed: {}", ran.all());
        assert_eq!(std::fs::read(&got).expect("read"), data);
        let (frames, dropped, mean) = lan.link.as_ref().expect("a delay link").stats();
        // 200000/512 DATA blocks and as many ACKs, plus ARP.
        assert!(frames > 2 * 390, "only {frames} frames forwarded");
        assert_eq!(dropped, 0);
        assert!(
            mean >= delay,
            "frames held {mean:?} on average, less than {delay:?}"
        );
        drop(server);
        drop(lan);
        assert!(!netns_exists(&names.0) && !netns_exists(&names.1));
    }

    #[test]
    fn veth_lan_is_removed_on_drop() {
        let lan = Lan::new(LinkKind::Veth).expect("lan");
        let name = lan.server.name.clone();
        assert!(netns_exists(&name));
        drop(lan);
        assert!(!netns_exists(&name));
    }

    #[test]
    fn a_command_over_its_time_is_killed_and_reported() {
        let err = run_bounded(Command::new("sleep").arg("30"), Duration::from_millis(200))
            .err()
            .expect("timed out");
        assert!(err.to_string().contains("did not finish"), "{err}");
    }
}
