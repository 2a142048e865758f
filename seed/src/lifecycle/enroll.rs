//! From enrollment to `available`: verifying the BMC (`enroll` → `verifying` → `manageable`),
//! inspection (`inspecting`, `inspect failed`; asked from `enroll`, it follows the verification
//! in the same write), `provide`, and `manage` back from a stable state.

use super::common::{begin, boot_watch, succeed};
use super::{Action as A, State as S, Step};
use super::{BootDevice, Event, Timeouts};
use crate::inventory::{Node, Properties};

/// `manage`, `verified`, `inspect`, `inspected`, `provide`; `None` where the state refuses it.
pub(super) fn transition(node: &mut Node, event: Event, now: u64, t: &Timeouts) -> Step {
    let lc = &mut node.lifecycle;
    Some(match (&lc.state, event) {
        (S::Enroll, e @ (Event::Manage | Event::Inspect)) => {
            let retry = lc.last_error.is_some();
            // `inspect` from `enroll` verifies the BMC first, then inspects.
            lc.inspect_after_verify = e == Event::Inspect;
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
            if std::mem::take(&mut lc.inspect_after_verify) {
                // One write: `manageable` and the inspection's start commit together.
                return Some(inspect(lc, false, now, t));
            }
            vec![A::Persist]
        }
        (S::Manageable | S::InspectFailed { .. }, Event::Inspect) => {
            let retry = matches!(lc.state, S::InspectFailed { .. });
            inspect(lc, retry, now, t)
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
        _ => return None,
    })
}

/// Start an inspection: into PXE, the step's deadline and the boot watchdog.
fn inspect(lc: &mut crate::inventory::Lifecycle, retry: bool, now: u64, t: &Timeouts) -> Vec<A> {
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
