//! The machines' software after PXE: the deploy ramdisk's fake agent (facts, heartbeats,
//! deploy progress, wipe, power commands obeyed) and the deployed image reporting its boot.

use super::{current, http, lock, pause, power_off, power_on, Node};
use api::agent::{Ack, Command, DeployCommand, Heartbeat, Phase, Progress, Report};
use api::facts::{BootMode, Disk, Dmi, Facts, Nic};
use serde::Serialize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// One agent call (JSON both ways), retried while the seed is unreachable (bounded).
fn post<T: serde::de::DeserializeOwned>(
    n: &Node,
    generation: u64,
    url: &str,
    bearer: Option<&str>,
    body: &impl Serialize,
) -> Option<T> {
    let (_, _, tick) = n.timing;
    for _ in 0..300 {
        if !current(n, generation) {
            return None;
        }
        let mut req = http().post(url);
        if let Some(t) = bearer {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        match req.send_json(serde_json::to_value(body).ok()?) {
            Ok(mut r) if r.status().is_success() => return r.body_mut().read_json().ok(),
            // Refused (not the step for it, a stale token): final for this request.
            Ok(r) if r.status().as_u16() < 500 => {
                n.counters.agent_errors.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            // Unreachable or failing (a seed restarting, a failover): retry.
            _ => {
                n.counters.agent_errors.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(tick);
            }
        }
    }
    None
}

fn facts(n: &Node) -> Facts {
    Facts {
        cpus: n.spec.cpus,
        cpu_model: "Fake CPU".into(),
        memory_mib: n.spec.memory_mib,
        disks: vec![Disk {
            name: "vda".into(),
            size_bytes: 40 << 30,
            model: "FAKE DISK".into(),
            serial: format!("FARM-{}", n.spec.name),
            rotational: false,
        }],
        nics: vec![Nic {
            name: "eth0".into(),
            mac: n.spec.mac.clone(),
            link: true,
            driver: "fake_net".into(),
        }],
        dmi: Dmi {
            vendor: "seed".into(),
            product: "farm machine".into(),
            serial: format!("FARM-{}", n.spec.name),
            uuid: format!("farm-{}", n.spec.name),
        },
        boot_mode: BootMode::Bios,
    }
}

/// The deploy ramdisk's agent.
pub(super) fn ramdisk(n: &Arc<Node>, generation: u64, seed: &str, token: Option<&str>) {
    let (_, _, tick) = n.timing;
    let report = Report {
        boot_mac: n.spec.mac.clone(),
        facts: facts(n),
    };
    // Facts are taken while inspecting only; refused otherwise, which is fine.
    let ack: Option<Ack> = post(
        n,
        generation,
        &format!("{seed}/v1/agent/facts"),
        token,
        &report,
    );
    let every = ack
        .map(|a| Duration::from_secs(a.heartbeat_secs.max(1)))
        .unwrap_or(tick)
        .min(tick);
    let hb = Heartbeat {
        boot_mac: n.spec.mac.clone(),
    };
    for _ in 0..20_000 {
        let cmd: Command = post(
            n,
            generation,
            &format!("{seed}/v1/agent/heartbeat"),
            token,
            &hb,
        )
        .unwrap_or(Command::None);
        if !obey(n, generation, seed, token, cmd) {
            return;
        }
        if !pause(n, generation, every) {
            return;
        }
    }
}

fn obey(n: &Arc<Node>, generation: u64, seed: &str, token: Option<&str>, cmd: Command) -> bool {
    match cmd {
        Command::None => true,
        Command::PowerOff => {
            power_off(n);
            false
        }
        Command::Reboot => {
            // The machine resets itself and boots from what its BMC says.
            let device = lock(&n.machine).device;
            power_on(n, device);
            false
        }
        Command::Deploy(d) => {
            let fresh = {
                let mut m = lock(&n.machine);
                let fresh = m.done_op != Some(d.op) && m.doing_op != Some(d.op);
                if fresh {
                    m.doing_op = Some(d.op);
                }
                fresh
            };
            if !fresh {
                return true;
            }
            n.counters.deploy_commands.fetch_add(1, Ordering::Relaxed);
            match deploy(n, generation, seed, token, &d) {
                Some(next) => obey(n, generation, seed, token, next),
                None => false,
            }
        }
        Command::Wipe(w) => {
            if lock(&n.machine).done_op == Some(w.op) {
                return true;
            }
            let report = |phase| Progress {
                boot_mac: n.spec.mac.clone(),
                op: w.op,
                phase,
                bytes: 0,
                total: 8 << 20,
                error: None,
            };
            let mut next = Command::None;
            for phase in [Phase::Wiping, Phase::Done] {
                if !pause(n, generation, n.timing.1) {
                    return false;
                }
                if phase == Phase::Done {
                    let mut m = lock(&n.machine);
                    m.disk = None;
                    m.done_op = Some(w.op);
                    n.counters.wipes_done.fetch_add(1, Ordering::Relaxed);
                }
                match post(
                    n,
                    generation,
                    &format!("{seed}/v1/agent/progress"),
                    token,
                    &report(phase),
                ) {
                    Some(c) => next = c,
                    None => return false,
                }
            }
            obey(n, generation, seed, token, next)
        }
    }
}

/// Play a deploy as progress reports; the next command after `done`.
fn deploy(
    n: &Node,
    generation: u64,
    seed: &str,
    token: Option<&str>,
    d: &DeployCommand,
) -> Option<Command> {
    let total = d.manifest.stream.size.max(1);
    let mut last = Command::None;
    let mut plan = vec![(Phase::Partitioning, 0)];
    for i in 1..=4 {
        plan.push((Phase::Writing, total * i / 4));
    }
    plan.push((Phase::Finishing, total));
    plan.push((Phase::Done, total));
    for (phase, bytes) in plan {
        if !pause(n, generation, n.timing.1) {
            return None;
        }
        if phase == Phase::Done {
            let mut m = lock(&n.machine);
            m.disk = Some(d.credential.expose().to_string());
            m.done_op = Some(d.op);
            m.doing_op = None;
            n.counters.deploys_done.fetch_add(1, Ordering::Relaxed);
        }
        let p = Progress {
            boot_mac: n.spec.mac.clone(),
            op: d.op,
            phase,
            bytes,
            total,
            error: None,
        };
        last = post(
            n,
            generation,
            &format!("{seed}/v1/agent/progress"),
            token,
            &p,
        )?;
    }
    Some(last)
}

/// The deployed image: report booted with the credential on the disk.
pub(super) fn image(n: &Node, generation: u64) {
    let Some(credential) = lock(&n.machine).disk.clone() else {
        return; // an empty disk boots nothing
    };
    let url = format!("{}/v1/node/booted", n.seed_url);
    for _ in 0..300 {
        if !current(n, generation) {
            return;
        }
        match http()
            .post(&url)
            .header("Authorization", &format!("Bearer {credential}"))
            .send("{}")
        {
            Ok(r) if r.status().is_success() => {
                n.counters
                    .image_boots_reported
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
            _ => {
                n.counters.agent_errors.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(n.timing.2);
            }
        }
    }
}
