//! End-to-end HTTP boot tests: the real `seed netboot` in a server namespace, curl in a client
//! namespace: streamed files, ranges, HEAD, keep-alive, per-node iPXE scripts, traversal.

use std::io::Read;
use std::process::Output;
use std::time::Duration;
use tests::netboot_lan::{random_bytes, NetbootLan};

const PORT: u16 = 8080;
const NODE_MAC: &str = "52:54:00:00:00:01";

/// A running `seed netboot` with only `[http]` (and one known node) on a fresh LAN.
fn start() -> NetbootLan {
    NetbootLan::start(&["http"], &["HTTP listening"], |_, d| {
        format!(
            "[http]\nroot = {http:?}\nport = {PORT}\n\n\
             [[nodes]]\nmac = \"{NODE_MAC}\"\nhostname = \"node1\"\n\
             boot = {{ action = \"kernel\", kernel = \"boot/vmlinuz\", initrd = \"boot/initrd.img\", \
             cmdline = \"console=ttyS0\" }}\n\n\
             [[nodes]]\nmac = \"52:54:00:00:00:02\"\nboot = {{ action = \"local_disk\" }}\n",
            http = d.join("http"),
        )
    })
}

fn url(srv: &NetbootLan, path: &str) -> String {
    format!("http://{}:{PORT}{path}", srv.lan.server_ip())
}

/// curl in the client namespace.
fn curl(srv: &NetbootLan, args: &[&str]) -> Output {
    let args = [&["-sS", "--max-time", "60"][..], args].concat();
    srv.client("curl", &args)
}

/// GET with `--path-as-is`: (status, body).
fn get(srv: &NetbootLan, path: &str, extra: &[&str]) -> (u16, Vec<u8>) {
    let out_dir = tempfile::tempdir().unwrap();
    let body = out_dir.path().join("body");
    let url = url(srv, path);
    let mut args = vec![
        "--path-as-is",
        "-o",
        body.to_str().unwrap(),
        "-w",
        "%{http_code}",
    ];
    args.extend_from_slice(extra);
    args.push(&url);
    let o = curl(srv, &args);
    assert!(o.status.success(), "curl {path}: {o:?}");
    let code = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    (code, std::fs::read(&body).unwrap_or_default())
}

#[test]
fn http_files_ranges_head_and_keepalive() {
    let srv = start();
    let len = 24 << 20;
    let data = random_bytes(len);
    std::fs::create_dir_all(srv.path("http").join("images")).unwrap();
    std::fs::write(srv.path("http").join("images/disk.img"), &data).unwrap();
    std::fs::write(srv.path("http").join("small.txt"), "hello\n").unwrap();

    // The whole file, streamed.
    let (code, body) = get(&srv, "/images/disk.img", &[]);
    assert_eq!(code, 200);
    assert!(body == data, "full body differs (got {} bytes)", body.len());

    // Ranges: closed, suffix, open-ended.
    let (code, body) = get(&srv, "/images/disk.img", &["-r", "100-199"]);
    assert_eq!((code, body.as_slice()), (206, &data[100..200]));
    let (code, body) = get(&srv, "/images/disk.img", &["-H", "Range: bytes=-100"]);
    assert_eq!((code, body.as_slice()), (206, &data[len - 100..]));
    let (code, body) = get(&srv, "/images/disk.img", &["-r", "1000-"]);
    assert_eq!(code, 206);
    assert!(body == data[1000..], "open-ended range differs");
    let (code, _) = get(&srv, "/images/disk.img", &["-r", &format!("{len}-")]);
    assert_eq!(code, 416);

    // Content-Range on a partial response.
    let o = curl(
        &srv,
        &[
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-r",
            "100-199",
            &url(&srv, "/images/disk.img"),
        ],
    );
    let headers = String::from_utf8_lossy(&o.stdout).to_ascii_lowercase();
    assert!(
        headers.contains(&format!("content-range: bytes 100-199/{len}")),
        "{headers}"
    );
    assert!(headers.contains("content-length: 100\r\n"), "{headers}");

    // HEAD: the full length, a Last-Modified, no body.
    let o = curl(&srv, &["-I", &url(&srv, "/images/disk.img")]);
    let headers = String::from_utf8_lossy(&o.stdout).to_ascii_lowercase();
    assert!(headers.starts_with("http/1.1 200"), "{headers}");
    assert!(
        headers.contains(&format!("content-length: {len}\r\n")),
        "{headers}"
    );
    assert!(headers.contains("last-modified: "), "{headers}");
    assert!(headers.contains("accept-ranges: bytes"), "{headers}");

    // Keep-alive: two URLs in one invocation share the connection.
    let o = curl(
        &srv,
        &[
            "-v",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            &url(&srv, "/small.txt"),
            &url(&srv, "/images/disk.img"),
        ],
    );
    assert!(o.status.success(), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("Re-using existing connection"), "{err}");

    // Counters.
    let (_, metrics) = get(&srv, "/metrics", &[]);
    let metrics = String::from_utf8(metrics).unwrap();
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
            .parse()
            .unwrap()
    };
    // full + range + suffix + open + 416 + headers + HEAD + 2 keep-alive + this one.
    assert_eq!(value("http_requests_total"), 10);
    assert!(value("http_bytes_sent_total") >= 3 * len as u64 - 1000);

    // Conditional GET against Last-Modified.
    let (code, body) = get(
        &srv,
        "/small.txt",
        &["-H", "If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT"],
    );
    assert_eq!((code, body.len()), (304, 0));
    let (code, body) = get(
        &srv,
        "/small.txt",
        &["-H", "If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT"],
    );
    assert_eq!((code, body.as_slice()), (200, &b"hello\n"[..]));
}

