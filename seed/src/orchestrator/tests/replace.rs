//! `stack replace` (a member moved off its node) against the simulated world.

use super::*;

/// `stack replace` of a server on a completed stack (its machine died): the member moves to a
/// spare with its name, the dead node is released, the member's deployment is published to
/// the new node and the stack completes only on that node's signal; the other servers are not
/// touched. A member that is not a server, or a busy stack, is refused with nothing changed.
#[test]
fn replace_moves_a_server_to_a_spare_and_redoes_its_deployment() {
    let mut nodes = pool();
    nodes.push(node("ctl-spare", "control", 16384));
    let mut w = World::new(TEMPLATE, &[], nodes);
    w.settle();
    assert_eq!(w.rec.status, Status::CreateComplete, "{}", w.rec.reason);
    let dead = w.node_of("control");
    let computes = (w.node_of("compute-0"), w.node_of("compute-1"));

    for (member, want) in [("cfg", "no server"), ("nope", "no server")] {
        let e = replace(&w.rec, member, w.now).unwrap_err().to_string();
        assert!(e.contains(want) && e.contains(member), "{e}");
    }
    // By the node's name, as an operator who knows which machine died says it.
    let rec = replace(&w.rec, &dead, w.now).unwrap();
    assert_eq!(rec.status, Status::UpdateInProgress);
    assert!(
        rec.reason.contains("control") && rec.reason.contains(&dead),
        "{}",
        rec.reason
    );
    assert!(matches!(
        replace(&rec, "control", w.now),
        Err(StackError::Busy { .. })
    ));
    w.rec = rec;

    w.pass();
    let new = w.node_of("control");
    assert_ne!(new, dead);
    assert!(w.last.contains(&Action::Release { node: dead.clone() }));
    assert_eq!(
        w.deploys(),
        vec![new.clone()],
        "only the replacement deploys"
    );
    w.finish_deploys();
    w.pass();
    // Published to the new node; the stack waits for its signal.
    assert_eq!(
        w.node(&new).metadata.as_ref().unwrap()["deployments"][0]["name"],
        json!("control_deploy")
    );
    assert_eq!(
        w.rec.members["control_deploy"].status,
        MemberStatus::InProgress
    );
    assert_eq!(w.rec.status, Status::UpdateInProgress);
    w.signal(&new, "control_deploy", json!({"deploy_stdout": "new"}));
    w.pass();
    assert_eq!(w.rec.status, Status::UpdateComplete, "{}", w.rec.reason);
    assert_eq!(w.rec.outputs.as_ref().unwrap()["control_node"], json!(new));
    assert_eq!(w.rec.members["control"].excluded, vec![dead]);
    assert_eq!((w.node_of("compute-0"), w.node_of("compute-1")), computes);
}
