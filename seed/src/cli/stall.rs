//! A watchdog for the daemon's async runtime: a plain thread asks the runtime to run a tiny
//! task every second; when the answer is late by more than [`LATE`], something blocks the
//! runtime's workers (a synchronous call that waits: a lock, a socket, a store call), and every
//! service on that runtime — DHCP, the API, the leader's duties — is frozen with it. It says so
//! once per stall, with what each of the process's threads is waiting in (the kernel's
//! `wchan` and the syscall it is in, from `/proc/self/task`), so a field engineer can tell which
//! wait it is, and says again when the runtime answers.
//!
//! Hand-written: tokio has no such watchdog (tokio-console needs an unstable build and a
//! client), and reading `/proc` needs no crate.

use std::time::{Duration, Instant};

/// How late the runtime's answer may be before the watchdog speaks.
pub const LATE: Duration = Duration::from_secs(10);

/// Start the watchdog on `rt` (it stops with the process). Says first if the kernel's random
/// number generator is not ready yet: the first random bytes anything asks for then wait for it
/// (minutes on a VM without a hardware RNG), and on a runtime worker that wait freezes it.
pub fn watch(rt: tokio::runtime::Handle) -> std::io::Result<()> {
    if !kernel_rng_ready() {
        tracing::warn!(
            "the kernel's random number generator is not initialised yet: the daemon may stall \
             until it is; give the machine a hardware RNG (a VM: virtio-rng, and its driver)"
        );
    }
    std::thread::Builder::new()
        .name("runtime-watchdog".into())
        .spawn(move || {
            let mut stalled: Option<Instant> = None;
            loop {
                let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
                let asked = Instant::now();
                rt.spawn(async move {
                    let _ = tx.send(());
                });
                loop {
                    match rx.recv_timeout(Duration::from_secs(1)) {
                        Ok(()) => break,
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                            if stalled.is_none() && asked.elapsed() >= LATE {
                                stalled = Some(asked);
                                tracing::warn!(
                                    waited_secs = asked.elapsed().as_secs(),
                                    threads = %threads(),
                                    "the daemon's runtime is blocked: its services do not run"
                                );
                            }
                        }
                    }
                }
                if let Some(since) = stalled.take() {
                    tracing::warn!(
                        secs = since.elapsed().as_secs(),
                        "the daemon's runtime runs again"
                    );
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
        .map(drop)
}

/// Whether getrandom(2) would answer now (`GRND_NONBLOCK`: `EAGAIN` while the pool is not
/// initialised). Old kernels without the call count as ready.
fn kernel_rng_ready() -> bool {
    let mut b = [0u8; 1];
    // SAFETY: one writable byte.
    let r = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 1, libc::GRND_NONBLOCK) };
    r == 1 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN)
}

/// Each thread of this process: `name wchan [syscall]`, `; `-separated.
fn threads() -> String {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return "(no /proc)".into();
    };
    let read = |p: std::path::PathBuf| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let mut out: Vec<String> = dir
        .flatten()
        .map(|t| {
            let p = t.path();
            let syscall = read(p.join("syscall"));
            format!(
                "{} {} [{syscall}]{}",
                read(p.join("comm")),
                read(p.join("wchan")),
                polled(&syscall)
            )
        })
        .collect();
    out.sort();
    out.join("; ")
}

/// For a thread in `poll(2)` (x86-64: syscall 7), what it waits on: ` polls fd N (what the fd
/// is, and its socket's line in /proc/net when it is one)`. The `pollfd` array is in this
/// process's memory, on the stack of the thread that is blocked on it.
fn polled(syscall: &str) -> String {
    let mut f = syscall.split_whitespace();
    if !cfg!(target_arch = "x86_64") || f.next() != Some("7") {
        return String::new();
    }
    let Some(ptr) = f
        .next()
        .and_then(|a| usize::from_str_radix(a.trim_start_matches("0x"), 16).ok())
        .filter(|p| *p != 0 && p % 4 == 0)
    else {
        return String::new();
    };
    // SAFETY: the address is the first argument of a poll(2) this process's thread is blocked
    // in: a live `struct pollfd` (its `int fd` first) for as long as the call lasts.
    let fd = unsafe { std::ptr::read_volatile(ptr as *const i32) };
    let what = std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|l| l.display().to_string())
        .unwrap_or_default();
    let inode = what
        .strip_prefix("socket:[")
        .and_then(|r| r.strip_suffix(']'));
    let line = inode
        .and_then(|ino| {
            ["tcp", "udp", "tcp6", "udp6", "unix", "packet", "raw"]
                .iter()
                .find_map(|t| {
                    let table = std::fs::read_to_string(format!("/proc/net/{t}")).ok()?;
                    let l = table
                        .lines()
                        .find(|l| l.split_whitespace().any(|w| w == ino))?;
                    Some(format!(" /proc/net/{t}: {}", l.trim()))
                })
        })
        .unwrap_or_default();
    format!(" polls fd {fd} ({what}){line}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_kernel_rng_is_ready() {
        assert!(kernel_rng_ready());
    }

    /// Every thread is listed with its name, and a thread asleep says where.
    #[test]
    fn threads_lists_each_thread_and_its_wait() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let sleeper = std::thread::Builder::new()
            .name("stall-sleeper".into())
            .spawn(move || {
                let _ = rx.recv();
            })
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let me = std::fs::read_to_string("/proc/thread-self/comm").unwrap();
        let t = threads();
        assert!(t.contains(me.trim()), "{t}");
        let line = t
            .split("; ")
            .find(|l| l.starts_with("stall-sleeper"))
            .unwrap();
        // Blocked on the channel: a futex wait, syscall 202 on x86-64.
        assert!(line.contains("futex"), "{line}");
        drop(tx);
        sleeper.join().unwrap();
    }

    /// A thread blocked in poll(2) on a UDP socket: the watchdog names the fd and its socket.
    #[test]
    fn a_thread_in_poll_names_its_socket() {
        use std::os::fd::AsRawFd;
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        let fd = sock.as_raw_fd();
        let poller = std::thread::Builder::new()
            .name("stall-poller".into())
            .spawn(move || {
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut p, 1, 10_000) };
            })
            .unwrap();
        let t = std::time::Instant::now();
        let line = loop {
            let all = threads();
            let line = all
                .split("; ")
                .find(|l| l.starts_with("stall-poller") && l.contains("polls"))
                .map(str::to_string);
            if let Some(l) = line {
                break l;
            }
            assert!(t.elapsed() < Duration::from_secs(5), "{all}");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(line.contains(&format!("polls fd {fd} (socket:[")), "{line}");
        // /proc/net/udp shows the local port in hex.
        assert!(line.contains(&format!(":{port:04X}")), "{line}");
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .send_to(b"x", ("127.0.0.1", port))
            .unwrap();
        poller.join().unwrap();
    }
}
