//! Per-boot agent tokens: what the ramdisk agent presents on `/v1/agent/*`
//! (`Authorization: Bearer <token>`), so that reporting for a node or fetching its work (a
//! deploy carries the node's credential) takes what the seed handed that node's ramdisk boot for
//! the current step. It travels in the node's iPXE script, handed only to the address DHCP
//! gave that node and only once per boot ([`super::handout`]).
//!
//! The token of one boot is `hex(HMAC-SHA256(key, "seed agent token v1" ‖ node ‖ op ‖ state))`
//! (32 bytes, 64 URL-safe characters), where `key` is a per-seed random secret kept in the store
//! and `op` is the lifecycle's operation number, bumped every time a step starts. It is handed
//! to the machine on the ramdisk's kernel command line (`seed.token=`, see [`super::policy`]).
//!
//! Derived rather than stored with the node, because:
//! - it survives a daemon restart mid-boot with nothing new in the node record (the key and
//!   `op` are already durable), so no node view, event or export can ever carry it;
//! - rotation is free: a new step (a new `op`) gives a new token, and outside the ramdisk states
//!   (inspecting, deploying, cleaning) there is no valid token at all, so an old one stops
//!   working the moment the node leaves the step;
//! - there is nothing to clean up when a node is deleted.
//!
//! The key never leaves the store (it is not logged, not in any API answer); a copy of the store
//! file lets its holder mint tokens, as it already lets them read node credentials' owners.

use crate::inventory::Node;
use crate::lifecycle::{Lifecycle, State};
use crate::store::{Expect, Op, Store, StoreError};
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;

/// The store table and key of the per-seed HMAC key.
const TABLE: &str = "agent-token-key";
const KEY: &str = "hmac-sha256";

/// Domain separation: this key signs nothing else, but say what the MAC is of.
const CONTEXT: &[u8] = b"seed agent token v1";

/// Domain separation of the deploy credentials the same key derives.
const CREDENTIAL: &[u8] = b"seed node credential v1";

/// The states in which the node runs the ramdisk's agent (and so has a token).
pub fn ramdisk_state(state: &State) -> bool {
    matches!(
        state,
        State::Inspecting | State::Deploying | State::Cleaning
    )
}

/// Mints and checks agent tokens with the seed's key. (No `Debug`: it holds the key.)
pub struct AgentTokens {
    key: [u8; 32],
}

impl std::fmt::Debug for AgentTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentTokens(..)")
    }
}

