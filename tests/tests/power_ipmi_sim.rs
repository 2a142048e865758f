//! The seed's IPMI power driver and `seed power` / `seed bootdev` against OpenIPMI's `ipmi_sim`
//! as the BMC, on 127.0.0.1, and against a BMC that never answers.
//!
//! `ipmi_sim` runs with a temporary lan.conf and emulator file; its `chassis_control` program
//! is a small shell script that keeps the chassis power and the boot device in files, so each
//! test observes what the BMC was told to do, not only what the driver reports.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use seed::power::{
    BootDevice, IpmiConfig, IpmiDriver, Password, PowerAction, PowerDriver, PowerError, PowerState,
};
use tests::proc::Child;

const USER: &str = "admin";
const PASS: &str = "s3cret-pw";

/// The chassis: `get power|boot` prints `power:N` / `boot:DEV`, `set power N|boot DEV|…` stores.
const CHASSIS_SCRIPT: &str = r#"#!/bin/sh
dir=$(dirname "$0")
echo "$*" >> "$dir/chassis.log"
shift
op=$1; shift
case $op in
get)
  for p in "$@"; do
    case $p in
      power) if [ -f "$dir/power" ]; then echo "power:$(cat "$dir/power")"; else echo "power:0"; fi;;
      boot) if [ -f "$dir/boot" ]; then echo "boot:$(cat "$dir/boot")"; else echo "boot:default"; fi;;
      *) echo "Invalid parameter: $p"; exit 1;;
    esac
  done;;
set)
  while [ $# -ge 2 ]; do
    case $1 in
      power) echo "$2" > "$dir/power";;
      boot) echo "$2" > "$dir/boot";;
    esac
    shift 2
  done;;
esac
exit 0
"#;

