//! The PXE boot watchdog: armed by the steps that PXE-boot, met by `boot seen`, power-cycling
//! on a miss, failing the step after its retries, and surviving a restart and maintenance.

use super::*;

fn okw(n: &mut Node, e: Event, now: u64) -> Vec<Action> {
    step(n, e.clone(), now, &W).unwrap_or_else(|err| panic!("{e:?}: {err}"))
}

#[test]
fn boot_watchdog_is_armed_by_steps_that_pxe_boot() {
    // Inspect at 1000: step deadline 1100, boot deadline 1020.
    let mut n = at("manageable");
    assert_eq!(
        okw(&mut n, Event::Inspect, 1000),
        [
            reboot_into(BootDevice::Pxe, 1100),
            vec![Action::Deadline { at_ms: 1020 }]
        ]
        .concat()
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
            reboot_into(BootDevice::Pxe, now + 20)
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
