//! `seed-api-fuzz ST MAX_EXAMPLES MAX_SECS [ST ARGS…]`: the real `seed daemon` in a network
//! namespace of its own (API and HTTP boot server on its loopback), with three fake-power
//! nodes (fake agents) and an image, fuzzed by schemathesis (`ST`, the `st` of a venv) against
//! the OpenAPI document the daemon serves (`/v1/openapi.json`), with the operators' token:
//! no 5xx, every documented response's body as the document says. Run by
//! `cargo xtask schemathesis`; exits with `st`'s status.

use tests::daemon::{Config, TestImage};
use tests::netns::Netns;

/// A token only this run uses (the daemon wants 12 characters at least).
const TOKEN: &str = "api-fuzz-operator-token";

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
    TestImage::golden(
        "fuzz",
        b"not a real image: the fake agents only report progress",
    )
    .import(&d.join("http/images"), &d.join("fuzz-image"));
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
    let config = Config {
        ramdisk: Some((kernel, initrd)),
        ..Config::loopback(d, TOKEN)
    }
    .write();
    let ns = Netns::new("fuzz");
    let daemon = tests::daemon::spawn(&ns, "seed-daemon", &config);

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
