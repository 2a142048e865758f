//! `seed-agent`: the deploy ramdisk's agent (started by `/init`). Brings up every NIC with DHCP,
//! prints and reports the machine's facts to the seed, then heartbeats and obeys commands.
//! It never exits on a network error: the seed may come later; it retries every few seconds.

use ramdisk::agent::{facts, Ack, Command, Heartbeat, KernelArgs, Report};
use std::path::Path;
use std::process::Command as Proc;
use std::time::Duration;

fn log(msg: &str) {
    // The console is the only log a person sees on a ramdisk: one prefixed line per event.
    println!("seed-agent: {msg}");
}

fn main() {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let args = KernelArgs::parse(&cmdline);
    let boot_mac = bring_up_network(args.bootif.as_deref());
    let facts = facts::collect(Path::new("/"));
    log(&format!(
        "facts {}",
        serde_json::to_string(&facts).unwrap_or_default()
    ));
    let Some(url) = args.url else {
        log("no seed.url= on the kernel command line: nothing to report to");
        return;
    };
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    let report = Report {
        boot_mac: boot_mac.clone().unwrap_or_default(),
        facts,
    };
    let ack: Ack = loop {
        match agent
            .post(&format!("{url}/v1/agent/facts"))
            .send_json(&report)
        {
            Ok(resp) => match resp.into_json() {
                Ok(ack) => break ack,
                Err(e) => log(&format!("bad answer to facts report: {e}")),
            },
            Err(e) => log(&format!("reporting facts to {url}: {e}; retrying in 3 s")),
        }
        std::thread::sleep(Duration::from_secs(3));
    };
    log(&format!(
        "reported facts; the seed knows this machine as {}",
        ack.node
    ));
    let hb = Heartbeat {
        boot_mac: report.boot_mac.clone(),
    };
    loop {
        std::thread::sleep(Duration::from_secs(ack.heartbeat_secs.clamp(1, 300)));
        let cmd = agent
            .post(&format!("{url}/v1/agent/heartbeat"))
            .send_json(&hb)
            .map_err(|e| e.to_string())
            .and_then(|r| r.into_json::<Command>().map_err(|e| e.to_string()));
        match cmd {
            Ok(Command::None) => {}
            Ok(Command::PowerOff) => {
                log("powering off as the seed asked");
                let _ = Proc::new("/bin/poweroff").arg("-f").status();
            }
            Ok(Command::Reboot) => {
                log("rebooting as the seed asked");
                let _ = Proc::new("/bin/reboot").arg("-f").status();
            }
            Ok(Command::Deploy(d)) => {
                log(&format!(
                    "deploy of {} asked: not implemented yet",
                    d.manifest.name
                ));
            }
            Err(e) => log(&format!("heartbeat: {e}")),
        }
    }
}

/// Bring every NIC up and ask for a lease on each (the boot NIC first) until one answers.
/// Returns the MAC of the interface that got the lease.
fn bring_up_network(bootif: Option<&str>) -> Option<String> {
    let mut nics = facts::collect(Path::new("/")).nics;
    // Give the drivers a moment to appear: modules were just loaded.
    for _ in 0..20 {
        if !nics.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
        nics = facts::collect(Path::new("/")).nics;
    }
    nics.sort_by_key(|n| Some(n.mac.as_str()) != bootif);
    for n in &nics {
        let _ = Proc::new("/bin/ip")
            .args(["link", "set", &n.name, "up"])
            .status();
    }
    for n in &nics {
        log(&format!("DHCP on {} ({})", n.name, n.mac));
        let ok = Proc::new("/bin/udhcpc")
            .args([
                "-i",
                &n.name,
                "-n",
                "-q",
                "-t",
                "5",
                "-T",
                "2",
                "-s",
                "/etc/udhcpc.script",
            ])
            .args(["-V", "seed-agent"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            log(&format!("{} is up", n.name));
            return Some(n.mac.clone());
        }
    }
    log("no interface got a DHCP lease");
    None
}
