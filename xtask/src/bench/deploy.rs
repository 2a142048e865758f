//! `cargo xtask bench deploy [--nodes 1,4] [--uefi]`: power-off → active under TCG, beside the
//! floor, and the image-write path alone beside `curl | zstd -d | tar -x`.
//!
//! 1. For each N: a fresh `seed lab up --nodes N --seed --detach` (own directory, free BMC and
//!    API ports; destroyed by a guard, also on error), then for every node in parallel `seed node
//!    inspect --wait` and `seed node deploy --image tiny --wait`: per node, deploy alone (the
//!    node is off after inspection → active) and inspect + deploy; and the wall time for all N.
//! 2. The floor: the tiny image's own kernel and initrd booted with `qemu-system-x86_64 -kernel
//!    -initrd` (TCG, the lab's machine and memory), timed to the kernel's "Run /init" and to the
//!    initrd's first line on the serial console.
//! 3. The image write: the tiny stream served on 127.0.0.1 by a small HTTP server here, written
//!    by the agent's own code (`ureq` → [`ramdisk::agent::deploy::stream::write`]: sha256, zstd,
//!    tar) into a temp dir, beside `curl -s URL | zstd -d | tar -x -C DIR`; median MB/s.
//!
//! The end-to-end rows are held against TripleO's stated 6 minutes power-off → working machine.
//! Measured on the shared 2-core dev machine (load ~6, TCG, SeaBIOS, `--nodes 1,4`): floor 7.4 s
//! to "Run /init", 8.7 s to the initrd's line; 1 node power-off → active 43 s (62 s with
//! inspection); 4 nodes 77/79 s median/max (124 s wall with inspection); stream write ~110 MB/s
//! for the agent's code and for curl | zstd | tar alike.