/// One `ipmi_sim` on 127.0.0.1 with its own state directory; killed on drop.
struct Sim {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Sim {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_udp_port();
        let mut sim = Sim {
            dir,
            port,
            child: None,
        };
        sim.spawn();
        sim
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// (Re)start ipmi_sim on the same port and files; waits until it answers.
    fn spawn(&mut self) {
        let ipmi_sim = tests::require("ipmi_sim");
        let d = self.dir.path();
        let script = d.join("chassis.sh");
        std::fs::write(&script, CHASSIS_SCRIPT).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(
            d.join("lan.conf"),
            format!(
                "name \"seedtest\"\n\
                 set_working_mc 0x20\n\
                 startlan 1\n\
                 \x20 addr 127.0.0.1 {port}\n\
                 \x20 priv_limit admin\n\
                 \x20 allowed_auths_callback none md2 md5 straight\n\
                 \x20 allowed_auths_user none md2 md5 straight\n\
                 \x20 allowed_auths_operator none md2 md5 straight\n\
                 \x20 allowed_auths_admin none md2 md5 straight\n\
                 \x20 guid a123456789abcdefa123456789abcdef\n\
                 endlan\n\
                 chassis_control \"{script} 0x20\"\n\
                 user 2 true \"{USER}\" \"{PASS}\" admin 32 none md2 md5 straight\n",
                port = self.port,
                script = script.display(),
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("sim.emu"),
            "mc_setbmc 0x20\n\
             mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n\
             mc_enable 0x20\n",
        )
        .unwrap();
        let state = d.join("state");
        std::fs::create_dir_all(&state).unwrap();
        let mut cmd = Command::new(ipmi_sim);
        cmd.arg("-c")
            .arg(d.join("lan.conf"))
            .arg("-f")
            .arg(d.join("sim.emu"))
            .arg("-s")
            .arg(&state)
            .arg("-n");
        self.child = Some(Child::spawn("ipmi_sim", cmd));
        self.wait_ready();
    }

    fn stop(&mut self) {
        self.child = None;
    }

    /// Poll with short-lived drivers until a session opens (bounded: 100 tries).
    fn wait_ready(&mut self) {
        let rt = runtime();
        for _ in 0..100 {
            let d = self.driver_with(PASS, Duration::from_millis(200), 0);
            if rt.block_on(d.status()).is_ok() {
                return;
            }
            let child = self.child.as_mut().expect("ipmi_sim started");
            assert!(child.is_running(), "ipmi_sim exited:\n{}", child.output());
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "ipmi_sim on 127.0.0.1:{} never answered:\n{}",
            self.port,
            self.child.as_ref().map(|c| c.output()).unwrap_or_default()
        );
    }

    fn driver_with(&self, password: &str, timeout: Duration, retries: u32) -> IpmiDriver {
        let mut cfg = IpmiConfig::new("127.0.0.1", self.port, USER, Password::new(password));
        cfg.timeout = timeout;
        cfg.retries = retries;
        IpmiDriver::new(cfg)
    }

    fn driver(&self) -> IpmiDriver {
        self.driver_with(PASS, Duration::from_millis(500), 2)
    }

    /// What the chassis script was last told, or "" if never.
    fn chassis_file(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    fn bmc(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    s.local_addr().unwrap().port()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Run `seed ARGS` with the password in the environment; bounded: killed after 60 s.
fn seed(args: &[&str], password: Option<&str>) -> Output {
    let mut cmd = Command::new(tests::seed_bin());
    cmd.args(args).env_remove("SEED_BMC_PASSWORD");
    if let Some(p) = password {
        cmd.env("SEED_BMC_PASSWORD", p);
    }
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn seed");
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "seed {args:?} did not finish within 60 s: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn ipmi_sim_power_on_off_status_through_the_driver() {
    let sim = Sim::start();
    let rt = runtime();
    let d = sim.driver();
    assert_eq!(rt.block_on(d.status()).unwrap(), PowerState::Off);

    rt.block_on(d.power(PowerAction::On)).unwrap();
    assert_eq!(sim.chassis_file("power"), "1");
    assert_eq!(rt.block_on(d.status()).unwrap(), PowerState::On);
    let status = rt.block_on(d.chassis_status()).unwrap();
    assert_eq!(status.power, PowerState::On);
    assert!(!status.main_power_fault);

    rt.block_on(d.power(PowerAction::Off)).unwrap();
    assert_eq!(sim.chassis_file("power"), "0");
    assert_eq!(rt.block_on(d.status()).unwrap(), PowerState::Off);

    // Through a trait object, as the daemon holds it.
    let dynd: std::sync::Arc<dyn PowerDriver> = std::sync::Arc::new(sim.driver());
    rt.block_on(dynd.power(PowerAction::On)).unwrap();
    assert_eq!(sim.chassis_file("power"), "1");
}

#[test]
fn ipmi_sim_boot_device_for_each_device() {
    let sim = Sim::start();
    let rt = runtime();
    let d = sim.driver();
    // ipmi_sim hands the boot flags to its chassis program under these names.
    let cases = [
        (BootDevice::Pxe, "pxe"),
        (BootDevice::Cdrom, "cdrom"),
        (BootDevice::Bios, "bios"),
        (BootDevice::Disk, "default"),
    ];
    for (device, name) in cases {
        for persistent in [false, true] {
            rt.block_on(d.set_boot_device(device, persistent)).unwrap();
            assert_eq!(
                sim.chassis_file("boot"),
                name,
                "{device} persistent={persistent}"
            );
            let flags = rt.block_on(d.boot_flags()).unwrap();
            assert_eq!(flags.device, Some(device), "{flags:?}");
        }
    }
}

#[test]
fn ipmi_sim_wrong_password_is_a_credentials_error() {
    let sim = Sim::start();
    let rt = runtime();
    let d = sim.driver_with("not-the-password", Duration::from_millis(500), 2);
    let e = rt.block_on(d.status()).unwrap_err();
    assert!(matches!(e, PowerError::Credentials { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains(&sim.bmc()), "{msg}");
    assert!(msg.contains("credentials"), "{msg}");
    assert!(!msg.contains("not-the-password"), "{msg}");
    // Nothing was done to the chassis.
    assert_eq!(sim.chassis_file("power"), "");
}

#[test]
fn ipmi_sim_session_is_reopened_after_the_bmc_restarts() {
    let mut sim = Sim::start();
    let rt = runtime();
    let d = sim.driver();
    rt.block_on(d.power(PowerAction::On)).unwrap();
    // The new ipmi_sim knows nothing of the driver's session: the next call times out on it,
    // then opens a fresh one.
    sim.stop();
    sim.spawn();
    assert_eq!(rt.block_on(d.status()).unwrap(), PowerState::On);
    rt.block_on(d.power(PowerAction::Off)).unwrap();
    assert_eq!(sim.chassis_file("power"), "0");
}

#[test]
fn ipmi_sim_sessions_are_closed_so_slots_do_not_run_out() {
    // ipmi-rs never closes sessions; ipmi_sim refuses new ones after a few dozen. The driver's
    // close() frees the slot, so a hundred open/close rounds keep working.
    let sim = Sim::start();
    let rt = runtime();
    let d = sim.driver();
    for round in 0..100 {
        let state = rt.block_on(d.status());
        assert!(state.is_ok(), "round {round}: {state:?}");
        rt.block_on(d.close());
    }
}

#[test]
fn seed_power_and_bootdev_commands_against_ipmi_sim() {
    let sim = Sim::start();
    let bmc = sim.bmc();

    let o = seed(&["power", "status", "--bmc", &bmc, "-U", USER], Some(PASS));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "chassis power is off");

    let o = seed(&["power", "on", "--bmc", &bmc, "-U", USER], Some(PASS));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("{bmc}: power on requested"));
    assert_eq!(sim.chassis_file("power"), "1");

    // A lab node resolved through lab.json (credentials from the lab).
    let lab = tempfile::tempdir().unwrap();
    write_lab(lab.path(), sim.port);
    let lab_dir = lab.path().to_str().unwrap();
    let o = seed(&["power", "status", "node1", "--lab-dir", lab_dir], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "node1: power on");

    let o = seed(&["bootdev", "pxe", "node1", "--lab-dir", lab_dir], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "node1: boot device pxe (next boot)");
    assert_eq!(sim.chassis_file("boot"), "pxe");

    let o = seed(
        &[
            "bootdev",
            "cdrom",
            "--persistent",
            "--bmc",
            &bmc,
            "-P",
            PASS,
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("{bmc}: boot device cdrom (every boot)"));
    assert_eq!(sim.chassis_file("boot"), "cdrom");

    let o = seed(&["power", "off", "node1", "--lab-dir", lab_dir], None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "node1: power off requested");
    assert_eq!(sim.chassis_file("power"), "0");

    // Unknown node: a clear error naming the nodes there are.
    let o = seed(&["power", "status", "node9", "--lab-dir", lab_dir], None);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no node \"node9\""), "{}", stderr(&o));
    assert!(stderr(&o).contains("node1"), "{}", stderr(&o));

    // Wrong password: one clear line, exit code non-zero, password not printed.
    let o = seed(&["power", "on", "--bmc", &bmc], Some("wrong-pass-123"));
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "BMC {bmc} rejected the credentials of user \"admin\""
        )),
        "{err}"
    );
    assert!(!err.contains("wrong-pass-123"), "{err}");
    assert_eq!(sim.chassis_file("power"), "0");
}

fn write_lab(dir: &Path, port: u16) {
    let lab = serde_json::json!({
        "name": "default",
        "wire": { "group": "230.0.71.5", "port": 47123 },
        "nodes": [{
            "name": "node1",
            "macs": ["52:54:00:5e:00:01"],
            "bmc": { "address": "127.0.0.1", "port": port, "username": USER, "password": PASS },
            "firmware": "bios",
            "memory_mib": 512, "cpus": 1, "disks_gib": [4]
        }]
    });
    std::fs::write(dir.join("lab.json"), lab.to_string()).unwrap();
}

#[test]
fn unresponsive_bmc_is_unreachable_naming_its_address() {
    // A UDP socket on 127.0.0.1 that never answers (kept open so nothing is "refused").
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let bmc = format!("127.0.0.1:{port}");

    let mut cfg = IpmiConfig::new("127.0.0.1", port, USER, Password::new(PASS));
    cfg.timeout = Duration::from_millis(200);
    cfg.retries = 2;
    let d = IpmiDriver::new(cfg);
    let e = runtime().block_on(d.power(PowerAction::On)).unwrap_err();
    match &e {
        PowerError::Unreachable {
            bmc: b, attempts, ..
        } => {
            assert_eq!(b, &bmc);
            assert_eq!(*attempts, 3);
        }
        other => panic!("expected unreachable, got {other:?}"),
    }

    // The command line: bounded by --timeout and --retries (the helper kills it after 60 s).
    let o = seed(
        &[
            "power",
            "status",
            "--bmc",
            &bmc,
            "--timeout",
            "0.3",
            "--retries",
            "1",
        ],
        Some(PASS),
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "BMC {bmc} is unreachable: no answer after 2 attempt(s)"
        )),
        "{err}"
    );
    assert!(!err.contains(PASS), "{err}");
    // The BMC socket saw the RMCP presence pings: the driver did try, twice.
    silent.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 512];
    let mut pings = 0;
    while silent.recv(&mut buf).is_ok() {
        pings += 1;
    }
    assert!(
        pings >= 3 + 2,
        "expected 5 pings (3 from the driver, 2 from seed), got {pings}"
    );
}
