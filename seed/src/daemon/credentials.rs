//! Per-node credentials: a random bearer token the deploy writes onto the node's state partition
//! and the node presents on `/v1/node/…` (booted, metadata, signals). The store keeps only the
//! token's sha256, so a copy of the store file does not let anyone act as a node.
//!
//! Tables: `credentials` (sha256 hex → node name) and `node-credentials` (node → sha256 hex),
//! so issuing a new credential revokes the node's previous one in the same commit.

use crate::store::{Expect, Op, Store, StoreError};
use rand::Rng;
use sha2::{Digest, Sha256};

const BY_HASH: &str = "credentials";
const BY_NODE: &str = "node-credentials";

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Issue a fresh credential for `node` (durable before it is returned), revoking the old one.
pub fn issue(store: &dyn Store, node: &str) -> Result<String, StoreError> {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let token = hex::encode(raw);
    issue_token(store, node, &token)?;
    Ok(token)
}

/// Make `token` `node`'s credential (durable when it returns), revoking the old one; nothing is
/// written when it already is (a deploy handed over again after a restart).
pub fn issue_token(store: &dyn Store, node: &str, token: &str) -> Result<(), StoreError> {
    let h = hash(token);
    let mut ops = Vec::new();
    if let Some(old) = store.get(BY_NODE, node)? {
        let old = String::from_utf8_lossy(&old.value).into_owned();
        if old == h {
            return Ok(());
        }
        ops.push(Op::delete(BY_HASH, &old, Expect::Any));
    }
    ops.push(Op::put(BY_HASH, &h, node.as_bytes().to_vec(), Expect::Any));
    ops.push(Op::put(BY_NODE, node, h.into_bytes(), Expect::Any));
    store.commit(ops)?;
    Ok(())
}

/// The node a presented token belongs to, if any.
pub fn verify(store: &dyn Store, token: &str) -> Result<Option<String>, StoreError> {
    Ok(store
        .get(BY_HASH, &hash(token.trim()))?
        .map(|r| String::from_utf8_lossy(&r.value).into_owned()))
}

/// Forget `node`'s credential (when the node is deleted).
pub fn revoke(store: &dyn Store, node: &str) -> Result<(), StoreError> {
    if let Some(old) = store.get(BY_NODE, node)? {
        let old = String::from_utf8_lossy(&old.value).into_owned();
        store.commit(vec![
            Op::delete(BY_HASH, &old, Expect::Any),
            Op::delete(BY_NODE, node, Expect::Any),
        ])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemStore;

    #[test]
    fn issue_verify_reissue_revoke() {
        let s = MemStore::default();
        let t1 = issue(&s, "node1").unwrap();
        let t2 = issue(&s, "node2").unwrap();
        assert_ne!(t1, t2);
        assert_eq!(verify(&s, &t1).unwrap().as_deref(), Some("node1"));
        assert_eq!(verify(&s, &t2).unwrap().as_deref(), Some("node2"));
        assert_eq!(verify(&s, "forged").unwrap(), None);
        let t1b = issue(&s, "node1").unwrap();
        assert_eq!(verify(&s, &t1).unwrap(), None, "old credential revoked");
        assert_eq!(verify(&s, &t1b).unwrap().as_deref(), Some("node1"));
        issue_token(&s, "node1", "derived").unwrap();
        let rev = s.get(BY_NODE, "node1").unwrap().unwrap().revision;
        issue_token(&s, "node1", "derived").unwrap();
        assert_eq!(
            s.get(BY_NODE, "node1").unwrap().unwrap().revision,
            rev,
            "no rewrite"
        );
        assert_eq!(verify(&s, "derived").unwrap().as_deref(), Some("node1"));
        assert_eq!(verify(&s, &t1b).unwrap(), None);
        revoke(&s, "node1").unwrap();
        assert_eq!(verify(&s, &t1b).unwrap(), None);
        // The store holds hashes, never the token.
        for (_, r) in s.list(BY_NODE, "").unwrap() {
            assert_ne!(r.value, t2.as_bytes());
        }
    }
}
