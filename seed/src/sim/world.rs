//! The fake world the simulator drives: machines with a BMC and an agent, behaving like real
//! ones (latency, slow nodes, failures, agents that vanish), from a seeded RNG per machine so a
//! machine behaves the same whatever the other machines do.

use crate::inventory::{BootMode, Disk, Partition, Properties};
use crate::lifecycle::BootDevice;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// How often things go wrong. Probabilities are per attempt, in `0.0..=1.0`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// A BMC command fails (timeout, auth error).
    pub bmc_error: f64,
    /// The agent reports a failure (inspection error, image write error).
    pub agent_error: f64,
    /// The agent never reports: the node hangs in firmware or the ramdisk dies silently.
    pub agent_vanish: f64,
    /// A machine is slow: every delay ×10 (often past the step's deadline).
    pub slow_machines: f64,
    /// A machine's agent always fails: it can only end in a failed state.
    pub broken_machines: f64,
}

impl Faults {
    /// Everything works.
    pub fn none() -> Faults {
        Faults::default()
    }
}

/// What the agent on a machine was told to do when it booted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Job {
    Inspect,
    Deploy,
    Clean,
}

/// How a piece of work on a machine ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Report success after this many ms.
    Ok(u64),
    /// Report this failure after this many ms.
    Fail(u64, String),
    /// Never report.
    Silent,
}

/// One fake machine: its hardware, power, boot device, and counters of what happened to it.
#[derive(Debug)]
pub struct Machine {
    rng: StdRng,
    pub slow: bool,
    pub broken: bool,
    pub powered: bool,
    pub boot_device: BootDevice,
    /// Bumped by every power change: work started before belongs to a dead boot.
    pub epoch: u64,
    pub hardware: Properties,
    /// Work the machine actually did (for "nothing processed twice" checks).
    pub inspections: u32,
    pub images_written: u32,
    pub wipes: u32,
}

impl Machine {
    /// Machine `index` of a world seeded with `seed`.
    pub fn new(seed: u64, index: usize, faults: &Faults) -> Machine {
        let mut rng =
            StdRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let slow = rng.random_bool(faults.slow_machines.clamp(0.0, 1.0));
        let broken = rng.random_bool(faults.broken_machines.clamp(0.0, 1.0));
        let gib = 1u64 << 30;
        let size = rng.random_range(20..200u64) * gib;
        let hardware = Properties {
            cpus: Some(rng.random_range(1..=8u32) * 4),
            memory_mib: Some(rng.random_range(4..=64u64) * 1024),
            disks: vec![Disk {
                name: "vda".into(),
                size_bytes: size,
                model: Some("QEMU HARDDISK".into()),
                serial: Some(format!("SIM{index:06}")),
                partitions: vec![
                    Partition {
                        start_bytes: 1 << 20,
                        size_bytes: 512 << 20,
                    },
                    Partition {
                        start_bytes: 513 << 20,
                        size_bytes: size - (514 << 20),
                    },
                ],
            }],
            boot_mode: Some(if rng.random_bool(0.5) {
                BootMode::Uefi
            } else {
                BootMode::Bios
            }),
            arch: Some("x86_64".into()),
        };
        Machine {
            rng,
            slow,
            broken,
            powered: false,
            boot_device: BootDevice::Disk,
            epoch: 0,
            hardware,
            inspections: 0,
            images_written: 0,
            wipes: 0,
        }
    }

    fn delay(&mut self, lo: u64, hi: u64) -> u64 {
        let d = self.rng.random_range(lo..=hi);
        if self.slow {
            d * 10
        } else {
            d
        }
    }

    /// A BMC command: its reply delay, or the error it fails with.
    pub fn bmc(&mut self, faults: &Faults, what: &str) -> Outcome {
        let d = self.delay(50, 500);
        if self.rng.random_bool(faults.bmc_error.clamp(0.0, 1.0)) {
            Outcome::Fail(d, format!("bmc: {what}: no response"))
        } else {
            Outcome::Ok(d)
        }
    }

    /// How long the machine takes from power-on to a running agent.
    pub fn boot_time(&mut self) -> u64 {
        self.delay(30_000, 90_000)
    }

    /// The agent does `job`; the counters record work that really happened.
    pub fn agent(&mut self, faults: &Faults, job: Job) -> Outcome {
        let d = match job {
            Job::Inspect => self.delay(20_000, 60_000),
            Job::Deploy => self.delay(60_000, 300_000),
            Job::Clean => self.delay(10_000, 120_000),
        };
        let vanish = self.rng.random_bool(faults.agent_vanish.clamp(0.0, 1.0));
        let error = self.rng.random_bool(faults.agent_error.clamp(0.0, 1.0));
        if vanish {
            return Outcome::Silent;
        }
        if self.broken || error {
            let what = match job {
                Job::Inspect => "agent: inspection crashed",
                Job::Deploy => "agent: image write failed",
                Job::Clean => "agent: disk wipe failed",
            };
            return Outcome::Fail(d, what.into());
        }
        match job {
            Job::Inspect => self.inspections += 1,
            Job::Deploy => self.images_written += 1,
            Job::Clean => self.wipes += 1,
        }
        Outcome::Ok(d)
    }
}
