//! Taking a node back: `delete` powers it off (`deleting`), `torn down` starts cleaning (the
//! disks are wiped by the ramdisk), `cleaned` makes it available again; `clean` retries a
//! failed clean.

use super::common::{begin, boot_watch, succeed};
use super::{Action, BootDevice, Event, Timeouts, WipePlan};
use super::{Action as A, State as S, Step};
use crate::inventory::Node;

/// `delete`, `torn down`, `clean`, `cleaned`; `None` where the state refuses it.
pub(super) fn transition(node: &mut Node, event: Event, now: u64, t: &Timeouts) -> Step {
    let lc = &mut node.lifecycle;
    Some(match (&lc.state, event) {
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
        _ => return None,
    })
}

/// Entering `cleaning`: the wipe plan, then PXE into the ramdisk, and the step's deadline.
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
