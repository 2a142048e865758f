//! Issue 18, hole 4 (the operators' API): the real daemon with its default `[api] tls` ("auto")
//! on 127.0.0.1 in a namespace of its own. It makes a CA and a server certificate at first
//! start (key files 0600); `seed ca export` prints the CA without the daemon; the CLI with that
//! CA lists the nodes over HTTPS and refuses an `https://` URL without one, saying how to get
//! it; curl (a TLS peer nobody here wrote) accepts the certificate with `--cacert` and refuses
//! it without; plain HTTP to the port gets no answer. Restarted with one more name in
//! `tls_names`, the daemon serves a new certificate for it under the same CA.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::time::Duration;
use tests::daemon::Config;
use tests::netns::Netns;

const TOKEN: &str = "t0ken-for-the-tls-test";

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

/// curl in `ns` with `args`: its exit code and stdout.
fn curl(ns: &Netns, args: &[&str]) -> (i32, String) {
    let o = ns
        .cmd(tests::require("curl"))
        .args(["-sS", "--max-time", "20", "-H"])
        .arg(format!("Authorization: Bearer {TOKEN}"))
        .args(args)
        .output()
        .expect("running curl");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

fn seed(ns: &Netns, args: &[&str]) -> Output {
    ns.cmd(tests::seed_bin())
        .args(args)
        .env_remove("SEED_API")
        .env_remove("SEED_CA")
        .env("SEED_TOKEN", TOKEN)
        .output()
        .expect("running seed")
}

#[test]
fn daemon_tls_operators_api_is_https_pinned_to_the_seeds_ca() {
    let ns = Netns::new("tls");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tests::import_nodes(
        &d.join("seed.redb"),
        &tests::fake_bmc_node("tls-node", "52:54:00:00:7e:01"),
    );
    // The daemon's default: no `tls` line.
    let config = Config {
        tls: None,
        ..Config::loopback(d, TOKEN)
    }
    .write();
    let mut daemon = tests::daemon::spawn(&ns, "seed-daemon", &config);
    daemon.wait_for_log("API listening", Duration::from_secs(30));
    assert!(
        daemon.output().contains("API CA created"),
        "{}",
        daemon.output()
    );

    // (f) The keys are the seed's alone.
    let tls = d.join("state/api-tls");
    assert_eq!(mode(&tls), 0o700);
    for key in ["ca-key.pem", "server-key.pem"] {
        assert_eq!(mode(&tls.join(key)), 0o600, "{key}");
    }

    // (a) `seed ca export`, from the config or the state directory: the CA, as PEM.
    let out = seed(&ns, &["ca", "export", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let pem = String::from_utf8(out.stdout).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    let state = d.join("state");
    let out = seed(&ns, &["ca", "export", "--state", state.to_str().unwrap()]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), pem);
    let ca = d.join("ca.pem");
    std::fs::write(&ca, &pem).unwrap();
    let ca_arg = ca.to_str().unwrap();

    // (b) The CLI pinned to the CA lists the nodes over HTTPS (the scheme is implied by --ca).
    for api in ["https://127.0.0.1:6385", "127.0.0.1:6385"] {
        let out = seed(&ns, &["node", "list", "--api", api, "--ca", ca_arg]);
        let list = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{api}: {out:?}\n{}", daemon.output());
        assert!(list.contains("tls-node"), "{api}: {list}");
    }

    // (e) HTTPS without a CA: refused, with the way to get it.
    let out = seed(&ns, &["node", "list", "--api", "https://127.0.0.1:6385"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        err.contains("--ca") && err.contains("seed ca export"),
        "{err}"
    );

    // Plain HTTP from the CLI (no CA, so no scheme implied): the error names the way out.
    let out = seed(&ns, &["node", "list", "--api", "127.0.0.1:6385"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(err.contains("HTTPS") && err.contains("--ca"), "{err}");

    // (c) curl, a TLS peer of its own: with the CA (by IP and by `localhost`), yes.
    for url in [
        "https://127.0.0.1:6385/v1/nodes",
        "https://localhost:6385/v1/nodes",
    ] {
        let (code, body) = curl(&ns, &["--fail", "--cacert", ca_arg, url]);
        assert_eq!(code, 0, "{url}: {body}\n{}", daemon.output());
        assert!(body.contains("tls-node"), "{url}: {body}");
    }
    // Without it (the system's roots know no seed CA): exit 60, the peer's certificate.
    let (code, body) = curl(&ns, &["https://127.0.0.1:6385/v1/nodes"]);
    assert_eq!(code, 60, "curl without the CA: {body}");
    // A name the certificate is not for: refused too.
    let (code, _) = curl(
        &ns,
        &[
            "--cacert",
            ca_arg,
            "--resolve",
            "seed.example:6385:127.0.0.1",
            "https://seed.example:6385/v1/nodes",
        ],
    );
    assert_eq!(code, 60, "seed.example is no name of the certificate yet");

    // (d) Plain HTTP to the TLS port: no HTTP answer (the handshake fails, the connection
    // drops).
    let (code, body) = curl(&ns, &["http://127.0.0.1:6385/v1/nodes"]);
    assert_ne!(code, 0, "plain HTTP answered: {body}");
    assert!(!body.contains("tls-node"), "{body}");

    // Restarted with one more name: a new server certificate, the same CA.
    drop(daemon);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("token = \"{TOKEN}\"\n"),
        &format!("token = \"{TOKEN}\"\ntls_names = [\"seed.example\"]\n"),
    );
    assert!(text.contains("tls_names"), "{text}");
    std::fs::write(&config, text).unwrap();
    let mut daemon = tests::daemon::spawn(&ns, "seed-daemon-2", &config);
    daemon.wait_for_log("API listening", Duration::from_secs(30));
    let log = daemon.output();
    assert!(
        !log.contains("API CA created") && log.contains("API server certificate issued"),
        "{log}"
    );
    let out = seed(&ns, &["ca", "export", "--config", config.to_str().unwrap()]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), pem, "the CA changed");
    let (code, body) = curl(
        &ns,
        &[
            "--fail",
            "--cacert",
            ca_arg,
            "--resolve",
            "seed.example:6385:127.0.0.1",
            "https://seed.example:6385/v1/nodes",
        ],
    );
    assert_eq!(code, 0, "{body}\n{}", daemon.output());
    assert!(body.contains("tls-node"), "{body}");
}

/// The SHA-256 fingerprint of the certificate in `pem` as openssl (a peer nobody here wrote)
/// computes it: lowercase hex, no colons.
fn openssl_sha256(pem: &Path) -> String {
    let out = std::process::Command::new(tests::require("openssl"))
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(pem)
        .output()
        .expect("running openssl");
    assert!(out.status.success(), "{out:?}");
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let fp = line.split('=').nth(1).unwrap_or_else(|| panic!("{line}"));
    fp.trim().replace(':', "").to_ascii_lowercase()
}

/// `seed-config booted` with `identity`, in `ns`: its output.
fn seed_config_booted(ns: &Netns, identity: &Path) -> Output {
    ns.cmd(tests::seed_config_bin())
        .args(["booted", "--retries", "0", "--identity"])
        .arg(identity)
        .env("NO_COLOR", "1")
        .output()
        .expect("running seed-config")
}

/// Issue 18, hole 4 (the agents): with `[agent] tls` on, the ramdisk's command line points the
/// agent at the HTTPS port with the CA's fingerprint (`seed.ca=`, as openssl computes it);
/// curl with the CA reaches the agent API there; the agents' client (`seed-config`, the
/// deployed node's side) pinned to that fingerprint gets through TLS to the seed's own answer
/// (401: a made-up credential), and pinned to another fingerprint, or to none, gets nothing.
#[test]
fn daemon_tls_agents_call_the_seed_over_https_pinned_by_the_cas_fingerprint() {
    let ns = Netns::new("atls");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mac = "52:54:00:00:7e:02";
    tests::import_nodes(&d.join("seed.redb"), &tests::fake_bmc_node("tls-node", mac));
    let config = Config {
        agent_https: Some(8443),
        ..Config::loopback(d, TOKEN)
    }
    .write();
    let mut daemon = tests::daemon::spawn(&ns, "seed-daemon", &config);
    daemon.wait_for_log("HTTPS listening", Duration::from_secs(30));
    let out = seed(&ns, &["ca", "export", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let ca = d.join("ca.pem");
    std::fs::write(&ca, &out.stdout).unwrap();
    let fp = openssl_sha256(&ca);
    assert_eq!(fp.len(), 64, "{fp}");
    let out = seed(
        &ns,
        &[
            "ca",
            "export",
            "--sha256",
            "--config",
            config.to_str().unwrap(),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), fp, "{out:?}");
    // The agents' certificate sits beside the operators' CA, its key the seed's alone.
    assert_eq!(mode(&d.join("state/api-tls/agent-key.pem")), 0o600);

    // The ramdisk's command line, once the node is to boot it (inspection).
    let (code, body) = tests::daemon::api(
        &ns,
        "POST",
        "http://127.0.0.1:6385/v1/nodes/tls-node/inspect",
        TOKEN,
        None,
    );
    assert_eq!(code, 202, "{body}");
    let script = (0..50)
        .find_map(|_| {
            let (code, s) = curl(&ns, &[&format!("http://127.0.0.1:8080/ipxe/{mac}")]);
            let ready = code == 0 && s.contains("seed.url=");
            if !ready {
                std::thread::sleep(Duration::from_millis(200));
            }
            ready.then_some(s)
        })
        .unwrap_or_else(|| panic!("no ramdisk script for {mac}\n{}", daemon.output()));
    assert!(
        script.contains(&format!("seed.url=https://127.0.0.1:8443 seed.ca={fp} ")),
        "{script}"
    );

    // curl with the CA: the agent API answers over HTTPS (401: no agent token here).
    let ca_arg = ca.to_str().unwrap();
    let (code, body) = curl(
        &ns,
        &[
            "--cacert",
            ca_arg,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            "--data",
            &format!("{{\"boot_mac\":\"{mac}\"}}"),
            "https://127.0.0.1:8443/v1/agent/heartbeat",
        ],
    );
    assert_eq!((code, body.as_str()), (0, "401"), "{}", daemon.output());

    // The agents' client, as a deployed node runs it.
    let identity = |pin: Option<&str>| {
        let p = d.join(format!("identity-{}.json", pin.unwrap_or("none")));
        let mut id = serde_json::json!({
            "node": "tls-node",
            "seed_url": "https://127.0.0.1:8443",
            "credential": "made-up-credential",
            "image": "tiny@00",
        });
        if let Some(pin) = pin {
            id["seed_ca"] = pin.into();
        }
        std::fs::write(&p, id.to_string()).unwrap();
        p
    };
    let out = seed_config_booted(&ns, &identity(Some(&fp)));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        err.contains("401"),
        "through TLS to the seed's refusal: {err}"
    );
    let other = "ab".repeat(32);
    let out = seed_config_booted(&ns, &identity(Some(&other)));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        err.contains(&format!("no CA certificate with SHA-256 {other}")) && !err.contains("401"),
        "another pin: no request at all: {err}"
    );
    let out = seed_config_booted(&ns, &identity(None));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("seed_ca"), "{out:?}");
    assert!(
        !daemon.output().contains("made-up-credential"),
        "a credential in the log"
    );
}
