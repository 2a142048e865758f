//! The seed appliance end to end (`cargo xtask appliance` builds what these boot): the hybrid
//! ISO as a CD and as a USB stick under SeaBIOS and OVMF, its SEEDCFG config honoured or
//! refused, and the netboot form PXE-booted by a host-mode seed. The appliance VM sits on a
//! lab's provisioning wire (QEMU multicast on 127.0.0.1) with no route out: its only other NIC
//! is QEMU's user network with `restrict=on`, used for a hostfwd to its API.
//!
//! Each case prints appliance power-on → API answering (a figure, not an assertion).

use dhcproto::{v4, Decodable, Encodable};
use qemu::appliance::{ApplianceSpec, Medium as AMedium, PortForward};
use qemu::node::RunOptions;
use qemu::spec::{Firmware, LabFile, Plan};
use qemu::wire::{Wire, WireAddr};
use qemu::Lab;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use tests::appliance::{built, iso_with_config, tail, ApplianceVm, Medium, Options};

const APPLIANCE_MAC: &str = "52:54:00:5e:ed:01";

fn wire_for(tag: &str) -> WireAddr {
    WireAddr::for_lab(&format!("appliance-{tag}-{}", std::process::id()))
}

fn options(wire: WireAddr, uefi: bool, medium: Medium) -> Options {
    Options {
        uefi,
        medium,
        wire,
        mac: APPLIANCE_MAC.into(),
        bmc_wire: None,
        memory_mib: 1024,
    }
}

/// The SEEDCFG config of a lab's appliance: its BMC-network NIC, a token, DHCP `mode`, and the
/// lab's nodes (their BMCs on the BMC network) in nodes.yaml.
fn lab_config(file: &LabFile, address: &str, mode: &str) -> (String, String) {
    let net = file.bmc_network.as_ref().expect("a BMC network");
    let toml = format!(
        "[provisioning]\naddress = \"{address}\"\n[dhcp]\nmode = \"{mode}\"\n\
         [api]\ntoken = \"{TOKEN}\"\n[[interfaces]]\nname = \"eth1\"\naddress = \"{}/{}\"\n",
        net.seed_address, net.prefix_len
    );
    let mut yaml = String::from("nodes:\n");
    for n in &file.nodes {
        let lan = n.bmc.lan.as_ref().expect("a BMC LAN port");
        yaml += &format!(
            "  - name: {}\n    mac: [\"{}\"]\n    pm_type: ipmi\n    pm_addr: {}\n    pm_port: {}\n    \
             pm_user: {}\n    pm_password: {}\n",
            n.name, n.macs[0], lan.address, lan.port, n.bmc.username, n.bmc.password
        );
    }
    (toml, yaml)
}

const TOKEN: &str = "lab-appliance-token";

/// A lab of one node with a BMC network and the appliance as its seed machine (API forwarded
/// to 127.0.0.1:port through a restricted user NIC); the medium made by `medium(lab file)`.
fn lab(
    dir: &std::path::Path,
    tag: &str,
    uefi: bool,
    medium: impl FnOnce(&LabFile) -> AMedium,
) -> (Lab, u16) {
    let mut plan = Plan::new(&format!("ap{tag}{}", std::process::id()), 1);
    plan.memory_mib = 512;
    plan.bmc_base_port = 0;
    plan.firmware = if uefi { Firmware::Uefi } else { Firmware::Bios };
    let mut file = plan.lab_file();
    let port = tests::free_port();
    let mut a = ApplianceSpec::new(&file, medium(&file));
    a.forward = vec![PortForward {
        host: port,
        guest: 6385,
    }];
    file.appliance = Some(a);
    let lab = Lab::start(&dir.join("lab"), file, RunOptions::default()).expect("lab");
    (lab, port)
}

fn console(lab: &Lab) -> String {
    let p = lab.appliance().unwrap().lock().unwrap().console_path();
    String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned()
}

