//! Named API tokens with roles (`admin`, `operator`, `reader`), in the store so every daemon of
//! an HA seed sees the same ones (table `api-tokens`, key: the token's name).
//!
//! A token is `seed_<name>_<64 hex digits>`: 256 random bits, shown once at creation. The store
//! keeps only its SHA-256. A plain (unsalted, fast) hash is right here because the secret is
//! 256 bits from the OS's CSPRNG: nobody can guess a preimage however fast the hash is, and a
//! salt only defends low-entropy secrets (passwords) against precomputed tables. A copy of the
//! store therefore does not let anyone call the API. The name in the token finds the record in
//! one read; its hash is then compared in constant time.
//!
//! `[api] token` in the config file stays the bootstrap admin, named `config` (a name no stored
//! token may take). Revoked tokens stay listed (who had access, until when).

use crate::store::{json, Expect, Op, Store, StoreError};
use ::api::token::{Role, TokenCreated, TokenRequest, TokenView};
use ::api::Secret;
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const TABLE: &str = "api-tokens";

/// The name of `[api] token`.
pub const CONFIG_NAME: &str = "config";

/// What the store keeps of a token.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenRecord {
    name: String,
    role: Role,
    /// SHA-256 of the whole token string, hex.
    sha256: String,
    created: u64,
    #[serde(default)]
    expires: Option<u64>,
    #[serde(default)]
    revoked: bool,
}

impl TokenRecord {
    fn view(&self) -> TokenView {
        TokenView {
            name: self.name.clone(),
            role: self.role,
            created: self.created,
            expires: self.expires,
            revoked: self.revoked,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token name {0:?}: 1 to 64 of a-z, 0-9 and '-', and not `config`")]
    BadName(String),
    #[error("a token named {0:?} exists (revoked ones too: pick another name)")]
    Exists(String),
    #[error("no token named {0:?}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who a presented token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

/// What a presented token turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Valid(Caller),
    /// Not a token of this seed (or not one at all).
    Unknown,
    Revoked(String),
    Expired(String),
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn name_ok(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name != CONFIG_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Create a token (durable before it returns): the answer carries its secret, once.
pub fn create(store: &dyn Store, req: &TokenRequest, now: u64) -> Result<TokenCreated, TokenError> {
    if !name_ok(&req.name) {
        return Err(TokenError::BadName(req.name.clone()));
    }
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let token = format!("seed_{}_{}", req.name, hex::encode(raw));
    let rec = TokenRecord {
        name: req.name.clone(),
        role: req.role,
        sha256: hash(&token),
        created: now,
        expires: req.expires_in_secs.map(|s| now.saturating_add(s)),
        revoked: false,
    };
    let value = json::encode(TABLE, &rec.name, &rec)?;
    match store.commit(vec![Op::put(TABLE, &rec.name, value, Expect::Absent)]) {
        Ok(_) => Ok(TokenCreated {
            token: Secret::new(token),
            view: rec.view(),
        }),
        Err(StoreError::Conflict { .. }) => Err(TokenError::Exists(req.name.clone())),
        Err(e) => Err(e.into()),
    }
}

/// Every token, by name (no secrets: the store has none).
pub fn list(store: &dyn Store) -> Result<Vec<TokenView>, TokenError> {
    store
        .list(TABLE, "")?
        .into_iter()
        .map(|(k, r)| -> Result<TokenView, TokenError> {
            Ok(json::decode::<TokenRecord>(TABLE, &k, &r.value)?.view())
        })
        .collect()
}

/// Revoke token `name` (kept, marked revoked); revoking it again changes nothing.
pub fn revoke(store: &dyn Store, name: &str) -> Result<TokenView, TokenError> {
    let Some(r) = store.get(TABLE, name)? else {
        return Err(TokenError::NotFound(name.into()));
    };
    let mut rec: TokenRecord = json::decode(TABLE, name, &r.value)?;
    if !rec.revoked {
        rec.revoked = true;
        let value = json::encode(TABLE, name, &rec)?;
        store.commit(vec![Op::put(
            TABLE,
            name,
            value,
            Expect::Revision(r.revision),
        )])?;
    }
    Ok(rec.view())
}

/// Who `presented` is, at `now` (unix seconds). The stored hash is compared in constant time.
pub fn lookup(store: &dyn Store, presented: &str, now: u64) -> Result<Lookup, StoreError> {
    let Some((name, _)) = presented
        .strip_prefix("seed_")
        .and_then(|rest| rest.rsplit_once('_'))
    else {
        return Ok(Lookup::Unknown);
    };
    if !name_ok(name) {
        return Ok(Lookup::Unknown);
    }
    let Some(r) = store.get(TABLE, name)? else {
        return Ok(Lookup::Unknown);
    };
    let rec: TokenRecord = json::decode(TABLE, name, &r.value)?;
    if !constant_time_eq(hash(presented).as_bytes(), rec.sha256.as_bytes()) {
        return Ok(Lookup::Unknown);
    }
    Ok(if rec.revoked {
        Lookup::Revoked(rec.name)
    } else if rec.expires.is_some_and(|e| now >= e) {
        Lookup::Expired(rec.name)
    } else {
        Lookup::Valid(Caller {
            name: rec.name,
            role: rec.role,
        })
    })
}

/// Comparison whose time does not depend on where the first difference is (hand-written: five
/// lines do not justify a crate).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemStore;

    fn req(name: &str, role: Role, exp: Option<u64>) -> TokenRequest {
        TokenRequest {
            name: name.into(),
            role,
            expires_in_secs: exp,
        }
    }

    #[test]
    fn create_lookup_expire_revoke() {
        let s = MemStore::default();
        let c = create(&s, &req("ci", Role::Reader, Some(60)), 1000).unwrap();
        let t = c.token.expose().to_string();
        assert!(
            t.starts_with("seed_ci_") && t.len() == "seed_ci_".len() + 64,
            "{t}"
        );
        let ci = Lookup::Valid(Caller {
            name: "ci".into(),
            role: Role::Reader,
        });
        assert_eq!(lookup(&s, &t, 1000).unwrap(), ci);
        assert_eq!(lookup(&s, &t, 1060).unwrap(), Lookup::Expired("ci".into()));
        let forged = format!("seed_ci_{}", "0".repeat(64));
        assert_eq!(lookup(&s, &forged, 1000).unwrap(), Lookup::Unknown);
        assert_eq!(lookup(&s, "nonsense", 1000).unwrap(), Lookup::Unknown);
        assert!(matches!(
            create(&s, &req("ci", Role::Admin, None), 1),
            Err(TokenError::Exists(_))
        ));
        for bad in ["config", "", "Up", "a_b", &"x".repeat(65)] {
            assert!(matches!(
                create(&s, &req(bad, Role::Admin, None), 1),
                Err(TokenError::BadName(_))
            ));
        }
        assert!(revoke(&s, "ci").unwrap().revoked);
        assert_eq!(lookup(&s, &t, 1000).unwrap(), Lookup::Revoked("ci".into()));
        assert!(matches!(revoke(&s, "nope"), Err(TokenError::NotFound(_))));
        let l = list(&s).unwrap();
        assert_eq!(l.len(), 1);
        assert!(l[0].revoked && l[0].expires == Some(1060));
        // Hashed: the secret is nowhere in the store.
        let secret = t.rsplit_once('_').unwrap().1;
        for (_, r) in s.list(TABLE, "").unwrap() {
            assert!(!String::from_utf8_lossy(&r.value).contains(secret));
        }
    }
}
