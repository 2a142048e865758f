//! Nodes in the store: table `nodes` keyed by name (JSON), and table `macs` mapping each MAC
//! to its node's name. Both are written in one commit with create-only expectations, so two
//! nodes can never share a name or a MAC, even with concurrent writers.

use super::{Expect, Op, Revision, Store, StoreError};
use crate::inventory::{Mac, Node};

pub const NODES: &str = "nodes";
pub const MACS: &str = "macs";

fn decode(key: &str, bytes: &[u8]) -> Result<Node, StoreError> {
    super::json::decode(NODES, key, bytes)
}

/// The node as the bytes of its record.
pub fn encode(node: &Node) -> Result<Vec<u8>, StoreError> {
    super::json::encode(NODES, &node.name, node)
}

/// The node called `name` and the revision it was read at.
pub fn get(store: &dyn Store, name: &str) -> Result<Option<(Node, Revision)>, StoreError> {
    store
        .get(NODES, name)?
        .map(|r| Ok((decode(name, &r.value)?, r.revision)))
        .transpose()
}

/// Every node, by name.
pub fn list(store: &dyn Store) -> Result<Vec<(Node, Revision)>, StoreError> {
    store
        .list(NODES, "")?
        .into_iter()
        .map(|(k, r)| Ok((decode(&k, &r.value)?, r.revision)))
        .collect()
}

/// The name of the node that owns `mac`.
pub fn by_mac(store: &dyn Store, mac: Mac) -> Result<Option<String>, StoreError> {
    Ok(store
        .get(MACS, &mac.to_string())?
        .map(|r| String::from_utf8_lossy(&r.value).into_owned()))
}

/// Enroll `nodes` all together or not at all: a name or MAC already taken is a conflict and
/// nothing is written.
pub fn create(store: &dyn Store, nodes: &[Node]) -> Result<Vec<Revision>, StoreError> {
    let mut ops = Vec::new();
    for n in nodes {
        ops.push(Op::put(NODES, &n.name, encode(n)?, Expect::Absent));
        for m in &n.macs {
            ops.push(Op::put(
                MACS,
                &m.to_string(),
                n.name.as_bytes().to_vec(),
                Expect::Absent,
            ));
        }
    }
    let revs = store.commit(ops)?;
    Ok(revs
        .first()
        .map(|r| vec![*r; nodes.len()])
        .unwrap_or_default())
}

/// Save a node read at `revision` (compare-and-swap). Its MACs must not have changed.
pub fn update(store: &dyn Store, node: &Node, revision: Revision) -> Result<Revision, StoreError> {
    store.put(NODES, &node.name, encode(node)?, Expect::Revision(revision))
}

/// Remove a node read at `revision`, and its MACs.
pub fn delete(store: &dyn Store, node: &Node, revision: Revision) -> Result<(), StoreError> {
    let mut ops = vec![Op::delete(NODES, &node.name, Expect::Revision(revision))];
    for m in &node.macs {
        ops.push(Op::delete(MACS, &m.to_string(), Expect::Any));
    }
    store.commit(ops).map(drop)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::inventory::{Bmc, PowerDriver, Secret};

    pub(crate) fn node(name: &str, mac: &str) -> Node {
        Node::new(
            name,
            vec![mac.parse().unwrap()],
            Bmc {
                driver: PowerDriver::Ipmi,
                address: "127.0.0.1".into(),
                port: 6230,
                username: "admin".into(),
                password: Secret::new("pw"),
                allow_ipmi15: false,
            },
            1,
        )
    }

    /// Run by the generic store suite against every implementation.
    pub fn suite(s: &dyn Store) {
        let a = node("a", "52:54:00:00:00:0a");
        let b = node("b", "52:54:00:00:00:0b");
        create(s, &[a.clone(), b.clone()]).unwrap();
        assert_eq!(get(s, "a").unwrap().unwrap().0, a);
        assert_eq!(get(s, "a").unwrap().unwrap().0.bmc.password.expose(), "pw");
        assert_eq!(
            by_mac(s, "52:54:00:00:00:0b".parse().unwrap()).unwrap(),
            Some("b".into())
        );

        // A batch with one clash writes nothing.
        let c = node("c", "52:54:00:00:00:0c");
        let clash = node("d", "52:54:00:00:00:0a");
        assert!(create(s, &[c.clone(), clash]).unwrap_err().is_conflict());
        assert!(get(s, "c").unwrap().is_none());
        assert!(create(s, &[node("a", "52:54:00:00:00:0e")])
            .unwrap_err()
            .is_conflict());
        assert_eq!(list(s).unwrap().len(), 2);

        // Lost-update protection.
        let (mut n1, rev) = get(s, "a").unwrap().unwrap();
        let (mut n2, _) = get(s, "a").unwrap().unwrap();
        n1.lifecycle.maintenance = Some("fan".into());
        let rev2 = update(s, &n1, rev).unwrap();
        n2.lifecycle.last_error = Some("x".into());
        assert!(update(s, &n2, rev).unwrap_err().is_conflict());
        assert_eq!(
            get(s, "a").unwrap().unwrap().0.lifecycle.maintenance,
            Some("fan".into())
        );

        delete(s, &n1, rev2).unwrap();
        assert!(get(s, "a").unwrap().is_none());
        assert_eq!(by_mac(s, a.macs[0]).unwrap(), None);
        // The MAC is free again.
        create(s, &[node("a2", "52:54:00:00:00:0a")]).unwrap();
        let names: Vec<String> = list(s).unwrap().into_iter().map(|(n, _)| n.name).collect();
        assert_eq!(names, ["a2", "b"]);
    }
}