use super::{print_table, Progress, Row};
use anyhow::{bail, ensure, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// TripleO's stated power-off → working machine figure.
const TRIPLEO_SECS: f64 = 360.0;
const TOKEN: &str = "bench-token-x";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Lab sizes to run, one fresh lab each (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    nodes: Vec<usize>,
    /// UEFI (OVMF) nodes and floor instead of SeaBIOS.
    #[arg(long)]
    uefi: bool,
    /// Repetitions of each image-write measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Give up on one lab's inspect + deploy after this many seconds.
    #[arg(long, default_value_t = 1500)]
    timeout_secs: u64,
}

pub fn run(a: Args) -> Result<()> {
    ensure!(!a.nodes.is_empty(), "--nodes: at least one lab size");
    ensure!(a.reps > 0, "--reps: at least 1");
    for tool in ["qemu-system-x86_64", "curl", "zstd", "tar"] {
        ensure!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()?
                .success(),
            "{tool} is needed (cargo xtask deps)"
        );
    }
    let p = Progress::new();
    let root = crate::root();
    let ramdisk = root.join("target/ramdisk");
    let images = root.join("target/images");
    let tiny = images.join("tiny");
    if !ramdisk.join("vmlinuz").is_file() {
        p.say("building the ramdisk");
        crate::ramdisk::run(crate::ramdisk::Args {
            out: "target/ramdisk".into(),
        })?;
    }
    if !tiny.join("manifest.json").is_file() {
        p.say("building the tiny image");
        crate::image::build("tiny", &tiny)?;
    }
    crate::run(crate::cargo().args(["build", "--quiet", "-p", "seed", "--bin", "seed"]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let seed = target.join("debug").join("seed");
    let manifest: images::Manifest = serde_json::from_slice(
        &std::fs::read(tiny.join("manifest.json")).context("reading the tiny manifest")?,
    )
    .context("parsing the tiny manifest")?;
    let stream = tiny.join(&manifest.stream.file);

    let mut rows = Vec::new();

    p.say("floor: the tiny image's kernel + initrd with qemu -kernel");
    let floor = floor(&stream, a.uefi, &p)?;
    rows.push(Row {
        metric: "floor: qemu -kernel → kernel's Run /init [s]".into(),
        seed: "-".into(),
        peer: format!("{:.1}", floor.run_init),
        target: "-".into(),
        met: "-".into(),
    });
    rows.push(Row {
        metric: "floor: qemu -kernel → initrd's first line [s]".into(),
        seed: "-".into(),
        peer: format!("{:.1}", floor.initrd),
        target: "-".into(),
        met: "-".into(),
    });

    for &n in &a.nodes {
        p.say(format!("lab of {n} node(s): inspect, then deploy tiny"));
        let r = end_to_end(&seed, &ramdisk, &images, n, a.uefi, a.timeout_secs, &p)
            .with_context(|| format!("the {n}-node lab"))?;
        let max = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
        let med = |v: &[f64]| median(v.to_vec());
        let target = format!("≤ {TRIPLEO_SECS:.0} (TripleO)");
        let met = |s: f64| if s <= TRIPLEO_SECS { "yes" } else { "no" }.to_string();
        rows.push(Row {
            metric: format!("{n} node(s): power-off → active per node, median/max [s]"),
            seed: format!("{:.1}/{:.1}", med(&r.deploy), max(&r.deploy)),
            peer: format!("{:.1} (floor)", floor.initrd),
            target: target.clone(),
            met: met(max(&r.deploy)),
        });
        rows.push(Row {
            metric: format!("{n} node(s): inspect + deploy per node, median/max [s]"),
            seed: format!("{:.1}/{:.1}", med(&r.total), max(&r.total)),
            peer: "-".into(),
            target: target.clone(),
            met: met(max(&r.total)),
        });
        rows.push(Row {
            metric: format!("{n} node(s): wall time, all active (incl. inspect) [s]"),
            seed: format!("{:.1}", r.wall),
            peer: "-".into(),
            target,
            met: met(r.wall),
        });
    }

    p.say(format!(
        "image write: {} ({} bytes), {} repetitions each",
        stream.display(),
        manifest.stream.size,
        a.reps
    ));
    let (agent, curl) = write_path(&stream, &manifest.stream.sha256, a.reps, &p)?;
    rows.push(Row {
        metric: "image write HTTP → sha256 → zstd → tar, median [MB/s of stream]".into(),
        seed: format!("{agent:.1}"),
        peer: format!("{curl:.1} (curl|zstd|tar)"),
        target: "-".into(),
        met: "-".into(),
    });

    println!();
    print_table(&rows);
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

// ---- 1. end to end ----

/// A detached lab; `seed lab destroy` when dropped (powers the nodes off, stops the BMCs and
/// the seed, removes the directory).
struct LabGuard {
    seed: PathBuf,
    dir: PathBuf,
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        let _ = Command::new(&self.seed)
            .args(["lab", "destroy", "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct EndToEnd {
    /// Per node: deploy request (node off after inspection) → active, seconds.
    deploy: Vec<f64>,
    /// Per node: inspect request → active, seconds.
    total: Vec<f64>,
    /// All nodes: first inspect request → last active, seconds.
    wall: f64,
}

fn end_to_end(
    seed: &Path,
    ramdisk: &Path,
    images: &Path,
    n: usize,
    uefi: bool,
    timeout: u64,
    p: &Progress,
) -> Result<EndToEnd> {
    ensure!(n > 0, "a lab needs at least one node");
    let base = tempfile::Builder::new()
        .prefix("bench-deploy-")
        .tempdir()
        .context("creating the lab's directory")?;
    let dir = base.path().join("lab");
    let name = format!("bench-deploy-{n}");
    let api_port = free_port()?;
    let mut up = Command::new(seed);
    up.args(["lab", "up", "--name", &name, "--dir"])
        .arg(&dir)
        .args(["--nodes", &n.to_string(), "--bmc-port", "0", "--seed"])
        .args(["--api-port", &api_port.to_string(), "--token", TOKEN])
        .arg("--ramdisk")
        .arg(ramdisk)
        .arg("--images")
        .arg(images)
        .arg("--detach");
    if uefi {
        up.arg("--uefi");
    }
    let _guard = LabGuard {
        seed: seed.to_path_buf(),
        dir: dir.clone(),
    };
    let out = up.output().context("running seed lab up")?;
    ensure!(
        out.status.success(),
        "seed lab up failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    p.say(format!(
        "lab up in {}, API on 127.0.0.1:{api_port}",
        dir.display()
    ));
    let api = format!("http://127.0.0.1:{api_port}");
    let nodes: Vec<String> = (1..=n).map(|i| format!("node{i}")).collect();
    // The daemon starts after the lab: wait until it answers for every node.
    let deadline = Instant::now() + Duration::from_secs(120);
    let client = seed::cli::client::Client::new(&api, Some(TOKEN), None)?;
    for node in &nodes {
        let path = format!("/v1/nodes/{node}");
        while client.get::<serde_json::Value>(&path).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "the seed's API did not answer for {node} within 120 s; {}",
                    log_tail(&dir.join("server.log"))
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let start = Instant::now();
    let results: Vec<Result<(f64, f64)>> = std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|node| {
                let api = &api;
                s.spawn(move || -> Result<(f64, f64)> {
                    let t0 = Instant::now();
                    seed_cli(
                        seed,
                        &["node", "inspect", node, "--wait", &timeout.to_string()],
                        api,
                    )?;
                    let t1 = Instant::now();
                    p.say(format!(
                        "{node}: inspected in {:.1} s",
                        (t1 - t0).as_secs_f64()
                    ));
                    let left = timeout.saturating_sub(t0.elapsed().as_secs()).max(1);
                    seed_cli(
                        seed,
                        &[
                            "node",
                            "deploy",
                            node,
                            "--image",
                            "tiny",
                            "--wait",
                            &left.to_string(),
                        ],
                        api,
                    )?;
                    let t2 = Instant::now();
                    p.say(format!(
                        "{node}: deployed (active) in {:.1} s",
                        (t2 - t1).as_secs_f64()
                    ));
                    Ok(((t2 - t1).as_secs_f64(), (t2 - t0).as_secs_f64()))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| bail!("a node's thread panicked"))
            })
            .collect()
    });
    let wall = start.elapsed().as_secs_f64();
    let mut deploy = Vec::new();
    let mut total = Vec::new();
    let mut errors = Vec::new();
    for (node, r) in nodes.iter().zip(results) {
        match r {
            Ok((d, t)) => {
                deploy.push(d);
                total.push(t);
            }
            Err(e) => errors.push(format!("{node}: {e:#}")),
        }
    }
    if !errors.is_empty() {
        bail!(
            "{}\n{}",
            errors.join("\n"),
            log_tail(&dir.join("server.log"))
        );
    }
    Ok(EndToEnd {
        deploy,
        total,
        wall,
    })
}

/// Run `seed ARGS --api API --token TOKEN`; its output becomes the error when it fails.
fn seed_cli(seed: &Path, args: &[&str], api: &str) -> Result<()> {
    let out = Command::new(seed)
        .args(args)
        .args(["--api", api, "--token", TOKEN])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running seed {}", args.join(" ")))?;
    ensure!(
        out.status.success(),
        "seed {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

fn log_tail(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    format!(
        "last lines of {}:\n{}",
        path.display(),
        lines[lines.len().saturating_sub(30)..].join("\n")
    )
}

// ---- 2. the floor ----

struct Floor {
    run_init: f64,
    initrd: f64,
}

/// Boot the image's kernel + initrd straight from QEMU, no root= given: the initrd's first line
/// is its "no root=" complaint, the earliest thing the image itself prints.
fn floor(stream: &Path, uefi: bool, p: &Progress) -> Result<Floor> {
    let tmp = tempfile::tempdir()?;
    let status = Command::new("sh")
        .arg("-c")
        .arg("zstd -dc \"$1\" | tar -x -C \"$2\" boot/vmlinuz boot/initrd.img")
        .arg("sh")
        .arg(stream)
        .arg(tmp.path())
        .status()
        .context("unpacking the kernel and initrd")?;
    ensure!(
        status.success(),
        "unpacking boot/ from {}",
        stream.display()
    );
    let boot = tmp.path().join("boot");
    let mut cmd = Command::new("qemu-system-x86_64");
    if uefi {
        cmd.args(["-machine", "q35", "-bios", "/usr/share/ovmf/OVMF.fd"]);
    } else {
        cmd.args(["-machine", "pc"]);
    }
    cmd.args(["-accel", "tcg", "-m", "512", "-smp", "1"])
        .args(["-display", "none", "-nodefaults", "-serial", "stdio"])
        .arg("-kernel")
        .arg(boot.join("vmlinuz"))
        .arg("-initrd")
        .arg(boot.join("initrd.img"))
        .args(["-append", "console=ttyS0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let start = Instant::now();
    let mut child = cmd.spawn().context("starting qemu-system-x86_64")?;
    let stdout = child.stdout.take().context("qemu's stdout")?;
    // Kill QEMU after 300 s even if it never prints: the reader below then sees EOF.
    let done = Arc::new(AtomicBool::new(false));
    let pid = child.id();
    let watchdog = {
        let done = done.clone();
        std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(300);
            while !done.load(Ordering::Relaxed) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(100));
            }
            if !done.load(Ordering::Relaxed) {
                // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        })
    };
    let mut run_init = None;
    let mut initrd = None;
    for line in BufReader::new(stdout).split(b'\n') {
        let Ok(line) = line else { break };
        let line = String::from_utf8_lossy(&line);
        if run_init.is_none() && line.contains("Run /init") {
            run_init = Some(start.elapsed().as_secs_f64());
        }
        if line.contains("seed-initrd:") {
            initrd = Some(start.elapsed().as_secs_f64());
            break;
        }
    }
    done.store(true, Ordering::Relaxed);
    let _ = child.kill();
    let _ = child.wait();
    let _ = watchdog.join();
    let (Some(run_init), Some(initrd)) = (run_init, initrd) else {
        bail!("the floor boot printed neither \"Run /init\" nor the initrd's line within 300 s");
    };
    p.say(format!(
        "floor: Run /init at {run_init:.1} s, initrd's first line at {initrd:.1} s"
    ));
    Ok(Floor { run_init, initrd })
}

// ---- 3. the image write ----

/// Serve `file` to every GET on 127.0.0.1 until dropped. Hand-written (a dozen lines): xtask has
/// no HTTP server crate, and the same plain server feeds both the agent's code and curl.
struct FileServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FileServer {
    fn start(file: &Path) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let file = file.to_path_buf();
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let _ = serve(s, &file);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Self {
            port,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(s: TcpStream, file: &Path) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let mut f = std::fs::File::open(file)?;
    let len = f.metadata()?.len();
    let mut w = std::io::BufWriter::with_capacity(1 << 16, s);
    write!(
        w,
        "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nContent-Type: application/zstd\r\nConnection: close\r\n\r\n"
    )?;
    std::io::copy(&mut f, &mut w)?;
    w.flush()
}

/// Median MB/s (stream bytes) of the agent's write path and of curl | zstd -d | tar -x.
fn write_path(stream: &Path, sha256: &str, reps: usize, p: &Progress) -> Result<(f64, f64)> {
    let size = std::fs::metadata(stream)?.len() as f64;
    let server = FileServer::start(stream)?;
    let url = format!("http://127.0.0.1:{}/rootfs.tar.zst", server.port);
    let mut agent = Vec::new();
    let mut curl = Vec::new();
    for i in 0..reps {
        // The agent's path, with the same client settings as the agent.
        let dir = tempfile::tempdir()?;
        let start = Instant::now();
        let resp = ramdisk::agent::deploy::stream_agent()
            .get(&url)
            .call()
            .context("fetching the stream")?;
        let w = ramdisk::agent::deploy::stream::write(
            resp.into_body().into_reader(),
            dir.path(),
            sha256,
            size as u64,
            Duration::from_secs(1),
            &mut |_| {},
        )
        .context("the agent's stream write")?;
        let secs = start.elapsed().as_secs_f64();
        ensure!(w.entries > 0, "the agent's write unpacked nothing");
        agent.push(size / secs / 1e6);
        drop(dir);

        let dir = tempfile::tempdir()?;
        let start = Instant::now();
        let status = Command::new("bash")
            .arg("-c")
            .arg("set -o pipefail; curl -sf \"$1\" | zstd -dq | tar -x -C \"$2\"")
            .arg("bash")
            .arg(&url)
            .arg(dir.path())
            .status()
            .context("running curl | zstd -d | tar -x")?;
        let secs = start.elapsed().as_secs_f64();
        ensure!(status.success(), "curl | zstd -d | tar -x failed");
        ensure!(
            std::fs::read_dir(dir.path())?.next().is_some(),
            "curl | zstd | tar unpacked nothing"
        );
        curl.push(size / secs / 1e6);
        p.say(format!(
            "write {}: agent {:.1} MB/s, curl|zstd|tar {:.1} MB/s",
            i + 1,
            agent[i],
            curl[i]
        ));
    }
    drop(server);
    Ok((median(agent), median(curl)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn file_server_serves_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x");
        let body: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        std::fs::write(&f, &body).unwrap();
        let server = FileServer::start(&f).unwrap();
        let got = ureq::get(&format!("http://127.0.0.1:{}/x", server.port))
            .call()
            .unwrap();
        let mut out = Vec::new();
        got.into_body().into_reader().read_to_end(&mut out).unwrap();
        assert_eq!(out, body);
    }
}
