//! The floating provisioning address moves with leadership (issue 14): on one LAN (a bridge in
//! a switch namespace), host `a` claims it; a neighbour learns it at `a`'s MAC (ping); `a`
//! releases it and `b` claims it: `b`'s gratuitous ARP updates the neighbour's entry to `b`'s
//! MAC without the neighbour asking, and the neighbour reaches the address at `b`. Removing
//! `a`'s own address (a dropped DHCP lease) leaves the floating address in place.

use seed::ha::float::FloatingAddress;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use tests::ha::{in_netns, Switch};
use tests::netns::Netns;

/// The word after `marker` in what `ip ARGS` prints in `ns`, if any.
fn ip_word_after(ns: &Netns, args: &[&str], marker: &str) -> Option<String> {
    let out = ns.cmd("ip").args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split(marker)
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .map(str::to_string)
}

fn mac_of(ns: &Netns) -> String {
    ip_word_after(ns, &["-o", "link", "show", "eth0"], "link/ether ").unwrap_or_default()
}

/// The neighbour entry (MAC) `ns` holds for `ip`, if any.
fn neighbour(ns: &Netns, ip: Ipv4Addr) -> Option<String> {
    let ip = ip.to_string();
    ip_word_after(ns, &["neigh", "show", &ip, "dev", "eth0"], "lladdr ")
}

/// Whether `ns` reaches `ip` (busybox's ping; a few tries: the LAN's ports have just come up).
fn ping(ns: &Netns, ip: Ipv4Addr) -> bool {
    (0..5).any(|_| {
        let o = ns
            .cmd(tests::require("busybox"))
            .args(["ping", "-c", "1", "-W", "1", &ip.to_string()])
            .output()
            .unwrap();
        if !o.status.success() {
            eprintln!(
                "ping {ip}: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        o.status.success()
    })
}

#[test]
fn ha_floating_address_moves_with_gratuitous_arp() {
    let sw = Switch::new();
    let a = sw.attach("fa", 11);
    let b = sw.attach("fb", 12);
    let n = sw.attach("fn", 20);
    let o = sw.net.octets();
    let float = Ipv4Addr::new(o[0], o[1], o[2], 1);
    let fa = FloatingAddress {
        iface: "eth0".into(),
        ip: float,
        prefix: 24,
    };

    let f = fa.clone();
    in_netns(&a.ns, move || f.claim()).expect("a claims");
    let f = fa.clone();
    assert!(in_netns(&a.ns, move || f.held()).unwrap(), "a holds it");
    let f = fa.clone();
    assert!(!in_netns(&b.ns, move || f.held()).unwrap(), "b does not");
    assert!(ping(&n.ns, float), "the neighbour reaches the address at a");
    assert_eq!(neighbour(&n.ns, float), Some(mac_of(&a.ns)));
    // a's own address goes (as when its DHCP lease is dropped): the floating address, in the
    // same subnet, stays (promote_secondaries set by the claim).
    a.ns.ip(&["addr", "del", &format!("{}/24", a.ip), "dev", "eth0"]);
    let f = fa.clone();
    assert!(
        in_netns(&a.ns, move || f.held()).unwrap(),
        "the floating address went with the NIC's own"
    );

    // Linux ignores a neighbour update within 1 s (locktime) of the last one.
    std::thread::sleep(Duration::from_millis(1100));
    let f = fa.clone();
    in_netns(&a.ns, move || f.release()).expect("a releases");
    let f = fa.clone();
    in_netns(&a.ns, move || f.release()).expect("releasing twice is fine");
    let f = fa.clone();
    assert!(!in_netns(&a.ns, move || f.held()).unwrap(), "a let it go");
    let f = fa.clone();
    in_netns(&b.ns, move || f.claim()).expect("b claims");
    // The neighbour never asked: only b's gratuitous ARP can have moved its entry.
    let want = mac_of(&b.ns);
    let t = Instant::now();
    while neighbour(&n.ns, float).as_deref() != Some(want.as_str()) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the neighbour still has {:?} for {float}, b is {want}",
            neighbour(&n.ns, float)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ping(&n.ns, float), "the neighbour reaches the address at b");
}
