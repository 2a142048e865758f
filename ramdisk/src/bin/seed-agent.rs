//! `seed-agent`: the deploy ramdisk's agent (started by `/init`). Brings up every NIC with DHCP,
//! prints and reports the machine's facts to the seed, then heartbeats and obeys commands.
//! It never exits on a network error: the seed may come later; it retries every few seconds.
//!
//! A `deploy` command runs in a thread (`ramdisk::agent::deploy`); its progress is posted to
//! `{url}/v1/agent/progress` about once a second, and each answer is obeyed like a heartbeat's.
//! After `done` (or `failed`) the agent keeps heartbeating: the seed power-cycles it or sends
//! `reboot`.
//!
//! With an `https://` `seed.url=`, every call goes over TLS to a server whose certificate chains
//! to the CA whose SHA-256 is `seed.ca=` (`ramdisk::tls`); nothing else is trusted.
//!
//! Every agent call carries `Authorization: Bearer <seed.token=>` (the seed's per-boot token for
//! this node); a command line without a token (an older seed) still works, with one warning.
//!
//! A `wipe` command (cleaning after a delete) runs the same way (`ramdisk::agent::wipe`), in the
//! same thread slot: one piece of disk work at a time.

use ramdisk::agent::deploy;
use ramdisk::agent::{facts, Ack, Command, DeployCommand, Heartbeat, KernelArgs, Phase};
use ramdisk::agent::{wipe, Progress, Report, WipeCommand};
use std::path::Path;
use std::process::Command as Proc;
use std::sync::mpsc;
use std::time::Duration;

fn log(msg: &str) {
    // The console is the only log a person sees on a ramdisk: one prefixed line per event.
    println!("seed-agent: {msg}");
}

fn main() {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let args = KernelArgs::parse(&cmdline);
    let auth = args.authorization();
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
    if auth.is_none() {
        log("warning: no seed.token= on the kernel command line; calling the seed without one");
    }
    let http = ramdisk::tls::SeedClient::new(&url, args.ca.as_deref(), || {
        ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            // A refusal's reason is in its body: read it rather than a bare status error.
            .http_status_as_error(false)
            .proxy(None)
    });
    let http = match http {
        Ok(h) => h,
        Err(e) => {
            // A bad pin never gets better: say so on the console and stay (the seed's timeout
            // fails the step with what it knows).
            log(&format!(
                "seed.url={url}: {}; not calling the seed",
                e.describe()
            ));
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    };
    if url.starts_with("https://") {
        log(&format!(
            "calling the seed over HTTPS, trusting only the CA with SHA-256 {}",
            args.ca.as_deref().unwrap_or_default()
        ));
    }
    let agent = Client { http, auth };
    let report = Report {
        boot_mac: boot_mac.clone().unwrap_or_default(),
        facts,
    };
    let ack: Ack = loop {
        match agent.post(&format!("{url}/v1/agent/facts"), &report) {
            Ok(ack) => break ack,
            Err(e) => log(&format!("reporting facts: {e}; retrying in 3 s")),
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
    let interval = Duration::from_secs(ack.heartbeat_secs.clamp(1, 300));
    let (tx, rx) = mpsc::channel::<Progress>();
    let mut deploying: Option<std::thread::JoinHandle<()>> = None;
    // The seed repeats a wipe until its "done" lands: a finished one is not run again.
    let mut wiped_op: Option<u64> = None;
    loop {
        let cmd = match rx.recv_timeout(interval) {
            Ok(mut p) => {
                // Only the latest report matters when posting fell behind; a final one
                // (done/failed) is always the last the thread sends.
                while let Ok(next) = rx.try_recv() {
                    p = next;
                }
                let last = matches!(p.phase, Phase::Done | Phase::Failed);
                post_progress(&agent, &url, &p, if last { 40 } else { 1 })
            }
            Err(_) => agent.post(&format!("{url}/v1/agent/heartbeat"), &hb),
        };
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
                if deploying.as_ref().is_some_and(|t| !t.is_finished()) {
                    log(&format!("deploy op {} asked while one runs: ignored", d.op));
                } else {
                    let tx = tx.clone();
                    let mac = report.boot_mac.clone();
                    deploying = Some(std::thread::spawn(move || run_deploy(*d, mac, tx)));
                }
            }
            Ok(Command::Wipe(w)) => {
                if wiped_op == Some(w.op) {
                    // Already carried out (or running).
                } else if deploying.as_ref().is_some_and(|t| !t.is_finished()) {
                    log(&format!(
                        "wipe op {} asked while disk work runs: ignored",
                        w.op
                    ));
                } else {
                    let tx = tx.clone();
                    let mac = report.boot_mac.clone();
                    wiped_op = Some(w.op);
                    deploying = Some(std::thread::spawn(move || run_wipe(w, mac, tx)));
                }
            }
            Err(e) => log(&format!("seed: {e}")),
        }
    }
}

/// The HTTP client of the agent calls, with this boot's `Authorization` (no `Debug`: secret).
struct Client {
    http: ramdisk::tls::SeedClient,
    auth: Option<String>,
}

impl Client {
    /// POST `body` as JSON to an agent endpoint (with the token when there is one): the answer,
    /// or what went wrong (with the seed's own reason when it refused).
    fn post<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        body: &impl serde::Serialize,
    ) -> Result<T, String> {
        let http = self
            .http
            .http()
            .map_err(|e| format!("{url}: {}", e.describe()))?;
        let mut r = http.post(url);
        if let Some(a) = &self.auth {
            r = r.header("Authorization", a);
        }
        let mut resp = r.send_json(body).map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.body_mut().read_to_string().unwrap_or_default();
            let reason = serde_json::from_str::<api::ErrorBody>(&text).map_or(text, |b| b.error);
            return Err(format!("{url}: {} {}", status.as_u16(), reason.trim()));
        }
        resp.body_mut()
            .read_json()
            .map_err(|e| format!("the answer of {url}: {e}"))
    }
}

