//! The node lifecycle as a sans-IO state machine: events in, actions out.
//!
//! ```text
//! enroll --manage--> verifying --verified--> manageable --provide--> available
//!                                             |  ^                     |  ^
//!                                     inspect |  | inspected    deploy |  | cleaned
//!                                             v  |                     v  |
//!                                          inspecting              deploying   cleaning
//!                                                                      |          ^
//!                                                             deployed v          | torn down
//!                                                                    active --delete--> deleting
//! ```
//! Deploying has two halves. `deploy` hands the agent its work (the executor checks the image
//! first: a refused image fails the step before any power action) and PXE-boots the ramdisk;
//! the agent streams the image and reports it written ([`Event::ImageWritten`]): the node is
//! set to boot from disk and power-cycled, still `deploying`, with
//! [`Lifecycle::image_written`] set so the boot policy answers "local disk" if it PXE-boots
//! anyway. The image's first boot then says "booted" ([`Event::Deployed`]) and only that makes
//! the node `active` (no further power action). The step's deadline covers each half:
//! `deploy` arms `deploy_ms` for the write, `image written` re-arms `deploy_ms` for the boot.
//! Progress reports do not move the deadline (a stalled agent still fails; the deadline is
//! sized for the largest image). Any failure (agent, BMC, timeout, image refused) lands in
//! `deploy failed` with the reason, never half-way in `active`; `deploy` again retries, and
//! `delete` from `deploying` abandons the deploy (tear down and clean as from `active`).
//! Each long-running step has a failed state that keeps its reason (`inspect failed`,
//! `deploy failed`, `clean failed`; a failed verification goes back to `enroll` with
//! `last_error`) and can be retried. [`step`] takes the node, one [`Event`] and the current
//! time and returns the [`Action`]s someone else executes; it never does I/O or reads a clock.
//! Deadlines are actions too: the driver arms a timer and later feeds [`Event::Timeout`].
//!
//! Ordering rule: `Persist` is always the first action of a transition, so the new state is
//! durable before anything touches the hardware; after a crash the stored state is never behind
//! what the machines were told.
//!
//! Boot watchdog: PXE is lossy (a ROM misses DHCP on a busy wire, a switch port is still in
//! STP listening), so a step that PXE-boots the ramdisk (`inspecting`, `deploying` before the
//! image is written, `cleaning`) also arms a **boot deadline** ([`Timeouts::boot_ms`], 0
//! disables it), stored in [`Lifecycle::boot_deadline_ms`]. [`Event::BootSeen`] (the node's
//! iPXE script was served, or its agent called in) meets it. If it passes first, the node is
//! power-cycled into PXE again (`SetBootDevice(Pxe)`, `Reboot`, a new boot deadline) and
//! [`Lifecycle::boot_retries`] counts it; after [`Timeouts::boot_retries_max`] retries the step
//! fails like a timeout ("no PXE boot reached the seed within 180 s, 3 power-ons"). Both
//! deadlines are fed as [`Event::Timeout`]: the lifecycle checks which one is due, so an early
//! or stale timer changes nothing.
//!
//! Maintenance: while a node is in maintenance, operator requests are refused
//! ([`LifecycleError::InMaintenance`]), reports from the node (inspected, deployed, failed …)
//! are still recorded but their hardware actions are withheld, and timeouts wait until
//! maintenance ends (turning it off re-arms the deadline).

use crate::inventory::{Disk, Node, Properties};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a node is in its life. Failed states keep why.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum State {
    /// Known, credentials not yet checked.
    #[default]
    Enroll,
    /// Checking that the BMC answers with these credentials.
    Verifying,
    Manageable,
    Inspecting,
    InspectFailed {
        reason: String,
    },
    /// Ready to be deployed.
    Available,
    Deploying,
    DeployFailed {
        reason: String,
    },
    /// Running its image.
    Active,
    /// Being powered off and torn down before cleaning.
    Deleting,
    /// Disks being wiped.
    Cleaning,
    CleanFailed {
        reason: String,
    },
}

impl State {
    /// The state's name as people read it (`deploy failed`).
    pub fn name(&self) -> &'static str {
        match self {
            State::Enroll => "enroll",
            State::Verifying => "verifying",
            State::Manageable => "manageable",
            State::Inspecting => "inspecting",
            State::InspectFailed { .. } => "inspect failed",
            State::Available => "available",
            State::Deploying => "deploying",
            State::DeployFailed { .. } => "deploy failed",
            State::Active => "active",
            State::Deleting => "deleting",
            State::Cleaning => "cleaning",
            State::CleanFailed { .. } => "clean failed",
        }
    }

    /// The reason of a failed state.
    pub fn reason(&self) -> Option<&str> {
        match self {
            State::InspectFailed { reason }
            | State::DeployFailed { reason }
            | State::CleanFailed { reason } => Some(reason),
            _ => None,
        }
    }

    /// A step is running and a report or a timeout is awaited.
    pub fn is_busy(&self) -> bool {
        matches!(
            self,
            State::Verifying
                | State::Inspecting
                | State::Deploying
                | State::Deleting
                | State::Cleaning
        )
    }

    /// A failed state (including `enroll` after a failed verification is not counted here).
    pub fn is_failed(&self) -> bool {
        self.reason().is_some()
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What to deploy: an image name and an optional root-device hint (`serial=…`, `size>=…`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployTarget {
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_hint: Option<String>,
}

/// The lifecycle part of a node record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    #[serde(flatten)]
    pub state: State,
    /// `Some(reason)` while in maintenance (the reason may be empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<String>,
    /// The last failure, `"<step> failed: <reason>"`; cleared when a step next succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the running step times out (ms, same clock as the events' `now`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// Bumped each time a long-running step starts. Executors tag reports with it so that a
    /// late report from an abandoned attempt can be recognised and dropped.
    #[serde(default)]
    pub op: u64,
    /// Consecutive attempts of the current (or last failed) step; 0 after a success.
    #[serde(default)]
    pub attempts: u32,
    /// What is deployed, or being deployed, on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<DeployTarget>,
    /// The pending clean wipes whole disks, not just tables and partition edges.
    #[serde(default)]
    pub wipe_full: bool,
    /// While deploying: the agent reported the image written and the node was told to boot
    /// from disk; the step now waits for the image's first boot to say "booted".
    #[serde(default)]
    pub image_written: bool,
    /// While a step waits for the node to PXE-boot toward the seed: when the boot watchdog
    /// power-cycles it again (ms). Cleared by [`Event::BootSeen`] and when the step ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_deadline_ms: Option<u64>,
    /// Power-cycles the boot watchdog made in the current (or last) step; 0 when a step starts.
    #[serde(default)]
    pub boot_retries: u32,
}

/// Something that happened: an operator request or a report from the node / the executor.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    // Operator requests.
    Manage,
    Inspect,
    Provide,
    Deploy(DeployTarget),
    Delete {
        full_wipe: bool,
    },
    /// Retry a failed clean.
    Clean {
        full_wipe: bool,
    },
    Maintenance {
        on: bool,
        reason: Option<String>,
    },
    // Reports.
    /// The BMC answered with the enrolled credentials.
    Verified,
    /// The inspection agent reported the hardware.
    Inspected(Properties),
    /// The deploy agent wrote the image to disk (phase done).
    ImageWritten,
    /// The executor refused the image before anything touched the node (missing, corrupted).
    ImageRefused {
        reason: String,
    },
    /// The deployed image's first boot said "booted".
    Deployed,
    /// The node is powered off and torn down.
    TornDown,
    /// The disks are wiped.
    Cleaned,
    /// The running step failed (BMC error, agent error).
    Failed {
        reason: String,
    },
    /// The node showed it booted toward the seed (its iPXE script was served, or its agent
    /// called in): meets the boot deadline. Idempotent, ignored where none is armed.
    BootSeen,
    /// A deadline the driver armed has passed.
    Timeout,
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::Manage => "manage",
            Event::Inspect => "inspect",
            Event::Provide => "provide",
            Event::Deploy(_) => "deploy",
            Event::Delete { .. } => "delete",
            Event::Clean { .. } => "clean",
            Event::Maintenance { .. } => "maintenance",
            Event::Verified => "verified",
            Event::Inspected(_) => "inspected",
            Event::ImageWritten => "image written",
            Event::ImageRefused { .. } => "image refused",
            Event::Deployed => "deployed",
            Event::TornDown => "torn down",
            Event::Cleaned => "cleaned",
            Event::Failed { .. } => "failed",
            Event::BootSeen => "boot seen",
            Event::Timeout => "timeout",
        }
    }

    fn is_request(&self) -> bool {
        matches!(
            self,
            Event::Manage
                | Event::Inspect
                | Event::Provide
                | Event::Deploy(_)
                | Event::Delete { .. }
                | Event::Clean { .. }
        )
    }
}

