//! The seed appliance end to end (`cargo xtask appliance` builds what these boot): the hybrid
//! ISO as a CD and as a USB stick under SeaBIOS and OVMF, its SEEDCFG config honoured or
//! refused, and the netboot form PXE-booted by a host-mode seed. The appliance VM sits on a
//! lab's provisioning wire (QEMU multicast on 127.0.0.1) with no route out: its only other NIC
//! is QEMU's user network with `restrict=on`, used for a hostfwd to its API.
//!
//! Each case prints appliance power-on → API answering (a figure, not an assertion).

use dhcproto::{v4, Decodable, Encodable};
use qemu::wire::{Wire, WireAddr};
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

/// Boot, wait for the API, check it answers with the token the console showed; the seconds
/// from power-on to the API answering.
fn boot_to_api(vm: &ApplianceVm, what: &str) -> f64 {
    vm.wait_console("seed-appliance: API answering at", 600);
    let secs = vm.started.elapsed().as_secs_f64();
    let token = vm.console_token();
    let (code, body) = vm.api("GET", "/v1/nodes", &token, None);
    assert_eq!(code, 200, "GET /v1/nodes: {body}");
    let (code, _) = vm.api("GET", "/v1/nodes", "wrong-token", None);
    assert_eq!(code, 401, "a wrong token is refused");
    println!("appliance {what}: power-on → API answering {secs:.1} s");
    secs
}

/// The ISO on `medium` under SeaBIOS, then OVMF: up, API answering, config from SEEDCFG, state
/// where the medium allows.
fn iso_boots(usb: bool) {
    let dir = built();
    let iso = dir.join("seed-appliance.iso");
    let tmp = tempfile::tempdir().unwrap();
    for uefi in [false, true] {
        let fw = if uefi { "OVMF" } else { "SeaBIOS" };
        let form = if usb { "ISO as USB stick" } else { "ISO as CD" };
        let what = format!("{form}, {fw}");
        let medium = if usb {
            Medium::Usb(iso.clone())
        } else {
            Medium::Cd(iso.clone())
        };
        let vm = ApplianceVm::boot(
            &tmp.path().join(format!("{usb}-{uefi}")),
            &options(wire_for(&format!("{usb}{uefi}")), uefi, medium),
        );
        boot_to_api(&vm, &what);
        let console = vm.console();
        let shown = || tail(&console, 40);
        assert!(
            console.contains("config from SEEDCFG on"),
            "{what}: {}",
            shown()
        );
        if usb {
            assert!(
                console.contains("state persistent on /dev/sd"),
                "{what}: {}",
                shown()
            );
        } else {
            assert!(console.contains("state in RAM"), "{what}: {}", shown());
        }
        // The status screen shows on the serial console without a login.
        vm.wait_console("provisioning  eth0 10.80.0.1/24", 30);
    }
}

#[test]
fn qemu_appliance_iso_boots_as_a_cd_under_bios_and_uefi() {
    iso_boots(false);
}

#[test]
fn qemu_appliance_iso_boots_as_a_usb_stick_under_bios_and_uefi() {
    iso_boots(true);
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

    // A config that moves the provisioning address and sets the token.
    let good = iso_with_config(
        &iso,
        &tmp.path().join("good"),
        "[provisioning]\naddress = \"10.80.0.5/24\"\n[api]\ntoken = \"field-token-1\"\n\
         [dhcp]\nmode = \"authoritative\"\n",
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

/// The netboot form: a host-mode seed (`seed netboot` on the wire, the userspace stack) serves
/// the appliance's kernel + initrd to its MAC, and its seed.toml by `seed.config=URL`.
#[test]
fn qemu_appliance_netboot_form_pxe_boots_from_a_host_seed() {
    use tests::proc::Child;
    let dir = built();
    let tmp = tempfile::tempdir().unwrap();
    let addr = wire_for("pxe");
    let http = tmp.path().join("http");
    std::fs::create_dir_all(http.join("cfg")).unwrap();
    for f in ["seed-appliance.vmlinuz", "seed-appliance.initrd"] {
        std::os::unix::fs::symlink(dir.join(f), http.join(f)).unwrap();
    }
    // The host seed owns the addresses: the appliance serves ProxyDHCP beside it.
    std::fs::write(
        http.join("cfg/seed.toml"),
        "[provisioning]\naddress = \"10.78.0.2/24\"\n[dhcp]\nmode = \"proxy\"\n\
         [api]\ntoken = \"pxe-token-1\"\n",
    )
    .unwrap();
    let config = tmp.path().join("netboot.toml");
    std::fs::write(
        &config,
        format!(
            r#"
server_ip = "10.78.0.1"
state_dir = "{state}"

[wire]
kind = "qemu-mcast"
group = "{group}"
port = {port}

[dhcp]
subnet = "10.78.0.0/24"
router = "10.78.0.1"
lease_time = 600
pool = {{ start = "10.78.0.100", end = "10.78.0.150" }}

[http]
root = "{http}"
port = 8080

[[nodes]]
mac = "{mac}"
ip = "10.78.0.10"
hostname = "seed-appliance"
boot = {{ action = "kernel", kernel = "seed-appliance.vmlinuz", initrd = "seed-appliance.initrd", cmdline = "console=ttyS0,115200 seed.config=http://10.78.0.1:8080/cfg/seed.toml" }}
"#,
            state = tmp.path().join("state").display(),
            group = addr.group,
            port = addr.port,
            http = http.display(),
            mac = APPLIANCE_MAC,
        ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(tests::seed_bin());
    cmd.args(["netboot", "--config"]).arg(&config);
    let mut host = Child::spawn("seed-netboot", cmd);
    host.wait_for_log("HTTP listening on the wire", Duration::from_secs(30));

    let vm = ApplianceVm::boot(&tmp.path().join("vm"), &options(addr, false, Medium::Pxe));
    vm.wait_console(
        "seed-appliance: API answering at http://10.78.0.2:6385",
        900,
    );
    let secs = vm.started.elapsed().as_secs_f64();
    let console = vm.console();
    assert!(
        console.contains("config from seed.config=http://10.78.0.1:8080/cfg/seed.toml"),
        "{}",
        tail(&console, 40)
    );
    assert!(console.contains("state in RAM"), "{}", tail(&console, 40));
    let (code, body) = vm.api("GET", "/v1/nodes", "pxe-token-1", None);
    assert_eq!(code, 200, "{body}");
    println!("appliance netboot form, SeaBIOS + iPXE: power-on → API answering {secs:.1} s");
}
