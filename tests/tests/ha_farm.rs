//! The HA control plane with daemons and machines (issue 14): three `seed daemon`s in three
//! network namespaces on one LAN (a bridge), an etcd member beside each (Debian's etcd from the
//! offline cache), and a farm of 50 fake machines in a fourth namespace (`seed-fake-farm`: IPMI
//! BMCs on UDP, agents over HTTP, see `tests::farm`) that reach the seed at the floating
//! address only the leader holds. Operators' requests go to any daemon (followers forward
//! writes). A stack of 50 nodes deploys while:
//! - the leader is `kill -9`ed (and started again, as a follower);
//! - the next leader is `SIGSTOP`ped for three lease TTLs and then `SIGCONT`ed (the zombie);
//! - the next leader's cable is pulled at the switch for three TTLs and plugged back.
//!
//! Before those, the floating address is removed from the leader's NIC behind its back (as a
//! DHCP client renewing the machine's own lease does): the leader claims it again.
//!
//! After each a new leader takes over (the floating address moves) and the deploy goes on. At
//! the end: every node `active`, each machine got exactly one deploy command and finished
//! exactly one deploy (no deploy started over by a failover), the stack is CREATE_COMPLETE, and
//! the writes the deposed leaders tried are printed (`/metrics`: fenced by etcd, or refused
//! before they left; a deposed leader stops acting once its lease is older than the TTL, so
//! both are usually 0 here — `ha_control_plane` and `seed::ha` prove a fenced write refused). Every wait is bounded; no duration is asserted (`cargo xtask bench
//! failover` measures).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tests::daemon::TestImage;
use tests::farm::FarmSpec;
use tests::ha::{Api, Host, SeedLan, HTTP, TTL};
use tests::proc::Child;

const TOKEN: &str = "ha-farm-token";
const N: usize = 50;

/// One daemon: its host, directory and process (None while killed).
struct Seed<'a> {
    host: &'a Host,
    dir: PathBuf,
    child: Option<Child>,
}

impl Seed<'_> {
    fn start(&mut self) {
        let name = format!("seed-{}", self.host.ns.name);
        let config = self.dir.join("seed.toml");
        self.child = Some(tests::daemon::spawn(&self.host.ns, &name, &config));
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid (`ip netns exec` execs the daemon in place).
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
    }

    /// Whether this host holds the floating address.
    fn holds(&self, float: Ipv4Addr) -> bool {
        self.host.holds(float)
    }

    fn log(&self) -> String {
        self.child.as_ref().map(Child::output).unwrap_or_default()
    }
}

fn wait(what: &str, within: Duration, seeds: &[Seed], ok: impl FnMut() -> bool) {
    tests::daemon::wait(what, within, ok, || {
        seeds
            .iter()
            .map(|s| format!("---- {} ----\n{}\n", s.host.ns.name, s.log()))
            .collect()
    });
}

/// The index of the daemon holding the floating address, once exactly one does.
fn leader(seeds: &[Seed], float: Ipv4Addr) -> Option<usize> {
    let holders: Vec<usize> = (0..seeds.len())
        .filter(|&i| seeds[i].child.is_some() && seeds[i].holds(float))
        .collect();
    (holders.len() == 1).then(|| holders[0])
}

/// Take the leader out with `stop` (it keeps running: a zombie, or cut off) until another
/// holds the floating address, for at least three lease TTLs; then `resume` it and wait until
/// it lets the address go. The index of the leader taken out.
fn outage(
    seeds: &[Seed],
    float: Ipv4Addr,
    how: &str,
    stop: impl FnOnce(usize),
    resume: impl FnOnce(usize),
) -> usize {
    let l = leader(seeds, float).expect("one leader");
    stop(l);
    let at = Instant::now();
    wait(
        &format!("a new leader after {how} of the leader"),
        Duration::from_secs(60),
        seeds,
        || (0..3).any(|i| i != l && seeds[i].holds(float)),
    );
    eprintln!("{how} of seed{l}: next leader after {:?}", at.elapsed());
    std::thread::sleep(Duration::from_secs(TTL));
    resume(l);
    wait(
        &format!("the leader taken out by {how} lets the address go"),
        Duration::from_secs(30),
        seeds,
        || !seeds[l].holds(float),
    );
    l
}

