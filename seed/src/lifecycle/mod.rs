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
//!
//! Layout: this file holds the events, actions and [`step`]; [`transition`] checks maintenance
//! and hands each event to its family: `common.rs` (any state: maintenance, boot seen,
//! timeouts, failures, and the helpers steps start and end with), `enroll.rs` (enroll →
//! verifying → manageable, inspection, provide), `deploy.rs` (deploying's two halves),
//! `teardown.rs` (deleting, cleaning); `wipe.rs` the cleaning plan. The node record's part
//! ([`State`], [`Lifecycle`], [`DeployTarget`]) is data in `crate::inventory`, re-exported here.

mod common;
mod deploy;
mod enroll;
mod teardown;
#[cfg(test)]
mod tests;
mod wipe;

pub use crate::inventory::{DeployTarget, Lifecycle, State};
pub use wipe::{DiskWipe, Extent, WipePlan};

use crate::inventory::{Node, Properties};
use serde::{Deserialize, Serialize};

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

/// What an event family's `transition` answers: the actions, or `None` where the state
/// refuses the event.
type Step = Option<Vec<Action>>;

/// Maintenance gate, then the event's family; hardware actions are withheld in maintenance.
fn transition(
    node: &mut Node,
    event: Event,
    now: u64,
    t: &Timeouts,
) -> Result<Vec<Action>, LifecycleError> {
    let lc = &mut node.lifecycle;
    let state_name = lc.state.name();
    let event_name = event.name();
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
    let actions = match event {
        Event::Maintenance { on: true, reason } => Some(common::maintenance_on(lc, reason)),
        Event::Maintenance { on: false, .. } => Some(common::maintenance_off(lc)),
        Event::BootSeen => Some(common::boot_seen(lc)),
        Event::Timeout => Some(common::timeout(node, now, t)),
        Event::Failed { reason } if lc.state.is_busy() => Some(common::fail(node, reason)),
        Event::Failed { .. } => None,
        e @ (Event::Manage
        | Event::Verified
        | Event::Inspect
        | Event::Inspected(_)
        | Event::Provide) => enroll::transition(node, e, now, t),
        e @ (Event::Deploy(_)
        | Event::ImageWritten
        | Event::ImageRefused { .. }
        | Event::Deployed) => deploy::transition(node, e, now, t),
        e @ (Event::Delete { .. } | Event::TornDown | Event::Clean { .. } | Event::Cleaned) => {
            teardown::transition(node, e, now, t)
        }
    };
    let Some(mut actions) = actions else {
        return Err(LifecycleError::InvalidTransition {
            state: state_name,
            event: event_name,
        });
    };
    if node.lifecycle.maintenance.is_some() {
        actions.retain(|a| !a.touches_hardware());
    }
    Ok(actions)
}
