//! What every state shares: the events any state takes (maintenance on and off, the boot
//! watchdog met, a timeout, a step's failure) and the helpers the steps start, end and fail
//! with.

use super::{Action, BootDevice, Lifecycle, State, Timeouts};
use crate::inventory::Node;

/// `maintenance on`: record the reason (the gate in [`super::transition`] does the rest).
pub(super) fn maintenance_on(lc: &mut Lifecycle, reason: Option<String>) -> Vec<Action> {
    lc.maintenance = Some(reason.unwrap_or_default());
    vec![Action::Persist]
}

/// `maintenance off`: re-arm the deadlines a busy node waited on.
pub(super) fn maintenance_off(lc: &mut Lifecycle) -> Vec<Action> {
    if lc.maintenance.take().is_none() {
        return vec![];
    }
    let mut a = vec![Action::Persist];
    if let (true, Some(at)) = (lc.state.is_busy(), lc.deadline_ms) {
        a.push(Action::Deadline { at_ms: at });
    }
    if let (true, Some(at)) = (lc.state.is_busy(), lc.boot_deadline_ms) {
        a.push(Action::Deadline { at_ms: at });
    }
    a
}

/// The node booted toward the seed: the boot watchdog is satisfied.
pub(super) fn boot_seen(lc: &mut Lifecycle) -> Vec<Action> {
    if lc.boot_deadline_ms.take().is_none() {
        return vec![];
    }
    vec![Action::Persist]
}

/// A timeout is only meaningful for the step it was armed for: the step's deadline fails it;
/// the boot watchdog's power-cycles the node again, or fails the step once out of retries.
pub(super) fn timeout(node: &mut Node, now: u64, t: &Timeouts) -> Vec<Action> {
    let lc = &mut node.lifecycle;
    let busy = lc.state.is_busy();
    let due = busy && lc.deadline_ms.is_some_and(|d| now >= d);
    let boot_due = busy && lc.boot_deadline_ms.is_some_and(|d| now >= d);
    if due {
        let reason = if lc.image_written {
            "timed out waiting for the deployed image to say booted".to_string()
        } else {
            format!("timed out in {}", lc.state.name())
        };
        return fail(node, reason);
    }
    if !boot_due {
        return vec![];
    }
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
    let mut a = vec![
        Action::Persist,
        Action::SetBootDevice(BootDevice::Pxe),
        Action::Reboot,
    ];
    a.extend(boot_watch(lc, now, t));
    a
}

/// Arm the boot watchdog of a step that just powered the node into PXE (nothing when disabled).
pub(super) fn boot_watch(lc: &mut Lifecycle, now: u64, t: &Timeouts) -> Option<Action> {
    if t.boot_ms == 0 {
        return None;
    }
    let at = now + t.boot_ms;
    lc.boot_deadline_ms = Some(at);
    Some(Action::Deadline { at_ms: at })
}

/// Start a long-running step.
pub(super) fn begin(lc: &mut Lifecycle, state: State, retry: bool, deadline: u64) {
    lc.state = state;
    lc.op += 1;
    lc.attempts = if retry { lc.attempts + 1 } else { 1 };
    lc.deadline_ms = Some(deadline);
    lc.boot_deadline_ms = None;
    lc.boot_retries = 0;
}

/// A step succeeded: move on, clear its bookkeeping.
pub(super) fn succeed(lc: &mut Lifecycle, state: State) {
    lc.state = state;
    lc.attempts = 0;
    lc.deadline_ms = None;
    lc.boot_deadline_ms = None;
    lc.last_error = None;
    lc.image_written = false;
}

/// The running step failed: move to its failed state, keeping the reason.
pub(super) fn fail(node: &mut Node, reason: String) -> Vec<Action> {
    let lc = &mut node.lifecycle;
    lc.inspect_after_verify = false;
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
    actions
}
