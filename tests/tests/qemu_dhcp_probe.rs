//! Never a rogue DHCP server, end to end with real firmware: a network that already has a DHCP
//! server (dnsmasq, in a namespace of its own) and a seed in `mode = "auto"` on the userspace
//! stack over AF_PACKET (the laptop NIC, no address), both plugged into one switch with a QEMU
//! node's TAP. The seed's probe draws dnsmasq's OFFER, so it serves ProxyDHCP only; the node's
//! iPXE ROM takes its address from dnsmasq and its boot information from the seed, and fetches
//! its script and kernel from the seed over HTTP from dnsmasq's address.

use qemu::ipmi::BootDevice;
use qemu::node::RunOptions;
use qemu::Lab;
use std::time::{Duration, Instant};
use tests::netns::{Netns, Switch};
use tests::proc::Child;

fn wait_line(c: &mut Child, needles: &[&str], secs: u64) -> Option<String> {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        if let Some(l) = c
            .output()
            .lines()
            .find(|l| needles.iter().all(|n| l.contains(n)))
        {
            return Some(l.to_string());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

#[test]
fn qemu_auto_dhcp_seed_proxies_beside_dnsmasq_and_the_node_boots_from_it() {
    tests::require("qemu-system-x86_64");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let sw = Switch::new();
    sw.tap("tap0");
    let seed_ns = Netns::new("seed");
    sw.plug(&seed_ns, "veth-s");
    let dns_ns = Netns::new("dns");
    sw.plug(&dns_ns, "veth-d");
    dns_ns.ip(&["addr", "add", "10.77.0.2/24", "dev", "veth-d"]);

    let mut cmd = dns_ns.cmd(tests::require("dnsmasq"));
    cmd.args([
        "--no-daemon",
        "--conf-file=/dev/null",
        "--bind-interfaces",
        "--interface=veth-d",
        "--port=0",
        "--no-resolv",
        "--log-dhcp",
        "--log-facility=-",
        "--dhcp-range=10.77.0.50,10.77.0.59,255.255.255.0,1h",
    ])
    .arg(format!("--pid-file={}", d.join("dnsmasq.pid").display()))
    .arg(format!(
        "--dhcp-leasefile={}",
        d.join("dnsmasq.leases").display()
    ));
    let mut dns = Child::spawn("dnsmasq", cmd);
    dns.wait_for_log("DHCP, IP range", Duration::from_secs(10));

    let mut plan = tests::test_plan("px", 1, 256, &[]);
    plan.bmc_network = false;
    let lab = Lab::create(&d.join("lab"), &plan, RunOptions::default()).expect("lab");
    let mac = lab.file().nodes[0].macs[0].to_lowercase();
    let node = lab.node("node1").unwrap().clone();
    node.lock().unwrap().set_taps(vec!["tap0".into()]);

    let http = d.join("http");
    std::fs::create_dir_all(&http).unwrap();
    std::fs::write(http.join("vmlinuz"), b"not really a kernel\n").unwrap();
    std::fs::write(http.join("initrd.img"), b"not really an initrd\n").unwrap();
    let config = d.join("netboot.toml");
    std::fs::write(
        &config,
        format!(
            r#"server_ip = "10.77.0.1"
state_dir = "{state}"

[wire]
kind = "af-packet"
ifname = "veth-s"
pcap = true

[dhcp]
mode = "auto"
subnet = "10.77.0.0/24"
probe_secs = 5

[http]
root = "{http}"
port = 8080

[[nodes]]
mac = "{mac}"
hostname = "node1"
boot = {{ action = "kernel", kernel = "vmlinuz", initrd = "initrd.img", cmdline = "console=ttyS0" }}
"#,
            state = d.join("state").display(),
            http = http.display(),
        ),
    )
    .unwrap();
    let mut cmd = seed_ns.cmd(tests::seed_bin());
    cmd.args(["netboot", "--config"])
        .arg(&config)
        .env("RUST_LOG", "debug,smoltcp=info,hyper=info");
    let mut seed = Child::spawn("seed-netboot", cmd);
    seed.wait_for_log("dhcp: serving", Duration::from_secs(120));
    let log = seed.output();
    assert!(
        log.contains("another DHCP server (10.77.0.2) offered"),
        "{log}\ndnsmasq:\n{}",
        dns.output()
    );
    assert!(log.contains("dhcp: serving (proxy)"), "{log}");

    // Powered on from a thread in the switch's namespace (QEMU opens tap0 there, and lives as
    // long as that thread).
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let (sw_name, n) = (sw.ns.name.clone(), node.clone());
    let t0 = Instant::now();
    let power = std::thread::spawn(move || {
        tests::netns::enter(&sw_name);
        n.lock().unwrap().power_on(BootDevice::Pxe).unwrap();
        let _ = stopped.recv();
        let _ = n.lock().unwrap().power_off();
    });
    let console =
        || std::fs::read_to_string(node.lock().unwrap().console_path()).unwrap_or_default();
    let script = wait_line(
        &mut seed,
        &[
            "HTTP request",
            "path=/ipxe/",
            "status=200",
            "peer=10.77.0.5",
        ],
        120,
    );
    let kernel = script.as_ref().and_then(|_| {
        wait_line(
            &mut seed,
            &[
                "HTTP request",
                "path=/vmlinuz",
                "status=200",
                "peer=10.77.0.5",
            ],
            60,
        )
    });
    let (log, dlog, con) = (seed.output(), dns.output(), console());
    let _ = stop.send(());
    power.join().unwrap();
    if let Some(keep) = std::env::var_os("PROBE_TEST_PCAP") {
        let _ = std::fs::copy(d.join("state/wire.pcap"), keep);
    }
    assert!(
        script.is_some() && kernel.is_some(),
        "the node did not boot from the seed with dnsmasq's address\nseed:\n{log}\n\
         dnsmasq:\n{dlog}\nconsole:\n{con}"
    );
    println!(
        "proxy beside dnsmasq: power-on → script and kernel {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    // The address is dnsmasq's; the seed offered none.
    assert!(
        dlog.lines()
            .any(|l| l.contains("DHCPACK(veth-d)") && l.contains(&mac)),
        "{dlog}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains(&mac) && l.contains("(proxy)")),
        "{log}"
    );
    drop(lab);
}
