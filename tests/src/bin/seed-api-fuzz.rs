//! `seed-api-fuzz ST MAX_EXAMPLES MAX_SECS [ST ARGS…]`: the real `seed daemon` in a network
//! namespace of its own (API and HTTP boot server on its loopback), with three fake-power
//! nodes (fake agents) and an image, fuzzed by schemathesis (`ST`, the `st` of a venv) against
//! the OpenAPI document the daemon serves (`/v1/openapi.json`), with the operators' token:
//! no 5xx, every documented response's body as the document says. Run by
//! `cargo xtask schemathesis`; exits with `st`'s status.

use std::path::Path;
use std::time::Duration;
use tests::netns::Netns;
use tests::proc::Child;

/// A token only this run uses (the daemon wants 12 characters at least).
const TOKEN: &str = "api-fuzz-operator-token";

fn image(http: &Path, work: &Path) {
    let src = work.join("fuzz-image");
    std::fs::create_dir_all(&src).expect("image dir");
    let stream = src.join("rootfs.tar.zst");
    std::fs::write(
        &stream,
        b"not a real image: the fake agents only report progress",
    )
    .expect("image stream");
    let (sha256, size) = images::store::hash_file(&stream).expect("hashing");
    let m = images::Manifest {
        name: "golden".into(),
        version: "fuzz".into(),
        stream: images::Stream {
            file: "rootfs.tar.zst".into(),
            sha256,
            size,
            unpacked_size: size,
        },
        boot: images::Boot {
            kernel: "boot/vmlinuz".into(),
            initrd: None,
            cmdline: String::new(),
        },
        min_disk_mib: 64,
        layout: images::Layout::default(),
        elements: vec![],
    };
    std::fs::write(
        src.join("manifest.json"),
        serde_json::to_vec(&m).expect("json"),
    )
    .expect("manifest");
    images::ImageStore::open(http.join("images"))
        .and_then(|s| s.import(&src.join("manifest.json")))
        .expect("importing the image");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let parsed = (args.len() >= 4)
        .then(|| Some((args[2].parse::<u32>().ok()?, args[3].parse::<u32>().ok()?)))
        .flatten();
    let Some((examples, secs)) = parsed else {
        eprintln!("usage: seed-api-fuzz ST MAX_EXAMPLES MAX_SECS [ST ARGS…]");
        std::process::exit(2);
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::create_dir_all(d.join("http")).expect("http root");
    image(&d.join("http"), d);
    let (kernel, initrd) = tests::fake_ramdisk(d);
    let nodes: String = (0..3)
        .map(|i| {
            format!(
                "  - name: fuzz-{i}\n    mac: [\"52:54:00:0f:00:0{i}\"]\n    pm_type: fake\n    \
                 pm_addr: fake\n    pm_user: admin\n    pm_password: fuzz-secret-{i}\n    \
                 capabilities: \"profile:compute,fake_agent:ok\"\n    memory: 8192\n"
            )
        })
        .collect();
    tests::import_nodes(&d.join("seed.redb"), &nodes);
    let config = format!(
        r#"store = {store:?}

[api]
token = "{TOKEN}"
listen = "127.0.0.1:6385"

[ramdisk]
kernel = {kernel:?}
initrd = {initrd:?}

[netboot]
server_ip = "127.0.0.1"
state_dir = {state:?}

[netboot.http]
root = {http:?}
port = 8080
"#,
        store = d.join("seed.redb"),
        state = d.join("state"),
        http = d.join("http"),
    );
    std::fs::write(d.join("seed.toml"), config).expect("config");
    let ns = Netns::new("fuzz");
    let mut cmd = ns.cmd(tests::seed_bin());
    cmd.arg("daemon")
        .arg("--config")
        .arg(d.join("seed.toml"))
        .env("RUST_LOG", "info");
    let mut daemon = Child::spawn("seed-daemon", cmd);
    daemon.wait_for_log("HTTP listening", Duration::from_secs(120));

    let mut st = ns.cmd(&args[1]);
    st.args(["run", "http://127.0.0.1:6385/v1/openapi.json"])
        .args(["--url", "http://127.0.0.1:6385"])
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
        // No 5xx; every documented answer's body as the document says. (`all` adds checks
        // such as status_code_conformance and ignored_auth: pass `--checks all` after the
        // arguments to try them.)
        .args(["--checks", "not_a_server_error,response_schema_conformance"])
        .args(["--max-examples", &examples.to_string()])
        .args(["--max-time", &secs.to_string()])
        .args(["--request-timeout", "10", "--workers", "1", "--seed", "18"])
        .args(["--report", "junit", "--report-dir"])
        .arg(d.join("report"))
        .args(&args[4..])
        // No telemetry, no colours in a log.
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .env("NO_COLOR", "1");
    eprintln!("seed-api-fuzz: {st:?}");
    let status = st.status().expect("running st");
    if !status.success() {
        let log = daemon.output();
        let errors: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("ERROR") || l.contains("panicked"))
            .take(40)
            .collect();
        eprintln!("seed-api-fuzz: daemon errors:\n{}", errors.join("\n"));
    }
    // exit() runs no destructors: stop the daemon, remove the namespace and the directory first.
    drop(daemon);
    drop(ns);
    drop(dir);
    std::process::exit(status.code().unwrap_or(1));
}
