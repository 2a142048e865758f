//! The laptop NIC without QEMU: `seed netboot` on a veth through AF_PACKET (`[wire] kind =
//! "af-packet"`), the veth without any address — the seed owns 10.x.y.1 on its own stack —
//! and a client namespace on the other end with the kernel's usual offloads on. The client's
//! TCP segments reach the seed with their checksum not yet computed (the kernel left it to the
//! "hardware"); the seed completes them, so curl gets its file, the counters show frames
//! completed, and the veth still has no IPv4 address. udhcpc gets its reservation too.

use std::time::Duration;
use tests::netns::Lan;

const MAC: &str = "52:54:00:1a:b0:01";

#[test]
fn laptop_nic_answers_dhcp_and_tcp_with_checksum_offload_on() {
    let lan = Lan::new(Some(MAC));
    // The seed's side gets no address: its stack owns the server address.
    lan.server.ip(&["addr", "flush", "dev", &lan.server_if]);
    let tmp = tempfile::tempdir().unwrap();
    let http = tmp.path().join("http");
    std::fs::create_dir_all(&http).unwrap();
    let big: Vec<u8> = (0..(2u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(http.join("big.bin"), &big).unwrap();
    let cfg = tmp.path().join("netboot.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"server_ip = "{srv}"
state_dir = "{state}"

[wire]
kind = "af-packet"
ifname = "{ifname}"

[dhcp]
subnet = "{net}/24"
lease_time = 600

[http]
root = "{root}"
port = 8080

[[nodes]]
mac = "{MAC}"
ip = "{ip}"
hostname = "laptop-client"
"#,
            srv = lan.server_ip(),
            state = tmp.path().join("state").display(),
            ifname = lan.server_if,
            net = lan.net,
            root = http.display(),
            ip = lan.addr(10),
        ),
    )
    .unwrap();
    let seed = tests::spawn_netboot(
        &lan.server,
        &cfg,
        &["HTTP listening on the wire"],
        Duration::from_secs(120),
    );

    // DHCP, as before this worked: the reservation.
    let bound = tests::udhcpc(&lan, tmp.path(), &[]).expect("a lease from the seed");
    assert_eq!(bound["ip"], lan.addr(10).to_string(), "{bound:?}");
    lan.address_client(10);

    // TCP with offloaded checksums: the file, whole.
    let to = tmp.path().join("got.bin");
    let out = lan
        .client
        .cmd(tests::require("curl"))
        .args(["-sS", "--fail", "--max-time", "60", "-o"])
        .arg(&to)
        .arg(format!("http://{}:8080/big.bin", lan.server_ip()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}\n{}", seed.output());
    assert!(
        std::fs::read(&to).unwrap() == big,
        "the file arrived intact"
    );
    let (code, metrics) = lan.client_get(8080, "/metrics");
    assert_eq!(code, 200);
    let completed: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wire_rx_csum_completed_total "))
        .and_then(|v| v.parse().ok())
        .expect("the counter");
    assert!(completed > 0, "offloaded frames were completed:\n{metrics}");

    // The veth has no IPv4 address: the host's configuration was never touched.
    let out = lan
        .server
        .cmd("ip")
        .args(["-4", "addr", "show", "dev", &lan.server_if])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("inet "), "{text}");
}