/// The device a node boots from next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootDevice {
    Pxe,
    Disk,
}

/// A byte range of a disk to overwrite with zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    pub offset: u64,
    pub len: u64,
}

/// What to wipe on one disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskWipe {
    /// Kernel name (`sda`), or the index `#0` when the disk was only declared.
    pub disk: String,
    pub size_bytes: u64,
    /// Sorted, non-overlapping.
    pub extents: Vec<Extent>,
}

/// The cleaning plan carried by [`Action::WipeDisks`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WipePlan {
    pub full: bool,
    pub disks: Vec<DiskWipe>,
}

const MIB: u64 = 1 << 20;

impl WipePlan {
    /// Partition tables (first and last MiB of the disk: MBR, primary and backup GPT) and the
    /// first and last MiB of each partition (superblocks, RAID/LVM labels); or whole disks.
    pub fn for_disks(disks: &[Disk], full: bool) -> WipePlan {
        let disks = disks
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let size = d.size_bytes;
                let mut ext = Vec::new();
                if full {
                    ext.push(Extent {
                        offset: 0,
                        len: size,
                    });
                } else {
                    edges(0, size, &mut ext);
                    for p in &d.partitions {
                        let end = p.start_bytes.saturating_add(p.size_bytes).min(size);
                        if p.start_bytes < end {
                            edges(p.start_bytes, end - p.start_bytes, &mut ext);
                        }
                    }
                }
                DiskWipe {
                    disk: if d.name.is_empty() {
                        format!("#{i}")
                    } else {
                        d.name.clone()
                    },
                    size_bytes: size,
                    extents: merge(ext),
                }
            })
            .collect();
        WipePlan { full, disks }
    }
}

/// First and last MiB of `[start, start+len)` (the whole range when it is under 2 MiB).
fn edges(start: u64, len: u64, out: &mut Vec<Extent>) {
    if len == 0 {
        return;
    }
    if len <= 2 * MIB {
        out.push(Extent { offset: start, len });
    } else {
        out.push(Extent {
            offset: start,
            len: MIB,
        });
        out.push(Extent {
            offset: start + len - MIB,
            len: MIB,
        });
    }
}

fn merge(mut v: Vec<Extent>) -> Vec<Extent> {
    v.sort_by_key(|e| e.offset);
    let mut out: Vec<Extent> = Vec::with_capacity(v.len());
    for e in v {
        match out.last_mut() {
            Some(last) if e.offset <= last.offset + last.len => {
                let end = (e.offset + e.len).max(last.offset + last.len);
                last.len = end - last.offset;
            }
            _ => out.push(e),
        }
    }
    out
}

/// Work for the executor. Data only: the lifecycle never performs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Save the node (always first, before any hardware action).
    Persist,
    /// Read the power state through the BMC, to check the credentials.
    VerifyPower,
    SetBootDevice(BootDevice),
    PowerOn,
    PowerOff,
    /// Power on, or cycle if already on.
    Reboot,
    /// Check the image, then hand the deploy agent its work (it fetches it when it boots). The
    /// first hardware action of a deploy: if it fails, nothing was powered.
    Deploy {
        /// The deploy's operation number (echoed by the agent's progress reports).
        op: u64,
        image: String,
        root_hint: Option<String>,
    },
    /// Hand the cleaning agent its wipe plan.
    WipeDisks(WipePlan),
    /// Arm a timer; feed [`Event::Timeout`] when it passes. A node can have two armed (the
    /// step's and the boot watchdog's); the lifecycle ignores a timeout that is not due.
    Deadline {
        at_ms: u64,
    },
}

impl Action {
    fn touches_hardware(&self) -> bool {
        !matches!(self, Action::Persist | Action::Deadline { .. })
    }
}

/// How long each step may take before it fails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub verify_ms: u64,
    pub inspect_ms: u64,
    pub deploy_ms: u64,
    pub delete_ms: u64,
    pub clean_ms: u64,
    /// How long a node that was powered into PXE may take to show it booted toward the seed
    /// before the boot watchdog power-cycles it again; 0 disables the watchdog.
    pub boot_ms: u64,
    /// Watchdog power-cycles before the step fails (so `boot_retries_max + 1` power-ons).
    pub boot_retries_max: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            verify_ms: 60_000,
            inspect_ms: 15 * 60_000,
            deploy_ms: 30 * 60_000,
            delete_ms: 5 * 60_000,
            clean_ms: 30 * 60_000,
            boot_ms: 180_000,
            boot_retries_max: 2,
        }
    }
}

/// A refused event. The node is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    #[error("cannot handle `{event}` in state `{state}`")]
    InvalidTransition {
        state: &'static str,
        event: &'static str,
    },
    #[error("node is in maintenance ({reason}): `{event}` refused in state `{state}`")]
    InMaintenance {
        state: &'static str,
        event: &'static str,
        reason: String,
    },
}

