//! Ethernet MAC addresses: parsed from `52:54:00:12:34:56` or `52-54-00-12-34-56` (any case,
//! surrounding blanks ignored), printed lowercase with colons.
//!
//! The one MAC type of the workspace: the inventory keys nodes by it, netboot's DHCP engine and
//! boot table (as `netboot::MacAddr`) and the API's views carry it. Hand-written because it is a
//! few dozen lines; the external crates for this either lack serde or pull in more than they
//! give.

use std::fmt;
use std::str::FromStr;

/// A 48-bit Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The MAC from the first six bytes of a DHCP `chaddr`, if there are six.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let six: [u8; 6] = bytes.get(..6)?.try_into().ok()?;
        Some(Self(six))
    }

    /// The form iPXE's `${net0/mac:hexhyp}` and PXELINUX use in file names: `52-54-00-12-34-56`.
    pub fn hyphenated(&self) -> String {
        self.to_string().replace(':', "-")
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A MAC address that did not parse.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a MAC address (want six hex octets like 52:54:00:12:34:56)")]
pub struct BadMac(pub String);

impl FromStr for Mac {
    type Err = BadMac;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || BadMac(s.to_owned());
        let mut out = [0u8; 6];
        let mut parts = s.trim().split([':', '-']);
        for byte in &mut out {
            let part = parts.next().ok_or_else(err)?;
            if part.len() != 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Self(out))
    }
}

impl serde::Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for Mac {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$"))
            .examples([serde_json::json!("52:54:00:12:34:56")])
            .into()
    }
}

impl utoipa::ToSchema for Mac {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let mac: Mac = "52:54:00:AB:cd:01".parse().unwrap();
        assert_eq!(mac.to_string(), "52:54:00:ab:cd:01");
        assert_eq!(mac.hyphenated(), "52-54-00-ab-cd-01");
        assert_eq!("52-54-00-ab-cd-01".parse::<Mac>().unwrap(), mac);
        assert_eq!(" 52:54:00:ab:cd:01\n".parse::<Mac>().unwrap(), mac);
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:01:02",
            "5:54:00:ab:cd:01",
            "525:4:00:ab:cd:01",
            "zz:54:00:ab:cd:01",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad} parsed");
        }
        let j = serde_json::to_string(&mac).unwrap();
        assert_eq!(j, "\"52:54:00:ab:cd:01\"");
        assert_eq!(serde_json::from_str::<Mac>(&j).unwrap(), mac);
    }
}
