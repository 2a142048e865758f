//! End to end on the userspace wire: `seed netboot` with `[wire] kind = "qemu-mcast"` joins a
//! QEMU lab's wire as its own host (smoltcp; no root, bridge or TAP). A lab node powered on to
//! PXE gets its reserved lease from the seed's DHCP engine, fetches its iPXE script over HTTP
//! (TCP on smoltcp, served by the same hyper service), then its kernel over HTTP and its initrd
//! over TFTP (a `tftp://` URL in the script; one ephemeral wire port per transfer). Asserted
//! on the seed's log (RUST_LOG=debug): the ACK for the node's MAC, the HTTP request lines and
//! the TFTP transfer. The "kernel" is a few bytes, enough to prove the fetch. The node's IPv6
//! Router Solicitations are answered: tshark, reading the wire's pcap, finds a Router
//! Advertisement to the node from the seed's link-local address with a good checksum.

use qemu::ipmi::BootDevice;
use qemu::node::RunOptions;
use qemu::Lab;
use std::process::Command;
use std::time::{Duration, Instant};
use tests::proc::Child;

/// Wait (bounded) until the log has a line containing every one of `needles`.
fn wait_line(seed: &mut Child, needles: &[&str], timeout: Duration) -> Option<String> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Some(l) = seed
            .output()
            .lines()
            .find(|l| needles.iter().all(|n| l.contains(n)))
        {
            return Some(l.to_string());
        }
        assert!(seed.is_running(), "seed exited:\n{}", seed.output());
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// [`wait_line`] (bounded by `secs`), or panic: no `what` (with the seed's log and the node's
/// console).
fn expect_line(
    seed: &mut Child,
    needles: &[&str],
    secs: u64,
    what: &str,
    console: impl Fn() -> String,
) -> String {
    match wait_line(seed, needles, Duration::from_secs(secs)) {
        Some(line) => line,
        None => panic!(
            "no {what}\nseed:\n{}\nconsole:\n{}",
            seed.output(),
            console()
        ),
    }
}

#[test]
fn qemu_node_pxe_boots_from_the_seed_over_the_userspace_wire() {
    tests::require("qemu-system-x86_64");
    let tshark = tests::require("tshark");
    let tmp = tempfile::tempdir().unwrap();
    let plan = tests::test_plan("w", 1, 256, &[]);
    let lab = Lab::create(&tmp.path().join("lab"), &plan, RunOptions::default()).expect("lab");
    let spec = lab.file().nodes[0].clone();
    let mac = spec.macs[0].to_lowercase();
    let wire = lab.file().wire;

    let http = tmp.path().join("http");
    std::fs::create_dir_all(&http).unwrap();
    std::fs::write(http.join("vmlinuz"), b"not really a kernel\n").unwrap();
    std::fs::write(http.join("initrd.img"), b"not really an initrd\n").unwrap();
    let config = tmp.path().join("netboot.toml");
    std::fs::write(
        &config,
        tests::wire_config_head("10.78.0.1", &tmp.path().join("state"), &wire, true)
            + &format!(
                r#"
[dhcp]
subnet = "10.78.0.0/24"
router = "10.78.0.1"
lease_time = 600

[http]
root = "{http}"
port = 8080

[tftp]
root = "{http}"

[[nodes]]
mac = "{mac}"
ip = "10.78.0.10"
hostname = "node1"
boot = {{ action = "kernel", kernel = "vmlinuz", initrd = "tftp://10.78.0.1/initrd.img", cmdline = "console=ttyS0" }}
"#,
                http = http.display(),
            ),
    )
    .unwrap();

    let check = Command::new(tests::seed_bin())
        .args(["netboot", "--check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");

    let mut cmd = Command::new(tests::seed_bin());
    cmd.args(["netboot", "--config"])
        .arg(&config)
        .env("RUST_LOG", "debug,smoltcp=info,hyper=info");
    let mut seed = Child::spawn("seed-netboot", cmd);
    seed.wait_for_log("HTTP listening on the wire", Duration::from_secs(30));

    let node = lab.node("node1").unwrap().clone();
    let t0 = Instant::now();
    node.lock().unwrap().power_on(BootDevice::Pxe).unwrap();
    let console =
        || std::fs::read_to_string(node.lock().unwrap().console_path()).unwrap_or_default();

    let ack = expect_line(
        &mut seed,
        &[&mac, "ACK"],
        90,
        &format!("DHCP ACK for {mac} within 90 s"),
        console,
    );
    let t_ack = t0.elapsed();
    assert!(ack.contains("10.78.0.10"), "the reservation");

    let script = ["HTTP request", "path=/ipxe/", "status=200"];
    let what = "iPXE script fetched over the wire";
    expect_line(&mut seed, &script, 60, what, console);
    let t_script = t0.elapsed();
    let kernel = ["HTTP request", "path=/vmlinuz", "status=200"];
    let what = "kernel fetched over the wire";
    expect_line(&mut seed, &kernel, 60, what, console);
    let tftp = ["TFTP transfer complete", "initrd.img"];
    let what = "initrd fetched over TFTP on the wire";
    expect_line(&mut seed, &tftp, 60, what, console);
    eprintln!(
        "power-on → DHCP ACK {:.1} s, → iPXE script {:.1} s, → kernel {:.1} s",
        t_ack.as_secs_f64(),
        t_script.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    let pcap = std::fs::metadata(tmp.path().join("state/wire.pcap")).unwrap();
    if let Some(keep) = std::env::var_os("WIRE_TEST_PCAP") {
        std::fs::copy(tmp.path().join("state/wire.pcap"), keep).unwrap();
    }
    assert!(pcap.len() > 1000, "the boot was captured");
    let pcap = tmp.path().join("state/wire.pcap");
    let decode = |filter: &str| {
        let out = Command::new(&tshark)
            .arg("-r")
            .arg(&pcap)
            .args([
                "-Y", filter, "-T", "fields", "-e", "eth.dst", "-e", "ipv6.src",
            ])
            .args(["-e", "ipv6.dst", "-e", "icmpv6.checksum.status"])
            .output()
            .unwrap();
        assert!(out.status.success(), "tshark: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let solicitations = decode(&format!("icmpv6.type == 133 && eth.src == {mac}"));
    assert!(
        !solicitations.is_empty(),
        "iPXE sent no router solicitation"
    );
    let advertisements = decode("icmpv6.type == 134");
    // The seed is 02:5e:0a:4e:00:01 (derived from 10.78.0.1); iPXE's address is its EUI-64.
    let answered = advertisements
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            f.len() == 4
                && f[0] == mac
                && f[1] == "fe80::5e:aff:fe4e:1"
                && f[2].starts_with("fe80::")
                && f[3] == "1" // tshark: checksum good
        })
        .count();
    eprintln!(
        "router solicitations from the node: {}, advertisements on the wire: {}",
        solicitations.lines().count(),
        advertisements.lines().count()
    );
    assert!(
        answered >= 1,
        "no valid router advertisement to {mac}\nsolicitations:\n{solicitations}\nadvertisements:\n{advertisements}"
    );
    assert!(
        seed.output().contains("router solicitation answered"),
        "the seed logs its answer"
    );
    if std::env::var_os("WIRE_TEST_LOG").is_some() {
        eprintln!("{}", seed.output());
    }
    drop(lab);
}