/// Feed one event to a node at `now_ms`. On success the node is updated and the actions to run
/// are returned, `Persist` first (an empty list: nothing changed, e.g. a stale timeout). On
/// error the node is untouched.
pub fn step(
    node: &mut Node,
    event: Event,
    now_ms: u64,
    timeouts: &Timeouts,
) -> Result<Vec<Action>, LifecycleError> {
    let mut next = node.clone();
    let actions = transition(&mut next, event, now_ms, timeouts)?;
    if !actions.is_empty() {
        next.updated_ms = now_ms;
        *node = next;
    }
    Ok(actions)
}

fn transition(
    node: &mut Node,
    event: Event,
    now: u64,
    t: &Timeouts,
) -> Result<Vec<Action>, LifecycleError> {
    use Action as A;
    use State as S;
    let lc = &mut node.lifecycle;
    let state_name = lc.state.name();
    let event_name = event.name();
    let invalid = || LifecycleError::InvalidTransition {
        state: state_name,
        event: event_name,
    };

    if let Some(reason) = &lc.maintenance {
        if event.is_request() {
            return Err(LifecycleError::InMaintenance {
                state: state_name,
                event: event_name,
                reason: if reason.is_empty() {
                    "no reason given".into()
                } else {
                    reason.clone()
                },
            });
        }
        if event == Event::Timeout {
            return Ok(vec![]);
        }
    }

    let mut actions = match (&lc.state, event) {
        (_, Event::Maintenance { on: true, reason }) => {
            lc.maintenance = Some(reason.unwrap_or_default());
            vec![A::Persist]
        }
        (_, Event::Maintenance { on: false, .. }) => {
            if lc.maintenance.take().is_none() {
                return Ok(vec![]);
            }
            let mut a = vec![A::Persist];
            if let (true, Some(at)) = (lc.state.is_busy(), lc.deadline_ms) {
                a.push(A::Deadline { at_ms: at });
            }
            if let (true, Some(at)) = (lc.state.is_busy(), lc.boot_deadline_ms) {
                a.push(A::Deadline { at_ms: at });
            }
            a
        }

        // The node booted toward the seed: the boot watchdog is satisfied.
        (_, Event::BootSeen) => {
            if lc.boot_deadline_ms.take().is_none() {
                return Ok(vec![]);
            }
            vec![A::Persist]
        }

        // A timeout is only meaningful for the step it was armed for.
        (s, Event::Timeout) => {
            let due = s.is_busy() && lc.deadline_ms.is_some_and(|d| now >= d);
            let boot_due = s.is_busy() && lc.boot_deadline_ms.is_some_and(|d| now >= d);
            if !due && boot_due {
                if lc.boot_retries >= t.boot_retries_max {
                    let within = if t.boot_ms.is_multiple_of(1000) {
                        format!("{} s", t.boot_ms / 1000)
                    } else {
                        format!("{} ms", t.boot_ms)
                    };
                    let reason = format!(
                        "no PXE boot reached the seed within {within}, {} power-ons",
                        lc.boot_retries + 1
                    );
                    return fail(node, reason);
                }
                lc.boot_retries += 1;
                let mut a = vec![A::Persist, A::SetBootDevice(BootDevice::Pxe), A::Reboot];
                a.extend(boot_watch(lc, now, t));
                a
            } else if !due {
                return Ok(vec![]);
            } else {
                let reason = if lc.image_written {
                    "timed out waiting for the deployed image to say booted".to_string()
                } else {
                    format!("timed out in {}", s.name())
                };
                return fail(node, reason);
            }
        }
        (s, Event::Failed { reason }) if s.is_busy() => return fail(node, reason),

        (S::Enroll, Event::Manage) => {
            let retry = lc.last_error.is_some();
            begin(lc, S::Verifying, retry, now + t.verify_ms);
            vec![
                A::Persist,
                A::VerifyPower,
                A::Deadline {
                    at_ms: now + t.verify_ms,
                },
            ]
        }
        (S::Verifying, Event::Verified) => {
            succeed(lc, S::Manageable);
            vec![A::Persist]
        }

        (S::Manageable | S::InspectFailed { .. }, Event::Inspect) => {
            let retry = matches!(lc.state, S::InspectFailed { .. });
            let at = now + t.inspect_ms;
            begin(lc, S::Inspecting, retry, at);
            let mut a = vec![
                A::Persist,
                A::SetBootDevice(BootDevice::Pxe),
                A::Reboot,
                A::Deadline { at_ms: at },
            ];
            a.extend(boot_watch(lc, now, t));
            a
        }
        (S::Inspecting, Event::Inspected(found)) => {
            succeed(lc, S::Manageable);
            merge_properties(&mut node.properties, found);
            vec![A::Persist, A::PowerOff]
        }
        (S::InspectFailed { .. } | S::CleanFailed { .. } | S::Available, Event::Manage) => {
            lc.state = S::Manageable;
            vec![A::Persist]
        }
        (S::Manageable, Event::Provide) => {
            lc.state = S::Available;
            vec![A::Persist]
        }

        (S::Available | S::DeployFailed { .. }, Event::Deploy(target)) => {
            let retry = matches!(lc.state, S::DeployFailed { .. });
            let at = now + t.deploy_ms;
            begin(lc, S::Deploying, retry, at);
            lc.target = Some(target.clone());
            lc.image_written = false;
            let mut a = vec![
                A::Persist,
                A::Deploy {
                    op: lc.op,
                    image: target.image,
                    root_hint: target.root_hint,
                },
                A::SetBootDevice(BootDevice::Pxe),
                A::Reboot,
                A::Deadline { at_ms: at },
            ];
            a.extend(boot_watch(lc, now, t));
            a
        }
        (S::Deploying, Event::ImageWritten) => {
            if lc.image_written {
                // A repeated "done" report: already acted on.
                return Ok(vec![]);
            }
            lc.image_written = true;
            // The agent wrote the image, so the ramdisk booted; the disk boot is checked by
            // the step's deadline.
            lc.boot_deadline_ms = None;
            let at = now + t.deploy_ms;
            lc.deadline_ms = Some(at);
            vec![
                A::Persist,
                A::SetBootDevice(BootDevice::Disk),
                A::Reboot,
                A::Deadline { at_ms: at },
            ]
        }
        (S::Deploying, Event::ImageRefused { reason }) if !lc.image_written => {
            // Nothing was powered for this deploy: no power-off either.
            let mut a = fail(node, reason)?;
            a.retain(|a| !a.touches_hardware());
            return Ok(a);
        }
        // Proof the image runs from disk (only the deployed image holds the node's credential),
        // whether or not the "written" report arrived.
        (S::Deploying, Event::Deployed) => {
            succeed(lc, S::Active);
            vec![A::Persist]
        }

        // From deploying: abandons the deploy (the new op makes its late reports stale).
        (S::Active | S::DeployFailed { .. } | S::Deploying, Event::Delete { full_wipe }) => {
            let at = now + t.delete_ms;
            begin(lc, S::Deleting, false, at);
            lc.wipe_full = full_wipe;
            lc.image_written = false;
            vec![A::Persist, A::PowerOff, A::Deadline { at_ms: at }]
        }
        (S::Deleting, Event::TornDown) => {
            let at = now + t.clean_ms;
            begin(lc, S::Cleaning, false, at);
            lc.target = None;
            let mut a = clean_actions(node, at);
            a.extend(boot_watch(&mut node.lifecycle, now, t));
            a
        }
        (S::CleanFailed { .. }, Event::Clean { full_wipe }) => {
            let at = now + t.clean_ms;
            begin(lc, S::Cleaning, true, at);
            lc.wipe_full = full_wipe;
            let mut a = clean_actions(node, at);
            a.extend(boot_watch(&mut node.lifecycle, now, t));
            a
        }
        (S::Cleaning, Event::Cleaned) => {
            succeed(lc, S::Available);
            lc.wipe_full = false;
            vec![A::Persist, A::PowerOff]
        }

        _ => return Err(invalid()),
    };

    if node.lifecycle.maintenance.is_some() {
        actions.retain(|a| !a.touches_hardware());
    }
    Ok(actions)
}

