//! Ethernet MAC addresses: the workspace's one MAC type is [`api::Mac`] (parsed from and printed
//! as `52:54:00:12:34:56`); netboot names it `MacAddr`.

pub use api::BadMac as ParseMacError;
pub use api::Mac as MacAddr;
