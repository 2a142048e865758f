//! End-to-end TFTP tests: the real `seed netboot` in a server namespace, real clients (curl,
//! atftp, bash's /dev/udp for malformed packets) in a client namespace, counters read from the
//! same process's HTTP `/metrics`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};
use tests::netns::Lan;
use tests::proc::Child;

const HTTP_PORT: u16 = 8080;

/// A running `seed netboot` with TFTP (and HTTP for `/metrics`) on a fresh LAN.
struct Server {
    lan: Lan,
    _seed: Child,
    dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Self {
        let lan = Lan::new(None);
        lan.address_client(2);
        let dir = tempfile::tempdir().unwrap();
        let (tftp_root, http_root) = (dir.path().join("tftp"), dir.path().join("http"));
        std::fs::create_dir_all(&tftp_root).unwrap();
        std::fs::create_dir_all(&http_root).unwrap();
        let config = format!(
            "interface = {if:?}\nserver_ip = \"{ip}\"\nstate_dir = {state:?}\n\n\
             [tftp]\nroot = {tftp:?}\nport = 69\n\n[http]\nroot = {http:?}\nport = {HTTP_PORT}\n",
            if = lan.server_if,
            ip = lan.server_ip(),
            state = dir.path().join("state"),
            tftp = tftp_root,
            http = http_root,
        );
        let cfg_path = dir.path().join("netboot.toml");
        std::fs::write(&cfg_path, config).unwrap();
        let seed = tests::spawn_netboot(
            &lan.server,
            &cfg_path,
            &["TFTP listening", "HTTP listening"],
            Duration::from_secs(120),
        );
        Self {
            lan,
            _seed: seed,
            dir,
        }
    }

    fn tftp_root(&self) -> PathBuf {
        self.dir.path().join("tftp")
    }

    fn ip(&self) -> String {
        self.lan.server_ip().to_string()
    }

    /// Run a program in the client namespace.
    fn client(&self, program: &str, args: &[&str]) -> Output {
        let bin = tests::require(program);
        self.lan
            .client
            .cmd(bin)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {program}: {e}"))
    }