#[test]
fn http_ipxe_scripts_metrics_and_traversal() {
    let srv = start();
    let ip = srv.lan.server_ip();
    let secret = srv.dir.path().join("secret.txt");
    std::fs::write(&secret, "TOP SECRET\n").unwrap();
    std::os::unix::fs::symlink(&secret, srv.path("http").join("link-out")).unwrap();
    std::fs::create_dir_all(srv.path("http").join("sub")).unwrap();

    // The known node's script: absolute URLs against the server.
    let (code, body) = get(&srv, "/ipxe/52-54-00-00-00-01", &[]);
    let script = String::from_utf8(body).unwrap();
    assert_eq!(code, 200);
    assert!(script.starts_with("#!ipxe\n"), "{script}");
    assert!(
        script.contains(&format!(
            "\nkernel http://{ip}:{PORT}/boot/vmlinuz initrd=initrd.img console=ttyS0 || goto retry\n"
        )),
        "{script}"
    );
    assert!(
        script.contains(&format!(
            "http://{ip}:{PORT}/boot/initrd.img || goto retry\n"
        )),
        "{script}"
    );
    assert!(script.contains("\nboot || goto retry\n"), "{script}");

    let (_, body) = get(&srv, "/ipxe/52-54-00-00-00-02", &[]);
    assert_eq!(
        String::from_utf8(body).unwrap(),
        "#!ipxe\nsanboot --no-describe --drive 0x80 || exit\n"
    );
    // Unknown MAC: a script that exits.
    let (code, body) = get(&srv, "/ipxe/52-54-00-99-99-99", &[]);
    let script = String::from_utf8(body).unwrap();
    assert_eq!(code, 200);
    assert!(
        script.ends_with("\nexit\n") && !script.contains("kernel"),
        "{script}"
    );
    // The generic chain script.
    let (_, body) = get(&srv, "/boot.ipxe", &[]);
    assert_eq!(
        String::from_utf8(body).unwrap(),
        format!("#!ipxe\nchain http://{ip}:{PORT}/ipxe/${{net0/mac:hexhyp}} || exit\n")
    );

    // Traversal in every spelling is refused, never served.
    for path in [
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/sub/..%2f..%2fsecret.txt",
        "/link-out",
    ] {
        let (code, body) = get(&srv, path, &[]);
        assert!(code == 403 || code == 404, "{path}: {code}");
        assert!(
            !String::from_utf8_lossy(&body).contains("SECRET"),
            "{path} served the secret"
        );
    }
    // The absolute path of the secret, relative to the root: not there.
    let (code, _) = get(&srv, &format!("/{}", secret.display()), &[]);
    assert_eq!(code, 404);
    let (code, _) = get(&srv, "/missing", &[]);
    assert_eq!(code, 404);
    let (code, _) = get(&srv, "/sub", &[]);
    assert_eq!(code, 404);
    let (code, _) = get(&srv, "/small.txt", &["-X", "POST"]);
    assert_eq!(code, 405);

    let (code, body) = get(&srv, "/metrics", &[]);
    assert_eq!(code, 200);
    let metrics = String::from_utf8(body).unwrap();
    assert!(
        metrics.contains("# TYPE http_requests_total counter\nhttp_requests_total 15\n"),
        "{metrics}"
    );
}

/// Issue 18, hole 5: a client that never finishes its headers is cut off (the header-read
/// timeout, 10 s), and past the connection cap (512) a new connection is closed at once while
/// the ones already open still get answers.
#[test]
fn http_slow_clients_and_connection_cap() {
    use std::io::Write;
    use std::net::{SocketAddr, TcpStream};
    let srv = start();
    let addr = SocketAddr::from((srv.lan.server_ip(), PORT));
    let client = srv.lan.client.name.clone();
    let outcome = std::thread::spawn(move || {
        tests::netns::enter(&client);
        // Slowloris: half a request, then nothing.
        let mut slow = TcpStream::connect(addr).unwrap();
        slow.write_all(b"GET /boot.ipxe HTTP/1.1\r\nHost: seed\r\n")
            .unwrap();
        slow.set_read_timeout(Some(Duration::from_secs(40)))
            .unwrap();
        let mut buf = [0u8; 1024];
        let cut = match slow.read(&mut buf) {
            Ok(_) => true,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        };
        // The cap: 511 more open (the slow one is closed by now), then one too many.
        let held: Vec<TcpStream> = (0..512)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        let mut extra = TcpStream::connect(addr).unwrap();
        extra
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let _ = extra.write_all(b"GET /boot.ipxe HTTP/1.1\r\nHost: seed\r\n\r\n");
        let refused = matches!(extra.read(&mut buf), Ok(0) | Err(_));
        // One already open is still served.
        let mut first = &held[0];
        first
            .write_all(b"GET /boot.ipxe HTTP/1.1\r\nHost: seed\r\n\r\n")
            .unwrap();
        first
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let n = first.read(&mut buf).unwrap_or(0);
        let served = String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200");
        (cut, refused, served)
    })
    .join()
    .unwrap();
    assert_eq!(
        outcome,
        (true, true, true),
        "(slow cut, over-cap refused, held served)"
    );
}
