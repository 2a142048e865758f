//! Deploying, in two halves: `deploy` hands the agent its work and PXE-boots the ramdisk;
//! `image written` boots the node from disk; the image's `deployed` ("booted") makes it active.

use super::common::{begin, boot_watch, fail, succeed};
use super::{Action as A, State as S, Step};
use super::{BootDevice, Event, Timeouts};
use crate::inventory::Node;

/// `deploy`, `image written`, `image refused`, `deployed`; `None` where the state refuses it.
pub(super) fn transition(node: &mut Node, event: Event, now: u64, t: &Timeouts) -> Step {
    let lc = &mut node.lifecycle;
    Some(match (&lc.state, event) {
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
                return Some(vec![]);
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
            let mut a = fail(node, reason);
            a.retain(|a| !a.touches_hardware());
            a
        }
        // Proof the image runs from disk (only the deployed image holds the node's credential),
        // whether or not the "written" report arrived.
        (S::Deploying, Event::Deployed) => {
            succeed(lc, S::Active);
            vec![A::Persist]
        }
        _ => return None,
    })
}
