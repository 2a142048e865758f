//! End-to-end TFTP tests: the real `seed netboot` in a server namespace, real clients (curl,
//! atftp, bash's /dev/udp for malformed packets) in a client namespace, counters read from the
//! same process's HTTP `/metrics`.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};
use tests::netboot_lan::{random_bytes, NetbootLan};

const HTTP_PORT: u16 = 8080;

/// A running `seed netboot` with TFTP (and HTTP for `/metrics`) on a fresh LAN.
fn start() -> NetbootLan {
    NetbootLan::start(
        &["tftp", "http"],
        &["TFTP listening", "HTTP listening"],
        |_, d| {
            format!(
                "[tftp]\nroot = {tftp:?}\nport = 69\n\n[http]\nroot = {http:?}\nport = {HTTP_PORT}\n",
                tftp = d.join("tftp"),
                http = d.join("http"),
            )
        },
    )
}

/// A counter from the server's `/metrics`.
fn metric(srv: &NetbootLan, name: &str) -> u64 {
    let url = format!("http://{}:{HTTP_PORT}/metrics", srv.ip());
    let out = srv.client("curl", &["-sS", "--max-time", "10", &url]);
    assert!(out.status.success(), "metrics: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// Poll `/metrics` (bounded) until `name` reaches `want`; returns the last value seen.
fn metric_reaches(srv: &NetbootLan, name: &str, want: u64) -> u64 {
    let mut v = 0;
    for _ in 0..50 {
        v = metric(srv, name);
        if v >= want {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    v
}

fn random_file(path: &Path, len: usize) -> Vec<u8> {
    let data = random_bytes(len);
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

/// Fetch a file into `out` with `program args` in the client namespace: it succeeds and `out`
/// holds `data` (the throughput is printed, not asserted).
fn fetch_same(srv: &NetbootLan, what: &str, program: &str, args: &[&str], out: &Path, data: &[u8]) {
    let t = Instant::now();
    let o = srv.client(program, args);
    ok(&o, what);
    report(what, t, data.len());
    assert_same(out, data, what);
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
    let srv = start();
    let data = random_file(&srv.path("tftp").join("big.bin"), 32 << 20);
    let out_dir = tempfile::tempdir().unwrap();
    let ip = srv.ip();

    // curl with a negotiated block size (OACK path).
    let out = out_dir.path().join("curl-1428");
    let url = format!("tftp://{ip}/big.bin");
    let args = ["-sS", "--max-time", "300", "--tftp-blksize", "1428", "-o"];
    let args = [&args[..], &[out.to_str().unwrap(), &url]].concat();
    fetch_same(&srv, "curl blksize 1428", "curl", &args, &out, &data);

    // atftp with a 16-block window (RFC 7440).
    let out = out_dir.path().join("atftp-w16");
    let args = [
        "--option",
        "blksize 1428",
        "--option",
        "windowsize 16",
        "-g",
    ];
    let args = [
        &args[..],
        &["-r", "big.bin", "-l", out.to_str().unwrap(), &ip],
    ]
    .concat();
    fetch_same(
        &srv,
        "atftp blksize 1428 windowsize 16",
        "atftp",
        &args,
        &out,
        &data,
    );

    // Plain RFC 1350: 512-byte lockstep, no options; 65537 blocks, so the block number rolls over.
    let out = out_dir.path().join("curl-512");
    let args = ["-sS", "--max-time", "300", "--tftp-no-options", "-o"];
    let args = [&args[..], &[out.to_str().unwrap(), &url]].concat();
    fetch_same(&srv, "curl lockstep 512", "curl", &args, &out, &data);

    assert_eq!(metric_reaches(&srv, "tftp_transfers_completed_total", 3), 3);
    assert_eq!(metric(&srv, "tftp_transfers_failed_total"), 0);
    assert!(metric(&srv, "tftp_bytes_sent_total") >= 3 * data.len() as u64);
}

#[test]
fn tftp_concurrent_transfers_each_on_their_own_socket() {
    let srv = start();
    let data = random_file(&srv.path("tftp").join("mid.bin"), 3 << 20);
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
    assert_eq!(metric_reaches(&srv, "tftp_transfers_completed_total", 8), 8);
}

#[test]
fn tftp_refuses_escapes_writes_and_missing_files() {
    let srv = start();
    let ip = srv.ip();
    let secret = srv.dir.path().join("secret.txt");
    std::fs::write(&secret, "TOP SECRET\n").unwrap();
    std::os::unix::fs::symlink(&secret, srv.path("tftp").join("link-out")).unwrap();
    std::fs::write(srv.path("tftp").join("ok.txt"), "fine\n").unwrap();
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
    assert!(!srv.path("tftp").join("new.bin").exists());

    // 5 names × 2 clients + 1 WRQ, and nothing started.
    assert_eq!(metric_reaches(&srv, "tftp_requests_refused_total", 11), 11);
    assert_eq!(metric(&srv, "tftp_transfers_started_total"), 0);

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
    let srv = start();
    let ip = srv.ip();
    let data = random_file(&srv.path("tftp").join("after.bin"), 100_000);
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
    assert_eq!(metric_reaches(&srv, "tftp_dropped_total", 6), 6);
    assert_eq!(metric(&srv, "tftp_transfers_started_total"), 0);

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
    assert_eq!(metric_reaches(&srv, "tftp_transfers_completed_total", 1), 1);
    assert_eq!(metric(&srv, "tftp_dropped_total"), 6);
}
