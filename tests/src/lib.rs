//! Shared fixtures for the end-to-end tests in `tests/tests/`: network namespaces joined by veth
//! pairs, the `seed` binary, and child processes that are killed when a test ends, pass or fail.
//!
//! Network rule: every address used here lives on a veth inside a namespace the fixture created;
//! nothing is bound to or sent from an interface of the host.

pub mod appliance;
pub mod bmc_relay;
pub mod bound_get;
pub mod crash_campaign;
pub mod daemon;
pub mod farm;
pub mod ha;
pub mod image_boot;
pub mod lan_seed;
pub mod netboot_lan;
pub mod netns;
pub mod one_request;
pub mod proc;
pub mod wire_campaign;
pub mod wire_seed;

use std::path::PathBuf;
use std::sync::OnceLock;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Path of the `seed` binary, built once per test process (`cargo build -p seed`).
pub fn seed_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| built_bin("seed", "seed")).clone()
}

/// `seed-config`, built once per test process.
pub fn seed_config_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| built_bin("ramdisk", "seed-config"))
        .clone()
}

/// The cargo that runs the tests, for builds inside a test, with the environment of a build
/// from the shell: cargo sets `CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME`… for the test process,
/// and `ring`'s build script tracks them, so a nested build that inherits them rebuilds
/// rustls, tonic, etcd-client and the seed (a minute, under a lock every other test's build
/// waits on) and leaves the next build from the shell or `cargo xtask` to rebuild them again.
/// (xtask's `cargo()` drops the same set.)
pub fn cargo() -> std::process::Command {
    let mut cmd =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(set_by_cargo_for_a_crate) {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// The variables cargo sets for a crate's build script, tests and binaries (not the ones that
/// configure cargo itself, such as `CARGO_HOME` or `CARGO_TARGET_DIR`).
fn set_by_cargo_for_a_crate(name: &str) -> bool {
    name == "OUT_DIR"
        || [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_BIN_",
            "CARGO_CRATE_",
        ]
        .iter()
        .any(|p| name.starts_with(p))
        || [
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
            "CARGO_RUSTC_CURRENT_DIR",
        ]
        .contains(&name)
}

/// `cargo build -p package --bin bin` (debug) in the workspace: the binary's path.
fn built_bin(package: &str, bin: &str) -> PathBuf {
    let root = workspace_root();
    let status = cargo()
        .args(["build", "--quiet", "-p", package, "--bin", bin])
        .current_dir(&root)
        .status()
        .unwrap_or_else(|e| panic!("running cargo build -p {package}: {e}"));
    assert!(
        status.success(),
        "cargo build -p {package} --bin {bin} failed"
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    target.join("debug").join(bin)
}

/// Fail (not skip) with a clear message when a peer program is missing: `cargo xtask deps`
/// installs every one of them.
pub fn require(program: &str) -> PathBuf {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
    {
        let p = PathBuf::from(dir).join(program);
        if p.is_file() {
            return p;
        }
    }
    panic!("{program} is not installed: run `cargo xtask deps` (this test needs it)");
}

/// Start `seed netboot --config CONFIG` inside `ns` (logs at info) and wait until every line in
/// `ready` has been logged (each bounded by `timeout`; the first wait includes building seed).
pub fn spawn_netboot(
    ns: &netns::Netns,
    config: &std::path::Path,
    ready: &[&str],
    timeout: std::time::Duration,
) -> proc::Child {
    let mut cmd = ns.cmd(seed_bin());
    cmd.arg("netboot")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info");
    let mut child = proc::Child::spawn("seed-netboot", cmd);
    for line in ready {
        child.wait_for_log(line, timeout);
    }
    child
}

/// Run busybox udhcpc once in the client namespace; the variables its script saw on `bound`, or
/// `None` if it got no lease (it gives up after three DISCOVERs one second apart).
pub fn udhcpc(
    lan: &netns::Lan,
    dir: &std::path::Path,
    extra: &[&str],
) -> Option<std::collections::HashMap<String, String>> {
    let udhcpc = require("udhcpc");
    require("timeout");
    let script = dir.join("udhcpc.sh");
    let env_file = dir.join("bound.env");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n# Records what udhcpc learned; configures nothing.\n\
             if [ \"$1\" = bound ]; then env > '{}'; fi\nexit 0\n",
            env_file.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &script,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )
    .unwrap();
    let _ = std::fs::remove_file(&env_file);
    let out = lan
        .client
        .cmd("timeout")
        .arg("30")
        .arg(udhcpc)
        .args([
            "-f",
            "-q",
            "-n",
            "-t",
            "3",
            "-T",
            "1",
            "-i",
            &lan.client_if,
            "-s",
        ])
        .arg(&script)
        .args(extra)
        .output()
        .expect("running udhcpc");
    let Ok(text) = std::fs::read_to_string(&env_file) else {
        eprintln!(
            "udhcpc got no lease:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    };
    assert!(
        out.status.success(),
        "udhcpc bound but failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// iPXE's boot file `name` (`undionly.kpxe`, `snponly.efi`) from the offline cache's ipxe
/// package, unpacked into `scratch` (see [`cached_package_file`]).
pub fn ipxe_file(name: &str, scratch: &std::path::Path) -> PathBuf {
    cached_package_file("ipxe_", &format!("usr/lib/ipxe/{name}"), scratch)
}

/// The static busybox from the offline cache's busybox-static package, unpacked into `scratch`:
/// what goes into a guest's initrd. The host's `busybox` may be Debian's dynamically linked one,
/// which a bare initrd cannot run.
pub fn static_busybox(scratch: &std::path::Path) -> PathBuf {
    cached_package_file("busybox-static_", "bin/busybox", scratch)
}

/// `file` from the offline cache's package whose `.deb` name starts with `deb_prefix`
/// (`cargo xtask fetch`; `$SEED_CACHE`, else `${XDG_CACHE_HOME:-~/.cache}/seed`), unpacked with
/// `dpkg-deb` into `scratch`. Fails clearly when the package is not fetched.
pub fn cached_package_file(deb_prefix: &str, file: &str, scratch: &std::path::Path) -> PathBuf {
    let cache = seed::cli::lab_seed::cache_dir();
    let deb = std::fs::read_dir(cache.join("debs"))
        .ok()
        .and_then(|rd| {
            rd.flatten().map(|e| e.path()).find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(deb_prefix))
            })
        })
        .unwrap_or_else(|| {
            panic!(
                "no {deb_prefix}* package in {}/debs: run `cargo xtask fetch`",
                cache.display()
            )
        });
    let out = std::process::Command::new(require("dpkg-deb"))
        .arg("-x")
        .arg(&deb)
        .arg(scratch)
        .output()
        .expect("running dpkg-deb");
    assert!(
        out.status.success(),
        "dpkg-deb -x {}: {out:?}",
        deb.display()
    );
    let path = scratch.join(file);
    assert!(path.is_file(), "{} has no {file}", deb.display());
    path
}

/// Cargo's target directory (`CARGO_TARGET_DIR` or `<workspace>/target`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// The deploy ramdisk `cargo xtask ramdisk` built (fails clearly if it is missing).
pub fn ramdisk_dir() -> PathBuf {
    let dir = target_dir().join("ramdisk");
    assert!(
        dir.join("vmlinuz").is_file() && dir.join("initramfs.zst").is_file(),
        "no ramdisk in {}: run `cargo xtask ramdisk` (cargo xtask test does)",
        dir.display()
    );
    dir
}

/// The directory where `cargo xtask image build NAME` wrote the image's manifest and stream
/// (fails clearly if it is missing).
pub fn built_image(name: &str) -> PathBuf {
    let dir = target_dir().join("images").join(name);
    assert!(
        dir.join("manifest.json").is_file(),
        "no {name} image in {}: run `cargo xtask image build {name}` (cargo xtask test does)",
        dir.display()
    );
    dir
}

/// The tiny golden image's manifest (see [`built_image`]).
pub fn tiny_manifest() -> PathBuf {
    built_image("tiny").join("manifest.json")
}

/// A TCP port free on 127.0.0.1 right now (for a daemon's API or a lab's BMCs).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("binding 127.0.0.1:0")
        .local_addr()
        .expect("local address")
        .port()
}

/// Run `cmd` (curl, in a namespace or not) as `method url`, with a bearer token and a JSON
/// body when given, within `max_secs`: (HTTP status, body). Panics when curl itself fails
/// (no connection, timeout), so a status is always the daemon's.
pub fn curl(
    cmd: std::process::Command,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
    max_secs: u32,
) -> (u16, String) {
    try_curl(cmd, method, url, token, body, max_secs).unwrap_or_else(|e| panic!("{e}"))
}

/// `curl`, but curl's own failure (no connection, timeout) is an `Err` naming it: for polls
/// of a daemon that may be away for a while, whose deadline then says what it waited for.
pub fn try_curl(
    mut cmd: std::process::Command,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
    max_secs: u32,
) -> Result<(u16, String), String> {
    cmd.args(["-sS", "--path-as-is", "--max-time", &max_secs.to_string()])
        .args(["-X", method, "-w", "\n%{http_code}"]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    let out = cmd.arg(url).output().expect("running curl");
    if !out.status.success() {
        return Err(format!("curl {method} {url}: {out:?}"));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("curl's status line");
    Ok((
        code.trim().parse().expect("an HTTP status"),
        body.to_string(),
    ))
}

/// `curl` on a daemon's operators' API on 127.0.0.1 with a bearer token, optionally with a
/// JSON body: (HTTP status, body). Status 0 when curl could not connect.
pub fn api_call(
    port: u16,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    let mut cmd = std::process::Command::new(require("curl"));
    cmd.args([
        "-sS",
        "--max-time",
        "20",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
    ])
    .args(["-H", &format!("Authorization: Bearer {token}")]);
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    let out = cmd
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("running curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// A fake ramdisk for daemons whose nodes never boot it: `dir/ramdisk/vmlinuz` and
/// `initramfs.zst` holding `fake kernel\n` and `fake initrd\n` (the daemon installs them under
/// its HTTP root). Their paths: (kernel, initrd).
pub fn fake_ramdisk(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let rd = dir.join("ramdisk");
    std::fs::create_dir_all(&rd).expect("creating the fake ramdisk's dir");
    let (kernel, initrd) = (rd.join("vmlinuz"), rd.join("initramfs.zst"));
    std::fs::write(&kernel, "fake kernel\n").expect("writing the fake kernel");
    std::fs::write(&initrd, "fake initrd\n").expect("writing the fake initrd");
    (kernel, initrd)
}

/// One entry of an instackenv `nodes:` list: a node named `name` with NIC `mac` behind the
/// `fake` power driver (nothing boots on it).
pub fn fake_bmc_node(name: &str, mac: &str) -> String {
    format!(
        "  - name: {name}\n    mac: [\"{mac}\"]\n    pm_type: fake\n    pm_addr: fake\n    \
         pm_user: admin\n    pm_password: hunter2\n"
    )
}

/// `seed node import` of `entries` (the lines of an instackenv `nodes:` list) into the store
/// file `store`, offline, before a daemon opens it; the inventory is written beside the store.
/// Panics with seed's output unless the import succeeds.
pub fn import_nodes(store: &std::path::Path, entries: &str) {
    let inv = store.with_extension("instackenv.yaml");
    std::fs::write(&inv, format!("nodes:\n{entries}")).expect("writing the inventory");
    let out = std::process::Command::new(seed_bin())
        .args(["node", "import"])
        .arg(&inv)
        .env("SEED_STORE", store)
        .env_remove("SEED_API")
        .output()
        .expect("running seed node import");
    assert!(out.status.success(), "import: {out:?}");
}

/// The top of a `seed netboot` config on the userspace wire: `server_ip`, `state_dir = state`
/// and a `[wire]` table joining `wire` (`kind = "qemu-mcast"`, `pcap = true` when `pcap`). The
/// caller appends the other tables.
pub fn wire_config_head(
    server_ip: impl std::fmt::Display,
    state: &std::path::Path,
    wire: &qemu::wire::WireAddr,
    pcap: bool,
) -> String {
    format!(
        "server_ip = \"{server_ip}\"\nstate_dir = {state:?}\n\n[wire]\nkind = \"qemu-mcast\"\n\
         group = \"{}\"\nport = {}\n{}",
        wire.group,
        wire.port,
        if pcap { "pcap = true\n" } else { "" }
    )
}

/// An empty qcow2 disk of `size` (qemu-img's syntax: `1G`) at `path`; panics unless qemu-img
/// made it.
pub fn qcow2(path: &std::path::Path, size: &str) {
    let st = std::process::Command::new(require("qemu-img"))
        .args(["create", "-q", "-f", "qcow2"])
        .arg(path)
        .arg(size)
        .status()
        .expect("running qemu-img");
    assert!(st.success(), "qemu-img create {}", path.display());
}

/// A lab plan for a test: `nodes` nodes named after `tag` and this process, `memory_mib` each,
/// disks of `disks_gib`, BMCs on ports the system picks (no fixed port to collide on).
pub fn test_plan(tag: &str, nodes: usize, memory_mib: u32, disks_gib: &[u32]) -> qemu::spec::Plan {
    let mut plan = qemu::spec::Plan::new(&format!("{tag}{}", std::process::id()), nodes);
    plan.memory_mib = memory_mib;
    plan.disks_gib = disks_gib.to_vec();
    plan.bmc_base_port = 0;
    plan
}

/// A tokio runtime with two worker threads, for services a test runs in-process.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// What a finished program printed: its stdout, then its stderr (lossy UTF-8).
pub fn printed(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
