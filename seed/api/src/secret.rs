//! The workspace's one wrapper for secrets: [`Secret`] — BMC passwords in the inventory and the
//! power drivers (`seed::secret`, `inventory::Secret` and `power::Password` name it) and the
//! node credential the API hands a deploy ([`crate::agent::DeployCommand`],
//! [`crate::manifest::Identity`], [`crate::metadata::CredentialIssued`]). It lives in this leaf
//! crate so the daemon, the CLI and the static ramdisk agent share it; on the wire and in the
//! store it is the plain string it always was.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A credential. `Debug` and `Display` print `***`; the value is reached only through
/// [`Secret::expose`] (the driver or agent that sends it) and serde (the store keeps BMC
/// passwords, to power nodes after a restart; API views never include them; a deploy command
/// carries the node's credential to its agent). Built on `secrecy`, so the memory
/// is zeroed when the secret is dropped.
#[derive(Clone, Default)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(SecretString::from(s.into()))
    }

    /// The credential itself: only for the wire and the store.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret::new(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret::new(s)
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret::new(s))
    }
}

/// As a plain string (the store's format, unchanged from before this type).
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.expose())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints_but_serialises() {
        let s: Secret = "hunter2".parse().unwrap();
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(***)");
        assert_eq!(s.expose(), "hunter2");
        // The store's format is a plain JSON string, as before.
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, "\"hunter2\"");
        let back: Secret = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert_eq!(Secret::default().expose(), "");
        assert_ne!(Secret::new("a"), Secret::new("b"));
    }
}