    /// A counter from the server's `/metrics`.
    fn metric(&self, name: &str) -> u64 {
        let url = format!("http://{}:{HTTP_PORT}/metrics", self.ip());
        let out = self.client("curl", &["-sS", "--max-time", "10", &url]);
        assert!(out.status.success(), "metrics: {out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .map_or(0, |v| v.trim().parse().unwrap())
    }

    /// Poll `/metrics` (bounded) until `name` reaches `want`; returns the last value seen.
    fn metric_reaches(&self, name: &str, want: u64) -> u64 {
        let mut v = 0;
        for _ in 0..50 {
            v = self.metric(name);
            if v >= want {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        v
    }
}

fn random_file(path: &Path, len: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(len);
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .take(len as u64)
        .read_to_end(&mut data)
        .unwrap();
    std::fs::write(path, &data).unwrap();
    data
}

/// Print a transfer's throughput: information for the reader, never asserted.
fn report(what: &str, start: Instant, len: usize) {
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "{what}: {len} bytes in {secs:.2} s ({:.1} MiB/s)",
        len as f64 / secs / (1 << 20) as f64
    );
}

fn assert_same(got: &Path, want: &[u8], what: &str) {
    let got = std::fs::read(got).unwrap_or_else(|e| panic!("{what}: no output file: {e}"));
    assert_eq!(got.len(), want.len(), "{what}: length differs");
    assert!(got == want, "{what}: content differs");
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn tftp_big_file_with_curl_and_atftp_windowed_and_lockstep() {
    let srv = Server::start();
    let data = random_file(&srv.tftp_root().join("big.bin"), 32 << 20);
    let out_dir = tempfile::tempdir().unwrap();
    let ip = srv.ip();

    // curl with a negotiated block size (OACK path).
    let out = out_dir.path().join("curl-1428");
    let t = Instant::now();
    let o = srv.client(
        "curl",
        &[
            "-sS",
            "--max-time",
            "300",
            "--tftp-blksize",
            "1428",
            "-o",
            out.to_str().unwrap(),
            &format!("tftp://{ip}/big.bin"),
        ],
    );
    ok(&o, "curl blksize 1428");
    report("curl blksize 1428", t, data.len());
    assert_same(&out, &data, "curl blksize 1428");

    // atftp with a 16-block window (RFC 7440).
    let out = out_dir.path().join("atftp-w16");
    let t = Instant::now();
    let o = srv.client(
        "atftp",
        &[
            "--option",
            "blksize 1428",
            "--option",
            "windowsize 16",
            "-g",
            "-r",
            "big.bin",
            "-l",
            out.to_str().unwrap(),
            &ip,
        ],
    );
    ok(&o, "atftp windowsize 16");
    report("atftp blksize 1428 windowsize 16", t, data.len());
    assert_same(&out, &data, "atftp windowsize 16");

    // Plain RFC 1350: 512-byte lockstep, no options; 65537 blocks, so the block number rolls over.
    let out = out_dir.path().join("curl-512");
    let t = Instant::now();
    let o = srv.client(
        "curl",
        &[
            "-sS",
            "--max-time",
            "300",
            "--tftp-no-options",
            "-o",
            out.to_str().unwrap(),
            &format!("tftp://{ip}/big.bin"),
        ],
    );
    ok(&o, "curl lockstep 512");
    report("curl lockstep 512", t, data.len());
    assert_same(&out, &data, "curl lockstep 512");

    assert_eq!(srv.metric_reaches("tftp_transfers_completed_total", 3), 3);
    assert_eq!(srv.metric("tftp_transfers_failed_total"), 0);
    assert!(srv.metric("tftp_bytes_sent_total") >= 3 * data.len() as u64);
}

#[test]
fn tftp_concurrent_transfers_each_on_their_own_socket() {
    let srv = Server::start();
    let data = random_file(&srv.tftp_root().join("mid.bin"), 3 << 20);
    let out_dir = tempfile::tempdir().unwrap();
    let curl = tests::require("curl");
    let children: Vec<_> = (0..8)
        .map(|i| {
            let out = out_dir.path().join(format!("out{i}"));
            let mut cmd = srv.lan.client.cmd(&curl);
            cmd.args(["-sS", "--max-time", "120", "--tftp-blksize", "1024", "-o"])
                .arg(&out)
                .arg(format!("tftp://{}/mid.bin", srv.ip()));
            (out, cmd.spawn().unwrap())
        })
        .collect();
    for (i, (out, mut child)) in children.into_iter().enumerate() {
        assert!(child.wait().unwrap().success(), "curl #{i} failed");
        assert_same(&out, &data, &format!("curl #{i}"));
    }
    assert_eq!(srv.metric_reaches("tftp_transfers_completed_total", 8), 8);
}

#[test]
fn tftp_refuses_escapes_writes_and_missing_files() {
    let srv = Server::start();
    let ip = srv.ip();
    let secret = srv.dir.path().join("secret.txt");
    std::fs::write(&secret, "TOP SECRET\n").unwrap();
    std::os::unix::fs::symlink(&secret, srv.tftp_root().join("link-out")).unwrap();
    std::fs::write(srv.tftp_root().join("ok.txt"), "fine\n").unwrap();
    let out_dir = tempfile::tempdir().unwrap();

    let refused = |name: &str, out_name: &str| {
        let out = out_dir.path().join(out_name);
        // atftp sends the name verbatim.
        let o = srv.client(
            "atftp",
            &["-g", "-r", name, "-l", out.to_str().unwrap(), &ip],
        );
        assert!(!o.status.success(), "atftp {name} succeeded: {o:?}");
        let got = std::fs::read_to_string(&out).unwrap_or_default();
        assert!(!got.contains("SECRET"), "{name} was served");
        // curl keeps `..` with --path-as-is.
        let out = out_dir.path().join(format!("{out_name}.curl"));
        let o = srv.client(
            "curl",
            &[
                "-sS",
                "--max-time",
                "30",
                "--path-as-is",
                "-o",
                out.to_str().unwrap(),
                &format!("tftp://{ip}/{name}"),
            ],
        );
        assert!(!o.status.success(), "curl {name} succeeded: {o:?}");
        let got = std::fs::read_to_string(&out).unwrap_or_default();
        assert!(!got.contains("SECRET"), "{name} was served to curl");
    };
    refused("../secret.txt", "dotdot");
    refused("sub/../../secret.txt", "dotdot2");
    refused(secret.to_str().unwrap(), "absolute");
    refused("link-out", "symlink");
    refused("missing.bin", "missing");

    // A write request is refused and creates nothing.
    let local = out_dir.path().join("upload");
    std::fs::write(&local, "data").unwrap();
    let o = srv.client(
        "atftp",
        &["-p", "-l", local.to_str().unwrap(), "-r", "new.bin", &ip],
    );
    assert!(!o.status.success(), "WRQ succeeded: {o:?}");
    assert!(!srv.tftp_root().join("new.bin").exists());

    // 5 names × 2 clients + 1 WRQ, and nothing started.
    assert_eq!(srv.metric_reaches("tftp_requests_refused_total", 11), 11);
    assert_eq!(srv.metric("tftp_transfers_started_total"), 0);

    // The service still serves good requests.
    let out = out_dir.path().join("ok");
    let o = srv.client(
        "atftp",
        &["-g", "-r", "ok.txt", "-l", out.to_str().unwrap(), &ip],
    );
    ok(&o, "atftp ok.txt");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "fine\n");
}

#[test]
fn tftp_malformed_packets_are_counted_and_service_survives() {
    let srv = Server::start();
    let ip = srv.ip();
    let data = random_file(&srv.tftp_root().join("after.bin"), 100_000);
    // Each printf is one write, so one datagram, to the request port.
    let packets = [
        r"\x00",                                               // truncated opcode
        r"\x00\x09abc\x00octet\x00",                           // opcode 9
        r"\x00\x01after.bin\x00octet\x00blksize\x001\x00",     // absurd blksize: error 8
        r"\x00\x01after.bin\x00octet\x00blksize\x00",          // option without value: error 4
        r"\x00\x01after.bin\x00octet\x00windowsize\x00-5\x00", // absurd windowsize: error 8
        r"\x00\x04\x00\x01",                                   // ACK to the request port
    ];
    let script: String = packets
        .iter()
        .map(|p| format!("printf '{p}' > /dev/udp/{ip}/69\n"))
        .collect();
    let o = srv.client("bash", &["-c", &script]);
    ok(&o, "bash /dev/udp sender");
    assert_eq!(srv.metric_reaches("tftp_dropped_total", 6), 6);
    assert_eq!(srv.metric("tftp_transfers_started_total"), 0);

    // A good transfer right after.
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("after");
    let o = srv.client(
        "curl",
        &[
            "-sS",
            "--max-time",
            "60",
            "--tftp-blksize",
            "1400",
            "-o",
            out.to_str().unwrap(),
            &format!("tftp://{ip}/after.bin"),
        ],
    );
    ok(&o, "curl after garbage");
    assert_same(&out, &data, "curl after garbage");
    assert_eq!(srv.metric_reaches("tftp_transfers_completed_total", 1), 1);
    assert_eq!(srv.metric("tftp_dropped_total"), 6);
}
