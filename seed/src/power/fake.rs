//! [`FakeBmc`] and [`FakePower`]: an in-process BMC and the driver that talks to it, for the
//! simulator and for tests of everything above the power seam.
//!
//! The fake keeps chassis power, the boot override and a boot counter, and obeys fault controls:
//! slow answers, refusals with a completion code, disappearing (every call times out after the
//! driver's bounded retries) and a changed password. Time goes through `tokio::time`, so a
//! simulator with paused time runs thousands of these without waiting.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::chassis;
use super::{BootDevice, BoxFuture, Password, PowerAction, PowerDriver, PowerError, PowerState};

/// A fake BMC: chassis state plus fault controls. Share it as `Arc<FakeBmc>`.
#[derive(Debug)]
pub struct FakeBmc {
    name: String,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    username: String,
    password: Password,
    power: PowerState,
    /// Boot override: device and whether it is persistent.
    boot_override: Option<(BootDevice, bool)>,
    /// Device used by the last boot (`None`: firmware default order).
    last_boot: Option<BootDevice>,
    boots: u64,
    commands: u64,
    // Faults.
    delay: Duration,
    gone: bool,
    refuse: Option<Refusal>,
}

#[derive(Debug, Clone, Copy)]
struct Refusal {
    code: u8,
    /// How many more commands to refuse; `None` = every one.
    remaining: Option<u32>,
}

