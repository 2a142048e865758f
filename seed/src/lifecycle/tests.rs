//! The state machine's transitions, failures, timeouts and maintenance; the boot watchdog's
//! in `tests/watchdog.rs`.

use super::*;
use crate::inventory::{Bmc, PowerDriver, Properties, Secret};

mod watchdog;

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
            allow_ipmi15: false,
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
        disks: super::wipe::tests::disks(),
        boot_mode: Some(crate::inventory::BootMode::Uefi),
        arch: None,
    }
}

/// What a step that (re)boots the node from `device` answers: persist, set the boot device,
/// reboot, and the deadline `at_ms`.
fn reboot_into(device: BootDevice, at_ms: u64) -> Vec<Action> {
    vec![
        Action::Persist,
        Action::SetBootDevice(device),
        Action::Reboot,
        Action::Deadline { at_ms },
    ]
}

fn ok(n: &mut Node, e: Event, now: u64) -> Vec<Action> {
    let from = n.lifecycle.state.clone();
    let a = step(n, e.clone(), now, &T).unwrap_or_else(|err| panic!("{e:?} from {from:?}: {err}"));
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
fn inspect_from_enroll_verifies_then_inspects_in_one_write_kept_in_the_record() {
    let mut n = node();
    assert_eq!(
        ok(&mut n, Event::Inspect, 1000),
        vec![
            Action::Persist,
            Action::VerifyPower,
            Action::Deadline { at_ms: 1010 }
        ]
    );
    assert_eq!(n.lifecycle.state, State::Verifying);
    assert!(n.lifecycle.inspect_after_verify);
    // The wish is in the record itself: a daemon that reads it back (a restart, a new HA
    // leader) still inspects.
    let json = serde_json::to_string(&n).unwrap();
    let mut n: Node = serde_json::from_str(&json).unwrap();
    assert!(n.lifecycle.inspect_after_verify);
    let a = ok(&mut n, Event::Verified, 1001);
    assert_eq!(a, reboot_into(BootDevice::Pxe, 1101));
    assert_eq!(n.lifecycle.state, State::Inspecting);
    assert!(!n.lifecycle.inspect_after_verify);
    assert_eq!(n.lifecycle.last_error, None);

    // `manage` alone stops at manageable; a failed verification forgets the wish.
    let mut m = node();
    ok(&mut m, Event::Manage, 1);
    assert!(!m.lifecycle.inspect_after_verify);
    assert_eq!(ok(&mut m, Event::Verified, 2), vec![Action::Persist]);
    assert_eq!(m.lifecycle.state, State::Manageable);
    let mut f = node();
    ok(&mut f, Event::Inspect, 1);
    ok(
        &mut f,
        Event::Failed {
            reason: "BMC unreachable".into(),
        },
        2,
    );
    assert_eq!(f.lifecycle.state, State::Enroll);
    assert!(!f.lifecycle.inspect_after_verify);
    // Not serialized when unset: records written before the field existed read the same.
    assert!(!serde_json::to_string(&f)
        .unwrap()
        .contains("inspect_after_verify"));
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
        reboot_into(BootDevice::Pxe, 2100)
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
        reboot_into(BootDevice::Disk, 4300)
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
        ("enroll", &["manage", "inspect"]),
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
