//! A userspace L2 "delay link": two TAP devices, one in each namespace, and per direction a reader
//! thread that timestamps each frame and a writer thread that releases it `delay` later, in order.
//!
//! The lab kernels have no `netem`, so this is how the bench gives TFTP a real LAN's round trip.
//! The queue between reader and writer is bounded; a frame that finds it full is dropped and
//! counted, like a switch port would. Writers run with a 1 ns timer slack so the hold is close to
//! `delay`; the measured mean hold is reported, not assumed.

use anyhow::{anyhow, Context, Result};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// `_IOW('T', 202, int)` from <linux/if_tun.h>; libc does not export it.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// Frames in flight per direction before the link drops (a 250 µs hold at 1 Gbit/s is ~21).
const QUEUE: usize = 4096;
/// How often idle threads look at the stop flag.
const TICK: Duration = Duration::from_millis(100);

/// Create TAP `ifname` inside namespace `netns` and return its file descriptor. The device is
/// created by a short-lived thread that entered the namespace, so it never exists in the host's.
pub fn open_tap_in(netns: &str, ifname: &str) -> Result<OwnedFd> {
    let path = format!("/var/run/netns/{netns}");
    let name = ifname.to_owned();
    std::thread::spawn(move || -> Result<OwnedFd> {
        let ns = File::open(&path).with_context(|| format!("opening {path}"))?;
        // SAFETY: setns(2) on a valid fd; it changes only this thread's network namespace, and
        // this thread ends right after opening the TAP.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error()).context("setns into the namespace");
        }
        let tun = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .context("opening /dev/net/tun")?;
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in ifr.ifr_name.iter_mut().zip(name.as_bytes()) {
            *d = *s as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `ifr` is.
        if unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF as _, &mut ifr) } < 0 {
            return Err(std::io::Error::last_os_error()).context("TUNSETIFF");
        }
        Ok(tun.into())
    })
    .join()
    .map_err(|_| anyhow!("the TAP thread panicked"))?
    .with_context(|| format!("creating TAP {ifname} in {netns}"))
}

/// Counters of one link, both directions together.
#[derive(Default)]
struct Stats {
    frames: AtomicU64,
    dropped: AtomicU64,
    /// Sum of (written − read) in ns.
    held_ns: AtomicU64,
}

/// The running link. Dropping it stops and joins the threads and closes the TAPs.
pub struct DelayLink {
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    threads: Vec<JoinHandle<()>>,
}

impl DelayLink {
    pub fn start(a: OwnedFd, b: OwnedFd, delay: Duration) -> Result<Self> {
        let (a, b) = (Arc::new(File::from(a)), Arc::new(File::from(b)));
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let mut threads = Vec::new();
        for (from, to, dir) in [(a.clone(), b.clone(), "s>c"), (b, a, "c>s")] {
            let (tx, rx) = sync_channel::<(Instant, Vec<u8>)>(QUEUE);
            let (st, sx) = (stop.clone(), stats.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("delay-rd {dir}"))
                    .spawn(move || {
                        let mut buf = vec![0u8; 65536];
                        while !st.load(Ordering::Relaxed) {
                            if !readable(&from, TICK) {
                                continue;
                            }
                            let n = match (&*from).read(&mut buf) {
                                Ok(n) => n,
                                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                                Err(_) => break,
                            };
                            match tx.try_send((Instant::now(), buf[..n].to_vec())) {
                                Ok(()) => {}
                                Err(TrySendError::Full(_)) => {
                                    sx.dropped.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(TrySendError::Disconnected(_)) => break,
                            }
                        }
                    })?,
            );
            let (st, sx) = (stop.clone(), stats.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("delay-wr {dir}"))
                    .spawn(move || {
                        // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's timer slack.
                        unsafe {
                            libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
                        }
                        loop {
                            match rx.recv_timeout(TICK) {
                                Ok((read_at, frame)) => {
                                    hold_until(read_at + delay);
                                    let _ = (&*to).write(&frame);
                                    sx.frames.fetch_add(1, Ordering::Relaxed);
                                    sx.held_ns.fetch_add(
                                        read_at.elapsed().as_nanos() as u64,
                                        Ordering::Relaxed,
                                    );
                                }
                                Err(RecvTimeoutError::Timeout) => {
                                    if st.load(Ordering::Relaxed) {
                                        break;
                                    }
                                }
                                Err(RecvTimeoutError::Disconnected) => break,
                            }
                        }
                    })?,
            );
        }
        Ok(Self {
            stop,
            stats,
            threads,
        })
    }

    /// Frames forwarded, frames dropped, mean hold per frame.
    pub fn stats(&self) -> (u64, u64, Duration) {
        let frames = self.stats.frames.load(Ordering::Relaxed);
        let held = self.stats.held_ns.load(Ordering::Relaxed);
        let mean = Duration::from_nanos(held.checked_div(frames).unwrap_or(0));
        (frames, self.stats.dropped.load(Ordering::Relaxed), mean)
    }
}

impl Drop for DelayLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Sleep until `due`, then yield until it has passed: a plain sleep wakes up tens of µs late,
/// which is a large error on a 250 µs hold. The yielding tail is short and gives the CPU away.
fn hold_until(due: Instant) {
    const SPIN: Duration = Duration::from_micros(60);
    let now = Instant::now();
    if due > now + SPIN {
        std::thread::sleep(due - now - SPIN);
    }
    while Instant::now() < due {
        std::thread::yield_now();
    }
}

/// poll(2) for input with a timeout.
fn readable(f: &File, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: f.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, count 1.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int) };
    n > 0 && pfd.revents & libc::POLLIN != 0
}