/// Arm the boot watchdog of a step that just powered the node into PXE (nothing when disabled).
fn boot_watch(lc: &mut Lifecycle, now: u64, t: &Timeouts) -> Option<Action> {
    if t.boot_ms == 0 {
        return None;
    }
    let at = now + t.boot_ms;
    lc.boot_deadline_ms = Some(at);
    Some(Action::Deadline { at_ms: at })
}

/// Start a long-running step.
fn begin(lc: &mut Lifecycle, state: State, retry: bool, deadline: u64) {
    lc.state = state;
    lc.op += 1;
    lc.attempts = if retry { lc.attempts + 1 } else { 1 };
    lc.deadline_ms = Some(deadline);
    lc.boot_deadline_ms = None;
    lc.boot_retries = 0;
}

fn succeed(lc: &mut Lifecycle, state: State) {
    lc.state = state;
    lc.attempts = 0;
    lc.deadline_ms = None;
    lc.boot_deadline_ms = None;
    lc.last_error = None;
    lc.image_written = false;
}

/// The running step failed: move to its failed state, keeping the reason.
fn fail(node: &mut Node, reason: String) -> Result<Vec<Action>, LifecycleError> {
    let lc = &mut node.lifecycle;
    let (state, step) = match lc.state {
        State::Verifying => (State::Enroll, "verify"),
        State::Inspecting => (
            State::InspectFailed {
                reason: reason.clone(),
            },
            "inspect",
        ),
        State::Deploying => (
            State::DeployFailed {
                reason: reason.clone(),
            },
            "deploy",
        ),
        State::Deleting | State::Cleaning => (
            State::CleanFailed {
                reason: reason.clone(),
            },
            "clean",
        ),
        _ => unreachable!("fail() is only called in a busy state"),
    };
    let was_verify = lc.state == State::Verifying;
    lc.state = state;
    lc.deadline_ms = None;
    lc.boot_deadline_ms = None;
    lc.image_written = false;
    lc.last_error = Some(format!("{step} failed: {reason}"));
    let mut actions = vec![Action::Persist];
    // Verification failed: the BMC is unreachable, powering off would fail too.
    if !was_verify && lc.maintenance.is_none() {
        actions.push(Action::PowerOff);
    }
    Ok(actions)
}

fn clean_actions(node: &Node, at: u64) -> Vec<Action> {
    vec![
        Action::Persist,
        Action::WipeDisks(WipePlan::for_disks(
            &node.properties.disks,
            node.lifecycle.wipe_full,
        )),
        Action::SetBootDevice(BootDevice::Pxe),
        Action::Reboot,
        Action::Deadline { at_ms: at },
    ]
}