impl AgentTokens {
    /// The seed's key from `store`, created (32 random bytes) on first use.
    pub fn load_or_create(store: &dyn Store) -> Result<Self, StoreError> {
        let read = || -> Result<Option<Option<[u8; 32]>>, StoreError> {
            Ok(store
                .get(TABLE, KEY)?
                .map(|rec| <[u8; 32]>::try_from(rec.value.as_slice()).ok()))
        };
        let expect = match read()? {
            Some(Some(key)) => return Ok(AgentTokens { key }),
            Some(None) => {
                // A damaged key: replace it (the tokens of boots under way stop working; those
                // steps time out and can be retried).
                tracing::warn!("the stored agent token key is damaged: a new one is made");
                Expect::Any
            }
            None => Expect::Absent,
        };
        let key = random_key();
        match store.commit(vec![Op::put(TABLE, KEY, key.to_vec(), expect)]) {
            Ok(_) => Ok(AgentTokens { key }),
            // Someone made it meanwhile: use theirs.
            Err(e) if e.is_conflict() => match read()? {
                Some(Some(key)) => Ok(AgentTokens { key }),
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// A key for tests.
    #[cfg(test)]
    pub fn with_key(key: [u8; 32]) -> Self {
        AgentTokens { key }
    }

    fn mac(&self, node: &str, lc: &Lifecycle) -> Hmac<Sha256> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .expect("HMAC takes a key of any length");
        // Length-prefixed fields: no two (node, op, state) give the same input.
        for field in [
            CONTEXT,
            node.as_bytes(),
            &lc.op.to_be_bytes(),
            lc.state.name().as_bytes(),
        ] {
            m.update(&(field.len() as u64).to_be_bytes());
            m.update(field);
        }
        m
    }

    /// The credential deploy `op` of node `name` writes onto the node:
    /// `hex(HMAC-SHA256(key, "seed node credential v1" ‖ node ‖ op))`. Derived, like the agent
    /// token, so that a seed restarted (or a new leader) mid-deploy hands the agent the very
    /// command it is already carrying out: the deploy goes on instead of starting over, and the
    /// image's first boot presents a credential the store still knows (the store keeps only
    /// its hash, see [`super::credentials`]).
    pub fn credential(&self, name: &str, op: u64) -> String {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .expect("HMAC takes a key of any length");
        for field in [CREDENTIAL, name.as_bytes(), &op.to_be_bytes()] {
            m.update(&(field.len() as u64).to_be_bytes());
            m.update(field);
        }
        hex::encode(m.finalize().into_bytes())
    }

    /// The token of node `name`'s current boot, `None` unless it is in a ramdisk state.
    pub fn current(&self, name: &str, lc: &Lifecycle) -> Option<String> {
        ramdisk_state(&lc.state).then(|| hex::encode(self.mac(name, lc).finalize().into_bytes()))
    }

    /// Whether `presented` is `node`'s current token (compared in constant time).
    pub fn verify(&self, node: &Node, presented: &str) -> bool {
        if !ramdisk_state(&node.lifecycle.state) {
            return false;
        }
        let Ok(raw) = hex::decode(presented.trim()) else {
            return false;
        };
        // `verify_slice` compares in constant time (the `subtle` crate underneath).
        self.mac(&node.name, &node.lifecycle)
            .verify_slice(&raw)
            .is_ok()
    }
}

fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemStore;

    fn node(name: &str, state: State, op: u64) -> Node {
        let mut n = crate::daemon::test_support::fake_node(name, "02:00:00:00:00:01");
        n.lifecycle.state = state;
        n.lifecycle.op = op;
        n
    }

    #[test]
    fn deploy_credentials_are_per_node_and_op_and_differ_from_tokens() {
        let t = AgentTokens::with_key([7; 32]);
        let c = t.credential("n1", 3);
        assert_eq!(
            c,
            t.credential("n1", 3),
            "the same deploy gets the same credential"
        );
        assert_ne!(c, t.credential("n1", 4));
        assert_ne!(c, t.credential("n2", 3));
        assert_ne!(c, AgentTokens::with_key([8; 32]).credential("n1", 3));
        let n = node("n1", State::Deploying, 3);
        assert_ne!(Some(c), t.current("n1", &n.lifecycle));
    }

    #[test]
    fn the_key_is_made_once_and_kept() {
        let s = MemStore::new();
        let a = AgentTokens::load_or_create(&s).unwrap();
        let b = AgentTokens::load_or_create(&s).unwrap();
        assert_eq!(a.key, b.key, "a restart keeps the key, so tokens survive");
        let other = AgentTokens::load_or_create(&MemStore::new()).unwrap();
        assert_ne!(a.key, other.key);
    }

    #[test]
    fn tokens_are_per_node_per_step_and_only_in_ramdisk_states() {
        let t = AgentTokens::with_key([7; 32]);
        let n1 = node("n1", State::Deploying, 3);
        let tok = t.current(&n1.name, &n1.lifecycle).unwrap();
        assert_eq!(tok.len(), 64);
        assert!(tok.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(t.verify(&n1, &tok));
        assert!(!t.verify(&n1, ""));
        assert!(!t.verify(&n1, "not hex"));
        assert!(!t.verify(&n1, &tok[..62]));
        // Another node, another step, another key: another token.
        let n2 = node("n2", State::Deploying, 3);
        assert!(!t.verify(&n2, &tok));
        let next = node("n1", State::Deploying, 4);
        assert!(!t.verify(&next, &tok));
        assert!(!t.verify(
            &n1,
            &AgentTokens::with_key([8; 32])
                .current("n1", &n1.lifecycle)
                .unwrap()
        ));
        // Out of the ramdisk states there is none, and the last one no longer works.
        for st in [
            State::Active,
            State::Available,
            State::DeployFailed { reason: "x".into() },
        ] {
            let gone = node("n1", st, 3);
            assert_eq!(t.current(&gone.name, &gone.lifecycle), None);
            assert!(!t.verify(&gone, &tok));
        }
        for st in [State::Inspecting, State::Cleaning] {
            let n = node("n1", st, 9);
            assert!(t.verify(&n, &t.current("n1", &n.lifecycle).unwrap()));
        }
    }
}