/// POST one progress report, `tries` times at most (3 s apart); the answer is a command.
fn post_progress(agent: &Client, url: &str, p: &Progress, tries: u32) -> Result<Command, String> {
    let mut last = String::new();
    for i in 0..tries {
        if i > 0 {
            std::thread::sleep(Duration::from_secs(3));
        }
        match agent.post(&format!("{url}/v1/agent/progress"), p) {
            Ok(c) => return Ok(c),
            Err(e) => {
                log(&format!("progress report: {e}"));
                last = e;
            }
        }
    }
    Err(last)
}

/// The deploy thread: write the image, sending progress, then `done` or `failed`.
fn run_deploy(d: DeployCommand, boot_mac: String, tx: mpsc::Sender<Progress>) {
    log(&format!(
        "deploying {} {} (op {}) from {}",
        d.manifest.name, d.manifest.version, d.op, d.stream_url
    ));
    let progress = |phase, bytes, total, error| Progress {
        boot_mac: boot_mac.clone(),
        op: d.op,
        phase,
        bytes,
        total,
        error,
    };
    let disks = facts::collect(Path::new("/")).disks;
    let mut last_phase = None;
    let started = std::time::Instant::now();
    let result = deploy::deploy(&d, &disks, &deploy::Env::ramdisk(), &mut |phase, b, t| {
        if last_phase != Some(phase) {
            log(&format!(
                "deploy: {phase:?} at {:.1} s",
                started.elapsed().as_secs_f64()
            ));
            last_phase = Some(phase);
        }
        let _ = tx.send(progress(phase, b, t, None));
    });
    let total = d.manifest.stream.size;
    let last = match result {
        Ok(r) => {
            log(&format!(
                "deploy done: {} bytes onto {} in {:.1} s ({:.1} MB/s); {:.1} s in all",
                r.bytes,
                r.disk,
                r.write_secs,
                r.bytes as f64 / r.write_secs.max(1e-3) / 1e6,
                started.elapsed().as_secs_f64()
            ));
            progress(Phase::Done, r.bytes, total, None)
        }
        Err(e) => {
            let mut reason = deploy::reason(&e);
            if !matches!(
                e,
                deploy::DeployError::Choose(_)
                    | deploy::DeployError::Layout { .. }
                    | deploy::DeployError::Wipe { .. }
            ) {
                reason.push_str(" (what was written has been wiped)");
            }
            log(&format!("deploy failed: {reason}"));
            progress(Phase::Failed, 0, total, Some(reason))
        }
    };
    let _ = tx.send(last);
}

/// The wipe thread: zero what the plan says, sending progress (about once a second), then
/// `done` or `failed`.
fn run_wipe(w: WipeCommand, boot_mac: String, tx: mpsc::Sender<Progress>) {
    log(&format!(
        "wiping (op {}, {}) {} disk(s) of the plan",
        w.op,
        if w.full {
            "full"
        } else {
            "tables and partition edges"
        },
        w.disks.len()
    ));
    let progress = |phase, bytes, total, error| Progress {
        boot_mac: boot_mac.clone(),
        op: w.op,
        phase,
        bytes,
        total,
        error,
    };
    let disks = facts::collect(Path::new("/")).disks;
    let started = std::time::Instant::now();
    let mut last_sent = None::<std::time::Instant>;
    let mut total = 0;
    let result = wipe::wipe(&w, &disks, Path::new("/dev"), &mut |b, t| {
        total = t;
        if last_sent.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            last_sent = Some(std::time::Instant::now());
            let _ = tx.send(progress(Phase::Wiping, b, t, None));
        }
    });
    let last = match result {
        Ok(r) => {
            log(&format!(
                "wipe done: {} bytes zeroed on {} in {:.1} s",
                r.bytes,
                r.disks.join(", "),
                started.elapsed().as_secs_f64()
            ));
            progress(Phase::Done, r.bytes, r.bytes, None)
        }
        Err(e) => {
            let reason = deploy::reason(&e);
            log(&format!("wipe failed: {reason}"));
            progress(Phase::Failed, 0, total, Some(reason))
        }
    };
    let _ = tx.send(last);
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