impl FakeBmc {
    /// A BMC named `name` (it shows in errors as `fake:NAME`), powered off, no boot override.
    pub fn new(
        name: impl Into<String>,
        username: impl Into<String>,
        password: Password,
    ) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            state: Mutex::new(State {
                username: username.into(),
                password,
                power: PowerState::Off,
                boot_override: None,
                last_boot: None,
                boots: 0,
                commands: 0,
                delay: Duration::ZERO,
                gone: false,
                refuse: None,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is plain data, valid after any panic elsewhere.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `fake:NAME`.
    pub fn label(&self) -> String {
        format!("fake:{}", self.name)
    }

    // ---- observation ----

    pub fn power_state(&self) -> PowerState {
        self.lock().power
    }

    /// The boot override now set: device and persistence.
    pub fn boot_override(&self) -> Option<(BootDevice, bool)> {
        self.lock().boot_override
    }

    /// The device the last boot used (`None`: default order, or never booted).
    pub fn last_boot_device(&self) -> Option<BootDevice> {
        self.lock().last_boot
    }

    /// How many times the machine started (power on, cycle, reset).
    pub fn boots(&self) -> u64 {
        self.lock().boots
    }

    /// How many commands reached the BMC (answered or refused; not those lost while gone).
    pub fn commands(&self) -> u64 {
        self.lock().commands
    }

    // ---- faults ----

    /// Answer every command after `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// Refuse the next `count` commands with completion `code` (e.g. 0xc0 node busy).
    pub fn refuse_next(&self, count: u32, code: u8) {
        self.lock().refuse = Some(Refusal {
            code,
            remaining: Some(count),
        });
    }

    /// Refuse every command with completion `code` until [`FakeBmc::heal`].
    pub fn refuse_all(&self, code: u8) {
        self.lock().refuse = Some(Refusal {
            code,
            remaining: None,
        });
    }

    /// Stop answering (a pulled cable, a crashed BMC).
    pub fn disappear(&self) {
        self.lock().gone = true;
    }

    /// Answer again.
    pub fn reappear(&self) {
        self.lock().gone = false;
    }

    /// Change the password: drivers holding the old one now get a credentials error.
    pub fn set_password(&self, password: Password) {
        self.lock().password = password;
    }

    /// Clear every fault (delay, refusals, disappearance); the password stays.
    pub fn heal(&self) {
        let mut s = self.lock();
        s.delay = Duration::ZERO;
        s.gone = false;
        s.refuse = None;
    }

    // ---- the BMC side of a command ----

    fn boot(s: &mut State) {
        s.boots += 1;
        s.last_boot = s.boot_override.map(|(d, _)| d);
        if let Some((_, false)) = s.boot_override {
            s.boot_override = None;
        }
    }

    /// Completion code of a power action (0 = done), as a BMC would.
    fn apply_power(s: &mut State, action: PowerAction) -> u8 {
        match (action, s.power) {
            (PowerAction::On, PowerState::Off) => {
                s.power = PowerState::On;
                Self::boot(s);
            }
            (PowerAction::On, PowerState::On) => {}
            (PowerAction::Off | PowerAction::SoftOff, _) => s.power = PowerState::Off,
            (PowerAction::Cycle, PowerState::On) => Self::boot(s),
            // A cycle or reset of a machine that is off: "not in the present state".
            (PowerAction::Cycle | PowerAction::Reset, PowerState::Off) => return 0xd5,
            (PowerAction::Reset, PowerState::On) => Self::boot(s),
        }
        0
    }
}

/// The driver side: talks to one [`FakeBmc`] with given credentials, timeout and retries.
#[derive(Debug, Clone)]
pub struct FakePower {
    bmc: Arc<FakeBmc>,
    username: String,
    password: Password,
    /// Per-attempt wait when the BMC is gone.
    pub timeout: Duration,
    /// Attempts after the first one.
    pub retries: u32,
}

/// What to do once the BMC accepted the session.
enum Op {
    Power(PowerAction),
    Status,
    Boot(BootDevice, bool),
}

impl FakePower {
    /// A driver with a 2 s timeout and 2 retries (the IPMI driver's defaults).
    pub fn new(bmc: Arc<FakeBmc>, username: impl Into<String>, password: Password) -> Self {
        Self {
            bmc,
            username: username.into(),
            password,
            timeout: Duration::from_secs(2),
            retries: 2,
        }
    }

    /// The BMC this driver talks to.
    pub fn bmc(&self) -> &Arc<FakeBmc> {
        &self.bmc
    }

    async fn run(&self, op: Op) -> Result<Option<PowerState>, PowerError> {
        let bmc = self.bmc.label();
        let (gone, delay) = {
            let s = self.bmc.lock();
            (s.gone, s.delay)
        };
        if gone {
            let attempts = self.retries.saturating_add(1);
            tokio::time::sleep(self.timeout * attempts).await;
            return Err(PowerError::Unreachable {
                bmc,
                attempts,
                timeout: self.timeout,
                last: "timed out".into(),
            });
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut s = self.bmc.lock();
        if s.username != self.username || s.password != self.password {
            return Err(PowerError::Credentials {
                bmc,
                username: self.username.clone(),
                reason: "wrong user name or password".into(),
            });
        }
        s.commands += 1;
        let (cmd, name) = match op {
            Op::Power(_) => (chassis::CMD_CHASSIS_CONTROL, "Chassis Control"),
            Op::Status => (chassis::CMD_GET_CHASSIS_STATUS, "Get Chassis Status"),
            Op::Boot(..) => (
                chassis::CMD_SET_SYSTEM_BOOT_OPTIONS,
                "Set System Boot Options (boot flags)",
            ),
        };
        if let Some(r) = s.refuse {
            s.refuse = match r.remaining {
                Some(n) if n <= 1 => None,
                Some(n) => Some(Refusal {
                    remaining: Some(n - 1),
                    ..r
                }),
                None => Some(r),
            };
            return Err(refused(bmc, cmd, name, r.code));
        }
        match op {
            Op::Power(action) => match FakeBmc::apply_power(&mut s, action) {
                0 => Ok(None),
                code => Err(refused(bmc, cmd, name, code)),
            },
            Op::Status => Ok(Some(s.power)),
            Op::Boot(device, persistent) => {
                s.boot_override = Some((device, persistent));
                Ok(None)
            }
        }
    }
}

fn refused(bmc: String, cmd: u8, command: &'static str, code: u8) -> PowerError {
    if chassis::is_unsupported(code) {
        PowerError::Unsupported {
            bmc,
            what: format!("{command} (completion code {code:#04x})"),
        }
    } else {
        PowerError::Refused {
            bmc,
            command,
            code,
            meaning: chassis::completion_meaning(cmd, code),
        }
    }
}

impl PowerDriver for FakePower {
    fn target(&self) -> String {
        self.bmc.label()
    }

    fn power(&self, action: PowerAction) -> BoxFuture<'_, Result<(), PowerError>> {
        Box::pin(async move { self.run(Op::Power(action)).await.map(|_| ()) })
    }

    fn status(&self) -> BoxFuture<'_, Result<PowerState, PowerError>> {
        Box::pin(async move {
            let state = self.run(Op::Status).await?;
            Ok(state.unwrap_or(PowerState::Off))
        })
    }

    fn set_boot_device(
        &self,
        device: BootDevice,
        persistent: bool,
    ) -> BoxFuture<'_, Result<(), PowerError>> {
        Box::pin(async move { self.run(Op::Boot(device, persistent)).await.map(|_| ()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pair() -> (Arc<FakeBmc>, FakePower) {
        let bmc = FakeBmc::new("n1", "admin", Password::new("password"));
        let drv = FakePower::new(bmc.clone(), "admin", Password::new("password"));
        (bmc, drv)
    }

    #[tokio::test]
    async fn power_and_boot_override_follow_commands() {
        let (bmc, drv) = pair();
        let d: Arc<dyn PowerDriver> = Arc::new(drv);
        assert_eq!(d.status().await.unwrap(), PowerState::Off);
        d.set_boot_device(BootDevice::Pxe, false).await.unwrap();
        d.power(PowerAction::On).await.unwrap();
        assert_eq!(d.status().await.unwrap(), PowerState::On);
        assert_eq!(bmc.last_boot_device(), Some(BootDevice::Pxe));
        // A next-boot-only override is consumed by the boot.
        assert_eq!(bmc.boot_override(), None);
        d.set_boot_device(BootDevice::Disk, true).await.unwrap();
        d.power(PowerAction::Cycle).await.unwrap();
        d.power(PowerAction::Reset).await.unwrap();
        assert_eq!(bmc.last_boot_device(), Some(BootDevice::Disk));
        assert_eq!(bmc.boot_override(), Some((BootDevice::Disk, true)));
        assert_eq!(bmc.boots(), 3);
        d.power(PowerAction::SoftOff).await.unwrap();
        assert_eq!(bmc.power_state(), PowerState::Off);
        assert_eq!(bmc.commands(), 8);
    }

    #[tokio::test]
    async fn reset_of_a_powered_off_machine_is_refused() {
        let (_bmc, drv) = pair();
        let e = drv.power(PowerAction::Reset).await.unwrap_err();
        assert!(matches!(e, PowerError::Refused { code: 0xd5, .. }), "{e:?}");
        assert!(
            e.to_string().contains("not supported in the present state"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn refusals_count_down_then_stop() {
        let (bmc, drv) = pair();
        bmc.refuse_next(2, 0xc0);
        for _ in 0..2 {
            let e = drv.status().await.unwrap_err();
            assert!(matches!(e, PowerError::Refused { code: 0xc0, .. }), "{e:?}");
        }
        drv.status().await.unwrap();
        bmc.refuse_all(0xc1);
        for _ in 0..3 {
            let e = drv.power(PowerAction::On).await.unwrap_err();
            assert_eq!(e.kind(), "unsupported", "{e:?}");
        }
        bmc.heal();
        drv.power(PowerAction::On).await.unwrap();
        assert_eq!(bmc.power_state(), PowerState::On);
    }

    #[tokio::test(start_paused = true)]
    async fn disappeared_bmc_times_out_after_bounded_retries() {
        let (bmc, mut drv) = pair();
        drv.timeout = Duration::from_secs(3);
        drv.retries = 1;
        bmc.disappear();
        let start = tokio::time::Instant::now();
        let e = drv.power(PowerAction::On).await.unwrap_err();
        // Virtual (paused) time: exactly timeout x attempts, not a speed measurement.
        assert_eq!(start.elapsed(), Duration::from_secs(6));
        match &e {
            PowerError::Unreachable { bmc, attempts, .. } => {
                assert_eq!(bmc, "fake:n1");
                assert_eq!(*attempts, 2);
            }
            other => panic!("expected unreachable, got {other:?}"),
        }
        assert_eq!(
            bmc.power_state(),
            PowerState::Off,
            "nothing reached the BMC"
        );
        bmc.reappear();
        drv.power(PowerAction::On).await.unwrap();
        assert_eq!(bmc.power_state(), PowerState::On);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_bmc_answers_after_its_delay() {
        let (bmc, drv) = pair();
        bmc.set_delay(Duration::from_millis(750));
        let start = tokio::time::Instant::now();
        drv.status().await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(750));
    }

    #[tokio::test]
    async fn changed_password_is_a_credentials_error() {
        let (bmc, drv) = pair();
        drv.status().await.unwrap();
        bmc.set_password(Password::new("rotated"));
        let e = drv.status().await.unwrap_err();
        assert_eq!(e.kind(), "credentials", "{e:?}");
        assert!(e.to_string().contains("fake:n1"), "{e}");
        assert!(!e.to_string().contains("rotated"), "{e}");
        let ok = FakePower::new(bmc.clone(), "admin", Password::new("rotated"));
        ok.status().await.unwrap();
    }
}