/// Inspection is authoritative for what it found; declared values stay where it found nothing.
fn merge_properties(have: &mut Properties, found: Properties) {
    if found.cpus.is_some() {
        have.cpus = found.cpus;
    }
    if found.memory_mib.is_some() {
        have.memory_mib = found.memory_mib;
    }
    if !found.disks.is_empty() {
        have.disks = found.disks;
    }
    if found.boot_mode.is_some() {
        have.boot_mode = found.boot_mode;
    }
    if found.arch.is_some() {
        have.arch = found.arch;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{Bmc, Partition, PowerDriver, Secret};

    const T: Timeouts = Timeouts {
        verify_ms: 10,
        inspect_ms: 100,
        deploy_ms: 200,
        delete_ms: 30,
        clean_ms: 300,
        boot_ms: 0,
        boot_retries_max: 2,
    };
    /// [`T`] with the boot watchdog on: 20 ms, two retries.
    const W: Timeouts = Timeouts { boot_ms: 20, ..T };

    fn node() -> Node {
        Node::new(
            "n0",
            vec!["52:54:00:00:00:01".parse().unwrap()],
            Bmc {
                driver: PowerDriver::Ipmi,
                address: "127.0.0.1".into(),
                port: 623,
                username: "admin".into(),
                password: Secret::new("pw"),
            },
            0,
        )
    }

    fn target() -> DeployTarget {
        DeployTarget {
            image: "centos".into(),
            root_hint: Some("serial=S1".into()),
        }
    }

    fn inspected() -> Properties {
        Properties {
            cpus: Some(8),
            memory_mib: Some(16384),
            disks: vec![Disk {
                name: "sda".into(),
                size_bytes: 100 * MIB,
                model: Some("QEMU".into()),
                serial: Some("S1".into()),
                partitions: vec![Partition {
                    start_bytes: MIB,
                    size_bytes: 50 * MIB,
                }],
            }],
            boot_mode: Some(crate::inventory::BootMode::Uefi),
            arch: None,
        }
    }

    fn ok(n: &mut Node, e: Event, now: u64) -> Vec<Action> {
        let from = n.lifecycle.state.clone();
        let a =
            step(n, e.clone(), now, &T).unwrap_or_else(|err| panic!("{e:?} from {from:?}: {err}"));
        a
    }

    /// Drive a fresh node to `state` through the happy path.
    fn at(state: &str) -> Node {
        if let Some(step) = state.strip_suffix(" failed") {
            let mut n = at(&format!("{}ing", step.trim_end_matches('e')));
            ok(
                &mut n,
                Event::Failed {
                    reason: "broken".into(),
                },
                2,
            );
            assert_eq!(n.lifecycle.state.name(), state);
            return n;
        }
        let mut n = node();
        let path: Vec<(Event, &str)> = vec![
            (Event::Manage, "verifying"),
            (Event::Verified, "manageable"),
            (Event::Inspect, "inspecting"),
            (Event::Inspected(inspected()), "manageable"),
            (Event::Provide, "available"),
            (Event::Deploy(target()), "deploying"),
            (Event::ImageWritten, "deploying"),
            (Event::Deployed, "active"),
            (Event::Delete { full_wipe: false }, "deleting"),
            (Event::TornDown, "cleaning"),
        ];
        if n.lifecycle.state.name() == state {
            return n;
        }
        for (e, s) in path {
            ok(&mut n, e, 1);
            if s == state {
                return n;
            }
        }
        panic!("no state {state}");
    }

    #[test]
    fn happy_path_with_actions() {
        let mut n = node();
        assert_eq!(
            ok(&mut n, Event::Manage, 1000),
            vec![
                Action::Persist,
                Action::VerifyPower,
                Action::Deadline { at_ms: 1010 }
            ]
        );
        assert_eq!(n.lifecycle.state, State::Verifying);
        assert_eq!(n.lifecycle.op, 1);
        assert_eq!(ok(&mut n, Event::Verified, 1001), vec![Action::Persist]);
        assert_eq!(n.lifecycle.state, State::Manageable);
        assert_eq!(n.lifecycle.deadline_ms, None);
        assert_eq!(
            ok(&mut n, Event::Inspect, 2000),
            vec![
                Action::Persist,
                Action::SetBootDevice(BootDevice::Pxe),
                Action::Reboot,
                Action::Deadline { at_ms: 2100 }
            ]
        );
        assert_eq!(
            ok(&mut n, Event::Inspected(inspected()), 2050),
            vec![Action::Persist, Action::PowerOff]
        );
        assert_eq!(n.properties.memory_mib, Some(16384));
        assert_eq!(n.updated_ms, 2050);
        assert_eq!(ok(&mut n, Event::Provide, 3000), vec![Action::Persist]);
        assert_eq!(n.lifecycle.state, State::Available);
        assert_eq!(
            ok(&mut n, Event::Deploy(target()), 4000),
            vec![
                Action::Persist,
                Action::Deploy {
                    op: 3,
                    image: "centos".into(),
                    root_hint: Some("serial=S1".into())
                },
                Action::SetBootDevice(BootDevice::Pxe),
                Action::Reboot,
                Action::Deadline { at_ms: 4200 }
            ]
        );
        // Written: boot from disk, still deploying, a fresh deadline for the first boot.
        assert_eq!(
            ok(&mut n, Event::ImageWritten, 4100),
            vec![
                Action::Persist,
                Action::SetBootDevice(BootDevice::Disk),
                Action::Reboot,
                Action::Deadline { at_ms: 4300 }
            ]
        );
        assert_eq!(n.lifecycle.state, State::Deploying);
        assert!(n.lifecycle.image_written);
        assert_eq!(n.lifecycle.op, 3, "same step, same op");
        // A repeated "written" report changes nothing.
        assert_eq!(ok(&mut n, Event::ImageWritten, 4110), vec![]);
        // The image's first boot: active, no power action.
        assert_eq!(ok(&mut n, Event::Deployed, 4150), vec![Action::Persist]);
        assert_eq!(n.lifecycle.state, State::Active);
        assert!(!n.lifecycle.image_written);
        assert_eq!(n.lifecycle.deadline_ms, None);
        assert_eq!(n.lifecycle.target, Some(target()));
        assert_eq!(
            ok(&mut n, Event::Delete { full_wipe: false }, 5000),
            vec![
                Action::Persist,
                Action::PowerOff,
                Action::Deadline { at_ms: 5030 }
            ]
        );
        let a = ok(&mut n, Event::TornDown, 5010);
        assert_eq!(n.lifecycle.state, State::Cleaning);
        assert_eq!(n.lifecycle.target, None);
        assert_eq!(a[0], Action::Persist);
        let Action::WipeDisks(plan) = &a[1] else {
            panic!("{a:?}")
        };
        assert!(!plan.full);
        assert_eq!(plan.disks[0].disk, "sda");
        assert_eq!(
            &a[2..],
            &[
                Action::SetBootDevice(BootDevice::Pxe),
                Action::Reboot,
                Action::Deadline { at_ms: 5310 }
            ]
        );
        assert_eq!(
            ok(&mut n, Event::Cleaned, 5100),
            vec![Action::Persist, Action::PowerOff]
        );
        assert_eq!(n.lifecycle.state, State::Available);
        assert_eq!(n.lifecycle.op, 5); // verify, inspect, deploy, delete, clean
    }

    #[test]
    fn wipe_plan_covers_tables_and_partition_edges() {
        let disks = inspected().disks;
        let plan = WipePlan::for_disks(&disks, false);
        // Disk [0,1M) and partition head [1M,2M) merge; partition tail [50M,51M); disk tail.
        assert_eq!(
            plan.disks[0].extents,
            vec![
                Extent {
                    offset: 0,
                    len: 2 * MIB
                },
                Extent {
                    offset: 50 * MIB,
                    len: MIB
                },
                Extent {
                    offset: 99 * MIB,
                    len: MIB
                },
            ]
        );
        let full = WipePlan::for_disks(&disks, true);
        assert_eq!(
            full.disks[0].extents,
            vec![Extent {
                offset: 0,
                len: 100 * MIB
            }]
        );
        // A tiny disk is wiped whole; a declared-only disk is named by index.
        let tiny = WipePlan::for_disks(
            &[Disk {
                size_bytes: MIB,
                ..Disk::default()
            }],
            false,
        );
        assert_eq!(tiny.disks[0].disk, "#0");
        assert_eq!(
            tiny.disks[0].extents,
            vec![Extent {
                offset: 0,
                len: MIB
            }]
        );
    }

    #[test]
    fn full_wipe_is_carried_to_cleaning() {
        let mut n = at("active");
        ok(&mut n, Event::Delete { full_wipe: true }, 10);
        let a = ok(&mut n, Event::TornDown, 11);
        assert!(matches!(&a[1], Action::WipeDisks(p) if p.full));
    }

    #[test]
    fn failures_keep_reason_and_allow_retry() {
        // Inspect.
        let mut n = at("inspecting");
        assert_eq!(
            ok(
                &mut n,
                Event::Failed {
                    reason: "no agent".into()
                },
                5
            ),
            vec![Action::Persist, Action::PowerOff]
        );
        assert_eq!(
            n.lifecycle.state,
            State::InspectFailed {
                reason: "no agent".into()
            }
        );
        assert_eq!(
            n.lifecycle.last_error.as_deref(),
            Some("inspect failed: no agent")
        );
        assert_eq!(n.lifecycle.attempts, 1);
        ok(&mut n, Event::Inspect, 6);
        assert_eq!(n.lifecycle.state, State::Inspecting);
        assert_eq!(n.lifecycle.attempts, 2);
        ok(&mut n, Event::Inspected(Properties::default()), 7);
        assert_eq!(n.lifecycle.attempts, 0);
        assert_eq!(n.lifecycle.last_error, None);

        // Deploy.
        let mut n = at("deploying");
        ok(
            &mut n,
            Event::Failed {
                reason: "image checksum".into(),
            },
            5,
        );
        assert_eq!(n.lifecycle.state.reason(), Some("image checksum"));
        assert_eq!(n.lifecycle.state.name(), "deploy failed");
        ok(&mut n, Event::Deploy(target()), 6);
        assert_eq!(
            (n.lifecycle.state.name(), n.lifecycle.attempts),
            ("deploying", 2)
        );
        // Or give up and delete from deploy failed.
        ok(
            &mut n,
            Event::Failed {
                reason: "again".into(),
            },
            7,
        );
        ok(&mut n, Event::Delete { full_wipe: false }, 8);
        assert_eq!(n.lifecycle.state, State::Deleting);

        // Clean (and teardown failures land in clean failed too).
        let mut n = at("cleaning");
        ok(
            &mut n,
            Event::Failed {
                reason: "disk gone".into(),
            },
            5,
        );
        assert_eq!(
            n.lifecycle.state,
            State::CleanFailed {
                reason: "disk gone".into()
            }
        );
        let a = ok(&mut n, Event::Clean { full_wipe: true }, 6);
        assert!(matches!(&a[1], Action::WipeDisks(p) if p.full));
        assert_eq!(n.lifecycle.attempts, 2);
        let mut n = at("deleting");
        ok(
            &mut n,
            Event::Failed {
                reason: "bmc".into(),
            },
            5,
        );
        assert_eq!(n.lifecycle.state.name(), "clean failed");
        ok(&mut n, Event::Manage, 6);
        assert_eq!(n.lifecycle.state, State::Manageable);

        // Verification failure: back to enroll with last_error, retry counts.
        let mut n = at("verifying");
        assert_eq!(
            ok(
                &mut n,
                Event::Failed {
                    reason: "auth".into()
                },
                5
            ),
            vec![Action::Persist]
        );
        assert_eq!(n.lifecycle.state, State::Enroll);
        assert_eq!(
            n.lifecycle.last_error.as_deref(),
            Some("verify failed: auth")
        );
        ok(&mut n, Event::Manage, 6);
        assert_eq!(n.lifecycle.attempts, 2);
    }

    #[test]
    fn timeouts_fail_only_when_due_and_current() {
        let mut n = at("inspecting"); // inspected at t=1, deadline 101
        assert_eq!(n.lifecycle.deadline_ms, Some(101));
        let before = n.clone();
        assert_eq!(ok(&mut n, Event::Timeout, 100), vec![]);
        assert_eq!(n, before, "an early timeout changes nothing");
        ok(&mut n, Event::Timeout, 101);
        assert_eq!(
            n.lifecycle.state,
            State::InspectFailed {
                reason: "timed out in inspecting".into()
            }
        );
        // A stale timeout in a stable state is ignored.
        let mut n = at("manageable");
        assert_eq!(ok(&mut n, Event::Timeout, 10_000), vec![]);
        for s in ["verifying", "deploying", "deleting", "cleaning"] {
            let mut n = at(s);
            ok(&mut n, Event::Timeout, 1_000_000);
            assert!(
                n.lifecycle.state.is_failed() || n.lifecycle.last_error.is_some(),
                "{s}"
            );
        }
    }

    #[test]
    fn invalid_transitions_are_typed_errors_and_change_nothing() {
        let requests = [
            Event::Manage,
            Event::Inspect,
            Event::Provide,
            Event::Deploy(target()),
            Event::Delete { full_wipe: false },
            Event::Clean { full_wipe: false },
            Event::Verified,
            Event::Inspected(Properties::default()),
            Event::ImageWritten,
            Event::ImageRefused { reason: "x".into() },
            Event::Deployed,
            Event::TornDown,
            Event::Cleaned,
            Event::Failed { reason: "x".into() },
        ];
        // (state, events accepted there)
        let table: &[(&str, &[&str])] = &[
            ("enroll", &["manage"]),
            ("verifying", &["verified", "failed"]),
            ("manageable", &["inspect", "provide"]),
            ("inspecting", &["inspected", "failed"]),
            ("available", &["deploy", "manage"]),
            (
                "deploying",
                &[
                    "image written",
                    "image refused",
                    "deployed",
                    "failed",
                    "delete",
                ],
            ),
            ("active", &["delete"]),
            ("deleting", &["torn down", "failed"]),
            ("cleaning", &["cleaned", "failed"]),
            ("inspect failed", &["inspect", "manage"]),
            ("deploy failed", &["deploy", "delete"]),
            ("clean failed", &["clean", "manage"]),
        ];
        let mut rejected = 0;
        for (state, accepted) in table {
            for e in &requests {
                let mut n = at(state);
                let before = n.clone();
                match step(&mut n, e.clone(), 50, &T) {
                    Ok(_) => assert!(
                        accepted.contains(&e.name()),
                        "{state} accepted {}",
                        e.name()
                    ),
                    Err(err) => {
                        assert!(
                            !accepted.contains(&e.name()),
                            "{state} refused {}: {err}",
                            e.name()
                        );
                        assert_eq!(
                            err,
                            LifecycleError::InvalidTransition {
                                state,
                                event: e.name()
                            }
                        );
                        assert_eq!(n, before);
                        rejected += 1;
                    }
                }
            }
        }
        assert!(rejected > 130, "{rejected}");
        // Abandoning a deploy: a new op, and the old deploy's reports no longer apply.
        let mut n = at("deploying");
        let op = n.lifecycle.op;
        ok(&mut n, Event::ImageWritten, 3);
        ok(&mut n, Event::Delete { full_wipe: false }, 4);
        assert_eq!(n.lifecycle.state, State::Deleting);
        assert_eq!(n.lifecycle.op, op + 1);
        assert!(!n.lifecycle.image_written);
        assert!(step(&mut n, Event::Deployed, 5, &T).is_err());
        let err = step(&mut at("active"), Event::Provide, 0, &T).unwrap_err();
        assert_eq!(err.to_string(), "cannot handle `provide` in state `active`");
    }

    #[test]
    fn maintenance_blocks_requests_and_hardware_actions() {
        let mut n = at("available");
        ok(
            &mut n,
            Event::Maintenance {
                on: true,
                reason: Some("bad fan".into()),
            },
            5,
        );
        assert_eq!(n.lifecycle.maintenance.as_deref(), Some("bad fan"));
        let err = step(&mut n, Event::Deploy(target()), 6, &T).unwrap_err();
        assert_eq!(
            err,
            LifecycleError::InMaintenance {
                state: "available",
                event: "deploy",
                reason: "bad fan".into()
            }
        );
        assert!(err.to_string().contains("bad fan"));
        ok(
            &mut n,
            Event::Maintenance {
                on: false,
                reason: None,
            },
            7,
        );
        assert_eq!(n.lifecycle.maintenance, None);
        ok(&mut n, Event::Deploy(target()), 8);

        // Busy node put in maintenance: timeouts wait, reports are recorded without hardware
        // actions, and leaving maintenance re-arms the deadline.
        let mut n = at("deploying"); // deadline 201
        ok(
            &mut n,
            Event::Maintenance {
                on: true,
                reason: None,
            },
            5,
        );
        assert_eq!(ok(&mut n, Event::Timeout, 500), vec![]);
        assert_eq!(n.lifecycle.state, State::Deploying);
        assert_eq!(
            ok(
                &mut n,
                Event::Maintenance {
                    on: false,
                    reason: None
                },
                501
            ),
            vec![Action::Persist, Action::Deadline { at_ms: 201 }]
        );
        ok(
            &mut n,
            Event::Maintenance {
                on: true,
                reason: None,
            },
            502,
        );
        assert_eq!(ok(&mut n, Event::Deployed, 503), vec![Action::Persist]);
        assert_eq!(n.lifecycle.state, State::Active);
        let err = step(&mut n, Event::Delete { full_wipe: false }, 504, &T).unwrap_err();
        assert!(err.to_string().contains("no reason given"), "{err}");
    }

    /// Every way a deploy can fail lands in `deploy failed` with its reason, never `active`;
    /// and `deploy` again retries with a new op.
    #[test]
    fn deploy_failures_never_leave_the_node_half_active() {
        // Before the write: agent error, BMC error, timeout. (event, in written half?)
        let cases: Vec<(Event, bool, &str)> = vec![
            (
                Event::Failed {
                    reason: "disk too small".into(),
                },
                false,
                "disk too small",
            ),
            (
                Event::Failed {
                    reason: "SetBootDevice(Disk): bmc gone".into(),
                },
                true,
                "SetBootDevice(Disk): bmc gone",
            ),
            (Event::Timeout, false, "timed out in deploying"),
            (
                Event::Timeout,
                true,
                "timed out waiting for the deployed image to say booted",
            ),
        ];
        for (event, written, reason) in cases {
            let mut n = at("deploying");
            let op = n.lifecycle.op;
            if written {
                ok(&mut n, Event::ImageWritten, 5);
            }
            let a = ok(&mut n, event.clone(), 1_000_000);
            assert_eq!(a, vec![Action::Persist, Action::PowerOff], "{event:?}");
            assert_eq!(
                n.lifecycle.state,
                State::DeployFailed {
                    reason: reason.into()
                }
            );
            assert!(!n.lifecycle.image_written);
            assert_eq!(
                n.lifecycle.last_error.as_deref(),
                Some(format!("deploy failed: {reason}").as_str())
            );
            // A late "booted" or "written" does not make it active.
            assert!(step(&mut n, Event::Deployed, 1_000_001, &T).is_err());
            assert!(step(&mut n, Event::ImageWritten, 1_000_001, &T).is_err());
            // Retry.
            let a = ok(&mut n, Event::Deploy(target()), 1_000_002);
            assert!(
                matches!(a[1], Action::Deploy { op: o, .. } if o == op + 1),
                "{a:?}"
            );
            assert_eq!(n.lifecycle.state, State::Deploying);
            assert_eq!(n.lifecycle.attempts, 2);
        }

        // A refused image: failed before any hardware action, none to undo.
        let mut n = at("deploying");
        assert_eq!(
            ok(
                &mut n,
                Event::ImageRefused {
                    reason: "sha256 mismatch".into()
                },
                5
            ),
            vec![Action::Persist]
        );
        assert_eq!(n.lifecycle.state.reason(), Some("sha256 mismatch"));
        // Once written, "image refused" makes no sense.
        let mut n = at("deploying");
        ok(&mut n, Event::ImageWritten, 5);
        assert!(step(&mut n, Event::ImageRefused { reason: "x".into() }, 6, &T).is_err());
    }

    #[test]
    fn lifecycle_round_trips_through_json() {
        let mut n = at("deploying");
        ok(
            &mut n,
            Event::Failed {
                reason: "boom".into(),
            },
            3,
        );
        let j = serde_json::to_string(&n.lifecycle).unwrap();
        assert!(j.contains("\"state\":\"deploy_failed\""), "{j}");
        let back: Lifecycle = serde_json::from_str(&j).unwrap();
        assert_eq!(back, n.lifecycle);
    }

    fn okw(n: &mut Node, e: Event, now: u64) -> Vec<Action> {
        step(n, e.clone(), now, &W).unwrap_or_else(|err| panic!("{e:?}: {err}"))
    }

    #[test]
    fn boot_watchdog_is_armed_by_steps_that_pxe_boot() {
        // Inspect at 1000: step deadline 1100, boot deadline 1020.
        let mut n = at("manageable");
        assert_eq!(
            okw(&mut n, Event::Inspect, 1000),
            vec![
                Action::Persist,
                Action::SetBootDevice(BootDevice::Pxe),
                Action::Reboot,
                Action::Deadline { at_ms: 1100 },
                Action::Deadline { at_ms: 1020 },
            ]
        );
        assert_eq!(n.lifecycle.boot_deadline_ms, Some(1020));
        assert_eq!(n.lifecycle.boot_retries, 0);
        // Deploy: armed; the image written (the ramdisk plainly booted) clears it.
        let mut n = at("available");
        let a = okw(&mut n, Event::Deploy(target()), 2000);
        assert_eq!(a.last(), Some(&Action::Deadline { at_ms: 2020 }));
        okw(&mut n, Event::ImageWritten, 2010);
        assert_eq!(n.lifecycle.boot_deadline_ms, None);
        // The disk boot is not PXE: a late watchdog timer does nothing.
        assert_eq!(okw(&mut n, Event::Timeout, 2025), vec![]);
        // Cleaning (after teardown, and a retried clean): armed.
        let mut n = at("deleting");
        let a = okw(&mut n, Event::TornDown, 3000);
        assert_eq!(a.last(), Some(&Action::Deadline { at_ms: 3020 }));
        okw(&mut n, Event::Failed { reason: "x".into() }, 3001);
        assert_eq!(
            n.lifecycle.boot_deadline_ms, None,
            "a failed step disarms it"
        );
        let a = okw(&mut n, Event::Clean { full_wipe: false }, 3002);
        assert_eq!(a.last(), Some(&Action::Deadline { at_ms: 3022 }));
        // Steps that do not PXE-boot arm none; 0 disables it everywhere.
        let mut n = at("active");
        let a = okw(&mut n, Event::Delete { full_wipe: false }, 4000);
        assert_eq!(
            a.iter()
                .filter(|a| matches!(a, Action::Deadline { .. }))
                .count(),
            1
        );
        assert_eq!(n.lifecycle.boot_deadline_ms, None);
        let mut n = at("manageable");
        let a = ok(&mut n, Event::Inspect, 1000);
        assert_eq!(
            a.iter()
                .filter(|a| matches!(a, Action::Deadline { .. }))
                .count(),
            1
        );
        assert_eq!(n.lifecycle.boot_deadline_ms, None);
    }

    #[test]
    fn boot_seen_meets_the_deadline_idempotently() {
        let mut n = at("manageable");
        okw(&mut n, Event::Inspect, 1000);
        assert_eq!(okw(&mut n, Event::BootSeen, 1005), vec![Action::Persist]);
        assert_eq!(n.lifecycle.boot_deadline_ms, None);
        // Again: nothing to do, nothing written.
        let before = n.clone();
        assert_eq!(okw(&mut n, Event::BootSeen, 1006), vec![]);
        assert_eq!(n, before);
        // The boot timer fires anyway: no reboot, still inspecting.
        assert_eq!(okw(&mut n, Event::Timeout, 1020), vec![]);
        assert_eq!(n.lifecycle.state, State::Inspecting);
        assert_eq!(n.lifecycle.boot_retries, 0);
        // The step's own deadline still applies.
        okw(&mut n, Event::Timeout, 1100);
        assert_eq!(n.lifecycle.state.name(), "inspect failed");
        // Ignored (not refused) in states without a watchdog.
        for s in [
            "enroll",
            "manageable",
            "available",
            "active",
            "deploy failed",
        ] {
            let mut n = at(s);
            let before = n.clone();
            assert_eq!(okw(&mut n, Event::BootSeen, 50), vec![], "{s}");
            assert_eq!(n, before, "{s}");
        }
    }

    #[test]
    fn boot_watchdog_retries_then_fails_the_step() {
        let mut n = at("manageable");
        okw(&mut n, Event::Inspect, 1000); // boot deadline 1020, step deadline 1100
        let op = n.lifecycle.op;
        // Early: nothing.
        assert_eq!(okw(&mut n, Event::Timeout, 1019), vec![]);
        // Retry 1 and 2: power-cycle into PXE again, a fresh boot deadline, same op.
        for (i, now) in [(1u32, 1020u64), (2, 1040)] {
            assert_eq!(
                okw(&mut n, Event::Timeout, now),
                vec![
                    Action::Persist,
                    Action::SetBootDevice(BootDevice::Pxe),
                    Action::Reboot,
                    Action::Deadline { at_ms: now + 20 },
                ]
            );
            assert_eq!(n.lifecycle.boot_retries, i);
            assert_eq!(n.lifecycle.state, State::Inspecting);
            assert_eq!(n.lifecycle.op, op, "the same attempt");
            assert_eq!(
                n.lifecycle.deadline_ms,
                Some(1100),
                "the step deadline stays"
            );
        }
        // A stale timer (the first boot deadline) changes nothing.
        assert_eq!(okw(&mut n, Event::Timeout, 1041), vec![]);
        // Third boot deadline missed: the step fails like a timeout, the node is powered off.
        assert_eq!(
            okw(&mut n, Event::Timeout, 1060),
            vec![Action::Persist, Action::PowerOff]
        );
        let reason = "no PXE boot reached the seed within 20 ms, 3 power-ons";
        assert_eq!(n.lifecycle.state.reason(), Some(reason));
        assert_eq!(
            n.lifecycle.last_error.as_deref(),
            Some(format!("inspect failed: {reason}").as_str())
        );
        assert_eq!(n.lifecycle.boot_retries, 2, "kept for the operator");
        assert_eq!(n.lifecycle.boot_deadline_ms, None);
        // The reason in seconds, as configured.
        let secs = Timeouts {
            boot_ms: 180_000,
            boot_retries_max: 0,
            ..Timeouts::default()
        };
        let mut n = at("available");
        step(&mut n, Event::Deploy(target()), 0, &secs).unwrap();
        step(&mut n, Event::Timeout, 180_000, &secs).unwrap();
        assert_eq!(
            n.lifecycle.state.reason(),
            Some("no PXE boot reached the seed within 180 s, 1 power-ons")
        );
        // A retried step starts counting again.
        let mut n = at("manageable");
        okw(&mut n, Event::Inspect, 0);
        okw(&mut n, Event::Timeout, 20);
        assert_eq!(n.lifecycle.boot_retries, 1);
        okw(&mut n, Event::Failed { reason: "x".into() }, 21);
        okw(&mut n, Event::Inspect, 22);
        assert_eq!(n.lifecycle.boot_retries, 0);
        // The step's deadline wins when both are due.
        okw(&mut n, Event::Timeout, 1_000);
        assert_eq!(n.lifecycle.state.reason(), Some("timed out in inspecting"));
    }

    #[test]
    fn boot_watchdog_survives_a_restart_and_waits_for_maintenance() {
        // The record is all the driver keeps: a node read back from JSON retries the same way.
        let mut n = at("manageable");
        okw(&mut n, Event::Inspect, 1000);
        okw(&mut n, Event::Timeout, 1020);
        let j = serde_json::to_string(&n).unwrap();
        assert!(j.contains("\"boot_deadline_ms\":1040"), "{j}");
        assert!(j.contains("\"boot_retries\":1"), "{j}");
        let mut back: Node = serde_json::from_str(&j).unwrap();
        assert_eq!(back, n);
        let a = okw(&mut back, Event::Timeout, 5_000);
        // Way past both: the step deadline (1100) wins.
        assert_eq!(a, vec![Action::Persist, Action::PowerOff]);
        let mut back: Node = serde_json::from_str(&j).unwrap();
        assert_eq!(okw(&mut back, Event::Timeout, 1040)[2], Action::Reboot);
        assert_eq!(back.lifecycle.boot_retries, 2);
        // Records written before the watchdog existed read as "none armed".
        let old: Lifecycle = serde_json::from_str(r#"{"state":"inspecting","op":3}"#).unwrap();
        assert_eq!((old.boot_deadline_ms, old.boot_retries), (None, 0));
        // In maintenance the watchdog waits; leaving it re-arms both deadlines.
        let mut n = at("manageable");
        okw(&mut n, Event::Inspect, 1000);
        okw(
            &mut n,
            Event::Maintenance {
                on: true,
                reason: None,
            },
            1001,
        );
        assert_eq!(okw(&mut n, Event::Timeout, 1030), vec![]);
        assert_eq!(
            okw(
                &mut n,
                Event::Maintenance {
                    on: false,
                    reason: None
                },
                1031
            ),
            vec![
                Action::Persist,
                Action::Deadline { at_ms: 1100 },
                Action::Deadline { at_ms: 1020 }
            ]
        );
        assert_eq!(okw(&mut n, Event::Timeout, 1032)[2], Action::Reboot);
    }
}