fn wait_console(lab: &Lab, needle: &str, secs: u64) -> String {
    let t = Instant::now();
    loop {
        let c = console(lab);
        if let Some(l) = c.lines().find(|l| l.contains(needle)) {
            return l.to_string();
        }
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "no {needle:?} on the appliance's console after {secs} s:\n{}",
            tail(&c, 60)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `seed node …` against the appliance's API; panics with the output unless it succeeds.
fn seed_cli(port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new(tests::seed_bin())
        .arg("node")
        .args(args)
        .env("SEED_API", format!("http://127.0.0.1:{port}"))
        .env("SEED_TOKEN", TOKEN)
        .output()
        .unwrap();
    let text = tests::printed(&out);
    assert!(out.status.success(), "seed node {args:?}: {text}");
    text
}

/// Power the lab's appliance on; it comes up, answers its API, enrolls node1 from nodes.yaml,
/// inspects and deploys it with the tiny image through node1's BMC on the BMC network. Prints
/// power-on → API answering and power-on → node1 active.
fn comes_up_and_deploys(lab: &Lab, port: u16, what: &str, api_url: &str) {
    let t0 = Instant::now();
    lab.power_on_appliance().unwrap();
    wait_console(
        lab,
        &format!("seed-appliance: API answering at {api_url}"),
        900,
    );
    let up = t0.elapsed().as_secs_f64();
    wait_console(lab, "seed-appliance: enrolled the nodes of nodes.yaml", 60);
    seed_cli(port, &["inspect", "node1", "--wait"]);
    seed_cli(port, &["deploy", "node1", "--image", "tiny", "--wait"]);
    let active = t0.elapsed().as_secs_f64();
    let list = seed_cli(port, &["list"]);
    assert!(list.contains("active"), "{list}");
    println!("appliance {what}: power-on → API answering {up:.1} s, → node1 active {active:.1} s");
}

/// The ISO as a USB stick under SeaBIOS, then OVMF; as a CD under OVMF (the CD under SeaBIOS
/// is the seed machine of `qemu_handoff_undercloud`, which deploys three machines from it).
fn iso_deploys(usb: bool) {
    let iso = built().join("seed-appliance.iso");
    let firmware: &[bool] = if usb { &[false, true] } else { &[true] };
    for &uefi in firmware {
        let tmp = tempfile::tempdir().unwrap();
        let fw = if uefi { "OVMF" } else { "SeaBIOS" };
        let form = if usb { "ISO as USB stick" } else { "ISO as CD" };
        let what = format!("{form}, {fw}");
        let (lab, port) = lab(
            tmp.path(),
            &format!("{}{}", u8::from(usb), u8::from(uefi)),
            uefi,
            |f| {
                let (toml, yaml) = lab_config(f, "10.80.0.1/24", "auto");
                let path = iso_with_config(&iso, tmp.path(), &toml, Some(&yaml));
                if usb {
                    AMedium::Usb { path }
                } else {
                    AMedium::Iso { path }
                }
            },
        );
        comes_up_and_deploys(&lab, port, &what, "http://10.80.0.1:6385");
        let c = console(&lab);
        assert!(
            c.contains("config from SEEDCFG on"),
            "{what}: {}",
            tail(&c, 40)
        );
        if usb {
            assert!(
                c.contains("state persistent on /dev/sd"),
                "{what}: {}",
                tail(&c, 40)
            );
        } else {
            assert!(c.contains("state in RAM"), "{what}: {}", tail(&c, 40));
        }
        // The status screen, on the serial console without a login.
        wait_console(&lab, "provisioning  eth0 10.80.0.1/24", 30);
        wait_console(&lab, "nodes         1: 1 active", 30);
    }
}

#[test]
fn qemu_appliance_iso_as_a_cd_deploys_under_uefi() {
    iso_deploys(false);
}

#[test]
fn qemu_appliance_iso_as_a_usb_stick_deploys_under_bios_and_uefi() {
    iso_deploys(true);
}

/// A DHCPDISCOVER from `mac` as an Ethernet frame (broadcast, UDP 68 → 67).
fn discover(mac: [u8; 6], xid: u32) -> Vec<u8> {
    let mut m = v4::Message::default();
    m.set_opcode(v4::Opcode::BootRequest)
        .set_xid(xid)
        .set_flags(v4::Flags::default().set_broadcast())
        .set_chaddr(&mac);
    m.opts_mut()
        .insert(v4::DhcpOption::MessageType(v4::MessageType::Discover));
    let dhcp = m.to_vec().unwrap();
    let udp_len = 8 + dhcp.len();
    let ip_len = 20 + udp_len;
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = vec![
        0x45,
        0,
        (ip_len >> 8) as u8,
        ip_len as u8,
        0,
        0,
        0,
        0,
        64,
        17,
        0,
        0,
        0,
        0,
        0,
        0,
        255,
        255,
        255,
        255,
    ];
    let mut sum: u32 = ip
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let ck = !(sum as u16);
    ip[10..12].copy_from_slice(&ck.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[0, 68, 0, 67, (udp_len >> 8) as u8, udp_len as u8, 0, 0]);
    f.extend_from_slice(&dhcp);
    f
}

/// Send DISCOVERs for `secs` seconds; the server identifier of the first OFFER to `xid`.
fn offer_from(wire: &Wire, secs: u64) -> Option<Ipv4Addr> {
    let mac = [0x52, 0x54, 0x00, 0xaa, 0xbb, 0x01];
    let xid = 0x5eed_0001;
    let start = Instant::now();
    let mut buf = vec![0u8; 2048];
    let mut sent = Instant::now() - Duration::from_secs(10);
    while start.elapsed() < Duration::from_secs(secs) {
        if sent.elapsed() > Duration::from_secs(2) {
            wire.send_frame(&discover(mac, xid)).unwrap();
            sent = Instant::now();
        }
        let Some(n) = wire
            .recv_frame(&mut buf, Duration::from_millis(200))
            .unwrap()
        else {
            continue;
        };
        let f = &buf[..n];
        if n < 42 + 240 || f[12..14] != [0x08, 0x00] || f[23] != 17 {
            continue;
        }
        let ihl = usize::from(f[14] & 0x0f) * 4;
        let udp = 14 + ihl;
        if f[udp..udp + 4] != [0, 67, 0, 68] {
            continue;
        }
        let Ok(m) = v4::Message::decode(&mut dhcproto::Decoder::new(&f[udp + 8..])) else {
            continue;
        };
        if m.xid() != xid {
            continue;
        }
        if let Some(v4::DhcpOption::ServerIdentifier(ip)) =
            m.opts().get(v4::OptionCode::ServerIdentifier)
        {
            return Some(*ip);
        }
    }
    None
}

#[test]
fn qemu_appliance_seedcfg_config_is_honoured_and_a_broken_one_stops_dhcp() {
    let dir = built();
    let iso = dir.join("seed-appliance.iso");
    let tmp = tempfile::tempdir().unwrap();

    // A config that moves the provisioning address and sets the token (discovery on: the
    // seed answers the test's unknown MAC).
    let good = iso_with_config(
        &iso,
        &tmp.path().join("good"),
        "[provisioning]\naddress = \"10.80.0.5/24\"\n[api]\ntoken = \"field-token-1\"\n\
         [dhcp]\nmode = \"authoritative\"\ndiscovery = true\n",
        None,
    );
    let addr = wire_for("good");
    let wire = Wire::join(addr).unwrap();
    let vm = ApplianceVm::boot(
        &tmp.path().join("good-vm"),
        &options(addr, false, Medium::Cd(good)),
    );
    vm.wait_console(
        "seed-appliance: API answering at http://10.80.0.5:6385",
        600,
    );
    let (code, body) = vm.api("GET", "/v1/nodes", "field-token-1", None);
    assert_eq!(code, 200, "the config's token: {body}");
    assert!(
        !vm.console().contains("API token (generated now"),
        "no token generated when the config has one"
    );
    assert_eq!(
        offer_from(&wire, 60),
        Some(Ipv4Addr::new(10, 80, 0, 5)),
        "the appliance answers DHCP from the configured address"
    );
    drop(vm);

    // A broken one: the message on the console, no DHCP at all.
    let bad = iso_with_config(
        &iso,
        &tmp.path().join("bad"),
        "# a typo on line 3\n[provisioning]\naddress = \"10.80.0.300/24\"\n",
        None,
    );
    let addr = wire_for("bad");
    let wire = Wire::join(addr).unwrap();
    let vm = ApplianceVm::boot(
        &tmp.path().join("bad-vm"),
        &options(addr, false, Medium::Cd(bad)),
    );
    let line = vm.wait_console("CONFIG ERROR", 600);
    assert!(
        line.contains("seed.toml:3: provisioning.address:"),
        "file, line and field: {line}"
    );
    vm.wait_console("the seed is not started", 60);
    assert_eq!(offer_from(&wire, 20), None, "no DHCP from a stopped seed");
    assert!(
        !vm.console().contains("starting seed daemon"),
        "the daemon never started:\n{}",
        tail(&vm.console(), 40)
    );
}

/// The netboot form, PXE-booted by a host-mode seed (`seed netboot` on the lab's wire through
/// the userspace stack, serving the kernel + initrd to the appliance's MAC and its seed.toml by
/// `seed.config=URL`). That seed also hands out addresses, to machines it does not know
/// without boot information (`addresses_for_unknown`: the site's DHCP server), so the
/// appliance (`mode = "auto"`) finds a DHCP server on its wire and serves ProxyDHCP only;
/// node1 gets its address from the host seed and its boot information from the appliance, and
/// is inspected and deployed.
#[test]
fn qemu_appliance_netboot_form_pxe_boots_and_serves_proxy_dhcp_beside_another_server() {
    use tests::proc::Child;
    let dir = built();
    let tmp = tempfile::tempdir().unwrap();
    let http = tmp.path().join("http");
    std::fs::create_dir_all(http.join("cfg")).unwrap();
    // Real files in the served root: the HTTP server refuses a symlink that leads out of it
    // (403), so iPXE's `kernel` failed and the machine never left PXE. A hard link costs
    // nothing on one filesystem; a copy elsewhere.
    for f in ["seed-appliance.vmlinuz", "seed-appliance.initrd"] {
        if std::fs::hard_link(dir.join(f), http.join(f)).is_err() {
            std::fs::copy(dir.join(f), http.join(f)).unwrap();
        }
    }
    let (lab, port) = lab(tmp.path(), "pxe", false, |f| {
        let (toml, yaml) = lab_config(f, "10.78.0.2/24", "auto");
        std::fs::write(http.join("cfg/seed.toml"), toml).unwrap();
        std::fs::write(http.join("cfg/nodes.yaml"), yaml).unwrap();
        AMedium::Pxe
    });
    let wire = lab.file().wire;
    let mac = lab.file().appliance.as_ref().unwrap().macs[0].clone();
    let config = tmp.path().join("netboot.toml");
    std::fs::write(
        &config,
        tests::wire_config_head("10.78.0.1", &tmp.path().join("state"), &wire, false)
            + &format!(
                r#"
[dhcp]
subnet = "10.78.0.0/24"
router = "10.78.0.1"
lease_time = 600
pool = {{ start = "10.78.0.100", end = "10.78.0.150" }}
addresses_for_unknown = true

[http]
root = "{http}"
port = 8080

[[nodes]]
mac = "{mac}"
ip = "10.78.0.10"
hostname = "seed-appliance"
boot = {{ action = "kernel", kernel = "seed-appliance.vmlinuz", initrd = "seed-appliance.initrd", cmdline = "console=ttyS0,115200 seed.config=http://10.78.0.1:8080/cfg/seed.toml" }}
"#,
                http = http.display(),
            ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(tests::seed_bin());
    cmd.args(["netboot", "--config"]).arg(&config);
    let mut host = Child::spawn("seed-netboot", cmd);
    host.wait_for_log("HTTP listening on the wire", Duration::from_secs(30));

    comes_up_and_deploys(
        &lab,
        port,
        "netboot form (PXE), SeaBIOS",
        "http://10.78.0.2:6385",
    );
    let c = console(&lab);
    assert!(
        c.contains("config from seed.config=http://10.78.0.1:8080/cfg/seed.toml"),
        "{}",
        tail(&c, 40)
    );
    assert!(c.contains("state in RAM"), "{}", tail(&c, 40));
    wait_console(
        &lab,
        "DHCP          proxy: another DHCP server answers on eth0",
        30,
    );
    assert!(
        host.output().contains("10.78.0.1"),
        "the host seed served: {}",
        host.output()
    );
}