#[test]
fn ha_farm_stack_survives_kill_pause_and_cut() {
    tests::require("curl");
    let t0 = Instant::now();
    let lan = SeedLan::new();
    let (sw, hosts, farm_host, float) = (&lan.sw, &lan.hosts, &lan.farm, lan.float);
    // The machines (their reservations go into every daemon's configuration).
    let nodes = lan.farm_nodes(N, |i| format!("n{i:02}"), "52:54:00:fb:00", 7000);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_specs, _members, endpoints) = lan.start_etcd(d);

    let mut seeds: Vec<Seed> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let sd = d.join(format!("seed{i}"));
            std::fs::create_dir_all(sd.join("http")).unwrap();
            TestImage::golden(
                "test",
                b"not a real image: the farm's agents only report progress",
            )
            .import(&sd.join("http/images"), &sd.join("golden"));
            // A node whose power-on died with a leader is power-cycled by the next one's boot
            // watchdog.
            let lifecycle = "[lifecycle]\nboot_timeout_secs = 15\n";
            let config = lan.config(i, &endpoints, &sd, TOKEN, lifecycle, &nodes);
            std::fs::write(sd.join("seed.toml"), config).unwrap();
            Seed {
                host: h,
                dir: sd,
                child: None,
            }
        })
        .collect();
    for s in &mut seeds {
        s.start();
    }
    wait(
        "a leader holds the floating address",
        Duration::from_secs(60),
        &seeds,
        || leader(&seeds, float).is_some(),
    );
    eprintln!("three daemons up, one leads: {:?}", t0.elapsed());

    // Something else removes the address from the leader's NIC (a DHCP client renewing the
    // machine's own lease flushes it): the leader, still leading, claims it again.
    let l = leader(&seeds, float).expect("one leader");
    seeds[l]
        .host
        .ns
        .ip(&["addr", "del", &format!("{float}/24"), "dev", "eth0"]);
    assert!(!seeds[l].holds(float));
    wait(
        "the leader claims the floating address again",
        Duration::from_secs(30),
        &seeds,
        || leader(&seeds, float) == Some(l),
    );
    assert!(
        seeds[l]
            .log()
            .contains("the floating address was removed from the NIC"),
        "{}",
        seeds[l].log()
    );

    // Their enrollment, through a daemon that may be a follower.
    let inv = lan.enrollment(&nodes);
    let api = Api {
        from: farm_host,
        token: TOKEN,
    };
    let addr = |i: usize| hosts[i].ip;
    let (code, body) = api.json(addr(0), "POST", "/v1/nodes", Some(&inv));
    assert_eq!(code, 201, "{body}");
    let spec = FarmSpec::new(format!("http://{float}:{HTTP}"), nodes, 300);
    let (_farm, status) = tests::farm::spawn(
        farm_host.ns.cmd(env!("CARGO_BIN_EXE_seed-fake-farm")),
        &spec,
        d,
    );
    for i in 0..N {
        let (code, body) = api.json(
            addr(i % 3),
            "POST",
            &format!("/v1/nodes/n{i:02}/inspect"),
            None,
        );
        assert!(code == 202 || code == 200, "{code} {body}");
    }
    wait("all available", Duration::from_secs(120), &seeds, || {
        let st = api.states(addr(1)).unwrap_or_default();
        st.len() == N && st.values().all(|s| s == "available")
    });
    eprintln!("{N} nodes inspected: {:?}", t0.elapsed());

    let template = tests::daemon::compute_template(N);
    let req = serde_json::json!({"name": "farm", "template": template}).to_string();
    let (code, body) = api.json(addr(2), "POST", "/v1/stacks", Some(&req));
    assert_eq!(code, 201, "{body}");
    let done = || {
        tests::farm::read_status(&status)
            .values()
            .filter(|s| s.deploys_done > 0)
            .count()
    };
    let mut fenced = 0;
    let mut refused = 0;
    let mut count = |api: &Api, at: Ipv4Addr| {
        fenced += api
            .metric(at, "seed_ha_fenced_writes_rejected_total")
            .unwrap_or(0);
        refused += api
            .metric(at, "seed_ha_writes_refused_locally_total")
            .unwrap_or(0);
    };
    let _ = &mut count;

    // 1. kill -9 the leader mid-deploy; it comes back as a follower.
    wait(
        "deploys under way",
        Duration::from_secs(120),
        &seeds,
        || done() >= 5,
    );
    let l = leader(&seeds, float).expect("one leader");
    seeds[l].signal(libc::SIGKILL);
    drop(seeds[l].child.take());
    // Its address stays on the dead host's NIC (nobody removes it): as after a crash of the
    // machine, the next leader claims it with gratuitous ARP; here the test drops it.
    hosts[l]
        .ns
        .ip(&["addr", "del", &format!("{float}/24"), "dev", "eth0"]);
    let killed_at = Instant::now();
    let before = done();
    wait(
        "a new leader after kill -9",
        Duration::from_secs(60),
        &seeds,
        || leader(&seeds, float).is_some_and(|n| n != l),
    );
    eprintln!(
        "kill -9 of seed{l}: next leader after {:?}",
        killed_at.elapsed()
    );
    seeds[l].start();
    wait("deploys go on", Duration::from_secs(120), &seeds, || {
        done() >= before + 5
    });

    // 2. SIGSTOP the leader past its TTL, then SIGCONT: a zombie that must not write.
    outage(
        &seeds,
        float,
        "SIGSTOP",
        |z| seeds[z].signal(libc::SIGSTOP),
        |z| seeds[z].signal(libc::SIGCONT),
    );
    let before = done();
    wait("deploys go on", Duration::from_secs(120), &seeds, || {
        done() >= (before + 5).min(N)
    });

    // 3. Pull the leader's cable for three TTLs, plug it back.
    let c = outage(
        &seeds,
        float,
        "link cut",
        |c| sw.link(&hosts[c], false),
        |c| sw.link(&hosts[c], true),
    );

    let complete = || {
        let (_, s) = api.json(addr(c), "GET", "/v1/stacks/farm", None);
        assert_ne!(s["status"], "CREATE_FAILED", "{s}");
        s["status"] == "CREATE_COMPLETE"
    };
    tests::daemon::wait(
        "CREATE_COMPLETE",
        Duration::from_secs(240),
        complete,
        || {
            // Which machines are not done, as the daemons and the farm see them, then the logs.
            let states: Vec<String> = (0..3)
                .map(|i| {
                    let st = api.states(addr(i)).unwrap_or_default();
                    let busy: Vec<_> = st.iter().filter(|(_, s)| *s != "active").collect();
                    format!("seed{i} sees not active: {busy:?}")
                })
                .collect();
            let farm = tests::farm::read_status(&status);
            let farm: Vec<String> = farm
                .iter()
                .filter(|(_, s)| s.image_boots_reported == 0)
                .map(|(n, s)| format!("{n}: {s:?}"))
                .collect();
            let logs: String = seeds
                .iter()
                .map(|s| format!("---- {} ----\n{}\n", s.host.ns.name, s.log()))
                .collect();
            format!(
                "{}\nfarm machines not booted: {farm:?}\n{logs}",
                states.join("\n")
            )
        },
    );
    eprintln!("stack complete: {:?}", t0.elapsed());
    let states = api.states(addr((c + 1) % 3)).unwrap_or_default();
    assert_eq!(states.len(), N);
    assert!(states.values().all(|s| s == "active"), "{states:?}");
    let farm = tests::farm::read_status_booted(&status, N);
    assert_eq!(farm.len(), N);
    for (n, s) in &farm {
        assert_eq!(
            (s.deploy_commands, s.deploys_done),
            (1, 1),
            "{n}: one deploy command and one deploy, failovers or not: {s:?}"
        );
        assert!(s.image_boots_reported >= 1, "{n}: {s:?}");
    }
    for i in 0..3 {
        count(&api, addr(i));
    }
    eprintln!(
        "deposed leaders' writes: {fenced} fenced by etcd, {refused} refused before leaving; {:?}",
        t0.elapsed()
    );
    for s in &mut seeds {
        drop(s.child.take());
    }
}
