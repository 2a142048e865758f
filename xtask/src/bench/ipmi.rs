//! `cargo xtask bench ipmi`: how fast the seed's IPMI power driver talks to a BMC, beside
//! ipmitool measured in the same run, against the lab's virtual BMC and OpenIPMI's ipmi_sim,
//! and how 1,000 in-process fake BMCs go with bounded concurrency.
//!
//! The BMCs are a one-node lab's virtual BMC and OpenIPMI's `ipmi_sim`, each on 127.0.0.1 (free
//! ports, temporary directories). Figures, for each:
//! * `seed, reused session`: Get Chassis Status round trips on one RMCP+ session;
//! * `seed, new session each`: the same with a fresh session each (ping, channel auth caps,
//!   Open Session, RAKP 1–4, privilege, then Close Session);
//! * `ipmitool one-shot`: `ipmitool -I lanplus -C 3 … chassis power status`, a process each;
//! * `fake BMCs`: power on + status on 1,000 `FakeBmc`s (1 ms answer delay), 64 at a time.

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use seed::power::{
    FakeBmc, FakePower, IpmiConfig, IpmiDriver, Password, PowerAction, PowerDriver, PowerState,
};

const USER: &str = "admin";
const PASS: &str = "password";

/// Kills ipmi_sim when the bench ends, error or not.
struct Sim {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_ipmi_sim() -> Result<Sim> {
    let dir = tempfile::tempdir().context("temporary directory")?;
    let d = dir.path();
    let port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
    // No chassis_control program: ipmi_sim answers Get Chassis Status itself, so the figures
    // are the protocol's, not a shell script's fork and exec.
    std::fs::write(
        d.join("lan.conf"),
        format!(
            "name \"seedbench\"\nset_working_mc 0x20\nstartlan 1\n  addr 127.0.0.1 {port}\n  \
             priv_limit admin\n  allowed_auths_admin none md2 md5 straight\n  \
             guid a123456789abcdefa123456789abcdef\nendlan\n\
             user 2 true \"{USER}\" \"{PASS}\" admin 32 none md2 md5 straight\n"
        ),
    )?;
    std::fs::write(
        d.join("sim.emu"),
        "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n\
         mc_enable 0x20\n",
    )?;
    std::fs::create_dir_all(d.join("state"))?;
    let child = Command::new("ipmi_sim")
        .arg("-c")
        .arg(d.join("lan.conf"))
        .arg("-f")
        .arg(d.join("sim.emu"))
        .arg("-s")
        .arg(d.join("state"))
        .arg("-n")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting ipmi_sim (cargo xtask deps installs openipmi)")?;
    Ok(Sim {
        child,
        port,
        _dir: dir,
    })
}

fn rate(n: u32, elapsed: Duration) -> f64 {
    f64::from(n) / elapsed.as_secs_f64()
}

fn line(what: &str, n: u32, elapsed: Duration) {
    println!(
        "{what:<28} {n:>6} ops  {:>8.1} ms  {:>9.1} ops/s  {:>8.3} ms/op",
        elapsed.as_secs_f64() * 1e3,
        rate(n, elapsed),
        elapsed.as_secs_f64() * 1e3 / f64::from(n)
    );
}

/// Round trips against one BMC on 127.0.0.1:`port`: the seed's driver with a reused session,
/// with a new session each time, and ipmitool one-shot.
fn measure(rt: &tokio::runtime::Runtime, what: &str, port: u16) -> Result<()> {
    let mut cfg = IpmiConfig::new("127.0.0.1", port, USER, Password::new(PASS));
    cfg.timeout = Duration::from_millis(500);
    cfg.retries = 2;
    let driver = IpmiDriver::new(cfg);

    // Wait for the BMC (bounded), which also opens the session the first figure reuses.
    let mut ready = false;
    for _ in 0..50 {
        if rt.block_on(driver.status()).is_ok() {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if !ready {
        bail!("{what} on 127.0.0.1:{port} never answered");
    }

    println!("IPMI against {what} on 127.0.0.1:{port} (Get Chassis Status)");
    let n = 500;
    let start = Instant::now();
    for _ in 0..n {
        rt.block_on(driver.status())?;
    }
    line("seed, reused session", n, start.elapsed());

    let n = 100;
    let start = Instant::now();
    for _ in 0..n {
        rt.block_on(driver.close());
        rt.block_on(driver.status())?;
    }
    line("seed, new session each", n, start.elapsed());
    rt.block_on(driver.close());

    let n = 20;
    let port = port.to_string();
    let start = Instant::now();
    for _ in 0..n {
        let out = Command::new("ipmitool")
            .args(["-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p", &port])
            .args(["-U", USER, "-P", PASS, "chassis", "power", "status"])
            .output()
            .context("running ipmitool (cargo xtask deps installs it)")?;
        if !out.status.success() {
            bail!("ipmitool failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    line("ipmitool one-shot", n, start.elapsed());
    Ok(())
}

/// Run the IPMI benchmark and print its table.
pub fn run() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // The lab's own virtual BMC (its node stays off: status never starts QEMU).
    let tmp = tempfile::tempdir()?;
    let mut plan = qemu::spec::Plan::new(&format!("bench{}", std::process::id()), 1);
    plan.disks_gib = vec![];
    plan.bmc_base_port = 0;
    let lab = qemu::Lab::create(tmp.path(), &plan, qemu::node::RunOptions::default())
        .context("creating a one-node lab")?;
    let port = lab.file().nodes[0].bmc.port;
    measure(&rt, "the lab's virtual BMC", port)?;
    drop(lab);

    let sim = start_ipmi_sim()?;
    measure(&rt, "OpenIPMI's ipmi_sim", sim.port)?;
    drop(sim);

    // 1,000 fake BMCs, 64 in flight at a time.
    let (count, limit) = (1000u32, 64usize);
    let bmcs: Vec<Arc<FakeBmc>> = (0..count)
        .map(|i| {
            let b = FakeBmc::new(format!("node{i}"), USER, Password::new(PASS));
            b.set_delay(Duration::from_millis(1));
            b
        })
        .collect();
    let start = Instant::now();
    let on = rt.block_on(async {
        let gate = Arc::new(tokio::sync::Semaphore::new(limit));
        let mut set = tokio::task::JoinSet::new();
        for b in &bmcs {
            let d = FakePower::new(b.clone(), USER, Password::new(PASS));
            let gate = gate.clone();
            set.spawn(async move {
                let _permit = gate.acquire().await.expect("semaphore open");
                d.power(PowerAction::On).await?;
                d.status().await
            });
        }
        let mut on = 0u32;
        while let Some(r) = set.join_next().await {
            if r.context("fake BMC task")?? == PowerState::On {
                on += 1;
            }
        }
        anyhow::Ok(on)
    })?;
    println!("{count} fake BMCs, {limit} at a time, 1 ms answer delay (power on + status)");
    line("fake BMCs", count * 2, start.elapsed());
    if on != count {
        bail!("only {on} of {count} fake machines report power on");
    }
    Ok(())
}
